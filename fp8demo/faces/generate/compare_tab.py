"""The Compare tab: one prompt and seed through the 16-bit and the FP8 transformer, side by side with their metrics,
and a sheet of several prompts. Its settings are the Generate form's, checked by the same checks."""

from __future__ import annotations

import html

import gradio as gr

from ... import config, recipes
from ...errors import Cancelled, InvalidRequest, SetupError
from ...report import size_text
from ...request import check_prompt
from ...web.events import GPU, LIGHT, RAW, friendly, session_id, stream_steps
from ...web.form import Defaults, GenerateForm, text
from ...web.presence import departure
from ...web.progress import STARTING, StepClock, stopped_text
from ...web.service import DemoService
from . import summary
from .figures import diff_text, psnr_text, shorten, ssim_text
from .generate_tab import EXAMPLES, scroll_on_start
from .sheet import contact_sheet

SHEET_PROMPTS = EXAMPLES[:4]
# Recipes (fp8demo/recipes.py) offered for each side; any other recipe can be typed. "engine": the engine's own
# transformer, as it serves the Generate tab.
BASELINES = ("bf16", "fp16", "fp8-storage", "bf16+compile")
ENGINE = "engine"
CANDIDATES = (ENGINE, "fp8", "fp8-native", "fp8+cache", "fp8+cache=taylorseer:4:3", "fp8-native+compile+cache")
SETTINGS = ("seed", "steps", "guidance", "aspect_ratio")  # the Generate form's fields the Compare tab shares


