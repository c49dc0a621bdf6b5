"""The image-level safety layer (fp8demo/web/safety.py): every picture is checked by the classifier before a face
shows it, offers it for take-home or keeps it. Threshold 0 withholds every picture; the default passes the tiny
model's noise. The pages in headless Chromium, the API through HTTP, the layer itself in-process."""

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, serve
from PIL import Image

from fp8demo import config
from fp8demo import serve as serve_cli
from fp8demo.errors import SetupError, UserError
from fp8demo.faces.generate.face import face as generate_face
from fp8demo.faces.kiosk.face import face as kiosk_face
from fp8demo.faces.kiosk.page import build_kiosk_ui
from fp8demo.faces.kiosk.service import KioskService
from fp8demo.request import GenerationRequest
from fp8demo.web.safety import WITHHELD, ImageSafety, ImageWithheld, PreviewGate
from fp8demo.web.server import launch
from fp8demo.web.service import DemoService

KIND = "can't show this picture"  # a piece of the kind message, as the pages show it
SETTINGS = config.KioskConfig(cooldown=0, public_url="http://kiosk.example:7860")
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def no_picture(value) -> bool:
    """An event output that carries no image: None, or an update that leaves the component as it is."""
    return not isinstance(value, str) and not (isinstance(value, dict) and (value.get("path") or value.get("url")))


def by_size(flag_from: int):
    """A stand-in classifier that flags pictures at least `flag_from` px wide: the finished picture, not its small
    preview frames (which are 1/8 of its side)."""
    return lambda image: 1.0 if image.width >= flag_from else 0.0


# ---- the layer itself -----------------------------------------------------------------------------------------


def test_threshold_bounds_and_the_environment(monkeypatch):
    with pytest.raises(SetupError, match="between 0 and 1, got 1.5"):
        ImageSafety(1.5)
    monkeypatch.delenv("FP8DEMO_IMAGE_SAFETY_THRESHOLD", raising=False)
    assert config.AppConfig().image_safety_threshold == config.IMAGE_SAFETY_THRESHOLD == 0.5
    monkeypatch.setenv("FP8DEMO_IMAGE_SAFETY_THRESHOLD", "0")
    assert config.AppConfig().image_safety_threshold == 0.0
    monkeypatch.setenv("FP8DEMO_IMAGE_SAFETY_THRESHOLD", "high")
    with pytest.raises(ValueError, match="FP8DEMO_IMAGE_SAFETY_THRESHOLD must be a number from 0 to 1"):
        config.AppConfig()


def test_on_for_the_kiosk_optional_for_generate():
    assert kiosk_face(SETTINGS).image_safety is True and generate_face().image_safety is False
    for argv, expected in (([], None), (["--image-safety"], True), (["--kiosk", "--no-image-safety"], False)):
        assert serve_cli.app_config(serve_cli.parse_args(argv)).image_safety is expected


def test_the_classifier_scores_noise_low_and_threshold_zero_withholds_all():
    noise = Image.effect_noise((512, 512), 60).convert("RGB")
    safety = ImageSafety(config.IMAGE_SAFETY_THRESHOLD).load()
    assert safety.score(noise) < 0.1 and safety.passes(noise)
    safety.check([noise, noise])
    zero = ImageSafety(0.0).load()
    assert not zero.passes(noise)
    with pytest.raises(ImageWithheld) as withheld:
        zero.check([noise])
    assert str(withheld.value) == WITHHELD and isinstance(withheld.value, UserError)
    assert (zero.checked, zero.withheld) == (1, 1)


def test_a_failing_classifier_withholds_the_picture():
    def broken(image):
        raise RuntimeError("onnxruntime fell over")

    with pytest.raises(ImageWithheld):
        ImageSafety(0.5, scorer=broken).check([Image.new("RGB", (8, 8))])


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def test_preview_frames_are_checked_and_none_follows_a_flagged_one():
    """The gate's rule: a frame goes out only once it passed; after one is flagged no later frame does (they are
    sharper versions of the same picture); after close() nothing does."""
    shown = []
    gate = PreviewGate(ImageSafety(0.5, scorer=lambda image: image.getpixel((0, 0))[0] / 255), shown.append)
    calm, alarming = Image.new("RGB", (8, 8), (10, 0, 0)), Image.new("RGB", (8, 8), (250, 0, 0))
    gate(calm)
    assert _wait(lambda: len(shown) == 1)
    gate(alarming)
    assert _wait(lambda: gate.flagged)
    gate(calm)  # a calm frame after a flagged one: not shown
    time.sleep(0.1)
    gate.close()
    assert shown == [calm] and gate.shown == 1

    after = []
    closed = PreviewGate(ImageSafety(0.5, scorer=lambda image: 0.0), after.append)
    closed.close()
    closed(calm)
    time.sleep(0.1)
    assert after == []


