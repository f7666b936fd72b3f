"""Cycle costs of the collectives along one mesh axis (waferllm-method.md §6.3-6.6, §7).

All take ``n_ax`` PEs on the axis and a per-PE payload of ``n`` elements. One axis of one PE costs
nothing. Each collective pays the calibrated per-collective constant ``collective_cycles`` once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from plmr.breakdown import CostBreakdown
from plmr.hardware import HardwareSpec
from plmr.ktree import KTree, build_ktree, build_line_tree, chain_spans, line_chain_spans, routed_colours
from plmr.primitives import ceil_div, dtype_bytes, t_goto, t_msg, t_vec


def _zero(op: str) -> CostBreakdown:
    return CostBreakdown(op=op, compute_cycles=0.0, comm_cycles=0.0, total_cycles=0.0)


def message(spec: HardwareSpec, n: int, hops: int, stages: int = 0, dtype: str = "fp16",
            packed: bool = False) -> CostBreakdown:
    """Point-to-point stream of n elements over ``hops`` hops with ``stages`` software relays."""
    t = t_msg(spec, n, hops, stages, dtype, packed)
    return CostBreakdown(op="message", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=n * dtype_bytes(dtype), colors_per_pe=1 if n else 0)


def broadcast(spec: HardwareSpec, n_ax: int, n: int, root: int | None = None, dtype: str = "fp16",
              packed: bool = False) -> CostBreakdown:
    """Single-colour multicast from ``root`` (default the middle PE) to the whole axis (§7 pattern 4)."""
    if n_ax <= 1 or n <= 0:
        return _zero("broadcast")
    root = n_ax // 2 if root is None else root
    hops = max(root, n_ax - 1 - root)
    t = spec.collective_cycles + t_msg(spec, n, hops, 0, dtype, packed)
    return CostBreakdown(op="broadcast", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=n * dtype_bytes(dtype), colors_per_pe=1)


def _hop_term(spec: HardwareSpec, links: list[int] | tuple[int, ...]) -> float:
    """Σ d·α over a chain's links. With a whole-number α every partial sum is an exact integer, so
    α·Σd is the same number, computed without a Python loop."""
    hop = spec.hop_cycles
    total = sum(links)
    if _whole(hop, total):
        return total * hop
    return sum(d * hop for d in links)


def _whole(hop: float, hops: int) -> bool:
    """True when d·α summed over links of ``hops`` hops in all is exact in floating point."""
    return float(hop).is_integer() and abs(hop) * max(hops, 1) < 2.0 ** 52


def _arrival(spec: HardwareSpec, links: int, hop_term: float) -> float:
    return (spec.op_issue_cycles + links * spec.ramp_cycles + hop_term
            + (links - 1) * spec.relay_cycles)


def chain_side_arrival(spec: HardwareSpec, links: list[int]) -> float:
    """Cycles from the start of a chain phase until the first wavelet of one side's stream reaches
    the root: the end PE issues its send (c_op); every link is a message through the router,
    injected and ejected (ρ) and hopping d·α; every member between the end and the root is one
    software stage (β) that receives, adds its own vector and re-injects."""
    return _arrival(spec, len(links), _hop_term(spec, links))


def link_buffer_wavelets(spec: HardwareSpec, hops: int = 1) -> int:
    """Wavelets a link of ``hops`` router hops holds while its receiver takes none: the sender's
    output queue and ramp (ρ_in, and β behind a software stage), each router's buffer and hop
    (hardware-and-csl.md §2.2, ``router_buffer_wavelets`` + α), the receiver's ramp and input queue
    (§1.3). A stream shorter than that completes on the sender's side without waiting for the
    receiver; a longer one waits for the receiver to take what exceeds it."""
    q_in = spec.input_queue_wavelets(min(2, len(spec.input_queue_words) - 1))
    q_out = max(1, spec.output_queue_words[min(2, len(spec.output_queue_words) - 1)] * 16 // spec.wavelet_bits)
    return int(q_out + q_in + round(spec.ramp_cycles) + round(spec.relay_cycles)
               + hops * (spec.router_buffer_wavelets + round(spec.hop_cycles)))


def _chain_phase(spec: HardwareSpec, links: list[int], n: int, dtype: str, packed: bool) -> float:
    """A one-sided receive-add-forward chain over the given hop lengths into its root."""
    if not links:
        return 0.0
    return chain_side_arrival(spec, links) + math.ceil(n / spec.elements_per_wavelet(dtype, packed))


def _two_stream(spec: HardwareSpec, a_first: float, a_second: float, n_w: int, add: float) -> float:
    """A root fed from both sides (see ``_group_phase``) once both arrivals are known."""
    a1 = a_first
    a2 = max(a_second, 2 * spec.op_issue_cycles)
    ingest = max(max(a1, a2) + n_w, min(a1, a2) + 2 * n_w)
    return ingest + spec.task_cycles + add


def _group_phase(spec: HardwareSpec, left: list[int], right: list[int], n: int, dtype: str,
                 packed: bool) -> float:
    """One group of a chain phase: chains from both ends into the root.

    A root with two incoming chains (method §6.4: "the root adds both streams into its buffer")
    takes both streams through its one ramp, one wavelet per cycle in all, so it ingests 2⌈n/e_w⌉
    wavelets: it receives the side with fewer links (ties: the right side) asynchronously into a
    receive buffer, adds the other into its accumulator, joins (c_task) and adds the receive buffer
    (a vector add). Its second receive is issued c_op after the first."""
    if not left or not right:
        return _chain_phase(spec, left or right, n, dtype, packed)
    n_w = math.ceil(n / spec.elements_per_wavelet(dtype, packed))
    first, second = (right, left) if len(right) <= len(left) else (left, right)
    return _two_stream(spec, chain_side_arrival(spec, first), chain_side_arrival(spec, second), n_w,
                       t_vec(spec, n, "add", dtype))


def ktree_reduce_cycles(spec: HardwareSpec, tree: KTree, n: int, dtype: str = "fp16",
                        packed: bool = False) -> list[float]:
    """Cycles of each K-tree phase: its slowest group (§6.6, with the per-link ramp and the root's
    two-stream ingest of ``_group_phase``), plus, before every level but the last, the task
    activation that continues into the next level (meshgemm/collectives.py writes each level's
    two-sided root as a join, so the code after a level that is followed by more joins runs as a
    state of the continuation task)."""
    phases = []
    for i, level in enumerate(tree.levels):
        phase = max((_group_phase(spec, left, right, n, dtype, packed)
                     for left, right in level.chain_sides()), default=0.0)
        if i < len(tree.levels) - 1:
            # every level's code has the two-sided root's join in one branch, and the levels after
            # it join too, so each PE continues with the next level through the continuation task
            # (``simulator.joins``): one activation before the next level's ops
            phase += t_goto(spec)
        phases.append(phase)
    return phases


@dataclass(frozen=True)
class _LevelArrivals:
    """One K-tree level reduced to what its phase needs for any payload: whether some group is a
    lone PE (phase 0), the latest one-sided arrival, and over two-sided groups the latest of the
    later and of the earlier of the two arrivals. A phase is the max over groups of functions that
    never decrease in these arrivals, so it is that function of the maxima, the same number."""

    lone: bool
    one_sided: float | None
    later: float | None
    earlier: float | None


@functools.lru_cache(maxsize=8192)
def _level_arrivals(op: float, ramp: float, hop: float, relay: float, n_ax: int, k: int,
                    group_counts: tuple[int, ...] | None) -> tuple[tuple[_LevelArrivals, ...], int]:
    probe = _ArrivalSpec(op, ramp, hop, relay)
    levels, root = chain_spans(n_ax, k, group_counts)
    out = []
    for level in levels:
        lone, one, later, earlier = False, None, None, None
        for c in level:
            if not c.west_links and not c.east_links:
                lone = True
            elif not c.west_links or not c.east_links:
                links, hops = (c.west_links, c.west_hops) if c.west_links else (c.east_links, c.east_hops)
                a = _arrival(probe, links, hops * hop)
                one = a if one is None else max(one, a)
            else:
                west = _arrival(probe, c.west_links, c.west_hops * hop)
                east = _arrival(probe, c.east_links, c.east_hops * hop)
                a1, a2 = (east, west) if c.east_links <= c.west_links else (west, east)
                a2 = max(a2, 2 * op)
                hi, lo = max(a1, a2), min(a1, a2)
                later = hi if later is None else max(later, hi)
                earlier = lo if earlier is None else max(earlier, lo)
        out.append(_LevelArrivals(lone, one, later, earlier))
    return tuple(out), root


@dataclass(frozen=True)
class _ArrivalSpec:
    """The four PLMR fields a chain's arrival reads (a hashable key for ``_level_arrivals``)."""

    op_issue_cycles: float
    ramp_cycles: float
    hop_cycles: float
    relay_cycles: float


