"""The card planner: where each part of the pipeline lives on a card of a given size, and what that costs.

`plan_card` is pure: a CardPlanRequest (the precision plan, the model's bytes per component, the card's bytes, the
largest side served) in, a frozen CardPlan out. It tries every placement and keeps the fastest that fits, in this
order of preference (DESIGN.md section 7, measured on Flux: resident 6.6 s, model offload 21.7 s, group offload
47.7 s, sequential 68 s an image):

1. everything on the GPU, the transformer compiled where the precision plan compiles it;
2. the transformer still resident and compiled, text encoders (and at need the VAE) off the GPU: model-offloaded
   (moved in when they run) or run on the CPU. They run once per prompt and prompt embeddings are cached, so this
   costs little; among these, the fewest estimated seconds a prompt (`offload_seconds`) wins;
3. the transformer group-offloaded (diffusers `enable_group_offload`, block level, CUDA streams prefetching the next
   block), compile off: compiled torchao FP8 with CPU offload is a known-broken combination;
4. sequential CPU offload of everything, the last resort.
When nothing fits the plan says so (`fits: false`) and gives the smallest plan's needs.

Memory is counted per phase (encode prompt, denoise, decode), since only one runs at a time; see `phase_bytes`.
Component bytes come from the architectures built on the `meta` device (no weights, no download) through
`precision.estimate_component_bytes`, the same arithmetic a test holds exact against real quantization.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import config
from .errors import UserError
from .hardware import Capabilities
from .precision import COMPONENTS, PrecisionOptions, PrecisionPlan, plan_precision
from .weights import random_models

GIB = 2**30

# ---------------------------------------------------------------------------------------------------------------
# Memory model. Every figure is an estimate for eager PyTorch on CUDA; each constant says what it stands for.

# CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation: device memory no tensor accounts for.
OVERHEAD_BYTES = 768 * 2**20
BF16_BYTES = 2  # activations are bf16 (fp16 under --precision fp16: the same size)
VAE_FACTOR = 8  # pixels a latent pixel
TEXT_TOKENS = config.CLIP_MAX_TOKENS + config.T5_MAX_TOKENS  # 77 CLIP + 256 T5 tokens join the image tokens
MLP_RATIO = 4  # the MMDiT's feed-forward width is 4x the model width

# Transformer activations at the widest point of a block, the image stream's MLP, in tensors of
# (batch x tokens x width) bf16 elements ("widths"). Attention uses PyTorch SDPA's memory-efficient/flash kernels, so
# no tokens^2 score matrix exists; their log-sum-exp buffers (batch x heads x tokens floats) are negligible.
# Alive through the MLP: the residual stream, the attention output (still referenced), the norm2 output.
RESIDUAL_WIDTHS = 3
# MMDiT-X blocks (Medium's first 13) also keep the second attention's input and output until the block ends.
DUAL_ATTENTION_WIDTHS = 2
# The up projection's output and GELU's output exist together for an instant: 2 x MLP_RATIO widths. Under compiled
# FP8 the down projection's input is quantized by one fused kernel (an FP8 copy, half a width per MLP width): smaller.
MLP_WIDTHS = 2 * MLP_RATIO
# Eager torchao FP8 dynamic activations quantize the down projection's input (MLP_RATIO widths) through three
# float32 copies (cast, divided by the scale, clamped: 2 widths each) and the FP8 result (half a width), all alive
# at once: MLP_RATIO x (1 + 6.5) widths. That is the uncompiled FP8 path, i.e. every offloaded plan.
EAGER_FP8_MLP_WIDTHS = MLP_RATIO * (1 + 3 * 2 + 0.5)

# VAE decode, batch 1 (CFG's two halves are combined before decoding). diffusers decodes in tiles of the VAE's
# sample_size (1024 px for SD3.5, which is where the engine turns tiling on), so the decode never works on more than
# VAE_TILE_SIDE^2 pixels at once. At full resolution the last upsampler's channels (block_out_channels[1], 256) are
# the widest tensors: its output, a ResNet's GroupNorm output and SiLU output are alive together (3), plus one more
# for cuDNN convolution workspaces and the finished tiles kept for blending.
VAE_TILE_SIDE = config.VAE_TILING_ABOVE
VAE_LIVE_TENSORS = 4
# Text encoders at 256 tokens: attention scores and MLP of T5-XXL, a few tens of MiB; rounded up.
TEXT_ENCODER_WORK_BYTES = 256 * 2**20

# Group offload keeps the block running and the next one, prefetched on a CUDA stream, on the GPU; the parts outside
# the blocks (embedders, norm_out, proj_out) are counted as resident.
GROUP_OFFLOAD_BLOCKS_ON_GPU = 2

# Rough speeds, only to rank placements that keep the transformer where it is (never shown as a prediction).
PCIE_BYTES_PER_S = 10e9  # model offload copies from pageable host memory: ~10 GB/s on PCIe 4.0 x16
CPU_FLOPS = 2e11  # a desktop CPU's dense matmul rate, order of magnitude (T5-XXL: ~12 s a prompt)

# ---------------------------------------------------------------------------------------------------------------
# Placements

GPU = "gpu"  # resident on the GPU
MODEL_OFFLOAD = "model-offload"  # kept in host memory, moved whole to the GPU while it runs
CPU = "cpu"  # runs on the CPU (text encoders only)
GROUP_OFFLOAD = "group-offload"  # transformer only: streamed block by block each step
SEQUENTIAL = "sequential"  # every layer moved in as it runs
OFF = "off"  # not loaded (--t5 off)

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
LABELS = {"transformer": "transformer", "text_encoder": "CLIP-L", "text_encoder_2": "CLIP-G",
          "text_encoder_3": "T5-XXL", "vae": "VAE"}
# The transformer runs every step, so its placement decides the speed before anything else.
TRANSFORMER_TIERS = {GPU: 0, MODEL_OFFLOAD: 1, GROUP_OFFLOAD: 2, SEQUENTIAL: 3}
TEXT_TOKENS_BY_ENCODER = {"text_encoder": config.CLIP_MAX_TOKENS, "text_encoder_2": config.CLIP_MAX_TOKENS,
                          "text_encoder_3": config.T5_MAX_TOKENS}

CARD_SIZES_GIB = (8, 12, 16, 24, 48, 80)  # the cards the tests and the README table cover
PLAN_MODELS = ("large-turbo", "large", "medium")


@dataclass(frozen=True)
class ModelFootprint:
    """What the planner needs to know about one model under one precision plan (bytes as held on the GPU)."""

    architecture: str
    bytes: dict[str, int]  # component -> resident bytes under the plan (0: not loaded)
    params: dict[str, int]  # component -> parameter count (CPU time of a text encoder)
    largest_module_16bit: dict[str, int]  # component -> its largest single module in 16-bit (the load transient)
    transformer_block_bytes: int  # the largest transformer block, as held
    transformer_rest_bytes: int  # everything outside the blocks
    width: int  # attention_head_dim x num_attention_heads
    patch_size: int
    dual_attention_blocks: int
    vae_full_res_channels: int  # channels of the VAE decoder's last upsampler (block_out_channels[1])


@dataclass(frozen=True)
class CardPlanRequest:
    plan: PrecisionPlan  # from plan_precision; its offload "auto" lets the planner choose
    footprint: ModelFootprint
    vram_bytes: int  # the card's memory, or the free memory the engine detects
    max_side: int = config.MAX_SIDE  # the largest image side served
    cfg: bool = True  # guidance > 1: the transformer runs on a batch of 2


@dataclass(frozen=True)
class CardPlan:
    architecture: str  # e.g. "large", "medium:2"
    vram_bytes: int
    max_side: int
    fits: bool
    placement: dict[str, str]  # component -> GPU, MODEL_OFFLOAD, CPU, GROUP_OFFLOAD, SEQUENTIAL or OFF
    t5: str  # "bf16", "fp8" or "off"
    compile: bool
    precision: str  # the precision plan's label, compile as decided here
    resident_bytes: int  # weights kept on the GPU between images
    peak_load_bytes: int  # while loading: resident weights + one 16-bit layer being quantized + overhead
    peak_run_bytes: int  # the largest phase at max_side, activations and overhead included
    phase_bytes: dict[str, int]  # "encode", "denoise", "decode": device bytes of each phase, overhead included
    activation_bytes: dict[str, int]  # "transformer", "vae" at max_side
    offload_seconds: float  # rough seconds a new prompt spends moving or CPU-running offloaded parts (ranking only)
    notes: tuple[str, ...] = field(default=())

    @property
    def offload(self) -> str:
        """'none', or what leaves the GPU and how."""
        return "none" if self.all_resident else self.summary()

    @property
    def all_resident(self) -> bool:
        return all(where in (GPU, OFF) for where in self.placement.values())

    @property
    def speed_key(self) -> tuple:
        """Smaller is faster: transformer placement first, then the seconds offloaded parts add a prompt."""
        return TRANSFORMER_TIERS[self.placement["transformer"]], self.offload_seconds

    def summary(self) -> str:
        """Placement in a few words, e.g. 'transformer group offload (CUDA streams); T5-XXL on CPU'."""
        if self.all_resident:
            return "everything on the GPU"
        if self.placement["transformer"] == SEQUENTIAL:
            return "sequential offload of everything"
        parts = []
        if self.placement["transformer"] == GROUP_OFFLOAD:
            parts.append("transformer group offload (CUDA streams)")
        for where, how in ((MODEL_OFFLOAD, "model offload"), (CPU, "on CPU")):
            names = [LABELS[c] for c in COMPONENTS if self.placement[c] == where]
            if names:
                parts.append(f"{', '.join(names)} {how}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["offload"] = self.offload
        d["notes"] = list(self.notes)
        return d


# ---------------------------------------------------------------------------------------------------------------
# The pure part


def image_tokens(side: int, patch_size: int) -> int:
    return (side // (VAE_FACTOR * patch_size)) ** 2


def transformer_activation_bytes(fp: ModelFootprint, max_side: int, batch: int, eager_fp8: bool) -> int:
    """Peak activation bytes of one transformer forward on a square max_side image (see the constants above).

    bytes = batch x (image tokens + 333 text tokens) x width x 2 x widths, widths = RESIDUAL_WIDTHS
    (+ DUAL_ATTENTION_WIDTHS for MMDiT-X) + MLP_WIDTHS (EAGER_FP8_MLP_WIDTHS when FP8 activations run uncompiled).
    Text tokens are counted at every width although only the image stream is that wide at the MLP: a small surplus.
    """
    tokens = image_tokens(max_side, fp.patch_size) + TEXT_TOKENS
    widths = RESIDUAL_WIDTHS + (DUAL_ATTENTION_WIDTHS if fp.dual_attention_blocks else 0)
    widths += max(MLP_WIDTHS, EAGER_FP8_MLP_WIDTHS) if eager_fp8 else MLP_WIDTHS
    return int(batch * tokens * fp.width * BF16_BYTES * widths)


def vae_activation_bytes(fp: ModelFootprint, max_side: int) -> int:
    """Peak activation bytes of one VAE decode: VAE_LIVE_TENSORS x channels x side^2 x 2, side <= VAE_TILE_SIDE."""
    side = min(max_side, VAE_TILE_SIDE)
    return VAE_LIVE_TENSORS * fp.vae_full_res_channels * side * side * BF16_BYTES


def candidate_placements(plan: PrecisionPlan) -> list[dict[str, str]]:
    """Every placement the planner weighs; an explicit --offload narrows them to the one it names."""
    t5 = [OFF] if plan.t5 == "off" else None
    if plan.offload in ("none", "model", "sequential"):
        where = {"none": GPU, "model": MODEL_OFFLOAD, "sequential": SEQUENTIAL}[plan.offload]
        return [{c: OFF if c == "text_encoder_3" and t5 else where for c in COMPONENTS}]
    out = []
    text = (GPU, MODEL_OFFLOAD, CPU)
    for transformer, clip_l, clip_g, t5_where, vae in itertools.product(
        (GPU, GROUP_OFFLOAD), text, text, t5 or text, (GPU, MODEL_OFFLOAD)
    ):
        out.append(dict(transformer=transformer, text_encoder=clip_l, text_encoder_2=clip_g,
                        text_encoder_3=t5_where, vae=vae))
    out.append({c: OFF if c == "text_encoder_3" and t5 else SEQUENTIAL for c in COMPONENTS})
    return out


def evaluate(req: CardPlanRequest, placement: dict[str, str]) -> CardPlan:
    """The memory and cost of one placement (fits or not), with the notes that explain it."""
    fp, plan = req.footprint, req.plan
    on_gpu = [c for c in COMPONENTS if placement[c] == GPU]
    transformer = placement["transformer"]
    resident = sum(fp.bytes[c] for c in on_gpu)
    if transformer == GROUP_OFFLOAD:
        resident += fp.transformer_rest_bytes + GROUP_OFFLOAD_BLOCKS_ON_GPU * fp.transformer_block_bytes

    def visiting(c: str) -> int:
        """Bytes component c brings to the GPU while it runs, beyond what is resident."""
        if placement[c] == MODEL_OFFLOAD:
            return fp.bytes[c]
        if placement[c] == SEQUENTIAL:
            return fp.largest_module_16bit[c]
        return 0

    compile_ = plan.compile and transformer == GPU
    eager_fp8 = plan.blocks == "fp8-dynamic" and not compile_
    act = {
        "transformer": transformer_activation_bytes(fp, req.max_side, 2 if req.cfg else 1, eager_fp8),
        "vae": vae_activation_bytes(fp, req.max_side),
    }
    text_on_device = [c for c in TEXT_ENCODERS if placement[c] not in (CPU, OFF)]
    phases = {
        # model offload moves one encoder in at a time (each hook sends the previous model back)
        "encode": resident + max([visiting(c) for c in text_on_device], default=0)
        + (TEXT_ENCODER_WORK_BYTES if text_on_device else 0),
        "denoise": resident + visiting("transformer") + act["transformer"],
        "decode": resident + visiting("vae") + act["vae"],
    }
    phases = {k: v + OVERHEAD_BYTES for k, v in phases.items()}
    peak_run = max(phases.values())
    # Weights are quantized while loading: a component loading onto the GPU holds its final bytes plus the one
    # 16-bit module being converted. Offloaded parts load into host memory.
    peak_load = OVERHEAD_BYTES + resident + max((fp.largest_module_16bit[c] for c in on_gpu), default=0)
    fits = peak_run < req.vram_bytes and peak_load < req.vram_bytes

    prompts = 2 if req.cfg else 1  # under CFG the negative prompt goes through the encoders too
    seconds = 0.0
    for c in (*TEXT_ENCODERS, "vae"):
        if placement[c] == MODEL_OFFLOAD:
            seconds += 2 * fp.bytes[c] / PCIE_BYTES_PER_S  # in and back out
        elif placement[c] == CPU:
            seconds += 2 * fp.params[c] * TEXT_TOKENS_BY_ENCODER[c] * prompts / CPU_FLOPS

    notes = []
    if plan.compile and not compile_:
        notes.append("torch.compile is off: compiled torchao FP8 with CPU offload is a known-broken combination.")
    if transformer == GROUP_OFFLOAD:
        notes.append(
            "The transformer does not fit with its activations: it streams block by block from pinned host memory "
            f"every step (diffusers group offload, CUDA streams; {fp.bytes['transformer'] / GIB:.1f} GiB of host "
            "RAM). Expect several times slower steps."
        )
    if transformer == SEQUENTIAL:
        notes.append("Sequential offload: every layer crosses PCIe on every step; the slowest way to run.")
    if placement["text_encoder_3"] == CPU:
        notes.append("T5-XXL runs on the CPU: seconds for each new prompt (repeated prompts hit the embedding cache).")
    moved = [LABELS[c] for c in (*TEXT_ENCODERS, "vae") if placement[c] == MODEL_OFFLOAD]
    if moved and transformer == GPU:
        verb = "move" if len(moved) > 1 else "moves"
        notes.append(f"{', '.join(moved)} {verb} to the GPU only while running; the transformer stays resident.")
    precision = replace(plan, compile=compile_, offload="none").label()  # offload is told by `placement`
    return CardPlan(
        architecture=fp.architecture, vram_bytes=req.vram_bytes, max_side=req.max_side, fits=fits,
        placement=dict(placement), t5=plan.t5, compile=compile_, precision=precision, resident_bytes=resident,
        peak_load_bytes=peak_load, peak_run_bytes=peak_run, phase_bytes=phases, activation_bytes=act,
        offload_seconds=round(seconds, 3), notes=tuple(notes),
    )


def candidates(req: CardPlanRequest) -> list[CardPlan]:
    return [evaluate(req, p) for p in candidate_placements(req.plan)]


def plan_card(req: CardPlanRequest) -> CardPlan:
    """The fastest placement that fits the card; when none does, the smallest one, marked `fits=False`."""
    cands = candidates(req)
    fitting = [c for c in cands if c.fits]
    if fitting:
        # ties (same tier, same seconds) go to the plan with the most room left
        best = min(fitting, key=lambda c: (c.speed_key, c.peak_run_bytes))
        return replace(best, notes=req.plan.notes + best.notes)
    smallest = min(cands, key=lambda c: (max(c.peak_run_bytes, c.peak_load_bytes), c.speed_key))
    need = max(smallest.peak_run_bytes, smallest.peak_load_bytes)
    forced = f" with --offload {req.plan.offload}" if req.plan.offload != "auto" else ""
    tries = ["--offload auto"] if forced else []
    tries += ["a smaller --max-side"] + (["--precision fp8"] if not req.plan.is_fp8 else []) + ["a smaller model"]
    note = (
        f"Nothing fits in {req.vram_bytes / GIB:.1f} GiB{forced}: the smallest plan ({smallest.summary()}) needs "
        f"{need / GIB:.1f} GiB at peak. Try {', '.join(tries[:-1])} or {tries[-1]}."
    )
    return replace(smallest, notes=req.plan.notes + smallest.notes + (note,))


# ---------------------------------------------------------------------------------------------------------------
# Footprints: measured on modules (meta-device architectures, or a pipeline the engine has loaded)


def footprint_of(pipe, plan: PrecisionPlan, max_side: int, architecture: str) -> ModelFootprint:
    """A ModelFootprint from a pipeline's modules in their 16-bit dtypes, before the precision plan is applied."""
    from . import precision

    sizes = precision.estimate_component_bytes(pipe, plan, max_side)
    tr = pipe.transformer
    blocks = [
        precision.estimate_module_bytes("transformer", block, plan, max_side, prefix=f"transformer_blocks.{i}.")
        for i, block in enumerate(tr.transformer_blocks)
    ]
    modules = {c: getattr(pipe, c, None) for c in COMPONENTS}
    cfg = tr.config
    return ModelFootprint(
        architecture=architecture,
        bytes=sizes,
        params={c: sum(p.numel() for p in m.parameters()) if m is not None else 0 for c, m in modules.items()},
        largest_module_16bit={c: _largest_module_16bit(m) for c, m in modules.items()},
        transformer_block_bytes=max(blocks),
        transformer_rest_bytes=sizes["transformer"] - sum(blocks),
        width=cfg.attention_head_dim * cfg.num_attention_heads,
        patch_size=cfg.patch_size,
        dual_attention_blocks=len(cfg.dual_attention_layers or ()),
        vae_full_res_channels=pipe.vae.config.block_out_channels[1],
    )


