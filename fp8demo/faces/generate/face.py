"""The Generate page as a face: open to everyone, its API documented in the footer, every picture kept in the outputs
folder for a long window (StorageConfig: the newest N PNGs, none older than N days)."""

from __future__ import annotations

from ... import config
from ...web.face import Face
from ...web.retention import Keeping
from .page import build_page
from .theme import theme


def face(storage: config.StorageConfig | None = None) -> Face:
    storage = config.StorageConfig() if storage is None else storage
    return Face(
        name="generate",
        build=build_page,
        css=(config.ASSETS_DIR / "style.css",),
        theme=theme,
        footer_links=("api",),
        keeping=Keeping(pngs=storage.keep_pngs, max_age=storage.keep_days * 86400),
        compare_baseline="bf16",  # the Compare tab's default
    )
