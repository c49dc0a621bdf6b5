"""Resident bytes per component of a full-size architecture, bf16 against FP8 (no generation, CPU is fine).

    python -m benchmarks.memory --model random:medium        # writes benchmarks/results/memory-<model>-<device>.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fp8demo import bench, config, hardware, logs
from fp8demo.engine import Engine

VARIANTS = {
    "bf16": dict(precision="bf16"),
    "fp8": dict(precision="fp8"),
    "fp8, --modulation bf16": dict(precision="fp8", modulation="bf16"),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="random:medium")
    p.add_argument("--t5", default="auto", choices=config.T5_MODES)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    logs.configure(verbose=True)
    caps = hardware.detect()
    rows = {}
    for name, options in VARIANTS.items():
        t0 = time.perf_counter()
        engine = Engine(config.EngineConfig(model=args.model, t5=args.t5, warmup_runs=0, **options), caps)
        engine.load()
        report = engine.report.as_dict()
        rows[name] = {
            "label": report["label"],
            "plan": report["plan"],
            "components": {k: {"bytes": v["bytes"], "storage": v["storage"], "fp8_linears": v["fp8_linears"],
                               "linears": v["linears"]} for k, v in report["components"].items()},
            "total_bytes": report["total_bytes"],
            "transformer_bytes": report["transformer_bytes"],
            "transformer_bf16_bytes": report["transformer_bf16_bytes"],
            "transformer_ratio_vs_bf16": report["transformer_ratio_vs_bf16"],
            "load_seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, json.dumps({k: rows[name][k] for k in ("total_bytes", "transformer_ratio_vs_bf16")}), flush=True)
        del engine
        hardware.release_cached_memory(caps.device)
    result = {
        "benchmark": "resident bytes per component",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": {"name": caps.name, "kind": caps.device, "cpu_count": caps.cpu_count},
        "versions": bench.versions(),
        "config": {"model": args.model, "t5": args.t5, "max_side": config.MAX_SIDE},
        "variants": rows,
    }
    slug = bench.device_slug({"device": {"name": caps.name}})
    out = Path(args.out) / f"memory-{args.model.replace(':', '-')}-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
