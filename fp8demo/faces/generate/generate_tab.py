"""The Generate tab: a prompt and its settings (one GenerateForm) to pictures, with a live preview, a Stop button,
this browser's gallery and settings loaded from a PNG. Layout and wiring only; every handler is a short adapter from
widget values to a DemoService call, and nothing here imports torch.
"""

from __future__ import annotations

import logging

import gradio as gr

from ... import config
from ...errors import Cancelled
from ...imageio import read_parameters
from ...report import size_text
from ...request import MAX_IMAGES, GenerationResult, parse_parameters
from ...web.events import GPU, LIGHT, RAW, friendly, session_id, stream_steps
from ...web.form import Defaults, GenerateForm, settings_of
from ...web.presence import departure
from ...web.progress import STARTING, StepClock, stopped_text
from ...web.service import DemoService
from . import history, summary

log = logging.getLogger(__name__)

EXAMPLES = [
    "a lighthouse on a cliff at dusk, oil painting, warm light",
    "an astronaut riding a horse on the moon, cinematic, highly detailed",
    "a cozy cabin in a snowy forest at night, glowing windows, northern lights",
    "a red fox in an autumn forest, golden leaves, wildlife photography",
    "isometric illustration of a tiny island with a castle and a waterfall",
]
NEGATIVE_NOTE = "ℹ️ Guidance is at most 1, so the negative prompt has no effect (and is not written into the PNG)."
# On a phone the result column sits below the form: bring it into view when a run starts (wide screens see both;
# a form with errors keeps the page where its summary is), and again once the result is in, because the form above
# it changes height while the job runs (notes). The column's top is the message of a failed or stopped run.
def _scroll(target: str) -> str:
    return f"""const el = document.querySelector('{target}');
  if (window.innerWidth < 768 && el) {{
    const box = el.getBoundingClientRect();
    if (box.top < -1 || box.bottom > window.innerHeight + 1) el.scrollIntoView({{behavior: 'smooth'}});
  }}"""


SCROLL_TO_RESULT = f"(...args) => {{ {_scroll('#result-column')}; return args; }}"


def scroll_on_start(target: str) -> str:
    """For a progress overlay's js_on_load (run each time its value changes): a run has started when the overlay
    appears; on a phone, bring `target` (what the run will show) into view."""
    return f"""let shown = false;
watch('value', () => {{
  const now = element.querySelector('.run-progress') !== null;
  if (now && !shown) {{ {_scroll(target)} }}
  shown = now;
}});"""


def result_line(r: GenerationResult) -> str:
    t = r.timings
    mem = f"{size_text(r.peak_memory_bytes)} ({r.peak_memory_kind})"
    count = f"{len(r.images)} images · " if len(r.images) > 1 else ""
    return (
        f"**{t.total:.2f} s** · {count}text {t.text_encoding * 1000:.0f} ms"
        f"{' (cached)' if r.embeddings_cached else ''} · denoising {t.denoising:.2f} s "
        f"({r.request.steps} steps) · VAE {t.vae_decode:.2f} s · peak {mem} · {r.precision} · {r.model} · "
        f"seed {r.request.seed}"
    )


def pictures(result: GenerationResult) -> list:
    """A run's images as the result gallery shows them: each with its seed."""
    return [(one.image, f"seed {one.request.seed}") for one in result.each_image()]





def download_links(names: list[str]) -> str:
    """Links to /take/<name> (relative, so they work under a proxy prefix such as a Space's)."""
    label = "Download PNG" if len(names) == 1 else "PNG {i}"
    links = [f'<a class="download" href="take/{n}" download="{n}">{label.format(i=i + 1)}</a>'
             for i, n in enumerate(names)]
    return f'<div class="downloads">{"".join(links)}<span>with its parameters</span></div>'


