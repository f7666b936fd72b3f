"""Cycle costs of the bulk-synchronous baselines (``meshgemm/bsp.py``): the barrier-free kernels'
programs with a global fabric barrier after every step.

Two execution semantics (docs/BASELINES.md):

* **barrier-free** (``plmr.gemm``, ``plmr.gemv``): every PE joins only on its own transfers, as CSL
  tasks do; a long link's or a far broadcast's latency is paid once, not once per step.
* **bulk-synchronous** (this module): no PE starts step t+1 before every PE has finished step t.
  Each step then lasts as long as its slowest transfer (Cannon's P−1 hop wrap link, SUMMA's
  broadcast to the farthest PE) plus the barrier, which is what method §4.5's per-step formulas
  assume.

The barrier (``barrier``) is the program's own: a one-token chain allreduce along every row (one
chain into the last PE, then a multicast back), then the same along every column — a "sync" as
Cerebras' benchmarks run it (a reduction, then a broadcast start signal). Its cost is the two
allreduces' formulas (``plmr.collectives.pipeline_allreduce`` on one fp32 element), so it is
refitted with them. Every formula below is a sum over the program's steps of (the slowest
PE's step) + (the barrier); nothing is fitted here.
"""

from __future__ import annotations

import math

from plmr.breakdown import CostBreakdown
from plmr.collectives import chain_side_arrival, pipeline_allreduce
from plmr.gemm import gemm_footprint_bytes, local_gemm_cycles
from plmr.gemv import local_gemv_cycles
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_position
from plmr.primitives import ceil_div, dtype_bytes, t_vec

#: colours of the barrier: 2 per direction of the nearest-neighbour chains, per axis with more than one PE
BARRIER_COLOURS_PER_AXIS = 4


def barrier(spec: HardwareSpec, p_y: int, p_x: int) -> CostBreakdown:
    """The global barrier of a P_y × P_x program, from the moment the last PE enters it until the
    last PE leaves: a one-element fp32 chain allreduce (one chain into the last PE, multicast back)
    along x, then along y. A 1×1 program needs none."""
    tx = pipeline_allreduce(spec, p_x, 1, dtype="fp32")
    ty = pipeline_allreduce(spec, p_y, 1, dtype="fp32")
    t = tx.total_cycles + ty.total_cycles
    colours = BARRIER_COLOURS_PER_AXIS * (int(p_x > 1) + int(p_y > 1))
    return CostBreakdown(op="barrier", compute_cycles=0.0, comm_cycles=t, total_cycles=t,
                         bytes_per_pe=2 * 4 if t else 0, colors_per_pe=colours,
                         parts={"x": tx.total_cycles, "y": ty.total_cycles})


def barrier_lead(spec: HardwareSpec, n: int, p: int) -> float:
    """How much less PE ``p`` of a line of ``n`` delays the barrier than an end PE of the line
    when it enters last: (far − d)·(ρ + 2α + β), d its distance to the barrier's root n − 1 and
    far = n − 1 the first PE's. It left the previous barrier's multicast far − d hops (α each) earlier,
    and its token crosses far − d fewer chain links (ρ + α + β each). The ends have no lead, so
    whatever an end PE does in a step is on the critical path."""
    if n <= 1:
        return 0.0
    far = n - 1
    return (far - abs(p - (n - 1))) * (spec.ramp_cycles + 2 * spec.hop_cycles + spec.relay_cycles)


def exit_lead(spec: HardwareSpec, n: int, p: int) -> float:
    """How much earlier PE ``p`` of a line of ``n`` leaves a barrier than an end PE: (far − d)·α,
    the multicast hops it is nearer the root."""
    if n <= 1:
        return 0.0
    return (n - 1 - abs(p - (n - 1))) * spec.hop_cycles


def _skew_round(spec: HardwareSpec, Q: int, q_y: int, p_y: int, p_x: int, ring_pos, r: int,
                wave: float) -> float:
    """Critical path of skew round r up to the barrier: each physical row hosts virtual rows
    u = pos·q_y + j, each rotating min(u, Q − u) rounds (reverse by u, or forward by Q − u when
    shorter); with P_x ≥ 3 one reverse and one forward row share a wave, with P_x = 2 they take
    turns. A row's waves count against its barrier lead; an idle end row counts 0."""
    worst = 0.0
    for py in range(p_y):
        rev = fwd = 0
        for j in range(q_y):
            u = ring_pos(py) * q_y + j
            if u <= Q - u:
                rev += u >= r
            else:
                fwd += Q - u >= r
        waves = max(rev, fwd) if p_x >= 3 else rev + fwd
        if waves:
            worst = max(worst, waves * wave - barrier_lead(spec, p_y, py))
    return worst


