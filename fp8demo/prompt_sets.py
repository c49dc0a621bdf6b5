"""Prompt sets for the fidelity harness: the shipped ones by name, or a text file (one prompt a line, `#` comments).

  smoke      four prompts for a quick run (fp8demo/data/prompts/smoke.txt)
  parti200   a fixed, category-stratified sample of 200 PartiPrompts (Apache-2.0; how it was drawn is in the file's
             header, the licence beside it)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import UserError

SETS = {"smoke": "smoke.txt", "parti200": "partiprompts-200.txt"}


def parse(text: str) -> list[str]:
    """The prompts of a file's text: one a line; blank lines and lines starting with # left out."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def load(spec: str) -> list[str]:
    """The prompts `--prompts` names: a shipped set or a file. UserError naming the flag otherwise."""
    if spec in SETS:
        text = resources.files("fp8demo").joinpath(f"data/prompts/{SETS[spec]}").read_text(encoding="utf-8")
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"--prompts {spec!r}: not a prompt set ({', '.join(SETS)}) and no such file.")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"--prompts {spec!r}: cannot read it as UTF-8 text ({error}).") from error
    prompts = parse(text)
    if not prompts:
        raise UserError(f"--prompts {spec!r}: no prompts in it (one a line; lines starting with # are comments).")
    return prompts
