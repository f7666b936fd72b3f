"""The transformer of method §10 in plain numpy: the numerics every mesh implementation is checked against.

It follows Hugging Face transformers (Llama 1/2/3, Mistral, Qwen2) operation by operation, with the same
rounding points, so that in fp32 its logits match transformers within 1e-4 and its greedy tokens are equal
(tested on tiny random-weight models), and in fp16 the divergence is measured (docs/DESIGN.md):

* matrix products take inputs in the model dtype, accumulate in fp32 and round the result to the model dtype
  (transformers on CPU does the same for fp16); biases are added in the model dtype;
* RMSNorm: ``γ ⊙ cast_back(x·rsqrt(mean(x²) + eps))``, the mean over the true E in fp32;
* RoPE rotate-half with pairs (i, i + d/2); cos/sin of ``position·inv_freq`` computed in fp32 (Llama-3 scaling
  applied to inv_freq) and cast to the model dtype;
* GQA/MQA (query head i uses KV head ⌊i/n_rep⌋), scale d^(-1/2), causal mask plus the sliding window of the
  layer (a query at p sees keys in (p − window, p]), softmax in fp32 cast back before p·V;
* SwiGLU ``down(silu(gate(x)) ⊙ up(x))``; residual adds in the model dtype; final norm; LM head; greedy
  argmax with ties to the lowest index.

``ReferenceModel.prefill`` runs a prompt and returns a `ReferenceCache` (K after RoPE, V); ``decode`` appends
one token to it. ``trace`` arguments collect every intermediate, so mesh programs can be compared op by op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plmr.errors import InputError
from waferllm.model import ModelSpec
from waferllm.weights import ModelWeights

F32 = np.float32


# ---- operators ----------------------------------------------------------------------------------------
def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w with fp32 accumulation, rounded to x's dtype."""
    return (x.astype(F32) @ w.astype(F32)).astype(x.dtype)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    y = matmul(x, w)
    return y if b is None else y + b


