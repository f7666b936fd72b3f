"""Cycle costs of the decode program's local work on one PE (``meshgemm/decode_program.py``), one
pure rule per operator of the layer. The reductions between them are priced by
``plmr.collectives.line_tree_allreduce`` (``plmr.transformer.decode_steps`` composes both).

Every rule counts the program's DSD ops with the simulator's widths (``simulator/costs.py``,
hardware-and-csl.md §3.2-3.3): a vector op is ``c_op + ⌈n/F⌉``; partial sums are fp32 (an FMAC of
fp16 weights into fp32 runs at F(fmac, fp16_fp32)); a ``Copy`` across dtypes is a convert (F of
``convert``); a scalar function (exp, rsqrt, SiLU) is ``c_op + n·c_fn``. Scalar code (loop steps,
address arithmetic, the scalar max and sum loops of softmax and Σx²) costs nothing on the WSE's
scalar path as modelled (``scalar_op_cycles`` = 0), so it does not appear.
"""

from __future__ import annotations

import math

from plmr.breakdown import CostBreakdown
from plmr.hardware import HardwareSpec
from plmr.primitives import dtype_bytes, t_fn, t_msg

ACC = "fp32"  # partial products and reductions of the decode program


def _mixed(a: str, b: str) -> str:
    """The SIMD-table dtype of an op over buffers of dtypes a and b (``simulator.costs.op_dtype``)."""
    return a if a == b else "fp16_fp32"


def t_op(spec: HardwareSpec, n: int, op: str, dtype: str, stride: int = 1) -> float:
    """One vector op of ``n`` elements: ``c_op + ⌈n/F⌉`` with F capped by a strided operand
    (hardware-and-csl.md §3.2: strides 0, 1 and ≡ 2, 3, 5, 6 mod 8 keep F; ≡ 1, 4, 7 allow 2 per
    cycle; ≡ 0 one)."""
    if n <= 0:
        return 0.0
    f = spec.simd_width(op, dtype)
    if stride not in (0, 1) and stride % 8 not in (2, 3, 5, 6):
        f = min(f, 2 if stride % 8 in (1, 7, 4) else 1)
    return spec.op_issue_cycles + math.ceil(n / f)


def t_copy(spec: HardwareSpec, n: int, src: str, dst: str, stride: int = 1) -> float:
    """A ``Copy``: a move within one dtype, a convert across dtypes."""
    if src == dst:
        return t_op(spec, n, "mov", dst, stride)
    return t_op(spec, n, "convert", "fp16", stride)


def t_fill(spec: HardwareSpec, n: int, dtype: str = ACC) -> float:
    """A ``Fill`` (zeroing an accumulator)."""
    return t_op(spec, n, "mov", dtype)


def _local(op: str, cycles: float, nbytes: int = 0) -> CostBreakdown:
    return CostBreakdown(op=op, compute_cycles=cycles, comm_cycles=0.0, total_cycles=cycles, bytes_per_pe=nbytes)


def norm_numerator_local(spec: HardwareSpec, length: int, dtype: str, op: str = "rmsnorm") -> CostBreakdown:
    """An RMSNorm folded into the next GEMV: Σx² (scalar code) and γ ⊙ x (one multiply); its scale is
    ``gemv_partials_local(..., norm=True)``."""
    return _local(op, t_op(spec, length, "mul", dtype), 2 * length * dtype_bytes(dtype))


def gemv_partials_local(spec: HardwareSpec, rows: int, n: int, dtype: str, bias: bool = False,
                        op: str = "gemv", norm: bool = False) -> CostBreakdown:
    """A local GEMV of the decode program: zero ``n`` fp32 partials, ``rows`` FMACs of length n
    (fp16 weights into fp32 at F(fmac, fp16_fp32)), and — after the allreduce — with ``norm`` the
    preceding RMSNorm's scale (rsqrt of one value, the n sums scaled in fp32), the result rounded
    to the model dtype (a convert), plus the bias."""
    if rows <= 0 or n <= 0:
        return _local(op, 0.0)
    cyc = t_fill(spec, n) + rows * t_op(spec, n, "fmac", _mixed(dtype, ACC)) + t_copy(spec, n, ACC, dtype)
    if norm:
        cyc += t_fn(spec, 1) + t_op(spec, n, "scale", ACC)
    if bias:
        cyc += t_op(spec, n, "add", dtype)
    return _local(op, cyc, rows * n * dtype_bytes(dtype))


