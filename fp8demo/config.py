"""Settings, presets and limits: the one place defaults live and the only module that reads the environment."""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

# Image sides are multiples of 16: the VAE downsamples by 8 and the transformer patches 2x2 latents.
SIZE_MULTIPLE = 16
MIN_SIDE = 256
# SD3.5 is trained around one megapixel; 1536 px (96 patches a side) covers every aspect preset. The positional
# table is cropped to this (precision.crop_positional_table), so a larger limit costs transformer memory.
MAX_SIDE = 1536
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
MAX_SEED = 2**32 - 1
# Above this side the VAE decodes in tiles, bounding its activation memory.
VAE_TILING_ABOVE = 1024
CLIP_MAX_TOKENS = 77
T5_MAX_TOKENS = 256
# Longest prompt (and negative prompt) the web faces accept: T5 reads ~256 tokens (~1,000 characters), so this is
# generous for people and refuses megabyte payloads before they reach a tokenizer, the log or the GPU slot.
MAX_PROMPT_CHARS = 2000

PRECISIONS = ("fp8", "bf16", "fp16")
# How FP8 block Linears multiply: native FP8 matmuls (torch._scaled_mm), or FP8 weights computed in 16-bit.
FP8_MATMUL_MODES = ("auto", "native", "weight-only")
T5_MODES = ("auto", "bf16", "fp8", "off")
MODULATION_MODES = ("fp8", "bf16")
OFFLOAD_MODES = ("auto", "none", "model", "sequential")
ATTENTION_BACKENDS = ("sdpa", "xformers", "fp8")
# Step caches (recipes.parse_cache reads them): what --cache takes
CACHE_HELP = ("none | first-block:<threshold> (skip the other blocks while the first block's output changes less "
              "than this, relative) | taylorseer:<interval>[:<warm-up steps>] (a full step every <interval> steps, "
              "Taylor-predicted in between) | mag:<threshold> (MagCache: needs magnitude ratios calibrated for the "
              "model, refused for SD3.5)")


@dataclass(frozen=True)
class Preset:
    """Official sampling defaults for one model family, as the model cards give them."""

    name: str
    repo_id: str | None
    steps: int
    guidance: float
    width: int = 1024
    height: int = 1024
    licence_url: str | None = None
    note: str = ""


_LICENCE = "https://huggingface.co/{repo}"

PRESETS: dict[str, Preset] = {
    "large-turbo": Preset(
        "large-turbo",
        "stabilityai/stable-diffusion-3.5-large-turbo",
        steps=4,
        guidance=0.0,
        licence_url=_LICENCE.format(repo="stabilityai/stable-diffusion-3.5-large-turbo"),
        note="8.1B MMDiT distilled for 4 steps without CFG: the sub-2.5 s path",
    ),
    "large": Preset(
        "large",
        "stabilityai/stable-diffusion-3.5-large",
        steps=40,
        guidance=4.5,
        licence_url=_LICENCE.format(repo="stabilityai/stable-diffusion-3.5-large"),
        note="8.1B MMDiT, quality mode (28 steps at guidance 3.5 is a common faster setting)",
    ),
    "medium": Preset(
        "medium",
        "stabilityai/stable-diffusion-3.5-medium",
        steps=40,
        guidance=4.5,
        licence_url=_LICENCE.format(repo="stabilityai/stable-diffusion-3.5-medium"),
        note="2.5B MMDiT-X, fits small GPUs",
    ),
    # Random weights: its images are noise. It exists so that everything runs offline on a CPU.
    "tiny": Preset("tiny", None, steps=4, guidance=0.0, width=512, height=512, note="offline test model: noise"),
}

REPO_TO_PRESET = {p.repo_id: p for p in PRESETS.values() if p.repo_id}

# Aspect ratios offered in the UI; each is sized to about the preset's own pixel count (one megapixel for SD3.5).
ASPECT_RATIOS = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16), (21, 9), (9, 21))


def aspect_sizes(preset: Preset) -> dict[str, tuple[int, int]]:
    """{"16:9 · 1344x768": (1344, 768), ...}: sides in multiples of 64 near the preset's area, within the limits."""
    area = preset.width * preset.height
    sizes = {}
    for w, h in ASPECT_RATIOS:
        unit = (area / (w * h)) ** 0.5
        width = min(MAX_SIDE, max(MIN_SIDE, round(w * unit / 64) * 64))
        height = min(MAX_SIDE, max(MIN_SIDE, round(h * unit / 64) * 64))
        sizes[f"{w}:{h} · {width}x{height}"] = (width, height)
    return sizes


