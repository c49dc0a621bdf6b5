"""fp8demo web app: `python app.py` serves the Generate and Compare tabs (or `--kiosk`) on a warm SD3.5 engine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fp8demo import config, logs
from fp8demo.errors import UserError

log = logging.getLogger("fp8demo.app")


def parse_args(argv=None) -> argparse.Namespace:
    d = config.AppConfig
    p = argparse.ArgumentParser(description=__doc__)
    config.add_engine_arguments(p)
    p.add_argument("--host", default=config.field_default(d, "host"), help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=config.field_default(d, "port"), help="(default: %(default)s)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live share link")
    p.add_argument("--kiosk", action="store_true", help="serve the full-screen kiosk page instead of the tabs")
    p.add_argument("--auth", action="store_true", help="require the login in FP8DEMO_AUTH (user:password)")
    p.add_argument("--outputs", type=Path, default=config.field_default(d, "outputs"),
                   help="folder where every picture is saved as a PNG with its parameters (default: %(default)s; "
                        "or FP8DEMO_OUTPUTS)")
    p.add_argument("--max-queue", type=int, default=config.field_default(d, "max_queue"),
                   help="requests waiting for the GPU before new ones are told it is busy (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logs.configure(verbose=True)  # a server logs at INFO: start-up, warm-up and refusals are for the operator
    try:
        from fp8demo.web.server import check_port, launch, parse_auth
        from fp8demo.web.service import DemoService
        from fp8demo.web.ui import build_ui

        app_cfg = config.AppConfig(
            engine=config.engine_config_from_args(args),
            host=args.host,
            port=args.port,
            share=args.share,
            kiosk=args.kiosk,
            auth=config.auth_from_env() if args.auth else None,
            max_queue=args.max_queue,
            outputs=args.outputs,
        )
        check_port(app_cfg.host, app_cfg.port)
        if args.auth:
            parse_auth(app_cfg.auth or "")  # fail now, with the message, not at the first visitor
        service = DemoService(app_cfg).start(background=True)  # the page says "warming up" meanwhile
        config.use_gradio_cache(app_cfg.storage.gradio_cache)  # its own folder, which the janitor may prune
        if app_cfg.kiosk:
            from fp8demo.kiosk.page import build_kiosk_ui
            from fp8demo.kiosk.service import KioskService

            demo = build_kiosk_ui(KioskService(service, app_cfg.kiosk_settings))
        else:
            demo = build_ui(service)
        launch(demo, service, app_cfg)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
