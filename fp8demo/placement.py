"""Carry out a card plan's placement (planner.CardPlan) on a loaded pipeline.

The loader has already put every GPU-resident component on the GPU as it loaded (FP8 layers quantized on the way);
what is left here is the rest of the plan:
- model offload: a component waits in host memory and visits the GPU while it runs, one visitor at a time, and a
  visitor leaves when anything else runs (the planner's phases count one visiting encoder, never two);
- on the CPU: the component runs there; its inputs are moved to it and its outputs back (accelerate hook);
- group offload: the transformer streams block by block from host memory with CUDA streams prefetching the next
  block (diffusers `enable_group_offload`);
- sequential: diffusers' sequential CPU offload of everything, the last resort.
"""

from __future__ import annotations

import logging

from . import planner
from .precision import COMPONENTS, PrecisionPlan

log = logging.getLogger(__name__)

# Blocks per group for group offload: one block runs while the next one is prefetched on a CUDA stream, which is
# what planner.GROUP_OFFLOAD_BLOCKS_ON_GPU counts.
BLOCKS_PER_GROUP = 1


def load_devices(card: planner.CardPlan, device: str) -> dict[str, str]:
    """Where each component loads: straight onto the GPU when it stays there, into host memory otherwise."""
    return {c: device if card.placement[c] == planner.GPU else "cpu" for c in COMPONENTS}


def precision_for(plan: PrecisionPlan, card: planner.CardPlan) -> PrecisionPlan:
    """The precision plan as the card plan decides it: compile (off when the transformer is offloaded), offload."""
    from dataclasses import replace

    where = card.placement["transformer"]
    if card.all_resident:
        offload = "none"
    elif where == planner.GROUP_OFFLOAD:
        offload = "group"
    elif where == planner.SEQUENTIAL:
        offload = "sequential"
    else:
        offload = "model"  # the transformer stays resident; text encoders (or the VAE) move or run on the CPU
    notes = tuple(n for n in card.notes if n not in plan.notes)
    return replace(plan, compile=card.compile, offload=offload, notes=plan.notes + notes)


class _Visits:
    """One visitor on the GPU at a time: a visitor is moved in when it runs, and out when anything else runs."""

    def __init__(self, device: str):
        self.device = device
        self.current = None

    def enter(self, module, visitor: bool) -> None:
        if self.current is not None and self.current is not module:
            self.current.to("cpu")
            self.current = None
        if visitor and self.current is not module:
            module.to(self.device)
            self.current = module


def _visit_hook(visits: _Visits, visitor: bool):
    from accelerate.hooks import ModelHook

    class VisitHook(ModelHook):
        # `execution_device` tells diffusers' `_execution_device` where the pipeline computes
        execution_device = visits.device

        def pre_forward(self, module, *args, **kwargs):
            visits.enter(module, visitor)
            return args, kwargs

    return VisitHook()


def apply(pipe, card: planner.CardPlan, device: str) -> None:
    """Offload what the card plan offloads; the GPU-resident components are already on `device`."""
    import torch
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    placement = card.placement
    if placement["transformer"] == planner.SEQUENTIAL:
        pipe.enable_sequential_cpu_offload(device=device)
        return
    if placement["transformer"] == planner.GROUP_OFFLOAD:
        pipe.transformer.enable_group_offload(
            onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=BLOCKS_PER_GROUP, use_stream=True,
        )
    visitors = [c for c in COMPONENTS if placement[c] == planner.MODEL_OFFLOAD]
    if visitors:
        visits = _Visits(device)
        for name in COMPONENTS:
            module = getattr(pipe, name, None)
            # every component that runs on the GPU gets the hook: its forward sends the last visitor out
            if module is not None and placement[name] in (planner.GPU, planner.MODEL_OFFLOAD):
                add_hook_to_module(module, _visit_hook(visits, name in visitors), append=True)
    for name in (c for c in COMPONENTS if placement[c] == planner.CPU):
        # runs on the CPU: inputs come from the GPU and the outputs go back to where the inputs came from
        add_hook_to_module(getattr(pipe, name), AlignDevicesHook(execution_device="cpu", io_same_device=True),
                           append=True)
    log.info("placement: %s", card.summary())


def fallback_card(plan: PrecisionPlan, device: str, has_t5: bool) -> dict:
    """What the engine reports when the card planner has nothing to plan (not CUDA, or an architecture it does not
    know, e.g. tiny): every component where the precision plan's offload puts it, in the card plan's words."""
    where = planner.GPU if device == "cuda" and plan.offload == "none" else device
    if plan.offload in ("model", "sequential"):
        where = {"model": planner.MODEL_OFFLOAD, "sequential": planner.SEQUENTIAL}[plan.offload]
    placement = {c: where for c in COMPONENTS}
    if not has_t5:
        placement["text_encoder_3"] = planner.OFF
    return {"planner": None, "placement": placement, "offload": plan.offload, "compile": plan.compile,
            "notes": [f"No card plan on {device} (the planner plans CUDA cards and the SD3.5 architectures): "
                      f"every component runs on {device}" + ("." if plan.offload == "none" else
                                                            f", offload {plan.offload}.")]}
