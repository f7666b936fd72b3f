"""The numba loops behind ``plmr.gemm_schedules``: SUMMA's and dist-GEMM-T's step recurrences,
one pass over the PEs per step, row by row (each PE's value uses only its own row's values and
what the previous stage of its column's chain carries). Every PE's arithmetic is the same sequence
of float operations as the reference evaluation (tests/plmr/gemm_schedules_numpy.py; SUMMA's there
PE by PE in plain Python), so the results are identical, number for number. Imported only when a
schedule is evaluated: numba's import stays out of ``import plmr``.
"""

from __future__ import annotations

import numpy as np
from plmr.cached_jit import cached_njit

#: "never": an interval or arrival that does not exist (as in plmr.gemm_schedules)
NEVER = -1e18


@cached_njit(error_model="numpy", inline="always")
def _mx(a, b):
    """The larger of two floats, branch-free (np.maximum without NaNs)."""
    return a if a > b else b


@cached_njit(error_model="numpy", inline="always")
def _push(first, w, bs0, be0, bs1, be1, nb):
    """One stream of ``w`` injections from ``first`` behind the ramp intervals (bs0, be0) and
    (bs1, be1) (the first ``nb`` of them) an earlier op of the PE takes: its (first, end)."""
    end = first + w
    if nb > 0:
        first, end = _behind(first, end, w, bs0, be0)
    if nb > 1:
        first, end = _behind(first, end, w, bs1, be1)
    return first, end


@cached_njit(error_model="numpy", inline="always")
def _behind(first, end, w, bs, be):
    """A stream (first, end) of w injections after the ramp interval (bs, be)."""
    inside = (first >= bs) & (first < be)
    first = be if inside else first
    end = (be + w) if inside else end
    end = (end + (be - bs)) if ((bs > first) & (bs < end)) else end
    return first, end


@cached_njit(error_model="numpy")
def _share(fa, ea, wa, fb, eb, wb, prio):
    """Two streams through one port of a PE that moves one wavelet per cycle: stream i alone moves
    its w_i wavelets from f_i to e_i at an even rate. Served as a fluid: the router's delivery to
    the CE serves its channels in turn (``prio`` False: max-min fair, both waiting: half each; one
    waiting: the other's arrivals first, at most half); the ramp into the router serves the op
    issued first first (``prio``: a takes what it needs, b the rest). Returns their ends, b's
    first move and when b last resumed after a stop (NEVER: it never stopped)."""
    if ea <= fb or eb <= fa or wa <= 0.0 or wb <= 0.0:
        return ea, eb, fb, NEVER
    ra = wa / (ea - fa)
    rb = wb / (eb - fb)
    t = fa if fa < fb else fb
    sa = 0.0
    sb = 0.0
    end_a = NEVER
    end_b = NEVER
    first_b = NEVER
    resumed_b = NEVER
    for _ in range(64):
        if end_a > NEVER and end_b > NEVER:
            break
        # arrived so far and the arrival rates now (an even rate from f to e)
        xa = 0.0 if t <= fa else (wa if t >= ea else ra * (t - fa))
        xb = 0.0 if t <= fb else (wb if t >= eb else rb * (t - fb))
        la = ra if (t >= fa) & (t < ea) else 0.0
        lb = rb if (t >= fb) & (t < eb) else 0.0
        qa = xa - sa
        qb = xb - sb
        ba = (qa > 1e-9) & (end_a == NEVER)
        bb = (qb > 1e-9) & (end_b == NEVER)
        if prio:
            va = 1.0 if ba else la
            vb = (1.0 - va) if bb else (lb if lb < 1.0 - va else 1.0 - va)
        elif ba and bb:
            va, vb = 0.5, 0.5
        elif ba:
            vb = lb if lb < 0.5 else 0.5
            va = 1.0 - vb
        elif bb:
            va = la if la < 0.5 else 0.5
            vb = 1.0 - va
        elif la + lb <= 1.0:
            va, vb = la, lb
        elif la <= 0.5:
            va, vb = la, 1.0 - la
        elif lb <= 0.5:
            va, vb = 1.0 - lb, lb
        else:
            va, vb = 0.5, 0.5
        if end_a > NEVER:
            va = 0.0
        if end_b > NEVER:
            vb = 0.0
        if first_b == NEVER and vb > 1e-9:
            first_b = t
        # the next event: an arrival starting or ending, a queue emptying, a stream done
        dt = 1e18
        for ev in (fa, ea, fb, eb):
            if ev > t and ev - t < dt:
                dt = ev - t
        if ba and va > la and (qa / (va - la)) < dt:
            dt = qa / (va - la)
        if bb and vb > lb and (qb / (vb - lb)) < dt:
            dt = qb / (vb - lb)
        if va > 0.0 and (wa - sa) / va < dt:
            dt = (wa - sa) / va
        if vb > 0.0 and (wb - sb) / vb < dt:
            dt = (wb - sb) / vb
        if dt >= 1e18:
            break
        t = t + dt
        sa = sa + va * dt
        sb = sb + vb * dt
        if (end_b == NEVER) & (vb < 1e-9) & (bb | (lb > 0.0)):
            resumed_b = t
        if end_a == NEVER and sa >= wa - 1e-9:
            end_a = t
        if end_b == NEVER and sb >= wb - 1e-9:
            end_b = t
    return (end_a if end_a > NEVER else ea), (end_b if end_b > NEVER else eb), \
        (first_b if first_b > NEVER else fb), resumed_b


