"""This browser's pictures: the history entries (kept in the browser's local storage, so that a reload keeps them),
and the gallery that shows them, newest first, each with its caption under it and what a visitor does with a
picture: download the PNG (with its parameters), use its settings, use its seed, open it full size.

The entries come back from the browser, so nothing in them is trusted: `clean` keeps the fields of the right types,
and a picture only by a name the server gave (service.saved_png)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path

LIMIT = 24  # entries kept, newest first
FIELDS = {"prompt": str, "negative_prompt": str, "seed": int, "steps": int, "guidance": float, "width": int,
          "height": int}
STORAGE_KEY = "fp8demo-history"

# The gallery's clicks: "open" shows the picture full size in a dialog here; the other actions go to the server as
# the gallery's click event, with the action and the picture's index; after "settings" or "seed" the form comes into
# view (on a phone the gallery is far below it).
GALLERY_JS = """
const dialog = document.createElement('dialog');
dialog.className = 'history-full';
dialog.innerHTML = '<form method="dialog"><button class="history-close">Close</button></form><img alt="">';
document.body.appendChild(dialog);
dialog.addEventListener('click', (event) => { if (event.target === dialog) dialog.close(); });
element.addEventListener('click', (event) => {
  const button = event.target.closest('[data-action]');
  if (!button) return;
  const action = button.dataset.action, index = Number(button.dataset.index);
  if (action === 'open') {
    const img = dialog.querySelector('img');
    img.src = button.dataset.src;
    img.alt = button.dataset.alt || '';
    dialog.showModal();
    return;
  }
  trigger('click', {action, index});
  const form = document.querySelector('#prompt');
  if (form && form.getBoundingClientRect().top < 0) form.scrollIntoView({behavior: 'smooth', block: 'center'});
});
"""


def entry(request, name: str) -> dict:
    """A history entry: a picture's settings (GenerationRequest fields) and its PNG's name."""
    return {"png": name, **{field: getattr(request, field) for field in FIELDS}}


def clean(raw, saved_png: Callable[[str], Path | None], max_chars: int | None = None) -> list[dict]:
    """The entries of `raw` (as the browser sent them) whose picture the server still has, each with exactly the
    known fields of the right types; at most LIMIT."""
    kept = []
    for e in raw if isinstance(raw, list) else []:
        if not isinstance(e, dict) or saved_png(e.get("png")) is None:
            continue
        try:
            values = {name: kind(e[name]) for name, kind in FIELDS.items()}
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if not isinstance(e["prompt"], str) or not math.isfinite(values["guidance"]):
            continue
        if max_chars is not None and len(values["prompt"]) > max_chars:
            continue
        kept.append({"png": e["png"], **values})
        if len(kept) == LIMIT:
            break
    return kept


def caption(e: dict) -> str:
    return f"seed {e['seed']} · {e['steps']} steps · {e['width']}x{e['height']}"


def gallery_html(entries: list[dict]) -> str:
    """The entries as a grid of cards, newest first (the entries' order)."""
    if not entries:
        return ('<p class="history-empty">The pictures you make appear here, newest first, and stay in this '
                "browser.</p>")
    cards = []
    for i, e in enumerate(entries):
        name, prompt = html.escape(e["png"]), html.escape(e["prompt"])
        cards.append(
            f'<li class="history-item">'
            f'<button type="button" class="history-open" data-action="open" data-index="{i}" '
            f'data-src="take/{name}" data-alt="{prompt}" aria-label="Open full size: {prompt}">'
            f'<img src="take/{name}" alt="{prompt}" loading="lazy" decoding="async"></button>'
            f'<p class="history-prompt" title="{prompt}">{prompt}</p>'
            f'<p class="history-meta">{html.escape(caption(e))}</p>'
            f'<div class="history-actions">'
            f'<a class="history-action" href="take/{name}" download="{name}" '
            f'title="The PNG, with its parameters">PNG</a>'
            f'<button type="button" class="history-action" data-action="settings" data-index="{i}" '
            f'title="Fill the form with this picture\'s settings">Use settings</button>'
            f'<button type="button" class="history-action" data-action="seed" data-index="{i}" '
            f'title="Use this picture\'s seed">Use seed</button>'
            f"</div></li>")
    count = "1 picture" if len(entries) == 1 else f"{len(entries)} pictures"
    return (f'<p class="history-title">{count} in this browser, newest first</p>'
            f'<ul class="history-grid">{"".join(cards)}</ul>')
