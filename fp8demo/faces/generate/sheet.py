"""The comparison sheet: one row per prompt, 16-bit beside FP8, labelled. PIL only."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from .figures import psnr_text, shorten, ssim_text

CELL = 384  # longest side of each picture on the sheet
LABEL_H = 28


def contact_sheet(results) -> Image.Image:
    """Rows: the prompts of `results` (CompareResults); columns: the 16-bit and the FP8 image."""
    if not results:
        raise ValueError("no comparison to put on a sheet")
    w, h = results[0].fp8.image.size
    scale = CELL / max(w, h)
    cw, ch = round(w * scale), round(h * scale)
    gap = 8
    sheet = Image.new("RGB", (2 * cw + 3 * gap, LABEL_H + len(results) * (ch + LABEL_H + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    base_label = results[0].baseline.precision.split(" ")[0]
    draw.text((gap, 6), f"16-bit ({base_label})", fill="black", font=font)
    draw.text((2 * gap + cw, 6), "FP8", fill="black", font=font)
    for row, res in enumerate(results):
        y = LABEL_H + row * (ch + LABEL_H + gap)
        for col, image in enumerate((res.baseline.image, res.fp8.image)):
            sheet.paste(image.convert("RGB").resize((cw, ch)), (gap + col * (cw + gap), y))
        m = res.metrics
        figures = f" · PSNR {psnr_text(m.psnr_db, 'identical')} · SSIM {ssim_text(m.ssim)}"
        room = sheet.width - 2 * gap - font.getlength(figures)  # the prompt gives way, at a word, with an ellipsis
        prompt = shorten(res.fp8.request.prompt, lambda text, room=room: font.getlength(text) <= room)
        draw.text((gap, y + ch + 4), prompt + figures, fill="black", font=font)
    return sheet