@cached_njit(error_model="numpy", inline="always")
def _cas(ai, bi, aj, bj):
    """One compare-and-swap of the network (branch-free): interval j goes first if it starts earlier."""
    sw = aj < ai
    return (aj if sw else ai), (bj if sw else bi), (ai if sw else aj), (bi if sw else bj)


@cached_njit(error_model="numpy", inline="always")
def _stretch(end, reach, a, b):
    """The product's end after the move (a, b), and how far the moves seen so far reach."""
    s0 = a if a > reach else reach
    add = (b - s0) if ((a < end) & (b > s0)) else 0.0
    return end + add, (b if b > reach else reach)


@cached_njit(error_model="numpy", inline="always")
def _product_end(start, comp, a0, b0, a1, b1, a2, b2, a3, b3, n):
    """A product of ``comp`` cycles from ``start`` stretched by the first ``n`` moves (a_i, b_i),
    sorted by their start with the same compare-and-swap network as the numpy evaluation."""
    end = start + comp
    if n == 0:
        return end
    if n == 2:
        a0, b0, a1, b1 = _cas(a0, b0, a1, b1)
    elif n == 3:
        a0, b0, a1, b1 = _cas(a0, b0, a1, b1)
        a1, b1, a2, b2 = _cas(a1, b1, a2, b2)
        a0, b0, a1, b1 = _cas(a0, b0, a1, b1)
    elif n == 4:
        a0, b0, a1, b1 = _cas(a0, b0, a1, b1)
        a2, b2, a3, b3 = _cas(a2, b2, a3, b3)
        a0, b0, a2, b2 = _cas(a0, b0, a2, b2)
        a1, b1, a3, b3 = _cas(a1, b1, a3, b3)
        a1, b1, a2, b2 = _cas(a1, b1, a2, b2)
    end, reach = _stretch(end, start, a0, b0)
    if n > 1:
        end, reach = _stretch(end, reach, a1, b1)
    if n > 2:
        end, reach = _stretch(end, reach, a2, b2)
    if n > 3:
        end, reach = _stretch(end, reach, a3, b3)
    return end


@cached_njit(error_model="numpy", inline="always")
def _stage(f_in, g_in, e_in, R, w):
    """A relay (or a line end's Recv) issued at R on a stream whose first wavelet arrives at f_in,
    the rest at an even rate from g_in to e_in: its first move, where its even moves start, its end
    (what arrived before its issue waits for it, then moves one a cycle)."""
    f = _mx(f_in, R)
    g = _mx(g_in, R)
    return f, g, _mx(e_in, g + w)


