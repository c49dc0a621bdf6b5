"""The kiosk as a face: its own settings (KioskConfig), a page for the screen alone, and a short memory.

- Access: only the screens FP8DEMO_KIOSK_CLIENTS lists (by default the browser on this machine, 127.0.0.1 and ::1)
  use the page, its events and its files; visitors' phones reach the take-home downloads, monitoring reaches health,
  and nothing else.
- Launch: no footer and no API link (nothing on the page leads anywhere else), the page's own <head> (no zoom, no
  long-press menu; the stylesheets, the on-screen keyboard and the page's script, inlined), and no run history,
  which would keep every visitor's prompts and pictures in the shared browser for the next visitor to read.
- Image safety: on unless the operator starts with --no-image-safety; a flagged picture is never shown or saved.
- Keeping: take-home PNGs for FP8DEMO_TAKE_TTL seconds and at most `keep_pngs` of them; the attract loop's copies
  for as long, and only as many as it shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ... import config
from ...web.access import AccessRule
from ...web.face import Face
from ...web.retention import Keeping, Rule
from .page import build_kiosk_ui, check_settings, page_head
from .service import ATTRACT_FOLDER, KioskService

log = logging.getLogger(__name__)
REFUSAL = "This screen's page is for the screen itself; scan the QR code to take your picture home."


def face(settings: config.KioskConfig | None = None) -> Face:
    cfg = config.KioskConfig() if settings is None else settings
    check_settings(cfg)
    access = AccessRule(listed_only=True, clients=cfg.clients, refusal=REFUSAL, setting="FP8DEMO_KIOSK_CLIENTS")
    if not access.names_loopback():
        log.warning("FP8DEMO_KIOSK_CLIENTS names neither 127.0.0.1 nor ::1: a browser on this machine gets 403")
    return Face(
        name="kiosk",
        build=lambda service: build_kiosk_ui(KioskService(service, cfg)),
        css=(),  # inlined in the head (page_head)
        head=page_head(cfg),
        footer_links=(),
        run_history=False,
        access=access,
        image_safety=True,  # a second layer after moderation: the picture itself is checked (web/safety.py)
        keeping=Keeping(pngs=cfg.keep_pngs, max_age=cfg.take_ttl,
                        folders=(Rule(Path(ATTRACT_FOLDER), "*.jpg", cfg.recent_creations, cfg.take_ttl),)),
    )
