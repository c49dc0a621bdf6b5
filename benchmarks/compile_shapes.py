"""How each way of compiling the transformer copes with the sizes the app offers (the figures behind compiler.py).

    python -m benchmarks.compile_shapes --mode blocks-dynamic   # or whole-static, whole-dynamic
    # writes benchmarks/results/compile-shapes-<mode>-<device>.json
    python -m benchmarks.compile_shapes --mode blocks-dynamic --backend eager --requests 3
    # dynamo alone (graphs and recompiles, no kernels): seconds instead of minutes, to see a mode's guards

Each mode runs in its own process with an empty inductor cache. The model (`tiny` by default) is loaded eagerly,
compiled the chosen way, then asked for every offered aspect ratio, a CFG request (batch 2) at two of them, and
the first size again; each request's wall time and whether it failed is recorded. A request that compiles takes
seconds to minutes; one that reuses a graph takes the eager time or less.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from benchmarks.results_file import write_result

MODES = ("blocks-dynamic", "whole-static", "whole-dynamic")


def _compile(transformer, mode: str, backend: str) -> None:
    if mode == "whole-static":  # what the engine did before: one graph per (height, width, batch)
        transformer.compile(fullgraph=True, dynamic=False, backend=backend)
    elif mode == "whole-dynamic":
        transformer.compile(fullgraph=True, dynamic=True, backend=backend)
    else:  # the engine's way
        from fp8demo import compiler

        compiler.compile_blocks(transformer, "cpu", backend)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--backend", default="inductor", help="torch.compile backend; eager: dynamo only (default: "
                                                          "%(default)s)")
    p.add_argument("--requests", type=int, default=None, help="only the first N requests (default: all)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))  # a cold compile

    from fp8demo import config, hardware, logs
    from fp8demo.engine import Engine
    from fp8demo.request import GenerationRequest

    logs.configure()
    caps = hardware.detect()
    engine = Engine(config.EngineConfig(model=args.model, compile=False, warmup_runs=0), caps)
    engine.load()
    engine.state = "ready"  # no warm-up: the first request pays for the first compile, which is what we measure
    _compile(engine.pipe.transformer, args.mode, args.backend)
    sizes = list(config.aspect_sizes(engine.preset).values())
    first = sizes[0]
    cases = [(*first, 0.0), (*first, 0.0), (*first, 4.5)] + [(w, h, 0.0) for w, h in sizes[1:]]
    cases += [(w, h, 4.5) for w, h in sizes[1:3]] + [(*first, 0.0)]
    rows = []
    cases = cases[: args.requests]
    for width, height, guidance in cases:
        t0 = time.perf_counter()
        row = {"width": width, "height": height, "guidance": guidance}
        try:
            engine.generate(GenerationRequest("a red fox", seed=1, steps=args.steps, width=width, height=height,
                                              guidance=guidance))
            row["seconds"] = round(time.perf_counter() - t0, 2)
        except Exception as error:
            row["seconds"] = round(time.perf_counter() - t0, 2)
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"mode": args.mode, "backend": args.backend, "model": args.model, "steps": args.steps,
           "device": caps.describe(),
           "versions": hardware.versions(), "requests": rows,
           "failed": sum("error" in r for r in rows)}
    suffix = "" if args.backend == "inductor" else f"-{args.backend}"
    path = write_result(out, args.out, f"compile-shapes-{args.mode}{suffix}", caps.name)
    print(path)


if __name__ == "__main__":
    main()