@cached_njit(error_model="numpy")
def _summa_x_row(S, y, o, p_x, c, h, lat_send, w_a, copy_a, Lx, mA, mB, bA, bB, DX, yG, yE, yE2, yA,
                 w_b):
    """Row y's A broadcast from the owner at column o: fills its fetch issue Lx, its moves
    (mA, mB)[i, x] (as late as they can be: the stalls they cost a product) and ramp blocks
    (bA, bB)[i, x] for each of the owner's sends i (a relay's: where its even moves start, its end),
    and DX, the end of its x stream. A stage passes on its first wavelet, the start of its even
    moves and its end, h later. A PE that also receives a y stream (even from yG[x] to yE[x]; NEVER:
    none) takes both through its one delivery (``_share``): the y stream's end goes to yE2[x], and
    where its moves start to yA[x]. Returns the number of sends."""
    issued = S[y, o] + c
    ns = 0
    s0a = s0b = s1a = s1b = NEVER
    t = issued
    if o < p_x - 1:
        s0a, s0b = t, t + w_a
        ns = 1
        t = t + c
    if o > 0:
        if ns == 1:
            t = _mx(t, s0b)
            s1a, s1b = t, t + w_a
        else:
            s0a, s0b = t, t + w_a
        ns += 1
    lastb = s1b if ns == 2 else s0b
    own_l = (1 if o > 0 else 0) + (1 if o < p_x - 1 else 0)
    # owner
    Lx[o] = own_l * c + copy_a
    mA[0, o], mB[0, o] = s0a, s0b
    bA[0, o], bB[0, o] = s0a, s0b
    if ns == 2:
        mA[1, o], mB[1, o] = s1a, s1b
        bA[1, o], bB[1, o] = s1a, s1b
    DX[o] = lastb
    # up the row, then down it: each stage from the previous one's (first, even start, end) + h
    for d in range(2):
        if d == 0:
            if o >= p_x - 1:
                continue
            fp, gp, ep = s0a + lat_send - h, s0a + lat_send - h, s0b + lat_send - h
            lo, hi, step = o + 1, p_x, 1
        else:
            if o <= 0:
                continue
            sa = s1a if ns == 2 else s0a
            fp, gp, ep = sa + lat_send - h, sa + lat_send - h, lastb + lat_send - h
            lo, hi, step = o - 1, -1, -1
        for x in range(lo, hi, step):
            f, g, e = _stage(fp + h, gp + h, ep + h, S[y, x] + c, w_a)
            mA[0, x] = e - w_a
            if yG[x] > NEVER:
                e2, yE2[x], _, _ = _share(g, e, w_a, yG[x], yE[x], w_b, False)
                if (e2 > e) | (yE2[x] > yE[x]):  # they met: both move back to back
                    mA[0, x] = _mx(e2, yE2[x]) - w_a - w_b
                    yA[x] = mA[0, x]
                e = e2
            bA[0, x] = g
            DX[x] = e
            fp, gp, ep = f, g, e
    for x in range(p_x):
        if x == o:
            continue
        end = DX[x]
        inj = not (x == p_x - 1 and o < p_x - 1) and not (x == 0 and o > 0)
        Lx[x] = c
        mB[0, x] = end
        bA[0, x] = bA[0, x] if inj else NEVER
        bB[0, x] = end if inj else NEVER
        if ns == 2:
            mA[1, x] = NEVER
            mB[1, x] = NEVER
            bA[1, x] = NEVER
            bB[1, x] = NEVER
    return ns


@cached_njit(error_model="numpy", inline="always")
def _behind_x(f, g, e, w, bA0, bB0, bA1, bB1, w_a, nb):
    """A y op's stream (first f, even from g to e) on a PE whose x op(s) inject from bA to bB
    (the first ``nb``), which the ramp serves first: its (first, even start, end)."""
    if nb == 0 or bA0 <= NEVER:
        return f, g, e
    bs, be, wa = bA0, bB0, w_a
    if nb > 1 and bA1 > NEVER:  # the owner's two sends, back to back
        be = _mx(be, bB1)
        wa = 2.0 * w_a
    _, e, f2, resumed = _share(bs, be, wa, g, e, w, True)
    if f2 > f:
        f = f2
    if resumed > g:
        g = resumed
    return f, g, e


