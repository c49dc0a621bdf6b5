"""Cold and warm start with `--compile`, and the first request at a new size against a repeated one.

    python -m benchmarks.compile_start            # tiny model; writes benchmarks/results/compile-start-<device>.json

Three fresh processes share one new cache folder: an eager start for reference, then a compiled start with an
empty compile cache (cold), then another compiled start that finds the cache the first one saved (warm). Each
reports the seconds from process start to ready, then times requests: the default size three times, and sizes
it has never generated (new aspect ratios, with and without CFG). With compilation done right, a new size costs
what a repeated one does.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before the heavy imports: they are part of a start

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.results_file import write_result  # noqa: E402


def child(cache: str, compile_: bool, model: str, steps: int) -> dict:
    from fp8demo import config, hardware, logs
    from fp8demo.engine import Engine
    from fp8demo.request import GenerationRequest

    logs.configure()
    engine = Engine(config.EngineConfig(model=model, compile=compile_, warmup_runs=1, cache_dir=Path(cache)),
                    hardware.detect()).start()
    ready = time.perf_counter() - T_PROCESS
    preset = engine.preset
    sizes = [s for s in config.aspect_sizes(preset).values() if s != (preset.width, preset.height)]

    def timed(width, height, guidance):
        t0 = time.perf_counter()
        engine.generate(GenerationRequest("a red fox", seed=5, steps=steps, width=width, height=height,
                                          guidance=guidance))
        return round(time.perf_counter() - t0, 3)

    repeated = [timed(preset.width, preset.height, 0.0) for _ in range(3)]
    new = {f"{w}x{h} g={g}": timed(w, h, g) for (w, h), g in zip(sizes[2:6], (0.0, 4.5, 0.0, 4.5), strict=True)}
    return {
        "compile": compile_,
        "ready_seconds": round(ready, 2),
        "load_seconds": round(engine.load_seconds, 2),
        "warmup_seconds": round(engine.warmup_seconds, 2),
        "compile_seconds": round(engine.compile_seconds, 2) if engine.compile_seconds else None,
        "compile_cache": engine.compile_cache.state() if engine.compile_cache else None,
        "repeated_size_seconds": repeated,
        "new_size_seconds": new,
        "device": engine.caps.describe(),
        "device_name": engine.caps.name,
        "versions": hardware.versions(),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="tiny")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--starts", default="eager,cold,warm",
                   help="which starts to time, in order: eager (--no-compile), cold (empty cache), warm (the cold "
                        "start's cache) (default: %(default)s)")
    p.add_argument("--child", metavar="CACHE", help=argparse.SUPPRESS)
    p.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, not args.eager, args.model, args.steps)))
        return

    from fp8demo.weights import random_models

    cache = tempfile.mkdtemp(prefix="fp8demo-compile-start-")
    random_models.ensure_tiny(Path(cache))  # building tiny is a first-install cost, not a start's
    runs = {}
    starts = args.starts.split(",")
    if not set(starts) <= {"eager", "cold", "warm"}:
        p.error(f"--starts: choose from eager, cold, warm, got {args.starts!r}")
    for name in starts:
        extra = ["--eager"] if name == "eager" else []
        cmd = [sys.executable, "-m", "benchmarks.compile_start", "--child", cache, "--model", args.model,
               "--steps", str(args.steps), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(runs[name]), file=sys.stderr, flush=True)
    summary = {
        name: {"ready_s": r["ready_seconds"],
               "repeated_size_median_s": statistics.median(r["repeated_size_seconds"]),
               "new_size_median_s": statistics.median(r["new_size_seconds"].values())}
        for name, r in runs.items()
    }
    first = runs[starts[0]]
    out = {"model": args.model, "steps": args.steps, "device": first["device"], "summary": summary, "runs": runs}
    path = write_result(out, args.out, "compile-start", first["device_name"])
    print(json.dumps(summary, indent=1))
    print(path)


if __name__ == "__main__":
    main()