def compare_tab(service: DemoService, d: Defaults) -> dict:
    gr.Markdown(
        "One prompt and one seed through two recipes (by default the 16-bit transformer against this engine's FP8 "
        "one; a recipe: bf16, fp16, fp8, fp8-storage, fp8-native, with +compile, +cache, +cache=taylorseer:4:3 ...), "
        "sharing the text encoders and the VAE. Memory is what each transformer holds, and the device's own peak, "
        "reset before each side. A recipe not loaded yet is loaded (and compiled, with --compile) by its first "
        "comparison, which takes longer; the default baseline is ready from the start."
    )
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=1, max_lines=4, elem_id="compare-prompt",
                                value="a lighthouse on a cliff at dusk, oil painting")
            with gr.Row():
                seed = gr.Number(label="Seed", value=42, precision=0, minimum=0, maximum=config.MAX_SEED,
                                 elem_id="compare-seed")
                baseline = gr.Dropdown(list(BASELINES), value="bf16", label="Baseline (a recipe)",
                                       allow_custom_value=True, elem_id="compare-baseline")
                candidate = gr.Dropdown(list(CANDIDATES), value=ENGINE, label="Candidate (a recipe)",
                                        allow_custom_value=True, elem_id="compare-candidate")
            with gr.Accordion("Settings", open=False, elem_id="compare-settings") as settings_section:
                steps = gr.Slider(config.MIN_STEPS, min(50, config.MAX_STEPS), value=d.steps, step=1, label="Steps",
                                  elem_id="compare-steps")
                guidance = gr.Slider(config.MIN_GUIDANCE, 10.0, value=d.guidance, step=0.1, label="Guidance",
                                     elem_id="compare-guidance")
                aspect = gr.Dropdown(list(d.aspects), value=d.aspect, label="Aspect ratio", allow_custom_value=True,
                                     elem_id="compare-aspect")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", interactive=service.ready, elem_id="compare-run",
                                scale=3)
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="compare-stop", scale=1)
            errors_box = summary.summary_box("compare-errors")
        with gr.Column(scale=3):
            run_error = gr.Markdown("", elem_id="compare-error", elem_classes=["run-error"])
            with gr.Column(elem_classes=["stage"], elem_id="compare-stage"):
                slider = gr.ImageSlider(label="Baseline ◀ ▶ Candidate (drag)", type="pil", elem_id="slider")
                progress = gr.HTML("", elem_id="compare-progress", elem_classes=["run-progress-overlay"],
                                   js_on_load=scroll_on_start("#compare-stage"))
    with gr.Row():
        left = gr.Image(label="Baseline", type="pil", format="webp", interactive=False, elem_id="compare-base")
        right = gr.Image(label="Candidate", type="pil", format="webp", interactive=False, elem_id="compare-fp8")
        heat = gr.Image(label="Difference |baseline − candidate|, with its scale", type="pil", format="webp",
                        interactive=False, elem_id="compare-heat")
    table = gr.Markdown("", label="Metrics", elem_id="compare-table")
    details = gr.JSON(label="Details", visible=False)

    with gr.Accordion("Sheet: the same seed, several prompts, both recipes", open=False, elem_id="sheet"):
        sheet_prompts = gr.Textbox(label="Prompts, one per line (up to 4)", value="\n".join(SHEET_PROMPTS),
                                   lines=4, max_lines=4, elem_id="sheet-prompts")
        with gr.Row():
            sheet_run = gr.Button("Compare all", variant="primary", interactive=service.ready, elem_id="sheet-run",
                                  scale=3)
            sheet_stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="sheet-stop", scale=1)
        sheet_errors_box = summary.summary_box("sheet-errors")
        sheet_error = gr.Markdown("", elem_id="sheet-error", elem_classes=["run-error"])
        with gr.Column(elem_classes=["stage"], elem_id="sheet-stage"):
            # The sheet labels its own columns; Gradio's label badge would cover the first one.
            sheet_image = gr.Image(label="Rows: prompts · columns: baseline, candidate", show_label=False, type="pil",
                                   format="jpeg", interactive=False, elem_id="sheet-image")
            sheet_progress = gr.HTML("", elem_id="sheet-progress", elem_classes=["run-progress-overlay"],
                                     js_on_load=scroll_on_start("#sheet-stage"))
        sheet_table = gr.Markdown("", elem_id="sheet-table")

    max_side = service.cfg.engine.max_side
    max_chars = service.cfg.limits.max_prompt_chars

    def settings(prompt_, seed_, steps_, guidance_, aspect_ratio) -> GenerateForm:
        """The comparison's settings as the Generate form holds them: the same conversions and checks."""
        return GenerateForm(prompt=prompt_, seed=seed_, randomize_seed=False, steps=steps_, guidance=guidance_,
                            aspect_ratio=aspect_ratio)

    def verdicts(errors: dict[str, str], names: tuple[str, ...]) -> list:
        if errors:
            service.refused("invalid")
        return [gr.validate(name not in errors, errors.get(name, "")) for name in names]

    def setting_errors(seed_, baseline_, steps_, guidance_, aspect_ratio, candidate_=ENGINE) -> dict[str, str]:
        errors = settings(None, seed_, steps_, guidance_, aspect_ratio).errors(max_side, max_chars, only=SETTINGS)
        for name, recipe in (("baseline", baseline_), ("candidate", candidate_)):
            message = recipe_error(recipe, allow_engine=name == "candidate")
            if message:
                errors[name] = message
        return errors

    def form_errors(prompt, seed, baseline, steps, guidance, aspect_ratio, candidate=ENGINE) -> dict[str, str]:
        errors = settings(prompt, seed, steps, guidance, aspect_ratio).errors(max_side, max_chars, ["prompt"])
        return errors | setting_errors(seed, baseline, steps, guidance, aspect_ratio, candidate)

    def sheet_errors(prompts, seed, baseline, steps, guidance, aspect_ratio, candidate=ENGINE) -> dict[str, str]:
        errors = {}
        try:
            sheet_lines(prompts)
        except InvalidRequest as error:
            errors["prompts"] = str(error)
        return errors | setting_errors(seed, baseline, steps, guidance, aspect_ratio, candidate)

    def check(prompt_, seed_=42, baseline_="bf16", steps_=d.steps, guidance_=d.guidance, aspect_ratio=d.aspect,
              candidate_=ENGINE):
        """Before the queue, as on the Generate tab: each message under its own field."""
        errors = form_errors(prompt_, seed_, baseline_, steps_, guidance_, aspect_ratio, candidate_)
        return verdicts(errors, ("prompt", "seed", "baseline", "steps", "guidance", "aspect_ratio", "candidate"))

    def check_sheet(prompts_, seed_=42, baseline_="bf16", steps_=d.steps, guidance_=d.guidance,
                    aspect_ratio=d.aspect, candidate_=ENGINE):
        errors = sheet_errors(prompts_, seed_, baseline_, steps_, guidance_, aspect_ratio, candidate_)
        return verdicts(errors, ("prompts", "seed", "baseline", "steps", "guidance", "aspect_ratio", "candidate"))

    def sheet_lines(prompts_) -> list[str]:
        if not isinstance(prompts_, str):
            raise InvalidRequest("The prompts must be text, one per line.")
        lines = [p.strip() for p in prompts_.splitlines() if p.strip()][:4]
        if not lines:
            raise InvalidRequest("Write at least one prompt for the sheet.")
        for line in lines:
            check_prompt(text(line, "prompt"), max_chars)
        return lines

    def events_of(work, note):
        """The comparison's progress, then its result: ("step", Snapshot) after each step (of both sides), ("done",
        result) or ("stopped", Snapshot); a failure raises a gr.Error with a message for the visitor."""
        clock, snapshot = StepClock(note), STARTING
        gone = departure()  # here, in the event's own context, not in the worker thread (presence.py)
        try:
            for kind, value in stream_steps(lambda preview, on_step: [work(on_step, gone)]):
                if kind == "step" and value[0] is not None:
                    snapshot = clock.at(*value[0])
                    yield "step", snapshot
                elif kind == "item":
                    yield "done", value
        except Cancelled:
            yield "stopped", snapshot
        except Exception as error:
            raise friendly(error) from error

    def side(i: int, n: int) -> str:
        return "baseline side" if i <= n // 2 else "candidate side"

    def one(prompt, seed, baseline, steps_, guidance, aspect_ratio, candidate, request):
        def work(on_step, gone):
            req = settings(prompt, seed, steps_, guidance, aspect_ratio).to_request()
            return service.compare(req, baseline, session_id(request), on_step, gone, side_recipe(candidate))
        return events_of(work, side)

    def sheet(prompts, seed, baseline, steps_, guidance, aspect_ratio, candidate, request):
        def work(on_step, gone):
            lines = sheet_lines(prompts)  # the first stands for all in the shared settings (one seed for every row)
            shared = settings(lines[0], seed, steps_, guidance, aspect_ratio).to_request()
            return service.compare_sheet(lines, shared, baseline, session_id(request), on_step, gone,
                                         side_recipe(candidate))

        def note(i: int, n: int) -> str:
            count = len([p for p in str(prompts).splitlines() if p.strip()][:4]) or 1
            per = n // count or 1
            k, j = divmod(i - 1, per)
            return f"prompt {k + 1} of {count}, {side(j + 1, per)}"
        return events_of(work, note)

    def compare(prompt: str, seed: float = 42, baseline: str = "bf16", steps: float = d.steps,
                guidance: float = d.guidance, aspect_ratio: str = d.aspect, candidate: str = ENGINE,
                request: gr.Request = None):
        """The API's /compare: "Step N of M" (as the metrics table) while it runs, then both sides and the metrics.
        `baseline`, `candidate`: recipes ("bf16", "fp8-native+compile+cache", ...; candidate "engine": the engine's
        own transformer)."""
        for kind, value in one(prompt, seed, baseline, steps, guidance, aspect_ratio, candidate, request):
            if kind == "step":
                yield (gr.skip(),) * 4 + (value.text(), gr.skip())
            elif kind == "done":
                yield compared(value)

    def compare_on_page(prompt, seed=42, baseline="bf16", steps=d.steps, guidance=d.guidance, aspect_ratio=d.aspect,
                        candidate=ENGINE, request: gr.Request = None):
        outputs = [slider, left, right, heat, table, details]
        yield from on_page(one(prompt, seed, baseline, steps, guidance, aspect_ratio, candidate, request),
                           lambda res: dict(zip(outputs, compared(res), strict=True)),
                           run, "Compare", stop, progress, run_error)

    def compare_sheet(prompts: str, seed: float = 42, baseline: str = "bf16", steps: float = d.steps,
                      guidance: float = d.guidance, aspect_ratio: str = d.aspect, candidate: str = ENGINE,
                      request: gr.Request = None):
        """The API's /compare_sheet: "Step N of M" (as its table) while it runs, then the sheet and its table."""
        for kind, value in sheet(prompts, seed, baseline, steps, guidance, aspect_ratio, candidate, request):
            if kind == "step":
                yield gr.skip(), value.text()
            elif kind == "done":
                yield contact_sheet(value), sheet_table_text(value)

    def compare_sheet_on_page(prompts, seed=42, baseline="bf16", steps=d.steps, guidance=d.guidance,
                              aspect_ratio=d.aspect, candidate=ENGINE, request: gr.Request = None):
        yield from on_page(sheet(prompts, seed, baseline, steps, guidance, aspect_ratio, candidate, request),
                           lambda rows: {sheet_image: contact_sheet(rows), sheet_table: sheet_table_text(rows)},
                           sheet_run, "Compare all", sheet_stop, sheet_progress, sheet_error)

    def stop_job(request: gr.Request):
        service.cancel(session_id(request))

    inputs = [prompt, seed, baseline, steps, guidance, aspect, candidate]
    sheet_inputs = [sheet_prompts, seed, baseline, steps, guidance, aspect, candidate]
    shared = dict(seed=seed, baseline=baseline, steps=steps, guidance=guidance, aspect_ratio=aspect,
                  candidate=candidate)
    in_settings = {"steps", "guidance", "aspect_ratio"}
    summary.wire([run.click], errors_box, dict(prompt=prompt, **shared), form_errors, settings_section, in_settings)
    summary.wire([sheet_run.click], sheet_errors_box, dict(prompts=sheet_prompts, **shared), sheet_errors,
                 settings_section, in_settings)
    # As on the Generate tab, the page's events are private and never raise (the message goes above the last good
    # result); the API's (triggers the page never shows) stream "Step N of M" and raise as an API should. Gradio's
    # own tracker, minimal, says only the place in the queue; once the run starts, the overlay is the one indicator.
    run.click(compare_on_page, inputs, [slider, left, right, heat, table, details, run, stop, progress, run_error],
              show_progress="minimal", show_progress_on=[slider], validator=check, api_visibility="private", **GPU,
              **RAW)
    sheet_run.click(compare_sheet_on_page, sheet_inputs,
                    [sheet_image, sheet_table, sheet_run, sheet_stop, sheet_progress, sheet_error],
                    show_progress="minimal", show_progress_on=[sheet_image], validator=check_sheet,
                    api_visibility="private", **GPU, **RAW)
    api_compare = gr.Button(visible=False, elem_id="api-compare")
    api_sheet = gr.Button(visible=False, elem_id="api-compare-sheet")
    api_compare.click(compare, inputs, [slider, left, right, heat, table, details], api_name="compare",
                      show_progress="hidden", validator=check, **GPU, **RAW)
    api_sheet.click(compare_sheet, sheet_inputs, [sheet_image, sheet_table], api_name="compare_sheet",
                    show_progress="hidden", validator=check_sheet, **GPU, **RAW)
    stop.click(stop_job, None, None, **LIGHT)
    sheet_stop.click(stop_job, None, None, **LIGHT)
    return {"run": run, "sheet_run": sheet_run}


