"""The kiosk screen's states as pure logic (faces/kiosk/screen.py), driven by a fake clock: from every state one
touch leads to the attract screen or the controls, every reset goes through Screen.go, and random walks of
thousands of events never leave a screen stuck. The same claims in Chromium: test_kiosk_page.py."""

import copy
import random

import pytest

from fp8demo.faces.kiosk.rules import cooldown_text
from fp8demo.faces.kiosk.screen import CONTROLS, STATES, Screen, Screens, Texts, create_button

IDLE, COUNTDOWN = 10.0, 5.0


def screen_in(state: str) -> tuple[Screen, float]:
    """A screen brought into `state` the way visitors and the server bring it there; (screen, now)."""
    s = Screen(IDLE, COUNTDOWN, attract_every=3, now=0)
    if state == "attract":
        return s, 1
    if state == "restarting":
        s.scene(1, ready=False)
        return s, 1
    s.touch(1)
    if state == "composing":
        return s, 2
    s.begin(2)
    if state == "creating":
        return s, 3
    if state == "refused":
        s.refuse("That one is not for this screen.", 3, clear_prompt=True)
        return s, 4
    if state == "error":
        s.fail(None, 3)
        return s, 4
    s.done(3)
    if state == "result":
        return s, 4
    if state == "picture-alone":
        s.tap_picture(4)
        return s, 5
    assert state == "still-there"
    s.scene(3 + IDLE)
    return s, 3 + IDLE + 1


@pytest.mark.parametrize("state", STATES)
def test_every_state_is_reachable_and_one_touch_shows_attract_or_the_controls(state):
    s, now = screen_in(state)
    assert s.scene(now, ready=state != "restarting").state == state
    s.touch(now + 0.1)
    after = s.scene(now + 0.2, ready=state != "restarting")
    if state == "restarting":  # the engine is not ready: nothing a touch can start; the page shows the attract art
        assert after.state == "restarting"
    else:
        assert after.state in CONTROLS | {"attract"}, after


def test_the_issue_picture_alone_then_idle_reset_then_a_touch():
    """Touch the finished picture, walk away: the reset brings attract back with nothing of picture-alone left,
    and the next touch shows the controls (it showed a black screen with a broken image)."""
    s, now = screen_in("picture-alone")
    assert s.scene(now).state == "picture-alone"
    assert s.scene(now + IDLE).state == "still-there"
    reset = s.scene(now + IDLE + COUNTDOWN + 0.1)
    assert reset.state == "attract" and reset.wipe
    s.touch(now + 100)
    scene = s.scene(now + 100)
    assert scene.state == "composing" and scene.controls and scene.status == Texts().welcome


def test_go_clears_what_belonged_to_other_states():
    s, now = screen_in("refused")
    first = s.scene(now)
    assert first.clear_prompt and first.state == "refused"  # a refused prompt leaves the box, once
    assert not s.scene(now).clear_prompt
    s.typing(s.since + 0.1, keys=True)  # keys typed before Create, arriving just after the refusal: it stays
    assert s.scene(s.since + 0.1).state == "refused"
    s.typing(now + 1)  # the visitor types again: the refusal gives way
    assert s.scene(now + 1).status == Texts().welcome
    s.refuse(cooldown_text(3), now + 2, cooldown=True)
    assert s.scene(now + 2, wait=3).status == cooldown_text(3)
    assert s.scene(now + 3, wait=2).status == cooldown_text(2)  # the refusal's seconds count with the button
    after = s.scene(now + 5, wait=0)
    assert after.state == "composing" and after.status == Texts().ready_again and after.create_enabled
    s.go("attract", now + 6)
    scene = s.scene(now + 6)
    assert scene.wipe and not scene.clear_prompt and scene.status == Texts().welcome
    with pytest.raises(ValueError):
        s.go("nowhere", now + 7)


def test_still_there_goes_back_where_the_visitor_was():
    s, now = screen_in("refused")
    s.scene(now)
    assert s.scene(now + IDLE).state == "still-there"
    s.touch(now + IDLE + 1)
    back = s.scene(now + IDLE + 1)
    assert back.state == "refused" and back.status == "That one is not for this screen."
    s, now = screen_in("picture-alone")
    s.scene(now + IDLE)
    s.touch(now + IDLE + 1)
    assert s.scene(now + IDLE + 1).state == "result"  # the controls, not the picture alone


