"""Beyond one machine, on Ray Serve (fp8demo/cluster.py): a local Ray instance on this CPU, two tiny engine replicas
behind the usual DemoService. Skipped when Ray is not installed (it is the optional extra `cluster`)."""

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fp8demo import config
from fp8demo.errors import Cancelled, SetupError
from fp8demo.request import GenerationRequest

ROOT = Path(__file__).resolve().parents[1]


def test_the_module_imports_and_says_what_to_install_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import fp8demo.cluster as c\n"
            "from fp8demo.errors import SetupError\n"
            "try:\n    c.build({})\nexcept SetupError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "fp8demo[cluster]"' in out.stdout


def test_the_options_of_build():
    from fp8demo.cluster import options

    opts = options({"replicas": 3, "max_replicas": 6, "serve": "--kiosk --model tiny"})
    assert (opts.replicas, opts.min_replicas, opts.max_replicas, opts.serve) == (3, None, 6, "--kiosk --model tiny")


@pytest.fixture(scope="module")
def cluster(tiny_config, cache_dir):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from fp8demo.cluster import RayPool, engine_deployment
    from fp8demo.web.service import DemoService
    from fp8demo.weights.random_models import ensure_tiny

    ensure_tiny(cache_dir)  # built once here, not by two replicas at once
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
                                       "FP8DEMO_CACHE": str(cache_dir)}})
    try:
        serve.start(proxy_location="Disabled")
        cfg = replace(tiny_config, warmup_runs=0)
        # 0.4 s after each step: two jobs overlap for seconds
        handle = serve.run(engine_deployment(cfg, replicas=2, cpus=0.5, step_delay_s=0.4), name="fp8demo-test",
                           route_prefix=None)
        pool = RayPool(handle, replicas=2, app_name="fp8demo-test")
        service = DemoService(config.AppConfig(engine=cfg), pool=pool).start(background=False)
        assert service.ready, service.error
        yield ray, service
    finally:
        serve.shutdown()
        ray.shutdown()


def _request(steps: int) -> GenerationRequest:
    return GenerationRequest("a red fox", seed=1, steps=steps, width=256, height=256)


def _start(service, name: str, steps: int, outcome: dict, seen: dict) -> threading.Thread:
    def run():
        try:
            outcome[name] = service.generate(_request(steps), session=name,
                                             progress=lambda i, n: seen.setdefault(name, []).append(i))
        except Exception as error:
            outcome[name] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_jobs_run_at_once_on_two_replicas(cluster):
    _, service = cluster
    assert service.devices() == ["ray:Engine"] * 2  # the queue lets two jobs through
    assert [e["state"] for e in service.pool.info()] == ["ready", "ready"]
    outcome, seen, running = {}, {}, []
    threads = [_start(service, name, 6, outcome, seen) for name in ("a", "b")]
    t0 = time.monotonic()
    while any(t.is_alive() for t in threads):
        running.append(service.pool.running)
        time.sleep(0.05)
    wall = time.monotonic() - t0
    assert all(r.image.size == (256, 256) for r in outcome.values()), outcome
    assert seen["a"][-1] == seen["b"][-1] == 6  # every step's progress streamed back
    assert max(running) == 2 and wall < 2 * 6 * 0.4  # side by side, not one after the other
    assert service.status()["engines"][0]["precision"]


def test_stop_cancels_the_ray_call(cluster):
    _, service = cluster
    outcome, seen = {}, {}
    thread = _start(service, "c", 40, outcome, seen)
    _wait(lambda: seen.get("c"))
    t0 = time.monotonic()
    assert service.cancel("c")
    thread.join(30)
    assert isinstance(outcome["c"], Cancelled) and time.monotonic() - t0 < 5
    # the replica's engine stopped too: two short jobs at once find both replicas free
    t0 = time.monotonic()
    threads = [_start(service, name, 2, outcome, seen) for name in ("c1", "c2")]
    for thread in threads:
        thread.join(30)
    assert outcome["c1"].image and outcome["c2"].image and time.monotonic() - t0 < 5


def test_a_replica_killed_mid_job_costs_that_job_only(cluster):
    ray, service = cluster
    outcome, seen = {}, {}
    threads = [_start(service, name, 20, outcome, seen) for name in ("d", "e")]
    _wait(lambda: seen.get("d") and seen.get("e"))  # both running, one on each replica
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::fp8demo-test#Engine")]
    assert len(replicas) == 2
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
    for thread in threads:
        thread.join(60)
    errors = [o for o in outcome.values() if isinstance(o, Exception)]
    assert len(errors) == 1 and len(outcome) == 2, outcome
    assert isinstance(errors[0], SetupError) and "stopped before it was done" in str(errors[0])
    assert service.ready  # the other replica serves the next job at once
    assert service.generate(_request(2), session="f").image.size == (256, 256)
    # Ray Serve starts a replica in place of the killed one
    _wait(lambda: [e["state"] for e in service.pool.info()] == ["ready", "ready"], timeout=120)


def test_the_application_serves_the_page_through_the_front(cluster):
    """`fp8demo.cluster:build`: the Front deployment serves the Generate page over its own Engine deployment."""
    import httpx
    from conftest import free_port
    from gradio_client import Client
    from ray import serve

    from fp8demo.cluster import build

    port = free_port()
    serve.run(build({"replicas": 1, "cpus": 0.5, "gpus": 0,
                     "serve": f"--model tiny --host 127.0.0.1 --port {port}"}), name="fp8demo", route_prefix=None)
    url = f"http://127.0.0.1:{port}/"
    _wait(lambda: _get(url + "health/ready") == 200, timeout=120)
    engines = httpx.get(url + "health/ready", timeout=30).json()["engines"]
    assert [e["device"] for e in engines] == ["ray:Engine"]
    gallery = Client(url, verbose=False).predict(prompt="a fox", steps=2, aspect_ratio="256x256",
                                                 api_name="/generate")
    assert gallery
    serve.delete("fp8demo")


def _get(url: str) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0
