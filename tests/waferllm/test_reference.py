"""The numpy transformer against transformers: greedy tokens equal to ``generate`` and logits within 1e-4 in
fp32, on tiny random-weight Llama (MHA/GQA/MQA, biases, Llama-3 RoPE scaling, head_dim ≠ E/n_h), Mistral with a
sliding window shorter than the context, and Qwen2 with biases and tied embeddings. fp16 divergence measured."""

from __future__ import annotations

import numpy as np
import pytest

from plmr.errors import InputError
from waferllm.reference import ReferenceModel, apply_rope, argmax_first, attention_mask, rms_norm
from waferllm.weights import load_weights

MODELS = ["llama_gqa", "llama_mha", "llama_mqa_bias", "llama3_rope", "mistral_window", "qwen2_bias_tied"]
PROMPT = [3, 17, 42, 5, 88, 61, 29]
NEW_TOKENS = 16


def hf_generate(model, prompt, n):
    """(tokens, logits [n, V]) of transformers' greedy generate."""
    import torch

    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[0, len(prompt):].tolist()
    return tokens, torch.stack(out.logits)[:, 0].float().numpy()


@pytest.mark.parametrize("name", MODELS)
def test_greedy_tokens_and_logits_equal_transformers_fp32(tiny_model, name):
    import torch

    d, model = tiny_model(name)
    ref = ReferenceModel(load_weights(d, "fp32"))
    gen = ref.generate(PROMPT, NEW_TOKENS)
    tokens, logits = hf_generate(model, PROMPT, NEW_TOKENS)
    assert gen.tokens == tokens
    assert np.abs(gen.logits - logits).max() < 1e-4
    # every prompt position of the prefill, too (exercises the causal mask and the window inside the prompt)
    with torch.no_grad():
        full = model(torch.tensor([PROMPT + tokens])).logits[0].numpy()
    ref_full, _ = ref.prefill(PROMPT + tokens)
    assert np.abs(ref_full - full).max() < 1e-4
    # the window really binds: 7 + 16 tokens of context against a window of 5
    if name == "mistral_window":
        assert ref.spec.sliding_window == 5 and ref.spec.sliding_window_layers == (0, 1)


def test_sliding_window_changes_the_result(tiny_model):
    """Guard against a test that would pass with the window ignored: without it the logits differ."""
    import dataclasses

    d, _ = tiny_model("mistral_window")
    w = load_weights(d, "fp32")
    windowless = dataclasses.replace(w, spec=dataclasses.replace(w.spec, sliding_window=None,
                                                                 sliding_window_layers=()))
    a, _ = ReferenceModel(w).prefill(PROMPT * 2)
    b, _ = ReferenceModel(windowless).prefill(PROMPT * 2)
    assert np.abs(a[:5] - b[:5]).max() == 0  # the first 5 positions see no more than the window
    assert np.abs(a[5:] - b[5:]).max() > 1e-3


def test_fp16_divergence_is_small_and_measured(tiny_model, record_property):
    """fp16 numpy vs fp32 transformers: not bit-equal (different rounding points in the fused kernels), but
    close. The measured figures are documented in docs/DESIGN.md (numerics)."""
    d, model = tiny_model("llama_gqa")
    gen16 = ReferenceModel(load_weights(d, "fp16")).generate(PROMPT, NEW_TOKENS)
    tokens, logits = hf_generate(model, PROMPT, NEW_TOKENS)
    agree = next((i for i, (a, b) in enumerate(zip(gen16.tokens, tokens)) if a != b), NEW_TOKENS)
    # compare only the steps with the same history
    err = float(np.abs(gen16.logits[:agree] - logits[:agree]).max()) if agree else float("nan")
    record_property("fp16_max_abs_logit_err", err)
    record_property("fp16_tokens_agreeing", agree)
    assert agree >= 1
    assert err < 2e-2 * np.abs(logits).max()  # fp16 has 11 significant bits; measured ≈ 0.7% of the range


def test_decode_equals_prefill_of_the_whole_sequence(tiny_model):
    """Incremental decode with the KV cache equals one prefill over prompt + generated tokens."""
    d, _ = tiny_model("qwen2_bias_tied")
    ref = ReferenceModel(load_weights(d, "fp32"))
    gen = ref.generate(PROMPT, 6)
    full, cache = ref.prefill(PROMPT + gen.tokens[:-1])
    assert cache.length == len(PROMPT) + 5
    np.testing.assert_allclose(full[len(PROMPT) - 1:], gen.logits, atol=2e-5)  # summation order only


def test_operators_by_hand():
    # RMSNorm: cast back before γ; mean over the true length
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    out = rms_norm(x, np.array([1.0, 2.0], dtype=np.float32), 0.0)
    np.testing.assert_allclose(out, [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]], rtol=1e-6)
    # RoPE rotate-half: pair (0, 2) rotated by 90 degrees
    v = np.array([[[1.0, 0.0, 0.0, 5.0]]], dtype=np.float32)
    r = apply_rope(v, np.array([[0.0, 1.0]], np.float32), np.array([[1.0, 0.0]], np.float32))
    np.testing.assert_allclose(r, [[[0.0, 0.0, 1.0, 5.0]]])
    # mask with a window of 2: query 3 sees keys 2 and 3
    assert attention_mask(np.array([3]), np.arange(5), 2).tolist() == [[False, False, True, True, False]]
    assert argmax_first(np.array([1.0, 3.0, 3.0])) == 1


def test_bad_token_ids(tiny_model):
    d, _ = tiny_model("llama_gqa")
    ref = ReferenceModel(load_weights(d, "fp32"))
    with pytest.raises(InputError, match=r"token id 97 is outside the vocabulary 0\.\.96"):
        ref.prefill([1, 97])
    with pytest.raises(InputError, match="non-empty"):
        ref.prefill([])