def _largest_module_16bit(module) -> int:
    if module is None:
        return 0
    return max(
        (sum(t.numel() * BF16_BYTES for t in itertools.chain(m.parameters(recurse=False), m.buffers(recurse=False)))
         for m in module.modules()),
        default=0,
    )


class _TokenIds:
    """What the text-encoder configs read from a tokenizer (the real CLIP and T5 special-token ids)."""

    def __init__(self, bos: int, eos: int, pad: int):
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, eos, pad


@functools.lru_cache(maxsize=4)
def meta_pipeline(arch_name: str, num_layers: int | None = None):
    """The five modules of a real architecture on the meta device, in 16-bit: no memory, no weights, no download.

    Cached: building T5-XXL and the MMDiT takes seconds even without weights.
    """
    from types import SimpleNamespace

    import torch
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    arch = random_models.random_architecture(arch_name, num_layers)
    clip_ids, t5_ids = _TokenIds(49406, 49407, 49407), _TokenIds(0, 1, 0)
    with init_empty_weights(include_buffers=True):
        modules = dict(
            transformer=SD3Transformer2DModel(**arch.transformer),
            text_encoder=random_models._clip(arch.clip_l, clip_ids, arch.clip_vocab),
            text_encoder_2=random_models._clip(arch.clip_g, clip_ids, arch.clip_vocab),
            text_encoder_3=random_models._t5(arch.t5, t5_ids, arch.t5_vocab),
            vae=random_models._vae(arch),
        )
    for module in modules.values():
        torch.nn.Module.to(module, torch.bfloat16)  # T5 stays bf16 and the rest is 16-bit on a GPU: 2 bytes each
    return SimpleNamespace(**modules)


