"""Shared fixtures: the tiny model is built once per test session, offline, in a temporary cache."""

from __future__ import annotations

import os

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
    from dataclasses import replace

    from fp8demo.engine import Engine

    return Engine(replace(tiny_config, precision="bf16"), CPU).start()
