"""SD3.5-shaped pipelines with random weights, built offline: the `tiny` test model and `random:<arch>` models.

`tiny` is small enough to run in seconds on a CPU but keeps every structural feature of SD3.5 that the code relies
on: 16 latent channels, a VAE that downsamples by 8, 2x2 patches, dual-attention (MMDiT-X) and RMS qk-norm blocks,
three text encoders with their own tokenizers. `random:<arch>` builds the real architectures at their real widths,
so memory and speed can be measured without the gated weights.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import string
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path

from .. import hardware
from ..tensors import is_fp8
from . import pos_table, quantize

log = logging.getLogger(__name__)

TINY_VERSION = "v2"  # bump when the tiny recipe changes, so that stale caches are rebuilt


@dataclass(frozen=True)
class Architecture:
    """Hyper-parameters of one SD3.5 family, as in the official config.json files."""

    name: str
    preset: str
    transformer: dict
    clip_l: dict = field(
        default_factory=lambda: dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            projection_dim=768, hidden_act="quick_gelu",
        )
    )
    clip_g: dict = field(
        default_factory=lambda: dict(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            projection_dim=1280, hidden_act="gelu",
        )
    )
    t5: dict = field(
        default_factory=lambda: dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
    )
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    vae_mid_attention: bool = True
    clip_vocab: int = 49408
    t5_vocab: int = 32128


_LARGE = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048,
    pos_embed_max_size=192, dual_attention_layers=(), qk_norm="rms_norm",
)
_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)

ARCHITECTURES: dict[str, Architecture] = {
    "large": Architecture("large", "large", _LARGE),
    "large-turbo": Architecture("large-turbo", "large-turbo", _LARGE),
    "medium": Architecture("medium", "medium", _MEDIUM),
}

# Tiny: widths of 16-64 but the same structure. Its positional table (128 a side) covers the 2048 px limit.
TINY = Architecture(
    "tiny",
    "tiny",
    transformer=dict(
        sample_size=64, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=128, dual_attention_layers=(0,), qk_norm="rms_norm",
    ),
    clip_l=dict(hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                projection_dim=32, hidden_act="quick_gelu"),
    clip_g=dict(hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                projection_dim=32, hidden_act="gelu"),
    t5=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    vae_channels=(8, 16, 32, 32),
    vae_layers_per_block=1,
    # Attention over 128x128 latents is most of a tiny VAE's time and nothing tiny needs.
    vae_mid_attention=False,
    clip_vocab=0,  # 0: the tokenizer's own size
    t5_vocab=0,
)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers, learnt offline from a small prompt corpus so that token counts resemble the real ones.
#
# The merges and scores are computed here rather than by `tokenizers`' BpeTrainer/UnigramTrainer: those keep their
# counts in Rust hash maps seeded afresh in every process, so ties were broken (and Unigram scores summed) in a
# different order each run, and the same word got a different id in each process. Everything below depends only
# on the corpus: ties are broken by the symbols themselves and every list is written in a fixed order.

CLIP_MERGES = 720  # what a 1000-token BPE trainer learnt from the corpus
T5_MERGES = 400  # about 500 pieces with the characters, as the Unigram trainer kept
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2


def _corpus() -> list[str]:
    text = resources.files("fp8demo").joinpath("data/tiny_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_bpe(words: Counter, num_merges: int) -> tuple[list[tuple[str, str]], Counter]:
    """Byte-pair merges, most frequent adjacent pair first, ties broken by the pair itself; and the words as cut
    by them. `words` counts symbol tuples. Pair counts are updated only for the words a merge changes."""
    words = Counter(words)
    pairs: Counter = Counter()
    for symbols, count in words.items():
        for pair in pairwise(symbols):
            pairs[pair] += count
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and pairs:
        top = max(pairs.values())
        best = min(pair for pair, count in pairs.items() if count == top)
        merges.append(best)
        for symbols, count in list(words.items()):
            if best[0] not in symbols or (merged := _merge(symbols, best)) == symbols:
                continue
            del words[symbols]
            words[merged] += count
            for pair in pairwise(symbols):
                pairs[pair] -= count
            for pair in pairwise(merged):
                pairs[pair] += count
        pairs = +pairs  # drop the pairs no word has any more
    return merges, words


def build_clip_tokenizer():
    """A CLIP BPE tokenizer (vocab.json + merges.txt layout) learnt from the corpus, with CLIP's special tokens."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    # Words as CLIP itself splits them (lower case, byte-level symbols), the last symbol marked as a word end.
    splitter = CLIPTokenizer(vocab={s: i for i, s in enumerate(CLIP_SPECIALS)}, merges=[]).backend_tokenizer
    words: Counter = Counter()
    for line in _corpus():
        for word, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(line)):
            words[(*word[:-1], word[-1] + "</w>")] += 1
    merges, _ = learn_bpe(words, CLIP_MERGES)
    # CLIP's own vocabulary order: the 256 byte symbols (the library returns them in set order; sorted is byte
    # order), each again as a word end, one token per merge, then the specials.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges), *CLIP_SPECIALS]:
        vocab.setdefault(token, len(vocab))  # two merges can spell the same token
    # The pipeline pads to model_max_length: without 77 here tokenization fails.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_t5_tokenizer():
    """A T5 tokenizer: a Unigram model (WordLevel does not survive a reload) whose pieces are BPE merges of the
    corpus, each scored by the log of its frequency in the corpus as those merges cut it."""
    from transformers import T5TokenizerFast

    splitter = T5TokenizerFast(extra_ids=0).backend_tokenizer.pre_tokenizer  # whitespace, then "▁" word starts
    words = Counter(tuple(word) for line in _corpus() for word, _ in splitter.pre_tokenize_str(line))
    merges, cut = learn_bpe(words, T5_MERGES)
    # One count for every piece, so that single characters and intermediate merges stay usable for unseen words.
    counts = Counter(dict.fromkeys([*string.ascii_letters, *string.digits, *string.punctuation, "▁"], 1))
    counts.update(dict.fromkeys(("".join(m) for m in merges), 1))
    for symbols, count in cut.items():
        for symbol in symbols:
            counts[symbol] += count
    total = sum(counts.values())
    pieces = sorted(((p, math.log(c / total)) for p, c in counts.items()), key=lambda ps: (-ps[1], ps[0]))
    vocab = [(s, 0.0) for s in T5_SPECIALS] + pieces
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=256)


