"""Write the "Plans per card" table of docs/precision.md from the run plan (offline, no weights, no GPU).

    python -m benchmarks.plans           # rewrite the table between the markers
    python -m benchmarks.plans --check   # exit 1 when the table does not match the plans (a test runs this)
"""

from __future__ import annotations

import sys

from benchmarks import doc_sync
from fp8demo import cards, planner

DOC = doc_sync.ROOT / "docs" / "precision.md"
START, END = "<!-- plans:start -->", "<!-- plans:end -->"


def table() -> str:
    """One row per model and card: the default options (FP8 on an Ada card, T5 auto, 1536 px, preset guidance)."""
    rows = [
        "| model | card | placement | resident GiB | peak load GiB | peak run GiB | compile |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in planner.PLAN_MODELS:
        for gib in planner.CARD_SIZES_GIB:
            plan = cards.plan_for_card(model, gib)
            m = plan.memory
            where = planner.summary(plan.placement) if m.fits else "does not fit"
            figures = [f"{n / planner.GIB:.2f}" for n in (m.resident_bytes, m.peak_load_bytes, m.peak_run_bytes)]
            rows.append(f"| {model} | {gib} GiB | {where} | {' | '.join(figures)} | "
                        f"{'yes' if plan.compile else 'no'} |")
    return "\n".join([START, "", *rows, "", END])


def render(doc: str) -> str:
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    return head + table() + tail


def main(argv=None) -> int:
    return doc_sync.main(argv, __doc__, render, "plans table", "python -m benchmarks.plans", DOC, marker=START)


if __name__ == "__main__":
    sys.exit(main())
