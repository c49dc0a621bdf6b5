"""FP8 folders on disk: write one (save, manifest), check one (manifest, headers), read tensors back.

An FP8 folder is what `save_pretrained` writes: safetensors files, torchao's tensor layout in their metadata and the
`quantization_config` in each quantized component's config.json, so plain diffusers + torchao load it with no fp8demo
code. Beside it: `fp8demo_manifest.json` (source, revision, versions, the precision, sha256 of every file), checked
before loading, and after calibration `fp8demo_activation_scales.json` (the static activation scales, a sidecar the
manifest describes). Which layer is FP8 is the policy's (policy.py); making it so is quantize.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from ..errors import ModelAccessError
from ..hardware import versions
from ..policy import KEPT_16BIT, Kind
from ..tensors import bytes_by_dtype, inner_tensors, is_fp8
from .quantize import fp8_parameter, library_config

log = logging.getLogger(__name__)

FORMAT = "fp8demo-fp8/2 (diffusers save_pretrained + torchao)"
MANIFEST = "fp8demo_manifest.json"
ACTIVATION_SCALES = "fp8demo_activation_scales.json"
GRANULARITY = "per-row: one float32 scale per output row, weight = fp8 * scale"

QUANTIZED = ("transformer", "text_encoder_3")  # the components that can hold FP8 weights


class CheckpointError(ModelAccessError):
    """A checkpoint file or folder that cannot be used as it is (corrupt, incomplete, wrong architecture)."""


# ---------------------------------------------------------------------------------------------------------------
# Writing


def make_savable(module, component: str, plan) -> None:
    """Give a module quantized in memory what from_pretrained gives one quantized while loading: the library's
    quantizer and `quantization_config`, so that its save_pretrained writes the standard torchao layout."""
    config = library_config(component, plan)
    if component == "transformer":
        from diffusers.quantizers import DiffusersAutoQuantizer

        quantizer = DiffusersAutoQuantizer.from_config(config, pre_quantized=True)
        quantizer.validate_environment()
        quantizer.preprocess_model(module, device_map=None, keep_in_fp32_modules=[])
        module.register_to_config(quantization_config=config)  # what from_pretrained puts in the saved config
    else:
        from transformers.quantizers import AutoHfQuantizer

        quantizer = AutoHfQuantizer.from_config(config, pre_quantized=True)
        module.config.quantization_config = config
    module.hf_quantizer = quantizer


def _flatten_without_copies(state_dict: dict) -> tuple[dict, dict]:
    """What torchao's flatten_tensor_state_dict returns (the tensors and metadata of the safetensors layout that
    diffusers and transformers write), holding the model's own inner tensors instead of clones of them all.

    torchao clones the FP8 data and scales of every weight before the file is written, so a save held a second copy
    of all FP8 weights (T5-XXL: 4.3 GiB more; Large's transformer: about 7 GiB more). Here torchao flattens one
    weight at a time, and each clone is swapped for the tensor it was cloned from (found by identical bytes among
    the weight's inner tensors), so at most one weight's clone exists. The names and metadata are torchao's own.
    """
    import torch
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    def same(a, b) -> bool:
        return (a is b) or (a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous() and b.is_contiguous()
                            and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))

    tensors, metadata = {}, {}
    for name, tensor in state_dict.items():
        part, meta = flatten_tensor_state_dict({name: tensor})
        inner = inner_tensors(tensor)
        for key, value in part.items():
            tensors[key] = next((t for t in inner if same(t, value)), value)
        meta.pop("tensor_names", None)
        metadata.update(meta)
    metadata["tensor_names"] = json.dumps(list(state_dict))  # as torchao writes it: every name, in order
    return tensors, metadata


@contextlib.contextmanager
def saved_without_copies(module):
    """While inside, `module.save_pretrained` writes exactly what it writes otherwise, without the extra copy of the
    FP8 weights that torchao's flattening makes (see _flatten_without_copies).

    diffusers and transformers both ask the model's quantizer, `hf_quantizer.get_state_dict_and_metadata`, for the
    flattened state dict; this quantizer object alone gets that method replaced, and only for the duration.
    """
    quantizer = getattr(module, "hf_quantizer", None)
    if quantizer is None or "get_state_dict_and_metadata" in vars(quantizer):
        yield
        return
    import torch

    original = quantizer.get_state_dict_and_metadata

    def flattened(*args, **kwargs):
        if args and isinstance(args[0], torch.nn.Module):  # transformers: (model)
            return _flatten_without_copies(args[0].state_dict())
        safe = kwargs.get("safe_serialization", args[1] if len(args) > 1 else False)  # diffusers: (state_dict, safe)
        if not safe:
            return original(*args, **kwargs)  # a pickle file: nothing is flattened
        return _flatten_without_copies(args[0] if args else kwargs["state_dict"])

    quantizer.get_state_dict_and_metadata = flattened
    try:
        yield
    finally:
        del quantizer.get_state_dict_and_metadata  # the class's own method again


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def save_quantized(pipe, report, source_name: str, out_dir: Path, revision: str | None = None,
                   source_folder: Path | None = None, calibration: dict | None = None) -> dict:
    """Write `pipe` (precision applied) as a standard diffusers folder plus the manifest; return the manifest.

    The FP8 components go through their own save_pretrained; the others are copied file for file from
    `source_folder` when there is one (they stay exactly as they were), else saved from memory (random weights).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = report.plan
    dtype_maps = {}
    for name, component in pipe.components.items():
        if component is None:
            continue
        fp8 = name in QUANTIZED and any(is_fp8(p) for p in component.parameters())
        if fp8:
            if getattr(component, "hf_quantizer", None) is None:
                make_savable(component, name, plan)
            with saved_without_copies(component):
                component.save_pretrained(out_dir / name, safe_serialization=True)
            dtype_maps[name] = bytes_by_dtype(component)
        elif source_folder is not None and (Path(source_folder) / name).is_dir():
            shutil.copytree(Path(source_folder) / name, out_dir / name)
        else:
            component.save_pretrained(out_dir / name)
    pipe.save_config(out_dir)  # model_index.json
    sidecar = None
    if calibration:
        (out_dir / ACTIVATION_SCALES).write_text(json.dumps(calibration["scales"], indent=1, sort_keys=True) + "\n")
        sidecar = {k: v for k, v in calibration.items() if k != "scales"} | {
            "file": ACTIVATION_SCALES,
            "content": "{layer name: float32 input scale}; x_fp8 = x / scale, clamped to +-448",
            "used_at_run_time": False,
        }
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"model": source_name, "revision": revision},
        "load_with": "diffusers DiffusionPipeline.from_pretrained (torchao installed); no fp8demo code needed",
        "precision": {
            "transformer_blocks": plan.blocks.value,
            "modulation": plan.modulation.value,
            "t5": Kind.FP8_WEIGHTS.value if "text_encoder_3" in dtype_maps
            else ("absent" if getattr(pipe, "text_encoder_3", None) is None else Kind.BITS16.value),
            "kept_16bit": ", ".join(KEPT_16BIT) + ", CLIP-L/G, VAE",
            "scale_granularity": GRANULARITY,
            "pos_embed_crop": list(report.pos_embed_crop) if report.pos_embed_crop else None,
            "activation_scales": sidecar or "dynamic (per row, at run time)",
        },
        "dtype_map": dtype_maps,
        "versions": versions(),
        "files": {
            str(p.relative_to(out_dir)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != MANIFEST
        },
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def push_to_hub(folder: Path, repo_id: str, token: str | None = None, private: bool = False, api=None) -> str:
    """Publish an FP8 folder (manifest included) as a Hub model repo; returns the commit URL. `api`: an HfApi."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    manifest = read_manifest(folder)  # never publish a folder that does not match its manifest
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="model",
        commit_message=f"FP8 (E4M3, torchao) of {manifest['source']['model']}, written by fp8demo quantize",
    )
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------------------------------------------------------
# Reading


def is_quantized_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: Path, verify: bool = True) -> dict:
    """The manifest, after checking that every file it lists is there with its size and (with `verify`) sha256."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder / MANIFEST} cannot be read: {error}") from error
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: unknown checkpoint format {manifest.get('format')!r} (expected {FORMAT}); "
                              "write it again with python -m fp8demo quantize.")
    for rel, info in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"{folder}: the manifest lists {rel}, which is missing.")
        if path.stat().st_size != info["bytes"]:
            raise CheckpointError(
                f"{folder}: {rel} is {path.stat().st_size} bytes but the manifest says {info['bytes']} "
                "(truncated or replaced); copy the folder again."
            )
        if verify and _sha256(path) != info["sha256"]:
            raise CheckpointError(f"{folder}: {rel} does not match the sha256 in the manifest (corrupt or replaced).")
    return manifest


