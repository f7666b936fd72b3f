"""The three PLMR primitives every formula is built from (waferllm-method.md §2.3), plus tile helpers.

- message of n elements over h hops with r software stages: c_op + ρ + h·α + r·β + ⌈n/e_w⌉
- vector op:      c_op + ⌈len/F(op, dtype)⌉
- scalar function: c_op + len·c_fn
"""

from __future__ import annotations

import math

from plmr.hardware import DTYPE_BYTES, HardwareSpec


def whole_cycles(v: float | None) -> int | None:
    """Integer cycles, halves up, as JSON output reports them (a formula may average over rows or
    steps; the simulator counts whole cycles). ``None`` stays ``None``."""
    return None if v is None else int(math.floor(float(v) + 0.5))


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


def t_join(spec: HardwareSpec, n_ops: int) -> float:
    """A join on ``n_ops`` async ops, written the CSL way (hardware-and-csl.md §3.5, the join idiom;
    ``simulator.joins``): n − 1 join tasks and the continuation task, n task activations of c_task
    each. A join on nothing costs nothing."""
    return n_ops * spec.task_cycles if n_ops > 0 else 0.0


def t_goto(spec: HardwareSpec) -> float:
    """Continuing in another state of the continuation task (``_state = k; @activate(_cont)``): one
    task activation. Code after a statement whose branches wait, when that code waits too, runs so."""
    return spec.task_cycles


#: memory ports a vector FMAC uses per cycle (two source reads, one destination write; §1.1)
FMAC_PORTS = (2, 1)
#: a fill writes its destination and reads nothing
FILL_PORTS = (0, 1)


def stalls(spec: HardwareSpec, op_ports: tuple[int, int], move_ports: tuple[int, int]) -> bool:
    """Whether a fabric move (a microthread's wavelet with ``move_ports`` = (reads, writes)) costs a
    main-thread DSD op that uses ``op_ports`` one cycle: the microthreads go first on the memory
    ports (2 reads + 1 write per cycle on the WSE, hardware-and-csl.md §1.1) and the op waits if what
    is left is not enough. A spec with ``memory_read_ports`` = 0 has no port contention."""
    if spec.memory_read_ports <= 0:
        return False
    return (op_ports[0] + move_ports[0] > spec.memory_read_ports
            or op_ports[1] + move_ports[1] > spec.memory_write_ports)


#: ports of one wavelet moved by each fabric op (the engine's accounting): a send reads its source,
#: a receive writes its destination, a receive-add or a store-and-forward relay does both
SEND_PORTS, RECV_PORTS, RECV_ADD_PORTS = (1, 0), (0, 1), (1, 1)


def union_length(intervals) -> float:
    """Cycles covered by a set of ``(start, end)`` intervals (moves of several microthreads in the
    same cycle cost a stalled op that cycle only once)."""
    total, reach = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= reach:
            continue
        total += b - max(a, reach)
        reach = b
    return total


def serial_streams(spec: HardwareSpec, starts_lengths) -> list[tuple[float, float]]:
    """The (start, end) intervals of streams that share one ramp direction, in priority order: a PE
    injects (and its router delivers to it) at most one wavelet per cycle, so a stream that is ready
    while an earlier one still moves waits for it (hardware-and-csl.md §2.2). A spec with
    ``ramp_wavelets_per_cycle`` = 0 lets them run side by side."""
    out, free = [], -math.inf
    for start, length in starts_lengths:
        if length <= 0:
            continue
        a = max(start, free) if spec.ramp_wavelets_per_cycle else start
        out.append((a, a + length))
        free = a + length
    return out
