"""Kiosk mode served on a free port: the API obeys the kiosk rules, and the page behaves in headless Chromium."""

import re
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port
from PIL import Image

from fp8demo import config
from fp8demo.faces.kiosk.face import face as kiosk_face
from fp8demo.faces.kiosk.page import build_kiosk_ui
from fp8demo.faces.kiosk.service import KioskService
from fp8demo.imageio import read_parameters
from fp8demo.web.server import launch
from fp8demo.web.service import DemoService

SETTINGS = config.KioskConfig(idle_after=4, countdown=3, attract_every=1, cooldown=3,
                              public_url="http://kiosk.example:7860")


@pytest.fixture(scope="module")
def kiosk_app(tiny_engine):
    service = DemoService.from_engine(tiny_engine)
    app_cfg = replace(service.cfg, host="127.0.0.1", port=free_port(), face="kiosk")
    kiosk = KioskService(service, SETTINGS)
    demo = build_kiosk_ui(kiosk)
    launch(demo, kiosk_face(SETTINGS), service, app_cfg, block=False)
    yield kiosk, f"http://127.0.0.1:{app_cfg.port}/"
    demo.close()


def refusals(kiosk) -> dict[str, float]:
    """fp8demo_refusals_total by reason, as /metrics shows it."""
    from prometheus_client.parser import text_string_to_metric_families

    text, _ = kiosk.service.metrics.text()
    return {s.labels["reason"]: s.value for family in text_string_to_metric_families(text.decode())
            for s in family.samples if s.name == "fp8demo_refusals_total"}


def test_api_enforces_moderation_cooldown_and_the_negative_prompt(kiosk_app):
    from gradio_client import Client

    kiosk, url = kiosk_app
    client = Client(url, verbose=False)
    before = kiosk.moderator.refused
    counted = refusals(kiosk)
    files_before = set(kiosk.service.output_dir.iterdir())
    status, image, qr = client.predict(prompt="a N.A.K.E.D man", api_name="/create")
    assert "different idea" in status and "naked" not in status.lower()
    assert not isinstance(image, str)  # no picture
    assert kiosk.moderator.refused == before + 1
    assert set(kiosk.service.output_dir.iterdir()) == files_before  # nothing of the refused prompt is stored

    status, image, qr = client.predict(prompt="a lighthouse at dusk", api_name="/create")
    assert status.startswith("Here it is") and Image.open(image).size == (512, 512)
    assert Image.open(qr).size[0] > 100  # the take-home code, because a public URL is configured
    status, image, _ = client.predict(prompt="a second lighthouse", api_name="/create")
    assert re.search(r"wait \d s", status) and not isinstance(image, str)  # the cooldown, on the API path too
    # both refusals are in the operator's metrics, by why
    assert {r: n - counted.get(r, 0) for r, n in refusals(kiosk).items() if n != counted.get(r, 0)} == {
        "moderation": 1, "cooldown": 1}
    time.sleep(SETTINGS.cooldown)
    status, _, _ = client.predict(prompt="a second lighthouse", api_name="/create")
    assert status.startswith("Here it is")

    attract_copy, _ = kiosk.recent[0]
    newest = kiosk.service.output_dir / (attract_copy.stem + ".png")
    assert kiosk.service.wait_for_file(newest)  # written in the background
    params = read_parameters(newest)
    assert params.startswith("a second lighthouse") and "Negative prompt" not in params  # no effect at guidance 0
    take = httpx.get(url + "take/" + newest.name)
    assert take.status_code == 200 and take.headers["content-type"] == "image/png"
    assert httpx.get(url + "take/..%2Fetc%2Fpasswd").status_code == 404
    assert httpx.get(url + "take/fp8demo-1-deadbeef.png").status_code == 404
    # recent creations lead the loop, uncaptioned by default, as a JPEG copy that does not carry the prompt
    assert kiosk.attract_images()[0] == (str(attract_copy), "")
    with Image.open(attract_copy) as copy:
        assert copy.format == "JPEG" and not copy.info.get("parameters") and b"lighthouse" not in copy.tobytes()
    assert b"lighthouse" not in attract_copy.read_bytes()


