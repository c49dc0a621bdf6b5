"""Card arithmetic: how many bytes each part of the pipeline holds under a precision, where it can live on a card,
and what each placement costs in memory and time. Pure: footprints and numbers in, estimates out; no torch.

A ModelFootprint is what a model holds whatever its precision: for each component its 16-bit bytes, with the Linear
weights that can become FP8 counted apart by class (policy.Layer), so that `ComponentBytes.under(kinds)` gives the
bytes under any precision. Footprints are measured on modules (weights/footprint.py: the real architectures built on
the `meta` device, no weights, no download); a test holds the arithmetic exact against real quantization.

`choose` tries every placement and keeps the fastest that fits, in this order of preference (measured on Flux:
resident 6.6 s, model offload 21.7 s, group offload 47.7 s, sequential 68 s an image):

1. everything on the GPU, the transformer compiled where the run plan compiles it;
2. the transformer still resident and compiled, text encoders (and at need the VAE) off the GPU: model-offloaded
   (moved in when they run) or run on the CPU. They run once per prompt and prompt embeddings are cached, so this
   costs little; among these, the fewest estimated seconds a prompt (`offload_seconds`) wins;
3. the transformer group-offloaded (diffusers `enable_group_offload`, block level, CUDA streams prefetching the next
   block), compile off: compiled torchao FP8 with CPU offload is a known-broken combination;
4. sequential CPU offload of everything, the last resort.
When nothing fits, the smallest placement is returned with `fits: false` and what it would need.

Memory is counted per phase (encode prompt, denoise, decode), since only one runs at a time; see `evaluate`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from . import config
from .policy import COMPONENTS, Kind, Layer

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

# Quantizing one Linear as it loads (torchao's per-row FP8, the same operations on a CPU and a GPU) holds, beyond the
# FP8 result that stays, its 16-bit weight (2 bytes an element) and torchao's temporaries at their peak less that
# result: three float32 copies (cast, divided by the scale, clamped) and a 16-bit one, 14 bytes. Measured on this
# project's CPU: 15.1-15.2 bytes an element above the 16-bit weight, the FP8 result included, for 2432 x 9728 to
# 10240 x 4096 weights. T5-XXL's largest Linears (10240 x 4096): 0.63 GiB, more than its largest module (its 16-bit
# embedding, 0.25 GiB, which stays as it is).
QUANTIZE_BYTES_PER_WEIGHT = 16

# Group offload keeps the block running and the next one, prefetched on a CUDA stream, on the GPU; the parts outside
# the blocks (embedders, norm_out, proj_out) are counted as resident.
GROUP_OFFLOAD_BLOCKS_ON_GPU = 2

# Device memory kept free at the peaks: the CUDA context, cuDNN workspaces and allocator fragmentation grow with
# the card and the run, beyond the fixed overhead above. A plan that would eat into it is not taken.
HEADROOM_MIN_BYTES = 512 * 2**20
HEADROOM_FRACTION = 0.06


def headroom(card_bytes: int) -> int:
    """Bytes kept free on a card of `card_bytes`: max(0.5 GiB, 6 % of the card)."""
    return max(HEADROOM_MIN_BYTES, int(HEADROOM_FRACTION * card_bytes))


# Rough speeds, only to rank placements that keep the transformer where it is (never shown as a prediction).
PCIE_BYTES_PER_S = 10e9  # model offload copies from pageable host memory: ~10 GB/s on PCIe 4.0 x16
CPU_FLOPS = 2e11  # a desktop CPU's dense matmul rate, order of magnitude (T5-XXL: ~12 s a prompt)

# ---------------------------------------------------------------------------------------------------------------
# Placements


class Where(str, Enum):
    """Where a component lives while the demo serves."""

    DEVICE = "device"  # resident on the compute device (the GPU, or the CPU on a CPU-only machine)
    MODEL_OFFLOAD = "model-offload"  # kept in host memory, moved whole to the GPU while it runs
    CPU = "cpu"  # runs on the CPU beside a GPU (text encoders only)
    GROUP_OFFLOAD = "group-offload"  # transformer only: streamed block by block each step
    SEQUENTIAL = "sequential"  # every layer moved in as it runs
    OFF = "off"  # not loaded (--t5 off)


OFFLOAD_OPTIONS = {"none": Where.DEVICE, "model": Where.MODEL_OFFLOAD, "sequential": Where.SEQUENTIAL}
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
LABELS = {"transformer": "transformer", "text_encoder": "CLIP-L", "text_encoder_2": "CLIP-G",
          "text_encoder_3": "T5-XXL", "vae": "VAE"}
# The transformer runs every step, so its placement decides the speed before anything else.
TRANSFORMER_TIERS = {Where.DEVICE: 0, Where.MODEL_OFFLOAD: 1, Where.GROUP_OFFLOAD: 2, Where.SEQUENTIAL: 3}
TEXT_TOKENS_BY_ENCODER = {"text_encoder": config.CLIP_MAX_TOKENS, "text_encoder_2": config.CLIP_MAX_TOKENS,
                          "text_encoder_3": config.T5_MAX_TOKENS}

CARD_SIZES_GIB = (8, 12, 16, 24, 48, 80)  # the cards the tests and the docs' table cover
PLAN_MODELS = ("large-turbo", "large", "medium")


def summary(placement: Mapping[str, Where], device: str = "cuda") -> str:
    """Placement in a few words, e.g. 'transformer group offload (CUDA streams); T5-XXL on CPU'."""
    if all(where in (Where.DEVICE, Where.OFF) for where in placement.values()):
        return "everything on the GPU" if device == "cuda" else f"everything on the {device.upper()}"
    if placement["transformer"] == Where.SEQUENTIAL:
        return "sequential offload of everything"
    parts = []
    if placement["transformer"] == Where.GROUP_OFFLOAD:
        parts.append("transformer group offload (CUDA streams)")
    for where, how in ((Where.MODEL_OFFLOAD, "model offload"), (Where.CPU, "on CPU")):
        names = [LABELS[c] for c in COMPONENTS if placement[c] == where]
        if names:
            parts.append(f"{', '.join(names)} {how}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Footprints


@dataclass(frozen=True)
class ComponentBytes:
    """A module's bytes split by what precision can change: FP8-capable Linear weights by class, the rest as held."""

    plain: int  # every parameter and buffer that stays as loaded
    linears: Mapping[Layer, tuple[int, int]] = field(default_factory=dict)  # class -> (weight elements, rows)
    element_size: int = 2  # bytes an element of those weights takes when they stay 16-bit
    largest: Mapping[Layer, int] = field(default_factory=dict)  # class -> weight elements of its largest Linear

    def under(self, kinds: Mapping[Layer, Kind]) -> int:
        """Bytes with each class of Linear as `kinds` says: FP8 is one byte a weight plus one float32 scale a row."""
        total = self.plain
        for layer, (elements, rows) in self.linears.items():
            fp8 = kinds.get(layer, Kind.BITS16).is_fp8
            total += elements + 4 * rows if fp8 else elements * self.element_size
        return total

    def quantize_transient(self, kinds: Mapping[Layer, Kind]) -> int:
        """Bytes beyond its final ones while its largest Linear that becomes FP8 is quantized (0: none does)."""
        return QUANTIZE_BYTES_PER_WEIGHT * max((n for layer, n in self.largest.items()
                                                if kinds.get(layer, Kind.BITS16).is_fp8), default=0)


