"""In kiosk mode only the screen's browser uses the page; the LAN gets take-home PNGs and health.

Every request goes to 127.0.0.1. Another machine is played by X-Forwarded-For, which the server (uvicorn) honours
from a proxy on loopback only: the address the rule sees, as a request through a local proxy would carry it.
"""

import os
import time

import httpx
import pytest
from conftest import free_port
from gradio_raw import call, join

from fp8demo import config
from fp8demo.errors import SetupError
from fp8demo.faces.kiosk.face import face as kiosk_face
from fp8demo.faces.kiosk.page import build_kiosk_ui
from fp8demo.faces.kiosk.service import KioskService
from fp8demo.web.access import AccessRule
from fp8demo.web.server import launch
from fp8demo.web.service import DemoService

SCREEN_2 = "192.0.2.7"  # a second kiosk screen, allowed by FP8DEMO_KIOSK_CLIENTS
PHONE = {"x-forwarded-for": "192.0.2.99"}  # a visitor's phone on the exhibition Wi-Fi
SETTINGS = config.KioskConfig(cooldown=30, clients=(SCREEN_2,), take_ttl=60,
                              public_url="http://kiosk.example:7860")


@pytest.fixture(scope="module")
def kiosk_app(tiny_engine):
    app_cfg = config.AppConfig(engine=tiny_engine.cfg, face="kiosk", host="127.0.0.1", port=free_port())
    service = DemoService.from_engine(tiny_engine, app_cfg)
    kiosk = KioskService(service, SETTINGS)
    demo = build_kiosk_ui(kiosk)
    launch(demo, kiosk_face(SETTINGS), service, app_cfg, block=False)
    yield kiosk, f"http://127.0.0.1:{app_cfg.port}/"
    demo.close()


def test_policy_allows_loopback_and_the_listed_clients_only():
    rule = kiosk_face(config.KioskConfig(clients=("192.0.2.7", "10.1.0.0/16"))).access
    assert rule.allows("127.0.0.1") and rule.allows("::1") and rule.allows("127.0.0.2")
    assert rule.allows("192.0.2.7") and rule.allows("10.1.200.3")
    assert not rule.allows("192.0.2.8") and not rule.allows("10.2.0.1") and not rule.allows("local")
    with pytest.raises(SetupError, match="FP8DEMO_KIOSK_CLIENTS: 'kiosk-2' is not an IP address"):
        kiosk_face(config.KioskConfig(clients=("kiosk-2",)))  # at start-up, before any model loading
    assert AccessRule().allows("192.0.2.8")  # the Generate page's rule: everyone


def test_kiosk_clients_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FP8DEMO_KIOSK_CLIENTS", "192.0.2.7, 10.1.0.0/16")
    monkeypatch.setenv("FP8DEMO_TAKE_TTL", "120")
    cfg = config.KioskConfig()
    assert cfg.clients == ("192.0.2.7", "10.1.0.0/16") and cfg.take_ttl == 120
    monkeypatch.delenv("FP8DEMO_KIOSK_CLIENTS")
    monkeypatch.delenv("FP8DEMO_TAKE_TTL")
    assert config.KioskConfig().clients == () and config.KioskConfig().take_ttl == 3600


def test_the_lan_gets_take_home_and_health_only(kiosk_app):
    from gradio_client import Client

    kiosk, url = kiosk_app
    status, image, _ = Client(url, verbose=False).predict(prompt="a lighthouse", api_name="/create")
    assert status.startswith("Here it is")
    png = kiosk.service.output_dir / (kiosk.recent[0][0].stem + ".png")
    assert kiosk.service.wait_for_file(png)  # written in the background
    cached = httpx.get(url + "gradio_api/file=" + image).status_code  # the screen's own view of its picture

    for path in ("", "config", "gradio_api/info", "gradio_api/queue/status", "gradio_api/file=" + image,
                 "gradio_api/file=" + str(png), "theme.css"):
        refused = httpx.get(url + path, headers=PHONE)
        assert refused.status_code == 403, path
        assert "scan the QR code" in refused.json()["detail"]
    response, _ = join(url, "create", ["a cat", None, False], headers=PHONE)
    assert response.status_code == 403  # the events too: nobody off the screen makes pictures
    # nor runs the attract loop's tick (a light event), nor fetches the creation it shows
    tick = httpx.post(url + "gradio_api/run/predict", json={"data": [None], "fn_index": 0, "session_hash": "z"},
                      headers=PHONE)
    attract_copy = kiosk.recent[0][0]
    assert tick.status_code == 403
    assert httpx.get(url + "gradio_api/file=" + str(attract_copy), headers=PHONE).status_code == 403
    assert httpx.get(url + "health/live", headers=PHONE).status_code == 200
    assert httpx.get(url + "health/ready", headers=PHONE).status_code == 200
    take = httpx.get(url + "take/" + png.name, headers=PHONE)
    assert take.status_code == 200 and take.content.startswith(b"\x89PNG")

    assert cached == 200 and httpx.get(url + "config").status_code == 200  # the screen itself is served
    assert httpx.get(url + "config", headers={"x-forwarded-for": SCREEN_2}).status_code == 200  # and screen 2


def test_fairness_is_keyed_on_the_client_not_its_session(kiosk_app):
    """Fresh session hashes (new API clients) do not skip the cooldown: the screen's address is the key."""
    from gradio_client import Client

    kiosk, url = kiosk_app
    kiosk.gate._last_end.clear()
    first = Client(url, verbose=False).predict(prompt="a boat", api_name="/create")[0]
    assert first.startswith("Here it is")
    for i in range(3):
        status = Client(url, verbose=False).predict(prompt=f"boat {i}", api_name="/create")[0]
        assert "wait" in status and "Here it is" not in status
    status, _ = call(url, "create", ["a raw boat", None, False])
    assert status == 200  # answered (with the cooldown text), not served a picture
    assert kiosk.gate.wait_left("127.0.0.1", kiosk.clock()) > 0


def test_take_home_pngs_expire(kiosk_app):
    kiosk, url = kiosk_app
    png = next(kiosk.service.output_dir.glob("fp8demo-*.png"))
    assert httpx.get(url + "take/" + png.name).status_code == 200
    old = time.time() - SETTINGS.take_ttl - 1
    os.utime(png, (old, old))
    gone = httpx.get(url + "take/" + png.name)
    assert gone.status_code == 404 and "no longer here" in gone.json()["error"]
    kiosk.service.janitor.run_once()  # and the janitor deletes it
    assert not png.exists()


def test_service_unit_binds_for_phones_with_the_access_rule():
    from pathlib import Path

    unit = (Path(__file__).resolve().parent.parent / "assets/kiosk/systemd/fp8demo.service").read_text()
    assert "--host 0.0.0.0" in unit and "FP8DEMO_KIOSK_CLIENTS" in unit and "FP8DEMO_TAKE_TTL" in unit


def test_web_app_is_open_to_every_client(tiny_engine):
    from test_app import serve

    demo, url = serve(DemoService.from_engine(tiny_engine))
    try:
        assert httpx.get(url + "config", headers=PHONE).status_code == 200
    finally:
        demo.close()
