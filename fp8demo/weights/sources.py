"""Where the weights come from: a Hub repo id, a local diffusers folder, the offline `tiny` model or `random:<arch>`.

Everything that has files goes through one loading path, `StableDiffusion3Pipeline.from_pretrained`; `tiny` is
built once, saved as a real diffusers folder and loaded back through that same path.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from .. import config
from ..errors import ModelAccessError, UserError
from ..hardware import Capabilities
from ..policy import COMPONENTS
from ..runplan import RunPlan
from . import comfy, fp8_format, quantize, random_models, streaming

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TINY_NOTICE = (
    "No CUDA GPU found: using the offline 'tiny' model, whose random weights make noise images. For real pictures "
    "run on a GPU with --model stabilityai/stable-diffusion-3.5-large-turbo (gated: accept the licence on its Hub "
    "page and set HF_TOKEN), or pass a local folder with the weights."
)
CUSTOM_PRESET = config.Preset("custom", None, steps=28, guidance=4.5, note="settings for an unrecognised SD3 folder")


class SourceKind(str, Enum):
    REPO = "repo"  # a Hub repo id
    FOLDER = "folder"  # a local diffusers folder
    FP8_FOLDER = "fp8-folder"  # a folder written by `quantize` (its manifest checked before loading)
    SINGLE_FILE = "single-file"  # a ComfyUI .safetensors file
    TINY = "tiny"  # the offline test model, built once into the cache
    RANDOM = "random"  # a real architecture with random weights, built in memory


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    name: str  # canonical name: repo id, folder path, "tiny", "random:medium:2"
    preset: config.Preset
    location: str | None = None  # what from_pretrained gets
    arch: str | None = None
    num_layers: int | None = None
    notice: str | None = None

    random: bool = False  # random weights (tiny, random:*, or a checkpoint quantized from one): noise images

    @property
    def random_weights(self) -> bool:
        return self.random or self.kind in (SourceKind.TINY, SourceKind.RANDOM)


def model_choices() -> list[str]:
    return ["auto", "tiny", *(f"random:{a}[:blocks]" for a in random_models.ARCHITECTURES), *config.REPO_TO_PRESET]


def resolve_model(name: str, caps: Capabilities) -> ModelSource:
    """Turn what the user typed into a ModelSource, or raise a UserError that lists what is accepted."""
    name = (name or "").strip()
    if not name:
        raise UserError(f"No model given. Use one of: {', '.join(model_choices())}, a Hub repo id or a folder.")
    if name == "auto":
        if caps.device == "cuda":
            return resolve_model(config.PRESETS["large-turbo"].repo_id, caps)
        return ModelSource(SourceKind.TINY, "tiny", config.PRESETS["tiny"], notice=TINY_NOTICE)
    if name == "tiny":
        return ModelSource(SourceKind.TINY, "tiny", config.PRESETS["tiny"])
    if name in config.PRESETS and config.PRESETS[name].repo_id:
        return resolve_model(config.PRESETS[name].repo_id, caps)
    if name.startswith("random:"):
        return _resolve_random(name)
    path = Path(name).expanduser()
    if path.is_dir() and fp8_format.is_quantized_folder(path):
        src = fp8_format.read_manifest(path, verify=False).get("source", {}).get("model") or ""
        random = src == "tiny" or src.startswith("random:")
        preset = _preset_of_source(src) or config.preset_for_repo(path.name) or CUSTOM_PRESET
        return ModelSource(SourceKind.FP8_FOLDER, str(path), preset, location=str(path), random=random)
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelAccessError(f"{path} is a folder but not a diffusers pipeline (no model_index.json in it).")
        preset = config.preset_for_repo(path.name) or CUSTOM_PRESET
        return ModelSource(SourceKind.FOLDER, str(path), preset, location=str(path))
    if name.endswith(".safetensors"):
        if not path.is_file():
            raise ModelAccessError(f"No such file: {name}")
        preset = config.PRESETS.get(comfy.preset_name(path) or "", CUSTOM_PRESET)
        return ModelSource(SourceKind.SINGLE_FILE, str(path), preset, location=str(path))
    if _REPO_ID.match(name) and not path.exists():
        preset = config.preset_for_repo(name) or CUSTOM_PRESET
        return ModelSource(SourceKind.REPO, name, preset, location=name)
    raise UserError(f"Unknown model {name!r}. Use one of: {', '.join(model_choices())}, a Hub repo id or a folder.")


def _preset_of_source(name: str) -> config.Preset | None:
    if name == "tiny":
        return config.PRESETS["tiny"]
    if name.startswith("random:"):
        return _resolve_random(name).preset
    return config.preset_for_repo(name) if name else None


def _resolve_random(name: str) -> ModelSource:
    parts = name.split(":")
    arch = parts[1] if len(parts) > 1 else ""
    if arch not in random_models.ARCHITECTURES or len(parts) > 3:
        raise UserError(
            f"Unknown model {name!r}: random architectures are {', '.join(random_models.ARCHITECTURES)}, "
            "optionally with a block count, e.g. random:medium:2."
        )
    layers = None
    if len(parts) == 3:
        full = random_models.ARCHITECTURES[arch].transformer["num_layers"]
        if not parts[2].isdigit() or not 1 <= int(parts[2]) <= full:
            raise UserError(f"{name!r}: the block count must be a whole number from 1 to {full}.")
        layers = int(parts[2])
    canonical = f"random:{arch}" + (f":{layers}" if layers else "")
    preset = config.PRESETS[random_models.ARCHITECTURES[arch].preset]
    return ModelSource(SourceKind.RANDOM, canonical, preset, arch=arch, num_layers=layers)


def torch_dtypes(plan: RunPlan) -> dict:
    """The plan's dtypes as torch dtypes, with the "default" entry diffusers' from_pretrained reads."""
    import torch

    return {"default": getattr(torch, plan.compute_dtype), **{c: getattr(torch, d) for c, d in plan.dtypes.items()}}


def _component_classes() -> dict:
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    return {"transformer": SD3Transformer2DModel, "text_encoder": CLIPTextModelWithProjection,
            "text_encoder_2": CLIPTextModelWithProjection, "text_encoder_3": T5EncoderModel, "vae": AutoencoderKL}


def load_pipeline(source: ModelSource, plan: RunPlan, cfg: config.EngineConfig, devices: dict[str, str] | None = None):
    """The pipeline with the plan's precision applied while it loads, each component on the device `devices` names
    (default "cpu"): FP8 layers are quantized as each arrives (16-bit sources) or loaded as stored (FP8 folders),
    so no component is ever whole in 16-bit, in RAM or on the device. The positional crop is left to the recipe
    (random builds crop as they build)."""
    devices = devices or {}
    dtypes = torch_dtypes(plan)
    if source.kind is SourceKind.RANDOM:
        build = random_models.BuildPrecision(plan, dtypes, cfg.max_side)
        pipe = random_models.build_random_pipeline(source.arch, source.num_layers, plan.t5 is not None, build)
        return _place(pipe, devices)
    if source.kind is SourceKind.SINGLE_FILE:
        base = cfg.base or source.preset.repo_id
        if base is None:
            raise UserError(f"{source.name}: say which model family it is with --base <folder or repo id> "
                            "(tokenizers, scheduler and VAE come from there).")
        with _explained(replace(source, location=base, name=base), cfg):
            return _place(comfy.load_pipeline(Path(source.location), base, plan, dtypes, cfg.hf_token), devices)
    if source.kind is SourceKind.FP8_FOLDER:
        fp8_format.read_manifest(Path(source.location))  # sizes and sha256 of every file, before anything loads
        return _from_pretrained(source.location, plan, dtypes, devices, {}, stored_fp8=True)
    location, kwargs = _location(source, cfg)
    with _explained(source, cfg):
        return _from_pretrained(location, plan, dtypes, devices, kwargs, stored_fp8=False)


def _location(source: ModelSource, cfg: config.EngineConfig) -> tuple[str, dict]:
    """What from_pretrained gets for a tiny, folder or repo source, and its keyword arguments."""
    if source.kind is SourceKind.TINY:
        return str(random_models.ensure_tiny(cfg.cache_dir)), {}
    return source.location, {"token": cfg.hf_token} if source.kind is SourceKind.REPO else {}


@contextlib.contextmanager
def _explained(source: ModelSource, cfg: config.EngineConfig):
    """Turn an access problem while loading into its message (explain_load_error); re-raise anything else."""
    try:
        yield
    except Exception as error:
        explained = explain_load_error(error, source, cfg.hf_token is not None)
        if explained is None:
            raise
        raise explained from error


def _from_pretrained(location: str, plan: RunPlan, dtypes: dict, devices: dict, kwargs: dict, stored_fp8: bool):
    """Each model component through its library's from_pretrained, straight onto its device; the tokenizers and
    the scheduler through the pipeline's. `stored_fp8`: an FP8 folder, whose files are checked first and whose
    FP8 weights are then made what this machine's plan wants (`quantize.retarget`)."""
    from diffusers import StableDiffusion3Pipeline

    components = {}
    for name in COMPONENTS:
        absent = stored_fp8 and not (Path(location) / name).is_dir()  # an FP8 folder written with --t5 off
        if name == "text_encoder_3" and (plan.t5 is None or absent):
            components.update(text_encoder_3=None, tokenizer_3=None)
        else:
            components[name] = _load_component(name, location, plan, dtypes[name], devices.get(name, "cpu"), kwargs,
                                               stored_fp8)
    return StableDiffusion3Pipeline.from_pretrained(location, **components, **kwargs)


