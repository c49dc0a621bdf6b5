"""The Gradio Blocks app: Generate and Compare tabs. Layout and wiring only; every handler is a short adapter from
widget values to a DemoService call, and nothing here imports torch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import config
from ..errors import Cancelled
from ..request import GenerationRequest, GenerationResult
from .events import GPU, LIGHT, friendly, session_id
from .service import DemoService, parse_size, thumbnail_path

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES = [
    "a lighthouse on a cliff at dusk, oil painting, warm light",
    "an astronaut riding a horse on the moon, cinematic, highly detailed",
    "a cozy cabin in a snowy forest at night, glowing windows, northern lights",
    "a red fox in an autumn forest, golden leaves, wildlife photography",
    "isometric illustration of a tiny island with a castle and a waterfall",
]
HISTORY_LIMIT = 24


@dataclass(frozen=True)
class Defaults:
    """The widgets' initial values, from the model preset: also the API's defaults for every optional argument."""

    steps: int
    guidance: float
    aspect: str
    aspects: tuple[str, ...]

    @classmethod
    def of(cls, preset: config.Preset) -> Defaults:
        sizes = config.aspect_sizes(preset)
        return cls(preset.steps, preset.guidance, config.default_aspect(preset), tuple(sizes))


def _request(prompt, negative, seed, randomize, steps, guidance, aspect) -> GenerationRequest:
    width, height = parse_size(aspect)
    if randomize or seed is None or (isinstance(seed, float) and math.isnan(seed)):
        seed_value = None
    elif isinstance(seed, float) and not seed.is_integer():
        seed_value = seed  # validate() explains that a seed is a whole number
    else:
        seed_value = int(seed)
    return GenerationRequest(
        prompt=prompt or "",
        negative_prompt=negative or "",
        seed=seed_value,
        steps=int(steps) if steps is not None else None,
        guidance=float(guidance) if guidance is not None else None,
        width=width,
        height=height,
    )


def result_line(r: GenerationResult) -> str:
    t = r.timings
    mem = f"{r.peak_memory_bytes / 2**30:.2f} GiB ({r.peak_memory_kind})"
    return (
        f"**{t.total:.2f} s** · text {t.text_encoding * 1000:.0f} ms"
        f"{' (cached)' if r.embeddings_cached else ''} · denoising {t.denoising:.2f} s "
        f"({r.request.steps} steps) · VAE {t.vae_decode:.2f} s · peak {mem} · {r.precision} · {r.model} · "
        f"seed {r.request.seed}"
    )


def download_link(name: str) -> str:
    """A link to /take/<name> (relative, so it works under a proxy prefix such as a Space's)."""
    return f'<a class="download" href="take/{name}" download="{name}">Download PNG (with parameters)</a>'


def status_banner(status: dict) -> str:
    if status["state"] == "failed":
        return f"**The model could not be started.** {status['error']}"
    if not status["ready"]:
        return f"**Warming up** ({status['state']}): loading the model and making a first image…"
    text = f"Ready: **{status['model']}** · {status['precision']} · {status['device']}"
    if status.get("random_weights"):
        text += "  \n⚠️ This model has random weights: its images are noise. " + (status.get("notice") or "")
    return text


def build_ui(service: DemoService) -> gr.Blocks:
    defaults = Defaults.of(service.preset)
    with gr.Blocks(title="fp8demo: SD3.5 in FP8", fill_width=False) as demo:
        gr.Markdown("# fp8demo · Stable Diffusion 3.5 with an FP8 transformer", elem_id="title")
        status = gr.Markdown(status_banner(service.status()), elem_id="status")
        timer = gr.Timer(1.0, active=not service.ready)

        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                g = _generate_tab(service, defaults)
            with gr.Tab("Compare FP16/BF16 vs FP8", id="compare"):
                c = _compare_tab(service, defaults)

        def refresh():
            s = service.status()
            ready = s["ready"]
            return (status_banner(s), gr.Timer(active=not ready and s["state"] != "failed"),
                    gr.Button(interactive=ready), gr.Button(interactive=ready))

        timer.tick(refresh, None, [status, timer, g["run"], c["run"]], **LIGHT)
        demo.load(refresh, None, [status, timer, g["run"], c["run"]], **LIGHT)
    return demo


def _generate_tab(service: DemoService, d: Defaults) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", placeholder="Describe the picture, then press Enter", lines=2,
                                max_lines=6, autofocus=True, elem_id="prompt")
            tokens = gr.Markdown("", elem_id="token-count")
            with gr.Row():
                run = gr.Button("Run", variant="primary", interactive=service.ready, elem_id="run", scale=3)
                stop = gr.Button("Stop", variant="secondary", elem_id="stop", scale=1)
            with gr.Accordion("Advanced", open=False):
                negative = gr.Textbox(label="Negative prompt", placeholder="what to avoid", lines=1)
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=config.MAX_SEED)
                    randomize = gr.Checkbox(label="Randomize seed", value=True)
                with gr.Row():
                    steps = gr.Slider(config.MIN_STEPS, min(50, config.MAX_STEPS), value=d.steps, step=1,
                                      label="Steps")
                    guidance = gr.Slider(config.MIN_GUIDANCE, 10.0, value=d.guidance, step=0.1,
                                         label="Guidance (CFG; 0 for Turbo)")
                aspect = gr.Dropdown(list(d.aspects), value=d.aspect, label="Aspect ratio", allow_custom_value=True,
                                     info="or type WIDTHxHEIGHT, multiples of 16")
            gr.Examples(EXAMPLES, inputs=[prompt], label="Examples")
        with gr.Column(scale=3):
            # JPEG for display: ~10 ms to encode a megapixel against ~230 ms for WebP and ~290 ms for PNG on a
            # small CPU; the lossless PNG with its parameters is the download.
            image = gr.Image(label="Image", type="pil", format="jpeg", interactive=False, elem_id="image",
                             buttons=["fullscreen"])
            info = gr.Markdown("", label="Timings", elem_id="result-info")
            download = gr.HTML("", elem_id="download")
    gallery = gr.Gallery(label="This session (click to reuse the settings)", columns=8, height=170,
                         allow_preview=False, object_fit="cover", elem_id="gallery")
    history = gr.State([])

    def generate(prompt: str, negative_prompt: str | None = None, seed: float = 0, randomize_seed: bool = True,
                 steps: float = d.steps, guidance: float = d.guidance, aspect_ratio: str = d.aspect,
                 history_: list | None = None, request: gr.Request = None, progress=gr.Progress()):
        def on_step(i, n):
            progress((i, n), desc=f"Denoising, step {i}/{n}", unit="steps")

        try:
            req = _request(prompt, negative_prompt, seed, randomize_seed, steps, guidance, aspect_ratio)
            result = service.generate(req, session_id(request), on_step)
        except Cancelled:
            gr.Info("Stopped.")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        except Exception as error:
            raise friendly(error) from error
        for warning in result.warnings:
            gr.Warning(warning)
        png = service.save_png(result, thumbnail=True)
        r = result.request
        entry = {"thumb": str(thumbnail_path(png)), "prompt": r.prompt, "negative": r.negative_prompt,
                 "seed": r.seed, "steps": r.steps, "guidance": r.guidance, "size": f"{r.width}x{r.height}"}
        new_history = ([entry] + list(history_ or []))[:HISTORY_LIMIT]
        return result.image, r.seed, result_line(result), download_link(png.name), new_history

    inputs = [prompt, negative, seed, randomize, steps, guidance, aspect, history]
    outputs = [image, seed, info, download, history]
    event = gr.on([run.click, prompt.submit], generate, inputs, outputs, api_name="generate", **GPU)
    def show_gallery(history_: list):
        items = [(e["thumb"], e["prompt"][:60]) for e in history_]
        return [(t, c) for t, c in items if service.wait_for_file(Path(t), timeout=5.0)]

    event.then(show_gallery, history, gallery, **LIGHT)
    def stop_job(request: gr.Request):
        service.cancel(session_id(request))

    stop.click(stop_job, None, None, **LIGHT)
    prompt.change(service.token_status, prompt, tokens, trigger_mode="always_last", **LIGHT)

    def reuse(history_: list, evt: gr.SelectData):
        e = history_[evt.index]
        size = e["size"]
        label = next((a for a in d.aspects if a.endswith(size)), size)
        return e["prompt"], e["negative"], e["seed"], False, e["steps"], e["guidance"], label

    gallery.select(reuse, history, [prompt, negative, seed, randomize, steps, guidance, aspect], **LIGHT)
    return {"run": run}


