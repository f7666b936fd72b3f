"""Cycle costs of the collectives along one mesh axis (waferllm-method.md §6.3-6.6, §7).

All take ``n_ax`` PEs on the axis and a per-PE payload of ``n`` elements. One axis of one PE costs
nothing. Each collective pays the calibrated per-collective constant ``collective_cycles`` once.
"""

from __future__ import annotations

import math

from plmr.breakdown import CostBreakdown
from plmr.hardware import HardwareSpec
from plmr.ktree import KTree, build_ktree
from plmr.primitives import ceil_div, dtype_bytes, t_msg


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


def _chain_phase(spec: HardwareSpec, links: list[int], n: int, dtype: str, packed: bool) -> float:
    """A receive-add-forward chain over the given hop lengths: each link is one routing stage."""
    if not links:
        return 0.0
    e_w = spec.elements_per_wavelet(dtype, packed)
    return (spec.op_issue_cycles + spec.ramp_cycles
            + sum(spec.relay_cycles + d * spec.hop_cycles for d in links) + math.ceil(n / e_w))


def ktree_reduce_cycles(spec: HardwareSpec, tree: KTree, n: int, dtype: str = "fp16",
                        packed: bool = False) -> list[float]:
    """Cycles of each K-tree phase: the slowest group's longer chain into its root (§6.6)."""
    phases = []
    for level in tree.levels:
        phases.append(max(_chain_phase(spec, side, n, dtype, packed)
                          for sides in level.chain_sides() for side in sides))
    return phases


def ktree_allreduce(spec: HardwareSpec, n_ax: int, n: int, k: int = 2,
                    group_counts: tuple[int, ...] | None = None, dtype: str = "fp16",
                    packed: bool = False, with_broadcast: bool = True) -> CostBreakdown:
    """K-tree reduce to the global root, then (optionally) a multicast of the total to the axis.

    K = 1 is a single chain into the middle PE. Colours: 2 per phase alternating by distance to the
    root, plus 1 for the two-sided multicast = 2K+1 per axis (method §6.4 [D]).
    """
    if n_ax <= 1 or n <= 0:
        return _zero("ktree_allreduce")
    tree = build_ktree(n_ax, k, group_counts)
    phases = ktree_reduce_cycles(spec, tree, n, dtype, packed)
    reduce_t = sum(phases)
    bcast_t = 0.0
    if with_broadcast:
        r = tree.root
        bcast_t = t_msg(spec, n, max(r, n_ax - 1 - r), 0, dtype, packed)
    t = spec.collective_cycles + reduce_t + bcast_t
    parts = {f"phase{i + 1}": p for i, p in enumerate(phases)}
    parts["broadcast"] = bcast_t
    return CostBreakdown(op="ktree_allreduce", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * n * dtype_bytes(dtype),
                         colors_per_pe=2 * tree.k + (1 if with_broadcast else 0), parts=parts)


def chain_reduce(spec: HardwareSpec, n_ax: int, n: int, root: int | None = None, dtype: str = "fp16",
                 packed: bool = False) -> CostBreakdown:
    """Nearest-neighbour receive-add-forward chains from both ends into ``root`` (default middle)."""
    if n_ax <= 1 or n <= 0:
        return _zero("chain_reduce")
    root = n_ax // 2 if root is None else root
    links = [1] * max(root, n_ax - 1 - root)
    t = spec.collective_cycles + _chain_phase(spec, links, n, dtype, packed)
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


def ring_allreduce(spec: HardwareSpec, n_ax: int, n: int, dtype: str = "fp16",
                   packed: bool = False) -> CostBreakdown:
    """Reduce-scatter + allgather on an interleaved ring: 2(n-1) steps of ⌈n/n_ax⌉ elements, each
    over ≤ 2 hops with one software stage (§6.6)."""
    if n_ax <= 1 or n <= 0:
        return _zero("ring_allreduce")
    chunk = ceil_div(n, n_ax)
    hops = 2 if n_ax >= 3 else 1
    steps = 2 * (n_ax - 1)
    t = spec.collective_cycles + steps * t_msg(spec, chunk, hops, 1, dtype, packed)
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
