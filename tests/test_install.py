"""`pip install .` ships everything the app needs at run time: the installed package, started from an empty folder
outside the repository, serves the kiosk with its stylesheet, its on-screen keyboard and its prompt chips. Nothing is
downloaded: the new environment sees this one's packages through a .pth file, and pip builds without an index or
build isolation."""

import os
import shutil
import site
import subprocess
import sysconfig
import time
import venv
from pathlib import Path

import httpx
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "fp8demo" / "assets"
KIOSK_ONLY_RULE = "#attract-image img"  # a rule of kiosk.css that the Generate page's stylesheet does not have


def _new_environment(folder: Path) -> Path:
    """A virtual environment that sees the running interpreter's packages; its python."""
    venv.create(folder, with_pip=False)
    own = Path(sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)}))
    (own / "parent-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return folder / "bin" / "python"


def _source_copy(folder: Path) -> Path:
    """What `pip install .` reads, copied: a build in the checkout would leave build/ and *.egg-info behind."""
    folder.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy2(ROOT / name, folder / name)
    shutil.copytree(ROOT / "fp8demo", folder / "fp8demo", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_the_installed_package_serves_the_kiosk_from_anywhere(tmp_path, cache_dir):
    python = _new_environment(tmp_path / "venv")
    source = _source_copy(tmp_path / "source")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                    "--disable-pip-version-check", str(source)], check=True, capture_output=True, timeout=120)
    shutil.rmtree(source)  # nothing of the checkout is left to fall back on

    anywhere = tmp_path / "empty"
    anywhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADIO_TEMP_DIR")}
    env.update(FP8DEMO_CACHE=str(cache_dir), FP8DEMO_OUTPUTS=str(tmp_path / "outputs"), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False")
    where = subprocess.run([python, "-c", "import fp8demo; print(fp8demo.__file__)"], cwd=anywhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv")  # the installed copy, not the checkout

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([python, "-m", "fp8demo", "serve", "--kiosk", "--model", "tiny", "--port", str(port)],
                                cwd=anywhere, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                ready = httpx.get(url + "health/ready", timeout=5)
            except httpx.HTTPError:
                ready = None
            if ready is not None and ready.status_code == 200:
                break
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, log.read_text()[-3000:]
        assert ready.json()["model"] == "tiny"
        assert httpx.get(url, timeout=30).status_code == 200  # the page
        page = httpx.get(url + "config", timeout=30).json()
        assert KIOSK_ONLY_RULE in (ASSETS / "kiosk" / "kiosk.css").read_text()
        assert KIOSK_ONLY_RULE not in (ASSETS / "style.css").read_text()
        # the kiosk's stylesheet, the keyboard's library (and its licence) and the page's script, from the installed
        # package, inlined in the page's head
        assert KIOSK_ONLY_RULE in page["head"]
        assert "simple-keyboard v" in page["head"] and "window.kioskKeyboard" in page["head"]
        assert (Path(where).parent / "assets" / "kiosk" / "simple-keyboard" / "LICENSE").is_file()
        assert page["footer_links"] == [] and page["run_history"] is False  # the kiosk's launch options
        props = [c["props"] for c in page["components"]]
        chips = {p.get("value") for p in props if "chip" in (p.get("elem_classes") or [])}
        prompts = [line for line in (ASSETS / "kiosk" / "prompts.txt").read_text().splitlines()
                   if line.strip() and not line.startswith("#")][:8]
        assert len(prompts) == 8 and chips == set(prompts)  # the chips, from the installed prompts.txt
    finally:
        proc.terminate()
        proc.wait(timeout=30)
