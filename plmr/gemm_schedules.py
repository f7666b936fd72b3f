"""Per-PE step recurrences of the two GEMM programs whose steps wait on software chains: SUMMA's
relay broadcasts and dist-GEMM-T's chain reduce (meshgemm/gemm_baselines.py, meshgemm/gemmt.py).

Neither program has a barrier, so a PE's step t+1 starts when its own step t has joined. A relay
(``RelayStore``, ``RecvAddSend``) forwards a wavelet only once its PE has issued it, at that PE's own
step start; a PE that is late delays every PE behind it on the chain, and the lateness is carried
into the next step. With β large against a small tile the far end of a line waits for the chain,
and because SUMMA's panel owner moves along the line (and dist-GEMM-T's root moves with the B
shift), the critical path zig-zags through the mesh: no closed form of "the slowest PE's own steps
plus the farthest chain once" holds (docs/KERNEL_AGREEMENT.md). These functions evaluate the
programs' timing step by step, for every PE, from the costs of the program's ops
(``plmr.primitives``): O(steps × P_y × P_x) work, done by numba loops (``plmr._gemm_schedule_loops``,
one pass over the PEs per step; numba is imported on the first evaluation, not with ``plmr``).

What a step of each PE is made of, in the order the program issues it:

* its fetch or shift ops, c_op each (a copy is a ``mov``); an async op's microthread starts when
  its issue ends;
* a stream of w wavelets moves one wavelet per cycle. A relay forwards its first wavelet at
  max(its issue, the first wavelet's arrival), the next PE gets it ρ + α + β later (ρ + α from a
  plain send); a PE injects at most one wavelet per cycle, and the op issued first keeps the ramp
  (the engine serves microthreads in slot order: the issue order, except that an op issued after
  an earlier one finished takes its freed slot and goes first, which is not modelled), so a later
  stream on the same PE gets the cycles the earlier one leaves; the router delivers one wavelet per cycle to the CE, its channels
  in turn, so a PE that receives on both lines (SUMMA's relays off the owners' lines) takes the
  two streams at one wavelet per cycle between them. A SUMMA stream is carried from stage to stage
  as (its first wavelet, where its even moves start, its end), each ρ + α + β later at the next
  stage: a relay held back forwards its first wavelet late, and a stream split or slowed upstream
  arrives as late and as spread out one stage on. Two streams through one port are served as a
  fluid (``_gemm_schedule_loops._share``: fair for the delivery, the x op first for the ramp);
* the product (``local_gemm_cycles``) loses one cycle to every cycle in which a microthread moves a
  wavelet after it started (``stalls``: the FMAC needs both read ports and the write port); a
  stream's w moves are counted as late as they can be (the last w cycles before its end; two
  streams that met in one delivery, back to back before the later end);
* the join on n ops is n task activations (``simulator/joins.py``): the first join task runs once
  the main thread is free and the first two ops are done, each further one once its op is done, the
  continuation last.

Streams here are at most the link's buffering long on the small tiles where chains matter; a longer
stream into dist-GEMM-T's root also waits for the root to take what exceeds the buffering.
"""

from __future__ import annotations

import math

from plmr.collectives import link_buffer_wavelets
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_order
from plmr.primitives import FILL_PORTS, FMAC_PORTS, RECV_ADD_PORTS, RECV_PORTS, SEND_PORTS, stalls


#: SUMMA runs of at least this many PE-steps (P_y · P_x · S) keep their result in ``plmr.result_store``
#: (720² is 3.7e8 PE-steps, ~17 s; 360², ~2 s); smaller ones take under half a second and are not kept.
STORE_MIN_PE_STEPS = 10**7


