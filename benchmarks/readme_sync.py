"""The command behind every generated README section: rewrite it, or with --check say whether it is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def main(argv, description: str, render: Callable[[str], str], what: str, command: str,
         marker: str | None = None) -> int:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    current = README.read_text()
    if marker is not None and marker not in current:
        print(f"README.md has no {marker} marker", file=sys.stderr)
        return 1
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"README.md's {what} is out of date: run {command}", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0
