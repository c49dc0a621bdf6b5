"""The step cache on a transformer (diffusers' cache hooks), and a count of the blocks that really ran.

diffusers applies its caches to models that inherit CacheMixin and to pipelines that open a cache context around
each denoiser call; SD3's transformer and pipeline do neither. So the hooks are applied here with diffusers' own
functions (its registry already describes SD3's JointTransformerBlock), and `run` opens the one context a whole
image uses (SD3 runs the conditional and unconditional halves as one batch: one denoiser call a step) and clears
the hooks' state afterwards, so that no image inherits another's residuals.

Order matters with torch.compile: the blocks are compiled first (compiler.compile_blocks compiles each block's
forward), then counted, then the cache hooks wrap that: the cache's decisions stay in Python, outside the graphs,
so a skipped step never changes what was compiled.
"""

from __future__ import annotations

import contextlib
import functools

from .recipes import StepCache


def attach(transformer, cache: StepCache | None) -> None:
    """Count the blocks that run, then put `cache` on the transformer (None: counting only)."""
    _count_blocks(transformer)
    if cache is None:
        return
    from diffusers.hooks import (
        FirstBlockCacheConfig,
        TaylorSeerCacheConfig,
        apply_first_block_cache,
        apply_taylorseer_cache,
    )

    _pass_context_through(transformer.transformer_blocks[-1])
    if cache.kind == "first-block":
        apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=cache.threshold))
    elif cache.kind == "taylorseer":
        # lite mode: on a predicted step no block runs and the transformer's output is extrapolated (the full
        # mode predicts each attention's output but still runs every block's MLPs: little saved on an MMDiT)
        apply_taylorseer_cache(transformer, TaylorSeerCacheConfig(
            cache_interval=cache.interval, disable_cache_before_step=cache.warmup,
            taylor_factors_dtype=transformer.dtype, use_lite_mode=True))
    else:  # the run plan refuses the others
        raise ValueError(f"no step cache {cache.kind!r}")
    transformer._fp8demo_step_cache = cache


def _count_blocks(transformer) -> None:
    """Each block's forward counts its calls on the transformer (a skipped block's forward is never called)."""
    if getattr(transformer, "_fp8demo_blocks_run", None) is not None:
        return
    transformer._fp8demo_blocks_run = 0
    for block in transformer.transformer_blocks:
        forward = block.forward

        @functools.wraps(forward)
        def counted(*args, _forward=forward, **kwargs):
            transformer._fp8demo_blocks_run += 1
            return _forward(*args, **kwargs)

        block.forward = counted


def _pass_context_through(block) -> None:
    """SD3's last block updates only the image stream and returns None for the text stream, which the caches'
    hooks compute with (First-Block Cache's tail subtracts from it); nothing after the last block reads the text
    stream, so it is handed on as it came."""
    if not getattr(block, "context_pre_only", False):
        return
    forward = block.forward

    @functools.wraps(forward)
    def passthrough(*args, **kwargs):
        context = kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[1]
        encoder_hidden_states, hidden_states = forward(*args, **kwargs)
        return (context if encoder_hidden_states is None else encoder_hidden_states), hidden_states

    block.forward = passthrough


def blocks_run(transformer) -> int:
    """Blocks run so far (every call of every block, since attach)."""
    return getattr(transformer, "_fp8demo_blocks_run", 0)


@contextlib.contextmanager
def run(transformer):
    """One image's denoising: the cache's context around it, its state cleared after (also after an error)."""
    if getattr(transformer, "_fp8demo_step_cache", None) is None:
        yield
        return
    from diffusers.hooks import HookRegistry
    from diffusers.models.cache_utils import CacheMixin

    # SD3's transformer lacks CacheMixin; its cache_context only needs the module the hooks are on
    with CacheMixin.cache_context(transformer, "denoise"):
        try:
            yield
        finally:
            HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks()
