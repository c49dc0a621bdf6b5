"""Gradio helpers every face shares: the one GPU slot, light events, friendly errors, the visitor's session id."""

from __future__ import annotations

import logging

import gradio as gr

from ..errors import UserError

log = logging.getLogger(__name__)

# Every event that runs the engine shares this one slot, so two faces never race for the GPU.
GPU = dict(concurrency_id="gpu", concurrency_limit=1)
# Timers, resets, token counts: outside the queue, so they never wait behind a generation.
LIGHT = dict(queue=False, api_visibility="private", show_progress="hidden")


def session_id(request: gr.Request | None) -> str:
    """Gradio's per-tab session hash; API calls without one share the key "api"."""
    return getattr(request, "session_hash", None) or "api"


def friendly(error: Exception) -> gr.Error:
    """A UserError's own message; anything else is logged with its traceback and shown as a short apology."""
    if isinstance(error, UserError):
        return gr.Error(str(error))
    log.exception("request failed")
    return gr.Error("Something went wrong on the server while making this image; please try again.")
