"""Cycle costs of the bulk-synchronous baselines (``meshgemm/bsp.py``): the barrier-free kernels'
programs with a global fabric barrier after every step.

Two execution semantics (docs/BASELINES.md):

* **barrier-free** (``plmr.gemm``, ``plmr.gemv``): every PE joins only on its own transfers, as CSL
  tasks do; a long link's or a far broadcast's latency is paid once, not once per step.
* **bulk-synchronous** (this module): no PE starts step t+1 before every PE has finished step t.
  Each step then lasts as long as its slowest transfer (Cannon's P−1 hop wrap link, SUMMA's
  broadcast to the farthest PE) plus the barrier, which is what method §4.5's per-step formulas
  assume.

The barrier (``barrier``) is the program's own: a one-token reduce up every row's
nearest-neighbour chain into its last PE, then up the last column, and a relay of the total back
down the last column, then down every row. Its links are those of a row allreduce followed by a
column allreduce, in another order, so it costs ``plmr.collectives.relay_allreduce`` on one fp32
element per axis and is refitted with the collectives. A PE at (x, y) leaves a barrier (x + y) chain links before
PE (0, 0), the last to leave, and may enter the next one (x + y) links after it without delaying it
(``barrier_lead``). Every formula below is a sum over the program's steps of (the slowest PE's step,
less its lead) + (the barrier); nothing is fitted here.
"""

from __future__ import annotations

import itertools
import math

from plmr.breakdown import CostBreakdown
from plmr.collectives import chain_side_arrival, pipeline_allreduce, relay_allreduce
from plmr.gemm import (
    _skew_row_cost, cannon_buffer_bytes, local_gemm_cycles, shift_step, summa_buffer_bytes, summa_step_issue,
)
from plmr.gemv import gemv_buffer_bytes, local_gemv_cycles
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_position
from plmr.primitives import ceil_div, serial_streams, t_goto, t_join, t_vec

#: colours of the barrier: 2 per direction of the nearest-neighbour chains, per axis with more than one PE
BARRIER_COLOURS_PER_AXIS = 4


def barrier(spec: HardwareSpec, p_y: int, p_x: int) -> CostBreakdown:
    """The global barrier of a P_y × P_x program, from the moment the last PE enters it until the
    last PE leaves: a one-element fp32 ``relay_allreduce`` along x, then along y. A 1×1 program
    needs none."""
    tx = relay_allreduce(spec, p_x, 1, dtype="fp32")
    ty = relay_allreduce(spec, p_y, 1, dtype="fp32")
    t = tx.total_cycles + ty.total_cycles
    colours = BARRIER_COLOURS_PER_AXIS * (int(p_x > 1) + int(p_y > 1))
    return CostBreakdown(op="barrier", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=4 if t else 0, colors_per_pe=colours,
                         parts={"x": tx.total_cycles, "y": ty.total_cycles})


def link_lead(spec: HardwareSpec) -> float:
    """One link of the barrier's chains: a token crosses it in ρ + α + β (through the ramps, one hop,
    one software stage)."""
    return spec.ramp_cycles + spec.hop_cycles + spec.relay_cycles


def barrier_lead(spec: HardwareSpec, n: int, p: int) -> float:
    """How much more work PE ``p`` of a line of ``n`` may do between two barriers than the line's
    first PE (p = 0) without delaying the second: 2·p links. It left the first barrier p links
    earlier (the relay back down reaches it first) and may enter the second p links later (the
    reduce's token reaches it p links after the first PE sends). The first PE has no lead, so
    whatever it does in a step is on the critical path."""
    if n <= 1:
        return 0.0
    return 2 * p * link_lead(spec)


def exit_lead(spec: HardwareSpec, n: int, p: int) -> float:
    """How much earlier PE ``p`` of a line of ``n`` leaves a barrier than the line's first PE: p links."""
    if n <= 1:
        return 0.0
    return p * link_lead(spec)


def _skew_segments(spec: HardwareSpec, Q: int, q_x: int, q_y: int, pos: int, comm_x: bool,
                   round_t: float, copy_t: float) -> list[float]:
    """A physical row's work before each of its skew barriers (one after every round's join): each
    round, plus what the row does before it that is not a round (a hosted row that does not move
    passes its loop's test through an activation; a moved row with several hosted rows is copied
    back to the canonical slots). Work after the last round goes before the next barrier."""
    segs, pre = [], 0.0
    la = q_x + 1 if comm_x else q_x
    for j in range(q_y):
        u = pos * q_y + j
        if not comm_x:
            pre += _skew_row_cost(spec, Q, q_x, 1, u, comm_x, round_t, copy_t)
            continue
        r, d = (u, u % la) if u <= Q - u else (Q - u, (u - Q) % la)
        if not r:
            pre += t_goto(spec)
        for _ in range(r):
            segs.append(pre + round_t)
            pre = 0.0
        if q_y > 1 and d:
            pre += 2 * la * copy_t
    return segs + [pre]


