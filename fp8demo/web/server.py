"""Serving a face: health routes and take-home downloads on the Gradio app's own port, the bounded queue, the door,
the janitor, auth, share links."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from starlette.requests import Request

from .. import config
from ..errors import SetupError
from .access import signed_in
from .face import Face
from .retention import Keeping
from .service import PNG_NAME, DemoService

log = logging.getLogger(__name__)

TAKE_NAME = PNG_NAME  # nothing else is served


def health_routes(service: DemoService) -> list:
    """GET /health/live (the process serves) and /health/ready (the engine is warm and working).

    Passed to the FastAPI constructor (with `take_route`), so they come before Gradio's routes and outside its login.
    """
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute

    async def live():  # on the event loop itself: no worker thread to wait for when the pool is busy
        return JSONResponse({"status": "live"})

    def ready():
        s = service.status()
        if s["ready"]:
            return JSONResponse({"status": "ready", "model": s["model"], "precision": s["precision"],
                                 "device": s["device"], "events": s["events"], "engines": s["engines"]})
        reason = s["error"] if s["state"] == "failed" else f"warming up ({s['state']})"
        return JSONResponse({"status": s["state"], "reason": reason, "engines": s["engines"]}, status_code=503)

    return [
        APIRoute("/health/live", live, methods=["GET"]),
        APIRoute("/health/ready", ready, methods=["GET"]),
    ]


def metrics_route(service: DemoService, public: bool):
    """GET /metrics: the service's metrics in Prometheus text; behind the login, if there is one, unless `public`
    (FP8DEMO_METRICS_PUBLIC=1, for a scraper that cannot sign in)."""
    from fastapi.responses import JSONResponse, Response
    from fastapi.routing import APIRoute

    def metrics(request: Request):  # FastAPI reads the annotation, which must be found among this module's names
        if not public and not signed_in(request):
            return JSONResponse({"error": "Not authenticated"}, status_code=401)
        body, content_type = service.metrics.text()
        return Response(body, media_type=content_type)

    return APIRoute("/metrics", metrics, methods=["GET"])


def take_route(service: DemoService, keeping: Keeping):
    """GET /take/<name>: a picture's PNG by its file name (download links and take-home QR codes point here), while
    the face keeps it."""
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.routing import APIRoute

    def take(name: str, request: Request):  # sync: FastAPI runs it in a worker thread while it waits for the writer
        if not signed_in(request):  # the door (access.Guard) refuses first; kept here for a route moved outside it
            return JSONResponse({"error": "Not authenticated"}, status_code=401)
        path = service.output_dir / name
        if not TAKE_NAME.fullmatch(name) or not service.wait_for_file(path, timeout=10.0) or keeping.expired(path):
            return JSONResponse({"error": "This picture is no longer here."}, status_code=404)
        return FileResponse(path, media_type="image/png", filename=name)

    return APIRoute("/take/{name}", take, methods=["GET"])


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SetupError("--auth needs FP8DEMO_AUTH set to user:password in the environment.")
    return user, password


def check_port(host: str, port: int) -> None:
    """Fail at once, in one line, when the port is taken (before minutes of model loading, not after)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no conflict
        try:
            s.bind((host, port))
        except OSError as error:
            raise SetupError(
                f"Port {port} on {host} is already in use (another fp8demo?). Stop that program, or choose another "
                f"port with --port, e.g. python app.py --port {port + 1}"
            ) from error


def launch(demo, face: Face, service: DemoService, app_cfg: config.AppConfig, block: bool = True):
    """Serve `demo` (the face's page) on host:port with the face's launch options, access rule and keeping, behind
    the bounded queue. Returns (app, local_url, share_url); with `block`, serves until stopped."""
    from starlette.middleware import Middleware

    from .access import PUBLIC_PREFIXES, AccessPolicy, Guard, networks
    from .retention import Janitor, retention_rules

    networks(app_cfg.trusted_proxies, "FP8DEMO_TRUSTED_PROXIES")  # a bad entry fails here, not silently in uvicorn
    config.trust_forwarded_from(app_cfg.trusted_proxies)  # read by the uvicorn server demo.launch starts
    log.info("X-Forwarded-For is believed from: %s", ", ".join(app_cfg.trusted_proxies) or "no one")
    limits = app_cfg.limits
    # as many jobs at once as there are engines (events.GPU): one per device
    # api_open=False: Gradio's own /run/<api> refuses queued events too (the door, access.Guard, refuses them first)
    demo.queue(max_size=app_cfg.max_queue, default_concurrency_limit=len(service.devices()), api_open=False)
    service.output_dir.mkdir(parents=True, exist_ok=True)
    public = PUBLIC_PREFIXES + (("/metrics",) if app_cfg.metrics_public else ())  # a scraper on the LAN, too
    policy = AccessPolicy(face.access, jobs_per_client=limits.jobs_per_client, max_body_bytes=limits.max_body_bytes,
                          public=public)
    # Gradio deletes this process's cache files past the age (and all of them at shutdown); the janitor also
    # bounds their count and clears what an earlier, killed process left
    storage = app_cfg.storage
    demo.delete_cache = (int(storage.prune_every), int(storage.cache_hours * 3600))
    if getattr(service, "janitor", None) is not None:
        service.janitor.stop()
    own_cache = Path(demo.GRADIO_CACHE).resolve() == storage.gradio_cache.resolve()
    if not own_cache:
        log.info("Gradio's cache %s is not this app's own folder: only Gradio's own age rule applies to it",
                 demo.GRADIO_CACHE)

    def rules():
        return retention_rules(face.keeping, service.output_dir, storage, storage.gradio_cache if own_cache else None)

    service.janitor = Janitor(rules, storage.prune_every).start()
    service.face = face.name
    service.queue_length = lambda: len(demo._queue) if getattr(demo, "_queue", None) is not None else 0
    safety = face.image_safety if app_cfg.image_safety is None else app_cfg.image_safety
    if safety:
        from .safety import ImageSafety

        service.use_image_safety(ImageSafety(app_cfg.image_safety_threshold).load())
        log.info("Image safety: every picture is checked (withheld at a score of %.2f or more)",
                 app_cfg.image_safety_threshold)
    else:
        service.use_image_safety(None)
    try:
        served = demo.launch(
            server_name=app_cfg.host,
            server_port=app_cfg.port,
            share=app_cfg.share,
            auth=parse_auth(app_cfg.auth),
            auth_message="fp8demo: sign in",
            prevent_thread_lock=True,
            show_error=True,
            quiet=True,  # Gradio's own hint names launch(share=True); ours names the flag
            app_kwargs={"routes": [*health_routes(service), take_route(service, face.keeping),
                                   metrics_route(service, app_cfg.metrics_public)],
                        "middleware": [Middleware(Guard, policy=policy, blocks=demo, refused=service.refused)]},
            allowed_paths=[str(service.output_dir)],
            max_file_size=limits.max_upload,
            state_session_capacity=limits.session_capacity,
            **face.launch_options(),
        )
    except OSError as error:  # lost a race for the port since check_port
        raise SetupError(f"Could not serve on {app_cfg.host}:{app_cfg.port} ({error}); choose another with --port.") \
            from error
    _, local_url, share_url = served
    log.info("Serving on %s", local_url)
    log.info("Public link: %s" if share_url else "For a public link, start again with --share%s",
             share_url or " (add --auth when it leaves your hands)")
    log.info("Pictures are saved in %s", service.output_dir)
    if block:
        demo.block_thread()
    return served
