"""One admission point for every route that runs the model, the login over everything but health, and a 4xx naming
the field for every malformed call. The tiny app, with clients at several loopback addresses (every 127.x.y.z is
this machine's own on Linux: 127.0.0.1 is the operator, 127.0.0.3 an attacker, 127.0.0.4 another visitor)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from conftest import serve
from gradio_raw import fn_index, join, refusals

from fp8demo import config
from fp8demo.web.access import LoginLimiter, queued_jobs, route_kind
from fp8demo.web.service import DemoService

GOOD = ["a cat", "", 0, False, 1, 0.0, "256x256", 1, None]  # the Generate form's values, then its history state
ATTACKER, VISITOR = "127.0.0.3", "127.0.0.4"


def http(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


@pytest.fixture(scope="module")
def bounded(tiny_engine):
    """The Generate app with 2 jobs per client and a queue of 4: (service, url, demo)."""
    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service, max_queue=4, limits=replace(config.Limits(), jobs_per_client=2))
    yield service, url, demo
    demo.close()


def drain(demo, timeout=120):
    deadline = time.monotonic() + timeout
    while demo._queue.event_ids_to_events and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not demo._queue.event_ids_to_events, "the queue did not drain"


def flood(url: str, route: str, address: str, n: int = 20, headers: dict | None = None) -> list[int]:
    """`n` concurrent calls of /generate through `route` from `address`: their HTTP statuses."""
    index = fn_index(url, "generate")

    def one(_):
        with http(address) as c:
            if route == "join":
                return join(url, "generate", GOOD, index=index, http=c, headers=headers)[0].status_code
            body = {"data": GOOD[:8]}
            return c.post(url + f"gradio_api/{route}/generate", json=body, headers=headers).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("route", ["join", "call", "run", "api"])
def test_one_address_gets_at_most_its_bound_whichever_route(bounded, tiny_engine, route):
    service, url, demo = bounded
    drain(demo)
    count = queued_jobs(demo)
    peak = []
    with tiny_engine._lock:  # the GPU is busy: what is admitted stays queued or running
        watching = threading.Event()

        def watch():
            while not watching.is_set():
                peak.append((count(ATTACKER), len(demo._queue)))
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        statuses = flood(url, route, ATTACKER)
        watching.set()
        watcher.join()
        accepted = statuses.count(200)
        if route in ("run", "api"):
            assert set(statuses) == {404}  # outside the queue: closed to events that make pictures
        else:
            assert accepted <= 2 and set(statuses) <= {200, 422}, statuses
        assert max(jobs for jobs, _ in peak) <= 2 and count(ATTACKER) <= 2
        # another address is still served
        with http(VISITOR) as c:
            assert join(url, "generate", GOOD, http=c)[0].status_code == 200
    drain(demo)


def test_a_made_up_forwarded_header_is_not_a_new_client(bounded, tiny_engine):
    _, url, demo = bounded
    drain(demo)
    with tiny_engine._lock:
        assert flood(url, "call", "127.0.0.1", n=2) == [200, 200]
        for forged in ({"x-forwarded-for": "10.9.8.7"}, {"x-forwarded-for": "127.0.0.4", "x-real-ip": "127.0.0.4",
                                                         "forwarded": "for=127.0.0.4"}):
            assert set(flood(url, "call", "127.0.0.1", n=3, headers=forged)) == {422}
            response = join(url, "generate", GOOD, headers=forged)[0]
            assert response.status_code == 422 and "Busy" in refusals(response.json()["detail"])["client"]
        assert queued_jobs(demo)("127.0.0.1") == 2 and queued_jobs(demo)("10.9.8.7") == 0
    drain(demo)


def test_the_queue_never_exceeds_its_bound(bounded, tiny_engine):
    """16 addresses at once against a queue of 4: never a fifth waiting, the rest told it is busy (503)."""
    _, url, demo = bounded
    drain(demo)
    index = fn_index(url, "generate")
    sizes = []

    def one(i):
        with http(f"127.0.1.{i + 1}") as c:
            response = c.post(url + "gradio_api/call/generate", json={"data": GOOD[:8], "fn_index": index})
            sizes.append(len(demo._queue))
            return response.status_code

    with tiny_engine._lock, ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(16)))
        assert len(demo._queue) <= 4 and max(sizes) <= 4
        assert statuses.count(200) <= 5 and set(statuses) <= {200, 503}  # 4 waiting and at most 1 running
        refused = httpx.post(url + "gradio_api/call/generate", json={"data": GOOD[:8]})
        assert refused.status_code == 503 and "already waiting for the GPU" in refused.json()["detail"]
    drain(demo)


@pytest.mark.parametrize("path, body, status, parameter, text", [
    ("call/generate", {"data": []}, 422, "prompt", "Missing values for prompt, negative_prompt"),
    ("call/generate", {"data": ["a", 1]}, 422, "seed", "Missing values for seed"),
    ("call/generate", {"data": list(range(12))}, 422, "data", "takes 8 values"),
    ("call/generate", {"data": "a cat"}, 422, "data", '"data" must be a list'),
    ("call/generate", {"data": [*GOOD[:6], "-512x512", 1]}, 422, "aspect_ratio", "must be positive"),
    ("call/generate", {"data": GOOD[:8], "fn_index": 9999}, 422, "fn_index", "No such event"),
    ("call/compare", {"data": []}, 422, "prompt", "Missing values for prompt"),
    ("run/generate", {"data": GOOD[:8]}, 404, None, "through the queue"),
    ("run/predict", {"data": GOOD, "fn_index": "generate"}, 404, None, "No such event"),
])
def test_malformed_calls_get_a_4xx_naming_the_field(app, path, body, status, parameter, text):
    _, url = app
    response = httpx.post(url + "gradio_api/" + path, json=body, timeout=60)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if parameter is None:
        assert text in detail
    else:
        assert text in refusals(detail)[parameter], detail


def test_queued_events_by_index_on_the_direct_route_are_closed(app):
    _, url = app
    index = fn_index(url, "generate")
    response = httpx.post(url + "gradio_api/run/predict", json={"data": GOOD, "fn_index": index,
                                                                "session_hash": "x"})
    assert response.status_code == 404 and "through the queue" in response.json()["detail"]


def test_routes_are_closed_by_default():
    assert route_kind("POST", "/gradio_api/queue/join") == "admit"
    assert route_kind("POST", "/gradio_api/call/v2/generate") == "admit"
    assert route_kind("POST", "/gradio_api/run/generate") == "direct"
    for method, path in (("POST", "/gradio_api/component_server"), ("POST", "/gradio_api/stream/1"),
                         ("POST", "/gradio_api/process_recording"), ("POST", "/gradio_api/vibe-edit"),
                         ("GET", "/monitoring"), ("GET", "/gradio_api/proxy=http://x"), ("GET", "/gradio_api/new"),
                         ("POST", "/gradio_api/run-history/connect"), ("DELETE", "/config"), ("WS", "/")):
        assert route_kind(method, path) is None, path


def test_login_failures_are_limited_per_address():
    now = [0.0]
    limiter = LoginLimiter(limit=10, window=60, clock=lambda: now[0])
    for _ in range(10):
        assert limiter.wait("a") == 0
        limiter.failed("a")
    assert limiter.wait("a") == 60 and limiter.wait("b") == 0
    now[0] = 59.5
    assert limiter.wait("a") == 1
    now[0] = 60.0
    assert limiter.wait("a") == 0


def test_the_login_covers_every_route_but_health(tiny_engine):
    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service, auth="ada:secret-1")
    try:
        png = service.save_png(service.generate(_request()))
        assert service.wait_for_file(png)
        index = fn_index_signed(url)
        closed = {
            ("GET", "config"), ("GET", "gradio_api/info"), ("GET", "gradio_api/openapi.json"),
            ("GET", "take/" + png.name), ("GET", "metrics"), ("GET", "gradio_api/queue/status"),
            ("GET", "gradio_api/queue/data?session_hash=x"), ("GET", "gradio_api/heartbeat/x"),
            ("GET", "gradio_api/startup-events"), ("GET", "gradio_api/file=" + str(png)),
            ("GET", "gradio_api/call/generate/abc"), ("GET", "gradio_api/user"), ("GET", "gradio_api/app_id"),
            ("GET", "gradio_api/upload_progress"), ("GET", "gradio_api/no-such-route"), ("GET", "monitoring"),
            ("POST", "gradio_api/queue/join"), ("POST", "gradio_api/call/generate"),
            ("POST", "gradio_api/call/v2/generate"), ("POST", "gradio_api/run/generate"),
            ("POST", "gradio_api/run/predict"), ("POST", "gradio_api/api/generate"), ("POST", "gradio_api/cancel"),
            ("POST", "gradio_api/reset"), ("POST", "gradio_api/upload"), ("POST", "gradio_api/component_server"),
        }
        body = {"data": GOOD, "fn_index": index, "session_hash": "x"}
        for method, path in sorted(closed):
            response = httpx.request(method, url + path, json=body if method == "POST" else None)
            assert response.status_code == 401, (path, response.status_code)
        assert httpx.get(url + "health/live").status_code == 200
        assert httpx.get(url + "health/ready").status_code == 200
        assert httpx.get(url).status_code == 200  # Gradio's login page
        # signed in: the same routes answer
        with httpx.Client() as c:
            assert c.post(url + "login", data={"username": "ada", "password": "secret-1"}).status_code in (200, 302)
            assert c.get(url + "take/" + png.name).status_code == 200
            assert c.get(url + "config").status_code == 200
            assert c.post(url + "gradio_api/call/generate", json={"data": GOOD[:8]}).status_code == 200
        drain(demo)
        # ten wrong passwords in a minute, then even the right one waits
        with http("127.0.0.6") as c:
            for _ in range(10):
                assert c.post(url + "login", data={"username": "ada", "password": "guess"}).status_code == 400
            refused = c.post(url + "login", data={"username": "ada", "password": "secret-1"})
            assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
            assert "Too many failed sign-ins" in refused.json()["detail"]
        with http("127.0.0.8") as c:  # another address is not held up
            assert c.post(url + "login", data={"username": "ada", "password": "secret-1"}).status_code in (200, 302)
    finally:
        demo.close()


def _request():
    from fp8demo.request import GenerationRequest

    return GenerationRequest("a cat", steps=1, width=256, height=256)


def fn_index_signed(url: str) -> int:
    """/generate's fn_index, read from the config behind the login (hard-coded lookups would drift)."""
    with httpx.Client() as c:
        c.post(url + "login", data={"username": "ada", "password": "secret-1"})
        deps = c.get(url + "config").json()["dependencies"]
    return next(i for i, d in enumerate(deps) if d.get("api_name") == "generate")


def test_config_json_is_parsed_once(app):  # a sanity check of the replayed body: a good call still runs
    _, url = app
    response = httpx.post(url + "gradio_api/call/generate", json={"data": GOOD[:8]})
    assert response.status_code == 200
    event = response.json()["event_id"]
    with httpx.stream("GET", url + f"gradio_api/call/generate/{event}", timeout=120) as s:
        text = "".join(s.iter_text())
    assert "event: complete" in text, text[-500:]
    data = json.loads(text.split("event: complete\ndata:")[1].strip().splitlines()[0])
    assert data[1] >= 0  # the seed


@pytest.mark.parametrize("body", [{}, {"prompt": "a cat", "bogus": 1}, {"prompt": "a cat", "aspect_ratio": "-512x512"},
                                  {"prompt": 5}])
def test_keyword_calls_answer_4xx_never_500(app, body):
    _, url = app
    response = httpx.post(url + "gradio_api/call/v2/generate", json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