def _ktree_phases(spec: HardwareSpec, n_ax: int, n: int, k: int, group_counts: tuple[int, ...] | None,
                  dtype: str, packed: bool) -> tuple[list[float], int, int]:
    """(phase cycles, global root, K) of a K-tree: from memoised per-level arrivals when α is a
    whole number (the same numbers as walking every group, see ``_LevelArrivals``), else from the
    full tree."""
    if _whole(spec.hop_cycles, n_ax):
        levels, root = _level_arrivals(spec.op_issue_cycles, spec.ramp_cycles, spec.hop_cycles,
                                       spec.relay_cycles, n_ax, k,
                                       None if group_counts is None else tuple(group_counts))
        n_w = math.ceil(n / spec.elements_per_wavelet(dtype, packed))
        add = None
        phases = []
        for i, lv in enumerate(levels):
            phase = 0.0 if lv.lone else None
            if lv.one_sided is not None:
                p = lv.one_sided + n_w
                phase = p if phase is None else max(phase, p)
            if lv.later is not None:
                if add is None:
                    add = t_vec(spec, n, "add", dtype)
                p = max(lv.later + n_w, lv.earlier + 2 * n_w) + spec.task_cycles + add
                phase = p if phase is None else max(phase, p)
            if i < len(levels) - 1:  # continued into the next level (see ktree_reduce_cycles)
                phase += t_goto(spec)
            phases.append(phase)
        return phases, root, len(levels)
    tree = build_ktree(n_ax, k, group_counts)
    return ktree_reduce_cycles(spec, tree, n, dtype, packed), tree.root, tree.k


