"""The prefill → decode switch (method §9): the prompt's KV cache and its last hidden state move from the
prefill layout to the decode layout.

Both ends are layouts of `meshgemm.model_layout`:

* **from** the prefill program's blocks: per layer, K (after RoPE) and V as ``L_y kvfeat_x`` on the
  P_y × P_x prefill region of the layer's stage (`prefill_program.read_kv`), the last prompt
  position's hidden vector in the row of the region that holds it (``L_y E_x``);
* **to** the decode placement: per layer the shift-based cache of method §8 (`kv_cache.ShiftKVCache`:
  rows by the balanced split, the last W tokens with a window, token t in ring slot t mod capacity,
  features by `DecodeLayout.heads.kv`), per PE an array [capacity, kv features of its column] — the
  per-PE arrays `block_dataflow.DecodeDataflow.caches` hold; and the hidden vector Y-dist.

`KVRelayout` maps every element from its prefill (PE, position) to its decode (PE, slot, feature)
once; `apply` moves the data (a gather and a scatter per layer, no per-element Python). The moves
are what a switch program on the fabric would do; here they run on the host, and their cost is
**modelled** (`SwitchCost`): regions are placed on one wafer (prefill stage s at x = s·P_x, decode
stage s at x = s·D_x, both from y = 0, the decode regions overlaying the prefill ones), every
element travels dimension-ordered (x, then y) as one wavelet, and the switch takes the busiest
link's wavelets plus the longest route's hops × α and the ramps, in parallel over the links (a
lower bound of a real switch program: no contention beyond link bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from meshgemm.kv_cache import ShiftKVCache
from meshgemm.model_layout import Blocks, DecodeLayout, PrefillLayout, make_blocks
from plmr.hardware import HardwareSpec


@dataclass(frozen=True)
class Region:
    """A rectangle of the wafer: origin (x0, y0), size P_y × P_x."""

    x0: int
    y0: int
    p_y: int
    p_x: int


@dataclass
class SwitchCost:
    """The modelled switch: wavelets on the busiest link, longest route (hops), cycles."""

    elements: int = 0
    busiest_link: int = 0
    longest_route: int = 0
    cycles: int = 0
    modelled: bool = True

    def add(self, other: "SwitchCost") -> None:
        self.elements += other.elements


class LinkLoad:
    """Wavelets crossing each link of a wafer area under x-then-y routing, counted per (source PE,
    destination PE) pair with a multiplicity."""

    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.east = np.zeros((height, width + 1), dtype=np.int64)  # difference arrays per row
        self.west = np.zeros((height, width + 1), dtype=np.int64)
        self.south = np.zeros((width, height + 1), dtype=np.int64)
        self.north = np.zeros((width, height + 1), dtype=np.int64)
        self.longest = 0
        self.elements = 0

    def add(self, sx, sy, dx, dy, count) -> None:
        sx, sy, dx, dy, count = (np.asarray(a, dtype=np.int64) for a in (sx, sy, dx, dy, count))
        self.elements += int(count.sum())
        if sx.size == 0:
            return
        self.longest = max(self.longest, int((np.abs(dx - sx) + np.abs(dy - sy)).max()))
        e = dx > sx  # x leg on row sy: links [sx, dx) eastwards or [dx, sx) westwards
        np.add.at(self.east, (sy[e], sx[e]), count[e])
        np.add.at(self.east, (sy[e], dx[e]), -count[e])
        wst = dx < sx
        np.add.at(self.west, (sy[wst], dx[wst]), count[wst])
        np.add.at(self.west, (sy[wst], sx[wst]), -count[wst])
        s = dy > sy  # y leg on column dx
        np.add.at(self.south, (dx[s], sy[s]), count[s])
        np.add.at(self.south, (dx[s], dy[s]), -count[s])
        n = dy < sy
        np.add.at(self.north, (dx[n], dy[n]), count[n])
        np.add.at(self.north, (dx[n], sy[n]), -count[n])

    def busiest(self) -> int:
        loads = [np.cumsum(a, axis=1).max(initial=0) for a in (self.east, self.west, self.south, self.north)]
        return int(max(loads))

    def cost(self, spec: HardwareSpec) -> SwitchCost:
        busiest = self.busiest()
        cycles = 0 if not self.elements else int(busiest + self.longest * spec.hop_cycles + spec.ramp_cycles)
        return SwitchCost(self.elements, busiest, self.longest, cycles)


def _pair_counts(src_pe: np.ndarray, dst_pe: np.ndarray, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = src_pe.astype(np.int64) * n_dst + dst_pe
    u, c = np.unique(key, return_counts=True)
    return u // n_dst, u % n_dst, c


@dataclass
class KVRelayout:
    """Where every retained (token, KV feature) of one layer goes: prefill block (py, px) row/column →
    decode PE (py, px), ring slot, feature position."""

    pre: PrefillLayout
    dec: DecodeLayout
    rule: ShiftKVCache
    seq_len: int
    # per element (token t, global kv feature f) of the retained tokens
    src_py: np.ndarray = field(repr=False, default=None)
    src_px: np.ndarray = field(repr=False, default=None)
    src_row: np.ndarray = field(repr=False, default=None)  # row inside the prefill block (token slot)
    src_col: np.ndarray = field(repr=False, default=None)  # column inside the prefill block (feature slot)
    dst_py: np.ndarray = field(repr=False, default=None)
    dst_px: np.ndarray = field(repr=False, default=None)
    dst_slot: np.ndarray = field(repr=False, default=None)
    dst_col: np.ndarray = field(repr=False, default=None)

    @classmethod
    def build(cls, pre: PrefillLayout, dec: DecodeLayout, rule: ShiftKVCache, seq_len: int) -> "KVRelayout":
        ranges = rule.prefill(seq_len)  # raises KVCacheFull before anything moves
        first = ranges[0][0]
        tokens = np.arange(first, seq_len)
        nf = pre.kv.total
        t_rows, t_slots = _positions(pre.tokens, tokens)  # prefill row block of each token, slot in it
        f_cols, f_slots = _positions(pre.kv, np.arange(nf))
        d_cols, d_slots = _positions(dec.heads.kv, np.arange(nf))
        d_rows = np.zeros(tokens.size, dtype=np.int64)
        for r, (a, b) in enumerate(ranges):
            d_rows[(tokens >= a) & (tokens < b)] = r
        T, F = np.meshgrid(np.arange(tokens.size), np.arange(nf), indexing="ij")
        T, F = T.ravel(), F.ravel()
        return cls(pre, dec, rule, seq_len, t_rows[T], f_cols[F], t_slots[T], f_slots[F], d_rows[T], d_cols[F],
                   (tokens[T] % rule.capacity), d_slots[F])

    def apply(self, pre_blocks: Blocks, dtype) -> Blocks:
        """Decode per-PE cache arrays [capacity, kv features of the column] from prefill blocks."""
        dec, rule = self.dec, self.rule
        out = make_blocks(dec.p_y, dec.p_x, lambda px, py: np.zeros((rule.capacity, dec.heads.kv.alloc[px]), dtype))
        stacked = {}
        for py in range(self.pre.p_y):
            for px in range(self.pre.p_x):
                stacked[(py, px)] = np.asarray(pre_blocks[py][px])
        # gather every element from its prefill block, then scatter per decode PE
        vals = np.empty(self.src_py.size, dtype=np.float64)
        for (py, px), blk in stacked.items():
            sel = (self.src_py == py) & (self.src_px == px)
            vals[sel] = blk[self.src_row[sel], self.src_col[sel]]
        for py in range(dec.p_y):
            for px in range(dec.p_x):
                sel = (self.dst_py == py) & (self.dst_px == px)
                out[py][px][self.dst_slot[sel], self.dst_col[sel]] = vals[sel]
        return out

    def load(self, links: LinkLoad, pre_region: Region, dec_region: Region, copies: int = 2) -> None:
        """Count the moves of K and V (``copies``) on the links."""
        n_dst = dec_region.p_y * dec_region.p_x
        src = self.src_py * self.pre.p_x + self.src_px
        dst = self.dst_py * self.dec.p_x + self.dst_px
        s, d, c = _pair_counts(src, dst, n_dst)
        links.add(pre_region.x0 + s % self.pre.p_x, pre_region.y0 + s // self.pre.p_x,
                  dec_region.x0 + d % self.dec.p_x, dec_region.y0 + d // self.dec.p_x, copies * c)


def _positions(part, elements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block, slot in block) of each element of a `Partition` (vectorised `Partition.owner`)."""
    inv = np.empty(part.total, dtype=np.int64)
    inv[part.order] = np.arange(part.total)
    pos = inv[np.asarray(elements, dtype=np.int64)]
    offs = np.asarray(part.offsets)
    sizes = np.asarray(part.sizes)
    ends = offs + sizes
    block = np.searchsorted(ends, pos, side="right")
    return block, pos - offs[block]


