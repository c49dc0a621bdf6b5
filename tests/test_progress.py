"""A run's progress: "Step N of M", the time left from the steps done, the bar; and the relay that carries the steps
out of the worker thread."""

import time

from fp8demo.web.events import stream, stream_steps
from fp8demo.web.progress import STARTING, StepClock, duration, stopped_text


def test_time_left_comes_from_the_steps_after_the_first():
    clock = StepClock()
    first = clock.at(1, 20, now=10.0)  # the first step also waited for the text encoders: no estimate yet
    assert first.text() == "Step 1 of 20" and first.seconds_left is None
    assert clock.at(3, 20, now=11.0).seconds_left == 8.5  # 0.5 s a step, 17 to go
    assert clock.at(11, 20, now=15.0).text() == "Step 11 of 20 · 4.5 s left"
    assert clock.at(20, 20, now=19.5).text() == "Step 20 of 20 · finishing"  # the VAE is left


def test_a_note_says_what_runs_and_the_bar_is_a_progressbar():
    clock = StepClock(lambda i, n: "16-bit side" if i <= n // 2 else "FP8 side")
    clock.at(1, 8, now=0.0)
    snapshot = clock.at(6, 8, now=5.0)
    assert snapshot.text() == "Step 6 of 8 · FP8 side · 2.0 s left"
    html = snapshot.html()
    assert 'role="progressbar"' in html and 'aria-valuenow="6"' in html and "width: 75.0%" in html
    assert StepClock("4 images at once").at(2, 4, now=0).text() == "Step 2 of 4 · 4 images at once"
    assert STARTING.text() == "Starting…"


def test_durations_and_the_stop_line():
    assert [duration(s) for s in (3.44, 42.4, 125)] == ["3.4 s", "42 s", "2 min 05 s"]
    assert stopped_text(StepClock().at(5, 20, now=0), "the last result is back") == \
        "⏹ Stopped at step 5 of 20; the last result is back."
    assert stopped_text(STARTING, "the last result is kept") == "⏹ Stopped; the last result is kept."


def test_the_relay_keeps_the_newest_step_and_frame_and_times_them_in_the_worker():
    def work(preview, on_step):
        for i in range(1, 4):
            on_step(i, 3)
            preview(f"frame {i}")
        time.sleep(0.05)
        yield "done"

    events = list(stream_steps(work))
    assert events[-1] == ("item", "done")
    steps = [value for kind, value in events if kind == "step"]
    assert steps[-1][0][:2] == (3, 3) and steps[-1][1] == ["frame 3"]  # the newest of those that came together
    assert all(isinstance(step[2], float) for step, _ in steps)


def test_the_previews_only_relay_passes_a_none_frame_on():
    """The kiosk clears the forming picture with a frame of None (a withheld picture): it must reach the page."""
    def work(preview):
        preview("frame")
        time.sleep(0.05)
        preview(None)
        time.sleep(0.05)
        yield "done"

    assert list(stream(work)) == [("preview", "frame"), ("preview", None), ("item", "done")]