def ktree_allreduce_cycles(spec: HardwareSpec, n_ax: int, n: int, k: int = 2,
                           group_counts: tuple[int, ...] | None = None, dtype: str = "fp16",
                           packed: bool = False, with_broadcast: bool = True) -> float:
    """``ktree_allreduce(...).total_cycles`` without the breakdown (the planner's hot path)."""
    if n_ax <= 1 or n <= 0:
        return 0.0
    phases, r, _ = _ktree_phases(spec, n_ax, n, k, group_counts, dtype, packed)
    bcast_t = t_msg(spec, n, max(r, n_ax - 1 - r), 0, dtype, packed) if with_broadcast else 0.0
    return spec.collective_cycles + sum(phases) + bcast_t


def ktree_allreduce(spec: HardwareSpec, n_ax: int, n: int, k: int = 2,
                    group_counts: tuple[int, ...] | None = None, dtype: str = "fp16",
                    packed: bool = False, with_broadcast: bool = True) -> CostBreakdown:
    """K-tree reduce to the global root, then (optionally) a multicast of the total to the axis.

    K = 1 is a single chain into the middle PE. Colours: 2 slots per phase alternating by distance to
    the root, plus 1 for the two-sided multicast = 2K+1 colour IDs per axis (method §6.4 [D]); a PE
    routes at most that many, fewer where a level's chains are one hop long (``routed_colours``).
    """
    if n_ax <= 1 or n <= 0:
        return _zero("ktree_allreduce")
    phases, r, _ = _ktree_phases(spec, n_ax, n, k, group_counts, dtype, packed)
    reduce_t = sum(phases)
    bcast_t = 0.0
    if with_broadcast:
        bcast_t = t_msg(spec, n, max(r, n_ax - 1 - r), 0, dtype, packed)
    t = spec.collective_cycles + reduce_t + bcast_t
    parts = {f"phase{i + 1}": p for i, p in enumerate(phases)}
    parts["broadcast"] = bcast_t
    return CostBreakdown(op="ktree_allreduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * n * dtype_bytes(dtype),
                         colors_per_pe=_ktree_colours(n_ax, k, group_counts) + (1 if with_broadcast else 0),
                         parts=parts)


