"""`python -m fp8demo bench`: FP8 against 16-bit, measured. Timings are printed and recorded, never asserted.

Protocol (after flux-fast): for each precision variant, load once, then for each size and step count run
`warmup` untimed generations and `runs` timed ones, reporting min and median. Stage times come from the engine
(CUDA events on a GPU, wall time with a device sync elsewhere); the prompt-embedding cache is off so every run
pays for text encoding. "End to end" adds encoding the image to WebP for display (an upper bound: the page now
gets JPEG, which encodes a megapixel in ~10 ms against WebP's ~230 ms on a small CPU).

Each variant runs in its own child process (`python -m fp8demo bench --variants <one> --child-result FILE`), so its
peak memory is its own: a CPU process's peak RSS never goes down, and allocator caches outlive `del engine`, so
variants sharing one process would each report the largest peak so far. The fidelity comparison loads two variants
by design and runs in the parent, after the children, where it cannot touch their figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import config, hardware
from .errors import UserError
from .hardware import Capabilities

log = logging.getLogger(__name__)

PROMPT = "a lighthouse on a cliff at dusk, oil painting, warm light"


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    compile: bool

    def engine_config(self, base: config.EngineConfig) -> config.EngineConfig:
        return replace(base, precision=self.precision, compile=self.compile, warmup_runs=0, embedding_cache_size=0)


def variants_for(caps: Capabilities, compile_variants: bool | None = None) -> list[Variant]:
    """bf16, fp16 and FP8 (native where the device has FP8 matmuls, storage elsewhere); compiled twins on CUDA."""
    fp8 = "fp8-native" if caps.fp8_native else "fp8-storage"
    out = [Variant("bf16", "bf16", False), Variant("fp16", "fp16", False), Variant(fp8, "fp8", False)]
    if compile_variants if compile_variants is not None else caps.device == "cuda":
        out += [Variant("bf16+compile", "bf16", True), Variant(f"{fp8}+compile", "fp8", True)]
    return out


def select_variants(caps: Capabilities, compile_variants: bool | None, names: str | None) -> list[Variant]:
    """The variants a `--variants` list names, in the device's order. `fp8` stands for this device's FP8 variant
    (native or storage), so one command line serves any GPU; an unknown name is an error, not silently skipped."""
    available = variants_for(caps, compile_variants)
    if not names:
        return available
    fp8 = "fp8-native" if caps.fp8_native else "fp8-storage"
    wanted = {fp8 + n[3:] if n in ("fp8", "fp8+compile") else n for n in names.split(",")}
    unknown = wanted - {v.name for v in available}
    if unknown:
        raise UserError(f"No variant {', '.join(sorted(unknown))} on {caps.name}: choose from "
                        f"{', '.join(v.name for v in available)}.")
    return [v for v in available if v.name in wanted]


def _stats(values: list[float]) -> dict:
    return {"min": round(min(values), 5), "median": round(statistics.median(values), 5), "runs": len(values)}


def _webp_seconds(image) -> float:
    t0 = time.perf_counter()
    image.save(io.BytesIO(), format="WEBP", quality=90)
    return time.perf_counter() - t0


def bench_variant(variant: Variant, base: config.EngineConfig, caps: Capabilities, sizes, steps_list,
                  guidance: float | None, warmup: int, runs: int) -> dict:
    from .engine import Engine
    from .request import GenerationRequest

    t0 = time.perf_counter()
    engine = Engine(variant.engine_config(base), caps)
    engine.load()
    engine.warm_up()  # compiles when the plan says so; 0 extra runs otherwise
    load_s = time.perf_counter() - t0
    report = engine.report.as_dict()
    cases = []
    for width, height in sizes:
        for steps in steps_list:
            request = GenerationRequest(PROMPT, seed=0, steps=steps, guidance=guidance, width=width, height=height)
            for _ in range(warmup):
                engine.generate(request)
            samples = []
            for i in range(runs):
                r = engine.generate(replace(request, seed=i))
                samples.append((r, _webp_seconds(r.image)))
            res = [s[0] for s in samples]
            case = {
                "width": width,
                "height": height,
                "steps": steps,
                "guidance": res[0].request.guidance,
                "text_encoding_s": _stats([r.timings.text_encoding for r in res]),
                "denoising_s": _stats([r.timings.denoising for r in res]),
                "per_step_s": _stats([r.timings.denoising / steps for r in res]),
                "vae_decode_s": _stats([r.timings.vae_decode for r in res]),
                "end_to_end_s": _stats([r.timings.total + enc for r, enc in samples]),
                "webp_encode_s": _stats([enc for _, enc in samples]),
                "peak_memory_bytes": max(r.peak_memory_bytes for r in res),
                "peak_memory_kind": res[0].peak_memory_kind,
            }
            cases.append(case)
            log.info("%s %dx%d %d steps: %.3f s/step (median), end to end %.3f s", variant.name, width, height,
                     steps, case["per_step_s"]["median"], case["end_to_end_s"]["median"])
    resident = {name: c["bytes"] for name, c in report["components"].items()}
    result = {
        "variant": asdict(variant),
        "label": report["label"],
        "load_and_warmup_s": round(load_s, 3),
        "plan": report["plan"],
        "resident_bytes": resident,
        "resident_total_bytes": sum(resident.values()),
        "transformer_ratio_vs_bf16": report["transformer_ratio_vs_bf16"],
        "cases": cases,
    }
    del engine
    hardware.release_cached_memory(caps.device)
    return result


def fidelity(base: config.EngineConfig, caps: Capabilities, size: tuple[int, int], steps: int,
             guidance: float | None, seeds: list[int], baseline: str = "bf16") -> dict:
    """FP8 against the 16-bit transformer on the 16-bit trajectory: cosine and relative error of the transformer
    output at every step, and PSNR/SSIM of the final images (meaningful with real weights only)."""
    import torch

    from .calibrate import CALIBRATION_PROMPTS, calibrate, fake_quantize_activations
    from .compare import Comparer
    from .engine import Engine
    from .request import GenerationRequest, Job

    engine = Engine(replace(base, precision="fp8", compile=False, warmup_runs=0, embedding_cache_size=0), caps)
    engine.load()
    engine.warm_up()
    comparer = Comparer(engine)
    fp8_tr = engine.pipe.transformer
    base_tr, _, _, _ = comparer._variant(baseline)
    # static activation scales from prompts other than the one evaluated
    scales = calibrate(engine, CALIBRATION_PROMPTS[:2], steps=steps, size=size[0])
    modes = {"fp8 weights": None, "+ dynamic activations": "dynamic", "+ static activations": "static"}
    per_step: dict[str, list[list[tuple[float, float]]]] = {m: [] for m in modes}

    def hook(module, args, kwargs, output):
        ref = output[0].float().flatten()
        for label, mode in modes.items():
            ctx = fake_quantize_activations(fp8_tr, mode, scales) if mode else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                other = fp8_tr(*args, **kwargs)[0].float().flatten()
            cos = torch.nn.functional.cosine_similarity(other, ref, dim=0).item()
            rel = ((other - ref).norm() / ref.norm()).item()
            per_step[label][-1].append((cos, rel))

    handle = base_tr.register_forward_hook(hook, with_kwargs=True)
    images = []
    try:
        for seed in seeds:
            for series in per_step.values():
                series.append([])
            request = GenerationRequest(PROMPT, seed=seed, steps=steps, guidance=guidance, width=size[0],
                                        height=size[1])
            engine.run(Job(request, transformer=base_tr, label=baseline))
    finally:
        handle.remove()
    for seed in seeds:
        request = GenerationRequest(PROMPT, seed=seed, steps=steps, guidance=guidance, width=size[0], height=size[1])
        images.append(comparer.compare(Job(request), baseline).metrics.as_dict())
    def summary(series):
        return [
            {
                "step": i + 1,
                "cosine_mean": round(statistics.mean(s[i][0] for s in series), 6),
                "cosine_min": round(min(s[i][0] for s in series), 6),
                "relative_error_mean": round(statistics.mean(s[i][1] for s in series), 6),
            }
            for i in range(len(series[0]))
        ]

    return {
        "baseline": baseline,
        "fp8": engine.plan.label(),
        "size": list(size),
        "steps": steps,
        "seeds": seeds,
        "per_step": summary(per_step["fp8 weights"]),
        "activation_scaling": {
            "note": "FP8 activation rounding emulated in bf16 on the same inputs (native kernels need an FP8 GPU); "
                    f"static scales calibrated on {len(CALIBRATION_PROMPTS[:2])} other prompts",
            **{label: summary(series) for label, series in per_step.items() if label != "fp8 weights"},
        },
        "images": images,
        "random_weights": engine.source.random_weights,
    }


def bench_argv(args, variants: list[Variant]) -> list[str]:
    """The `bench` options that reproduce this measurement (recorded in the JSON, and how the children are called)."""
    argv = ["--model", args.model, "--t5", args.t5, "--modulation", args.modulation, "--offload", args.offload,
            "--sizes", args.sizes, "--steps", args.steps, "--warmup", str(args.warmup), "--runs", str(args.runs),
            "--variants", ",".join(v.name for v in variants)]
    if args.guidance is not None:
        argv += ["--guidance", repr(args.guidance)]
    return argv


def _run_in_child(args, variant: Variant) -> dict:
    """One variant in a fresh `python -m fp8demo bench` process; its result comes back through a JSON file."""
    with tempfile.TemporaryDirectory(prefix="fp8demo-bench-") as tmp:
        result_path = Path(tmp) / "variant.json"
        cmd = [sys.executable, "-m", "fp8demo", *(["-v"] if getattr(args, "verbose", False) else []), "bench",
               *bench_argv(args, [variant]), "--child-result", str(result_path)]
        # The child must import this very package, whatever the working directory or what else is installed.
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        log.info("%s: running in its own process: %s", variant.name, shlex.join(cmd[1:]))
        # stdout is the child's one-line CLI answer, not ours to print; its log goes to stderr as it runs
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
        if done.returncode == 2:  # the CLI's user-error status: the child has printed the reason
            raise UserError(f"bench variant {variant.name} stopped on the error above.")
        if done.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"bench variant {variant.name} failed in its own process (exit {done.returncode}); "
                               "its log is above")
        return json.loads(result_path.read_text())


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def run_child(args) -> dict:
    """The child's side of `_run_in_child`: exactly one variant, result written to `args.child_result`."""
    caps = hardware.detect()
    base = config.EngineConfig(model=args.model, t5=args.t5, modulation=args.modulation, offload=args.offload)
    (variant,) = select_variants(caps, True, args.variants)
    sizes = [config_size(s) for s in args.sizes.split(",")]
    steps_list = [int(s) for s in args.steps.split(",")]
    result = bench_variant(variant, base, caps, sizes, steps_list, args.guidance, args.warmup, args.runs)
    Path(args.child_result).write_text(json.dumps(result))
    return {"variant": variant.name, "result": args.child_result}


