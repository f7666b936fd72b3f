"""Where every weight and activation of a transformer lives on a P_y × P_x mesh, for decode and prefill.

This module is the single description that the host packing (sharding full numpy weights into per-PE blocks)
and the device programs share, so that they cannot disagree (method §10, defect #7). Pieces:

* `Partition`: how one dimension is cut into per-PE blocks: the storage order of its elements (a permutation;
  the head-aligned feature order of §3.5, or the identity), the valid elements per block, and the slots
  allocated per block (the extra slots are zero padding). Constructors: `Partition.balanced` (non-rotating
  operands: the first D mod P blocks one longer, §4.4) and `Partition.tiled` (MeshGEMM's rotating operands:
  contiguous runs of ⌈D/Q⌉-element virtual tiles, zero-padded, §4.4).
* `HeadLayout` (§3.5): KV-group column groups, RoPE pairs co-located, columns without attention features when
  P_x is large, several whole groups per column when P_x < n_kv.
* Placements: `VectorPlacement` (Y-dist / X-dist vectors), `MatrixPlacement` (2-D blocks, natural or
  transposed in block position, §3.1), `PreskewedWeight` (a MeshGEMM right operand pre-skewed on the host on
  the virtual Q×Q mesh of §4.4, the rule `meshgemm.gemm` loads its B operand with).
* `DecodeLayout` (§3.4, §3.3) and `PrefillLayout` (§3.2, §3.6): every placement of a model, by the field names
  of `waferllm.weights.LayerWeights` (`LAYER_FIELDS`), with ``shard_*``/``gather_*`` for layers and models.

Per-PE data is a `Blocks` grid: ``blocks[py][px]`` is PE (px, py)'s own array (replicas are separate arrays).
Matrices are in the math orientation ``y = x @ W``, W ``[in, out]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Protocol

import numpy as np

from plmr.errors import InputError
from plmr.interleave import ring_order, ring_position
from plmr.primitives import balanced_split

Blocks = list  # list[list[np.ndarray]], indexed [py][px]
AXES = ("y", "x")

#: the weights of one layer, by the field names of ``waferllm.weights.LayerWeights`` (biases may be None).
LAYER_FIELDS = ("input_norm", "post_norm", "q", "k", "v", "o", "gate", "up", "down",
                "q_bias", "k_bias", "v_bias", "o_bias", "gate_bias", "up_bias", "down_bias")


class ModelDims(Protocol):
    """What a layout reads from a model (``waferllm.model.ModelSpec`` satisfies it; meshgemm does not import
    waferllm, which sits above it)."""

    hidden_size: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool


class ModelTensors(Protocol):
    """Full weights (``waferllm.weights.ModelWeights`` satisfies it); layers carry `LAYER_FIELDS`."""

    embed: np.ndarray
    layers: tuple
    final_norm: np.ndarray
    lm_head: np.ndarray


def make_blocks(p_y: int, p_x: int, fn: Callable[[int, int], object]) -> Blocks:
    """``blocks[py][px] = fn(px, py)``."""
    return [[fn(px, py) for px in range(p_x)] for py in range(p_y)]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---- one dimension ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Partition:
    """A dimension of ``total`` elements cut into ``parts`` per-PE blocks.

    The elements are first put in storage order ``order`` (a permutation of 0 … total−1); block i then holds
    the next ``sizes[i]`` of them, in ``alloc[i] ≥ sizes[i]`` slots (slots past ``sizes[i]`` are zero
    padding).
    """

    total: int
    sizes: tuple[int, ...]
    alloc: tuple[int, ...]
    order: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        object.__setattr__(self, "alloc", tuple(int(a) for a in self.alloc))
        order = np.asarray(self.order, dtype=np.int64)
        object.__setattr__(self, "order", order)
        if len(self.sizes) != len(self.alloc) or not self.sizes:
            raise ValueError("partition: sizes and alloc need one entry per part")
        if sum(self.sizes) != self.total or any(a < s or s < 0 for s, a in zip(self.sizes, self.alloc)):
            raise ValueError(f"partition: sizes {self.sizes} / alloc {self.alloc} do not hold {self.total}")
        if order.shape != (self.total,) or not np.array_equal(np.sort(order), np.arange(self.total)):
            raise ValueError("partition: order must be a permutation of the elements")

    # constructors
    @classmethod
    def balanced(cls, total: int, parts: int) -> "Partition":
        """Balanced contiguous blocks, the first ``total mod parts`` one longer, no padding (method §4.4)."""
        sizes = balanced_split(total, parts)
        return cls(total, tuple(sizes), tuple(sizes), np.arange(total))

    @classmethod
    def tiled(cls, total: int, parts: int, tiles_per_part: int, tile: int) -> "Partition":
        """Contiguous runs of ``tiles_per_part`` tiles of ``tile`` elements, zero-padded at the end (MeshGEMM's
        rotating operands on the virtual mesh, method §4.4)."""
        span = tiles_per_part * tile
        if parts * span < total:
            raise ValueError(f"partition: {parts} parts of {span} cannot hold {total}")
        sizes = [max(0, min(span, total - i * span)) for i in range(parts)]
        return cls(total, tuple(sizes), (span,) * parts, np.arange(total))

    def with_alloc(self, alloc: int) -> "Partition":
        """The same blocks, each allocated ``alloc`` slots."""
        return Partition(self.total, self.sizes, (alloc,) * self.parts, self.order)

    # queries
    @property
    def parts(self) -> int:
        return len(self.sizes)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each block in storage order (computed once: a whole-wafer shard asks it per PE)."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)[:-1]]))

    @property
    def max_size(self) -> int:
        return max(self.sizes)

    @property
    def padded_total(self) -> int:
        return sum(self.alloc)

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.order, np.arange(self.total)))

    def indices(self, i: int) -> np.ndarray:
        """Global element indices of block i, in slot order."""
        o = self.offsets[i]
        return self.order[o:o + self.sizes[i]]

    def storage_index(self) -> np.ndarray:
        """For each of the ``padded_total`` slots (blocks concatenated), its global element, or −1 (padding)."""
        out = np.full(self.padded_total, -1, dtype=np.int64)
        start = 0
        for i in range(self.parts):
            out[start:start + self.sizes[i]] = self.indices(i)
            start += self.alloc[i]
        return out

    def owner(self, element: int) -> tuple[int, int]:
        """(block, slot) holding global element ``element``."""
        pos = int(np.flatnonzero(self.order == element)[0])
        offs = self.offsets
        i = int(np.searchsorted(np.asarray(offs), pos, side="right") - 1)
        while self.sizes[i] == 0 or pos >= offs[i] + self.sizes[i]:  # skip empty blocks
            i += 1
        return i, pos - offs[i]

    def take(self, a: np.ndarray, i: int, axis: int = 0) -> np.ndarray:
        """Block i of array ``a`` along ``axis``, padded with zeros to ``alloc[i]``."""
        a = np.asarray(a)
        blk = np.take(a, self.indices(i), axis=axis)
        pad = self.alloc[i] - self.sizes[i]
        if pad:
            width = [(0, 0)] * a.ndim
            width[axis] = (0, pad)
            blk = np.pad(blk, width)
        return blk

    def assemble(self, blocks: list[np.ndarray], axis: int = 0) -> np.ndarray:
        """The full array from its blocks (padding dropped, original element order restored)."""
        parts = [np.take(np.asarray(b), np.arange(self.sizes[i]), axis=axis) for i, b in enumerate(blocks)]
        stored = np.concatenate(parts, axis=axis)
        inv = np.empty(self.total, dtype=np.int64)
        inv[self.order] = np.arange(self.total)
        return np.take(stored, inv, axis=axis)


# ---- attention heads (§3.5) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadChunk:
    """One query head's features on one column: ``width`` = 2 × pairs features (the pairs' first halves, then
    their second halves), at ``q_offset`` in the column's q block; its KV head's matching features are at
    ``kv_offset`` in the column's K/V block."""

    q_head: int
    kv_head: int
    q_offset: int
    kv_offset: int
    width: int


