"""The web app on a free port with the tiny model: API, health, busy queue, deployment manifests."""

import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import serve
from PIL import Image

from fp8demo import config
from fp8demo.faces.generate.face import face as generate_face
from fp8demo.metrics import compare_images
from fp8demo.web.server import health_routes
from fp8demo.web.service import DemoService

ROOT = Path(__file__).resolve().parent.parent


def download(url: str, link_html: str) -> bytes:
    """The PNG behind the page's download link."""
    import re

    href = re.search(r'href="([^"]+)"', link_html).group(1)
    response = httpx.get(url + href, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return response.content


def png_parameters(data: bytes) -> str:
    import io

    return Image.open(io.BytesIO(data)).info["parameters"]


def test_generate_api_returns_image_and_seed(app, client):
    images, seed, info, link = client.predict(prompt="a cat on a windowsill", seed=123, randomize_seed=False,
                                              api_name="/generate")
    assert seed == 123 and len(images) == 1
    assert Image.open(images[0]["image"]).size == (512, 512)
    assert "denoising" in info and "seed 123" in info
    params = png_parameters(download(app[1], link))
    assert params.startswith("a cat on a windowsill\n") and "Seed: 123" in params


def test_generate_api_streams_the_steps_then_the_result(client):
    """The events that draw the page's progress reach API callers as streamed outputs: the forming picture, and
    "Step N of M" with the time left where the timings will be."""
    import re

    job = client.submit(prompt="a red fox", steps=6, aspect_ratio="512x512", api_name="/generate")
    images, _, info, _ = job.result()
    assert "(6 steps)" in info and len(images) == 1
    streamed = [out[2] for out in job.outputs()[:-1] if isinstance(out[2], str)]
    assert any(re.fullmatch(r"Step [1-6] of 6( · .*)?", line) for line in streamed), streamed

    job = client.submit(prompt="a red fox", seed=1, steps=2, aspect_ratio="256x256", api_name="/compare")
    assert "PSNR" in job.result()[4]
    assert any(isinstance(out[4], str) and re.match(r"Step \d of 4 · (baseline|candidate) side", out[4])
               for out in job.outputs()[:-1])


def test_generate_api_defaults_and_random_seed(client):
    _, seed_a, _, _ = client.predict(prompt="a boat", api_name="/generate")
    _, seed_b, _, _ = client.predict(prompt="a boat", api_name="/generate")
    assert seed_a != seed_b and 0 <= seed_a <= config.MAX_SEED


def test_generate_api_sizes_and_settings(app, client):
    images, _, info, link = client.predict(prompt="a wide valley", aspect_ratio="16:9 · 704x384", steps=2,
                                           guidance=3.0, negative_prompt="fog", api_name="/generate")
    assert Image.open(images[0]["image"]).size == (704, 384)
    assert "(2 steps)" in info
    data = download(app[1], link)
    assert Image.open(__import__("io").BytesIO(data)).size == (704, 384)  # the lossless original
    params = png_parameters(data)
    assert "Negative prompt: fog" in params and "CFG scale: 3" in params and "Size: 704x384" in params


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(prompt=""), "prompt is empty"), (dict(prompt="x", aspect_ratio="1000x1000"), "multiple of 16"),
     (dict(prompt="x", aspect_ratio="huge"), "Unknown size")],
)
def test_bad_input_gets_a_message_and_the_server_survives(client, kwargs, message):
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError, match=message):  # the page shows it beside the field at fault
        client.predict(api_name="/generate", **kwargs)
    assert client.predict(prompt="still here", steps=1, api_name="/generate")[1] >= 0


def test_four_images_per_run_have_consecutive_seeds_and_their_own_pngs(app, client):
    images, seed, info, links = client.predict(prompt="a cat", seed=40, randomize_seed=False, steps=1, num_images=4,
                                               aspect_ratio="256x256", api_name="/generate")
    assert seed == 40 and len(images) == 4 and "4 images" in info
    assert [i["caption"] for i in images] == ["seed 40", "seed 41", "seed 42", "seed 43"]
    pixels = {Image.open(i["image"]).tobytes() for i in images}
    assert len(pixels) == 4  # four different pictures
    import re

    hrefs = re.findall(r'href="([^"]+)"', links)
    assert len(hrefs) == 4
    assert "Seed: 43" in png_parameters(download(app[1], f'href="{hrefs[3]}"'))


