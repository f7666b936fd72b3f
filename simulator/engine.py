"""The numba hot loop: an event-driven cycle-by-cycle simulation over flat arrays.

Each cycle visits the PEs that have something to do, in ascending PE order; a visit runs the PE's
CE (main thread issues instructions, microthreads move at most one wavelet each), then its router
(at most one wavelet per output port). Every state change schedules the agent it can unblock — a
pushed wavelet schedules its router for the cycle it becomes ready, a freed buffer slot wakes the
blocked producer next cycle — as a bit in a timing wheel of per-slot PE bitmaps (a min-heap for
longer delays); cycles with nothing due are skipped. Every FIFO has one producer and one consumer,
and buffer slots freed in cycle t become visible in t+1 (credit return), so the result does not
depend on the order PEs are visited in (benchmarks/replay_engine.py checks engine changes against
recorded runs).

Status codes in ``out[0]``: see ``ST_*``; ``out`` also returns the cycle and up to three details.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from simulator.compile import (
    F_A_DT, F_A_LEN, F_A_OFF, F_A_STR, F_B_DT, F_B_OFF, F_B_STR, F_C_OFF, F_C_STR, F_COL1,
    F_COL2, F_COST, F_FLAG, F_K, F_M, F_N, F_OP, F_WN, F_X, F_Y, MAX_MICROTHREADS, OP_ADD, OP_COPY,
    OP_EXP, OP_FILL, OP_GEMM, OP_GEMV, OP_MAX, OP_MUL, OP_RAS, OP_RECV, OP_RECVADD, OP_RELAY,
    OP_RSQRT, OP_SCALE, OP_SEND, OP_SILU, OP_TS, OP_WAIT,
)

ST_OK, ST_DEADLOCK, ST_IDLE, ST_MISROUTE, ST_MULTIRX, ST_UTLIMIT, ST_QCONFLICT, ST_LIMIT, ST_LEFTOVER = range(9)

# params indices
P_W, P_H, P_C, P_ALPHA, P_RIN, P_ROUT, P_BETA, P_FUNC, P_MAXIDLE, P_MAXCYC, P_S, P_SQ, P_CAPQ, P_TRACE, P_NSLOT = range(15)
NPARAMS = 15
# out indices
O_ST, O_T, O_I0, O_I1, O_I2, O_TOTAL, O_NTS, O_NTR, O_VCE, O_VRT, O_MOVES, O_RTONLY = range(12)
NOUT = 12

UT = MAX_MICROTHREADS
# Record indices are wrapped in U (unsigned): numba then skips its negative-index wraparound, which
# costs three instructions and a live array length per access (a third of the hot loop's time).
U = np.uint64
UR = 8  # microthread record length


@njit(cache=True)
def round_f16(x):
    """Round to the nearest fp16 value (ties to even), as numpy's float32 → float16 conversion."""
    xd = np.float64(x)
    if xd != xd or xd == 0.0:
        return np.float32(x)
    a = abs(xd)
    if a >= 65520.0:
        return np.float32(math.copysign(np.inf, xd))
    m, e = math.frexp(a)
    ex = e - 1
    if ex < -14:
        ex = -14
    ulp = math.ldexp(1.0, ex - 10)
    y = a / ulp
    f = math.floor(y)
    d = y - f
    if d > 0.5 or (d == 0.5 and (f % 2.0) == 1.0):
        f += 1.0
    return np.float32(math.copysign(f * ulp, xd))


@njit(cache=True)
def _rnd(x, dt):
    if dt == 1:
        return round_f16(np.float32(x))
    return np.float32(x)


