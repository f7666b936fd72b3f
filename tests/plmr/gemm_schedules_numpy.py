"""The numpy evaluation of SUMMA's and dist-GEMM-T's step recurrences that ``plmr.gemm_schedules``
replaced with numba loops (same arithmetic, elementwise, in the same order): kept verbatim as the
reference ``tests/plmr/test_gemm_schedules.py`` compares the fast version to, number for number.
What a step of each PE is made of is written once, in ``plmr.gemm_schedules``'s docstring; here every
function works on all PEs at once (numpy arrays indexed ``[y, x]``), except SUMMA's, evaluated PE
by PE in plain Python since its x and y streams meet in one delivery (``summa_schedule``).
"""

from __future__ import annotations

import math

import numpy as np

from plmr._gemm_schedule_loops import _share as _share_jit
from plmr.collectives import link_buffer_wavelets
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_order
from plmr.primitives import FILL_PORTS, FMAC_PORTS, RECV_ADD_PORTS, RECV_PORTS, SEND_PORTS, stalls

#: "never": an interval or arrival that does not exist (finite, so that differences stay finite)
NEVER = -1e18

#: Two streams through one port (the fluid of ``plmr._gemm_schedule_loops._share``), as plain Python:
#: a primitive of both evaluations; what this reference checks is the recurrence around it.
_share = _share_jit.py_func


def _push(first: np.ndarray, w: float, blocks) -> tuple[np.ndarray, np.ndarray]:
    """A stream of ``w`` injections from ``first`` on a PE whose ramp is taken by the earlier op's
    intervals ``blocks`` [(start, end)] (arrays; NEVER where none): returns its (first, end)."""
    end = first + w
    for bs, be in blocks:
        inside = (first >= bs) & (first < be)
        first = np.where(inside, be, first)
        end = np.where(inside, be + w, end)
        end = np.where((bs > first) & (bs < end), end + (be - bs), end)
    return first, end


#: compare-and-swap sorting networks for the few move intervals of a PE's step
_NETWORKS = {1: (), 2: ((0, 1),), 3: ((0, 1), (1, 2), (0, 1)), 4: ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2))}


def _product_end(start: np.ndarray, comp: float, moves: list) -> np.ndarray:
    """The end of a product of ``comp`` cycles from ``start`` that loses a cycle to every cycle in
    which one of the ``moves`` [(start, end) arrays] moves a wavelet once it runs (a move that starts
    before the product ends stretches it by its whole remaining length)."""
    end = start + comp
    if not moves:
        return end
    A, B = [a for a, _ in moves], [b for _, b in moves]
    for i, j in _NETWORKS[len(moves)]:  # sort each PE's intervals by their start
        swap = A[j] < A[i]
        A[i], A[j] = np.where(swap, A[j], A[i]), np.where(swap, A[i], A[j])
        B[i], B[j] = np.where(swap, B[j], B[i]), np.where(swap, B[i], B[j])
    reach = start
    for a, b in zip(A, B):
        s0 = np.maximum(a, reach)
        end = end + np.where((a < end) & (b > s0), b - s0, 0.0)
        reach = np.maximum(reach, b)
    return end


