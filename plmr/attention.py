"""Cycle cost of prefill attention as the layer program runs it: K/V gathered once per layer within each KV
group's columns, the group's query rows split over those columns, full-head K|V blocks rotating along the
y-ring with a fused online softmax (method §5's fused variant; ``meshgemm.prefill_attention``).

One pure rule, ``ring_attention``, on the busiest column (the most query rows and features); the caller
(`plmr.transformer.prefill_phases`) derives the sizes from the head layout of method §3.5.
"""

from __future__ import annotations

import functools
import math


from plmr.breakdown import CostBreakdown
from plmr.collectives import chain_side_arrival
from plmr.gemm import shift_step
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_order
from plmr.primitives import t_fn, t_join, t_vec


def strided_width(spec: HardwareSpec, op: str, dtype: str, stride: int) -> int:
    """SIMD width of an op with an operand of stride ``stride`` (hardware-and-csl.md §3.2: strides ≡ 1,
    4 or 7 mod 8 run 2 lanes, ≡ 0 mod 8 one lane; 0 and 1 are free)."""
    w = spec.simd_width(op, dtype)
    if stride in (0, 1) or stride % 8 in (2, 3, 5, 6):
        return w
    return min(w, 2 if stride % 8 in (1, 7, 4) else 1)


def _strided(spec: HardwareSpec, n: int, op: str, dtype: str, stride: int) -> float:
    if n <= 0:
        return 0.0
    return spec.op_issue_cycles + math.ceil(n / strided_width(spec, op, dtype, stride))


@functools.lru_cache(maxsize=4096)
def ring_busy_steps(p_y: int, blocks: int) -> int:
    """Computing steps on the ring's critical path, when a row sees the key blocks of itself and the
    ``blocks`` − 1 rows above it (causal: all P_y; a sliding window: fewer).

    Row y holds the block of row R[(pos(y) − t) mod P_y] at step t (the interleaved y-ring, method
    §4.2), so rows meet their visible blocks at scattered steps. A step ends when the row's compute
    and its block exchange with both ring neighbours are done, so a row's step t + 1 starts after its
    neighbours' step t: a late row delays its neighbours one step later, theirs two steps later, and
    so on. The slowest chain is a path through (ring position, step) that moves at most one position
    per step; the count of computing cells on the best such path (a max-plus recurrence) is the
    number of steps paid at the computing cost."""
    if blocks >= p_y:
        return p_y
    import numpy as np  # only sliding windows shorter than the ring need the recurrence; keeps plans numpy-free

    if p_y <= 2:
        order = np.arange(p_y)
    else:
        order = np.array(ring_order(p_y))
    pos = np.empty(p_y, dtype=np.int64)
    pos[order] = np.arange(p_y)
    ys = order  # the row at each ring position
    best = np.zeros(p_y, dtype=np.int64)
    for t in range(p_y):
        src = order[(np.arange(p_y) - t) % p_y]  # block held at each ring position
        dd = ys - src
        busy = ((dd >= 0) & (dd < blocks)).astype(np.int64)
        if t:
            best = np.maximum(best, np.maximum(np.roll(best, 1), np.roll(best, -1))) if p_y > 2 else \
                np.full(p_y, best.max())
        best = best + busy
    return int(best.max())


def _halving_tree(spec: HardwareSpec, n: int, op: str, dtype: str) -> float:
    """max or sum of n lanes into the first by halving ops (⌈log2 n⌉ ops)."""
    t = 0.0
    while n > 1:
        h = n // 2
        t += t_vec(spec, h, op, dtype)
        n -= h
    return t


def _chain_stream(spec: HardwareSpec, links: int, wavelets: int, issues: int = 1) -> float:
    """A stream along a chain of ``links`` one-hop links through software relays, ``issues`` ops issued."""
    if links <= 0 or wavelets <= 0:
        return 0.0
    return chain_side_arrival(spec, [1] * links) + (issues - 1) * spec.op_issue_cycles + wavelets


