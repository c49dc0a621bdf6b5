"""Pre-quantized FP8 folders and ComfyUI scaled-FP8 single files: write, load, reproduce, refuse bad files."""

import gc
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CPU
from safetensors.torch import load_file, save_file
from test_fp8 import _forward, _tiny_transformer

from fp8demo import builders, checkpoint, comfy
from fp8demo.__main__ import main
from fp8demo.config import EngineConfig
from fp8demo.engine import Engine
from fp8demo.request import GenerationRequest

# ---------------------------------------------------------------------------------------------------------------
# fp8demo folders


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("q") / "tiny-fp8"
    assert main(["quantize", "--model", "tiny", "--out", str(out), "--t5", "fp8"]) == 0
    return out


def _copy(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def _rewrite_manifest(folder):
    manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
    for rel, info in manifest["files"].items():
        info["bytes"] = (folder / rel).stat().st_size
        info["sha256"] = checkpoint._sha256(folder / rel)
    (folder / checkpoint.MANIFEST).write_text(json.dumps(manifest))


def test_folder_layout_and_manifest(quantized, tiny_config):
    manifest = json.loads((quantized / checkpoint.MANIFEST).read_text())
    assert manifest["format"] == checkpoint.FORMAT and manifest["source"]["model"] == "tiny"
    assert "per-row" in manifest["precision"]["scale_granularity"]
    assert manifest["precision"]["t5"] == "float8_e4m3fn weights"
    assert manifest["versions"]["torch"] and manifest["versions"]["diffusers"]
    t = manifest["dtype_map"]["transformer"]
    assert t["float8_e4m3fn"]["tensors"] > 0 and t["float32"]["tensors"] == t["float8_e4m3fn"]["tensors"]
    state = load_file(str(quantized / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert state["transformer_blocks.0.attn.to_q.weight"].dtype == torch.float8_e4m3fn
    assert state["transformer_blocks.0.attn.to_q.weight_scale"].shape == (32, 1)
    assert state["context_embedder.weight"].dtype == torch.bfloat16  # kept 16-bit, as the policy says
    for rel, info in manifest["files"].items():
        assert checkpoint._sha256(quantized / rel) == info["sha256"]
    # untouched components are copied file for file
    tiny = builders.tiny_path(tiny_config.cache_dir)
    assert (quantized / "vae/diffusion_pytorch_model.safetensors").read_bytes() == (
        tiny / "vae/diffusion_pytorch_model.safetensors").read_bytes()


def test_loading_skips_quantization_and_gives_the_same_image(quantized, tiny_engine, monkeypatch):
    import torchao.quantization

    def refuse(*args, **kwargs):
        raise AssertionError("a quantized folder must not be quantized again")

    monkeypatch.setattr(torchao.quantization, "quantize_", refuse)
    engine = Engine(replace(tiny_engine.cfg, model=str(quantized)), CPU).start()
    weight = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert weight.qdata.dtype == torch.float8_e4m3fn and weight.act_quant_kwargs is None  # storage path here
    assert engine.report.transformer_bytes == tiny_engine.report.transformer_bytes
    request = GenerationRequest("a cat on a windowsill", seed=11, steps=2)
    a = np.asarray(engine.generate(request).image)
    b = np.asarray(tiny_engine.generate(request).image)
    assert np.array_equal(a, b)  # identical to quantizing in memory


def test_native_parameters_carry_dynamic_activation_settings():
    q = torch.randn(32, 64).to(torch.float8_e4m3fn)
    s = torch.rand(32, 1) + 0.5
    native = checkpoint.fp8_parameter(q, s, native=True)
    storage = checkpoint.fp8_parameter(q, s, native=False)
    assert native.act_quant_kwargs is not None and storage.act_quant_kwargs is None
    assert torch.equal(native.qdata.view(torch.uint8), q.view(torch.uint8))  # as stored: no re-quantization
    assert torch.equal(native.scale, s)
    assert native.dtype == torch.bfloat16 and native.shape == (32, 64)


def test_quantize_reports_load_times_and_file_ratio(tmp_path, capsys, cache_dir):
    out = tmp_path / "t"
    assert main(["quantize", "--model", "tiny", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["load_quantized_folder_s"] > 0 and data["load_and_quantize_source_s"] > 0
    assert data["transformer_file_ratio_vs_bf16"] < 0.6  # tiny: the kept layers weigh a lot at width 32
    assert main(["quantize", "--model", "tiny", "--out", str(out)]) == 2  # never overwrites


def test_medium_width_transformer_file_is_at_most_052_of_bf16(tmp_path):
    tr = builders.build_random_transformer("medium", 2)
    torch.nn.Module.to(tr, torch.bfloat16)
    bf16_bytes = sum(t.numel() * t.element_size() for t in tr.state_dict().values())
    from fp8demo.precision import PrecisionOptions, crop_positional_table, plan_precision, quantize_transformer

    crop_positional_table(tr, 1536)
    quantize_transformer(tr, plan_precision(PrecisionOptions(), CPU))
    checkpoint._write_module(tr, tmp_path, "w.safetensors")
    ratio = (tmp_path / "w.safetensors").stat().st_size / bf16_bytes
    assert ratio <= 0.52, ratio


def test_truncated_file_is_refused_by_the_manifest(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or replaced"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


def test_corrupt_file_with_matching_manifest_is_refused(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(b"\x00" * 16 + path.read_bytes()[16:])
    _rewrite_manifest(folder)
    with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors file"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


def test_changed_bytes_fail_the_sha256(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="sha256"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


def test_missing_scales_are_refused_and_nothing_stays_loaded(quantized, tmp_path, tiny_engine):
    from diffusers import SD3Transformer2DModel

    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    del state["transformer_blocks.1.ff.net.2.weight_scale"]
    save_file(state, str(path))
    _rewrite_manifest(folder)

    def alive():
        gc.collect()
        return sum(isinstance(o, SD3Transformer2DModel) for o in gc.get_objects())

    before = alive()
    with pytest.raises(checkpoint.CheckpointError, match="1 FP8 weights have no scale"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()
    assert alive() == before  # the half-built transformer is gone


def test_weights_of_another_architecture_are_refused(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state = {k.replace("transformer_blocks.1.", "transformer_blocks.7."): v for k, v in state.items()}
    save_file(state, str(path))
    _rewrite_manifest(folder)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this architecture"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


# ---------------------------------------------------------------------------------------------------------------
# ComfyUI scaled FP8


def _swap(w):
    a, b = w.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_original_layout(sd: dict, num_layers: int, dual: tuple) -> dict:
    """diffusers SD3 names -> the original MMDiT names ComfyUI files use (the inverse of diffusers' converter)."""
    o = {"pos_embed": sd["pos_embed.pos_embed"]}
    pairs = {"x_embedder.proj": "pos_embed.proj", "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
             "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2", "context_embedder": "context_embedder",
             "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
             "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2", "final_layer.linear": "proj_out"}
    for new, old in pairs.items():
        for p in ("weight", "bias"):
            o[f"{new}.{p}"] = sd[f"{old}.{p}"]
    for p in ("weight", "bias"):
        o[f"final_layer.adaLN_modulation.1.{p}"] = _swap(sd[f"norm_out.linear.{p}"])
    for i in range(num_layers):
        last = i == num_layers - 1
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        for p in ("weight", "bias"):
            o[x + f"attn.qkv.{p}"] = torch.cat([sd[b + f"attn.to_{n}.{p}"] for n in "qkv"])
            o[c + f"attn.qkv.{p}"] = torch.cat([sd[b + f"attn.add_{n}_proj.{p}"] for n in "qkv"])
            o[x + f"attn.proj.{p}"] = sd[b + f"attn.to_out.0.{p}"]
            o[x + f"adaLN_modulation.1.{p}"] = sd[b + f"norm1.linear.{p}"]
            mod = sd[b + f"norm1_context.linear.{p}"]
            o[c + f"adaLN_modulation.1.{p}"] = _swap(mod) if last else mod
            o[x + f"mlp.fc1.{p}"] = sd[b + f"ff.net.0.proj.{p}"]
            o[x + f"mlp.fc2.{p}"] = sd[b + f"ff.net.2.{p}"]
            if not last:
                o[c + f"attn.proj.{p}"] = sd[b + f"attn.to_add_out.{p}"]
                o[c + f"mlp.fc1.{p}"] = sd[b + f"ff_context.net.0.proj.{p}"]
                o[c + f"mlp.fc2.{p}"] = sd[b + f"ff_context.net.2.{p}"]
            if i in dual:
                o[x + f"attn2.qkv.{p}"] = torch.cat([sd[b + f"attn2.to_{n}.{p}"] for n in "qkv"])
                o[x + f"attn2.proj.{p}"] = sd[b + f"attn2.to_out.0.{p}"]
        for src, dst in (("attn.norm_q", x + "attn.ln_q"), ("attn.norm_k", x + "attn.ln_k"),
                         ("attn.norm_added_q", c + "attn.ln_q"), ("attn.norm_added_k", c + "attn.ln_k")):
            o[dst + ".weight"] = sd[b + src + ".weight"]
        if i in dual:
            o[x + "attn2.ln_q.weight"] = sd[b + "attn2.norm_q.weight"]
            o[x + "attn2.ln_k.weight"] = sd[b + "attn2.norm_k.weight"]
    return o


def scaled_fp8(state: dict, prefix: str, skip=("pos_embed", "embed")) -> dict:
    """ComfyUI's scaled FP8: 2-D Linear weights in float8_e4m3fn with a float32 per-tensor scale_weight."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2 and not any(s in key for s in skip):
            scale = value.float().abs().max() / 448.0
            out[prefix + key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[prefix + key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
        else:
            out[prefix + key] = value.to(torch.bfloat16) if value.is_floating_point() else value
    return out


@pytest.fixture(scope="module")
def comfy_file(tmp_path_factory, tiny_config):
    from diffusers import StableDiffusion3Pipeline

    tiny = builders.ensure_tiny(tiny_config.cache_dir)
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny, dtype=torch.bfloat16)
    t = pipe.transformer
    original = to_original_layout(t.state_dict(), t.config.num_layers, tuple(t.config.dual_attention_layers))
    file = scaled_fp8(original, "model.diffusion_model.")
    file["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    for name, prefix in comfy.TEXT_PREFIXES.items():
        state = getattr(pipe, name).state_dict()
        state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, stored once
        file.update(scaled_fp8(state, prefix))
    path = tmp_path_factory.mktemp("comfy") / "sd3.5_tiny_fp8_scaled.safetensors"
    save_file({k: v.contiguous() for k, v in file.items()}, str(path))
    return path, tiny


def test_comfy_file_reproduces_the_tiny_transformer(comfy_file, tiny_config):
    path, _ = comfy_file
    loaded = comfy.load_transformer(path, head_dim=8)
    reference = _tiny_transformer(tiny_config)
    ref = _forward(reference, 512)
    out = _forward(loaded, 512)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.float().flatten(), dim=0).item()
    assert cos > 0.995, cos

    # the trap the scales avoid: casting the FP8 weights without them
    raw = load_file(str(path))
    ignored = {k: v.to(torch.bfloat16) for k, v in raw.items()
               if k.startswith(comfy.PREFIX) and not k.endswith(".scale_weight")}
    ignored["scaled_fp8"] = raw["scaled_fp8"]
    bad = path.with_name("unscaled.safetensors")
    save_file({k: v.contiguous() for k, v in ignored.items()}, str(bad))
    wrong = _forward(comfy.load_transformer(bad, head_dim=8), 512)
    bad_cos = torch.nn.functional.cosine_similarity(wrong.float().flatten(), ref.float().flatten(), dim=0).item()
    assert bad_cos < 0.9 and wrong.float().abs().mean() > 5 * ref.float().abs().mean(), bad_cos


def test_comfy_file_runs_through_the_fp8_path_end_to_end(comfy_file, tiny_engine_bf16):
    path, tiny = comfy_file
    cfg = EngineConfig(model=str(path), base=str(tiny), cache_dir=tiny_engine_bf16.cfg.cache_dir)
    engine = Engine(cfg, CPU).start()
    assert engine.source.kind == "single-file"
    w = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert w.qdata.dtype == torch.float8_e4m3fn  # re-quantized per row by the precision policy
    t5_w = engine.pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight
    assert t5_w.qdata.dtype == torch.float8_e4m3fn  # the T5 inside the file, scales applied, then FP8 storage
    request = GenerationRequest("a red fox", seed=4, steps=2, guidance=0.0, width=512, height=512)
    a = np.asarray(engine.generate(request).image).astype(float)
    b = np.asarray(tiny_engine_bf16.generate(request).image).astype(float)
    assert np.abs(a - b).mean() < 8.0  # the same model, through two FP8 roundings


def test_comfy_file_without_scales_or_of_another_model_is_refused(comfy_file, tmp_path):
    path, _ = comfy_file
    raw = load_file(str(path))
    key = "model.diffusion_model.joint_blocks.0.x_block.mlp.fc1.scale_weight"
    no_scale = {k: v for k, v in raw.items() if k != key}
    save_file(no_scale, str(tmp_path / "a.safetensors"))
    with pytest.raises(checkpoint.CheckpointError, match="scale_weight is missing"):
        comfy.load_transformer(tmp_path / "a.safetensors")
    flux_like = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.zeros(96, 32)}
    save_file(flux_like, str(tmp_path / "b.safetensors"))
    with pytest.raises(checkpoint.CheckpointError, match="not an SD3/SD3.5"):
        comfy.load_transformer(tmp_path / "b.safetensors")
    (tmp_path / "c.safetensors").write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
        comfy.load_transformer(tmp_path / "c.safetensors")


def test_unknown_single_file_family_needs_base(tmp_path):
    from fp8demo.errors import UserError

    path = tmp_path / "mystery.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(UserError, match="--base"):
        Engine(EngineConfig(model=str(path)), CPU).load()

