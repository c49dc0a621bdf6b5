"""Gradio helpers every face shares: the one GPU slot, light events, friendly errors, the visitor's session id."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gradio as gr

from ..errors import Cancelled, UserError

log = logging.getLogger(__name__)

# Every event that runs an engine shares these slots, one per engine of the pool (the queue's default concurrency,
# which server.launch sets to the number of engines), so jobs never race for a GPU.
GPU = dict(concurrency_id="gpu", concurrency_limit="default")
# Timers, resets, token counts: outside the queue, so they never wait behind a generation.
LIGHT = dict(queue=False, api_visibility="private", show_progress="hidden")
# GPU events take raw values (no Gradio preprocessing): the face turns them into a request, and a value of the wrong
# type gets a message naming its field instead of Gradio's "Could not preprocess input component at index N".
RAW = dict(preprocess=False)


def session_id(request: gr.Request | None) -> str:
    """Gradio's per-tab session hash: it names a tab's own job for its Stop button. The client chooses it, so
    fairness never keys on it (see access.client_address)."""
    return getattr(request, "session_hash", None) or "api"


def friendly(error: Exception) -> gr.Error:
    """A UserError's own message, logged in one line; anything else is logged with its traceback and shown as a
    short apology. Either way Gradio prints no second traceback (print_exception=False)."""
    if isinstance(error, UserError):
        log.info("refused: %s", str(error)[:200])
        return gr.Error(str(error), print_exception=False)
    log.exception("request failed")
    return gr.Error("Something went wrong on the server while making this image; please try again.",
                    print_exception=False)


def run_job(work: Callable[[], Any]) -> Any | None:
    """An event's engine call: None when the visitor pressed Stop, any failure as a friendly gr.Error."""
    try:
        return work()
    except Cancelled:
        return None
    except Exception as error:
        raise friendly(error) from error


def stream(work: Callable[[Callable], Iterable]) -> Iterator[tuple[str, Any]]:
    """Run `work(preview)` in a thread and relay what it produces to the event's generator, in order:
    ("preview", image) for the newest preview frame (older ones queued behind it are dropped, so a slow browser
    never falls behind), ("item", x) for each item `work` yields. Its error is raised here, in the event's thread.
    """
    for kind, value in stream_steps(lambda preview, on_step: work(preview)):
        if kind == "step":
            for frame in value[1]:
                yield "preview", frame
        else:
            yield kind, value


def stream_steps(work: Callable[[Callable, Callable], Iterable]) -> Iterator[tuple[str, Any]]:
    """`stream` with the steps: `work(preview, on_step)` runs in a thread, and the event's generator gets
    ("step", ((step, steps, when) or None, frames)) for the newest step and preview frame of each batch that arrived
    together (when: time.monotonic() of the step, taken in the worker so that the time left is not skewed by the
    relay; frames: [] or [the newest frame], which may be None, a face's "clear the picture"), and ("item", x) for
    each item `work` yields."""
    q: queue.Queue = queue.Queue()

    def run():
        try:
            for item in work(lambda image: q.put(("preview", image)),
                             lambda i, n: q.put(("progress", (i, n, time.monotonic())))):
                q.put(("item", item))
        except BaseException as error:  # handed over, raised below
            q.put(("error", error))
        finally:
            q.put(("done", None))

    threading.Thread(target=run, name="event-work", daemon=True).start()
    while True:
        batch = [q.get()]
        while True:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        previews = [value for kind, value in batch if kind == "preview"]
        steps = [value for kind, value in batch if kind == "progress"]
        if previews or steps:
            yield "step", (steps[-1] if steps else None, previews[-1:])
        for kind, value in batch:
            if kind == "item":
                yield kind, value
            elif kind == "error":
                raise value
            elif kind == "done":
                return
