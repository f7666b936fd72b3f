"""Cycle costs of every instruction and fabric parameter, read from a ``HardwareSpec``.

One pure function per instruction kind. The simulator counts whole cycles, so spec parameters that
may be fractional are rounded to the nearest integer (halves up): α to at least 1 (a hop cannot be
free), ρ to at least 1 and split ``ρ_in = ⌊ρ/2⌋`` (CE → router) and ``ρ_out = ρ − ρ_in``
(router → CE), c_op, β, c_task and c_fn to at least 0.

Cost of a vector DSD op of n elements with effective SIMD width F: ``c_op + ⌈n/F⌉``
(hardware-and-csl.md §3.3), F = ``spec.simd_width(op, dtype)`` limited by the stride rule of §3.2
for every operand. A local GEMM or GEMV is a loop of such ops, so its cost follows from the program.
"""

from __future__ import annotations

import math

from plmr.errors import InputError
from plmr.hardware import HardwareSpec


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def hop_cycles(spec: HardwareSpec) -> int:
    """α per router hop, at least 1."""
    return max(1, _round(spec.hop_cycles))


def ramp_split(spec: HardwareSpec) -> tuple[int, int]:
    """(ρ_in, ρ_out): cycles from CE injection to the router, and from the router to the CE queue."""
    rho = max(1, _round(spec.ramp_cycles))
    return rho // 2, rho - rho // 2


def relay_cycles(spec: HardwareSpec) -> int:
    """β: extra per-wavelet latency of a software relay stage (``Relay``, ``RecvAddSend``)."""
    return max(0, _round(spec.relay_cycles))


def issue_cycles(spec: HardwareSpec) -> int:
    """c_op: fixed main-thread overhead of issuing one DSD op (compute or fabric)."""
    return max(0, _round(spec.op_issue_cycles))


def task_cycles(spec: HardwareSpec) -> int:
    """c_task: starting a task (the picker, prologue and epilogue), paid on every activation."""
    return max(0, _round(spec.task_cycles))


def scalar_cycles(spec: HardwareSpec) -> int:
    """A scalar or control statement (address arithmetic, loop step, branch, task op)."""
    return max(0, _round(spec.scalar_op_cycles))


def scalar_fn_cycles(spec: HardwareSpec) -> int:
    """c_fn per element of exp / rsqrt / SiLU, in whole cycles."""
    return max(0, _round(spec.scalar_fn_cycles))


TIMESTAMP_CYCLES = 1


def queue_depths(spec: HardwareSpec) -> tuple[int, int]:
    """(input, output) CE queue depth in wavelets used for every colour: the depth of queue 2, the
    first queue kernels use for data (WSE-2: 2 and 3 wavelets; hardware-and-csl.md §1.3)."""
    qi = min(2, len(spec.input_queue_words) - 1)
    qo = min(2, len(spec.output_queue_words) - 1)
    return (spec.input_queue_wavelets(qi),
            max(1, spec.output_queue_words[qo] * 16 // spec.wavelet_bits))


def stride_width(stride: int) -> int | None:
    """The SIMD limit a stride imposes (hardware-and-csl.md §3.2); None = no limit."""
    if stride in (0, 1) or stride % 8 in (2, 3, 5, 6):
        return None
    if stride % 8 in (1, 7, 4):
        return 2
    return 1


def width(spec: HardwareSpec, op: str, dtype: str, strides=(1,)) -> int:
    """Effective SIMD width: the builtin width capped by the stride limit of *every* operand (the
    narrowest wins; hardware-and-csl.md §3.2). ``strides``: one int or the operands' strides."""
    w = spec.simd_width(op, dtype)
    for s in (strides,) if isinstance(strides, int) else strides:
        lim = stride_width(s)
        if lim is not None:
            w = min(w, lim)
    return w


def vector_op(spec: HardwareSpec, op: str, dtype: str, n: int, strides=(1,)) -> int:
    """``c_op + ⌈n / F⌉``, F the effective width."""
    return issue_cycles(spec) + math.ceil(n / width(spec, op, dtype, strides))


def scalar_fn(spec: HardwareSpec, n: int) -> int:
    """exp / rsqrt / SiLU are not SIMD: ``c_op + n · c_fn``."""
    return issue_cycles(spec) + n * scalar_fn_cycles(spec)


def wavelets(n: int, packed: bool) -> int:
    """Wavelets needed for n values: one each, or two fp16 per wavelet when packed."""
    return (n + 1) // 2 if packed else n


def op_dtype(dtypes: list[str]) -> str:
    """The SIMD-table dtype of an op over these buffer dtypes: all fp16 → fp16, all fp32 → fp32,
    mixed → fp16_fp32."""
    s = set(dtypes)
    if s == {"fp16"}:
        return "fp16"
    if s == {"fp32"}:
        return "fp32"
    return "fp16_fp32"
