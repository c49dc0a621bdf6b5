"""The one home of the FP8 format: which layer is FP8 and how, quantizing it, writing and loading FP8 folders.

Which layer becomes what is decided in one place, `layer_kinds`: an ordered table of layer-name patterns per
component. The same table drives every way a model gets its FP8 weights:
- quantize while loading: `diffusers_quantization` / `transformers_quantization` wrap it in the libraries' own
  TorchAoConfig (an `FqnToConfig` for the transformer), so from_pretrained quantizes each Linear as it arrives;
- quantize in memory (`quantize`): random builds, block by block as they are built, and anything loaded 16-bit;
- the byte estimate before loading (`precision.estimate_module_bytes` asks `layer_kind`).
The formats are torchao's: block Linears `Float8DynamicActivationFloat8WeightConfig(PerRow)` on FP8 GPUs (FP8
activations too) or `Float8WeightOnlyConfig` elsewhere; AdaLN modulation always weight-only; T5's Linears
weight-only; everything else (KEPT_16BIT, CLIP-L/G, the VAE) untouched.

An FP8 folder is what `save_pretrained` writes: safetensors files, torchao's tensor layout in their metadata and the
`quantization_config` in each quantized component's config.json, so plain diffusers + torchao load it with no fp8demo
code. Beside it: `fp8demo_manifest.json` (source, revision, versions, the precision, sha256 of every file), checked
before loading, and after calibration `fp8demo_activation_scales.json` (the static activation scales, a sidecar the
manifest describes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

from ..errors import ModelAccessError

log = logging.getLogger(__name__)

FORMAT = "fp8demo-fp8/2 (diffusers save_pretrained + torchao)"
MANIFEST = "fp8demo_manifest.json"
ACTIVATION_SCALES = "fp8demo_activation_scales.json"
GRANULARITY = "per-row: one float32 scale per output row, weight = fp8 * scale"

MODULATION_SUFFIXES = ("norm1.linear", "norm1_context.linear")
KEPT_16BIT = ("pos_embed", "time_text_embed", "context_embedder", "norm_out", "proj_out")
# Patterns as torchao's FqnToConfig reads them ("re:" + a regex that must match the whole name). diffusers tries a
# Linear's parameter name first, then its module name, so both forms match; the block pattern leaves the modulation
# Linears out, so the two never overlap and their order does not matter.
BLOCK_PATTERN = r"re:transformer_blocks\.\d+\.(?!norm1\.linear|norm1_context\.linear).+"
MODULATION_PATTERN = r"re:transformer_blocks\.\d+\.norm1(_context)?\.linear(\.weight)?"
EVERY_LINEAR = r"re:.+"
QUANTIZED = ("transformer", "text_encoder_3")  # the components that can hold FP8 weights


class CheckpointError(ModelAccessError):
    """A checkpoint file or folder that cannot be used as it is (corrupt, incomplete, wrong architecture)."""


# ---------------------------------------------------------------------------------------------------------------
# The decision: which layer is FP8, and how


def is_modulation(fqn: str) -> bool:
    return fqn.removesuffix(".weight").removesuffix(".bias").endswith(MODULATION_SUFFIXES)


def is_block_linear(fqn: str) -> bool:
    """A transformer block Linear whose activations a native FP8 path quantizes (not AdaLN modulation)."""
    return fqn.startswith("transformer_blocks.") and not is_modulation(fqn)


def is_block_modulation(fqn: str) -> bool:
    return fqn.startswith("transformer_blocks.") and is_modulation(fqn)


def layer_kinds(component: str, plan) -> dict[str, str]:
    """{pattern: "dynamic" | "weight-only"} for `component` under `plan`, in order; Linears no pattern matches stay
    16-bit. "dynamic": FP8 weights and activations (FP8 matmuls); "weight-only": FP8 weights, 16-bit compute."""
    if component == "transformer":  # blocks and modulation are "16-bit" in a plan without FP8
        kinds = {}
        if plan.blocks != "16-bit":
            kinds[BLOCK_PATTERN] = "dynamic" if plan.blocks == "fp8-dynamic" else "weight-only"
        if plan.modulation != "16-bit":
            # One vector per image goes through these: FP8 activations would cost quality and save nothing.
            kinds[MODULATION_PATTERN] = "weight-only"
        return kinds
    if component == "text_encoder_3" and plan.t5 == "fp8":
        return {EVERY_LINEAR: "weight-only"}  # T5 computes in bf16: no FP8 activations outside the blocks
    return {}


def _match(kinds: dict[str, str], fqn: str) -> str | None:
    return next((kind for pattern, kind in kinds.items() if re.fullmatch(pattern[3:], fqn)), None)


def layer_kind(component: str, fqn: str, plan) -> str | None:
    """What the Linear `fqn` of `component` becomes under `plan`: "dynamic", "weight-only" or None (16-bit)."""
    return _match(layer_kinds(component, plan), fqn)


def torchao_config(kind: str):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig, PerRow

    if kind == "dynamic":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return Float8WeightOnlyConfig()


def diffusers_quantization(plan):
    """diffusers' TorchAoConfig that quantizes the transformer while it loads, or None when nothing is FP8."""
    kinds = layer_kinds("transformer", plan)
    if not kinds:
        return None
    from diffusers import TorchAoConfig
    from torchao.quantization import FqnToConfig

    return TorchAoConfig(FqnToConfig({pattern: torchao_config(kind) for pattern, kind in kinds.items()}))


