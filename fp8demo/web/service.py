"""The demo's server-side state: the engines warming up in the background, per-session cancel, the PNG store.

The faces call this and nothing below it, so every face (and the API) shares one pool of engines (one per device,
pool.EnginePool) and one set of rules, and none of them imports torch. How long the PNGs are kept is the face's to
say (face.Face.keeping).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from .. import config
from ..errors import SetupError
from ..hardware import memory_in_use
from ..request import GenerationRequest, GenerationResult, Job, validate
from .metrics import Metrics, Readings

log = logging.getLogger(__name__)

# the names save_png gives: seed (< 2^32) and 8 hex digits; no other name is ever looked up in the outputs folder
PNG_NAME = re.compile(r"fp8demo-\d{1,10}-[0-9a-f]{8}\.png")
RESTARTING = "The demo is restarting after a device error; please try again in a minute."
DEVICE_LOST = "The GPU making this picture failed and was taken out of service; please try again."


def gpu_task(fn, duration: int = 120):
    """ZeroGPU (Hugging Face Spaces) allocates a GPU per call to functions wrapped in spaces.GPU; a no-op elsewhere."""
    try:
        import spaces  # noqa: F401  (only present on Spaces)
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


class DemoService:
    def __init__(self, app_cfg: config.AppConfig, caps=None, on_fatal=None, pool=None, compare_baseline=None):
        self.cfg = app_cfg
        # the face's Compare baseline, made ready (loaded, compiled, warmed) before the service is (Face)
        self.compare_baseline = compare_baseline
        # called after an unrecoverable device error; by default the process exits so that systemd restarts it
        self.on_fatal = on_fatal or _exit_soon
        self.caps = caps  # one device given (tests, benchmarks); None: the devices of --devices (AppConfig.devices)
        self.pool = None  # pool.EnginePool, once start() has made it
        # another pool with EnginePool's interface, started by start() in place of one engine per device (e.g.
        # cluster.RayPool: the engines are Ray Serve replicas, possibly on other machines)
        self._given_pool = pool
        self._comparers: dict[int, object] = {}  # engine id -> its compare.Comparer
        self.state = "starting"  # starting -> ready | failed
        self.error: str | None = None
        self.started_at = time.time()
        # the PNG store, pruned by the janitor as the face says (retention.Keeping)
        self.output_dir = Path(app_cfg.outputs).resolve()
        self.restarting = False  # set after an unrecoverable device error, until the process exits
        self.janitor = None  # the retention thread, started by server.launch
        self._cancels: dict[str, threading.Event] = {}
        self._pending: set[Path] = set()  # PNGs the background writer has not finished
        self._thread: threading.Thread | None = None
        # the image-level safety layer (safety.ImageSafety), set by server.launch when the face or the flags say so:
        # every picture of every job is checked before it leaves the service
        self.image_safety = None
        # jobs waiting in the queue in front of the engines; server.launch hands over the Gradio queue's count
        self.queue_length = lambda: 0
        self.face = "generate"  # the face served, as the metrics name it (server.launch sets it)
        self.metrics = Metrics(Readings(
            jobs_running=lambda: self.pool.running if self.pool is not None else 0,
            queue_length=lambda: self.queue_length(),
            engines=lambda: self.pool.info() if self.pool is not None else [],
            device_memory=memory_in_use,
        ))
        self._generate = gpu_task(self._generate_now)
        self._compare = gpu_task(self._compare_now)
        self._compare_sheet = gpu_task(self._compare_sheet_now, duration=300)

    # ---- start-up ---------------------------------------------------------------------------------------------

    @classmethod
    def from_engine(cls, engine, app_cfg: config.AppConfig | None = None) -> DemoService:
        """Wrap an engine that is already warm (tests, benchmarks)."""
        from ..pool import EnginePool

        service = cls(app_cfg or config.AppConfig(engine=engine.cfg), engine.caps)
        service.pool = EnginePool([engine])
        service.state = "ready" if engine.ready else engine.state
        return service

    @property
    def engine(self):
        """The engine that speaks for the pool (its model, preset and tokenizers); None before start()."""
        return self.pool.first if self.pool is not None else None

    def devices(self) -> list:
        """The devices the engines run on: the one given, or those --devices names (the best one by default)."""
        from ..hardware import detect_all

        if self._given_pool is not None:  # as many as the given pool runs at once (the queue's concurrency)
            return self._given_pool.devices()
        return [self.caps] if self.caps is not None else detect_all(self.cfg.devices)

    def start(self, background: bool = True) -> DemoService:
        if background:
            self._thread = threading.Thread(target=self._start, name="engine-warmup", daemon=True)
            self._thread.start()
        else:
            self._start()
        return self

    def _start(self) -> None:
        from ..pool import EnginePool

        try:
            self.pool = self._given_pool or EnginePool.for_devices(self.cfg.engine, self.devices())
            self.pool.start()
            if self.compare_baseline is not None:
                self.state = "warming"
                self._warm_comparisons(self.compare_baseline)
            self.state = "ready"
            for engine in self.pool.engines:
                log.info("%s on %s: %s, %s", engine.state, engine.caps.target, engine.source.name,
                         engine.plan.label())
        except BaseException as error:  # the page and /health/ready report it; the process keeps serving
            self.state = "failed"
            self.error = getattr(self.engine, "error", None) or str(error)
            log.exception("engine start failed")

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def status(self) -> dict:
        engine = self.engine
        info = engine.info() if engine is not None else {}
        engines = self.pool.info() if self.pool is not None else []
        return {
            "ready": self.ready,
            "state": self.state if self.state != "starting" else (info.get("state") or "starting"),
            "model": info.get("model"),
            "precision": info.get("precision"),
            "device": info.get("device"),
            "random_weights": info.get("random_weights"),
            # what happened while serving (a compiler failure, ...), on every engine
            "events": [dict(event, device=e["device"]) for e in engines for event in e["events"]],
            "engines": engines,
            "notice": engine.source.notice if engine is not None else None,
            "error": self.error,
            "uptime_s": round(time.time() - self.started_at, 1),
            "restarting": self.restarting,
        }

    def require_ready(self) -> None:
        if self.restarting:  # the raw device error is for the operator (log, /health/ready), not for visitors
            raise SetupError(RESTARTING)
        if self.state == "failed":
            raise SetupError(f"The model could not be started: {self.error}")
        if not self.ready:
            raise SetupError("The model is still warming up; try again in a few seconds.")

    # ---- work -------------------------------------------------------------------------------------------------

    @property
    def preset(self) -> config.Preset:
        if self.engine is not None:
            return self.engine.preset
        from ..hardware import detect
        from ..weights.sources import resolve_model

        return resolve_model(self.cfg.engine.model, self.caps or detect()).preset

    def token_status(self, prompt: str) -> str:
        """The live token count under the prompt. Cheap whatever it is sent: a prompt over the length limit is
        refused without tokenizing, and the count never takes the engine's lock (it runs beside a generation)."""
        if not isinstance(prompt, str) or not prompt or self.engine is None or self.engine.pipe is None:
            return ""
        limit = self.cfg.limits.max_prompt_chars
        if len(prompt) > limit:
            return f"⚠️ {len(prompt):,} characters: the limit is {limit:,}. Shorten the prompt to run it."
        info = self.engine.token_info(prompt)
        count = f"{info.clip_tokens} / {config.CLIP_MAX_TOKENS} CLIP tokens"
        if info.t5_tokens is not None:
            count += f" · {info.t5_tokens} / {config.T5_MAX_TOKENS} T5 tokens"
        warning = info.warning()
        return f"⚠️ {count}. {warning}" if warning else count

    def check(self, request: GenerationRequest) -> GenerationRequest:
        """The web faces' validation, before any work: the engine's own plus the prompt length limit."""
        return validate(request, self.cfg.engine.max_side, self.cfg.limits.max_prompt_chars)

    # Every job takes `gone`, a check that says whether its client has left (presence.departure): polled at each
    # denoising step, it cancels the job there, so a closed page frees the GPU slot within one step.

    def generate(self, request: GenerationRequest, session: str = "", progress=None, preview=None,
                 num_images: int = 1, gone=None) -> GenerationResult:
        with self._counted():
            self.require_ready()
            self.check(request)
            with self._previews(preview) as shown:
                result = self._generate(request, session, progress, shown, num_images, gone)
            result = self._checked(result, [result.images or (result.image,)])
        self.metrics.images.labels(face=self.face).inc(len(result.images) or 1)
        return result

    def refused(self, reason: str) -> None:
        """Count a request turned down before it became a job (a bad value, the door, a rule of the face)."""
        self.metrics.refusals.labels(reason=reason).inc()

    @contextlib.contextmanager
    def _counted(self):
        """A job in the metrics: its seconds when it makes pictures, else why it did not (a refusal: the request,
        the service's state or the safety layer; an error: memory, the device, anything else)."""
        from ..errors import Cancelled, InvalidRequest, OutOfMemory
        from .safety import ImageWithheld

        t0 = time.perf_counter()
        try:
            yield
        except Cancelled:
            raise
        except (InvalidRequest, ImageWithheld) as error:
            self.refused("invalid" if isinstance(error, InvalidRequest) else "image-safety")
            raise
        except OutOfMemory:
            self.metrics.errors.labels(kind="out-of-memory").inc()
            raise
        except SetupError as error:
            if str(error) in (RESTARTING, DEVICE_LOST):
                self.metrics.errors.labels(kind="device").inc()
            else:
                self.refused("not-ready")
            raise
        except Exception:
            self.metrics.errors.labels(kind="server").inc()
            raise
        self.metrics.generation_seconds.labels(face=self.face).observe(time.perf_counter() - t0)

    # ---- the image safety layer: every job's pictures pass here before a face sees them ----------------------

    def use_image_safety(self, safety) -> None:
        """Check every picture with `safety` (a loaded safety.ImageSafety) from now on; None turns it off."""
        self.image_safety = safety

    def _previews(self, preview):
        """The preview callback a job gets: `preview` itself, or behind the safety layer's gate (each frame checked,
        none after a flagged one), closed when the job ends so that no frame follows the result."""
        if self.image_safety is None or preview is None:
            return contextlib.nullcontext(preview)
        return self.image_safety.previews(preview)

    def _checked(self, result, pictures):
        """`result`, once every picture in `pictures` (lists of images) passes; else ImageWithheld, before anything
        of it is shown, offered or saved."""
        if self.image_safety is not None:
            self.image_safety.check(image for group in pictures for image in group)
        return result

    def _generate_now(self, request, session, progress, preview=None, num_images=1, gone=None):
        with self._job(session, progress, gone) as (cancel, on_step):
            return self.pool.run(Job(request, num_images, on_step, preview, cancel))

    @contextlib.contextmanager
    def _job(self, session: str, progress, gone):
        """The job's cancel event (Stop button: `cancel(session)`; departed client: `gone`) and its progress
        callback; device errors are sorted on the way out."""
        cancel = threading.Event()
        self._cancels[session] = cancel

        def on_step(i: int, n: int) -> None:
            if gone is not None and not cancel.is_set() and gone():
                log.info("client left: cancelling at step %d/%d", i, n)
                cancel.set()  # the engine checks it right after this callback, at the end of this step
            if progress is not None:
                progress(i, n)

        try:
            yield cancel, on_step
        except Exception as error:
            self._check_fatal(error)
            raise
        finally:
            if self._cancels.get(session) is cancel:
                del self._cancels[session]

    def _check_fatal(self, error: Exception) -> None:
        """After an unrecoverable device error the pool has taken that engine out; while others serve, the visitor
        is asked to try again; when none is left, the process exits so that the service manager restarts it."""
        from ..hardware import is_fatal_device_error

        if not is_fatal_device_error(error):
            return
        if self.pool is not None and self.pool.ready:
            raise SetupError(DEVICE_LOST) from error
        self.state = "failed"
        self.restarting = True
        self.error = f"unrecoverable device error: {error}"
        log.critical("%s; marking not ready and exiting so that the service manager restarts us", self.error)
        self.on_fatal(self)
        raise SetupError(RESTARTING) from error

    def compare(self, request: GenerationRequest, baseline: str = "bf16", session: str = "", progress=None,
                gone=None, candidate: str | None = None):
        """Two recipes side by side (compare.Comparer.compare); `candidate` None: the engine's own transformer."""
        with self._counted():
            self.require_ready()
            self.check(request)
            result = self._compare(request, baseline, session, progress, gone, candidate)
            return self._checked(result, [(result.baseline.image, result.fp8.image)])

    def compare_sheet(self, prompts: list[str], request: GenerationRequest, baseline: str = "bf16",
                      session: str = "", progress=None, gone=None, candidate: str | None = None):
        with self._counted():
            self.require_ready()
            for prompt in prompts:
                self.check(replace(request, prompt=prompt))
            rows = self._compare_sheet(prompts, request, baseline, session, progress, gone, candidate)
            return self._checked(rows, [(row.baseline.image, row.fp8.image) for row in rows])

    def _compare_sheet_now(self, prompts, request, baseline, session, progress, gone=None, candidate=None):
        with self._job(session, progress, gone) as (cancel, on_step), self.pool.engine() as engine:
            job = Job(request, progress=on_step, cancel=cancel)
            return self._comparer(engine).compare_sheet(prompts, job, baseline, candidate)

    def _compare_now(self, request, baseline, session, progress, gone=None, candidate=None):
        with self._job(session, progress, gone) as (cancel, on_step), self.pool.engine() as engine:
            return self._comparer(engine).compare(Job(request, progress=on_step, cancel=cancel), baseline,
                                                  candidate)

    def _warm_comparisons(self, baseline: str) -> None:
        """With --compile, each engine's comparison side for `baseline` now, not in the first visitor's request
        (minutes of compiling on a GPU). Uncompiled, loading it at the first comparison costs seconds: left to then."""
        for engine in getattr(self.pool, "engines", ()):  # a Ray pool's engines are replicas elsewhere
            if engine.ready and engine.plan.compile:
                self._comparer(engine).prepare(baseline)

    def _comparer(self, engine):
        """The comparer of a free engine the comparison borrowed (each keeps its own second transformer)."""
        from ..compare import Comparer

        return self._comparers.setdefault(id(engine), Comparer(engine))

    def cancel(self, session: str) -> bool:
        """Stop the session's running job at the next step. True when there was one."""
        event = self._cancels.get(session)
        if event is None:
            return False
        event.set()
        return True

    def save_png(self, result: GenerationResult) -> Path:
        """The PNG (with its parameters) for download, written in the background: PNG encoding of a megapixel
        image takes ~0.3 s on a small CPU and the visitor should not wait for it. Returns the final path at once;
        `wait_for_file` (used by /take/<name> and the gallery) waits for the write to finish."""
        r = result.request
        path = self.output_dir / f"fp8demo-{r.seed}-{uuid.uuid4().hex[:8]}.png"
        self._pending.add(path)
        threading.Thread(target=self._write_png, args=(result, path), name="png-writer", daemon=True).start()
        return path

    def _write_png(self, result: GenerationResult, path: Path) -> None:
        from ..imageio import png_bytes

        try:
            # after the response: the web server's own work on this request comes first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(png_bytes(result))
            os.replace(tmp, path)  # appears whole or not at all
            self._pending.discard(path)
        except OSError:
            log.exception("could not write %s", path)
        finally:
            self._pending.discard(path)

    def saved_png(self, name) -> Path | None:
        """The PNG save_png named `name` (a name a browser may have kept), while it is in the outputs folder or
        being written; None for any other name."""
        if not isinstance(name, str) or not PNG_NAME.fullmatch(name):
            return None
        path = self.output_dir / name
        return path if path in self._pending or path.is_file() else None

    def wait_for_file(self, path: Path, timeout: float = 10.0) -> bool:
        """True once `path` exists; waits only while the background writer is still on it."""
        deadline = time.monotonic() + timeout
        while path in self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            return path.is_file()
        except OSError:  # e.g. a name too long for the file system: no such picture
            return False


def _exit_soon(service: DemoService, delay: float = 2.0, code: int = 70) -> None:
    """Exit after `delay` s (time for /health/ready to answer 503 and the visitor's message to go out)."""
    timer = threading.Timer(delay, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