def test_the_picture_alone_and_back():
    s, now = screen_in("result")
    assert s.tap_picture(now) == "picture-alone"
    assert s.tap_picture(now + 1) == "result"  # a touch on the picture goes back too
    s.tap_picture(now + 2)
    assert s.touch(now + 3) == "result"  # and a touch anywhere
    composing, now = screen_in("composing")
    assert composing.tap_picture(now) == "composing"  # only a finished picture is shown alone
    s, now = screen_in("result")
    s.refuse(cooldown_text(3), now, cooldown=True)  # the picture stays beside a refusal
    assert s.tap_picture(now + 1) == "picture-alone"
    assert s.scene(now + 1, wait=2).state == "picture-alone"
    s.touch(now + 2)
    back = s.scene(now + 2, wait=2)
    assert back.state == "refused" and back.status == cooldown_text(2)  # back where the visitor was
    s.fail(None, now + 3)
    assert s.tap_picture(now + 4) == "error"  # an error drops the half-made picture: nothing to show alone


def test_restarting_while_the_engine_is_not_ready():
    s, now = screen_in("result")
    assert s.scene(now, ready=False).state == "restarting"
    back = s.scene(now + 1, ready=True)
    assert back.state == "attract" and back.wipe  # a restarted engine starts with the attract loop, clean
    busy, now = screen_in("creating")
    assert busy.scene(now, ready=False).state == "creating"  # a picture under way finishes or fails on its own


def test_one_picture_at_a_time_and_the_create_button():
    s, now = screen_in("creating")
    assert not s.begin(now)  # still being made: nothing changes
    assert s.scene(now).create_label == "Creating…" and not s.scene(now).create_enabled
    s.place("You are next")
    assert s.scene(now).status == "You are next"
    assert create_button("result", 4) == ("Next picture in 4 s", False)
    assert create_button("composing", 0) == ("Create", True)


def test_a_new_screen_wipes_what_the_browser_still_shows():
    """A restarted server gives every page a new Screen: its first scene clears the old visitor's prompt and
    picture."""
    first = Screen(IDLE, COUNTDOWN, 3, now=50).scene(50)
    assert first.state == "attract" and first.wipe


def test_one_screen_per_session_and_a_bounded_number_of_them():
    made = []
    screens = Screens(lambda: made.append(Screen(IDLE, COUNTDOWN, 3, now=0)) or made[-1], keep=3)
    a = screens.get("a")
    assert screens.get("a") is a and len(made) == 1  # every event of a session finds its screen
    for session in "bcd":
        screens.get(session)
    assert len(screens) == 3 and screens.get("a") is not a  # the least recently used went first
    newer = [Screen(IDLE, COUNTDOWN, 3, now=0).scene(0).version for _ in range(3)]
    assert newer == sorted(newer) and len(set(newer)) == 3  # changes are numbered across all screens


EVENTS = ("touch", "typing", "tap_picture", "begin", "done", "refuse", "cooldown", "fail", "place", "idle",
          "not_ready", "ready")


@pytest.mark.parametrize("seed", range(5))
def test_random_walks_never_trap_a_visitor(seed):
    """Thousands of random events (touches, pictures, refusals, failures, idle spells, an engine that stops and
    starts): every scene is a known state, one touch always leads to attract or the controls, the wipe comes only
    on entering attract, and a screen left alone always comes back to attract."""
    rng = random.Random(seed)
    s = Screen(IDLE, COUNTDOWN, 3, now=0)
    now, ready, wait = 0.0, True, 0
    for step in range(3000):
        event = rng.choice(EVENTS)
        now += rng.choice((0.01, 0.5, 2.0))
        wait = max(0, wait - 1)
        if event == "touch":
            s.touch(now)
        elif event == "typing":
            s.typing(now)
        elif event == "tap_picture":
            s.tap_picture(now)
        elif event == "begin":
            s.begin(now)
        elif event == "done" and s.state == "creating":
            s.done(now)
            wait = 3
        elif event == "refuse" and s.state == "creating":
            s.refuse("no", now, clear_prompt=True)
        elif event == "cooldown" and s.state == "creating":
            wait = 3
            s.refuse(cooldown_text(wait), now, cooldown=True)
        elif event == "fail" and s.state == "creating":
            s.fail(None, now)
        elif event == "place":
            s.place("You are next")
        elif event == "idle":
            now += rng.choice((IDLE, IDLE + COUNTDOWN / 2, IDLE + COUNTDOWN + 1))
        elif event == "not_ready":
            ready = False
        elif event == "ready":
            ready = True
        scene = s.scene(now, ready, wait)
        assert scene.state in STATES
        assert not scene.wipe or scene.state == "attract" or step == 0  # (a new screen's first scene wipes)
        if scene.state == "still-there":
            assert 0 < scene.seconds_left <= COUNTDOWN
        if ready and scene.state != "creating":
            probe = copy.copy(s)  # the same screen, touched once, without changing the walk
            probe.touch(now + 0.01)
            assert probe.scene(now + 0.01, ready, wait).state in CONTROLS | {"attract"}
    if s.state == "creating":
        s.done(now)
    final = s.scene(now + IDLE + COUNTDOWN + 1, True, 0)
    assert final.state == "attract"  # nobody there: the attract loop, whatever happened before