def test_negative_prompt_is_recorded_only_where_it_is_used(app, client):
    _, _, _, link = client.predict(prompt="a cat", negative_prompt="fog", guidance=0.0, steps=1,
                                   api_name="/generate")
    assert "Negative prompt" not in png_parameters(download(app[1], link))  # no effect at guidance <= 1


def test_pictures_are_kept_in_the_outputs_folder(app, client):
    service, url = app
    assert service.output_dir.name == "outputs"
    # the Generate page keeps a long window (the kiosk a short one): config.StorageConfig
    keeping = generate_face(service.cfg.storage).keeping
    assert keeping.pngs == 1000 and keeping.max_age == 30 * 86400
    _, seed, _, link = client.predict(prompt="a kept cat", steps=1, api_name="/generate")
    download(url, link)
    assert any(p.name.startswith(f"fp8demo-{seed}-") for p in service.output_dir.iterdir())


def test_compare_api_shows_both_sides_and_metrics(client):
    slider, left, right, heat, table, details = client.predict(prompt="a red fox", seed=9, api_name="/compare")
    assert len(slider) == 2 and all(Image.open(p).size == (512, 512) for p in slider)
    assert "bf16" in left["label"] and "FP8" in right["label"]
    assert Image.open(heat).size[0] == 512 and Image.open(heat).size[1] > 512  # the map, its colour scale under it
    m = details["metrics"]
    assert 20 < m["psnr_db"] < 100 and 0.5 < m["ssim"] < 1.0 and m["mean_abs_diff"] > 0  # close, not identical
    assert details["seed"] == 9 and details["swap_seconds"] == 0.0 and details["baseline_resident"]
    assert details["baseline"]["precision"] == "bf16 (eager)"
    assert "PSNR" in table and "SSIM" in table
    sizes = details["transformer_bytes"]  # what FP8 is for: the transformer's resident bytes, not process RSS
    assert 0 < sizes["fp8"] < 0.95 * sizes["baseline"]  # (tiny: 16-bit embedders dominate; ~0.5 on SD3.5)
    assert not details["speed_representative"] and "not representative of a GPU" in table


def test_compare_fp16_baseline_is_labelled(client):
    *_, details = client.predict(prompt="a red fox", seed=9, baseline="fp16", api_name="/compare")
    assert details["baseline"]["precision"] == "fp16 (eager)"


def test_identical_images_give_infinite_psnr_and_ssim_one():
    img = Image.effect_noise((64, 48), 40).convert("RGB")
    m = compare_images(img, img)
    assert m.psnr_db == float("inf") and m.ssim == pytest.approx(1.0) and m.mean_abs_diff == 0


def test_health_on_the_served_port(app):
    _, url = app
    assert httpx.get(url + "health/live").status_code == 200
    ready = httpx.get(url + "health/ready")
    assert ready.status_code == 200 and ready.json()["model"] == "tiny"
    assert "FP8" in ready.json()["precision"]


def _health_client(service):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    return TestClient(FastAPI(routes=health_routes(service)))


def test_ready_is_503_before_warm_up_and_after_a_fatal_error(tiny_config):
    service = DemoService(config.AppConfig(engine=tiny_config))
    http = _health_client(service)
    assert http.get("/health/live").status_code == 200
    before = http.get("/health/ready")
    assert before.status_code == 503 and "warming up" in before.json()["reason"]
    service.start(background=False)
    ready = http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["events"] == []
    service.engine.record("compile-failed", "torch.compile failed, the transformer runs eagerly from now on: boom")
    event = http.get("/health/ready").json()["events"][0]  # still ready: the event is for the operator to see
    assert event["kind"] == "compile-failed" and "boom" in event["message"]

    broken = DemoService(config.AppConfig(engine=replace(tiny_config, model="random:nope"))).start(background=False)
    after = _health_client(broken).get("/health/ready")
    assert after.status_code == 503 and after.json()["status"] == "failed"
    assert "Unknown model" in after.json()["reason"]


def test_busy_queue_is_refused_and_light_routes_do_not_wait(tiny_engine):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    service = DemoService.from_engine(tiny_engine)
    # the queue's bound, not the per-client one (test_limits.py): every call here comes from 127.0.0.1
    demo, url = serve(service, max_queue=1, limits=replace(config.Limits(), jobs_per_client=8))
    try:
        client = Client(url, verbose=False)
        with tiny_engine._lock:  # the GPU is busy: the running job waits here, the next one in the queue
            running = client.submit(prompt="one", steps=1, api_name="/generate")
            time.sleep(1.0)
            waiting = client.submit(prompt="two", steps=1, api_name="/generate")
            time.sleep(1.0)
            t0 = time.perf_counter()
            assert httpx.get(url + "health/ready", timeout=5).status_code == 200
            assert time.perf_counter() - t0 < 1.0
            with pytest.raises((AppError, Exception), match="(?i)queue is full|busy"):
                client.predict(prompt="three", steps=1, api_name="/generate")
        assert running.result(timeout=60)[1] >= 0 and waiting.result(timeout=60)[1] >= 0
    finally:
        demo.close()


