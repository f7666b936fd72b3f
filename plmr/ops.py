"""Cycle costs of the transformer's non-GEMM operators on a mesh (method §3.4, §3.6, §7, §8).

Element-wise ops need no communication under WaferLLM's layouts; RMSNorm and softmax reuse the
GEMV allreduce on scalars per row. ``rows`` is the number of independent vectors per PE (tokens in
prefill, 1 in decode); ``length`` the local elements per row.
"""

from __future__ import annotations

from plmr.breakdown import CostBreakdown, in_sequence
from plmr.collectives import ktree_allreduce, relay_allreduce
from plmr.hardware import HardwareSpec
from plmr.primitives import dtype_bytes, t_fn, t_vec


def _local(op: str, cycles: float, nbytes: int = 0) -> CostBreakdown:
    return CostBreakdown(op=op, compute_cycles=cycles, comm_cycles=0.0, total_cycles=cycles,
                         bytes_per_pe=nbytes)


def _acc_dtype(dtype: str) -> str:
    """Reductions of fp16 data accumulate in fp32 (HF computes the RMSNorm mean and softmax in fp32)."""
    return "fp16_fp32" if dtype == "fp16" else dtype


def elementwise(spec: HardwareSpec, length: int, op: str = "add", dtype: str = "fp16",
                rows: int = 1) -> CostBreakdown:
    """One SIMD op (add, mul, scale, mov, max) over ``rows`` vectors of ``length`` elements."""
    return _local(f"elementwise.{op}", rows * t_vec(spec, length, op, dtype),
                  rows * length * dtype_bytes(dtype))


def scalar_function(spec: HardwareSpec, length: int, rows: int = 1, name: str = "exp") -> CostBreakdown:
    """exp, rsqrt, sigmoid or divide: not SIMD, c_fn per element."""
    return _local(f"fn.{name}", t_fn(spec, rows * length))


def silu_mul(spec: HardwareSpec, length: int, dtype: str = "fp16", rows: int = 1) -> CostBreakdown:
    """SiLU(gate) ⊙ up: sigmoid per element, then two multiplies (gate·σ, ·up)."""
    local = t_fn(spec, rows * length) + 2 * rows * t_vec(spec, length, "mul", dtype)
    return _local("silu_mul", local, 2 * rows * length * dtype_bytes(dtype))


def rmsnorm(spec: HardwareSpec, n_ax: int, length: int, rows: int = 1, k: int = 2,
            group_counts: tuple[int, ...] | None = None, dtype: str = "fp16") -> CostBreakdown:
    """Local Σx² per row, allreduce of ``rows`` sums along the axis, rsqrt, scale, multiply by γ."""
    local = rows * t_vec(spec, length, "fmac", _acc_dtype(dtype))
    red = ktree_allreduce(spec, n_ax, rows, k, group_counts, "fp32" if dtype == "fp16" else dtype)
    finish = t_fn(spec, rows) + rows * (t_vec(spec, length, "scale", dtype) + t_vec(spec, length, "mul", dtype))
    return in_sequence("rmsnorm", [_local("rmsnorm.local", local + finish, (rows * length + length) * dtype_bytes(dtype)), red])


def softmax(spec: HardwareSpec, n_ax: int, length: int, rows: int = 1, k: int = 2,
            group_counts: tuple[int, ...] | None = None, dtype: str = "fp16") -> CostBreakdown:
    """Local max, allreduce max, exp(s - m), local sum, allreduce sum, scale by 1/sum."""
    acc = "fp32" if dtype == "fp16" else dtype
    local = (rows * t_vec(spec, length, "max", acc) + t_fn(spec, rows * length)
             + rows * t_vec(spec, length, "add", _acc_dtype(dtype)) + t_fn(spec, rows)
             + rows * t_vec(spec, length, "scale", acc))
    red_max = ktree_allreduce(spec, n_ax, rows, k, group_counts, acc)
    red_sum = ktree_allreduce(spec, n_ax, rows, k, group_counts, acc)
    return in_sequence("softmax", [_local("softmax.local", local, rows * length * dtype_bytes(acc)),
                                   red_max, red_sum])


def rope(spec: HardwareSpec, features: int, rows: int = 1, dtype: str = "fp16") -> CostBreakdown:
    """Rotate-half on locally co-located pairs (method §3.5): per half, two multiplies and an add
    for each output half: x'[i] = x[i]·cos − x[i+d/2]·sin and x'[i+d/2] = x[i+d/2]·cos + x[i]·sin."""
    half = (features + 1) // 2
    local = rows * (4 * t_vec(spec, half, "mul", dtype) + 2 * t_vec(spec, half, "add", dtype))
    return _local("rope", local, rows * features * dtype_bytes(dtype))


def token_rmsnorm(spec: HardwareSpec, n_ax: int, features: int, tiles: int, m: int, dtype: str = "fp16") -> CostBreakdown:
    """RMSNorm of token tiles as the prefill layer program runs it (``meshgemm.prefill_program``): per
    tile of ``m`` tokens, x² over the PE's ``features`` (into fp32), the token sums as features − 1 adds
    of m lanes; the tiles·m sums allreduced along the row on the x chains (``relay_allreduce``: a
    chain into the last column, then relayed back); scale, ε, rsqrt (a scalar function); per tile one
    multiply of m lanes per feature by the token factors, then × γ. In fp16 every op is one CSL builtin,
    so the tile is widened to fp32 (a convert) before the squares and before the factors, and the scaled
    tile narrowed back (a convert)."""
    acc = "fp32" if dtype == "fp16" else dtype
    n = features * m
    widen = t_vec(spec, n, "convert", "fp16") if dtype != acc else 0.0  # @fh2s / @fs2h, as the simulator
    T = tiles * m
    sums = tiles * (widen + t_vec(spec, n, "mul", acc) + t_vec(spec, m, "mov", acc)
                    + (features - 1) * t_vec(spec, m, "add", acc))
    red = relay_allreduce(spec, n_ax, T, acc)
    finish = (t_vec(spec, T, "scale", acc) + t_vec(spec, T, "add", acc) + t_fn(spec, T)
              + tiles * (2 * widen + features * t_vec(spec, m, "mul", acc) + t_vec(spec, n, "mul", dtype)))
    return in_sequence("rmsnorm", [_local("rmsnorm.local", sums + finish, 2 * T * features * dtype_bytes(dtype)),
                                   red])


def rope_chunks(spec: HardwareSpec, chunks: int, pairs: int, rows: int, dtype: str = "fp16") -> CostBreakdown:
    """Rotate-half on ``chunks`` head chunks (q heads and K groups of the column) of ``pairs`` pairs
    each, over ``rows`` tokens, as the prefill program writes it: per chunk four multiplies, two adds
    and a copy of pairs·rows elements (x1' = x1·cos − x2·sin, x2' = x2·cos + x1·sin)."""
    n = pairs * rows
    per = 4 * t_vec(spec, n, "mul", dtype) + 2 * t_vec(spec, n, "add", dtype) + t_vec(spec, n, "mov", dtype)
    return _local("rope", chunks * per, 2 * n * dtype_bytes(dtype))