def compared(res) -> tuple:
    """A comparison as the Compare tab's outputs: the slider, both sides labelled, the heatmap, the table, details."""
    b, f = res.baseline, res.fp8
    return ((b.image, f.image), gr.Image(value=b.image, label=f"Baseline: {b.precision}"),
            gr.Image(value=f.image, label=f"Candidate: {f.precision}"), res.heatmap, compare_table(res),
            res.summary())


def recipe_error(recipe, allow_engine: bool) -> str:
    """The message for a side's recipe that cannot be read, or "" (what the machine can run is the run plan's to
    say, when the comparison loads it)."""
    if not isinstance(recipe, str) or not recipe.strip():
        return "Choose a recipe, e.g. bf16 or fp8+cache."
    if allow_engine and recipe.strip() == ENGINE:
        return ""
    try:
        recipes.flags(recipe)
    except SetupError as error:
        return str(error)
    return ""


def side_recipe(candidate: str) -> str | None:
    """The comparer's candidate: None for the engine's own transformer."""
    return None if candidate.strip() == ENGINE else candidate.strip()


def blocks_text(r) -> str:
    """Blocks run of steps x blocks, and how many a step cache skipped."""
    if r.blocks_total is None:
        return "n/a"
    skipped = f" ({r.blocks_skipped} skipped by the step cache)" if r.blocks_skipped else ""
    return f"{r.blocks_run} of {r.blocks_total}{skipped}"


