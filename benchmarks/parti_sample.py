"""Draw the fixed PartiPrompts sample that `python -m fp8demo fidelity --prompts parti200` uses.

    python -m benchmarks.parti_sample PartiPrompts.tsv > fp8demo/data/prompts/partiprompts-200.txt

Stratified over PartiPrompts' 12 categories: each category gets 200 x its share of the prompts (largest remainders
round up), drawn with a seeded `random.Random`. The lines are ordered so that each category's prompts are spread
evenly through the file, so its first N lines (`--limit N`) are themselves close to a stratified sample.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

SIZE = 200
SEED = 0


def read(path: Path) -> list[tuple[str, str]]:
    """(prompt, category) per row. The file is plain TSV: one prompt holds quotes that are its own text."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["Prompt"].strip(), row["Category"].strip()) for row in rows]


def quotas(counts: dict[str, int], size: int) -> dict[str, int]:
    """Proportional allocation of `size` over the categories, largest remainders first (ties: by name)."""
    total = sum(counts.values())
    exact = {c: size * n / total for c, n in counts.items()}
    share = {c: int(x) for c, x in exact.items()}
    by_remainder = sorted(counts, key=lambda c: (-(exact[c] - share[c]), c))
    for c in by_remainder[: size - sum(share.values())]:
        share[c] += 1
    return share


def sample(rows: list[tuple[str, str]], size: int = SIZE, seed: int = SEED) -> list[tuple[str, str]]:
    by_category: dict[str, list[str]] = defaultdict(list)
    for prompt, category in rows:
        by_category[category].append(prompt)
    share = quotas({c: len(p) for c, p in by_category.items()}, size)
    rng = random.Random(seed)
    drawn = {c: rng.sample(by_category[c], share[c]) for c in sorted(by_category)}
    # the k-th of a category's n prompts sits at (k + 0.5) / n of the file: every prefix is near its quota
    placed = [((k + 0.5) / len(prompts), c, p) for c, prompts in drawn.items() for k, p in enumerate(prompts)]
    return [(p, c) for _, c, p in sorted(placed)]


def header(rows: list[tuple[str, str]], chosen: list[tuple[str, str]], source: str) -> list[str]:
    counts: dict[str, int] = defaultdict(int)
    for _, c in chosen:
        counts[c] += 1
    per_category = ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
    return [
        f"# PartiPrompts: a fixed sample of {len(chosen)} of its {len(rows)} prompts, stratified by category.",
        f"# Source: {source}",
        "# PartiPrompts (P2) is by Google Research, from \"Scaling Autoregressive Models for Content-Rich",
        "# Text-to-Image Generation\" (Yu et al., 2022), under the Apache License 2.0: PARTIPROMPTS-LICENSE.txt",
        "# beside this file. The prompts are unchanged, except for trailing spaces removed.",
        f"# Drawn by `python -m benchmarks.parti_sample PartiPrompts.tsv` (seed {SEED}): each category gets",
        f"# {len(chosen)} x its share of the prompts (largest remainders round up), drawn with",
        f"# random.Random({SEED}).sample per category in sorted category order; lines ordered so that each",
        "# category is spread evenly through the file (its k-th of n prompts at (k + 0.5) / n), so the first N",
        "# lines are close to a stratified sample too (--limit N).",
        *textwrap.wrap(f"Per category: {per_category}.", 110, initial_indent="# ", subsequent_indent="# "),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parti_sample", description=__doc__.splitlines()[0])
    parser.add_argument("tsv", type=Path, help="PartiPrompts.tsv")
    parser.add_argument("--source", default="PartiPrompts.tsv of the google-research/parti GitHub repository",
                        help="where the TSV came from, for the header")
    args = parser.parse_args(argv)
    rows = read(args.tsv)
    chosen = sample(rows)
    print("\n".join([*header(rows, chosen, args.source), *(p for p, _ in chosen)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
