"""Operator metrics in Prometheus's text format (prometheus_client), served at GET /metrics.

Counters and the histogram move as events happen (the service counts pictures, refusals, errors and seconds); the
gauges are read from the service when Prometheus scrapes (jobs running, queue length, engines by state, device
memory), so they are never stale. One registry per app, so that several apps in one process (tests) do not mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Generation times from a tenth of a second (a warm GPU) to minutes (a CPU, offload).
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class Readings:
    """What the gauges read at each scrape."""

    jobs_running: Callable[[], int]
    queue_length: Callable[[], int]
    engines: Callable[[], Iterable[dict]]  # pool.info(): each engine's "device" and "state"
    device_memory: Callable[[str], int | None]  # bytes in use on a device, None where not measured


class Metrics:
    def __init__(self, readings: Readings):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.images = Counter("fp8demo_images", "Pictures made and shown", ["face"], registry=self.registry)
        self.refusals = Counter("fp8demo_refusals", "Requests refused before running (busy, cooldown, "
                                "moderation, a bad value, ...)", ["reason"], registry=self.registry)
        self.errors = Counter("fp8demo_errors", "Jobs that failed (out of memory, device, server)", ["kind"],
                              registry=self.registry)
        self.generation_seconds = Histogram("fp8demo_generation_seconds", "Seconds from a job's start to its "
                                            "pictures, per face", ["face"], buckets=SECONDS_BUCKETS,
                                            registry=self.registry)
        self.registry.register(_Gauges(readings))

    def text(self) -> tuple[bytes, str]:
        """(the exposition, its content type) for the /metrics route."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Gauges:
    """A prometheus_client collector: the gauges, read from the service at each scrape."""

    def __init__(self, readings: Readings):
        self.readings = readings

    def describe(self):
        return []  # collected only on scrape: the registry must not call the readings when it registers us

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        r = self.readings
        yield GaugeMetricFamily("fp8demo_jobs_running", "Jobs running on the engines now", value=r.jobs_running())
        yield GaugeMetricFamily("fp8demo_queue_length", "Jobs waiting for an engine", value=r.queue_length())
        engines = list(r.engines())
        by_state = GaugeMetricFamily("fp8demo_engines", "Engines by state", labels=["state"])
        for state in ("loading", "warming", "ready", "failed"):
            by_state.add_metric([state], sum(e["state"] == state for e in engines))
        yield by_state
        memory = GaugeMetricFamily("fp8demo_device_memory_bytes", "Device memory in use per engine",
                                   labels=["device"])
        for engine in engines:
            used = r.device_memory(engine["device"])
            if used is not None:
                memory.add_metric([engine["device"]], used)
        yield memory
