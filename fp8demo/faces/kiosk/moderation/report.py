"""python -m fp8demo.faces.kiosk.moderation --report, from a checkout: the figures of docs/kiosk.md.

The probes are test data, not part of the package (the server never reads them). A probe file holds one prompt a
line, "## name" lines start a category. The development probe is the one the filter was tuned against; the held-out
probe was written before tuning and never tuned to, so its figures are the claim.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .moderator import Moderator

DATA = Path("tests") / "data"
PROBES = ("dev", "heldout", "blind", "fresh", "final")
PROBE_NAMES = {"dev": "development probe", "heldout": "held-out probe", "blind": "blind probe", "fresh": "fresh probe",
               "final": "final probe"}


def read_probe(path: Path) -> list[tuple[str, str]]:
    """(category, prompt) for each line of a probe file."""
    category, out = "", []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            category = line[3:].strip()
        elif line.strip() and not line.lstrip().startswith("#"):
            out.append((category, line.strip()))
    return out


@dataclass
class Figure:
    """Prompts judged wrongly: evasions let through (leaks) or innocent prompts refused (false refusals)."""

    total: int
    wrong: int
    by_category: dict[str, tuple[int, int]]  # category -> (wrong, total)

    @property
    def share(self) -> float:
        return self.wrong / self.total if self.total else 0.0

    def line(self) -> str:
        cats = ", ".join(f"{c} {w}/{n}" for c, (w, n) in self.by_category.items())
        return f"{self.share:.1%} of {self.total} ({cats})"


def figure(moderator: Moderator, prompts: list[tuple[str, str]], refuse: bool) -> Figure:
    totals: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    for category, prompt in prompts:
        totals[category] += 1
        wrong[category] += moderator.matches(prompt) != refuse
    return Figure(sum(totals.values()), sum(wrong.values()), {c: (wrong[c], totals[c]) for c in totals})


def probe(moderator: Moderator, name: str, data: Path = DATA) -> tuple[Figure, Figure]:
    """(leaks, false refusals) of one probe."""
    evasions = read_probe(data / f"moderation_{name}_evasions.txt")
    innocent = read_probe(data / f"moderation_{name}_innocent.txt")
    return figure(moderator, evasions, refuse=True), figure(moderator, innocent, refuse=False)


def speed(moderator: Moderator, words: list[str], repeat: int = 20) -> float:
    """Milliseconds to check a 2,000-character prompt made of these words, after one warm-up check."""
    prompt = " ".join(words)
    while len(prompt) < 2000:
        prompt += " " + prompt
    prompt = prompt[:2000]
    moderator.matches(prompt)
    start = time.perf_counter()
    for _ in range(repeat):
        moderator.matches(prompt)
    return (time.perf_counter() - start) / repeat * 1000


def made_up_words(moderator: Moderator, n: int = 400, seed: int = 0) -> list[str]:
    """Words no list or vocabulary knows and that the moderator lets through, so that every guess is tried on each
    and none ends the check early (the slow case)."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(3, 6)))
        if not moderator.matches(word):
            words.append(word)
    return words


def main(argv: list[str] | None = None) -> int:
    from .... import config
    from ..moderation import read_list

    parser = argparse.ArgumentParser(prog="python -m fp8demo.faces.kiosk.moderation",
                                     description="Kiosk prompt moderation: the figures on the published probes.")
    parser.add_argument("--report", action="store_true", help="print leaks, false refusals and speed")
    parser.add_argument("--blocklist", type=Path, default=config.field_default(config.KioskConfig, "blocklist"))
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the probes (tests/data)")
    args = parser.parse_args(argv)
    if not args.report:
        parser.print_help()
        return 0
    started = time.perf_counter()
    moderator = Moderator.from_file(args.blocklist)
    print(f"lists compiled in {time.perf_counter() - started:.1f} s")
    for name in PROBES:
        leaks, refusals = probe(moderator, name, args.data)
        print(f"{PROBE_NAMES[name]}: leaks {leaks.line()}")
        print(f"{PROBE_NAMES[name]}: false refusals {refusals.line()}")
    evasions = read_list(args.data / "moderation_evasions.txt")
    misses = args.data / "moderation_known_misses.txt"
    evasions += read_list(misses) if misses.exists() else []
    innocent = read_list(args.data / "moderation_innocent.txt")
    blocked = sum(moderator.matches(p) for p in evasions) / len(evasions)
    refused = sum(moderator.matches(p) for p in innocent) / len(innocent)
    print(f"older published lists: evasions blocked: {blocked:.1%} of {len(evasions)}, "
          f"innocent prompts wrongly refused: {refused:.1%} of {len(innocent)}")
    ordinary = [p for _, p in read_probe(args.data / "moderation_heldout_innocent.txt")]
    print(f"a 2,000-character prompt: {speed(moderator, ordinary):.2f} ms of ordinary prompts, "
          f"{speed(moderator, made_up_words(moderator)):.2f} ms of made-up words")
    return 0
