"""What a model holds, measured on its modules, and the run plan a source gets on a machine.

Footprints of the real SD3.5 architectures are measured on the `meta` device (no weights, no memory, no download),
so a CUDA card is planned before anything loads. The arithmetic is exact: a test holds `ComponentBytes.under` to the
bytes real quantization leaves.
"""

from __future__ import annotations

import functools
import itertools

from .. import config, runplan
from ..hardware import Capabilities
from ..planner import ComponentBytes, ModelFootprint
from ..policy import COMPONENTS, Layer, layer_of
from . import pos_table, random_models


def component_bytes(name: str, module, max_side: int, prefix: str = "") -> ComponentBytes:
    """The bytes of component `name`, or of its submodule at `prefix` (e.g. "transformer_blocks.3."), as loaded: the
    Linear weights policy.layer_of can make FP8 apart by class, everything else as held, the positional table as
    cropped to `max_side`."""
    import torch

    plain, element_size = 0, 2
    linears: dict[Layer, tuple[int, int]] = {}
    largest: dict[Layer, int] = {}
    seen: set[int] = set()  # tied weights (T5's shared embedding) count once
    for mname, mod in module.named_modules(prefix=prefix.rstrip(".")):
        mprefix = f"{mname}." if mname else ""
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            # only Linear weights are ever quantized (an Embedding is 2-D too but stays 16-bit)
            layer = layer_of(name, mprefix + pname) if isinstance(mod, torch.nn.Linear) and pname == "weight" else None
            if layer is None:
                plain += p.numel() * p.element_size()
            else:
                elements, rows = linears.get(layer, (0, 0))
                linears[layer] = (elements + p.numel(), rows + p.shape[0])
                largest[layer] = max(largest.get(layer, 0), p.numel())
                element_size = p.element_size()
        for bname, b in mod.named_buffers(recurse=False):
            numel = b.numel()
            if name == "transformer" and mprefix + bname == "pos_embed.pos_embed":
                numel = pos_table.table_elements(module, max_side)
            plain += numel * b.element_size()
    return ComponentBytes(plain, linears, element_size, largest)


def largest_module_16bit(module) -> int:
    """Bytes of the largest single module of `module` in 16-bit (its own parameters and buffers); 0 for None."""
    if module is None:
        return 0
    return max(
        (sum(t.numel() * 2 for t in itertools.chain(m.parameters(recurse=False), m.buffers(recurse=False)))
         for m in module.modules()),
        default=0,
    )


def measure(pipe, architecture: str, max_side: int) -> ModelFootprint:
    """The footprint of a pipeline's modules (meta or real, in their 16-bit dtypes, before any quantization)."""
    modules = {c: getattr(pipe, c, None) for c in COMPONENTS}
    tr = pipe.transformer
    cfg = tr.config
    return ModelFootprint(
        architecture=architecture,
        components={c: component_bytes(c, m, max_side) for c, m in modules.items() if m is not None},
        blocks=tuple(component_bytes("transformer", block, max_side, prefix=f"transformer_blocks.{i}.")
                     for i, block in enumerate(tr.transformer_blocks)),
        params={c: sum(p.numel() for p in m.parameters()) if m is not None else 0 for c, m in modules.items()},
        largest_module_16bit={c: largest_module_16bit(m) for c, m in modules.items()},
        width=cfg.attention_head_dim * cfg.num_attention_heads,
        patch_size=cfg.patch_size,
        dual_attention_blocks=len(cfg.dual_attention_layers or ()),
        vae_full_res_channels=pipe.vae.config.block_out_channels[1],
        max_side=max_side,
    )


class _TokenIds:
    """What the text-encoder configs read from a tokenizer (the real CLIP and T5 special-token ids)."""

    def __init__(self, bos: int, eos: int, pad: int):
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, eos, pad


@functools.lru_cache(maxsize=4)
def meta_pipeline(arch_name: str, num_layers: int | None = None):
    """The five modules of a real architecture on the meta device, in 16-bit: no memory, no weights, no download.

    Cached: building T5-XXL and the MMDiT takes seconds even without weights.
    """
    from types import SimpleNamespace

    import torch
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    arch = random_models.random_architecture(arch_name, num_layers)
    clip_ids, t5_ids = _TokenIds(49406, 49407, 49407), _TokenIds(0, 1, 0)
    with init_empty_weights(include_buffers=True):
        modules = dict(
            transformer=SD3Transformer2DModel(**arch.transformer),
            text_encoder=random_models.clip_model(arch.clip_l, clip_ids, arch.clip_vocab),
            text_encoder_2=random_models.clip_model(arch.clip_g, clip_ids, arch.clip_vocab),
            text_encoder_3=random_models.t5_model(arch.t5, t5_ids, arch.t5_vocab),
            vae=random_models.vae_model(arch),
        )
    for module in modules.values():
        torch.nn.Module.to(module, torch.bfloat16)  # T5 stays bf16 and the rest is 16-bit on a GPU: 2 bytes each
    return SimpleNamespace(**modules)


def meta_t5(num_layers: int | None = None):
    """SD3.5's T5-XXL on the meta device in bf16, optionally cut to its first `num_layers` blocks."""
    import torch
    from accelerate import init_empty_weights

    arch = random_models.ARCHITECTURES["large"]  # every SD3.5 model has the same T5-XXL
    spec = arch.t5 if num_layers is None else dict(arch.t5, num_layers=num_layers)
    with init_empty_weights(include_buffers=True):
        module = random_models.t5_model(spec, _TokenIds(0, 1, 0), arch.t5_vocab)
    return torch.nn.Module.to(module, torch.bfloat16)


@functools.lru_cache(maxsize=32)
def of_architecture(arch_name: str, num_layers: int | None = None,
                    max_side: int = config.MAX_SIDE) -> ModelFootprint:
    """The footprint of a real SD3.5 architecture (`random_models.ARCHITECTURES`), optionally cut to its first
    `num_layers` blocks."""
    # Large and Large Turbo share one architecture: build it once.
    arch = random_models.ARCHITECTURES[arch_name]
    canonical = next(n for n, a in random_models.ARCHITECTURES.items() if a.transformer == arch.transformer)
    name = arch_name if num_layers is None else f"{arch_name}:{num_layers}"
    return measure(meta_pipeline(canonical, num_layers), name, max_side)


def source_architecture(source) -> tuple[str, int | None] | None:
    """(architecture, block count) of a sources.ModelSource: random:<arch>, or anything whose preset is an SD3.5 one
    (official repo ids, their local folders and FP8 checkpoints). None for the tiny model and unknown folders."""
    if source.arch:
        return source.arch, source.num_layers
    if source.preset.name in random_models.ARCHITECTURES:
        return source.preset.name, None
    return None


def of_source(source, max_side: int = config.MAX_SIDE) -> ModelFootprint | None:
    found = source_architecture(source)
    return None if found is None else of_architecture(found[0], found[1], max_side)


def plan_for(source, cfg: config.EngineConfig, caps: Capabilities) -> runplan.RunPlan:
    """The run plan of `source` under `cfg` on `caps`: a CUDA card is planned with the model's footprint (other
    devices have nothing to place), at the preset's guidance (CFG doubles the transformer's batch)."""
    footprint = of_source(source, cfg.max_side) if caps.device == "cuda" else None
    return runplan.decide(cfg, caps, footprint, guided=source.preset.guidance > 1, preset=source.preset)
