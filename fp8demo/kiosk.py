"""Kiosk rules as pure logic: the idle/attract state machine, moderation, and per-visitor fairness.

No Gradio, no torch and no wall clock in here: every time comes in as an argument, so tests drive hours of
kiosk life in microseconds with a fake clock.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import deque
from dataclasses import dataclass
from pathlib import Path

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
# Moderation: word-boundary blocklist that sees through case, accents, spacing, punctuation and look-alike symbols


_LOOKALIKES = str.maketrans({"@": "a", "4": "a", "$": "s", "5": "s", "0": "o", "1": "i", "!": "i", "3": "e",
                             "7": "t", "+": "t", "|": "l", "8": "b"})
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
REFUSAL = "Let's try a different idea: that prompt can't be shown on this screen. How about one of the suggestions?"


def _fold(text: str) -> str:
    """Lower case, no accents, no invisible characters, full-width letters made plain."""
    text = unicodedata.normalize("NFKD", text.translate(_INVISIBLE))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


_EDGE_PUNCTUATION = ".,;:!?\"'()[]{}<>"


def _words(text: str) -> tuple[list[str], set[str]]:
    """Words of a folded text, and extra single-word readings of spelled-out words.

    A token mixing letters with look-alike symbols (a$$, sh1t) is read as letters; a token of single letters split
    by punctuation (n*a*k*e*d, a.s.s) is also read joined; so is any stretch of a run of single letters separated
    by spaces ("a s s", "an a k e d").
    """
    words: list[str] = []
    joined: set[str] = set()
    for token in re.split(r"\s+", text):
        token = token.strip(_EDGE_PUNCTUATION)
        if re.search(r"[a-z]", token) and re.search(r"[@$!|+0-9]", token):
            token = token.translate(_LOOKALIKES)
        pieces = [w for w in re.split(r"[^a-z0-9]+", token) if w]
        if len(pieces) > 1 and all(len(p) == 1 for p in pieces):
            joined.add("".join(pieces))
        words.extend(pieces)
    run: list[str] = []
    for w in words + [""]:
        if len(w) == 1:
            run.append(w)
            continue
        for i in range(len(run)):
            for j in range(i + 2, len(run) + 1):
                joined.add("".join(run[i:j]))
        run = []
    return words, joined


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str = ""  # shown to the visitor; never repeats the blocked word


class Moderator:
    """Blocks prompts containing a listed word or phrase as whole words (so "ass" spares "class" and "bass")."""

    def __init__(self, terms: list[str]):
        self.terms: list[tuple[str, ...]] = []
        for term in terms:
            words = tuple(_words(_fold(term))[0])
            if words:
                self.terms.append(words)
        self.refused = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> Moderator:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls([line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")])

    def _matches(self, text: str) -> bool:
        words, joined = _words(_fold(text))
        for term in self.terms:
            forms = (term[-1], term[-1] + "s", term[-1] + "es")  # a listed word also blocks its plural
            if len(term) == 1 and any(f in joined for f in forms):
                return True
            n = len(term)
            for i in range(len(words) - n + 1):
                if tuple(words[i : i + n - 1]) == term[:-1] and words[i + n - 1] in forms:
                    return True
        return False

    def check(self, *texts: str) -> Verdict:
        for text in texts:
            if text and self._matches(text):
                with self._lock:
                    self.refused += 1
                    count = self.refused
                # the count and length only: refused text is neither logged nor kept
                log.info("kiosk: refused prompt #%d (%d characters)", count, len(text))
                return Verdict(False, REFUSAL)
        return Verdict(True)


# ---------------------------------------------------------------------------------------------------------------
# Fairness: one job in flight per visitor session, a cooldown between a session's jobs, and a FIFO line


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
