"""The precision policy: which parts of the pipeline are FP8, how they compute, and why.

`plan_precision` and `resolve_offload` are pure (capabilities in, plan out) so every hardware kind is testable on a
CPU. `apply_precision` carries a plan out on a loaded pipeline and returns a report of what is really in memory.

The policy (DESIGN.md section 3):
- transformer block Linears (attention and MLP projections): FP8 E4M3 weights with per-row scales. On compute
  capability >= 8.9 activations are quantized too (dynamic, per row) and the matmul runs on FP8 tensor cores;
  elsewhere weights are stored in FP8 and computed in bf16, which saves memory only.
- AdaLN modulation Linears (norm1.linear, norm1_context.linear): a third of the weights, one vector per image.
  FP8 weight storage with bf16 compute by default, never FP8 activations; `modulation="bf16"` keeps them 16-bit.
- kept 16-bit: patch/position embedding, time-text embedder, context embedder, norm_out, proj_out, CLIP-L/G, VAE.
- T5-XXL: bf16, FP8 weight storage, or left out.

FP8 storage without FP8 matmuls uses torchao's Float8WeightOnlyConfig rather than diffusers' layerwise casting.
Measured here (2-core AMD EPYC, random:medium:2, 256 px with 333 text tokens, one transformer forward, best of 3):
bf16 3.69 s; torchao weight-only 4.60 s, output cosine to bf16 0.99963; layerwise casting 4.06 s, cosine 0.99921.
The unscaled cast is 10% faster on a CPU but doubles the error (1 - cosine 0.00079 against 0.00037), and torchao's
per-row weights and scales are the same ones the native path and the saved checkpoints use, so one format serves all.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import config
from .errors import SetupError
from .hardware import Capabilities
from .weights import fp8_format
from .weights.fp8_format import KEPT_16BIT, MODULATION_SUFFIXES  # noqa: F401  (the policy's names, defined there)

log = logging.getLogger(__name__)

# Room for activations, the VAE decode and allocator slack on top of the weights when deciding on offload.
OFFLOAD_HEADROOM_BYTES = 3 * 2**30


@dataclass(frozen=True)
class PrecisionOptions:
    """What the user asked for; `plan_precision` turns it into what will happen on this machine."""

    precision: str = "fp8"
    t5: str = "auto"
    modulation: str = "fp8"
    offload: str = "auto"
    attention: str = "sdpa"
    compile: bool | None = None
    fp8_matmul: str = "auto"

    @classmethod
    def from_config(cls, cfg: config.EngineConfig) -> PrecisionOptions:
        return cls(cfg.precision, cfg.t5, cfg.modulation, cfg.offload, cfg.attention, cfg.compile, cfg.fp8_matmul)


@dataclass(frozen=True)
class PrecisionPlan:
    requested: str
    mode: str  # "fp8-native", "fp8-storage", "bf16" or "fp16"
    compute_dtype: str  # torch dtype name of the 16-bit compute
    blocks: str  # transformer block Linears: "fp8-dynamic", "fp8-weight-only" or "16-bit"
    modulation: str  # "fp8-weight-only" or "16-bit"
    t5: str  # "bf16", "fp8" (weight-only) or "off"
    text_dtype: str  # CLIP-L/G
    vae_dtype: str
    compile: bool
    offload: str  # "auto" until resolve_offload, then "none", "model" or "sequential"
    attention: str
    device: str
    notes: tuple[str, ...] = ()

    @property
    def is_fp8(self) -> bool:
        return self.mode.startswith("fp8")

    @property
    def matmul(self) -> str:
        """What multiplies in the transformer blocks, in words."""
        if self.blocks == "fp8-dynamic":
            return "torch._scaled_mm: FP8 E4M3 weights x FP8 E4M3 activations, per-row scales"
        if self.blocks == "fp8-weight-only":
            return f"{self.compute_dtype} matmul on FP8 E4M3 weights (per-row scales), dequantized per layer"
        return f"{self.compute_dtype} matmul"

    def label(self) -> str:
        """Short human label, e.g. 'FP8 E4M3 (native, compiled) + bf16'."""
        if self.mode == "fp8-native":
            head = "FP8 E4M3 native matmuls"
        elif self.mode == "fp8-storage":
            head = "FP8 E4M3 weights, bf16 compute" if self.compute_dtype == "bfloat16" else "FP8 E4M3 weights"
        else:
            head = self.mode
        extras = ["compiled"] if self.compile else []
        if self.offload not in ("none", "auto"):
            extras.append(f"offload {self.offload}")
        return head + (f" ({', '.join(extras)})" if extras else "")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["matmul"] = self.matmul
        return d


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise SetupError(f"Unknown {name} {value!r}: choose one of {', '.join(map(str, allowed))}.")


def plan_precision(options: PrecisionOptions, caps: Capabilities) -> PrecisionPlan:
    """Decide the precision of every part from the request and the hardware. Pure: no torch, no I/O."""
    _choice("precision", options.precision, config.PRECISIONS)
    _choice("T5 mode", options.t5, config.T5_MODES)
    _choice("modulation mode", options.modulation, config.MODULATION_MODES)
    _choice("offload mode", options.offload, config.OFFLOAD_MODES)
    _choice("attention backend", options.attention, config.ATTENTION_BACKENDS)
    _choice("FP8 matmul", options.fp8_matmul, config.FP8_MATMUL_MODES)
    notes: list[str] = []

    compute = "float16" if options.precision == "fp16" else "bfloat16"
    if compute == "bfloat16" and not caps.bf16:
        compute = "float16"
        notes.append(f"{caps.name} has no bf16 support: 16-bit compute is fp16.")

    if options.precision == "fp8":
        if not caps.torchao:
            raise SetupError("FP8 needs torchao: pip install torchao (or choose --precision bf16).")
        native = options.fp8_matmul == "native" or (options.fp8_matmul == "auto" and caps.fp8_native)
        if native and not caps.fp8_native:
            if caps.device != "cpu":
                raise SetupError(f"--fp8-matmul native: {_why_no_native(caps)} Use --fp8-matmul weight-only.")
            notes.append(
                "CPU: native FP8 matmuls run through torch._scaled_mm, about 30x slower than bf16 here; "
                "this exercises the GPU's code path, it is not a speed path."
            )
        if native:
            mode, blocks = "fp8-native", "fp8-dynamic"
        else:
            mode, blocks = "fp8-storage", "fp8-weight-only"
            if options.fp8_matmul == "auto":
                notes.append(_why_no_native(caps))
    else:
        mode, blocks = options.precision, "16-bit"
    fp8 = mode.startswith("fp8")

    modulation = "fp8-weight-only" if fp8 and options.modulation == "fp8" else "16-bit"

    if options.t5 == "auto":
        t5 = "fp8" if fp8 else "bf16"
    else:
        t5 = options.t5
    if t5 == "fp8" and not caps.torchao:
        raise SetupError("--t5 fp8 needs torchao: pip install torchao.")
    if compute == "float16" and t5 != "off":
        notes.append("T5-XXL computes in bf16 even in fp16 mode: it overflows in fp16.")

    # bf16 convolutions have no fast CPU kernels (tiny model, 1024 px decode: 74 s in bf16, 1.4 s in fp32).
    vae_dtype = "float32" if caps.device == "cpu" else compute
    if caps.device == "cpu":
        notes.append("CPU: the VAE runs in float32 (bf16 convolutions are ~50x slower on CPUs).")

    if options.compile is None:
        compile_ = mode == "fp8-native" and caps.device == "cuda"
    else:
        compile_ = options.compile
        if compile_ and caps.device != "cuda":
            notes.append("torch.compile on a non-CUDA device: first generations will be slow, gains are small.")

    attention = options.attention
    if attention == "xformers":
        if caps.device != "cuda":
            raise SetupError("xformers attention needs a CUDA GPU; use --attention sdpa (the default).")
        if not caps.xformers:
            raise SetupError(
                "xformers is not installed: pip install xformers (its wheels pin a torch version; "
                "check it matches yours), or use --attention sdpa (PyTorch's built-in memory-efficient attention)."
            )

    offload = options.offload
    if offload in ("model", "sequential") and caps.device != "cuda":
        notes.append(f"--offload {offload} needs a CUDA GPU: everything stays on {caps.device}.")
        offload = "none"
    if caps.device != "cuda" and offload == "auto":
        offload = "none"
    plan = PrecisionPlan(
        requested=options.precision,
        mode=mode,
        compute_dtype=compute,
        blocks=blocks,
        modulation=modulation,
        t5=t5,
        text_dtype=compute,
        vae_dtype=vae_dtype,
        compile=compile_,
        offload=offload,
        attention=attention,
        device=caps.device,
        notes=tuple(notes),
    )
    return _no_compile_with_offload(plan)


def _why_no_native(caps: Capabilities) -> str:
    if caps.device == "cuda":
        cc = ".".join(map(str, caps.compute_capability or ()))
        return (
            f"{caps.name} (compute capability {cc}) has no FP8 tensor cores (needs >= 8.9): "
            "FP8 weights are stored and computed in bf16, which saves memory but not time."
        )
    return (
        f"No FP8 matmuls on {caps.device}: FP8 weights are stored and computed in bf16, "
        "which saves memory but not time."
    )


def _no_compile_with_offload(plan: PrecisionPlan) -> PrecisionPlan:
    if plan.compile and plan.offload in ("model", "sequential"):
        note = f"torch.compile is off: compiled FP8 with CPU offload ({plan.offload}) is a known-broken combination."
        return replace(plan, compile=False, notes=plan.notes + (note,))
    return plan


def resolve_offload(plan: PrecisionPlan, free_bytes: int | None, resident_bytes: int) -> PrecisionPlan:
    """Decide offload "auto": resident when weights plus headroom fit in free VRAM, else model offload."""
    if plan.offload != "auto":
        return plan
    if free_bytes is None or resident_bytes + OFFLOAD_HEADROOM_BYTES <= free_bytes:
        return replace(plan, offload="none")
    note = (
        f"Model offload: the weights ({resident_bytes / 2**30:.1f} GiB) and {OFFLOAD_HEADROOM_BYTES / 2**30:.0f} GiB "
        f"of working memory do not fit in {free_bytes / 2**30:.1f} GiB free; expect much slower images."
    )
    return _no_compile_with_offload(replace(plan, offload="model", notes=plan.notes + (note,)))


# ---------------------------------------------------------------------------------------------------------------
# Byte accounting


def inner_tensors(t) -> list:
    """The plain tensors that hold `t`'s data: the inner tensors a tensor subclass names in PyTorch's
    __tensor_flatten__ protocol (torchao keeps FP8 data and scales so), or `t` itself."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return [leaf for n in names for leaf in inner_tensors(getattr(t, n))]
    return [t]


