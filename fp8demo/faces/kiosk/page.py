"""The kiosk page: a dark, full-bleed exhibit. The picture fills the screen's height (landscape and portrait), the
controls sit beside or under it in type readable from 2 m. Layout and wiring only; the rules live in rules.py and
service.py. Each screen keeps its own IdleMachine in session state; a one-second timer drives it.
"""

from __future__ import annotations

import logging
import time

import gradio as gr

from ...errors import Cancelled, UserError
from ...web.access import client_address
from ...web.events import LIGHT, friendly, stream
from ...web.presence import departure
from .rules import IdleMachine, KioskRefusal
from .service import Creation, KioskService, qr_image

log = logging.getLogger(__name__)

WELCOME = "Type an idea, or touch a suggestion."
DONE = "Here it is! Type a new idea to make another."
# No zooming, no long-press menu, no text selection outside the prompt: a visitor cannot wander off the page.
# A touch anywhere on the attract screen starts; a touch on the picture shows it alone, full screen, and back.
HEAD = """
<meta name="viewport" content="width=device-width, initial-scale=1, maximum-scale=1, user-scalable=no">
<script>
document.addEventListener('contextmenu', e => e.preventDefault());
document.addEventListener('gesturestart', e => e.preventDefault());
document.addEventListener('dragstart', e => e.preventDefault());
document.addEventListener('click', e => {
  if (e.target.closest('#attract') && !e.target.closest('#start')) document.querySelector('#start')?.click();
  if (e.target.closest('#kiosk-image img')) document.body.classList.toggle('picture-only');
});
</script>
"""
IS_PORTRAIT = "() => window.innerHeight > window.innerWidth"


