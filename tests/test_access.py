"""In kiosk mode only the screens the operator lists use the page; everyone else gets take-home PNGs and health.

Clients are told apart by the source address of their connection. On Linux every 127.x.y.z is this machine's own,
without setup, so here 127.0.0.1 is the screen, 127.0.0.5 a second listed screen, 127.0.0.7 a visitor's phone (or
any other local process) and 127.0.0.9 a reverse proxy the operator trusts (FP8DEMO_TRUSTED_PROXIES). A forged
X-Forwarded-For header changes nothing unless that proxy sends it.
"""

import os
import time

import httpx
import pytest
from conftest import free_port, serve
from gradio_raw import call, fn_index, join

from fp8demo import config
from fp8demo.errors import SetupError
from fp8demo.faces.kiosk.face import face as kiosk_face
from fp8demo.faces.kiosk.page import build_kiosk_ui
from fp8demo.faces.kiosk.service import KioskService
from fp8demo.web.access import AccessRule
from fp8demo.web.server import launch
from fp8demo.web.service import DemoService

SCREEN, SCREEN_2, PHONE, PROXY = "127.0.0.1", "127.0.0.5", "127.0.0.7", "127.0.0.9"
LAN_PHONE = "192.0.2.99"  # a visitor's phone on the exhibition Wi-Fi, seen through the proxy
SETTINGS = config.KioskConfig(cooldown=30, clients=(*config.KIOSK_SCREEN, SCREEN_2), take_ttl=60,
                              public_url="http://kiosk.example:7860")
# /create's prompt and the composer's four tiles; an empty prompt: refused by the kiosk's own check at once, no picture
EMPTY = ["", None, None, None, None]