def _cannon_family_bsp(op: str, spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int,
                       dtype: str, hops_x: int, hops_y: int, colours: int, packed: bool,
                       ring_pos) -> CostBreakdown:
    """The Cannon schedule of ``plmr.gemm._cannon_family`` with a barrier after every skew round
    and every shifting step. ``hops_x``/``hops_y``: the longest link of one shift, which joins two
    end PEs (Cannon's wrap) or is everywhere (the interleaved ring's 2 hops), so every step waits
    for it; ``ring_pos(py)``: the y-ring position of row py."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    m_v, n_v, k = ceil_div(M, Q), ceil_div(N, Q), ceil_div(K, Q)
    m, n = m_v * q_y, n_v * q_x
    comp = q_x * q_y * local_gemm_cycles(spec, m_v, k, n_v, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op, task = spec.op_issue_cycles, spec.task_cycles
    bar = barrier(spec, p_y, p_x).total_cycles
    comm_x, comm_y = p_x > 1, p_y > 1
    # skew: ⌊Q/2⌋ rounds, each its waves (receive + send issued, the stream, a join), then a barrier
    rounds = Q // 2 if comm_x else 0
    wave = 2 * c_op + spec.ramp_cycles + hops_x * spec.hop_cycles + math.ceil(m_v * k / e_w) + task
    if q_y == 1 and rounds:
        # one virtual row per PE row: round r costs wave − (least lead of a row still rotating)
        least = [math.inf] * (rounds + 2)
        for py in range(p_y):
            u = ring_pos(py)
            turns = min(u, Q - u)
            least[turns] = min(least[turns], barrier_lead(spec, p_y, py))
        for rnd in range(rounds - 1, 0, -1):
            least[rnd] = min(least[rnd], least[rnd + 1])
        align = sum(max(0.0, wave - least[rnd]) + bar for rnd in range(1, rounds + 1))
    else:
        align = sum(_skew_round(spec, Q, q_y, p_y, p_x, ring_pos, r, wave) + bar for r in range(1, rounds + 1))
    # steps: receives then sends issued, the products, the join once every stream has landed
    n_recv = int(comm_x) + int(comm_y)
    landings = []
    if comm_x:
        landings.append((n_recv + 1) * c_op + spec.ramp_cycles + hops_x * spec.hop_cycles
                        + math.ceil(m * k / e_w))
    if comm_y:
        landings.append((n_recv + 1 + int(comm_x)) * c_op + spec.ramp_cycles + hops_y * spec.hop_cycles
                        + math.ceil(k * n / e_w))
    shift = max(landings, default=0.0)
    step = task + max(2 * n_recv * c_op + comp, shift) + bar if n_recv else comp
    zero_c = t_vec(spec, m * n, "mov", dtype)
    total = align + zero_c + (Q - 1) * step + comp
    compute = zero_c + Q * comp
    barriers = rounds + (Q - 1 if n_recv else 0)
    footprint = ((q_x + 1) * m * k + (q_y + 1) * k * n + m * n) * dtype_bytes(dtype) if Q > 1 \
        else gemm_footprint_bytes(m, k, n, dtype)
    return CostBreakdown(op=op, compute_cycles=compute, comm_cycles=total - compute, total_cycles=total,
                         bytes_per_pe=footprint + (8 if barriers else 0),
                         colors_per_pe=colours + barrier(spec, p_y, p_x).colors_per_pe,
                         parts={"align": align, "steps": float(Q), "step_compute": comp, "step_shift": shift,
                                "barrier": bar, "barriers": float(barriers)})


def meshgemm_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
                 packed: bool = False) -> CostBreakdown:
    """MeshGEMM with a barrier after every step: every link is ≤ 2 hops, so a step waits for a
    2-hop shift plus the barrier."""
    hx = 2 if p_x >= 3 else 1
    hy = 2 if p_y >= 3 else 1
    colours = (3 if p_x >= 3 else (2 if p_x == 2 else 0)) + (3 if p_y >= 3 else (2 if p_y == 2 else 0))
    colours += 3 if p_x >= 3 else 0
    pos = (lambda py: ring_position(py, p_y)) if p_y > 1 else (lambda py: 0)
    return _cannon_family_bsp("meshgemm_bsp", spec, p_y, p_x, M, K, N, dtype, hx, hy, colours, packed, pos)


def cannon_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
               packed: bool = False) -> CostBreakdown:
    """Cannon on plain rings with a barrier after every step: every step (and skew round) waits
    for the P−1 hop wrap link, method §4.5's Cannon column."""
    hx = p_x - 1 if p_x >= 3 else 1
    hy = p_y - 1 if p_y >= 3 else 1
    colours = (3 if p_x > 1 else 0) + (3 if p_y > 1 else 0) + (3 if p_x > 1 else 0)
    return _cannon_family_bsp("cannon_bsp", spec, p_y, p_x, M, K, N, dtype, hx, hy, colours, packed,
                              lambda py: py)