def _gather_stream(spec: HardwareSpec, G: int, block: int, chunk: int) -> float:
    """The K|V allgather along a group's G columns (``meshgemm.prefill_attention``, step 2), to its
    first column, which ends last: every column relays what comes from below (``RelayStore``) before
    it sends its own chunk up, then sends its own chunk down before it relays what comes from above.
    So column G − 2 sends its chunk down only once the up stream has passed it, and relays the last
    column's chunk after its own; that chunk then runs the G − 2 links down. With ``block`` the
    group's values (every chunk) and ``chunk`` one column's: the up stream into column G − 2 (G − 2
    links, every chunk but the last two, then its own), its own chunk down and the last column's
    relayed (c_op, then β more), then G − 2 links. Two columns: each chunk once each way."""
    if G <= 1:
        return 0.0
    if G == 2:
        return 2 * chain_side_arrival(spec, [1]) + block
    return (2 * chain_side_arrival(spec, [1] * (G - 2)) + spec.op_issue_cycles + spec.relay_cycles
            + block + chunk)


def ring_attention(spec: HardwareSpec, p_y: int, group_cols: int, rows: int, features: int, groups: int,
                   head_dim: int, n_rep: int, tokens: int, keys: int, tiles: int, m: int, visible: int,
                   dtype: str = "fp16", acc: str = "fp32") -> CostBreakdown:
    """One layer's attention on the busiest PE (the program's phases, in order):

    * **gather**: own K and V features packed (one copy of m tokens per feature, tile and group), then
      an allgather along the group's ``group_cols`` columns on the x chains (``_gather_stream``: the
      first column ends last, once the up stream has reached column G − 2 and the last column's chunk
      has come down behind column G − 2's own), then the block rearranged: K
      feature-major (one copy per column's chunk), V token-major (one copy of ``keys`` per feature,
      stride d);
    * **queries**: own features of every group row packed (per token, a stride-m copy of n_rep·w),
      an all-to-all on the chains, each direction a chain stream of G·(G − 1)/2 pieces of rows·w
      values: a column receives its own pieces before it forwards anything, and those come after the
      column below has received its own, so the columns' receives follow one another (the middle
      link's ⌈G/2⌉·⌊G/2⌋ pieces would be the bound with every column streaming at once);
    * **ring**: P_y steps; at each a receive and a send of the groups' 2·d·keys block on the y-ring
      (two hops when P_y ≥ 3; fp16 packed two values per wavelet) overlap the step's compute, then a
      join on both; the compute loses a cycle in every cycle a wavelet of the block moves (the
      memory ports, ``plmr.gemm.shift_step``, as MeshGEMM's steps); the last step sends nothing but
      still joins (on the busiest row it computes when every step does). On the busiest row,
      ``visible`` steps compute: per owned row, scores over all d features (one FMAC of ``keys``
      lanes per feature, fp32), the scale, the online softmax (halving max and sum trees, e^(s − m)
      as a scalar function over rows·keys, rescale) and acc += p·V (one FMAC of d lanes per key);
      the causal (and window) masks are one fill per row on the diagonal block; a step at which any
      row computes paces the ring (``ring_busy_steps``);
    * **return**: 1/l (rsqrt, squared), O scaled per owned row and column chunk, the inverse
      all-to-all, unpacked with stride-m copies.
    """
    c_op = spec.op_issue_cycles
    mix = dtype if dtype == acc else "fp16_fp32"
    G, n_x, w, ng, d, T, Tk = group_cols, rows, features, groups, head_dim, tokens, keys
    parts: dict[str, float] = {}
    # gather
    pack = ng * w * tiles * 2 * t_vec(spec, m, "mov", dtype)
    gather = _gather_stream(spec, G, 2 * d * Tk, 2 * w * Tk)
    chunks = ng * (G * t_vec(spec, w * Tk, "mov", dtype) + d * _strided(spec, Tk, "mov", dtype, d))
    parts["gather"] = pack + gather + chunks
    # queries
    qpack = ng * tiles * m * _strided(spec, n_rep * w, "mov", dtype, m) + ng * t_vec(spec, n_x * w, "mov", dtype)
    received = G * (G - 1) // 2 * n_x * w  # every column's own pieces, one column after the other
    a2a = 2 * _chain_stream(spec, G - 1, max(received, n_x * (d - w)), issues=G - 1) if G > 1 else 0.0
    parts["queries"] = qpack + a2a
    # ring steps
    scores = ng * n_x * (t_vec(spec, Tk, "mov", acc) + d * (c_op + math.ceil(Tk / spec.simd_width("fmac", mix))))
    scale = t_vec(spec, ng * n_x * Tk, "scale", acc)
    soft = ng * (n_x * (t_vec(spec, Tk, "mov", acc) + _halving_tree(spec, Tk, "max", acc))
                 + _strided(spec, n_x, "mov", acc, Tk) + t_vec(spec, n_x, "max", acc) + t_vec(spec, n_x, "scale", acc)
                 + t_vec(spec, n_x, "add", acc) + t_fn(spec, n_x) + n_x * t_vec(spec, Tk, "add", acc)
                 + t_fn(spec, n_x * Tk) + n_x * (t_vec(spec, Tk, "mov", acc) + _halving_tree(spec, Tk, "add", acc))
                 + t_vec(spec, n_x, "mul", acc) + _strided(spec, n_x, "add", acc, Tk)
                 + n_x * (t_vec(spec, d, "scale", acc) + Tk * (c_op + math.ceil(d / spec.simd_width("fmac", mix))))
                 + t_vec(spec, n_x, "mov", acc))
    compute = scores + scale + soft
    vis = ring_busy_steps(p_y, max(1, visible))
    if p_y > 1:
        hops = 2 if p_y >= 3 else 1
        block = [(hops, math.ceil(ng * 2 * d * Tk / spec.elements_per_wavelet(dtype, packed=True)))]
        busy = shift_step(spec, compute, block)[3]
        idle = shift_step(spec, 0.0, block)[3]
        # the last step shifts nothing (the block is not sent on), but still joins on its two ids
        last_saves = (busy - compute if vis >= p_y else idle) - t_join(spec, 2)
    else:
        busy, idle, last_saves = compute, 0.0, 0.0
    mask = ng * n_x * (t_vec(spec, max(Tk // 2, 1), "mov", acc))
    init = t_vec(spec, ng * n_x * d, "mov", acc) + 2 * t_vec(spec, ng * n_x, "mov", acc)
    parts["ring"] = init + vis * busy + (p_y - vis) * idle - last_saves + mask
    parts["ring_step"] = busy
    # return: O = acc·(1/l) per row and column chunk; in fp16 scaled in place in fp32, then narrowed
    chunk = max(d // max(G, 1), 1)
    normalise = (t_vec(spec, chunk, "scale", acc) + t_vec(spec, chunk, "convert", "fp16") if dtype != acc
                 else t_vec(spec, chunk, "scale", dtype))
    back = (t_fn(spec, ng * n_x) + t_vec(spec, ng * n_x, "mul", acc)
            + ng * n_x * G * normalise + ng * t_vec(spec, n_x * w, "mov", dtype)
            + a2a + ng * tiles * m * _strided(spec, n_rep * w, "mov", dtype, m))
    parts["return"] = back
    total = parts["gather"] + parts["queries"] + parts["ring"] + parts["return"]
    comm = gather + 2 * a2a + vis * (busy - compute) + (p_y - vis) * idle - last_saves  # streams, steps beyond compute
    return CostBreakdown(op="ring_attention", compute_cycles=total - comm, comm_cycles=comm,
                         total_cycles=total, parts=parts)