def generate_tab(service: DemoService, d: Defaults) -> dict:
    max_side = service.cfg.engine.max_side
    max_chars = service.cfg.limits.max_prompt_chars
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, elem_id="controls"):
            # lines=1 grows to 6: Enter runs, Shift+Enter starts a new line (Gradio's rule for one-line boxes)
            prompt = gr.Textbox(label="Prompt", placeholder="Describe the picture, then press Enter (Shift+Enter: "
                                "new line)", lines=1, max_lines=6, autofocus=True, max_length=max_chars,
                                elem_id="prompt")
            tokens = gr.Markdown("", elem_id="token-count")
            with gr.Row():
                run = gr.Button("Run", variant="primary", interactive=service.ready, elem_id="run", scale=3)
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop", scale=1)
            errors_box = summary.summary_box("form-errors")
            with gr.Accordion("Advanced", open=False, elem_id="advanced") as advanced:
                num_images = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images per run",
                                       info="seeds seed, seed+1, …", elem_id="num-images")
                negative = gr.Textbox("", label="Negative prompt", placeholder="what to avoid", lines=1,
                                      max_length=max_chars, elem_id="negative")
                negative_note = gr.Markdown(NEGATIVE_NOTE, visible=d.guidance <= 1.0, elem_id="negative-note")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=config.MAX_SEED,
                                     elem_id="seed")
                    randomize = gr.Checkbox(label="Randomize seed", value=True, elem_id="randomize")
                with gr.Row():
                    steps = gr.Slider(config.MIN_STEPS, min(50, config.MAX_STEPS), value=d.steps, step=1,
                                      label="Steps", elem_id="steps")
                    guidance = gr.Slider(config.MIN_GUIDANCE, 10.0, value=d.guidance, step=0.1,
                                         label="Guidance (CFG; 0 for Turbo)", elem_id="guidance")
                aspect = gr.Dropdown(list(d.aspects), value=d.aspect, label="Aspect ratio", allow_custom_value=True,
                                     info="or type WIDTHxHEIGHT, multiples of 16", elem_id="aspect")
            with gr.Accordion("Load settings from a PNG", open=False, elem_id="load-png"):
                png_in = gr.File(label="Drop a PNG made here, in A1111 or in Forge", file_types=[".png"],
                                 type="filepath", elem_id="png-in", height=120)
                png_note = gr.Markdown("", elem_id="png-note")
            gr.Examples(EXAMPLES, inputs=[prompt], label="Examples")
        with gr.Column(scale=3, elem_id="result-column"):
            # One component shows the picture forming (a latent preview each step) and then the run's images.
            # JPEG for display: ~10 ms to encode a megapixel against ~290 ms for PNG on a small CPU; the PNGs with
            # their parameters are the downloads.
            run_error = gr.Markdown("", elem_id="run-error")  # a failure of the last run, above its last good result
            with gr.Column(elem_id="stage"):  # the overlay below is drawn over the picture (style.css)
                result = gr.Gallery(label="Result", show_label=False, format="jpeg", preview=True, selected_index=0,
                                    columns=4, object_fit="contain", height="min(70vh, 720px)",
                                    buttons=["fullscreen"], interactive=False, elem_id="result")
                progress = gr.HTML("", elem_id="run-progress", js_on_load=scroll_on_start("#result-column"))
            info = gr.Markdown("", elem_id="result-info")
            download = gr.HTML("", elem_id="download")
            gallery = gr.HTML(history.gallery_html([]), elem_id="gallery", js_on_load=history.GALLERY_JS)
    # this browser's pictures (history.py): in its local storage, so that a reload keeps them; the API's callers
    # have a history of their own in a session state, as before
    saved = gr.BrowserState([], storage_key=history.STORAGE_KEY)
    api_history = gr.State([])
    # what the result area showed before this run (pictures, timings line, PNG links): put back when a run fails
    shown = gr.State(None)
    api_trigger = gr.Button(visible=False, elem_id="api-generate")
    # The form's widgets by GenerateForm's field names, which are also the API's argument names: the events pass them
    # as keyword arguments (inputs_kwargs), so every handler takes **values and names no field itself. The API's
    # default for each argument is its widget's initial value (hence the negative prompt's explicit "").
    form = dict(prompt=prompt, negative_prompt=negative, seed=seed, randomize_seed=randomize, steps=steps,
                guidance=guidance, aspect_ratio=aspect, num_images=num_images)

    def picture(e: dict) -> tuple[str, str]:
        """A history entry as the result shows it: its PNG and its seed."""
        return str(service.output_dir / e["png"]), f"seed {e['seed']}"

    def check(**values):
        """Runs before the queue: each message appears under its own field and nothing else on the page changes."""
        errors = GenerateForm.of(values).errors(max_side, max_chars)
        if errors:
            service.refused("invalid")
        return [gr.validate(name not in errors, errors.get(name, "")) if name in form else None for name in values]

    # the summary next to Run: registered before the run's events, so that it answers first
    summary.wire([run.click, prompt.submit], errors_box, form,
                 lambda **values: GenerateForm.of(values).errors(max_side, max_chars), advanced,
                 {name for name in form if name != "prompt"})

    def job(values: dict, request: gr.Request | None):
        """What a run has to show, as it happens: ("step", (Snapshot, forming picture or None)) after each step,
        then ("done", (result, PNG paths, history entries)); ("stopped", Snapshot) after Stop. A failure raises a
        gr.Error with a message for the visitor."""
        try:
            entered = GenerateForm.of(values)
            req, count = entered.to_request(), entered.images()
        except Exception as error:
            raise friendly(error) from error
        sid, gone = session_id(request), departure()
        clock = StepClock(f"{count} images at once" if count > 1 else "")
        snapshot, result = STARTING, None
        try:
            work = stream_steps(lambda preview, on_step: [service.generate(req, sid, on_step, preview, count, gone)])
            for kind, value in work:
                if kind == "step":
                    step, frames = value
                    if step is not None:
                        snapshot = clock.at(*step)
                    yield "step", (snapshot, frames[0] if frames else None)
                else:
                    result = value
        except Cancelled:
            yield "stopped", snapshot
            return
        except Exception as error:
            raise friendly(error) from error
        for warning in result.warnings:
            gr.Warning(warning)
        each = result.each_image()
        pngs = [service.save_png(r) for r in each]
        entries = [history.entry(one.request, png.name) for one, png in zip(each, pngs, strict=True)]
        yield "done", (result, pngs, entries)

    def generate(request: gr.Request = None, **values):
        """The API's /generate: the forming picture and "Step N of M · time left" (as the timings) after each step,
        then the images, seed, timings and PNG links; a failure is an error."""
        history_ = values.pop("history", None)
        for kind, value in job(values, request):
            if kind == "step":
                snapshot, preview = value
                forming = [(preview, "forming…")] if preview is not None else gr.skip()
                yield forming, gr.skip(), snapshot.text(), gr.skip(), gr.skip()
            elif kind == "stopped":
                yield [], gr.skip(), gr.skip(), gr.skip(), gr.skip()
            else:
                result, pngs, entries = value
                # a plain list (not an update), so that API callers get [{"image": path, "caption": ...}, ...]
                yield (pictures(result), result.request.seed, result_line(result),
                       download_links([p.name for p in pngs]), (entries + list(history_ or []))[:history.LIMIT])

    def generate_on_page(request: gr.Request = None, **values):
        """The page's run: the Run button says it runs and Stop is on, the progress lies over the forming picture
        and the last timings are hidden until the new ones are in. A failure or a Stop puts the last good result
        back and says what happened above it (raising would cover the result with an "Error" badge)."""
        history_, before = values.pop("history", None), values.pop("shown", None) or {}
        count = values.get("num_images")
        busy = {run: gr.Button("Running…", interactive=False, elem_classes=["running"]),
                stop: gr.Button(interactive=True), run_error: "", info: "", download: "",
                progress: STARTING.html()}
        idle = {run: gr.Button("Run", interactive=True, elem_classes=[]), stop: gr.Button(interactive=False),
                progress: ""}

        def restore(message: str) -> dict:
            return {**idle, result: gr.Gallery(value=before.get("pictures") or [], selected_index=0),
                    info: before.get("info", ""), download: before.get("download", ""), run_error: message}

        yield busy
        try:
            for kind, value in job(values, request):
                if kind == "step":
                    snapshot, preview = value
                    update = {progress: snapshot.html()}
                    if preview is not None:
                        label = f"image 1 of {count}, forming" if isinstance(count, int) and count > 1 else "forming"
                        update[result] = gr.Gallery(value=[(preview, label)], selected_index=0)
                    yield update
                elif kind == "stopped":
                    yield restore(stopped_text(value, "the last result is back"))
                else:
                    result_, pngs, entries = value
                    new_history = (entries + kept(history_))[:history.LIMIT]
                    line, links = result_line(result_), download_links([p.name for p in pngs])
                    yield {**idle, result: pictures(result_), seed: result_.request.seed, info: line,
                           download: links, saved: new_history, gallery: history.gallery_html(new_history),
                           run_error: "",
                           shown: {"pictures": [picture(e) for e in entries], "info": line, "download": links}}
        except gr.Error as error:
            yield restore(f"⚠️ {error.message}")

    outputs = [result, seed, info, download]
    # The page and the API run the same job through two events: the page's is private and never raises (a failure
    # shows above the last good result), the API's /generate (a trigger the page never shows) raises as an API should.
    # Gradio's own tracker, minimal, says only the place in the queue (in the picture's corner); once the run starts,
    # the overlay over the picture is the one indicator.
    event = gr.on([run.click, prompt.submit], generate_on_page, inputs_kwargs={**form, "history": saved,
                                                                               "shown": shown},
                  outputs=[*outputs, saved, gallery, run_error, shown, progress, run, stop], validator=check,
                  show_progress="minimal", show_progress_on=[result], api_visibility="private", **GPU, **RAW)
    api_trigger.click(generate, inputs_kwargs={**form, "history": api_history}, outputs=[*outputs, api_history],
                      api_name="generate", validator=check, show_progress="hidden", **GPU, **RAW)
    event.success(None, js=SCROLL_TO_RESULT)

    def kept(raw) -> list[dict]:
        return history.clean(raw, service.saved_png, max_chars)

    def show_saved(raw):
        """On load: the pictures this browser kept, those the server still has."""
        entries = kept(raw)
        return entries, history.gallery_html(entries)

    def stop_job(request: gr.Request):
        service.cancel(session_id(request))

    stop.click(stop_job, None, None, **LIGHT)
    prompt.change(service.token_status, prompt, tokens, trigger_mode="always_last", **LIGHT)
    guidance.change(lambda g: gr.Markdown(visible=g is not None and g <= 1.0), guidance, negative_note, **LIGHT)

    def use(raw, evt: gr.EventData):
        """A gallery card's action: "settings" sets the form to make the picture again (and shows it with its PNG),
        "seed" sets the seed only."""
        entries, index = kept(raw), getattr(evt, "index", None)
        if not isinstance(index, int) or not 0 <= index < len(entries):
            return {}
        e = entries[index]
        if getattr(evt, "action", None) == "seed":
            return {seed: e["seed"], randomize: False}
        values = {**settings_of(e, d), "num_images": 1}
        again = {"pictures": [picture(e)], "info": history.caption(e), "download": download_links([e["png"]])}
        return {**{form[name]: value for name, value in values.items()},
                result: gr.Gallery(value=again["pictures"], selected_index=0), download: again["download"],
                info: again["info"], shown: again, run_error: ""}

    gallery.click(use, saved, [*form.values(), result, download, shown, run_error, info], **LIGHT)

    def load_png(path: str | None):
        """Fill the form from a PNG's `parameters` text (ours, A1111's or Forge's)."""
        if not path:
            return {png_note: ""}
        try:
            parameters = read_parameters(path)
        except Exception:  # not an image, or a broken one
            parameters = None
        if not parameters:
            return {png_note: "⚠️ This file carries no generation parameters."}
        values = settings_of(parse_parameters(parameters), d)
        return {**{form[name]: value for name, value in values.items()}, png_note: "✅ Settings loaded from the PNG."}

    png_in.change(load_png, png_in, [*form.values(), png_note], **LIGHT)
    return {"run": run, "load": (show_saved, saved, [saved, gallery])}