@dataclass(frozen=True)
class ModelFootprint:
    """What the card arithmetic needs to know about one model, whatever its precision."""

    architecture: str  # e.g. "large", "medium:2"
    components: Mapping[str, ComponentBytes]  # as it will load (the positional table already cropped to max_side)
    blocks: tuple[ComponentBytes, ...]  # each transformer block (part of components["transformer"])
    params: Mapping[str, int]  # component -> parameter count (CPU time of a text encoder)
    largest_module_16bit: Mapping[str, int]  # component -> its largest single module in 16-bit
    width: int  # attention_head_dim x num_attention_heads
    patch_size: int
    dual_attention_blocks: int
    vae_full_res_channels: int  # channels of the VAE decoder's last upsampler (block_out_channels[1])
    max_side: int  # the largest image side served, which the positional table was cropped to


@dataclass(frozen=True)
class Sizes:
    """A footprint under one precision: bytes each component holds (0: not loaded), and the transformer's parts."""

    components: Mapping[str, int]
    block: int  # the largest transformer block
    rest: int  # the transformer outside its blocks
    load_transient: Mapping[str, int] = field(default_factory=dict)  # component -> bytes beyond its final ones


def load_transient(component: ComponentBytes, kinds: Mapping[Layer, Kind], largest_module_16bit: int) -> int:
    """Bytes a component holds beyond its final ones while it loads: the larger of one module arriving in 16-bit and
    one Linear being quantized (QUANTIZE_BYTES_PER_WEIGHT). Components load one after another, each quantized as it
    arrives, so only one such transient exists at a time."""
    return max(largest_module_16bit, component.quantize_transient(kinds))


def load_peak_bytes(resident: int, transients) -> int:
    """Device bytes at the peak of loading: every final byte, the largest single transient and OVERHEAD_BYTES."""
    return OVERHEAD_BYTES + resident + max(transients, default=0)