def default_aspect(preset: Preset) -> str:
    for label, size in aspect_sizes(preset).items():
        if size == (preset.width, preset.height):
            return label
    return next(iter(aspect_sizes(preset)))


def preset_for_repo(repo_id: str) -> Preset | None:
    """The preset of an official repo id, also for a local folder whose name ends like one."""
    if repo_id in REPO_TO_PRESET:
        return REPO_TO_PRESET[repo_id]
    tail = repo_id.rstrip("/").rsplit("/", 1)[-1]
    for preset in PRESETS.values():
        if preset.repo_id and preset.repo_id.rsplit("/", 1)[-1] == tail:
            return preset
    return None


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the pipeline is loaded and run. CLI and app flags default to these values."""

    model: str = "auto"
    precision: str = "fp8"
    fp8_matmul: str = "auto"  # auto: native on compute capability >= 8.9, weight-only elsewhere
    t5: str = "auto"
    modulation: str = "fp8"
    offload: str = "auto"
    attention: str = "sdpa"
    cache: str = "none"  # a step cache (recipes.parse_cache), or "preset": the preset's recommended one
    compile: bool | None = None  # None: on where it pays off (native FP8 on CUDA), off elsewhere
    # Where a single-file checkpoint's missing parts (tokenizers, scheduler, VAE...) come from; None: the
    # official repo of the file's model family.
    base: str | None = None
    warmup_runs: int = 1
    embedding_cache_size: int = 64
    # Largest image side served; the positional table is cropped to cover exactly this (precision.py).
    max_side: int = MAX_SIDE
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    hf_token: str | None = field(default_factory=lambda: env_str("HF_TOKEN"), repr=False)


# The files the app needs at run time (stylesheets, the kiosk's prompts, word lists and attract pictures): package
# data, found here and only here, so that a checkout and `pip install .` serve the same files.
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# open_nsfw's score at or above which a picture is withheld (Yahoo's guide: below 0.2 safe, above 0.8 not). None of
# 285 ordinary pictures reaches it; the highest score among them is 0.48 and 2 are above 0.4, so a lower threshold
# costs false refusals (docs/kiosk.md, python -m benchmarks.image_safety).
IMAGE_SAFETY_THRESHOLD = 0.5
KIOSK_SCREEN = ("127.0.0.1", "::1")  # the kiosk's clients by default: a browser on the server machine itself
KIOSK_NEGATIVE = "nsfw, nudity, gore, blood, violence, weapon, text, watermark, lowres, deformed"


@dataclass(frozen=True)
class KioskConfig:
    """Kiosk behaviour. Timings in seconds; env vars FP8DEMO_KIOSK_<NAME> override them (tests use short ones)."""

    idle_after: float = field(default_factory=lambda: env_float("FP8DEMO_KIOSK_IDLE", 60.0))
    countdown: float = field(default_factory=lambda: env_float("FP8DEMO_KIOSK_COUNTDOWN", 15.0))
    attract_every: float = field(default_factory=lambda: env_float("FP8DEMO_KIOSK_ATTRACT_EVERY", 6.0))
    cooldown: float = field(default_factory=lambda: env_float("FP8DEMO_KIOSK_COOLDOWN", 10.0))
    # the kiosk preset: None means the model preset's value
    steps: int | None = field(default_factory=lambda: env_int("FP8DEMO_KIOSK_STEPS"))
    width: int | None = field(default_factory=lambda: env_int("FP8DEMO_KIOSK_WIDTH"))
    height: int | None = field(default_factory=lambda: env_int("FP8DEMO_KIOSK_HEIGHT"))
    negative_prompt: str = KIOSK_NEGATIVE
    max_prompt_chars: int = 300
    recent_creations: int = 12
    blocklist: Path = ASSETS_DIR / "kiosk" / "blocklist.txt"
    prompts: Path = ASSETS_DIR / "kiosk" / "prompts.txt"
    attract_dir: Path = ASSETS_DIR / "kiosk" / "attract"
    public_url: str | None = field(default_factory=lambda: env_str("FP8DEMO_PUBLIC_URL"))
    # the prompt under each recent creation in the attract loop: off unless the operator turns it on ("1")
    attract_captions: bool = field(default_factory=lambda: env_str("FP8DEMO_KIOSK_ATTRACT_CAPTIONS") == "1")
    # Who may use the page and its events: the whole list, addresses or networks, comma- or space-separated; by
    # default the screen's own browser on this machine. Any other client, another loopback address such as
    # 127.0.0.7 included, gets 403 except on /take/<file> (phones) and /health/*.
    clients: tuple[str, ...] = field(default_factory=lambda: env_list("FP8DEMO_KIOSK_CLIENTS") or KIOSK_SCREEN)
    # take-home PNGs expire after this many seconds (the QR code's link then says the picture is gone)
    take_ttl: float = field(default_factory=lambda: env_float("FP8DEMO_TAKE_TTL", 3600.0))
    keep_pngs: int = 200  # at most this many take-home PNGs on disk, however short the TTL
    # How visitors ask for a picture (FP8DEMO_KIOSK_INPUT): "free" (typed text, moderated), "compose" (tiles only:
    # the server builds every prompt from the operator's tiles, and refuses free text) or "both"
    input_mode: str = field(default_factory=lambda: env_str("FP8DEMO_KIOSK_INPUT", "free").strip().lower())
    # the composer's tiles: [subject], [setting], [mood] and [style] headings, one tile per line
    tiles: Path = field(default_factory=lambda: Path(env_str("FP8DEMO_KIOSK_TILES",
                                                             str(ASSETS_DIR / "kiosk" / "tiles.txt"))))
    # the on-screen keyboard for touch-only screens: on unless FP8DEMO_KIOSK_KEYBOARD=off (a physical keyboard
    # always works too); its layout: en (QWERTY), de (QWERTZ) or fr (AZERTY)
    keyboard: bool = field(default_factory=lambda: env_switch("FP8DEMO_KIOSK_KEYBOARD", True))
    keyboard_layout: str = field(default_factory=lambda: env_str("FP8DEMO_KIOSK_KEYBOARD_LAYOUT", "en"))
    # what the exhibit says it is: a title and one line, on the attract screen and beside the controls
    title: str = field(default_factory=lambda: env_str("FP8DEMO_KIOSK_TITLE", "Paint with words"))
    subtitle: str = field(default_factory=lambda: env_str(
        "FP8DEMO_KIOSK_SUBTITLE", "Describe a picture and an AI model paints it in seconds, right here."))


@dataclass(frozen=True)
class AppConfig:
    """Web-server settings on top of the engine's."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    face: str = "generate"  # the page served: "generate" (the Generate and Compare tabs) or "kiosk" (KioskConfig)
    # one warm engine per device: "cuda:0,cuda:1", "all" (every visible GPU), "cpu,cpu"; None: the one best device
    devices: str | None = None
    # GET /metrics outside the login (a Prometheus scraper that cannot sign in): FP8DEMO_METRICS_PUBLIC=1
    metrics_public: bool = field(default_factory=lambda: env_str("FP8DEMO_METRICS_PUBLIC") == "1")
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: str | None = None  # "user:password", read from FP8DEMO_AUTH when --auth is given
    max_queue: int = 16
    # where every picture is saved as a PNG with its parameters (--outputs, FP8DEMO_OUTPUTS)
    outputs: Path = field(default_factory=lambda: Path(env_str("FP8DEMO_OUTPUTS", "outputs")))
    limits: Limits = field(default_factory=lambda: Limits())
    storage: StorageConfig = field(default_factory=lambda: StorageConfig())
    # Reverse proxies whose X-Forwarded-For names the client (addresses or networks; FP8DEMO_TRUSTED_PROXIES). None
    # by default: the client is the address that connected, whatever headers it sends.
    trusted_proxies: tuple[str, ...] = field(default_factory=lambda: env_list("FP8DEMO_TRUSTED_PROXIES"))
    # The image classifier's check of every picture (--image-safety, --no-image-safety); None: the face's own choice
    # (on for the kiosk, off for the Generate page). A picture scoring at or above the threshold is withheld.
    image_safety: bool | None = None
    image_safety_threshold: float = field(default_factory=lambda: env_float(
        "FP8DEMO_IMAGE_SAFETY_THRESHOLD", IMAGE_SAFETY_THRESHOLD, "a number from 0 to 1"))


