"""The Generate page: a status line over two tabs, Generate and Compare, on one warm engine."""

from __future__ import annotations

import gradio as gr

from ...web.events import LIGHT
from ...web.form import Defaults
from ...web.service import DemoService
from .compare_tab import compare_tab
from .generate_tab import generate_tab


def build_page(service: DemoService) -> gr.Blocks:
    defaults = Defaults.of(service.preset)
    with gr.Blocks(title="fp8demo: SD3.5 in FP8", fill_width=False) as demo:
        gr.Markdown("# fp8demo · Stable Diffusion 3.5 with an FP8 transformer", elem_id="title")
        status = gr.Markdown(status_banner(service.status()), elem_id="status")
        timer = gr.Timer(1.0, active=not service.ready)

        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                g = generate_tab(service, defaults)
            with gr.Tab("Compare FP16/BF16 vs FP8", id="compare"):
                c = compare_tab(service, defaults)

        def refresh():
            s = service.status()
            ready = s["ready"]
            return (status_banner(s), gr.Timer(active=not ready and s["state"] != "failed"),
                    *(gr.Button(interactive=ready) for _ in range(3)))

        buttons = [g["run"], c["run"], c["sheet_run"]]
        timer.tick(refresh, None, [status, timer, *buttons], **LIGHT)
        demo.load(refresh, None, [status, timer, *buttons], **LIGHT)
    return demo


def status_banner(status: dict) -> str:
    if status.get("restarting"):
        return "**The demo is restarting** after a device error; it will be back in a minute."
    if status["state"] == "failed":
        return f"**The model could not be started.** {status['error']}"
    if not status["ready"]:
        return f"**Warming up** ({status['state']}): loading the model and making a first image…"
    text = f"Ready: **{status['model']}** · {status['precision']} · {status['device']}"
    if status.get("random_weights"):
        text += "  \n⚠️ This model has random weights: its images are noise. " + (status.get("notice") or "")
    return text