@dataclass(frozen=True, eq=False)
class HeadLayout:
    """The head-aligned feature layout of method §3.5 over ``columns`` mesh columns.

    ``column_kv_heads[c]`` are the KV heads with features on column c and ``column_pairs[c]`` = [start, stop)
    its RoPE pair indices (the same range for each of its heads; all d/2 pairs when P_x < n_kv). A column with
    pairs [a, b) of KV head g holds features {g·d + i, g·d + d/2 + i : a ≤ i < b} of K and V (first halves,
    then second halves), and the same features of each query head of the group, head after head. ``q`` and
    ``kv`` are the resulting partitions of the n_h·d query (= attention output) and n_kv·d key/value features.
    ``segments`` are the column groups whose score partials are summed together (one allreduce each, all in
    parallel): the feature-holding columns of one KV group when P_x ≥ n_kv, single columns otherwise.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    columns: int
    column_kv_heads: tuple[tuple[int, ...], ...]
    column_pairs: tuple[tuple[int, int], ...]
    q: Partition
    kv: Partition
    segments: tuple[tuple[int, ...], ...]

    @property
    def n_rep(self) -> int:
        return self.num_heads // self.num_kv_heads

    def q_heads(self, c: int) -> tuple[int, ...]:
        return tuple(g * self.n_rep + r for g in self.column_kv_heads[c] for r in range(self.n_rep))

    def n_pairs(self, c: int) -> int:
        a, b = self.column_pairs[c]
        return b - a

    def chunks(self, c: int) -> tuple[HeadChunk, ...]:
        """The query-head chunks of column c, in the column's q order."""
        w = 2 * self.n_pairs(c)
        out = []
        for gi, g in enumerate(self.column_kv_heads[c]):
            for r in range(self.n_rep):
                qi = gi * self.n_rep + r
                out.append(HeadChunk(g * self.n_rep + r, g, qi * w, gi * w, w))
        return tuple(out)

    def segment_of(self, c: int) -> tuple[int, ...] | None:
        return next((s for s in self.segments if c in s), None)