def tensor_bytes(t) -> int:
    """Bytes a tensor holds, looking inside tensor subclasses."""
    return sum(leaf.numel() * leaf.element_size() for leaf in inner_tensors(t))


def _leaf_dtype(t) -> str:
    return str(inner_tensors(t)[0].dtype).replace("torch.", "")


def unique_tensors(module):
    """Parameters and buffers of a module, each once (tied weights are one tensor held twice)."""
    seen: set[int] = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


def module_bytes(module) -> dict[str, int]:
    """Bytes of parameters and buffers by storage dtype (scales of FP8 tensors count under float8_e4m3fn)."""
    out: dict[str, int] = {}
    for t in unique_tensors(module):
        key = _leaf_dtype(t)
        out[key] = out.get(key, 0) + tensor_bytes(t)
    return out


COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def estimate_resident_bytes(pipe, plan: PrecisionPlan, max_side: int = config.MAX_SIDE) -> int:
    """Bytes the pipeline will hold once the plan is applied, computed before applying it.

    Used for the offload decision, and to check the memory policy on full-size models built on the `meta` device
    (no memory, no time). It must match what `apply_precision` really leaves in memory; a test holds it to that.
    """
    return sum(estimate_component_bytes(pipe, plan, max_side).values())


def estimate_component_bytes(pipe, plan: PrecisionPlan, max_side: int = config.MAX_SIDE) -> dict[str, int]:
    """`estimate_resident_bytes` per component (0 for one not loaded); the card planner places each one."""
    out = {}
    for name in COMPONENTS:
        module = getattr(pipe, name, None)
        out[name] = 0 if module is None else estimate_module_bytes(name, module, plan, max_side)
    return out


