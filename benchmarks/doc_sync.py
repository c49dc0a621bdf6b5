"""The command behind every generated section of the docs: rewrite it in its file, or with --check say whether it
is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv, description: str, render: Callable[[str], str], what: str, command: str, path: Path,
         marker: str | None = None) -> int:
    """Rewrite the section `what` of `path` (render: the file's text -> the text wanted), or with --check exit 1 when
    the file differs from what `render` makes of it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    current = path.read_text()
    if marker is not None and marker not in current:
        print(f"{name} has no {marker} marker", file=sys.stderr)
        return 1
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{name}'s {what} is out of date: run {command}", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0