def _compare_tab(service: DemoService, d: Defaults) -> dict:
    gr.Markdown(
        "One prompt and one seed through the 16-bit transformer and the FP8 transformer, sharing the text encoders "
        "and the VAE. Times are the engine's own; moving a transformer that waits on the CPU is reported apart."
    )
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, elem_id="compare-prompt",
                                value="a lighthouse on a cliff at dusk, oil painting")
            with gr.Row():
                seed = gr.Number(label="Seed", value=42, precision=0, minimum=0, maximum=config.MAX_SEED)
                baseline = gr.Radio(["bf16", "fp16"], value="bf16", label="16-bit baseline")
            with gr.Accordion("Settings", open=False):
                steps = gr.Slider(config.MIN_STEPS, min(50, config.MAX_STEPS), value=d.steps, step=1, label="Steps")
                guidance = gr.Slider(config.MIN_GUIDANCE, 10.0, value=d.guidance, step=0.1, label="Guidance")
                aspect = gr.Dropdown(list(d.aspects), value=d.aspect, label="Aspect ratio", allow_custom_value=True)
            run = gr.Button("Compare", variant="primary", interactive=service.ready, elem_id="compare-run")
        with gr.Column(scale=3):
            slider = gr.ImageSlider(label="16-bit ◀ ▶ FP8 (drag)", type="pil", elem_id="slider")
    with gr.Row():
        left = gr.Image(label="16-bit", type="pil", format="webp", interactive=False, elem_id="compare-base")
        right = gr.Image(label="FP8", type="pil", format="webp", interactive=False, elem_id="compare-fp8")
        heat = gr.Image(label="Difference |16-bit − FP8|", type="pil", format="webp", interactive=False)
    table = gr.Markdown("", label="Metrics", elem_id="compare-table")
    details = gr.JSON(label="Details", visible=False)

    def compare(prompt: str, seed: float = 42, baseline: str = "bf16", steps: float = d.steps,
                guidance: float = d.guidance, aspect_ratio: str = d.aspect, request: gr.Request = None,
                progress=gr.Progress()):
        def on_step(i, n):
            progress((i, n), desc=f"step {i}/{n} ({'16-bit' if i <= n // 2 else 'FP8'})", unit="steps")

        try:
            req = _request(prompt, "", seed, False, steps, guidance, aspect_ratio)
            res = service.compare(req, baseline, session_id(request), on_step)
        except Cancelled:
            return (gr.skip(),) * 6
        except Exception as error:
            raise friendly(error) from error
        b, f = res.baseline, res.fp8
        return (
            (b.image, f.image),
            gr.Image(value=b.image, label=f"16-bit: {b.precision}"),
            gr.Image(value=f.image, label=f"FP8: {f.precision}"),
            res.heatmap,
            compare_table(res),
            res.summary(),
        )

    run.click(compare, [prompt, seed, baseline, steps, guidance, aspect],
              [slider, left, right, heat, table, details], api_name="compare", **GPU)
    return {"run": run}