def rope_local(spec: HardwareSpec, chunks: int, pairs: int, features: int, dtype: str) -> CostBreakdown:
    """RoPE on every q and k head chunk of the column (``chunks`` of ``pairs`` pairs): a copy of the
    q|k|v vector, then per chunk four multiplies and two adds of ``pairs`` elements. Issue-bound
    when a column holds one or two pairs of each head (c_op per op)."""
    per_chunk = 4 * t_op(spec, pairs, "mul", dtype) + 2 * t_op(spec, pairs, "add", dtype)
    return _local("rope", t_copy(spec, features, dtype, dtype) + chunks * per_chunk, features * dtype_bytes(dtype))


def kv_append_local(spec: HardwareSpec, kv_features: int, capacity: int, dtype: str,
                    role: str = "shift") -> CostBreakdown:
    """The KV append of method §8 on one row. ``role`` ``"shift"``: a shifting row's oldest K (from a
    feature-major ring, stride = capacity) and V copied out, sent north (an asynchronous stream of
    2·kv features that fits the fabric's buffers), the entry from the row below received (one hop)
    and copied into the freed slot; rows pair up by parity, so a row's receive overlaps its partner's
    send. ``"send"``: the bottom row when the rows shift: its oldest entry copied out and sent, the
    new entry copied in (nothing to receive). ``"write"`` (one row alone, or no row shifts at this
    position): only the new entry copied in."""
    if role not in ("shift", "send", "write"):
        raise ValueError(f"kv_append_local: role {role!r}; use shift, send or write")
    k_copy = t_copy(spec, kv_features, dtype, dtype, stride=capacity)
    v_copy = t_copy(spec, kv_features, dtype, dtype)
    cyc = k_copy + v_copy
    n_w = 2 * kv_features
    if role == "shift":
        cyc += k_copy + v_copy + (spec.op_issue_cycles + n_w) + t_msg(spec, n_w, 1, 0, dtype)
    elif role == "send":
        cyc += k_copy + v_copy + (spec.op_issue_cycles + n_w)
    return _local("kv_append", cyc, 4 * kv_features * dtype_bytes(dtype))


def ring_runs(tokens: int) -> int:
    """Runs a row's cached tokens take in its ring buffer: two once the row holds more than one
    token (some row's run wraps past the end of its ring at almost every position)."""
    return 2 if tokens > 1 else (1 if tokens == 1 else 0)


def scores_local(spec: HardwareSpec, heads: int, head_features: int, tokens: int, score_heads: int,
                 dtype: str, runs: int | None = None) -> CostBreakdown:
    """q·Kᵀ against one chunk of the row's cached keys: zero ``score_heads``·``tokens`` fp32 scores,
    one FMAC per (head, feature, ring run) over the run's tokens, and (after the per-group allreduce)
    the 1/√d scale. ``runs``: the chunk's ring runs (default ``ring_runs``: the chunk that wraps)."""
    if tokens <= 0:
        return _local("scores", 0.0)
    runs = ring_runs(tokens) if runs is None else runs
    fmacs = runs * spec.op_issue_cycles + math.ceil(tokens / spec.simd_width("fmac", _mixed(dtype, ACC))) + (runs - 1)
    cyc = t_fill(spec, score_heads * tokens) + heads * head_features * fmacs
    cyc += t_op(spec, score_heads * tokens, "scale", ACC)
    return _local("scores", cyc, score_heads * tokens * dtype_bytes(ACC))


def softmax_local(spec: HardwareSpec, heads: int, tokens: int, dtype: str) -> CostBreakdown:
    """One chunk, its maximum known: per head s − m (an FMAC by −1 of the broadcast maximum, fp32),
    exp over the chunk's scores (left unnormalised: p·V divides by the sums, ``pv_finish_local``),
    and one conversion of all of them to the model dtype (fp16 only: p·V's weights)."""
    if tokens <= 0 or heads <= 0:
        return _local("softmax", 0.0)
    cyc = heads * t_op(spec, tokens, "fmac", ACC) + t_fn(spec, heads * tokens)
    cyc += 0.0 if dtype == ACC else t_copy(spec, heads * tokens, ACC, dtype)
    return _local("softmax", cyc, heads * tokens * dtype_bytes(ACC))


def rescale_local(spec: HardwareSpec, heads: int, head_features: int, score_heads: int) -> CostBreakdown:
    """The online softmax's rescaling (a later chunk, or the rows brought to the largest maximum):
    the factors exp(m_old − m_new) of the ``score_heads`` maxima (an FMAC by −1 and exp, fp32), each
    head's p·V partials scaled by its factor and the sums multiplied by them."""
    if score_heads <= 0:
        return _local("softmax", 0.0)
    cyc = t_op(spec, score_heads, "fmac", ACC) + t_fn(spec, score_heads) + t_op(spec, score_heads, "mul", ACC)
    cyc += heads * t_op(spec, head_features, "scale", ACC)
    return _local("softmax", cyc, score_heads * dtype_bytes(ACC))