def lpips_text(m) -> str:
    """LPIPS as the table writes it, or why it is missing (in a tooltip: the reason is long)."""
    if m.lpips is not None:
        label = f"{m.lpips:.4f}"
        return f'<span title="{html.escape(m.lpips_note)}">{label} ⚠️</span>' if m.lpips_note else label
    return f'<span title="{html.escape(m.lpips_note)}">n/a (hover for why)</span>'



def on_page(events, show, run: gr.Button, label: str, stop: gr.Button, progress: gr.HTML, error: gr.Markdown):
    """A comparison's events as page updates: the button says it runs and Stop is on, the progress lies over the
    picture, then `show(result)` (a dict of updates); a Stop or a failure leaves the last result and says why above
    it."""
    idle = {run: gr.Button(label, interactive=True, elem_classes=[]), stop: gr.Button(interactive=False),
            progress: ""}
    yield {run: gr.Button("Running…", interactive=False, elem_classes=["running"]), stop: gr.Button(interactive=True),
           progress: STARTING.html(), error: ""}
    try:
        for kind, value in events:
            if kind == "step":
                yield {progress: value.html()}
            elif kind == "stopped":
                yield {**idle, error: stopped_text(value, "the last result is kept")}
            else:
                yield {**idle, **show(value)}
    except gr.Error as failure:
        yield {**idle, error: f"⚠️ {failure.message}"}