def estimate_module_bytes(name: str, module, plan: PrecisionPlan, max_side: int = config.MAX_SIDE,
                          prefix: str = "") -> int:
    """Bytes of component `name`, or of its submodule at `prefix` (e.g. "transformer_blocks.3."), under the plan."""
    import torch

    total = 0
    seen: set[int] = set()  # tied weights (T5's shared embedding) count once
    for mname, mod in module.named_modules(prefix=prefix.rstrip(".")):
        mprefix = f"{mname}." if mname else ""
        # apply_precision quantizes Linear weights only (an Embedding is 2-D too but stays 16-bit)
        linear = isinstance(mod, torch.nn.Linear)
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            fqn = mprefix + pname
            fp8 = linear and pname == "weight" and fp8_format.layer_kind(name, fqn, plan) is not None
            # FP8: one byte a weight plus one float32 scale a row
            total += p.numel() + 4 * p.shape[0] if fp8 else p.numel() * p.element_size()
        for bname, b in mod.named_buffers(recurse=False):
            numel = b.numel()
            if name == "transformer" and mprefix + bname == "pos_embed.pos_embed":
                old = mod.pos_embed_max_size
                side = cropped_side(old, module.config.patch_size, max_side) or old
                numel = numel // (old * old) * side * side
            total += numel * b.element_size()
    return total


