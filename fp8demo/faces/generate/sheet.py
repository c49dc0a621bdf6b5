"""The comparison sheet: one row per prompt, the baseline beside the candidate, labelled. PIL only."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from .figures import psnr_text, shorten, ssim_text

CELL = 384  # longest side of each picture on the sheet
LABEL_H = 28


def contact_sheet(results) -> Image.Image:
    """Rows: the prompts of `results` (CompareResults); columns: the baseline's and the candidate's image, headed by
    their run plans (shortened at a word to the column's width)."""
    if not results:
        raise ValueError("no comparison to put on a sheet")
    w, h = results[0].fp8.image.size
    scale = CELL / max(w, h)
    cw, ch = round(w * scale), round(h * scale)
    gap = 8
    sheet = Image.new("RGB", (2 * cw + 3 * gap, LABEL_H + len(results) * (ch + LABEL_H + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for col, side in enumerate((results[0].baseline, results[0].fp8)):
        head = shorten(side.precision, lambda t: draw.textlength(t, font=font) <= cw)
        draw.text((gap + col * (cw + gap), 6), head, fill="black", font=font)
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
