"""Bounds a public server needs outside the kiosk, and a clear message naming the field for
every bad input (never a 500, a generic text or a traceback per user mistake). The tiny app on 127.0.0.1."""

import logging
import time
from dataclasses import replace

import httpx
import pytest
from conftest import serve
from gradio_raw import call, join, refusals

from fp8demo import config
from fp8demo.errors import InvalidRequest, OutOfMemory
from fp8demo.request import GenerationRequest, validate
from fp8demo.web.service import DemoService

GOOD = ["a cat", "", 0, False, 1, 0.0, "256x256", 1, None]  # the Generate form's values, then its history state


def test_prompt_length_is_bounded_in_validation_naming_the_field():
    validate(GenerationRequest("x" * 2000), max_prompt_chars=2000)
    with pytest.raises(InvalidRequest, match="The prompt is 2,001 characters long; the limit is 2,000"):
        validate(GenerationRequest("x" * 2001), max_prompt_chars=2000)
    with pytest.raises(InvalidRequest, match="The negative prompt is 3,000 characters"):
        validate(GenerationRequest("x", negative_prompt="y" * 3000), max_prompt_chars=2000)
    validate(GenerationRequest("x" * 10_000))  # the CLI has no bound
    assert config.Limits().max_prompt_chars == 2000


def test_long_prompts_are_refused_before_any_work(app, client, monkeypatch):  # noqa: F811
    from gradio_client.exceptions import ValidationError

    service, url = app
    started = []
    monkeypatch.setattr(service.engine, "generate", lambda *a, **k: started.append(1))
    with pytest.raises(ValidationError, match="prompt: The prompt is 2,001 characters"):
        client.predict(prompt="x" * 2001, api_name="/generate")
    with pytest.raises(ValidationError, match="negative_prompt: The negative prompt is 5,000"):
        client.predict(prompt="x", negative_prompt="n" * 5000, api_name="/generate")
    with pytest.raises(ValidationError, match="prompt: The prompt is 2,001"):
        client.predict(prompt="x" * 2001, api_name="/compare")
    assert started == []  # nothing reached the engine, nor the GPU slot
    status, detail = call(url, "compare_sheet", ["ok\n" + "x" * 2001, 1, "bf16", 1, 0.0, "256x256", "engine"])
    assert status == 422 and "2,001 characters" in refusals(detail)["prompts"]
    # a megabyte payload does not even get parsed
    big = httpx.post(url + "gradio_api/queue/join", content=b"x" * 1_000_000,
                     headers={"content-type": "application/json"})
    assert big.status_code == 413 and "256 KiB" in big.json()["detail"]


def test_token_counter_is_bounded_and_cheap(tiny_engine):
    service = DemoService.from_engine(tiny_engine)
    assert "CLIP tokens" in service.token_status("a cat on a mat")
    t0 = time.perf_counter()
    with tiny_engine._lock:  # a generation holds the engine: the counter does not wait for it
        text = service.token_status("word " * 2_000_000)  # 10 MB
    assert time.perf_counter() - t0 < 0.5
    assert "10,000,000 characters: the limit is 2,000" in text
    assert service.token_status(12345) == ""  # not text: nothing to count, no error


@pytest.mark.parametrize("index, value, field, message", [
    (4, "NaN", "steps", "Steps must be a whole number, got nan"),
    (4, '"abc"', "steps", "Steps must be a whole number, got 'abc'"),
    (4, "2.5", "steps", "Steps must be a whole number, got 2.5"),
    (2, '"abc"', "seed", "The seed must be a whole number, got 'abc'"),
    (3, '"yes"', "randomize_seed", "Randomize seed must be true or false"),
    (5, "[1]", "guidance", "Guidance must be a number, got [1]"),
    (5, "Infinity", "guidance", "Guidance must be between 0 and 20, got inf"),
    (6, "5", "aspect_ratio", "Unknown size 5"),
    (0, "123", "prompt", "The prompt must be text, got int"),
    (7, "9", "num_images", "Images per run must be a whole number from 1 to 4, got 9"),
])
def test_wrong_values_get_a_message_naming_the_field(app, index, value, field, message):  # noqa: F811
    import json

    _, url = app
    data = [json.dumps(v) for v in GOOD]
    data[index] = value
    status, detail = call(url, "generate", raw="[" + ", ".join(data) + "]")
    assert status == 422, detail
    assert list(refusals(detail)) == [field] and message in refusals(detail)[field]


