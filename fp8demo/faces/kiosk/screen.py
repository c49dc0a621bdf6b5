"""What a kiosk screen shows, as pure logic: one small state machine per screen (no Gradio, no wall clock).

States:

- attract: the attract loop, full-bleed art with the exhibit's title and a call to action. A fresh screen starts here.
- composing: the controls (the prompt with its keyboard, or the composer's tiles; chips; Create).
- creating: the picture forming; the controls stay, Create waits. The idle timers pause.
- result: the finished picture with its take-home code and the controls.
- picture-alone: the finished picture full screen with a hint; any touch goes back to result.
- still-there: "Are you still there?" with a countdown over the page; any touch goes back.
- refused: the controls with a refusal (moderation, cooldown, ...); a refused prompt is cleared from the box.
- error: the controls with an apology; Create tries again.
- restarting: the engine is not ready (warming up after a start, or a device error before the service manager
  restarts the process); the page itself shows it too while the server does not answer, then reloads.

`Screen.go` is the one way a state changes: it sets the state and clears whatever belonged to the others (the
refusal, the countdown, where still-there returns to, and on entering attract the visitor's prompt, picture and
code). Every transition and every reset goes through it, so no state can leave a trace in another: the page renders
the Scene it returns and nothing else. From every state one touch anywhere leads to the attract screen or the
controls (`touch`); tests walk that claim through every state.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .rules import cooldown_text

STATES = ("attract", "composing", "creating", "result", "picture-alone", "still-there", "refused", "error",
          "restarting")
# the states in which the controls (prompt or tiles, Create) are on the screen
CONTROLS = frozenset({"composing", "creating", "result", "refused", "error"})
# the states shown over the page, which one touch leaves for where the visitor was
OVERLAID = frozenset({"picture-alone", "still-there"})
# the states the idle timers move on from (creating pauses them; attract and restarting are already idle)
IDLE_WATCHED = frozenset({"composing", "result", "picture-alone", "refused", "error"})
SETTLE = 0.6  # seconds in which typing does not end a result, a refusal or an apology (see Screen.typing)
# Every change of any screen gets the next number: the page applies a rendered state only if it is newer than the one
# it shows, so that an answer that reaches it late never puts an older state back
_changes = itertools.count(1)


@dataclass(frozen=True)
class Texts:
    """The lines the screen says, per input mode (free text, the composer's tiles, or both)."""

    welcome: str = "Type an idea, or touch a suggestion."
    creating: str = "Creating your picture…"
    done: str = "Here it is! Scan the code to take it home, or make another."
    alone: str = "Touch anywhere to go back"
    still_there: str = "Are you still there?"
    failed: str = "Something went wrong while making your picture. Please touch Create to try again."
    restarting: str = "One moment: the picture machine is getting ready…"
    ready_again: str = "Ready for your next picture: touch Create."

    @classmethod
    def for_input(cls, mode: str) -> Texts:
        if mode == "compose":
            return cls(welcome="Touch a tile in each row to build your idea, then Create.",
                       done="Here it is! Scan the code to take it home, or build another.")
        if mode == "both":
            return cls(welcome="Type an idea, or build one from the tiles.")
        return cls()


@dataclass(frozen=True)
class Scene:
    """Everything the page shows of a screen at one moment."""

    state: str
    status: str
    seconds_left: int = 0  # still-there: seconds before the reset
    attract_index: int = 0  # attract: which picture of the loop
    wipe: bool = False  # once, on entering attract: empty the prompt, the tiles, the picture and its code
    clear_prompt: bool = False  # once, after a refused prompt: empty the box
    create_label: str = "Create"
    create_enabled: bool = True
    version: int = 0  # the number of the screen's last change (newer changes, higher numbers)

    @property
    def controls(self) -> bool:
        return self.state in CONTROLS


class Screen:
    """One screen's state. Events: `touch` (a touch anywhere), `typing`, `tap_picture`, `begin`, `place`, `done`,
    `refuse`, `fail`; `scene(now, ready, wait)` on every render (the page's one-second timer among them) moves the
    idle timers on. Safe to call from the page's event threads at once."""

    def __init__(self, idle_after: float, countdown: float, attract_every: float, now: float,
                 texts: Texts | None = None):
        self.idle_after, self.countdown, self.attract_every = idle_after, countdown, attract_every
        self.texts = texts or Texts()
        self._lock = threading.RLock()
        self.last_touch = now
        self.status, self.cooldown, self._clear_prompt, self._wipe = "", False, False, False
        self._back: tuple | None = None
        self.has_picture = False  # a finished picture is on the screen
        self.version = 0
        self.go("attract", now)  # a fresh screen (and a server that restarted) starts clean, whatever was shown

    # ---- the one way a state changes ---------------------------------------------------------------------------

    def go(self, state: str, now: float, status: str | None = None, *, clear_prompt: bool = False,
           cooldown: bool = False) -> None:
        """Enter `state` and clear everything of the others."""
        if state not in STATES:
            raise ValueError(f"unknown kiosk state {state!r}")
        with self._lock:
            previous = getattr(self, "state", None)
            # the overlays keep where the visitor was, to go back there (over another overlay: where that one came
            # from, so that the way back always leads to the controls)
            if state in OVERLAID:
                if previous not in OVERLAID:
                    kept = self.status if previous in ("refused", "error") else None
                    self._back = (previous, kept, self.cooldown)
            else:
                self._back = None
            self.state = state
            self.since = now
            self.version = next(_changes)
            if status is None:  # the overlays keep the line of the page behind them
                status = self.status if state in ("still-there", "picture-alone") else self._default_status(state)
            self.status = status
            self.cooldown = cooldown and state == "refused"  # the refusal's seconds follow the button's
            self._clear_prompt = self._clear_prompt or clear_prompt
            if state == "attract":
                self.attract_since = now
                self._wipe = True  # the prompt, the tiles, the picture and its code
                self._clear_prompt = False
                self.has_picture = False
            elif state == "error":
                self.has_picture = False  # the page drops the half-made picture
            elif state == "result":
                self.has_picture = True

    def _default_status(self, state: str) -> str:
        t = self.texts
        return {"creating": t.creating, "result": t.done, "error": t.failed, "restarting": t.restarting}.get(
            state, t.welcome)

    # ---- what visitors and the server do -----------------------------------------------------------------------

    def touch(self, now: float) -> str:
        """A touch anywhere on the screen: from attract to the controls, back from still-there and picture-alone;
        elsewhere it only keeps the screen awake. Returns the state."""
        with self._lock:
            self.last_touch = now
            if self.state == "attract":
                self.go("composing", now)
            elif self.state in OVERLAID:
                back, status, cooldown = self._back or ("composing", None, False)
                self.go(back, now, status, cooldown=cooldown)
            return self.state

    def typing(self, now: float, keys: bool = False) -> str:
        """The visitor touches the prompt, picks a tile or types (`keys`): a new idea, so a refusal, an apology or
        the last result gives way to composing. Typed keys not in the first moments of those states: keys typed
        before Create can reach the server after a quick refusal, and must not wipe it out."""
        with self._lock:
            self.touch(now)
            if self.state in ("result", "refused", "error") and not (keys and now - self.since < SETTLE):
                self.go("composing", now)
            return self.state

    def tap_picture(self, now: float) -> str:
        """A touch on the picture: the finished picture alone, full screen; and back."""
        with self._lock:
            if self.has_picture and self.state in CONTROLS - {"creating"}:
                self.last_touch = now
                self.go("picture-alone", now)
                return self.state
            return self.touch(now)

    def begin(self, now: float) -> bool:
        """A picture is asked for. False when this screen's picture is still being made (nothing changes)."""
        with self._lock:
            if self.state == "creating":
                return False
            self.last_touch = now
            self.go("creating", now)
            return True

    def place(self, status: str) -> None:
        """The visitor's place in the line, while creating."""
        with self._lock:
            if self.state == "creating":
                self.status = status

    def done(self, now: float) -> None:
        with self._lock:
            self.last_touch = now  # the idle clock restarts when the picture arrives
            self.go("result", now)

    def refuse(self, message: str, now: float, *, clear_prompt: bool = False, cooldown: bool = False) -> None:
        with self._lock:
            self.last_touch = now
            self.go("refused", now, message, clear_prompt=clear_prompt, cooldown=cooldown)

    def fail(self, message: str | None, now: float) -> None:
        with self._lock:
            self.last_touch = now
            self.go("error", now, message)

    # ---- rendering and the timers ------------------------------------------------------------------------------

    def scene(self, now: float, ready: bool = True, wait: int = 0) -> Scene:
        """What to show at `now`, moving the timers on: idle_after seconds untouched -> still-there, countdown more
        -> attract. `ready`: the engine can make pictures (else restarting); `wait`: seconds of cooldown left."""
        with self._lock:
            self._advance(now, ready, wait)
            wipe, self._wipe = self._wipe, False
            clear, self._clear_prompt = self._clear_prompt, False
            idle = now - self.last_touch
            left = max(1, math.ceil(self.idle_after + self.countdown - idle)) if self.state == "still-there" else 0
            index = 0
            if self.state == "attract" and self.attract_every > 0:
                index = int((now - self.attract_since) // self.attract_every)
            status = cooldown_text(wait) if self.cooldown and wait else self.status
            label, enabled = create_button(self.state, wait)
            return Scene(self.state, status, left, index, wipe, clear, label, enabled, self.version)

    def _advance(self, now: float, ready: bool, wait: int) -> None:
        if not ready:
            if self.state != "creating" and self.state != "restarting":
                self.go("restarting", now)
            return
        if self.state == "restarting":
            self.go("attract", now)
            return
        if self.cooldown and wait <= 0:
            self.go("composing", now, self.texts.ready_again)
        idle = now - self.last_touch
        if self.state in IDLE_WATCHED and idle >= self.idle_after:
            self.go("still-there", now)
        if self.state == "still-there" and idle >= self.idle_after + self.countdown:
            self.go("attract", now)  # the next visitor starts clean


def create_button(state: str, wait: int) -> tuple[str, bool]:
    """The Create button's label and whether it takes a touch: it counts the cooldown down itself."""
    if state == "creating":
        return "Creating…", False
    if wait > 0:
        return f"Next picture in {wait} s", False
    return "Create", True


class Screens:
    """One Screen per browser session, made on the session's first event whichever event that is, so that two
    events racing at page load cannot make two. A new server knows no session: every page starts again at attract.
    At most `keep` are kept (a kiosk has a screen or two; reloads and stray clients make more), the least recently
    used dropped first."""

    def __init__(self, make: Callable[[], Screen], keep: int = 64):
        self.make, self.keep = make, keep
        self._screens: OrderedDict[str, Screen] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str) -> Screen:
        with self._lock:
            screen = self._screens.pop(session, None) or self.make()
            self._screens[session] = screen
            while len(self._screens) > self.keep:
                self._screens.popitem(last=False)
            return screen

    def __len__(self) -> int:
        return len(self._screens)
