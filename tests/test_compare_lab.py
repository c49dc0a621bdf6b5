"""Compare as the lab: any two recipes side by side, the engine's own transformer reused where a side is its recipe,
both extra sides kept loaded, a recipe a visitor mistyped refused with its name."""

import pytest
from conftest import stand_in_lpips

from fp8demo.compare import Comparer
from fp8demo.errors import InvalidRequest
from fp8demo.request import GenerationRequest, Job

CAT = GenerationRequest("a cat on a windowsill", seed=7, steps=8, width=256, height=256)


@pytest.fixture(scope="module")
def comparer(tiny_engine):
    return Comparer(tiny_engine)


def test_any_two_recipes_side_by_side(comparer):
    result = comparer.compare(Job(CAT), "bf16", "fp8-storage+cache=first-block:0.5")
    assert result.baseline.precision == "bf16 (eager)"
    assert "cache first-block:0.5" in result.fp8.precision and result.fp8.blocks_skipped > 0
    assert result.baseline.blocks_skipped == 0
    assert result.load_seconds > 0 and 0 < result.metrics.psnr_db < float("inf")
    again = comparer.compare(Job(CAT), "bf16", "fp8-storage+cache=first-block:0.5")
    assert again.load_seconds == 0  # both extra sides stayed loaded
    assert again.fp8.image.tobytes() == result.fp8.image.tobytes()


def test_a_side_that_is_the_engines_recipe_is_the_engines_transformer(comparer, tiny_engine):
    """On this CPU the engine runs FP8 weights with 16-bit compute: "fp8" and "fp8-storage" are its own recipe."""
    result = comparer.compare(Job(CAT), "fp8-storage", None)
    assert result.baseline.precision == result.fp8.precision == tiny_engine.plan.label()
    assert result.metrics.psnr_db == float("inf")  # the same transformer, the same seed: the same picture


def test_a_recipe_nobody_can_read_is_refused_naming_it(comparer):
    with pytest.raises(InvalidRequest, match="fp8\\+turbo"):
        comparer.compare(Job(CAT), "fp8+turbo")


def test_lpips_stands_beside_psnr_and_ssim_or_says_why_not(tiny_engine, monkeypatch):
    """Where LPIPS cannot be loaded (no torchvision, AlexNet's weights not cached) the metrics say why; with a
    backbone (here the tests' random stand-in, labelled as not LPIPS) identical pictures score 0."""
    comparer = Comparer(tiny_engine)
    own = comparer.compare(Job(CAT), "fp8-storage", None)
    assert (own.metrics.lpips is not None and own.metrics.lpips >= 0) or own.metrics.lpips_note
    assert "lpips" in own.metrics.as_dict() and "lpips_note" in own.metrics.as_dict()
    comparer._lpips = stand_in_lpips(monkeypatch)
    own = comparer.compare(Job(CAT), "fp8-storage", None)
    assert own.metrics.lpips == 0 and "not LPIPS" in own.metrics.lpips_note
    other = comparer.compare(Job(CAT), "bf16", None)
    assert other.metrics.lpips > 0
