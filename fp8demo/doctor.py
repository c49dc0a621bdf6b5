"""`python -m fp8demo doctor`: can this machine serve the demo, and how fast? The first command on a new kiosk PC.

It checks, in order, without stopping at the first problem: the device and its memory, library versions, native
FP8 and torch.compile support, the plan that would run, whether the model's weights are reachable (gated access,
token, local cache), the compile cache; then it loads the model, warms it up and makes one image, and ends with
a verdict line. Problems are collected as sentences an operator can act on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from . import config, hardware
from .errors import UserError
from .runplan import describe

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 15


def run(cfg: config.EngineConfig, generate: bool = True, caps: hardware.Capabilities | None = None) -> dict:
    from .engine import Engine
    from .request import GenerationRequest

    caps = caps if caps is not None else hardware.detect()
    problems: list[str] = []
    notes: list[str] = []
    out: dict[str, Any] = {
        "device": {
            "kind": caps.device,
            "name": caps.name,
            "description": caps.describe(),
            "compute_capability": ".".join(map(str, caps.compute_capability)) if caps.compute_capability else None,
            "total_memory_gib": _in_gib(caps.total_memory),
            "free_memory_gib": _in_gib(caps.free_memory),
        },
        "versions": hardware.versions(),
        "fp8": {"native_matmuls": caps.fp8_native, "torchao": caps.torchao},
    }
    can_compile, why = hardware.compile_support(caps)
    out["compile"] = {"available": can_compile, "how": why}
    if caps.device != "cuda":
        notes.append(f"No CUDA GPU: {caps.describe()} runs the demo slowly; its speed says nothing about a GPU's.")

    engine = None
    try:
        engine = Engine(replace(cfg, warmup_runs=max(cfg.warmup_runs, 1)), caps)
    except UserError as error:
        problems.append(str(error))
    if engine is not None:
        plan = engine.plan
        out["plan"] = plan.as_dict()
        out["fp8"]["matmul"] = plan.matmul
        if plan.compile and not can_compile:
            problems.append(f"torch.compile is planned but cannot run: {why}.")
        out["model"] = {"name": engine.source.name, "kind": engine.source.kind.value,
                        "random_weights": engine.source.random_weights, **_weights(engine.source, cfg)}
        if out["model"].get("problem"):
            problems.append(out["model"]["problem"])
        if engine.source.random_weights:
            notes.append(f"{engine.source.name} has random weights: its images are noise.")
        out["compile_cache"] = engine.compile_cache_for().state() if plan.compile else None
        out["events"] = []

    if engine is not None and generate and not problems:
        try:
            t0 = time.perf_counter()
            engine.start()
            ready_s = time.perf_counter() - t0
            result = engine.generate(GenerationRequest("a lighthouse on a cliff at sunset, oil painting", seed=0))
            r = result.request
            out["generation"] = {
                "ready_seconds": round(ready_s, 2),
                "load_seconds": round(engine.load_seconds or 0.0, 2),
                "warmup_seconds": round(engine.warmup_seconds or 0.0, 2),
                "compile_seconds": round(engine.compile_seconds, 2) if engine.compile_seconds else None,
                "size": f"{r.width}x{r.height}",
                "steps": r.steps,
                "timings": result.timings.as_dict(),
                "peak_memory_gib": _in_gib(result.peak_memory_bytes),
                "peak_memory_kind": result.peak_memory_kind,
                "precision": result.precision,
            }
            out["fp8"]["scaled_mm_calls_per_forward"] = engine.fp8_matmuls_per_forward
            out["compiled"] = engine.compiled
            out["events"] = [e.as_dict() for e in engine.events]
            if engine.compile_cache is not None:
                out["compile_cache"] = engine.compile_cache.state()
        except Exception as error:  # the doctor reports; it does not crash
            problems.append(f"Loading or generating failed: {type(error).__name__}: {error}")
    out["problems"] = problems
    out["notes"] = notes
    out["ok"] = not problems
    out["verdict"] = _verdict(out)
    return out


def _in_gib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**30, 2)


def _weights(source, cfg: config.EngineConfig) -> dict:
    """Where the weights would come from and whether they can be had, without downloading them."""
    from .weights.sources import SourceKind

    if source.kind in (SourceKind.TINY, SourceKind.RANDOM):
        return {"reachable": True, "how": "built offline with random weights"}
    if source.kind is not SourceKind.REPO:
        return {"reachable": True, "how": f"local {source.kind.value}: {source.location}"}
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(source.location, "model_index.json"), str)
    info = {"token_set": cfg.hf_token is not None, "cached_locally": cached,
            "licence": source.preset.licence_url}
    access, problem = _hub_access(source.location, cfg.hf_token)
    info["hub_access"] = access
    info["reachable"] = cached or access == "granted"
    if not info["reachable"]:
        info["problem"] = problem
    return info


def _hub_access(repo: str, token: str | None) -> tuple[str, str | None]:
    """("granted" | "gated" | "not found" | "unreachable", what to do)."""
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    outcome: list = []

    def check():
        try:
            auth_check(repo, token=token)
            outcome.append(None)
        except Exception as error:
            outcome.append(error)

    # a daemon thread: a hanging network must not keep the process alive after the report (as a pool's would)
    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S)
    error = outcome[0] if outcome else TimeoutError(f"no answer in {HUB_TIMEOUT_S} s")
    if error is None:
        return "granted", None
    if isinstance(error, GatedRepoError):
        how = "HF_TOKEN's account has not been granted access" if token else "HF_TOKEN is not set"
        return "gated", f"{repo} is gated and {how}: accept the licence on its Hub page and set HF_TOKEN."
    if isinstance(error, RepositoryNotFoundError):
        return "not found", f"{repo} was not found on the Hub (or is private and HF_TOKEN has no access)."
    # no network, DNS, timeout: all mean the same to an operator
    return "unreachable", (f"the Hugging Face Hub is unreachable ({type(error).__name__}) and {repo} is not in "
                           "the local cache: connect this machine once, or pass a local folder with --model.")


def _verdict(out: dict) -> str:
    if out["problems"]:
        return "NOT READY: " + " ".join(out["problems"])
    gen = out.get("generation")
    if gen is None:
        return "READY TO TRY (no image made: --no-generate)"
    what = f"{out['model']['name']} on {out['device']['description']}, {gen['precision']}"
    line = (f"READY: {what}; an image of {gen['size']} in {gen['timings']['total']:.2f} s, "
            f"{gen['ready_seconds']:.0f} s to get ready")
    if out["model"].get("random_weights"):
        line += " (random weights: test images only)"
    return line


def plain(out: dict) -> str:
    """The report in plain words, one fact a line."""
    d = out["device"]
    lines = [f"device:        {d['description']}"]
    if d["free_memory_gib"] is not None:
        lines.append(f"memory:        {d['free_memory_gib']} GiB free of {d['total_memory_gib']} GiB")
    v = out["versions"]
    lines.append("versions:      " + ", ".join(f"{k} {v[k]}" for k in ("torch", "torchao", "diffusers", "gradio")))
    lines.append(f"native FP8:    {'yes' if out['fp8']['native_matmuls'] else 'no'}"
                 + (f" (matmul: {out['fp8']['matmul']})" if out["fp8"].get("matmul") else ""))
    if out["fp8"].get("scaled_mm_calls_per_forward") is not None:
        lines.append(f"FP8 matmuls:   {out['fp8']['scaled_mm_calls_per_forward']} torch._scaled_mm calls per "
                     "transformer forward (counted)")
    c = out["compile"]
    lines.append(f"torch.compile: {'available' if c['available'] else 'unavailable'} ({c['how']})")
    if "plan" in out:
        lines += describe(out["plan"])
    if "model" in out:
        m = out["model"]
        lines.append(f"model:         {m['name']} ({'reachable' if m['reachable'] else 'NOT reachable'}"
                     + (f": {m['how']}" if m.get("how") else "") + ")")
    cache = out.get("compile_cache")
    if cache:
        lines.append(f"compile cache: {cache['folder']} ({cache['files']} files, {cache['bytes'] / 2**20:.1f} MiB"
                     + (", mega-cache saved" if cache["mega_cache"] else ", empty: the first start compiles") + ")")
    gen = out.get("generation")
    if gen:
        t = gen["timings"]
        lines.append(f"generation:    {gen['size']}, {gen['steps']} steps: text {t['text_encoding']:.2f} s, "
                     f"denoising {t['denoising']:.2f} s, VAE {t['vae_decode']:.2f} s, total {t['total']:.2f} s; "
                     f"ready after {gen['ready_seconds']:.1f} s")
    for event in out.get("events", []):
        lines.append(f"event:         {event['kind']}: {event['message']}")
    for note in out["notes"]:
        lines.append(f"note:          {note}")
    for problem in out["problems"]:
        lines.append(f"problem:       {problem}")
    lines.append(out["verdict"])
    return "\n".join(lines)
