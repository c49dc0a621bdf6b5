"""Speed recipes: named sets of speed choices, and the step caches they may use. Pure: no torch.

A recipe is written as a base and modifiers joined by "+", the way the fidelity harness and Compare name them:

  bases      bf16, fp16    the transformer in 16 bits
             fp8           FP8 as this machine runs it best (native FP8 matmuls on compute capability >= 8.9)
             fp8-storage   FP8 weights, 16-bit compute (saves memory, not time)
             fp8-native    FP8 weights and activations (torch._scaled_mm)
  modifiers  compile       torch.compile the transformer blocks
             cache         the preset's recommended step cache (none where the preset has none)
             cache=SPEC    a step cache (parse_cache: first-block:0.08, taylorseer:4, ...)
             fp8-attention FP8 attention (Hopper; the run plan refuses it elsewhere, with the reason)

e.g. "fp8-native+compile+cache=first-block:0.08". A recipe only sets engine flags (config.EngineConfig); the run
plan decides the rest and refuses what the machine cannot do, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import config
from .errors import SetupError

CACHE_KINDS = ("first-block", "taylorseer", "mag")


@dataclass(frozen=True)
class StepCache:
    """Reusing the transformer's work across denoising steps (diffusers' cache hooks)."""

    kind: str  # one of CACHE_KINDS
    threshold: float | None = None  # first-block, mag: how much change is still "the same"
    interval: int | None = None  # taylorseer: a full computation every `interval` steps
    warmup: int | None = None  # taylorseer: full computations for the first `warmup` steps

    def __str__(self) -> str:
        if self.kind == "taylorseer":
            return f"taylorseer:{self.interval}:{self.warmup}"
        return f"{self.kind}:{self.threshold:g}"


def parse_cache(text: str | None) -> StepCache | None:
    """`--cache` as given: None for "none"; SetupError naming the flag for anything else it cannot read."""
    text = (text or "none").strip().lower()
    if text == "none":
        return None
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind in ("first-block", "mag") and len(parts) <= 1:
            threshold = float(parts[0]) if parts else {"first-block": 0.08, "mag": 0.06}[kind]
            if not 0 < threshold < 1:
                raise ValueError
            return StepCache(kind, threshold=threshold)
        if kind == "taylorseer" and len(parts) <= 2:
            interval = int(parts[0]) if parts else 4
            warmup = int(parts[1]) if len(parts) > 1 else 3
            if interval < 2 or warmup < 1:
                raise ValueError
            return StepCache(kind, interval=interval, warmup=warmup)
    except ValueError:
        pass
    raise SetupError(f"--cache {text!r}: expected {config.CACHE_HELP}.")


# The step cache each preset runs with unless --cache says otherwise. Distilled few-step models change too much from
# one step to the next for a cache to skip anything (published: ~1x on 4-step models), so Turbo and tiny get none;
# Large and Medium at 28-40 steps skip whole steps late in the schedule. The threshold is the low end of what
# First-Block Cache's authors publish for FLUX and SD3-class models (0.05-0.12): its price on quality is measured by
# `python -m fp8demo fidelity` (docs/performance.md), and the GPU suite re-measures it on the real weights.
RECOMMENDED_CACHE = {"large-turbo": "none", "large": "first-block:0.08", "medium": "first-block:0.08",
                     "tiny": "none"}

BASES = {"bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"}, "fp8": {"precision": "fp8"},
         "fp8-storage": {"precision": "fp8", "fp8_matmul": "weight-only"},
         "fp8-native": {"precision": "fp8", "fp8_matmul": "native"}}


def recommended_cache(preset: config.Preset | None) -> str:
    return RECOMMENDED_CACHE.get(preset.name, "none") if preset is not None else "none"


def flags(recipe: str, preset: config.Preset | None = None) -> dict:
    """The engine flags `recipe` sets (names of config.EngineConfig fields); SetupError naming the part it cannot
    read. Flags a recipe does not name keep what the user gave (compile: off unless named; cache: none)."""
    base, *modifiers = [part.strip() for part in recipe.strip().lower().split("+")]
    if base not in BASES:
        raise SetupError(f"Recipe {recipe!r}: it starts with one of {', '.join(BASES)}, not {base!r}.")
    values = dict(BASES[base], compile=False, cache="none", attention="sdpa")
    for modifier in modifiers:
        if modifier == "compile":
            values["compile"] = True
        elif modifier == "cache":
            values["cache"] = recommended_cache(preset)
        elif modifier.startswith("cache="):
            spec = modifier.removeprefix("cache=")
            parse_cache(spec)  # a bad spec is refused here, naming the recipe's part
            values["cache"] = spec
        elif modifier == "fp8-attention":
            values["attention"] = "fp8"
        else:
            raise SetupError(f"Recipe {recipe!r}: unknown part {modifier!r}; the parts after the base are compile, "
                             "cache, cache=<spec> and fp8-attention.")
    return values


def names_compile(recipe: str) -> bool:
    """The recipe says `compile` (else a comparison compiles it like the engine's own side)."""
    return "compile" in [part.strip() for part in recipe.strip().lower().split("+")[1:]]


def apply(cfg: config.EngineConfig, recipe: str, preset: config.Preset | None = None) -> config.EngineConfig:
    """`cfg` with the speed choices of `recipe` (the model and everything else unchanged)."""
    return replace(cfg, **flags(recipe, preset))