@njit(cache=True)
def _compute(ins, row, insf, mem, base):
    """Functional effect of one main-thread compute instruction (numerics: see result.py docs)."""
    op = ins[row, F_OP]
    n = ins[row, F_A_LEN]
    ao = base + ins[row, F_A_OFF]
    asd = ins[row, F_A_STR]
    adt = ins[row, F_A_DT]
    bo = base + ins[row, F_B_OFF]
    bsd = ins[row, F_B_STR]
    bdt = ins[row, F_B_DT]
    co = base + ins[row, F_C_OFF]
    csd = ins[row, F_C_STR]
    if op == OP_ADD or op == OP_MUL or op == OP_MAX:
        for i in range(n):
            a = mem[bo + i * bsd]
            b = mem[co + i * csd]
            if op == OP_ADD:
                v = a + b
            elif op == OP_MUL:
                v = a * b
            else:
                v = a if a >= b else b
            mem[ao + i * asd] = _rnd(v, adt)
    elif op == OP_SCALE:
        f = _rnd(insf[row], bdt)
        for i in range(n):
            mem[ao + i * asd] = _rnd(mem[bo + i * bsd] * f, adt)
    elif op == OP_COPY:
        for i in range(n):
            mem[ao + i * asd] = _rnd(mem[bo + i * bsd], adt)
    elif op == OP_FILL:
        v = _rnd(insf[row], adt)
        for i in range(n):
            mem[ao + i * asd] = v
    elif op == OP_EXP or op == OP_RSQRT or op == OP_SILU:
        one = np.float32(1.0)
        for i in range(n):
            x = mem[bo + i * bsd]
            if op == OP_EXP:
                v = np.float32(math.exp(x))
            elif op == OP_RSQRT:
                v = one / np.float32(math.sqrt(x)) if x >= 0 else np.float32(np.nan)
            else:
                v = x / (one + np.float32(math.exp(-x)))
            mem[ao + i * asd] = _rnd(v, adt)
    elif op == OP_GEMV:
        m = ins[row, F_M]
        nn = ins[row, F_N]
        acc = ins[row, F_Y]
        tmp = np.empty(nn, dtype=np.float32)
        for j in range(nn):
            tmp[j] = mem[ao + j]
        if ins[row, F_X] == 0:  # W row-major: y[j] += x[i] * W[i*n + j], i outer
            for i in range(m):
                xi = mem[bo + i]
                for j in range(nn):
                    tmp[j] = _rnd(tmp[j] + _rnd(xi * mem[co + i * nn + j], acc), acc)
        else:  # W column-major: y[j] += sum_i x[i] * W[j*m + i], sequential in i
            for j in range(nn):
                s = tmp[j]
                for i in range(m):
                    s = _rnd(s + _rnd(mem[bo + i] * mem[co + j * m + i], acc), acc)
                tmp[j] = s
        for j in range(nn):
            mem[ao + j] = _rnd(tmp[j], adt)
    elif op == OP_GEMM:
        m = ins[row, F_M]
        k = ins[row, F_K]
        nn = ins[row, F_N]
        acc = ins[row, F_Y]
        tmp = np.empty(m * nn, dtype=np.float32)
        for j in range(m * nn):
            tmp[j] = mem[ao + j]
        if ins[row, F_X] == 1:  # col: A, C column-major, B row-major; C[:, j] += A[:, l] * B[l, j]
            for l in range(k):
                for j in range(nn):
                    blj = mem[co + l * nn + j]
                    for i in range(m):
                        tmp[j * m + i] = _rnd(tmp[j * m + i] + _rnd(mem[bo + l * m + i] * blj, acc), acc)
        else:  # row: all row-major; C[i, :] += A[i, l] * B[l, :]
            for i in range(m):
                for l in range(k):
                    ail = mem[bo + i * k + l]
                    for j in range(nn):
                        tmp[i * nn + j] = _rnd(tmp[i * nn + j] + _rnd(ail * mem[co + l * nn + j], acc), acc)
        for j in range(m * nn):
            mem[ao + j] = _rnd(tmp[j], adt)


@njit(cache=True, inline="always")
def _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, t, when, pe, kind):
    """Mark agent (pe, kind) due at cycle ``when``: a bit in the wheel slot's bitmap (and its summary
    word) when it is less than ``nslot`` cycles away, else a heap entry. Returns the new heap size."""
    if when - t < nslot:
        s = when & (nslot - 1)
        w = pe >> 6
        b = kind * nslot + s
        bm[U(b * nwd + w)] |= np.int64(1) << (pe & 63)
        sm[U(b * nsm + (w >> 6))] |= np.int64(1) << (w & 63)
        occ[U(s)] = 1
        return hn
    hi = hn
    hp[hi] = (np.int64(when) << 21) | (np.int64(pe) << 1) | kind
    while hi > 0:
        parent = (hi - 1) >> 1
        if hp[parent] <= hp[hi]:
            break
        tmp = hp[parent]
        hp[parent] = hp[hi]
        hp[hi] = tmp
        hi = parent
    return hn + 1


