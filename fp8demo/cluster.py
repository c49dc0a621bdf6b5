"""Beyond one machine, on Ray Serve: warm engines as a replicated deployment, the usual web front in front of them.

`serve run fp8demo.cluster:app` (defaults) or `serve run fp8demo.cluster:build replicas=4 serve="--kiosk"` deploys
two deployments in one Ray Serve application (docs/cluster.md):

- "Engine": one warm `engine.Engine` per replica (`EngineReplica`), one GPU each (`ray_actor_options={"num_gpus":
  1}`) or a fraction of a CPU's cores; `replicas=N`, or autoscaling between `min_replicas` and `max_replicas`. A
  replica takes one job at a time (`max_ongoing_requests=1`), so Ray's router sends each job to a free replica and
  queues the others at the handle, as `pool.EnginePool` does for one machine.
- "Front": the usual face and `web/service.py DemoService` (the same queue, admission, limits, safety layer and
  PNG store), whose pool is a `RayPool`: EnginePool's interface over a Ray Serve deployment handle. It serves the
  page with Gradio's own server on `--host`/`--port` of its node (not through Ray Serve's HTTP proxy).

A job streams back from its replica (`handle.options(stream=True)` on an async generator method): every step's
progress and preview as it happens, then the result. Stop (or a visitor who left) cancels the Ray call
(`response.cancel()`); the replica sets the job's cancel event and the engine stops after its current step. A replica
that dies mid-job costs that job a message (SetupError) and Ray Serve starts another; the front keeps serving.

Ray is an optional extra (`pip install -e .[cluster]`, requirements-cluster.txt): this module imports without it, and
only the functions that deploy or call Ray import it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import config
from .errors import Cancelled, SetupError, UserError
from .request import GenerationRequest, GenerationResult, Job

log = logging.getLogger(__name__)

APP_NAME = "fp8demo"
ENGINE = "Engine"
FRONT = "Front"
REPLICA_LOST = "The machine making this picture stopped before it was done; please try again."
DEVICE_LOST = "The GPU making this picture failed and was taken out of service; please try again."
NOT_ON_CLUSTER = "Comparisons are not available on this cluster deployment yet; the Generate tab works."


def require_ray():
    """The `ray` module with Ray Serve, or a SetupError that says how to install the extra."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError as error:
        raise SetupError('Ray Serve is not installed: pip install "fp8demo[cluster]" (or -r '
                         "requirements-cluster.txt)") from error
    return ray


# ---- the replicas: one warm engine each -------------------------------------------------------------------------


class EngineReplica:
    """A Ray Serve replica holding one warm engine on the device Ray gave it (CUDA_VISIBLE_DEVICES: cuda:0)."""

    def __init__(self, engine_cfg: config.EngineConfig, step_delay_s: float = 0.0):
        from .engine import Engine
        from .hardware import detect

        logging.getLogger().setLevel(logging.INFO)
        self.engine = Engine(engine_cfg, detect()).start()
        self.step_delay_s = step_delay_s  # a pause after each step: tests and demos of jobs side by side

    def describe(self) -> dict[str, Any]:
        """What the front shows of the engines: preset, model, plan, and the engine's info."""
        e = self.engine
        return {"preset": e.preset, "name": e.source.name, "notice": e.source.notice, "label": e.plan.label(),
                "target": e.caps.target, "device_name": e.caps.name, "info": e.info()}

    def check_health(self) -> None:
        """Ray Serve replaces a replica whose engine failed (an unrecoverable device error)."""
        if self.engine.state != "ready":
            raise RuntimeError(f"engine {self.engine.state}: {self.engine.error}")

    async def generate(self, request: GenerationRequest, num_images: int = 1, previews: bool = False):
        """Run one job, yielding ("progress", (i, n)) and ("preview", image) as the engine goes, then ("result",
        GenerationResult). A cancelled call (the front's response.cancel()) stops the engine after its step."""
        from .hardware import is_fatal_device_error

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(kind: str, value) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        def progress(i: int, n: int) -> None:
            put("progress", (i, n))
            if self.step_delay_s:
                time.sleep(self.step_delay_s)

        def work() -> None:
            try:
                job = Job(request, num_images, progress, (lambda image: put("preview", image)) if previews else None,
                          cancel)
                put("result", self.engine.run(job))
            except BaseException as error:  # noqa: B036  (handed to the front, whatever it is)
                if is_fatal_device_error(error):  # check_health fails from now on: Ray Serve replaces the replica
                    self.engine.state, self.engine.error = "failed", f"unrecoverable device error: {error}"
                put("error", error)

        threading.Thread(target=work, name="engine-job", daemon=True).start()
        try:
            while True:
                kind, value = await events.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "result":
                    return
        finally:
            cancel.set()  # cancelled, or the front went away: the engine stops after its current step


# ---- the front: EnginePool's interface over a deployment handle -------------------------------------------------


