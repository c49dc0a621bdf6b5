"""Pre-quantized FP8 folders and ComfyUI scaled-FP8 single files: write, load, reproduce, refuse bad files."""

import gc
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CPU, FakeHubApi, forward, make_plan, tiny_transformer
from safetensors.torch import load_file, save_file

from fp8demo import prepare
from fp8demo.__main__ import main
from fp8demo.config import EngineConfig
from fp8demo.engine import Engine
from fp8demo.policy import Kind
from fp8demo.request import GenerationRequest
from fp8demo.tensors import is_fp8
from fp8demo.weights import comfy, fp8_format, quantize, random_models
from fp8demo.weights.sources import SourceKind

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


def _read(path):
    """Tensors and header metadata of a safetensors file (torchao's layout lives in the metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _rewrite_manifest(folder):
    manifest = json.loads((folder / fp8_format.MANIFEST).read_text())
    for rel, info in manifest["files"].items():
        info["bytes"] = (folder / rel).stat().st_size
        info["sha256"] = fp8_format._sha256(folder / rel)
    (folder / fp8_format.MANIFEST).write_text(json.dumps(manifest))


def test_folder_is_a_standard_diffusers_folder_with_a_manifest(quantized, tiny_config):
    from safetensors import safe_open

    manifest = json.loads((quantized / fp8_format.MANIFEST).read_text())
    assert manifest["format"] == fp8_format.FORMAT and manifest["source"]["model"] == "tiny"
    assert "per-row" in manifest["precision"]["scale_granularity"]
    assert manifest["precision"]["t5"] == manifest["precision"]["transformer_blocks"] == "fp8-weights"
    assert Kind.parse(manifest["precision"]["modulation"]) is Kind.FP8_WEIGHTS
    assert manifest["versions"]["torch"] and manifest["versions"]["diffusers"] and manifest["versions"]["torchao"]
    t = manifest["dtype_map"]["transformer"]
    assert t["float8_e4m3fn"]["tensors"] > 0 and t["bfloat16"]["tensors"] > 0
    for name in ("transformer", "text_encoder_3"):  # what save_pretrained writes for a torchao model
        config = json.loads((quantized / name / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "torchao", name
    path = quantized / "transformer" / "diffusion_pytorch_model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        layout = json.loads(f.metadata()["transformer_blocks.0.attn.to_q.weight"])
        assert layout["_type"] == "Float8Tensor" and layout["_data"]["block_size"] == [1, 32]  # per row
        assert f.get_tensor("transformer_blocks.0.attn.to_q._weight_qdata").dtype == torch.float8_e4m3fn
        assert f.get_tensor("transformer_blocks.0.attn.to_q._weight_scale").shape == (32, 1)
        assert f.get_tensor("context_embedder.weight").dtype == torch.bfloat16  # kept 16-bit, as the policy says
    assert not (quantized / fp8_format.ACTIVATION_SCALES).exists()  # no calibration asked
    for rel, info in manifest["files"].items():
        assert fp8_format._sha256(quantized / rel) == info["sha256"]
    # untouched components are copied file for file
    tiny = random_models.tiny_path(tiny_config.cache_dir)
    assert (quantized / "vae/diffusion_pytorch_model.safetensors").read_bytes() == (
        tiny / "vae/diffusion_pytorch_model.safetensors").read_bytes()


# Run in a fresh interpreter that imports diffusers and torchao only: the folder needs no fp8demo code. The image is
# made as fp8demo makes it on a CPU (VAE in float32, latents cast before scaling), to compare bit for bit.
_PLAIN_DIFFUSERS = """
import hashlib, sys

import numpy as np
import torch
import torchao  # noqa: F401  (what reads the FP8 tensors)
from diffusers import StableDiffusion3Pipeline

folder, prompt, seed, steps, guidance, side = sys.argv[1:]
pipe = StableDiffusion3Pipeline.from_pretrained(folder, dtype={"default": torch.bfloat16, "vae": torch.float32})
latents = pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance), width=int(side),
               height=int(side), generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="latent").images