# ---------------------------------------------------------------------------------------------------------------
# Components


def clip_model(spec: dict, tokenizer, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size or len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        layer_norm_eps=1e-5,
        **spec,
    )
    return CLIPTextModelWithProjection(cfg)


def t5_model(spec: dict, tokenizer, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=vocab_size or len(tokenizer),
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **spec,
    )
    model = T5EncoderModel(cfg)
    # One embedding, as in the released T5-XXL: transformers ties encoder.embed_tokens to `shared` only when it loads
    # weights, so a random build would otherwise fill (and save) two different tables.
    model.encoder.embed_tokens = model.shared
    return model


def vae_model(arch: Architecture):
    from diffusers import AutoencoderKL

    n = len(arch.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=arch.vae_channels,
        layers_per_block=arch.vae_layers_per_block,
        latent_channels=16,
        norm_num_groups=min(32, arch.vae_channels[0]),
        sample_size=1024,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=arch.vae_mid_attention,
    )


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


# Blocks are the units a random build quantizes as soon as they are filled: the bf16 copy of one block is all that
# exists beside the FP8 ones, so random:large with T5 in FP8 builds in about its final size.
BLOCKS = {"transformer": re.compile(r"transformer_blocks\.\d+"), "text_encoder_3": re.compile(r"encoder\.block\.\d+")}


@dataclass(frozen=True)
class BuildPrecision:
    """How a random build leaves its modules: the precision plan, the dtype of each component and the largest side
    served (the transformer's positional table is cropped to it as soon as it exists)."""

    plan: object  # runplan.RunPlan
    dtypes: dict  # component -> torch dtype
    max_side: int