@dataclass
class RemoteEngine:
    """The engine that speaks for the pool in the front (preset, model, plan), as a replica described it. It has no
    pipeline here: the live token count under the prompt is off on the cluster front."""

    described: dict[str, Any]
    pipe: Any = None
    events: list = field(default_factory=list)

    @property
    def preset(self) -> config.Preset:
        return self.described["preset"]

    @property
    def source(self):
        return _Named(self.described["name"], self.described["notice"])

    @property
    def plan(self):
        return _Label(self.described["label"])

    @property
    def caps(self):
        return _Target(f"ray:{self.described['target']}")

    state = "ready"
    ready = True
    error = None

    def info(self) -> dict[str, Any]:
        return dict(self.described["info"], device=f"Ray Serve replicas ({self.described['device_name']})")


@dataclass(frozen=True)
class _Named:
    name: str
    notice: str | None


@dataclass(frozen=True)
class _Label:
    text: str

    def label(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Target:
    target: str


class RayPool:
    """pool.EnginePool's interface (run, engine, info, ready, size, first, running, state) over the Engine deployment's
    handle: the replicas are the engines, Ray's router picks a free one for each job."""

    def __init__(self, handle, replicas: int, app_name: str = APP_NAME, deployment: str = ENGINE,
                 start_timeout_s: float = 600.0):
        self.handle = handle
        self.replicas = max(1, int(replicas))  # the most that run at once: the queue's concurrency
        self.app_name, self.deployment = app_name, deployment
        self.start_timeout_s = start_timeout_s
        self._speaker: RemoteEngine | None = None
        self._running = 0
        self._lock = threading.Lock()
        self._status: tuple[float, dict[str, int]] = (0.0, {})

    def start(self) -> RayPool:
        """Wait for one replica to answer (serve.run has warmed them) and keep its description."""
        try:
            self._speaker = RemoteEngine(self.handle.describe.remote().result(timeout_s=self.start_timeout_s))
        except Exception as error:
            raise SetupError(f"No engine replica answered: {error}") from error
        return self

    def devices(self) -> list[str]:
        return [f"ray:{self.deployment}"] * self.replicas

    @property
    def engines(self) -> list[RemoteEngine]:
        return [self._speaker] if self._speaker is not None else []

    @property
    def first(self) -> RemoteEngine | None:
        return self._speaker

    def _replica_states(self) -> dict[str, int]:
        """Replicas by state (RUNNING, STARTING, ...) from serve.status(), read at most once a second."""
        at, states = self._status
        if time.monotonic() - at > 1.0:
            try:
                from ray import serve

                app = serve.status().applications.get(self.app_name)
                dep = app.deployments.get(self.deployment) if app is not None else None
                states = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states if dep else {}).items()}
            except Exception as error:  # the controller is unreachable: say so, serve on what the handle does
                log.warning("serve.status() failed: %s", error)
                states = {"UNKNOWN": self.replicas}
            self._status = (time.monotonic(), states)
        return states

    @property
    def ready(self) -> bool:
        states = self._replica_states()
        return self._speaker is not None and states.get("RUNNING", 0) + states.get("UNKNOWN", 0) > 0

    @property
    def state(self) -> str:
        return "ready" if self.ready else ("loading" if self._speaker is None else "failed")

    @property
    def size(self) -> int:
        return max(1, self._replica_states().get("RUNNING", 0))

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def info(self) -> list[dict[str, Any]]:
        """One entry per replica, by state (Ray Serve's replica states); the first `running` are busy."""
        label = self._speaker.plan.label() if self._speaker is not None else None
        name = self._speaker.described["device_name"] if self._speaker is not None else None
        out, busy = [], self.running
        for state, count in sorted(self._replica_states().items()):
            for _ in range(count):
                out.append({"device": f"ray:{self.deployment}", "name": name,
                            "state": "ready" if state == "RUNNING" else state.lower(), "busy": busy > 0,
                            "precision": label, "events": [], "error": None})
                busy -= state == "RUNNING"
        return out

    def engine(self):
        raise SetupError(NOT_ON_CLUSTER)

    def run(self, job: Job) -> GenerationResult:
        """The job on a free replica: progress and previews as they stream back; job.cancel cancels the call."""
        ray = require_ray()
        with self._lock:
            self._running += 1
        response = self.handle.options(stream=True).generate.remote(job.request, job.num_images,
                                                                    job.preview is not None)
        done = threading.Event()

        def watch() -> None:  # Stop, or the visitor left: cancel the Ray call (while queued, too)
            while not done.wait(0.05):
                if job.cancel.is_set():
                    response.cancel()
                    return

        threading.Thread(target=watch, name="ray-cancel", daemon=True).start()
        try:
            for kind, value in response:
                if kind == "progress" and job.progress is not None:
                    job.progress(*value)
                elif kind == "preview" and job.preview is not None:
                    job.preview(value)
                elif kind == "result":
                    return value
                if job.cancel.is_set():
                    response.cancel()
                    raise Cancelled("cancelled")
            raise SetupError(REPLICA_LOST)  # the stream ended without a result
        except (Cancelled, UserError):
            raise
        except ray.exceptions.TaskCancelledError as error:
            raise Cancelled("cancelled") from error
        except ray.exceptions.RayTaskError as error:  # the engine's own error, raised in the replica
            raise _unwrapped(error) from None
        except Exception as error:  # the replica died, or Ray lost it (ActorDiedError, ActorUnavailableError, ...)
            if job.cancel.is_set():
                raise Cancelled("cancelled") from error
            log.error("a job's replica was lost: %s: %s", type(error).__name__, error)
            raise SetupError(REPLICA_LOST) from error
        finally:
            done.set()
            with self._lock:
                self._running -= 1