def transformers_quantization(plan):
    """transformers' TorchAoConfig for T5-XXL (every Linear weight-only; its embedding stays 16-bit), or None."""
    kinds = layer_kinds("text_encoder_3", plan)
    if not kinds:
        return None
    from transformers import TorchAoConfig

    assert set(kinds) == {EVERY_LINEAR}, kinds  # one config for every Linear is all transformers needs here
    return TorchAoConfig(torchao_config(kinds[EVERY_LINEAR]))


def quantization_config(component: str, plan):
    """The library quantization config that makes `component` FP8 while it loads, or None (16-bit component)."""
    if component == "transformer":
        return diffusers_quantization(plan)
    if component == "text_encoder_3":
        return transformers_quantization(plan)
    return None


def is_fp8(tensor) -> bool:
    """A torchao FP8 weight (float8 data inside a tensor subclass)."""
    qdata = getattr(tensor, "qdata", None)
    return qdata is not None and "float8" in str(qdata.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Quantizing


@contextlib.contextmanager
def native_fp8_on_cpu(plan):
    """Let torchao build its dynamic-activation FP8 weights on a CPU, the one hardware check this project bypasses.

    torchao asserts compute capability >= 8.9 when it quantizes (`_check_hardware_support`), but the matmul it then
    calls, torch._scaled_mm, runs E4M3 x E4M3 with row-wise scales on CPUs too (torch >= 2.13). Lifting only that
    assertion, and only on a CPU, runs the GPU's exact code path in tests and CI. Nothing else is patched.
    """
    if plan.blocks != "fp8-dynamic" or plan.device != "cpu":
        yield
        return
    from torchao.quantization import quant_api

    checked = quant_api._check_hardware_support
    quant_api._check_hardware_support = lambda granularity: None
    try:
        yield
    finally:
        quant_api._check_hardware_support = checked


def quantize(module, component: str, plan, prefix: str = "") -> None:
    """Quantize the Linears of `module` (component `component`, or its submodule at `prefix`, e.g.
    "transformer_blocks.3.") as `layer_kinds` says. A weight already in FP8 (loaded so) is never quantized twice."""
    import torch
    from torchao.quantization import quantize_

    kinds = layer_kinds(component, plan)
    for kind in dict.fromkeys(kinds.values()):
        def selected(mod, fqn: str, kind=kind) -> bool:
            return (isinstance(mod, torch.nn.Linear) and not is_fp8(mod.weight)
                    and _match(kinds, prefix + fqn) == kind)

        if any(selected(m, n) for n, m in module.named_modules()):
            with native_fp8_on_cpu(plan):
                quantize_(module, torchao_config(kind), filter_fn=selected)


def fp8_parameter(qdata, scale, native: bool):
    """A torchao Float8Tensor from stored data and scales, built as torchao's own configs build it (no requant).

    `scale` is per row ([out_features, 1]) or per tensor (one value, ComfyUI's files); a per-tensor weight is given
    per-tensor granularity, and so are its activations on the native path, as torchao's PerTensor config does (its
    matmul pairs tensor-wise with tensor-wise and row-wise with row-wise).
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


def retarget(module, component: str, plan, dtype) -> None:
    """Make the FP8 weights a folder was saved with what this machine's plan wants, from the stored bits (no
    re-quantization): FP8 activations added on an FP8 GPU, dropped elsewhere, dequantized where the plan is 16-bit.

    A folder written on a CPU (weight-only) thus feeds the native path on an H100, and the reverse."""
    import torch

    for name, mod in module.named_modules():
        weight = getattr(mod, "weight", None)
        if not isinstance(mod, torch.nn.Linear) or not is_fp8(weight):
            continue
        kind = layer_kind(component, name, plan)
        if kind is None:
            mod.weight = torch.nn.Parameter(weight.dequantize().to(dtype), requires_grad=False)
        elif (kind == "dynamic") != (weight.act_quant_kwargs is not None):
            mod.weight = fp8_parameter(weight.qdata, weight.scale, native=kind == "dynamic")


# ---------------------------------------------------------------------------------------------------------------
# Writing


def make_savable(module, component: str, plan) -> None:
    """Give a module quantized in memory what from_pretrained gives one quantized while loading: the library's
    quantizer and `quantization_config`, so that its save_pretrained writes the standard torchao layout."""
    if component == "transformer":
        from diffusers.quantizers import DiffusersAutoQuantizer

        config = diffusers_quantization(plan)
        quantizer = DiffusersAutoQuantizer.from_config(config, pre_quantized=True)
        quantizer.validate_environment()
        quantizer.preprocess_model(module, device_map=None, keep_in_fp32_modules=[])
        module.register_to_config(quantization_config=config)  # what from_pretrained puts in the saved config
    else:
        from transformers.quantizers import AutoHfQuantizer

        config = transformers_quantization(plan)
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

    from ..precision import inner_tensors

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


def _dtype_map(module) -> dict:
    from ..precision import _leaf_dtype, tensor_bytes, unique_tensors

    out: dict[str, dict] = {}
    for t in unique_tensors(module):
        d = out.setdefault(_leaf_dtype(t), {"tensors": 0, "bytes": 0})
        d["tensors"] += 1
        d["bytes"] += tensor_bytes(t)
    return out


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
            dtype_maps[name] = _dtype_map(component)
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
            "transformer_blocks": f"float8_e4m3fn weights ({plan.blocks}), " + GRANULARITY,
            "modulation": plan.modulation,
            "t5": "float8_e4m3fn weights" if "text_encoder_3" in dtype_maps
            else ("absent" if getattr(pipe, "text_encoder_3", None) is None else "bf16"),
            "kept_16bit": ", ".join(KEPT_16BIT) + ", CLIP-L/G, VAE",
            "scale_granularity": GRANULARITY,
            "pos_embed_crop": list(report.pos_embed_crop) if report.pos_embed_crop else None,
            "activation_scales": sidecar or "dynamic (per row, at run time)",
        },
        "dtype_map": dtype_maps,
        "versions": _versions(),
        "files": {
            str(p.relative_to(out_dir)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != MANIFEST
        },
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _versions() -> dict:
    from .. import hardware

    return hardware.versions()


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


def assign_state(module, state: dict, where: str, fp8, dtype, scale_suffix: str = ".weight_scale") -> None:
    """Put `state` (FP8 weights with `<layer><scale_suffix>` beside them, ComfyUI's files) into a module built on
    the meta device. `fp8`: "native", "storage" or "dequantize", or a function of the weight's key giving one.

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