@dataclass(frozen=True)
class Limits:
    """What one client may ask of a public server: every bound has a message, none a silent cut."""

    max_prompt_chars: int = field(default_factory=lambda: env_int("FP8DEMO_MAX_PROMPT_CHARS", MAX_PROMPT_CHARS))
    # queued + running jobs of one client address (the address: a client cannot mint new ones as it can session ids)
    jobs_per_client: int = field(default_factory=lambda: env_int("FP8DEMO_MAX_JOBS_PER_CLIENT", 2))
    # Gradio keeps ~113 KiB of state per browser session (measured: docs/reliability.md); the oldest are dropped
    # past this many, so that one client minting session hashes stays under ~100 MiB
    session_capacity: int = field(default_factory=lambda: env_int("FP8DEMO_SESSION_CAPACITY", 800))
    # JSON bodies of events are a few KiB; anything larger is refused before it is parsed (uploads: max_upload)
    max_body_bytes: int = 256 * 1024
    max_upload: str = "20mb"  # a PNG dropped on "Load settings from a PNG"


@dataclass(frozen=True)
class StorageConfig:
    """How much the server keeps on disk. The kiosk's own PNGs follow KioskConfig.take_ttl and keep_pngs instead.

    Defaults, for a week of exhibition: 200 take-home PNGs (~1.5 MiB at 1024 px) + 500 cached display files
    (~0.2 MiB) + 12 attract thumbnails stay well under 2 GiB (docs/reliability.md).
    """

    # the web app's outputs folder: the newest N PNGs, none older than the age (FP8DEMO_KEEP_PNGS, FP8DEMO_KEEP_DAYS)
    keep_pngs: int = field(default_factory=lambda: env_int("FP8DEMO_KEEP_PNGS", 1000))
    keep_days: float = field(default_factory=lambda: env_float("FP8DEMO_KEEP_DAYS", 30.0))
    # Gradio's cache of displayed images and uploads, across restarts. Pruned only when it is this folder, which
    # app.py gives Gradio (use_gradio_cache): the system-wide /tmp/gradio may hold other apps' files.
    gradio_cache: Path = field(default_factory=lambda: default_gradio_cache())
    cache_files: int = field(default_factory=lambda: env_int("FP8DEMO_CACHE_FILES", 500))
    cache_hours: float = field(default_factory=lambda: env_float("FP8DEMO_CACHE_HOURS", 24.0))
    prune_every: float = field(default_factory=lambda: env_float("FP8DEMO_PRUNE_EVERY", 300.0))


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_float(name: str, default: float, what: str = "a number of seconds") -> float:
    value = env_str(name)
    try:
        return default if value is None else float(value)
    except ValueError as error:
        raise ValueError(f"{name} must be {what}, got {value!r}") from error


