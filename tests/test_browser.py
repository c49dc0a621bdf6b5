"""The page in headless Chromium (Debian's package, driven by Playwright): type, Run, see an image, compare.

Set FP8DEMO_SCREENSHOTS=<dir> to save the README's screenshots while it runs.
"""

import os
import shutil
from pathlib import Path

import pytest
from test_app import serve

from fp8demo.web.service import DemoService

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
SHOTS = os.environ.get("FP8DEMO_SCREENSHOTS")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


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


def shot(page, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def test_type_run_see_image_then_compare(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.get_by_text("Ready:").wait_for(timeout=30_000)
    prompt = page.locator("#prompt textarea")
    prompt.fill("a lighthouse on a cliff at dusk, oil painting")
    page.get_by_text("CLIP tokens").wait_for(timeout=10_000)  # the live token count
    page.locator("#run").click()
    page.locator("#image img").wait_for(timeout=60_000)
    page.locator("#result-info").get_by_text("denoising").wait_for(timeout=10_000)
    assert "steps" in page.locator("#result-info").inner_text()
    href = page.locator("#download a").get_attribute("href")
    png = page.request.get(url + href)  # the download link serves the PNG with its parameters
    assert png.ok and png.headers["content-type"] == "image/png" and b"parameters" in png.body()[:4096]
    page.locator("#gallery img").first.wait_for(timeout=10_000)  # this session's gallery
    shot(page, "generate.png")
    prompt.fill("something else")
    page.locator("#gallery img").first.click()  # a click reuses that image's settings
    page.wait_for_function("document.querySelector('#prompt textarea').value.startsWith('a lighthouse')",
                           timeout=10_000)

    page.get_by_role("tab", name="Compare FP16/BF16 vs FP8").click()
    page.locator("#compare-run").click()
    page.locator("#compare-table").get_by_text("PSNR").wait_for(timeout=60_000)
    assert "SSIM" in page.locator("#compare-table").inner_text()
    page.locator("#compare-fp8 img").wait_for(timeout=10_000)
    shot(page, "compare.png")
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
