"""Static activation scales for FP8: collect, store, and compare with dynamic scaling.

Native FP8 matmuls quantize activations too. Dynamic scaling (this project's default, torchao's
Float8DynamicActivationFloat8WeightConfig) computes a scale per row of every activation at run time; static
scaling uses one scale per layer measured beforehand on a set of prompts ("calibration") and saves that
reduction. `fake_quantize_activations` reproduces either scheme's rounding in bf16, so their fidelity can be
measured on any machine; their speed needs an FP8 GPU.
"""

from __future__ import annotations

import contextlib
import logging

from .policy import Layer, layer_of

log = logging.getLogger(__name__)

E4M3_MAX = 448.0
CALIBRATION_PROMPTS = (
    "a photo of a cat sitting on a windowsill at sunset, warm light",
    "an astronaut riding a horse on the moon, cinematic lighting, highly detailed",
    "a watercolor painting of a lighthouse by the sea, soft pastel colors",
    "portrait of an old fisherman with a grey beard, dramatic lighting, oil painting",
    "a futuristic city skyline with flying cars and neon signs, rain, reflections",
    "a bowl of ramen with egg and green onions, food photography",
    "isometric illustration of a tiny island with a castle and a waterfall",
    "abstract shapes in orange and teal, minimal poster design, bauhaus",
)


def activation_layers(transformer) -> dict:
    """{name: Linear} whose activations FP8 matmuls quantize: the block Linears (policy.Layer.BLOCK)."""
    import torch

    return {n: m for n, m in transformer.named_modules()
            if isinstance(m, torch.nn.Linear) and layer_of("transformer", n) is Layer.BLOCK}


@contextlib.contextmanager
def record_amax(transformer):
    """Within the block, every activation-quantized Linear's input max |x| accumulates into the yielded dict."""
    amax: dict[str, float] = {}
    handles = []
    for name, module in activation_layers(transformer).items():
        def hook(mod, args, name=name):
            value = args[0].detach().abs().amax().float().item()
            amax[name] = max(amax.get(name, 0.0), value)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield amax
    finally:
        for h in handles:
            h.remove()


def calibrate(engine, prompts=CALIBRATION_PROMPTS, steps: int | None = None, size: int | None = None) -> dict:
    """Static per-tensor activation scales (amax / 448) from generating `prompts` with the engine's transformer."""
    from .request import GenerationRequest

    with record_amax(engine.pipe.transformer) as amax:
        for i, prompt in enumerate(prompts):
            engine.generate(GenerationRequest(prompt, seed=i, steps=steps, width=size, height=size))
    return {name: max(value, 1e-12) / E4M3_MAX for name, value in amax.items()}


@contextlib.contextmanager
def fake_quantize_activations(transformer, mode: str, scales: dict | None = None):
    """Round the inputs of the activation-quantized Linears through E4M3 as a native path would.

    mode "dynamic": one scale per row (per token), as torchao's PerRow dynamic config; "static": the calibrated
    per-tensor scale, values beyond it saturating at +-448 as in a real FP8 cast.
    """
    import torch

    handles = []
    for name, module in activation_layers(transformer).items():
        def hook(mod, args, name=name):
            x = args[0]
            if mode == "dynamic":
                scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
            else:
                scale = torch.tensor(scales[name], dtype=torch.float32, device=x.device)
            q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
            return (q.float() * scale).to(x.dtype), *args[1:]

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
