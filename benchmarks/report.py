"""Write the results section of docs/performance.md from the JSON files committed in benchmarks/results/.

    python -m benchmarks.report           # rewrite the section between the markers
    python -m benchmarks.report --check   # exit 1 when the section does not match the JSON (a test runs this)

Every number comes with its device and the file it was read from.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from benchmarks import doc_sync
from fp8demo import fidelity_report
from fp8demo.report import size_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "performance.md"
# the results folder as the doc links to it
LINKS = os.path.relpath(RESULTS, DOC.parent).replace(os.sep, "/")
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def _memory(path: Path, data: dict) -> list[str]:
    dev = data["device"]["name"]
    rows = data["variants"]
    names = list(rows)
    comps = list(rows[names[0]]["components"])
    out = [
        f"**Resident bytes, `{data['config']['model']}`** (full size, random weights; T5 `{data['config']['t5']}`; "
        f"{dev}; [{path.name}]({LINKS}/{path.name})):",
        "",
        "| component | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for c in comps:
        out.append(f"| {c} | " + " | ".join(size_text(rows[n]["components"][c]["bytes"]) for n in names) + " |")
    out.append("| **total** | " + " | ".join(f"**{size_text(rows[n]['total_bytes'])}**" for n in names) + " |")
    out.append("| transformer / bf16 | " + " | ".join(f"{rows[n]['transformer_ratio_vs_bf16']:.3f}"
                                                   for n in names) + " |")
    return out


def _bench(path: Path, data: dict) -> list[str]:
    dev = data["device"]["name"]
    cfg = data["config"]
    # Older files ran every variant in one process, where a peak is the highest so far, not the variant's own.
    scope = ("peak memory per variant, each in its own process" if "peak_memory_scope" in cfg
             else "older single-process run: each peak is the process's highest so far")
    out = [
        f"**Latency, `{cfg['model']}`, T5 `{cfg['t5']}`** ({dev}, {data['device']['kind']}; {cfg['runs']} timed "
        f"runs after {cfg['warmup']} warm-up, {cfg['timing']}; {scope}; "
        f"[{path.name}]({LINKS}/{path.name})):",
        "",
        "| variant | size | steps | guidance | per step (median) | text encoding | VAE decode | end to end (median) "
        "| peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in data["variants"]:
        for c in v["cases"]:
            out.append(
                f"| {v['variant']['name']} | {c['width']}x{c['height']} | {c['steps']} | {c['guidance']:g} "
                f"| {c['per_step_s']['median']:.2f} s | {c['text_encoding_s']['median']:.2f} s "
                f"| {c['vae_decode_s']['median']:.2f} s | {c['end_to_end_s']['median']:.2f} s "
                f"| {size_text(c['peak_memory_bytes'])} ({c['peak_memory_kind']}) |"
            )
    loads = [x for v in data["variants"] for x in v.get("load_average_1min") or [] if x is not None]
    if loads:
        out += ["", f"Load average (1 min) before and after each variant: {min(loads):.1f} to {max(loads):.1f} on "
                    f"{data['device']['cpu_count']} cores (other work on the machine slows every timing)."]
    if data.get("note"):
        out += ["", data["note"]]
    if "fidelity" in data:
        f = data["fidelity"]
        cos = ", ".join(f"{s['cosine_mean']:.5f}" for s in f["per_step"])
        rel = ", ".join(f"{s['relative_error_mean']:.4f}" for s in f["per_step"])
        out += ["", f"Fidelity, {f['fp8']} against {f['baseline']} on the same trajectory ({f['size'][0]} px, seeds "
                    f"{f['seeds']}): transformer-output cosine per step {cos}; relative error {rel}."]
        scaling = f.get("activation_scaling", {})
        for label, series in scaling.items():
            if label != "note":
                out.append(f"- FP8 weights {label} (rounding reproduced in bf16): cosine per step "
                           + ", ".join(f"{s['cosine_mean']:.5f}" for s in series) + ".")
        if scaling:
            out.append("")
        if f.get("random_weights"):
            out.append("(Random weights: image PSNR/SSIM are recorded in the JSON but say nothing about pictures.)")
    return out


def _overhead(path: Path, data: dict) -> list[str]:
    o = data["overhead_ms"]
    cfg = data["config"]
    return [
        f"**Application overhead** ({data['device']['name']}; `{cfg['model']}` at {cfg['size']} px, {cfg['runs']} "
        f"requests through `gradio_client`; [{path.name}]({LINKS}/{path.name})): median "
        f"{o['median']:.1f} ms (min {o['min']:.1f}, max {o['max']:.1f}) on top of the engine's "
        f"{data['engine_ms_median']:.0f} ms; target {data['target_ms']} ms."
        + (f" For scale, the same `gradio_client` request cycle against an endpoint that returns a ready "
           f"{cfg['size']} px image at once takes {data['framework_floor_ms']['median']:.1f} ms (median) here."
           if "framework_floor_ms" in data else ""),
    ]


def _fidelity(path: Path, data: dict) -> list[str]:
    name = f"{path.parent.name}/{path.name}"
    return [
        f"**Fidelity, `{data['model']}`** ({data['device']['name']}, {data['device']['kind']}; "
        f"[{name}]({LINKS}/{name})):",
        "",
        *fidelity_report.intro(data),
        "",
        *fidelity_report.table(data),
    ]


def section() -> str:
    parts = [START, ""]
    # the fidelity harness writes a folder per run: fidelity-<model>-<device>/fidelity.json
    for path in sorted([*RESULTS.glob("*.json"), *RESULTS.glob("fidelity-*/fidelity.json")]):
        data = json.loads(path.read_text())
        kind = data.get("benchmark", "")
        if kind.startswith("resident bytes"):
            parts += _memory(path, data)
        elif kind.startswith("application overhead"):
            parts += _overhead(path, data)
        elif kind == "fp8demo bench":
            parts += _bench(path, data)
        elif kind == "fidelity":
            parts += _fidelity(path, data)
        else:
            continue
        parts.append("")
    if len(parts) == 2:
        parts += ["No results committed yet.", ""]
    parts.append(END)
    return "\n".join(parts)


def render(doc: str) -> str:
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    return head + section() + tail


def main(argv=None) -> int:
    return doc_sync.main(argv, __doc__, render, "results section", "python -m benchmarks.report", DOC,
                         marker=START)


if __name__ == "__main__":
    sys.exit(main())
