"""Plans for a card named by its size, offline: `python -m fp8demo plan` and the docs' table of plans per card."""

from __future__ import annotations

from dataclasses import replace

from . import config
from .errors import UserError
from .hardware import Capabilities
from .planner import GIB, PLAN_MODELS
from .runplan import RunPlan
from .weights import footprint, random_models


def card_capabilities(vram_bytes: int, compute_capability: tuple[int, int] = (8, 9)) -> Capabilities:
    """A hypothetical CUDA card of that size; by default an Ada one (FP8 tensor cores, like the RTX 40 series)."""
    return Capabilities(device="cuda", name=f"{vram_bytes / GIB:g} GiB card", compute_capability=compute_capability,
                        total_memory=vram_bytes, free_memory=vram_bytes)


def source_of(model: str):
    """The sources.ModelSource of large-turbo | large | medium, random:<arch>[:blocks], an official repo id or auto
    (a CUDA card's default model); a UserError for anything the planner has no architecture for."""
    from .weights.sources import resolve_model

    accepted = ", ".join([*PLAN_MODELS, *(f"random:{a}" for a in random_models.ARCHITECTURES),
                          *config.REPO_TO_PRESET])
    source = None if model == "tiny" else resolve_model(model, card_capabilities(GIB))
    if source is None or footprint.source_architecture(source) is None:
        raise UserError(f"plan knows the SD3.5 architectures only: use one of {accepted}.")
    return source


def plan_for_card(model: str, vram_gib: float, cfg: config.EngineConfig | None = None,
                  compute_capability: tuple[int, int] = (8, 9)) -> RunPlan:
    """The run plan of `model` under `cfg`'s options (default: the defaults) on a card of `vram_gib` GiB."""
    cfg = cfg or config.EngineConfig()
    if not vram_gib > 0:
        raise UserError(f"--vram must be a positive number of GiB, got {vram_gib:g}.")
    source = source_of(model)
    return footprint.plan_for(source, replace(cfg, model=model), card_capabilities(int(vram_gib * GIB),
                                                                                     compute_capability))