def head_layout(num_heads: int, num_kv_heads: int, head_dim: int, p_x: int) -> HeadLayout:
    """Build the §3.5 layout: n_kv contiguous column groups of balanced size (several whole groups per column
    when P_x < n_kv), each group's d/2 RoPE pairs split into balanced contiguous ranges over its columns."""
    if num_heads % num_kv_heads or head_dim % 2 or p_x < 1:
        raise ValueError("head_layout: need n_h a multiple of n_kv, an even head_dim and p_x >= 1")
    half, n_rep = head_dim // 2, num_heads // num_kv_heads
    col_heads: list[tuple[int, ...]] = []
    col_pairs: list[tuple[int, int]] = []
    if p_x < num_kv_heads:
        start = 0
        for n in balanced_split(num_kv_heads, p_x):
            col_heads.append(tuple(range(start, start + n)))
            col_pairs.append((0, half))
            start += n
        segments = tuple((c,) for c in range(p_x) if col_heads[c])
    else:
        segs = []
        for g, width in enumerate(balanced_split(p_x, num_kv_heads)):
            a, seg = 0, []
            for npairs in balanced_split(half, width):
                col_heads.append((g,) if npairs else ())
                col_pairs.append((a, a + npairs))
                if npairs:
                    seg.append(len(col_heads) - 1)
                a += npairs
            segs.append(tuple(seg))
        segments = tuple(segs)
    q_lists, kv_lists = [], []
    for heads, (a, b) in zip(col_heads, col_pairs):
        pairs = np.arange(a, b)
        local = np.concatenate([pairs, pairs + half])
        kv_lists.append(np.concatenate([g * head_dim + local for g in heads]) if heads else np.zeros(0, int))
        qs = [h * head_dim + local for g in heads for h in range(g * n_rep, (g + 1) * n_rep)]
        q_lists.append(np.concatenate(qs) if qs else np.zeros(0, int))

    def part(lists: list[np.ndarray], total: int) -> Partition:
        sizes = tuple(len(x) for x in lists)
        return Partition(total, sizes, sizes, np.concatenate(lists).astype(np.int64))

    return HeadLayout(num_heads, num_kv_heads, head_dim, p_x, tuple(col_heads), tuple(col_pairs),
                      part(q_lists, num_heads * head_dim), part(kv_lists, num_kv_heads * head_dim), segments)


# ---- placements -----------------------------------------------------------------------------------------
def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be 'y' or 'x', got {axis!r}")