def summa_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
              packed: bool = False) -> CostBreakdown:
    """SUMMA (relay broadcasts, next panel prefetched) with a barrier after every step: step t
    ends when panel t+1 has reached the farthest PE (up to P−1 relay stages from the owner), so
    every step pays the broadcast latency, method §4.5's ``c_sync + max(T_comp, T_bc)``.

    In the frame of the last PE to leave the barrier (an end PE), a step's critical path is the
    latest of, over the PEs: its fetch issues and product, less its barrier lead (an interior
    owner issues 4 ops per axis, a relay 2, an end PE 1); and the arrival of panel t+1 at the end
    farther from its owner, which started its sends ``exit_lead`` early."""
    S = math.lcm(p_y, p_x)
    q_x, q_y = S // p_x, S // p_y
    m, n, k = ceil_div(M, p_y), ceil_div(N, p_x), ceil_div(K, S)
    comp = local_gemm_cycles(spec, m, k, n, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op, task = spec.op_issue_cycles, spec.task_cycles
    bar = barrier(spec, p_y, p_x).total_cycles
    axes = int(p_x > 1) + int(p_y > 1)
    lines = [(p_x, q_x, math.ceil(m * k / e_w)), (p_y, q_y, math.ceil(k * n / e_w))]

    def ops(p: int, o: int, n_ax: int) -> int:
        """Fetch ops PE p issues for a panel owned by position o (``_bcast_code``)."""
        if p == o:
            return 2 if o in (0, n_ax - 1) else 4
        return 1 if p in (0, n_ax - 1) else 2

    def work(t: int, after_barrier: bool) -> float:
        """max over PEs of (fetch issues of panel t) − (barrier lead), per axis."""
        total = 0.0
        for n_ax, q, _ in lines:
            if n_ax > 1:
                o = t // q
                # the maximum is at the owner, an end, or the relay nearest an end (least lead)
                candidates = {o, 0, 1, 2, n_ax - 3, n_ax - 2, n_ax - 1} & set(range(n_ax))
                total += max(ops(p, o, n_ax) * c_op - (barrier_lead(spec, n_ax, p) if after_barrier else 0.0)
                             for p in candidates)
        return total

    def landing(t: int, after_barrier: bool) -> float:
        """When the farthest PE holds both halves of panel t."""
        land, offset = 0.0, 0.0
        for n_ax, q, panel in lines:
            if n_ax > 1:
                o = t // q
                far = max(o, n_ax - 1 - o)
                lead = exit_lead(spec, n_ax, o) if after_barrier else 0.0
                land = max(land, offset + 2 * c_op + chain_side_arrival(spec, [1] * far) + panel - lead)
                offset += 2 * c_op  # the B fetch is issued after the A fetch
        return land

    ingest = 2 * sum(panel for n_ax, _, panel in lines if n_ax > 1)  # a relay's ramp takes each panel twice
    if axes:
        first = max(work(0, False), landing(0, False), ingest) + task + bar
        steps = sum(max(work(t + 1, True) + comp, landing(t + 1, True), ingest) + task + bar
                    for t in range(S - 1))
    else:
        first, steps = 0.0, (S - 1) * comp
    zero_c = t_vec(spec, m * n, "mov", dtype)
    total = zero_c + first + steps + comp
    compute = S * comp
    footprint = 2 * gemm_footprint_bytes(m, k, n, dtype) - m * n * dtype_bytes(dtype)
    colours = (4 if p_x > 1 else 0) + (4 if p_y > 1 else 0) + barrier(spec, p_y, p_x).colors_per_pe
    return CostBreakdown(op="summa_bsp", compute_cycles=compute, comm_cycles=total - compute,
                         total_cycles=total, bytes_per_pe=footprint + (8 if axes else 0), colors_per_pe=colours,
                         parts={"steps": float(S), "step_compute": comp, "barrier": bar,
                                "barriers": float(S if axes else 0)})


def gemv_pipeline_bsp(spec: HardwareSpec, p_y: int, p_x: int, M: int, N: int, axis: str = "y",
                      dtype: str = "fp16", packed: bool = False) -> CostBreakdown:
    """The pipeline-allreduce GEMV with a barrier after each of its steps: local GEMV, barrier,
    chain into the end PE, barrier, broadcast back."""
    if axis == "y":
        m, n, n_ax = ceil_div(M, p_y), ceil_div(N, p_x), p_y
    else:
        m, n, n_ax = ceil_div(M, p_x), ceil_div(N, p_y), p_x
    local = local_gemv_cycles(spec, m, n, dtype)
    red = pipeline_allreduce(spec, n_ax, n, dtype, packed)
    bar = barrier(spec, p_y, p_x).total_cycles if n_ax > 1 else 0.0
    total = local + bar + red.total_cycles + bar
    colours = red.colors_per_pe + (barrier(spec, p_y, p_x).colors_per_pe if n_ax > 1 else 0)
    return CostBreakdown(op="gemv_pipeline_bsp", compute_cycles=local, comm_cycles=total - local,
                         total_cycles=total, bytes_per_pe=(m * n + m + 2 * n) * dtype_bytes(dtype)
                         + (8 if n_ax > 1 else 0), colors_per_pe=colours,
                         parts={"local": local, "barrier": bar, "barriers": 2.0 if n_ax > 1 else 0.0,
                                **{f"allreduce.{k}": v for k, v in red.parts.items()}})