@functools.lru_cache(maxsize=32)
def _architecture_footprint(arch_name: str, num_layers: int | None, blocks: str, modulation: str, t5: str,
                            max_side: int) -> ModelFootprint:
    from types import SimpleNamespace

    # Large and Large Turbo share one architecture: build it once.
    arch = random_models.ARCHITECTURES[arch_name]
    canonical = next(n for n, a in random_models.ARCHITECTURES.items() if a.transformer == arch.transformer)
    pipe = meta_pipeline(canonical, num_layers)
    if t5 == "off":
        pipe = SimpleNamespace(**{**vars(pipe), "text_encoder_3": None})
    # the byte arithmetic reads these three fields only
    key = PrecisionPlan(requested="", mode="", compute_dtype="bfloat16", blocks=blocks, modulation=modulation, t5=t5,
                        text_dtype="bfloat16", vae_dtype="bfloat16", compile=False, offload="auto", attention="sdpa",
                        device="cuda")
    name = arch_name if num_layers is None else f"{arch_name}:{num_layers}"
    return footprint_of(pipe, key, max_side, name)


def architecture_footprint(arch_name: str, plan: PrecisionPlan, max_side: int = config.MAX_SIDE,
                           num_layers: int | None = None) -> ModelFootprint:
    """The footprint of a real SD3.5 architecture (`random_models.ARCHITECTURES`) under a precision plan."""
    return _architecture_footprint(arch_name, num_layers, plan.blocks, plan.modulation, plan.t5, max_side)


