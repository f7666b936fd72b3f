"""One transformer layer's predicted cycles in prefill and decode, composed op by op from the
per-operation formulas (waferllm-method.md §3.4 decode flow, §3.6 prefill mapping).

Inputs are plain dimensions (``LayerDims``) so this module stays free of model-import code.
Attention heads use the head-aligned column layout of method §3.5: KV groups of columns, RoPE pairs
co-located, so score reductions run per group, in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from plmr.breakdown import CostBreakdown, in_sequence
from plmr.collectives import ktree_allreduce
from plmr.gemm import gemmt, meshgemm
from plmr.gemv import local_gemv_cycles
from plmr.hardware import HardwareSpec
from plmr.ops import elementwise, kv_shift, rmsnorm, rope, silu_mul, softmax
from plmr.primitives import balanced_split, ceil_div, dtype_bytes, t_vec


@dataclass(frozen=True)
class LayerDims:
    """The sizes of one decoder layer that the cost model needs."""

    hidden: int  # E
    ffn: int  # F
    num_heads: int  # n_h
    num_kv_heads: int  # n_kv
    head_dim: int  # d
    qkv_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def n_rep(self) -> int:
        return self.num_heads // self.num_kv_heads

    def weight_elements(self) -> int:
        """W_Q, W_K, W_V, W_O, gate, up, down (biases and norms are negligible per PE)."""
        E = self.hidden
        return E * (self.q_dim + 2 * self.kv_dim) + self.q_dim * E + 3 * E * self.ffn


@dataclass(frozen=True)
class HeadLayout:
    """Per-column attention features under the head-aligned layout (method §3.5), worst column."""

    q_features: int  # q (and o) features on the busiest column
    kv_features: int  # K (and V) features on the busiest column
    q_heads: int  # query heads with features on the busiest column
    group_width: int  # columns a KV group spans (the score allreduce width)


def head_layout(dims: LayerDims, p_x: int) -> HeadLayout:
    """Split n_kv KV groups over P_x columns, then each group's d/2 RoPE pairs over its columns."""
    n_kv, d, n_rep = dims.num_kv_heads, dims.head_dim, dims.n_rep
    if p_x < n_kv:  # a column holds several whole KV groups
        heads = max(balanced_split(n_kv, p_x))
        return HeadLayout(q_features=heads * n_rep * d, kv_features=heads * d, q_heads=heads * n_rep,
                          group_width=1)
    widths = balanced_split(p_x, n_kv)
    narrowest = min(widths)
    pairs = ceil_div(d // 2 if d > 1 else 1, narrowest)
    feats = min(d, 2 * pairs)
    return HeadLayout(q_features=feats * n_rep, kv_features=feats, q_heads=n_rep, group_width=max(widths))


@dataclass(frozen=True)
class TreeChoice:
    """K-tree parameters for one reduction axis (group counts at levels 1..K-1)."""

    k: int = 2
    group_counts: tuple[int, ...] | None = None


def _allreduce(spec: HardwareSpec, n_ax: int, payload: int, tree: TreeChoice, dtype: str,
               name: str) -> CostBreakdown:
    r = ktree_allreduce(spec, n_ax, payload, tree.k, tree.group_counts if n_ax > 1 else None, dtype)
    return CostBreakdown(op=name, compute_cycles=0.0, comm_cycles=r.comm_cycles,
                         total_cycles=r.total_cycles, bytes_per_pe=r.bytes_per_pe,
                         colors_per_pe=r.colors_per_pe, parts=r.parts)


def _local(name: str, cycles: float, nbytes: int = 0) -> CostBreakdown:
    return CostBreakdown(op=name, compute_cycles=cycles, comm_cycles=0.0, total_cycles=cycles,
                         bytes_per_pe=nbytes)


def decode_layer(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, context: int,
                 tree_y: TreeChoice = TreeChoice(), tree_x: TreeChoice = TreeChoice(),
                 dtype: str = "fp16") -> CostBreakdown:
    """One decode step of one layer for batch 1 with ``context`` cached tokens (method §3.4).

    Ten allreduces: 7 along Y, 3 along X; the score allreduce runs per KV group of columns.
    """
    E_y = ceil_div(dims.hidden, p_y)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    q_x, kv_x = hl.q_features, hl.kv_features
    S_y = ceil_div(max(context, 1), p_y)
    tree_g = TreeChoice(tree_x.k, None) if hl.group_width != p_x else tree_x
    steps = [
        rmsnorm(spec, p_y, E_y, 1, tree_y.k, tree_y.group_counts if p_y > 1 else None, dtype),
        _local("qkv.local", local_gemv_cycles(spec, E_y, q_x, dtype)
               + 2 * local_gemv_cycles(spec, E_y, kv_x, dtype)
               + (t_vec(spec, q_x + 2 * kv_x, "add", dtype) if dims.qkv_bias else 0.0),
               E_y * (q_x + 2 * kv_x) * dtype_bytes(dtype)),
        _allreduce(spec, p_y, q_x + 2 * kv_x, tree_y, dtype, "qkv.allreduce"),
        rope(spec, q_x + kv_x, 1, dtype),
        kv_shift(spec, kv_x, dtype) if p_y > 1 else _local("kv_shift", 0.0),  # one row: nothing moves
        _local("scores.local", q_x * t_vec(spec, S_y, "fmac", dtype)),
        _allreduce(spec, hl.group_width, hl.q_heads * S_y, tree_g, dtype, "scores.allreduce"),
        softmax(spec, p_y, S_y, hl.q_heads, tree_y.k, tree_y.group_counts if p_y > 1 else None, dtype),
        _local("pv.local", min(hl.q_heads * S_y * t_vec(spec, max(q_x // max(hl.q_heads, 1), 1), "fmac", dtype),
                               q_x * t_vec(spec, S_y, "fmac", dtype))),
        _allreduce(spec, p_y, q_x, tree_y, dtype, "pv.allreduce"),
        _local("o.local", local_gemv_cycles(spec, q_x, E_y, dtype), q_x * E_y * dtype_bytes(dtype)),
        _allreduce(spec, p_x, E_y, tree_x, dtype, "o.allreduce"),
        elementwise(spec, E_y, "add", dtype),
        rmsnorm(spec, p_y, E_y, 1, tree_y.k, tree_y.group_counts if p_y > 1 else None, dtype),
        _local("gate_up.local", 2 * local_gemv_cycles(spec, E_y, F_x, dtype),
               2 * E_y * F_x * dtype_bytes(dtype)),
        _allreduce(spec, p_y, 2 * F_x, tree_y, dtype, "gate_up.allreduce"),
        silu_mul(spec, F_x, dtype),
        _local("down.local", local_gemv_cycles(spec, F_x, E_y, dtype), F_x * E_y * dtype_bytes(dtype)),
        _allreduce(spec, p_x, E_y, tree_x, dtype, "down.allreduce"),
        elementwise(spec, E_y, "add", dtype),
    ]
    layer = in_sequence("decode_layer", steps)
    colors = _decode_colors(tree_y, tree_x, p_y, p_x)
    return CostBreakdown(op=layer.op, compute_cycles=layer.compute_cycles, comm_cycles=layer.comm_cycles,
                         total_cycles=layer.total_cycles, bytes_per_pe=decode_buffer_bytes(dims, p_y, p_x, dtype),
                         colors_per_pe=colors, parts=layer.parts)


def _decode_colors(tree_y: TreeChoice, tree_x: TreeChoice, p_y: int, p_x: int) -> int:
    """Two statically routed K-tree axes: 2K+1 each (method §6.4 [D]), plus 1 for the KV shift."""
    cy = 2 * tree_y.k + 1 if p_y > 1 else 0
    cx = 2 * tree_x.k + 1 if p_x > 1 else 0
    return cy + cx + (1 if p_y > 1 else 0)


def decode_buffer_bytes(dims: LayerDims, p_y: int, p_x: int, dtype: str = "fp16") -> int:
    """Working buffers of the decode flow (vectors and receive buffers, shared across layers)."""
    E_y = ceil_div(dims.hidden, p_y)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    vec = 4 * E_y + 3 * (hl.q_features + 2 * hl.kv_features) + 4 * F_x
    return vec * dtype_bytes(dtype)


def decode_weight_bytes(dims: LayerDims, p_y: int, p_x: int, dtype: str = "fp16") -> int:
    """Weight bytes of one layer on the busiest PE of a P_y × P_x region (balanced uneven blocks)."""
    E_y = ceil_div(dims.hidden, p_y)
    E_x = ceil_div(dims.hidden, p_x)
    F_x = ceil_div(dims.ffn, p_x)
    F_y = ceil_div(dims.ffn, p_y)
    hl = head_layout(dims, p_x)
    q_y = ceil_div(dims.q_dim, p_y)
    elems = (E_y * (hl.q_features + 2 * hl.kv_features) + min(hl.q_features * E_y, q_y * E_x)
             + 2 * E_y * F_x + min(F_x * E_y, F_y * E_x) + 2 * E_y + 3 * (hl.q_features if dims.qkv_bias else 0))
    return elems * dtype_bytes(dtype)


def kv_bytes_per_token_per_pe(dims: LayerDims, p_x: int, dtype: str = "fp16") -> int:
    """One cached token (K and V) of one layer on the busiest column's PE."""
    return 2 * head_layout(dims, p_x).kv_features * dtype_bytes(dtype)


def prefill_layer(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, tokens: int,
                  tree_x: TreeChoice = TreeChoice(k=1), dtype: str = "fp16") -> CostBreakdown:
    """One layer over a prompt of ``tokens`` (method §3.2, §3.6): MeshGEMM for every projection,
    dist-GEMM-T for Q·Kᵀ, softmax and RMSNorm reductions along X, MeshGEMM for S·V."""
    L = tokens
    L_y = ceil_div(L, p_y)
    E_x = ceil_div(dims.hidden, p_x)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    gx = tree_x.group_counts if p_x > 1 else None
    # Attention per KV group of columns: dist-GEMM-T over the group's width, n_rep heads at once.
    heads_per_col = max(hl.q_heads, 1)
    scores = gemmt(spec, p_y, hl.group_width, L, hl.q_features * hl.group_width // heads_per_col, L, dtype)
    scores = scores.scaled(heads_per_col) if heads_per_col > 1 else scores
    L_x = ceil_div(L, p_x)
    steps = [
        rmsnorm(spec, p_x, E_x, L_y, tree_x.k, gx, dtype),
        meshgemm(spec, p_y, p_x, L, dims.hidden, dims.q_dim, dtype),
        meshgemm(spec, p_y, p_x, L, dims.hidden, dims.kv_dim, dtype),
        meshgemm(spec, p_y, p_x, L, dims.hidden, dims.kv_dim, dtype),
        _local("qkv.bias", L_y * t_vec(spec, hl.q_features + 2 * hl.kv_features, "add", dtype)
               if dims.qkv_bias else 0.0),
        rope(spec, hl.q_features + hl.kv_features, L_y, dtype),
        scores,
        _local("mask_scale", heads_per_col * L_y * t_vec(spec, L_x, "scale", dtype)),
        softmax(spec, p_x, L_x, heads_per_col * L_y, tree_x.k, gx, dtype),
        meshgemm(spec, p_y, p_x, L, L, dims.q_dim, dtype),
        meshgemm(spec, p_y, p_x, L, dims.q_dim, dims.hidden, dtype),
        elementwise(spec, E_x, "add", dtype, rows=L_y),
        rmsnorm(spec, p_x, E_x, L_y, tree_x.k, gx, dtype),
        meshgemm(spec, p_y, p_x, L, dims.hidden, dims.ffn, dtype),
        meshgemm(spec, p_y, p_x, L, dims.hidden, dims.ffn, dtype),
        silu_mul(spec, F_x, dtype, rows=L_y),
        meshgemm(spec, p_y, p_x, L, dims.ffn, dims.hidden, dtype),
        elementwise(spec, E_x, "add", dtype, rows=L_y),
    ]
    return in_sequence("prefill_layer", steps)


def prefill_activation_bytes(dims: LayerDims, p_y: int, p_x: int, tokens: int, dtype: str = "fp16") -> int:
    """Per-PE activations of one prefill layer (authors' footprint 14SD + 4S·Fp + 2S², method §4.5),
    with S, D, Fp the per-PE sequence, hidden and FFN tile sizes."""
    S = ceil_div(tokens, p_y)
    D = ceil_div(dims.hidden, p_x)
    Fp = ceil_div(dims.ffn, p_x)
    S_x = ceil_div(tokens, p_x)
    return (14 * S * D + 4 * S * Fp + 2 * S * S_x) * dtype_bytes(dtype)


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)
