"""Load: 64 clients at distinct loopback addresses (127.0.0.2-127.0.0.65) against two engines (`--devices cpu,cpu`),
each firing 3 pictures at once through /call/generate (its bound is 2). Every request ends with a picture or a clear
"busy", none waits forever, no client ever has more than its bound in the queue, the queue never more than its
bound, and /health/live answers within a second throughout. The figures are in docs/reliability.md."""

import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from conftest import serve

from fp8demo import config
from fp8demo.web.access import queued_jobs
from fp8demo.web.service import DemoService

CLIENTS, PER_CLIENT, BOUND, QUEUE = 64, 3, 2, 16
VALUES = ["a cat", "", 0, True, 1, 0.0, "256x256", 1]
DEADLINE = 300  # seconds: a request still waiting then is one that waits forever


def one(url: str, address: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=DEADLINE) as c:
        response = c.post(url + "gradio_api/call/generate", json={"data": VALUES})
        if response.status_code == 422:
            assert "Busy: you already have" in str(response.json()["detail"])
            return "busy (client bound)", time.perf_counter() - t0
        if response.status_code == 503:
            assert "already waiting for the GPU" in response.json()["detail"]
            return "busy (queue full)", time.perf_counter() - t0
        assert response.status_code == 200, response.text
        event = response.json()["event_id"]
        with c.stream("GET", url + f"gradio_api/call/generate/{event}") as s:
            text = "".join(s.iter_text())
        outcome = "image" if "event: complete" in text else "error: " + text[-200:]
        return outcome, time.perf_counter() - t0


def clients(url: str, addresses: list[str]) -> list[tuple[str, float]]:
    """Every request at once, from a process of its own (192 client threads beside the server would measure the
    test's own contention for the interpreter, not the server)."""
    with ThreadPoolExecutor(len(addresses)) as pool:
        return list(pool.map(lambda a: one(url, a), addresses, timeout=DEADLINE + 60))


@pytest.mark.slow
def test_64_clients_from_64_addresses(tiny_config):
    service = DemoService(config.AppConfig(engine=replace(tiny_config, warmup_runs=0), devices="cpu,cpu"))
    service.start(background=False)
    demo, url = serve(service, max_queue=QUEUE, limits=replace(config.Limits(), jobs_per_client=BOUND))
    count = queued_jobs(demo)
    addresses = [f"127.0.0.{i}" for i in range(2, 2 + CLIENTS)]
    peak_jobs, peak_queue, health = [0], [0], []
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak_jobs[0] = max(peak_jobs[0], *(count(a) for a in addresses))
            peak_queue[0] = max(peak_queue[0], len(demo._queue))
            time.sleep(0.01)

    def live():
        with httpx.Client(timeout=30) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                assert c.get(url + "health/live").status_code == 200
                health.append(time.perf_counter() - t0)
                time.sleep(0.1)

    watchers = [threading.Thread(target=watch), threading.Thread(target=live)]
    for w in watchers:
        w.start()
    t0 = time.perf_counter()
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
            results = process.submit(clients, url, [a for a in addresses for _ in range(PER_CLIENT)]).result()
    finally:
        done.set()
        for w in watchers:
            w.join()
        wall = time.perf_counter() - t0
        demo.close()
    outcomes = {kind: sum(1 for k, _ in results if k == kind) for kind in {k for k, _ in results}}
    images = [s for k, s in results if k == "image"]
    p95 = statistics.quantiles(health, n=20)[-1]
    print(f"\nload: {CLIENTS} clients x {PER_CLIENT} requests in {wall:.1f} s on 2 engines (cpu,cpu): {outcomes}; "
          f"image latency median {statistics.median(images):.2f} s, max {max(images):.2f} s; "
          f"peak jobs of one client {peak_jobs[0]} (bound {BOUND}); peak queue {peak_queue[0]} (bound {QUEUE}); "
          f"/health/live p50 {statistics.median(health) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"max {max(health) * 1000:.0f} ms over {len(health)} probes")
    assert set(outcomes) <= {"image", "busy (client bound)", "busy (queue full)"}, outcomes
    assert outcomes.get("image", 0) >= 2
    assert peak_jobs[0] <= BOUND and peak_queue[0] <= QUEUE
    assert p95 < 1.0
