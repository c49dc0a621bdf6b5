"""The kiosk page: full screen, touch first, large type. Layout and wiring only; the rules live in rules.py and
service.py. Each screen keeps its own IdleMachine in session state; a one-second timer drives it.
"""

from __future__ import annotations

import logging
import time

import gradio as gr

from ..errors import UserError
from ..web.events import LIGHT, friendly, session_id
from .rules import IdleMachine, KioskRefusal
from .service import Creation, KioskService, qr_image

log = logging.getLogger(__name__)

WELCOME = "Type an idea, or touch a suggestion, then **Create**."
# No zooming, no long-press menu, no text selection outside the prompt: a visitor cannot wander off the page.
HEAD = """
<meta name="viewport" content="width=device-width, initial-scale=1, maximum-scale=1, user-scalable=no">
<script>
document.addEventListener('contextmenu', e => e.preventDefault());
document.addEventListener('gesturestart', e => e.preventDefault());
document.addEventListener('dragstart', e => e.preventDefault());
</script>
"""


def build_kiosk_ui(kiosk: KioskService) -> gr.Blocks:
    cfg = kiosk.cfg
    # Visitors enter the handler at once (up to the queue bound) and wait in kiosk.Line, which knows their place.
    gpu_line = dict(concurrency_id="gpu", concurrency_limit=kiosk.service.cfg.max_queue)

    def machine_of(state: IdleMachine | None) -> IdleMachine:
        return state if state is not None else IdleMachine(cfg.idle_after, cfg.countdown, cfg.attract_every,
                                                            time.monotonic())

    with gr.Blocks(title="Create a picture", fill_height=True, fill_width=True) as demo:
        machine = gr.State(None)
        with gr.Column(visible=True, elem_id="attract") as attract:
            attract_image = gr.Image(show_label=False, interactive=False, elem_id="attract-image",
                                     buttons=[], container=False)
            start = gr.Button("Touch here to create your own picture", elem_id="start", variant="primary")
        with gr.Column(visible=False, elem_id="countdown") as countdown:
            countdown_text = gr.Markdown("", elem_id="countdown-text")
            still_here = gr.Button("I'm still here", elem_id="still-here", variant="primary")
        with gr.Column(visible=False, elem_id="main") as main:
            status = gr.Markdown(WELCOME, elem_id="kiosk-status")
            with gr.Row(equal_height=True):
                image = gr.Image(show_label=False, interactive=False, elem_id="kiosk-image", buttons=[],
                                 type="pil", format="jpeg", scale=4)
                qr = gr.Image(label="Take it home", interactive=False, visible=bool(cfg.public_url), buttons=[],
                              elem_id="kiosk-qr", scale=1, type="pil")
            with gr.Row():
                prompt_box = gr.Textbox(show_label=False, placeholder="What should we make?", lines=1, max_lines=2,
                                    max_length=cfg.max_prompt_chars, elem_id="kiosk-prompt", scale=4)
                create = gr.Button("Create", variant="primary", elem_id="create", scale=1)
            with gr.Row(elem_id="chips"):
                chips = [gr.Button(text, elem_classes=["chip"], size="lg") for text in kiosk.chips()]

        def run(prompt: str, state: IdleMachine | None = None, request: gr.Request = None,
                progress=gr.Progress()):
            def on_step(i, n):
                progress((i, n), desc="Creating", unit="steps")

            if state is not None:
                state.set_busy(True, time.monotonic())
            try:
                for item in kiosk.create(prompt, session_id(request), on_step):
                    if isinstance(item, Creation):
                        qr_value = qr_image(item.take_home_url) if item.take_home_url else None
                        yield "Here it is! Type a new idea to make another.", item.result.image, qr_value
                    else:
                        yield item, gr.skip(), gr.skip()
            except KioskRefusal as refusal:
                yield str(refusal), gr.skip(), gr.skip()
            except UserError as error:
                yield str(error), gr.skip(), gr.skip()
            except Exception as error:
                raise friendly(error) from error
            finally:
                if state is not None:
                    state.set_busy(False, time.monotonic())

        outputs = [status, image, qr]
        create.click(run, [prompt_box, machine], outputs, api_name="create", **gpu_line)
        prompt_box.submit(run, [prompt_box, machine], outputs, api_visibility="private", **gpu_line)
        for chip in chips:
            chip.click(lambda text=chip.value: text, None, prompt_box, **LIGHT).then(
                run, [prompt_box, machine], outputs, api_visibility="private", **gpu_line)

        def touch(state: IdleMachine | None):
            state = machine_of(state)
            state.touch(time.monotonic())
            return state, gr.Column(visible=False), gr.Column(visible=False), gr.Column(visible=True)

        views = [attract, countdown, main]
        for trigger in (start.click, still_here.click, prompt_box.focus, prompt_box.input):
            trigger(touch, machine, [machine, *views], **LIGHT)
        for chip in chips:
            chip.click(touch, machine, [machine, *views], **LIGHT)

        def tick(state: IdleMachine | None):
            state = machine_of(state)
            view = state.view(time.monotonic())
            show = {"attract": (True, False, False), "countdown": (False, True, True), "active": (False, False, True)}
            a, c, m = show[view.mode]
            updates = [gr.Column(visible=a), gr.Column(visible=c), gr.Column(visible=m)]
            if view.mode == "attract":
                pictures = kiosk.attract_images()
                updates.append(pictures[view.attract_index % len(pictures)] if pictures else None)
            else:
                updates.append(gr.skip())
            updates.append(f"## Are you still there?\nStarting over in **{view.seconds_left}** s…"
                           if view.mode == "countdown" else gr.skip())
            if view.reset:  # back to the attract loop: the next visitor starts clean
                updates += ["", None, None, WELCOME]
            else:
                updates += [gr.skip()] * 4
            return [state, *updates]

        timer = gr.Timer(1.0)
        tick_outputs = [machine, *views, attract_image, countdown_text, prompt_box, image, qr, status]
        timer.tick(tick, machine, tick_outputs, **LIGHT)
        demo.load(tick, machine, tick_outputs, **LIGHT)
    return demo
