"""Tiny random-weight HF models shared by the numerics tests (waferllm/ and meshgemm/).

Each model is built once per session with transformers and saved with ``save_pretrained``. Sizes are chosen
so that nothing divides typical mesh sides (hidden 44…72, vocab 97, head dims 10…18), and every parameter a
layout could misplace is random: RMSNorm γ and biases are re-drawn (transformers initialises them to ones and
zeros, which would hide a γ or bias placed on the wrong PE).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_BASE = dict(num_hidden_layers=2, vocab_size=97, max_position_embeddings=128, initializer_range=0.25,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)

#: name -> (architecture, config overrides)
TINY_MODELS: dict[str, tuple[str, dict]] = {
    "llama_gqa": ("LlamaForCausalLM", dict(hidden_size=72, intermediate_size=100, num_attention_heads=6,
                                           num_key_value_heads=2)),
    "llama_mha": ("LlamaForCausalLM", dict(hidden_size=54, intermediate_size=70, num_attention_heads=3,
                                           num_key_value_heads=3)),
    "llama_mqa_bias": ("LlamaForCausalLM", dict(hidden_size=60, intermediate_size=84, num_attention_heads=5,
                                                num_key_value_heads=1, attention_bias=True, mlp_bias=True)),
    "llama3_rope": ("LlamaForCausalLM", dict(
        hidden_size=44, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "mistral_window": ("MistralForCausalLM", dict(hidden_size=48, intermediate_size=66, num_attention_heads=4,
                                                  num_key_value_heads=2, sliding_window=5)),
    "qwen2_bias_tied": ("Qwen2ForCausalLM", dict(hidden_size=60, intermediate_size=90, num_attention_heads=6,
                                                 num_key_value_heads=2, tie_word_embeddings=True)),
}


def build_tiny_model(directory: Path, name: str, seed: int = 0, dtype: str = "float32"):
    """Create, randomise and save one tiny model; returns the torch model (eval mode, fp32)."""
    import torch
    import transformers

    arch, kw = TINY_MODELS[name]
    cfg_cls = {"LlamaForCausalLM": transformers.LlamaConfig, "MistralForCausalLM": transformers.MistralConfig,
               "Qwen2ForCausalLM": transformers.Qwen2Config}[arch]
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(cfg_cls(**{**_BASE, **kw})).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif pname.endswith(".bias"):
                p.normal_(0.0, 0.1)
    save = model if dtype == "float32" else model.to(getattr(torch, dtype))
    save.save_pretrained(directory, safe_serialization=True)
    return model.float()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(name)`` -> (directory, torch model); each built once per session."""
    cache: dict[str, tuple[Path, object]] = {}

    def get(name: str):
        if name not in cache:
            d = tmp_path_factory.mktemp(name)
            cache[name] = (d, build_tiny_model(d, name))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def build_tiny():
    """The builder itself, for tests that need a variant (another dtype, sharding, a broken copy)."""
    return build_tiny_model


def pytest_sessionstart(session):
    """Under xdist, worker gw0 loads (or, on a cold numba cache, compiles) the simulator engine's
    functional mode and gw1 its timing mode before they take tests, so that the two cold compiles
    (about a minute each) run side by side. Left to the tests, both workers usually ask first for the
    same mode and one waits for the other's compile (``plmr.cached_jit``'s lock) with its core idle."""
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker not in ("gw0", "gw1") or os.environ.get("NUMBA_DISABLE_JIT") == "1":
        return
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from plmr.hardware import WSE2
    from simulator.run import simulate

    functional = worker == "gw0"
    b = build_kernel(KernelRequest("meshgemm", (2, 2), 4, 4, 4, functional=functional), WSE2)
    simulate(b.program, WSE2, mode="functional" if functional else "timing")
