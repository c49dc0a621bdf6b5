"""A pool of engines, one per device: `--devices cpu,cpu` runs two jobs at once on this CPU."""

import threading
import time
from dataclasses import replace

import pytest
from conftest import CPU

from fp8demo import hardware
from fp8demo.errors import SetupError
from fp8demo.faces.kiosk.rules import place_text
from fp8demo.pool import EnginePool
from fp8demo.request import GenerationRequest, Job


def test_devices_flag_names_the_engines():
    assert [c.target for c in hardware.detect_all("cpu,cpu")] == ["cpu", "cpu"]
    assert [c.device for c in hardware.detect_all("all")] == ["cpu"]  # no CUDA here: the one best device
    assert [c.device for c in hardware.detect_all(None)] == ["cpu"]
    for bad, message in (("cuda:3", "there is no cuda:3"), ("tpu", "unknown device"), ("mps", "no MPS")):
        with pytest.raises(SetupError, match=message):
            hardware.detect_all(bad)


@pytest.fixture(scope="module")
def pool(tiny_config):
    return EnginePool.for_devices(replace(tiny_config, warmup_runs=0), [CPU, CPU]).start()


def _slow_job(seen: list, step_s: float = 0.3) -> Job:
    def progress(i, n):
        seen.append(time.monotonic())
        time.sleep(step_s)

    return Job(GenerationRequest("a red fox", seed=1, steps=4, width=256, height=256), progress=progress)


def test_two_jobs_run_at_once_on_two_engines(pool):
    assert pool.ready and pool.size == 2 and [e["state"] for e in pool.info()] == ["ready", "ready"]
    results, running = [], []
    threads = [threading.Thread(target=lambda: results.append(pool.run(_slow_job([])))) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        running.append(pool.running)
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert len(results) == 2 and max(running) == 2  # both engines were busy at the same moment
    assert pool.running == 0


def test_a_third_job_waits_for_a_free_engine(pool):
    order = []

    def job(name):
        pool.run(_slow_job([]))
        order.append((name, time.monotonic()))

    threads = [threading.Thread(target=job, args=(n,)) for n in ("a", "b", "c")]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(120)
    assert len(order) == 3 and pool.running == 0  # the third ran once one of the first two was done


def test_an_engine_that_fails_to_start_is_left_out(tiny_config, monkeypatch):
    from fp8demo.engine import Engine

    started = Engine.start

    def start(engine):
        if engine is pool.engines[1]:
            raise RuntimeError("device lost")
        return started(engine)

    monkeypatch.setattr(Engine, "start", start)
    pool = EnginePool.for_devices(replace(tiny_config, warmup_runs=0), [CPU, CPU])
    pool.start()
    states = [e["state"] for e in pool.info()]
    assert states[0] == "ready" and pool.size == 1 and pool.ready
    assert pool.run(Job(GenerationRequest("a cat", seed=2, steps=1, width=256, height=256))).image.size == (256, 256)


def test_a_device_that_dies_takes_its_engine_out(pool, monkeypatch):
    """An unrecoverable device error fails that job and that engine; the other engine serves the next job."""
    broken = pool.engines[0]
    monkeypatch.setattr(broken, "run", lambda job: (_ for _ in ()).throw(RuntimeError("CUDA error: an illegal "
                                                                                        "memory access")))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        pool.run(Job(GenerationRequest("a cat", seed=3, steps=1, width=256, height=256)))
    assert broken.state == "failed" and pool.size == 1 and pool.ready
    assert pool.run(Job(GenerationRequest("a cat", seed=3, steps=1, width=256, height=256))).image
    broken.state, broken.error = "ready", None  # the module's pool serves the tests after this one as before

def test_no_engine_at_all_is_an_error(tiny_config, monkeypatch):
    from fp8demo.engine import Engine

    def start(engine):
        engine.state, engine.error = "failed", "RuntimeError: device lost"
        raise RuntimeError("device lost")

    monkeypatch.setattr(Engine, "start", start)
    with pytest.raises(SetupError, match="No engine could start: RuntimeError: device lost"):
        EnginePool.for_devices(replace(tiny_config, warmup_runs=0), [CPU, CPU]).start()


def test_the_app_on_two_devices_runs_two_jobs_at_once(tiny_config, monkeypatch):
    """`--devices cpu,cpu`: the queue lets two jobs through, /metrics shows both running, /health/ready lists both
    engines."""
    import httpx
    from conftest import serve
    from gradio_client import Client

    from fp8demo import config
    from fp8demo.web.service import DemoService

    service = DemoService(config.AppConfig(engine=replace(tiny_config, warmup_runs=0), devices="cpu,cpu"))
    service.start(background=False)
    for engine in service.pool.engines:  # slow steps, so that the two jobs overlap for seconds
        def slow(job, real=engine.run):
            def step(i, n, progress=job.progress):
                time.sleep(0.4)
                if progress is not None:
                    progress(i, n)
            return real(replace(job, progress=step))

        monkeypatch.setattr(engine, "run", slow)
    demo, url = serve(service)
    try:
        ready = httpx.get(url + "health/ready", timeout=30).json()
        assert [e["device"] for e in ready["engines"]] == ["cpu", "cpu"]
        calls = [threading.Thread(target=lambda: Client(url, verbose=False).predict(
            prompt="a fox", steps=4, aspect_ratio="256x256", api_name="/generate")) for _ in range(2)]
        for call in calls:
            call.start()
        running = []
        while any(c.is_alive() for c in calls):
            text = httpx.get(url + "metrics", timeout=30).text
            running += [float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("fp8demo_jobs_running ")]
            time.sleep(0.1)
        assert max(running) == 2
    finally:
        demo.close()


def test_the_kiosk_line_lets_as_many_visitors_through_as_there_are_engines(pool):
    """Two engines: two visitors at two screens make their pictures at once; a third waits, told one is ahead."""
    from fp8demo import config
    from fp8demo.faces.kiosk.service import KioskService
    from fp8demo.web.service import DemoService

    service = DemoService.from_engine(pool.first)
    service.pool = pool
    kiosk = KioskService(service, config.KioskConfig(cooldown=0, steps=4, width=256, height=256))
    first_lines, running = {}, []

    def visitor(client):
        for item in kiosk.create("a lighthouse", client, progress=lambda i, n: time.sleep(0.3)):
            first_lines.setdefault(client, item)

    threads = [threading.Thread(target=visitor, args=(f"10.0.0.{i}",)) for i in (1, 2, 3)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    while any(t.is_alive() for t in threads):
        running.append(pool.running)
        time.sleep(0.05)
    assert max(running) == 2  # never more than the engines, and both of them at once
    assert first_lines["10.0.0.1"] == first_lines["10.0.0.2"] == place_text(0)
    assert first_lines["10.0.0.3"] == place_text(1)  # the third is next, not two behind
