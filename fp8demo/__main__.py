"""Command line: `python -m fp8demo generate | info | doctor | plan | quantize | bench | fidelity`.

Output is one JSON line on stdout so scripts can read it; logs go to stderr. A user mistake prints `error: ...`
and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from . import config, logs, serve
from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fp8demo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_arguments(sub.add_parser("serve", help="serve the web app (the Generate and Compare tabs, or --kiosk); "
                                                     "the same as python app.py"))

    gen = sub.add_parser("generate", help="generate one image and print its timings as JSON")
    gen.add_argument("prompt")
    gen.add_argument("--out", default="out.png", help="PNG path, parameters in its text chunk (default: %(default)s)")
    _add_sampling_arguments(gen)
    config.add_engine_arguments(gen)

    info = sub.add_parser("info", help="load the model, apply precision and print the precision report as JSON")
    _add_sampling_arguments(info)  # accepted so a generate command line can be turned into info unchanged
    config.add_engine_arguments(info)

    doctor = sub.add_parser("doctor", help="check this machine: device, versions, plan, weights, compile cache, "
                                           "one timed image, verdict")
    doctor.add_argument("--json", action="store_true", help="print the report as one JSON line")
    doctor.add_argument("--no-generate", dest="generate", action="store_false",
                        help="skip loading the model and making an image")
    config.add_engine_arguments(doctor)
    plan = sub.add_parser("plan", help="offline: the run plan on a card of --vram GiB: where each part goes, peak "
                                       "memory, and why")
    plan.add_argument("--vram", type=float, required=True, metavar="GIB", help="the card's memory in GiB")
    plan.add_argument("--compute-capability", default="8.9", metavar="MAJOR.MINOR",
                      help="the card's CUDA compute capability; FP8 matmuls from 8.9 (default: %(default)s, Ada)")
    plan.add_argument("--json", action="store_true", help="print the run plan as one JSON line")
    config.add_engine_arguments(plan, ("model", "precision", "fp8_matmul", "t5", "modulation", "offload", "cache",
                                       "compile", "max_side"))

    quant = sub.add_parser("quantize", help="write an FP8 diffusers folder (loads with plain diffusers + torchao too)")
    quant.add_argument("--model", required=True, help="repo id, folder, tiny, random:<arch>[:blocks] or a file")
    quant.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    config.add_engine_arguments(quant, ("t5", "modulation", "base"))
    quant.add_argument("--calibrate", type=int, default=0, metavar="N",
                       help="also store static activation scales measured on N built-in prompts (default: none)")
    quant.add_argument("--calibration-steps", type=int, default=None, help="default: the model preset's steps")
    quant.add_argument("--calibration-size", type=int, default=None, help="default: the preset's width")
    quant.add_argument("--push-to-hub", metavar="REPO", default=None,
                       help="also publish the folder as this Hub model repo (needs HF_TOKEN with write access)")
    quant.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")

    bench = sub.add_parser("bench", help="time and size every precision variant; write JSON, Markdown and a chart")
    config.add_engine_arguments(bench, ("model", "t5", "modulation", "offload"))
    bench.set_defaults(model="random:medium:2")  # real widths, two blocks: minutes on a CPU, not hours
    bench.add_argument("--variants", default=None,
                       help="comma list of bf16,fp16,fp8-storage,fp8-native and their +compile twins; fp8 means "
                            "this device's FP8 variant (default: all)")
    bench.add_argument("--compile-variants", dest="compile_variants", action="store_true", default=None,
                       help="also time compiled variants (default: only on CUDA)")
    bench.add_argument("--no-compile-variants", dest="compile_variants", action="store_false")
    bench.add_argument("--sizes", default="512", help="comma list of WIDTHxHEIGHT or SIDE (default: %(default)s)")
    bench.add_argument("--steps", default="2", help="comma list of step counts (default: %(default)s)")
    bench.add_argument("--guidance", type=float, default=None, help="default: the model preset's")
    bench.add_argument("--warmup", type=int, default=1, help="untimed runs per case (default: %(default)s)")
    bench.add_argument("--runs", type=int, default=3, help="timed runs per case (default: %(default)s)")
    bench.add_argument("--fidelity", action="store_true", help="also FP8 vs bf16 cosine per step and image metrics")
    bench.add_argument("--out", default="benchmarks/results", help="folder for the results (default: %(default)s)")
    bench.add_argument("--name", default=None, help="file stem (default: bench-<model>-<device>)")
    # internal: each variant is measured in a child process started with this (see fp8demo.bench)
    bench.add_argument("--child-result", default=None, help=argparse.SUPPRESS)

    fid = sub.add_parser("fidelity", help="every prompt x seed with every recipe, scored against the first recipe "
                                          "(LPIPS, PSNR, SSIM) beside its cost; write JSON, Markdown, contact sheet")
    config.add_engine_arguments(fid, ("model", "t5", "modulation", "offload", "base", "max_side"))
    fid.add_argument("--recipes", default="bf16,fp8",
                     help="comma list of speed recipes, the first the reference: a base (bf16, fp16, fp8, "
                          "fp8-storage, fp8-native) and modifiers (+compile, +cache, +cache=<spec>, +fp8-attention) "
                          "(default: %(default)s)")
    fid.add_argument("--prompts", default="smoke",
                     help="smoke | parti200 (200 PartiPrompts) | a text file, one prompt a line, # comments "
                          "(default: %(default)s)")
    fid.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N prompts of the set")
    fid.add_argument("--seeds", type=int, default=1, metavar="K",
                     help="seeds 0..K-1 per prompt (default: %(default)s)")
    fid.add_argument("--steps", type=int, default=None, help="default: the model preset's")
    fid.add_argument("--size", default=None, metavar="WxH", help="default: the model preset's")
    fid.add_argument("--guidance", type=float, default=None, help="default: the model preset's")
    fid.add_argument("--out", required=True, metavar="DIR",
                     help="folder for fidelity.json, fidelity.md and contact-sheet.png")
    fid.add_argument("--json", action="store_true", help="print the whole report as one JSON document")
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


def cmd_doctor(args) -> dict | None:
    from . import doctor

    out = doctor.run(config.engine_config_from_args(args), generate=args.generate)
    args.exit_code = 0 if out["ok"] else 1  # an operator's script can test the verdict
    if not args.json:
        print(doctor.plain(out))
        return None
    return out
def cmd_plan(args) -> dict | None:
    from . import cards
    from .runplan import describe

    try:
        cc = tuple(int(x) for x in args.compute_capability.split("."))
    except ValueError:
        cc = ()
    if len(cc) != 2:
        raise UserError(f"--compute-capability must look like 8.9, got {args.compute_capability!r}.")
    plan = cards.plan_for_card(args.model, args.vram, config.engine_config_from_args(args), cc)
    if not args.json:
        print("\n".join([f"model:         {args.model} on a {args.vram:g} GiB card (compute capability "
                          f"{args.compute_capability})", *describe(plan.as_dict())]))
        return None
    return {"model": args.model, "vram_gib": args.vram, **plan.as_dict()}


def cmd_quantize(args) -> dict:
    from pathlib import Path

    from . import hardware
    from .engine import Engine
    from .weights import fp8_format
    from .weights.sources import SourceKind

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder.")
    # Quantized on the CPU as FP8 weights; the same per-row FP8 weights feed FP8 matmuls on a GPU.
    cfg = config.engine_config_from_args(args, precision="fp8", offload="none", compile=False, warmup_runs=0)
    engine = Engine(cfg, hardware.cpu_capabilities())
    engine.load()
    source_seconds = engine.load_seconds
    src = engine.source
    folder, revision = None, None
    if src.kind is SourceKind.TINY:
        from .weights.random_models import tiny_path

        folder = tiny_path(cfg.cache_dir)
    elif src.kind is SourceKind.FOLDER:
        folder = Path(src.location)
    elif src.kind is SourceKind.REPO:
        from diffusers import DiffusionPipeline

        folder = Path(DiffusionPipeline.download(src.location, token=cfg.hf_token))  # the cached snapshot
        revision = folder.name  # snapshot folders are named by commit hash
    calibration = None
    if args.calibrate:
        from .calibrate import CALIBRATION_PROMPTS, calibrate

        prompts = CALIBRATION_PROMPTS[: args.calibrate]
        engine.warm_up()  # marks the engine ready; warmup_runs=0 makes this free
        scales = calibrate(engine, prompts, args.calibration_steps, args.calibration_size)
        calibration = {"kind": "static per-tensor, amax / 448", "prompts": len(prompts),
                       "steps": args.calibration_steps or engine.preset.steps,
                       "size": args.calibration_size or engine.preset.width, "scales": scales}
    manifest = fp8_format.save_quantized(engine.pipe, engine.report, src.name, out, revision, folder, calibration)
    resident = sum(c.bytes for c in engine.report.components)
    t_bytes = sum(f["bytes"] for rel, f in manifest["files"].items() if rel.startswith("transformer/")
                  and rel.endswith(".safetensors"))
    bf16_bytes = engine.report.transformer_loaded_bytes  # what the transformer's bf16 files hold
    del engine
    # the source pipeline goes before the folder loads, its pages back to the system too: two models never share
    # the peak
    hardware.release_cached_memory("cpu")
    t0 = time.perf_counter()
    again = Engine(replace(cfg, model=str(out)), hardware.cpu_capabilities())
    again.load()
    published = None
    if args.push_to_hub:
        published = fp8_format.push_to_hub(out, args.push_to_hub, token=cfg.hf_token, private=args.private)
    return {
        "out": str(out),
        "source": manifest["source"],
        "resident_bytes": resident,
        "published": published,
        "transformer_file_bytes": t_bytes,
        "transformer_bf16_bytes": bf16_bytes,
        "transformer_file_ratio_vs_bf16": round(t_bytes / bf16_bytes, 4),
        "files": {rel: f["bytes"] for rel, f in manifest["files"].items()},
        "load_and_quantize_source_s": round(source_seconds, 3),
        "load_quantized_folder_s": round(time.perf_counter() - t0, 3),
    }


def cmd_bench(args) -> dict:
    from pathlib import Path

    from . import bench

    if args.child_result:
        return bench.run_child(args)

    def save(result):
        stem = args.name or f"bench-{args.model.replace(':', '-')}-{bench.device_slug(result)}"
        return bench.save(result, Path(args.out), stem)

    result = bench.run(args, on_progress=save)
    paths = save(result)
    print(bench.markdown(result), file=sys.stderr)
    return {"files": paths}


def cmd_fidelity(args) -> dict:
    from pathlib import Path

    from . import fidelity

    setup = fidelity.setup_from_args(args)  # every flag checked before a model loads
    outcome = fidelity.run(setup)
    files = fidelity.save(outcome, Path(args.out))
    if args.json:
        return outcome.report
    print(Path(files["markdown"]).read_text(), file=sys.stderr)
    return {"files": files}


def cmd_serve(args) -> None:
    serve.serve(args)  # until stopped


COMMANDS = {"serve": cmd_serve, "generate": cmd_generate, "info": cmd_info, "doctor": cmd_doctor, "plan": cmd_plan,
            "quantize": cmd_quantize, "bench": cmd_bench, "fidelity": cmd_fidelity}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.verbose)
    try:
        output = COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if output is not None:
        print(json.dumps(output))
    return getattr(args, "exit_code", 0)


if __name__ == "__main__":
    sys.exit(main())