# ---------------------------------------------------------------------------------------------------------------
# Applying a plan


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
class PrecisionReport:
    plan: PrecisionPlan
    components: tuple[ComponentReport, ...]
    transformer_bf16_bytes: int  # the same transformer held in bf16 (same positional crop): the ratio's baseline
    transformer_loaded_bytes: int  # in 16-bit with its whole positional table: what its bf16 files hold
    pos_embed_crop: tuple[int, int] | None = None  # (before, after) side of the positional table
    extra: dict[str, Any] = field(default_factory=dict)

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
            "total_bytes": sum(c.bytes for c in self.components),
            "transformer_bytes": self.transformer_bytes,
            "transformer_bf16_bytes": self.transformer_bf16_bytes,
            "transformer_loaded_bytes": self.transformer_loaded_bytes,
            "transformer_ratio_vs_bf16": round(self.transformer_ratio, 4),
            "pos_embed_crop": list(self.pos_embed_crop) if self.pos_embed_crop else None,
            **self.extra,
        }


def cropped_side(old: int, patch: int, max_side: int) -> int | None:
    """Side of the central crop of a positional table of side `old` covering `max_side` px; None if no smaller."""
    need = -(-max_side // (8 * patch))  # patches a side at the largest size (VAE factor 8)
    new = need + (old - need) % 2  # keep old - new even, so the crop offsets compose exactly
    return new if new < old else None


def crop_positional_table(transformer, max_side: int) -> tuple[int, int] | None:
    """Keep only the central part of the positional table that the largest image served can reach.

    The table is pos_embed_max_size^2 x width and is stored whole (0.42 GiB in bf16 for Medium) although a 1024 px
    image reads a central 64 x 64 crop. diffusers crops at offset (max - h) // 2; with a table of side c cut from the
    centre of one of side m, that offset becomes (m - c) / 2 + (c - h) // 2, the same number when m - c is even. So
    outputs are bit-identical and the bytes go.
    """
    pe = getattr(transformer, "pos_embed", None)
    old = getattr(pe, "pos_embed_max_size", None)
    if pe is None or old is None or getattr(pe, "pos_embed", None) is None:
        return None
    new = cropped_side(old, transformer.config.patch_size, max_side)
    if new is None:
        return None
    width = pe.pos_embed.shape[-1]
    table = pe.pos_embed.reshape(1, old, old, width)
    start = (old - new) // 2
    cropped = table[:, start : start + new, start : start + new, :].reshape(1, new * new, width)
    _keep_table(transformer, cropped.clone(), old, new)
    return old, new


def _keep_table(transformer, table, old: int, new: int) -> None:
    pe = transformer.pos_embed
    pe.register_buffer("pos_embed", table, persistent=True)
    pe.pos_embed_max_size = new
    transformer.pos_embed_crop = (old, new)  # for the report when the crop happened while loading
    if hasattr(transformer, "register_to_config"):  # a saved copy must say how large its table is
        transformer.register_to_config(pos_embed_max_size=new)


def central_positional_table(patch_embed, side: int):
    """The central `side` x `side` part of a diffusers PatchEmbed's sin-cos table ([1, side^2, width], float32),
    computed without the rest: the result equals cropping the whole table, which Medium's constructor builds at
    384 x 384 through float64 intermediates (3.8 GiB of peak memory for a 96 x 96 crop).

    diffusers' own get_2d_sincos_pos_embed makes each table entry from its grid coordinate alone (coordinate times
    frequency, then sin and cos), so the same coordinates through diffusers' own get_2d_sincos_pos_embed_from_grid
    give the same entries. The coordinates are computed as that function computes them, for the whole side (a few
    hundred numbers), and sliced.
    """
    import torch
    from diffusers.models.embeddings import get_2d_sincos_pos_embed_from_grid

    old = patch_embed.pos_embed_max_size
    width = patch_embed.proj.out_channels
    start = (old - side) // 2
    with torch.device("cpu"):  # also when called inside a meta-device construction
        coords = torch.arange(old, dtype=torch.float32) / (old / patch_embed.base_size)
        coords = (coords / patch_embed.interpolation_scale)[start : start + side]
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=0).reshape(2, 1, side, side)
        return get_2d_sincos_pos_embed_from_grid(width, grid, output_type="pt").float().unsqueeze(0)


