"""What a visitor asks for and what they get back, with the checks that turn bad input into plain messages."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import config
from .errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt and its settings. None means "the model preset's default" (resolved by `resolve`)."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Timings:
    text_encoding: float
    denoising: float
    vae_decode: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GenerationResult:
    image: Image.Image
    request: GenerationRequest  # fully resolved: every field set, the seed the one actually used
    timings: Timings
    peak_memory_bytes: int
    peak_memory_kind: str
    precision: str  # one-line label, e.g. "fp8-native (e4m3, per-row) + bf16"
    model: str
    warnings: tuple[str, ...] = ()
    embeddings_cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    images: tuple[Image.Image, ...] = ()  # the whole batch when several images were asked for; images[0] is image
    # transformer blocks that ran, of steps x blocks (a step cache skips some; None: not counted)
    blocks_run: int | None = None
    blocks_total: int | None = None

    @property
    def blocks_skipped(self) -> int | None:
        return None if self.blocks_run is None or self.blocks_total is None else self.blocks_total - self.blocks_run

    def each_image(self) -> list[GenerationResult]:
        """One result per image of the batch, each with the seed that makes it alone (seed, seed+1, ...)."""
        images = self.images or (self.image,)
        return [replace(self, image=img, images=(img,),
                        request=replace(self.request, seed=batch_seed(self.request.seed, i)))
                for i, img in enumerate(images)]


MAX_IMAGES = 4  # images per run on the Generate page and the API


@dataclass
class Job:
    """One generation on its way from a face through the engine: the request and what to call while it runs."""

    request: GenerationRequest
    num_images: int = 1  # a batch with seeds seed, seed+1, ...
    progress: Callable[[int, int], None] | None = None  # (steps done, steps) after each step
    preview: Callable[[Image.Image], None] | None = None  # a small picture of the latents after each step
    cancel: threading.Event = field(default_factory=threading.Event)  # set: stop after the current step
    transformer: Any = None  # another denoiser (the comparison's other side); None: the engine's own
    label: str | None = None  # that denoiser's precision, as the result names it


def batch_seed(seed: int, index: int) -> int:
    """Seed of image `index` in a batch: seed + index, as Forge numbers them (wrapping past the largest seed)."""
    return (seed + index) % (config.MAX_SEED + 1)


def resolve(request: GenerationRequest, preset: config.Preset, rng_seed: int | None = None) -> GenerationRequest:
    """Fill unset fields from the preset. `is None`, never `or`: an explicit 0 (seed, guidance) must survive."""
    seed = request.seed
    if seed is None:
        seed = rng_seed if rng_seed is not None else secrets.randbelow(config.MAX_SEED + 1)
    return replace(
        request,
        seed=seed,
        steps=preset.steps if request.steps is None else request.steps,
        guidance=preset.guidance if request.guidance is None else request.guidance,
        width=preset.width if request.width is None else request.width,
        height=preset.height if request.height is None else request.height,
    )


def validate(request: GenerationRequest, max_side: int = config.MAX_SIDE,
             max_prompt_chars: int | None = None) -> GenerationRequest:
    """Raise InvalidRequest with a message a visitor understands; return the request with the prompts stripped.

    One check per field, in turn; a form calls the same checks one by one to put each message beside its own field.
    `max_prompt_chars` bounds both prompts (the web faces pass their limit; the CLI has none)."""
    prompt = check_prompt(request.prompt, max_prompt_chars)
    negative_prompt = check_negative_prompt(request.negative_prompt, max_prompt_chars)
    check_seed(request.seed)
    check_steps(request.steps)
    check_guidance(request.guidance)
    check_size(request.width, request.height, max_side)
    return replace(request, prompt=prompt, negative_prompt=negative_prompt)


# One check per field of a request. None (the preset's value) always passes; each returns the value it accepts.


def check_prompt(prompt, max_chars: int | None = None) -> str:
    if not isinstance(prompt, str):
        raise InvalidRequest(f"The prompt must be text, got {_short(prompt)}.")
    if not prompt.strip():
        raise InvalidRequest("The prompt is empty: describe the picture you want.")
    _check_length("prompt", prompt, max_chars)
    return prompt.strip()


def check_negative_prompt(negative_prompt, max_chars: int | None = None) -> str:
    if not isinstance(negative_prompt, str):
        raise InvalidRequest(f"The negative prompt must be text, got {_short(negative_prompt)}.")
    _check_length("negative prompt", negative_prompt, max_chars)
    return negative_prompt.strip()


def _check_length(name: str, text: str, max_chars: int | None) -> None:
    if max_chars is not None and len(text) > max_chars:
        raise InvalidRequest(f"The {name} is {len(text):,} characters long; the limit is {max_chars:,}. Shorten it "
                             "(the text encoders read ~1,000 at most).")


def check_seed(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidRequest(f"The seed must be a whole number, got {_short(seed)}.")
    if not 0 <= seed <= config.MAX_SEED:
        raise InvalidRequest(f"The seed must be between 0 and {config.MAX_SEED} (2^32 - 1), got {seed}.")
    return seed


def check_steps(steps) -> int | None:
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise InvalidRequest(f"Steps must be a whole number, got {_short(steps)}.")
    if not config.MIN_STEPS <= steps <= config.MAX_STEPS:
        raise InvalidRequest(f"Steps must be between {config.MIN_STEPS} and {config.MAX_STEPS}, got {steps}.")
    return steps


def check_guidance(guidance) -> float | None:
    if guidance is None:
        return None
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
        raise InvalidRequest(f"Guidance must be a number, got {_short(guidance)}.")
    if not config.MIN_GUIDANCE <= guidance <= config.MAX_GUIDANCE:
        raise InvalidRequest(f"Guidance must be between {config.MIN_GUIDANCE:g} and {config.MAX_GUIDANCE:g}, "
                             f"got {guidance:g}.")
    return guidance


def check_size(width, height, max_side: int = config.MAX_SIDE) -> tuple[int | None, int | None]:
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"The {name} must be a whole number of pixels, got {value!r}.")
        if not config.MIN_SIDE <= value <= max_side:
            raise InvalidRequest(f"The {name} must be between {config.MIN_SIDE} and {max_side} pixels, got {value}.")
        if value % config.SIZE_MULTIPLE:
            lower = value - value % config.SIZE_MULTIPLE
            raise InvalidRequest(
                f"The {name} must be a multiple of {config.SIZE_MULTIPLE} pixels, got {value} "
                f"(try {lower} or {lower + config.SIZE_MULTIPLE})."
            )
    return width, height


def validate_num_images(num_images) -> int:
    """Images per run (a batch); not part of the request itself, so checked on its own."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 1 <= num_images <= MAX_IMAGES:
        raise InvalidRequest(f"Images per run must be a whole number from 1 to {MAX_IMAGES}, got {num_images!r}.")
    return num_images


