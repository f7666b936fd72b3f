"""Cycle costs of distributed GEMM on a P_y × P_x mesh (waferllm-method.md §4.4-4.5, §5).

MeshGEMM runs Cannon on a virtual Q×Q mesh, Q = lcm(P_y, P_x) (§4.4): per virtual step each physical
PE does q_x·q_y tile products and sends q_y A-tiles along its x-ring and q_x B-tiles along its
y-ring, every ring link ≤ 2 hops. Cannon is the same schedule on plain rings (the wrap link spans
P-1 hops); SUMMA broadcasts panels from a moving root. Rotating operands are zero-padded to
⌈D/P⌉ tiles and costs are charged on padded sizes (§4.4).
"""

from __future__ import annotations

import functools
import math

from plmr.breakdown import CostBreakdown
from plmr.collectives import chain_side_arrival
from plmr.gemm_schedules import gemmt_schedule, summa_schedule
from plmr.hardware import HardwareSpec
from plmr.primitives import (
    FMAC_PORTS, RECV_ADD_PORTS, RECV_PORTS, SEND_PORTS, ceil_div, dtype_bytes, serial_streams, stalls, t_join,
    t_goto, t_vec, union_length,
)


def local_gemm_cycles(spec: HardwareSpec, m: int, k: int, n: int, dtype: str = "fp16") -> float:
    """C[m×n] += A[m×k]·B[k×n] on one PE as vector FMACs, looping so the vector runs along the
    longer of m and n (c_op is paid per op, method §4.3 [O])."""
    if min(m, k, n) <= 0:
        return 0.0
    width = spec.simd_width("fmac", dtype)
    along_m = k * n * (spec.op_issue_cycles + math.ceil(m / width))
    along_n = k * m * (spec.op_issue_cycles + math.ceil(n / width))
    return float(min(along_m, along_n))