def summa_schedule(spec: HardwareSpec, p_y: int, p_x: int, m: int, k: int, n: int, comp: float,
                   zero_c: float, copy_a: float, copy_b: float, w_a: int, w_b: int) -> tuple[float, dict]:
    """SUMMA's run (meshgemm/gemm_baselines.py): C zeroed, panel 0 fetched and joined, then S − 1
    iterations that fetch panel t+1 and multiply panel t, then the last product. In a fetch, the
    owner of a line's panel (position t // q on the line) sends it up the line, then down it, and
    copies it; every other PE issues one ``RelayStore`` (a ``Recv`` at a line's end), the x line's
    op first, then the y line's. The join is on 2 ops per line. Returns (total cycles, parts)."""
    from plmr import _gemm_schedule_loops as loops

    S_ = math.lcm(p_y, p_x)
    lat_send = spec.ramp_cycles + spec.hop_cycles
    h = lat_send + spec.relay_cycles
    stall_ops = any(stalls(spec, FMAC_PORTS, p) for p in (SEND_PORTS, RECV_PORTS, RECV_ADD_PORTS))
    args = (p_y, p_x, S_, S_ // p_x, S_ // p_y, float(spec.op_issue_cycles), float(spec.task_cycles),
            float(lat_send), float(h), float(comp), float(zero_c), float(copy_a), float(copy_b), float(w_a),
            float(w_b), stall_ops, bool(spec.ramp_wavelets_per_cycle))
    if p_y * p_x * S_ >= STORE_MIN_PE_STEPS:  # kept on disk: the next process reads it
        from plmr.result_store import stored

        last, first_panel = stored("summa_steps", loops, args, 2, lambda: loops.summa_steps(*args))
    else:
        last, first_panel = loops.summa_steps(*args)
    total = float(last) + comp
    first_panel = float(first_panel)
    return total, {"first_panel": first_panel,
                   "step": (total - comp - zero_c - first_panel) / (S_ - 1) if S_ > 1 else 0.0}


def gemmt_schedule(spec: HardwareSpec, p_y: int, p_x: int, comp: float, fill: float, t_c: int,
                   w_b: int) -> float:
    """dist-GEMM-T's run (meshgemm/gemmt.py), P_y steps. In step t row y's root is column
    j_t mod P_x, j_t = R_y[(pos(y) − t) mod P_y]. Every PE issues the B shift (a receive, then a
    send; not in the last step): its send streams from its second issue, its receive takes the
    ring predecessor's send ρ + hops·α later. A member zero-fills its partial (the fill writes, so it
    loses the cycles in which the B receive writes), multiplies, issues its
    chain op (a send at a row's end, else receive-add-send: a relay stage) and joins the shift's 2 ops
    and its chain op; the root multiplies into C, issues a receive-add per side and joins 4 ops (the
    shift's 2 and one per side; 2 in the last step). The root takes its two sides' streams through
    one delivery, the first issued first; a member's stream longer than the links to the root hold
    waits for the root to take the rest. Returns the total cycles."""
    import numpy as np  # here, not at import: the planner imports plmr.gemm and must start without numpy

    from plmr._gemm_schedule_loops import gemmt_steps

    rho, alpha = spec.ramp_cycles, spec.hop_cycles
    order = ring_order(p_y) if p_y >= 3 else tuple(range(p_y))
    pos = np.empty(p_y, dtype=np.int64)
    pos[list(order)] = np.arange(p_y)
    order_arr = np.asarray(order, dtype=np.int64)
    pred = order_arr[(pos - 1) % p_y]
    lat_b = (rho + np.abs(pred - np.arange(p_y)) * alpha).astype(np.float64)
    stall_ops = any(stalls(spec, FMAC_PORTS, p) for p in (SEND_PORTS, RECV_PORTS))
    return float(gemmt_steps(p_y, p_x, float(spec.op_issue_cycles), float(spec.task_cycles),
                             float(spec.relay_cycles), float(rho + alpha + spec.relay_cycles), float(comp),
                             float(fill), float(t_c), float(w_b), float(link_buffer_wavelets(spec, 1)),
                             stall_ops, stalls(spec, FILL_PORTS, RECV_PORTS),
                             bool(spec.ramp_wavelets_per_cycle), order_arr, pos, pred, lat_b))