def _short(value: Any) -> str:
    """A value for a message: its repr, cut short (a message never echoes a megabyte back)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parameters_text(result: GenerationResult) -> str:
    """The A1111-style `parameters` text that tools such as ComfyUI and civitai read from a PNG."""
    r = result.request
    lines = [r.prompt]
    if r.negative_prompt:
        lines.append(f"Negative prompt: {r.negative_prompt}")
    lines.append(
        f"Steps: {r.steps}, Sampler: FlowMatchEuler, CFG scale: {r.guidance:g}, Seed: {r.seed}, "
        f"Size: {r.width}x{r.height}, Model: {result.model}, Precision: {result.precision}, "
        f"Version: fp8demo {_version()}"
    )
    return "\n".join(lines)


def _version() -> str:
    from . import __version__

    return __version__


# A1111's own pattern for the `key: value` pairs of the settings line (values may be quoted and contain commas).
_PARAM = re.compile(r'\s*([\w ./-]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> dict[str, Any]:
    """The inverse of `parameters_text`, also for PNGs made by A1111, Forge or civitai: prompt, negative prompt and
    whichever of seed, steps, guidance, width and height the settings line holds."""
    lines = (text or "").strip().splitlines()
    settings = ""
    if lines and _PARAM.match(lines[-1]) and "Steps:" in lines[-1]:
        settings = lines.pop()
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    pairs = {k.strip(): v.strip().strip('"') for k, v in _PARAM.findall(settings)}
    for key, name, kind in (("Seed", "seed", int), ("Steps", "steps", int), ("CFG scale", "guidance", float)):
        try:
            out[name] = kind(pairs[key])
        except (KeyError, ValueError):
            pass
    size = re.fullmatch(r"(\d+)x(\d+)", pairs.get("Size", ""))
    if size:
        out["width"], out["height"] = int(size.group(1)), int(size.group(2))
    return out
