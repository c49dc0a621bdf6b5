"""Pre-quantized FP8 pipeline folders: write once (`python -m fp8demo quantize`), load without re-quantizing.

Layout: a normal diffusers pipeline folder, except that `transformer/` (and `text_encoder_3/` when asked) holds
float8_e4m3fn weights for the Linears the precision policy quantizes, each with a float32 per-row scale stored
next to it as `<name>.weight_scale` ([out_features, 1]); everything else is bf16 as the policy says. A manifest
(`fp8demo_manifest.json`) records the source, the dtype map, the scale granularity, library versions and the
sha256 of every file; loading checks it first, so a truncated or swapped file is refused before anything loads.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from pathlib import Path

from ..errors import ModelAccessError

log = logging.getLogger(__name__)

FORMAT = "fp8demo-fp8/1"
MANIFEST = "fp8demo_manifest.json"
SCALE = ".weight_scale"
INPUT_SCALE = ".input_scale"  # static activation scale from calibration (float32 scalar), optional
GRANULARITY = "per-row: one float32 scale per output row, weight = fp8 * scale"


class CheckpointError(ModelAccessError):
    """A checkpoint file or folder that cannot be used as it is (corrupt, incomplete, wrong architecture)."""


# ---------------------------------------------------------------------------------------------------------------
# Writing


def fp8_state_dict(module) -> dict:
    """State dict with torchao FP8 weights split into their float8 data and float32 scales.

    A tensor stored twice (T5's tied embedding) is written once; the loader ties it again.
    """
    state = {}
    seen = set()
    for name, tensor in module.state_dict().items():
        key = id(tensor.qdata) if hasattr(tensor, "qdata") else (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if key in seen:
            continue
        seen.add(key)
        if hasattr(tensor, "qdata"):
            stem = name.removesuffix(".weight")
            state[name] = tensor.qdata.contiguous()
            state[stem + SCALE] = tensor.scale.float().contiguous()
        else:
            state[name] = tensor.contiguous()
    return state


def _dtype_map(state: dict) -> dict:
    out: dict[str, dict] = {}
    for t in state.values():
        d = out.setdefault(str(t.dtype).replace("torch.", ""), {"tensors": 0, "bytes": 0})
        d["tensors"] += 1
        d["bytes"] += t.numel() * t.element_size()
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_module(module, folder: Path, weights_name: str, input_scales: dict | None = None) -> dict:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = fp8_state_dict(module)
    for name, scale in (input_scales or {}).items():
        state[name + INPUT_SCALE] = torch.tensor(scale, dtype=torch.float32)
    module.config.save_pretrained(folder) if hasattr(module.config, "save_pretrained") else module.save_config(folder)
    save_file(state, str(folder / weights_name), metadata={"format": "pt", "fp8demo": FORMAT})
    return _dtype_map(state)


def save_quantized(pipe, report, source_name: str, out_dir: Path, revision: str | None = None,
                   source_folder: Path | None = None, calibration: dict | None = None) -> dict:
    """Write `pipe` (precision already applied, on the CPU) as an FP8 pipeline folder; return the manifest.

    Components that are not quantized are copied file for file from `source_folder` when there is one (they stay
    exactly as they were), else saved from memory (random-weight models have no files).
    """
    import shutil

    from .. import hardware

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype_maps = {}
    transformer = pipe.transformer
    if report.pos_embed_crop:  # the cropped positional table is what gets saved; the config must say so
        transformer.register_to_config(pos_embed_max_size=report.pos_embed_crop[1])
    dtype_maps["transformer"] = _write_module(
        transformer, out_dir / "transformer", "diffusion_pytorch_model.safetensors",
        (calibration or {}).get("scales"),
    )
    t5 = getattr(pipe, "text_encoder_3", None)
    quantized_t5 = t5 is not None and any(hasattr(p, "qdata") for p in t5.parameters())
    for name, component in pipe.components.items():
        if name == "transformer" or component is None:
            continue
        if name == "text_encoder_3" and quantized_t5:
            dtype_maps[name] = _write_module(component, out_dir / name, "model.safetensors")
        elif source_folder is not None and (Path(source_folder) / name).is_dir():
            shutil.copytree(Path(source_folder) / name, out_dir / name)
        else:
            component.save_pretrained(out_dir / name)
    pipe.save_config(out_dir)  # model_index.json
    files = {
        str(p.relative_to(out_dir)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"model": source_name, "revision": revision},
        "precision": {
            "transformer_blocks": "float8_e4m3fn weights, " + GRANULARITY,
            "modulation": report.plan.modulation,
            "t5": "float8_e4m3fn weights" if quantized_t5 else ("absent" if t5 is None else "bf16"),
            "kept_16bit": "pos_embed, time_text_embed, context_embedder, norm_out, proj_out, CLIP-L/G, VAE",
            "scale_granularity": GRANULARITY,
            "scale_key_suffix": SCALE,
            "pos_embed_crop": list(report.pos_embed_crop) if report.pos_embed_crop else None,
            "activation_scales": (
                {k: v for k, v in calibration.items() if k != "scales"} | {"key_suffix": INPUT_SCALE}
                if calibration else "dynamic (per row, at run time)"
            ),
        },
        "dtype_map": dtype_maps,
        "versions": hardware.versions(),
        "files": files,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# Reading


def is_quantized_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: Path, verify: bool = True) -> dict:
    """The manifest, after checking that every file it lists is there with its size and sha256."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder / MANIFEST} cannot be read: {error}") from error
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: unknown checkpoint format {manifest.get('format')!r} (expected {FORMAT}).")
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


