"""Gradio's queue protocol by hand (httpx, 127.0.0.1 only): what a browser or a hostile client sends, including
values gradio_client cannot (NaN, wrong types), and a stream it can close mid-job."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager

import httpx


def fn_index(url: str, api_name: str) -> int:
    deps = httpx.get(url + "config", timeout=30).json()["dependencies"]
    return next(i for i, d in enumerate(deps) if d.get("api_name") == api_name)


def join(url: str, api_name: str, data: list | None = None, raw: str | None = None, session: str | None = None,
         headers: dict | None = None, index: int | None = None,
         http: httpx.Client | None = None) -> tuple[httpx.Response, str]:
    """POST /gradio_api/queue/join. `raw`: the JSON body's "data" list as text (for NaN and the like); `index`: the
    event's fn_index when the caller already has it (else it is read from /config); `http`: the client to send it
    with (e.g. one bound to another source address)."""
    session = session or uuid.uuid4().hex[:12]
    index = fn_index(url, api_name) if index is None else index
    data_text = raw if raw is not None else json.dumps(data)
    body = f'{{"data": {data_text}, "fn_index": {index}, "session_hash": "{session}", "event_data": null, ' \
           '"trigger_id": null}'
    response = (http or httpx).post(url + "gradio_api/queue/join", content=body, timeout=60,
                                    headers={"content-type": "application/json", **(headers or {})})
    return response, session


@contextmanager
def messages(url: str, session: str, timeout: float = 120):
    """The session's event stream as parsed messages; leaving the block closes the connection (a departed page)."""
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as s:
        yield (json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:"))


def call(url: str, api_name: str, data: list | None = None, raw: str | None = None) -> tuple[int, dict | list]:
    """(HTTP status of the join, its refusal detail or the completed message)."""
    response, session = join(url, api_name, data, raw)
    if response.status_code != 200:
        return response.status_code, response.json().get("detail")
    with messages(url, session) as stream:
        for message in stream:
            if message["msg"] == "process_completed":
                return 200, message
    raise AssertionError("the event stream ended without a result")


def refusals(detail) -> dict[str, str]:
    """{parameter name: message} of a validator's refusal (HTTP 422)."""
    return {d["parameter_name"]: d["message"] for d in detail if not d["is_valid"]}
