"""What a face is to the platform: a page over the shared DemoService, and what serving it needs.

A face (a package in fp8demo/faces/) describes itself with one `Face`; `server.launch` serves whichever face it is
handed, so that the platform never names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .access import AccessRule
from .retention import Keeping

if TYPE_CHECKING:
    import gradio as gr

    from .service import DemoService


@dataclass(frozen=True)
class Face:
    name: str
    build: Callable[[DemoService], gr.Blocks]  # the page, wired to the shared service
    css: tuple[Path, ...] = ()  # stylesheets, read once at launch
    head: str | None = None  # extra HTML in the page's <head> (meta tags, small scripts)
    theme: Callable[[], Any] | None = None  # makes the face's Gradio theme (None: Gradio's default)
    footer_links: tuple[str, ...] = ("api",)  # Gradio's footer links; () for no footer at all
    run_history: bool | None = None  # False: the browser keeps no record of calls (None: Gradio's default)
    access: AccessRule = field(default_factory=AccessRule)  # who may use the page, its events and its files
    keeping: Keeping = field(default_factory=Keeping)  # how many of its PNGs the outputs folder keeps, how long
    # every picture checked by the image classifier before it is shown (safety.py), unless the flags say otherwise
    image_safety: bool = False
    # the Compare tab's default baseline ("bf16"), for a face that has one: with --compile it is loaded, compiled and
    # warmed before the service is ready, so that the first comparison compiles nothing
    compare_baseline: str | None = None

    def launch_options(self) -> dict[str, Any]:
        """This face's arguments to Gradio's launch()."""
        css = [path for path in self.css if path.exists()]
        options = {"css_paths": css or None, "head": self.head, "footer_links": list(self.footer_links),
                   "run_history": self.run_history}
        if self.theme is not None:
            options["theme"] = self.theme()
        return options