@cached_njit(error_model="numpy")
def summa_steps(p_y, p_x, S_, q_x, q_y, c, ct, lat_send, h, comp, zero_c, copy_a, copy_b, w_a, w_b,
                stall_ops, ramp1):
    """SUMMA's run (see ``plmr.gemm_schedules.summa_schedule``): (max step end, first panel)."""
    S = np.full((p_y, p_x), zero_c)
    Lx = np.zeros(p_x)
    DX = np.zeros(p_x)
    mA = np.full((2, p_x), NEVER)
    mB = np.full((2, p_x), NEVER)
    bA = np.full((2, p_x), NEVER)
    bB = np.full((2, p_x), NEVER)
    ys = np.full((6, p_x), NEVER)  # the y owner's sends per column: (first, even start, end) each
    # the y chain's previous stage per column: first, even start, end
    cf = np.zeros(p_x)
    cg = np.zeros(p_x)
    ce = np.zeros(p_x)
    yF = np.full(p_x, NEVER)  # a y relay's first move, when it shares the delivery with x
    yG = np.full(p_x, NEVER)  # where its even moves start
    yE = np.full(p_x, NEVER)  # its end alone
    yE2 = np.full(p_x, NEVER)  # and shared
    yA = np.full(p_x, NEVER)  # where its moves start (as late as they can be)
    A = np.zeros(4)
    B = np.zeros(4)
    first_panel = 0.0
    rows = np.empty(p_y, dtype=np.int64)
    for it in range(-1, S_ - 1):
        panel = it + 1
        ox = panel // q_x
        oy = panel // q_y
        nx = 0
        ny = 0
        if p_y > 1:
            ny = (1 if oy < p_y - 1 else 0) + (1 if oy > 0 else 0)
        # the row order: the y owner first, then up the columns, then down them
        rows[0] = oy
        k = 1
        for y in range(oy + 1, p_y):
            rows[k] = y
            k += 1
        for y in range(oy - 1, -1, -1):
            rows[k] = y
            k += 1
        for ri in range(p_y):
            y = rows[ri]
            if p_y > 1 and ri == p_y - oy:  # the first row below the owner: from its down send
                for x in range(p_x):
                    i = 3 * (ny - 1)
                    cf[x] = ys[i, x] + lat_send - h
                    cg[x] = ys[i + 1, x] + lat_send - h
                    ce[x] = ys[i + 2, x] + lat_send - h
            # a relay (or a line end's Recv) of both lines takes both streams through one delivery:
            # the y stream alone, from the previous stage, before the row
            for x in range(p_x):
                yG[x] = NEVER
                if p_y > 1 and p_x > 1 and y != oy and x != ox:
                    f, g, e = _stage(cf[x] + h, cg[x] + h, ce[x] + h, S[y, x] + c + c, w_b)
                    yF[x] = f
                    yG[x] = g
                    yE[x] = e
                    yE2[x] = e
                    yA[x] = e - w_b
            if p_x > 1:
                nx = _summa_x_row(S, y, ox, p_x, c, h, lat_send, w_a, copy_a, Lx, mA, mB, bA, bB, DX,
                                  yG, yE, yE2, yA, w_b)
            else:
                Lx[0] = 0.0
            nbl = nx if ramp1 else 0
            if p_y > 1 and y == oy:  # the owner's sends, per column, from its own issue
                for x in range(p_x):
                    t = S[y, x] + Lx[x] + c
                    n = 0
                    if oy < p_y - 1:
                        f, g, e = _behind_x(t, t, t + w_b, w_b, bA[0, x], bB[0, x], bA[1, x], bB[1, x],
                                            w_a, nbl)
                        ys[0, x], ys[1, x], ys[2, x] = f, g, e
                        n = 1
                        t = t + c
                    if oy > 0:
                        if n == 1:
                            t = _mx(t, ys[2, x])
                        f, g, e = _behind_x(t, t, t + w_b, w_b, bA[0, x], bB[0, x], bA[1, x], bB[1, x],
                                            w_a, nbl)
                        ys[3 * n, x], ys[3 * n + 1, x], ys[3 * n + 2, x] = f, g, e
                    if oy < p_y - 1:
                        cf[x] = ys[0, x] + lat_send - h
                        cg[x] = ys[1, x] + lat_send - h
                        ce[x] = ys[2, x] + lat_send - h
            for x in range(p_x):
                nm = 0
                for i in range(nx):
                    A[nm], B[nm] = mA[i, x], mB[i, x]
                    nm += 1
                s_old = S[y, x]
                Ly = 0.0
                DY = 0.0
                if p_y > 1:
                    if y == oy:
                        Ly = ((1 if oy > 0 else 0) + (1 if oy < p_y - 1 else 0)) * c + copy_b
                        for i in range(ny):
                            A[nm], B[nm] = ys[3 * i, x], ys[3 * i + 2, x]
                            nm += 1
                        DY = ys[3 * (ny - 1) + 2, x]
                    else:
                        Ly = c
                        if yG[x] > NEVER:  # shared with the x stream (``_summa_x_row``)
                            f, g, end = yF[x], yG[x], yE2[x]
                            mv = yA[x]
                        else:
                            f, g, end = _stage(cf[x] + h, cg[x] + h, ce[x] + h, s_old + Lx[x] + c, w_b)
                            inj = not (y == p_y - 1 and oy < p_y - 1) and not (y == 0 and oy > 0)
                            if inj:
                                f, g, end = _behind_x(f, g, end, w_b, bA[0, x], bB[0, x], bA[1, x],
                                                      bB[1, x], w_a, nbl)
                            mv = end - w_b
                        cf[x], cg[x], ce[x] = f, g, end
                        A[nm], B[nm] = mv, end
                        nm += 1
                        for i in range(1, ny):
                            A[nm], B[nm] = NEVER, NEVER
                            nm += 1
                        DY = end
                start = s_old + Lx[x] + Ly
                if it < 0:
                    G = start
                else:
                    G = _product_end(start, comp, A[0], B[0], A[1], B[1], A[2], B[2], A[3], B[3],
                                     nm if stall_ops else 0)
                if p_x > 1 and p_y > 1:
                    S[y, x] = _mx(_mx(G, DX[x]) + ct, _mx(G, DY)) + 3 * ct
                elif p_x > 1:
                    S[y, x] = _mx(G, DX[x]) + 2 * ct
                elif p_y > 1:
                    S[y, x] = _mx(G, DY) + 2 * ct
                else:
                    S[y, x] = G
        if it < 0:
            first_panel = S.max() - zero_c
    return S.max(), first_panel