# ---- the service's job path: every face and route ---------------------------------------------------------------


@pytest.fixture
def service(tiny_engine):
    return DemoService.from_engine(tiny_engine)


def test_the_service_withholds_before_anything_is_shown_or_saved(service, monkeypatch):
    request = GenerationRequest("a lighthouse", steps=6, width=256, height=256)
    frames = []
    service.use_image_safety(ImageSafety(config.IMAGE_SAFETY_THRESHOLD).load())
    passed = service.generate(request, preview=frames.append, num_images=2)  # noise passes the default
    assert len(passed.images) == 2 and _wait(lambda: len(frames) >= 1)
    frames.clear()
    service.use_image_safety(ImageSafety(0.0).load())
    with pytest.raises(ImageWithheld):
        service.generate(request, preview=frames.append)
    time.sleep(0.1)
    assert frames == []  # at threshold 0 every preview frame is flagged too
    # the comparison's pictures too (its two transformers stand in here: loading the 16-bit one takes seconds)
    side = SimpleNamespace(image=passed.image)
    monkeypatch.setattr(service, "_compare", lambda *args: SimpleNamespace(baseline=side, fp8=side))
    monkeypatch.setattr(service, "_compare_sheet", lambda *args: [SimpleNamespace(baseline=side, fp8=side)] * 2)
    with pytest.raises(ImageWithheld):
        service.compare(request)
    with pytest.raises(ImageWithheld):
        service.compare_sheet(["a", "b"], request)
    assert service.image_safety.withheld == 3


def test_the_kiosk_clears_the_screen_when_the_finished_picture_is_withheld(service):
    """Preview frames that passed were on screen: a withheld picture takes them away (preview(None))."""
    service.use_image_safety(ImageSafety(0.5, scorer=by_size(256)))
    kiosk = KioskService(service, replace(SETTINGS, steps=6, width=256, height=256))
    frames = []
    with pytest.raises(ImageWithheld):
        for _ in kiosk.create("a lighthouse", "127.0.0.1", preview=frames.append):
            pass
    assert frames and frames[-1] is None and all(f is not None for f in frames[:-1])
    assert not kiosk.recent


@pytest.fixture(scope="module")
def kiosk_app(tiny_engine):
    """The kiosk as served: the face turns the layer on by itself (no flag, no setting)."""
    service = DemoService.from_engine(tiny_engine)
    app_cfg = replace(service.cfg, host="127.0.0.1", port=free_port(), face="kiosk")
    kiosk = KioskService(service, SETTINGS)
    demo = build_kiosk_ui(kiosk)
    launch(demo, kiosk_face(SETTINGS), service, app_cfg, block=False)
    assert service.image_safety is not None and service.image_safety.threshold == config.IMAGE_SAFETY_THRESHOLD
    yield kiosk, f"http://127.0.0.1:{app_cfg.port}/"
    demo.close()


def test_kiosk_api_at_threshold_zero_leaves_nothing_and_the_default_passes(kiosk_app, monkeypatch):
    from gradio_client import Client

    kiosk, url = kiosk_app
    client = Client(url, verbose=False)
    saved = []
    monkeypatch.setattr(kiosk.service, "save_png", lambda result: saved.append(result))
    monkeypatch.setattr(kiosk.service.image_safety, "threshold", 0.0)
    before = files(kiosk.service.output_dir)
    status, image, qr = client.predict(prompt="a lighthouse at dusk", api_name="/create")
    assert KIND in status and no_picture(image) and no_picture(qr)  # the kind message; no picture, no QR code
    # the kiosk's own event through Gradio's call route (what the page's queue and gradio_client use is above)
    event = httpx.post(url + "gradio_api/call/create", json={"data": ["a red boat", None, None, None, None]},
                       timeout=60)
    answer = httpx.get(url + f"gradio_api/call/create/{event.json()['event_id']}", timeout=60).text
    assert KIND in answer and ".jpeg" not in answer and ".png" not in answer
    # no PNG, no attract-loop copy: the picture has no file and no name that /take/ could ever serve
    assert saved == [] and files(kiosk.service.output_dir) == before and not kiosk.recent

    monkeypatch.undo()  # the default threshold: the tiny model's noise passes
    status, image, qr = client.predict(prompt="a lighthouse at dusk", api_name="/create")
    assert status.startswith("Here it is") and Image.open(image).size == (512, 512) and qr is not None
    png = kiosk.service.output_dir / (kiosk.recent[0][0].stem + ".png")
    assert kiosk.service.wait_for_file(png) and httpx.get(url + "take/" + png.name).status_code == 200


