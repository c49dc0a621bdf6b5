"""The docs as a new user meets them: README.md and docs/*.md.

Every command and program they show in a code block is run as written, wherever the block lives (test_first_run.py
covers the quick start and the API example). The Hub is unreachable here, so a Hub model id is replaced by the
offline tiny model and the Hub's API by a stand-in that records the upload; every other argument is the docs' own.
Commands named in the text parse with the CLI, and every relative link leads to a file (and heading) that exists."""

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import BLOCKS, DOCS, ROOT, FakeHubApi, block, free_port
from PIL import Image

from fp8demo.__main__ import main
from fp8demo.imageio import read_parameters

LINKED = (*DOCS, ROOT / "benchmarks" / "README.md")  # whose links must lead somewhere
HUB_MODELS = {"stabilityai/stable-diffusion-3.5-large-turbo", "large-turbo"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def commands(text: str) -> list[list[str]]:
    return [argv for line in text.splitlines() if (argv := shlex.split(line, comments=True))]


def fp8demo_args(argv: list[str]) -> list[str]:
    assert argv[:3] == ["python", "-m", "fp8demo"], argv
    return argv[3:]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_every_code_block_is_one_the_tests_run():
    found = {}
    for path in DOCS:
        for language, code in FENCE.findall(path.read_text()):
            assert language, f"{path.name}: a code block without a language (bash, python, or text for the rest)"
            if language != "text":
                found[code] = path.name
    named = {block(name) for name in BLOCKS}
    assert set(found) == named, {code: found[code] for code in set(found) - named}


def test_command_line_block(tmp_path, monkeypatch, capsys, cache_dir):
    monkeypatch.chdir(tmp_path)  # `--out out.png` lands here
    lines = commands(block("command line"))
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
    plain, as_json = commands(block("plans"))
    assert main(fp8demo_args(plain)) == 0, plain
    assert "Fits in 12.0 GiB" in capsys.readouterr().out
    assert main(fp8demo_args(as_json)) == 0, as_json
    memory = last_json(capsys.readouterr().out)["memory"]
    assert memory["fits"] is True and memory["resident_bytes"] < memory["peak_run_bytes"]


def test_fp8_checkpoint_blocks(tmp_path, monkeypatch, capsys, cache_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHubApi)
    quantize_first, serve, quantize_and_push = commands(block("checkpoints"))

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
    code = block("plain diffusers")
    assert '"you/sd35-large-turbo-fp8"' in code and '.to("cuda")' in code
    exec(code.replace('"you/sd35-large-turbo-fp8"', repr(str(folder))).replace('.to("cuda")', '.to("cpu")'), {})  # noqa: S102
    assert Image.open(tmp_path / "out.png").size[0] >= 256


def test_every_other_python_command_in_the_docs_exists():
    """Commands named in the text: fp8demo's parse with its CLI, modules exist. (One with an optional part in
    brackets, `python -m fp8demo doctor [--json]`, is a synopsis, not a command.)"""
    import importlib.util

    from fp8demo.__main__ import _parser

    named = {text for path in DOCS for text in re.findall(r"`(python -m [^`\[]+)`", path.read_text())}
    assert len(named) >= 8
    for text in named:
        argv = shlex.split(text)
        if argv[2] == "fp8demo":
            _parser().parse_args(argv[3:])
        elif argv[2] != "pytest":
            assert importlib.util.find_spec(argv[2]) is not None, text


def slug(heading: str) -> str:
    """A heading's anchor, as the usual Markdown renderers make it: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of `path`'s headings; a repeated heading's are numbered: name, name-1, name-2..."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.M):
        base = slug(heading)
        n = counts.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        counts[base] = n + 1
    return found


def links(path: Path) -> list[str]:
    """The targets of the Markdown links and images of `path`, outside code."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", path.read_text()))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose)


def test_every_link_leads_to_a_file_of_the_repository():
    checked = 0
    for path in LINKED:
        for target in links(path):
            where = f"{path.relative_to(ROOT)}: {target}"
            assert not re.match(r"[a-z][a-z0-9+.-]*:", target), f"{where} points outside the repository"
            file, _, fragment = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            assert dest.is_relative_to(ROOT) and dest.exists(), f"{where}: no such file"
            if fragment:
                assert dest.suffix == ".md" and fragment in anchors(dest), f"{where}: no such heading"
            checked += 1
    assert checked >= 30


def test_anchors_follow_the_renderers_rules():
    assert slug("Checking a machine: `doctor`") == "checking-a-machine-doctor"
    assert slug("The engine's events") == "the-engines-events"
    assert slug("One request, from Run to PNG") == "one-request-from-run-to-png"
