"""Preparing a loaded pipeline to serve, as the run plan says. Read top to bottom.

The loader has already made each component's precision what the plan says as it arrived (weights/sources.py); the
engine warms the result up (compiled graphs, first allocations) before the first visitor.
"""

from __future__ import annotations

import logging

from . import compiler, placement, report, stepcache
from .report import Report
from .runplan import RunPlan
from .weights import pos_table, quantize

log = logging.getLogger(__name__)


def transformer(transformer, plan: RunPlan):
    """The transformer's part (the comparison's second transformer goes through it alone); returns the module that
    serves (FP8 attention wraps it)."""
    # 1. Keep only the part of the positional table the largest side reaches: bit-identical images, less memory.
    pos_table.crop(transformer, plan.max_side)
    # 2. FP8 where the plan has it and the loader has not done it already (never twice: see quantize.quantize).
    quantize.quantize(transformer, "transformer", plan)
    # 3. Attention kernels: PyTorch's SDPA unless xformers or FP8 attention was asked for. SD3's attention processor
    #    calls F.scaled_dot_product_attention itself (diffusers' set_attention_backend does not reach it); torchao's
    #    wrapper swaps that function for its FP8 flash-attn 3 kernel while the transformer runs. Before compiling.
    if plan.attention == "xformers":
        transformer.enable_xformers_memory_efficient_attention()
    elif plan.attention == "fp8":
        from torchao.prototype.attention import AttentionBackend, apply_low_precision_attention

        transformer = apply_low_precision_attention(transformer, AttentionBackend.FP8_FA3)
    return transformer


def speed(transformer, plan: RunPlan, compile_cache: compiler.CompileCache | None = None) -> None:
    """Compile the blocks where the plan says so (their graphs are built by the engine's warm-up, kept in
    `compile_cache`), then count the blocks that run and put the step cache on: in this order (stepcache.py)."""
    if plan.compile:
        if compile_cache is not None:
            compiler.activate(compile_cache)
        compiler.compile_blocks(transformer, plan.device)
    stepcache.attach(transformer, plan.cache)


def pipeline(pipe, plan: RunPlan, compile_cache: compiler.CompileCache | None = None) -> Report:
    """Steps 1-7 on a loaded pipeline; returns what it holds, measured before anything is offloaded."""
    pipe.transformer = transformer(pipe.transformer, plan)
    if plan.attention == "xformers":  # the VAE's attention too
        pipe.enable_xformers_memory_efficient_attention()
    # 4. T5-XXL in FP8 weights where the plan says so (loaders usually did it while loading).
    if pipe.text_encoder_3 is not None:
        quantize.quantize(pipe.text_encoder_3, "text_encoder_3", plan)
    held = report.measure(pipe, plan)
    # 5. Placement: offload what the plan offloads (CUDA-resident components loaded straight onto the device).
    placement.apply(pipe, plan)
    # 6. Compile the transformer blocks, count them and put the step cache on.
    speed(pipe.transformer, plan, compile_cache)
    # 7. The engine reports progress itself.
    pipe.set_progress_bar_config(disable=True)
    return held
