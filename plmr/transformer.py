"""One transformer layer's predicted cycles in prefill and decode, composed op by op from the
per-operation formulas (waferllm-method.md §3.4 decode flow, §3.6 prefill mapping).

Inputs are plain dimensions (``LayerDims``) so this module stays free of model-import code.
Attention heads use the head-aligned column layout of method §3.5: KV groups of columns, RoPE pairs
co-located, so score reductions run per group, in parallel.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from plmr.breakdown import CostBreakdown, in_sequence
from plmr import decode_ops as D
from plmr.attention import ring_attention
from plmr.collectives import line_tree_allreduce, line_tree_allreduce_cycles, line_tree_late_allreduce_cycles
from plmr.decode_memory import SCORE_CHUNK, attention_chunks
from plmr.gemm import meshgemm_chain, meshgemm_chain_floor
from plmr.hardware import HardwareSpec
from plmr.ops import rope_chunks, token_rmsnorm
from plmr.primitives import balanced_split, ceil_div, dtype_bytes, t_fn, t_vec


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
    kv_heads: int = 1  # KV heads with features on the busiest column
    pairs: int = 0  # RoPE pairs of each head on the busiest column (a head chunk is 2·pairs features)


@functools.lru_cache(maxsize=1 << 14)
def head_layout(dims: LayerDims, p_x: int) -> HeadLayout:
    """Split n_kv KV groups over P_x columns, then each group's d/2 RoPE pairs over its columns."""
    n_kv, d, n_rep = dims.num_kv_heads, dims.head_dim, dims.n_rep
    if p_x < n_kv:  # a column holds several whole KV groups
        heads = max(balanced_split(n_kv, p_x))
        return HeadLayout(q_features=heads * n_rep * d, kv_features=heads * d, q_heads=heads * n_rep,
                          group_width=1, kv_heads=heads, pairs=max(d // 2, 1))
    widths = balanced_split(p_x, n_kv)
    narrowest = min(widths)
    pairs = ceil_div(d // 2 if d > 1 else 1, narrowest)
    feats = min(d, 2 * pairs)
    return HeadLayout(q_features=feats * n_rep, kv_features=feats, q_heads=n_rep, group_width=max(widths),
                      kv_heads=1, pairs=pairs)


def score_mode(dims: LayerDims, p_x: int) -> str:
    """How the decode program sums a head's scores over the columns holding its features: ``"none"``
    when every KV group sits within one column (P_x ≤ n_kv), ``"full"`` over the whole row when one
    KV head spans it (MQA, or the paper method's one wide head), else ``"groups"``: within each KV
    group's columns, as level 0 of the X tree (whose level-0 groups are then the KV groups)."""
    if p_x <= dims.num_kv_heads:
        return "none"
    return "full" if dims.num_kv_heads == 1 else "groups"


@dataclass(frozen=True)
class TreeChoice:
    """K-tree parameters for one reduction axis (group counts at levels 1..K-1)."""

    k: int = 2
    group_counts: tuple[int, ...] | None = None


#: K of the line trees the decode program runs (``meshgemm.decode_collectives.LineTree``): one chain into
#: the middle (K = 1), or level-0 groups whose roots chain (K = 2).
DECODE_TREE_KS = (1, 2)

#: Input queues a PE of the decode program binds when its Y tree has two levels: that tree's 3 colours,
#: the X tree's 3 and the KV shift's 1 (a one-chain Y tree receives on 2).
DECODE_QUEUES_TWO_LEVEL_Y = 3 + 3 + 1


def decode_tree_ks(spec: HardwareSpec, axis: str, n: int) -> tuple[int, ...]:
    """K of the trees the decode program can run on a line of ``n`` PEs along ``axis``: 1 or 2, and on
    Y only 1 when the target has fewer usable input queues than a two-level Y tree binds (WSE-3's 6,
    hardware-and-csl.md §1.3-§1.5). The planner searches these and no others; the program checks its
    trees against them."""
    if axis == "y" and n > 1 and len(spec.usable_input_queues) < DECODE_QUEUES_TWO_LEVEL_Y:
        return (1,)
    return DECODE_TREE_KS


@dataclass(frozen=True)
class Reduction:
    """One allreduce of a decode step, left symbolic so the planner can price it under any K-tree.

    ``axis`` is "y" (along a column, P_y PEs), "x" (along a row, P_x PEs) or "group" (the score
    allreduce within each KV group of columns: level 0 of the X tree, whose groups are then the KV
    groups, and a multicast from each group root). ``groups0`` fixes the level-0 group count when
    the program does (the X tree's KV groups); ``combine`` is "sum" or "max" (store and forward)."""

    op: str
    axis: str
    n_ax: int
    payload: int
    dtype: str
    broadcast: bool = True
    combine: str = "sum"
    groups0: int | None = None
    repeat: int = 1  # the same allreduce this many times in sequence (an attention's chunks)
    #: A sum every position but one entered long before (``plmr.collectives.line_tree_late_allreduce_cycles``):
    #: the late position, or ``LAST_GROUP`` for the first position of the last level-0 group; None: all at once.
    late: int | None = None


#: ``Reduction.late`` for the first position of the line's last level-0 group (a hand-off landing west).
LAST_GROUP = -1


def line_tree_args(r: Reduction, tree: TreeChoice) -> tuple | None:
    """The arguments of ``plmr.collectives.line_tree_allreduce`` (after the spec: n_ax, n, k, group
    counts, dtype, combine, then with_broadcast and group_only by keyword) for the line tree the
    decode program runs ``r`` on when its axis uses ``tree``, and last the late position (None: every
    position at once); None when it costs nothing. One place for both pricers below: the group
    allreduce and an X tree whose level 0 is fixed by the KV groups ignore ``tree``'s K and groups."""
    if r.n_ax <= 1 or r.payload <= 0:
        return None
    if r.axis == "group" or r.groups0 is not None:
        g0 = r.groups0 if r.groups0 is not None else 1
        k, groups = (1, ()) if g0 <= 1 else (2, (min(g0, r.n_ax),))
    else:
        k, groups = tree.k, tree.group_counts
    groups = None if groups is None else tuple(groups)
    late = r.late
    if late == LAST_GROUP:
        g0 = groups[0] if k > 1 and groups else 1
        late = r.n_ax - balanced_split(r.n_ax, min(g0, r.n_ax))[-1] if g0 > 1 else 0
    return (r.n_ax, r.payload, k, groups, r.dtype, r.combine, r.broadcast, r.axis == "group", late)


def _price(spec: HardwareSpec, args: tuple) -> float:
    if args[8] is not None:
        if args[5] != "sum" or args[7]:
            raise ValueError("a late position prices a sum allreduce of the whole line only")
        return line_tree_late_allreduce_cycles(spec, *args[:5], late=args[8], with_broadcast=args[6])
    return line_tree_allreduce_cycles(spec, *args[:6], with_broadcast=args[6], group_only=args[7])


@functools.lru_cache(maxsize=1 << 16)
def price_reduction(spec: HardwareSpec, r: Reduction, tree: TreeChoice) -> float:
    """Cycles of one symbolic allreduce under ``tree``, as the decode program's line trees run it
    (``plmr.collectives.line_tree_allreduce``). Memoised: a pure function of hashable arguments."""
    args = line_tree_args(r, tree)
    if args is None:
        return 0.0
    if args[8] is not None:
        return _price(spec, args)
    return line_tree_allreduce(spec, *args[:6], with_broadcast=args[6], group_only=args[7]).total_cycles


def reduction_cycles(spec: HardwareSpec, args: tuple | None) -> float:
    """``price_reduction`` from its ``line_tree_args``, through the breakdown-free
    ``line_tree_allreduce_cycles`` (the same number, tested): the planner's hot path."""
    if args is None:
        return 0.0
    return _price(spec, args)


def _local(name: str, cycles: float, nbytes: int = 0) -> CostBreakdown:
    return CostBreakdown(op=name, compute_cycles=cycles, comm_cycles=0.0, total_cycles=cycles,
                         bytes_per_pe=nbytes)


def append_rows(context: int, p_y: int) -> list[tuple[str, int, int]]:
    """The kinds of row the decode program's KV cache has after appending token ``context`` − 1 with
    ``capacity`` = ⌈context/P_y⌉ slots per row (``meshgemm.decode_program.kv_append`` and
    ``cache_rows``; method §8), as (append role, entries, ring runs of its scores).

    The rows hold ⌊n/P_y⌋ or ⌈n/P_y⌉ of the n tokens, the first n mod P_y rows one more. When n is
    not a multiple of P_y the other rows shift: each copies its oldest entry out and sends it north
    (the bottom row writes the new entry instead of receiving one), and they keep ⌊n/P_y⌋ entries,
    whose run wraps in the ring on every row past the first shifting one. The full rows start at
    slot 0 (one run); the last of them received its new entry from below. Otherwise nobody shifts:
    the bottom row writes the new entry and every row starts at slot 0."""
    n = max(context, 1)
    if p_y <= 1 or n <= p_y or n % p_y == 0:
        return [("write", ceil_div(n, p_y), 1)]
    qq, rr = divmod(n, p_y)
    shifting = ("shift" if rr <= p_y - 2 else "send", qq, 2 if rr + 1 <= p_y - 1 and qq >= 2 else 1)
    return [shifting, ("shift", qq + 1, 1)]


def append_path(spec: HardwareSpec, hl, w: int, score_heads: int, kv_x: int, context: int, p_y: int,
                dtype: str) -> tuple[str, int, int]:
    """The kind of row (``append_rows``) whose KV append and scores end last, where softmax's maximum
    along Y waits for it: (append role, entries, ring runs)."""
    cap = ceil_div(max(context, 1), p_y)

    def cost(row):
        role, entries, runs = row
        return (D.kv_append_local(spec, kv_x, cap, dtype, role=role).total_cycles
                + D.scores_local(spec, hl.q_heads, w, entries, score_heads, dtype, runs=runs).total_cycles)

    return max(append_rows(context, p_y), key=cost)


def decode_steps(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, context: int,
                 dtype: str = "fp16", batch: int = 1, chunk: int = SCORE_CHUNK) -> list:
    """One decode step of one layer for ``batch`` requests with ``context`` cached tokens each, as
    the decode program runs it (``meshgemm/decode_program.py``, method §3.4): a sequence of local
    costs (``plmr.decode_ops``) and symbolic ``Reduction``s, named by the program's op labels.

    Per layer: 3 sum allreduces and 1 max allreduce along Y, 2 sum allreduces along X and the score
    allreduce within each KV group's columns. Q, K and V are one fused GEMV, gate and up another;
    each RMSNorm's Σx² rides on the next GEMV's allreduce (one more element) and its scale is applied
    to the sums, the softmax sums ride on p·V's; partial products and every reduction are fp32. When the score allreduce runs per KV group, the
    X tree's level-0 groups are those groups (the O and down allreduces run on that tree).
    Batch: the B requests share the weights; every op runs once per request (payloads carry B
    vectors), each request with its own KV cache. Scores, softmax and p·V walk the busiest row's cache
    in chunks of ``chunk`` entries (``plmr.decode_memory.SCORE_CHUNK``): one chunk is a plain softmax;
    each further chunk adds its score allreduce and a rescaling, and then a second max along Y and a
    last rescaling reconcile the rows."""
    B = batch
    E_y = ceil_div(dims.hidden, p_y)
    F_x = ceil_div(dims.ffn, p_x)
    hl = head_layout(dims, p_x)
    mode = score_mode(dims, p_x)
    q_x, kv_x = hl.q_features, hl.kv_features
    w = 2 * hl.pairs  # features of one head on the column (a head chunk)
    qkv = q_x + 2 * kv_x
    S_y = ceil_div(max(context, 1), p_y)
    cap = S_y  # ring slots per row (the program's capacity at this context)
    score_heads = hl.q_heads if mode == "none" else dims.n_rep
    acc = "fp32"
    x_groups = dims.num_kv_heads if mode == "groups" else None

    def y(op, n, combine="sum"):
        return Reduction(op, "y", p_y, B * n, acc, combine=combine)

    def x(op, n):
        return Reduction(op, "x", p_x, B * n, acc, groups0=x_groups)

    def times_b(step: CostBreakdown) -> CostBreakdown:
        return step.scaled(B) if B > 1 else step

    def scores_red(n: int) -> list:
        if mode == "none":
            return []
        if mode == "full":
            return [Reduction("scores", "x", p_x, B * score_heads * n, acc)]
        return [Reduction("scores", "group", p_x, B * score_heads * n, acc, groups0=dims.num_kv_heads)]

    # ops 5-7 over the busiest row's S_y entries in chunks (``attention_chunks``): chunk 0 a plain softmax
    # (the wrapping ring run charged to it), later chunks rescaled, the rows reconciled when any took two
    runs = attention_chunks(S_y, chunk)
    first = runs[0][0]
    kv = D.kv_append_local(spec, kv_x, cap, dtype, role="shift" if p_y > 1 else "write")
    first_runs, first_scored = None, first
    if len(runs) == 1:  # one chunk: the row that reaches softmax's maximum last (``append_path``)
        role, first_scored, first_runs = append_path(spec, hl, w, score_heads, kv_x, context, p_y, dtype)
        kv = D.kv_append_local(spec, kv_x, cap, dtype, role=role)
    attention = [
        times_b(D.scores_local(spec, hl.q_heads, w, first_scored, score_heads, dtype, runs=first_runs)),
        *scores_red(first_scored),
        y("softmax", score_heads, "max"), times_b(D.softmax_local(spec, score_heads, first, dtype)),
        times_b(D.pv_accumulate_local(spec, hl.q_heads, w, first, dtype))]
    for n, count in runs[1:]:  # ``count`` chunks of n entries each
        rep = lambda step: times_b(step).scaled(count) if count > 1 else times_b(step)  # noqa: E731
        attention += [
            rep(D.scores_local(spec, hl.q_heads, w, n, score_heads, dtype, runs=1)),
            *[dataclasses.replace(r, repeat=count) for r in scores_red(n)],
            rep(D.rescale_local(spec, hl.q_heads, w, score_heads)),
            rep(D.softmax_local(spec, score_heads, n, dtype)),
            rep(D.pv_accumulate_local(spec, hl.q_heads, w, n, dtype, first=False))]
    if len(runs) > 1:
        attention += [y("softmax", score_heads, "max"), times_b(D.rescale_local(spec, hl.q_heads, w, score_heads))]
    return [
        times_b(D.norm_numerator_local(spec, E_y, dtype)),
        times_b(D.gemv_partials_local(spec, E_y, qkv, dtype, dims.qkv_bias, op="qkv", norm=True)), y("qkv", qkv + 1),
        times_b(D.rope_local(spec, hl.q_heads + hl.kv_heads, hl.pairs, qkv, dtype)),
        times_b(kv),
        *attention,
        y("pv", q_x + score_heads), times_b(D.pv_finish_local(spec, hl.q_heads, w, dtype)),
        times_b(D.gemv_partials_local(spec, q_x, E_y, dtype, op="o_proj")), x("o_proj", E_y),
        times_b(D.residual_local(spec, E_y, dtype)),
        times_b(D.norm_numerator_local(spec, E_y, dtype, op="rmsnorm_post")),
        times_b(D.gemv_partials_local(spec, E_y, 2 * F_x, dtype, op="gate_up", norm=True)), y("gate_up", 2 * F_x + 1),
        times_b(D.silu_mul_local(spec, F_x, dtype)),
        times_b(D.gemv_partials_local(spec, F_x, E_y, dtype, op="down")), x("down", E_y),
        times_b(D.residual_local(spec, E_y, dtype, op="residual_mlp")),
    ]


def axis_cycles(spec: HardwareSpec, steps: list, axis: str, tree: TreeChoice) -> float:
    """The part of a step sequence that depends on one axis's K-tree (``"x"`` includes the
    per-group score allreduce, whose K follows the X tree)."""
    axes = ("x", "group") if axis == "x" else ("y",)
    return sum(s.repeat * price_reduction(spec, s, tree) for s in steps if isinstance(s, Reduction) and s.axis in axes)


def local_cycles(steps: list) -> float:
    """The part of a step sequence that no K-tree choice changes."""
    return sum(s.total_cycles for s in steps if isinstance(s, CostBreakdown))


def compose(spec: HardwareSpec, steps: list, tree_y: TreeChoice, tree_x: TreeChoice, op: str) -> CostBreakdown:
    """Price every symbolic reduction under its axis's tree and add the steps in sequence."""
    priced = []
    for s in steps:
        if isinstance(s, Reduction):
            t = s.repeat * price_reduction(spec, s, tree_y if s.axis == "y" else tree_x)
            priced.append(CostBreakdown(op=s.op, compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                                        bytes_per_pe=2 * s.payload * dtype_bytes(s.dtype)))
        else:
            priced.append(s)
    return in_sequence(op, priced)


def decode_layer(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, context: int,
                 tree_y: TreeChoice = TreeChoice(), tree_x: TreeChoice = TreeChoice(),
                 dtype: str = "fp16", batch: int = 1, chunk: int = SCORE_CHUNK) -> CostBreakdown:
    """One decode step of one layer (``decode_steps`` priced under the given K-trees)."""
    layer = compose(spec, decode_steps(spec, dims, p_y, p_x, context, dtype, batch, chunk), tree_y, tree_x,
                    "decode_layer")
    colors = decode_colors(tree_y.k, tree_x.k, p_y, p_x, score_mode(dims, p_x))
    return CostBreakdown(op=layer.op, compute_cycles=layer.compute_cycles, comm_cycles=layer.comm_cycles,
                         total_cycles=layer.total_cycles,
                         bytes_per_pe=decode_buffer_bytes(dims, p_y, p_x, dtype, batch),
                         colors_per_pe=colors, parts=layer.parts)


def decode_colors(k_y: int, k_x: int, p_y: int, p_x: int, mode: str) -> int:
    """Colours of the decode program's layer (``meshgemm.decode_program``): 2 per tree level and 1 for
    the multicast on each axis, 1 more on X for the KV-group multicast (whose level 0 is then the KV
    groups, K = 2), and the KV shift's 2 parity colours."""
    cy = 2 * k_y + 1 if p_y > 1 else 0
    k_x = 2 if mode == "groups" else k_x
    cx = 2 * k_x + 1 + (1 if mode == "groups" else 0) if p_x > 1 else 0
    return cy + cx + (2 if p_y > 1 else 0)


@functools.lru_cache(maxsize=1 << 14)
def decode_buffer_bytes(dims: LayerDims, p_y: int, p_x: int, dtype: str = "fp16", batch: int = 1) -> int:
    """Working buffers of the decode flow (vectors and receive buffers, shared across layers), one
    set per request of the batch: the layer cost's estimate (``decode_layer``'s ``bytes_per_pe``);
    the decode placement charges the program's own buffers (``plmr.decode_memory``)."""
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
    narrowest = min(balanced_split(p_x, n_kv))
    pairs = max(d // 2, 1)
    return AttentionUnits(unit_kv=min(2, d), base=pairs // narrowest, extra=pairs % narrowest, span=narrowest)


class StageMemory:
    """Per-PE bytes of stages of consecutive layers on one P_y × P_x region (the busiest PE), with
    the grid's tile sizes worked out once: a placement asks for many layer counts on one grid. It
    assumes the uneven splits along x rotate from layer to layer; the decode program does not, and the
    decode placement charges its table instead (``plmr.decode_memory``)."""

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


PREFILL_PHASES = ("attn_norm", "qkv", "rope", "attention", "o_proj", "h_attn", "mlp_norm", "gate_up", "act",
                  "down", "h_out")


def prefill_phases(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, tokens: int, dtype: str = "fp16",
                   keys: int | None = None, window: int | None = None, acc: str = "fp32",
                   chain=meshgemm_chain) -> dict[str, CostBreakdown]:
    """One prefill layer op by op as the layer program runs it (``meshgemm.prefill_program``; method §3.2,
    §3.6, §4.3-§4.4, §5), keyed by the program's phases (``PREFILL_PHASES``), on the busiest PE.

    Activations are m-token tiles of the Q×Q virtual mesh (Q = lcm(P_y, P_x), q_y token tiles per PE
    row, m = ⌈L/Q⌉); Q|K|V and gate|up are ``meshgemm_chain``s that share one skew of their left
    operand, each column first waiting out its lead from the norm's broadcast (``resync``); attention
    is ``ring_attention`` (K/V gathered once per KV group, P_y ring steps of full-head blocks, of
    which the busiest row computes ``visible``: all P_y causally, ⌈(W + T − 1)/T⌉ under a sliding
    window W); RMSNorm is ``token_rmsnorm`` (a chain allreduce along the row). Projections
    accumulate in ``acc``. ``keys``: a prompt chunk attending to that many keys (key blocks of
    ⌈keys/P_y⌉). ``chain``: the rule that prices the four MeshGEMM chains (``meshgemm_chain_floor``
    gives a lower bound of the layer at a fraction of its price, ``prefill_layer_floor``)."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    m = ceil_div(tokens, Q)
    T = q_y * m
    Tk = T if keys is None else q_y * ceil_div(keys, Q)
    e, f = ceil_div(dims.hidden, Q), ceil_div(dims.ffn, Q)
    n_kv, d, n_rep = dims.num_kv_heads, dims.head_dim, dims.n_rep
    hl = head_layout(dims, p_x)
    tq, tkv = ceil_div(hl.q_features, q_x), ceil_div(hl.kv_features, q_x)
    if p_x < n_kv:
        ng, G, w = ceil_div(n_kv, p_x), 1, d
        rows = n_rep * T
    else:
        G = min(balanced_split(p_x, n_kv))
        ng, w = 1, hl.kv_features
        rows = ceil_div(n_rep * T, G)
    visible = p_y if window is None else min(p_y, ceil_div(window + T - 1, T))
    E_col, F_col = q_x * e, q_x * f
    bias = bool(dims.qkv_bias)

    def local(name: str, cycles: float) -> CostBreakdown:
        return _local(name, cycles)

    norm = token_rmsnorm(spec, p_x, E_col, q_y, m, dtype)
    residual = local("residual", t_vec(spec, q_y * E_col * m, "add", dtype))
    act_n = q_y * F_col * m
    return {
        "attn_norm": norm,
        "qkv": chain(spec, p_y, p_x, m, e, (tq, tkv, tkv), dtype, acc, (bias, bias, bias), resync=True),
        "rope": rope_chunks(spec, q_y * ng * (n_rep + 1), max(w // 2, 1), m, dtype),
        "attention": ring_attention(spec, p_y, G, rows, w, ng, d, n_rep, T, Tk, q_y, m, visible, dtype, acc),
        "o_proj": chain(spec, p_y, p_x, m, tq, (e,), dtype, acc),
        "h_attn": residual,
        "mlp_norm": norm,
        "gate_up": chain(spec, p_y, p_x, m, e, (f, f), dtype, acc, resync=True),
        "act": local("silu_mul", t_fn(spec, act_n) + t_vec(spec, act_n, "mul", dtype)),
        "down": chain(spec, p_y, p_x, m, f, (e,), dtype, acc),
        "h_out": residual,
    }


def prefill_layer(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, tokens: int,
                  tree_x: TreeChoice = TreeChoice(k=1), dtype: str = "fp16", keys: int | None = None,
                  window: int | None = None, acc: str = "fp32") -> CostBreakdown:
    """One layer over a prompt of ``tokens`` (``prefill_phases`` in sequence). ``tree_x`` is kept for
    callers: the program's row reductions are chains (``token_rmsnorm``), whatever the decode trees."""
    phases = prefill_phases(spec, dims, p_y, p_x, tokens, dtype, keys, window, acc)
    return in_sequence("prefill_layer", [dataclasses.replace(c, op=name) for name, c in phases.items()])


def prefill_layer_floor(spec: HardwareSpec, dims: LayerDims, p_y: int, p_x: int, tokens: int, dtype: str = "fp16",
                        keys: int | None = None, window: int | None = None, acc: str = "fp32") -> float:
    """A lower bound of ``prefill_layer(...).total_cycles`` (same arguments) at a fraction of its price:
    the layer's phases with each MeshGEMM chain at its ``meshgemm_chain_floor`` (the other phases
    exact). Every phase is at least what it adds here, so the sum is at most the layer's
    (tests/plmr/test_transformer.py checks it on many grids)."""
    phases = prefill_phases(spec, dims, p_y, p_x, tokens, dtype, keys, window, acc, chain=meshgemm_chain_floor)
    return sum(c.total_cycles for c in phases.values())



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
