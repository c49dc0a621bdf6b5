"""A run's progress as people know it from other image tools: "Step N of M", the time left estimated from the steps
done, and a thin bar. Pure (no Gradio): the faces render it over the forming picture and stream its text to API
callers."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    step: int  # steps done
    steps: int
    seconds_left: float | None  # None until two steps are done (the first includes the text encoders)
    note: str = ""  # what is running, e.g. "4 images at once" or "FP8 side"

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.steps) if self.steps else 0.0

    def text(self) -> str:
        """One line: "Step 5 of 20 · 4 images at once · 3.4 s left"."""
        parts = [f"Step {self.step} of {self.steps}" if self.step else "Starting…"]
        if self.note:
            parts.append(self.note)
        if self.step and self.step >= self.steps:
            parts.append("finishing")
        elif self.seconds_left is not None:
            parts.append(f"{duration(self.seconds_left)} left")
        return " · ".join(parts)

    def html(self) -> str:
        """The overlay: the line, and a bar under it that a screen reader reads as a progress bar."""
        percent = round(100 * self.fraction, 1)
        return (f'<div class="run-progress" role="progressbar" aria-valuemin="0" aria-valuemax="{self.steps}" '
                f'aria-valuenow="{self.step}" aria-valuetext="{html.escape(self.text())}">'
                f'<div class="run-progress-text">{html.escape(self.text())}</div>'
                f'<div class="run-progress-bar"><div style="width: {percent}%"></div></div></div>')


STARTING = Snapshot(0, 0, None)


class StepClock:
    """Turns (step, steps) callbacks into Snapshots. The time left is the mean time of the steps after the first,
    times the steps to go: the first step also waits for the text encoders and, on a GPU, for a warm cache."""

    def __init__(self, note: Callable[[int, int], str] | str = "", clock: Callable[[], float] = time.monotonic):
        self._note = note
        self._clock = clock
        self._first: tuple[int, float] | None = None

    def at(self, step: int, steps: int, now: float | None = None) -> Snapshot:
        now = self._clock() if now is None else now
        if self._first is None or step < self._first[0]:
            self._first = (step, now)
        first_step, first_time = self._first
        left = None
        if step > first_step:
            left = max(0.0, (now - first_time) / (step - first_step) * (steps - step))
        note = self._note(step, steps) if callable(self._note) else self._note
        return Snapshot(step, steps, left, note)


def stopped_text(snapshot: Snapshot, then: str) -> str:
    """What the page says after Stop: where the run was, and `then` (what is shown now)."""
    at = f" at step {snapshot.step} of {snapshot.steps}" if snapshot.step else ""
    return f"⏹ Stopped{at}; {then}."


def duration(seconds: float) -> str:
    """3.4 s, 42 s, 2 min 05 s: tenths only where a second is a large part of what is left."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