def http(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address`."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


@pytest.fixture(scope="module")
def kiosk_app(tiny_engine):
    app_cfg = config.AppConfig(engine=tiny_engine.cfg, face="kiosk", host="127.0.0.1", port=free_port(),
                               trusted_proxies=(PROXY,))
    service = DemoService.from_engine(tiny_engine, app_cfg)
    kiosk = KioskService(service, SETTINGS)
    demo = build_kiosk_ui(kiosk)
    launch(demo, kiosk_face(SETTINGS), service, app_cfg, block=False)
    yield kiosk, f"http://127.0.0.1:{app_cfg.port}/", demo
    demo.close()


def test_the_list_is_the_whole_rule():
    rule = kiosk_face(config.KioskConfig(clients=("192.0.2.7", "10.1.0.0/16"))).access
    assert rule.allows("192.0.2.7") and rule.allows("10.1.200.3") and rule.allows("::ffff:10.1.0.9")
    assert not rule.allows("192.0.2.8") and not rule.allows("10.2.0.1") and not rule.allows("local")
    assert not rule.allows("127.0.0.1") and not rule.allows("::1")  # loopback only when listed
    default = kiosk_face(config.KioskConfig(clients=config.KIOSK_SCREEN)).access
    assert default.allows("127.0.0.1") and default.allows("::1") and default.allows("::ffff:127.0.0.1")
    assert not default.allows("127.0.0.7") and not default.allows("127.0.0.2") and not default.allows("::2")
    with pytest.raises(SetupError, match="FP8DEMO_KIOSK_CLIENTS: 'kiosk-2' is not an IP address"):
        kiosk_face(config.KioskConfig(clients=("kiosk-2",)))  # at start-up, before any model loading
    assert AccessRule().allows("192.0.2.8")  # the Generate page's rule: everyone


def test_kiosk_clients_and_trusted_proxies_come_from_the_environment(monkeypatch, caplog):
    monkeypatch.delenv("FP8DEMO_KIOSK_CLIENTS", raising=False)
    monkeypatch.delenv("FP8DEMO_TRUSTED_PROXIES", raising=False)
    assert config.KioskConfig().clients == ("127.0.0.1", "::1") and config.AppConfig().trusted_proxies == ()
    monkeypatch.setenv("FP8DEMO_KIOSK_CLIENTS", "192.0.2.7, 10.1.0.0/16")
    monkeypatch.setenv("FP8DEMO_TRUSTED_PROXIES", "10.0.0.2 10.0.1.0/24")
    monkeypatch.setenv("FP8DEMO_TAKE_TTL", "120")
    cfg = config.KioskConfig()
    assert cfg.clients == ("192.0.2.7", "10.1.0.0/16") and cfg.take_ttl == 120
    assert config.AppConfig().trusted_proxies == ("10.0.0.2", "10.0.1.0/24")
    kiosk_face(cfg)  # a list without this machine's browser is allowed, with a warning
    assert "names neither 127.0.0.1 nor ::1" in caplog.text


def test_a_bad_trusted_proxy_fails_at_launch(tiny_engine):
    service = DemoService.from_engine(tiny_engine)
    with pytest.raises(SetupError, match="FP8DEMO_TRUSTED_PROXIES: 'proxy.lan' is not an IP address"):
        serve(service, trusted_proxies=("proxy.lan",))


def test_the_door_from_several_addresses_and_forged_headers(kiosk_app):
    """The page, the queue, the call and run APIs, take-home and health, from each kind of client."""
    kiosk, url, demo = kiosk_app
    assert demo.server.config.forwarded_allow_ips == PROXY  # uvicorn believes X-Forwarded-For from the proxy alone
    status, message = call(url, "create", ["a lighthouse", None, None, None, None])
    assert status == 200 and message["output"]["data"][0].startswith("Here it is")
    png = kiosk.service.output_dir / (kiosk.recent[0][0].stem + ".png")
    assert kiosk.service.wait_for_file(png)
    index = fn_index(url, "create")

    def door(address: str, headers: dict | None = None) -> dict[str, int]:
        """The status of each route for a client at `address` (403s must be the door's own refusal)."""
        with http(address) as c:
            answers = {
                "page": c.get(url, headers=headers),
                "config": c.get(url + "config", headers=headers),
                "join": join(url, "create", EMPTY, headers=headers, index=index, http=c)[0],
                "call": c.post(url + "gradio_api/call/create", json={"data": EMPTY}, headers=headers),
                "run": c.post(url + "gradio_api/run/create", json={"data": EMPTY}, headers=headers),
                "take": c.get(url + "take/" + png.name, headers=headers),
                "health": c.get(url + "health/ready", headers=headers),
            }
        for name, answer in answers.items():
            if answer.status_code == 403:
                assert "scan the QR code" in answer.json()["detail"], (address, name)
        return {name: answer.status_code for name, answer in answers.items()}

    # /run/<api> runs outside the queue: closed to events that make pictures, for the screen too (access.Guard)
    served = {"page": 200, "config": 200, "join": 200, "call": 200, "run": 404, "take": 200, "health": 200}
    refused = {"page": 403, "config": 403, "join": 403, "call": 403, "run": 403, "take": 200, "health": 200}
    assert door(SCREEN) == served
    assert door(SCREEN_2) == served  # a second screen the operator listed
    assert door(PHONE) == refused  # another loopback address is a phone like any LAN address
    assert door("127.0.0.2") == refused
    # forged headers from an address that is no trusted proxy change nothing
    assert door(PHONE, {"x-forwarded-for": SCREEN}) == refused
    assert door(PHONE, {"x-forwarded-for": SCREEN, "x-real-ip": SCREEN, "forwarded": f"for={SCREEN}"}) == refused
    assert door(SCREEN, {"x-forwarded-for": LAN_PHONE}) == served  # the screen stays the screen
    # the trusted proxy names the client: a phone behind it is a phone, a screen behind it a screen
    assert door(PROXY) == refused  # the proxy itself is no screen
    assert door(PROXY, {"x-forwarded-for": LAN_PHONE}) == refused
    assert door(PROXY, {"x-forwarded-for": SCREEN_2}) == served
    # a phone that forges the header before the proxy appends its real address is still that phone
    assert door(PROXY, {"x-forwarded-for": f"{SCREEN}, {LAN_PHONE}"}) == refused


def test_the_lan_gets_take_home_and_health_only(kiosk_app):
    from gradio_client import Client

    kiosk, url, _ = kiosk_app
    kiosk.gate._last_end.clear()
    status, image, _ = Client(url, verbose=False).predict(prompt="a lighthouse", api_name="/create")
    assert status.startswith("Here it is")
    png = kiosk.service.output_dir / (kiosk.recent[0][0].stem + ".png")
    assert kiosk.service.wait_for_file(png)  # written in the background
    cached = httpx.get(url + "gradio_api/file=" + image).status_code  # the screen's own view of its picture

    with http(PHONE) as phone:
        for path in ("", "config", "gradio_api/info", "gradio_api/queue/status", "gradio_api/file=" + image,
                     "gradio_api/file=" + str(png), "theme.css"):
            refused = phone.get(url + path)
            assert refused.status_code == 403, path
            assert "scan the QR code" in refused.json()["detail"]
        response, _ = join(url, "create", ["a cat", None, None, None, None], http=phone)
        assert response.status_code == 403  # the events too: nobody off the screen makes pictures
        # nor runs the attract loop's tick (a light event), nor fetches the creation it shows
        tick = phone.post(url + "gradio_api/run/predict", json={"data": [None], "fn_index": 0, "session_hash": "z"})
        attract_copy = kiosk.recent[0][0]
        assert tick.status_code == 403
        assert phone.get(url + "gradio_api/file=" + str(attract_copy)).status_code == 403
        assert phone.get(url + "health/live").status_code == 200
        assert phone.get(url + "health/ready").status_code == 200
        take = phone.get(url + "take/" + png.name)
        assert take.status_code == 200 and take.content.startswith(b"\x89PNG")

    assert cached == 200 and httpx.get(url + "config").status_code == 200  # the screen itself is served


def test_fairness_is_keyed_on_the_client_not_its_session(kiosk_app):
    """Fresh session hashes (new API clients) do not skip the cooldown: the screen's address is the key."""
    from gradio_client import Client

    kiosk, url, _ = kiosk_app
    kiosk.gate._last_end.clear()
    first = Client(url, verbose=False).predict(prompt="a boat", api_name="/create")[0]
    assert first.startswith("Here it is")
    for i in range(3):
        status = Client(url, verbose=False).predict(prompt=f"boat {i}", api_name="/create")[0]
        assert "wait" in status and "Here it is" not in status
    status, _ = call(url, "create", ["a raw boat", None, None, None, None])
    assert status == 200  # answered (with the cooldown text), not served a picture
    assert kiosk.gate.wait_left("127.0.0.1", kiosk.clock()) > 0


def test_take_home_pngs_expire(kiosk_app):
    kiosk, url, _ = kiosk_app
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


def test_web_app_is_open_to_every_client_and_believes_no_forwarded_header(tiny_engine):
    demo, url = serve(DemoService.from_engine(tiny_engine))
    try:
        assert demo.server.config.forwarded_allow_ips == ""  # by default uvicorn would trust 127.0.0.1 and ::1
        with http(PHONE) as phone:
            assert phone.get(url + "config").status_code == 200
            assert phone.get(url + "config", headers={"x-forwarded-for": LAN_PHONE}).status_code == 200
    finally:
        demo.close()