def summa_schedule(spec: HardwareSpec, p_y: int, p_x: int, m: int, k: int, n: int, comp: float,
                   zero_c: float, copy_a: float, copy_b: float, w_a: int, w_b: int) -> tuple[float, dict]:
    """SUMMA's run (meshgemm/gemm_baselines.py): C zeroed, panel 0 fetched and joined, then S − 1
    iterations that fetch panel t+1 and multiply panel t, then the last product. In a fetch, the
    owner of a line's panel (position t // q on the line) sends it up the line, then down it, and
    copies it; every other PE issues one ``RelayStore`` (a ``Recv`` at a line's end), the x line's
    op first, then the y line's. The join is on 2 ops per line. Returns (total cycles, parts).

    Evaluated PE by PE: a row's y streams come from the previous row of the chain, its x streams
    from the previous column, and a PE receiving on both lines takes both through one delivery, so
    the rows go from the y owner's outward and each row from the x owner's outward."""
    S_ = math.lcm(p_y, p_x)
    q_x, q_y = S_ // p_x, S_ // p_y
    c, ct = float(spec.op_issue_cycles), float(spec.task_cycles)
    lat_send = float(spec.ramp_cycles + spec.hop_cycles)
    h = lat_send + float(spec.relay_cycles)
    stall_ops = any(stalls(spec, FMAC_PORTS, p) for p in (SEND_PORTS, RECV_PORTS, RECV_ADD_PORTS))
    ramp1 = bool(spec.ramp_wavelets_per_cycle)
    comp, zero_c, copy_a, copy_b = float(comp), float(zero_c), float(copy_a), float(copy_b)
    w_a, w_b = float(w_a), float(w_b)
    S = np.full((p_y, p_x), zero_c)
    first_panel = 0.0
    for it in range(-1, S_ - 1):
        panel = it + 1
        ox, oy = panel // q_x, panel // q_y
        ny = ((oy < p_y - 1) + (oy > 0)) if p_y > 1 else 0
        prev = {}  # column -> the y chain's previous stage (first, even start, end)
        owner_sends = {}  # column -> the y owner's sends [(first, even start, end)]
        rows = [oy] + list(range(oy + 1, p_y)) + list(range(oy - 1, -1, -1))
        for y in rows:
            if p_y > 1 and y == oy - 1:  # the first row below the owner: from its down send
                prev = {x: tuple(v + lat_send - h for v in owner_sends[x][-1]) for x in range(p_x)}
            # the y stream each PE of the row receives (alone), where it shares the delivery with x
            ystream = {}
            if p_y > 1 and p_x > 1 and y != oy:
                for x in range(p_x):
                    if x != ox:
                        f0, g0, e0 = prev[x]
                        ystream[x] = _stage(f0 + h, g0 + h, e0 + h, S[y, x] + c + c, w_b)
            xs, nx, Lx = _x_row(S[y], ox, p_x, c, h, lat_send, w_a, copy_a, w_b, ystream) if p_x > 1 \
                else ({}, 0, [0.0] * p_x)
            new_S = np.empty(p_x)
            for x in range(p_x):
                xi = xs.get(x, {"moves": [], "blocks": [], "end": None})
                blocks = xi["blocks"] if ramp1 else []
                moves = list(xi["moves"])
                DY = None
                Ly = 0.0
                if p_y > 1:
                    if y == oy:
                        Ly = ((oy > 0) + (oy < p_y - 1)) * c + copy_b
                        t = S[y, x] + Lx[x] + c
                        sends = []
                        if oy < p_y - 1:
                            sends.append(_behind_x(t, t, t + w_b, w_b, blocks, w_a))
                            t = t + c
                        if oy > 0:
                            if sends:
                                t = max(t, sends[0][2])
                            sends.append(_behind_x(t, t, t + w_b, w_b, blocks, w_a))
                        owner_sends[x] = sends
                        if oy < p_y - 1:
                            prev[x] = (sends[0][0] + lat_send - h, sends[0][1] + lat_send - h,
                                       sends[0][2] + lat_send - h)
                        moves += [(f, e) for f, _, e in sends]
                        DY = sends[-1][2]
                    else:
                        Ly = c
                        if x in xi.get("shared", {}):
                            (f, g, end), mv = xi["shared"][x]
                        else:
                            f0, g0, e0 = prev[x]
                            f, g, end = _stage(f0 + h, g0 + h, e0 + h, S[y, x] + Lx[x] + c, w_b)
                            injects = not (y == p_y - 1 and oy < p_y - 1) and not (y == 0 and oy > 0)
                            if injects:
                                f, g, end = _behind_x(f, g, end, w_b, blocks, w_a)
                            mv = end - w_b
                        prev[x] = (f, g, end)
                        moves.append((mv, end))
                        moves += [(NEVER, NEVER)] * (ny - 1)
                        DY = end
                start = S[y, x] + Lx[x] + Ly
                G = start if it < 0 else float(_product_end(np.float64(start), comp,
                                                            [(np.float64(a), np.float64(b)) for a, b in moves]
                                                            if stall_ops else []))
                DX = xi["end"]
                if DX is not None and DY is not None:
                    new_S[x] = max(max(G, DX) + ct, max(G, DY)) + 3 * ct
                elif DX is not None or DY is not None:
                    new_S[x] = max(G, DX if DX is not None else DY) + 2 * ct
                else:
                    new_S[x] = G
            S[y] = new_S
        if it < 0:
            first_panel = float(S.max()) - zero_c
    total = float(S.max()) + comp
    return total, {"first_panel": first_panel,
                   "step": (total - comp - zero_c - first_panel) / (S_ - 1) if S_ > 1 else 0.0}


