"""A new user's first minutes: the README's quick start and the API example as written, a busy port, the share
hint, the CLI's help."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import BLOCKS, block, free_port, holder
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_api_example_runs_as_written(app, capsys):  # noqa: F811
    _, url = app
    code = block("api")
    assert 'url = "http://127.0.0.1:7860/"' in code
    scope: dict = {}
    exec(code.replace("http://127.0.0.1:7860/", url), scope)  # noqa: S102  (the documented example itself)
    assert len(scope["images"]) == 2 and Image.open(scope["first_jpeg"]).size == (512, 512)
    assert [i["caption"] for i in scope["images"]] == [f"seed {scope['seed']}", f"seed {scope['seed'] + 1}"]
    pngs = scope["pngs"]
    assert len(pngs) == 2 and all(png.startswith(b"\x89PNG") and b"parameters" in png for png in pngs)
    assert scope["details"]["seed"] == 7
    assert f"\n{scope['seed']} " in capsys.readouterr().out  # the printed line


def test_quick_start_order_and_commands():
    """In the README, in this order: a virtual environment, CPU torch, the app, the tests."""
    steps = ("venv", "cpu torch", "start", "tests")
    for name in steps:
        assert holder(BLOCKS[name][0]) == ROOT / "README.md", name
    venv, torch_cpu, start, tests = (block(name) for name in steps)
    where = [README.index(text, README.index("## Quick start")) for text in (venv, torch_cpu, start, tests)]
    assert where == sorted(where)
    assert venv.strip() == "python3 -m venv .venv && . .venv/bin/activate"
    assert torch_cpu.strip() == "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert start.strip() == "pip install -r requirements.txt && python app.py"
    assert tests.strip() == "pip install -r requirements-dev.txt && python -m pytest -q"


def test_the_virtual_environment_line_makes_one_and_enters_it(tmp_path):
    """Run as written, with this interpreter as `python3`: afterwards `python` is the new environment's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    done = subprocess.run(["bash", "-c", block("venv") + 'python -c "import sys; print(sys.prefix)"'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == tmp_path / ".venv"


def _app(*args, timeout=90, **kwargs):
    return subprocess.Popen([sys.executable, "app.py", "--model", "tiny", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_python_app_py_serves_quietly_says_where_pictures_go_and_names_share(cache_dir, tmp_path):
    port = free_port()
    proc = _app("--port", str(port), "--outputs", str(tmp_path / "pictures"))
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Pictures are saved in" in line for line in lines):
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert f"Serving on http://127.0.0.1:{port}/" in text
        assert "--share" in text and "share=True" not in text  # the flag, not Gradio's launch() advice
        assert str(tmp_path / "pictures") in text
        for _ in range(120):
            if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                break
            time.sleep(1)
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    # a healthy start is quiet: no line a user reads as an error, no profiler marker
    loud = [line for line in (text + rest).splitlines() if "ERROR" in line or "USDT" in line]
    assert not loud, loud


def test_a_busy_port_is_one_line_naming_the_port_and_the_flag(cache_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _app("--port", str(port))
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    errors = [line for line in out.splitlines() if line.strip()]
    assert len(errors) == 1, out
    assert errors[0].startswith("error: Port ") and str(port) in errors[0] and "--port" in errors[0]


def test_cli_help_speaks_to_users(capsys):
    from fp8demo.__main__ import main

    try:
        main(["--help"])
    except SystemExit:
        pass
    text = capsys.readouterr().out
    assert "generate" in text and "issue" not in text.lower() and "later" not in text.lower()


def test_the_kiosk_is_never_shared_through_a_public_link(capsys, cache_dir):
    """A share link's tunnel arrives from this machine, which the kiosk takes for its screen: refused at start."""
    from fp8demo.serve import main

    assert main(["--kiosk", "--share", "--model", "tiny", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --share cannot serve the kiosk page") and "Traceback" not in err