def rms_norm(x: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis (§10): statistics in fp32, cast back before the multiply by γ."""
    xf = x.astype(F32)
    var = np.mean(xf * xf, axis=-1, keepdims=True)
    return gamma * (xf * (1.0 / np.sqrt(var + F32(eps)))).astype(x.dtype)


def silu(z: np.ndarray) -> np.ndarray:
    """z·sigmoid(z) = z / (1 + e^(−z)), evaluated in fp32 and rounded to z's dtype."""
    zf = z.astype(F32)
    return (zf / (F32(1.0) + np.exp(-zf))).astype(z.dtype)


def rope_inv_freq(spec: ModelSpec) -> np.ndarray:
    """inv_freq[i], i < d/2, with Llama-3 scaling, as fp32 (the precision transformers computes it in)."""
    return np.asarray(spec.rope_inv_freq(), dtype=np.float64).astype(F32)


def rope_cos_sin(spec: ModelSpec, positions: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of ``position·inv_freq`` ([len(positions), d/2]), computed in fp32, cast to ``dtype``."""
    ang = np.asarray(positions, dtype=F32)[:, None] * rope_inv_freq(spec)[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE on the last axis of x [T, heads, d] with cos/sin [T, d/2] (pairs i, i + d/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def attention_mask(q_pos: np.ndarray, k_pos: np.ndarray, window: int | None) -> np.ndarray:
    """True where query position p may see key position k: k ≤ p, and k > p − window with a window."""
    q, k = np.asarray(q_pos)[:, None], np.asarray(k_pos)[None, :]
    ok = k <= q
    if window is not None:
        ok &= k > q - window
    return ok


def softmax_fp32(s: np.ndarray) -> np.ndarray:
    """Row softmax in fp32 (max subtracted); returns fp32."""
    sf = s.astype(F32)
    e = np.exp(sf - sf.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos: np.ndarray, k_pos: np.ndarray,
              window: int | None, trace: dict | None = None) -> np.ndarray:
    """GQA attention: q [T, n_h, d], k and v [S, n_kv, d] → [T, n_h·d] in q's dtype."""
    t, n_h, d = q.shape
    n_rep = n_h // k.shape[1]
    kk = np.repeat(k, n_rep, axis=1)  # query head i uses KV head i // n_rep
    vv = np.repeat(v, n_rep, axis=1)
    dt = q.dtype
    scores = np.einsum("thd,shd->hts", q.astype(F32), kk.astype(F32)).astype(dt) * dt.type(d ** -0.5)
    scores = np.where(attention_mask(q_pos, k_pos, window)[None], scores.astype(F32), -np.inf)
    probs = softmax_fp32(scores).astype(dt)
    out = np.einsum("hts,shd->thd", probs.astype(F32), vv.astype(F32)).astype(dt)
    if trace is not None:
        trace["scores"], trace["probs"] = scores, probs
    return out.reshape(t, n_h * d)


def argmax_first(logits: np.ndarray) -> int:
    """Greedy pick with ties to the lowest index (as torch.argmax)."""
    return int(np.argmax(logits))


# ---- the model ----------------------------------------------------------------------------------------
@dataclass
class ReferenceCache:
    """Per layer, K (after RoPE) and V of every token so far, [S, n_kv, d]; positions 0 … S−1."""

    k: list[np.ndarray]
    v: list[np.ndarray]

    @property
    def length(self) -> int:
        return self.k[0].shape[0] if self.k else 0


@dataclass
class Generation:
    """Greedy generation: the new tokens and the logits (fp32, [n, V]) each one was picked from."""

    tokens: list[int]
    logits: np.ndarray
    prompt: list[int] = field(default_factory=list)


class ReferenceModel:
    """The numpy transformer of one `ModelWeights` (its dtype is the model dtype)."""

    def __init__(self, weights: ModelWeights):
        self.w = weights
        self.spec = weights.spec
        self.dtype = weights.np_dtype

    # -- pieces ------------------------------------------------------------------------------------------
    def embed(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise InputError("token ids must be a non-empty list of integers")
        bad = ids[(ids < 0) | (ids >= self.spec.vocab_size)]
        if bad.size:
            raise InputError(f"token id {int(bad[0])} is outside the vocabulary 0..{self.spec.vocab_size - 1}")
        return self.w.embed[ids]

    def layer(self, i: int, h: np.ndarray, positions: np.ndarray, cache: ReferenceCache,
              trace: dict | None = None) -> np.ndarray:
        """One layer on rows h [T, E] at ``positions``; appends this layer's K, V to ``cache``."""
        s, lw = self.spec, self.w.layers[i]
        n_t = h.shape[0]
        a = rms_norm(h, lw.input_norm, s.rms_norm_eps)
        q = linear(a, lw.q, lw.q_bias).reshape(n_t, s.num_heads, s.head_dim)
        k = linear(a, lw.k, lw.k_bias).reshape(n_t, s.num_kv_heads, s.head_dim)
        v = linear(a, lw.v, lw.v_bias).reshape(n_t, s.num_kv_heads, s.head_dim)
        cos, sin = rope_cos_sin(s, positions, self.dtype)
        q_r, k_r = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.k[i] = np.concatenate([cache.k[i], k_r])
        cache.v[i] = np.concatenate([cache.v[i], v])
        att_trace: dict | None = {} if trace is not None else None
        o = attention(q_r, cache.k[i], cache.v[i], positions, np.arange(cache.k[i].shape[0]),
                      s.layer_sliding_window(i), att_trace)
        attn_out = linear(o, lw.o, lw.o_bias)
        h1 = h + attn_out
        a2 = rms_norm(h1, lw.post_norm, s.rms_norm_eps)
        gate = linear(a2, lw.gate, lw.gate_bias)
        up = linear(a2, lw.up, lw.up_bias)
        act = silu(gate) * up
        mlp = linear(act, lw.down, lw.down_bias)
        h2 = h1 + mlp
        if trace is not None:
            trace.update(dict(attn_norm=a, q=q, k=k, v=v, q_rope=q_r, k_rope=k_r, attn=o, attn_out=attn_out,
                              h_attn=h1, mlp_norm=a2, gate=gate, up=up, act=act, mlp_out=mlp, h_out=h2,
                              **att_trace))
        return h2

    def head(self, h: np.ndarray, trace: dict | None = None) -> np.ndarray:
        """Final norm and LM head on rows h [T, E] → logits [T, V] in the model dtype."""
        n = rms_norm(h, self.w.final_norm, self.spec.rms_norm_eps)
        logits = matmul(n, self.w.lm_head)
        if trace is not None:
            trace.update(final_norm=n, logits=logits)
        return logits

    def empty_cache(self) -> ReferenceCache:
        s = self.spec
        z = np.zeros((0, s.num_kv_heads, s.head_dim), dtype=self.dtype)
        return ReferenceCache(k=[z] * s.num_layers, v=[z] * s.num_layers)

    # -- phases ------------------------------------------------------------------------------------------
    def forward(self, token_ids, cache: ReferenceCache, traces: list | None = None) -> np.ndarray:
        """Run ``token_ids`` after the ``cache.length`` tokens already cached; logits [T, V]."""
        h = self.embed(token_ids)
        start = cache.length
        positions = np.arange(start, start + h.shape[0])
        if traces is not None:
            traces.append({"embed": h})
        for i in range(self.spec.num_layers):
            tr = {} if traces is not None else None
            h = self.layer(i, h, positions, cache, tr)
            if traces is not None:
                traces.append(tr)
        tr = {} if traces is not None else None
        logits = self.head(h, tr)
        if traces is not None:
            traces.append(tr)
        return logits

    def prefill(self, token_ids, traces: list | None = None) -> tuple[np.ndarray, ReferenceCache]:
        cache = self.empty_cache()
        return self.forward(token_ids, cache, traces), cache

    def decode(self, token: int, cache: ReferenceCache, traces: list | None = None) -> np.ndarray:
        """One decode step: logits [V] of the token after ``token``, appended at position cache.length."""
        return self.forward([token], cache, traces)[0]

    def generate(self, prompt_ids, max_new_tokens: int) -> Generation:
        """Greedy generation: prefill, then ``max_new_tokens − 1`` decode steps."""
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        logits, cache = self.prefill(prompt_ids)
        rows = [logits[-1].astype(F32)]
        tokens = [argmax_first(rows[-1])]
        while len(tokens) < max_new_tokens:
            rows.append(self.decode(tokens[-1], cache).astype(F32))
            tokens.append(argmax_first(rows[-1]))
        return Generation(tokens=tokens, logits=np.stack(rows), prompt=list(prompt_ids))