def _stage(f_in: float, g_in: float, e_in: float, R: float, w: float) -> tuple:
    """A relay (or a line end's Recv) issued at R on a stream whose first wavelet arrives at f_in,
    the rest at an even rate from g_in to e_in: (first move, start of its even moves, end)."""
    g = max(g_in, R)
    return max(f_in, R), g, max(e_in, g + w)


def _x_row(S_row, o: int, P: int, c: float, h: float, lat_send: float, w: float, copy_a: float,
           w_b: float, ystream: dict) -> tuple:
    """One row's A broadcast from the owner at column o, stage by stage outward; a PE with a y
    stream in ``ystream`` shares its delivery with it. Returns ({x: moves, ramp blocks, end and the
    shared y stream}, the owner's sends, the fetch issue per column)."""
    t = S_row[o] + c
    sends = []
    if o < P - 1:
        sends.append((t, t + w))
        t = t + c
    if o > 0:
        if sends:
            t = max(t, sends[0][1])
        sends.append((t, t + w))
    Lx = [c] * P
    Lx[o] = ((o > 0) + (o < P - 1)) * c + copy_a
    out = {o: {"moves": list(sends), "blocks": list(sends), "end": sends[-1][1]}}
    ns = len(sends)
    for direction, (a, e_send) in ((1, sends[0]), (-1, sends[-1])):
        if (direction == 1 and o == P - 1) or (direction == -1 and o == 0):
            continue
        f0, g0, e0 = a + lat_send - h, a + lat_send - h, e_send + lat_send - h
        x = o + direction
        while 0 <= x < P:
            f, g, e = _stage(f0 + h, g0 + h, e0 + h, S_row[x] + c, w)
            mv = e - w
            shared = {}
            if x in ystream:
                yf, yg, ye = ystream[x]
                e2, ye2, _, _ = _share(g, e, w, yg, ye, w_b, False)
                ymv = ye - w_b
                if e2 > e or ye2 > ye:  # they met: both move back to back
                    mv = max(e2, ye2) - w - w_b
                    ymv = mv
                shared[x] = ((yf, yg, ye2), ymv)
                e = e2
            injects = not (x == P - 1 and o < P - 1) and not (x == 0 and o > 0)
            out[x] = {"moves": [(mv, e)] + [(NEVER, NEVER)] * (ns - 1),
                      "blocks": ([(g, e)] if injects else [(NEVER, NEVER)]) + [(NEVER, NEVER)] * (ns - 1),
                      "end": e, "shared": shared}
            f0, g0, e0 = f, g, e
            x += direction
    return out, ns, Lx


