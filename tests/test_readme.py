"""Every command the README shows in a code block, run as written (test_first_run.py covers the quick start and
the API example). The Hub is unreachable here, so a Hub model id is replaced by the offline tiny model and the Hub's
API by a stand-in that records the upload; every other argument is the README's own."""

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from test_app import free_port
from test_checkpoint import FakeHubApi

from fp8demo.__main__ import main
from fp8demo.imageio import read_parameters

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
HUB_MODELS = {"stabilityai/stable-diffusion-3.5-large-turbo", "large-turbo"}


def block(after: str, language: str = "bash") -> str:
    """The first ```language block after the heading or text `after`."""
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, README.index(after))
    return match.group(1)


def commands(text: str) -> list[list[str]]:
    return [argv for line in text.splitlines() if (argv := shlex.split(line, comments=True))]


def fp8demo_args(argv: list[str]) -> list[str]:
    assert argv[:3] == ["python", "-m", "fp8demo"], argv
    return argv[3:]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_command_line_block(tmp_path, monkeypatch, capsys, cache_dir):
    monkeypatch.chdir(tmp_path)  # `--out out.png` lands here
    lines = commands(block("## Command line"))
    assert [argv[3] for argv in lines] == ["generate", "info", "doctor", "plan"]
    for argv in lines:
        assert main(fp8demo_args(argv)) == 0, argv
        out = capsys.readouterr().out
        if argv[3] == "generate":
            assert last_json(out)["seed"] == 7
            assert "Seed: 7" in read_parameters(tmp_path / "out.png")
        elif argv[3] == "info":
            assert last_json(out)["transformer_ratio_vs_bf16"] < 0.6  # FP8 by default
        elif argv[3] == "doctor":
            assert out.strip().splitlines()[-1].startswith("READY: tiny")
        else:
            assert "Fits in 12.0 GiB" in out


def test_plans_per_card_block(capsys):
    plain, as_json = commands(block("### Plans per card"))
    assert main(fp8demo_args(plain)) == 0, plain
    assert "Fits in 12.0 GiB" in capsys.readouterr().out
    assert main(fp8demo_args(as_json)) == 0, as_json
    memory = last_json(capsys.readouterr().out)["memory"]
    assert memory["fits"] is True and memory["resident_bytes"] < memory["peak_run_bytes"]


def test_fp8_checkpoint_blocks(tmp_path, monkeypatch, capsys, cache_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHubApi)
    quantize_first, serve, quantize_and_push = commands(block("## FP8 checkpoints"))

    for argv in (quantize_first, quantize_and_push):
        args = fp8demo_args(argv)
        model = args.index("--model") + 1
        assert args[model] in HUB_MODELS
        args[model] = "tiny"
        assert main(args) == 0, argv
    published = last_json(capsys.readouterr().out)["published"]
    assert published == "https://huggingface.co/you/sd35-large-turbo-fp8/commit/abc"
    _, upload = FakeHubApi.last.calls[-1]
    assert Path(upload["folder_path"]).resolve() == (tmp_path / "sd35-fp8-for-hub").resolve()
    folder = tmp_path / "sd35-large-turbo-fp8"

    # python app.py --model sd35-large-turbo-fp8: the app serves the folder
    assert serve[:3] == ["python", "app.py", "--model"]
    port = free_port()
    app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), *serve[2:], "--port", str(port)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(180):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert app.poll() is None, "the app exited"
            time.sleep(1)
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        app.terminate()
        app.wait(timeout=30)

    # plain diffusers loads it (the repo id is the folder here, and this machine has no CUDA)
    code = block("Plain diffusers with torchao installed loads it", "python")
    assert '"you/sd35-large-turbo-fp8"' in code and '.to("cuda")' in code
    exec(code.replace('"you/sd35-large-turbo-fp8"', repr(str(folder))).replace('.to("cuda")', '.to("cpu")'), {})  # noqa: S102
    assert Image.open(tmp_path / "out.png").size[0] >= 256


def test_every_other_python_command_in_the_readme_exists():
    """Commands named in the text: fp8demo's parse with its CLI, modules exist."""
    import importlib.util

    from fp8demo.__main__ import _parser

    named = set(re.findall(r"`(python -m [^`\[]+)`", README))
    assert len(named) >= 8
    for text in named:
        argv = shlex.split(text)
        if argv[2] == "fp8demo":
            _parser().parse_args(argv[3:])
        elif argv[2] != "pytest":
            assert importlib.util.find_spec(argv[2]) is not None, text
