"""The kiosk page: a dark, full-bleed exhibit. The picture fills the screen's height (landscape and portrait), the
controls sit beside or under it in type readable from 2 m. Wiring only: what the screen shows is screen.Screen
(one per browser session), the rules live in rules.py, composer.py and service.py.

The server renders the screen's state into one element (#kiosk-state); the stylesheet shows each state's parts from
it and nothing else. The page's script (kiosk.js) is thin: it forwards every touch to the server, which decides what
the touch does in the current state, drives the on-screen keyboard, and shows "restarting" while the server does not
answer (then reloads).
"""

from __future__ import annotations

import html
import json
import logging
import time
import uuid

import gradio as gr

from ... import config
from ...errors import Cancelled, UserError
from ...web.access import client_address
from ...web.events import LIGHT, friendly, session_id, stream
from ...web.presence import departure
from . import keyboard
from .composer import INPUT_MODES, LABELS, PARTS, choice_of, preview
from .rules import KioskRefusal
from .screen import Screen, Screens, Texts
from .service import Creation, KioskService, qr_image

log = logging.getLogger(__name__)

ASSETS = config.ASSETS_DIR / "kiosk"
KEYBOARD_DIR = ASSETS / "simple-keyboard"
# No zooming, no long-press menu, no text selection outside the prompt: a visitor cannot wander off the page.
META = '<meta name="viewport" content="width=device-width, initial-scale=1, maximum-scale=1, user-scalable=no">'
BUSY = "Your picture is still being made: it will appear in a moment."
IS_PORTRAIT = "() => window.innerHeight > window.innerWidth"
# The server renders "<boot> <change number> <state>" here; kiosk.js applies it to #kiosk-state, in order
STATE_TEMPLATE = '<div data-rendered="${value}"></div>'


def _script(text: str) -> str:
    return "<script>\n" + text.replace("</script", "<\\/script") + "\n</script>"


def page_head(cfg: config.KioskConfig) -> str:
    """The page's <head>: the viewport, the stylesheets, the on-screen keyboard's library (simple-keyboard, shipped
    in the package) and the page's own script with its settings, all inlined, so that an installed package needs no
    file routes. The stylesheets go here rather than through Gradio's css, which rewrites every selector inside an
    @media rule (and splits the lists inside :is() and :has()), which the states' rules depend on."""
    settings = {"keyboard": cfg.keyboard, "maxChars": cfg.max_prompt_chars}
    if cfg.keyboard:
        settings.update(keyboard.options(cfg.keyboard_layout))
    parts = [META]
    for sheet in stylesheets(cfg):
        parts.append("<style>\n" + sheet.read_text(encoding="utf-8").replace("</style", "<\\/style") + "\n</style>")
    if cfg.keyboard:
        parts.append(_script((KEYBOARD_DIR / "index.js").read_text(encoding="utf-8")))
    parts.append(_script("window.KIOSK_SETTINGS = " + json.dumps(settings, ensure_ascii=False) + ";"))
    parts.append(_script((ASSETS / "kiosk.js").read_text(encoding="utf-8")))
    return "\n".join(parts)


def stylesheets(cfg: config.KioskConfig) -> tuple:
    """The page's stylesheets: the keyboard library's, then the kiosk's own (which restyles it)."""
    own = ASSETS / "kiosk.css"
    return (KEYBOARD_DIR / "index.css", own) if cfg.keyboard else (own,)


def check_settings(cfg: config.KioskConfig) -> None:
    """Refuse settings the page cannot serve, in one line, before anything starts."""
    from ...errors import SetupError

    if cfg.input_mode not in INPUT_MODES:
        raise SetupError(f"FP8DEMO_KIOSK_INPUT: {cfg.input_mode!r} is not an input mode; choose one of "
                         f"{', '.join(INPUT_MODES)}.")
    if cfg.keyboard:
        keyboard.layout_name(cfg.keyboard_layout)


def _heading(cfg: config.KioskConfig, tag: str = "h1") -> str:
    return (f'<{tag} class="kiosk-title">{html.escape(cfg.title)}</{tag}>'
            f'<p class="kiosk-subtitle">{html.escape(cfg.subtitle)}</p>')


