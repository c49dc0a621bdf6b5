"""A visitor who leaves (closed page, reload, dropped connection) frees the GPU slot within one
denoising step. The job's event stream is closed by hand (httpx on 127.0.0.1), as a closing tab closes it."""

import threading
import time
from dataclasses import replace

import pytest
from conftest import serve
from gradio_raw import join, messages

from fp8demo import config
from fp8demo.errors import Cancelled
from fp8demo.faces.kiosk.service import KioskService
from fp8demo.web.service import DemoService

STEP_S = 0.2  # each step made slow on purpose: a long job on a real GPU


@pytest.fixture
def slow_steps(tiny_engine, monkeypatch):
    """Every step takes STEP_S; records (time, step) and how each job ended."""
    steps, ends = [], []
    real = tiny_engine.run

    def run(job):
        def step(i, n):
            time.sleep(STEP_S)
            steps.append((time.monotonic(), i))
            if job.progress is not None:
                job.progress(i, n)

        try:
            result = real(replace(job, progress=step))
        except BaseException as error:
            ends.append((time.monotonic(), type(error).__name__))
            raise
        ends.append((time.monotonic(), "done"))
        return result

    monkeypatch.setattr(tiny_engine, "run", run)
    return steps, ends


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("api_name, data", [
    ("generate", ["a long job", "", 1, False, 100, 0.0, "256x256", 1, None]),
    ("compare", ["a long job", 1, "bf16", 100, 0.0, "256x256", "engine"]),
])
def test_closing_the_page_cancels_the_running_job_within_one_step(tiny_engine, slow_steps, api_name, data):
    steps, ends = slow_steps
    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service)
    try:
        response, session = join(url, api_name, data)
        assert response.status_code == 200
        with messages(url, session) as stream:
            for message in stream:
                if message["msg"] in ("progress", "process_generating") and len(steps) >= 3:
                    break  # the page goes away mid-picture
        left = time.monotonic()
        assert _wait_for(lambda: ends, timeout=30), "the job ran on"
        ended, how = ends[0]
        assert how == "Cancelled"
        after = [i for t, i in steps if t > left]
        assert len(after) <= 2, after  # the step under way when the stream closed, at most one more
        assert ended - left < 3 * STEP_S + 1.0
        assert len(steps) < 20  # of 100 (or 200 for the comparison)
        assert not tiny_engine._lock.locked()  # the slot is free for the next visitor
    finally:
        demo.close()


def test_a_visitor_who_stays_is_not_cancelled(tiny_engine, slow_steps):
    from gradio_client import Client

    steps, ends = slow_steps
    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service)
    try:
        images, *_ = Client(url, verbose=False).predict(prompt="stay", steps=3, aspect_ratio="256x256",
                                                         api_name="/generate")
        assert len(images) == 1 and [how for _, how in ends] == ["done"] and len(steps) == 3
    finally:
        demo.close()


def test_a_kiosk_visitor_who_leaves_the_line_never_reaches_the_gpu(tiny_engine, slow_steps):
    steps, ends = slow_steps
    service = DemoService.from_engine(tiny_engine)
    kiosk = KioskService(service, config.KioskConfig(cooldown=0))
    ahead = kiosk.line.join()  # someone else's picture is being made
    gone = threading.Event()
    lines = []
    with pytest.raises(Cancelled):
        for item in kiosk.create("a cat", "192.0.2.5", gone=gone.is_set):
            lines.append(item)
            gone.set()  # the visitor walks away while waiting
    kiosk.line.leave(ahead)
    assert lines == ["You are next: one picture is being made before yours."]
    assert steps == [] and ends == []  # the engine never saw the request
    assert kiosk.line.ahead(kiosk.line.join()) == 0  # and their place in the line is free
    assert kiosk.gate.wait_left("192.0.2.5", kiosk.clock()) == 0
