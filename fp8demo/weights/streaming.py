"""A transformers model read from 16-bit safetensors one tensor at a time, each Linear the plan makes FP8 quantized as
soon as its weight is read: T5-XXL under `--t5 fp8`, whose 16-bit copy is never whole, in RAM or on the device.

Why not transformers' from_pretrained with a TorchAoConfig, which quantizes each Linear as it arrives too:
transformers 5 (`PreTrainedModel._load_pretrained_model`) opens every shard with `safe_open(..., backend="mmap")` and
reads each weight through that mapping (`core_model_loading._materialize_copy`). Every page it reads stays mapped,
and counts in the process's RSS, until the mapping goes; and the parameters it keeps 16-bit (T5's embedding, its
norms) are views of the mapping, so it never goes while the model lives. The whole 16-bit file thus stays resident
beside the FP8 weights: a bf16 T5-XXL (8.9 GiB of files) loaded with FP8 Linears peaked at 13.9 GiB of RSS for
4.6 GiB of weights. Files stored in fp16, as the SD3.5 repos ship T5-XXL, are cast to bf16, so no view outlives the
load, but the mapping stays until the last tensor is read: the same peak. Here files are read with pread
(safetensors' "pread" backend: the page cache, no mapping).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from .. import hardware
from ..errors import ModelAccessError
from ..policy import kind_of
from . import quantize

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def applies(component: str, plan) -> bool:
    """Whether `component`, loaded from 16-bit files, is read here rather than by its library: T5-XXL in FP8."""
    return component == "text_encoder_3" and plan.t5 is not None and plan.t5.is_fp8


def checkpoint_files(location: str, subfolder: str, kwargs: dict) -> dict[str, str]:
    """{tensor name: local file} of a component's safetensors, found (and downloaded into the Hub cache, for a repo
    id) the way from_pretrained finds them: the shards of an index, or one file."""
    from transformers.utils import cached_file

    def find(name: str, required: bool = True):
        return cached_file(location, name, subfolder=subfolder, _raise_exceptions_for_missing_entries=required,
                           **kwargs)

    index = find(INDEX, required=False)
    if index is not None:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        files = {file: find(file) for file in sorted(set(weight_map.values()))}
        return {name: files[file] for name, file in weight_map.items()}
    single = find(SINGLE, required=False)
    if single is None:
        raise ModelAccessError(f"{location}/{subfolder}: no {SINGLE} or {INDEX} (T5-XXL is loaded from safetensors).")
    from safetensors import safe_open

    with safe_open(single, framework="pt", backend="pread") as f:
        return dict.fromkeys(f.keys(), single)


def _read(files: dict, name: str, like, device: str):
    """Tensor `name` from its file, in `like`'s dtype (floating point only, as from_pretrained casts) on `device`."""
    tensor = files[name].get_tensor(name)
    if tuple(tensor.shape) != tuple(like.shape):
        raise ModelAccessError(f"{name}: shape {tuple(tensor.shape)} in the files, {tuple(like.shape)} in the model "
                               "(weights of another architecture?)")
    return tensor.to(device=device, dtype=like.dtype if tensor.is_floating_point() else None)


def load(cls, location: str, component: str, plan, dtype, device: str, kwargs: dict):
    """Component `component` of the diffusers folder or repo `location` (a transformers model class `cls`), built on
    the meta device and filled tensor by tensor on `device`, each Linear quantized as soon as it is there
    (quantize.quantize: the plan's kind, the project's torchao config), so that at most one Linear is 16-bit at a
    time. Tied weights are tied after loading, as from_pretrained ties them; a tensor the files lack is an error."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open

    config = cls.config_class.from_pretrained(location, subfolder=component, **kwargs)
    with init_empty_weights(include_buffers=False):
        model = cls._from_config(config, dtype=dtype)
    paths = checkpoint_files(location, component, kwargs)
    with contextlib.ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(path, framework="pt", backend="pread"))
                   for path in sorted(set(paths.values()))}
        files = {name: handles[path] for name, path in paths.items()}
        for mname, module in model.named_modules():
            prefix = f"{mname}." if mname else ""
            for pname, param in list(module.named_parameters(recurse=False)):
                if prefix + pname not in files:
                    continue  # a tied weight's other name: tied below
                value = _read(files, prefix + pname, param, device)
                module._parameters[pname] = torch.nn.Parameter(value, requires_grad=value.is_floating_point())
                del value
            if isinstance(module, torch.nn.Linear) and kind_of(plan.kinds, component, mname).is_fp8:
                quantize.quantize(module, component, plan, prefix=mname)  # the 16-bit weight goes here
                hardware.return_freed_host_memory()  # or the heap keeps its pages (see there)
    model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelAccessError(f"{location}/{component}: {len(left)} tensors missing from the files (e.g. {left[0]}).")
    return model
