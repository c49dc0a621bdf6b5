"""What the tests share: fake machines, the tiny model built once per session in a temporary cache, one warm engine
(and its bf16 twin), one running web app, and the helpers several test files use (a free port, serving a page, the
docs' code blocks, a stand-in for the Hub's API, Chromium's flags)."""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import replace
from pathlib import Path

# No test may reach the Hub (CI has no network either). Set before huggingface_hub is imported, which reads it once:
# without it each load of a repo id waits ~25 s for DNS and retries before it says the Hub is unreachable.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from fp8demo import logs  # noqa: E402
from fp8demo.config import EngineConfig  # noqa: E402
from fp8demo.hardware import Capabilities  # noqa: E402

logs.configure()

CPU = Capabilities(device="cpu", name="test CPU", cpu_count=2)
H100 = Capabilities(device="cuda", name="NVIDIA H100", compute_capability=(9, 0), total_memory=80 * 2**30,
                    free_memory=79 * 2**30)
RTX4090 = Capabilities(device="cuda", name="RTX 4090", compute_capability=(8, 9), total_memory=24 * 2**30,
                       free_memory=23 * 2**30)
A100 = Capabilities(device="cuda", name="A100", compute_capability=(8, 0), total_memory=40 * 2**30,
                    free_memory=39 * 2**30)
MPS = Capabilities(device="mps", name="Apple MPS")


def make_plan(caps: Capabilities, **options):
    """The run plan of the engine flags `options` on `caps`, with no footprint (nothing placed by the planner)."""
    from fp8demo import runplan

    return runplan.decide(EngineConfig(**options), caps)


def pytest_collection_modifyitems(config, items):
    from fp8demo.hardware import detect

    if any("gpu" in item.keywords for item in items) and not detect().fp8_native:
        skip = pytest.mark.skip(reason="needs a CUDA GPU with compute capability >= 8.9")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp8demo-cache")
    os.environ["FP8DEMO_CACHE"] = str(path)  # for subprocesses (CLI tests)
    os.environ["FP8DEMO_OUTPUTS"] = str(path / "outputs")  # the apps' PNG store, never the working directory
    return path


@pytest.fixture(scope="session")
def tiny_config(cache_dir) -> EngineConfig:
    return EngineConfig(model="tiny", cache_dir=cache_dir, warmup_runs=1)


@pytest.fixture(scope="session")
def tiny_engine(tiny_config):
    """A warm FP8 engine on the tiny model (FP8 weight storage on this CPU)."""
    from fp8demo.engine import Engine

    return Engine(tiny_config, CPU).start()


@pytest.fixture(scope="session")
def tiny_engine_bf16(tiny_config):
    from fp8demo.engine import Engine

    return Engine(replace(tiny_config, precision="bf16"), CPU).start()


@pytest.fixture(scope="session")
def app(tiny_engine):
    """The Generate face on the warm tiny engine, served on a free port: (service, url)."""
    from fp8demo.web.service import DemoService

    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service)
    yield service, url
    demo.close()


@pytest.fixture(scope="session")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(service, **app_changes):
    """The Generate face over `service` on a free port of 127.0.0.1, with `app_changes` to its AppConfig:
    (demo, url). Close the demo when done."""
    from fp8demo.faces.generate.face import face as generate_face
    from fp8demo.web.server import launch

    app_cfg = replace(service.cfg, host="127.0.0.1", port=free_port(), **app_changes)
    face = generate_face(app_cfg.storage)
    demo = face.build(service)
    launch(demo, face, service, app_cfg, block=False)
    return demo, f"http://127.0.0.1:{app_cfg.port}/"


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi: records the calls, uploads nothing. `last` is the newest instance."""
    last = None

    def __init__(self, token=None):
        self.calls = []
        FakeHubApi.last = self

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


def tiny_transformer(cache_dir):
    """The tiny model's transformer in bf16, as stored (16-bit: nothing quantized)."""
    import torch
    from diffusers import SD3Transformer2DModel

    from fp8demo.weights import random_models

    path = random_models.ensure_tiny(cache_dir)
    return SD3Transformer2DModel.from_pretrained(path, subfolder="transformer", dtype=torch.bfloat16).eval()


def forward(tr, side_px: int, seed: int = 0):
    """One transformer forward on random inputs for a `side_px` image (40 text tokens, timestep 500)."""
    import torch

    c = tr.config
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(1, c.in_channels, side_px // 8, side_px // 8, generator=g).to(tr.dtype)
    text = torch.randn(1, 40, c.joint_attention_dim, generator=g).to(tr.dtype)
    pooled = torch.randn(1, c.pooled_projection_dim, generator=g).to(tr.dtype)
    with torch.inference_mode():
        return tr(hidden_states=lat, encoder_hidden_states=text, pooled_projections=pooled,
                  timestep=torch.tensor([500.0]), return_dict=False)[0]


def stand_in_lpips(monkeypatch):
    """torchmetrics' LPIPS with a randomly initialised AlexNet-shaped backbone instead of torchvision's ImageNet one:
    the code path of LPIPS without torchvision or its weights (neither is in CI). Its numbers are not LPIPS, and the
    Lpips object says so (genuine is False)."""
    pytest.importorskip("torchmetrics")
    import torch
    import torchmetrics.functional.image.lpips as tm_lpips
    import torchmetrics.image.lpip as tm_lpip
    from torch import nn
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    from fp8demo.lpips_metric import Lpips

    def features(net, pretrained=False):  # torchvision's AlexNet feature layers, in its shapes
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))

    monkeypatch.setattr(tm_lpip, "_TORCHVISION_AVAILABLE", True)
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", features)
    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    return Lpips(metric, backbone="random AlexNet-shaped stand-in (test)")


# Debian's Chromium, driven by Playwright (its own browser download does not work offline)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
SHOTS = os.environ.get("FP8DEMO_SCREENSHOTS")  # a folder: the browser tests save the docs' screenshots there


def shot(page, name, full_page=True):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=full_page)


# The docs: README.md and docs/*.md
ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
# Every bash and python block of the docs: the text it follows (in whichever file holds it) and its language. A block
# of language `text` (a diagram, a sample of output) is not code.
BLOCKS = {
    "venv": ("Make a virtual environment", "bash"),  # test_first_run.py runs it
    "cpu torch": ("install the CPU wheel of torch first", "bash"),  # test_first_run.py: word for word (a download)
    "start": ("Install and start the web app", "bash"),  # test_first_run.py: word for word, then app.py itself
    "tests": ("Run the tests (CPU", "bash"),  # test_first_run.py: word for word (this very suite)
    "api": ("## API", "python"),  # test_first_run.py runs it against the app
    "command line": ("## Command line", "bash"),
    "plans": ("## Plans per card", "bash"),
    "checkpoints": ("## FP8 checkpoints", "bash"),
    "plain diffusers": ("Plain diffusers with torchao installed loads it", "python"),
}


def holder(text: str) -> Path:
    """The one doc that holds `text`."""
    found = [path for path in DOCS if text in path.read_text()]
    assert len(found) == 1, f"{text!r} should be in exactly one of the docs, is in {found}"
    return found[0]


def block(name: str) -> str:
    """The block BLOCKS names: the first of its language after its text."""
    after, language = BLOCKS[name]
    text = holder(after).read_text()
    match = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M).search(text, text.index(after))
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


# WCAG's contrast in the browser, for the pages' measurements: parse a computed colour, relative luminance, a
# translucent colour over another, and the ratio of two colours (lines inside a measuring script's function).
CONTRAST_JS = """  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const lin = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
"""
