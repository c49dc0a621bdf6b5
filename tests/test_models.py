"""Model sources: name resolution, the offline tiny model through the real loading path, and access errors."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CPU, H100, make_plan

from fp8demo import config
from fp8demo.errors import ModelAccessError, UserError
from fp8demo.weights import random_models
from fp8demo.weights.sources import SourceKind, explain_load_error, load_pipeline, resolve_model


def test_auto_is_large_turbo_on_cuda_and_tiny_with_a_notice_elsewhere():
    gpu = resolve_model("auto", H100)
    assert gpu.kind is SourceKind.REPO and gpu.location == "stabilityai/stable-diffusion-3.5-large-turbo"
    assert (gpu.preset.steps, gpu.preset.guidance) == (4, 0.0)
    cpu = resolve_model("auto", CPU)
    assert cpu.kind is SourceKind.TINY and cpu.random_weights
    assert "noise" in cpu.notice and "HF_TOKEN" in cpu.notice


@pytest.mark.parametrize(
    "name, repo, steps, guidance",
    [
        ("large-turbo", "stabilityai/stable-diffusion-3.5-large-turbo", 4, 0.0),
        ("large", "stabilityai/stable-diffusion-3.5-large", 40, 4.5),
        ("medium", "stabilityai/stable-diffusion-3.5-medium", 40, 4.5),
        ("stabilityai/stable-diffusion-3.5-medium", "stabilityai/stable-diffusion-3.5-medium", 40, 4.5),
    ],
)
def test_presets_follow_the_official_values(name, repo, steps, guidance):
    source = resolve_model(name, CPU)
    assert source.kind is SourceKind.REPO and source.location == repo
    assert (source.preset.steps, source.preset.guidance, source.preset.width) == (steps, guidance, 1024)


def test_unknown_repo_ids_get_generic_settings():
    source = resolve_model("someone/sd3-finetune", CPU)
    assert source.kind is SourceKind.REPO and source.preset.name == "custom"


def test_random_architectures_with_block_counts():
    source = resolve_model("random:medium:2", CPU)
    assert source.kind is SourceKind.RANDOM
    assert (source.arch, source.num_layers, source.name) == ("medium", 2, "random:medium:2")
    assert resolve_model("random:large-turbo", CPU).preset.steps == 4
    assert resolve_model("random:large", CPU).num_layers is None


@pytest.mark.parametrize("name", ["random:foo", "random:medium:0", "random:medium:25", "random:medium:x",
                                  "random:large:2:3", "not a model", ""])
def test_bad_model_names_are_user_errors(name):
    with pytest.raises(UserError) as info:
        resolve_model(name, CPU)
    assert "random:" in str(info.value) or "block count" in str(info.value)


def test_folder_without_model_index_is_explained(tmp_path):
    with pytest.raises(ModelAccessError, match="not a diffusers pipeline"):
        resolve_model(str(tmp_path), CPU)


def test_local_folder_named_like_an_official_repo_gets_its_preset(tmp_path):
    folder = tmp_path / "stable-diffusion-3.5-large-turbo"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    source = resolve_model(str(folder), CPU)
    assert source.kind is SourceKind.FOLDER and source.preset.name == "large-turbo"


def test_tiny_model_is_a_real_diffusers_folder_with_sd35_structure(tiny_config):
    path = random_models.ensure_tiny(tiny_config.cache_dir)
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    weights = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.safetensors"))
    assert weights == [
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
        "text_encoder_3/model.safetensors",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert random_models.ensure_tiny(tiny_config.cache_dir) == path  # cached: second call builds nothing

    plan = make_plan(CPU, precision="bf16")
    pipe = load_pipeline(resolve_model("tiny", CPU), plan, tiny_config)
    t = pipe.transformer.config
    assert (t.in_channels, t.patch_size, t.qk_norm) == (16, 2, "rms_norm")
    assert len(t.dual_attention_layers) >= 1
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 16
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer_3 is not None
    assert pipe.text_encoder_3 is not None
    assert str(pipe.transformer.dtype) == "torch.bfloat16" and str(pipe.vae.dtype) == "torch.float32"


def test_t5_off_loads_no_t5(tiny_config):
    plan = make_plan(CPU, t5="off")
    pipe = load_pipeline(resolve_model("tiny", CPU), plan, tiny_config)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None


def _chain(outer, cause):
    try:
        try:
            raise cause
        except Exception as inner:
            raise outer from inner
    except Exception as e:
        return e


def _http(cls, status: int):
    import httpx

    url = "https://huggingface.co/api/models/x"
    return cls(f"{status}", response=httpx.Response(status, request=httpx.Request("GET", url)))


def test_gated_repo_error_names_licence_page_and_token():
    from huggingface_hub.errors import GatedRepoError

    source = resolve_model("large-turbo", CPU)
    error = _chain(OSError("Cannot load model"), _http(GatedRepoError, 403))
    message = str(explain_load_error(error, source, has_token=False))
    assert "gated" in message and "HF_TOKEN is not set" in message
    assert "https://huggingface.co/stabilityai/stable-diffusion-3.5-large-turbo" in message
    with_token = str(explain_load_error(error, source, has_token=True))
    assert "has not been granted access" in with_token


def test_offline_and_missing_repo_errors_are_explained():
    from huggingface_hub.errors import RepositoryNotFoundError

    source = resolve_model("medium", CPU)
    offline = OSError("Cannot load model x: the model is not fully cached locally (...)")
    assert "unreachable" in str(explain_load_error(offline, source, False))
    missing = _chain(OSError("x"), _http(RepositoryNotFoundError, 404))
    assert "was not found" in str(explain_load_error(missing, source, False))
    assert explain_load_error(ValueError("a real bug"), source, False) is None


def test_loading_an_uncached_repo_offline_gives_a_message_not_a_traceback(tiny_config, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = make_plan(CPU, precision="bf16")
    with pytest.raises(ModelAccessError, match="gated|unreachable"):
        load_pipeline(resolve_model("large-turbo", CPU), plan, tiny_config)


def test_max_side_fits_every_positional_table():
    for arch in list(random_models.ARCHITECTURES.values()) + [random_models.TINY]:
        patches = config.MAX_SIDE // 16
        assert arch.transformer["pos_embed_max_size"] >= patches, arch.name


# Run in a fresh interpreter: builds tiny in a cache of its own, then prints the token ids its saved tokenizers give
# and a hash of a random:* style (fast-init) transformer, which is filled by another code path than tiny's.
_BUILD_IN_A_NEW_PROCESS = """
import hashlib, json, sys
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel
from transformers import CLIPTokenizer, T5TokenizerFast