def load_tensors(path: Path) -> dict:
    """All tensors of a safetensors file, with a clear error for a truncated or corrupt one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def fp8_parameter(qdata, scale, native: bool):
    """A torchao Float8Tensor from stored data and scales, built as torchao's own configs build it (no requant).

    `scale` is per row ([out_features, 1], this project's folders) or per tensor (one value, ComfyUI's files); a
    per-tensor weight is given per-tensor granularity, and so are its activations on the native path, as torchao's
    PerTensor config does (its matmul pairs tensor-wise with tensor-wise and row-wise with row-wise).
    """
    import torch
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor
    from torchao.quantization.quantize_.common import KernelPreference
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import (
        Float8Tensor,
        QuantizeTensorToFloat8Kwargs,
    )

    per_tensor = scale.numel() == 1
    if per_tensor:
        scale, block, granularity = scale.reshape(1, 1), list(qdata.shape), PerTensor()
    else:
        block, granularity = [1, qdata.shape[1]], PerRow()
    if native:
        cfg = Float8DynamicActivationFloat8WeightConfig(granularity=granularity)
        act_granularity, _ = cfg.granularity
        act = QuantizeTensorToFloat8Kwargs(
            cfg.activation_dtype,
            act_granularity,
            hp_value_lb=cfg.activation_value_lb,
            hp_value_ub=cfg.activation_value_ub,
            kernel_preference=cfg.kernel_preference,
        )
        weight = Float8Tensor(qdata, scale, block, cfg.mm_config, act, cfg.kernel_preference, dtype=torch.bfloat16)
    else:
        weight = Float8Tensor(qdata, scale, block, None, None, KernelPreference.AUTO, dtype=torch.bfloat16)
    return torch.nn.Parameter(weight, requires_grad=False)


def assign_state(module, state: dict, where: str, fp8, dtype) -> None:
    """Put `state` into a module built on the meta device. `fp8`: "native", "storage" or "dequantize", or a function
    of the weight's key giving one of those (when the layers of one file go different ways).

    Raises CheckpointError naming what is missing or left over, so a file of another architecture or one without
    its scales is refused, not half-loaded.
    """
    import torch

    expected = dict(module.state_dict(keep_vars=True))
    fp8_keys = [k for k, t in state.items() if t.dtype == torch.float8_e4m3fn]
    no_scale = [k for k in fp8_keys if k.removesuffix(".weight") + SCALE not in state]
    if no_scale:
        raise CheckpointError(f"{where}: {len(no_scale)} FP8 weights have no scale (e.g. {no_scale[0]}); "
                              "without scales the weights are meaningless.")
    scales = {k for k in state if k.endswith(SCALE) or k.endswith(INPUT_SCALE)}
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected and k not in scales]
    if missing or extra:
        sample = (missing or extra)[:3]
        raise CheckpointError(
            f"{where} does not fit this architecture: {len(missing)} tensors missing, {len(extra)} unexpected "
            f"(e.g. {', '.join(sample)}). Is it a checkpoint of another model?"
        )
    for key, value in state.items():
        if key in scales:
            continue
        target = expected[key]
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(target.shape)}.")
    plain = {}
    for key, value in state.items():
        if key in scales:
            continue
        if value.dtype == torch.float8_e4m3fn:
            scale = state[key.removesuffix(".weight") + SCALE]
            owner = module.get_submodule(key.rsplit(".", 1)[0])
            mode = fp8(key) if callable(fp8) else fp8
            if mode == "dequantize":
                owner.weight = torch.nn.Parameter((value.float() * scale).to(dtype), requires_grad=False)
            else:
                owner.weight = fp8_parameter(value, scale.float(), native=mode == "native")
        else:
            plain[key] = value.to(dtype) if value.is_floating_point() else value
    module.load_state_dict(plain, strict=False, assign=True)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{where}: {len(left)} tensors were not in the file (e.g. {left[0]}).")


def load_transformer(folder: Path, plan):
    """The FP8 transformer of a quantized folder, as stored: FP8 weights feed the plan's path directly."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    config = SD3Transformer2DModel.load_config(str(folder))
    with init_empty_weights(include_buffers=True):
        transformer = SD3Transformer2DModel.from_config(config)
    dtype = torch.float16 if plan.compute_dtype == "float16" else torch.bfloat16
    fp8 = {"fp8-dynamic": "native", "fp8-weight-only": "storage"}.get(plan.blocks, "dequantize")
    state = load_tensors(folder / "diffusion_pytorch_model.safetensors")
    assign_state(transformer, state, str(folder), fp8, dtype)
    return transformer.eval().requires_grad_(False)


