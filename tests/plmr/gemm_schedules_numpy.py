"""The numpy evaluation of SUMMA's and dist-GEMM-T's step recurrences that ``plmr.gemm_schedules``
replaced with numba loops (same arithmetic, elementwise, in the same order): kept verbatim as the
reference ``tests/plmr/test_gemm_schedules.py`` compares the fast version to, number for number.
What a step of each PE is made of is written once, in ``plmr.gemm_schedules``'s docstring; here every
function works on all PEs at once (numpy arrays indexed ``[y, x]``), except the y lines' relays,
evaluated row by row away from the owner (``_y_chain``: a relay's pushed first wavelet and its end
are what the next stage receives).
"""

from __future__ import annotations

import math

import numpy as np

from plmr.collectives import link_buffer_wavelets
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_order
from plmr.primitives import FILL_PORTS, FMAC_PORTS, RECV_ADD_PORTS, RECV_PORTS, SEND_PORTS, stalls

#: "never": an interval or arrival that does not exist (finite, so that differences stay finite)
NEVER = -1e18


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


def _chain_first(R: np.ndarray, o: int, h: float, up_seed, dn_seed) -> np.ndarray:
    """When every PE of lines ``R`` [line, position] (its relay issued at ``R``) forwards or receives
    the first wavelet of the stream the owner at position ``o`` sends both ways: up_seed / dn_seed are
    the arrival times at o ± 1 (None: no stream that way). f_j = max(R_j, f_{j∓1} + h), evaluated as
    a running maximum (max over k between the owner and j of R_k + |j − k|·h)."""
    first = np.full(R.shape, NEVER)
    P = R.shape[1]
    if up_seed is not None and o < P - 1:
        idx = np.arange(o + 1, P)
        run = np.maximum(R[:, o + 1:] - idx * h, (up_seed - (o + 1) * h)[:, None])
        first[:, o + 1:] = np.maximum.accumulate(run, axis=1) + idx * h
    if dn_seed is not None and o > 0:
        idx = np.arange(o)
        run = np.maximum(R[:, :o] + idx * h, (dn_seed + (o - 1) * h)[:, None])
        first[:, :o] = np.maximum.accumulate(run[:, ::-1], axis=1)[:, ::-1] - idx * h
    return first


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
    op first, then the y line's. The join is on 2 ops per line. Returns (total cycles, parts)."""
    S_ = math.lcm(p_y, p_x)
    q_x, q_y = S_ // p_x, S_ // p_y
    c, ct = spec.op_issue_cycles, spec.task_cycles
    lat_send = spec.ramp_cycles + spec.hop_cycles
    h = lat_send + spec.relay_cycles
    stall_ops = any(stalls(spec, FMAC_PORTS, p) for p in (SEND_PORTS, RECV_PORTS, RECV_ADD_PORTS))
    ramp1 = bool(spec.ramp_wavelets_per_cycle)
    shape = (p_y, p_x)
    X = np.arange(p_x)[None, :]
    Y = np.arange(p_y)[:, None]
    S = np.full(shape, float(zero_c))
    first_panel = 0.0
    for it in range(-1, S_ - 1):
        panel = it + 1
        moves, blocks = [], []
        L_x = np.zeros(shape)
        DX = DY = None
        if p_x > 1:
            o = panel // q_x
            own = np.broadcast_to(X == o, shape)
            L_x = np.where(own, ((o > 0) + (o < p_x - 1)) * c + copy_a, c)
            sends = _owner_sends(S[:, o] + c, c, w_a, o, p_x, [])
            first = _chain_first(S + c, o, h, sends[0][0] + lat_send if o < p_x - 1 else None,
                                 sends[-1][0] + lat_send if o > 0 else None)
            end = first + w_a
            injects = _injects(shape, o, p_x, axis=1)
            for i, (a, b) in enumerate(sends):
                mine = (np.where(own, a[:, None], first if i == 0 else NEVER),
                        np.where(own, b[:, None], end if i == 0 else NEVER))
                moves.append(mine)
                blocks.append((np.where(own | injects, mine[0], NEVER), np.where(own | injects, mine[1], NEVER)))
            DX = np.where(own, sends[-1][1][:, None], end)
        L_y = np.zeros(shape)
        if p_y > 1:
            o = panel // q_y
            own = np.broadcast_to(Y == o, shape)
            L_y = np.where(own, ((o > 0) + (o < p_y - 1)) * c + copy_b, c)
            R = S + L_x + c
            row_blocks = [(a[o], b[o]) for a, b in blocks] if ramp1 else []
            sends = _owner_sends(R[o], c, w_b, o, p_y, row_blocks)
            first, end = _y_chain(R, o, h, lat_send, w_b, sends, blocks if ramp1 else [])
            for i, (a, b) in enumerate(sends):
                moves.append((np.where(own, a[None, :], first if i == 0 else NEVER),
                              np.where(own, b[None, :], end if i == 0 else NEVER)))
            DY = np.where(own, sends[-1][1][None, :], end)
        start = S + L_x + L_y
        G = start if it < 0 else _product_end(start, comp, moves if stall_ops else [])
        if DX is not None and DY is not None:
            S = np.maximum(np.maximum(G, DX) + ct, np.maximum(G, DY)) + 3 * ct
        elif DX is not None or DY is not None:
            S = np.maximum(G, DX if DX is not None else DY) + 2 * ct
        else:
            S = G
        if it < 0:
            first_panel = float(S.max()) - zero_c
    total = float(S.max()) + comp
    return total, {"first_panel": first_panel,
                   "step": (total - comp - zero_c - first_panel) / (S_ - 1) if S_ > 1 else 0.0}


