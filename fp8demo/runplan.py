"""The run plan: every choice about how the model runs on this machine, decided once, by one pure function.

`decide` takes what the user asked for (the engine flags of config.EngineConfig), what the machine can do
(hardware.Capabilities) and, on a CUDA card, what the model holds (planner.ModelFootprint), and returns a frozen
RunPlan: the precision of each part, the dtypes, where each component lives, compile, attention, and a sentence for
each choice saying why. Loading, placing, compiling and reporting carry the plan out; nothing rewrites it. What
happens later (a compiler failure while serving) is an event on the engine, not a change of plan.

The decisions, in order:
1. 16-bit compute: bf16, or fp16 when asked for or when the device has no bf16.
2. Transformer blocks: FP8 matmuls on compute capability >= 8.9 (or when asked for on a CPU, a test path), FP8
   weights with 16-bit compute elsewhere, or 16-bit (--precision bf16/fp16). AdaLN modulation: FP8 weights at most.
3. T5-XXL: FP8 weights, 16-bit or not loaded.
4. dtypes: text encoders in the compute dtype, T5 in bf16 (it overflows in fp16), the VAE in float32 on a CPU.
5. Attention backend: SDPA, xformers, or FP8 attention (Hopper with flash-attn 3 only).
6. Step cache: none, the one asked for, or the preset's recommended one (recipes.py).
7. Placement and compile: on a CUDA card the fastest placement that fits (planner.choose); compile where it pays
   (native FP8 on CUDA) and never with an offloaded transformer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from . import config, planner, recipes
from .errors import SetupError
from .hardware import Capabilities
from .planner import MemoryEstimate, ModelFootprint, Where
from .policy import KEPT_16BIT, Kind, Layer
from .recipes import StepCache

KNOWN_BROKEN = "compiled torchao FP8 with CPU offload is a known-broken combination"


@dataclass(frozen=True)
class RunPlan:
    device: str  # "cuda", "mps" or "cpu"
    target: str  # the torch device it runs on: "cuda:1" on a machine with several GPUs, else as `device`
    precision: str  # what was asked for: "fp8", "bf16" or "fp16"
    compute_dtype: str  # the 16-bit compute dtype: "bfloat16" or "float16"
    blocks: Kind  # transformer block Linears
    modulation: Kind  # AdaLN modulation Linears (FP8 weights at most)
    t5: Kind | None  # T5-XXL's Linears; None: T5 is not loaded
    dtypes: Mapping[str, str]  # component -> dtype of its 16-bit parts
    placement: Mapping[str, Where]  # component -> where it lives while serving
    compile: bool  # the transformer blocks are compiled
    attention: str  # "sdpa", "xformers" or "fp8"
    max_side: int  # the largest image side served (the positional table is cropped to it)
    reasons: Mapping[str, str]  # decision -> why, in words
    architecture: str | None = None  # the model's architecture when the planner knew it
    memory: MemoryEstimate | None = None  # None: nothing to place (not CUDA, or an architecture the planner lacks)
    cache: StepCache | None = None  # the step cache; None: every step runs every block

    @property
    def kinds(self) -> dict[Layer, Kind]:
        """What each class of FP8-capable Linear becomes (policy.kind_of reads this)."""
        return _kinds(self.blocks, self.modulation, self.t5)

    @property
    def is_fp8(self) -> bool:
        return self.blocks.is_fp8

    @property
    def fp8_matmul(self) -> bool:
        return self.blocks is Kind.FP8_MATMUL

    @property
    def offload(self) -> str:
        """'none', or what leaves the device and how, in words."""
        resident = all(where in (Where.DEVICE, Where.OFF) for where in self.placement.values())
        return "none" if resident else planner.summary(self.placement, self.device)

    @property
    def matmul(self) -> str:
        """What multiplies in the transformer blocks, in words."""
        if self.blocks is Kind.FP8_MATMUL:
            return "torch._scaled_mm: FP8 E4M3 weights x FP8 E4M3 activations, per-row scales"
        if self.blocks is Kind.FP8_WEIGHTS:
            return f"{self.compute_dtype} matmul on FP8 E4M3 weights (per-row scales), dequantized per layer"
        return f"{self.compute_dtype} matmul"

    def label(self) -> str:
        """Short human label, e.g. 'FP8 E4M3 native matmuls (compiled)'."""
        if self.blocks is Kind.FP8_MATMUL:
            head = "FP8 E4M3 native matmuls"
        elif self.blocks is Kind.FP8_WEIGHTS:
            head = "FP8 E4M3 weights, bf16 compute" if self.compute_dtype == "bfloat16" else "FP8 E4M3 weights"
        else:
            head = "fp16" if self.compute_dtype == "float16" else "bf16"
        extras = ["compiled"] if self.compile else []
        if self.cache is not None:
            extras.append(f"cache {self.cache}")
        if self.attention == "fp8":
            extras.append("FP8 attention")
        transformer = self.placement["transformer"]
        if transformer is not Where.DEVICE:
            extras.append(f"offload {transformer.value.removesuffix('-offload')}")
        return head + (f" ({', '.join(extras)})" if extras else "")

    def layers(self) -> str:
        """The transformer's layers in words (the precision report's note)."""
        if not self.is_fp8:
            return f"all 16-bit ({self.compute_dtype})"
        blocks = ("FP8 weights and activations (per-row scales)" if self.fp8_matmul
                  else "FP8 weights (per-row scales), bf16 compute")
        modulation = "FP8 weights, bf16 compute" if self.modulation.is_fp8 else "16-bit"
        return f"block Linears: {blocks}; AdaLN modulation: {modulation}; kept 16-bit: {', '.join(KEPT_16BIT)}"

    def as_dict(self) -> dict[str, Any]:
        """The plan as `plan --json`, `info` and `doctor` print it."""
        return {
            "label": self.label(),
            "device": self.device,
            "target": self.target,
            "precision": self.precision,
            "compute_dtype": self.compute_dtype,
            "blocks": self.blocks.value,
            "modulation": self.modulation.value,
            "t5": self.t5.value if self.t5 is not None else "off",
            "matmul": self.matmul,
            "dtypes": dict(self.dtypes),
            "placement": {c: w.value for c, w in self.placement.items()},
            "offload": self.offload,
            "compile": self.compile,
            "attention": self.attention,
            "cache": str(self.cache) if self.cache is not None else "none",
            "max_side": self.max_side,
            "architecture": self.architecture,
            "memory": asdict(self.memory) if self.memory is not None else None,
            "reasons": dict(self.reasons),
        }


def _kinds(blocks: Kind, modulation: Kind, t5: Kind | None) -> dict[Layer, Kind]:
    return {Layer.BLOCK: blocks, Layer.MODULATION: modulation, Layer.T5: t5 or Kind.BITS16}


def describe(plan: dict) -> list[str]:
    """A plan (RunPlan.as_dict, or read back from JSON) in plain words, one fact a line: what `plan` prints without
    --json, and `doctor` too."""
    lines = [f"plan:          {plan['label']}; T5 {plan['t5']}; compile {'on' if plan['compile'] else 'off'}; "
             f"step cache {plan.get('cache', 'none')}",
             f"matmul:        {plan['matmul']}",
             "placement:     " + ", ".join(f"{planner.LABELS[c]} {w}" for c, w in plan["placement"].items())]
    m = plan["memory"]
    if m is not None:
        gib = planner.GIB
        phases = ", ".join(f"{k} {v / gib:.2f}" for k, v in m["phase_bytes"].items())
        lines.append(f"memory:        {m['resident_bytes'] / gib:.2f} GiB resident; peak "
                     f"{m['peak_run_bytes'] / gib:.2f} GiB running ({phases}), {m['peak_load_bytes'] / gib:.2f} GiB "
                     f"loading; card {m['vram_bytes'] / gib:.1f} GiB: {'fits' if m['fits'] else 'DOES NOT FIT'}")
    lines += [f"  {decision + ':':13}{reason}" for decision, reason in plan["reasons"].items()]
    return lines


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise SetupError(f"Unknown {name} {value!r}: choose one of {', '.join(map(str, allowed))}.")


def _check(cfg: config.EngineConfig) -> None:
    _choice("precision", cfg.precision, config.PRECISIONS)
    _choice("FP8 matmul", cfg.fp8_matmul, config.FP8_MATMUL_MODES)
    _choice("T5 mode", cfg.t5, config.T5_MODES)
    _choice("modulation mode", cfg.modulation, config.MODULATION_MODES)
    _choice("offload mode", cfg.offload, config.OFFLOAD_MODES)
    _choice("attention backend", cfg.attention, config.ATTENTION_BACKENDS)
    if cfg.cache != "preset":
        recipes.parse_cache(cfg.cache)  # refused here, before anything else is decided
    if cfg.max_side % config.SIZE_MULTIPLE or not config.MIN_SIDE <= cfg.max_side:
        raise SetupError(f"--max-side must be a multiple of {config.SIZE_MULTIPLE} of at least {config.MIN_SIDE}, "
                         f"got {cfg.max_side}.")


def _no_fp8_matmuls(caps: Capabilities) -> str:
    if caps.device == "cuda":
        cc = ".".join(map(str, caps.compute_capability or ()))
        return (f"{caps.name} (compute capability {cc}) has no FP8 tensor cores (needs >= 8.9): "
                "FP8 weights are stored and computed in bf16, which saves memory but not time.")
    return (f"No FP8 matmuls on {caps.device}: FP8 weights are stored and computed in bf16, "
            "which saves memory but not time.")


def _blocks(cfg: config.EngineConfig, caps: Capabilities) -> tuple[Kind, str]:
    if cfg.precision != "fp8":
        return Kind.BITS16, f"--precision {cfg.precision}: the transformer is 16-bit."
    if not caps.torchao:
        raise SetupError("FP8 needs torchao: pip install torchao (or choose --precision bf16).")
    native = cfg.fp8_matmul == "native" or (cfg.fp8_matmul == "auto" and caps.fp8_native)
    if not native:
        why = _no_fp8_matmuls(caps) if cfg.fp8_matmul == "auto" else "--fp8-matmul weight-only."
        return Kind.FP8_WEIGHTS, why
    if caps.fp8_native:
        cc = ".".join(map(str, caps.compute_capability or ()))
        return Kind.FP8_MATMUL, f"{caps.name} has FP8 tensor cores (compute capability {cc}): block matmuls in FP8."
    if caps.device != "cpu":
        raise SetupError(f"--fp8-matmul native: {_no_fp8_matmuls(caps)} Use --fp8-matmul weight-only.")
    return Kind.FP8_MATMUL, ("CPU: native FP8 matmuls run through torch._scaled_mm, about 30x slower than bf16 here; "
                             "this exercises the GPU's code path, it is not a speed path.")


def decide(cfg: config.EngineConfig, caps: Capabilities, footprint: ModelFootprint | None = None,
           guided: bool = True, preset: config.Preset | None = None) -> RunPlan:
    """The run plan for `cfg` on `caps`. `footprint`: what the model holds (a CUDA card is planned with it);
    `guided`: the model's preset uses guidance > 1, so the transformer runs on a batch of 2; `preset`: the model's
    preset (its recommended step cache, for --cache preset). Pure: no torch, no I/O."""
    _check(cfg)
    reasons: dict[str, str] = {}

    compute = "float16" if cfg.precision == "fp16" else "bfloat16"
    if compute == "bfloat16" and not caps.bf16:
        compute = "float16"
        reasons["compute"] = f"{caps.name} has no bf16 support: 16-bit compute is fp16."

    blocks, reasons["blocks"] = _blocks(cfg, caps)
    modulation = Kind.FP8_WEIGHTS if blocks.is_fp8 and cfg.modulation == "fp8" else Kind.BITS16
    if blocks.is_fp8:
        reasons["modulation"] = ("FP8 weights, 16-bit compute: one vector per image goes through them, so FP8 "
                                 "activations would cost quality and save nothing." if modulation.is_fp8
                                 else "--modulation bf16: kept 16-bit.")

    if cfg.t5 == "off":
        t5 = None
    elif cfg.t5 == "fp8" or (cfg.t5 == "auto" and blocks.is_fp8):
        if not caps.torchao:
            raise SetupError("--t5 fp8 needs torchao: pip install torchao.")
        t5 = Kind.FP8_WEIGHTS
    else:
        t5 = Kind.BITS16
    reasons["t5"] = {None: "--t5 off: not loaded; prompts are read by CLIP-L/G alone.",
                     Kind.FP8_WEIGHTS: "FP8 weights, bf16 compute (half its 9 GiB in bf16).",
                     Kind.BITS16: "bf16."}[t5]
    if compute == "float16" and t5 is not None:
        reasons["t5"] += " T5-XXL computes in bf16 even in fp16 mode: it overflows in fp16."

    # bf16 convolutions have no fast CPU kernels (tiny model, 1024 px decode: 74 s in bf16, 1.4 s in fp32).
    vae = "float32" if caps.device == "cpu" else compute
    if caps.device == "cpu":
        reasons["vae"] = "CPU: the VAE runs in float32 (bf16 convolutions are ~50x slower on CPUs)."
    dtypes = {"transformer": compute, "text_encoder": compute, "text_encoder_2": compute,
              "text_encoder_3": "bfloat16", "vae": vae}

    _attention(cfg, caps, reasons)
    cache, reasons["cache"] = _cache(cfg, preset)

    if cfg.compile is not None:
        compile_wanted = cfg.compile
        reasons["compile"] = f"--{'' if cfg.compile else 'no-'}compile."
        if cfg.compile and caps.device != "cuda":
            reasons["compile"] += " On a non-CUDA device the first generations are slow and the gains small."
    else:
        compile_wanted = blocks is Kind.FP8_MATMUL and caps.device == "cuda"
        reasons["compile"] = ("On: FP8 matmuls are slower than bf16 unless compiled." if compile_wanted else
                              "Off: it pays off for FP8 matmuls on CUDA, which this plan does not run.")

    placement, memory, reasons["placement"] = _place(cfg, caps, footprint, _kinds(blocks, modulation, t5),
                                                     compile_wanted, guided)
    compile_ = compile_wanted and placement["transformer"] is Where.DEVICE
    if compile_wanted and not compile_:
        reasons["compile"] = f"Off: {KNOWN_BROKEN}."
    architecture = footprint.architecture if memory is not None else None
    return RunPlan(caps.device, caps.target, cfg.precision, compute, blocks, modulation, t5, dtypes, placement,
                   compile_, cfg.attention, cfg.max_side, reasons, architecture, memory, cache)


def _attention(cfg: config.EngineConfig, caps: Capabilities, reasons: dict[str, str]) -> None:
    """Refuse an attention backend this machine cannot run, saying why."""
    if cfg.attention == "xformers":
        if caps.device != "cuda":
            raise SetupError("xformers attention needs a CUDA GPU; use --attention sdpa (the default).")
        if not caps.xformers:
            raise SetupError("xformers is not installed: pip install xformers (its wheels pin a torch version; check "
                             "it matches yours), or use --attention sdpa (PyTorch's built-in memory-efficient "
                             "attention).")
    elif cfg.attention == "fp8":
        hopper = caps.device == "cuda" and (caps.compute_capability or (0, 0))[0] == 9
        if not hopper:
            where = caps.describe() if caps.device == "cuda" else f"the {caps.device.upper()}"
            raise SetupError(f"--attention fp8 runs on Hopper GPUs only (compute capability 9.x: torchao's FP8 "
                             f"attention uses flash-attn 3 kernels), and {where} is not one. Use --attention sdpa.")
        if not caps.flash_attention_3:
            raise SetupError("--attention fp8 needs flash-attn 3 (its flash_attn_interface module: built from the "
                             "flash-attention repository's hopper/ folder). Use --attention sdpa.")
        reasons["attention"] = ("FP8 attention: Q, K and V quantized to FP8 for flash-attn 3 (torchao's "
                                "low-precision attention, a prototype): faster attention, some quality lost.")


def _cache(cfg: config.EngineConfig, preset: config.Preset | None) -> tuple[StepCache | None, str]:
    """The step cache and why."""
    spec = recipes.recommended_cache(preset) if cfg.cache == "preset" else cfg.cache
    cache = recipes.parse_cache(spec)
    source = f"the {preset.name} preset's recommended one" if cfg.cache == "preset" and preset else f"--cache {spec}"
    if cache is None:
        return None, f"None ({source}): every step runs every block."
    if cache.kind == "mag":
        raise SetupError("--cache mag: MagCache needs magnitude ratios calibrated for the model at a fixed step "
                         "count, and none are published for SD3.5; use first-block or taylorseer.")
    if cache.kind == "first-block":
        what = (f"the other blocks are skipped while the first block's output changes by less than "
                f"{cache.threshold:g} (relative) from the last full step")
    else:
        what = (f"a full step every {cache.interval} steps after {cache.warmup} full ones, the steps between "
                "predicted from a Taylor expansion")
    return cache, f"{cache} ({source}): {what}; faster, at a quality price measured by `fidelity`."


def _place(cfg, caps, footprint, kinds, compile_wanted, guided) -> tuple[dict, MemoryEstimate | None, str]:
    """(where each component lives, the memory estimate when a card was planned, why)."""
    has_t5 = cfg.t5 != "off"
    if caps.device != "cuda":
        why = (f"--offload {cfg.offload} needs a CUDA GPU: everything stays on {caps.device}."
               if cfg.offload in ("model", "sequential") else f"Everything runs on the {caps.device.upper()}.")
        return planner.candidate_placements("none", has_t5)[0], None, why
    if footprint is None or caps.free_memory is None:
        if cfg.offload in planner.OFFLOAD_OPTIONS:
            return planner.candidate_placements(cfg.offload, has_t5)[0], None, f"--offload {cfg.offload}."
        return planner.candidate_placements("none", has_t5)[0], None, (
            "The planner does not know this model's architecture: everything goes on the GPU (--offload model if it "
            "does not fit).")
    size = planner.sizes(footprint, kinds, has_t5)
    fp8_matmul = kinds[Layer.BLOCK] is Kind.FP8_MATMUL
    candidates = [planner.evaluate(footprint, size, where, compile_wanted, fp8_matmul, caps.free_memory, guided,
                                   caps.total_memory)
                  for where in planner.candidate_placements(cfg.offload, has_t5)]
    best = planner.choose(candidates, cfg.offload, kinds[Layer.BLOCK].is_fp8)
    m = best.memory
    fits = (f"Fits in {m.vram_bytes / planner.GIB:.1f} GiB: {m.peak_run_bytes / planner.GIB:.1f} GiB at peak, "
            f"{m.headroom_bytes / planner.GIB:.1f} GiB kept free." if m.fits else "")
    where = planner.summary(best.placement)
    return best.placement, m, " ".join(filter(None, (f"{where[:1].upper()}{where[1:]}.", fits, *best.notes)))