def test_kiosk_exposes_only_create(kiosk_app):
    from gradio_client import Client

    endpoints = Client(kiosk_app[1], verbose=False).view_api(return_format="dict", print_info=False)
    assert list(endpoints["named_endpoints"]) == ["/create"]


PICTURE_FILL = """() => {  // the height the picture itself is drawn at (object-fit: contain), over the screen's
  const i = document.querySelector('#kiosk-image img'), r = i.getBoundingClientRect();
  return Math.min(r.height, r.width * i.naturalHeight / i.naturalWidth) / window.innerHeight;
}"""


@contextmanager
def kiosk_screen(url: str, width: int, height: int):
    """The kiosk page in headless Chromium on a screen of width x height."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        yield page
        browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_kiosk_page_attract_chip_refusal_and_idle_reset(kiosk_app):
    _, url = kiosk_app
    with kiosk_screen(url, 1920, 1080) as page:
        page.locator("#attract-image img").wait_for(timeout=20_000)  # idle: the attract loop
        assert page.get_by_text("Use via API").count() == 0  # no footer, no way off the page
        start = page.locator("#start").bounding_box()
        page.wait_for_timeout(2_200)  # two more attract pictures
        assert page.locator("#start").bounding_box() == start  # the call to action never moves
        page.mouse.click(300, 300)  # a touch anywhere starts
        page.locator("#kiosk-prompt textarea").wait_for(timeout=10_000)

        page.locator(".chip").first.click()  # one touch: the chip's prompt is made into a picture
        page.locator("#kiosk-status").get_by_text("Here it is").wait_for(timeout=60_000)
        assert page.locator("#kiosk-prompt textarea").input_value()  # the chip filled the prompt
        assert page.evaluate(PICTURE_FILL) >= 0.8
        assert page.get_by_text("Scan to take it home").is_visible()
        page.locator("#create").get_by_text("Next picture in").wait_for(timeout=5_000)  # the cooldown counts down
        page.wait_for_timeout(600)

        page.locator("#kiosk-prompt textarea").fill("a nude portrait")
        page.locator("#create").get_by_text("Create").wait_for(timeout=10_000)
        page.locator("#create").click()
        page.locator("#kiosk-status").get_by_text("different idea").wait_for(timeout=10_000)

        page.get_by_text("Are you still there?").wait_for(timeout=15_000)  # idle: the countdown
        page.locator("#attract-image img").wait_for(timeout=15_000)  # then the reset
        page.locator("#start").click()
        page.locator("#kiosk-prompt textarea").wait_for(timeout=10_000)
        assert page.locator("#kiosk-prompt textarea").input_value() == ""  # the next visitor starts clean


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_kiosk_portrait_fills_the_height_and_keeps_no_run_history(kiosk_app):
    _, url = kiosk_app
    with kiosk_screen(url, 1080, 1920) as page:
        page.locator("#start").click()
        page.locator("#kiosk-prompt textarea").fill("a tall tower in the clouds")
        page.locator("#create").click()
        page.locator("#kiosk-status").get_by_text("Here it is").wait_for(timeout=60_000)
        assert page.evaluate(PICTURE_FILL) >= 0.8  # a 9:16 picture on a portrait screen
        chips = [page.locator(".chip").nth(i).bounding_box() for i in range(page.locator(".chip").count())]
        for a, b in zip(chips, chips[1:], strict=False):  # side by side in one row, never on top of each other
            assert a["x"] + a["width"] <= b["x"] + 0.5
        page.wait_for_timeout(600)
        # Nothing of this visitor is kept in the shared browser: run history is off and its page is gone
        assert page.request.get(url + "gradio_api/runs").status == 404
        assert page.request.get(url + "config").json()["run_history"] is False
