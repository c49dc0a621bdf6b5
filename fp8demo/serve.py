"""`python -m fp8demo serve` (and app.py, the same): flags -> settings -> service -> face -> launch.

Sits above the platform (web/) and the faces (faces/): the one place that picks a face by name.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import config, logs
from .errors import SetupError, UserError

if TYPE_CHECKING:
    from .web.face import Face

FACES = ("generate", "kiosk")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's flags; their defaults are the config dataclasses' own."""
    d = config.AppConfig
    config.add_engine_arguments(p)
    p.add_argument("--host", default=config.field_default(d, "host"), help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=config.field_default(d, "port"), help="(default: %(default)s)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live share link")
    p.add_argument("--kiosk", action="store_true", help="serve the full-screen kiosk page instead of the tabs")
    p.add_argument("--auth", action="store_true", help="require the login in FP8DEMO_AUTH (user:password)")
    p.add_argument("--outputs", type=Path, default=config.field_default(d, "outputs"),
                   help="folder where every picture is saved as a PNG with its parameters (default: %(default)s; "
                        "or FP8DEMO_OUTPUTS)")
    p.add_argument("--image-safety", action=argparse.BooleanOptionalAction, default=None,
                   help="check every picture with an image classifier before it is shown or saved, withholding "
                        "those it flags (threshold: FP8DEMO_IMAGE_SAFETY_THRESHOLD; default: on with --kiosk, off "
                        "for the Generate page)")
    p.add_argument("--devices", default=config.field_default(d, "devices"), metavar="DEVICES",
                   help="one warm engine per device, jobs to the first free one: cuda:0,cuda:1 | all (every visible "
                        "GPU) | cpu,cpu (default: the one best device)")
    p.add_argument("--max-queue", type=int, default=config.field_default(d, "max_queue"),
                   help="requests waiting for the GPU before new ones are told it is busy (default: %(default)s)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the fp8demo web app: the Generate and Compare tabs, or --kiosk, "
                                            "on a warm SD3.5 engine.")
    add_arguments(p)
    return p.parse_args(argv)


def app_config(args: argparse.Namespace) -> config.AppConfig:
    return config.AppConfig(
        engine=config.engine_config_from_args(args),
        face="kiosk" if args.kiosk else "generate",
        host=args.host,
        port=args.port,
        share=args.share,
        auth=config.auth_from_env() if args.auth else None,
        max_queue=args.max_queue,
        devices=args.devices,
        outputs=args.outputs,
        image_safety=args.image_safety,
    )


def face_for(app_cfg: config.AppConfig) -> Face:
    """The face `app_cfg.face` names, with its own settings."""
    if app_cfg.face == "generate":
        from .faces.generate.face import face

        return face(app_cfg.storage)
    if app_cfg.face == "kiosk":
        from .faces.kiosk.face import face

        return face()  # it reads its own settings (config.KioskConfig)
    raise SetupError(f"Unknown face {app_cfg.face!r}: choose one of {', '.join(FACES)}.")


def serve(args: argparse.Namespace) -> None:
    """Check the port, start the engine warming up, build the face's page and serve it until stopped. A user mistake
    raises UserError before any model loading."""
    from .web.server import check_port, launch, parse_auth
    from .web.service import DemoService

    # a server logs at INFO: start-up, warm-up and refusals are for the operator
    logging.getLogger().setLevel(logging.INFO)
    app_cfg = app_config(args)
    check_port(app_cfg.host, app_cfg.port)
    if args.auth:
        parse_auth(app_cfg.auth or "")  # fail now, with the message, not at the first visitor
    face = face_for(app_cfg)  # its settings are checked here too (e.g. the kiosk's client list)
    if app_cfg.share and face.access.listed_only:
        # a share link's tunnel connects from this machine, so every visitor on the internet would be the screen
        raise SetupError(f"--share cannot serve the {face.name} page: it is for the listed screens only, and "
                         "visitors through a share link arrive from this machine's own address.")
    # the page says "warming up" meanwhile
    service = DemoService(app_cfg, compare_baseline=face.compare_baseline).start(background=True)
    config.use_gradio_cache(app_cfg.storage.gradio_cache)  # its own folder, which the janitor may prune
    launch(face.build(service), face, service, app_cfg)


def main(argv=None) -> int:
    """app.py's entry point: the flags alone, without `serve` before them."""
    args = parse_args(argv)
    logs.configure(verbose=True)
    try:
        serve(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