def activation_scales(folder: Path) -> dict[str, float] | None:
    """The static activation scales stored beside a folder by `quantize --calibrate`, or None."""
    path = Path(folder) / ACTIVATION_SCALES
    return json.loads(path.read_text()) if path.is_file() else None


def _header(path: Path) -> tuple[list[str], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def check_component(folder: Path, model_class) -> None:
    """Refuse, before anything loads, a component whose files cannot make `model_class`: an unreadable file, FP8
    weights without their scales, tensors another architecture has. Reads headers and config only."""
    from accelerate import init_empty_weights

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has no .safetensors weights.")
    keys, layouts = set(), {}
    for path in files:
        names, metadata = _header(path)
        keys.update(names)
        for name, value in metadata.items():
            if name.endswith(".weight") and value.startswith("{"):
                layout = json.loads(value)
                if layout.get("_type") != "Tensor":
                    layouts[name] = layout
    # torchao stores a quantized `<layer>.weight` as `<layer>._weight_<part>` for each of its inner tensors
    parts = {name: [name.removesuffix("weight") + "_weight_" + p for p in layout.get("_tensor_data_names", [])]
             for name, layout in layouts.items()}
    no_scale = [name for name, names in parts.items() if any(n not in keys for n in names)]
    if no_scale:
        raise CheckpointError(f"{folder}: {len(no_scale)} FP8 weights have no scale (e.g. {no_scale[0]}); "
                              "without scales the weights are meaningless.")
    stored = (keys - {n for names in parts.values() for n in names}) | set(parts)
    config = model_class.load_config(str(folder)) if hasattr(model_class, "load_config") else None
    with init_empty_weights(include_buffers=True):
        if config is not None:
            model = model_class.from_config(config)
        else:
            model = model_class(model_class.config_class.from_pretrained(str(folder)))
    expected = set(model.state_dict())
    tied = {n for n in expected - stored if n.endswith("embed_tokens.weight")}  # T5's tied embedding, stored once
    missing, extra = sorted(expected - stored - tied), sorted(stored - expected)
    if missing or extra:
        sample = (missing or extra)[:3]
        raise CheckpointError(
            f"{folder} does not fit this architecture: {len(missing)} tensors missing, {len(extra)} unexpected "
            f"(e.g. {', '.join(sample)}). Is it a checkpoint of another model?"
        )


def load_tensors(path: Path) -> dict:
    """All tensors of a safetensors file, with a clear error for a truncated or corrupt one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def assign_state(module, state: dict, where: str, kind_of_key, dtype, scale_suffix: str = ".weight_scale") -> None:
    """Put `state` (FP8 weights with `<layer><scale_suffix>` beside them, ComfyUI's files) into a module built on
    the meta device. `kind_of_key(key)`: what the FP8 weight `key` becomes (policy.Kind; 16-bit: dequantized).

    Raises CheckpointError naming what is missing or left over, so a file of another architecture or one without
    its scales is refused, not half-loaded.
    """
    import torch

    expected = dict(module.state_dict(keep_vars=True))
    fp8_keys = [k for k, t in state.items() if t.dtype == torch.float8_e4m3fn]
    no_scale = [k for k in fp8_keys if k.removesuffix(".weight") + scale_suffix not in state]
    if no_scale:
        raise CheckpointError(f"{where}: {len(no_scale)} FP8 weights have no scale (e.g. {no_scale[0]}); "
                              "without scales the weights are meaningless.")
    scales = {k for k in state if k.endswith(scale_suffix)}
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected and k not in scales]
    if missing or extra:
        sample = (missing or extra)[:3]
        raise CheckpointError(
            f"{where} does not fit this architecture: {len(missing)} tensors missing, {len(extra)} unexpected "
            f"(e.g. {', '.join(sample)}). Is it a checkpoint of another model?"
        )
    for key, value in state.items():
        if key not in scales and tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)}.")
    plain = {}
    for key, value in state.items():
        if key in scales:
            continue
        if value.dtype == torch.float8_e4m3fn:
            scale = state[key.removesuffix(".weight") + scale_suffix]
            owner = module.get_submodule(key.rsplit(".", 1)[0])
            kind = kind_of_key(key)
            if kind is Kind.BITS16:
                owner.weight = torch.nn.Parameter((value.float() * scale).to(dtype), requires_grad=False)
            else:
                owner.weight = fp8_parameter(value, scale.float(), kind)
        else:
            plain[key] = value.to(dtype) if value.is_floating_point() else value
    module.load_state_dict(plain, strict=False, assign=True)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{where}: {len(left)} tensors were not in the file (e.g. {left[0]}).")