def _unwrapped(error) -> Exception:
    """The engine's exception without Ray's wrapping: a UserError's message as it was, Cancelled as itself, a device
    error as the visitor's message; anything else stays Ray's error (a server error, logged)."""
    from .hardware import is_fatal_device_error

    cause = getattr(error, "cause", None)
    if isinstance(cause, Cancelled):
        return Cancelled(str(cause))
    if isinstance(cause, UserError):
        return type(cause)(str(cause))
    if cause is not None and is_fatal_device_error(cause):
        return SetupError(DEVICE_LOST)
    return error


# ---- the application --------------------------------------------------------------------------------------------


class Front:
    """The Ray Serve deployment that serves the face's page with a DemoService over the Engine deployment."""

    def __init__(self, serve_args: list[str], engine_handle, replicas: int):
        from ray import serve

        from . import serve as serving
        from .web.server import launch
        from .web.service import DemoService

        logging.getLogger().setLevel(logging.INFO)
        args = serving.parse_args(serve_args)
        app_cfg = serving.app_config(args)
        face = serving.face_for(app_cfg)
        app_name = serve.get_replica_context().app_name  # `serve run` names it "default" unless told otherwise
        self.service = DemoService(app_cfg, pool=RayPool(engine_handle, replicas, app_name)).start(background=True)
        config.use_gradio_cache(app_cfg.storage.gradio_cache)
        self.demo = face.build(self.service)
        launch(self.demo, face, self.service, app_cfg, block=False)

    def status(self) -> dict:
        return self.service.status()


def options(args: dict[str, Any]) -> argparse.Namespace:
    """The application's options from `serve run fp8demo.cluster:build key=value ...` (or a config file's args)."""
    p = argparse.ArgumentParser(prog="fp8demo.cluster:build")
    p.add_argument("--replicas", type=int, default=2, help="engine replicas (fixed; default: %(default)s)")
    p.add_argument("--min-replicas", type=int, default=None, help="autoscale from this many replicas ...")
    p.add_argument("--max-replicas", type=int, default=None, help="... to this many")
    p.add_argument("--gpus", type=float, default=None,
                   help="GPUs per replica; 0: --cpus instead (default: 1, or 0 when Ray is already connected to a "
                        "cluster without GPUs)")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica on a CPU (default: %(default)s)")
    p.add_argument("--serve", default="", help="the usual server flags for the front and the engines, in one string "
                                               "(e.g. \"--kiosk --port 7860 --model tiny\")")
    argv = []
    for key, value in args.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return p.parse_args(argv)


def engine_deployment(engine_cfg: config.EngineConfig, replicas: int = 2, min_replicas: int | None = None,
                      max_replicas: int | None = None, gpus: float = 0.0, cpus: float = 1.0,
                      step_delay_s: float = 0.0):
    """The Engine deployment, bound: its handle is what RayPool calls."""
    require_ray()
    from ray import serve

    actor = {"num_gpus": gpus} if gpus else {"num_cpus": cpus}
    if min_replicas is not None or max_replicas is not None:
        low = min_replicas if min_replicas is not None else 1
        scaling = {"num_replicas": "auto", "autoscaling_config": {
            "min_replicas": low, "max_replicas": max_replicas if max_replicas is not None else max(low, replicas),
            "target_ongoing_requests": 1}}
    else:
        scaling = {"num_replicas": replicas}
    return serve.deployment(EngineReplica, name=ENGINE, ray_actor_options=actor, max_ongoing_requests=1,
                            health_check_period_s=10, **scaling).bind(engine_cfg, step_delay_s)


def build(args: dict[str, Any]):
    """The application: the Engine deployment and the Front over it (`serve run fp8demo.cluster:build ...`)."""
    ray = require_ray()
    from ray import serve

    from . import serve as serving

    opts = options(args)
    serve_args = shlex.split(opts.serve)
    engine_cfg = serving.app_config(serving.parse_args(serve_args)).engine  # a bad flag fails here, not in a replica
    gpus = opts.gpus
    if gpus is None:  # `serve run` calls the builder before it connects to Ray: a GPU each unless Ray says none
        gpus = 0.0 if ray.is_initialized() and not ray.cluster_resources().get("GPU", 0) else 1.0
    engines = engine_deployment(engine_cfg, opts.replicas, opts.min_replicas, opts.max_replicas, gpus, opts.cpus)
    most = opts.max_replicas if opts.max_replicas is not None else opts.replicas
    front = serve.deployment(Front, name=FRONT, num_replicas=1, ray_actor_options={"num_cpus": 0.5})
    return front.bind(serve_args, engines, most)


def __getattr__(name: str):
    """`fp8demo.cluster:app`, the application with default options, built when Ray Serve asks for it."""
    if name == "app":
        return build({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