def _y_chain(R: np.ndarray, o: int, h: float, lat_send: float, w: int, sends: list, blocks) -> tuple:
    """The y lines' relays, row by row away from the owner row ``o`` (all columns at once): a relay
    forwards the first wavelet at max(its issue R, the first wavelet's arrival), behind the ramp
    cycles ``blocks`` of its PE's x op, and that pushed first is what the next stage receives, h
    later; its last move is no earlier than the last wavelet's arrival (the previous stage's end
    plus h: a stream the ramp split upstream stays as long). The line's ends only receive.
    Returns the (first, end) arrays [y, x] (NEVER on the owner row)."""
    P = R.shape[0]
    first = np.full(R.shape, NEVER)
    end = np.full(R.shape, NEVER)
    if o < P - 1:
        carry = (sends[0][0] + lat_send) - (o + 1) * h
        carry_e = (sends[0][1] + lat_send) - (o + 1) * h
        for y in range(o + 1, P):
            f = np.maximum(carry, R[y] - y * h) + y * h
            e_in = carry_e + y * h
            if y == P - 1:
                e = f + w
            else:
                f, e = _push(f, w, [(a[y], b[y]) for a, b in blocks])
            e = np.maximum(e, e_in)
            carry, carry_e = f - y * h, e - y * h
            first[y], end[y] = f, e
    if o > 0:
        carry = (sends[-1][0] + lat_send) + (o - 1) * h
        carry_e = (sends[-1][1] + lat_send) + (o - 1) * h
        for y in range(o - 1, -1, -1):
            f = np.maximum(carry, R[y] + y * h) - y * h
            e_in = carry_e - y * h
            if y == 0:
                e = f + w
            else:
                f, e = _push(f, w, [(a[y], b[y]) for a, b in blocks])
            e = np.maximum(e, e_in)
            carry, carry_e = f + y * h, e + y * h
            first[y], end[y] = f, e
    return first, end


def _owner_sends(issued: np.ndarray, c: float, w: int, o: int, P: int, blocks) -> list:
    """An owner's sends, up the line first (unless it is the last position), then down it (unless it
    is the first), issued c_op apart from ``issued`` (when the first send's issue ends), one ramp:
    [(start, end)] arrays, after the ramp cycles ``blocks`` an earlier op of the PE takes."""
    out, t = [], issued
    if o < P - 1:
        out.append(_push(t, w, blocks))
        t = t + c
    if o > 0:
        t = np.maximum(t, out[0][1]) if out else t
        out.append(_push(t, w, blocks))
    return out


def _injects(shape: tuple, o: int, P: int, axis: int) -> np.ndarray:
    """The PEs of a line that forward (inject) the owner's stream: all but the owner and the line's
    ends beyond it, which only receive."""
    pos = np.arange(P)
    inj = (pos != o) & ~((pos == P - 1) & (o < P - 1)) & ~((pos == 0) & (o > 0))
    return np.broadcast_to(inj[None, :] if axis == 1 else inj[:, None], shape)


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
