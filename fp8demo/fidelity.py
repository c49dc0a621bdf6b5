"""The fidelity harness (`python -m fp8demo fidelity`): every prompt x seed with every speed recipe, each image scored
against the first recipe's image of the same prompt and seed (the reference), beside what the recipe costs.

One engine per recipe, loaded one after another and freed before the next: two models never share a device. Each
image is scored as it comes (LPIPS, PSNR, SSIM); only the reference images are kept whole, every other image as a
thumbnail for the contact sheet. A recipe the run plan refuses on this machine (FP8 attention off Hopper, say) is
reported with the reason and the others go on; the reference itself must run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import compiler, config, fidelity_report, hardware, lpips_metric, prompt_sets, recipes
from .engine import Engine
from .errors import InvalidRequest, SetupError, UserError
from .hardware import Capabilities
from .metrics import compare_images
from .request import GenerationRequest, check_guidance, check_size, check_steps
from .weights.sources import resolve_model

log = logging.getLogger(__name__)

THUMBNAIL = fidelity_report.CELL  # longest side of an image as the contact sheet keeps it


@dataclass(frozen=True)
class Setup:
    """What to run, checked before anything loads."""

    base: config.EngineConfig  # the model and its non-recipe flags; each recipe sets the rest
    recipes: tuple[str, ...]  # the first is the reference
    prompts: tuple[str, ...]
    prompt_set: str  # as --prompts named it
    seeds: tuple[int, ...]
    steps: int | None = None  # None: the model preset's
    size: tuple[int, int] | None = None
    guidance: float | None = None

    def argv(self) -> list[str]:
        """The fidelity flags that make this run again (add --out)."""
        b = self.base
        argv = ["--model", b.model, "--t5", b.t5, "--modulation", b.modulation, "--offload", b.offload,
                "--max-side", str(b.max_side), *(["--base", b.base] if b.base else []),
                "--recipes", ",".join(self.recipes), "--prompts", self.prompt_set, "--limit", str(len(self.prompts)),
                "--seeds", str(len(self.seeds))]
        for flag, value in (("--steps", self.steps), ("--size", self.size and "x".join(map(str, self.size))),
                            ("--guidance", self.guidance)):
            if value is not None:
                argv += [flag, str(value)]
        return argv

    def requests(self) -> list[GenerationRequest]:
        """Every prompt x seed, seeds innermost: a prompt's text embeddings then come from the engine's cache."""
        width, height = self.size or (None, None)
        return [GenerationRequest(prompt, seed=seed, steps=self.steps, guidance=self.guidance, width=width,
                                  height=height) for prompt in self.prompts for seed in self.seeds]


@dataclass
class Outcome:
    report: dict  # what fidelity.json holds
    thumbnails: dict[tuple[str, int], object] = field(default_factory=dict)  # (recipe, case) -> PIL image


def setup_from_args(args) -> Setup:
    """The fidelity subcommand's flags as a Setup; UserError naming the flag at fault."""
    names = [part.strip() for part in (args.recipes or "").split(",") if part.strip()]
    if not names:
        raise UserError("--recipes: name at least one recipe, e.g. bf16,fp8 (the first is the reference).")
    for name in names:
        try:
            recipes.flags(name)
        except SetupError as error:
            raise UserError(f"--recipes: {error}") from error
    if len(set(names)) != len(names):
        raise UserError(f"--recipes: a recipe is named twice in {args.recipes!r}.")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}.")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}.")
    prompts = prompt_sets.load(args.prompts)[: args.limit]
    size = parse_size(args.size) if args.size else None
    try:
        check_steps(args.steps)
    except InvalidRequest as error:
        raise UserError(f"--steps: {error}") from error
    try:
        check_guidance(args.guidance)
    except InvalidRequest as error:
        raise UserError(f"--guidance: {error}") from error
    base = config.engine_config_from_args(args, warmup_runs=0)  # the first image is timed apart instead
    return Setup(base, tuple(names), tuple(prompts), args.prompts, tuple(range(args.seeds)), args.steps, size,
                 args.guidance)


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT or one SIDE, checked like a request's size; UserError naming --size."""
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        width = height = None
    if width is None:
        raise UserError(f"--size {text!r}: expected WIDTHxHEIGHT (e.g. 1024x1024) or one side (1024).")
    try:
        check_size(width, height)
    except InvalidRequest as error:
        raise UserError(f"--size {text!r}: {error}") from error
    return width, height


def run(setup: Setup, caps: Capabilities | None = None, lpips=None) -> Outcome:
    """Every recipe of `setup` in turn. `lpips`: a loaded lpips_metric.Lpips or Missing (default: load it)."""
    caps = caps if caps is not None else hardware.detect()
    source = resolve_model(setup.base.model, caps)
    lpips = lpips if lpips is not None else lpips_metric.load(caps.target)
    if isinstance(lpips, lpips_metric.Missing):
        log.warning("%s", lpips.reason)
    requests = setup.requests()
    outcome = Outcome(report={})
    references: list = []  # the reference's images, whole, one per case
    rows = []
    for index, recipe in enumerate(setup.recipes):
        rows.append(_run_recipe(setup, recipe, index == 0, caps, source.preset, requests, references, lpips,
                                outcome.thumbnails))
    first = rows[0]["images"][0] if rows[0]["images"] else {}
    outcome.report = {
        "benchmark": "fidelity",
        "model": source.name,
        "random_weights": source.random_weights,
        "device": {"name": caps.name, "kind": caps.device, "describe": caps.describe(), "cpu_count": caps.cpu_count},
        "prompts": {"set": setup.prompt_set, "count": len(setup.prompts)},
        "seeds": list(setup.seeds),
        "steps": first.get("steps"),
        "size": first.get("size"),
        "guidance": first.get("guidance"),
        "reference": setup.recipes[0],
        "argv": setup.argv(),
        "lpips": lpips.describe(),
        "recipes": rows,
    }
    return outcome


