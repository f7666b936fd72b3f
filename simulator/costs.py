"""Cycle costs of every instruction and fabric parameter, read from a ``HardwareSpec``.

One pure function per instruction kind. The simulator counts whole cycles, so spec parameters that
may be fractional are rounded to the nearest integer (halves up): α to at least 1 (a hop cannot be
free), ρ to at least 1 and split ``ρ_in = ⌊ρ/2⌋`` (CE → router) and ``ρ_out = ρ − ρ_in``
(router → CE), c_op, β, c_task and c_fn to at least 0.

Main-thread cost of a vector op of n elements with effective SIMD width F: ``c_op + ⌈n/F⌉``
(hardware-and-csl.md §3.3), F = ``spec.simd_width(op, dtype)`` limited by the stride rule of §3.2.
"""

from __future__ import annotations

import math

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import instructions as I


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


def wait_cycles(spec: HardwareSpec) -> int:
    """c_task: a satisfied ``Wait`` costs one task activation (the CSL join idiom)."""
    return max(0, _round(spec.task_cycles))


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


def width(spec: HardwareSpec, op: str, dtype: str, stride: int = 1) -> int:
    """Effective SIMD width: the builtin width capped by the stride limit."""
    w = spec.simd_width(op, dtype)
    lim = stride_width(stride)
    return w if lim is None else min(w, lim)


def vector_op(spec: HardwareSpec, op: str, dtype: str, n: int, stride: int = 1) -> int:
    """``c_op + ⌈n / F(op, dtype)⌉``."""
    return issue_cycles(spec) + math.ceil(n / width(spec, op, dtype, stride))


def scalar_fn(spec: HardwareSpec, n: int) -> int:
    """exp / rsqrt / SiLU are not SIMD: ``c_op + ⌈n · c_fn⌉``."""
    return issue_cycles(spec) + math.ceil(n * max(0.0, spec.scalar_fn_cycles))


def gemv(spec: HardwareSpec, m: int, n: int, layout: str, dtype: str) -> int:
    """Row layout: m FMACs of length n; col layout: n dot products of length m."""
    rows, vec = (m, n) if layout == "row" else (n, m)
    return rows * (issue_cycles(spec) + math.ceil(vec / spec.simd_width("fmac", dtype)))


def gemm(spec: HardwareSpec, m: int, k: int, n: int, layout: str, dtype: str) -> int:
    """Col layout: k·n FMACs of length m; row layout: m·k FMACs of length n."""
    ops, vec = (k * n, m) if layout == "col" else (m * k, n)
    return ops * (issue_cycles(spec) + math.ceil(vec / spec.simd_width("fmac", dtype)))


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


def instruction_cycles(spec: HardwareSpec, ins: I.Instruction, refs: tuple) -> int:
    """Main-thread cycles of one instruction. ``refs`` are its resolved slices
    ``(offset, length, stride, dtype)`` in field order (``MeshProgram.resolve``). Fabric ops return
    their issue cost only; their wavelets move on a microthread."""
    if isinstance(ins, I.FABRIC_INSTRUCTIONS):
        return issue_cycles(spec)
    if isinstance(ins, I.Wait):
        return wait_cycles(spec)
    if isinstance(ins, I.Timestamp):
        return TIMESTAMP_CYCLES
    if isinstance(ins, I.Gemv):
        return gemv(spec, ins.m, ins.n, ins.layout, _matrix_dtype(ins, refs))
    if isinstance(ins, I.Gemm):
        return gemm(spec, ins.m, ins.k, ins.n, ins.layout, _matrix_dtype(ins, refs))
    n = refs[0][1]
    stride = max(r[2] for r in refs)
    dts = [r[3] for r in refs]
    if isinstance(ins, (I.Exp, I.Rsqrt, I.Silu)):
        return scalar_fn(spec, n)
    if isinstance(ins, I.Add):
        return vector_op(spec, "add", op_dtype(dts), n, stride)
    if isinstance(ins, I.Mul):
        return vector_op(spec, "mul", op_dtype(dts), n, stride)
    if isinstance(ins, I.Max):
        return vector_op(spec, "max", op_dtype(dts), n, stride)
    if isinstance(ins, I.Scale):
        return vector_op(spec, "scale", op_dtype(dts), n, stride)
    if isinstance(ins, I.Copy):
        family = "mov" if dts[0] == dts[1] else "convert"
        return vector_op(spec, family, op_dtype(dts) if family == "mov" else "fp16", n, stride)
    if isinstance(ins, I.Fill):
        return vector_op(spec, "mov", dts[0], n, stride)
    raise InputError(f"no cost rule for instruction {type(ins).__name__}")


def acc_dtype(ins: I.Gemv | I.Gemm, refs: tuple) -> str:
    """Accumulate dtype: ``ins.acc`` or the output buffer's dtype."""
    return ins.acc or refs[0][3]


def _matrix_dtype(ins: I.Gemv | I.Gemm, refs: tuple) -> str:
    return op_dtype([refs[1][3], acc_dtype(ins, refs)])
