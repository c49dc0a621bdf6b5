"""Command line: `python -m fp8demo generate | info` (and the subcommands later issues add).

Output is one JSON line on stdout so scripts can read it; logs go to stderr. A user mistake prints `error: ...`
and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import config, logs
from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fp8demo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one image and print its timings as JSON")
    gen.add_argument("prompt")
    gen.add_argument("--out", default="out.png", help="PNG path, parameters in its text chunk (default: %(default)s)")
    _add_sampling_arguments(gen)
    config.add_engine_arguments(gen)

    info = sub.add_parser("info", help="load the model, apply precision and print the precision report as JSON")
    _add_sampling_arguments(info)  # accepted so a generate command line can be turned into info unchanged
    config.add_engine_arguments(info)
    return parser


def _add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (defaults: the model's preset)")
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--guidance", type=float, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--negative", default="", help="negative prompt")
    g.add_argument("--seed", type=int, default=None, help="0..2^32-1; random when left out")


def _request(args):
    from .request import GenerationRequest, validate

    req = GenerationRequest(
        prompt=getattr(args, "prompt", "x"),
        negative_prompt=args.negative,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        width=args.width,
        height=args.height,
    )
    return validate(req)  # before loading anything: a typo should not cost a model load


def cmd_generate(args) -> dict:
    from .engine import Engine
    from .imageio import save_png

    request = _request(args)
    engine = Engine(config.engine_config_from_args(args, warmup_runs=0)).start()
    result = engine.generate(request)
    out = save_png(result, args.out)
    r = result.request
    return {
        "out": str(out),
        "model": result.model,
        "seed": r.seed,
        "width": r.width,
        "height": r.height,
        "steps": r.steps,
        "guidance": r.guidance,
        "timings": result.timings.as_dict(),
        "load_seconds": round(engine.load_seconds or 0.0, 3),
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": result.peak_memory_kind,
        "warnings": list(result.warnings),
        "precision": engine.report.as_dict(),
    }


def cmd_info(args) -> dict:
    from .engine import Engine

    _request(args)
    engine = Engine(config.engine_config_from_args(args, warmup_runs=0))
    t0 = time.perf_counter()
    engine.load()
    return {
        "model": engine.source.name,
        "device": engine.caps.describe(),
        "load_seconds": round(time.perf_counter() - t0, 3),
        "notice": engine.source.notice,
        "preset": {"steps": engine.preset.steps, "guidance": engine.preset.guidance,
                   "width": engine.preset.width, "height": engine.preset.height},
        **engine.report.as_dict(),
    }


COMMANDS = {"generate": cmd_generate, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.verbose)
    try:
        output = COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