def run(args, on_progress=None) -> dict:
    """The whole benchmark; `on_progress(result_so_far)` after each variant, so a long CPU run keeps its work."""
    caps = hardware.detect()
    base = config.EngineConfig(model=args.model, t5=args.t5, modulation=args.modulation, offload=args.offload)
    variants = select_variants(caps, args.compile_variants, args.variants)
    sizes = [config_size(s) for s in args.sizes.split(",")]
    steps_list = [int(s) for s in args.steps.split(",")]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: list[dict] = []
    out = {
        "benchmark": "fp8demo bench",
        "started": started,
        "device": {"name": caps.name, "kind": caps.device, "compute_capability": caps.compute_capability,
                   "total_memory": caps.total_memory, "cpu_count": caps.cpu_count, "fp8_native": caps.fp8_native},
        "versions": hardware.versions(),
        "config": {"model": args.model, "t5": args.t5, "modulation": args.modulation, "offload": args.offload,
                   "sizes": [list(s) for s in sizes], "steps": steps_list, "guidance": args.guidance,
                   "warmup": args.warmup, "runs": args.runs, "prompt": PROMPT,
                   "timing": "CUDA events" if caps.device == "cuda" else "wall clock with device sync",
                   "peak_memory_scope": "per variant: each variant ran in its own process",
                   "argv": bench_argv(args, variants) + (["--fidelity"] if args.fidelity else [])},
        "variants": results,
    }
    for v in variants:
        load_before = _load_average()
        result = _run_in_child(args, v)
        # other work on the machine slows a CPU benchmark several-fold: record it beside the timings
        result["load_average_1min"] = [load_before, _load_average()]
        results.append(result)
        if on_progress is not None:
            on_progress(out)
    if args.fidelity:
        out["fidelity"] = fidelity(base, caps, sizes[0], steps_list[0], args.guidance, [0, 1])
    return out


