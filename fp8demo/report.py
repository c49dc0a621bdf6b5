"""What a loaded pipeline really holds, measured on its modules: bytes and dtypes per component, FP8 Linears, the
transformer against the same transformer in bf16, and the FP8 matmuls a forward really makes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .logs import native_stderr_without
from .policy import COMPONENTS
from .runplan import RunPlan
from .tensors import bf16_bytes, bytes_by_dtype, storage_dtype


@dataclass(frozen=True)
class ComponentReport:
    name: str
    storage: dict[str, int]  # dtype -> bytes
    compute_dtype: str
    bytes: int
    fp8_linears: int = 0
    linears: int = 0
    note: str = ""


@dataclass(frozen=True)
class Report:
    plan: RunPlan  # the plan the pipeline was loaded with
    components: tuple[ComponentReport, ...]
    transformer_bf16_bytes: int  # the same transformer held in bf16 (same positional crop): the ratio's baseline
    transformer_loaded_bytes: int  # in 16-bit with its whole positional table: what its bf16 files hold
    pos_embed_crop: tuple[int, int] | None = None  # (before, after) side of the positional table

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.components)

    @property
    def transformer_bytes(self) -> int:
        return next(c.bytes for c in self.components if c.name == "transformer")

    @property
    def transformer_ratio(self) -> float:
        return self.transformer_bytes / self.transformer_bf16_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "label": self.plan.label(),
            "components": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.components},
            "total_bytes": self.total_bytes,
            "transformer_bytes": self.transformer_bytes,
            "transformer_bf16_bytes": self.transformer_bf16_bytes,
            "transformer_loaded_bytes": self.transformer_loaded_bytes,
            "transformer_ratio_vs_bf16": round(self.transformer_ratio, 4),
            "pos_embed_crop": list(self.pos_embed_crop) if self.pos_embed_crop else None,
        }


def size_text(n: int) -> str:
    """A size for people: GiB from a tenth of one, MiB below."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def count_linears(module) -> tuple[int, int]:
    """(FP8 Linears, all Linears) of a module."""
    import torch

    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return sum("float8" in storage_dtype(m.weight) for m in linears), len(linears)


def measure(pipe, plan: RunPlan) -> Report:
    """The report of a pipeline prepared as `plan` says."""
    transformer = pipe.transformer
    crop = getattr(transformer, "pos_embed_crop", None)
    baseline = bf16_bytes(transformer)
    loaded = baseline
    if crop:  # what the 16-bit files hold: the whole table
        loaded += (crop[0] ** 2 - crop[1] ** 2) * transformer.pos_embed.pos_embed.shape[-1] * 2
    components = []
    for name in COMPONENTS:
        module = getattr(pipe, name, None)
        if module is None:
            components.append(ComponentReport(name, {}, "-", 0, note="not loaded (--t5 off)"))
            continue
        storage = {dtype: d["bytes"] for dtype, d in bytes_by_dtype(module).items()}
        fp8, linears = count_linears(module)
        note = plan.layers() if name == "transformer" else ""
        components.append(ComponentReport(name, storage, plan.dtypes[name], sum(storage.values()), fp8, linears,
                                          note))
    return Report(plan, tuple(components), baseline, loaded, crop)


def count_fp8_matmuls(run) -> int:
    """How many torch._scaled_mm calls `run()` makes: proof that FP8 matmuls really ran (as flux-fast checks)."""
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_without(), profile(activities=[ProfilerActivity.CPU]) as prof:  # kineto's lines (logs.py)
        run()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_scaled_mm")