def load_t5(folder: Path, plan):
    import torch
    from accelerate import init_empty_weights
    from transformers import T5Config, T5EncoderModel

    config = T5Config.from_pretrained(str(folder))
    with init_empty_weights(include_buffers=True):
        t5 = T5EncoderModel(config)
    state = load_tensors(folder / "model.safetensors")
    if "encoder.embed_tokens.weight" not in state and "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]  # tied, stored once
    # T5 is always weight-only (bf16 compute): no FP8 activations outside the transformer blocks
    assign_state(t5, state, str(folder), "storage" if plan.t5 == "fp8" else "dequantize", torch.bfloat16)
    t5.encoder.embed_tokens = t5.shared
    return t5.eval().requires_grad_(False)


def load_quantized_pipeline(folder: Path, plan, dtypes: dict):
    """A StableDiffusion3Pipeline from a quantized folder. On any error nothing stays loaded."""
    from diffusers import StableDiffusion3Pipeline

    folder = Path(folder)
    manifest = read_manifest(folder)
    transformer = t5 = None
    try:
        transformer = load_transformer(folder / "transformer", plan)
        kwargs = {"transformer": transformer, "dtype": dtypes}
        if plan.t5 == "off":
            kwargs.update(text_encoder_3=None, tokenizer_3=None)
        elif manifest["precision"]["t5"].startswith("float8"):
            t5 = load_t5(folder / "text_encoder_3", plan)
            kwargs["text_encoder_3"] = t5
        return StableDiffusion3Pipeline.from_pretrained(str(folder), **kwargs)
    except CheckpointError:
        del transformer, t5
        gc.collect()
        raise