def sizes(fp: ModelFootprint, kinds: Mapping[Layer, Kind], t5: bool) -> Sizes:
    loaded = [c for c in COMPONENTS if c in fp.components and (t5 or c != "text_encoder_3")]
    components = {c: fp.components[c].under(kinds) if c in loaded else 0 for c in COMPONENTS}
    blocks = [b.under(kinds) for b in fp.blocks]
    transients = {c: load_transient(fp.components[c], kinds, fp.largest_module_16bit[c]) if c in loaded else 0
                  for c in COMPONENTS}
    return Sizes(components, max(blocks, default=0), components["transformer"] - sum(blocks), transients)


# ---------------------------------------------------------------------------------------------------------------
# Estimates


@dataclass(frozen=True)
class MemoryEstimate:
    """Device memory of one placement on one card, at the largest side served."""

    vram_bytes: int  # the card's free memory the estimate was made for
    fits: bool  # both peaks leave `headroom_bytes` free
    headroom_bytes: int
    resident_bytes: int  # weights kept on the GPU between images
    peak_load_bytes: int  # while loading: resident weights + one Linear being quantized (or 16-bit module) + overhead
    peak_run_bytes: int  # the largest phase, activations and overhead included
    phase_bytes: Mapping[str, int]  # "encode", "denoise", "decode": device bytes of each phase, overhead included
    activation_bytes: Mapping[str, int]  # "transformer", "vae"
    offload_seconds: float  # rough seconds a new prompt spends moving or CPU-running offloaded parts (ranking only)


@dataclass(frozen=True)
class Candidate:
    """One placement weighed: where each component lives, whether the transformer compiles, what it costs."""

    placement: Mapping[str, Where]
    compile: bool
    memory: MemoryEstimate
    notes: tuple[str, ...] = ()

    @property
    def speed_key(self) -> tuple:
        """Smaller is faster: transformer placement first, then the seconds offloaded parts add a prompt."""
        return TRANSFORMER_TIERS[self.placement["transformer"]], self.memory.offload_seconds


