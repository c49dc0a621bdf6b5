"""Image-difference metrics for the FP16/BF16-vs-FP8 comparison: PSNR and SSIM from scikit-image, a heatmap with its
colour scale from matplotlib. No torch, no GPU.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

HEATMAP_CMAP = "inferno"  # perceptually ordered, dark (no difference) to bright
_WIDEN = 1.4  # figure width / map width: room for the colour bar and its label


@dataclass(frozen=True)
class ImageMetrics:
    psnr_db: float  # inf when the images are identical
    ssim: float  # 1.0 when identical
    mean_abs_diff: float  # on the 0-255 scale
    max_abs_diff: int
    lpips: float | None = None  # LPIPS (AlexNet), 0 when identical; None: not computed, `lpips_note` says why
    lpips_note: str = ""

    def as_dict(self) -> dict:
        return {
            "psnr_db": None if math.isinf(self.psnr_db) else round(self.psnr_db, 3),
            "ssim": round(self.ssim, 5),
            "mean_abs_diff": round(self.mean_abs_diff, 4),
            "max_abs_diff": self.max_abs_diff,
            "lpips": None if self.lpips is None else round(self.lpips, 4),
            "lpips_note": self.lpips_note,
        }


def _array(image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {arr.shape}")
    return arr


def psnr(a, b) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    x, y = _array(a), _array(b)
    if np.array_equal(x, y):
        return math.inf  # scikit-image divides by a zero error here (and warns)
    return float(peak_signal_noise_ratio(x, y, data_range=255))


def ssim(a, b) -> float:
    """SSIM over the RGB channels with the settings of Wang et al. 2004 (Gaussian window, sigma 1.5)."""
    from skimage.metrics import structural_similarity

    x, y = _array(a), _array(b)
    return float(structural_similarity(x, y, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def compare_images(a, b) -> ImageMetrics:
    x, y = _array(a), _array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} vs {y.shape}")
    diff = np.abs(x - y)
    return ImageMetrics(psnr(x, y), ssim(x, y), float(diff.mean()), int(diff.max()))


def difference_heatmap(a, b, vmax: float | None = None) -> Image.Image:
    """|a - b| per pixel (mean over channels, 0-255) in colour, with a labelled colour bar. The scale tops out at the
    99th percentile (at least 1), so that a few outliers do not leave the rest of the map black."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure

    diff = np.abs(_array(a) - _array(b)).mean(axis=2)
    if vmax is None:
        vmax = max(1.0, float(np.percentile(diff, 99)))
    h, w = diff.shape
    dpi = 100
    fig = Figure(figsize=(w / dpi * _WIDEN, h / dpi), dpi=dpi)  # the map at its own size, the bar beside it
    ax = fig.add_axes((0.0, 0.0, 1 / _WIDEN, 1.0))
    shown = ax.imshow(diff, cmap=HEATMAP_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    bar_ax = fig.add_axes((1 / _WIDEN + 0.03, 0.08, 0.03, 0.84))
    bar = fig.colorbar(shown, cax=bar_ax, extend="max" if float(diff.max()) > vmax else "neither")
    bar.set_label("|16-bit − FP8| (0-255)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