def build_kiosk_ui(kiosk: KioskService) -> gr.Blocks:
    cfg = kiosk.cfg
    check_settings(cfg)
    mode = cfg.input_mode
    typed, tiled = mode in ("free", "both"), mode in ("compose", "both")
    texts = Texts.for_input(mode)
    # Visitors enter the handler at once (up to the queue bound) and wait in kiosk.Line, which knows their place.
    # Raw values (preprocess=False): request_for names a wrong type instead of Gradio's "Could not preprocess".
    gpu_line = dict(concurrency_id="gpu", concurrency_limit=kiosk.service.cfg.max_queue, preprocess=False)

    # The operator's attract pictures are served where they are (package data, wherever the package is installed):
    # otherwise a queued event that renders the attract screen fails, as Gradio refuses there to hand out files from
    # outside the working directory, the temp folder and the outputs
    gr.set_static_paths([cfg.attract_dir])
    screens = Screens(lambda: Screen(cfg.idle_after, cfg.countdown, cfg.attract_every, time.monotonic(), texts))

    def screen_of(request: gr.Request | None) -> Screen:
        """This browser session's Screen (a new one for a new session, and for every page after a restart)."""
        return screens.get(session_id(request))

    with gr.Blocks(title=cfg.title, fill_height=True, fill_width=True) as demo:
        portrait = gr.Checkbox(False, visible=False)  # set by the page itself: the picture's shape follows the screen
        boot = uuid.uuid4().hex[:12]  # this server: a page that hears from another one reloads
        state_view = gr.HTML(f"{boot} 0 attract", html_template=STATE_TEMPLATE, js_on_load=None,
                             elem_id="kiosk-state-view", elem_classes=["kiosk-hidden"])
        # The page's script sends every touch here; the server decides what it does (Screen.touch, .tap_picture)
        touch = gr.Button("touch", elem_id="kiosk-touch", elem_classes=["kiosk-hidden"])
        picture_tap = gr.Button("picture", elem_id="kiosk-picture-tap", elem_classes=["kiosk-hidden"])
        prompt_tap = gr.Button("prompt", elem_id="kiosk-prompt-tap", elem_classes=["kiosk-hidden"])

        with gr.Column(elem_id="attract"):
            attract_image = gr.Image(show_label=False, interactive=False, elem_id="attract-image", buttons=[],
                                     container=False)
            gr.HTML(_heading(cfg), elem_id="attract-title", js_on_load=None)
            attract_caption = gr.Markdown("", elem_id="attract-caption", visible=cfg.attract_captions)
            gr.Button("Touch to create your own picture", elem_id="start", variant="primary")
        with gr.Column(elem_id="countdown"):
            gr.HTML(f'<p class="countdown-title">{html.escape(texts.still_there)}</p>', js_on_load=None)
            countdown_text = gr.Markdown("", elem_id="countdown-text")
            gr.Button("I'm still here", elem_id="still-here", variant="primary")
        with gr.Column(elem_id="restarting"):
            gr.HTML('<div class="restarting-card">' + _heading(cfg, "h2") +
                    f'<p class="restarting-text">{html.escape(texts.restarting)}</p>'
                    '<div class="spinner" aria-hidden="true"></div></div>', js_on_load=None)
        with gr.Row(elem_id="main"):
            with gr.Column(elem_id="stage"):
                gr.HTML('<div class="empty-frame"><p class="empty-title">Your picture will appear here</p></div>',
                        elem_id="stage-empty", js_on_load=None)
                image = gr.Image(show_label=False, interactive=False, elem_id="kiosk-image", buttons=[],
                                 type="pil", format="jpeg", container=False)
                gr.Button(texts.alone, elem_id="back-hint")
            with gr.Column(elem_id="panel"):
                gr.HTML(_heading(cfg, "h1"), elem_id="kiosk-header", js_on_load=None)
                status = gr.Markdown(texts.welcome, elem_id="kiosk-status")
                switch = None
                if typed and tiled:
                    switch = gr.Radio(["Type an idea", "Use the tiles"], value="Type an idea", show_label=False,
                                      elem_id="input-switch", container=False)
                prompt_box = None
                if typed:
                    prompt_box = gr.Textbox(show_label=False, placeholder="What should we make?", lines=1,
                                            max_lines=3, max_length=cfg.max_prompt_chars, elem_id="kiosk-prompt",
                                            container=False)
                    if cfg.keyboard:
                        gr.HTML('<div class="simple-keyboard"></div>', elem_id="kiosk-keyboard", js_on_load=None)
                tile_rows, sentence = [], None
                if tiled:
                    with gr.Column(elem_id="composer"):
                        for part in PARTS:
                            tile_rows.append(gr.Radio(list(kiosk.tiles.parts[part]), value=None,
                                                      label=LABELS[part], elem_id=f"tiles-{part}",
                                                      elem_classes=["tiles"]))
                        sentence = gr.Markdown("", elem_id="sentence")
                create = gr.Button("Create", variant="primary", elem_id="create")
                chips = []
                if typed:
                    with gr.Column(elem_id="chips"):
                        chips = [gr.Button(text, elem_classes=["chip"]) for text in kiosk.chips()]
                # shown by the stylesheet only while it holds a code (a take-home URL is configured)
                with gr.Row(visible=bool(cfg.public_url), elem_id="take-home"):
                    qr = gr.Image(show_label=False, interactive=False, buttons=[], elem_id="kiosk-qr", type="pil",
                                  container=False)
                    gr.Markdown("### Scan to take it home\nwith your phone's camera", elem_id="take-home-text")
        # The API (/create): the same KioskService.create as the page, with its own plain inputs and outputs
        with gr.Column(visible=False):
            api_inputs = [gr.Textbox("", label="prompt")] + [gr.Textbox("", label=part) for part in PARTS]
            api_outputs = [gr.Markdown(), gr.Image(type="pil", format="png"), gr.Image(type="pil")]
            api_button = gr.Button("create")

        # ---- rendering: a Scene, and what goes with it ---------------------------------------------------------

        rendered = [state_view, status, countdown_text, create, attract_image, attract_caption, image, qr]
        rendered += [c for c in (prompt_box, sentence, switch) if c is not None] + tile_rows

        def render(screen: Screen, request: gr.Request | None, extra: dict | None = None) -> dict:
            """Every output of every page event: the screen's scene, and what the event adds (a picture...)."""
            now = time.monotonic()
            wait = kiosk.gate.wait_left(client_address(request), kiosk.clock())
            ready = kiosk.service.ready and not kiosk.service.restarting
            scene = screen.scene(now, ready, wait)
            out = {c: gr.skip() for c in rendered}
            # the page applies it only if it is newer than what it shows, and reloads for another server (boot)
            out[state_view] = f"{boot} {scene.version} {scene.state}"
            out[status] = scene.status
            out[create] = gr.Button(scene.create_label, interactive=scene.create_enabled)
            if scene.state == "still-there":
                out[countdown_text] = f"Starting over in **{scene.seconds_left}** s…"
            if scene.state == "attract":
                pictures = kiosk.attract_images()
                picture, caption = pictures[scene.attract_index % len(pictures)] if pictures else (None, "")
                out[attract_image], out[attract_caption] = picture, caption
            if scene.wipe:  # the next visitor starts clean
                out[image] = out[qr] = None
                out.update({c: None for c in tile_rows})
                if sentence is not None:
                    out[sentence] = ""
            if prompt_box is not None and (scene.wipe or scene.clear_prompt):
                out[prompt_box] = ""
            if switch is not None and scene.wipe:
                out[switch] = "Type an idea"
            out.update(extra or {})
            return out

        def on_touch(request: gr.Request = None):
            screen = screen_of(request)
            screen.touch(time.monotonic())
            return render(screen, request)

        def on_picture(request: gr.Request = None):
            screen = screen_of(request)
            screen.tap_picture(time.monotonic())
            return render(screen, request)

        def on_typing(request: gr.Request = None):
            screen = screen_of(request)
            screen.typing(time.monotonic())
            return render(screen, request)

        def on_keys(request: gr.Request = None):
            screen = screen_of(request)
            screen.typing(time.monotonic(), keys=True)
            return render(screen, request)

        def on_tile(subject, setting, mood, style, request: gr.Request = None):
            screen = screen_of(request)
            screen.typing(time.monotonic())
            extra = {sentence: preview(choice_of((subject, setting, mood, style)))}
            if prompt_box is not None:
                extra[prompt_box] = ""  # both: the tiles replace a typed idea
            return render(screen, request, extra)

        def on_tick(request: gr.Request = None):
            screen = screen_of(request)
            return render(screen, request)

        page = dict(outputs=rendered, **LIGHT)
        touch.click(on_touch, None, **page)
        picture_tap.click(on_picture, None, **page)
        prompt_tap.click(on_typing, None, **page)
        if prompt_box is not None:
            prompt_box.input(on_keys, None, **page)
            prompt_box.focus(on_keys, None, **page)
        for row in tile_rows:
            row.input(on_tile, tile_rows, **page)
        if switch is not None:
            def on_switch(which: str, request: gr.Request = None):
                screen = screen_of(request)
                screen.typing(time.monotonic())
                if which == "Use the tiles":
                    return render(screen, request, {prompt_box: ""})
                return render(screen, request, {sentence: "", **{c: None for c in tile_rows}})

            switch.input(on_switch, switch, **page)

        # ---- making a picture ----------------------------------------------------------------------------------

        def make(prompt, tiles, portrait_screen, request, progress, gone):
            """(kind, value) while a picture is made: ("status", line), ("preview", image), ("creation", c)."""
            def on_step(i, n):
                progress((i, n), desc="Creating", unit="steps")

            client = client_address(request)
            for kind, item in stream(lambda preview_: kiosk.create(prompt, client, on_step, preview_,
                                                                   portrait_screen is True, gone, tiles)):
                if kind == "preview":
                    yield "preview", item
                elif isinstance(item, Creation):
                    yield "creation", item
                else:
                    yield "status", item

        def run(portrait_screen, prompt, subject, setting, mood, style,
                request: gr.Request = None, progress=gr.Progress()):
            screen = screen_of(request)
            now = time.monotonic
            if not screen.begin(now()):
                yield render(screen, request, {status: BUSY})
                return
            tiles = choice_of((subject, setting, mood, style)) if tiled else None
            yield render(screen, request)
            try:
                for kind, item in make(prompt, tiles, portrait_screen, request, progress, departure()):
                    if kind == "preview":
                        yield render(screen, request, {image: item})
                    elif kind == "creation":
                        screen.done(now())
                        url = item.take_home_url
                        yield render(screen, request, {image: item.result.image, qr: qr_image(url) if url else None})
                    else:
                        screen.place(item)
                        yield render(screen, request)
            except KioskRefusal as refusal:
                screen.refuse(str(refusal), now(), clear_prompt=refusal.kind == "prompt",
                              cooldown=refusal.kind == "cooldown")
                yield render(screen, request)
            except UserError as refusal:
                screen.refuse(str(refusal), now())
                yield render(screen, request)
            except Cancelled:  # the visitor left: nobody is there to tell
                screen.go("attract", now())
            except Exception as error:  # logged with its traceback; the visitor gets the error state, no toast
                friendly(error)
                screen.fail(None, now())
                yield render(screen, request, {image: None, qr: None})

        inputs = [portrait, prompt_box if prompt_box is not None else gr.State(""),
                  *(tile_rows or [gr.State(None) for _ in PARTS])]
        busy = dict(outputs=rendered, api_visibility="private", show_progress="minimal", show_progress_on=[status],
                    **gpu_line)
        create.click(run, inputs, **busy)
        if prompt_box is not None:
            prompt_box.submit(run, inputs, **busy)
        for chip in chips:
            chip.click(lambda text=chip.value: text, None, prompt_box, **LIGHT).then(run, inputs, **busy)

        def api_create(prompt, subject, setting, mood, style, request: gr.Request = None, progress=gr.Progress()):
            tiles = choice_of((subject, setting, mood, style))
            try:
                for kind, item in make(prompt, tiles, False, request, progress, departure()):
                    if kind == "creation":
                        url = item.take_home_url
                        yield texts.done, item.result.image, qr_image(url) if url else None
                    elif kind == "status":
                        yield item, gr.skip(), gr.skip()
            except (KioskRefusal, UserError) as refusal:
                yield str(refusal), gr.skip(), gr.skip()
            except Cancelled:
                return
            except Exception as error:
                raise friendly(error) from error

        api_button.click(api_create, api_inputs, api_outputs, api_name="create", **gpu_line)

        timer = gr.Timer(1.0)
        timer.tick(on_tick, None, **page)
        demo.load(on_tick, None, **page)
        demo.load(None, None, portrait, js=IS_PORTRAIT, **LIGHT)
    return demo