def image_tokens(side: int, patch_size: int) -> int:
    return (side // (VAE_FACTOR * patch_size)) ** 2


def transformer_activation_bytes(fp: ModelFootprint, batch: int, eager_fp8: bool) -> int:
    """Peak activation bytes of one transformer forward on a square max_side image (see the constants above).

    bytes = batch x (image tokens + 333 text tokens) x width x 2 x widths, widths = RESIDUAL_WIDTHS
    (+ DUAL_ATTENTION_WIDTHS for MMDiT-X) + MLP_WIDTHS (EAGER_FP8_MLP_WIDTHS when FP8 activations run uncompiled).
    Text tokens are counted at every width although only the image stream is that wide at the MLP: a small surplus.
    """
    tokens = image_tokens(fp.max_side, fp.patch_size) + TEXT_TOKENS
    widths = RESIDUAL_WIDTHS + (DUAL_ATTENTION_WIDTHS if fp.dual_attention_blocks else 0)
    widths += max(MLP_WIDTHS, EAGER_FP8_MLP_WIDTHS) if eager_fp8 else MLP_WIDTHS
    return int(batch * tokens * fp.width * BF16_BYTES * widths)


def vae_activation_bytes(fp: ModelFootprint) -> int:
    """Peak activation bytes of one VAE decode: VAE_LIVE_TENSORS x channels x side^2 x 2, side <= VAE_TILE_SIDE."""
    side = min(fp.max_side, VAE_TILE_SIDE)
    return VAE_LIVE_TENSORS * fp.vae_full_res_channels * side * side * BF16_BYTES


def candidate_placements(offload: str, t5: bool) -> list[dict[str, Where]]:
    """Every placement weighed; an explicit --offload (none, model, sequential) narrows them to the one it names."""
    if offload in OFFLOAD_OPTIONS:
        where = OFFLOAD_OPTIONS[offload]
        return [{c: Where.OFF if c == "text_encoder_3" and not t5 else where for c in COMPONENTS}]
    t5_places = None if t5 else [Where.OFF]
    text = (Where.DEVICE, Where.MODEL_OFFLOAD, Where.CPU)
    choices = ((Where.DEVICE, Where.GROUP_OFFLOAD), text, text, t5_places or text, (Where.DEVICE, Where.MODEL_OFFLOAD))
    out = [dict(zip(COMPONENTS, where, strict=True)) for where in itertools.product(*choices)]
    out.append({c: Where.OFF if c == "text_encoder_3" and not t5 else Where.SEQUENTIAL for c in COMPONENTS})
    return out


def evaluate(fp: ModelFootprint, size: Sizes, placement: Mapping[str, Where], compile_wanted: bool,
             fp8_matmul: bool, vram_bytes: int, cfg: bool, card_bytes: int | None = None) -> Candidate:
    """The memory and cost of one placement (fits or not), with the notes that explain it.

    `compile_wanted`: the transformer compiles if it stays resident; `fp8_matmul`: its blocks quantize activations
    (eagerly, when not compiled); `cfg`: guidance > 1, the transformer runs on a batch of 2; `card_bytes`: the
    card's whole memory, which sizes the headroom (default: `vram_bytes`)."""
    on_gpu = [c for c in COMPONENTS if placement[c] == Where.DEVICE]
    transformer = placement["transformer"]
    resident = sum(size.components[c] for c in on_gpu)
    if transformer == Where.GROUP_OFFLOAD:
        resident += size.rest + GROUP_OFFLOAD_BLOCKS_ON_GPU * size.block

    def visiting(c: str) -> int:
        """Bytes component c brings to the GPU while it runs, beyond what is resident."""
        if placement[c] == Where.MODEL_OFFLOAD:
            return size.components[c]
        if placement[c] == Where.SEQUENTIAL:
            return fp.largest_module_16bit[c]
        return 0

    compile_ = compile_wanted and transformer == Where.DEVICE
    act = {
        "transformer": transformer_activation_bytes(fp, 2 if cfg else 1, fp8_matmul and not compile_),
        "vae": vae_activation_bytes(fp),
    }
    text_on_device = [c for c in TEXT_ENCODERS if placement[c] not in (Where.CPU, Where.OFF)]
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
    # Linear being quantized (load_transient). Offloaded parts load into host memory.
    peak_load = load_peak_bytes(resident, [size.load_transient.get(c, 0) for c in on_gpu])
    spare = headroom(card_bytes or vram_bytes)
    fits = max(peak_run, peak_load) + spare <= vram_bytes

    prompts = 2 if cfg else 1  # under CFG the negative prompt goes through the encoders too
    seconds = 0.0
    for c in (*TEXT_ENCODERS, "vae"):
        if placement[c] == Where.MODEL_OFFLOAD:
            seconds += 2 * size.components[c] / PCIE_BYTES_PER_S  # in and back out
        elif placement[c] == Where.CPU:
            seconds += 2 * fp.params[c] * TEXT_TOKENS_BY_ENCODER[c] * prompts / CPU_FLOPS

    notes = []
    if transformer == Where.GROUP_OFFLOAD:
        notes.append(
            "The transformer does not fit with its activations: it streams block by block from pinned host memory "
            f"every step (diffusers group offload, CUDA streams; {size.components['transformer'] / GIB:.1f} GiB of "
            "host RAM). Expect several times slower steps."
        )
    if transformer == Where.SEQUENTIAL:
        notes.append("Sequential offload: every layer crosses PCIe on every step; the slowest way to run.")
    if placement["text_encoder_3"] == Where.CPU:
        notes.append("T5-XXL runs on the CPU: seconds for each new prompt (repeated prompts hit the embedding cache).")
    moved = [LABELS[c] for c in (*TEXT_ENCODERS, "vae") if placement[c] == Where.MODEL_OFFLOAD]
    if moved and transformer == Where.DEVICE:
        verb = "move" if len(moved) > 1 else "moves"
        notes.append(f"{', '.join(moved)} {verb} to the GPU only while running; the transformer stays resident.")
    memory = MemoryEstimate(vram_bytes, fits, spare, resident, peak_load, peak_run, phases, act, round(seconds, 3))
    return Candidate(dict(placement), compile_, memory, tuple(notes))


def choose(candidates: list[Candidate], offload: str, is_fp8: bool) -> Candidate:
    """The fastest candidate that fits the card; when none does, the smallest one, with a note on what to try."""
    fitting = [c for c in candidates if c.memory.fits]
    if fitting:
        # ties (same tier, same seconds) go to the placement with the most room left
        return min(fitting, key=lambda c: (c.speed_key, c.memory.peak_run_bytes))
    smallest = min(candidates, key=lambda c: (max(c.memory.peak_run_bytes, c.memory.peak_load_bytes), c.speed_key))
    need = max(smallest.memory.peak_run_bytes, smallest.memory.peak_load_bytes)
    forced = f" with --offload {offload}" if offload != "auto" else ""
    tries = ["--offload auto"] if forced else []
    tries += ["a smaller --max-side"] + ([] if is_fp8 else ["--precision fp8"]) + ["a smaller model"]
    note = (
        f"Nothing fits in {smallest.memory.vram_bytes / GIB:.1f} GiB{forced}: the smallest placement "
        f"({summary(smallest.placement)}) needs {need / GIB:.1f} GiB at peak and "
        f"{smallest.memory.headroom_bytes / GIB:.1f} GiB kept free. Try {', '.join(tries[:-1])} or {tries[-1]}."
    )
    return Candidate(smallest.placement, smallest.compile, smallest.memory, smallest.notes + (note,))