from fp8demo.weights import random_models

path = random_models.ensure_tiny(Path(sys.argv[1]))
prompts = ["a photo of a cat on a windowsill", "Zebra-striped LIGHTHOUSE at dusk, 35mm, f/1.8", "ünïcödé sÿmbols ♥"]
tokenizers = {"tokenizer": CLIPTokenizer, "tokenizer_2": CLIPTokenizer, "tokenizer_3": T5TokenizerFast}
ids = {sub: [cls.from_pretrained(path / sub)(p).input_ids for p in prompts] for sub, cls in tokenizers.items()}
fast = random_models._construct(lambda: SD3Transformer2DModel(**random_models.TINY.transformer), True, 0)
h = hashlib.sha256()
for name, tensor in sorted(fast.state_dict().items()):
    h.update(name.encode() + tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
print(json.dumps({"ids": ids, "random_weights": h.hexdigest()}))
"""


def test_tiny_build_is_identical_across_processes(tmp_path):
    """The same recipe gives the same files in any process: token ids, tokenizer files and weights, byte for byte."""
    root = Path(__file__).resolve().parents[1]
    runs = []
    for hash_seed in ("1", "2"):  # Python's own hash seed differs too, as it does between two real runs
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root))
        cache = tmp_path / f"cache{hash_seed}"
        cmd = [sys.executable, "-c", _BUILD_IN_A_NEW_PROCESS, str(cache)]
        runs.append((cache, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results, folders = [], []
    for cache, proc in runs:  # both at once: each is mostly imports
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
        folders.append(random_models.tiny_path(cache))
    a, b = results
    assert a["ids"] == b["ids"]
    assert a["random_weights"] == b["random_weights"]

    def digests(folder):
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    first, second = digests(folders[0]), digests(folders[1])
    assert {"tokenizer/tokenizer.json", "tokenizer_3/tokenizer.json"} <= set(first)
    assert len([f for f in first if f.endswith(".safetensors")]) == 5
    assert first == second


def test_bpe_ties_are_broken_by_the_pair_not_by_chance():
    # ("a", "b") and ("b", "c") are equally frequent and overlap: the order decides the result, so it must be fixed
    merges, cut = random_models.learn_bpe(Counter({("a", "b", "c"): 2, ("x", "y"): 1}), 2)
    assert merges == [("a", "b"), ("ab", "c")]
    assert cut == Counter({("abc",): 2, ("x", "y"): 1})


def test_an_interrupted_tiny_build_is_cleaned_on_the_next_start(tmp_path):
    import os
    import time

    from fp8demo.weights.random_models import STALE_BUILD_S, remove_stale_builds

    old, young = tmp_path / ".tiny-killed", tmp_path / ".tiny-running"
    for folder in (old, young):
        (folder / "transformer").mkdir(parents=True)
        (folder / "transformer" / "part.safetensors").write_bytes(b"x" * 10)
    long_ago = time.time() - STALE_BUILD_S - 60
    os.utime(old, (long_ago, long_ago))
    assert remove_stale_builds(tmp_path) == 1
    assert not old.exists() and young.exists()  # another process may be building right now
