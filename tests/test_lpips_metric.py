"""LPIPS: what it says when it cannot be computed here, and its code path with a stand-in backbone (CI has neither
torchvision nor AlexNet's ImageNet weights)."""

import sys
import types
from urllib.error import URLError

import pytest
from conftest import stand_in_lpips
from PIL import Image

from fp8demo import lpips_metric


def test_without_torchvision_it_says_what_to_install(monkeypatch):
    assert lpips_metric.matching_torchvision("2.13.0+cpu") == "0.28.0"
    assert lpips_metric.matching_torchvision("2.5.1") == "0.20.1"
    monkeypatch.setitem(sys.modules, "torchvision", None)  # not installed, whatever this machine has
    missing = lpips_metric.load()
    assert isinstance(missing, lpips_metric.Missing)
    assert missing.reason.startswith("LPIPS: torchvision is not installed") and "torchvision==" in missing.reason
    assert missing.describe() == {"available": False, "genuine": False, "backbone": None, "reason": missing.reason}


def test_offline_without_the_weights_it_says_so_and_where_they_go(monkeypatch, tmp_path):
    pytest.importorskip("torchmetrics")
    import torchmetrics.functional.image.lpips as tm_lpips
    import torchmetrics.image.lpip as tm_lpip

    # torchvision as far as load() looks at it; fetching AlexNet's weights fails as it does offline
    weights = types.SimpleNamespace(url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")
    fake = types.SimpleNamespace(models=types.SimpleNamespace(AlexNet_Weights=types.SimpleNamespace(DEFAULT=weights)))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(net, pretrained=False):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tm_lpip, "_TORCHVISION_AVAILABLE", True)
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", offline)
    missing = lpips_metric.load()
    assert missing.reason.startswith("LPIPS: AlexNet weights not available offline (URLError")
    assert "TORCH_HOME" in missing.reason and str(tmp_path / "hub" / "checkpoints") in missing.reason
    assert "alexnet-owt-7be5be79.pth" in missing.reason


def test_a_stand_in_backbone_scores_identical_images_0_and_is_not_called_lpips(monkeypatch):
    lpips = stand_in_lpips(monkeypatch)
    assert not lpips.genuine and lpips.describe()["backbone"].startswith("random")
    a = Image.effect_noise((96, 64), 40).convert("RGB")
    b = Image.new("RGB", (96, 64), "white")
    assert lpips.distance(a, a) == 0.0
    assert lpips.distance(a, b) > 0 and lpips.distance(a, b) == lpips.distance(a, b)  # no state kept between pairs