def _cannon_family_bsp(op: str, spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int,
                       dtype: str, sender_of, skew_hops: int, colours: int, packed: bool,
                       ring_pos) -> CostBreakdown:
    """The Cannon schedule of ``plmr.gemm._cannon_family`` with a barrier after every skew round's
    join and every shifting step's join. ``sender_of(p)``: the line position that sends to position 0
    in a shift on a line of p PEs (Cannon's wrap link from p − 1, the interleaved ring's neighbour 1);
    ``ring_pos(py)``: the y-ring position of row py.

    Skew barrier k: the slowest row's work before it (``_skew_segments``) less its lead (rows are
    the barrier's positions along y; every PE of a row does the same); every PE meets as many skew
    barriers as the row with the most rounds. Steps: every PE does the same work, so PE (0, 0),
    which has no lead, sets the pace: its step (``shift_step``) + the barrier."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    m_v, n_v, k = ceil_div(M, Q), ceil_div(N, Q), ceil_div(K, Q)
    m, n = m_v * q_y, n_v * q_x
    comp = q_x * q_y * local_gemm_cycles(spec, m_v, k, n_v, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op = spec.op_issue_cycles
    bar = barrier(spec, p_y, p_x).total_cycles
    comm_x, comm_y = p_x > 1, p_y > 1
    zero_c = t_vec(spec, m * n, "mov", dtype)
    # skew
    round_t = (2 * c_op + spec.ramp_cycles + skew_hops * spec.hop_cycles + math.ceil(m_v * k / e_w)
               + t_join(spec, 2))
    copy_t = t_vec(spec, m_v * k, "mov", dtype)
    segs = {py: _skew_segments(spec, Q, q_x, q_y, ring_pos(py), comm_x, round_t, copy_t) for py in range(p_y)}
    rounds = max(len(s) - 1 for s in segs.values())
    align = 0.0
    if p_x * p_y > 1:
        for b in range(rounds):  # a row out of rounds meets the barrier with no work (or its last copies)
            align += max((s[b] if b < len(s) else 0.0) - barrier_lead(spec, p_y, py) for py, s in segs.items()) + bar
        # the work after a row's last round runs before its next (skew or first step) barrier or step
        align += max(0.0, max(s[-1] - barrier_lead(spec, p_y, py) for py, s in segs.items() if len(s) - 1 == rounds))
    else:
        align = sum(sum(s) for s in segs.values())
    # steps
    # PE (0, 0) receives from the PE that sends to ring position 0 (``sender_of``), which left the
    # last barrier earlier by its exit lead
    moves, early = [], []
    for on, p, tile in ((comm_x, p_x, m * k), (comm_y, p_y, k * n)):
        if on:
            s = sender_of(p)
            moves.append((abs(s), math.ceil(tile / e_w)))
            early.append(exit_lead(spec, p, s))
    issues, stall, shift, step = shift_step(spec, comp, moves, early)
    n_recv = len(moves)
    step_bar = step + (bar if n_recv else 0.0)
    total = zero_c + align + (Q - 1) * step_bar + comp
    compute = zero_c + Q * comp
    barriers = rounds + (Q - 1 if n_recv else 0)
    footprint = cannon_buffer_bytes(p_y, p_x, M, K, N, dtype)
    return CostBreakdown(op=op, compute_cycles=compute, comm_cycles=total - compute, total_cycles=total,
                         bytes_per_pe=footprint + (4 if barriers else 0),
                         colors_per_pe=colours + barrier(spec, p_y, p_x).colors_per_pe,
                         parts={"align": align, "steps": float(Q), "step_compute": comp, "step_shift": shift,
                                "step_stall": stall, "step": step, "barrier": bar, "barriers": float(barriers)})


def meshgemm_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
                 packed: bool = False) -> CostBreakdown:
    """MeshGEMM with a barrier after every step: every link is ≤ 2 hops, so a step waits for a
    2-hop shift plus the barrier."""
    colours = (3 if p_x >= 3 else (2 if p_x == 2 else 0)) + (3 if p_y >= 3 else (2 if p_y == 2 else 0))
    colours += 3 if p_x >= 3 else 0
    pos = (lambda py: ring_position(py, p_y)) if p_y > 2 else (lambda py: py)
    return _cannon_family_bsp("meshgemm_bsp", spec, p_y, p_x, M, K, N, dtype, lambda p: 1,
                              2 if p_x >= 3 else 1, colours, packed, pos)


def cannon_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
               packed: bool = False) -> CostBreakdown:
    """Cannon on plain rings with a barrier after every step: every step (and skew round) waits
    for the P−1 hop wrap link, method §4.5's Cannon column."""
    colours = (3 if p_x > 1 else 0) + (3 if p_y > 1 else 0) + (3 if p_x > 1 else 0)
    return _cannon_family_bsp("cannon_bsp", spec, p_y, p_x, M, K, N, dtype, lambda p: p - 1, 1, colours,
                              packed, lambda py: py)


