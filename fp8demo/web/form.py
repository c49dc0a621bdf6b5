"""The Generate form: its fields named once, from widget (or raw API) values to a GenerationRequest, and the message
for each field at fault, from the request's own per-field checks. Pure: no Gradio."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from .. import config
from ..errors import InvalidRequest
from ..request import (
    GenerationRequest,
    check_guidance,
    check_negative_prompt,
    check_prompt,
    check_seed,
    check_size,
    check_steps,
    validate_num_images,
)

_SIZE = re.compile(r"(?<![\d.])(-?)(\d{1,5})\s*[x×]\s*(-?)(\d{1,5})\s*$")


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


@dataclass(frozen=True)
class GenerateForm:
    """The Generate tab's values as the page or an API caller sends them: raw, of any type (the events take raw
    values, preprocess=False, so that a value of the wrong type gets a message naming its field instead of Gradio's
    "Could not preprocess input component at index N"). The field names are the API's argument names and the keys of
    `errors`; their order is the order of the widgets and of the API's positional arguments."""

    prompt: Any = ""
    negative_prompt: Any = ""
    seed: Any = 0
    randomize_seed: Any = True
    steps: Any = None
    guidance: Any = None
    aspect_ratio: Any = None  # an aspect preset's label or WIDTHxHEIGHT
    num_images: Any = 1

    @classmethod
    def of(cls, values: dict[str, Any]) -> GenerateForm:
        """The form's fields out of an event's keyword values (which may hold other inputs too, e.g. states)."""
        return cls(**{name: values[name] for name in FIELDS if name in values})

    def to_request(self) -> GenerationRequest:
        """The request these values ask for. A value of the wrong type raises InvalidRequest naming its field; the
        ranges are the request's own checks (`request.validate`, which every job passes through)."""
        width, height = parse_size(self.aspect_ratio)
        return GenerationRequest(
            prompt=text(self.prompt, "prompt"),
            negative_prompt=text(self.negative_prompt, "negative prompt"),
            seed=self._seed(randomize(self.randomize_seed)),
            steps=number(self.steps),
            guidance=_guidance(self.guidance),
            width=width,
            height=height,
        )

    def images(self) -> int:
        """Images per run."""
        return validate_num_images(number(self.num_images))

    def errors(self, max_side: int = config.MAX_SIDE, max_prompt_chars: int | None = None,
               only: Iterable[str] | None = None) -> dict[str, str]:
        """{field name: message} for every field (of `only`, default all) whose value cannot run; empty when the form
        is good. Each field is checked on its own, by the request's check for it, so each message lands beside its
        own field."""
        checks: dict[str, Callable[[], object]] = {
            "prompt": lambda: check_prompt(text(self.prompt, "prompt"), max_prompt_chars),
            "negative_prompt": lambda: check_negative_prompt(text(self.negative_prompt, "negative prompt"),
                                                             max_prompt_chars),
            "seed": lambda: check_seed(self._seed(self.randomize_seed)),
            "randomize_seed": lambda: randomize(self.randomize_seed),
            "steps": lambda: check_steps(number(self.steps)),
            "guidance": lambda: check_guidance(_guidance(self.guidance)),
            "aspect_ratio": lambda: check_size(*parse_size(self.aspect_ratio), max_side),
            "num_images": self.images,
        }
        errors = {}
        for name in FIELDS if only is None else only:
            try:
                checks[name]()
            except InvalidRequest as error:
                errors[name] = str(error)
        return errors

    def _seed(self, randomize_seed) -> int | None:
        seed = self.seed
        if randomize_seed is True or seed is None or seed == "" or (isinstance(seed, float) and math.isnan(seed)):
            return None
        return number(seed)


FIELDS = tuple(f.name for f in fields(GenerateForm))


def settings_of(parameters: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    """A picture's settings (`request.parse_parameters`' keys: prompt, negative_prompt, seed, steps, guidance, width,
    height; any of them) as Generate form values by field name: those the picture has, its seed kept (not
    randomized) when it has one."""
    values = {name: parameters[name] for name in ("prompt", "negative_prompt", "seed", "steps", "guidance")
              if name in parameters}
    if "seed" in parameters:
        values["randomize_seed"] = False
    if "width" in parameters and "height" in parameters:
        values["aspect_ratio"] = defaults.aspect_label(parameters["width"], parameters["height"])
    return values


def parse_size(label) -> tuple[int, int]:
    """'16:9 · 1344x768' or '1344x768' -> (1344, 768). Range and multiple-of-16 checks are the request's own."""
    match = _SIZE.search(label) if isinstance(label, str) and len(label) <= 64 else None
    if not match:
        shown = repr(label) if len(repr(label)) <= 40 else repr(label)[:37] + "..."
        raise InvalidRequest(f"Unknown size {shown}: pick an aspect ratio or write WIDTHxHEIGHT, e.g. 1024x1024.")
    if match.group(1) or match.group(3):
        raise InvalidRequest(f"The aspect ratio's width and height must be positive, got {label.strip()!r}: "
                             "write WIDTHxHEIGHT, e.g. 1024x1024.")
    return int(match.group(2)), int(match.group(4))


def number(value):
    """A number as the API may send it (JSON number, or text holding one), as an int when whole. Anything else is
    returned unchanged, so that the request's check names the field and shows the value."""
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


def _guidance(value):
    value = number(value)
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def text(value, name: str) -> str:
    """Text as a field holds it: None is empty; anything else but text is refused, naming the field."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"The {name} must be text, got {type(value).__name__}.")
    return value


def randomize(value) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest("Randomize seed must be true or false.")
    return value
