"""A pool of warm engines, one per device: a job goes to the first free engine.

`--devices cuda:0,cuda:1` (or `all`) loads one engine per GPU, each with the run plan of its own card (cards may
differ); on a CPU, `--devices cpu,cpu` runs two engines side by side, which is how the tests show two jobs running
at once. Engines start one after another: loading is not thread-safe (two tiny engines loading at once in two
threads failed in torchao's Float8Tensor construction, measured here). An engine that fails to start, or dies of a
device error while serving, is left out (its state and error stay in `info()`) while the others serve.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from . import config
from .engine import Engine
from .errors import SetupError
from .hardware import Capabilities, is_fatal_device_error
from .request import GenerationResult, Job

log = logging.getLogger(__name__)


class EnginePool:
    def __init__(self, engines: list[Engine]):
        if not engines:
            raise SetupError("--devices names no device.")
        self.engines = engines
        self._busy: set[int] = set()  # indices of the engines running a job
        self._free = threading.Condition()

    @classmethod
    def for_devices(cls, cfg: config.EngineConfig, devices: list[Capabilities]) -> EnginePool:
        """One engine (not started) per device, each deciding the run plan of its own card."""
        return cls([Engine(cfg, caps) for caps in devices])

    @property
    def first(self) -> Engine:
        """The engine that speaks for the pool (preset, tokenizers, the model's name): the first that serves, else
        the first."""
        return next((e for e in self.engines if e.ready), self.engines[0])

    @property
    def ready(self) -> bool:
        return any(e.ready for e in self.engines)

    @property
    def state(self) -> str:
        """"ready" when any engine serves; else the first engine's state (loading, warming, failed)."""
        return "ready" if self.ready else self.engines[0].state

    @property
    def size(self) -> int:
        """How many jobs can run at once: the engines that serve (at least one, for the queue's concurrency)."""
        return max(1, sum(e.ready for e in self.engines))

    def start(self) -> EnginePool:
        """Load and warm every engine, one after another; raises only when none of them could start."""
        for engine in self.engines:
            try:
                engine.start()
            except Exception:  # kept on the engine (state "failed", error) and reported by info()
                log.exception("engine on %s failed to start", engine.caps.target)
        if not self.ready:
            raise SetupError(f"No engine could start: {self.engines[0].error}")
        return self

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        """The first free engine that serves, for one job (or one comparison); waits while all are busy."""
        with self._free:
            while True:
                free = [i for i, e in enumerate(self.engines) if e.ready and i not in self._busy]
                if free:
                    break
                if not self.ready:
                    raise SetupError(f"No engine is available: {self.engines[0].error or self.state}.")
                self._free.wait()
            index = free[0]
            self._busy.add(index)
        engine = self.engines[index]
        try:
            yield engine
        except Exception as error:
            if is_fatal_device_error(error):  # the device is unusable until the process restarts: no more jobs
                engine.state, engine.error = "failed", f"unrecoverable device error: {error}"
                log.critical("engine on %s: %s; taken out of the pool", engine.caps.target, engine.error)
            raise
        finally:
            with self._free:
                self._busy.discard(index)
                self._free.notify_all()

    def run(self, job: Job) -> GenerationResult:
        with self.engine() as engine:
            return engine.run(job)

    @property
    def running(self) -> int:
        """Jobs running now."""
        with self._free:
            return len(self._busy)

    def info(self) -> list[dict[str, Any]]:
        """Each engine: its device, state, plan in a few words, events and error."""
        with self._free:
            busy = set(self._busy)
        return [{"device": e.caps.target, "name": e.caps.name, "state": e.state, "busy": i in busy,
                 "precision": e.plan.label(), "events": [ev.as_dict() for ev in e.events], "error": e.error}
                for i, e in enumerate(self.engines)]