vae = pipe.vae
with torch.inference_mode():
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor)[0]
image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
weight = pipe.transformer.transformer_blocks[0].attn.to_q.weight
t5 = pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight
print(type(weight).__name__, type(t5).__name__, sorted(m for m in sys.modules if m.startswith("fp8demo")),
      hashlib.sha256(np.asarray(image).tobytes()).hexdigest())
"""


def test_plain_diffusers_loads_the_folder_and_makes_the_same_image(quantized, tiny_config):
    import hashlib
    import subprocess
    import sys

    request = GenerationRequest("a lighthouse at dusk", seed=7, steps=2, guidance=4.5, width=256, height=256)
    args = [str(quantized), request.prompt, "7", "2", "4.5", "256"]
    run = subprocess.run([sys.executable, "-c", _PLAIN_DIFFUSERS, *args], capture_output=True, text=True,
                         timeout=600, cwd=quantized.parent)  # not the project folder: fp8demo is not importable
    assert run.returncode == 0, run.stderr[-3000:]
    weight_type, t5_type, fp8demo_modules, digest = run.stdout.strip().splitlines()[-1].split(" ", 3)
    assert (weight_type, t5_type, fp8demo_modules) == ("Float8Tensor", "Float8Tensor", "[]")
    engine = Engine(EngineConfig(model=str(quantized), cache_dir=tiny_config.cache_dir, warmup_runs=0), CPU).start()
    image = engine.generate(request).image
    assert hashlib.sha256(np.asarray(image).tobytes()).hexdigest() == digest  # bit for bit


def test_push_to_hub_uploads_the_verified_folder(quantized):
    api = FakeHubApi()
    url = fp8_format.push_to_hub(quantized, "me/sd35-tiny-fp8", private=True, api=api)
    assert url == "https://huggingface.co/me/sd35-tiny-fp8/commit/abc"
    (_, repo, options), (_, upload) = api.calls
    assert repo == "me/sd35-tiny-fp8" and options["private"] and options["exist_ok"]
    assert upload["folder_path"] == str(quantized) and upload["repo_type"] == "model"
    assert "tiny" in upload["commit_message"]


def test_push_to_hub_refuses_a_folder_that_fails_its_manifest(quantized, tmp_path):
    folder = _copy(quantized, tmp_path)
    (folder / "vae" / "config.json").write_text("{}")
    with pytest.raises(fp8_format.CheckpointError, match="truncated or replaced|sha256"):
        fp8_format.push_to_hub(folder, "me/x", api=object())


def test_quantize_push_to_hub_flag_publishes(tmp_path, capsys, cache_dir, monkeypatch):
    published = []
    monkeypatch.setattr(fp8_format, "push_to_hub", lambda folder, repo, token=None, private=False:
                        published.append((folder, repo, private)) or f"https://huggingface.co/{repo}/commit/1")
    out = tmp_path / "p"
    assert main(["quantize", "--model", "tiny", "--out", str(out), "--push-to-hub", "me/tiny-fp8"]) == 0
    assert published == [(out, "me/tiny-fp8", False)]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["published"].endswith("/commit/1")


def test_a_weight_only_folder_feeds_the_native_path_as_stored(quantized):
    """Written on a CPU (weight-only), loaded with the native plan of an FP8 GPU: the same bits gain FP8
    activations (and lose them again for a weight-only plan), no re-quantization."""
    from conftest import H100

    from fp8demo.weights import sources

    stored = sources.load_transformer(sources.resolve_model(str(quantized), CPU), _plan(CPU), EngineConfig())
    native = sources.load_transformer(sources.resolve_model(str(quantized), CPU), _plan(H100), EngineConfig())
    a, b = stored.transformer_blocks[0].attn.to_q.weight, native.transformer_blocks[0].attn.to_q.weight
    assert a.act_quant_kwargs is None and b.act_quant_kwargs is not None
    assert torch.equal(a.qdata.view(torch.uint8), b.qdata.view(torch.uint8)) and torch.equal(a.scale, b.scale)
    assert native.transformer_blocks[0].norm1.linear.weight.act_quant_kwargs is None  # modulation: weight-only
    bf16 = sources.load_transformer(sources.resolve_model(str(quantized), CPU), _plan(CPU, precision="bf16"),
                                    EngineConfig())
    assert not hasattr(bf16.transformer_blocks[0].attn.to_q.weight, "qdata")  # a 16-bit plan: dequantized


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
    native = quantize.fp8_parameter(q, s, Kind.FP8_MATMUL)
    storage = quantize.fp8_parameter(q, s, Kind.FP8_WEIGHTS)
    assert native.act_quant_kwargs is not None and storage.act_quant_kwargs is None
    assert torch.equal(native.qdata.view(torch.uint8), q.view(torch.uint8))  # as stored: no re-quantization
    assert torch.equal(native.scale, s)
    assert native.dtype == torch.bfloat16 and native.shape == (32, 64)


def test_quantize_reports_load_times_and_file_ratio(tmp_path, capsys, cache_dir):
    out = tmp_path / "t"
    assert main(["quantize", "--model", "tiny", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["load_quantized_folder_s"] > 0 and data["load_and_quantize_source_s"] > 0
    # tiny: the kept layers weigh a lot at width 32, and torchao's per-tensor layout notes in the safetensors header
    # are 17 % of this file (a few bytes against megabytes at real widths, below)
    assert data["transformer_file_ratio_vs_bf16"] < 0.65
    assert data["resident_bytes"] > 0 and data["published"] is None
    assert main(["quantize", "--model", "tiny", "--out", str(out)]) == 2  # never overwrites


def test_medium_width_transformer_file_is_at_most_052_of_bf16(tmp_path):
    tr = random_models.build_random_transformer("medium", 2)
    torch.nn.Module.to(tr, torch.bfloat16)
    bf16_bytes = sum(t.numel() * t.element_size() for t in tr.state_dict().values())
    plan = _plan(CPU)
    prepare.transformer(tr, plan)
    fp8_format.make_savable(tr, "transformer", plan)
    tr.save_pretrained(tmp_path)
    ratio = (tmp_path / "diffusion_pytorch_model.safetensors").stat().st_size / bf16_bytes
    assert ratio <= 0.52, ratio
    from diffusers import SD3Transformer2DModel

    again = SD3Transformer2DModel.from_pretrained(tmp_path, dtype=torch.bfloat16)  # plain diffusers reads it back
    w, stored = again.transformer_blocks[1].ff.net[2].weight, tr.transformer_blocks[1].ff.net[2].weight
    assert torch.equal(w.qdata.view(torch.uint8), stored.qdata.view(torch.uint8))
    assert torch.equal(w.scale, stored.scale)


def _safetensors_parts(path):
    """The header as data (safetensors writes its metadata in hash-map order, different in each process) and the
    tensor bytes that follow it."""
    import struct

    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_save_without_copies_writes_what_save_pretrained_writes(tmp_path):
    """The FP8 transformer and T5 saved through saved_without_copies: the same files as save_pretrained alone, and
    the flattened state dict holds the model's own tensors, not clones."""
    from fp8demo.weights import sources

    plan = _plan(CPU, t5="fp8")
    build = random_models.BuildPrecision(plan, sources.torch_dtypes(plan), 512)
    components = random_models.build_components(random_models.TINY, fast_init=True, precision=build)
    for name in ("transformer", "text_encoder_3"):
        module = components[name]
        fp8_format.make_savable(module, name, plan)
        module.save_pretrained(tmp_path / "library" / name, safe_serialization=True)
        with fp8_format.saved_without_copies(module):
            module.save_pretrained(tmp_path / "ours" / name, safe_serialization=True)
        assert "get_state_dict_and_metadata" not in vars(module.hf_quantizer)  # the library's method again
        files = sorted(p.name for p in (tmp_path / "library" / name).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "ours" / name).iterdir())
        for file in files:
            a, b = tmp_path / "library" / name / file, tmp_path / "ours" / name / file
            if file.endswith(".safetensors"):
                assert _safetensors_parts(a) == _safetensors_parts(b), (name, file)
            else:
                assert a.read_bytes() == b.read_bytes(), (name, file)
        own = {t.data_ptr() for p in module.state_dict().values()
               for t in ([p.qdata, p.scale] if is_fp8(p) else [p])}
        flat, _ = fp8_format._flatten_without_copies(module.state_dict())
        assert {t.data_ptr() for t in flat.values()} <= own, name


