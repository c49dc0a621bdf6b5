"""16-bit against FP8: one prompt, one seed, the same text encoders and VAE, two transformers.

The engine's own transformer is one side; the other is loaded on first use from the same source. It stays on the
device when there is room next to the warm pipeline; otherwise it waits on the CPU and is moved in for each
comparison and out again. That move is timed and reported apart, never counted as inference, and the engine's
transformer never leaves the device, so the next visitor's FP8 image is as fast as before.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from PIL import Image

from . import compiler, hardware, lpips_metric, prepare, recipes, runplan
from .engine import Engine
from .errors import InvalidRequest, OutOfMemory, SetupError
from .metrics import ImageMetrics, compare_images, difference_heatmap
from .request import GenerationResult, Job, resolve, validate
from .tensors import module_bytes
from .weights import sources
from .weights.sources import SourceKind

log = logging.getLogger(__name__)

BASELINES = ("bf16", "fp16")  # the 16-bit recipes the Compare tab offers first
MAX_VARIANTS = 2  # extra transformers kept loaded: both sides of a comparison of two recipes
# Room for activations, the VAE decode and allocator slack beside the second transformer on the device.
WORKING_BYTES = 3 * 2**30


@dataclass(frozen=True)
class CompareResult:
    baseline: GenerationResult
    fp8: GenerationResult
    metrics: ImageMetrics
    heatmap: Image.Image
    swap_seconds: float  # moving the off-device transformer in and out; not part of either timing
    load_seconds: float  # first-use load of a transformer the engine did not have; 0 when already there
    baseline_resident: bool
    # FP8's main benefit: the transformer's own parameters and buffers as held (process RSS only ever rises)
    baseline_transformer_bytes: int = 0
    fp8_transformer_bytes: int = 0
    device: str = "cpu"  # each side's peak_memory_bytes is that device's peak, reset before the side runs

    @property
    def speed_representative(self) -> bool:
        """A CPU computes FP8 weights in 16-bit, one core count and cache at a time: no guide to a GPU's ratio."""
        return self.device == "cuda"

    def summary(self) -> dict:
        def side(r: GenerationResult) -> dict:
            return {
                "precision": r.precision,
                "denoising_s": round(r.timings.denoising, 4),
                "total_s": round(r.timings.total, 4),
                "peak_memory_bytes": r.peak_memory_bytes,
                "peak_memory_kind": r.peak_memory_kind,
            }

        return {
            "baseline": side(self.baseline),
            "fp8": side(self.fp8),
            "metrics": self.metrics.as_dict(),
            "swap_seconds": round(self.swap_seconds, 4),
            "load_seconds": round(self.load_seconds, 4),
            "baseline_resident": self.baseline_resident,
            "seed": self.fp8.request.seed,
            "transformer_bytes": {"baseline": self.baseline_transformer_bytes, "fp8": self.fp8_transformer_bytes},
            "device": self.device,
            "speed_representative": self.speed_representative,
        }


