"""torch.compile for the transformer: compiled once for every size, kept across restarts, never a visitor's error.

Mechanism, chosen by measurement (`python -m benchmarks.compile_shapes --mode M`, tiny model, 2-step requests on a
loaded 2-core CPU; benchmarks/results/compile-shapes-*.json): 14 requests, every aspect ratio plus CFG ones.
- whole transformer, `dynamic=False` (the old way): a compile per (height, width, batch), 50-173 s each; the 9th
  shape and everything after it raised FailOnRecompileLimitHit (4 of 14 requests failed).
- whole transformer, `dynamic=True`: every size served, but after 4 compiles of the whole model (262, 330, 334 and
  245 s): batch 1 and 2 specialise, and square and non-square sizes are separate graphs (the positional-embedding
  crop slices with Python ints, which become guards on height == width), so two visitors paid ~5 minutes.
- each block of `transformer_blocks` compiled with `dynamic=True` (this module): embeddings and the final layer stay
  eager, the blocks see only (batch, tokens, width) tensors with a symbolic token count. 2 compiles (242 s for
  batch 1, 145 s for batch 2), both done in warm-up, then every size and guidance served without compiling
  (request median 5.6 s, against 6.9 s through the whole dynamic graph). All blocks share one code object, so a
  model has at most one graph per block kind (plain, dual-attention, last) and batch class (1, or >= 2: CFG or
  several images).
After warm-up the stance is `fail_on_recompile`: a shape that would still need a compile raises at once, and
`Engine` runs that request with `eager_on_recompile` (compiled where possible, eager elsewhere), logging it once,
instead of making a visitor wait minutes for the compiler. Any other compiler failure turns compilation off.

Artifacts persist in `<FP8DEMO_CACHE>/compile/<key>/`: inductor's cache folder (FX graphs, kernels, autotuning)
plus torch's portable mega-cache (`save_cache_artifacts`), keyed by torch/torchao/diffusers versions, device,
model and precision plan, so a changed library, GPU or model never reuses another's kernels.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Autotuned GEMMs pay off on a GPU; CUDA graphs would be recorded once per shape (memory per size), so they stay off.
# On a CPU max-autotune only adds minutes of benchmarking to every cold start.
MODE = {"cuda": "max-autotune-no-cudagraphs"}
DEFAULT_MODE = "default"
# One code object serves every block: graphs = block kinds x batch classes (<= 6 for SD3.5). torch's default of 8
# leaves no room for error, and running out would be the visitor-facing error this module exists to prevent.
RECOMPILE_LIMIT = 32
MEGA_CACHE = "mega-cache.bin"


def mode_for(device: str) -> str:
    return MODE.get(device, DEFAULT_MODE)


@dataclass(frozen=True)
class CompileCache:
    folder: Path
    identity: dict

    @property
    def inductor_dir(self) -> Path:
        return self.folder / "inductor"

    @property
    def mega_cache(self) -> Path:
        return self.folder / MEGA_CACHE

    def state(self) -> dict:
        """What is on disk, for `doctor` and the logs."""
        files = [p for p in self.folder.rglob("*") if p.is_file()] if self.folder.exists() else []
        return {
            "folder": str(self.folder),
            "exists": bool(files),
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "mega_cache": self.mega_cache.exists(),
        }


def identity(model: str, device_description: str, plan, mode: str) -> dict:
    """Everything a compiled kernel depends on (`plan`: the run plan); any change gives another cache folder."""
    from .hardware import versions

    v = versions()
    return {
        **{k: v[k] for k in ("torch", "torchao", "diffusers", "python", "cuda", "triton")},
        "device": device_description,
        "model": model,
        "blocks": plan.blocks.value,
        "modulation": plan.modulation.value,
        "compute_dtype": plan.compute_dtype,
        "mode": mode,
    }


def cache_for(cache_dir: Path, ident: dict) -> CompileCache:
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return CompileCache(Path(cache_dir) / "compile" / key, ident)


def activate(cache: CompileCache) -> None:
    """Point inductor (and Triton) at the cache folder and preload the mega-cache, before anything compiles."""
    import torch
    from torch._inductor.utils import clear_caches

    cache.inductor_dir.mkdir(parents=True, exist_ok=True)
    (cache.folder / "key.json").write_text(json.dumps(cache.identity, indent=1, sort_keys=True))
    # Inductor reads its cache folder from the environment on each use; writing it is how torch documents it.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache.inductor_dir)
    os.environ["TRITON_CACHE_DIR"] = str(cache.inductor_dir / "triton")
    clear_caches()
    if cache.mega_cache.exists():
        try:
            info = torch.compiler.load_cache_artifacts(cache.mega_cache.read_bytes())
            log.info("compile cache: loaded %s", _count(info))
        except Exception as error:  # a stale or truncated file only costs a cold compile
            log.warning("compile cache: %s unusable (%s); compiling from scratch", cache.mega_cache, error)


def save(cache: CompileCache) -> None:
    import torch

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return
    data, info = artifacts
    tmp = cache.mega_cache.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(cache.mega_cache)  # never a half-written cache for the next start
    log.info("compile cache: saved %s (%d bytes) to %s", _count(info), len(data), cache.folder)


def _count(info) -> str:
    counts = {k: len(v) for k, v in vars(info).items() if isinstance(v, list)} if info is not None else {}
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing"


def compile_blocks(transformer, device: str, backend: str = "inductor") -> int:
    """Compile each transformer block with symbolic token and batch sizes; returns how many blocks. `backend`
    "eager" stops after dynamo (graphs, guards and recompiles as inductor would see them, no kernels): seconds
    instead of minutes, for the tests and benchmarks that study recompiles."""
    import torch

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    options = {"mode": mode_for(device)} if backend == "inductor" else {"backend": backend}
    # The block's forward is compiled, not the module's call (nn.Module.compile): what wraps the forward later (the
    # block count, a step cache's hooks: stepcache.py) stays in Python, outside the graph, and a cache skipping a
    # block never asks for another graph.
    for block in transformer.transformer_blocks:
        eager = block.forward
        block._fp8demo_compiled = torch.compile(eager, fullgraph=True, dynamic=True, **options)

        @functools.wraps(eager)
        def forward(*args, _block=block, _eager=eager, **kwargs):
            return (_block._fp8demo_compiled or _eager)(*args, **kwargs)

        block.forward = forward
    return len(transformer.transformer_blocks)


def uncompile(transformer) -> None:
    for block in transformer.transformer_blocks:
        block._fp8demo_compiled = None  # the eager forward runs again (whatever wraps it stays)


def reset() -> None:
    """Forget every compiled graph, and serve eagerly-compiling again: for a process that frees one engine and loads
    the next (the fidelity harness). Dynamo keeps its graphs on the blocks' shared code, so the old engine's would
    stay in memory and count against the next one's recompile limit."""
    import torch

    torch.compiler.reset()
    torch.compiler.set_stance("default")


def is_compiled(transformer) -> bool:
    return any(getattr(b, "_fp8demo_compiled", None) is not None for b in transformer.transformer_blocks)


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (a counter: unchanged means nothing was compiled)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def is_compile_error(error: BaseException) -> bool:
    """An exception raised by dynamo or inductor (anywhere in the cause chain), not by the model itself."""
    seen = []
    e: BaseException | None = error
    while e is not None and e not in seen:
        seen.append(e)
        if type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            return True
        e = e.__cause__ or e.__context__
    return False


def is_recompile_refused(error: BaseException) -> bool:
    """The error the `fail_on_recompile` stance raises (a plain RuntimeError, so recognised by its message)."""
    return isinstance(error, RuntimeError) and "stance is 'fail_on_recompile'" in str(error)


def serve_stance():
    """After warm-up: a compile would stall a visitor, so any would-be recompile raises instead (see Engine)."""
    import torch

    torch.compiler.set_stance("fail_on_recompile")


@contextlib.contextmanager
def stance(name: str):
    import torch

    with torch.compiler.set_stance(name):
        yield