def test_compare_and_kiosk_values_name_their_fields(app):  # noqa: F811
    _, url = app
    status, detail = call(url, "compare", ["x", "abc", "fp32", 1e9, 0.0, "256x256", "fp8+turbo"])
    assert status == 422
    assert refusals(detail) == {
        "seed": "The seed must be a whole number, got 'abc'.",
        "baseline": "Recipe 'fp32': it starts with one of bf16, fp16, fp8, fp8-storage, fp8-native, not 'fp32'.",
        "steps": "Steps must be between 1 and 100, got 1000000000.",
        "candidate": "Recipe 'fp8+turbo': unknown part 'turbo'; the parts after the base are compile, cache, "
                     "cache=<spec> and fp8-attention."}


def test_a_user_mistake_logs_one_line_and_no_traceback(app, caplog, capfd):  # noqa: F811
    from fp8demo.web.events import friendly

    caplog.set_level(logging.INFO)
    error = friendly(InvalidRequest("Steps must be between 1 and 100, got 0."))
    assert error.message == "Steps must be between 1 and 100, got 0." and error.print_exception is False
    assert [r.message for r in caplog.records] == ["refused: Steps must be between 1 and 100, got 0."]
    assert caplog.records[0].exc_info is None
    # through the server: a refused value leaves no traceback on stderr
    _, url = app
    capfd.readouterr()
    assert call(url, "generate", raw='["x", "", 0, true, NaN, 0.0, "256x256", 1, null]')[0] == 422
    assert "Traceback" not in capfd.readouterr().err


def test_take_with_a_very_long_name_is_404_not_500(app):  # noqa: F811
    _, url = app
    for name in ("fp8demo-" + "1" * 300 + "-deadbeef.png", "a" * 5000, "fp8demo-1-deadbeef.png"):
        assert httpx.get(url + "take/" + name).status_code == 404


def test_comparison_out_of_memory_gets_the_out_of_memory_message(tiny_engine, monkeypatch):
    import torch

    service = DemoService.from_engine(tiny_engine)

    def no_room(recipe, plan):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    comparer = service._comparer(tiny_engine)  # the comparer of the engine a comparison borrows
    monkeypatch.setattr(comparer, "_variants", {})
    monkeypatch.setattr(comparer, "_load", no_room)
    with pytest.raises(OutOfMemory, match="ran out of memory loading the bf16 transformer for the comparison"):
        service.compare(GenerationRequest("a cat", steps=1))
    assert service.ready  # and the next request works
    assert service.generate(GenerationRequest("a cat", steps=1, width=256, height=256)).image.size == (256, 256)


def test_one_client_cannot_fill_the_queue(tiny_engine):
    """Fire-and-forget joins from one address: two are taken, the rest told it is busy; other work goes on."""
    from gradio_client import Client
    from gradio_client.exceptions import ValidationError

    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service, max_queue=16, limits=replace(config.Limits(), jobs_per_client=2))
    try:
        client = Client(url, verbose=False)
        with tiny_engine._lock:  # the GPU is busy: jobs stay queued or running
            jobs = [client.submit(prompt=f"cat {i}", steps=1, aspect_ratio="256x256", api_name="/generate")
                    for i in range(2)]
            time.sleep(1.0)
            for i in range(3):
                with pytest.raises(ValidationError, match="Busy: you already have 2 pictures on the way"):
                    client.predict(prompt=f"more {i}", steps=1, api_name="/generate")
            response, _ = join(url, "generate", GOOD)  # the page's view: 422 and the message for the first field
            assert response.status_code == 422 and "Busy" in refusals(response.json()["detail"])["client"]
        assert all(job.result(timeout=120)[1] >= 0 for job in jobs)
        # the queue's own record frees the slots: the client may go on
        assert client.predict(prompt="again", steps=1, aspect_ratio="256x256", api_name="/generate")[1] >= 0
    finally:
        demo.close()


def test_session_state_is_bounded(tiny_engine):
    """Each new session hash costs Gradio ~100 KiB of state: their number is capped (Limits.session_capacity)."""
    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service, limits=replace(config.Limits(), session_capacity=5))
    try:
        for _ in range(12):  # refused by the validator, but each join still makes a session
            assert join(url, "generate", raw='["x", "", 0, true, 0, 0.0, "256x256", 1, null]')[0].status_code == 422
        assert len(demo.server_app.state_holder.session_data) <= 5
    finally:
        demo.close()
