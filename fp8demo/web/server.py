"""Serving: health routes on the Gradio app's own port, the bounded queue, auth, share links."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .. import config
from ..errors import SetupError
from .service import DemoService

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TAKE_NAME = re.compile(r"fp8demo-\d+-[0-9a-f]{8}\.png")


def health_routes(service: DemoService) -> list:
    """GET /health/live (the process serves) and /health/ready (the engine is warm and working).

    Passed to the FastAPI constructor, so they come before Gradio's routes and outside its login.
    """
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute

    def live():
        return JSONResponse({"status": "live"})

    def ready():
        s = service.status()
        if s["ready"]:
            return JSONResponse({"status": "ready", "model": s["model"], "precision": s["precision"],
                                 "device": s["device"]})
        reason = s["error"] if s["state"] == "failed" else f"warming up ({s['state']})"
        return JSONResponse({"status": s["state"], "reason": reason}, status_code=503)

    def take(name: str):  # sync: FastAPI runs it in a worker thread while it waits for the PNG writer
        """A visitor's PNG by its file name (the take-home QR code points here)."""
        from fastapi.responses import FileResponse

        path = service.output_dir / name
        if not TAKE_NAME.fullmatch(name) or not service.wait_for_file(path, timeout=10.0):
            return JSONResponse({"error": "This picture is no longer here."}, status_code=404)
        return FileResponse(path, media_type="image/png", filename=name)

    return [
        APIRoute("/health/live", live, methods=["GET"]),
        APIRoute("/health/ready", ready, methods=["GET"]),
        APIRoute("/take/{name}", take, methods=["GET"]),
    ]


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SetupError("--auth needs FP8DEMO_AUTH set to user:password in the environment.")
    return user, password


def launch(demo, service: DemoService, app_cfg: config.AppConfig, block: bool = True, **extra):
    """Queue, then serve on host:port. Returns (app, local_url, share_url) when block is False."""
    demo.queue(max_size=app_cfg.max_queue, default_concurrency_limit=1)
    css_path = ASSETS / "style.css"
    if app_cfg.kiosk:
        from ..kiosk.page import HEAD

        # no footer, no API link: nothing on the page leads anywhere else
        extra.setdefault("footer_links", [])
        extra.setdefault("head", HEAD)
    return demo.launch(
        server_name=app_cfg.host,
        server_port=app_cfg.port,
        share=app_cfg.share,
        auth=parse_auth(app_cfg.auth),
        auth_message="fp8demo: sign in",
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
        app_kwargs={"routes": health_routes(service)},
        allowed_paths=[str(service.output_dir)],
        css_paths=[css_path] if css_path.exists() else None,
        footer_links=extra.pop("footer_links", ["api"]),
        **extra,
    )
