"""Which layers can be FP8, and the three things a layer can be. Pure: names in, kinds out; no torch.

The rule, written once here:
- transformer block Linears (attention and MLP projections): FP8 weights with per-row scales; FP8 activations too
  where the matmul runs in FP8 (compute capability >= 8.9).
- AdaLN modulation Linears (norm1.linear, norm1_context.linear): a third of the weights, but one vector per image
  goes through them, so FP8 activations would cost quality and save nothing: FP8 weights at most.
- T5-XXL's Linears: FP8 weights at most (its embedding stays 16-bit).
- everything else stays 16-bit: patch/position embedding, time-text embedder, context embedder, norm_out, proj_out,
  CLIP-L/G and the VAE.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum

COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")
KEPT_16BIT = ("pos_embed", "time_text_embed", "context_embedder", "norm_out", "proj_out")


class Kind(str, Enum):
    """What a layer (or a whole component) is: the one vocabulary for precision, from the CLI to the manifest."""

    FP8_MATMUL = "fp8-matmul"  # FP8 weights and FP8 activations: the matmul runs in FP8 (torch._scaled_mm)
    FP8_WEIGHTS = "fp8-weights"  # FP8 weights, dequantized per layer and multiplied in 16-bit: memory, not speed
    BITS16 = "16-bit"  # bf16 or fp16 weights and compute

    @property
    def is_fp8(self) -> bool:
        return self is not Kind.BITS16

    @classmethod
    def parse(cls, text: str) -> Kind:
        """A kind from its value, or from the words older manifests and flags used for it."""
        return cls(_OLD_NAMES.get(text, text))


_OLD_NAMES = {"fp8-dynamic": "fp8-matmul", "dynamic": "fp8-matmul", "native": "fp8-matmul",
              "fp8-weight-only": "fp8-weights", "weight-only": "fp8-weights", "storage": "fp8-weights",
              "fp8": "fp8-weights", "bf16": "16-bit", "fp16": "16-bit", "dequantize": "16-bit"}


class Layer(str, Enum):
    """The classes of Linear that can hold FP8 weights."""

    BLOCK = "block"  # transformer block Linears
    MODULATION = "modulation"  # AdaLN modulation Linears of the transformer blocks
    T5 = "t5"  # T5-XXL's Linears


# Layer names (module names, or parameter names ending in .weight/.bias) of each class, per component.
_MODULATION = r"transformer_blocks\.\d+\.norm1(?:_context)?\.linear"
_RULES: dict[str, tuple[tuple[Layer, str], ...]] = {
    "transformer": (
        (Layer.MODULATION, _MODULATION),
        (Layer.BLOCK, r"transformer_blocks\.\d+\.(?!norm1\.linear|norm1_context\.linear).+"),
    ),
    "text_encoder_3": ((Layer.T5, r".+"),),
}
_COMPILED = {c: tuple((layer, re.compile(rx)) for layer, rx in rules) for c, rules in _RULES.items()}

# What each class may become at most: FP8 activations only where they pay (see the module docstring).
CEILING = {Layer.BLOCK: Kind.FP8_MATMUL, Layer.MODULATION: Kind.FP8_WEIGHTS, Layer.T5: Kind.FP8_WEIGHTS}


def layer_of(component: str, name: str) -> Layer | None:
    """The class of the Linear `name` (a module name, or its weight's or bias's name) of `component`; None: it is
    not a Linear this project ever stores in FP8."""
    name = name.removesuffix(".weight").removesuffix(".bias")
    return next((layer for layer, rx in _COMPILED.get(component, ()) if rx.fullmatch(name)), None)


def kind_of(kinds: Mapping[Layer, Kind], component: str, name: str) -> Kind:
    """What the Linear `name` of `component` becomes when each class of layer becomes `kinds[class]`."""
    layer = layer_of(component, name)
    return Kind.BITS16 if layer is None else kinds.get(layer, Kind.BITS16)


def fqn_patterns(kinds: Mapping[Layer, Kind], component: str) -> dict[str, Kind]:
    """{pattern: kind} for the layers of `component` that become FP8, as torchao's FqnToConfig reads patterns:
    "re:" + a regex matched against the whole parameter or module name (diffusers tries both)."""
    return {f"re:{rx}(?:\\.weight)?": kinds[layer] for layer, rx in _RULES.get(component, ())
            if kinds.get(layer, Kind.BITS16).is_fp8}