# ---------------------------------------------------------------------------------------------------------------
# Entry points: a card named by its size (the CLI, the README table) and the engine's free memory


def card_capabilities(vram_bytes: int, compute_capability: tuple[int, int] = (8, 9)) -> Capabilities:
    """A hypothetical CUDA card of that size; by default an Ada one (FP8 tensor cores, like the RTX 40 series)."""
    return Capabilities(device="cuda", name=f"{vram_bytes / GIB:g} GiB card", compute_capability=compute_capability,
                        total_memory=vram_bytes, free_memory=vram_bytes)


def source_architecture(source) -> tuple[str, int | None] | None:
    """(architecture, block count) of a sources.ModelSource: random:<arch>, or anything whose preset is an SD3.5 one
    (official repo ids, their local folders and FP8 checkpoints). None for the tiny model and unknown folders."""
    if source.arch:
        return source.arch, source.num_layers
    if source.preset.name in random_models.ARCHITECTURES:
        return source.preset.name, None
    return None


def architecture_of(model: str) -> tuple[str, int | None]:
    """(architecture, block count) for large-turbo | large | medium, random:<arch>[:blocks] or an official repo id."""
    from .weights.sources import resolve_model

    accepted = ", ".join([*PLAN_MODELS, *(f"random:{a}" for a in random_models.ARCHITECTURES), *config.REPO_TO_PRESET])
    source = None if model in ("auto", "tiny") else resolve_model(model, card_capabilities(GIB))
    found = source_architecture(source) if source is not None else None
    if found is None:
        raise UserError(f"plan knows the SD3.5 architectures only: use one of {accepted}.")
    return found


