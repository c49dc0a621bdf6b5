"""Soak and load: `python app.py --model tiny` in its own process on 127.0.0.1, so that its memory
is measured alone. Minutes long on 2 cores: marked slow (`pytest -m slow`); the figures go to
docs/reliability.md. Each test prints one summary line."""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from gradio_raw import fn_index, join

from fp8demo.web.retention import GRADIO_ENTRY

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
SMALL = dict(steps=1, aspect_ratio="256x256")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def disk_mib(*folders: Path) -> float:
    return sum(p.stat().st_size for f in folders if f.exists() for p in f.rglob("*") if p.is_file()) / 2**20


class App:
    """app.py in a subprocess with its own outputs and Gradio cache; stopped on exit."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.port, self.outputs, self.cache = free_port(), tmp / "outputs", tmp / "gradio"
        self.url = f"http://127.0.0.1:{self.port}/"
        full_env = dict(os.environ, GRADIO_TEMP_DIR=str(self.cache), GRADIO_ANALYTICS_ENABLED="False", **env)
        self.log = open(tmp / "app.log", "w")  # noqa: SIM115  (closed in __exit__)
        self.proc = subprocess.Popen([sys.executable, "app.py", "--model", "tiny", "--port", str(self.port),
                                      "--outputs", str(self.outputs)], cwd=ROOT, env=full_env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the app exited"
            try:
                if httpx.get(self.url + "health/ready", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError("the app did not become ready")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def report(capsys, name: str, figures: dict) -> None:
    with capsys.disabled():
        print(f"\n{name}: {json.dumps(figures)}")


def test_soak_500_generations_keep_disk_and_memory_bounded(cache_dir, tmp_path, capsys):
    from gradio_client import Client

    env = {"FP8DEMO_KEEP_PNGS": "100", "FP8DEMO_CACHE_FILES": "50", "FP8DEMO_PRUNE_EVERY": "5"}
    with App(tmp_path, env) as app:
        client = Client(app.url, verbose=False)
        t0 = time.monotonic()
        for i in range(20):  # warm: first-use allocations are not growth
            client.predict(prompt=f"soak {i}", **SMALL, api_name="/generate")
        rss_start = rss_mib(app.proc.pid)
        peak_disk = 0.0
        for i in range(20, 500):
            images, seed, _, _ = client.predict(prompt=f"soak {i % 97}", **SMALL, api_name="/generate")
            assert len(images) == 1 and seed >= 0
            if i % 50 == 0:
                peak_disk = max(peak_disk, disk_mib(app.outputs, app.cache))
        elapsed = time.monotonic() - t0
        rss_end = rss_mib(app.proc.pid)
        time.sleep(6)  # one more janitor round
        pngs = len(list(app.outputs.glob("fp8demo-*.png")))
        cached = len([p for p in app.cache.iterdir() if GRADIO_ENTRY.fullmatch(p.name)])  # not Gradio's own dirs
        disk_end = disk_mib(app.outputs, app.cache)
        figures = {"generations": 500, "seconds": round(elapsed), "rss_start_mib": round(rss_start),
                   "rss_end_mib": round(rss_end), "pngs": pngs, "gradio_cache_entries": cached,
                   "disk_end_mib": round(disk_end, 1), "disk_peak_mib": round(max(peak_disk, disk_end), 1)}
        report(capsys, "soak", figures)
    assert pngs <= 100 and cached <= 50  # the counts the janitor keeps (500 pictures were made)
    assert max(peak_disk, disk_end) < 100  # MiB: ~100 PNGs of 256 px and 50 cache entries, plus a round's growth
    assert rss_end - rss_start < 100  # MiB over 480 generations: no per-request growth


def test_one_client_minting_sessions_cannot_grow_memory_past_the_cap(cache_dir, tmp_path, capsys):
    """Each new session hash costs Gradio ~113 KiB; the capacity (Limits.session_capacity, 800) bounds them."""
    with App(tmp_path, {}) as app:
        bad = '["x", "", 0, true, 0, 0.0, "256x256", 1, null]'  # refused by the validator: no generation
        index = fn_index(app.url, "generate")
        for _ in range(50):
            join(app.url, "generate", raw=bad, index=index)
        rss_start = rss_mib(app.proc.pid)
        t0 = time.monotonic()
        samples = []
        for i in range(3000):
            assert join(app.url, "generate", raw=bad, session=uuid.uuid4().hex, index=index)[0].status_code == 422
            if i % 500 == 499:
                samples.append(round(rss_mib(app.proc.pid) - rss_start))
        figures = {"sessions": 3000, "seconds": round(time.monotonic() - t0), "rss_start_mib": round(rss_start),
                   "rss_growth_mib_every_500": samples}
        report(capsys, "sessions", figures)
    assert max(samples) < 110  # about capacity x 113 KiB (~90 MiB), then flat
    assert samples[-1] - samples[2] < 20  # flat once the cap is reached (800 sessions)


def test_32_concurrent_clients_each_get_an_image_or_a_busy_message(cache_dir, tmp_path, capsys):
    """32 visitors press Run at once. Every client here shares 127.0.0.1, so the per-address bound is lifted to play
    32 machines; the queue's bound (16 waiting) then answers the rest with Gradio's busy message."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    outcomes: list[str] = []
    health: list[float] = []
    with App(tmp_path, {"FP8DEMO_MAX_JOBS_PER_CLIENT": "32"}) as app:
        clients = [Client(app.url, verbose=False) for _ in range(32)]
        start = threading.Barrier(33)
        done = threading.Event()

        def visit(client, i):
            start.wait()
            try:
                images, *_ = client.predict(prompt=f"visitor {i}", **SMALL, api_name="/generate")
                outcomes.append("image" if len(images) == 1 else f"odd: {images!r}")
            except QueueError as error:
                outcomes.append("busy" if "Queue is full" in str(error) else f"other: {error}")
            except Exception as error:  # anything else is a failure of the test
                outcomes.append(f"other: {type(error).__name__}: {error}")

        def probe_health():
            while not done.is_set():
                t = time.monotonic()
                httpx.get(app.url + "health/live", timeout=30)
                health.append(time.monotonic() - t)
                time.sleep(0.1)

        threads = [threading.Thread(target=visit, args=(c, i)) for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        prober = threading.Thread(target=probe_health)
        prober.start()
        t0 = time.monotonic()
        start.wait()
        for thread in threads:
            thread.join(timeout=600)
        elapsed = time.monotonic() - t0
        done.set()
        prober.join(timeout=60)
        after = Client(app.url, verbose=False).predict(prompt="after the rush", **SMALL, api_name="/generate")
    p95 = statistics.quantiles(health, n=20)[-1] if len(health) >= 20 else max(health)
    figures = {"clients": 32, "images": outcomes.count("image"), "busy": outcomes.count("busy"),
               "seconds": round(elapsed, 1), "health_live_p95_s": round(p95, 3)}
    report(capsys, "load", figures)
    assert len(outcomes) == 32 and not [o for o in outcomes if o not in ("image", "busy")], outcomes
    assert outcomes.count("image") >= 17  # the one running and the 16 the queue holds, at least
    assert p95 < 1.0 and len(after[0]) == 1  # the server stayed responsive and serves the next visitor