def test_a_failure_during_generation_reaches_an_api_caller_as_its_message(app, client, monkeypatch):
    """The page puts the last good result back (test_browser.py); an API caller gets the error, not old values."""
    from gradio_client.exceptions import AppError

    from fp8demo.errors import OutOfMemory

    def out_of_memory(*args, **kwargs):
        raise OutOfMemory("The GPU ran out of memory for a 512x512 image. Try a smaller size.")

    monkeypatch.setattr(app[0], "generate", out_of_memory)
    with pytest.raises(AppError, match="ran out of memory for a 512x512 image"):
        client.predict(prompt="a red fox", api_name="/generate")


def test_warming_up_page_refuses_work_with_a_message(tiny_config):
    service = DemoService(config.AppConfig(engine=tiny_config))  # never started
    from fp8demo.errors import SetupError
    from fp8demo.request import GenerationRequest

    with pytest.raises(SetupError, match="warming up"):
        service.generate(GenerationRequest("x"))


def test_spacefile_is_a_valid_deta_manifest():
    manifest = yaml.safe_load((ROOT / "Spacefile").read_text())
    assert manifest["v"] == 0
    micros = manifest["micros"]
    assert isinstance(micros, list) and len(micros) == 1
    micro = micros[0]
    assert {"name", "src", "engine", "run", "public"} <= set(micro)
    assert micro["engine"] in {"python3.8", "python3.9"}  # the Python engines Deta Space offered
    assert (ROOT / micro["src"]).resolve() == ROOT
    assert micro["run"].startswith("python app.py") and "--host 0.0.0.0" in micro["run"]
    assert micro["public"] is True
    assert "$PORT" in micro["run"]


def test_readme_front_matter_deploys_as_a_hugging_face_space():
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    import gradio

    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]
    assert str(meta["python_version"]).startswith("3.")
    assert meta["suggested_hardware"] in {"l4x1", "l40sx1", "a100-large", "h100"}
    assert "stabilityai/stable-diffusion-3.5-large-turbo" in meta["models"]


def test_auth_needs_user_and_password():
    from fp8demo.errors import SetupError
    from fp8demo.web.server import parse_auth

    assert parse_auth("ann:secret") == ("ann", "secret")
    assert parse_auth(None) is None
    for bad in ("", "ann", "ann:", ":pw"):
        with pytest.raises(SetupError, match="FP8DEMO_AUTH"):
            parse_auth(bad)


def test_app_flags_default_to_the_config_dataclasses():
    import app as app_module

    args = app_module.parse_args([])
    assert (args.model, args.precision, args.t5, args.offload, args.attention, args.compile) == (
        "auto", "fp8", "auto", "auto", "sdpa", None)
    assert (args.host, args.port, args.max_queue) == ("127.0.0.1", 7860, 16)
    args = app_module.parse_args(["--no-compile", "--kiosk", "--share", "--port", "8080"])
    assert args.compile is False and args.kiosk and args.share and args.port == 8080
    from fp8demo.__main__ import _parser
    from fp8demo.serve import app_config

    same = _parser().parse_args(["serve", "--no-compile", "--kiosk", "--share", "--port", "8080"])
    assert {k: v for k, v in vars(same).items() if k not in ("command", "verbose")} == vars(args)  # one set of flags
    assert app_config(args).face == "kiosk" and app_config(app_module.parse_args([])).face == "generate"


def test_the_platform_names_no_face():
    """web/ serves whichever face it is handed (web.face.Face): it imports none and holds no face's settings."""
    for path in (ROOT / "fp8demo" / "web").glob("*.py"):
        text = path.read_text().lower()
        assert "kiosk" not in text and "fp8demo.faces" not in text and "..faces" not in text, path.name


def test_a_thread_does_not_start_on_import():
    import importlib

    before = threading.active_count()
    for name in ("fp8demo.faces.generate.face", "fp8demo.faces.kiosk.face", "fp8demo.web.server",
                 "fp8demo.web.service", "fp8demo.serve", "fp8demo.compare", "fp8demo.engine"):
        importlib.import_module(name)
    assert threading.active_count() == before