@dataclass(frozen=True, eq=False)
class VectorPlacement:
    """A vector split along one mesh axis and replicated along the other (§3.1). ``axis="y"``: Y-dist, PE
    (px, py) holds block py (the same on its whole row); ``axis="x"``: X-dist, block px down its column."""

    name: str
    part: Partition
    axis: str
    p_y: int
    p_x: int

    def __post_init__(self) -> None:
        _check_axis(self.axis)
        want = self.p_y if self.axis == "y" else self.p_x
        if self.part.parts != want:
            raise ValueError(f"{self.name}: {self.part.parts} blocks for a {self.axis} axis of {want} PEs")

    def block_of(self, px: int, py: int) -> int:
        return py if self.axis == "y" else px

    def shard(self, v: np.ndarray) -> Blocks:
        blocks = [self.part.take(v, i) for i in range(self.part.parts)]
        return make_blocks(self.p_y, self.p_x, lambda px, py: blocks[self.block_of(px, py)].copy())

    def gather(self, blocks: Blocks, check_replicas: bool = True) -> np.ndarray:
        """The full vector; with ``check_replicas`` every replica must be identical (ValueError otherwise)."""
        if self.axis == "y":
            segs = [blocks[py][0] for py in range(self.p_y)]
        else:
            segs = [blocks[0][px] for px in range(self.p_x)]
        if check_replicas:
            for py in range(self.p_y):
                for px in range(self.p_x):
                    ref = segs[self.block_of(px, py)]
                    if not np.array_equal(blocks[py][px], ref):
                        raise ValueError(f"{self.name}: replica on PE ({px}, {py}) differs from block "
                                         f"{self.block_of(px, py)}")
        return self.part.assemble(segs)


@dataclass(frozen=True, eq=False)
class MatrixPlacement:
    """W [rows × cols] in 2-D blocks (§3.1): ``row_axis="y"`` is **natural** (PE (px, py) holds block
    (rows py, cols px)); ``row_axis="x"`` is **transposed in block position** (block (rows px, cols py); the
    local block is not transposed). Blocks are zero-padded to the partitions' allocations."""

    name: str
    rows: Partition
    cols: Partition
    row_axis: str
    p_y: int
    p_x: int

    def __post_init__(self) -> None:
        _check_axis(self.row_axis)
        ry, cx = (self.p_y, self.p_x) if self.row_axis == "y" else (self.p_x, self.p_y)
        if self.rows.parts != ry or self.cols.parts != cx:
            raise ValueError(f"{self.name}: {self.rows.parts}x{self.cols.parts} blocks on a "
                             f"{self.p_y}x{self.p_x} mesh with rows along {self.row_axis}")

    @property
    def natural(self) -> bool:
        return self.row_axis == "y"

    def block_of(self, px: int, py: int) -> tuple[int, int]:
        """(row block, column block) held by PE (px, py)."""
        return (py, px) if self.natural else (px, py)

    def shard(self, w: np.ndarray) -> Blocks:
        w = np.asarray(w)
        if w.shape != (self.rows.total, self.cols.total):
            raise ValueError(f"{self.name}: expected shape {(self.rows.total, self.cols.total)}, got {w.shape}")

        # the whole matrix in storage order at once (padding slots zero), then each PE's block is a slice of
        # it: one gather instead of two per PE (a whole wafer has 745k PEs)
        # (a padding slot's index is -1: the zero row and column appended last)
        stored = np.pad(w, ((0, 1), (0, 1)))[np.ix_(self.rows.storage_index(), self.cols.storage_index())]
        r0 = np.concatenate([[0], np.cumsum(self.rows.alloc)])
        c0 = np.concatenate([[0], np.cumsum(self.cols.alloc)])

        def blk(px: int, py: int) -> np.ndarray:
            ri, ci = self.block_of(px, py)
            return np.ascontiguousarray(stored[r0[ri]:r0[ri + 1], c0[ci]:c0[ci + 1]])

        return make_blocks(self.p_y, self.p_x, blk)

    def gather(self, blocks: Blocks) -> np.ndarray:
        grid: dict[tuple[int, int], np.ndarray] = {}
        for py in range(self.p_y):
            for px in range(self.p_x):
                grid[self.block_of(px, py)] = blocks[py][px]
        rows = [self.cols.assemble([grid[(ri, ci)] for ci in range(self.cols.parts)], axis=1)
                for ri in range(self.rows.parts)]
        return self.rows.assemble(rows, axis=0)