def _construct(factory, fast_init: bool, seed: int, component: str | None = None,
               precision: BuildPrecision | None = None):
    """Build a module; with fast_init, its parameters are created on `meta` and filled by `_fill_random`.

    The libraries' own initialisers take minutes at T5-XXL size on two cores; a direct fill takes seconds. Buffers
    (positional tables, position ids) are still computed by the constructors, so they are real. With `precision`,
    each block is quantized as soon as it is filled and the module ends in its planned dtypes; the transformer is
    then constructed wholly on `meta` and only the part of its positional table that is kept is computed.
    """
    import torch

    if not fast_init:
        torch.manual_seed(seed)
        return factory()
    from accelerate import init_empty_weights

    if precision is not None and component == "transformer":
        # diffusers' constructor computes the whole positional table (Medium: 384^2 x 1536 through float64, 3.8 GiB
        # of peak memory) and a build keeps only its centre: on `meta` it costs nothing, and the centre is computed
        # alone, equal to the crop of the whole one.
        with torch.device("meta"):
            module = factory()
        pos_table.build(module, precision.max_side)
    else:
        with init_empty_weights(include_buffers=False):
            module = factory()
    if precision is None:
        _fill_random(module, seed)
        return module
    dtype = precision.dtypes.get(component, precision.dtypes["default"])
    block = BLOCKS.get(component)

    def built(name: str, mod) -> None:
        if block is not None and block.fullmatch(name):
            _cast_plain(mod, dtype)  # as if the whole model had been cast first: the same FP8 values
            quantize.quantize(mod, component, precision.plan, prefix=name + ".")
            hardware.return_freed_host_memory()  # the block's 16-bit weights, or they add up (see there)

    _fill_random(module, seed, built)
    _cast_plain(module, dtype)
    hardware.return_freed_host_memory()
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a buffer this build does not know how to compute: better an error than a module that fails later
        raise RuntimeError(f"{component}: {len(left)} tensors left on the meta device (e.g. {left[0]})")
    return module


