"""Running for days: out-of-memory recovery, fatal device errors, the launcher script and the service units."""

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from fp8demo import hardware
from fp8demo.errors import OutOfMemory, SetupError
from fp8demo.request import GenerationRequest
from fp8demo.web.service import DemoService

ROOT = Path(__file__).resolve().parent.parent
KIOSK = ROOT / "assets" / "kiosk"


def test_out_of_memory_frees_memory_and_the_next_visitor_is_served(tiny_engine, monkeypatch):
    real_run = tiny_engine._run
    calls = []

    def oom_once(*args):
        if not calls:
            calls.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run(*args)

    released = []
    monkeypatch.setattr(tiny_engine, "_run", oom_once)
    monkeypatch.setattr(hardware, "release_cached_memory", lambda device: released.append(device))
    service = DemoService.from_engine(tiny_engine)
    with pytest.raises(OutOfMemory, match="ran out of memory for a 512x512 image"):
        service.generate(GenerationRequest("a cat", steps=1))
    assert released == ["cpu"] and service.ready
    assert service.generate(GenerationRequest("a cat", steps=1)).image.size == (512, 512)


@pytest.mark.parametrize("message", ["CUDA error: an illegal memory access was encountered",
                                     "CUDA error: device-side assert triggered"])
def test_fatal_device_error_marks_not_ready_and_exits(tiny_engine, monkeypatch, message):
    def broken(*args):
        raise RuntimeError(message)

    monkeypatch.setattr(tiny_engine, "_run", broken)
    # the pool takes a dead device's engine out; this shared engine serves the other tests again afterwards
    monkeypatch.setattr(tiny_engine, "state", tiny_engine.state)
    monkeypatch.setattr(tiny_engine, "error", tiny_engine.error)
    exits = []
    service = DemoService.from_engine(tiny_engine)
    service.on_fatal = exits.append
    with pytest.raises(SetupError, match="the demo is restarting|The demo is restarting"):
        service.generate(GenerationRequest("a cat", steps=1))
    assert exits == [service] and service.state == "failed" and "unrecoverable" in service.error
    assert tiny_engine.state == "failed"  # out of the pool
    # visitors queued behind it hear the same, never the raw device text (that is for the log and /health/ready)
    with pytest.raises(SetupError, match="The demo is restarting") as later:
        service.generate(GenerationRequest("a cat", steps=1))
    assert "CUDA" not in str(later.value)
    with pytest.raises(SetupError, match="The demo is restarting"):
        service.compare(GenerationRequest("a cat", steps=1))
    assert service.status()["restarting"] and "CUDA" in service.status()["error"]


def test_error_classification():
    assert hardware.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not hardware.is_fatal_device_error(torch.OutOfMemoryError("CUDA out of memory"))
    assert hardware.is_fatal_device_error(RuntimeError("CUDA error: unspecified launch failure"))
    assert not hardware.is_fatal_device_error(ValueError("Height (2000) cannot be greater than 96"))


class _Health(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        ready = type(self).hits >= 3
        self.send_response(200 if ready else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_launcher_waits_for_ready_then_starts_a_locked_down_browser(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    fake = tmp_path / "chromium"
    args_file = tmp_path / "args"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args_file}\n')
    fake.chmod(0o755)
    env = dict(os.environ, CHROMIUM=str(fake), XDG_RUNTIME_DIR=str(tmp_path))
    try:
        proc = subprocess.run([str(KIOSK / "launch-kiosk.sh"), url], env=env, capture_output=True, text=True,
                              timeout=60)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert _Health.hits >= 3 and proc.stderr.count("waiting for") == 2  # it waited for warm-up
    args = args_file.read_text().split("\n")
    assert "--kiosk" in args and f"--app={url}" in args
    for flag in ("--disable-pinch", "--noerrdialogs", "--overscroll-history-navigation=0",
                 "--check-for-update-interval=31536000", "--disable-session-crashed-bubble"):
        assert flag in args, flag
    assert any(a.startswith("--disable-features=") and "Translate" in a for a in args)


def test_service_units_restart_on_failure_and_watch_health():
    units = KIOSK / "systemd"
    server = (units / "fp8demo.service").read_text()
    assert "Restart=on-failure" in server and "app.py --kiosk" in server
    watchdog = (units / "fp8demo-watchdog.service").read_text()
    assert "/health/live" in watchdog and "systemctl restart fp8demo.service" in watchdog
    assert "OnUnitActiveSec=" in (units / "fp8demo-watchdog.timer").read_text()
    assert "launch-kiosk.sh" in (units / "fp8demo-kiosk-browser.service").read_text()