def build_positional_table(transformer, max_side: int) -> tuple[int, int] | None:
    """Fill the positional table of a transformer constructed on the meta device: only its central crop covering
    `max_side` (see crop_positional_table), or the whole table where no crop is smaller. Returns (old, new) sides
    when cropped, as crop_positional_table does."""
    pe = transformer.pos_embed
    old = pe.pos_embed_max_size
    new = cropped_side(old, transformer.config.patch_size, max_side)
    table = central_positional_table(pe, new or old)
    if new is None:
        pe.register_buffer("pos_embed", table, persistent=True)
        return None
    _keep_table(transformer, table, old, new)
    return old, new


def quantize_transformer(transformer, plan: PrecisionPlan) -> None:
    """Swap the block Linears' weights for torchao FP8 tensors, as the plan says (fp8_format decides each layer)."""
    fp8_format.quantize(transformer, "transformer", plan)


def count_fp8_matmuls(run) -> int:
    """How many torch._scaled_mm calls `run()` makes: proof that FP8 matmuls really ran (as flux-fast checks)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_scaled_mm")


def count_linears(module) -> tuple[int, int]:
    """(FP8 Linears, all Linears) of a module."""
    import torch

    fp8 = total = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            total += 1
            if "float8" in _leaf_dtype(m.weight):
                fp8 += 1
    return fp8, total


def bf16_bytes(module) -> int:
    """Bytes of a module if every floating tensor were bf16 and nothing quantized (the comparison baseline)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if hasattr(t, "__tensor_flatten__") or t.is_floating_point():
            total += t.numel() * 2
        else:
            total += t.numel() * t.element_size()
    return total


def apply_precision(pipe, plan: PrecisionPlan, max_side: int = config.MAX_SIDE) -> PrecisionReport:
    """Carry out `plan` on `pipe` and report the result. Loaders quantize while loading, so usually only the
    positional crop is left to do here; a pipeline loaded in 16-bit is quantized in place (fp8_format.quantize)."""
    transformer = pipe.transformer
    crop = crop_positional_table(transformer, max_side) or getattr(transformer, "pos_embed_crop", None)
    baseline = bf16_bytes(transformer)
    loaded = baseline
    if crop:  # what the 16-bit files hold: the whole table
        loaded += (crop[0] ** 2 - crop[1] ** 2) * transformer.pos_embed.pos_embed.shape[-1] * 2
    quantize_transformer(transformer, plan)

    t5 = getattr(pipe, "text_encoder_3", None)
    if t5 is not None:
        fp8_format.quantize(t5, "text_encoder_3", plan)  # nothing left to do when it was quantized as it loaded

    if plan.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()

    components = []
    for name, compute in (
        ("transformer", plan.compute_dtype),
        ("text_encoder", plan.text_dtype),
        ("text_encoder_2", plan.text_dtype),
        ("text_encoder_3", "bfloat16"),
        ("vae", plan.vae_dtype),
    ):
        module = getattr(pipe, name, None)
        if module is None:
            components.append(ComponentReport(name, {}, "-", 0, note="not loaded (--t5 off)"))
            continue
        storage = module_bytes(module)
        fp8, linears = count_linears(module)
        note = ""
        if name == "transformer":
            note = _transformer_note(plan)
        components.append(ComponentReport(name, storage, compute, sum(storage.values()), fp8, linears, note))
    return PrecisionReport(plan, tuple(components), baseline, loaded, crop)


def _transformer_note(plan: PrecisionPlan) -> str:
    kept = ", ".join(KEPT_16BIT)
    if not plan.is_fp8:
        return f"all 16-bit ({plan.compute_dtype})"
    if plan.blocks == "fp8-dynamic":
        blocks = "FP8 weights and activations (per-row scales)"
    else:
        blocks = "FP8 weights (per-row scales), bf16 compute"
    mod = "FP8 weights, bf16 compute" if plan.modulation != "16-bit" else "16-bit"
    return f"block Linears: {blocks}; AdaLN modulation: {mod}; kept 16-bit: {kept}"