def _cast_plain(module, dtype) -> None:
    """Cast floating parameters and buffers to `dtype`, leaving FP8 weights as they are (Module.to would not)."""
    import torch

    for mod in module.modules():
        for name, param in list(mod.named_parameters(recurse=False)):
            if param.is_floating_point() and not is_fp8(param) and param.dtype != dtype:
                mod._parameters[name] = torch.nn.Parameter(param.detach().to(dtype), requires_grad=False)
        for name, buffer in list(mod.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                mod._buffers[name] = buffer.to(dtype)


TRIM_EVERY = 256 << 20  # bytes: CLIP-G's 1.4 GB, filled with nothing to quantize, left 0.5 GiB of freed pages


def _fill_random(module, seed: int, built=None) -> None:
    """Scale-preserving random weights: N(0, 1/fan_in) for matrices, ones for norm scales, zeros for biases.

    Modules are filled in `named_modules()` order from one generator, so the values do not depend on `built`:
    `built(name, submodule)` is called as soon as a submodule and all its children are filled.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    freed = 0  # bytes of float32 temporaries freed since memory was last returned

    def fill(prefix: str, mod) -> None:
        nonlocal freed
        if id(mod) in seen:  # a shared module (T5's embedding) is filled once, where named_modules() lists it
            return
        seen.add(id(mod))
        for name, param in list(mod.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            shape = param.shape
            if name == "bias" or (name == "weight" and len(shape) == 1 and "norm" in type(mod).__name__.lower()):
                value = torch.zeros(shape) if name == "bias" else torch.ones(shape)
            elif len(shape) == 1:
                value = torch.ones(shape) if "norm" in name or "weight" in name else torch.zeros(shape)
            else:
                fan_in = math.prod(shape[1:]) if not isinstance(mod, torch.nn.Embedding) else 50
                # in place: a second float32 copy of T5's 32128 x 4096 embedding would be 0.5 GiB more peak
                value = torch.randn(shape, generator=generator).mul_(1.0 / math.sqrt(fan_in))
            mod._parameters[name] = torch.nn.Parameter(value.to(torch.bfloat16), requires_grad=False)
            freed += value.numel() * value.element_size()
            if freed > TRIM_EVERY:  # the heap keeps them (hardware.return_freed_host_memory says why)
                hardware.return_freed_host_memory()
                freed = 0
        for name, child in mod.named_children():
            fill(f"{prefix}.{name}" if prefix else name, child)
        if built is not None:
            built(prefix, mod)

    fill("", module)


def build_components(arch: Architecture, include_t5: bool = True, fast_init: bool = False,
                     precision: BuildPrecision | None = None) -> dict:
    """The nine components of a StableDiffusion3Pipeline for `arch`, random weights, nothing downloaded.

    With `precision` (fast_init only) the transformer and T5 are quantized block by block as they are built."""
    from diffusers import SD3Transformer2DModel

    clip_tok = build_clip_tokenizer()
    t5_tok = build_t5_tokenizer() if include_t5 else None

    def build(name, factory, seed):
        return _construct(factory, fast_init, seed, name, precision)

    components = {
        "transformer": build("transformer", lambda: SD3Transformer2DModel(**arch.transformer), 0),
        "text_encoder": build("text_encoder", lambda: clip_model(arch.clip_l, clip_tok, arch.clip_vocab), 1),
        "text_encoder_2": build("text_encoder_2", lambda: clip_model(arch.clip_g, clip_tok, arch.clip_vocab), 2),
        "text_encoder_3": (
            build("text_encoder_3", lambda: t5_model(arch.t5, t5_tok, arch.t5_vocab), 3) if include_t5 else None
        ),
        "tokenizer": clip_tok,
        "tokenizer_2": clip_tok,
        "tokenizer_3": t5_tok,
        "vae": build("vae", lambda: vae_model(arch), 4),
        "scheduler": _scheduler(),
    }
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        if components[name] is not None:
            components[name].eval().requires_grad_(False)
    return components


def random_architecture(arch_name: str, num_layers: int | None = None) -> Architecture:
    """A real architecture, optionally cut to its first `num_layers` transformer blocks."""
    arch = ARCHITECTURES[arch_name]
    if num_layers is None:
        return arch
    spec = dict(arch.transformer, num_layers=num_layers)
    # Medium's dual-attention blocks are its first 13; a shortened model keeps that prefix.
    spec["dual_attention_layers"] = tuple(i for i in arch.transformer["dual_attention_layers"] if i < num_layers)
    return Architecture(arch.name, arch.preset, spec)


def build_random_transformer(arch_name: str, num_layers: int | None = None):
    """Just the MMDiT of a real architecture, random bf16 weights: what memory and fidelity checks need."""
    from diffusers import SD3Transformer2DModel

    arch = random_architecture(arch_name, num_layers)
    return _construct(lambda: SD3Transformer2DModel(**arch.transformer), True, 0).eval().requires_grad_(False)


def build_random_pipeline(arch_name: str, num_layers: int | None, include_t5: bool,
                          precision: BuildPrecision | None = None):
    """A real-width SD3.5 pipeline with random weights, optionally cut to `num_layers` transformer blocks: bf16, or
    with `precision` in the plan's dtypes and FP8 layers, quantized block by block as it is built."""
    from diffusers import StableDiffusion3Pipeline

    arch = random_architecture(arch_name, num_layers)
    components = build_components(arch, include_t5=include_t5, fast_init=True, precision=precision)
    return StableDiffusion3Pipeline(**components)


def tiny_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"tiny-sd35-{TINY_VERSION}"


STALE_BUILD_S = 3600  # a build takes seconds; a temporary folder this old was left by a killed process


def remove_stale_builds(folder: Path, now: float | None = None) -> int:
    """Delete `.tiny-*` folders that a build killed mid-way (kill -9, power cut) left behind; returns how many.

    Young ones are kept: they may belong to a build running in another process right now.
    """
    import time

    now = time.time() if now is None else now
    removed = 0
    for tmp in Path(folder).glob(".tiny-*") if Path(folder).is_dir() else ():
        try:
            if tmp.is_dir() and now - tmp.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        except OSError:  # vanished meanwhile: its own process cleaned it
            continue
    if removed:
        log.info("removed %d temporary folder(s) of interrupted tiny builds in %s", removed, folder)
    return removed


def ensure_tiny(cache_dir: Path) -> Path:
    """Build the tiny pipeline once and save it as a diffusers folder (safetensors); return its path.

    Written to a temporary folder and renamed, so that a crash or a parallel process never leaves half a model.
    """
    from diffusers import StableDiffusion3Pipeline

    target = tiny_path(cache_dir)
    remove_stale_builds(target.parent)
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Building the tiny SD3.5-shaped model in %s (once, offline)", target)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        pipe = StableDiffusion3Pipeline(**build_components(TINY))
        pipe.save_pretrained(tmp, safe_serialization=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model_index.json").exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
