"""The Generate page: a short header (title, one line, the engine's badge) over two tabs, Generate and Compare, on one
warm engine."""

from __future__ import annotations

import html

import gradio as gr

from ...web.events import LIGHT
from ...web.form import Defaults
from ...web.service import DemoService
from .compare_tab import compare_tab
from .generate_tab import generate_tab

TITLE = """<div id="title"><h1>fp8demo</h1>
<p>Stable Diffusion 3.5 with its transformer in FP8: describe a picture, press Enter.</p></div>"""


def build_page(service: DemoService) -> gr.Blocks:
    defaults = Defaults.of(service.preset)
    with gr.Blocks(title="fp8demo: SD3.5 in FP8", fill_width=False) as demo:
        with gr.Row(elem_id="header", equal_height=False):
            gr.HTML(TITLE, elem_id="title-box")
            status = gr.HTML(status_banner(service.status(), service.output_dir), elem_id="status")
        timer = gr.Timer(1.0, active=not service.ready)

        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Generate", id="generate"):
                g = generate_tab(service, defaults)
            with gr.Tab("Compare FP16/BF16 vs FP8", id="compare"):
                c = compare_tab(service, defaults)

        def refresh():
            s = service.status()
            ready = s["ready"]
            return (status_banner(s, service.output_dir), gr.Timer(active=not ready and s["state"] != "failed"),
                    *(gr.Button(interactive=ready) for _ in range(3)))

        buttons = [g["run"], c["run"], c["sheet_run"]]
        timer.tick(refresh, None, [status, timer, *buttons], **LIGHT)
        demo.load(refresh, None, [status, timer, *buttons], **LIGHT)
        demo.load(*g["load"], **LIGHT)
    return demo


def status_banner(status: dict, outputs=None) -> str:
    """The engine in one small badge (model, precision, device) that opens to the details; a warning of one line
    for random weights; a failure or a restart in full, because then nothing else on the page works."""
    e = html.escape
    if status.get("restarting"):
        return '<p class="status-line status-bad">The demo is restarting after a device error; it will be back ' \
               "in a minute.</p>"
    if status["state"] == "failed":
        return f'<p class="status-line status-bad">The model could not be started. {e(str(status["error"]))}</p>'
    if not status["ready"]:
        return (f'<p class="status-line status-wait">Warming up ({e(str(status["state"]))}): loading the model and '
                "making a first image…</p>")
    rows = [("Model", status["model"]), ("Precision", status["precision"]), ("Device", status["device"])]
    if len(status.get("engines") or []) > 1:
        rows.append(("Engines", ", ".join(str(engine.get("device")) for engine in status["engines"])))
    rows += [("Event", f"{event.get('kind')}: {event.get('message')}") for event in status.get("events") or []]
    if outputs is not None:
        rows.append(("Pictures saved in", str(outputs)))
    if status.get("random_weights") and status.get("notice"):
        rows.append(("Note", status["notice"]))
    details = "".join(f"<dt>{e(str(k))}</dt><dd>{e(str(v))}</dd>" for k, v in rows)
    badge = (f'<details class="status-badge"><summary>Ready: <b>{e(str(status["model"]))}</b> · '
             f'{e(str(status["precision"]))} · {e(str(status["device"]))}</summary><dl>{details}</dl></details>')
    if status.get("random_weights"):
        badge += '<p class="status-note">⚠️ Random weights: the pictures are noise.</p>'
    return badge