def test_truncated_file_is_refused_by_the_manifest(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(fp8_format.CheckpointError, match="truncated or replaced"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


def test_corrupt_file_with_matching_manifest_is_refused(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(b"\x00" * 16 + path.read_bytes()[16:])
    _rewrite_manifest(folder)
    with pytest.raises(fp8_format.CheckpointError, match="not a readable safetensors file"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


def test_changed_bytes_fail_the_sha256(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(fp8_format.CheckpointError, match="sha256"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()


def test_missing_scales_are_refused_and_nothing_stays_loaded(quantized, tmp_path, tiny_engine):
    from diffusers import SD3Transformer2DModel

    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state, metadata = _read(path)
    del state["transformer_blocks.1.ff.net.2._weight_scale"]
    save_file(state, str(path), metadata=metadata)
    _rewrite_manifest(folder)

    def alive():
        gc.collect()
        return sum(isinstance(o, SD3Transformer2DModel) for o in gc.get_objects())

    before = alive()
    with pytest.raises(fp8_format.CheckpointError, match="1 FP8 weights have no scale"):
        Engine(replace(tiny_engine.cfg, model=str(folder)), CPU).load()
    assert alive() == before  # the half-built transformer is gone


def test_weights_of_another_architecture_are_refused(quantized, tmp_path, tiny_engine):
    folder = _copy(quantized, tmp_path)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state, metadata = _read(path)
    state = {k.replace("transformer_blocks.1.", "transformer_blocks.7."): v for k, v in state.items()}
    metadata = {k.replace("transformer_blocks.1.", "transformer_blocks.7."): v.replace("transformer_blocks.1.",
                "transformer_blocks.7.") for k, v in metadata.items()}
    save_file(state, str(path), metadata=metadata)
    _rewrite_manifest(folder)
    with pytest.raises(fp8_format.CheckpointError, match="does not fit this architecture"):
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


def scaled_fp8(state: dict, prefix: str, layout: str = "legacy", skip=("pos_embed", "embed")) -> dict:
    """ComfyUI's FP8 files: 2-D Linear weights in float8_e4m3fn, each with one float32 scale for the tensor, as
    `scale_weight` (legacy) or as `weight_scale` plus a `comfy_quant` config (current)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2 and not any(s in key for s in skip):
            layer = prefix + key.removesuffix(".weight")
            scale = value.float().abs().max() / 448.0
            out[layer + ".weight"] = (value.float() / scale).to(torch.float8_e4m3fn)
            if layout == "legacy":
                out[layer + ".scale_weight"] = scale.reshape(())
            else:
                out[layer + ".weight_scale"] = scale.reshape(())
                out[layer + ".comfy_quant"] = _config_tensor({"format": "float8_e4m3fn"})
        else:
            out[prefix + key] = value.to(torch.bfloat16) if value.is_floating_point() else value
    return out


def _config_tensor(config) -> torch.Tensor:
    """A `.comfy_quant` entry as ComfyUI writes it: the UTF-8 bytes of its JSON in a uint8 tensor."""
    text = config if isinstance(config, str) else json.dumps(config)
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


@pytest.fixture(scope="module")
def comfy_sources(tiny_config):
    """The tiny pipeline's transformer (original MMDiT names) and text encoders, and the tiny folder."""
    from diffusers import StableDiffusion3Pipeline

    tiny = random_models.ensure_tiny(tiny_config.cache_dir)
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny, dtype=torch.bfloat16)
    t = pipe.transformer
    original = to_original_layout(t.state_dict(), t.config.num_layers, tuple(t.config.dual_attention_layers))
    texts = {}
    for name in comfy.TEXT_PREFIXES:
        state = getattr(pipe, name).state_dict()
        state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, stored once
        texts[name] = state
    return original, texts, tiny


def _write_comfy(folder, sources, layout: str):
    original, texts, tiny = sources
    file = scaled_fp8(original, comfy.PREFIX, layout)
    if layout == "legacy":
        file["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    else:
        file[comfy.PREFIX + "joint_blocks.0.x_block.attn.qkv.input_scale"] = torch.tensor(0.05)  # static, unused
    for name, prefix in comfy.TEXT_PREFIXES.items():
        file.update(scaled_fp8(texts[name], prefix, layout))
    path = folder / f"sd3.5_tiny_fp8_{layout}.safetensors"
    save_file({k: v.contiguous() for k, v in file.items()}, str(path))
    return path, tiny


@pytest.fixture(scope="module")
def comfy_file(tmp_path_factory, comfy_sources):
    return _write_comfy(tmp_path_factory.mktemp("comfy"), comfy_sources, "legacy")


@pytest.fixture(scope="module")
def comfy_current_file(tmp_path_factory, comfy_sources):
    return _write_comfy(tmp_path_factory.mktemp("comfy"), comfy_sources, "current")


def test_comfy_file_reproduces_the_tiny_transformer(comfy_file, tiny_config):
    path, _ = comfy_file
    loaded = comfy.load_transformer(path, head_dim=8)
    reference = tiny_transformer(tiny_config.cache_dir)
    ref = forward(reference, 512)
    out = forward(loaded, 512)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.float().flatten(), dim=0).item()
    assert cos > 0.995, cos

    # the trap the scales avoid: casting the FP8 weights without them
    raw = load_file(str(path))
    ignored = {k: v.to(torch.bfloat16) for k, v in raw.items()
               if k.startswith(comfy.PREFIX) and not k.endswith(".scale_weight")}
    ignored["scaled_fp8"] = raw["scaled_fp8"]
    bad = path.with_name("unscaled.safetensors")
    save_file({k: v.contiguous() for k, v in ignored.items()}, str(bad))
    wrong = forward(comfy.load_transformer(bad, head_dim=8), 512)
    bad_cos = torch.nn.functional.cosine_similarity(wrong.float().flatten(), ref.float().flatten(), dim=0).item()
    assert bad_cos < 0.9 and wrong.float().abs().mean() > 5 * ref.float().abs().mean(), bad_cos


def test_comfy_file_runs_through_the_fp8_path_end_to_end(comfy_file, tiny_engine_bf16):
    path, tiny = comfy_file
    cfg = EngineConfig(model=str(path), base=str(tiny), cache_dir=tiny_engine_bf16.cfg.cache_dir)
    engine = Engine(cfg, CPU).start()
    assert engine.source.kind is SourceKind.SINGLE_FILE
    # the file's FP8 data and per-tensor scales, used as stored (the precision policy quantizes nothing again)
    w = engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert w.qdata.dtype == torch.float8_e4m3fn and w.scale.numel() == 1
    t5_w = engine.pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight
    assert t5_w.qdata.dtype == torch.float8_e4m3fn and t5_w.scale.numel() == 1  # the T5 inside the file, FP8 storage
    assert not hasattr(engine.pipe.text_encoder.text_model.encoder.layers[0].mlp.fc1.weight, "qdata")  # CLIP: 16-bit
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
    with pytest.raises(fp8_format.CheckpointError, match="scale_weight is missing"):
        comfy.load_transformer(tmp_path / "a.safetensors")
    flux_like = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.zeros(96, 32)}
    save_file(flux_like, str(tmp_path / "b.safetensors"))
    with pytest.raises(fp8_format.CheckpointError, match="not an SD3/SD3.5"):
        comfy.load_transformer(tmp_path / "b.safetensors")
    (tmp_path / "c.safetensors").write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(fp8_format.CheckpointError, match="truncated or corrupt"):
        comfy.load_transformer(tmp_path / "c.safetensors")


def test_unknown_single_file_family_needs_base(tmp_path):
    from fp8demo.errors import UserError

    path = tmp_path / "mystery.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(UserError, match="--base"):
        Engine(EngineConfig(model=str(path)), CPU).load()



def _plan(caps, **options):
    return make_plan(caps, **options)


def _cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


@pytest.mark.parametrize("layout", ["legacy", "current"])
def test_comfy_fp8_weights_stay_per_tensor_as_stored(layout, comfy_file, comfy_current_file):
    path, _ = comfy_file if layout == "legacy" else comfy_current_file
    raw = load_file(str(path))
    scale_suffix = ".scale_weight" if layout == "legacy" else ".weight_scale"
    loaded = comfy.load_transformer(path, head_dim=8, plan=_plan(CPU))  # FP8 storage, bf16 compute
    blocks = loaded.transformer_blocks
    x, c = comfy.PREFIX + "joint_blocks.1.x_block.", comfy.PREFIX + "joint_blocks.1.context_block."
    # to_k is the middle third of the fused qkv rows; the last context block's AdaLN weight has its halves swapped
    for weight, stored, scale in (
        (blocks[1].attn.to_k.weight, raw[x + "attn.qkv.weight"].chunk(3)[1], raw[x + "attn.qkv" + scale_suffix]),
        (blocks[1].norm1_context.linear.weight, torch.cat(raw[c + "adaLN_modulation.1.weight"].chunk(2)[::-1]),
         raw[c + "adaLN_modulation.1" + scale_suffix]),
    ):
        assert weight.qdata.dtype == torch.float8_e4m3fn
        assert weight.block_size == list(weight.shape) and weight.scale.shape == (1, 1)  # per-tensor granularity
        assert torch.equal(weight.qdata.view(torch.uint8), stored.view(torch.uint8))  # the file's bits
        assert weight.scale.item() == scale.item()  # and its scale
    # layers the policy keeps 16-bit are dequantized, not left in FP8
    assert loaded.proj_out.weight.dtype == torch.bfloat16 and not hasattr(loaded.proj_out.weight, "qdata")

    reference = comfy.load_transformer(path, head_dim=8)  # no plan: every weight dequantized, fp8 * scale
    assert {p.dtype for p in reference.parameters()} == {torch.bfloat16}
    assert _cosine(forward(loaded, 256), forward(reference, 256)) > 0.999


def test_comfy_per_tensor_weights_run_native_fp8_matmuls(comfy_current_file):
    """On an FP8 GPU the block Linears quantize their activations too: per tensor, to pair with per-tensor weights
    (torch._scaled_mm runs that pairing on this CPU too, so the path is exercised here)."""
    from conftest import H100

    path, _ = comfy_current_file
    native = comfy.load_transformer(path, head_dim=8, plan=_plan(H100))
    w = native.transformer_blocks[0].attn.to_q.weight
    assert w.act_quant_kwargs is not None and type(w.act_quant_kwargs.granularity).__name__ == "PerTensor"
    assert native.transformer_blocks[0].norm1.linear.weight.act_quant_kwargs is None  # modulation: weight-only
    reference = comfy.load_transformer(path, head_dim=8)
    assert _cosine(forward(native, 256), forward(reference, 256)) > 0.99


def test_comfy_per_tensor_scales_are_not_requantized(comfy_file, comfy_sources, tiny_config):
    """The loaded weights carry exactly the file's own rounding error; re-quantizing them per row (the old path:
    dequantize to bf16, then the precision policy's per-row FP8) would add a second rounding on top."""
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import Float8Tensor

    path, _ = comfy_file
    raw, original = load_file(str(path)), comfy_sources[0]
    file_error = norm = 0.0  # the file's own error, measured in its own (original MMDiT) layout
    for key, w in original.items():
        if key.startswith("joint_blocks.") and raw[comfy.PREFIX + key].dtype == torch.float8_e4m3fn:
            scale = raw[comfy.PREFIX + key.removesuffix(".weight") + ".scale_weight"]
            file_error += (raw[comfy.PREFIX + key].float() * scale - w.float()).pow(2).sum().item()
            norm += w.float().pow(2).sum().item()

    reference = dict(tiny_transformer(tiny_config.cache_dir).named_modules())
    loaded = comfy.load_transformer(path, head_dim=8, plan=_plan(CPU))
    kept = requantized = 0.0
    for name, module in loaded.named_modules():
        if hasattr(getattr(module, "weight", None), "qdata"):
            w = reference[name].weight.float()
            stored = module.weight.dequantize(torch.float32)
            per_row = Float8Tensor.from_hp(stored.to(torch.bfloat16), granularity=PerRow()).dequantize()
            kept += (stored - w).pow(2).sum().item()
            requantized += (per_row.float() - w).pow(2).sum().item()
    assert kept == pytest.approx(file_error, rel=1e-5)  # every block weight FP8, with the file's error and no more
    kept, requantized = (kept / norm) ** 0.5, (requantized / norm) ** 0.5
    print(f"relative weight error: per-tensor as stored {kept:.5f}, re-quantized per row {requantized:.5f}")
    assert requantized > 1.03 * kept  # tiny's narrow layers: +6 %; a real-width random:medium block: +52 %


def _rewrite(path, tmp_path, name, change, metadata=None):
    state = load_file(str(path))
    change(state)
    target = tmp_path / name
    save_file(state, str(target), metadata=metadata)
    return target


LAYER = comfy.PREFIX + "joint_blocks.0.x_block.mlp.fc1"


@pytest.mark.parametrize("name, change, message", [
    ("no-scale", lambda s: s.pop(LAYER + ".weight_scale"), "fc1.weight_scale is missing"),
    ("bad-json", lambda s: s.update({LAYER + ".comfy_quant": _config_tensor('{"format": float8')}),
     "fc1.comfy_quant is not valid JSON"),
    ("unknown-format", lambda s: s.update({LAYER + ".comfy_quant": _config_tensor({"format": "nvfp4"})}),
     "quantization format 'nvfp4'"),
    ("no-format", lambda s: s.update({LAYER + ".comfy_quant": _config_tensor({"group_size": 128})}),
     "quantization format None"),
    ("wrong-dtype", lambda s: s.update({LAYER + ".comfy_quant": _config_tensor({"format": "float8_e5m2"})}),
     "stored as torch.float8_e4m3fn but its config says float8_e5m2"),
    ("row-scales", lambda s: s.update({LAYER + ".weight_scale": torch.ones(128, 1)}), "holds 128 values"),
])
def test_malformed_current_comfy_files_are_refused_with_the_reason(comfy_current_file, tmp_path, name, change,
                                                                   message):
    from fp8demo.errors import UserError

    bad = _rewrite(comfy_current_file[0], tmp_path, f"{name}.safetensors", change)
    with pytest.raises(fp8_format.CheckpointError, match=message) as info:
        comfy.load_transformer(bad, head_dim=8)
    assert isinstance(info.value, UserError)


def test_layer_configs_in_the_header_are_read_like_comfy_quant_tensors(comfy_current_file, tmp_path):
    path, _ = comfy_current_file
    layers = {}

    def move_configs_to_header(state):
        for key in [k for k in state if k.endswith(".comfy_quant")]:
            layers[key.removesuffix(".comfy_quant")] = json.loads(state.pop(key).numpy().tobytes())

    moved = _rewrite(path, tmp_path, "header.safetensors", move_configs_to_header)
    header = _rewrite(moved, tmp_path, "header2.safetensors", lambda s: None,
                      metadata={"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})})
    w = comfy.load_transformer(header, head_dim=8, plan=_plan(CPU)).transformer_blocks[0].ff.net[0].proj.weight
    assert w.qdata.dtype == torch.float8_e4m3fn and w.scale.numel() == 1
    broken = _rewrite(moved, tmp_path, "header3.safetensors", lambda s: None,
                      metadata={"_quantization_metadata": json.dumps({"layers": {LAYER: {"format": "int8"}}})})
    with pytest.raises(fp8_format.CheckpointError, match="format 'int8'"):
        comfy.load_transformer(broken, head_dim=8)