@functools.lru_cache(maxsize=8192)
def _ktree_colours(n_ax: int, k: int, group_counts: tuple[int, ...] | None) -> int:
    """``routed_colours`` of the tree, once per shape (a walk of every member's span: 1 ms at 994 PEs,
    where the rest of ``ktree_allreduce`` is memoised)."""
    return routed_colours(build_ktree(n_ax, k, group_counts))


#: How a line tree's stages combine what they receive (``meshgemm.decode_collectives``).
COMBINES = ("sum", "max", "argmax")


def _combine_op(spec: HardwareSpec, n: int, dtype: str, combine: str) -> float:
    """The op a store-and-forward stage runs on what it received: ``"max"`` an element-wise ``Max``;
    ``"argmax"`` (a (value, index) pair) a scalar compare, which costs nothing on the scalar path as
    modelled, and a 2-element copy only when the received pair wins — never in a timing-only run (no
    data: every compare is false), so not charged."""
    if combine == "argmax":
        return 0.0
    return spec.op_issue_cycles + math.ceil(n / spec.simd_width("max", dtype))


def _side_done(spec: HardwareSpec, links: list[int], n: int, dtype: str, combine: str) -> float:
    """Cycles until a group root has taken in (and combined) one side's chain of ``links``.

    ``"sum"``: fused receive-add-forward stages (``RecvAddSend``) stream through every member:
    ``a(L) + ⌈n/e_w⌉`` (``chain_side_arrival``). ``"max"`` and ``"argmax"`` have no fused fabric op:
    every stage receives the whole vector, combines it (``_combine_op``: for ``"max"`` an element-wise
    ``Max``) and sends it on (store and forward), so each link costs the send's issue, the ramps and
    hops, the stream, and the receiver's combine: ``Σ (c_op + ρ + d·α + ⌈n/e_w⌉ + combine)``."""
    if not links:
        return 0.0
    n_w = math.ceil(n / spec.elements_per_wavelet(dtype))
    if combine == "sum":
        return chain_side_arrival(spec, links) + n_w
    combine_op = _combine_op(spec, n, dtype, combine)
    return sum(spec.op_issue_cycles + spec.ramp_cycles + d * spec.hop_cycles + n_w + combine_op for d in links)


def _sequential_group_phase(spec: HardwareSpec, left: list[int], right: list[int], n: int, dtype: str,
                            combine: str) -> float:
    """One group of a line-tree level: a root fed from both sides takes the side with more members
    first (the left on ties), then issues a second receive (c_op) for the other side, whose stream
    waited in the fabric meanwhile: no join, no task switch (``LineTree.reduce``)."""
    if not left or not right:
        return _side_done(spec, left or right, n, dtype, combine)
    first, second = (left, right) if len(left) >= len(right) else (right, left)
    n_w = math.ceil(n / spec.elements_per_wavelet(dtype))
    take = spec.op_issue_cycles + n_w
    if combine != "sum":
        take += _combine_op(spec, n, dtype, combine)
    return max(_side_done(spec, first, n, dtype, combine) + take, _side_done(spec, second, n, dtype, combine))