def cell_text(text: str) -> str:
    """Text for a Markdown table cell: HTML escaped, and no "|" to end the cell."""
    return html.escape(text).replace("|", "&#124;")


def compare_table(res) -> str:
    b, f, m = res.baseline, res.fp8, res.metrics
    speed = b.timings.denoising / f.timings.denoising if f.timings.denoising > 0 else float("nan")
    ratio = res.fp8_transformer_bytes / res.baseline_transformer_bytes if res.baseline_transformer_bytes else 0
    if res.device == "cpu":
        peak = "n/a on a CPU (the process's peak RSS only rises)"
        peak_row = f"| device peak (reset per side) | {peak} | |"
    else:
        peak_row = (f"| device peak (reset per side) | {size_text(b.peak_memory_bytes)} | "
                    f"{size_text(f.peak_memory_bytes)} |")
    speed_note = "" if res.speed_representative else " ⚠️ on a CPU: not representative of a GPU"
    rows = [
        "| | baseline | candidate |",
        "|---|---|---|",
        f"| precision (storage / compute) | {b.precision} | {f.precision} |",
        f"| transformer, resident | {size_text(res.baseline_transformer_bytes)} | "
        f"{size_text(res.fp8_transformer_bytes)} (**{ratio:.2f}x**) |",
        peak_row,
        f"| denoising | {b.timings.denoising:.3f} s | {f.timings.denoising:.3f} s ({speed:.2f}x){speed_note} |",
        f"| total | {b.timings.total:.3f} s | {f.timings.total:.3f} s |",
        f"| transformer blocks run | {blocks_text(b)} | {blocks_text(f)} |",
        "",
        f"**LPIPS** {lpips_text(m)} · **PSNR** {psnr_text(m.psnr_db)} · **SSIM** {ssim_text(m.ssim)} (scikit-image) · "
        "**mean |Δ|** "
        f"{diff_text(m.mean_abs_diff)} / 255 · **max |Δ|** {m.max_abs_diff} / 255 · seed {f.request.seed}",
    ]
    if res.swap_seconds:
        rows.append(f"\nThe baseline's transformer waits on the CPU: moving it in and out took "
                    f"{res.swap_seconds:.2f} s (not counted above).")
    if res.load_seconds >= 0.1:
        rows.append(f"\nFirst comparison: loading the second transformer took {res.load_seconds:.1f} s.")
    return "\n".join(rows)


def sheet_table_text(results) -> str:
    """One row per prompt: the prompt ellipsised at a word (whole on hover), the metrics as the table writes them."""
    rows = ["| prompt | LPIPS | PSNR | SSIM | mean abs diff (/ 255) |", "|---|---|---|---|---|"]
    for res in results:
        m, prompt = res.metrics, res.fp8.request.prompt
        cell = f'<span title="{cell_text(prompt)}">{cell_text(shorten(prompt, lambda t: len(t) <= 60))}</span>'
        rows.append(f"| {cell} | {lpips_text(m)} | {psnr_text(m.psnr_db)} | {ssim_text(m.ssim)} | "
                    f"{diff_text(m.mean_abs_diff)} |")
    if results:
        rows.append(f"\nseed {results[0].fp8.request.seed} for every row")
    return "\n".join(rows)
