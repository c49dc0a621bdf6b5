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


def _seed(seed, randomize):
    if randomize or seed is None or (isinstance(seed, float) and math.isnan(seed)):
        return None
    if isinstance(seed, float) and not seed.is_integer():
        return seed  # validate() explains that a seed is a whole number
    return int(seed)


def to_request(prompt, negative, seed, randomize, steps, guidance, aspect) -> GenerationRequest:
    width, height = parse_size(aspect)
    return GenerationRequest(
        prompt=prompt or "",
        negative_prompt=negative or "",
        seed=_seed(seed, randomize),
        steps=int(steps) if steps is not None and float(steps).is_integer() else steps,
        guidance=float(guidance) if guidance is not None else None,
        width=width,
        height=height,
    )


def _check_size(aspect, max_side: int) -> None:
    width, height = parse_size(aspect)
    validate(GenerationRequest("x", width=width, height=height), max_side)


def field_errors(prompt, negative, seed, randomize, steps, guidance, aspect, num_images,
                 max_side: int = config.MAX_SIDE) -> dict[str, str]:
    """{field name: message} for every field whose value cannot run; empty when the form is good.

    Each field is checked on its own (with harmless values elsewhere), so each message lands beside its own field.
    """
    ok = "x"
    checks = {
        "prompt": lambda: validate(GenerationRequest(prompt or "")),
        "negative": lambda: validate(GenerationRequest(ok, negative_prompt=negative or "")),
        "seed": lambda: validate(GenerationRequest(ok, seed=_seed(seed, randomize))),
        "steps": lambda: validate(GenerationRequest(ok, steps=int(steps) if float(steps).is_integer() else steps)),
        "guidance": lambda: validate(GenerationRequest(ok, guidance=guidance)),
        "aspect": lambda: _check_size(aspect, max_side),
        "num_images": lambda: validate_num_images(int(num_images) if float(num_images).is_integer() else num_images),
    }
    errors = {}
    for name, check in checks.items():
        try:
            check()
        except InvalidRequest as error:
            errors[name] = str(error)
        except (TypeError, ValueError):
            errors[name] = "This value is not a number."
    return errors
