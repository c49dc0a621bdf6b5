"""Kiosk rules as pure logic: per-visitor fairness and the line (the screen's states: screen.py; moderation:
moderation.py).

No Gradio, no torch and no wall clock in here: every time comes in as an argument, so tests drive hours of
kiosk life in microseconds with a fake clock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Fairness: one job in flight per client, a cooldown between its jobs, and a FIFO line. The key is the client
# address (the kiosk screen), never a session id, which a client can mint at will.


class KioskRefusal(Exception):
    """A request the kiosk turns down politely (moderation, cooldown, a job already running). `kind` tells the page
    what to do with it: "prompt" (the words were refused: the box is cleared), "cooldown" (the message counts the
    seconds down with the button), "busy" (this screen's picture is still being made) or "other"."""

    def __init__(self, message: str = "", kind: str = "other"):
        super().__init__(message)
        self.kind = kind


def cooldown_text(seconds: int) -> str:
    """The cooldown's refusal; the page says it again each second with the seconds left, as the button counts."""
    return f"Nice one! Please wait {seconds} s before the next picture."


class SessionGate:
    def __init__(self, cooldown: float):
        self.cooldown = cooldown
        self._running: set[str] = set()
        self._last_end: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, session: str, now: float) -> None:
        with self._lock:
            if session in self._running:
                raise KioskRefusal("Your picture is still being made: it will appear in a moment.", "busy")
            wait = self._last_end.get(session, -1e18) + self.cooldown - now
            if wait > 0:
                raise KioskRefusal(cooldown_text(int(wait + 0.999)), "cooldown")
            self._running.add(session)

    def wait_left(self, session: str, now: float) -> int:
        """Whole seconds before `session` may start its next picture (0: now), for a countdown on the page."""
        with self._lock:
            return max(0, int(self._last_end.get(session, -1e18) + self.cooldown - now + 0.999))

    def end(self, session: str, now: float) -> None:
        with self._lock:
            self._running.discard(session)
            self._last_end[session] = now
            if len(self._last_end) > 10_000:  # a kiosk runs for days: forget the oldest visitors
                for key in sorted(self._last_end, key=self._last_end.get)[:5_000]:
                    self._last_end.pop(key, None)


class Line:
    """First come, first served in front of the GPUs, with each visitor's place for the status line. `width`: how
    many pictures are made at once (the pool's engines; asked each time, as the pool starts after the page and may
    lose an engine): the first `width` visitors in the line are all making theirs."""

    def __init__(self, width: Callable[[], int] = lambda: 1):
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()
        self._width = width

    def _ahead(self, ticket) -> int:
        return max(0, self._queue.index(ticket) - max(1, self._width()) + 1) if ticket in self._queue else 0

    def join(self) -> object:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        return ticket

    def ahead(self, ticket) -> int:
        with self._cond:
            return self._ahead(ticket)

    def wait_turn(self, ticket, timeout: float) -> int:
        """Wait up to `timeout` s for the turn; returns how many are still ahead (0: go)."""
        with self._cond:
            self._cond.wait_for(lambda: self._ahead(ticket) == 0, timeout)
            return self._ahead(ticket)

    def leave(self, ticket) -> None:
        with self._cond:
            if ticket in self._queue:
                self._queue.remove(ticket)
            self._cond.notify_all()


def place_text(ahead: int) -> str:
    if ahead <= 0:
        return "Making your picture…"
    if ahead == 1:
        return "You are next: one picture is being made before yours."
    return f"{ahead} people ahead of you: your picture is coming."