def _specialise(functional: bool):
    """The engine for one mode. ``functional`` is a closure constant, so numba compiles the
    timing-only engine without the payload code (about 8% faster); each variant is cached apart."""

    @njit(cache=True, error_model="numpy")
    def run(params, route_of, r_pe, r_tx, r_rampch, r_down, r_chan0, pe_r0, ch_route, ch_port, ch_cap,
            ins, insf, waitlist, pe_code, pe_len, pe_fbase, mem, mem_base,
            pc, main_free, ut_row, ur, flags,
            ch_head, ch_count, ch_ready, ch_pay, q_head, q_count, q_ready, q_pay,
            busy, finish, links, ts_pe, ts_label, ts_cycle, tr, out, cs, rs, ps):
        W = params[P_W]
        H = params[P_H]
        C = params[P_C]
        alpha = params[P_ALPHA]
        rin = params[P_RIN]
        rout = params[P_ROUT]
        beta = params[P_BETA]
        max_idle = params[P_MAXIDLE]
        max_cycles = params[P_MAXCYC]
        S = params[P_S]
        SQ = params[P_SQ]
        capq = params[P_CAPQ]
        trace_cap = params[P_TRACE]
        SM = S - 1  # ring storage is a power of two >= every capacity
        SQM = SQ - 1
        P = W * H
        nr = r_tx.shape[0]
        nch = ch_route.shape[0]

        # Scheduling: per wheel slot and agent kind (0 = CE, 1 = router) a bitmap over PEs plus a
        # summary bitmap over its words. A slot is visited in ascending PE order, so the records below
        # are read nearly sequentially; setting a bit twice is harmless, so wake-ups need no dedup.
        # Wake-ups nslot or more cycles ahead (long instructions) go to a min-heap of
        # (when << 21 | pe << 1 | kind). A call taking arrays costs atomic reference counts, even
        # inlined, so ``_wake`` serves only the start, the heap drain and instruction timers; the
        # per-wavelet wake-ups are written out in place (marked "# wake:").
        nwd = (P + 63) >> 6
        nsm = (nwd + 63) >> 6
        nslot = params[P_NSLOT]  # a power of two above every fabric latency: those wake-ups skip the heap
        slotm = nslot - 1
        bm = np.zeros(2 * nslot * nwd, dtype=np.int64)
        sm = np.zeros(2 * nslot * nsm, dtype=np.int64)
        occ = np.zeros(nslot, dtype=np.int64)  # slot has a due agent
        hp = np.empty(4 * P + 16, dtype=np.int64)
        hn = 0
        # Hot state is packed in records (one or two cache lines per agent) rather than one array per
        # field: a dense cycle touches every PE, and separate arrays cost one cache miss per field.
        # Records refer to each other by record offset (index × record length), which saves a multiply
        # on every dependent load; the error paths divide back to indices.
        # channel record (CS): head, count, freed-at cycle (at most one pop per cycle), the producer's
        #   back-pressure flag (offset in ps: a router's or, for the ramp, the CE's), capacity, route,
        #   input port if the route has several (else -1: no two-input check), PE of the route, then
        #   the ready-cycle ring (S slots, a power of two)
        CS = 8 + S
        RS = 12 + SQ
        PS = 16
        for ch in range(nch):
            b = ch * CS
            rt = ch_route[ch]
            rpe = r_pe[rt]
            port = ch_port[ch]
            cs[U(b + 2)] = -1
            if port == 4:
                cs[U(b + 3)] = rpe * PS + 11
            else:
                up = rpe - W if port == 0 else rpe + W if port == 1 else rpe + 1 if port == 2 else rpe - 1
                cs[U(b + 3)] = up * PS + 10
            cs[U(b + 4)] = ch_cap[ch]
            cs[U(b + 5)] = rt * RS  # stored as the route record's offset
            cs[U(b + 6)] = port if r_chan0[rt + 1] - r_chan0[rt] > 1 else -1
            cs[U(b + 7)] = rpe
        # route record (RS): queue head, queue count, freed-at cycle, wavelets forwarded, last arrival
        #   cycle, last arrival port, ramp channel, tx mask, downstream channel per port (4; negative:
        #   none), then the CE input-queue ready ring (SQ slots, a power of two)
        for r in range(nr):
            b = r * RS
            rs[U(b + 2)] = -1
            rs[U(b + 4)] = -1
            rs[U(b + 6)] = r_rampch[r] * CS if r_rampch[r] >= 0 else -1
            rs[U(b + 7)] = r_tx[r]
            for p in range(4):
                rs[U(b + 8 + p)] = r_down[r * 4 + p] * CS if r_down[r * 4 + p] >= 0 else r_down[r * 4 + p]
        # PE record (PS = 16: flag offsets decode with >> 4 and & 15): running-microthread mask, main
        #   thread parked on a Wait, pc, code length, main thread free at, running microthreads, busy
        #   until, busy, finish, round-robin start (a channel offset), router/CE back-pressured, done,
        #   first code row, first channel, channel count (int32 when every cycle fits, else int64)
        for pe in range(P):
            b = pe * PS
            ps[U(b + 3)] = pe_len[pe]
            ps[U(b + 13)] = pe_code[pe]
            c0 = r_chan0[pe_r0[pe]]
            ps[U(b + 14)] = c0 * CS
            ps[U(b + 9)] = c0 * CS
            ps[U(b + 15)] = r_chan0[pe_r0[pe + 1]] - c0
        # microthread record (UR): instruction row (-1: slot free), wavelets moved, start cycle, wavelets
        #   to move, opcode, receive route, send route, send route's ramp channel
        for u in range(P * UT):
            ur[U(u * UR)] = -1
        rt_only = 0  # PE-cycles in which the router moved a wavelet while the CE did no work

        unfinished = 0
        for pe in range(P):
            if ps[U(pe * PS + 3)] > 0:
                unfinished += 1
                hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, 0, 0, pe, 0)
            else:
                ps[U(pe * PS + 12)] = 1
        n_ts = 0
        n_tr = 0
        v_ce = 0
        v_rt = 0
        moves = 0
        last_progress = 0
        last_move = -1
        t = 0
        st = ST_OK
        while True:
            if t > max_cycles:
                st = ST_LIMIT
                break
            slot = t & slotm
            while hn > 0 and (hp[0] >> 21) <= t:
                key = hp[0]
                hn -= 1
                hp[0] = hp[hn]
                hi = 0
                while True:
                    lc = 2 * hi + 1
                    if lc >= hn:
                        break
                    c = lc
                    if lc + 1 < hn and hp[lc + 1] < hp[lc]:
                        c = lc + 1
                    if hp[hi] <= hp[c]:
                        break
                    tmp = hp[c]
                    hp[c] = hp[hi]
                    hp[hi] = tmp
                    hi = c
                hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, t, t, (key >> 1) & 0xFFFFF, key & 1)
            progress = False
            cb = slot * nwd
            rb = (nslot + slot) * nwd
            csb = slot * nsm
            rsb = (nslot + slot) * nsm
            for sw in range(nsm):
                sbits = sm[U(csb + sw)] | sm[U(rsb + sw)]
                while sbits != 0:
                    w = (sw << 6) + trailing_zeros(sbits)
                    sbits &= sbits - 1
                    cw = bm[U(cb + w)]
                    bm[U(cb + w)] = 0
                    bits = cw | bm[U(rb + w)]
                    while bits != 0:
                        bb = trailing_zeros(bits)
                        bits &= bits - 1
                        pe = (w << 6) + bb
                        pbit = np.int64(1) << bb
                        # ---------------- CE: main thread, then microthreads ----------------
                        if cw & pbit:
                            v_ce += 1
                            ran = False  # an instruction ran or a microthread completed
                            base = mem_base[U(pe)] if functional else 0
                            if ps[U(pe * PS + 2)] < ps[U(pe * PS + 3)] and ps[U(pe * PS + 4)] <= t and ps[U(pe * PS + 1)] == 0:
                                while ps[U(pe * PS + 2)] < ps[U(pe * PS + 3)]:
                                    row = ps[U(pe * PS + 13)] + ps[U(pe * PS + 2)]
                                    op = ins[U(row), F_OP]
                                    cost = ins[U(row), F_COST]
                                    if op == OP_WAIT:
                                        ok = True
                                        w0 = ins[U(row), F_FLAG]
                                        for wi in range(ins[U(row), F_WN]):
                                            if flags[pe_fbase[U(pe)] + waitlist[w0 + wi]] == 0:
                                                ok = False
                                                break
                                        if not ok:
                                            ps[U(pe * PS + 1)] = 1  # parked until a microthread completes
                                            break
                                    elif op <= OP_RELAY:
                                        rc = ins[U(row), F_COL1]
                                        sc = ins[U(row), F_COL2]
                                        free_s = -1
                                        for s in range(UT):
                                            r2 = ur[U((pe * UT + s) * UR)]
                                            if r2 < 0:
                                                if free_s < 0:
                                                    free_s = s
                                                continue
                                            if rc >= 0 and ins[U(r2), F_COL1] == rc:
                                                st = ST_QCONFLICT
                                                out[O_I0] = pe
                                                out[O_I1] = rc
                                                out[O_I2] = 0
                                            if sc >= 0 and ins[U(r2), F_COL2] == sc:
                                                st = ST_QCONFLICT
                                                out[O_I0] = pe
                                                out[O_I1] = sc
                                                out[O_I2] = 1
                                        if st != ST_OK:
                                            break
                                        if free_s < 0:
                                            st = ST_UTLIMIT
                                            out[O_I0] = pe
                                            break
                                        ub = (pe * UT + free_s) * UR
                                        ur[U(ub)] = row
                                        ur[U(ub + 1)] = 0
                                        ur[U(ub + 2)] = t + cost
                                        ur[U(ub + 3)] = ins[U(row), F_X]
                                        ur[U(ub + 4)] = op
                                        ri = route_of[U(pe * C + rc)] * RS if rc >= 0 else -1
                                        ro = route_of[U(pe * C + sc)] * RS if sc >= 0 else -1
                                        ur[U(ub + 5)] = ri
                                        ur[U(ub + 6)] = ro
                                        ur[U(ub + 7)] = rs[U(ro + 6)] if ro >= 0 else -1
                                        flags[pe_fbase[U(pe)] + ins[U(row), F_FLAG]] = 0
                                        ps[U(pe * PS)] |= 1 << free_s
                                        ps[U(pe * PS + 5)] += 1
                                    elif op == OP_TS:
                                        ts_pe[n_ts] = pe
                                        ts_label[n_ts] = ins[U(row), F_X]
                                        ts_cycle[n_ts] = t
                                        n_ts += 1
                                    elif functional:
                                        _compute(ins, row, insf, mem, base)
                                    # the instruction ran: account its main-thread cycles
                                    ps[U(pe * PS + 2)] += 1
                                    progress = True
                                    ran = True
                                    if n_tr < trace_cap and (cost > 0 or op != OP_WAIT):
                                        tr[n_tr, 0] = pe
                                        tr[n_tr, 1] = 0
                                        tr[n_tr, 2] = row
                                        tr[n_tr, 3] = t
                                        tr[n_tr, 4] = t + cost
                                        n_tr += 1
                                    if cost > 0:
                                        e = t + cost
                                        if e > ps[U(pe * PS + 6)]:
                                            ps[U(pe * PS + 7)] += e - max(t, ps[U(pe * PS + 6)])
                                            ps[U(pe * PS + 6)] = e
                                        if e > ps[U(pe * PS + 8)]:
                                            ps[U(pe * PS + 8)] = e
                                        ps[U(pe * PS + 4)] = e
                                        hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, t, e, pe, 0)
                                        break
                                    if t > ps[U(pe * PS + 8)]:
                                        ps[U(pe * PS + 8)] = t
                                if st != ST_OK:
                                    break
                            ce_moved = False
                            umask = ps[U(pe * PS)]
                            while umask != 0:
                                s = trailing_zeros(umask)
                                umask &= umask - 1
                                ub = (pe * UT + s) * UR
                                if ur[U(ub + 2)] > t:
                                    continue
                                row = ur[U(ub)]
                                op = ur[U(ub + 4)]
                                k = ur[U(ub + 1)]
                                moved = False
                                if op == OP_SEND:
                                    r = ur[U(ub + 6)]
                                    ch = ur[U(ub + 7)]
                                    cnt = cs[U(ch + 1)]
                                    eff = cnt + (cs[U(ch + 2)] == t)
                                    if eff < cs[U(ch + 4)]:
                                        v0 = np.float32(0.0)
                                        v1 = np.float32(0.0)
                                        if functional:
                                            ao = base + ins[U(row), F_A_OFF]
                                            asd = ins[U(row), F_A_STR]
                                            if ins[U(row), F_Y] == 1:
                                                v0 = mem[ao + 2 * k * asd]
                                                if 2 * k + 1 < ins[U(row), F_A_LEN]:
                                                    v1 = mem[ao + (2 * k + 1) * asd]
                                            else:
                                                v0 = mem[ao + k * asd]
                                        # this push into the ramp channel is repeated for RecvAddSend/Relay
                                        # below: one shared tail measured 3-6% slower (docs/BENCHMARKS.md)
                                        ready = t + rin
                                        sl = ch + 8 + ((cs[U(ch)] + cnt) & SM)
                                        cs[U(sl)] = ready
                                        if functional:
                                            ch_pay[U(2 * sl)] = v0
                                            ch_pay[U(2 * sl + 1)] = v1
                                        cs[U(ch + 1)] = cnt + 1
                                        if cs[U(ch + 6)] >= 0:  # a route with several inputs
                                            if rs[U(r + 4)] == ready and rs[U(r + 5)] != 4:
                                                st = ST_MULTIRX
                                                out[O_I0] = pe
                                                out[O_I1] = r // RS
                                                break
                                            rs[U(r + 4)] = ready
                                            rs[U(r + 5)] = 4
                                        wb = nslot + (ready & slotm)  # wake: due at ready
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U(ready & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                        moved = True
                                    elif cnt < cs[U(ch + 4)]:
                                        wb = ((t + 1) & slotm)  # wake: due at t + 1
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U((t + 1) & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    else:
                                        ps[U(pe * PS + 11)] = 1
                                else:
                                    r = ur[U(ub + 5)]
                                    qc = rs[U(r + 1)]
                                    if qc > 0 and rs[U(r + 12 + rs[U(r)])] <= t:
                                        has_out = True
                                        ch = -1
                                        cnt = 0
                                        ro = -1
                                        if op == OP_RAS or op == OP_RELAY:
                                            ro = ur[U(ub + 6)]
                                            ch = ur[U(ub + 7)]
                                            cnt = cs[U(ch + 1)]
                                            eff = cnt + (cs[U(ch + 2)] == t)
                                            if eff >= cs[U(ch + 4)]:
                                                has_out = False
                                                if cnt < cs[U(ch + 4)]:
                                                    wb = ((t + 1) & slotm)  # wake: due at t + 1
                                                    wi = U(wb * nwd + (pe >> 6))
                                                    if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                                        sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                        occ[U((t + 1) & slotm)] = 1
                                                    bm[wi] |= np.int64(1) << (pe & 63)
                                                else:
                                                    ps[U(pe * PS + 11)] = 1
                                        if has_out:
                                            qs = r + 12 + rs[U(r)]
                                            v0 = np.float32(0.0)
                                            v1 = np.float32(0.0)
                                            if functional:
                                                v0 = q_pay[U(2 * qs)]
                                                v1 = q_pay[U(2 * qs + 1)]
                                            rs[U(r)] = (rs[U(r)] + 1) & SQM
                                            rs[U(r + 1)] = qc - 1
                                            rs[U(r + 2)] = t
                                            if ps[U(pe * PS + 10)]:
                                                ps[U(pe * PS + 10)] = 0
                                                wb = nslot + ((t + 1) & slotm)  # wake: due at t + 1
                                                wi = U(wb * nwd + (pe >> 6))
                                                if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                                    sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                    occ[U((t + 1) & slotm)] = 1
                                                bm[wi] |= np.int64(1) << (pe & 63)
                                            if functional and op != OP_RELAY:
                                                ao = base + ins[U(row), F_A_OFF]
                                                asd = ins[U(row), F_A_STR]
                                                adt = ins[U(row), F_A_DT]
                                                n = ins[U(row), F_A_LEN]
                                                if ins[U(row), F_Y] == 1:
                                                    i0 = 2 * k
                                                    npair = 2 if i0 + 1 < n else 1
                                                else:
                                                    i0 = k
                                                    npair = 1
                                                for j in range(npair):
                                                    v = v0 if j == 0 else v1
                                                    a = ao + (i0 + j) * asd
                                                    if op == OP_RECV:
                                                        mem[a] = _rnd(v, adt)
                                                    elif op == OP_RECVADD:
                                                        mem[a] = _rnd(mem[a] + v, adt)
                                                    else:
                                                        sres = _rnd(v + mem[a], adt)
                                                        if j == 0:
                                                            v0 = sres
                                                        else:
                                                            v1 = sres
                                            if ch >= 0:
                                                ready = t + beta + rin
                                                sl = ch + 8 + ((cs[U(ch)] + cnt) & SM)
                                                cs[U(sl)] = ready
                                                if functional:
                                                    ch_pay[U(2 * sl)] = v0
                                                    ch_pay[U(2 * sl + 1)] = v1
                                                cs[U(ch + 1)] = cnt + 1
                                                if cs[U(ch + 6)] >= 0:
                                                    if rs[U(ro + 4)] == ready and rs[U(ro + 5)] != 4:
                                                        st = ST_MULTIRX
                                                        out[O_I0] = pe
                                                        out[O_I1] = ro // RS
                                                        break
                                                    rs[U(ro + 4)] = ready
                                                    rs[U(ro + 5)] = 4
                                                wb = nslot + (ready & slotm)  # wake: due at ready
                                                wi = U(wb * nwd + (pe >> 6))
                                                if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                                    sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                    occ[U(ready & slotm)] = 1
                                                bm[wi] |= np.int64(1) << (pe & 63)
                                            moved = True
                                if moved:
                                    moves += 1
                                    ce_moved = True
                                    k += 1
                                    ur[U(ub + 1)] = k
                                    if k == ur[U(ub + 3)]:
                                        ur[U(ub)] = -1
                                        ps[U(pe * PS)] &= ~(1 << s)
                                        ps[U(pe * PS + 5)] -= 1
                                        ran = True
                                        flags[pe_fbase[U(pe)] + ins[U(row), F_FLAG]] = 1
                                        ps[U(pe * PS + 1)] = 0
                                        if n_tr < trace_cap:
                                            tr[n_tr, 0] = pe
                                            tr[n_tr, 1] = 1 + s
                                            tr[n_tr, 2] = row
                                            tr[n_tr, 3] = ur[U(ub + 2)]
                                            tr[n_tr, 4] = t + 1
                                            n_tr += 1
                            if st != ST_OK:
                                break
                            if ce_moved:  # a microthread moved a wavelet: the CE was busy this cycle
                                progress = True
                                if t >= ps[U(pe * PS + 6)]:
                                    ps[U(pe * PS + 7)] += 1
                                    ps[U(pe * PS + 6)] = t + 1
                                if t + 1 > ps[U(pe * PS + 8)]:
                                    ps[U(pe * PS + 8)] = t + 1
                                wb = ((t + 1) & slotm)  # wake: due at t + 1
                                wi = U(wb * nwd + (pe >> 6))
                                if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                    sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                    occ[U((t + 1) & slotm)] = 1
                                bm[wi] |= np.int64(1) << (pe & 63)
                            # done: the code ran out and no microthread runs (checked when either changed)
                            if ran and ps[U(pe * PS + 12)] == 0 and ps[U(pe * PS + 2)] >= ps[U(pe * PS + 3)] and ps[U(pe * PS + 5)] == 0:
                                ps[U(pe * PS + 12)] = 1
                                unfinished -= 1
                        # ---------------- router (after this PE's CE, which may have woken it) ----------
                        if (bm[U(rb + w)] & pbit) == 0:
                            continue
                        bm[U(rb + w)] &= ~pbit
                        v_rt += 1
                        c0 = ps[U(pe * PS + 14)]
                        n = ps[U(pe * PS + 15)]
                        if n == 0:
                            continue
                        cend = c0 + n * CS
                        nxt_ch = ps[U(pe * PS + 9)]  # round robin: the channel after the last one served
                        used = 0
                        pending = False
                        acted = False
                        for kk in range(n):
                            ch = nxt_ch
                            nxt_ch += CS
                            if nxt_ch == cend:
                                nxt_ch = c0
                            if cs[U(ch + 1)] == 0:
                                continue
                            hs = ch + 8 + cs[U(ch)]
                            if cs[U(hs)] > t:
                                continue
                            r = cs[U(ch + 5)]
                            tx = rs[U(r + 7)]
                            if tx & used:
                                pending = True
                                continue
                            ok = True
                            for p in range(5):
                                if (tx >> p) & 1:
                                    if p == 4:
                                        qc = rs[U(r + 1)]
                                        if qc + (rs[U(r + 2)] == t) >= capq:
                                            ok = False
                                            if qc < capq:
                                                pending = True
                                            else:
                                                ps[U(pe * PS + 10)] = 1
                                            break
                                    else:
                                        d = rs[U(r + 8 + p)]
                                        if d < 0:
                                            st = ST_MISROUTE
                                            out[O_I0] = pe
                                            out[O_I1] = r // RS
                                            out[O_I2] = p * 4 + (d + 2)
                                            break
                                        dc = cs[U(d + 1)]
                                        if dc + (cs[U(d + 2)] == t) >= cs[U(d + 4)]:
                                            ok = False
                                            if dc < cs[U(d + 4)]:
                                                pending = True
                                            else:
                                                ps[U(pe * PS + 10)] = 1
                                            break
                            if st != ST_OK:
                                break
                            if not ok:
                                continue
                            v0 = np.float32(0.0)
                            v1 = np.float32(0.0)
                            if functional:
                                v0 = ch_pay[U(2 * hs)]
                                v1 = ch_pay[U(2 * hs + 1)]
                            cs[U(ch)] = (cs[U(ch)] + 1) & SM
                            cs[U(ch + 1)] -= 1
                            cs[U(ch + 2)] = t
                            f = cs[U(ch + 3)]  # the producer waiting for this slot, if any
                            if ps[U(f)]:
                                ps[U(f)] = 0
                                up = f >> 4
                                wb = (nslot if (f & 15) == 10 else 0) + ((t + 1) & slotm)  # wake: due at t + 1
                                wi = U(wb * nwd + (up >> 6))
                                if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                    sm[U(wb * nsm + (up >> 12))] |= np.int64(1) << ((up >> 6) & 63)
                                    occ[U((t + 1) & slotm)] = 1
                                bm[wi] |= np.int64(1) << (up & 63)
                            rs[U(r + 3)] += 1  # per-link counts are summed from these at the end
                            for p in range(5):
                                if (tx >> p) & 1:
                                    if p == 4:
                                        ready = t + rout
                                        qs = r + 12 + ((rs[U(r)] + rs[U(r + 1)]) & SQM)
                                        rs[U(qs)] = ready
                                        if functional:
                                            q_pay[U(2 * qs)] = v0
                                            q_pay[U(2 * qs + 1)] = v1
                                        rs[U(r + 1)] += 1
                                        wb = (ready & slotm)  # wake: due at ready
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U(ready & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    else:
                                        d = rs[U(r + 8 + p)]
                                        ready = t + alpha
                                        ds = d + 8 + ((cs[U(d)] + cs[U(d + 1)]) & SM)
                                        cs[U(ds)] = ready
                                        if functional:
                                            ch_pay[U(2 * ds)] = v0
                                            ch_pay[U(2 * ds + 1)] = v1
                                        cs[U(d + 1)] += 1
                                        inport = cs[U(d + 6)]
                                        if inport >= 0:
                                            r2 = cs[U(d + 5)]
                                            if rs[U(r2 + 4)] == ready and rs[U(r2 + 5)] != inport:
                                                st = ST_MULTIRX
                                                out[O_I0] = cs[U(d + 7)]
                                                out[O_I1] = r2 // RS
                                                break
                                            rs[U(r2 + 4)] = ready
                                            rs[U(r2 + 5)] = inport
                                        wpe = cs[U(d + 7)]
                                        wb = nslot + (ready & slotm)  # wake: due at ready
                                        wi = U(wb * nwd + (wpe >> 6))
                                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                            sm[U(wb * nsm + (wpe >> 12))] |= np.int64(1) << ((wpe >> 6) & 63)
                                            occ[U(ready & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (wpe & 63)
                            if st != ST_OK:
                                break
                            moves += 1
                            used |= tx
                            if not acted:
                                acted = True
                                progress = True
                                last_move = t
                                if t >= ps[U(pe * PS + 6)]:
                                    rt_only += 1
                            ps[U(pe * PS + 9)] = nxt_ch
                            if cs[U(ch + 1)] > 0 and cs[U(ch + 8 + cs[U(ch)])] <= t:
                                pending = True
                        if st != ST_OK:
                            break
                        if pending:
                            wb = nslot + ((t + 1) & slotm)  # wake: due at t + 1
                            wi = U(wb * nwd + (pe >> 6))
                            if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                occ[U((t + 1) & slotm)] = 1
                            bm[wi] |= np.int64(1) << (pe & 63)
                    if st != ST_OK:
                        break
                if st != ST_OK:
                    break
                sm[U(csb + sw)] = 0
                sm[U(rsb + sw)] = 0
            if st != ST_OK:
                break
            occ[U(slot)] = 0
            # ---------------- end of cycle ----------------
            if progress:
                last_progress = t
            elif t - last_progress > max_idle:
                st = ST_IDLE
                break
            nxt = -1
            for dd in range(1, nslot):
                if occ[U((t + dd) & slotm)] != 0:
                    nxt = t + dd
                    break
            if nxt >= 0:
                if hn > 0 and (hp[0] >> 21) < nxt:
                    nxt = hp[0] >> 21
                # skip the empty cycles in between (max_cycles is checked at the top of a cycle). Nothing
                # is due before nxt: waiting for a wavelet in flight is not idleness, so only cycles in
                # which agents ran and nothing moved count towards the idle limit
                if nxt > max_cycles + 1:
                    nxt = max_cycles + 1
                if nxt > t + 1:
                    last_progress = nxt - 1
                t = nxt
            elif hn > 0:
                # only timers (long instructions) remain: jump; a running instruction is progress
                t = max(t + 1, hp[0] >> 21)
                last_progress = t - 1
            else:
                if unfinished > 0:
                    st = ST_DEADLOCK
                else:
                    for ch in range(nch):  # wavelets still in a router FIFO or a CE input queue?
                        if cs[U(ch * CS + 1)] > 0:
                            st = ST_LEFTOVER
                    for r in range(nr):
                        if rs[U(r * RS + 1)] > 0:
                            st = ST_LEFTOVER
                break
        for u in range(P * UT):
            ut_row[u] = ur[U(u * UR)]
        for pe in range(P):
            b = pe * PS
            pc[pe] = ps[U(b + 2)]
            main_free[pe] = ps[U(b + 4)]
            busy[pe] = ps[U(b + 7)]
            finish[pe] = ps[U(b + 8)]
        for ch in range(nch):
            ch_head[ch] = cs[U(ch * CS)]
            ch_count[ch] = cs[U(ch * CS + 1)]
        for r in range(nr):
            q_head[r] = rs[U(r * RS)]
            q_count[r] = rs[U(r * RS + 1)]
            for p in range(5):
                if (r_tx[r] >> p) & 1:
                    links[r_pe[r] * 5 + p] += rs[U(r * RS + 3)]
        out[O_ST] = st
        out[O_T] = t
        total = last_move + 1
        for pe in range(P):
            if ps[U(pe * PS + 8)] > total:
                total = ps[U(pe * PS + 8)]
        out[O_TOTAL] = total
        out[O_NTS] = n_ts
        out[O_NTR] = n_tr
        out[O_VCE] = v_ce
        out[O_VRT] = v_rt
        out[O_MOVES] = moves
        out[O_RTONLY] = rt_only

    return run


_run_timing = _specialise(False)
_run_functional = _specialise(True)


def run(params, route_of, r_pe, r_tx, r_rampch, r_down, r_chan0, pe_r0, ch_route, ch_port, ch_cap,
        ins, insf, waitlist, pe_code, pe_len, pe_fbase, mem, mem_base,
        pc, main_free, ut_row, ur, flags,
        ch_head, ch_count, ch_ready, ch_pay, q_head, q_count, q_ready, q_pay,
        busy, finish, links, ts_pe, ts_label, ts_cycle, tr, out, cs, rs, ps, functional):
    """Run the engine for ``functional`` or timing-only mode on the lowered program and its state."""
    entry = _run_functional if functional else _run_timing
    entry(params, route_of, r_pe, r_tx, r_rampch, r_down, r_chan0, pe_r0, ch_route, ch_port, ch_cap,
        ins, insf, waitlist, pe_code, pe_len, pe_fbase, mem, mem_base,
        pc, main_free, ut_row, ur, flags,
        ch_head, ch_count, ch_ready, ch_pay, q_head, q_count, q_ready, q_pay,
        busy, finish, links, ts_pe, ts_label, ts_cycle, tr, out, cs, rs, ps)
