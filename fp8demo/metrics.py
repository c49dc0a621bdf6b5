"""Image-difference metrics for the FP16/BF16-vs-FP8 comparison. Pure numpy: no torch, no GPU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Colour stops of a perceptually ordered dark-to-bright map (black, purple, red, orange, pale yellow).
_STOPS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)


@dataclass(frozen=True)
class ImageMetrics:
    psnr_db: float  # inf when the images are identical
    ssim: float  # 1.0 when identical
    mean_abs_diff: float  # on the 0-255 scale
    max_abs_diff: int

    def as_dict(self) -> dict:
        return {
            "psnr_db": None if math.isinf(self.psnr_db) else round(self.psnr_db, 3),
            "ssim": round(self.ssim, 5),
            "mean_abs_diff": round(self.mean_abs_diff, 4),
            "max_abs_diff": self.max_abs_diff,
        }


def _array(image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {arr.shape}")
    return arr


def psnr(a, b) -> float:
    a, b = _array(a), _array(b)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian_blur(x: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    pad = np.pad(x, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, pad)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def ssim(a, b) -> float:
    """SSIM on luma (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)."""
    weights = np.array([0.299, 0.587, 0.114])
    x, y = _array(a) @ weights, _array(b) @ weights
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} vs {y.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _gaussian_blur(x), _gaussian_blur(y)
    sxx = _gaussian_blur(x * x) - mx * mx
    syy = _gaussian_blur(y * y) - my * my
    sxy = _gaussian_blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def compare_images(a, b) -> ImageMetrics:
    x, y = _array(a), _array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} vs {y.shape}")
    diff = np.abs(x - y)
    return ImageMetrics(psnr(x, y), ssim(x, y), float(diff.mean()), int(diff.max()))


def difference_heatmap(a, b, gain: float | None = None) -> Image.Image:
    """Per-pixel |a - b| (mean over channels) as a colour map. Scaled so the 99th percentile is bright."""
    diff = np.abs(_array(a) - _array(b)).mean(axis=2)
    if gain is None:
        top = float(np.percentile(diff, 99))
        gain = 1.0 / top if top > 0 else 0.0
    t = np.clip(diff * gain, 0.0, 1.0) * (len(_STOPS) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_STOPS) - 2)
    frac = (t - lo)[..., None]
    rgb = _STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")
