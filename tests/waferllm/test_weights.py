"""Weight loading: every tensor equal to the torch model's, in [in, out] orientation; tied embeddings, biases,
bf16/fp16 checkpoints, sharded checkpoints; one-line errors for bad input; no torch import on this path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from plmr.errors import InputError
from waferllm.weights import load_weights


def _state(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy_layers"])
@pytest.mark.parametrize("name", ["llama_mqa_bias", "qwen2_bias_tied", "llama3_rope"])
def test_every_tensor_equals_the_torch_model(tiny_model, name, lazy):
    d, model = tiny_model(name)
    w = load_weights(d, "fp32", lazy_layers=lazy)
    st = _state(model)
    spec = w.spec
    assert len(w.layers) == spec.num_layers
    np.testing.assert_array_equal(w.embed, st["model.embed_tokens.weight"])
    np.testing.assert_array_equal(w.final_norm, st["model.norm.weight"])
    for i, lw in enumerate(w.layers):
        p = f"model.layers.{i}."
        for attr, key in [("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                          ("o", "self_attn.o_proj"), ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                          ("down", "mlp.down_proj")]:
            np.testing.assert_array_equal(getattr(lw, attr), st[p + key + ".weight"].T)  # [in, out]
            bias = getattr(lw, attr + "_bias")
            if p + key + ".bias" in st:
                np.testing.assert_array_equal(bias, st[p + key + ".bias"])
            else:
                assert bias is None
        np.testing.assert_array_equal(lw.input_norm, st[p + "input_layernorm.weight"])
        np.testing.assert_array_equal(lw.post_norm, st[p + "post_attention_layernorm.weight"])
    if spec.tie_word_embeddings:
        assert np.shares_memory(w.lm_head, w.embed) and w.lm_head.shape == (spec.hidden_size, spec.vocab_size)
    else:
        np.testing.assert_array_equal(w.lm_head, st["lm_head.weight"].T)
    assert w.layers[0].q.dtype == np.float32


def test_fp16_and_bf16_checkpoints(tmp_path, build_tiny):
    """bf16 (no numpy type) is widened exactly; fp16 round-trips; loading fp32 weights as fp16 rounds."""
    for dtype in ("bfloat16", "float16"):
        d = tmp_path / dtype
        model = build_tiny(d, "llama_gqa", dtype=dtype)  # weights rounded to dtype, returned as fp32
        st = _state(model)
        w = load_weights(d, "fp32")
        np.testing.assert_array_equal(w.embed, st["model.embed_tokens.weight"])
        np.testing.assert_array_equal(w.layers[1].down, st["model.layers.1.mlp.down_proj.weight"].T)
        w16 = load_weights(d, "fp16")
        assert w16.layers[0].q.dtype == np.float16
        np.testing.assert_array_equal(w16.layers[0].q, st["model.layers.0.self_attn.q_proj.weight"].T.astype(np.float16))


def test_sharded_checkpoint(tmp_path, tiny_model):
    d, model = tiny_model("llama_gqa")
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, safe_serialization=True, max_shard_size="40KB")
    assert len(list(sharded.glob("*.safetensors"))) > 2
    a, b = load_weights(d), load_weights(sharded)
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_array_equal(x.gate, y.gate)
    np.testing.assert_array_equal(a.lm_head, b.lm_head)


def _copy_with(tmp_path, src, name, edit):
    """A copy of model directory src whose single safetensors file went through edit(dict) -> dict."""
    import shutil

    from safetensors.numpy import load_file, save_file

    dst = tmp_path / name
    shutil.copytree(src, dst)
    f = next(dst.glob("*.safetensors"))
    save_file(edit(load_file(str(f))), str(f))
    return dst


def test_bad_input_is_a_one_line_error(tmp_path, tiny_model):
    d, _ = tiny_model("llama_gqa")
    k = "model.layers.1.mlp.up_proj.weight"
    cases = [
        (_copy_with(tmp_path, d, "missing", lambda t: {n: v for n, v in t.items() if n != k}),
         "fp32", r"tensor 'model\.layers\.1\.mlp\.up_proj\.weight' is missing"),
        (_copy_with(tmp_path, d, "shape", lambda t: {**t, k: t[k][:, :-1].copy()}),
         "fp32", r"has shape \[100, 71\] but config\.json implies \[100, 72\]"),
        (_copy_with(tmp_path, d, "nan", lambda t: {**t, k: np.full_like(t[k], np.nan)}),
         "fp32", r"tensor '.*up_proj\.weight' holds NaN"),
        (_copy_with(tmp_path, d, "big", lambda t: {**t, k: np.full_like(t[k], 1e5)}),
         "fp16", r"magnitude 1e\+05, beyond the fp16 range"),
        (_copy_with(tmp_path, d, "int", lambda t: {**t, k: t[k].astype(np.int8)}),
         "fp32", r"has dtype I8; readable: F32, F16, F64, BF16"),
        (d, "bf16", r"unknown dtype 'bf16'; allowed: fp32, fp16"),
        (tmp_path / "nowhere", "fp32", r"does not exist"),
    ]
    for path, dtype, pattern in cases:
        with pytest.raises(InputError, match=pattern) as exc:
            load_weights(path, dtype)
        assert "\n" not in str(exc.value)
    # a directory with a config but no safetensors
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(json.loads((d / "config.json").read_text())))
    with pytest.raises(InputError, match=r"no \*\.safetensors files in"):
        load_weights(empty)


def test_lazy_layers_read_and_check_each_layer_when_indexed(tmp_path, tiny_model):
    """``lazy_layers``: a layer is read when indexed (a bad value there is the same one-line error as an
    eager load's, at that layer only), as a tuple indexes (negative, slices, out of range)."""
    d, _ = tiny_model("llama_gqa")
    k = "model.layers.1.mlp.up_proj.weight"
    bad = _copy_with(tmp_path, d, "nan", lambda t: {**t, k: np.full_like(t[k], np.nan)})
    w = load_weights(bad, "fp32", lazy_layers=True)
    assert len(w.layers) == 2 and w.layers[0].up.shape == w.layers[-2].up.shape
    with pytest.raises(InputError, match=r"tensor '.*layers\.1\.mlp\.up_proj\.weight' holds NaN"):
        w.layers[1]
    eager = load_weights(d, "fp16")
    lazy = load_weights(d, "fp16", lazy_layers=True)
    assert [x.q.dtype.name for x in lazy.layers[:]] == ["float16"] * 2
    np.testing.assert_array_equal(lazy.layers[-1].down, eager.layers[1].down)
    with pytest.raises(IndexError):
        lazy.layers[2]


def test_compile_holds_one_layer_of_weights_at_a_time(tmp_path, tiny_model, monkeypatch):
    """A compile reads the layers one by one and drops each once its blocks are in the stage's images (a
    model's weights used to be held whole, twice over, beside all its images: ~9 bytes per parameter)."""
    import weakref

    from waferllm import weights as weights_mod
    from waferllm.compile import CompileRequest, compile_bundle

    alive, most, read = [0], [0], []
    real = weights_mod._layer

    def counted(index, spec, np_dtype, i):
        layer = real(index, spec, np_dtype, i)
        alive[0] += 1
        most[0] = max(most[0], alive[0])
        read.append(i)
        weakref.finalize(layer, lambda: alive.__setitem__(0, alive[0] - 1))
        return layer

    monkeypatch.setattr(weights_mod, "_layer", counted)
    d, _ = tiny_model("qwen2_bias_tied")
    compile_bundle(CompileRequest(model=str(d), hardware="wse2", context=40, dtype="fp32", decode_grid=(4, 4),
                                  out=tmp_path / "b"))
    assert sorted(read) == list(range(len(read))) and len(read) >= 2 and most[0] == 1


def test_loader_imports_neither_torch_nor_transformers(tiny_model):
    d, _ = tiny_model("llama_gqa")
    code = ("import sys; from waferllm.weights import load_weights; w = load_weights(sys.argv[1], 'fp16'); "
            "assert w.embed.dtype.name == 'float16'; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
