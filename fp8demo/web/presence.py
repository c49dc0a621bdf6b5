"""Is the visitor still there? A running job's client may close the page, reload it or lose the connection; its job
should then stop within one denoising step, so that the GPU slot goes to the next visitor instead of a picture
nobody will see.

Gradio notices when a session's event stream closes (it cancels the stream on disconnect) and marks that session's
events dead (`event.alive = False` in its queue, gradio 6.25-6.31), then simply stops reading the handler's output:
the handler's own work would run on. `departure` hands that mark to the work, which polls it at every step
(DemoService._job) and cancels."""

from __future__ import annotations

from collections.abc import Callable


def departure() -> Callable[[], bool]:
    """A check, for the running event, that says whether its client has left. Call it in the event handler itself
    (it reads Gradio's context); the check may then run in any thread. Outside a queued event (direct calls, tests)
    nobody can leave and it always says no."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    event = queue.event_ids_to_events.get(event_id) if queue is not None and event_id else None
    if event is None:
        return lambda: False
    return lambda: not event.alive