# ---- MeshGEMM on the virtual Q×Q mesh (§4.3-4.4) --------------------------------------------------------
@dataclass(frozen=True)
class MeshGemmGeometry:
    """The virtual Q×Q mesh of MeshGEMM on P_y × P_x (method §4.4; the layout `meshgemm.gemm` builds).

    Q = lcm(P_y, P_x), q_x = Q/P_x, q_y = Q/P_y. PE (px, py) hosts virtual rows u = pos_y(py)·q_y + j and
    columns v = pos_x(px)·q_x + i (pos = position on the INTERLEAVE ring, §4.2) for j < q_y, i < q_x; its
    activation/result tile (j, i) is the natural block (py·q_y + j, px·q_x + i). The K-block found at virtual
    x-position ℓ is λ(ℓ) = R_x[ℓ // q_x]·q_x + ℓ mod q_x.
    """

    p_y: int
    p_x: int

    @property
    def q(self) -> int:
        return math.lcm(self.p_y, self.p_x)

    @property
    def q_x(self) -> int:
        return self.q // self.p_x

    @property
    def q_y(self) -> int:
        return self.q // self.p_y

    def ring_x(self) -> tuple[int, ...]:
        return ring_order(self.p_x) if self.p_x > 1 else (0,)

    def ring_y(self) -> tuple[int, ...]:
        return ring_order(self.p_y) if self.p_y > 1 else (0,)

    def pos_x(self, px: int) -> int:
        return ring_position(px, self.p_x) if self.p_x > 1 else 0

    def pos_y(self, py: int) -> int:
        return ring_position(py, self.p_y) if self.p_y > 1 else 0

    def virtual_row(self, py: int, j: int) -> int:
        return self.pos_y(py) * self.q_y + j

    def virtual_col(self, px: int, i: int) -> int:
        return self.pos_x(px) * self.q_x + i

    def lam(self, ell: int) -> int:
        """λ(ℓ): the natural K-block at virtual x-position ℓ."""
        return self.ring_x()[ell // self.q_x] * self.q_x + ell % self.q_x

    def host_of_col(self, v: int) -> tuple[int, int]:
        """(physical column, slot i) hosting virtual column v."""
        return self.ring_x()[v // self.q_x], v % self.q_x

    def host_of_row(self, u: int) -> tuple[int, int]:
        return self.ring_y()[u // self.q_y], u % self.q_y

    def tiled(self, total: int, axis: str) -> Partition:
        """A dimension of ``total`` cut into Q tiles of ⌈total/Q⌉, q tiles per PE along ``axis``."""
        q_ax, p_ax = (self.q_y, self.p_y) if axis == "y" else (self.q_x, self.p_x)
        return Partition.tiled(total, p_ax, q_ax, ceil_div(total, self.q))

    def tiled_like(self, part: Partition) -> Partition:
        """``part`` (one block per column) with a uniform allocation of q_x whole tiles, so the blocks can be
        MeshGEMM operands: the smallest multiple of q_x at or above the largest block."""
        return part.with_alloc(self.q_x * ceil_div(max(part.max_size, 1), self.q_x))


@dataclass(frozen=True, eq=False)
class PreskewedWeight:
    """B = W [K × N], a MeshGEMM right operand **pre-skewed on the host** (method §4.3-4.4).

    ``rows`` partitions K over the columns the way the left operand's features are stored (q_x tiles of k per
    column) and ``cols`` partitions N over the columns (q_x tiles of n per column). PE (px, py) holds q_y × q_x
    tiles of k × n: tile (j, i) = B(K-block λ((u + v) mod Q), N-block px·q_x + i) with u, v its virtual row and
    column — Cannon's skew in ring coordinates, so the device skews only the left operand.
    """

    name: str
    rows: Partition
    cols: Partition
    geom: MeshGemmGeometry

    def __post_init__(self) -> None:
        g = self.geom
        for what, p in (("rows", self.rows), ("cols", self.cols)):
            if p.parts != g.p_x or len(set(p.alloc)) != 1 or p.alloc[0] % g.q_x:
                raise ValueError(f"{self.name}: {what} need {g.p_x} blocks of one allocation divisible by "
                                 f"q_x = {g.q_x}")

    @property
    def k(self) -> int:
        return self.rows.alloc[0] // self.geom.q_x

    @property
    def n(self) -> int:
        return self.cols.alloc[0] // self.geom.q_x

    def padded(self, w: np.ndarray) -> np.ndarray:
        """W in storage order, zero-padded to Q·k × Q·n."""
        ri, ci = self.rows.storage_index(), self.cols.storage_index()
        out = np.zeros((ri.size, ci.size), dtype=np.asarray(w).dtype)
        rv, cv = ri >= 0, ci >= 0
        out[np.ix_(rv, cv)] = np.asarray(w)[np.ix_(ri[rv], ci[cv])]
        return out

    def k_block_of(self, px: int, py: int, j: int, i: int) -> int:
        g = self.geom
        return g.lam((g.virtual_row(py, j) + g.virtual_col(px, i)) % g.q)

    def shard(self, w: np.ndarray) -> Blocks:
        """Per PE an array [q_y, q_x, k, n] of its pre-skewed tiles."""
        w = np.asarray(w)
        if w.shape != (self.rows.total, self.cols.total):
            raise ValueError(f"{self.name}: expected shape {(self.rows.total, self.cols.total)}, got {w.shape}")
        g, k, n = self.geom, self.k, self.n
        wp = self.padded(w)

        def blk(px: int, py: int) -> np.ndarray:
            out = np.zeros((g.q_y, g.q_x, k, n), dtype=wp.dtype)
            for j in range(g.q_y):
                for i in range(g.q_x):
                    kb, nb = self.k_block_of(px, py, j, i), px * g.q_x + i
                    out[j, i] = wp[kb * k:(kb + 1) * k, nb * n:(nb + 1) * n]
            return out

        return make_blocks(g.p_y, g.p_x, blk)

    def gather(self, blocks: Blocks) -> np.ndarray:
        g, k, n = self.geom, self.k, self.n
        wp = np.zeros((g.q * k, g.q * n), dtype=blocks[0][0].dtype)
        for py in range(g.p_y):
            for px in range(g.p_x):
                for j in range(g.q_y):
                    for i in range(g.q_x):
                        kb, nb = self.k_block_of(px, py, j, i), px * g.q_x + i
                        wp[kb * k:(kb + 1) * k, nb * n:(nb + 1) * n] = blocks[py][px][j, i]
        ri, ci = self.rows.storage_index(), self.cols.storage_index()
        out = np.zeros((self.rows.total, self.cols.total), dtype=wp.dtype)
        rv, cv = ri >= 0, ci >= 0
        out[np.ix_(ri[rv], ci[cv])] = wp[np.ix_(rv, cv)]
        return out


# ---- whole-model layouts ------------------------------------------------------------------------------
_MATRICES = ("q", "k", "v", "o", "gate", "up", "down")
_BIASES = ("q_bias", "k_bias", "v_bias", "o_bias", "gate_bias", "up_bias", "down_bias")


def _check_mesh(p_y: int, p_x: int) -> None:
    if not (isinstance(p_y, int) and isinstance(p_x, int)) or p_y < 1 or p_x < 1:
        raise InputError(f"mesh {p_y}x{p_x}: both sides must be positive integers")


class _ModelLayout:
    """Shared sharding logic: subclasses fill ``placements`` (LayerWeights field -> placement) and the model
    extras (embedding, final norm, LM head)."""

    spec: ModelDims
    p_y: int
    p_x: int
    placements: dict

    def shard_layer(self, lw) -> dict[str, Blocks]:
        """Per-PE blocks of every weight of one layer (an object with the `LAYER_FIELDS` attributes), by
        field name; absent biases are skipped."""
        out = {}
        for name in LAYER_FIELDS:
            w = getattr(lw, name)
            if w is not None:
                out[name] = self.placements[name].shard(w)
        return out

    def gather_layer(self, shards: dict[str, Blocks]) -> dict[str, np.ndarray | None]:
        """Full weights from per-PE blocks, by field name (None for absent biases)."""
        return {name: self.placements[name].gather(shards[name]) if name in shards else None
                for name in LAYER_FIELDS}


@dataclass(frozen=True, eq=False)
class DecodeLayout(_ModelLayout):
    """Every decode placement of method §3.4 on P_y × P_x.

    Vectors: the hidden state is Y-dist over ``hidden`` (E split along y); q, k, v and the attention output
    are X-dist over the head layout; the FFN activation X-dist over ``ffn``; the logits X-dist over ``vocab``.
    Weights: W_Q, W_K, W_V, W_gate, W_up natural (reduce along Y, output X-dist); W_O and W_down transposed in
    block position (reduce along X, output Y-dist); γ segments Y-dist; q/k/v (and gate/up) biases X-dist,
    o/down biases Y-dist, all added after the allreduce. The embedding table is ``V_x E_y`` (the column that
    holds a token's vocabulary block broadcasts its row along each mesh row); the LM head is natural
    ``E_y V_x``, or, tied, the embedding blocks themselves used as one dot product per vocabulary row.
    """

    spec: ModelDims
    p_y: int
    p_x: int
    hidden: Partition = field(init=False)
    ffn: Partition = field(init=False)
    vocab: Partition = field(init=False)
    heads: HeadLayout = field(init=False)
    placements: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_mesh(self.p_y, self.p_x)
        s, P, X = self.spec, self.p_y, self.p_x
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("hidden", Partition.balanced(s.hidden_size, P))
        set_("ffn", Partition.balanced(s.intermediate_size, X))
        set_("vocab", Partition.balanced(s.vocab_size, X))
        set_("heads", head_layout(s.num_heads, s.num_kv_heads, s.head_dim, X))
        h, f, q, kv = self.hidden, self.ffn, self.heads.q, self.heads.kv

        def nat(name, rows, cols):
            return MatrixPlacement(name, rows, cols, "y", P, X)

        def tr(name, rows, cols):
            return MatrixPlacement(name, rows, cols, "x", P, X)

        def vec(name, part, axis):
            return VectorPlacement(name, part, axis, P, X)

        set_("placements", {
            "input_norm": vec("input_norm", h, "y"), "post_norm": vec("post_norm", h, "y"),
            "q": nat("q", h, q), "k": nat("k", h, kv), "v": nat("v", h, kv), "o": tr("o", q, h),
            "gate": nat("gate", h, f), "up": nat("up", h, f), "down": tr("down", f, h),
            "q_bias": vec("q_bias", q, "x"), "k_bias": vec("k_bias", kv, "x"), "v_bias": vec("v_bias", kv, "x"),
            "o_bias": vec("o_bias", h, "y"), "gate_bias": vec("gate_bias", f, "x"),
            "up_bias": vec("up_bias", f, "x"), "down_bias": vec("down_bias", h, "y"),
        })

    # vectors the data flow carries
    @property
    def hidden_vec(self) -> VectorPlacement:
        """The hidden state (Y-dist)."""
        return VectorPlacement("hidden", self.hidden, "y", self.p_y, self.p_x)

    @property
    def q_vec(self) -> VectorPlacement:
        """q and the attention output o (X-dist, head-aligned)."""
        return VectorPlacement("q", self.heads.q, "x", self.p_y, self.p_x)

    @property
    def kv_vec(self) -> VectorPlacement:
        return VectorPlacement("kv", self.heads.kv, "x", self.p_y, self.p_x)

    @property
    def ffn_vec(self) -> VectorPlacement:
        return VectorPlacement("ffn", self.ffn, "x", self.p_y, self.p_x)

    @property
    def logits_vec(self) -> VectorPlacement:
        return VectorPlacement("logits", self.vocab, "x", self.p_y, self.p_x)

    # model extras
    @property
    def embed(self) -> MatrixPlacement:
        """The embedding table [V, E] as ``V_x E_y`` (rows along x)."""
        return MatrixPlacement("embed", self.vocab, self.hidden, "x", self.p_y, self.p_x)

    @property
    def lm_head(self) -> MatrixPlacement | None:
        """W_lm [E, V] natural ``E_y V_x``; None when tied (the LM head reads the embedding blocks)."""
        if self.spec.tie_word_embeddings:
            return None
        return MatrixPlacement("lm_head", self.hidden, self.vocab, "y", self.p_y, self.p_x)

    @property
    def final_norm(self) -> VectorPlacement:
        return VectorPlacement("final_norm", self.hidden, "y", self.p_y, self.p_x)

    def embedding_source(self, token: int) -> tuple[int, int]:
        """(column, local row) whose embedding block holds ``token``: that column broadcasts the row along
        every mesh row (§3.4, after the last layer)."""
        return self.vocab.owner(token)

    def shard_model(self, w: ModelTensors) -> "ModelShards":
        """Per-PE blocks of every weight of the model (the host packing for decode)."""
        return ModelShards(
            layers=[self.shard_layer(lw) for lw in w.layers], embed=self.embed.shard(w.embed),
            final_norm=self.final_norm.shard(w.final_norm),
            lm_head=None if self.lm_head is None else self.lm_head.shard(w.lm_head))

    def gather_model(self, shards: "ModelShards") -> dict:
        """The full weights back: ``layers`` (dicts by field), ``embed``, ``final_norm``, ``lm_head``."""
        embed = self.embed.gather(shards.embed)
        return {"layers": [self.gather_layer(s) for s in shards.layers], "embed": embed,
                "final_norm": self.final_norm.gather(shards.final_norm),
                "lm_head": embed.T if self.lm_head is None else self.lm_head.gather(shards.lm_head)}


@dataclass
class ModelShards:
    """Per-PE blocks of a whole model under one layout (``lm_head`` None when the embedding is tied)."""

    layers: list[dict[str, Blocks]]
    embed: Blocks
    final_norm: Blocks
    lm_head: Blocks | None


@dataclass(frozen=True, eq=False)
class PrefillLayout(_ModelLayout):
    """Every prefill placement of method §3.2/§3.6 on P_y × P_x for a prompt of ``seq_len`` tokens.

    Activations are ``L_y feat_x`` in MeshGEMM's layout on the virtual Q×Q mesh: tokens ``tokens`` (Q tiles of
    ⌈L/Q⌉ rows, q_y per PE row), hidden features ``hidden`` (Q tiles of ⌈E/Q⌉, q_x per PE column), FFN
    features ``ffn``, and q / k / v features in the head-aligned layout of §3.5 (the same column assignment
    as decode on P_x columns) padded to q_x whole tiles per column (``q``, ``kv``). Every weight matrix is a
    MeshGEMM right operand, natural and pre-skewed on the host; γ and biases are X-dist over the features
    (features are on x in prefill). Padded rows and columns are zero and are dropped by ``gather``.
    """

    spec: ModelDims
    p_y: int
    p_x: int
    seq_len: int
    geom: MeshGemmGeometry = field(init=False)
    tokens: Partition = field(init=False)
    hidden: Partition = field(init=False)
    ffn: Partition = field(init=False)
    heads: HeadLayout = field(init=False)
    q: Partition = field(init=False)
    kv: Partition = field(init=False)
    placements: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_mesh(self.p_y, self.p_x)
        if not isinstance(self.seq_len, int) or self.seq_len < 1:
            raise InputError(f"prompt length must be a positive integer, got {self.seq_len!r}")
        s, P, X = self.spec, self.p_y, self.p_x
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        g = MeshGemmGeometry(P, X)
        set_("geom", g)
        set_("tokens", g.tiled(self.seq_len, "y"))
        set_("hidden", g.tiled(s.hidden_size, "x"))
        set_("ffn", g.tiled(s.intermediate_size, "x"))
        set_("heads", head_layout(s.num_heads, s.num_kv_heads, s.head_dim, X))
        set_("q", g.tiled_like(self.heads.q))
        set_("kv", g.tiled_like(self.heads.kv))
        h, f, q, kv = self.hidden, self.ffn, self.q, self.kv

        def gemm(name, rows, cols):
            return PreskewedWeight(name, rows, cols, g)

        def vec(name, part):
            return VectorPlacement(name, part, "x", P, X)

        set_("placements", {
            "input_norm": vec("input_norm", h), "post_norm": vec("post_norm", h),
            "q": gemm("q", h, q), "k": gemm("k", h, kv), "v": gemm("v", h, kv), "o": gemm("o", q, h),
            "gate": gemm("gate", h, f), "up": gemm("up", h, f), "down": gemm("down", f, h),
            "q_bias": vec("q_bias", q), "k_bias": vec("k_bias", kv), "v_bias": vec("v_bias", kv),
            "o_bias": vec("o_bias", h), "gate_bias": vec("gate_bias", f), "up_bias": vec("up_bias", f),
            "down_bias": vec("down_bias", h),
        })

    def activation(self, features: Partition, name: str = "activation") -> MatrixPlacement:
        """An ``L_y feat_x`` activation (tokens × ``features``) in MeshGEMM's natural layout."""
        return MatrixPlacement(name, self.tokens, features, "y", self.p_y, self.p_x)

    def token_rows(self, py: int) -> np.ndarray:
        """Global token index of every row slot of PE row py (−1 for padding)."""
        out = np.full(self.tokens.alloc[py], -1, dtype=np.int64)
        out[:self.tokens.sizes[py]] = self.tokens.indices(py)
        return out

    def shard_model(self, w: ModelTensors) -> list[dict[str, Blocks]]:
        """Per-PE blocks of every layer (the embedding lookup of the prompt and the LM head of its last
        position run on the host and the decode layout respectively; see docs/DESIGN.md)."""
        return [self.shard_layer(lw) for lw in w.layers]
