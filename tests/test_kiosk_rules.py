"""Kiosk rules as pure logic, driven by a fake clock (the screen's states: test_kiosk_screen.py; moderation:
test_moderation.py)."""

import threading

import pytest

from fp8demo.faces.kiosk.rules import KioskRefusal, Line, SessionGate, place_text
from fp8demo.faces.kiosk.screen import Screen


def test_screen_idle_cycle():
    m = Screen(idle_after=60, countdown=15, attract_every=6, now=0)
    assert m.scene(0).state == "attract"  # a fresh screen shows the attract loop
    assert m.scene(13).attract_index == 2
    m.touch(100)
    assert m.scene(100).state == "composing" and m.scene(159.9).state == "composing"
    v = m.scene(160)
    assert v.state == "still-there" and v.seconds_left == 15
    assert m.scene(174.2).seconds_left == 1
    m.touch(170)  # "I'm still here"
    assert m.scene(171).state == "composing"
    reset = m.scene(245)  # 75 s after the last touch
    assert reset.state == "attract" and reset.wipe
    again = m.scene(246)
    assert again.state == "attract" and not again.wipe  # the reset happens once
    assert m.scene(245 + 6).attract_index == 1  # the loop restarts from the first picture


def test_generation_pauses_the_timers():
    m = Screen(idle_after=10, countdown=5, attract_every=3, now=0)
    m.touch(0)
    assert m.begin(5)
    assert m.scene(100).state == "creating"  # a slow picture never triggers the countdown
    m.done(100)
    assert m.scene(109).state == "result"  # the idle clock restarts when the picture arrives
    assert m.scene(110).state == "still-there"


def test_cooldown_and_one_job_per_session():
    gate = SessionGate(cooldown=10)
    gate.begin("a", now=0)
    with pytest.raises(KioskRefusal, match="still being made"):
        gate.begin("a", now=1)
    gate.begin("b", now=1)  # another visitor is not blocked
    gate.end("a", now=3)
    with pytest.raises(KioskRefusal, match="wait 4 s"):
        gate.begin("a", now=9)
    gate.begin("a", now=13)


def test_line_is_first_come_first_served_with_places():
    line = Line()
    a, b, c = line.join(), line.join(), line.join()
    assert [line.ahead(t) for t in (a, b, c)] == [0, 1, 2]
    assert place_text(0).startswith("Making") and "next" in place_text(1) and "2 people ahead" in place_text(2)
    order = []

    def visitor(ticket, name):
        while line.wait_turn(ticket, timeout=1.0):
            pass
        order.append(name)
        line.leave(ticket)

    threads = [threading.Thread(target=visitor, args=(t, n)) for t, n in ((c, "c"), (b, "b"))]
    for t in threads:
        t.start()
    line.leave(a)
    for t in threads:
        t.join(5)
    assert order == ["b", "c"]


def test_a_wider_line_has_as_many_visitors_going_at_once():
    engines = [2]
    line = Line(lambda: engines[0])
    a, b, c, d = (line.join() for _ in range(4))
    assert [line.ahead(t) for t in (a, b, c, d)] == [0, 0, 1, 2]
    assert line.wait_turn(b, timeout=0) == 0
    engines[0] = 1  # an engine taken out of the pool: the line narrows
    assert [line.ahead(t) for t in (a, b, c, d)] == [0, 1, 2, 3]
    line.leave(a)
    assert [line.ahead(t) for t in (b, c, d)] == [0, 1, 2]


def test_cooldown_counts_down_to_zero():
    gate = SessionGate(cooldown=10)
    assert gate.wait_left("a", now=0) == 0  # a new visitor never waits
    gate.begin("a", now=0)
    gate.end("a", now=2)
    assert [gate.wait_left("a", now=t) for t in (2, 2.5, 11, 12)] == [10, 10, 1, 0]
