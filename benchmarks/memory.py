"""Resident bytes per component of a full-size architecture, bf16 against FP8 (no generation, CPU is fine); with
--peaks, the peak RSS of building, quantizing and loading it against those resident bytes.

    python -m benchmarks.memory --model random:medium        # writes benchmarks/results/memory-<model>-<device>.json
    python -m benchmarks.memory --model random:medium --t5 fp8 --peaks
        # writes benchmarks/results/memory-peaks-<model>-t5-<t5>-<device>.json

--peaks runs each step in its own process and reads its peak from the kernel (wait4's ru_maxrss, the figure
/usr/bin/time -v prints as "Maximum resident set size", taken the same way), since a process's peak RSS never goes
down:
- build: `python -m fp8demo info --model M --t5 T` (a random model is built and quantized block by block);
- quantize: `python -m fp8demo quantize --model M --t5 T --out <temporary folder>` (build, write, load back);
- load: Engine.load of that folder, then one byte read from every page of every weight: safetensors are memory-mapped
  and an untouched weight is not yet in RSS (the first image touches them all).

    python -m benchmarks.memory --t5-16bit [--t5-layers 6] [--tmp DIR]
        # writes benchmarks/results/memory-peaks-t5-16bit[-<layers>]-<device>.json

--t5-16bit measures loading a folder whose T5-XXL is 16-bit, as the SD3.5 repos ship it, with `--t5 fp8` (quantized
as it loads): the tiny pipeline with a full-width T5-XXL of random bf16 weights (all 24 blocks, 8.9 GiB of files, or
--t5-layers of them), written into a temporary folder under --tmp and deleted afterwards; its load step is the one
above, and the figure is held against the bound the project sets (1.25 x T5's FP8 bytes + 1.5 GiB) and against the
planner's estimate of a load peak (planner.load_peak_bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results_file import write_result
from fp8demo import config, hardware, logs
from fp8demo.engine import Engine

VARIANTS = {
    "bf16": dict(precision="bf16"),
    "fp8": dict(precision="fp8"),
    "fp8, --modulation bf16": dict(precision="fp8", modulation="bf16"),
}


# Runs the command given after the peak file and writes the command's ru_maxrss (KiB) to that file. The measured
# process must not be a direct child of this one: Linux carries the high-water RSS of the process that forks and
# execs into the new program's ru_maxrss, so a child of a process holding torch (or a test session holding models)
# would report at least its parent's size. Forked from this small interpreter, it starts from a few MiB.
_RUNNER = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(cmd: list[str]) -> tuple[dict, int, float]:
    """Run `cmd`, return the JSON its last stdout line prints, its peak RSS in bytes and its wall time."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fp8demo-peak-") as tmp:
        peak_file = Path(tmp) / "maxrss_kib"
        proc = subprocess.run([sys.executable, "-c", _RUNNER, str(peak_file), *cmd], stdout=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with status {proc.returncode}")
        peak = int(peak_file.read_text()) * 1024
    return json.loads(proc.stdout.strip().splitlines()[-1]), peak, time.perf_counter() - t0


def touch_load(folder: str, t5: str) -> dict:
    """Load an FP8 folder as the engine does and bring every page of every weight into memory."""
    import torch

    from fp8demo.tensors import inner_tensors, unique_tensors

    engine = Engine(config.EngineConfig(model=folder, precision="fp8", t5=t5, offload="none", compile=False,
                                        warmup_runs=0), hardware.cpu_capabilities())
    engine.load()
    pages = 0
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        module = getattr(engine.pipe, name, None)
        for t in unique_tensors(module) if module is not None else ():
            for inner in inner_tensors(t):
                flat = inner.detach().reshape(-1).view(torch.uint8)
                flat[::4096].sum()  # reads one byte of each 4 KiB page
                pages += -(-flat.numel() // 4096)
    components = {c.name: c.bytes for c in engine.report.components}
    return {"resident_bytes": sum(components.values()), "components": components, "pages_touched": pages}


SHARD_BYTES = 5 * 10**9  # transformers' default shard size, in which the SD3.5 repos split T5-XXL


def write_16bit_t5(folder: Path, num_layers: int | None = None) -> int:
    """Write a T5-XXL of random bf16 weights (the first `num_layers` of its 24 blocks) into `folder` as sharded
    safetensors with their index, one tensor at a time so that at most one shard is ever in memory; its bytes.

    Weights are N(0, 1/fan_in) as the random builds make them; the one embedding table is stored once, as
    `shared.weight` (transformers ties `encoder.embed_tokens` to it when it loads)."""
    import torch
    from safetensors.torch import save_file

    from fp8demo.weights import footprint

    model = footprint.meta_t5(num_layers)
    model.config.dtype = torch.bfloat16
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    tensors = dict(model.named_parameters())  # tied weights once
    shards, size = [[]], 0
    for name, p in tensors.items():
        if size + 2 * p.numel() > SHARD_BYTES and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += 2 * p.numel()
    generator = torch.Generator().manual_seed(3)
    weight_map = {}
    for i, names in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        shard = {}
        for name in names:
            shape = tensors[name].shape
            value = (torch.randn(shape, generator=generator).mul_(1 / math.sqrt(shape[-1])) if len(shape) == 2
                     else torch.ones(shape))
            shard[name] = value.to(torch.bfloat16)
            weight_map[name] = file
        save_file(shard, folder / file, metadata={"format": "pt"})
        del shard
    total = sum(2 * p.numel() for p in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def t5_16bit_load(args) -> dict:
    """Peak RSS of loading, with `--t5 fp8`, a folder whose T5-XXL is 16-bit (see the module's docstring)."""
    from fp8demo import planner
    from fp8demo.policy import Kind, Layer
    from fp8demo.weights import footprint, random_models

    with tempfile.TemporaryDirectory(prefix="fp8demo-t5-16bit-", dir=args.tmp) as tmp:
        folder = Path(tmp) / "sd35-t5-16bit"
        shutil.copytree(random_models.ensure_tiny(config.default_cache_dir()), folder,
                        ignore=shutil.ignore_patterns("text_encoder_3"))
        t0 = time.perf_counter()
        file_bytes = write_16bit_t5(folder / "text_encoder_3", args.t5_layers)
        written = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "benchmarks.memory", "--touch-load", str(folder), "--t5", "fp8"]
        out, peak, seconds = _run_measured(cmd)
    t5_bytes = out["components"]["text_encoder_3"]
    meta_t5 = footprint.meta_t5(args.t5_layers)
    t5 = footprint.component_bytes("text_encoder_3", meta_t5, config.MAX_SIDE)
    kinds = {Layer.T5: Kind.FP8_WEIGHTS}
    others = out["resident_bytes"] - t5_bytes
    transient = planner.load_transient(t5, kinds, footprint.largest_module_16bit(meta_t5))
    estimate = planner.load_peak_bytes(others + t5.under(kinds), [transient])
    bound = 1.25 * t5_bytes + 1.5 * planner.GIB
    return {"t5_layers": meta_t5.config.num_layers, "t5_file_bytes": file_bytes,
            "t5_fp8_bytes": t5_bytes, "t5_fp8_bytes_planner": t5.under(kinds), "resident_bytes": out["resident_bytes"],
            "peak_rss_bytes": peak, "peak_over_t5_fp8": round(peak / t5_bytes, 3),
            "bound_bytes": int(bound), "within_bound": peak <= bound,
            "planner_peak_load_bytes": estimate, "planner_over_measured": round(estimate / peak, 3),
            "command": "python -m benchmarks.memory --touch-load <folder> --t5 fp8",
            "write_seconds": round(written, 1), "load_seconds": round(seconds, 1)}


def peaks(args) -> dict:
    """Peak RSS of building, quantizing and loading `args.model` with T5 `args.t5`, each in its own process."""
    python = [sys.executable, "-m"]
    steps = {}
    with tempfile.TemporaryDirectory(prefix="fp8demo-peaks-") as tmp:
        folder = str(Path(tmp) / "fp8")
        commands = {
            "build": [*python, "fp8demo", "info", "--model", args.model, "--t5", args.t5],
            "quantize": [*python, "fp8demo", "quantize", "--model", args.model, "--t5", args.t5, "--out", folder],
            "load": [*python, "benchmarks.memory", "--touch-load", folder, "--t5", args.t5],
        }
        for step, cmd in commands.items():
            out, peak, seconds = _run_measured(cmd)
            resident = out.get("resident_bytes", out.get("total_bytes"))
            steps[step] = {"command": " ".join(["python", "-m", *cmd[2:]]).replace(folder, "<folder>"),
                           "peak_rss_bytes": peak, "resident_bytes": resident,
                           "peak_over_resident": round(peak / resident, 3), "seconds": round(seconds, 1)}
            print(step, json.dumps({k: steps[step][k] for k in ("peak_rss_bytes", "peak_over_resident")}),
                  flush=True)
    return steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="random:medium")
    p.add_argument("--t5", default="auto", choices=config.T5_MODES)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--peaks", action="store_true", help="peak RSS of build, quantize and load (see above)")
    p.add_argument("--t5-16bit", action="store_true", help="peak RSS of loading a 16-bit T5-XXL with --t5 fp8")
    p.add_argument("--t5-layers", type=int, help="with --t5-16bit: T5 blocks written (default: all 24)")
    p.add_argument("--tmp", help="with --t5-16bit: where the temporary folder goes (default: the system's)")
    p.add_argument("--touch-load", metavar="FOLDER", help=argparse.SUPPRESS)  # the load step of --peaks
    args = p.parse_args(argv)
    if args.touch_load:
        print(json.dumps(touch_load(args.touch_load, args.t5)))
        return
    logs.configure(verbose=True)
    caps = hardware.detect()
    if args.t5_16bit:
        result = {
            "benchmark": "peak RSS of loading a folder whose T5-XXL is 16-bit, with --t5 fp8, in its own process",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": {"name": caps.name, "kind": caps.device, "cpu_count": caps.cpu_count},
            "versions": hardware.versions(),
            "config": {"folder": "tiny pipeline + T5-XXL, random bf16 weights, sharded safetensors",
                       "peak": "wait4 ru_maxrss of the load's process (= /usr/bin/time -v)",
                       "bound": "1.25 x T5's FP8 bytes + 1.5 GiB"},
            "load": t5_16bit_load(args),
        }
        print(json.dumps(result["load"], indent=1))
        layers = f"-{args.t5_layers}" if args.t5_layers else ""
        print(write_result(result, args.out, f"memory-peaks-t5-16bit{layers}", caps.name))
        return
    if args.peaks:
        result = {
            "benchmark": "peak RSS of build, quantize and load, each in its own process",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": {"name": caps.name, "kind": caps.device, "cpu_count": caps.cpu_count},
            "versions": hardware.versions(),
            "config": {"model": args.model, "t5": args.t5, "max_side": config.MAX_SIDE,
                       "peak": "wait4 ru_maxrss of the step's process (= /usr/bin/time -v)"},
            "steps": peaks(args),
        }
        out = write_result(result, args.out, f"memory-peaks-{args.model.replace(':', '-')}-t5-{args.t5}", caps.name)
        print(out)
        return
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
        "versions": hardware.versions(),
        "config": {"model": args.model, "t5": args.t5, "max_side": config.MAX_SIDE},
        "variants": rows,
    }
    out = write_result(result, args.out, f"memory-{args.model.replace(':', '-')}", caps.name)
    print(out)


if __name__ == "__main__":
    main()