@cached_njit(error_model="numpy")
def gemmt_steps(p_y, p_x, c, ct, beta, h, comp, fill, t_c, w_b, buf, stall_ops, fill_stalls, ramp,
                order, pos, pred, lat_b):
    """dist-GEMM-T's run (see ``plmr.gemm_schedules.gemmt_schedule``): the max step end."""
    S = np.zeros((p_y, p_x))
    Sn = np.zeros((p_y, p_x))
    G = np.zeros(p_x)
    DB = np.zeros(p_x)
    Rt = np.zeros(p_x)
    R = np.zeros(p_x)
    east = np.zeros(p_x)
    west = np.zeros(p_x)
    for t in range(p_y):
        shift = t < p_y - 1
        for y in range(p_y):
            r = order[(pos[y] - t) % p_y] % p_x
            pr = pred[y]
            for x in range(p_x):
                s = S[y, x]
                issued = s + (2 * c if shift else 0.0)
                nm = 0
                send = recv = db = 0.0
                if shift:
                    send = s + 2 * c
                    recv = _mx(s + c, (S[pr, x] + 2 * c) + lat_b[y])
                    db = _mx(send, recv) + w_b
                    nm = 2
                start = issued
                if p_x > 1 and x != r:
                    start = _product_end(issued, fill, recv, recv + w_b, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                         1 if (fill_stalls and nm == 2) else 0)
                g = _product_end(start, comp, send, send + w_b, recv, recv + w_b, 0.0, 0.0, 0.0, 0.0,
                                 nm if stall_ops else 0)
                if p_x == 1:
                    Sn[y, x] = _mx(g, db) + 2 * ct if shift else g
                    continue
                G[x] = g
                DB[x] = db
                R[x] = g + c
                Rt[x] = R[x] - (beta if (x == 0 or x == p_x - 1) else 0.0)
            if p_x == 1:
                continue
            m = -np.inf
            for x in range(p_x):
                m = _mx(m, Rt[x] - x * h)
                east[x] = m + x * h
            m = -np.inf
            for x in range(p_x - 1, -1, -1):
                m = _mx(m, Rt[x] + x * h)
                west[x] = m - x * h
            has_w = r > 0
            has_e = r < p_x - 1
            arr_w = east[_mx(r - 1, 0)] + h if has_w else NEVER
            arr_e = west[min(r + 1, p_x - 1)] + h if has_e else NEVER
            g_root = G[r]
            w_start = _mx(g_root + c, arr_w)
            w_end = w_start + t_c if has_w else NEVER
            e_first = _mx(g_root + c * (1 + (1 if has_w else 0)), arr_e)
            if ramp:
                _, e_end = _push(e_first, t_c, w_start if has_w else NEVER, w_end, 0.0, 0.0, 1)
            else:
                e_end = e_first + t_c
            if not has_e:
                e_end = NEVER
            root_free = g_root + c * ((1 if has_w else 0) + (1 if has_e else 0))
            for x in range(p_x):
                if x == r:
                    if shift:
                        j3 = _mx(root_free, DB[x]) + ct
                        Sn[y, x] = _mx(_mx(j3, w_end) + ct, e_end) + 2 * ct
                    else:
                        Sn[y, x] = _mx(_mx(root_free, w_end), e_end) + 2 * ct
                    continue
                if x == 0 or x == p_x - 1:
                    f = R[x]
                elif x < r:
                    f = east[x]
                else:
                    f = west[x]
                side_end = w_end if x < r else e_end
                dc = _mx(f + t_c, side_end - buf * abs(x - r))
                if shift:
                    Sn[y, x] = _mx(_mx(G[x] + c, DB[x]) + ct, dc) + 2 * ct
                else:
                    Sn[y, x] = _mx(G[x] + c, dc) + ct
        S, Sn = Sn, S
    return S.max()