def config_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def markdown(result: dict) -> str:
    dev = result["device"]
    lines = [
        f"Device: {dev['name']} ({dev['kind']}); model `{result['config']['model']}`; "
        f"{result['config']['runs']} timed runs after {result['config']['warmup']} warm-up; "
        f"{result['config']['timing']}.",
        "",
        "| variant | size | steps | per step (median) | text | denoising | VAE | end to end (min / median) "
        "| peak memory | resident | transformer | ratio vs bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result["variants"]:
        for c in v["cases"]:
            lines.append(
                f"| {v['variant']['name']} | {c['width']}x{c['height']} | {c['steps']} "
                f"| {c['per_step_s']['median']:.3f} s | {c['text_encoding_s']['median']:.3f} s "
                f"| {c['denoising_s']['median']:.3f} s | {c['vae_decode_s']['median']:.3f} s "
                f"| {c['end_to_end_s']['min']:.3f} / {c['end_to_end_s']['median']:.3f} s "
                f"| {c['peak_memory_bytes'] / 2**30:.2f} GiB | {v['resident_total_bytes'] / 2**30:.2f} GiB "
                f"| {v['resident_bytes']['transformer'] / 2**30:.2f} GiB | {v['transformer_ratio_vs_bf16']:.3f} |"
            )
    if "fidelity" in result:
        f = result["fidelity"]
        steps = ", ".join(f"{s['cosine_mean']:.5f}" for s in f["per_step"])
        lines += ["", f"Fidelity ({f['fp8']} vs {f['baseline']}, {f['size'][0]}x{f['size'][1]}, seeds "
                      f"{f['seeds']}): transformer-output cosine per step {steps}; relative error per step "
                      + ", ".join(f"{s['relative_error_mean']:.4f}" for s in f["per_step"]) + "."]
        for label, series in f.get("activation_scaling", {}).items():
            if label != "note":
                lines.append(f"- {label}: cosine per step " + ", ".join(f"{s['cosine_mean']:.5f}" for s in series))
    return "\n".join(lines)


def chart(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, per_step, mem = [], [], []
    for v in result["variants"]:
        c = v["cases"][0]
        names.append(v["variant"]["name"])
        per_step.append(c["per_step_s"]["median"])
        mem.append(v["resident_bytes"]["transformer"] / 2**30)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.bar(names, per_step, color="#4c72b0")
    a.set_ylabel("s / step (median)")
    a.set_title(f"{result['config']['model']}, {result['variants'][0]['cases'][0]['width']} px")
    b.bar(names, mem, color="#dd8452")
    b.set_ylabel("transformer GiB resident")
    b.set_title(result["device"]["name"])
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save(result: dict, out_dir: Path, stem: str) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md", "chart": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["markdown"].write_text(markdown(result) + "\n")
    chart(result, paths["chart"])
    return {k: str(v) for k, v in paths.items()}


def device_slug(result: dict) -> str:
    name = result["device"]["name"].lower()
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").replace("--", "-")
