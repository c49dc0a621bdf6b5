"""LPIPS with the AlexNet backbone, as the literature reports it (Zhang et al., 2018): how different two images look
through the features of an ImageNet-trained network, each layer weighted by the paper's learned linear layers. 0 for
identical images, larger for more different ones; on the full image, no resizing.

torchmetrics holds the implementation and the learned linear layers. The AlexNet backbone and its ImageNet weights
come from torchvision, which downloads the weights into torch's hub cache ($TORCH_HOME/hub/checkpoints) at first use.
torchvision is not a requirement: its build has to match torch's (a CUDA build of torchvision does not even import
beside a CPU build of torch), so it is installed by hand. Without it, or offline without the weights, `load` returns
`Missing` with the reason and what to do, and the harness reports LPIPS as missing rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALEXNET = "AlexNet, ImageNet weights (torchvision)"


@dataclass
class Lpips:
    """A loaded LPIPS network. `backbone` says what it computes with: only ALEXNET gives LPIPS as published; the tests
    put in a random stand-in to exercise the code path, and the report then says so."""

    metric: Any  # torchmetrics' LearnedPerceptualImagePatchSimilarity
    backbone: str = ALEXNET
    device: str = "cpu"

    @property
    def genuine(self) -> bool:
        return self.backbone == ALEXNET

    def distance(self, a, b) -> float:
        import torch

        with torch.no_grad():
            value = self.metric(_tensor(a, self.device), _tensor(b, self.device))
        self.metric.reset()  # the metric keeps every score it is given; one pair at a time here
        return float(value)

    def describe(self) -> dict:
        return {"available": True, "genuine": self.genuine, "backbone": self.backbone, "reason": None}


@dataclass(frozen=True)
class Missing:
    """LPIPS cannot be computed here; `reason` says why and what to do."""

    reason: str

    def describe(self) -> dict:
        return {"available": False, "genuine": False, "backbone": None, "reason": self.reason}


def _tensor(image, device: str):
    """A PIL image as the float batch of one LPIPS takes with normalize=True: (1, 3, H, W) in [0, 1]."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release made for a torch release: torch 2.N.P pairs with torchvision 0.(N+15).P."""
    major, minor, patch = (torch_version.split("+")[0].split(".") + ["0", "0"])[:3]
    return f"0.{int(minor) + 15}.{patch}" if major == "2" else "matching your torch"


def _install_hint(torch_version: str) -> str:
    index = " --index-url https://download.pytorch.org/whl/cpu" if "+cpu" in torch_version else ""
    return f"pip install --no-deps torchvision=={matching_torchvision(torch_version)}{index}"


def load(device: str = "cpu") -> Lpips | Missing:
    """LPIPS (AlexNet) on `device`, or Missing with the reason. May download AlexNet's weights (first use)."""
    import torch

    try:
        import torchvision
    except ImportError:
        return Missing(f"LPIPS: torchvision is not installed; install the build made for this torch "
                       f"({torch.__version__}): {_install_hint(torch.__version__)}.")
    except Exception as error:  # a build for another torch fails inside its own import (missing operators)
        return Missing(f"LPIPS: torchvision does not load beside torch {torch.__version__} "
                       f"({type(error).__name__}: {error}); its build must match torch's: "
                       f"{_install_hint(torch.__version__)}.")
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError as error:
        return Missing(f"LPIPS: torchmetrics is not installed ({error}); pip install -r requirements.txt.")
    weights = torchvision.models.AlexNet_Weights.DEFAULT
    cached = _weights_path(torch, weights.url)
    try:
        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    except Exception as error:  # the weights are fetched here when not cached: offline, that fails
        if cached.exists():
            return Missing(f"LPIPS: the AlexNet network did not load ({type(error).__name__}: {error}).")
        return Missing(
            f"LPIPS: AlexNet weights not available offline ({type(error).__name__}: {error}); install them with "
            "`python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\"` on a machine that is "
            f"online, or copy {cached.name} into {cached.parent}, or set TORCH_HOME to a folder whose "
            f"hub/checkpoints/ holds it.")
    return Lpips(metric.to(device), ALEXNET, device)


def _weights_path(torch, url: str):
    """Where torchvision keeps a downloaded weights file: torch's hub cache, which TORCH_HOME moves."""
    from pathlib import Path
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
