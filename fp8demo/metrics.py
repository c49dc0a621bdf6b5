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
    """|a - b| per pixel (the mean over the channels) in colour, with its colour scale under the map, in 8-bit levels
    (the unit of the 0-255 channels, so a tick of 0.5 is half a level). The scale tops out at the 99th percentile
    (at least 1 level), so that a few outliers do not leave the rest of the map black. The text is sized to the
    picture (4 % of its longer side, at least 14 px) so that it still reads where the page shows the map at half
    its size."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    diff = np.abs(_array(a) - _array(b)).mean(axis=2)
    if vmax is None:
        vmax = max(1.0, float(np.percentile(diff, 99)))
    h, w = diff.shape
    dpi = 100
    text_px = max(14.0, 0.04 * max(h, w))
    points = text_px * 72 / dpi
    below = 4.6 * text_px  # the bar, its ticks and its label
    total = h + below
    fig = Figure(figsize=(w / dpi, total / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, below / total, 1.0, h / total))
    shown = ax.imshow(diff, cmap=HEATMAP_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    bar_ax = fig.add_axes((0.05, 3.1 * text_px / total, 0.9, 0.9 * text_px / total))
    bar = fig.colorbar(shown, cax=bar_ax, orientation="horizontal",
                       extend="max" if float(diff.max()) > vmax else "neither")
    bar.locator = MaxNLocator(nbins=5)
    bar.update_ticks()
    bar.ax.tick_params(labelsize=points, length=text_px / 4)
    bar.set_label("|baseline − candidate| per pixel, in 8-bit levels", fontsize=points, labelpad=text_px / 5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