def build_kiosk_ui(kiosk: KioskService) -> gr.Blocks:
    cfg = kiosk.cfg
    # Visitors enter the handler at once (up to the queue bound) and wait in kiosk.Line, which knows their place.
    # Raw values (preprocess=False): request_for names a wrong type instead of Gradio's "Could not preprocess".
    gpu_line = dict(concurrency_id="gpu", concurrency_limit=kiosk.service.cfg.max_queue, preprocess=False)

    def machine_of(state: IdleMachine | None) -> IdleMachine:
        return state if state is not None else IdleMachine(cfg.idle_after, cfg.countdown, cfg.attract_every,
                                                            time.monotonic())

    with gr.Blocks(title="Create a picture", fill_height=True, fill_width=True) as demo:
        machine = gr.State(None)
        portrait = gr.Checkbox(False, visible=False)  # set by the page itself: the picture's shape follows the screen
        with gr.Column(visible=True, elem_id="attract") as attract:
            attract_image = gr.Image(show_label=False, interactive=False, elem_id="attract-image", buttons=[],
                                     container=False)
            attract_caption = gr.Markdown("", elem_id="attract-caption", visible=cfg.attract_captions)
            start = gr.Button("Touch to create your own picture", elem_id="start", variant="primary")
        with gr.Column(visible=False, elem_id="countdown") as countdown:
            countdown_text = gr.Markdown("", elem_id="countdown-text")
            still_here = gr.Button("I'm still here", elem_id="still-here", variant="primary")
        with gr.Row(visible=False, elem_id="main") as main:
            with gr.Column(elem_id="stage"):
                image = gr.Image(show_label=False, interactive=False, elem_id="kiosk-image", buttons=[],
                                 type="pil", format="jpeg", container=False)
            with gr.Column(elem_id="panel"):
                status = gr.Markdown(WELCOME, elem_id="kiosk-status")
                prompt_box = gr.Textbox(show_label=False, placeholder="What should we make?", lines=1, max_lines=3,
                                        max_length=cfg.max_prompt_chars, elem_id="kiosk-prompt")
                create = gr.Button("Create", variant="primary", elem_id="create")
                with gr.Column(elem_id="chips"):
                    chips = [gr.Button(text, elem_classes=["chip"]) for text in kiosk.chips()]
                # shown by the stylesheet only while it holds a code (a take-home URL is configured)
                with gr.Row(visible=bool(cfg.public_url), elem_id="take-home"):
                    qr = gr.Image(show_label=False, interactive=False, buttons=[], elem_id="kiosk-qr", type="pil",
                                  container=False)
                    gr.Markdown("### Scan to take it home\nwith your phone's camera", elem_id="take-home-text")

        def run(prompt: str, state: IdleMachine | None = None, portrait_screen: bool = False,
                request: gr.Request = None, progress=gr.Progress()):
            def on_step(i, n):
                progress((i, n), desc="Creating", unit="steps")

            if state is not None:
                state.set_busy(True, time.monotonic())
            client, gone = client_address(request), departure()
            try:
                for kind, item in stream(lambda preview: kiosk.create(prompt, client, on_step, preview,
                                                                      portrait_screen is True, gone)):
                    if kind == "preview":
                        yield "Creating your picture…", item, None
                    elif isinstance(item, Creation):
                        url = item.take_home_url
                        yield DONE, item.result.image, qr_image(url) if url else None
                    else:
                        yield item, gr.skip(), gr.skip()
            except (KioskRefusal, UserError) as refusal:
                yield str(refusal), gr.skip(), gr.skip()
            except Cancelled:  # the visitor left: nobody is there to tell
                return
            except Exception as error:
                raise friendly(error) from error
            finally:
                if state is not None:
                    state.set_busy(False, time.monotonic())

        outputs = [status, image, qr]
        inputs = [prompt_box, machine, portrait]
        progress_on = dict(show_progress="minimal", show_progress_on=[status])  # the picture stays visible
        create.click(run, inputs, outputs, api_name="create", **progress_on, **gpu_line)
        prompt_box.submit(run, inputs, outputs, api_visibility="private", **progress_on, **gpu_line)
        for chip in chips:
            chip.click(lambda text=chip.value: text, None, prompt_box, **LIGHT).then(
                run, inputs, outputs, api_visibility="private", **progress_on, **gpu_line)

        def touch(state: IdleMachine | None):
            state = machine_of(state)
            state.touch(time.monotonic())
            return state, gr.Column(visible=False), gr.Column(visible=False), gr.Row(visible=True)

        views = [attract, countdown, main]
        for trigger in (start.click, still_here.click, prompt_box.focus, prompt_box.input):
            trigger(touch, machine, [machine, *views], **LIGHT)
        for chip in chips:
            chip.click(touch, machine, [machine, *views], **LIGHT)

        def tick(state: IdleMachine | None, request: gr.Request = None):
            state = machine_of(state)
            now = time.monotonic()
            view = state.view(now)
            show = {"attract": (True, False, False), "countdown": (False, True, True), "active": (False, False, True)}
            a, c, m = show[view.mode]
            updates = [gr.Column(visible=a), gr.Column(visible=c), gr.Row(visible=m)]
            if view.mode == "attract":
                pictures = kiosk.attract_images()
                picture, caption = pictures[view.attract_index % len(pictures)] if pictures else (None, "")
                updates += [picture, caption]
            else:
                updates += [gr.skip(), gr.skip()]
            updates.append(f"## Are you still there?\nStarting over in **{view.seconds_left}** s…"
                           if view.mode == "countdown" else gr.skip())
            wait = kiosk.gate.wait_left(client_address(request), kiosk.clock())
            # the cooldown counts down on the button itself
            updates.append(gr.Button(f"Next picture in {wait} s", interactive=False) if wait
                           else gr.Button("Create", interactive=True))
            if view.reset:  # back to the attract loop: the next visitor starts clean
                updates += ["", None, None, WELCOME]
            else:
                updates += [gr.skip()] * 4
            return [state, *updates]

        timer = gr.Timer(1.0)
        tick_outputs = [machine, *views, attract_image, attract_caption, countdown_text, create, prompt_box, image,
                        qr, status]
        timer.tick(tick, machine, tick_outputs, **LIGHT)
        demo.load(tick, machine, tick_outputs, **LIGHT)
        demo.load(None, None, portrait, js=IS_PORTRAIT, **LIGHT)
    return demo
