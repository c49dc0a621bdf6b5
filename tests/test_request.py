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


def test_png_parameters_read_back_ours_and_a1111s():
    from PIL import Image

    from fp8demo.request import GenerationResult, Timings, parameters_text, parse_parameters

    req = GenerationRequest("a cat,\non a mat", negative_prompt="dog", seed=7, steps=12, guidance=3.5, width=832,
                            height=1216)
    ours = GenerationResult(Image.new("RGB", (8, 8)), req, Timings(0, 0, 0, 0), 0, "", "tiny", "fp8")
    assert parse_parameters(parameters_text(ours)) == {"prompt": "a cat,\non a mat", "negative_prompt": "dog",
                                                       "seed": 7, "steps": 12, "guidance": 3.5, "width": 832,
                                                       "height": 1216}
    forge = ('a fox\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, '
             'Seed: 1234, Size: 512x768, Model hash: abc, Model: "sd, xl", Version: f2.0.1')
    assert parse_parameters(forge) == {"prompt": "a fox", "negative_prompt": "blurry", "seed": 1234, "steps": 20,
                                       "guidance": 7.0, "width": 512, "height": 768}
    assert parse_parameters("just a prompt") == {"prompt": "just a prompt", "negative_prompt": ""}


def test_the_generate_form_checks_each_field_with_the_requests_own_check():
    from fp8demo.web.form import FIELDS, GenerateForm

    good = GenerateForm(prompt="a cat", seed="7", randomize_seed=False, steps=2.0, guidance=3,
                        aspect_ratio="16:9 · 1344x768", num_images=4)
    assert good.errors() == {} and good.images() == 4
    assert good.to_request() == GenerationRequest("a cat", "", seed=7, steps=2, guidance=3.0, width=1344, height=768)
    bad = GenerateForm(prompt=" ", negative_prompt=5, seed="abc", randomize_seed=False, steps=0, guidance=21,
                       aspect_ratio="1000x1000", num_images=9)
    errors = bad.errors()
    assert list(errors) == [name for name in FIELDS if name != "randomize_seed"]  # each beside its own field
    for name, request in (("prompt", GenerationRequest(" ")), ("steps", GenerationRequest("x", steps=0)),
                          ("guidance", GenerationRequest("x", guidance=21)),
                          ("aspect_ratio", GenerationRequest("x", width=1000, height=1000))):
        with pytest.raises(InvalidRequest) as raised:
            validate(request)
        assert errors[name] == str(raised.value)  # the same message as the whole request's validation
    assert errors["negative_prompt"] == "The negative prompt must be text, got int."
    assert errors["seed"] == "The seed must be a whole number, got 'abc'."
    assert errors["num_images"].startswith("Images per run must be a whole number from 1 to 4")
    assert bad.errors(only=["steps"]) == {"steps": errors["steps"]}
    assert GenerateForm(seed="abc").errors(only=["seed"]) == {}  # a randomized seed is not read
