"""Model import: catalog numbers, fast path == AutoConfig path, real tiny checkpoints, and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from plmr.errors import InputError
from waferllm.catalog import (
    HUB_REPOS, catalog_config, catalog_names, catalog_table, load_catalog_model, resolve_model,
)
from waferllm.model import (
    ModelSpec, RopeScaling, load_model_dir, load_model_dir_transformers, read_safetensors_header, spec_from_config_dict,
)

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "model-configs"
PACKAGE_CATALOG = Path(__file__).resolve().parents[2] / "waferllm" / "catalog"

# From the reference README table, plus the published parameter counts (billions).
# name: (arch, hidden, layers, heads, kv, ffn, vocab, max_pos, theta, llama3 factor, tied, params_b)
EXPECTED = {
    "llama3-8b": ("LlamaForCausalLM", 4096, 32, 32, 8, 14336, 128256, 8192, 5e5, None, False, 8.03),
    "llama3-70b": ("LlamaForCausalLM", 8192, 80, 64, 8, 28672, 128256, 8192, 5e5, None, False, 70.55),
    "llama3.1-8b": ("LlamaForCausalLM", 4096, 32, 32, 8, 14336, 128256, 131072, 5e5, 8.0, False, 8.03),
    "llama3.1-70b": ("LlamaForCausalLM", 8192, 80, 64, 8, 28672, 128256, 131072, 5e5, 8.0, False, 70.55),
    "llama2-7b": ("LlamaForCausalLM", 4096, 32, 32, 32, 11008, 32000, 4096, 1e4, None, False, 6.74),
    "llama2-13b": ("LlamaForCausalLM", 5120, 40, 40, 40, 13824, 32000, 4096, 1e4, None, False, 13.02),
    "llama2-70b": ("LlamaForCausalLM", 8192, 80, 64, 8, 28672, 32000, 4096, 1e4, None, False, 68.98),
    "codellama-34b": ("LlamaForCausalLM", 8192, 48, 64, 8, 22016, 32000, 16384, 1e6, None, False, 33.74),
    "mistral-7b": ("MistralForCausalLM", 4096, 32, 32, 8, 14336, 32000, 32768, 1e4, None, False, 7.24),
    "qwen2-7b": ("Qwen2ForCausalLM", 3584, 28, 28, 4, 18944, 152064, 131072, 1e6, None, False, 7.62),
    "qwen2-72b": ("Qwen2ForCausalLM", 8192, 80, 64, 8, 29568, 152064, 131072, 1e6, None, False, 72.71),
    "qwen2.5-0.5b": ("Qwen2ForCausalLM", 896, 24, 14, 2, 4864, 151936, 32768, 1e6, None, True, 0.494),
}

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 512,
}


def write_config(directory: Path, cfg: dict | str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = cfg if isinstance(cfg, str) else json.dumps(cfg)
    (directory / "config.json").write_text(text)
    return directory


def both_paths(tmp_path: Path, cfg: dict) -> tuple[ModelSpec, ModelSpec]:
    """(fast path, AutoConfig path), with name/source aligned so they compare equal."""
    d = write_config(tmp_path / "m", cfg)
    slow = load_model_dir_transformers(d)
    fast = spec_from_config_dict(cfg, slow.name, slow.source)
    assert load_model_dir(d) == fast  # the directory path is the fast path
    return fast, slow


# ---- the catalog -------------------------------------------------------------------------------------
def test_catalog_lists_every_config():
    assert set(catalog_names()) == set(EXPECTED)
    assert list(catalog_names()) == sorted(catalog_names())


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference configs not checked out")
def test_catalog_files_are_byte_copies_of_the_reference():
    ref = sorted(p.name for p in REFERENCE.glob("*.json"))
    assert ref == sorted(p.name for p in PACKAGE_CATALOG.glob("*.json"))
    for name in ref:
        assert (PACKAGE_CATALOG / name).read_bytes() == (REFERENCE / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_catalog_model_numbers(name):
    arch, e, layers, heads, kv, ffn, vocab, max_pos, theta, factor, tied, params_b = EXPECTED[name]
    s = load_catalog_model(name)
    assert (s.name, s.source, s.architecture) == (name, name, arch)
    assert (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads) == (e, layers, heads, kv)
    assert (s.intermediate_size, s.vocab_size, s.max_position_embeddings) == (ffn, vocab, max_pos)
    assert s.head_dim == e // heads and s.n_rep == heads // kv
    assert s.q_dim == e and s.kv_dim == kv * s.head_dim
    assert isinstance(s.rope_theta, float) and s.rope_theta == theta
    assert (s.rope_scaling.factor if s.rope_scaling else None) == factor
    assert s.tie_word_embeddings is tied
    assert s.lm_head_params == (0 if tied else vocab * e)
    assert s.total_params / 1e9 == pytest.approx(params_b, abs=0.006)
    assert s.weights_bytes is None
    assert s.qkv_bias is (s.model_type == "qwen2") and not s.o_bias and not s.mlp_bias
    assert s.torch_dtype == json.loads((PACKAGE_CATALOG / f"{name}.json").read_text())["torch_dtype"]
    json.dumps(s.to_dict())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_catalog_fast_path_equals_autoconfig(tmp_path, name):
    fast = load_catalog_model(name)
    d = write_config(tmp_path / name, catalog_config(name))
    slow = load_model_dir_transformers(d)
    assert dataclasses.replace(slow, source=name) == fast
    assert load_model_dir(d) == slow  # a directory plans with the same ModelSpec, without transformers


def test_catalog_key_figures():
    l3 = load_catalog_model("llama3-8b")
    assert l3.params_per_layer == 218_112_000
    assert l3.total_params == 8_030_261_248
    assert l3.kv_bytes_per_token(2) == 2 * 32 * 1024 * 2 == l3.kv_bytes_per_token()  # bfloat16
    assert l3.kv_bytes_per_token(4) == 2 * l3.kv_bytes_per_token(2)
    q72 = load_catalog_model("qwen2-72b")
    assert q72.qkv_bias and not q72.o_bias and q72.sliding_window is None  # use_sliding_window false
    q05 = load_catalog_model("qwen2.5-0.5b")
    assert q05.tie_word_embeddings and q05.lm_head_params == 0 and q05.head_dim == 64
    assert q05.total_params == 494_032_768
    l31 = load_catalog_model("llama3.1-8b")
    assert l31.rope_scaling == RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)
    m7 = load_catalog_model("mistral-7b")
    assert m7.sliding_window == 4096 and m7.sliding_window_layers == tuple(range(32))
    assert m7.layer_sliding_window(0) == 4096
    assert load_catalog_model("llama2-7b").rope_theta == 10000.0  # absent in the file
    assert load_catalog_model("codellama-34b").rope_theta == 1e6  # an int in the file
    assert load_catalog_model("llama2-70b").torch_dtype == "float16"
    assert [r.name for r in catalog_table()] == list(catalog_names())
    row = {r.name: r for r in catalog_table()}["llama3-70b"]
    assert row[1:6] == ("LlamaForCausalLM", 80, 8192, 64, 8) and row.params_b == pytest.approx(70.55, abs=0.01)


@pytest.mark.parametrize("alias,name", [
    ("LLAMA3-8B", "llama3-8b"), ("meta-llama/Meta-Llama-3-8B", "llama3-8b"),
    ("meta-llama/meta-llama-3-8b", "llama3-8b"), ("Meta-Llama-3-70B", "llama3-70b"),
    ("Qwen/Qwen2.5-0.5B", "qwen2.5-0.5b"), ("codellama/CodeLlama-34b-hf", "codellama-34b"),
    ("mistralai/Mistral-7B-v0.1", "mistral-7b"), ("meta-llama/Llama-3.1-70B", "llama3.1-70b"),
])
def test_catalog_aliases(alias, name):
    assert load_catalog_model(alias).name == name
    assert resolve_model(alias).name == name


@pytest.mark.skipif(not (REFERENCE / "README.md").is_file(), reason="reference README not checked out")
def test_hub_aliases_match_reference_readme():
    rows = [line.split("|")[1:3] for line in (REFERENCE / "README.md").read_text().splitlines()
            if line.startswith("| ") and "/" in line.split("|")[2]]
    table = {repo.strip(): name.strip() for name, repo in rows}
    assert set(table.values()) == set(catalog_names())
    for repo, name in table.items():
        assert HUB_REPOS[repo] == name


def test_resolve_model_directory_and_unknown(tmp_path, monkeypatch):
    d = write_config(tmp_path / "tiny", TINY_LLAMA)
    assert resolve_model(str(d)).source == str(d)
    with pytest.raises(InputError, match=r"^unknown model 'foo'; catalog: codellama-34b, llama2-13b, .*"
                                         r"qwen2.5-0.5b or a directory with config.json$"):
        resolve_model("foo")
    with pytest.raises(InputError, match="unknown model"):
        load_catalog_model("gpt-5")
    # a stray directory named like a catalog entry, without config.json, does not shadow it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llama3-8b").mkdir()
    assert resolve_model("llama3-8b").source == "llama3-8b"
    write_config(tmp_path / "llama3-8b", TINY_LLAMA)
    assert resolve_model("llama3-8b").hidden_size == 64  # ...but a real model directory does
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        resolve_model("afile")


# ---- both paths agree on synthetic configs that exercise every default ------------------------------
VARIANTS = {
    "llama_no_kv_heads": {**TINY_LLAMA, "num_key_value_heads": None},
    "llama_kv_absent": {k: v for k, v in TINY_LLAMA.items() if k != "num_key_value_heads"},
    "llama_minimal": {k: TINY_LLAMA[k] for k in ("architectures", "model_type", "hidden_size",
                                                 "intermediate_size", "num_hidden_layers",
                                                 "num_attention_heads", "vocab_size")},
    "llama_biases": {**TINY_LLAMA, "attention_bias": True, "mlp_bias": True},
    "llama_head_dim": {**TINY_LLAMA, "head_dim": 32},
    "llama_mqa": {**TINY_LLAMA, "num_key_value_heads": 1},
    "llama3_rope_legacy_type": {**TINY_LLAMA, "rope_theta": 5e5, "rope_scaling": {
        "type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}},
    "llama3_rope_top_level_omp": {**TINY_LLAMA, "original_max_position_embeddings": 128, "rope_scaling": {
        "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256}},
    "rope_parameters_v5": {**TINY_LLAMA, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    "rope_default_explicit": {**TINY_LLAMA, "rope_scaling": {"rope_type": "default"}, "rope_theta": 1234},
    "dtype_key": {**TINY_LLAMA, "dtype": "bfloat16"},
    "torch_dtype_key": {**TINY_LLAMA, "torch_dtype": "float16"},
    "mistral_window_absent": {**TINY_LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral"},
    "mistral_window_null": {**TINY_LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
                            "sliding_window": None},
    "mistral_head_dim": {**TINY_LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
                         "head_dim": 8, "sliding_window": 32},
    "qwen2_window_off": {**TINY_LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                         "sliding_window": 32},
    "qwen2_window_on": {**TINY_LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                        "num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 32,
                        "max_window_layers": 1},
    "qwen2_window_on_no_layer": {**TINY_LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                                 "use_sliding_window": True, "sliding_window": 32, "max_window_layers": 28},
    "qwen2_layer_types": {**TINY_LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                          "use_sliding_window": True, "sliding_window": 16,
                          "layer_types": ["sliding_attention", "full_attention"]},
    "qwen2_kv_absent": {**{k: v for k, v in TINY_LLAMA.items() if k != "num_key_value_heads"},
                        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                        "num_attention_heads": 32, "hidden_size": 128, "tie_word_embeddings": True},
    "no_architectures": {k: v for k, v in TINY_LLAMA.items() if k != "architectures"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_path_equals_autoconfig_on_variants(tmp_path, variant):
    fast, slow = both_paths(tmp_path, VARIANTS[variant])
    assert fast == slow


def test_variant_semantics():
    spec = {k: spec_from_config_dict(v, k) for k, v in VARIANTS.items()}
    assert spec["llama_no_kv_heads"].num_kv_heads == 4 and spec["llama_minimal"].max_position_embeddings == 2048
    assert spec["llama_minimal"].torch_dtype == "float32" and spec["llama_minimal"].rope_theta == 10000.0
    assert spec["llama_biases"].qkv_bias and spec["llama_biases"].o_bias and spec["llama_biases"].mlp_bias
    hd = spec["llama_head_dim"]
    assert (hd.head_dim, hd.q_dim, hd.kv_dim) == (32, 128, 64)  # head_dim != hidden / heads
    mqa = spec["llama_mqa"]
    assert (mqa.n_rep, mqa.kv_dim, mqa.kv_bytes_per_token(2)) == (4, 16, 2 * 2 * 16 * 2)
    assert spec["llama3_rope_legacy_type"].rope_scaling.original_max_position_embeddings == 512
    assert spec["llama3_rope_top_level_omp"].rope_scaling.original_max_position_embeddings == 256
    assert spec["rope_parameters_v5"].rope_theta == 5e5 and spec["rope_parameters_v5"].rope_scaling.factor == 8
    assert spec["rope_default_explicit"].rope_scaling is None and spec["rope_default_explicit"].rope_theta == 1234
    assert spec["mistral_window_absent"].sliding_window == 4096  # transformers' MistralConfig default
    assert spec["mistral_window_null"].sliding_window is None
    assert spec["qwen2_window_off"].sliding_window is None
    on = spec["qwen2_window_on"]
    assert on.sliding_window == 32 and on.sliding_window_layers == (1, 2, 3)
    assert on.layer_sliding_window(0) is None and on.layer_sliding_window(3) == 32
    assert spec["qwen2_window_on_no_layer"].sliding_window is None
    assert spec["qwen2_layer_types"].sliding_window_layers == (0,)
    assert spec["qwen2_kv_absent"].num_kv_heads == 32  # Qwen2Config's default is a literal 32
    assert spec["no_architectures"].architecture == "LlamaForCausalLM"


# ---- real tiny checkpoints built with transformers -----------------------------------------------------
def _save_tiny(tmp_path: Path, cls_name: str, **kw) -> tuple[Path, object]:
    import torch
    import transformers

    torch.manual_seed(0)
    config_cls = {"LlamaForCausalLM": transformers.LlamaConfig, "Qwen2ForCausalLM": transformers.Qwen2Config,
                  "MistralForCausalLM": transformers.MistralConfig}[cls_name]
    base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=256, max_position_embeddings=256)
    model = getattr(transformers, cls_name)(config_cls(**{**base, **kw}))
    d = tmp_path / cls_name
    model.save_pretrained(d, safe_serialization=True)
    return d, model


TINY_MODELS = {
    "llama_gqa": ("LlamaForCausalLM", {}),
    "llama_bias_head_dim": ("LlamaForCausalLM", {"attention_bias": True, "mlp_bias": True, "head_dim": 32}),
    "llama3_rope": ("LlamaForCausalLM", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "qwen2_tied": ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "mistral_mqa": ("MistralForCausalLM", {"num_key_value_heads": 1}),
}


@pytest.mark.parametrize("kind", sorted(TINY_MODELS))
def test_tiny_real_model_counts_and_header(tmp_path, kind):
    cls_name, kw = TINY_MODELS[kind]
    d, model = _save_tiny(tmp_path, cls_name, **kw)
    spec = load_model_dir_transformers(d)
    assert load_model_dir(d) == spec  # fast directory path == transformers path, weights included
    raw = json.loads((d / "config.json").read_text())
    fast = spec_from_config_dict(raw, spec.name, spec.source)  # the 5.x-saved format, fast path
    assert spec == dataclasses.replace(fast, weights_bytes=spec.weights_bytes)
    assert spec.architecture == cls_name
    assert spec.total_params == sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert spec.params_per_layer == sum(p.numel() for p in model.model.layers[0].parameters())
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if spec.tie_word_embeddings:
        state.pop("lm_head.weight")
        assert spec.lm_head_params == 0
    assert spec.hf_tensor_shapes() == state
    assert spec.weights_bytes == 4 * spec.total_params  # float32, tied lm_head not stored
    assert spec.weights_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    header = read_safetensors_header(d / "model.safetensors")
    assert {k for k in header if k != "__metadata__"} == set(state)


def test_tiny_model_rope_inv_freq_matches_transformers(tmp_path):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cls_name, kw = TINY_MODELS["llama3_rope"]
    d, model = _save_tiny(tmp_path, cls_name, **kw)
    spec = load_model_dir(d)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](model.config, "cpu")
    assert spec.rope_inv_freq() == pytest.approx(ref.double().tolist(), rel=1e-6)
    plain = dataclasses.replace(spec, rope_scaling=None)
    assert plain.rope_inv_freq() == pytest.approx([5e5 ** (-2 * i / 16) for i in range(8)])
    l31 = load_catalog_model("llama3.1-8b")
    inv = l31.rope_inv_freq()
    assert len(inv) == 64 and inv[0] == 1.0 and inv[-1] == pytest.approx(5e5 ** (-126 / 128) / 8)


def test_safetensors_header_catches_mismatching_config(tmp_path):
    d, _ = _save_tiny(tmp_path, "LlamaForCausalLM")
    cfg = json.loads((d / "config.json").read_text())
    for change, pattern in [
        ({"num_key_value_heads": 4}, r"tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \[32, 64\] "
                                     r"but config\.json implies \[64, 64\]"),
        ({"head_dim": 32}, r"tensor 'model\.layers\.0\.self_attn\.q_proj\.weight' has shape \[64, 64\] "
                           r"but config\.json implies \[128, 64\]"),
        ({"intermediate_size": 96}, r"gate_proj\.weight' has shape"),
        ({"attention_bias": True}, r"tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'.* is missing"),
        ({"num_hidden_layers": 3}, r"tensor 'model\.layers\.2\..*' \(and 8 more\) is missing"),
        ({"num_hidden_layers": 1}, r"unexpected tensor 'model\.layers\.1\."),
        ({"tie_word_embeddings": True}, None),  # tied checkpoints may still store lm_head.weight
    ]:
        write_config(d, {**cfg, **change})
        if pattern is None:
            assert load_model_dir(d).tie_word_embeddings
            continue
        with pytest.raises(InputError, match=pattern) as exc:
            load_model_dir(d)
        assert "\n" not in str(exc.value)
    write_config(d, cfg)
    (d / "model.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(InputError, match="not a valid safetensors file"):
        load_model_dir(d)
    (d / "model.safetensors").write_bytes((10).to_bytes(8, "little") + b"not json!!")
    with pytest.raises(InputError, match="header is not JSON"):
        load_model_dir(d)


# ---- bad input ------------------------------------------------------------------------------------------
def _raises_one_line(fn, pattern):
    with pytest.raises(InputError, match=pattern) as exc:
        fn()
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 2.0}, {"type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
    {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]},
])
def test_unsupported_rope_type(tmp_path, rope):
    cfg = {**TINY_LLAMA, "rope_scaling": rope}
    kind = rope.get("rope_type", rope.get("type"))
    pattern = rf"unsupported rope type '{kind}'; supported: default, llama3"
    _raises_one_line(lambda: spec_from_config_dict(cfg, "x"), pattern)
    _raises_one_line(lambda: load_model_dir(write_config(tmp_path / kind, cfg)), pattern)


def test_unsupported_architecture(tmp_path):
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "vocab_size": 256}
    pattern = ("unsupported architecture 'GPT2LMHeadModel'; "
               "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM$")
    _raises_one_line(lambda: load_model_dir(write_config(tmp_path / "gpt2", cfg)), pattern)
    _raises_one_line(lambda: spec_from_config_dict({**TINY_LLAMA, "architectures": ["Gemma2ForCausalLM"]}, "x"),
                     "unsupported architecture 'Gemma2ForCausalLM'")
    _raises_one_line(lambda: spec_from_config_dict({k: v for k, v in cfg.items() if k != "architectures"}, "x"),
                     "unsupported model_type 'gpt2'; supported: llama, mistral, qwen2")
    _raises_one_line(lambda: ModelSpec(name="x", architecture="GPT2LMHeadModel", hidden_size=64, num_layers=1,
                                       num_heads=4, num_kv_heads=4, head_dim=16, intermediate_size=1,
                                       vocab_size=1), "unsupported architecture")


@pytest.mark.parametrize("text,pattern", [
    ('{"hidden_size": 64,', r"malformed config\.json .*: Expecting .* at line 1 column \d+"),
    ("[1, 2]", r"malformed config\.json .*expected a JSON object, got list"),
    ("", r"malformed config\.json"),
    (json.dumps({**TINY_LLAMA, "hidden_size": None}), r"hidden_size must be a positive integer, got None"),
    (json.dumps({k: v for k, v in TINY_LLAMA.items() if k != "vocab_size"}),
     r"config\.json is missing required key 'vocab_size'"),
    (json.dumps({**TINY_LLAMA, "num_attention_heads": "4"}), r"num_attention_heads must be a positive integer"),
    (json.dumps({**TINY_LLAMA, "num_key_value_heads": 3}),
     r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"),
    (json.dumps({**TINY_LLAMA, "hidden_size": 66, "head_dim": 16}),
     r"hidden_size \(66\) must be a multiple of num_attention_heads \(4\) for Llama"),
    (json.dumps({**TINY_LLAMA, "head_dim": 15}), r"head_dim must be even"),
    (json.dumps({**TINY_LLAMA, "model_type": "mistral"}), r"model_type 'mistral' does not match architecture"),
    (json.dumps({**TINY_LLAMA, "hidden_act": "gelu"}), r"unsupported hidden_act 'gelu'; supported: silu"),
    (json.dumps({**TINY_LLAMA, "torch_dtype": "int8"}), r"unsupported torch_dtype 'int8'; supported: float32"),
    (json.dumps({**TINY_LLAMA, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
     r"llama3 rope scaling is missing low_freq_factor, high_freq_factor"),
    (json.dumps({**TINY_LLAMA, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                                "high_freq_factor": 1.0}}), r"high_freq_factor > low_freq_factor"),
    (json.dumps({**TINY_LLAMA, "rope_theta": -1}), r"rope_theta must be a positive number"),
    (json.dumps({**TINY_LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                 "use_sliding_window": True, "max_window_layers": None}), r"max_window_layers must be"),
    (json.dumps({**TINY_LLAMA, "rope_scaling": {"rope_type": "default", "partial_rotary_factor": 0.5}}),
     r"partial_rotary_factor 0\.5 is not supported"),
    (json.dumps({**TINY_LLAMA, "quantization_config": {"quant_method": "gptq"}}), r"quantized checkpoints"),
])
def test_malformed_config_json(tmp_path, text, pattern):
    d = write_config(tmp_path / "bad", text)
    _raises_one_line(lambda: load_model_dir(d), pattern)


def test_missing_directory_and_config(tmp_path):
    _raises_one_line(lambda: load_model_dir(tmp_path / "nope"), r"model directory '.*nope' does not exist")
    d = write_config(tmp_path / "named", {**TINY_LLAMA, "num_key_value_heads": 3})
    _raises_one_line(lambda: load_model_dir(d), rf"^model '{d}': num_attention_heads")  # says which model
    (tmp_path / "empty").mkdir()
    _raises_one_line(lambda: load_model_dir(tmp_path / "empty"), r"no config\.json in '.*empty'")
    (tmp_path / "f").write_text("{}")
    _raises_one_line(lambda: load_model_dir(tmp_path / "f"), r"is not a directory")
    _raises_one_line(lambda: resolve_model(str(tmp_path / "nope")), r"^unknown model '.*nope'; catalog: ")


def test_modelspec_validation():
    ok = dict(name="x", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1, head_dim=16,
              intermediate_size=128, vocab_size=256)
    assert ModelSpec(**ok).n_rep == 4
    for bad, pattern in [({"hidden_size": 0}, "hidden_size must be a positive integer"),
                         ({"num_layers": True}, "num_layers must be a positive integer"),
                         ({"num_kv_heads": 3}, "must be a multiple"),
                         ({"rms_norm_eps": 0.0}, "rms_norm_eps must be a positive number"),
                         ({"qkv_bias": 1}, "qkv_bias must be true or false"),
                         ({"sliding_window": 8}, "sliding_window_layers must be distinct"),
                         ({"sliding_window": 8, "sliding_window_layers": (2,)}, "sliding_window_layers"),
                         ({"sliding_window_layers": (0,)}, "without a sliding_window"),
                         ({"rope_scaling": {"factor": 8}}, "must be a RopeScaling"),
                         ({"torch_dtype": "float8"}, "unsupported torch_dtype")]:
        _raises_one_line(lambda: ModelSpec(**{**ok, **bad}), pattern)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelSpec(**ok).hidden_size = 1  # type: ignore[misc]
    assert math.isclose(ModelSpec(**ok, rope_theta=500000).rope_theta, 5e5)


def test_import_does_not_load_transformers_or_torch():
    code = ("import sys, waferllm.model, waferllm.catalog; "
            "waferllm.catalog.load_catalog_model('llama3-70b'); waferllm.catalog.catalog_table(); "
            "print(sorted(m for m in ('transformers', 'torch', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