def _run_recipe(setup, recipe, is_reference, caps, preset, requests, references, lpips, thumbnails) -> dict:
    cfg = recipes.apply(setup.base, recipe, preset)
    try:
        engine = Engine(cfg, caps)  # the run plan is decided here, and refuses what this machine cannot do
    except SetupError as error:
        if is_reference:
            raise UserError(f"--recipes: the reference {recipe!r} cannot run here: {error}") from error
        log.warning("recipe %s refused: %s", recipe, error)
        return {"recipe": recipe, "reference": False, "refused": str(error), "images": []}
    log.info("recipe %s: %s", recipe, engine.plan.label())
    load_before = _load_average()
    engine.start()
    images = []
    for case, request in enumerate(requests):
        result = engine.generate(request)
        image = result.image
        if is_reference:
            references.append(image)
        reference = references[case]
        metrics = compare_images(reference, image)
        score = lpips.distance(reference, image) if isinstance(lpips, lpips_metric.Lpips) else None
        thumbnails[(recipe, case)] = _thumbnail(image)
        r = result.request
        images.append({
            "case": case, "prompt": r.prompt, "seed": r.seed, "steps": r.steps, "size": [r.width, r.height],
            "guidance": r.guidance, "lpips": _number(score, 5), "psnr_db": _number(metrics.psnr_db, 3),
            "ssim": _number(metrics.ssim, 5), "identical": metrics.max_abs_diff == 0,
            "seconds": _number(result.timings.total, 4), "denoise_seconds": _number(result.timings.denoising, 4),
            "blocks_run": result.blocks_run, "blocks_total": result.blocks_total,
            "blocks_skipped": result.blocks_skipped, "peak_memory_bytes": result.peak_memory_bytes,
        })
        log.info("%s %d/%d: %.2f s, PSNR %s, LPIPS %s", recipe, case + 1, len(requests), result.timings.total,
                 images[-1]["psnr_db"], images[-1]["lpips"])
    row = _summary(recipe, is_reference, engine, images, result.peak_memory_kind)
    row["load_average_1min"] = [load_before, _load_average()]  # other work on the machine slows every timing
    compiled = engine.plan.compile
    del engine, result
    if compiled:
        compiler.reset()
    hardware.release_cached_memory(caps.target)  # this recipe's model leaves before the next one loads
    return row


def _summary(recipe: str, is_reference: bool, engine: Engine, images: list[dict], peak_kind: str) -> dict:
    def mean(key: str, digits: int, steady: bool = False):
        # the first image pays for warm-up (and compiling, where the plan compiles): timings leave it out
        values = [i[key] for i in (images[1:] if steady and len(images) > 1 else images)]
        return _number(statistics.fmean(values), digits)

    return {
        "recipe": recipe,
        "reference": is_reference,
        "refused": None,
        "plan": engine.plan.label(),
        "compiled": engine.compiled,
        "events": [event.as_dict() for event in engine.events],  # e.g. a compiler failure: ran eagerly instead
        "lpips": _spread([i["lpips"] for i in images], worst=max),
        "psnr_db": _spread([_value(i["psnr_db"]) for i in images], worst=min),
        "ssim": _spread([i["ssim"] for i in images], worst=min),
        "identical_images": sum(i["identical"] for i in images),
        "seconds_per_image": mean("seconds", 4, steady=True),
        "first_image_seconds": images[0]["seconds"],
        "denoise_seconds_per_image": mean("denoise_seconds", 4, steady=True),
        "load_seconds": _number(engine.load_seconds, 3),
        "warmup_seconds": _number(engine.warmup_seconds, 3),
        "peak_memory_bytes": max(i["peak_memory_bytes"] for i in images),
        "peak_memory_kind": peak_kind,
        "blocks_run_per_image": mean("blocks_run", 2),
        "blocks_total_per_image": images[0]["blocks_total"],
        "blocks_skipped_per_image": mean("blocks_skipped", 2),
        "images": images,
    }


def _spread(values: list, worst) -> dict | None:
    """Mean and worst of per-image scores; None when there are none (LPIPS missing). A PSNR of inf (an identical
    image) makes the mean inf: the worst and the count of identical images say the rest."""
    if not values or any(v is None for v in values):
        return None
    return {"mean": _number(statistics.fmean(values), 5), "worst": _number(worst(values), 5)}


def _number(value, digits: int):
    """JSON has no infinity: an infinite PSNR (identical images) is the string "inf"."""
    if value is None:
        return None
    return "inf" if math.isinf(value) else round(float(value), digits)


def _value(number) -> float:
    return math.inf if number == "inf" else number


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _thumbnail(image):
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL, THUMBNAIL))
    return small


def save(outcome: Outcome, out: Path) -> dict[str, str]:
    """fidelity.json, fidelity.md and contact-sheet.png in `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "fidelity.json", "markdown": out / "fidelity.md",
             "contact_sheet": out / "contact-sheet.png"}
    outcome.report["files"] = {k: p.name for k, p in paths.items()}  # beside each other, wherever they are moved
    paths["json"].write_text(json.dumps(outcome.report, indent=1) + "\n")
    paths["markdown"].write_text(fidelity_report.markdown(outcome.report))
    fidelity_report.contact_sheet(outcome.report, outcome.thumbnails).save(paths["contact_sheet"])
    return {k: str(p) for k, p in paths.items()}
