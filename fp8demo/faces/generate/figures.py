"""How the Compare tab writes each metric: one format per metric, so that the table, the sheet's rows and the
captions drawn on the sheet agree (an SSIM of 0.99994 is 0.9999 everywhere, never 1.000 on the picture)."""

from __future__ import annotations

import math


def psnr_text(db: float, identical: str = "∞ (identical)") -> str:
    """PSNR in dB with two decimals; `identical` when the pictures are the same (the sheet's font has no ∞)."""
    return identical if math.isinf(db) else f"{db:.2f} dB"


def ssim_text(value: float) -> str:
    return f"{value:.4f}"


def diff_text(value: float) -> str:
    """A mean absolute difference, in 8-bit levels."""
    return f"{value:.2f}"


def shorten(text: str, fits) -> str:
    """`text` whole if `fits(text)`, else cut after its last whole word that fits, with an ellipsis ("…"); a first
    word too long on its own is cut where it must be. `fits` says whether a candidate is short enough (a length, or
    a width in pixels)."""
    text = " ".join(text.split())
    if fits(text):
        return text
    words, cut = text.split(" "), ""
    for word in words:
        candidate = f"{cut} {word}".strip()
        if not fits(candidate + "…"):
            break
        cut = candidate
    if not cut:  # one long word: as many characters as fit
        cut = text
        while cut and not fits(cut + "…"):
            cut = cut[:-1]
    return cut.rstrip(" ,;:·-") + "…"