def _place(pipe, devices: dict):
    """Move the components of a pipeline built in RAM (random, single file: FP8 already) to their devices."""
    import torch

    for name in COMPONENTS:
        module = getattr(pipe, name, None)
        device = devices.get(name, "cpu")
        if module is not None and device != "cpu":
            torch.nn.Module.to(module, device)
    return pipe


def explain_load_error(error: BaseException, source: ModelSource, has_token: bool) -> UserError | None:
    """A message for the access problems users meet (gated repo, no network, wrong name); None for real bugs."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain = []
    e: BaseException | None = error
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    repo = source.location or source.name
    licence = source.preset.licence_url or f"https://huggingface.co/{repo}"
    token_state = (
        "HF_TOKEN is set, but its account has not been granted access" if has_token else "HF_TOKEN is not set"
    )
    if any(isinstance(x, GatedRepoError) for x in chain):
        return ModelAccessError(
            f"{repo} is a gated model and {token_state}. Accept the licence at {licence} while logged in, create a "
            "read token at https://huggingface.co/settings/tokens and start again with HF_TOKEN=<token>."
        )
    if any(isinstance(x, RepositoryNotFoundError) for x in chain):
        return ModelAccessError(
            f"{repo} was not found on the Hugging Face Hub. Check the name; if it is a private or gated repo, "
            f"{token_state}: set HF_TOKEN to a token with access."
        )
    if any(isinstance(x, RevisionNotFoundError) for x in chain):
        return ModelAccessError(f"{repo}: the requested revision does not exist.")
    offline = (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)
    if any(isinstance(x, offline) for x in chain) or any("not fully cached locally" in str(x) for x in chain):
        hint = f" It is gated: accept the licence at {licence} and set HF_TOKEN." if source.preset.licence_url else ""
        return ModelAccessError(
            f"Could not download {repo}: the Hugging Face Hub is unreachable from here and the model is not in the "
            f"local cache. Connect this machine (or copy the model folder and pass its path with --model).{hint}"
        )
    return None


def load_transformer(source: ModelSource, plan: RunPlan, cfg: config.EngineConfig):
    """Only the transformer of `source`, on the CPU, with the plan applied as it loads (the comparison's side)."""
    dtypes = torch_dtypes(plan)
    if source.kind is SourceKind.RANDOM:
        # same construction and seed as the whole pipeline: the same weights
        build = random_models.BuildPrecision(plan, dtypes, cfg.max_side)
        arch = random_models.random_architecture(source.arch, source.num_layers)
        return random_models.build_components(arch, include_t5=False, fast_init=True, precision=build)["transformer"]
    if source.kind is SourceKind.SINGLE_FILE:
        return comfy.load_transformer(Path(source.location), plan=plan)  # FP8 kept where the plan has FP8
    if source.kind is SourceKind.FP8_FOLDER:
        return _load_component("transformer", source.location, plan, dtypes["transformer"], "cpu", {}, stored_fp8=True)
    location, kwargs = _location(source, cfg)
    with _explained(source, cfg):
        return _load_component("transformer", location, plan, dtypes["transformer"], "cpu", kwargs, stored_fp8=False)


def _load_component(name: str, location: str, plan: RunPlan, dtype, device: str, kwargs: dict, stored_fp8: bool):
    """One model component, quantized as it loads where the plan has FP8 (the libraries' TorchAoConfig; T5-XXL read
    tensor by tensor, `streaming`, since transformers keeps its whole 16-bit file mapped), or from an FP8 folder as
    stored, then retargeted to the plan."""
    cls = _component_classes()[name]
    if not stored_fp8 and streaming.applies(name, plan):
        return streaming.load(cls, location, name, plan, dtype, device, kwargs).eval()
    extra = {}
    if stored_fp8:
        fp8_format.check_component(Path(location) / name, cls)
    else:
        quantization = quantize.library_config(name, plan)
        if quantization is not None:
            extra["quantization_config"] = quantization
    with quantize.native_fp8_on_cpu(plan):
        module = cls.from_pretrained(location, subfolder=name, dtype=dtype, device_map=device, **extra, **kwargs)
    if stored_fp8:
        quantize.retarget(module, name, plan, dtype)
    return module.eval()  # requires_grad as from_pretrained leaves it: compiled graphs guard on it
