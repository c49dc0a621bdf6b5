"""FP8 really in effect: which tensors are float8_e4m3fn, which stay 16-bit, fidelity and memory."""

import copy

import pytest
import torch
from conftest import CPU, forward, make_plan, tiny_transformer

from fp8demo.tensors import module_bytes
from fp8demo.weights import footprint, pos_table, quantize, random_models

E4M3 = torch.float8_e4m3fn


def _storage(weight) -> torch.dtype:
    return weight.qdata.dtype if hasattr(weight, "qdata") else weight.dtype


def test_block_linears_are_fp8_and_kept_layers_16bit(tiny_engine):
    tr = tiny_engine.pipe.transformer
    blocks = {n: m for n, m in tr.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, module in blocks.items():
        if name.startswith("transformer_blocks."):
            assert _storage(module.weight) == E4M3, name
            assert module.weight.scale.shape == (module.weight.shape[0], 1), "per-row scales"
        else:
            assert _storage(module.weight) == torch.bfloat16, name
    for kept in ("pos_embed", "time_text_embed", "context_embedder", "norm_out", "proj_out"):
        params = list(getattr(tr, kept).parameters())
        assert params and all(p.dtype == torch.bfloat16 for p in params), kept
    for name in ("text_encoder", "text_encoder_2"):
        assert {p.dtype for p in getattr(tiny_engine.pipe, name).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_engine.pipe.vae.parameters()} == {torch.float32}  # CPU policy
    t5_linears = [m for m in tiny_engine.pipe.text_encoder_3.modules() if isinstance(m, torch.nn.Linear)]
    assert t5_linears and all(_storage(m.weight) == E4M3 for m in t5_linears)  # --t5 auto under fp8


def test_report_counts_fp8_linears(tiny_engine):
    report = tiny_engine.report.as_dict()
    tr = report["components"]["transformer"]
    n_blocks = len(tiny_engine.pipe.transformer.transformer_blocks)
    assert tr["fp8_linears"] > 0 and tr["fp8_linears"] < tr["linears"]
    # outside the blocks: context_embedder, time_text_embed (4), norm_out.linear, proj_out
    assert tr["linears"] - tr["fp8_linears"] == 7
    assert n_blocks == 2
    assert report["components"]["vae"]["fp8_linears"] == 0
    assert set(tr["storage"]) == {"bfloat16", "float8_e4m3fn"}
    assert report["transformer_bytes"] == sum(tr["storage"].values())


def test_modulation_bf16_keeps_adaln_16bit(tiny_config):
    tr = tiny_transformer(tiny_config.cache_dir)
    plan = make_plan(CPU, modulation="bf16")
    quantize.quantize(tr, "transformer", plan)
    for name, m in tr.named_modules():
        if isinstance(m, torch.nn.Linear) and name.startswith("transformer_blocks."):
            is_mod = name.endswith(("norm1.linear", "norm1_context.linear"))
            assert _storage(m.weight) == (torch.bfloat16 if is_mod else E4M3), name


def test_positional_crop_is_bit_identical_and_bounded(tiny_config):
    full = tiny_transformer(tiny_config.cache_dir)
    cropped = copy.deepcopy(full)
    assert pos_table.crop(cropped, 1536) == (128, 96)
    assert cropped.pos_embed.pos_embed.shape[1] == 96 * 96
    for side in (256, 512, 1536):  # small, default and the largest served
        assert torch.equal(forward(full, side), forward(cropped, side)), side
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        forward(cropped, 1552)  # beyond the crop: diffusers refuses instead of reading garbage
    assert pos_table.crop(cropped, 1536) is None  # idempotent


def test_odd_difference_crop_keeps_parity():
    # a table of 10 cropped to cover 7 patches keeps 8: 10 - 8 is even, so offsets compose exactly
    class PE(torch.nn.Module):
        pos_embed_max_size = 10

        def __init__(self):
            super().__init__()
            self.register_buffer("pos_embed", torch.arange(100.0).reshape(1, 100, 1))

    class T(torch.nn.Module):
        class config:
            patch_size = 2

        def __init__(self):
            super().__init__()
            self.pos_embed = PE()

    t = T()
    assert pos_table.crop(t, 7 * 16) == (10, 8)
    assert t.pos_embed.pos_embed.reshape(8, 8)[0, 0].item() == 11.0  # row 1, column 1 of the original


@pytest.mark.parametrize("old, patch, max_side", [(48, 2, 512), (40, 2, 400), (30, 1, 120), (24, 2, 2048)])
def test_central_positional_table_is_the_crop_of_the_whole_one(old, patch, max_side):
    """Computing only the kept centre gives the same float32 values as diffusers' whole table, then cropped."""
    from diffusers.models.embeddings import PatchEmbed

    pe = PatchEmbed(height=32, width=32, patch_size=patch, in_channels=4, embed_dim=24, pos_embed_max_size=old)
    side = pos_table.cropped_side(old, patch, max_side) or old
    start = (old - side) // 2
    whole = pe.pos_embed.reshape(1, old, old, 24)
    crop = whole[:, start : start + side, start : start + side].reshape(1, side * side, 24)
    assert torch.equal(pos_table.central_table(pe, side), crop)


def test_random_build_computes_only_the_cropped_table():
    """A build with a precision plan constructs the transformer on `meta` (the whole table is never computed) and
    ends with the same table as building it whole and cropping, in the same dtype."""
    from diffusers import SD3Transformer2DModel

    spec = dict(random_models.TINY.transformer, pos_embed_max_size=48)  # tiny's 128 needs no crop at 512 px
    build = random_models.BuildPrecision(make_plan(CPU), {"default": torch.bfloat16}, 512)
    built = random_models._construct(lambda: SD3Transformer2DModel(**spec), True, 0, "transformer", build)
    whole = random_models._construct(lambda: SD3Transformer2DModel(**spec), True, 0)
    assert pos_table.crop(whole, 512) == (48, 32) == built.pos_embed_crop
    assert built.config.pos_embed_max_size == whole.config.pos_embed_max_size == 32
    assert torch.equal(built.pos_embed.pos_embed, whole.pos_embed.pos_embed.to(torch.bfloat16))
    assert not any(t.is_meta for t in [*built.parameters(), *built.buffers()])


@pytest.fixture(scope="module")
def medium2():
    tr = random_models.build_random_transformer("medium", 2)
    torch.nn.Module.to(tr, torch.bfloat16)
    pos_table.crop(tr, 1536)
    return tr


def test_fp8_output_close_to_bf16_on_medium_width(medium2):
    ref = forward(medium2, 256)
    for modulation in ("fp8", "bf16"):
        q = copy.deepcopy(medium2)
        quantize.quantize(q, "transformer", make_plan(CPU, modulation=modulation))
        out = forward(q, 256)
        cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.float().flatten(), dim=0).item()
        assert cos >= 0.99, (modulation, cos)
        assert not torch.equal(out, ref)  # FP8 really changed the weights


