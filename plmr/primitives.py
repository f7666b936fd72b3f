"""The three PLMR primitives every formula is built from (waferllm-method.md §2.3), plus tile helpers.

- message of n elements over h hops with r software stages: c_op + ρ + h·α + r·β + ⌈n/e_w⌉
- vector op:      c_op + ⌈len/F(op, dtype)⌉
- scalar function: c_op + len·c_fn
"""

from __future__ import annotations

import math

from plmr.hardware import DTYPE_BYTES, HardwareSpec


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def balanced_split(total: int, parts: int) -> list[int]:
    """Sizes of ``parts`` balanced contiguous blocks: the first ``total % parts`` one longer."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def max_tile(total: int, parts: int) -> int:
    """Largest block of a balanced split: the per-PE size that sets the critical path."""
    return ceil_div(total, parts)


def dtype_bytes(dtype: str) -> int:
    return DTYPE_BYTES[dtype]


def t_msg(spec: HardwareSpec, n: int, hops: float, stages: float = 0, dtype: str = "fp16",
          packed: bool = False) -> float:
    """A pipelined stream of ``n`` elements over ``hops`` router hops with ``stages`` software relays.
    An empty message costs nothing (no op is issued)."""
    if n <= 0:
        return 0.0
    e_w = spec.elements_per_wavelet(dtype, packed)
    return (spec.op_issue_cycles + spec.ramp_cycles + hops * spec.hop_cycles
            + stages * spec.relay_cycles + math.ceil(n / e_w))


def t_vec(spec: HardwareSpec, length: int, op: str = "add", dtype: str = "fp16") -> float:
    """One vector DSD op over ``length`` elements (0 elements: not issued)."""
    if length <= 0:
        return 0.0
    return spec.op_issue_cycles + math.ceil(length / spec.simd_width(op, dtype))


def t_fn(spec: HardwareSpec, length: int) -> float:
    """A scalar function (exp, rsqrt, sigmoid, divide) applied element by element."""
    if length <= 0:
        return 0.0
    return spec.op_issue_cycles + length * spec.scalar_fn_cycles
