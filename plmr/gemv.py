"""Cycle costs of distributed GEMV y[1×N] = x[1×M]·W[M×N] on a P_y × P_x mesh (method §6.6).

The reduction runs along one axis (``axis="y"``: x is Y-dist, W natural, output X-dist; ``axis="x"``:
the transposed-block-position variant). Local work is m FMACs of length n (the authors' form), then
an allreduce of the n partial sums along the reduction axis: K-tree (MeshGEMV), pipeline (the
Cerebras GEMV) or ring.
"""

from __future__ import annotations

from plmr.breakdown import CostBreakdown
from plmr.collectives import ktree_allreduce, pipeline_allreduce, ring_allreduce
from plmr.hardware import HardwareSpec
from plmr.primitives import ceil_div, dtype_bytes, t_vec


def _tiles(p_y: int, p_x: int, M: int, N: int, axis: str) -> tuple[int, int, int]:
    if axis == "y":
        return ceil_div(M, p_y), ceil_div(N, p_x), p_y
    if axis == "x":
        return ceil_div(M, p_x), ceil_div(N, p_y), p_x
    raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")


def local_gemv_cycles(spec: HardwareSpec, m: int, n: int, dtype: str = "fp16") -> float:
    """m FMACs of length n: acc[n] += x[i]·W[i, :]."""
    if m <= 0 or n <= 0:
        return 0.0
    return m * t_vec(spec, n, "fmac", dtype)


def gemv_buffer_bytes(m: int, n: int, dtype: str, pad_to: int = 0) -> int:
    """The GEMV PE program's buffers (meshgemm/gemv.py): the m×n weight block, x's m entries, and the
    output y and the collective's receive buffer r, each of n entries, or ``pad_to`` when that is
    more (the ring allreduce cuts y into one segment per PE of the line)."""
    y = max(n, pad_to)
    return (m * n + m + 2 * y) * dtype_bytes(dtype)


def _gemv(op: str, spec: HardwareSpec, p_y: int, p_x: int, M: int, N: int, axis: str, dtype: str,
          reduce: CostBreakdown, pad_to: int = 0) -> CostBreakdown:
    m, n, _ = _tiles(p_y, p_x, M, N, axis)
    local = local_gemv_cycles(spec, m, n, dtype)
    total = local + reduce.total_cycles
    parts = {"local": local, **{f"allreduce.{k}": v for k, v in reduce.parts.items()}}
    return CostBreakdown(op=op, compute_cycles=local, comm_cycles=reduce.total_cycles, total_cycles=total,
                         bytes_per_pe=gemv_buffer_bytes(m, n, dtype, pad_to),
                         colors_per_pe=reduce.colors_per_pe, parts=parts)


def meshgemv(spec: HardwareSpec, p_y: int, p_x: int, M: int, N: int, k: int = 2,
             group_counts: tuple[int, ...] | None = None, axis: str = "y", dtype: str = "fp16",
             packed: bool = False, with_broadcast: bool = True) -> CostBreakdown:
    """MeshGEMV: local GEMV, then a K-tree allreduce along ``axis`` (blocking phases, as the authors')."""
    _, n, n_ax = _tiles(p_y, p_x, M, N, axis)
    red = ktree_allreduce(spec, n_ax, n, k, group_counts, dtype, packed, with_broadcast)
    return _gemv("meshgemv", spec, p_y, p_x, M, N, axis, dtype, red)


def gemv_pipeline(spec: HardwareSpec, p_y: int, p_x: int, M: int, N: int, axis: str = "y",
                  dtype: str = "fp16", packed: bool = False) -> CostBreakdown:
    """The Cerebras GEMV baseline: pipeline allreduce (chain to the end PE, broadcast back)."""
    _, n, n_ax = _tiles(p_y, p_x, M, N, axis)
    return _gemv("gemv_pipeline", spec, p_y, p_x, M, N, axis, dtype,
                 pipeline_allreduce(spec, n_ax, n, dtype, packed))


def gemv_ring(spec: HardwareSpec, p_y: int, p_x: int, M: int, N: int, axis: str = "y",
              dtype: str = "fp16", packed: bool = False) -> CostBreakdown:
    """GEMV with a ring allreduce (reduce-scatter + allgather), the GPU-pod baseline."""
    _, n, n_ax = _tiles(p_y, p_x, M, N, axis)
    return _gemv("gemv_ring", spec, p_y, p_x, M, N, axis, dtype,
                 ring_allreduce(spec, n_ax, n, dtype, packed), pad_to=n_ax if n_ax > 1 else 0)
