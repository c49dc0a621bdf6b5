"""The demo's server-side state: the engine warming up in the background, per-session cancel, saved PNGs.

The UI modules call this and nothing below it, so every web face (Generate, Compare, kiosk, API) shares one engine
and one set of rules, and none of them imports torch.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

from . import config
from .errors import InvalidRequest, SetupError
from .request import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

_SIZE = re.compile(r"(\d+)\s*[x×]\s*(\d+)\s*$")
KEEP_FILES = 200  # PNGs kept for download; older ones are deleted


def gpu_task(fn, duration: int = 120):
    """ZeroGPU (Hugging Face Spaces) allocates a GPU per call to functions wrapped in spaces.GPU; a no-op elsewhere."""
    try:
        import spaces  # noqa: F401  (only present on Spaces)
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def thumbnail_path(png: Path) -> Path:
    return png.with_name(png.stem + ".thumb.jpg")


def parse_size(label: str) -> tuple[int, int]:
    """'16:9 · 1344x768' or '1344x768' -> (1344, 768). Range and multiple-of-16 checks come later, in validate()."""
    match = _SIZE.search(str(label or ""))
    if not match:
        raise InvalidRequest(f"Unknown size {label!r}: pick an aspect ratio or write WIDTHxHEIGHT, e.g. 1024x1024.")
    return int(match.group(1)), int(match.group(2))


class DemoService:
    def __init__(self, app_cfg: config.AppConfig, caps=None, on_fatal=None):
        self.cfg = app_cfg
        # called after an unrecoverable device error; by default the process exits so that systemd restarts it
        self.on_fatal = on_fatal or _exit_soon
        self.caps = caps
        self.engine = None
        self.comparer = None
        self.state = "starting"  # starting -> ready | failed
        self.error: str | None = None
        self.started_at = time.time()
        self.output_dir = Path(tempfile.mkdtemp(prefix="fp8demo-out-"))
        self._cancels: dict[str, threading.Event] = {}
        self._pending: set[Path] = set()  # PNGs the background writer has not finished
        self._thread: threading.Thread | None = None
        self._generate = gpu_task(self._generate_now)
        self._compare = gpu_task(self._compare_now)

    # ---- start-up ---------------------------------------------------------------------------------------------

    @classmethod
    def from_engine(cls, engine, app_cfg: config.AppConfig | None = None) -> DemoService:
        """Wrap an engine that is already warm (tests, benchmarks)."""
        from .compare import Comparer

        service = cls(app_cfg or config.AppConfig(engine=engine.cfg), engine.caps)
        service.engine, service.comparer = engine, Comparer(engine)
        service.state = "ready" if engine.ready else engine.state
        return service

    def start(self, background: bool = True) -> DemoService:
        if background:
            self._thread = threading.Thread(target=self._start, name="engine-warmup", daemon=True)
            self._thread.start()
        else:
            self._start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    def _start(self) -> None:
        from .compare import Comparer
        from .engine import Engine

        try:
            engine = Engine(self.cfg.engine, self.caps)
            self.engine = engine
            engine.start()
            self.comparer = Comparer(engine)
            self.state = "ready"
            log.info("ready: %s, %s", engine.source.name, engine.plan.label())
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
        return {
            "ready": self.ready,
            "state": self.state if self.state != "starting" else (info.get("state") or "starting"),
            "model": info.get("model"),
            "precision": info.get("precision"),
            "device": info.get("device"),
            "random_weights": info.get("random_weights"),
            "notice": engine.source.notice if engine is not None else None,
            "error": self.error,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def require_ready(self) -> None:
        if self.state == "failed":
            raise SetupError(f"The model could not be started: {self.error}")
        if not self.ready:
            raise SetupError("The model is still warming up; try again in a few seconds.")

    # ---- work -------------------------------------------------------------------------------------------------

    @property
    def preset(self) -> config.Preset:
        if self.engine is not None:
            return self.engine.preset
        from .hardware import detect
        from .weights.sources import resolve_model

        return resolve_model(self.cfg.engine.model, self.caps or detect()).preset

    def token_status(self, prompt: str) -> str:
        if not prompt or self.engine is None or self.engine.pipe is None:
            return ""
        info = self.engine.token_info(prompt)
        count = f"{info.clip_tokens} / {config.CLIP_MAX_TOKENS} CLIP tokens"
        if info.t5_tokens is not None:
            count += f" · {info.t5_tokens} / {config.T5_MAX_TOKENS} T5 tokens"
        warning = info.warning()
        return f"⚠️ {count}. {warning}" if warning else count

    def generate(self, request: GenerationRequest, session: str = "", progress=None) -> GenerationResult:
        self.require_ready()
        return self._generate(request, session, progress)

    def _generate_now(self, request, session, progress):
        cancel = self._cancel_event(session)
        try:
            return self.engine.generate(request, progress=progress, cancel=cancel)
        except Exception as error:
            self._check_fatal(error)
            raise
        finally:
            self._cancels.pop(session, None)

    def _check_fatal(self, error: Exception) -> None:
        from .hardware import is_fatal_device_error

        if is_fatal_device_error(error):
            self.state = "failed"
            self.error = f"unrecoverable device error: {error}"
            log.critical("%s; marking not ready and exiting so that the service manager restarts us", self.error)
            self.on_fatal(self)
            raise SetupError("The picture machine needs a restart; it will be back in a minute.") from error

    def compare(self, request: GenerationRequest, baseline: str = "bf16", session: str = "", progress=None):
        self.require_ready()
        return self._compare(request, baseline, session, progress)

    def _compare_now(self, request, baseline, session, progress):
        cancel = self._cancel_event(session)
        try:
            return self.comparer.compare(request, baseline, progress=progress, cancel=cancel)
        except Exception as error:
            self._check_fatal(error)
            raise
        finally:
            self._cancels.pop(session, None)

    def _cancel_event(self, session: str) -> threading.Event:
        event = threading.Event()
        self._cancels[session] = event
        return event

    def cancel(self, session: str) -> bool:
        """Stop the session's running job at the next step. True when there was one."""
        event = self._cancels.get(session)
        if event is None:
            return False
        event.set()
        return True

    def save_png(self, result: GenerationResult, thumbnail: bool = False) -> Path:
        """The PNG (with its parameters) for download, written in the background: PNG encoding of a megapixel
        image takes ~0.3 s on a small CPU and the visitor should not wait for it. Returns the final path at once;
        `wait_for_file` (used by /take/<name>) waits for the write to finish. With `thumbnail`, a small JPEG
        (`thumbnail_path(png)`) is written first, for the session gallery."""
        r = result.request
        path = self.output_dir / f"fp8demo-{r.seed}-{uuid.uuid4().hex[:8]}.png"
        self._pending.add(path)
        if thumbnail:
            self._pending.add(thumbnail_path(path))
        threading.Thread(target=self._write_png, args=(result, path, thumbnail), name="png-writer",
                         daemon=True).start()
        return path

    def _write_png(self, result: GenerationResult, path: Path, thumbnail: bool) -> None:
        from .imageio import png_bytes

        try:
            # after the response: the web server's own work on this request comes first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        try:
            if thumbnail:
                thumb = result.image.copy()
                thumb.thumbnail((256, 256))
                thumb.save(thumbnail_path(path), format="JPEG", quality=85)
                self._pending.discard(thumbnail_path(path))
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(png_bytes(result))
            os.replace(tmp, path)  # appears whole or not at all
            self._pending.discard(path)
            files = sorted(self.output_dir.glob("*.png"), key=lambda p: p.stat().st_mtime)
            for old in files[:-KEEP_FILES]:
                old.unlink(missing_ok=True)
        except OSError:
            log.exception("could not write %s", path)
        finally:
            self._pending.discard(path)
            self._pending.discard(thumbnail_path(path))

    def wait_for_file(self, path: Path, timeout: float = 10.0) -> bool:
        """True once `path` exists; waits only while the background writer is still on it."""
        deadline = time.monotonic() + timeout
        while path in self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        return path.is_file()


def _exit_soon(service: DemoService, delay: float = 2.0, code: int = 70) -> None:
    """Exit after `delay` s (time for /health/ready to answer 503 and the visitor's message to go out)."""
    timer = threading.Timer(delay, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
