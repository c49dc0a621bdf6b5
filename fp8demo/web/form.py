"""From widget values to a GenerationRequest, and the inline message for each field at fault. Pure: no Gradio."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import config
from ..errors import InvalidRequest
from ..request import GenerationRequest, validate, validate_num_images
from .service import parse_size


@dataclass(frozen=True)
class Defaults:
    """The widgets' initial values, from the model preset: also the API's defaults for every optional argument."""

    steps: int
    guidance: float
    aspect: str
    aspects: tuple[str, ...]

    @classmethod
    def of(cls, preset: config.Preset) -> Defaults:
        sizes = config.aspect_sizes(preset)
        return cls(preset.steps, preset.guidance, config.default_aspect(preset), tuple(sizes))

    def aspect_label(self, width: int, height: int) -> str:
        """The dropdown label of a size, or WIDTHxHEIGHT when it is not one of the presets."""
        size = f"{width}x{height}"
        return next((a for a in self.aspects if a.endswith(" " + size)), size)


def number(value):
    """A number as the API may send it (JSON number, or text holding one), as an int when whole. Anything else is
    returned unchanged, so that validate() names the field and shows the value: the events take raw values
    (preprocess=False) precisely so that a wrong type gets that message instead of Gradio's "Could not preprocess
    input component at index N"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _seed(seed, randomize):
    if randomize is True or seed is None or seed == "" or (isinstance(seed, float) and math.isnan(seed)):
        return None
    return number(seed)


def _guidance(value):
    value = number(value)
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _text(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"The {name} must be text, got {type(value).__name__}.")
    return value


def _randomize(value) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest("Randomize seed must be true or false.")
    return value


def to_request(prompt, negative, seed, randomize, steps, guidance, aspect) -> GenerationRequest:
    """Widget (or raw API) values to a request; a value of the wrong type raises InvalidRequest naming its field."""
    width, height = parse_size(aspect)
    return GenerationRequest(
        prompt=_text(prompt, "prompt"),
        negative_prompt=_text(negative, "negative prompt"),
        seed=_seed(seed, _randomize(randomize)),
        steps=number(steps),
        guidance=_guidance(guidance),
        width=width,
        height=height,
    )


def _check_size(aspect, max_side: int) -> None:
    width, height = parse_size(aspect)
    validate(GenerationRequest("x", width=width, height=height), max_side)


def field_errors(prompt, negative, seed, randomize, steps, guidance, aspect, num_images,
                 max_side: int = config.MAX_SIDE, max_prompt_chars: int | None = None) -> dict[str, str]:
    """{field name: message} for every field whose value cannot run; empty when the form is good.

    Each field is checked on its own (with harmless values elsewhere), so each message lands beside its own field.
    """
    ok = "x"
    chars = max_prompt_chars
    checks = {
        "prompt": lambda: validate(GenerationRequest(_text(prompt, "prompt")), max_prompt_chars=chars),
        "negative": lambda: validate(GenerationRequest(ok, negative_prompt=_text(negative, "negative prompt")),
                                     max_prompt_chars=chars),
        "randomize": lambda: _randomize(randomize),
        "seed": lambda: validate(GenerationRequest(ok, seed=_seed(seed, randomize))),
        "steps": lambda: validate(GenerationRequest(ok, steps=number(steps))),
        "guidance": lambda: validate(GenerationRequest(ok, guidance=_guidance(guidance))),
        "aspect": lambda: _check_size(aspect, max_side),
        "num_images": lambda: validate_num_images(number(num_images)),
    }
    errors = {}
    for name, check in checks.items():
        try:
            check()
        except InvalidRequest as error:
            errors[name] = str(error)
    return errors
