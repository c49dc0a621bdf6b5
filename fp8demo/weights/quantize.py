"""torchao glue: make a module's Linears what the run plan says (policy.kind_of), as they load or in memory.

The formats are torchao's: `Float8DynamicActivationFloat8WeightConfig(PerRow)` for FP8 matmuls (FP8 activations too),
`Float8WeightOnlyConfig` for FP8 weights with 16-bit compute. Every path uses them:
- quantize while loading: `library_config` wraps the layer patterns in diffusers' or transformers' own TorchAoConfig,
  so from_pretrained quantizes each Linear as it arrives;
- quantize in memory (`quantize`): random builds block by block, and anything loaded 16-bit;
- weights stored in FP8 (an FP8 folder, a ComfyUI file): `fp8_parameter` and `retarget` make torchao tensors of the
  stored bits without quantizing again.
"""

from __future__ import annotations

import contextlib

from ..policy import Kind, fqn_patterns, kind_of
from ..tensors import is_fp8


def torchao_config(kind: Kind):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig, PerRow

    if kind is Kind.FP8_MATMUL:
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return Float8WeightOnlyConfig()


def library_config(component: str, plan):
    """The library's TorchAoConfig that makes `component` what `plan` says while it loads; None: stays 16-bit."""
    patterns = fqn_patterns(plan.kinds, component)
    if not patterns:
        return None
    if component == "transformer":
        from diffusers import TorchAoConfig
        from torchao.quantization import FqnToConfig

        return TorchAoConfig(FqnToConfig({pattern: torchao_config(kind) for pattern, kind in patterns.items()}))
    from transformers import TorchAoConfig

    (kind,) = set(patterns.values())  # one config for every Linear is all transformers needs here
    return TorchAoConfig(torchao_config(kind))


@contextlib.contextmanager
def native_fp8_on_cpu(plan):
    """Let torchao build its dynamic-activation FP8 weights on a CPU, the one hardware check this project bypasses.

    torchao asserts compute capability >= 8.9 when it quantizes (`_check_hardware_support`), but the matmul it then
    calls, torch._scaled_mm, runs E4M3 x E4M3 with row-wise scales on CPUs too (torch >= 2.13). Lifting only that
    assertion, and only on a CPU, runs the GPU's exact code path in tests and CI. Nothing else is patched.
    """
    if not plan.fp8_matmul or plan.device != "cpu":
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
    "transformer_blocks.3.") as the plan says. A weight already in FP8 (loaded so) is never quantized twice."""
    import torch
    from torchao.quantization import quantize_

    for kind in (Kind.FP8_MATMUL, Kind.FP8_WEIGHTS):
        def selected(mod, fqn: str, kind=kind) -> bool:
            return (isinstance(mod, torch.nn.Linear) and not is_fp8(mod.weight)
                    and kind_of(plan.kinds, component, prefix + fqn) is kind)

        if any(selected(m, n) for n, m in module.named_modules()):
            with native_fp8_on_cpu(plan):
                quantize_(module, torchao_config(kind), filter_fn=selected)


def fp8_parameter(qdata, scale, kind: Kind):
    """A torchao Float8Tensor from stored data and scales, built as torchao's own configs build it (no requant).

    `scale` is per row ([out_features, 1]) or per tensor (one value, ComfyUI's files); a per-tensor weight is given
    per-tensor granularity, and so are its activations under FP8 matmuls, as torchao's PerTensor config does (its
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
    if kind is Kind.FP8_MATMUL:
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
    re-quantization): FP8 activations added for FP8 matmuls, dropped elsewhere, dequantized where the plan is 16-bit.

    A folder written on a CPU (FP8 weights) thus feeds FP8 matmuls on an H100, and the reverse."""
    import torch

    for name, mod in module.named_modules():
        weight = getattr(mod, "weight", None)
        if not isinstance(mod, torch.nn.Linear) or not is_fp8(weight):
            continue
        kind = kind_of(plan.kinds, component, name)
        if kind is Kind.BITS16:
            mod.weight = torch.nn.Parameter(weight.dequantize().to(dtype), requires_grad=False)
        elif (kind is Kind.FP8_MATMUL) != (weight.act_quant_kwargs is not None):
            mod.weight = fp8_parameter(weight.qdata, weight.scale, kind)