class Comparer:
    """Holds the second transformer and runs both sides for one request."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._variants: dict[str, tuple[object, str, bool]] = {}  # kind -> (module, label, on device)
        self._lock = threading.Lock()
        self._lpips = None  # lpips_metric.Lpips or .Missing, loaded at the first comparison

    def prepare(self, recipe: str) -> None:
        """Load, compile and warm the `recipe` side now (at start-up), and keep its kernels in the compile cache."""
        self._variant(recipe)
        if self.engine.compile_cache is not None:
            compiler.save(self.engine.compile_cache)

    def plan_for(self, recipe: str) -> runplan.RunPlan:
        """The run plan of a comparison side: the engine's options with `recipe`'s speed choices, T5 left out,
        everything resident. A recipe that does not say `compile` is compiled like the engine's own side, so that
        "bf16 against the engine" compares precision, compiled against compiled. SetupError for a recipe this
        machine cannot run, saying why."""
        engine = self.engine
        try:
            cfg = recipes.apply(engine.cfg, recipe, engine.preset)
        except SetupError as error:  # a visitor's choice: a mistake in the request, not the machine
            raise InvalidRequest(str(error)) from error
        named = recipes.names_compile(recipe)
        cfg = replace(cfg, t5="off", offload="none", compile=cfg.compile if named else engine.plan.compile)
        return runplan.decide(cfg, engine.caps, preset=engine.preset)

    def _is_own(self, plan: runplan.RunPlan) -> bool:
        """The engine's own transformer serves this side: the same speed choices."""
        own = self.engine.plan
        return ((plan.blocks, plan.compute_dtype, plan.compile, plan.cache, plan.attention)
                == (own.blocks, own.compute_dtype, own.compile, own.cache, own.attention))

    def _variant(self, recipe: str | None) -> tuple[object, str, bool, float]:
        """(transformer, label, on device, load seconds) for `recipe`; None: the engine's own transformer."""
        plan = None if recipe is None else self.plan_for(recipe)
        if plan is None or self._is_own(plan):
            return self.engine.pipe.transformer, self.engine.plan.label(), True, 0.0
        with self._lock:
            if recipe in self._variants:
                self._variants[recipe] = self._variants.pop(recipe)  # the most recently used last
                module, label, resident = self._variants[recipe]
                return module, label, resident, 0.0
            # at most MAX_VARIANTS extra transformers (both sides of a comparison); the least recently used goes
            while len(self._variants) >= MAX_VARIANTS:
                self._variants.pop(next(iter(self._variants)))
            hardware.release_cached_memory(self.engine.caps.target)
            t0 = time.perf_counter()
            module, label = self._load(recipe, plan)
            resident = self._place(module)
            prepare.speed(module, plan)
            if plan.compile:
                if not resident:
                    self._move(module, self.engine.caps.target)
                self.engine.warm_compiled(module)  # its first comparison must not pay for the compiler
                if not resident:
                    self._move(module, "cpu")
            self._variants[recipe] = (module, label, resident)
            return module, label, resident, time.perf_counter() - t0

    def _load(self, recipe: str, plan: runplan.RunPlan):
        """The transformer of the engine's source as `plan` says, prepared (not yet compiled)."""
        engine = self.engine
        module = sources.load_transformer(engine.source, plan, engine.cfg)
        if plan.is_fp8 and engine.caps.device == "cuda":
            module.to(engine.caps.target)  # torchao quantizes on the device it computes on
        module = prepare.transformer(module, plan)
        log.info("comparison transformer %s loaded: %.2f GiB", recipe, module_bytes(module) / 2**30)
        label = plan.label() if plan.compile or plan.is_fp8 or plan.cache else f"{plan.precision} (eager)"
        if not plan.is_fp8 and engine.source.kind in (SourceKind.FP8_FOLDER, SourceKind.SINGLE_FILE):
            label += ", dequantized from the FP8 checkpoint"  # no 16-bit original is at hand
        return module, label

    def _place(self, module) -> bool:
        device = self.engine.caps.target
        if device == "cpu":
            return True
        size = module_bytes(module)
        free = hardware.free_device_memory(device)
        on_device = next(module.parameters()).device.type == self.engine.caps.device
        if on_device or free is None or size + WORKING_BYTES <= free:
            module.to(device)
            return True
        module.to("cpu")
        log.info("comparison transformer waits on the CPU (%.1f GiB, %.1f GiB free)", size / 2**30, free / 2**30)
        return False

    def compare(self, job: Job, baseline: str = "bf16", candidate: str | None = None) -> CompareResult:
        """`job.request` through the `baseline` side, then the candidate; progress counts over both. Each side is a
        recipe (recipes.py: "bf16", "fp8-storage+cache", ...); the candidate is by default the engine's own
        transformer (its FP8 one: the result's `fp8` side)."""
        progress = job.progress
        # Resolve once, so both sides get the same seed even when the request left it random.
        request = resolve(validate(job.request, self.engine.cfg.max_side), self.engine.preset)
        try:
            base_module, base_label, base_resident, load_b = self._variant(baseline)
            fp8_module, fp8_label, fp8_resident, load_f = self._variant(candidate)
        except Exception as error:
            self._out_of_memory(error, f"loading the {baseline} transformer for the comparison")
            raise
        steps = request.steps

        def half(offset: int):
            if progress is None:
                return None
            return lambda i, n: progress(offset + i, 2 * steps)

        swap = 0.0
        results = {}
        for offset, (kind, module, label, resident) in enumerate(
            (("baseline", base_module, base_label, base_resident), ("fp8", fp8_module, fp8_label, fp8_resident))
        ):
            if not resident:
                try:
                    swap += self._move(module, self.engine.caps.target)
                except Exception as error:
                    self._out_of_memory(error, f"moving the {kind} transformer onto the GPU")
                    raise
            try:
                results[kind] = self.engine.run(
                    replace(job, request=request, progress=half(offset * steps), transformer=module, label=label)
                )
            finally:
                if not resident:
                    swap += self._move(module, "cpu")
        base, fp8 = results["baseline"], results["fp8"]
        return CompareResult(
            baseline=base,
            fp8=fp8,
            metrics=self._with_lpips(compare_images(base.image, fp8.image), base.image, fp8.image),
            heatmap=difference_heatmap(base.image, fp8.image),
            swap_seconds=swap,
            load_seconds=load_b + load_f,
            baseline_resident=base_resident,
            baseline_transformer_bytes=module_bytes(base_module),
            fp8_transformer_bytes=module_bytes(fp8_module),
            device=self.engine.caps.device,
        )

    def compare_sheet(self, prompts: list[str], job: Job, baseline: str = "bf16",
                      candidate: str | None = None) -> list[CompareResult]:
        """The same seed and settings through both transformers for each prompt (a contact sheet of FP8 vs 16-bit).
        Progress counts over all of them."""
        prompts = [p for p in prompts if p and p.strip()]
        if not prompts:
            raise InvalidRequest("Write at least one prompt for the sheet.")
        request = resolve(validate(job.request, self.engine.cfg.max_side), self.engine.preset)  # one seed for all
        per, progress = 2 * request.steps, job.progress
        results = []
        for k, prompt in enumerate(prompts):
            step = None if progress is None else (lambda i, n, k=k: progress(k * per + i, len(prompts) * per))
            results.append(self.compare(replace(job, request=replace(request, prompt=prompt), progress=step),
                                        baseline, candidate))
        return results

    def _with_lpips(self, metrics: ImageMetrics, a, b) -> ImageMetrics:
        """`metrics` with LPIPS beside PSNR and SSIM, or the reason it cannot be computed here."""
        if self._lpips is None:
            self._lpips = lpips_metric.load(self.engine.caps.target)
        if isinstance(self._lpips, lpips_metric.Missing):
            return replace(metrics, lpips_note=self._lpips.reason)
        note = "" if self._lpips.genuine else f"not LPIPS: a stand-in backbone ({self._lpips.backbone})"
        return replace(metrics, lpips=self._lpips.distance(a, b), lpips_note=note)

    def _out_of_memory(self, error: Exception, doing: str) -> None:
        """Raise the visitor's out-of-memory message (memory released, the next request works) for an OOM while
        the second transformer is loaded or moved; return for any other error."""
        if not hardware.is_out_of_memory(error):
            return
        with self._lock:
            self._variants.clear()  # a half-placed transformer is no use: the next comparison loads it afresh
        hardware.release_cached_memory(self.engine.caps.target)
        raise OutOfMemory(
            f"The GPU ran out of memory {doing}. The comparison needs room for a second transformer: try again "
            "when the server is idle, or at a smaller size; the Generate tab works normally."
        ) from error

    def _move(self, module, device: str) -> float:
        t0 = time.perf_counter()
        module.to(device)
        hardware.synchronize(self.engine.caps.target)
        if device == "cpu":
            hardware.release_cached_memory(self.engine.caps.target)
        return time.perf_counter() - t0

