"""One transformer layer's predicted cycles in prefill and decode, composed op by op from the
per-operation formulas (waferllm-method.md §3.4 decode flow, §3.6 prefill mapping).

Inputs are plain dimensions (``LayerDims``) so this module stays free of model-import code.
Attention heads use the head-aligned column layout of method §3.5: KV groups of columns, RoPE pairs
co-located, so score reductions run per group, in parallel.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from plmr.breakdown import CostBreakdown, in_sequence
from plmr.collectives import ktree_allreduce_cycles
from plmr.gemm import gemmt, meshgemm
from plmr.gemv import local_gemv_cycles
from plmr.hardware import HardwareSpec
from plmr.ops import elementwise, kv_shift, rmsnorm, rope, silu_mul, softmax
from plmr.primitives import ceil_div, dtype_bytes, t_vec


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
        heads = ceil_div(n_kv, p_x)  # the largest block of a balanced split
        return HeadLayout(q_features=heads * n_rep * d, kv_features=heads * d, q_heads=heads * n_rep,
                          group_width=1)
    narrowest, widest = p_x // n_kv, ceil_div(p_x, n_kv)  # of the balanced split of P_x into n_kv
    pairs = ceil_div(d // 2 if d > 1 else 1, narrowest)
    feats = min(d, 2 * pairs)
    return HeadLayout(q_features=feats * n_rep, kv_features=feats, q_heads=n_rep, group_width=widest)


@dataclass(frozen=True)
class TreeChoice:
    """K-tree parameters for one reduction axis (group counts at levels 1..K-1)."""

    k: int = 2
    group_counts: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Reduction:
    """One allreduce of a decode step, left symbolic so the planner can price it under any K-tree.

    ``axis`` is "y" (along a column, P_y PEs), "x" (along a row, P_x PEs) or "group" (the score
    allreduce within one KV group of columns: ``n_ax`` PEs, the X tree's K with default groups)."""

    op: str
    axis: str
    n_ax: int
    payload: int
    dtype: str
    broadcast: bool = True


@functools.lru_cache(maxsize=1 << 16)
def price_reduction(spec: HardwareSpec, r: Reduction, tree: TreeChoice) -> float:
    """Cycles of one symbolic allreduce under ``tree`` (method §6.6). Memoised: a pure function of
    hashable arguments, priced thousands of times by the planner's search."""
    if r.n_ax <= 1 or r.payload <= 0:
        return 0.0
    groups = None if r.axis == "group" else tree.group_counts
    return ktree_allreduce_cycles(spec, r.n_ax, r.payload, tree.k, groups, r.dtype,
                                  with_broadcast=r.broadcast)


def _local(name: str, cycles: float, nbytes: int = 0) -> CostBreakdown:
    return CostBreakdown(op=name, compute_cycles=cycles, comm_cycles=0.0, total_cycles=cycles,
                         bytes_per_pe=nbytes)


def _acc(dtype: str) -> str:
    """Norm and softmax reductions of fp16 data run in fp32 (as ``plmr.ops`` does)."""
    return "fp32" if dtype == "fp16" else dtype


def decode_steps(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, context: int,
                 dtype: str = "fp16", batch: int = 1) -> list:
    """One decode step of one layer for ``batch`` requests with ``context`` cached tokens each
    (method §3.4), as a sequence of local costs (``CostBreakdown``) and symbolic ``Reduction``s.

    Ten allreduces: 7 along Y, 3 along X (the score allreduce within each KV group of columns).
    Batch: the B requests share the weights, so each GEMV becomes B FMAC passes over the local
    block (a skinny GEMM) and every payload carries B vectors; each request has its own KV cache.
    Norm and softmax local parts are ``plmr.ops`` on one PE (whose allreduce costs nothing).

    The local costs depend on the grid only through the tile sizes (E_y, F_x, the head layout,
    S_y), which neighbouring grids share, so each group of them is memoised on its tiles."""
    B = batch
    E_y = ceil_div(dims.hidden, p_y)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    q_x, kv_x = hl.q_features, hl.kv_features
    S_y = ceil_div(max(context, 1), p_y)
    acc = _acc(dtype)
    norm, residual = _rows_locals(spec, E_y, dtype, B)
    rope_, shift, silu = _column_locals(spec, q_x, kv_x, F_x, p_y > 1, dtype, B)
    qkv, o = _projection_locals(spec, E_y, q_x, kv_x, dims.qkv_bias, dtype, B)
    gate_up, down = _ffn_locals(spec, E_y, F_x, dtype, B)
    scores, soft, pv = _attention_locals(spec, q_x, hl.q_heads, S_y, dtype, B)
    norm_red = Reduction("rmsnorm", "y", p_y, B, acc)
    return [
        norm, norm_red,
        qkv,
        Reduction("qkv.allreduce", "y", p_y, B * (q_x + 2 * kv_x), dtype),
        rope_,
        shift,
        scores,
        Reduction("scores.allreduce", "x" if hl.group_width == p_x else "group", hl.group_width,
                  B * hl.q_heads * S_y, dtype),
        soft,
        Reduction("softmax", "y", p_y, B * hl.q_heads, acc),
        Reduction("softmax", "y", p_y, B * hl.q_heads, acc),
        pv,
        Reduction("pv.allreduce", "y", p_y, B * q_x, dtype),
        o,
        Reduction("o.allreduce", "x", p_x, B * E_y, dtype),
        residual,
        norm, norm_red,
        gate_up,
        Reduction("gate_up.allreduce", "y", p_y, B * 2 * F_x, dtype),
        silu,
        down,
        Reduction("down.allreduce", "x", p_x, B * E_y, dtype),
        residual,
    ]


_LOCALS_CACHE = 1 << 14


@functools.lru_cache(maxsize=_LOCALS_CACHE)
def _rows_locals(spec: HardwareSpec, E_y: int, dtype: str, B: int) -> tuple[CostBreakdown, CostBreakdown]:
    """RMSNorm's local part and the residual add: they see only the E_y rows' share of the vector."""
    return rmsnorm(spec, 1, E_y, B, 1, None, dtype), elementwise(spec, E_y, "add", dtype, rows=B)


@functools.lru_cache(maxsize=_LOCALS_CACHE)
def _column_locals(spec: HardwareSpec, q_x: int, kv_x: int, F_x: int, rows: bool, dtype: str,
                   B: int) -> tuple[CostBreakdown, CostBreakdown, CostBreakdown]:
    """RoPE, the KV shift (nothing moves on one row) and SiLU·up: the column's features only."""
    return (rope(spec, q_x + kv_x, B, dtype),
            kv_shift(spec, B * kv_x, dtype) if rows else _local("kv_shift", 0.0),
            silu_mul(spec, F_x, dtype, rows=B))


@functools.lru_cache(maxsize=_LOCALS_CACHE)
def _projection_locals(spec: HardwareSpec, E_y: int, q_x: int, kv_x: int, bias: bool, dtype: str,
                       B: int) -> tuple[CostBreakdown, CostBreakdown]:
    """The QKV and O GEMV blocks (E_y x features and back)."""
    b = dtype_bytes(dtype)
    qkv = _local("qkv.local", B * (local_gemv_cycles(spec, E_y, q_x, dtype) + 2 * local_gemv_cycles(spec, E_y, kv_x, dtype)
                                   + (t_vec(spec, q_x + 2 * kv_x, "add", dtype) if bias else 0.0)),
                 E_y * (q_x + 2 * kv_x) * b)
    return qkv, _local("o.local", B * local_gemv_cycles(spec, q_x, E_y, dtype), q_x * E_y * b)


@functools.lru_cache(maxsize=_LOCALS_CACHE)
def _ffn_locals(spec: HardwareSpec, E_y: int, F_x: int, dtype: str, B: int) -> tuple[CostBreakdown, CostBreakdown]:
    """The gate/up and down GEMV blocks."""
    b = dtype_bytes(dtype)
    return (_local("gate_up.local", B * 2 * local_gemv_cycles(spec, E_y, F_x, dtype), 2 * E_y * F_x * b),
            _local("down.local", B * local_gemv_cycles(spec, F_x, E_y, dtype), F_x * E_y * b))


@functools.lru_cache(maxsize=_LOCALS_CACHE)
def _attention_locals(spec: HardwareSpec, q_x: int, q_heads: int, S_y: int, dtype: str,
                      B: int) -> tuple[CostBreakdown, CostBreakdown, CostBreakdown]:
    """Scores against the S_y cached keys of this row, softmax's local part, P·V."""
    return (_local("scores.local", B * q_x * t_vec(spec, S_y, "fmac", dtype)),
            softmax(spec, 1, S_y, B * q_heads, 1, None, dtype),
            _local("pv.local", B * min(q_heads * S_y * t_vec(spec, max(q_x // max(q_heads, 1), 1), "fmac", dtype),
                                       q_x * t_vec(spec, S_y, "fmac", dtype))))


def axis_cycles(spec: HardwareSpec, steps: list, axis: str, tree: TreeChoice) -> float:
    """The part of a step sequence that depends on one axis's K-tree (``"x"`` includes the
    per-group score allreduce, whose K follows the X tree)."""
    axes = ("x", "group") if axis == "x" else ("y",)
    return sum(price_reduction(spec, s, tree) for s in steps if isinstance(s, Reduction) and s.axis in axes)


def local_cycles(steps: list) -> float:
    """The part of a step sequence that no K-tree choice changes."""
    return sum(s.total_cycles for s in steps if isinstance(s, CostBreakdown))


def compose(spec: HardwareSpec, steps: list, tree_y: TreeChoice, tree_x: TreeChoice, op: str) -> CostBreakdown:
    """Price every symbolic reduction under its axis's tree and add the steps in sequence."""
    priced = []
    for s in steps:
        if isinstance(s, Reduction):
            t = price_reduction(spec, s, tree_y if s.axis == "y" else tree_x)
            priced.append(CostBreakdown(op=s.op, compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                                        bytes_per_pe=2 * s.payload * dtype_bytes(s.dtype)))
        else:
            priced.append(s)
    return in_sequence(op, priced)


def decode_layer(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, context: int,
                 tree_y: TreeChoice = TreeChoice(), tree_x: TreeChoice = TreeChoice(),
                 dtype: str = "fp16", batch: int = 1) -> CostBreakdown:
    """One decode step of one layer (``decode_steps`` priced under the given K-trees)."""
    layer = compose(spec, decode_steps(spec, dims, p_y, p_x, context, dtype, batch), tree_y, tree_x,
                    "decode_layer")
    colors = _decode_colors(tree_y, tree_x, p_y, p_x)
    return CostBreakdown(op=layer.op, compute_cycles=layer.compute_cycles, comm_cycles=layer.comm_cycles,
                         total_cycles=layer.total_cycles,
                         bytes_per_pe=decode_buffer_bytes(dims, p_y, p_x, dtype, batch),
                         colors_per_pe=colors, parts=layer.parts)


def _decode_colors(tree_y: TreeChoice, tree_x: TreeChoice, p_y: int, p_x: int) -> int:
    """Two statically routed K-tree axes: 2K+1 each (method §6.4 [D]), plus 1 for the KV shift."""
    cy = 2 * tree_y.k + 1 if p_y > 1 else 0
    cx = 2 * tree_x.k + 1 if p_x > 1 else 0
    return cy + cx + (1 if p_y > 1 else 0)


def decode_buffer_bytes(dims: LayerDims, p_y: int, p_x: int, dtype: str = "fp16", batch: int = 1) -> int:
    """Working buffers of the decode flow (vectors and receive buffers, shared across layers), one
    set per request of the batch."""
    E_y = ceil_div(dims.hidden, p_y)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    vec = 4 * E_y + 3 * (hl.q_features + 2 * hl.kv_features) + 4 * F_x
    return batch * vec * dtype_bytes(dtype)


@dataclass(frozen=True)
class AttentionUnits:
    """How attention features fall on the busiest column (method §3.5), in whole units: RoPE pairs
    of the narrowest KV group (``unit_kv`` = 2 K features per unit) when P_x ≥ n_kv, whole KV heads
    (``unit_kv`` = d) when a column holds several groups. ``base``·span + ``extra`` units are split
    over ``span`` columns: ``extra`` of them hold one more unit."""

    unit_kv: int
    base: int
    extra: int
    span: int

    def units(self, layers: int) -> int:
        """Units on the busiest column summed over ``layers`` layers whose layouts rotate which
        columns hold the extra units (weights are placed offline per layer, so this is free)."""
        return layers * self.base + ceil_div(layers * self.extra, self.span)


def attention_units(dims: LayerDims, p_x: int) -> AttentionUnits:
    n_kv, d = dims.num_kv_heads, dims.head_dim
    if p_x < n_kv:
        return AttentionUnits(unit_kv=d, base=n_kv // p_x, extra=n_kv % p_x, span=p_x)
    narrowest = p_x // n_kv  # the smallest block of the balanced split of P_x into n_kv groups
    pairs = max(d // 2, 1)
    return AttentionUnits(unit_kv=min(2, d), base=pairs // narrowest, extra=pairs % narrowest, span=narrowest)


class StageMemory:
    """Per-PE bytes of stages of consecutive layers on one P_y × P_x region (the busiest PE), with
    the grid's tile sizes worked out once: a placement asks for many layer counts on one grid."""

    def __init__(self, dims: LayerDims, p_y: int, p_x: int, dtype: str = "fp16"):
        self.dims = dims
        self.p_y = p_y
        self.b = dtype_bytes(dtype)
        self.E_y, self.E_x = ceil_div(dims.hidden, p_y), ceil_div(dims.hidden, p_x)
        self.F_y = ceil_div(dims.ffn, p_y)
        self.q_y = ceil_div(dims.q_dim, p_y)
        self.p_x = p_x
        self.au = attention_units(dims, p_x)

    def weight_bytes(self, layers: int) -> int:
        """Weight bytes of ``layers`` consecutive layers.

        The hidden dimension E keeps one split over the rows for every layer (it is the residual
        stream's layout), so E_y = ⌈E/P_y⌉. The splits along x (FFN columns, attention units) are
        rotated from layer to layer, so over n layers the busiest column holds ⌈n·F/P_x⌉ FFN
        columns, not n·⌈F/P_x⌉: tiles are balanced rather than rounded up where the layout allows."""
        n = layers
        if n <= 0:
            return 0
        dims, E_y, E_x = self.dims, self.E_y, self.E_x
        F_tot = ceil_div(n * dims.ffn, self.p_x)
        kv_tot = self.au.unit_kv * self.au.units(n)  # K features summed over the n layers (V the same)
        q_tot = dims.n_rep * kv_tot
        elems = (E_y * (q_tot + 2 * kv_tot) + min(q_tot * E_y, n * self.q_y * E_x)
                 + 2 * E_y * F_tot + min(F_tot * E_y, n * self.F_y * E_x) + n * 2 * E_y
                 + ((q_tot + 2 * kv_tot) if dims.qkv_bias else 0))
        return elems * self.b

    def rows(self, tokens: int) -> int:
        """KV entries one PE keeps for a layer caching ``tokens`` tokens: the shift spreads them
        over the rows, ⌈t/P_y⌉ each (method §8)."""
        return ceil_div(max(tokens, 0), self.p_y)

    def kv_bytes(self, layers: int, rows_sum: int, rows_max: int, batch: int = 1) -> int:
        """KV-cache bytes of ``layers`` layers whose ``rows`` add up to ``rows_sum`` (the longest
        ``rows_max``): attention units rotate over the layers as the weights do, each extra unit
        charged at the longest cache."""
        if layers <= 0:
            return 0
        au = self.au
        extra_units = au.units(layers) - layers * au.base
        units_tokens = au.base * rows_sum + extra_units * rows_max
        return batch * 2 * au.unit_kv * units_tokens * self.b


def stage_weight_bytes(dims: LayerDims, p_y: int, p_x: int, layers: int = 1, dtype: str = "fp16") -> int:
    """Weight bytes of ``layers`` consecutive layers on the busiest PE of a P_y × P_x region
    (``StageMemory.weight_bytes``)."""
    return StageMemory(dims, p_y, p_x, dtype).weight_bytes(layers)


def decode_weight_bytes(dims: LayerDims, p_y: int, p_x: int, dtype: str = "fp16") -> int:
    """Weight bytes of one layer on the busiest PE of a P_y × P_x region."""
    return stage_weight_bytes(dims, p_y, p_x, 1, dtype)


def stage_kv_bytes(dims: LayerDims, p_y: int, p_x: int, tokens: list[int] | tuple[int, ...],
                   dtype: str = "fp16", batch: int = 1) -> int:
    """KV-cache bytes on the busiest PE for layers holding ``tokens[i]`` cached tokens each
    (``StageMemory.kv_bytes``)."""
    if not tokens:
        return 0
    mem = StageMemory(dims, p_y, p_x, dtype)
    rows = [mem.rows(t) for t in tokens]
    return mem.kv_bytes(len(tokens), sum(rows), max(rows), batch)


def kv_bytes_per_token_per_pe(dims: LayerDims, p_x: int, dtype: str = "fp16") -> int:
    """One cached token (K and V) of one layer on the busiest column's PE."""
    return 2 * head_layout(dims, p_x).kv_features * dtype_bytes(dtype)


def prefill_layer(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, tokens: int,
                  tree_x: TreeChoice = TreeChoice(k=1), dtype: str = "fp16", keys: int | None = None) -> CostBreakdown:
    """One layer over a prompt of ``tokens`` (method §3.2, §3.6): MeshGEMM for every projection,
    dist-GEMM-T for Q·Kᵀ, softmax and RMSNorm reductions along X, MeshGEMM for S·V."""
    L = tokens
    K_len = L if keys is None else keys  # a prompt chunk attends to ``keys`` keys (all of them: an upper bound)
    L_y = ceil_div(L, p_y)
    E_x = ceil_div(dims.hidden, p_x)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    gx = tree_x.group_counts if p_x > 1 else None
    # Attention per KV group of columns: dist-GEMM-T over the group's width, n_rep heads at once.
    heads_per_col = max(hl.q_heads, 1)
    scores = gemmt(spec, p_y, hl.group_width, L, hl.q_features * hl.group_width // heads_per_col, K_len, dtype)
    scores = scores.scaled(heads_per_col) if heads_per_col > 1 else scores
    L_x = ceil_div(K_len, p_x)
    q, kv, pv, o, ffn_in, down = _prefill_gemms(spec, dims, p_y, p_x, L, K_len, dtype)
    steps = [
        rmsnorm(spec, p_x, E_x, L_y, tree_x.k, gx, dtype),
        q, kv, kv,
        _local("qkv.bias", L_y * t_vec(spec, hl.q_features + 2 * hl.kv_features, "add", dtype)
               if dims.qkv_bias else 0.0),
        rope(spec, hl.q_features + hl.kv_features, L_y, dtype),
        scores,
        _local("mask_scale", heads_per_col * L_y * t_vec(spec, L_x, "scale", dtype)),
        softmax(spec, p_x, L_x, heads_per_col * L_y, tree_x.k, gx, dtype),
        pv, o,
        elementwise(spec, E_x, "add", dtype, rows=L_y),
        rmsnorm(spec, p_x, E_x, L_y, tree_x.k, gx, dtype),
        ffn_in, ffn_in,
        silu_mul(spec, F_x, dtype, rows=L_y),
        down,
        elementwise(spec, E_x, "add", dtype, rows=L_y),
    ]
    return in_sequence("prefill_layer", steps)


@functools.lru_cache(maxsize=4096)
def _prefill_gemms(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, L: int, K_len: int,
                   dtype: str) -> tuple[CostBreakdown, ...]:
    """The MeshGEMMs of a prefill layer, each distinct one once (K and V, gate and up share
    their shapes): Q, K (= V), S·V, O, gate (= up), down."""
    return (meshgemm(spec, p_y, p_x, L, dims.hidden, dims.q_dim, dtype),
            meshgemm(spec, p_y, p_x, L, dims.hidden, dims.kv_dim, dtype),
            meshgemm(spec, p_y, p_x, L, K_len, dims.q_dim, dtype),
            meshgemm(spec, p_y, p_x, L, dims.q_dim, dims.hidden, dtype),
            meshgemm(spec, p_y, p_x, L, dims.hidden, dims.ffn, dtype),
            meshgemm(spec, p_y, p_x, L, dims.ffn, dims.hidden, dtype))


def prefill_gemm_floor(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, tokens: int,
                       dtype: str = "fp16", keys: int | None = None) -> float:
    """A lower bound of ``prefill_layer(...).total_cycles`` at a fraction of its price: the same
    MeshGEMM terms added in the same order, the other steps (none negative) left out. Floating-point
    addition never decreases when a term >= 0 is added, so this is <= the layer's sum exactly."""
    q, kv, pv, o, ffn_in, down = _prefill_gemms(spec, dims, p_y, p_x, tokens,
                                                 tokens if keys is None else keys, dtype)
    return sum(g.total_cycles for g in (q, kv, kv, pv, o, ffn_in, ffn_in, down))


def prefill_activation_bytes(dims: LayerDims, p_y: int, p_x: int, tokens: int, dtype: str = "fp16",
                             keys: int | None = None) -> int:
    """Per-PE activations of one prefill layer (authors' footprint 14SD + 4S·Fp + 2S², method §4.5),
    with S, D, Fp the per-PE sequence, hidden and FFN tile sizes; a prompt chunk of ``tokens``
    holds scores against ``keys`` keys."""
    S = ceil_div(tokens, p_y)
    D = ceil_div(dims.hidden, p_x)
    Fp = ceil_div(dims.ffn, p_x)
    S_x = ceil_div(tokens if keys is None else keys, p_x)
    return (14 * S * D + 4 * S * Fp + 2 * S * S_x) * dtype_bytes(dtype)


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)