def _behind_x(f: float, g: float, e: float, w: float, blocks: list, w_a: float) -> tuple:
    """A y op's stream (first f, even from g to e) behind its PE's x op(s) injecting over ``blocks``
    (the ramp serves the op issued first first): (first, start of its even moves, end)."""
    if not blocks or blocks[0][0] <= NEVER:
        return f, g, e
    bs, be, wa = blocks[0][0], blocks[0][1], w_a
    if len(blocks) > 1 and blocks[1][0] > NEVER:  # the owner's two sends, back to back
        be, wa = max(be, blocks[1][1]), 2.0 * w_a
    _, e, f2, resumed = _share(bs, be, wa, g, e, w, True)
    return max(f, f2), max(g, resumed), e


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
    c, ct = spec.op_issue_cycles, spec.task_cycles
    rho, alpha, beta = spec.ramp_cycles, spec.hop_cycles, spec.relay_cycles
    h = rho + alpha + beta
    buf = link_buffer_wavelets(spec, 1)
    stall_ops = any(stalls(spec, FMAC_PORTS, p) for p in (SEND_PORTS, RECV_PORTS))
    fill_stalls = stalls(spec, FILL_PORTS, RECV_PORTS)
    order = ring_order(p_y) if p_y >= 3 else tuple(range(p_y))
    pos = np.empty(p_y, dtype=np.int64)
    pos[list(order)] = np.arange(p_y)
    ys = np.arange(p_y)
    pred = np.asarray(order)[(pos - 1) % p_y]
    lat_b = (rho + np.abs(pred - ys) * alpha)[:, None]
    X = np.arange(p_x)[None, :]
    ends = (X == 0) | (X == p_x - 1)
    order_arr = np.asarray(order)
    S = np.zeros((p_y, p_x))
    for t in range(p_y):
        shift = t < p_y - 1
        root = (order_arr[(pos - t) % p_y] % p_x)[:, None]
        is_root = X == root
        issued = S + (2 * c if shift else 0.0)
        moves, DB = [], None
        if shift:
            send = S + 2 * c
            recv = np.maximum(S + c, send[pred] + lat_b)
            moves = [(send, send + w_b), (recv, recv + w_b)]
            DB = np.maximum(send, recv) + w_b
        start = issued
        if p_x > 1:  # a member's fill writes: it loses the cycles in which the B receive writes
            filled = _product_end(issued, fill, moves[1:] if fill_stalls else [])
            start = np.where(is_root, issued, filled)
        G = _product_end(start, comp, moves if stall_ops else [])
        if p_x == 1:
            S = np.maximum(G, DB) + 2 * ct if shift else G
            continue
        R = G + c  # a member's chain op
        Rt = R - np.where(ends, beta, 0.0)  # a row's end sends: no relay stage
        east = np.maximum.accumulate(Rt - X * h, axis=1) + X * h
        west = np.maximum.accumulate((Rt + X * h)[:, ::-1], axis=1)[:, ::-1] - X * h
        f = np.where(ends, R, np.where(X < root, east, west))
        r = root[:, 0]
        rows = np.arange(p_y)
        has_w, has_e = r > 0, r < p_x - 1
        arr_w = np.where(has_w, east[rows, np.maximum(r - 1, 0)] + h, NEVER)
        arr_e = np.where(has_e, west[rows, np.minimum(r + 1, p_x - 1)] + h, NEVER)
        g_root = G[rows, r]
        w_start = np.maximum(g_root + c, arr_w)
        w_end = np.where(has_w, w_start + t_c, NEVER)
        e_first = np.maximum(g_root + c * (1 + has_w), arr_e)
        if spec.ramp_wavelets_per_cycle:
            _, e_end = _push(e_first, t_c, [(np.where(has_w, w_start, NEVER), w_end)])
        else:
            e_end = e_first + t_c
        e_end = np.where(has_e, e_end, NEVER)
        side_end = np.where(X < root, w_end[:, None], e_end[:, None])
        Dc = np.maximum(f + t_c, side_end - buf * np.abs(X - root))
        root_free = (g_root + c * (has_w.astype(int) + has_e))[:, None]
        if shift:
            member = np.maximum(np.maximum(G + c, DB) + ct, Dc) + 2 * ct
            j3 = np.maximum(root_free, DB) + ct
            root_t = np.maximum(np.maximum(j3, w_end[:, None]) + ct, e_end[:, None]) + 2 * ct
        else:
            member = np.maximum(G + c, Dc) + ct
            root_t = np.maximum(np.maximum(root_free, w_end[:, None]), e_end[:, None]) + 2 * ct
        S = np.where(is_root, root_t, member)
    return float(S.max())