def plan_for_card(model: str, vram_gib: float, options: PrecisionOptions = PrecisionOptions(),
                  max_side: int = config.MAX_SIDE, compute_capability: tuple[int, int] = (8, 9)) -> CardPlan:
    """The plan for `model` on a card of `vram_gib` GiB, offline (`python -m fp8demo plan`)."""
    if not vram_gib > 0:
        raise UserError(f"--vram must be a positive number of GiB, got {vram_gib:g}.")
    if max_side % config.SIZE_MULTIPLE or not config.MIN_SIDE <= max_side:
        raise UserError(f"--max-side must be a multiple of {config.SIZE_MULTIPLE} of at least {config.MIN_SIDE}.")
    arch, layers = architecture_of(model)
    vram = int(vram_gib * GIB)
    plan = plan_precision(options, card_capabilities(vram, compute_capability))
    footprint = architecture_footprint(arch, plan, max_side, layers)
    preset = config.PRESETS[random_models.ARCHITECTURES[arch].preset]
    return plan_card(CardPlanRequest(plan, footprint, vram, max_side, cfg=preset.guidance > 1))


def plan_for_engine(source, plan: PrecisionPlan, free_bytes: int | None,
                    max_side: int = config.MAX_SIDE) -> CardPlan | None:
    """The engine's call, before loading, with `hardware.free_device_memory` and its sources.ModelSource.

    None when there is nothing to plan: not CUDA, or an architecture the planner does not know (the engine then
    keeps `precision.resolve_offload`). CFG follows the source's preset guidance, as the table does.
    """
    found = source_architecture(source)
    if free_bytes is None or plan.device != "cuda" or found is None:
        return None
    arch, layers = found
    footprint = architecture_footprint(arch, plan, max_side, layers)
    return plan_card(CardPlanRequest(plan, footprint, free_bytes, max_side, cfg=source.preset.guidance > 1))
