"""ComfyUI's FP8 single files (`sd3.5_*_fp8_scaled.safetensors` and its current quantized checkpoints), which
diffusers cannot load.

Both layouts keep the original MMDiT key names under `model.diffusion_model.` (and optionally the text encoders under
`text_encoders.{clip_l,clip_g,t5xxl}.transformer.`), and store a quantized Linear as a float8 `<layer>.weight` with
ONE float32 scale for the whole tensor: the real weight is `fp8 * scale`; a plain cast that ignores it gives white
images.
- legacy: the scale is `<layer>.scale_weight` and a `scaled_fp8` marker tensor marks the file.
- current (ComfyUI's mixed-precision ops, comfy/ops.py and comfy/quant_ops.py): the scale is `<layer>.weight_scale`,
  optionally with a static activation scale `<layer>.input_scale`, and `<layer>.comfy_quant` says what the layer is:
  UTF-8 JSON such as {"format": "float8_e4m3fn"} stored as a uint8 tensor. The same per-layer entries may sit in the
  safetensors header instead, as `_quantization_metadata` = {"layers": {layer: {...}}}.

The FP8 data and their per-tensor scales are used as stored: the layers the precision plan makes FP8 become torchao
Float8Tensors with per-tensor granularity, the others are dequantized. Dequantizing everything and re-quantizing per
row (what this module did before) rounds every weight twice and adds 35-40 % to the weight error. Static input scales
are not used: activations are scaled dynamically, as everywhere in this project.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

from ..policy import Kind, kind_of
from .fp8_format import CheckpointError, assign_state, load_tensors

log = logging.getLogger(__name__)

PREFIX = "model.diffusion_model."
MARKER = "scaled_fp8"
LEGACY_SCALE = ".scale_weight"
SCALE = ".weight_scale"  # also the suffix checkpoint.assign_state reads, where it is a 1x1 tensor here
INPUT_SCALES = (".scale_input", ".input_scale")
LAYER_CONFIG = ".comfy_quant"
HEADER_CONFIG = "_quantization_metadata"
FORMATS = ("float8_e4m3fn", "float8_e5m2")  # ComfyUI's per-tensor FP8 formats; E5M2 is dequantized (see below)
TEXT_PREFIXES = {
    "text_encoder": "text_encoders.clip_l.transformer.",
    "text_encoder_2": "text_encoders.clip_g.transformer.",
    "text_encoder_3": "text_encoders.t5xxl.transformer.",
}


# ---------------------------------------------------------------------------------------------------------------
# Reading either layout into one form


def _header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # the header only: load_tensors has read the file already
        return f.metadata() or {}


def _layer_configs(raw: dict, header: dict, where: str) -> dict:
    """{layer: its ComfyUI config}, from the `.comfy_quant` tensors and the header's `_quantization_metadata`."""
    configs = {}
    if HEADER_CONFIG in header:
        try:
            layers = json.loads(header[HEADER_CONFIG])["layers"]
            # some tools write the layer names without the model prefix; ComfyUI's loader then misses them too
            configs.update({PREFIX + name if PREFIX + name + ".weight" in raw else name: config
                            for name, config in layers.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{where}: the header's {HEADER_CONFIG} is not the JSON ComfyUI writes "
                                  f"({{\"layers\": {{...}}}}): {error!r}.") from error
    for key, value in raw.items():
        if key.endswith(LAYER_CONFIG):
            try:  # as ComfyUI reads it: the tensor's bytes are UTF-8 JSON
                configs[key.removesuffix(LAYER_CONFIG)] = json.loads(value.numpy().tobytes())
            except (ValueError, TypeError) as error:
                raise CheckpointError(f"{where}: {key} is not valid JSON ({error}); the file is damaged or was "
                                      "written by a tool that does not follow ComfyUI's layout.") from error
    for layer, config in configs.items():
        fmt = config.get("format") if isinstance(config, dict) else None
        if fmt not in FORMATS:
            raise CheckpointError(
                f"{where}: layer {layer} has quantization format {fmt!r}; this loader reads ComfyUI's FP8 formats "
                f"({', '.join(FORMATS)}) only. Use an FP8 file or the 16-bit weights."
            )
    return configs


def read_checkpoint(path: Path) -> dict:
    """All tensors of a ComfyUI file in one form, whichever layout it has: each E4M3 weight stays as stored with its
    scale beside it as `<layer>.weight_scale` (1x1, float32); E5M2 weights are dequantized to bf16 (this project's
    FP8 is E4M3; the precision plan quantizes them again); markers, layer configs and input scales are dropped.

    A missing or malformed scale or config raises CheckpointError naming the layer, before anything is built.
    """
    import torch

    where = str(path)
    raw = load_tensors(path)
    configs = _layer_configs(raw, _header(path), where)
    for layer, config in configs.items():
        stored = raw.get(layer + ".weight")
        if stored is None:
            raise CheckpointError(f"{where}: {layer} has a quantization config but no {layer}.weight.")
        if str(stored.dtype) != "torch." + config["format"]:
            raise CheckpointError(f"{where}: {layer}.weight is stored as {stored.dtype} but its config says "
                                  f"{config['format']}.")
    out = {}
    for key, value in raw.items():
        if key.rsplit(".", 1)[-1] == MARKER or key.endswith((LAYER_CONFIG, SCALE, LEGACY_SCALE, *INPUT_SCALES)):
            continue
        if value.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
            out[key] = value
            continue
        layer = key.removesuffix(".weight")
        # a layer with a config has the current layout; otherwise whichever scale key is there (legacy if none)
        scale_key = layer + SCALE if layer in configs or layer + SCALE in raw else layer + LEGACY_SCALE
        scale = raw.get(scale_key)
        if scale is None:
            raise CheckpointError(f"{where}: {key} is FP8 but {scale_key} is missing; without it the weight is "
                                  "meaningless (a plain cast gives white images).")
        if scale.numel() != 1:
            raise CheckpointError(f"{where}: {scale_key} holds {scale.numel()} values; ComfyUI's FP8 layers have "
                                  "one scale per tensor.")
        scale = scale.float().reshape(1, 1)
        if value.dtype == torch.float8_e4m3fn:
            out[key], out[layer + SCALE] = value, scale
        else:
            out[key] = (value.float() * scale).to(torch.bfloat16)
    layout = "current (.comfy_quant)" if configs else "legacy (scaled_fp8)"
    log.info("%s: ComfyUI %s layout, %d FP8 weights with per-tensor scales", where, layout,
             sum(k.endswith(SCALE) for k in out))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The transformer


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


def to_diffusers_names(state: dict, where: str) -> dict:
    """The MMDiT state under diffusers' names, FP8 weights and their scales included.

    diffusers' converter renames, splits fused rows (qkv into q, k, v) and swaps row halves (AdaLN shift/scale); it
    does no arithmetic. So FP8 data go through it bit for bit as uint8, and each scale goes through as a column with
    one entry per row of its weight: the column's rows land where the weight's rows land, so every diffusers weight
    comes out with the scale of the rows it is made of.
    """
    import torch
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers as convert

    tensors = {k: v for k, v in state.items() if not k.endswith(SCALE)}
    fp8 = {k for k, v in tensors.items() if v.dtype == torch.float8_e4m3fn}
    bits = {k: v.view(torch.uint8) if k in fp8 else v for k, v in tensors.items()}
    columns = {
        k: (state[k.removesuffix(".weight") + SCALE] if k in fp8 else torch.zeros(1, 1)).expand(len(v), 1)
        if v.dim() else v
        for k, v in tensors.items()
    }
    try:
        converted, scale_columns = convert(bits), convert(columns)
    except KeyError as error:
        raise CheckpointError(f"{where}: incomplete MMDiT checkpoint, {error} is missing.") from error
    out = {}
    for key, value in converted.items():
        if value.dtype != torch.uint8:
            out[key] = value
            continue
        column = scale_columns[key]
        if not bool((column == column[0]).all()):  # the converter would have fused rows of two tensors
            raise CheckpointError(f"{where}: {key} would mix rows with different scales.")
        out[key] = value.view(torch.float8_e4m3fn)
        out[key.removesuffix(".weight") + SCALE] = column[:1].clone()
    return out


def _transformer_kinds(plan):
    """For each FP8 weight of the file, what the run plan makes of it (policy.kind_of): FP8 with FP8 matmuls, FP8
    weights with 16-bit compute, or 16-bit (the layers the plan keeps 16-bit, and everything without a plan)."""
    if plan is None:
        return lambda key: Kind.BITS16
    return lambda key: kind_of(plan.kinds, "transformer", key)


def _compute_dtype(plan):
    import torch

    return torch.float16 if plan is not None and plan.compute_dtype == "float16" else torch.bfloat16


def load_transformer(path: Path, head_dim: int = 64, plan=None):
    """The SD3 transformer of a ComfyUI file, on the CPU: FP8 per-tensor weights where `plan` has FP8, the rest in
    its 16-bit compute dtype (everything 16-bit, scales applied, without a plan)."""
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    where = str(path)
    state = {k.removeprefix(PREFIX): v for k, v in read_checkpoint(path).items() if k.startswith(PREFIX)}
    config = infer_transformer_config(state, where, head_dim)
    converted = to_diffusers_names(state, where)
    del state
    with init_empty_weights(include_buffers=True):
        transformer = SD3Transformer2DModel(**config)
    try:
        assign_state(transformer, converted, where, _transformer_kinds(plan), _compute_dtype(plan))
    except CheckpointError:
        del transformer, converted
        gc.collect()
        raise
    return transformer.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# Text encoders and the whole pipeline


def text_encoder_states(path: Path) -> dict[str, dict]:
    """{component: state dict} for the text encoders stored inside the file (none for transformer-only files), FP8
    weights with their `.weight_scale` as `read_checkpoint` gives them."""
    state = read_checkpoint(path)
    out = {}
    for name, prefix in TEXT_PREFIXES.items():
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if part:
            out[name] = part
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
    import torch
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import AutoConfig, CLIPTextModelWithProjection, T5EncoderModel

    kwargs = {"token": token} if token else {}
    try:
        base_config = SD3Transformer2DModel.load_config(base, subfolder="transformer", **kwargs)
        head_dim = base_config.get("attention_head_dim", 64)
    except OSError:
        head_dim = 64
    transformer = load_transformer(path, head_dim, plan)
    components = {"transformer": transformer}
    classes = {"text_encoder": CLIPTextModelWithProjection, "text_encoder_2": CLIPTextModelWithProjection,
               "text_encoder_3": T5EncoderModel}
    for name, state in text_encoder_states(path).items():
        if name == "text_encoder_3" and plan.t5 is None:
            continue
        config = AutoConfig.from_pretrained(base, subfolder=name, **kwargs)
        with init_empty_weights(include_buffers=False):
            model = classes[name](config)
        t5 = name == "text_encoder_3"
        if t5 and "encoder.embed_tokens.weight" not in state:  # tied to shared.weight, stored once
            state["encoder.embed_tokens.weight"] = state["shared.weight"]
            if "shared" + SCALE in state:
                state["encoder.embed_tokens" + SCALE] = state["shared" + SCALE]

        def kind(key: str, model=model, name=name) -> Kind:
            # CLIP stays 16-bit; T5's Linears keep their FP8 where the plan stores T5 in FP8 (its embedding never)
            linear = isinstance(model.get_submodule(key.rsplit(".", 1)[0]), torch.nn.Linear)
            return kind_of(plan.kinds, name, key) if linear else Kind.BITS16

        assign_state(model, state, f"{path} ({name})", kind, dtypes[name])
        if t5:
            model.encoder.embed_tokens = model.shared
        components[name] = model.eval().requires_grad_(False)
    if plan.t5 is None:
        components.update(text_encoder_3=None, tokenizer_3=None)
    return StableDiffusion3Pipeline.from_pretrained(base, dtype=dtypes, **components, **kwargs)