def test_estimate_is_exact_on_medium_width(medium2):
    for options in ({}, {"modulation": "bf16"}, {"precision": "bf16"}):
        plan = make_plan(CPU, **options)
        q = copy.deepcopy(medium2)
        estimate = footprint.component_bytes("transformer", q, plan.max_side).under(plan.kinds)
        quantize.quantize(q, "transformer", plan)
        assert estimate == module_bytes(q), options


def _meta_transformer(arch):
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    with init_empty_weights(include_buffers=True):
        tr = SD3Transformer2DModel(**random_models.ARCHITECTURES[arch].transformer)
    return torch.nn.Module.to(tr, torch.bfloat16)


@pytest.mark.parametrize("arch, ratio_fp8, ratio_mod16", [("medium", 0.51, 0.72), ("large", 0.51, 0.69)])
def test_full_size_fp8_transformer_is_at_most_half_of_bf16(arch, ratio_fp8, ratio_mod16):
    """Full Medium (2.5B) and Large (8.1B) on the meta device: the byte arithmetic checked exact above, at scale."""
    tr = _meta_transformer(arch)

    def size(**options):
        plan = make_plan(CPU, **options)
        return footprint.component_bytes("transformer", tr, plan.max_side).under(plan.kinds)

    bf16 = size(precision="bf16")
    assert size() / bf16 <= ratio_fp8
    assert size(modulation="bf16") / bf16 <= ratio_mod16  # the quality option costs memory, measured here
    assert size(modulation="bf16") / bf16 > 0.6
