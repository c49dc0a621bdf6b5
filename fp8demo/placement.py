"""Carry out a run plan's placement on a loaded pipeline.

The loader has already put every component that stays on a CUDA device there as it loaded (FP8 layers quantized on
the way); what is left here is the rest of the plan:
- resident on another device (MPS): moved there now;
- model offload: a component waits in host memory and visits the GPU while it runs, one visitor at a time, and a
  visitor leaves when anything else runs (the planner's phases count one visiting encoder, never two);
- on the CPU: the component runs there; its inputs are moved to it and its outputs back (accelerate hook);
- group offload: the transformer streams block by block from host memory with CUDA streams prefetching the next
  block (diffusers `enable_group_offload`);
- sequential: diffusers' sequential CPU offload of everything, the last resort.
"""

from __future__ import annotations

import logging

from .planner import Where, summary
from .policy import COMPONENTS

log = logging.getLogger(__name__)

# Blocks per group for group offload: one block runs while the next one is prefetched on a CUDA stream, which is
# what planner.GROUP_OFFLOAD_BLOCKS_ON_GPU counts.
BLOCKS_PER_GROUP = 1


def load_devices(plan) -> dict[str, str]:
    """Where each component loads: straight onto a CUDA device when it stays there, into host memory otherwise
    (torchao quantizes on the CPU for the other devices, which get their components moved afterwards)."""
    on_cuda = plan.device == "cuda"
    return {c: plan.target if on_cuda and plan.placement[c] is Where.DEVICE else "cpu" for c in COMPONENTS}


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


def apply(pipe, plan) -> None:
    """Offload what the plan offloads and move what stays resident off the CPU; CUDA-resident parts are there."""
    import torch
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    device, where = plan.target, plan.placement
    if where["transformer"] is Where.SEQUENTIAL:
        pipe.enable_sequential_cpu_offload(device=device)
        return
    if where["transformer"] is Where.GROUP_OFFLOAD:
        pipe.transformer.enable_group_offload(
            onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=BLOCKS_PER_GROUP, use_stream=True,
        )
    modules = {c: getattr(pipe, c, None) for c in COMPONENTS}
    if plan.device not in ("cpu", "cuda"):
        for name, module in modules.items():
            if module is not None and where[name] is Where.DEVICE:
                module.to(device)
    visitors = [c for c in COMPONENTS if where[c] is Where.MODEL_OFFLOAD]
    if visitors:
        visits = _Visits(device)
        for name, module in modules.items():
            # every component that runs on the GPU gets the hook: its forward sends the last visitor out
            if module is not None and where[name] in (Where.DEVICE, Where.MODEL_OFFLOAD):
                add_hook_to_module(module, _visit_hook(visits, name in visitors), append=True)
    for name in (c for c in COMPONENTS if where[c] is Where.CPU):
        # runs on the CPU: inputs come from the GPU and the outputs go back to where the inputs came from
        add_hook_to_module(modules[name], AlignDevicesHook(execution_device="cpu", io_same_device=True), append=True)
    log.info("placement: %s", summary(where, plan.device))