def cannon_buffer_bytes(p_y: int, p_x: int, M: int, K: int, N: int, dtype: str, device_skew: bool = True) -> int:
    """The buffers of the MeshGEMM/Cannon PE program (meshgemm/gemm.py), on every PE alike: A holds
    q_x tiles and a spare slot per hosted row, B q_y tiles and a spare slot per hosted column, C the
    q_y·q_x output tiles; a device skew that renames slots within a PE (several hosted rows, or no
    x neighbour to rotate with) copies one row's A slots out and back through a scratch ``S``."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    m_v, n_v, k = ceil_div(M, Q), ceil_div(N, Q), ceil_div(K, Q)
    slots_a = q_x + 1 if p_x > 1 else q_x
    scratch = slots_a * m_v * k if device_skew and (q_y > 1 or p_x == 1) else 0
    return ((q_x + 1) * q_y * m_v * k + (q_y + 1) * q_x * k * n_v + q_y * q_x * m_v * n_v + scratch) \
        * dtype_bytes(dtype)


def summa_buffer_bytes(p_y: int, p_x: int, M: int, K: int, N: int, dtype: str) -> int:
    """The buffers of the SUMMA PE program (meshgemm/gemm_baselines.py): the A columns of the S/P_x
    K-panels it owns, the B rows of its S/P_y panels, C, and two panel buffers per axis with more
    than one PE (the panel in use and the next one arriving); S = lcm(P_y, P_x) panels of ⌈K/S⌉."""
    S = math.lcm(p_y, p_x)
    m, n, k = ceil_div(M, p_y), ceil_div(N, p_x), ceil_div(K, S)
    panels = (2 * m * k if p_x > 1 else 0) + (2 * k * n if p_y > 1 else 0)
    return (m * (S // p_x) * k + (S // p_y) * k * n + m * n + panels) * dtype_bytes(dtype)


def gemmt_buffer_bytes(p_y: int, p_x: int, M: int, K: int, N: int, dtype: str) -> int:
    """The buffers of the dist-GEMM-T PE program (meshgemm/gemmt.py) on its busiest PE: A, B double
    buffered when it rotates (P_y > 1), the C blocks of the rows whose root column it is (⌈P_y/P_x⌉
    on column 0) and the partial it streams into a chain (P_x > 1)."""
    m, n_b, k = ceil_div(M, p_y), ceil_div(N, p_y), ceil_div(K, p_x)
    b_bufs = 2 if p_y > 1 else 1
    partial = m * n_b if p_x > 1 else 0
    return (m * k + b_bufs * n_b * k + ceil_div(p_y, p_x) * m * n_b + partial) * dtype_bytes(dtype)


def shift_step(spec: HardwareSpec, comp: float, moves: list[tuple[float, int]],
               early: list[float] | None = None) -> tuple[float, float, float, float]:
    """One step of a shifting schedule (Cannon's, the B shift of dist-GEMM-T): ``moves`` lists, per
    moving operand, the hops of the link it arrives on and its wavelets. The main thread issues one
    receive per operand, then one send per operand (c_op each), then the product (``comp``), then
    joins the 2·len(moves) ops (one activation each).

    The sends share the ramp (the first issued first); each receive's wavelets come from a neighbour
    that runs the same schedule ``early[i]`` cycles before this PE (0: in lockstep), ρ + h·α behind
    its send, and share the router's delivery, from when the receive is issued. The product loses
    one cycle in every cycle in which one of them moves (``stalls``: the FMAC needs both read ports
    and the write port). Returns (issues, stalled cycles, when the last wavelet has moved, the step)."""
    c_op = spec.op_issue_cycles
    n = len(moves)
    if not n:
        return 0.0, 0.0, 0.0, comp
    early = early or [0.0] * n
    issues = 2 * n * c_op
    starts = [(n + i + 1) * c_op for i in range(n)]  # a send's stream starts when its issue ends
    send_iv = serial_streams(spec, [(s, w) for s, (_, w) in zip(starts, moves)])
    recv_iv = serial_streams(spec, [(max((i + 1) * c_op, a - e + spec.ramp_cycles + h * spec.hop_cycles), b - a)
                                    for i, ((a, b), (h, _), e) in enumerate(zip(send_iv, moves, early))])
    moving = [iv for ivs, st in ((send_iv, stalls(spec, FMAC_PORTS, SEND_PORTS)),
                                 (recv_iv, stalls(spec, FMAC_PORTS, RECV_PORTS))) if st for iv in ivs]
    stall = union_length([(max(a, issues), b) for a, b in moving if b > issues])
    shift = max(b for _, b in send_iv + recv_iv)
    step = max(issues + comp + stall, shift) + t_join(spec, 2 * n)
    return issues, stall, shift, step


def _skew_row_cost(spec: HardwareSpec, Q: int, q_x: int, q_y: int, pos: int, comm_x: bool, round_t: float,
                   copy_t: float) -> float:
    """The device skew of one physical row at y-ring position ``pos`` (meshgemm/gemm.py's skew loop):
    each hosted virtual row u = pos·q_y + j rotates min(u, Q − u) rounds (reverse by u, or forward by
    Q − u when shorter), one ``round_t`` each; a row that does not move still passes its loop's
    test through one task activation (the loop's body waits). With several hosted rows, a row left
    d ≠ 0 slots off the canonical slot map is copied out and back (2·LA copies of one tile). With one
    column (no x-communication) the row rotates locally by u: 2·LA copies unless u ≡ 0."""
    goto = t_goto(spec)
    if _countable(Q, round_t, copy_t, goto):
        return _skew_row_cost_counted(Q, q_y, pos, q_x + 1 if comm_x else q_x, comm_x, round_t, copy_t, goto)
    return _skew_row_cost_looped(spec, Q, q_x, q_y, pos, comm_x, round_t, copy_t)


def _skew_row_cost_looped(spec: HardwareSpec, Q: int, q_x: int, q_y: int, pos: int, comm_x: bool,
                          round_t: float, copy_t: float) -> float:
    """``_skew_row_cost`` hosted row by hosted row, as the kernel's skew loop runs."""
    la = q_x + 1 if comm_x else q_x
    total = 0.0
    for j in range(q_y):
        u = pos * q_y + j
        if comm_x:
            r, d = (u, u % la) if u <= Q - u else (Q - u, (u - Q) % la)
            total += r * round_t if r else t_goto(spec)
            if q_y > 1 and d:
                total += 2 * la * copy_t
        elif u % la:
            total += 2 * la * copy_t
    return total


def _countable(Q: int, round_t: float, copy_t: float, goto: float) -> bool:
    """Whole-number cycles small enough that every partial sum of the skew loop is exact."""
    return (float(round_t).is_integer() and float(copy_t).is_integer() and float(goto).is_integer()
            and Q * Q * (abs(round_t) + abs(copy_t) + abs(goto) + 1) < 2.0 ** 50)


def _multiples(lo, hi, m: int, res=0, top=max):
    """How many u in [lo, hi) have u ≡ res (mod m), for 0 ≤ lo and 0 ≤ res < m. Both quotients are of
    whole numbers ≥ 0 (the same under floor and truncating division), so the kernels can build the
    count as a run-time expression (``top``: ``simulator.expr``'s ``max_``); none when hi ≤ lo."""
    return top(0, (hi - 1 - res + m) // m - (lo - 1 - res + m) // m)


def _skew_row_cost_counted(Q: int, q_y: int, pos: int, la: int, comm_x: bool, round_t: float,
                           copy_t: float, goto: float) -> float:
    """``_skew_row_cost`` from counts instead of a loop over the hosted rows (u = pos·q_y + j for
    j < q_y): the rounds Σ min(u, Q − u) are two arithmetic series, the copies count the rows whose
    offset d is not 0 (residues mod LA). With whole-number cycles every partial sum of the loop is
    an exact integer, so this is the same number."""
    u0, u1 = pos * q_y, pos * q_y + q_y
    if not comm_x:
        return (q_y - _multiples(u0, u1, la)) * 2 * la * copy_t
    mid = max(u0, min(u1, Q // 2 + 1))  # u <= Q - u below mid (reverse by u), forward by Q - u above
    n_a, n_b = mid - u0, u1 - mid
    rounds = (u0 + mid - 1) * n_a // 2 + n_b * Q - (mid + u1 - 1) * n_b // 2
    still = 1 if u0 == 0 and n_a > 0 else 0  # u = 0 does not move: one task activation
    copies = 0
    if q_y > 1:
        copies = (n_a - _multiples(u0, mid, la)) + (n_b - _multiples(mid, u1, la, Q % la))
    return rounds * round_t + still * goto + copies * 2 * la * copy_t


def _skew_cycles(spec: HardwareSpec, Q: int, p_y: int, q_x: int, q_y: int, comm_x: bool, round_t: float,
                 copy_t: float) -> float:
    """The slowest physical row's skew. Rows sit at every y-ring position 0..P_y−1 (MeshGEMM's
    interleaved ring permutes them, which does not change the maximum); a row's rounds peak around
    u = Q/2, so on large meshes only the positions there and at the ends are evaluated."""
    if Q <= 1:
        return 0.0
    if p_y <= 64:
        cands = range(p_y)
    else:
        mid = (Q // 2) // q_y
        cands = sorted({0, 1, p_y - 1} | {p for p in range(mid - 2, mid + 3) if 0 <= p < p_y})
    goto = t_goto(spec)
    if _countable(Q, round_t, copy_t, goto):
        la = q_x + 1 if comm_x else q_x
        return max(_skew_row_cost_counted(Q, q_y, p, la, comm_x, round_t, copy_t, goto) for p in cands)
    return max(_skew_row_cost_looped(spec, Q, q_x, q_y, p, comm_x, round_t, copy_t) for p in cands)


def row_skew_rounds(Q, q_y, pos, lo=min, hi=max):
    """Rounds the device skew rotates the physical row at y-ring position ``pos``: Σ min(u, Q − u)
    over its hosted rows u = pos·q_y + j, j < q_y, as two arithmetic series (rows below Q/2 + 1
    rotate u rounds, the others Q − u; ``_skew_row_cost_counted``). Whole numbers here; the kernel
    builds the same sum as a run-time expression (``meshgemm.gemm``: its parameters and
    ``simulator.expr``'s ``min_``/``max_`` as ``lo``/``hi``)."""
    u0 = pos * q_y
    u1 = u0 + q_y
    mid = hi(u0, lo(u1, Q // 2 + 1))
    n_a, n_b = mid - u0, u1 - mid
    return (u0 + mid - 1) * n_a // 2 + n_b * Q - (mid + u1 - 1) * n_b // 2


def most_skew_rounds(Q: int, p_y: int, q_y: int) -> int:
    """The most rounds any physical row's skew takes (rows sit at every y-ring position; the total
    peaks where the hosted rows straddle Q/2, so large meshes evaluate only the positions there)."""
    if p_y <= 64:
        cands = range(p_y)
    else:
        mid = (Q // 2) // q_y
        cands = [p for p in range(mid - 2, mid + 3) if 0 <= p < p_y]
    return max(row_skew_rounds(Q, q_y, p) for p in cands)


def row_skew_copies(Q, q_x: int, q_y: int, pos, comm_x: bool, lo=min, hi=max):
    """Hosted rows the skew copies back to the canonical slot map on the physical row at y-ring
    position ``pos`` (2·LA tile copies each): with several hosted rows, those left d ≠ 0 slots off
    (reverse by u: d = u mod LA, forward by Q − u: d = (u − Q) mod LA); with one column (the row
    rotates locally), those with u mod q_x ≠ 0 (``_skew_row_cost_counted``). Whole numbers here; the
    prefill chains build the same count as a run-time expression (``meshgemm.prefill_gemm``: ``Q``
    and ``pos`` expressions, ``simulator.expr``'s ``min_``/``max_`` as ``lo``/``hi``)."""
    u0, u1 = pos * q_y, pos * q_y + q_y
    if not comm_x:
        return q_y - _multiples(u0, u1, q_x, 0, hi)
    if q_y <= 1:
        return 0
    la = q_x + 1
    mid = hi(u0, lo(u1, Q // 2 + 1))
    return (mid - u0 - _multiples(u0, mid, la, 0, hi)) + (u1 - mid - _multiples(mid, u1, la, Q % la, hi))


def most_skew_copies(Q: int, p_y: int, q_x: int, q_y: int, comm_x: bool) -> int:
    """The most hosted rows any physical row's skew copies back (``row_skew_copies``)."""
    return max(row_skew_copies(Q, q_x, q_y, p, comm_x) for p in range(p_y))


def balanced_skew_cycles(spec: HardwareSpec, Q: int, p_y: int, q_x: int, q_y: int, comm_x: bool,
                         round_t: float, copy_t: float) -> float:
    """The device skew with ``balance_skew`` (meshgemm/gemm.py, more than one physical row), the same
    on every physical row: as many rounds as the row that rotates most (``most_skew_rounds``; the
    rounds a row adds move a tile into its spare slot and nothing else, and its first hosted row
    takes them, so the row with u = 0 joins too and passes no loop test through a task activation),
    and with several hosted rows, or one column (the row rotates locally), as many copies back to the
    canonical slot map as the row that makes most (``most_skew_copies``; the ones a row adds copy
    tiles out and back in place), 2·LA tile copies each."""
    la = q_x + 1 if comm_x else q_x
    copies = most_skew_copies(Q, p_y, q_x, q_y, comm_x) * 2 * la * copy_t if (q_y > 1 or not comm_x) else 0.0
    if not comm_x:
        return copies
    return most_skew_rounds(Q, p_y, q_y) * round_t + copies


def ring_phase_iters(n: int, pos, hop: int, unit: int):
    """Delay units (``unit`` cycles each) that put position ``pos`` of an n-PE plain ring at the
    phase of its steady state (Cannon's steps, ``cannon_start_delay``): the ring's P links add up to
    2(n − 1) hops, so a lap of steps is paced by the mean link, every PE's step taking
    λ = (lockstep one-hop step) + ε, ε = α·(n − 2)/n, and each PE running ε behind its
    predecessor: position p starts (n − 1 − p)·ε after position n − 1 (the wrap into position 0
    is then exactly as late as the one-hop links). Rounded to the nearest unit. ``pos`` may be a
    number or a run-time expression (the kernel's delay, ``meshgemm.gemm``)."""
    if isinstance(n, int) and n <= 2:
        return 0
    return (2 * (n - 1 - pos) * (n - 2) * hop + n * unit) // (2 * n * unit)


def skew_wrap_crossings(n: int, rounds: int, pos, reverse: bool):
    """How many times the latest path of ``rounds`` skew rounds into position ``pos`` of an n-PE
    plain ring crosses the wrap link (each crossing makes the round (n − 2)·α later than over the
    one-hop links): reverse rounds (data p + 1 → p, the wrap 0 → n − 1) cross it ⌊(pos + R)/n⌋
    times, forward rounds (p − 1 → p, the wrap n − 1 → 0) ⌊(n + R − 1 − pos)/n⌋ times."""
    if reverse:
        return (pos + rounds) // n
    return (n + rounds - 1 - pos) // n


def cannon_start_delay(n_x, n_y, hop: int, unit: int, rounds, lag_per_wrap, pos_x, pos_y, reverse, sel,
                       skewed: bool = True):
    """Delay units PE (pos_x, pos_y) waits before Cannon's shifting steps (``meshgemm.gemm``): the
    phases of both rings' steady state (``ring_phase_iters``), plus what makes up for its row's
    skew, which leaves it ``lag_per_wrap`` cycles late per wrap crossing
    (``skew_wrap_crossings``; ``rounds`` = 0 when the skew does not apply): every PE then enters
    the steps ``lag_per_wrap``·(most crossings) + its ring phase after the rows' common skew end.
    ``reverse``: whether the row's rounds run on the reverse ring. Numbers, or the kernel's
    expressions of its parameters (``sel`` = ``simulator.expr.select``; ``skewed`` says whether the
    skew term applies)."""
    d = ring_phase_iters(n_x, pos_x, hop, unit) + ring_phase_iters(n_y, pos_y, hop, unit)
    if skewed and not (isinstance(rounds, int) and rounds == 0):
        most = (n_x - 1 + rounds) // n_x
        w = sel(reverse, skew_wrap_crossings(n_x, rounds, pos_x, True),
                skew_wrap_crossings(n_x, rounds, pos_x, False))
        d = d + (2 * (most - w) * lag_per_wrap + unit) // (2 * unit)
    return d


def cannon_phase_cycles(spec: HardwareSpec, p_y: int, p_x: int, rounds: int, rows_reverse: list[bool],
                        dtype: str) -> float:
    """The latest PE's entry into Cannon's steps after the rows' common skew end (lockstep): its
    skew lag plus its delay (``cannon_start_delay``), maximised over the mesh in O(P) (the delay is
    a sum of a column part, a row part and a part set by the column and the row's direction)."""
    hop, unit = phase_units(spec, dtype)
    lag = max(p_x - 2, 0) * hop if rounds else 0
    best = -math.inf
    for rev in sorted(set(rows_reverse)):
        row = max(ring_phase_iters(p_y, y, hop, unit) for y, r in enumerate(rows_reverse) if r == rev)
        cols = max(skew_wrap_crossings(p_x, rounds, x, rev) * lag
                   + unit * (cannon_start_delay(p_x, 1, hop, unit, rounds, lag, x, 0, rev, _pick, lag > 0))
                   for x in range(p_x)) if p_x > 1 else 0
        best = max(best, cols + unit * row)
    return float(best)


def _pick(cond, a, b):
    """``select`` for numbers: a if cond else b."""
    return a if cond else b


def phase_units(spec: HardwareSpec, dtype: str) -> tuple[int, int]:
    """(α, the delay unit) in whole cycles: the delay is a loop of one-element fills of C, each
    ``t_vec(1, "mov")`` cycles (c_op + 1 on WSE-2; the loop's scalar rows are folded into c_op, as
    everywhere: ``scalar_op_cycles``)."""
    return max(int(round(spec.hop_cycles)), 0), max(int(round(t_vec(spec, 1, "mov", dtype))), 1)


def _cannon_family(op: str, spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int,
                   dtype: str, ring_hops_x: float, ring_hops_y: float, skew_hops: int, colors: int,
                   packed: bool, skew_wrap_excess: int = 0, a_skew: str = "device",
                   balance_skew: bool = True, phased: bool = False) -> CostBreakdown:
    """Cannon's schedule as the kernel runs it (meshgemm/gemm.py), term by term:

    * **zero C**: one fill of the C block (a ``mov`` of m·n);
    * **skew** of A: a round issues a receive and a send (c_op each), the tile streams
      ρ + h·α + ⌈tile/e_w⌉ and the join on the two ops costs two task activations; every physical
      row takes the most rounds and copies any row needs (``balanced_skew_cycles``; with
      ``balance_skew=False`` the slowest row's own, ``_skew_row_cost``); no barrier separates the
      rounds, so Cannon's wrap link adds its excess latency once;
    * **Q − 1 shifting steps**: the main thread issues the receives, then the sends (c_op each), then
      the q_x·q_y products (``local_gemm_cycles``), then joins the 2 or 4 ops (one activation each);
    * while it multiplies, every wavelet a microthread moves takes the memory ports the FMAC needs:
      the product loses one cycle per cycle in which a send or a receive moves (``stalls``). The
      sends share one ramp (A, then B), the receives' wavelets come from the neighbours, which run
      the same schedule (every PE in lockstep), ρ + h·α behind; the product runs from the last issue,
      so it pays the union of those move cycles after it (``union_length``);
    * **the last step** multiplies only (no shift, no join).

    The steps are charged in lockstep, every PE starting each step at the same cycle. That is the
    program's run when every PE enters the steps together: with A pre-skewed on the host
    (``a_skew="host"``), and with the balanced skew the kernel ships (``balance_skew``: every
    physical row takes as many rounds and copies as the row that rotates most,
    ``balanced_skew_cycles``), MeshGEMM within 0.01% of the simulated cycles at 8²-64², tiles 16-48,
    and on non-square meshes. Cannon (``phased``) is charged its steps' steady state instead: its
    plain rings pace a step by their mean link, each PE a phase behind its predecessor, and the
    program starts every PE at that phase (``cannon_start_delay``), so the run is the latest PE's
    entry (``cannon_phase_cycles``) plus the steps at the mean link (within 0.03% at 8²-64², tiles
    8-48). With the method's skew as written
    (``balance_skew=False``) the rows leave the skew up to ⌊Q/2⌋ rounds apart; a receiver that has
    not issued its receive yet then holds its sender back once the link's buffering is in flight,
    the two stop moving their wavelets in the same cycles and the products lose more of them, and
    the steps never return to lockstep: the formula then under-predicts by 2-4%, growing with the
    mesh (docs/BENCHMARKS.md, § Why MeshGEMM's and Cannon's residual grew with the mesh)."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    m_v, n_v, k = ceil_div(M, Q), ceil_div(N, Q), ceil_div(K, Q)
    m, n = m_v * q_y, n_v * q_x  # per-PE C block (padded)
    comp = q_x * q_y * local_gemm_cycles(spec, m_v, k, n_v, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op = spec.op_issue_cycles
    comm_x, comm_y = p_x > 1, p_y > 1
    zero_c = t_vec(spec, m * n, "mov", dtype)

    # skew
    round_t = (2 * c_op + spec.ramp_cycles + skew_hops * spec.hop_cycles + math.ceil(m_v * k / e_w)
               + t_join(spec, 2))
    align = 0.0
    if a_skew == "device":
        copy_t = t_vec(spec, m_v * k, "mov", dtype)
        if balance_skew and p_y > 1:  # one physical row has nothing to balance against
            align = balanced_skew_cycles(spec, Q, p_y, q_x, q_y, comm_x, round_t, copy_t)
        else:
            align = _skew_cycles(spec, Q, p_y, q_x, q_y, comm_x, round_t, copy_t)
    # Cannon: every PE enters the steps at its ring phase (cannon_start_delay); with one hosted
    # row per PE the delay also makes up the skew's wrap lag, which the phase term then carries
    rounds = 0
    if phased and a_skew == "device" and balance_skew and p_y > 1 and comm_x and q_y == 1:
        rounds = most_skew_rounds(Q, p_y, q_y)
    if a_skew == "device" and comm_x and not rounds:
        align += skew_wrap_excess * spec.hop_cycles
    phase = 0.0
    if phased:
        phase = cannon_phase_cycles(spec, p_y, p_x, rounds,
                                    [y * q_y <= Q - y * q_y for y in range(p_y)], dtype)

    moves = [(hops, math.ceil(tile / e_w)) for on, hops, tile in
             ((comm_x, ring_hops_x, m * k), (comm_y, ring_hops_y, k * n)) if on]
    issues, stall, shift, step = shift_step(spec, comp, moves)
    total = zero_c + align + phase + (Q - 1) * step + comp
    compute = zero_c + Q * comp
    footprint = cannon_buffer_bytes(p_y, p_x, M, K, N, dtype, a_skew == "device")
    return CostBreakdown(op=op, compute_cycles=compute, comm_cycles=total - compute, total_cycles=total,
                         bytes_per_pe=footprint, colors_per_pe=colors,
                         parts={"align": align, "steps": float(Q), "step_compute": comp,
                                "step_shift": shift, "step_issue": issues,
                                "step_stall": stall, "step": step, "zero_c": zero_c,
                                "phase": phase})


def meshgemm(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
             packed: bool = False, a_skew: str = "device", balance_skew: bool = True) -> CostBreakdown:
    """MeshGEMM: interleaved-ring Cannon (every link ≤ 2 hops); A skewed on the device the shorter way
    round (``a_skew="host"``: pre-skewed like B, no skew), B pre-skewed on the host; 9 colours (6
    compute rings + reverse skew ring)."""
    ring_hops_x = 2 if p_x >= 3 else 1
    ring_hops_y = 2 if p_y >= 3 else 1
    colors = (3 if p_x >= 3 else (2 if p_x == 2 else 0)) + (3 if p_y >= 3 else (2 if p_y == 2 else 0))
    colors += 3 if p_x >= 3 else 0
    return _cannon_family("meshgemm", spec, p_y, p_x, M, K, N, dtype, ring_hops_x, ring_hops_y,
                          ring_hops_x, colors, packed, a_skew=a_skew, balance_skew=balance_skew)


def cannon(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
           packed: bool = False, a_skew: str = "device", balance_skew: bool = True) -> CostBreakdown:
    """Cannon on plain rings, as the kernel runs it: no barrier separates the steps, so a PE waits
    only for its own incoming tiles. Around a ring the P links add up to 2(P-1) hops (P-1 one-hop
    links and the P-1 hop wrap), so the steps' steady state (the max-plus period of the ring: the
    cycle through every PE, P tokens) pays the mean link, 2(P-1)/P hops, a step, each PE running
    α(P − 2)/P behind its predecessor (method §4.5 charges the wrap every step, which holds only for
    bulk-synchronous steps). Entered in lockstep the wrap's lag ran ahead as a wave that, once it
    exceeded a one-hop link's buffering, never settled; the kernel therefore starts each PE at its
    phase, making up the lag its row's skew left it, and the rule charges the latest PE's entry
    (``cannon_phase_cycles``, about 3(P − 2)·α). 3 colours per axis plus 3 for the skew ring."""
    colors = (3 if p_x > 1 else 0) + (3 if p_y > 1 else 0) + (3 if p_x > 1 else 0)  # + skew ring
    avg_x = 2 * (p_x - 1) / p_x if p_x > 1 else 1
    avg_y = 2 * (p_y - 1) / p_y if p_y > 1 else 1
    return _cannon_family("cannon", spec, p_y, p_x, M, K, N, dtype, avg_x, avg_y, 1, colors, packed,
                          skew_wrap_excess=max(p_x - 2, 0), a_skew=a_skew, balance_skew=balance_skew,
                          phased=True)


def summa_step_issue(spec: HardwareSpec, lines: list, roles: tuple) -> tuple[float, list, float]:
    """The start of a bulk-synchronous SUMMA step on a PE (``plmr.bsp``) whose role on each line is
    ``roles[i]``: "relay" (a ``RelayStore``, or a ``Recv`` at a line's end: one op, the panel's
    wavelets pass through it during the product), "owner" (an interior owner: two sends, both ways,
    then a copy of its panel) or "end_owner" (one send and the copy). Ops are issued line by line
    (x first); an owner's sends start as soon as they are issued and share the ramp. Returns (cycles
    to issue its ops, its sends' stream intervals, the cycles its product loses to the wavelets its
    microthreads move)."""
    c_op = spec.op_issue_cycles
    t, sends, relayed = 0.0, [], 0.0
    for (_, _, w, copy_t), role in zip(lines, roles):
        if role == "relay":
            t += c_op
            relayed += w
            continue
        for _ in range(2 if role == "owner" else 1):
            t += c_op
            sends.append((t, w))
        t += copy_t
    iv = serial_streams(spec, sends)
    stall = 0.0
    if stalls(spec, FMAC_PORTS, SEND_PORTS):
        stall += union_length([(max(a, t), b) for a, b in iv if b > t])
    if stalls(spec, FMAC_PORTS, RECV_ADD_PORTS):
        stall += relayed
    return t, iv, stall


def summa(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
          packed: bool = False) -> CostBreakdown:
    """SUMMA with store-and-forward relay broadcasts (method §4.5 variant (i), the paper's
    baseline), as the kernel runs it (meshgemm/gemm_baselines.py): the owner of K-panel t sends it
    both ways along its row (A) and column (B) and copies it; every PE on the way relays it in
    software (``RelayStore``: ρ + β per PE, α per hop), keeping it; panel t+1 is fetched while panel
    t is multiplied, and each step joins on its two ops per line (one task activation each).

    No barrier separates the steps, but a relay forwards only from its own step's start, so a PE
    late by its column's chain delays its row's chain in the next step, and the owner moves along
    each line: the critical path runs through both lines' chains at several steps (at small tiles
    about 2(P − 1) relay stages per line, not the farthest chain once). The run is evaluated step by
    step for every PE (``plmr.gemm_schedules.summa_schedule``)."""
    S = math.lcm(p_y, p_x)
    m, n, k = ceil_div(M, p_y), ceil_div(N, p_x), ceil_div(K, S)
    comp = local_gemm_cycles(spec, m, k, n, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    zero_c = t_vec(spec, m * n, "mov", dtype)
    total, parts = summa_schedule(spec, p_y, p_x, m, k, n, comp, zero_c, t_vec(spec, m * k, "mov", dtype),
                                  t_vec(spec, k * n, "mov", dtype), math.ceil(m * k / e_w), math.ceil(k * n / e_w))
    compute = zero_c + S * comp
    footprint = summa_buffer_bytes(p_y, p_x, M, K, N, dtype)
    colors = (4 if p_x > 1 else 0) + (4 if p_y > 1 else 0)  # two directions, two alternating colours
    return CostBreakdown(op="summa", compute_cycles=compute, comm_cycles=total - compute,
                         total_cycles=total, bytes_per_pe=footprint, colors_per_pe=colors,
                         parts={"steps": float(S), "step_compute": comp, "zero_c": zero_c, **parts})


def gemmt(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
          packed: bool = False) -> CostBreakdown:
    """dist-GEMM-T, C[M×N] = A[M×K]·B[N×K]ᵀ with A and B both rows-on-y, features-on-x (§5), as
    the kernel runs it (meshgemm/gemmt.py).

    P_y steps; in step t row r's partials reduce into root column j_t mod P_x, j_t running over the
    whole y-ring, so every row meets each root position of {j mod P_x : j < P_y} once. A step:

    * every PE issues the B shift (receive + send, c_op each; not in the last step);
    * a member zero-fills its partial (m×n_b), multiplies (the B shift's wavelets stall the product,
      as in ``meshgemm``), issues its chain op (a send at a row's end, else receive-add-forward) and
      streams its partial; it joins its 3 ops (1 in the last step);
    * the root multiplies straight into its C block, issues one receive-add per side and takes both
      sides' streams through its one ramp; it joins its 4 ops (2 in the last step).

    No barrier separates the steps, but a chain stage forwards only once its PE has multiplied in
    its own step, and the root moves from step to step: a PE late in one step's chain starts the next
    late, and the B shift carries a row's lateness to the next row on the ring. The run is evaluated
    step by step for every PE (``plmr.gemm_schedules.gemmt_schedule``)."""
    m, n_b, k = ceil_div(M, p_y), ceil_div(N, p_y), ceil_div(K, p_x)
    comp = local_gemm_cycles(spec, m, k, n_b, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    t_c = math.ceil(m * n_b / e_w)
    fill = t_vec(spec, m * n_b, "mov", dtype)
    w_b = math.ceil(n_b * k / e_w) if p_y > 1 else 0
    total = gemmt_schedule(spec, p_y, p_x, comp, fill, t_c, w_b)
    compute = p_y * (comp + (fill if p_x > 1 else 0.0))
    positions = [j % p_x for j in range(p_y)]
    far = max(max(r, p_x - 1 - r) for r in positions) if p_x > 1 else 0
    reduce = chain_side_arrival(spec, [1] * far) - spec.op_issue_cycles if far else 0.0
    footprint = gemmt_buffer_bytes(p_y, p_x, M, K, N, dtype)
    colors = (4 if p_x > 1 else 0) + (3 if p_y >= 3 else (2 if p_y == 2 else 0))
    return CostBreakdown(op="gemmt", compute_cycles=compute, comm_cycles=max(total - compute, 0.0),
                         total_cycles=total, bytes_per_pe=footprint, colors_per_pe=colors,
                         parts={"steps": float(p_y), "step_compute": comp, "farthest_chain": reduce})


def mixed_dtype(dtype: str, acc: str) -> str:
    """The SIMD-table dtype of an op between a ``dtype`` operand and an ``acc`` destination (the
    simulator's ``costs.op_dtype``: one dtype, or ``fp16_fp32`` when they differ)."""
    return dtype if dtype == acc else "fp16_fp32"


@functools.lru_cache(maxsize=4096)
def restore_copies(q: int, q_y: int, comm_y: bool) -> int:
    """Local slot-row copies that put a weight's rows back in its own slots after Q shifts through
    the one spare row (``meshgemm.prefill_gemm.MeshGemmRings.restore_b``): the rows sit (−Q) mod
    (q_y + 1) slots off; each cycle of the permutation costs its length in copies, plus one through
    the spare for every cycle beyond the first."""
    if not comm_y:
        return 0
    lb = q_y + 1
    br = (-q) % lb
    if br == 0:
        return 0
    where = {j: (j + br) % lb for j in range(q_y)}
    holder = {s: j for j, s in where.items()}
    hole = next(s for s in range(lb) if s not in holder)
    moves = 0
    while True:
        if hole != q_y:
            src = where[hole]
            moves += 1
            where[hole] = hole
            hole = src
            continue
        wrong = [j for j in range(q_y) if where[j] != j]
        if not wrong:
            return moves
        j = wrong[0]
        moves += 1
        hole, where[j] = where[j], q_y


def chain_stage_lag(spec: HardwareSpec) -> int:
    """Cycles by which a relay chain's stream reaches each PE later than the one before it
    (``chain_side_arrival``'s increment per one-hop link: ρ + α + β), in whole cycles."""
    return int(round(chain_side_arrival(spec, [1, 1]) - chain_side_arrival(spec, [1])))


def norm_broadcast_lead(spec: HardwareSpec, pos_x, is_root, sel=None):
    """Cycles by which column ``pos_x`` leaves RMSNorm's chain allreduce (``meshgemm.prefill_chains``)
    before the first column: the total is broadcast from the last column (the root) down, each
    member's ``RelayStore`` ending when the last wavelet has reached it and re-sending it β later, so
    a member ends ρ + α + β (``chain_stage_lag``) after the member above it, and the member below the
    root ρ + α after the root's ``Send`` has injected its last wavelet: lag·x, β less on the root
    (``is_root``). Numbers, or the program's expressions (``sel`` = ``simulator.expr.select``)."""
    relay = int(round(spec.relay_cycles))
    lead = chain_stage_lag(spec) * pos_x
    if sel is None:
        return lead - (relay if is_root else 0)
    return lead - sel(is_root, relay, 0)


def column_resync_iters(lead, unit: int):
    """Delay units (``unit`` cycles each) a column that left RMSNorm ``lead`` cycles before the first
    column (``norm_broadcast_lead``) waits before the chain that follows, so that every column enters
    the chain's skew with the first. Rounded to the nearest unit; ``lead`` may be a run-time
    expression of the column (the prefill chain's delay, ``meshgemm.prefill_gemm``)."""
    return (2 * lead + unit) // (2 * unit)


def column_resync_cycles(spec: HardwareSpec, p_x: int, acc: str = "fp32") -> float:
    """What the columns' resynchronisation before a chain adds after the first column's norm end (the
    end ``token_rmsnorm`` charges): the latest column's entry, unit·(its delay units) − its lead (the
    rounding; at most half a unit). The delay is a loop of one-element fills of the ``acc``
    accumulator (``phase_units``); a loop of no iteration costs nothing (its scalar rows are folded
    into c_op, as everywhere)."""
    if p_x <= 1:
        return 0.0
    unit = phase_units(spec, acc)[1]
    leads = [norm_broadcast_lead(spec, x, x == p_x - 1) for x in range(p_x)]
    return float(max(unit * column_resync_iters(v, unit) - v for v in leads))


def meshgemm_chain(spec: HardwareSpec, p_y: int, p_x: int, m: int, k: int, ns: tuple[int, ...],
                   dtype: str = "fp16", acc: str = "fp32", biases: tuple[bool, ...] = (),
                   resync: bool = False) -> CostBreakdown:
    """MeshGEMM products that share one left operand, as the prefill layer program runs them
    (``meshgemm.prefill_gemm``, method §4.3-§4.4): Q|K|V from the normed activation, gate|up, and the
    single products O and down. Sizes are virtual tiles: ``m`` tokens, ``k`` inner features, ``ns``
    the output features of each product (per tile of the Q×Q virtual mesh, Q = lcm(P_y, P_x)).

    * **resync** (``resync``: chains that follow RMSNorm, Q|K|V and gate|up): every column waits until
      the first column has left the norm's broadcast (``norm_broadcast_lead``, ``column_resync_iters``), so the columns enter
      the skew in phase and the steps run in lockstep; what it adds after the first column's norm
      end is ``column_resync_cycles`` (≤ half a delay unit);
    * **once per chain**: the activation copied into the rotation slots (one copy, or q_x·q_y tile
      copies when a PE hosts several rows and columns), then A's skew the shorter way round, balanced
      as the stand-alone kernel's (``balanced_skew_cycles``: every physical row takes the rounds and
      copies of the row that rotates most; a round moves one tile of m·k);
    * **per product**: a fill of the ``acc`` accumulator; **Q** shifting steps (the last shifts
      too, so A is back in its skewed place for the next product and B in its pre-skewed place);
      each step's local products are column-major: k·n FMACs of m token lanes at the
      ``dtype``×``acc`` SIMD width; the restoring copies of the weight's rows (``restore_copies``);
      the accumulator converted into the activation (a ``convert`` when ``acc`` ≠ ``dtype``); the
      bias added per token tile when the product has one.
    """
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    comm_x, comm_y = p_x > 1, p_y > 1
    hops_x = 2 if p_x >= 3 else 1
    hops_y = 2 if p_y >= 3 else 1
    c_op = spec.op_issue_cycles
    e_w = spec.elements_per_wavelet(dtype)
    mix = mixed_dtype(dtype, acc)
    ta = m * k
    if q_x == 1 or q_y == 1:
        load = t_vec(spec, q_x * q_y * ta, "mov", dtype)
    else:
        load = q_x * q_y * t_vec(spec, ta, "mov", dtype)
    round_t = 2 * c_op + spec.ramp_cycles + hops_x * spec.hop_cycles + math.ceil(ta / e_w) + t_join(spec, 2)
    skew = balanced_skew_cycles if comm_y else _skew_cycles  # one physical row has nothing to balance
    align = skew(spec, Q, p_y, q_x, q_y, comm_x, round_t, t_vec(spec, ta, "mov", dtype))
    sync = column_resync_cycles(spec, p_x, acc) if resync else 0.0
    total = sync + load + align
    parts = {"resync": sync, "load_a": load, "skew": align}
    restores = restore_copies(Q, q_y, comm_y)
    compute = 0.0
    for i, n in enumerate(ns):
        if n <= 0:
            continue
        comp = q_x * q_y * k * n * (c_op + math.ceil(m / spec.simd_width("fmac", mix)))
        moves = [(h, math.ceil(w / e_w)) for on, h, w in ((comm_x, hops_x, q_y * ta), (comm_y, hops_y, q_x * k * n)) if on]
        _, _, _, step = shift_step(spec, comp, moves)
        c_len = q_x * q_y * m * n
        fill = t_vec(spec, c_len, "mov", acc)
        out = t_vec(spec, c_len, "mov", dtype) if acc == dtype else c_op + c_len  # convert: one element a cycle
        bias = q_y * t_vec(spec, q_x * n * m, "add", dtype) if i < len(biases) and biases[i] else 0.0
        restore = restores * t_vec(spec, q_x * k * n, "mov", dtype)
        prod = fill + Q * step + restore + out + bias
        parts[f"product{i}"] = prod
        total += prod
        compute += fill + Q * comp + restore + out + bias
    compute += load
    return CostBreakdown(op="meshgemm_chain", compute_cycles=compute, comm_cycles=max(total - compute, 0.0),
                         total_cycles=total, parts=parts)


def meshgemm_chain_floor(spec: HardwareSpec, p_y: int, p_x: int, m: int, k: int, ns: tuple[int, ...],
                         dtype: str = "fp16", acc: str = "fp32", biases: tuple[bool, ...] = (),
                         resync: bool = False) -> CostBreakdown:
    """A lower bound of ``meshgemm_chain(...)`` (same arguments) at a small fraction of its price:
    the local products alone. Each product runs Q steps, and a step is at least its k·n FMACs of m
    token lanes per hosted tile (``shift_step`` adds issues, stalls and a join to them); the load,
    skew, fill, restoring copies, conversion and bias only add. tests/plmr/test_gemm.py checks it
    against the chain."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    per_fmac = spec.op_issue_cycles + math.ceil(m / spec.simd_width("fmac", mixed_dtype(dtype, acc)))
    t = float(sum(Q * (q_x * q_y * k * n * per_fmac) for n in ns if n > 0))
    return CostBreakdown(op="meshgemm_chain_floor", compute_cycles=t, comm_cycles=0.0, total_cycles=t)