def line_tree_allreduce(spec: HardwareSpec, n_ax: int, n: int, k: int = 2,
                        group_counts: tuple[int, ...] | None = None, dtype: str = "fp32",
                        combine: str = "sum", one_sided: bool = True, with_broadcast: bool = True,
                        group_only: bool = False) -> CostBreakdown:
    """The decode program's allreduce along one line (``meshgemm.decode_collectives.LineTree``):
    level-0 groups of a balanced split with their roots at the group's end (``one_sided``), upper
    levels chained from both sides into middle roots, each root taking its two sides one after the
    other; then a multicast of the total from the global root. Levels follow one another in the
    code of every PE, so the phases add. ``group_only``: level 0 alone, then a multicast from each
    group root to its group (the per-KV-group score allreduce). 2 colours per level, 1 per multicast.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if n_ax <= 1 or n <= 0:
        return _zero("line_tree_allreduce")
    tree = build_line_tree(n_ax, k, group_counts, one_sided)
    levels = tree.levels[:1] if group_only else tree.levels
    phases = [max((_sequential_group_phase(spec, left, right, n, dtype, combine)
                   for left, right in level.chain_sides()), default=0.0) for level in levels]
    bcast_t = 0.0
    if group_only:
        level = tree.levels[0]
        bcast_t = max((t_msg(spec, n, max(r - g[0], g[-1] - r), 0, dtype) for g, r in zip(level.groups, level.roots)
                       if len(g) > 1), default=0.0)
    elif with_broadcast:
        r = tree.root
        bcast_t = t_msg(spec, n, max(r, n_ax - 1 - r), 0, dtype)
    t = spec.collective_cycles + sum(phases) + bcast_t
    parts = {f"phase{i + 1}": p for i, p in enumerate(phases)}
    parts["broadcast"] = bcast_t
    colours = 2 * len(levels) + (1 if (with_broadcast or group_only) else 0)
    return CostBreakdown(op="line_tree_allreduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * n * dtype_bytes(dtype), colors_per_pe=colours, parts=parts)


@functools.lru_cache(maxsize=1 << 14)
def line_tree_late_allreduce_cycles(spec: HardwareSpec, n_ax: int, n: int, k: int = 2,
                                    group_counts: tuple[int, ...] | None = None, dtype: str = "fp32",
                                    late: int = 0, one_sided: bool = True, with_broadcast: bool = True) -> float:
    """The decode program's sum allreduce along a line (``line_tree_allreduce``) counted from the moment
    position ``late`` enters it, every other position having entered it long before (a hand-off's
    landing PE, the token's return: the rest of the region waits in the allreduce with zeros). Only
    the late contribution's path is left: at each level, from the position carrying it to that level's
    group root (a chain of receive-add-forward stages over the members between, whose own streams wait
    queued; a carrier that is not its side's end is itself one such stage), the root then taking its
    other side if that comes second (one more receive of a queued stream), or both queued sides when the
    carrier is the root; then the multicast from the global root."""
    if n_ax <= 1 or n <= 0:
        return 0.0
    if not 0 <= late < n_ax:
        raise ValueError(f"late position {late} outside the line of {n_ax}")
    tree = build_line_tree(n_ax, k, None if group_counts is None else tuple(group_counts), one_sided)
    n_w = math.ceil(n / spec.elements_per_wavelet(dtype))
    take = spec.op_issue_cycles + n_w
    t = 0.0
    carrier = late
    for level in tree.levels:
        group, root = next((g, r) for g, r in zip(level.groups, level.roots) if carrier in g)
        i, j = group.index(root), group.index(carrier)
        hops = [b - a for a, b in zip(group, group[1:])]
        left, right = hops[:i], hops[i:]
        if j == i:
            t += take * ((1 if left else 0) + (1 if right else 0))
            continue
        links = hops[j:i] if j < i else hops[i:j][::-1]
        t += chain_side_arrival(spec, links) + n_w
        if 0 < j < len(group) - 1:  # a relay, not its side's end: it receives its upstream's queued stream first
            t += spec.relay_cycles
        if left and right and (j < i) == (len(left) >= len(right)):
            t += take  # the late side is the root's first: its other side, queued, comes after
        carrier = root
    if with_broadcast:
        r = tree.root
        t += t_msg(spec, n, max(r, n_ax - 1 - r), 0, dtype)
    return spec.collective_cycles + t


def chain_reduce(spec: HardwareSpec, n_ax: int, n: int, root: int | None = None, dtype: str = "fp16",
                 packed: bool = False) -> CostBreakdown:
    """Nearest-neighbour receive-add-forward chains from both ends into ``root`` (default middle)."""
    if n_ax <= 1 or n <= 0:
        return _zero("chain_reduce")
    root = n_ax // 2 if root is None else root
    t = spec.collective_cycles + _group_phase(spec, [1] * root, [1] * (n_ax - 1 - root), n, dtype, packed)
    # Two colours alternating by distance to the (fixed) root serve both sides (method §6.4 [D]).
    return CostBreakdown(op="chain_reduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * n * dtype_bytes(dtype), colors_per_pe=2)


def pipeline_allreduce(spec: HardwareSpec, n_ax: int, n: int, dtype: str = "fp16",
                       packed: bool = False) -> CostBreakdown:
    """The Cerebras GEMV baseline: a chain to the end PE, then a broadcast back (§6.6; 3 colours)."""
    if n_ax <= 1 or n <= 0:
        return _zero("pipeline_allreduce")
    reduce_t = _chain_phase(spec, [1] * (n_ax - 1), n, dtype, packed)
    bcast_t = t_msg(spec, n, n_ax - 1, 0, dtype, packed)
    t = spec.collective_cycles + reduce_t + bcast_t
    return CostBreakdown(op="pipeline_allreduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * n * dtype_bytes(dtype), colors_per_pe=3,
                         parts={"reduce": reduce_t, "broadcast": bcast_t})


def relay_allreduce(spec: HardwareSpec, n_ax: int, n: int, dtype: str = "fp16",
                    packed: bool = False) -> CostBreakdown:
    """A nearest-neighbour chain into the last PE (receive-add-forward stages), then the total
    relayed back down the same chain (store-and-forward stages, ``RelayStore``), as the
    bulk-synchronous barrier runs it (meshgemm/bsp.py): both halves cost a one-sided chain of n_ax − 1
    one-hop links, ``c_op + L·ρ + L·α + (L − 1)·β + ⌈n/e_w⌉`` (the end PE's issue, every link through
    the ramps, every stage between the ends one relay). 4 colours (2 per direction)."""
    if n_ax <= 1 or n <= 0:
        return _zero("relay_allreduce")
    links = [1] * (n_ax - 1)
    up = _chain_phase(spec, links, n, dtype, packed)
    down = _chain_phase(spec, links, n, dtype, packed)
    t = spec.collective_cycles + up + down
    return CostBreakdown(op="relay_allreduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=n * dtype_bytes(dtype), colors_per_pe=4,
                         parts={"reduce": up, "relay": down})


def ring_allreduce(spec: HardwareSpec, n_ax: int, n: int, dtype: str = "fp16",
                   packed: bool = False) -> CostBreakdown:
    """Reduce-scatter + allgather on an interleaved ring: 2(n-1) steps of ⌈n/n_ax⌉ elements over
    ≤ 2 hops. A ring step cannot be a fused relay (a ring of blocking receive-add-forward stages
    deadlocks), so each step is an asynchronous send of one chunk, a blocking receive of the next
    (issued c_op later, its first wavelet ρ + h·α after the predecessor's send starts) and a join:
    ``c_op + max(c_op, ρ + h·α) + ⌈chunk/e_w⌉ + c_task`` (§6.6's T_msg(chunk, 2, 1) with the
    software stage made explicit)."""
    if n_ax <= 1 or n <= 0:
        return _zero("ring_allreduce")
    chunk = ceil_div(n, n_ax)
    hops = 2 if n_ax >= 3 else 1
    steps = 2 * (n_ax - 1)
    step = (spec.op_issue_cycles + max(spec.op_issue_cycles, spec.ramp_cycles + hops * spec.hop_cycles)
            + math.ceil(chunk / spec.elements_per_wavelet(dtype, packed)) + spec.task_cycles)
    t = spec.collective_cycles + steps * step
    return CostBreakdown(op="ring_allreduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=(n + chunk) * dtype_bytes(dtype), colors_per_pe=3)


def ring_shift(spec: HardwareSpec, n_ax: int, n: int, dtype: str = "fp16",
               packed: bool = False) -> CostBreakdown:
    """One shift of n elements per PE along an interleaved ring: every link ≤ 2 hops (§4.2, §4.6)."""
    if n_ax <= 1 or n <= 0:
        return _zero("ring_shift")
    hops = 2 if n_ax >= 3 else 1
    t = t_msg(spec, n, hops, 0, dtype, packed)
    return CostBreakdown(op="ring_shift", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * n * dtype_bytes(dtype), colors_per_pe=3 if n_ax >= 3 else 2)


# ------------------------------------------------------------------------------------------------
# The line tree's total without the breakdown (the planner's hot path)
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 15)
def _line_tree_walk(n_ax: int, k: int, group_counts: tuple[int, ...] | None, one_sided: bool,
                    group_only: bool) -> tuple[tuple[tuple[tuple[int, ...], tuple[int, ...]], ...], tuple[int, ...]]:
    """What ``line_tree_allreduce`` reads of ``build_line_tree``: per priced level, the distinct
    (left, right) chain sides of its groups (a level costs its slowest group, and groups with the same
    sides cost the same), and the distinct multicast distances (from the global root; per group root
    with ``group_only``). Memoised: a planner prices the same few thousand trees at many payloads."""
    tree = build_line_tree(n_ax, k, group_counts, one_sided)
    levels = tree.levels[:1] if group_only else tree.levels
    sides = tuple(tuple(dict.fromkeys((tuple(left), tuple(right)) for left, right in level.chain_sides()))
                  for level in levels)
    if group_only:
        level = tree.levels[0]
        hops = tuple(sorted({max(r - g[0], g[-1] - r) for g, r in zip(level.groups, level.roots) if len(g) > 1}))
    else:
        r = tree.root
        hops = (max(r, n_ax - 1 - r),)
    return sides, hops


def _spans_and_hops(n_ax: int, k: int, group_counts: tuple[int, ...] | None, one_sided: bool,
                    group_only: bool) -> tuple[tuple, tuple[int, ...]]:
    """``_line_tree_walk``'s levels and multicast distances from ``line_chain_spans`` (no tree built):
    the priced levels' chain spans, and the distances from the global root (per group root with
    ``group_only``)."""
    spans, root = line_chain_spans(n_ax, k, group_counts, one_sided)
    if group_only:
        spans = spans[:1]
        return spans, tuple(sorted({max(c.west_hops, c.east_hops) for c in spans[0] if c.west_links or c.east_links}))
    return spans, (max(root, n_ax - 1 - root),)


@functools.lru_cache(maxsize=1 << 15)
def _line_tree_arrivals(op: float, ramp: float, hop: float, relay: float, n_ax: int, k: int,
                        group_counts: tuple[int, ...] | None, one_sided: bool, group_only: bool
                        ) -> tuple[tuple[tuple[bool, float | None, float | None], ...], tuple[int, ...]]:
    """A summing line tree's levels reduced to what their phases need for any payload (as
    ``_LevelArrivals`` for the K-tree): per level, whether a group is a lone PE (phase 0), the latest
    arrival a(first side) over two-sided groups, and the latest of a(second side) over two-sided groups
    and a(side) over one-sided ones. A group's phase, ``max(a(first) + n_w + take, a(second) + n_w)``
    (``_sequential_group_phase``), never decreases in these arrivals (floating-point addition is
    monotone), so the slowest group's phase is that expression of the maxima: the same number, without
    a walk over every group at every payload. Also the multicast distances (``_line_tree_walk``)."""
    probe = _ArrivalSpec(op, ramp, hop, relay)
    if _whole(hop, n_ax):  # a side's hop term is α × its span (``_hop_term``): spans suffice
        spans, hops = _spans_and_hops(n_ax, k, group_counts, one_sided, group_only)
        levels = []
        for level in spans:
            lone, first, later = False, None, None
            for c in level:
                if not c.west_links and not c.east_links:
                    lone = True
                    continue
                west = _arrival(probe, c.west_links, c.west_hops * hop) if c.west_links else None
                east = _arrival(probe, c.east_links, c.east_hops * hop) if c.east_links else None
                if west is not None and east is not None:
                    # the side with more members first, the west on ties (``_sequential_group_phase``)
                    f, a2 = (west, east) if c.west_links >= c.east_links else (east, west)
                    first = f if first is None else max(first, f)
                else:
                    a2 = west if west is not None else east
                later = a2 if later is None else max(later, a2)
            levels.append((lone, first, later))
        return tuple(levels), hops
    sides, hops = _line_tree_walk(n_ax, k, group_counts, one_sided, group_only)
    levels = []
    for level in sides:
        lone, first, later = False, None, None
        for left, right in level:
            if not left and not right:
                lone = True
                continue
            if left and right:
                a, b = (left, right) if len(left) >= len(right) else (right, left)
                f = chain_side_arrival(probe, list(a))
                first = f if first is None else max(first, f)
                other = b
            else:
                other = left or right
            a2 = chain_side_arrival(probe, list(other))
            later = a2 if later is None else max(later, a2)
        levels.append((lone, first, later))
    return tuple(levels), hops


def line_tree_allreduce_cycles(spec: HardwareSpec, n_ax: int, n: int, k: int = 2,
                               group_counts: tuple[int, ...] | None = None, dtype: str = "fp32",
                               combine: str = "sum", one_sided: bool = True, with_broadcast: bool = True,
                               group_only: bool = False) -> float:
    """``line_tree_allreduce(...).total_cycles`` without the breakdown, from the same tree and the same
    per-group phase (``_sequential_group_phase``), each distinct group priced once
    (tests/plmr/test_collectives.py checks the two are the same number)."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if n_ax <= 1 or n <= 0:
        return 0.0
    gc = None if group_counts is None else tuple(group_counts)
    if combine == "sum":
        levels, hops = _line_tree_arrivals(spec.op_issue_cycles, spec.ramp_cycles, spec.hop_cycles,
                                           spec.relay_cycles, n_ax, k, gc, one_sided, group_only)
        n_w = math.ceil(n / spec.elements_per_wavelet(dtype))
        take = spec.op_issue_cycles + n_w
        phases = []
        for lone, first, later in levels:
            phase = 0.0 if lone else None
            if first is not None:  # two-sided groups: the first side, then the second receive
                p = (first + n_w) + take
                phase = p if phase is None else max(phase, p)
            if later is not None:
                p = later + n_w
                phase = p if phase is None else max(phase, p)
            phases.append(0.0 if phase is None else phase)
    elif all(float(v).is_integer() and abs(v) * (n_ax + n + 1) < 2.0 ** 40
             for v in (spec.op_issue_cycles, spec.ramp_cycles, spec.hop_cycles)):
        # "max" or "argmax" with whole-number parameters: every term of a side's sum is a whole number well
        # below 2^53, so Σ over its links is L·(c_op + ρ + ⌈n/e_w⌉ + combine) + α·(hops) exactly (``_side_done``)
        spans, hops = _spans_and_hops(n_ax, k, gc, one_sided, group_only)
        n_w = math.ceil(n / spec.elements_per_wavelet(dtype))
        combine_op = _combine_op(spec, n, dtype, combine)
        per_link = spec.op_issue_cycles + spec.ramp_cycles + n_w + combine_op
        take = spec.op_issue_cycles + n_w + combine_op
        phases = []
        for level in spans:
            phase = 0.0
            for c in level:
                west = c.west_links * per_link + c.west_hops * spec.hop_cycles
                east = c.east_links * per_link + c.east_hops * spec.hop_cycles
                if c.west_links and c.east_links:
                    first, second = (west, east) if c.west_links >= c.east_links else (east, west)
                    phase = max(phase, first + take, second)
                else:
                    phase = max(phase, west + east)
            phases.append(phase)
    else:
        sides, hops = _line_tree_walk(n_ax, k, gc, one_sided, group_only)
        phases = [max((_sequential_group_phase(spec, left, right, n, dtype, combine) for left, right in level),
                      default=0.0) for level in sides]
    bcast_t = 0.0
    if group_only:
        bcast_t = max((t_msg(spec, n, h, 0, dtype) for h in hops), default=0.0)
    elif with_broadcast:
        bcast_t = t_msg(spec, n, hops[0], 0, dtype)
    return spec.collective_cycles + sum(phases) + bcast_t
