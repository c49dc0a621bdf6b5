"""The page in headless Chromium (Debian's package, driven by Playwright): Enter, preview, errors, batches, phone.

Set FP8DEMO_SCREENSHOTS=<dir> to save the screenshots of the README and docs/ while it runs.
"""

import io
import re
import time
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, CONTRAST_JS, SHOTS, serve
from PIL import Image

from fp8demo.errors import OutOfMemory
from fp8demo.web.service import DemoService

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def url(tiny_engine):
    demo, url = serve(DemoService.from_engine(tiny_engine))
    yield url
    demo.close()


def shot(page, name: str, full_page: bool = False) -> None:
    """The page as the docs show it (FP8DEMO_SCREENSHOTS=assets/screenshots), as a PNG of 256 colours: a third of
    the size for the same look (the offline model's pictures are noise)."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        picture = Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
        picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            Path(SHOTS) / name, optimize=True)


def _ready(page, url):
    page.goto(url)
    page.get_by_text("Ready:").wait_for(timeout=30_000)


def _settings(page, steps=None, num_images=None, size="256x256"):
    """Small and quick: the tiny model at 256 px."""
    page.locator("#advanced").click()
    page.locator("#aspect input").fill(size)
    page.keyboard.press("Enter")
    for elem, value in (("#steps", steps), ("#num-images", num_images)):
        if value is not None:
            page.locator(f"{elem} input[type=number]").fill(str(value))
            page.keyboard.press("Tab")


def _settings_open(page, steps=None, size="256x256"):
    """The settings, Advanced being open."""
    page.locator("#aspect input").fill(size)
    page.keyboard.press("Enter")
    if steps is not None:
        page.locator("#steps input[type=number]").fill(str(steps))
        page.keyboard.press("Tab")


def _wait_done(page):
    page.locator("#result-info").get_by_text("denoising").wait_for(timeout=60_000)


def test_enter_runs_with_a_live_preview_and_an_error_keeps_the_picture(browser, url):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    _ready(page, url)
    _settings(page, steps=8)
    prompt = page.locator("#prompt textarea")
    prompt.fill("a lighthouse on a cliff at dusk, oil painting")
    page.get_by_text("CLIP tokens").wait_for(timeout=10_000)  # the live token count
    # every picture the result area shows until the timings of the final one arrive
    page.evaluate("""() => { window.shown = new Set();
      new MutationObserver(() => {
        if (document.querySelector('#result-info').innerText.trim()) return;
        document.querySelectorAll('#result img').forEach(i => window.shown.add(i.src));
      }).observe(document.querySelector('#result-column'), {subtree: true, childList: true, attributes: true}); }""")
    prompt.press("Enter")  # Enter runs (Shift+Enter would start a new line)
    _wait_done(page)
    previews = page.evaluate("() => [...window.shown]")
    assert len(previews) >= 2, previews  # the picture forming, step by step, before the result
    final = page.locator("#result img").first.get_attribute("src")
    info = page.locator("#result-info").inner_text()
    assert "(8 steps)" in info
    href = page.locator("#download a").first.get_attribute("href")
    png = page.request.get(url + href)  # the download link serves the PNG with its parameters
    assert png.ok and png.headers["content-type"] == "image/png" and b"parameters" in png.body()[:4096]
    page.locator("#gallery img").first.wait_for(timeout=10_000)  # this browser's gallery
    page.locator("#advanced").click()  # closed again, for the screenshot
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    shot(page, "generate.png")

    prompt.fill("")
    prompt.press("Enter")
    page.locator("#prompt").get_by_text("The prompt is empty").wait_for(timeout=10_000)  # under the field at fault
    page.wait_for_timeout(500)
    assert page.locator("#result img").first.get_attribute("src") == final  # the last good result stays
    assert page.locator("#result-info").inner_text() == info
    assert page.get_by_text("Error", exact=True).count() == 0

    page.locator("#gallery [data-action=settings]").first.click()  # brings back that picture's settings
    page.wait_for_function("document.querySelector('#prompt textarea').value.startsWith('a lighthouse')",
                           timeout=10_000)
    page.close()


# What the page shows at each change while a run is on: the progress line, the Run and Stop buttons, the timings line
WATCH_RUN = """() => { window.seen = [];
  const text = (sel) => (document.querySelector(sel) || {innerText: ''}).innerText.trim();
  new MutationObserver(() => window.seen.push({progress: text('#run-progress .run-progress-text'),
      run: text('#run'), runOn: !document.querySelector('#run').disabled,
      stopOn: !document.querySelector('#stop').disabled, info: text('#result-info')}))
    .observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true}); }"""


def test_progress_counts_steps_and_time_left_over_the_forming_picture_and_stop_says_where(browser, url):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    _ready(page, url)
    assert not page.locator("#stop").is_enabled()  # nothing to stop yet
    _settings(page, steps=2, size="512x512")
    prompt = page.locator("#prompt textarea")
    prompt.fill("a red fox in an autumn forest")
    prompt.press("Enter")
    _wait_done(page)

    page.locator("#steps input[type=number]").fill("20")
    page.keyboard.press("Tab")
    page.evaluate(WATCH_RUN)
    page.locator("#run").click()
    page.locator("#run-progress").get_by_text(re.compile(r"Step (1[0-9]) of 20")).wait_for(timeout=60_000)
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, "generate-progress.png")
    measured(page, "running", 0)  # Running…, Stop on, the progress line: all readable
    page.locator("#result-info").get_by_text("(20 steps)").wait_for(timeout=90_000)
    seen = page.evaluate("() => window.seen")
    during = [s for s in seen if s["progress"].startswith("Step")]
    steps = [int(re.match(r"Step (\d+) of 20\b", s["progress"]).group(1)) for s in during]
    assert len(set(steps)) >= 3 and steps == sorted(steps), steps  # "Step N of 20", forward
    left = [float(m.group(1)) for s in during if (m := re.search(r"([\d.]+) s left", s["progress"]))]
    assert len(left) >= 2 and left[-1] < left[0], left  # the time left falls
    # while it runs: the Run button says so and cannot be pressed again, Stop can; the last timings are hidden
    assert all(s["run"] == "Running…" and not s["runOn"] and s["stopOn"] and s["info"] == "" for s in during)
    page.wait_for_timeout(300)
    assert page.locator("#run").inner_text() == "Run" and page.locator("#run").is_enabled()
    assert not page.locator("#stop").is_enabled() and page.locator("#run-progress").inner_text().strip() == ""

    # Stop: where the run was, above the last result, which is back with its timings
    info, png = page.locator("#result-info").inner_text(), page.locator("#download a").first.get_attribute("download")
    page.locator("#run").click()
    page.locator("#run-progress").get_by_text(re.compile(r"Step [3-9] of 20")).wait_for(timeout=60_000)
    page.locator("#stop").click()
    stopped = page.locator("#run-error").get_by_text(re.compile(r"Stopped at step \d+ of 20; the last result is back"))
    stopped.wait_for(timeout=30_000)
    assert stopped.is_visible() and stopped.bounding_box()["y"] < 900  # where the visitor looks
    page.wait_for_timeout(300)
    assert png in page.locator("#result img").first.get_attribute("src")  # the last good picture is back
    assert page.locator("#result-info").inner_text() == info
    assert page.locator("#run").is_enabled() and not page.locator("#stop").is_enabled()
    page.close()


def test_a_run_waiting_for_the_gpu_shows_its_place_in_the_queue_then_its_steps(browser, url):
    """Gradio's own tracker, minimal, in the picture's corner while the run waits; the overlay once it runs."""
    pages = []
    for steps in (24, 12):  # the first long enough that the second waits for it; the second long enough to watch
        page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        _ready(page, url)
        _settings(page, steps=steps, size="512x512")
        page.locator("#prompt textarea").fill("a red fox")
        pages.append(page)
    first, second = pages
    first.locator("#run").click()
    first.locator("#run-progress").get_by_text("Step").wait_for(timeout=30_000)
    second.locator("#run").click()
    second.locator("#result .progress-text").get_by_text(re.compile(r"queue: \d+/\d+")).wait_for(timeout=20_000)
    assert second.locator("#run-progress .run-progress").count() == 0  # one indicator at a time
    second.locator("#run-progress").get_by_text("Step").wait_for(timeout=60_000)
    assert not second.locator("#result .progress-text").filter(has_text="queue").is_visible()
    _wait_done(second)
    for page in pages:
        page.context.close()


def _in_view(page, locator) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"] and box["x"] >= 0 \
        and box["x"] + box["width"] <= size["width"]


@pytest.mark.parametrize("viewport", [{"width": 1440, "height": 900}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_a_bad_setting_is_summed_up_next_to_run_and_shown_under_its_field(browser, url, viewport):
    page = browser.new_page(viewport=viewport, is_mobile=viewport["width"] < 768, has_touch=viewport["width"] < 768)
    _ready(page, url)
    page.locator("#advanced").click()
    page.locator("#aspect input").fill("100x100")
    page.keyboard.press("Enter")
    page.locator("#advanced").click()  # closed: the field at fault is out of sight
    page.evaluate("() => window.scrollTo(0, 0)")
    prompt = page.locator("#prompt textarea")
    prompt.fill("a red fox")
    prompt.press("Enter")
    message = "The width must be between 256 and 1536 pixels, got 100."
    summary = page.locator("#form-errors").get_by_text(message)
    summary.wait_for(timeout=10_000)
    assert _in_view(page, summary) and _in_view(page, page.locator("#run"))  # next to Run, where the visitor looks
    # under its own field, in the body's size, not over the field's label
    under = page.locator("#aspect .validation-error")
    under.wait_for(timeout=10_000)
    assert message in under.inner_text()
    assert under.bounding_box()["y"] >= page.locator("#aspect input").bounding_box()["y"] + 20
    assert page.evaluate("(e) => parseFloat(getComputedStyle(e).fontSize) <= 16 && "
                         "getComputedStyle(e).fontWeight === '400'", under.element_handle())
    if viewport["width"] >= 768:
        shot(page, "generate-invalid.png")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.locator("#advanced").click()  # the visitor closes the section again; the summary opens it and goes there
    page.locator("#form-errors button", has_text="Aspect ratio").click()
    page.wait_for_function("() => { const r = document.querySelector('#aspect').getBoundingClientRect();"
                           "return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }", timeout=10_000)
    assert _in_view(page, page.locator("#aspect input"))
    page.locator("#aspect input").fill("256x256")
    page.keyboard.press("Enter")
    page.locator("#run").click()
    page.locator("#form-errors [role=alert]").wait_for(state="detached", timeout=10_000)  # a good form: no summary
    _wait_done(page)
    page.close()


# Measured from computed styles and boxes: the contrast of every text on the page (and of placeholders and values)
# against what lies behind it, and the size of every control a finger must hit; `minTarget` 0 skips the sizes.
MEASURE = """(minTarget) => {
  const problems = [];
""" + CONTRAST_JS + """
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  };
  const shown = (el) => { const r = el.getBoundingClientRect();
    return el.checkVisibility({opacityProperty: true, visibilityProperty: true}) && r.width > 0 && r.height > 0; };
  const name = (el) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''} "${(el.textContent || el.placeholder ||
    el.value || '').trim().slice(0, 30)}"`;
  // the colours behind an element, down to the first opaque one (the page is white below them all)
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) layers.push(c);
      if (c && c[3] >= 0.999) return layers;
    }
    return [...layers, [255, 255, 255, 1]];
  };
  const flat = (layers) => layers.reduceRight((under, top) => over(top, under));
  const ratios = [];
  const check = (el, colour, what) => {
    const ground = flat(behind(el)), c = parse(colour);
    c[3] *= opacity(el);
    const r = ratio(over(c, ground), ground);
    ratios.push(r);
    if (r < 4.5) problems.push(`contrast ${r.toFixed(2)} of ${what} ${name(el)}`);
  };
  // what a visitor can see: not Gradio's hidden copy of the tabs it measures for overflow, not icons
  const all = [...document.querySelectorAll('body *')].filter(shown)
    .filter((e) => !e.closest('svg, .visually-hidden'));
  for (const el of all) {
    if ([...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()))
      check(el, getComputedStyle(el).color, 'text');
    if (el.matches('textarea, input[type=text], input:not([type])') && !el.value && el.placeholder)
      check(el, getComputedStyle(el, '::placeholder').color, 'placeholder');
    if (el.matches('input[type=number], input[type=text], input:not([type]), textarea') && el.value)
      check(el, getComputedStyle(el).color, 'value');
  }
  const controls = 'button, a[href], textarea, select, summary, [role=tab], label:has(input[type=checkbox]), ' +
    'label:has(input[type=radio]), input:not([type=hidden]):not([type=checkbox]):not([type=radio])';
  const sizes = [];
  for (const el of all.filter((e) => e.matches(controls))) {
    const r = el.getBoundingClientRect();
    sizes.push(Math.min(r.width, r.height));
    if (Math.min(r.width, r.height) < minTarget)
      problems.push(`target ${Math.round(r.width)}x${Math.round(r.height)} ${name(el)}`);
  }
  return {problems, texts: ratios.length, minRatio: Math.min(...ratios), controls: sizes.length,
          minTarget: Math.min(...sizes)};
}"""


def measured(page, where: str, targets: int) -> dict:
    # after every transition has ended: a button turning grey is measured in its final colours, not half way
    page.wait_for_function("() => document.getAnimations().filter(a => a instanceof CSSTransition)"
                           ".every(a => a.playState !== 'running')", timeout=10_000)
    found = page.evaluate(MEASURE, targets)
    assert not found["problems"], (where, found["problems"])
    assert found["texts"] > 10 and found["controls"] > 5, (where, found)
    return found


@pytest.mark.parametrize("viewport", [{"width": 1440, "height": 900}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_the_first_screen_is_calm_readable_and_within_reach(browser, url, viewport):
    """A short header (title, one line, the engine in a small badge that opens to its details, the random weights in
    one line), Run in view without scrolling; every text >= 4.5:1 and, on a phone, every control >= 44 px: first,
    with the settings open, after a run, and on the Compare tab."""
    phone = viewport["width"] < 768
    page = browser.new_page(viewport=viewport, is_mobile=phone, has_touch=phone)
    _ready(page, url)
    line = lambda sel: page.evaluate(  # noqa: E731
        "(s) => { const e = document.querySelector(s); return e.getBoundingClientRect().height /"
        " parseFloat(getComputedStyle(e).lineHeight); }", sel)
    assert page.locator("#title h1").inner_text() == "fp8demo" and line("#title h1") < 1.5
    assert line(".status-note") < 1.5 and "Random weights" in page.locator(".status-note").inner_text()
    assert not page.locator(".status-badge dl").is_visible()
    page.locator(".status-badge summary").click()  # the badge opens to the details
    details = page.locator(".status-badge dl").inner_text()
    assert all(word in details for word in ("Model", "Precision", "Device", "Pictures saved in", "tiny"))
    page.locator(".status-badge summary").click()
    run = page.locator("#run").bounding_box()
    assert run["y"] >= 0 and run["y"] + run["height"] <= viewport["height"]  # Run without scrolling
    targets = 44 if phone else 0
    first = measured(page, "first screen", targets)
    if phone:
        shot(page, "generate-phone-first.png")
    page.locator("#advanced").click()
    page.locator("#seed input").wait_for()
    measured(page, "settings open", targets)
    _settings_open(page, steps=2, size="256x256")
    page.locator("#prompt textarea").fill("a red fox")
    page.locator("#run").click()
    _wait_done(page)
    after = measured(page, "after a run", targets)
    page.get_by_role("tab", name="Compare FP16/BF16 vs FP8").click()
    page.locator("#compare-run").wait_for()
    measured(page, "compare", targets)
    print(viewport, "min contrast", round(min(first["minRatio"], after["minRatio"]), 2),
          "smallest control", round(min(first["minTarget"], after["minTarget"])), "px")
    page.close()


def test_the_gallery_keeps_this_browsers_pictures_newest_first_with_what_to_do_with_each(browser, url):
    """Larger pictures in a grid, newest first, the caption under each; per picture its PNG (with the parameters),
    "use these settings", "use this seed" and full size; a reload keeps them (the browser's local storage)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    _ready(page, url)
    _settings(page, steps=2)
    prompt = page.locator("#prompt textarea")
    for text in ("a red fox in an autumn forest", "a lighthouse on a cliff"):
        prompt.fill(text)
        prompt.press("Enter")
        page.locator("#gallery .history-prompt").get_by_text(text).wait_for(timeout=60_000)
    cards = page.locator("#gallery .history-item")
    assert cards.count() == 2 and "a lighthouse" in cards.first.inner_text()  # newest first
    first = cards.first
    picture, caption = first.locator("img").bounding_box(), first.locator(".history-prompt").bounding_box()
    assert picture["width"] >= 200 and caption["y"] >= picture["y"] + picture["height"]  # large, caption under it
    seed = int(re.search(r"seed (\d+)", first.locator(".history-meta").inner_text()).group(1))

    png = page.request.get(url + first.locator("a[download]").get_attribute("href"))  # the PNG with its parameters
    assert png.ok and png.headers["content-type"] == "image/png" and b"a lighthouse on a cliff" in png.body()[:4096]

    prompt.fill("something else")  # the form moves on; "use these settings" brings the picture's back
    page.locator("#steps input[type=number]").fill("7")
    page.keyboard.press("Tab")
    first.locator("[data-action=settings]").click()
    page.wait_for_function("document.querySelector('#prompt textarea').value === 'a lighthouse on a cliff'",
                           timeout=10_000)
    value = "(sel) => document.querySelector(sel).value"
    assert page.evaluate(value, "#steps input[type=number]") == "2"
    assert page.evaluate(value, "#seed input") == str(seed) and not page.locator("#randomize input").is_checked()
    page.locator("#seed input").fill("5")
    page.locator("#randomize input").check()
    cards.nth(1).locator("[data-action=seed]").click()  # "use this seed": the seed alone
    older = int(re.search(r"seed (\d+)", cards.nth(1).locator(".history-meta").inner_text()).group(1))
    page.wait_for_function(f"document.querySelector('#seed input').value === '{older}'", timeout=10_000)
    assert not page.locator("#randomize input").is_checked() and prompt.input_value() == "a lighthouse on a cliff"

    page.evaluate("() => document.querySelector('#result-info').scrollIntoView()")
    page.wait_for_timeout(300)
    shot(page, "generate-gallery.png")
    first.locator(".history-open").click()  # full size, over the page
    full = page.locator("dialog.history-full img")
    full.wait_for(timeout=10_000)
    page.wait_for_function("() => document.querySelector('dialog.history-full img').naturalWidth === 256")
    page.keyboard.press("Escape")
    full.wait_for(state="hidden", timeout=5_000)

    page.reload()  # the same browser: its pictures are still there
    _ready(page, url)
    cards.first.wait_for(timeout=20_000)
    assert cards.count() == 2 and "a lighthouse" in cards.first.inner_text()
    context.close()


def test_a_failed_run_keeps_the_last_good_result_and_says_why(browser, url, monkeypatch):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    _ready(page, url)
    _settings(page, steps=2)
    prompt = page.locator("#prompt textarea")
    prompt.fill("a red fox in an autumn forest")
    prompt.press("Enter")
    _wait_done(page)
    info = page.locator("#result-info").inner_text()
    links = page.locator("#download").inner_html()
    png = page.locator("#download a").first.get_attribute("download")

    def out_of_memory(self, request, session="", progress=None, preview=None, *args, **kwargs):
        preview(Image.new("RGB", (256, 256), "red"))  # the picture had started forming
        time.sleep(0.5)
        raise OutOfMemory("The GPU ran out of memory for a 256x256 image. Try a smaller size.")

    monkeypatch.setattr(DemoService, "generate", out_of_memory)
    prompt.fill("a red fox in a winter forest")
    prompt.press("Enter")
    page.locator("#run-error").get_by_text("ran out of memory for a 256x256 image").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    assert png in page.locator("#result img").first.get_attribute("src")  # the last good picture is back
    assert page.locator("#result-info").inner_text() == info
    assert page.locator("#download").inner_html() == links
    assert page.get_by_text("Error", exact=True).count() == 0  # no badge over the picture
    shot(page, "generate-error.png")
    monkeypatch.undo()
    prompt.press("Enter")  # the next good run clears the message
    page.locator("#run-error").get_by_text("ran out of memory").wait_for(state="detached", timeout=60_000)
    page.close()


def test_four_images_per_run_then_compare(browser, url):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    _ready(page, url)
    _settings(page, steps=1, num_images=4)
    page.locator("#prompt textarea").fill("a red fox in an autumn forest")
    page.locator("#run").click()
    _wait_done(page)
    assert page.locator("#result .thumbnail-small").count() == 4
    assert page.locator("#download a").count() == 4

    page.get_by_role("tab", name="Compare FP16/BF16 vs FP8").click()
    page.locator("#compare-run").click()
    page.locator("#compare-table").get_by_text("PSNR").wait_for(timeout=60_000)
    assert "not representative of a GPU" in page.locator("#compare-table").inner_text()
    page.locator("#compare-heat img").wait_for(timeout=10_000)
    shot(page, "compare.png", full_page=True)
    page.close()


def test_settings_load_from_a_forge_png(browser, url, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    forge = PngInfo()  # what A1111/Forge write into the PNG's `parameters` text chunk
    forge.add_text("parameters", "a fox in the snow, watercolor\nNegative prompt: blurry, text\n"
                   "Steps: 7, Sampler: Euler, CFG scale: 3.5, Seed: 1234, Size: 768x512, Model: sd35")
    png = tmp_path / "forge.png"
    Image.new("RGB", (64, 64), "white").save(png, pnginfo=forge)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    _ready(page, url)
    page.locator("#load-png").click()
    page.locator("#png-in input[type=file]").set_input_files(str(png))
    page.locator("#png-note").get_by_text("Settings loaded from the PNG").wait_for(timeout=30_000)
    page.locator("#advanced").click()
    page.locator("#seed input").wait_for()
    value = "(sel) => document.querySelector(sel).value"
    assert page.evaluate(value, "#prompt textarea") == "a fox in the snow, watercolor"
    assert page.evaluate(value, "#negative textarea") == "blurry, text"
    assert page.evaluate(value, "#seed input") == "1234"
    assert page.evaluate(value, "#steps input[type=number]") == "7"
    assert page.evaluate(value, "#guidance input[type=number]") == "3.5"
    assert "768" in page.evaluate(value, "#aspect input") and "512" in page.evaluate(value, "#aspect input")
    assert not page.locator("#randomize input").is_checked()  # the loaded seed is kept, not re-rolled

    plain = tmp_path / "plain.png"  # a PNG without parameters says so and leaves the form alone
    Image.new("RGB", (64, 64), "white").save(plain)
    page.locator("#png-in button[aria-label='Clear']").click()
    page.locator("#png-in input[type=file]").set_input_files(str(plain))
    page.locator("#png-note").get_by_text("carries no generation parameters").wait_for(timeout=30_000)
    assert page.evaluate(value, "#prompt textarea") == "a fox in the snow, watercolor"
    page.close()


def test_sheet_shows_fp8_beside_16_bit_for_several_prompts(browser, url):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    _ready(page, url)
    page.get_by_role("tab", name="Compare FP16/BF16 vs FP8").click()
    page.locator("#sheet").click()
    page.locator("#sheet-prompts textarea").fill("a red fox\na blue whale")
    page.locator("#sheet-run").click()
    page.locator("#sheet-table").get_by_text("a blue whale").wait_for(timeout=120_000)
    rows = page.locator("#sheet-table tbody tr")
    assert rows.count() == 2 and "dB" in rows.first.inner_text()  # one row of metrics per prompt
    sheet = page.locator("#sheet-image img")
    sheet.wait_for(timeout=10_000)
    width, height = page.evaluate("(img) => [img.naturalWidth, img.naturalHeight]", sheet.element_handle())
    assert height > width  # two rows (prompts) of two pictures (16-bit, FP8)
    shot(page, "compare-sheet.png", full_page=True)
    page.close()


def test_phone_one_progress_indicator_result_in_view_no_overflow(browser, url):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _ready(page, url)
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    assert page.evaluate(overflow) <= 0
    _settings(page, steps=12, size="768x768")  # a job of a few seconds: long enough to be watched
    page.locator("#prompt textarea").fill("a cozy cabin in a snowy forest")
    page.locator("#run").click()
    seen, in_view = [], []
    done = page.locator("#result-info").get_by_text("denoising")
    deadline = time.monotonic() + 60
    while not done.count() and time.monotonic() < deadline:
        in_view.append(page.evaluate("""() => { const e = document.querySelector('#run-progress .run-progress-text');
            if (!e || !e.innerText.startsWith('Step')) return null;
            const box = e.getBoundingClientRect(); return box.top >= 0 && box.bottom <= window.innerHeight; }"""))
        # components showing a progress indicator while the job runs (hidden trackers stay in the DOM)
        seen.append(page.evaluate(
            "() => new Set([...document.querySelectorAll('.eta-bar, .progress-text, .progress-level, .run-progress')]"
            ".filter(e => e.checkVisibility({opacityProperty: true, visibilityProperty: true}))"
            ".map(e => e.closest('.block'))).size"))
        page.wait_for_timeout(50)
    assert max(seen) == 1, seen  # one indicator, however long the job ran and whenever the page was looked at
    # "Step N of 12" over the picture, in view once the page's smooth scroll to it has arrived, and from then on
    assert True in in_view and False not in in_view[in_view.index(True):], in_view
    _wait_done(page)
    page.wait_for_timeout(800)  # the smooth scroll
    box = page.locator("#result img").first.bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844  # the picture is in view, whole
    assert page.evaluate(overflow) <= 0
    shot(page, "generate-phone.png")
    page.close()


def test_long_prompt_shows_a_visible_warning(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.get_by_text("Ready:").wait_for(timeout=30_000)
    page.locator("#prompt textarea").fill(", ".join(["a red fox in an autumn forest with golden leaves"] * 9))
    warning = page.locator("#token-count")
    warning.get_by_text("Only T5 sees").wait_for(timeout=10_000)
    assert "⚠️" in warning.inner_text()
    page.close()
