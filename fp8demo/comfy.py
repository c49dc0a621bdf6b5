"""ComfyUI's scaled-FP8 single files (`sd3.5_*_fp8_scaled.safetensors`), which diffusers cannot load.

Layout: the original MMDiT key names under `model.diffusion_model.`, float8_e4m3fn weights each with a float32
per-tensor `<layer>.scale_weight`, a `scaled_fp8` marker tensor, and optionally the text encoders under
`text_encoders.{clip_l,clip_g,t5xxl}.transformer.`. The real weight is `fp8 * scale_weight`: a plain cast that
ignores the scale gives white images. Weights are dequantized with their scales, mapped to diffusers' names with
diffusers' own SD3 converter, and then go through this project's FP8 path like any other weights.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from .checkpoint import CheckpointError, load_tensors

log = logging.getLogger(__name__)

PREFIX = "model.diffusion_model."
MARKER = "scaled_fp8"
SCALE = ".scale_weight"
TEXT_PREFIXES = {
    "text_encoder": "text_encoders.clip_l.transformer.",
    "text_encoder_2": "text_encoders.clip_g.transformer.",
    "text_encoder_3": "text_encoders.t5xxl.transformer.",
}


def is_single_file(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix == ".safetensors"


def dequantize(state: dict, where: str) -> dict:
    """bf16 tensors from a scaled-FP8 state dict: fp8 * scale_weight; scale and marker keys dropped."""
    import torch

    out = {}
    for key, value in state.items():
        if key == MARKER or key.endswith(SCALE) or key.endswith(".scale_input"):
            continue
        if value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            scale_key = key.removesuffix(".weight") + SCALE
            if scale_key not in state:
                raise CheckpointError(f"{where}: {key} is FP8 but {scale_key} is missing; without it the weight "
                                      "is meaningless (a plain cast gives white images).")
            value = value.float() * state[scale_key].float()
        out[key] = value.to(torch.bfloat16) if value.is_floating_point() else value
    return out


def infer_transformer_config(state: dict, where: str, head_dim: int = 64) -> dict:
    """SD3Transformer2DModel arguments read off the tensor shapes of an original-layout MMDiT state dict.

    The head width is not in any shape: every released SD3/SD3.5 uses 64 (the base folder's config can say else).
    """
    import math

    if "joint_blocks.0.x_block.attn.qkv.weight" not in state or "x_embedder.proj.weight" not in state:
        raise CheckpointError(f"{where} is not an SD3/SD3.5 (MMDiT) checkpoint: no joint_blocks/x_embedder keys.")
    patch_w = state["x_embedder.proj.weight"]
    hidden, in_channels, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[2]
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("joint_blocks.")})
    return dict(
        sample_size=128,
        patch_size=patch,
        in_channels=in_channels,
        out_channels=state["final_layer.linear.weight"].shape[0] // (patch * patch),
        num_layers=len(blocks),
        attention_head_dim=head_dim,
        num_attention_heads=hidden // head_dim,
        joint_attention_dim=state["context_embedder.weight"].shape[1],
        caption_projection_dim=state["context_embedder.weight"].shape[0],
        pooled_projection_dim=state["y_embedder.mlp.0.weight"].shape[1],
        pos_embed_max_size=int(math.isqrt(state["pos_embed"].shape[1])),
        dual_attention_layers=tuple(sorted({int(k.split(".")[1]) for k in state if ".attn2." in k})),
        qk_norm="rms_norm" if any(".ln_q." in k for k in state) else None,
    )


def load_transformer(path: Path, head_dim: int = 64):
    """The bf16 SD3 transformer of a ComfyUI scaled-FP8 file (its scales applied), on the CPU."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    raw = load_tensors(path)
    if MARKER not in raw and any(t.dtype == torch.float8_e4m3fn for t in raw.values()):
        log.warning("%s has FP8 weights but no %r marker; reading it as scaled FP8 anyway", path, MARKER)
    state = {k.removeprefix(PREFIX): v for k, v in raw.items() if k.startswith(PREFIX) or k == MARKER}
    del raw
    state = dequantize(state, str(path))
    config = infer_transformer_config(state, str(path), head_dim)
    try:
        converted = convert_sd3_transformer_checkpoint_to_diffusers(state)
    except KeyError as error:
        raise CheckpointError(f"{path}: incomplete MMDiT checkpoint, {error} is missing.") from error
    with init_empty_weights(include_buffers=True):
        transformer = SD3Transformer2DModel(**config)
    from .checkpoint import assign_state

    try:
        assign_state(transformer, converted, str(path), "dequantize", torch.bfloat16)
    except CheckpointError:
        del transformer, converted
        gc.collect()
        raise
    return transformer.eval().requires_grad_(False)


def text_encoder_states(path: Path) -> dict[str, dict]:
    """{component: bf16 state dict} for the text encoders stored inside the file (none for transformer-only files)."""
    raw = load_tensors(path)
    out = {}
    for name, prefix in TEXT_PREFIXES.items():
        part = {k.removeprefix(prefix): v for k, v in raw.items() if k.startswith(prefix)}
        part.update({k.removeprefix(prefix).removesuffix(SCALE) + SCALE: v for k, v in raw.items()
                     if k.startswith(prefix) and k.endswith(SCALE)})
        if part:
            out[name] = dequantize(part, f"{path} ({name})")
    return out


def preset_name(path: Path) -> str | None:
    """The preset a ComfyUI file name points to (sd3.5_large_turbo..., sd3.5_medium...)."""
    name = Path(path).name.lower().replace("-", "_")
    for key, preset in (("large_turbo", "large-turbo"), ("large", "large"), ("medium", "medium")):
        if key in name:
            return preset
    return None


def load_pipeline(path: Path, base: str, plan, dtypes: dict, token: str | None = None):
    """A StableDiffusion3Pipeline: transformer (and text encoders, when inside) from the file, the rest (tokenizers,
    scheduler, VAE, encoders the file lacks) from `base`, a diffusers folder or repo id."""
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import AutoConfig, CLIPTextModelWithProjection, T5EncoderModel

    from .checkpoint import assign_state

    kwargs = {"token": token} if token else {}
    try:
        base_config = SD3Transformer2DModel.load_config(base, subfolder="transformer", **kwargs)
        head_dim = base_config.get("attention_head_dim", 64)
    except OSError:
        head_dim = 64
    transformer = load_transformer(path, head_dim)
    components = {"transformer": transformer}
    classes = {"text_encoder": CLIPTextModelWithProjection, "text_encoder_2": CLIPTextModelWithProjection,
               "text_encoder_3": T5EncoderModel}
    for name, state in text_encoder_states(path).items():
        if name == "text_encoder_3" and plan.t5 == "off":
            continue
        config = AutoConfig.from_pretrained(base, subfolder=name, **kwargs)
        with init_empty_weights(include_buffers=False):
            model = classes[name](config)
        if name == "text_encoder_3" and "encoder.embed_tokens.weight" not in state:
            state["encoder.embed_tokens.weight"] = state["shared.weight"]
        dtype = dtypes.get(name, dtypes["default"])
        assign_state(model, state, f"{path} ({name})", "dequantize", dtype)
        components[name] = model.eval().requires_grad_(False)
    if plan.t5 == "off":
        components.update(text_encoder_3=None, tokenizer_3=None)
    return StableDiffusion3Pipeline.from_pretrained(base, dtype=dtypes, **components, **kwargs)
