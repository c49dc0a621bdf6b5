"""Validation: every bad input gets a message a visitor understands."""

import pytest

from fp8demo import config
from fp8demo.errors import InvalidRequest
from fp8demo.request import GenerationRequest, resolve, validate

OK = GenerationRequest("a cat")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="   \n"), "prompt is empty"),
        (dict(steps=0), "Steps must be between 1 and 100"),
        (dict(steps=101), "Steps must be between 1 and 100"),
        (dict(steps=2.5), "whole number"),
        (dict(guidance=-1.0), "Guidance must be between 0 and 20"),
        (dict(guidance=21.0), "Guidance must be between 0 and 20"),
        (dict(width=1000), "multiple of 16 pixels, got 1000 \\(try 992 or 1008\\)"),
        (dict(height=520), "multiple of 16"),
        (dict(width=128), "between 256 and 1536"),
        (dict(height=4096), "between 256 and 1536"),
        (dict(seed=-1), "between 0 and 4294967295"),
        (dict(seed=2**32), "between 0 and 4294967295"),
        (dict(seed=1.5), "whole number"),
        (dict(seed=True), "whole number"),
    ],
)
def test_bad_values_are_explained(changes, message):
    from dataclasses import replace

    with pytest.raises(InvalidRequest, match=message):
        validate(replace(OK, **changes))


def test_edges_are_accepted():
    for req in (
        GenerationRequest("x", seed=0, steps=1, guidance=0.0, width=256, height=1536),
        GenerationRequest("x", seed=config.MAX_SEED, steps=100, guidance=20, width=1536, height=256),
    ):
        assert validate(req) == req


def test_prompt_is_stripped():
    assert validate(GenerationRequest("  a cat  ", "  blurry ")).prompt == "a cat"


def test_resolve_uses_is_none_not_truthiness():
    preset = config.PRESETS["large"]
    r = resolve(GenerationRequest("x", seed=0, steps=None, guidance=0.0, width=None, height=768), preset)
    assert (r.seed, r.steps, r.guidance, r.width, r.height) == (0, 40, 0.0, 1024, 768)
    r = resolve(GenerationRequest("x"), config.PRESETS["large-turbo"], rng_seed=99)
    assert (r.seed, r.steps, r.guidance) == (99, 4, 0.0)