def env_int(name: str, default: int | None = None) -> int | None:
    value = env_str(name)
    try:
        return default if value is None else int(value)
    except ValueError as error:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from error


def env_switch(name: str, default: bool) -> bool:
    """on/off (also 1/0, true/false, yes/no)."""
    value = env_str(name)
    if value is None:
        return default
    if value.strip().lower() in ("on", "1", "true", "yes"):
        return True
    if value.strip().lower() in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, got {value!r}")


def env_list(name: str) -> tuple[str, ...]:
    """Comma- or space-separated values ("10.0.0.5, 10.0.0.6")."""
    return tuple(v for v in re.split(r"[\s,]+", env_str(name) or "") if v)


def default_cache_dir() -> Path:
    explicit = env_str("FP8DEMO_CACHE")
    if explicit is not None:
        return Path(explicit)
    base = env_str("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fp8demo"


def default_gradio_cache() -> Path:
    explicit = env_str("GRADIO_TEMP_DIR")
    return Path(explicit) if explicit is not None else default_cache_dir() / "gradio"


def use_gradio_cache(folder: Path) -> None:
    """Point Gradio's cache (displayed images, uploads) at `folder`. Gradio reads GRADIO_TEMP_DIR as each component
    is built: call this before building the UI."""
    os.environ["GRADIO_TEMP_DIR"] = str(folder)


def trust_forwarded_from(proxies: tuple[str, ...]) -> None:
    """Tell uvicorn whose X-Forwarded-For to believe. Gradio builds uvicorn's Config without forwarded_allow_ips, so
    uvicorn reads FORWARDED_ALLOW_IPS as each server starts, and without it trusts 127.0.0.1 and ::1: any local
    process could then name any client. Set before every launch ("" trusts no one)."""
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(proxies)


def auth_from_env() -> str | None:
    return env_str("FP8DEMO_AUTH")


def field_default(cls, name: str):
    """The declared default of a dataclass field, so that argparse never restates it."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------------
# Command-line flags shared by `python -m fp8demo` and app.py; their defaults are the dataclasses' defaults.


ENGINE_FLAGS = ("model", "precision", "fp8_matmul", "t5", "modulation", "offload", "attention", "cache", "compile",
                "base", "max_side")


def add_engine_arguments(parser, names: tuple[str, ...] = ENGINE_FLAGS) -> None:
    """The engine flags `names` (default: all), each with its default from EngineConfig. A command that only uses
    some of them (plan, quantize, bench) takes those and no others."""
    d = EngineConfig
    g = parser.add_argument_group("model and precision")
    if "model" in names:
        g.add_argument("--model", default=field_default(d, "model"),
                       help="auto | tiny | random:<large|large-turbo|medium>[:blocks] | Hub repo id | local folder | "
                            ".safetensors file (default: %(default)s; auto: SD3.5 Large Turbo on a CUDA GPU, "
                            "else tiny)")
    if "precision" in names:
        g.add_argument("--precision", choices=PRECISIONS, default=field_default(d, "precision"),
                       help="transformer precision (default: %(default)s)")
    if "fp8_matmul" in names:
        g.add_argument("--fp8-matmul", dest="fp8_matmul", choices=FP8_MATMUL_MODES,
                       default=field_default(d, "fp8_matmul"),
                       help="FP8 block matmuls: native (torch._scaled_mm, FP8 activations too; on a CPU a slow test "
                            "path), weight-only (FP8 weights, 16-bit compute); auto = native on compute capability "
                            ">= 8.9 (default: %(default)s)")
    if "t5" in names:
        g.add_argument("--t5", choices=T5_MODES, default=field_default(d, "t5"),
                       help="T5-XXL: auto = FP8 weights with --precision fp8, else bf16; off leaves it out "
                            "(default: %(default)s)")
    if "modulation" in names:
        g.add_argument("--modulation", choices=MODULATION_MODES, default=field_default(d, "modulation"),
                       help="AdaLN modulation Linears under fp8: FP8 weights or kept bf16 (default: %(default)s)")
    if "offload" in names:
        g.add_argument("--offload", choices=OFFLOAD_MODES, default=field_default(d, "offload"),
                       help="CPU offload; auto keeps everything on the GPU when it fits (default: %(default)s)")
    if "attention" in names:
        g.add_argument("--attention", choices=ATTENTION_BACKENDS, default=field_default(d, "attention"),
                       help="attention kernels: PyTorch SDPA, xformers if installed, or fp8 (FP8 attention through "
                            "torchao's FA3 kernels: Hopper GPUs with flash-attn 3) (default: %(default)s)")
    if "cache" in names:
        g.add_argument("--cache", default=field_default(d, "cache"),
                       help=f"step cache: preset (the model preset's recommended one) | {CACHE_HELP} "
                            "(default: %(default)s)")
    if "compile" in names:
        g.add_argument("--compile", dest="compile", action="store_true", default=field_default(d, "compile"),
                       help="torch.compile the transformer blocks (default: on for native FP8 on CUDA)")
        g.add_argument("--no-compile", dest="compile", action="store_false")
    if "base" in names:
        g.add_argument("--base", default=field_default(d, "base"),
                       help="for a single .safetensors checkpoint: the diffusers folder or repo id that supplies "
                            "tokenizers, scheduler, VAE and any text encoder the file lacks (default: the official "
                            "repo)")
    if "max_side" in names:
        g.add_argument("--max-side", dest="max_side", type=int, default=field_default(d, "max_side"),
                       help="largest image side served, in px; the positional table is cropped to it "
                            "(default: %(default)s)")


def engine_config_from_args(args, **overrides) -> EngineConfig:
    """An EngineConfig from the engine flags a parser took (the others keep their defaults) and `overrides`."""
    values = {k: getattr(args, k) for k in ENGINE_FLAGS if hasattr(args, k)}
    values.update(overrides)
    return EngineConfig(**values)
