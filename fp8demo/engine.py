"""The warm engine: carries out a run plan (load, prepare, warm-up), then turns jobs into images.

The plan is decided before anything loads (runplan.decide) and never changes; what happens while serving (a request
that would need a new compiled graph, a compiler failure) is recorded as an event, logged once per kind and shown by
/health/ready and `doctor`.

One lock guards the pipeline: the GPU runs one generation at a time and callers queue in front of it (the web app
bounds that queue). Text embeddings of recent prompts are kept in an LRU cache, so a repeated prompt skips the
three text encoders.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from . import compiler, config, hardware, placement, prepare, stepcache
from .errors import Cancelled, OutOfMemory, SetupError, UserError
from .hardware import Capabilities
from .report import Report, count_fp8_matmuls
from .request import (
    GenerationRequest,
    GenerationResult,
    Job,
    Timings,
    batch_seed,
    resolve,
    validate,
    validate_num_images,
)
from .runplan import RunPlan
from .weights.footprint import plan_for
from .weights.sources import ModelSource, load_pipeline, resolve_model

log = logging.getLogger(__name__)

WARMUP_PROMPT = "a lighthouse on a cliff at sunset, oil painting"

# Latent -> RGB for live previews, one linear map per pixel: ComfyUI's factors for SD3-family latents
# (comfy/latent_formats.py, class SD3: latent_rgb_factors, latent_rgb_factors_bias), applied as its
# Latent2RGBPreviewer does, to latents in the transformer's space (diffusers' SD3 latents are already shifted and
# scaled like ComfyUI's process_in). Costs microseconds; no VAE involved.
SD3_LATENT_RGB_FACTORS = (
    (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
)
SD3_LATENT_RGB_BIAS = (0.2394, 0.2135, 0.1925)


@dataclass(frozen=True)
class TokenInfo:
    clip_tokens: int  # including CLIP's start and end tokens, as the 77 limit counts them
    t5_tokens: int | None  # None when T5 is off
    clip_cut: str = ""  # the text CLIP does not see
    t5_cut: str = ""

    @property
    def over_clip(self) -> bool:
        return self.clip_tokens > config.CLIP_MAX_TOKENS

    def warning(self) -> str | None:
        if not self.over_clip:
            return None
        if self.t5_tokens is None:
            return (
                f"The prompt is {self.clip_tokens} CLIP tokens; CLIP reads {config.CLIP_MAX_TOKENS} and T5 is off, "
                f"so this part is ignored: \"{self.clip_cut}\""
            )
        msg = (
            f"The prompt is {self.clip_tokens} CLIP tokens; CLIP-L/G read the first {config.CLIP_MAX_TOKENS}, "
            f"T5 reads up to {config.T5_MAX_TOKENS}. Only T5 sees: \"{self.clip_cut}\""
        )
        if self.t5_cut:
            msg += f". Nobody sees: \"{self.t5_cut}\""
        return msg


@dataclass(frozen=True)
class Event:
    """Something that happened while serving: the plan stays as decided, the engine records what changed."""

    time: float  # time.time() of the first occurrence
    kind: str  # "compile-failed": compiled blocks run eagerly from now on; "recompile-refused": one request ran eager
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "kind": self.kind, "message": self.message}


class Engine:
    """Owns the pipeline. Create (the plan is decided here), `start()` (load, prepare, warm-up), then `run(job)`."""

    def __init__(self, cfg: config.EngineConfig, caps: Capabilities | None = None, plan: RunPlan | None = None):
        self.cfg = cfg
        self.caps = caps if caps is not None else hardware.detect()
        self.source: ModelSource = resolve_model(cfg.model, self.caps)
        self.plan: RunPlan = plan if plan is not None else plan_for(self.source, cfg, self.caps)
        self.report: Report | None = None
        self.pipe = None
        self.state = "created"  # created -> loading -> warming -> ready | failed
        self.error: str | None = None
        self.events: list[Event] = []
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None
        self.compile_seconds: float | None = None  # compiling and warming the compiled graphs, part of warm-up
        self.compile_cache: compiler.CompileCache | None = None
        self.fp8_matmuls_per_forward: int | None = None  # counted in warm-up: what really ran
        self._transformer = None  # the engine's own denoiser (a comparison may lend another for one job)
        self._lock = threading.Lock()
        self._embeddings: OrderedDict[tuple, tuple] = OrderedDict()
        if self.source.notice:
            log.warning(self.source.notice)

    # ---- life cycle -------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def preset(self) -> config.Preset:
        return self.source.preset

    @property
    def compiled(self) -> bool:
        """Compiled graphs serve right now (the plan compiles, and no compiler failure turned them off)."""
        return self._transformer is not None and compiler.is_compiled(self._transformer)

    def start(self) -> Engine:
        """Load and warm up; on failure the engine is marked failed with the reason, and the error re-raised."""
        try:
            self.load()
            self.warm_up()
        except BaseException as error:
            self.state = "failed"
            self.error = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            raise
        return self

    def load(self) -> None:
        """Load with the plan's precision applied as the weights arrive, each component straight onto the device the
        plan gives it (never a 16-bit model on the GPU), then prepare it."""
        self.state = "loading"
        t0 = time.perf_counter()
        log.info("Loading %s (%s; %s) on %s", self.source.name, self.plan.label(), self.plan.offload,
                 self.caps.describe())
        self.compile_cache = self.compile_cache_for() if self.plan.compile else None
        with hardware.current(self.caps.target):
            pipe = load_pipeline(self.source, self.plan, self.cfg, placement.load_devices(self.plan))
            self.report = prepare.pipeline(pipe, self.plan, self.compile_cache)
        self.pipe = pipe
        self._transformer = pipe.transformer
        self.load_seconds = time.perf_counter() - t0
        for decision, reason in self.plan.reasons.items():
            log.info("plan, %s: %s", decision, reason)

    def warm_up(self) -> None:
        """Run generations so the first visitor pays for neither compilation nor allocation.

        Compiled, the warm-up covers every graph the transformer blocks need (batch 1 and batch >= 2, a second
        size to settle the symbolic token count; compiler.py), saves the compile cache, and from then on a request
        that would need a compile is run without one (see `_denoise`).
        """
        self.state = "warming"
        t0 = time.perf_counter()
        if self.plan.compile:  # first, so that compile_seconds holds all of the compiling
            self.warm_compiled(self.pipe.transformer)
            compiler.save(self.compile_cache)
            compiler.serve_stance()
        for i in range(self.cfg.warmup_runs):
            result = self._generate(Job(GenerationRequest(WARMUP_PROMPT, seed=i)))
            log.info("warm-up %d/%d: %.2f s", i + 1, self.cfg.warmup_runs, result.timings.total)
        if self.plan.is_fp8:
            self.fp8_matmuls_per_forward = self._count_fp8_matmuls()
        self._embeddings.clear()
        self.warmup_seconds = time.perf_counter() - t0
        self.state = "ready"

    def _count_fp8_matmuls(self) -> int:
        """torch._scaled_mm calls in one transformer forward (a 1-step, smallest-size image): what really ran."""
        probe = GenerationRequest(WARMUP_PROMPT, seed=0, steps=1, guidance=0.0, width=config.MIN_SIDE,
                                  height=config.MIN_SIDE)
        calls = count_fp8_matmuls(lambda: self._generate(Job(probe)))
        log.info("FP8 matmuls (torch._scaled_mm) in one transformer forward: %d", calls)
        return calls

    def warmup_requests(self) -> list[GenerationRequest]:
        """One request per compiled graph: batch 1, batch 2 (CFG), then another size with CFG."""
        p = self.preset
        other = next((s for s in config.aspect_sizes(p).values() if s != (p.width, p.height)), (p.width, p.height))
        return [
            GenerationRequest(WARMUP_PROMPT, seed=0, steps=1, guidance=0.0),
            GenerationRequest(WARMUP_PROMPT, seed=0, steps=1, guidance=4.5),
            GenerationRequest(WARMUP_PROMPT, seed=0, steps=1, guidance=4.5, width=other[0], height=other[1]),
        ]

    def warm_compiled(self, transformer) -> None:
        """Compile `transformer`'s graphs now; on a compiler failure it runs eagerly from then on."""
        t0, graphs = time.perf_counter(), compiler.graphs_compiled()
        with compiler.stance("default"):
            for request in self.warmup_requests():
                self._generate(Job(request, transformer=transformer))
                if not compiler.is_compiled(transformer):
                    break  # the compiler failed and was turned off: nothing more to warm
        seconds = time.perf_counter() - t0
        self.compile_seconds = (self.compile_seconds or 0.0) + seconds
        log.info("compiled %d graphs in %.1f s", compiler.graphs_compiled() - graphs, seconds)

    def compile_cache_for(self) -> compiler.CompileCache:
        """The compile cache folder this engine's plan uses (or would use, for `doctor`)."""
        mode = compiler.mode_for(self.caps.device)
        return compiler.cache_for(self.cfg.cache_dir, compiler.identity(self.source.name, self.caps.describe(),
                                                                         self.plan, mode))

    def record(self, kind: str, message: str) -> None:
        """Record what happened while serving; logged the first time each kind happens."""
        if not any(e.kind == kind for e in self.events):
            log.warning("%s: %s", kind, message)
            self.events.append(Event(time.time(), kind, message[:500]))

    def info(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "model": self.source.name,
            "source": self.source.kind.value,
            "precision": self.plan.label(),
            "device": self.caps.describe(),
            "random_weights": self.source.random_weights,
            "plan": self.plan.as_dict(),
            "compiled": self.compiled,
            "fp8_matmuls_per_forward": self.fp8_matmuls_per_forward,
            "events": [e.as_dict() for e in self.events],
            "error": self.error,
        }

    # ---- prompts ----------------------------------------------------------------------------------------------

    def token_info(self, prompt: str) -> TokenInfo:
        """Token counts as the pipeline's tokenizers see them, and the text each encoder will not read."""
        if self.pipe is None:
            raise SetupError("The model is still loading.")
        clip_ids = self.pipe.tokenizer(prompt, truncation=False).input_ids
        clip_cut = ""
        if len(clip_ids) > config.CLIP_MAX_TOKENS:
            clip_cut = self.pipe.tokenizer.decode(clip_ids[config.CLIP_MAX_TOKENS - 1 : -1]).strip()
        t5 = getattr(self.pipe, "tokenizer_3", None)
        if t5 is None or self.pipe.text_encoder_3 is None:
            return TokenInfo(len(clip_ids), None, clip_cut)
        t5_ids = t5(prompt, truncation=False).input_ids
        t5_cut = ""
        if len(t5_ids) > config.T5_MAX_TOKENS:
            t5_cut = t5.decode(t5_ids[config.T5_MAX_TOKENS - 1 : -1], skip_special_tokens=True).strip()
        return TokenInfo(len(clip_ids), len(t5_ids), clip_cut, t5_cut)

    def _encode(self, prompt: str, negative: str, cfg: bool) -> tuple[tuple, bool]:
        key = (prompt, negative if cfg else "", cfg)
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key], True
        import torch

        with torch.inference_mode():
            embeds = self.pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                negative_prompt=negative if cfg else None,
                do_classifier_free_guidance=cfg,
                device=self.pipe._execution_device,
                max_sequence_length=config.T5_MAX_TOKENS,
            )
        # Cached as the encoders return them (T5 in bf16); each denoiser casts to its own dtype.
        if self.cfg.embedding_cache_size > 0:
            self._embeddings[key] = embeds
            while len(self._embeddings) > self.cfg.embedding_cache_size:
                self._embeddings.popitem(last=False)
        return embeds, False

    # ---- generation -------------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """One image for `request`, nothing to call while it runs (see `run`)."""
        return self.run(Job(request))

    def run(self, job: Job) -> GenerationResult:
        """Validate, then generate under the engine lock. Raises InvalidRequest, Cancelled or SetupError.

        `job.transformer` runs another denoiser (the comparison's 16-bit one) with this engine's text encoders, VAE
        and embedding cache; `job.label` names its precision in the result. `job.preview` gets a cheap picture of
        the latents after each step. `job.num_images` (1-4) makes a batch with seeds seed, seed+1, ... (as Forge
        does): image i is the image a single run with seed+i makes; all of them are in `result.images`.
        """
        if self.state != "ready":
            raise SetupError(
                "The model is still warming up, try again in a moment."
                if self.state in ("created", "loading", "warming")
                else f"The engine is not available: {self.error}"
            )
        validate_num_images(job.num_images)
        return self._generate(job)

    def _generate(self, job: Job) -> GenerationResult:
        request = self._as_used(resolve(validate(job.request, self.cfg.max_side), self.preset))
        job = replace(job, request=request)
        warnings = []
        token_warning = self.token_info(request.prompt).warning()
        if token_warning:
            warnings.append(token_warning)
            log.warning(token_warning)
        device = self.caps.target
        with self._lock, hardware.current(device):
            own = self.pipe.transformer
            denoiser = own if job.transformer is None else job.transformer
            try:
                self.pipe.transformer = denoiser
                images, timings, cached, blocks = self._denoise(job, denoiser)
            except Exception as error:
                if not hardware.is_out_of_memory(error):
                    raise
                hardware.release_cached_memory(device)  # so that the next visitor is served
                raise OutOfMemory(
                    f"The GPU ran out of memory for a {request.width}x{request.height} image. "
                    "Try a smaller size; the next request will work normally."
                ) from error
            finally:
                self.pipe.transformer = own
            peak, peak_kind = hardware.peak_memory(device)
        return GenerationResult(
            image=images[0],
            images=tuple(images),
            request=request,
            timings=timings,
            peak_memory_bytes=peak,
            peak_memory_kind=peak_kind,
            precision=job.label or self.plan.label(),
            model=self.source.name,
            warnings=tuple(warnings),
            embeddings_cached=cached,
            blocks_run=blocks[0],
            blocks_total=blocks[1],
        )

    def _denoise(self, job: Job, denoiser):
        """`_run`, made safe against the compiler: a visitor never waits for a compile or sees its error."""
        if not compiler.is_compiled(denoiser):
            return self._run(job, denoiser.dtype)
        try:
            return self._run(job, denoiser.dtype)
        except Exception as error:
            if hardware.is_out_of_memory(error) or not (
                compiler.is_recompile_refused(error) or compiler.is_compile_error(error)
            ):
                raise
            r = job.request
            if compiler.is_recompile_refused(error):
                self.record("recompile-refused", f"a {r.width}x{r.height} request (guidance {r.guidance}) needed a "
                            f"new compiled graph: served without compiling it ({error})")
                with compiler.stance("eager_on_recompile"):
                    return self._run(job, denoiser.dtype)
            compiler.uncompile(denoiser)
            self.record("compile-failed", f"torch.compile failed, the transformer runs eagerly from now on: {error}")
            return self._run(job, denoiser.dtype)

    @staticmethod
    def _as_used(request: GenerationRequest) -> GenerationRequest:
        """At guidance <= 1 there is no unconditional pass, so the negative prompt does nothing: record none."""
        return replace(request, negative_prompt="") if request.guidance <= 1.0 else request

    @staticmethod
    def latent_preview(latents):
        """The first image of a latent batch as a small RGB picture (one pixel per latent: 1/8 of the size)."""
        import torch
        from PIL import Image

        x = latents[0].float().movedim(0, -1)  # (h, w, 16)
        factors = torch.tensor(SD3_LATENT_RGB_FACTORS, dtype=x.dtype, device=x.device)
        rgb = x @ factors + torch.tensor(SD3_LATENT_RGB_BIAS, dtype=x.dtype, device=x.device)
        rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).cpu().numpy()
        return Image.fromarray(rgb, "RGB")

    @staticmethod
    def _batch(embeds: tuple, num_images: int) -> tuple:
        """Repeat the prompt's embeddings once per image (the pipeline gets one prompt per image)."""
        if num_images == 1:
            return embeds
        return tuple(e.repeat(num_images, *([1] * (e.dim() - 1))) if e is not None else None for e in embeds)

    def _run(self, job: Job, dtype):
        import torch

        request, progress, preview, cancel, num_images = (job.request, job.progress, job.preview, job.cancel,
                                                           job.num_images)
        device = self.caps.target
        hardware.reset_peak_memory(device)
        clock = hardware.StageClock(device)
        clock.mark()
        use_cfg = request.guidance > 1.0
        embeds, cached = self._encode(request.prompt, request.negative_prompt, use_cfg)
        pe, npe, pooled, npooled = self._batch(tuple(e.to(dtype) if e is not None else None for e in embeds),
                                               num_images)
        clock.mark()

        def on_step(pipe, step, timestep, tensors):
            if progress is not None:
                progress(step + 1, request.steps)
            if preview is not None and step + 1 < request.steps:  # the last step's picture is the real one
                preview(self.latent_preview(tensors["latents"]))
            if cancel is not None and cancel.is_set():
                pipe._interrupt = True  # the pipeline skips the remaining steps
            return tensors

        transformer = self.pipe.transformer
        blocks_before = stepcache.blocks_run(transformer)
        with torch.inference_mode(), stepcache.run(transformer):
            latents = self.pipe(
                prompt_embeds=pe,
                negative_prompt_embeds=npe,
                pooled_prompt_embeds=pooled,
                negative_pooled_prompt_embeds=npooled,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                width=request.width,
                height=request.height,
                # one generator per image: image i gets exactly the noise of a single run with seed + i
                generator=[torch.Generator("cpu").manual_seed(batch_seed(request.seed, i)) for i in range(num_images)],
                output_type="latent",
                callback_on_step_end=on_step,
            ).images
        clock.mark()
        blocks_total = request.steps * len(transformer.transformer_blocks)
        blocks = (stepcache.blocks_run(transformer) - blocks_before, blocks_total)
        if cancel is not None and cancel.is_set():
            raise Cancelled("Generation cancelled.")
        decoded = self._decode(latents, max(request.width, request.height))
        clock.mark()
        images = self.pipe.image_processor.postprocess(decoded, output_type="pil")  # on the CPU, not timed
        text, denoise, vae = clock.intervals()
        return images, Timings(text, denoise, vae, text + denoise + vae), cached, blocks

    def _decode(self, latents, longest_side: int):
        import torch

        vae = self.pipe.vae
        if longest_side > config.VAE_TILING_ABOVE:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        with torch.inference_mode():
            return vae.decode(latents, return_dict=False)[0]