def pv_accumulate_local(spec: HardwareSpec, heads: int, head_features: int, tokens: int, dtype: str,
                        first: bool = True) -> CostBreakdown:
    """p·V over one chunk: (``first``) zero the column's fp32 outputs, then one FMAC per (head, cached
    token) of the head's features."""
    q = heads * head_features
    if q <= 0:
        return _local("pv", 0.0)
    cyc = (t_fill(spec, q) if first else 0.0) + heads * tokens * t_op(spec, head_features, "fmac", _mixed(dtype, ACC))
    return _local("pv", cyc, q * dtype_bytes(ACC))


def pv_finish_local(spec: HardwareSpec, heads: int, head_features: int, dtype: str) -> CostBreakdown:
    """After p·V's allreduce along Y (which carries the softmax sums): each head divided by its sum (a
    scale of its features, fp32) and the output rounded to the model dtype."""
    q = heads * head_features
    if q <= 0:
        return _local("pv", 0.0)
    return _local("pv", heads * t_op(spec, head_features, "scale", ACC) + t_copy(spec, q, ACC, dtype),
                  q * dtype_bytes(ACC))


def residual_local(spec: HardwareSpec, length: int, dtype: str, op: str = "residual") -> CostBreakdown:
    return _local(op, t_op(spec, length, "add", dtype), length * dtype_bytes(dtype))


def silu_mul_local(spec: HardwareSpec, length: int, dtype: str) -> CostBreakdown:
    """SiLU(gate) as one scalar function per element, then one multiply by up."""
    return _local("silu_mul", t_fn(spec, length) + t_op(spec, length, "mul", dtype), 2 * length * dtype_bytes(dtype))


# ---- the work besides the layers: the LM head's stage and the first stage ------------------------------------
def final_norm_local(spec: HardwareSpec, length: int, dtype: str) -> tuple[CostBreakdown, CostBreakdown]:
    """The final RMSNorm (a norm of its own: nothing follows it that could carry its Σx²), as the two
    local parts around its one-value allreduce along Y: before, the segment converted to fp32 (fp16
    only; Σx² is scalar code); after, rsqrt of the mean, the segment scaled in fp32, rounded back
    (fp16 only) and multiplied by γ."""
    before = t_copy(spec, length, dtype, ACC) if dtype != ACC else 0.0
    after = t_fn(spec, 1) + t_op(spec, length, "scale", ACC) + t_op(spec, length, "mul", dtype)
    after += t_copy(spec, length, ACC, dtype) if dtype != ACC else 0.0
    return (_local("final_norm", before, length * dtype_bytes(ACC)),
            _local("final_norm", after, length * dtype_bytes(dtype)))


def lm_head_local(spec: HardwareSpec, rows: int, vocab: int, dtype: str, tied_stride: int = 0) -> CostBreakdown:
    """The LM head's partial logits of the column's ``vocab`` rows: zero them (fp32), then one FMAC per
    hidden feature of the segment. Tied to the embedding (``tied_stride`` > 0), the FMACs read the
    embedding blocks column-wise, strided by the block's row length (hardware-and-csl.md §3.2)."""
    if rows <= 0 or vocab <= 0:
        return _local("lm_head", 0.0)
    fmac = t_op(spec, vocab, "fmac", _mixed(dtype, ACC), stride=tied_stride if tied_stride > 0 else 1)
    return _local("lm_head", t_fill(spec, vocab) + rows * fmac, rows * vocab * dtype_bytes(dtype))


def argmax_local(spec: HardwareSpec, vocab: int, dtype: str) -> CostBreakdown:
    """After the logits' allreduce: the sums rounded to the model dtype (as transformers rounds the
    logits; a move in fp32), then the column's argmax as scalar code (free as modelled)."""
    return _local("argmax", t_copy(spec, vocab, ACC, dtype), vocab * dtype_bytes(dtype))


def embedding_local(spec: HardwareSpec, length: int, dtype: str) -> CostBreakdown:
    """The next token's embedding row: the column that holds the token copies its segment of the row,
    every other column zeroes it (one op of ``length`` either way), before a sum along X."""
    return _local("embedding", t_op(spec, length, "mov", dtype), length * dtype_bytes(dtype))
