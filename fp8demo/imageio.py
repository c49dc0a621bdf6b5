"""Image files: PNG with the generation parameters embedded, and fast display formats."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, PngImagePlugin

from .request import GenerationResult, parameters_text


def png_bytes(result: GenerationResult) -> bytes:
    """PNG with a `parameters` text chunk (the A1111 convention that ComfyUI, Forge and civitai read)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters_text(result))
    buf = io.BytesIO()
    result.image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(result: GenerationResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(result))
    return path


def read_parameters(path: str | Path) -> str | None:
    with Image.open(path) as img:
        return img.info.get("parameters")