WATCH = """(selector) => { window.shown = [];
  new MutationObserver(() => document.querySelectorAll(selector + ' img').forEach(i => {
    if (i.src && !window.shown.includes(i.src)) window.shown.push(i.src); }))
  .observe(document.body, {subtree: true, childList: true, attributes: true}); }"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@needs_chromium
def test_kiosk_page_shows_the_kind_message_and_no_picture(kiosk_app, browser, monkeypatch):
    kiosk, url = kiosk_app
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(url)
    page.locator("#attract-image img").wait_for(timeout=20_000)  # the page is up: the attract loop
    page.locator("#start").click()
    prompt = page.locator("#kiosk-prompt textarea")
    prompt.wait_for(state="visible", timeout=10_000)

    monkeypatch.setattr(kiosk.service.image_safety, "threshold", 0.0)
    before = files(kiosk.service.output_dir)
    page.evaluate(WATCH, "#kiosk-image")
    prompt.fill("a lighthouse at dusk")
    page.locator("#create").click()
    page.locator("#kiosk-status").get_by_text(KIND).wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.shown") == []  # not the picture, nor a single frame of it forming
    assert page.locator("#kiosk-qr img").count() == 0
    assert files(kiosk.service.output_dir) == before

    # previews that passed were on screen, the finished picture is flagged: the screen is cleared
    monkeypatch.setattr(kiosk.service.image_safety, "_scorer", by_size(256))
    monkeypatch.setattr(kiosk.service.image_safety, "threshold", 0.5)
    page.evaluate(WATCH, "#kiosk-image")
    prompt.fill("a lighthouse at night")
    page.locator("#create").click()
    page.locator("#kiosk-status").get_by_text(KIND).wait_for(state="detached", timeout=30_000)  # the new job
    page.locator("#kiosk-status").get_by_text(KIND).wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert len(page.evaluate("() => window.shown")) >= 1  # the picture was forming on screen
    assert page.locator("#kiosk-image img").count() == 0
    assert page.locator("#kiosk-qr img").count() == 0
    page.close()


# ---- the Generate page with --image-safety ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def generate_app(tiny_engine):
    service = DemoService.from_engine(tiny_engine)
    demo, url = serve(service, image_safety=True, image_safety_threshold=0.0)  # as --image-safety with threshold 0
    yield service, url
    demo.close()


def test_generate_api_gets_an_error_at_threshold_zero(generate_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    service, url = generate_app
    before = files(service.output_dir)
    with pytest.raises(AppError, match=KIND):
        Client(url, verbose=False).predict(prompt="a red fox", seed=3, randomize_seed=False, steps=2,
                                           aspect_ratio="256x256", api_name="/generate")
    event = httpx.post(url + "gradio_api/call/generate", json={"data": ["a red fox", "", 3, False, 2, 0.0,
                                                                         "256x256", 1, None]}, timeout=60)
    answer = httpx.get(url + f"gradio_api/call/generate/{event.json()['event_id']}", timeout=60).text
    assert "event: error" in answer and KIND in answer
    assert files(service.output_dir) == before
    assert httpx.get(url + "take/fp8demo-3-deadbeef.png").status_code == 404


@needs_chromium
def test_generate_page_shows_the_kind_message_above_the_last_good_result(generate_app, browser, monkeypatch):
    service, url = generate_app
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    page.get_by_text("Ready:").wait_for(timeout=30_000)
    page.locator("#advanced").click()
    page.locator("#aspect input").fill("256x256")
    page.keyboard.press("Enter")
    page.locator("#steps input[type=number]").fill("6")
    page.keyboard.press("Tab")
    prompt = page.locator("#prompt textarea")
    before = files(service.output_dir)

    page.evaluate(WATCH, "#result")
    prompt.fill("a lighthouse on a cliff")
    prompt.press("Enter")
    page.locator("#run-error").get_by_text(KIND).wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.shown") == []  # no picture and no frame of it
    assert page.locator("#download a").count() == 0 and page.get_by_text("Error", exact=True).count() == 0
    assert files(service.output_dir) == before

    monkeypatch.setattr(service.image_safety, "threshold", config.IMAGE_SAFETY_THRESHOLD)
    prompt.press("Enter")
    page.locator("#result-info").get_by_text("denoising").wait_for(timeout=60_000)
    assert page.locator("#run-error").inner_text().strip() == ""
    png = page.locator("#download a").first.get_attribute("download")
    links = page.locator("#download").inner_html()

    monkeypatch.setattr(service.image_safety, "threshold", 0.0)
    prompt.fill("a lighthouse in a storm")
    prompt.press("Enter")
    page.locator("#run-error").get_by_text(KIND).wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert png in page.locator("#result img").first.get_attribute("src")  # the last good result, kept
    assert page.locator("#download").inner_html() == links
    assert len(files(service.output_dir) - before) == 1  # the good picture's PNG, and only it
    page.close()