def compare_table(res) -> str:
    b, f, m = res.baseline, res.fp8, res.metrics

    def mem(r):
        return f"{r.peak_memory_bytes / 2**30:.2f} GiB"

    psnr = "∞ (identical)" if math.isinf(m.psnr_db) else f"{m.psnr_db:.2f} dB"
    speed = b.timings.denoising / f.timings.denoising if f.timings.denoising > 0 else float("nan")
    rows = [
        "| | 16-bit | FP8 |",
        "|---|---|---|",
        f"| precision (storage / compute) | {b.precision} | {f.precision} |",
        f"| denoising | {b.timings.denoising:.3f} s | {f.timings.denoising:.3f} s ({speed:.2f}x) |",
        f"| total | {b.timings.total:.3f} s | {f.timings.total:.3f} s |",
        f"| peak memory ({b.peak_memory_kind}) | {mem(b)} | {mem(f)} |",
        "",
        f"**PSNR** {psnr} · **SSIM** {m.ssim:.4f} · **mean |Δ|** {m.mean_abs_diff:.2f} / 255 · "
        f"**max |Δ|** {m.max_abs_diff} · seed {f.request.seed}",
    ]
    if res.swap_seconds:
        rows.append(f"\nThe 16-bit transformer waits on the CPU: moving it in and out took {res.swap_seconds:.2f} s "
                    "(not counted above).")
    if res.load_seconds >= 0.1:
        rows.append(f"\nFirst comparison: loading the second transformer took {res.load_seconds:.1f} s.")
    return "\n".join(rows)
