"""Kiosk rules as pure logic: the idle/attract state machine and per-visitor fairness (moderation: moderation.py).

No Gradio, no torch and no wall clock in here: every time comes in as an argument, so tests drive hours of
kiosk life in microseconds with a fake clock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Idle machine: active -> (idle_after s untouched) countdown -> (countdown s) attract -> (touch) active


@dataclass(frozen=True)
class IdleView:
    mode: str  # "active", "countdown" or "attract"
    seconds_left: int = 0  # in countdown: seconds before the reset
    attract_index: int = 0  # in attract: which picture to show
    reset: bool = False  # True exactly once, on the transition into attract: clear the prompt and the picture


class IdleMachine:
    """Per-screen idle state. `touch` on any visitor action, `busy` around a generation, `view` on each tick."""

    def __init__(self, idle_after: float, countdown: float, attract_every: float, now: float):
        self.idle_after, self.countdown, self.attract_every = idle_after, countdown, attract_every
        self.mode = "attract"  # a fresh screen starts in the attract loop
        self.last_touch = now
        self.attract_since = now
        self.busy = False
        self._reset_pending = False

    def touch(self, now: float) -> None:
        self.mode = "active"
        self.last_touch = now

    def set_busy(self, busy: bool, now: float) -> None:
        """Generation pauses the timers: the idle clock restarts when the picture arrives."""
        self.busy = busy
        self.last_touch = now
        if busy:
            self.mode = "active"

    def view(self, now: float) -> IdleView:
        if self.busy:
            return IdleView("active")
        if self.mode == "attract":
            reset, self._reset_pending = self._reset_pending, False
            index = int((now - self.attract_since) // self.attract_every) if self.attract_every > 0 else 0
            return IdleView("attract", attract_index=index, reset=reset)
        idle = now - self.last_touch
        if idle < self.idle_after:
            self.mode = "active"
            return IdleView("active")
        left = self.idle_after + self.countdown - idle
        if left > 0:
            self.mode = "countdown"
            return IdleView("countdown", seconds_left=int(left + 0.999))
        self.mode = "attract"
        self.attract_since = now
        self._reset_pending = True
        return self.view(now)


# ---------------------------------------------------------------------------------------------------------------
# Fairness: one job in flight per client, a cooldown between its jobs, and a FIFO line. The key is the client
# address (the kiosk screen), never a session id, which a client can mint at will.


class KioskRefusal(Exception):
    """A request the kiosk turns down politely (moderation, cooldown, a job already running)."""


class SessionGate:
    def __init__(self, cooldown: float):
        self.cooldown = cooldown
        self._running: set[str] = set()
        self._last_end: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, session: str, now: float) -> None:
        with self._lock:
            if session in self._running:
                raise KioskRefusal("Your picture is still being made: it will appear in a moment.")
            wait = self._last_end.get(session, -1e18) + self.cooldown - now
            if wait > 0:
                raise KioskRefusal(f"Nice one! Please wait {int(wait + 0.999)} s before the next picture.")
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
    """First come, first served in front of the GPU, with each visitor's place for the status line."""

    def __init__(self):
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    def join(self) -> object:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        return ticket

    def ahead(self, ticket) -> int:
        with self._cond:
            return self._queue.index(ticket) if ticket in self._queue else 0

    def wait_turn(self, ticket, timeout: float) -> int:
        """Wait up to `timeout` s for the turn; returns how many are still ahead (0: go)."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue[0] is ticket, timeout)
            return self._queue.index(ticket)

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
