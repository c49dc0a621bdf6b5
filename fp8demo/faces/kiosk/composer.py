"""The composer: a prompt built from the operator's tiles, safe by construction (pure; no Gradio).

A visitor picks one tile per part (a subject, a setting, a mood, a style); the page sends the tiles' texts and the
server rebuilds the sentence from its own lists: a value that is not one of the operator's tiles is refused, so a
forged request cannot slip free text in. The tiles are pre-approved (the operator wrote them), so a composed prompt
skips the text filter; where the screen takes tiles only (FP8DEMO_KIOSK_INPUT=compose) free text is refused on every
route (`prompt_for`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import SetupError
from .rules import KioskRefusal

# the parts, in the order of the sentence and of the rows on the page; the subject is the one a picture needs
PARTS = ("subject", "setting", "mood", "style")
LABELS = {"subject": "Who or what", "setting": "Where", "mood": "Mood", "style": "Style"}
INPUT_MODES = ("free", "compose", "both")

FREE_TEXT_REFUSED = "This screen builds pictures from its tiles: touch a tile in each row, then Create."
TILES_REFUSED = "This screen takes typed ideas: type one, or touch a suggestion."
NOT_A_TILE = "Please choose from the tiles on the screen."
NO_SUBJECT = "Touch a tile in the first row (who or what) to start your idea."


@dataclass(frozen=True)
class Tiles:
    """The operator's tiles, per part (fp8demo/assets/kiosk/tiles.txt, or FP8DEMO_KIOSK_TILES)."""

    parts: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_file(cls, path: Path) -> Tiles:
        """`[part]` headings, then one tile per line; `#` starts a comment line."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise SetupError(f"The composer's tiles could not be read from {path}: {error}") from error
        parts: dict[str, list[str]] = {part: [] for part in PARTS}
        current = None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1].strip().lower()
                if current not in parts:
                    raise SetupError(f"{path}:{number}: unknown part [{current}]; the parts are "
                                     f"{', '.join(PARTS)}.")
                continue
            if current is None:
                raise SetupError(f"{path}:{number}: a tile before any [part] heading.")
            if line not in parts[current]:
                parts[current].append(line)
        if not parts["subject"]:
            raise SetupError(f"{path}: the composer needs at least one [subject] tile.")
        return cls({part: tuple(tiles) for part, tiles in parts.items()})

    def sentence(self, choice: Mapping[str, str | None]) -> str:
        """The prompt of a choice (part -> a tile's text), rebuilt from the operator's own tiles:
        "<subject> <setting>, <mood>, <style>". Raises KioskRefusal for a value that is not a tile."""
        picked = {}
        for part in PARTS:
            value = choice.get(part)
            if value is None or value == "":
                continue
            if not isinstance(value, str) or value not in self.parts[part]:
                raise KioskRefusal(NOT_A_TILE)
            picked[part] = self.parts[part][self.parts[part].index(value)]  # the server's own text
        unknown = set(choice) - set(PARTS)
        if unknown:
            raise KioskRefusal(NOT_A_TILE)
        if "subject" not in picked:
            raise KioskRefusal(NO_SUBJECT)
        return preview(picked)


def preview(choice: Mapping[str, str | None]) -> str:
    """The sentence the page shows while the visitor picks (the server's `Tiles.sentence` is the one used)."""
    head = " ".join(choice[p] for p in ("subject", "setting") if choice.get(p))
    words = [w for w in (head, choice.get("mood"), choice.get("style")) if w]
    text = ", ".join(words)
    return text[:1].upper() + text[1:] if text else ""


def prompt_for(mode: str, prompt: str | None, choice: Mapping[str, str | None] | None,
               tiles: Tiles | None) -> tuple[str, bool]:
    """(the prompt to make, pre-approved?) for what a visitor sent on a screen whose input is `mode`.

    compose: tiles only, any free text refused; free: free text only, to be moderated; both: free text when there
    is any (moderated), else the tiles."""
    text = prompt.strip() if isinstance(prompt, str) else prompt
    chosen = {k: v for k, v in (choice or {}).items() if v not in (None, "")}
    if mode == "compose" and text:
        raise KioskRefusal(FREE_TEXT_REFUSED)
    if mode == "free" and chosen:
        raise KioskRefusal(TILES_REFUSED)
    if mode == "free" or text:
        return prompt, False  # checked by the caller: type, length, moderation
    if tiles is None:
        raise KioskRefusal(TILES_REFUSED)
    return tiles.sentence(chosen), True


def choice_of(values: Sequence[str | None]) -> dict[str, str | None]:
    """The page's tile values, in PARTS order, as a choice."""
    return dict(zip(PARTS, values, strict=True))