def hidden_relayout(pre: PrefillLayout, dec: DecodeLayout, h_blocks: Blocks, position: int, dtype,
                    links: LinkLoad | None = None, pre_region: Region | None = None,
                    dec_region: Region | None = None) -> Blocks:
    """The hidden vector of token ``position`` from the prefill blocks (``L_y E_x``) to the decode
    layout (Y-dist: segment py on every PE of row py); each decode PE receives its segment from the
    prefill PEs that hold it."""
    row, slot = _positions(pre.tokens, np.array([position]))
    E = pre.hidden.total
    p_cols, p_slots = _positions(pre.hidden, np.arange(E))
    d_rows, d_slots = _positions(dec.hidden, np.arange(E))
    vec = np.array([pre_blocks_val(h_blocks, int(row[0]), int(slot[0]), int(c), int(s))
                    for c, s in zip(p_cols, p_slots)])
    out = make_blocks(dec.p_y, dec.p_x, lambda px, py: np.zeros(dec.hidden.alloc[py], dtype))
    for py in range(dec.p_y):
        for px in range(dec.p_x):
            sel = d_rows == py
            out[py][px][d_slots[sel]] = vec[sel]
    if links is not None:
        src = np.repeat(p_cols, dec.p_x)
        dcol = np.tile(np.arange(dec.p_x), E)
        drow = np.repeat(d_rows, dec.p_x)
        n_dst = dec.p_y * dec.p_x
        s, d, c = _pair_counts(src, drow * dec.p_x + dcol, n_dst)
        links.add(pre_region.x0 + s, np.full(s.size, pre_region.y0 + int(row[0])),
                  dec_region.x0 + d % dec.p_x, dec_region.y0 + d // dec.p_x, c)
    return out


def pre_blocks_val(blocks: Blocks, py: int, row: int, px: int, col: int) -> float:
    return float(blocks[py][px][row, col])