def _summa_pe_step(spec: HardwareSpec, lines: list, roles: tuple, comp: float, landings: list,
                   n_axes: int) -> float:
    """One bulk-synchronous SUMMA step of a PE, from its barrier exit: it issues its fetch ops (one
    per line as a relay; two sends and a copy as an interior owner, one send and a copy at a line's
    end) and multiplies; the product loses a cycle to every wavelet its microthreads move; it joins
    once its panels have landed (``landings``: when the last wavelet of each line's panel passes
    it, None as an owner)."""
    t, iv, stall = summa_step_issue(spec, lines, roles)
    done = max([t + (comp if comp else 0.0) + stall] + [b for _, b in iv] + [x for x in landings if x is not None])
    return done + t_join(spec, 2 * n_axes)


def summa_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
              packed: bool = False) -> CostBreakdown:
    """SUMMA (relay broadcasts, next panel prefetched) with a barrier after the first panel's fetch
    and after every step: step t ends when panel t+1 has reached the farthest PE (up to P−1 relay
    stages from the owner), so every step pays the broadcast latency, method §4.5's
    ``c_sync + max(T_comp, T_bc)``.

    In the frame of PE (0, 0), the last to leave a barrier, a step lasts the latest, over the PEs, of
    its own step (``_summa_pe_step``: its fetch ops and product, and the landing of its panels)
    started ``exit_lead`` early and less its ``barrier_lead``. The first fetch starts on every PE
    together, but its barrier still lets a PE enter its entry lead (``exit_lead``) late: the far
    corner's fetch is hidden under the reduce that reaches it. The owner of a line's panel sends up
    the line first, then down it (one ramp), so the PEs below it get the panel one stream later; each
    PE takes its two lines' panels through its one ramp."""
    S = math.lcm(p_y, p_x)
    q_x, q_y = S // p_x, S // p_y
    m, n, k = ceil_div(M, p_y), ceil_div(N, p_x), ceil_div(K, S)
    comp = local_gemm_cycles(spec, m, k, n, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op = spec.op_issue_cycles
    bar = barrier(spec, p_y, p_x).total_cycles
    lines = [(p, q, math.ceil(t / e_w), t_vec(spec, t, "mov", dtype))
             for p, q, t in ((p_x, q_x, m * k), (p_y, q_y, k * n)) if p > 1]
    n_axes = len(lines)
    zero_c = t_vec(spec, m * n, "mov", dtype)

    def roles_of(pos: tuple, owners: list) -> tuple:
        return tuple("relay" if i != o else ("owner" if 0 < o < p - 1 else "end_owner")
                     for (p, _, _, _), i, o in zip(lines, pos, owners))

    def left(pos: tuple, first: bool) -> float:
        """When the PE at ``pos`` left the last barrier, in PE (0, 0)'s frame (all start together
        before the first fetch)."""
        return 0.0 if first else -sum(exit_lead(spec, p, i) for (p, _, _, _), i in zip(lines, pos))

    def first_send(idx: int, roles: tuple) -> float:
        """When line ``idx``'s first send leaves an owner: its ops for the earlier lines, then the send."""
        t = 0.0
        for (_, _, _, copy_t), role in zip(lines[:idx], roles[:idx]):
            t += c_op if role == "relay" else (2 if role == "owner" else 1) * c_op + copy_t
        return t + c_op

    def step_cost(panel: int, first: bool) -> float:
        """Critical path of the step fetching ``panel``, in PE (0, 0)'s frame: over candidate PEs
        (each line's ends, the owner and its neighbours), when it is done less its entry slack."""
        owners = [panel // q for (_, q, _, _) in lines]
        cands = [sorted({0, 1, p - 2, p - 1, o - 1, o, o + 1} & set(range(p)))
                 for (p, _, _, _), o in zip(lines, owners)]
        worst = -math.inf
        for pos in itertools.product(*cands):
            start = left(pos, first)
            arrivals = []
            for idx, ((p, _, w, _), i, o) in enumerate(zip(lines, pos, owners)):
                if i == o:
                    continue
                src_pos = pos[:idx] + (o,) + pos[idx + 1:]  # the owner on this PE's line
                send_at = left(src_pos, first) + first_send(idx, roles_of(src_pos, owners))
                if i < o < p - 1:
                    send_at += w  # an interior owner sends up the line first, then down it
                arrivals.append((send_at + chain_side_arrival(spec, [1] * abs(i - o)) - c_op - start, w))
            landed = [b for _, b in serial_streams(spec, sorted(arrivals))]
            done = _summa_pe_step(spec, lines, roles_of(pos, owners), 0.0 if first else comp, landed, n_axes)
            # it may enter the barrier as many links later as the reduce takes to reach it (and, after the
            # first step, it left the last one that much earlier)
            slack = sum(exit_lead(spec, p, i) for (p, _, _, _), i in zip(lines, pos))
            worst = max(worst, start + done - slack)
        return worst

    if n_axes:
        first = step_cost(0, True) + bar
        steps = sum(step_cost(t + 1, False) + bar for t in range(S - 1))
    else:
        first, steps = 0.0, (S - 1) * comp
    total = zero_c + first + steps + comp
    compute = S * comp
    footprint = summa_buffer_bytes(p_y, p_x, M, K, N, dtype)
    colours = (4 if p_x > 1 else 0) + (4 if p_y > 1 else 0)  # the barrier runs on SUMMA's own chains
    return CostBreakdown(op="summa_bsp", compute_cycles=compute, comm_cycles=total - compute,
                         total_cycles=total, bytes_per_pe=footprint + (4 if n_axes else 0), colors_per_pe=colours,
                         parts={"steps": float(S), "step_compute": comp, "barrier": bar,
                                "barriers": float(S if n_axes else 0), "first_panel": first})


def gemv_pipeline_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, N: int, axis: str = "y",
                      dtype: str = "fp16", packed: bool = False) -> CostBreakdown:
    """The pipeline-allreduce GEMV with a barrier after each of its steps: local GEMV, barrier,
    chain into the end PE, barrier, broadcast back.

    Every PE starts the local GEMV together, so the first barrier follows it. The chain runs along
    the reduction axis from position 0 into the last PE, the barrier's own direction: a PE at
    position p left the barrier p links before the chain's first PE and may enter the next one p
    links after it, so the chain's latency is hidden and the step costs what the first PE does —
    issue its send and stream its partial (``c_op + ⌈n/e_w⌉``; the chain's other PEs finish no later,
    less their leads). After the second barrier the last PE multicasts the total; the first PE,
    which leaves last, takes it as soon as it has issued its receive (the multicast left
    (P − 1)·(ρ + α + β) earlier and needs only ρ + (P − 1)·α)."""
    if axis == "y":
        m, n, n_ax = ceil_div(M, p_y), ceil_div(N, p_x), p_y
    else:
        m, n, n_ax = ceil_div(M, p_x), ceil_div(N, p_y), p_x
    local = local_gemv_cycles(spec, m, n, dtype)
    red = pipeline_allreduce(spec, n_ax, n, dtype, packed)
    c_op = spec.op_issue_cycles
    n_w = math.ceil(n / spec.elements_per_wavelet(dtype, packed))
    if n_ax > 1:
        bar = barrier(spec, p_y, p_x).total_cycles
        # the reduce, in the frame of the chain's first PE (the last to leave the barrier): position p
        # has its part done when the stream has passed it, and may enter the next barrier p links late
        reduce = max(c_op + n_w, max(chain_side_arrival(spec, [1] * p) + n_w - exit_lead(spec, n_ax, p)
                                     for p in range(1, n_ax)))
        # the multicast from the last PE, which left the barrier (P − 1) links earlier; it streams once
        # the first PE has issued its receive
        far = n_ax - 1
        bcast = max(c_op, c_op + spec.ramp_cycles + far * spec.hop_cycles - exit_lead(spec, n_ax, far)) + n_w
        comm = spec.collective_cycles + bar + reduce + bar + bcast
    else:
        bar = reduce = bcast = 0.0
        comm = 0.0
    total = local + comm
    colours = red.colors_per_pe + (barrier(spec, p_y, p_x).colors_per_pe if n_ax > 1 else 0)
    return CostBreakdown(op="gemv_pipeline_bsp", compute_cycles=local, comm_cycles=comm,
                         total_cycles=total, bytes_per_pe=gemv_buffer_bytes(m, n, dtype) + (4 if n_ax > 1 else 0),
                         colors_per_pe=colours,
                         parts={"local": local, "barrier": bar, "barriers": 2.0 if n_ax > 1 else 0.0,
                                "reduce": reduce, "broadcast": bcast})
