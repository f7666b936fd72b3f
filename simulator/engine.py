"""The numba hot loop: an event-driven cycle-by-cycle simulation over flat arrays.

Each cycle visits the PEs that have something to do, in ascending PE order; a visit runs the PE's
CE, then its router (at most one wavelet per output port). Every state change schedules the agent it
can unblock — a pushed wavelet schedules its router for the cycle it becomes ready, a freed buffer
slot wakes the blocked producer next cycle — as a bit in a timing wheel of per-slot PE bitmaps (a
min-heap for longer delays); cycles with nothing due are skipped. Every FIFO has one producer and one
consumer, and buffer slots freed in cycle t become visible in t+1 (credit return), so the result does
not depend on the order PEs are visited in (two exceptions, both about erroneous programs: the
multi-input check compares a wavelet with the route's last arrival, and ``SetRoute`` fails on
wavelets pushed into its channels this cycle; both see the producers visited earlier in the cycle).

That order is one cycle at a time; where a cycle visits many agents, a single-threaded run advances
tiles of the mesh several cycles at a time instead (``_block_tiles_py``: temporal blocking, so a tile's
records are reused while in cache). Its wavefront keeps, for every pair of PEs whose visits touch
common state, the order of their visits that one cycle at a time has, so the results are the same,
including the exceptions above. A run cut in concurrent parts blocks too when neither exception
can arise (``_block_parts_py``).

**The CE** (hardware-and-csl.md §3.3-§3.5) runs one task at a time to completion:

* the *main thread* executes the current task's rows: scalar rows back to back (each
  ``scalar_op_cycles``), then one DSD op, a ``Timestamp`` or the task's end at its exact cycle; a DSD
  op occupies the thread for ``c_op + ⌈n / F⌉`` cycles (``× c_fn`` per element for exp/rsqrt/SiLU);
* when no task runs, the *task picker* starts an activated, unblocked task — local tasks, and data
  tasks whose input queue holds a wavelet (popped into the task's argument) — high priority first,
  then the lowest ID; starting a task costs ``c_task``;
* fabric ops run on *microthreads* (at most ``microthreads`` at once, none two on one colour and
  direction); each moves at most one wavelet per cycle. The CE's ramp takes one wavelet per cycle
  into the router (injection), and the router delivers one per cycle to the CE;
* the main thread and the microthreads share the memory ports, two reads and one write per cycle
  (§1.1): a cycle in which the microthreads' reads and writes leave too few ports for the main
  thread's DSD op stalls that op by one cycle (microthreads have priority);
* completions of async ops ``.activate``/``.unblock`` tasks and wake a parked synchronous issuer;
  their effects are seen from the next cycle.

A launch runs until nothing is scheduled anywhere; ``simulator.run`` then checks the state (parked
threads, blocked tasks, wavelets nobody received, PEs that never reached ``Finish``).

Status codes in ``out[0]``: see ``ST_*``; ``out`` also returns the cycle and up to four details.
"""

from __future__ import annotations

import math
import types

import numpy as np
from numba import config, prange
from numba.cpython.unsafe.numbers import trailing_zeros

if config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 runs the engine as Python (debugging): no intrinsics
    def trailing_zeros(x):  # noqa: F811
        x = int(x)
        return (x & -x).bit_length() - 1

from plmr.cached_jit import cached_njit
from simulator.lower import (
    BIN_CODES, DONE_ACT, F_A, F_B, F_C, F_COL1, F_COL2, F_COST, F_D, F_DONE, F_LEN, F_LENR, F_QIN, F_QOUT,
    F_MULT, F_OP, F_PACK, F_PORTS, F_SREG, F_TGT, F_W, LAST_FABRIC, LAST_SCALAR, LAUNCH_TASK,
    MAX_MICROTHREADS, NTASK, O_DT, O_HI, O_LO, O_OFF, O_OFFR, O_STR, OP_ACT, OP_ADD, OP_BIN, OP_BLK,
    OP_BRZ, OP_CHECKNN, OP_COPY, OP_EXP, OP_FILL, OP_FINISH, OP_FMAC, OP_JMP, OP_JTAB, OP_LOAD,
    OP_LOOPINIT, OP_LOOPNEXT, OP_MAX, OP_MOV, OP_MUL, OP_RAS, OP_RECV, OP_RECVADD, OP_RELAY, OP_RET,
    OP_RELAYSTORE, OP_RSQRT, OP_SCALE, OP_SEL, OP_SEND, OP_SETROUTE, OP_SILU, OP_STORE, OP_TS, OP_UNBLK, OPND0,
    OPND_FIELDS,
)

(ST_OK, ST_IDLE, ST_MISROUTE, ST_MULTIRX, ST_UTLIMIT, ST_QCONFLICT, ST_LIMIT, ST_BOUNDS, ST_NEGCOUNT,
 ST_RUNAWAY, ST_SCALAR, ST_ROUTEBUSY) = range(12)

# params indices
(P_W, P_H, P_C, P_ALPHA, P_RIN, P_ROUT, P_BETA, P_MAXIDLE, P_MAXCYC, P_S, P_SQ, P_CAPQ, P_TRACE,
 P_NSLOT, P_T0, P_CTASK, P_UT, P_NREG, P_CSCAL, P_TSCAP, P_NCFG, P_RPORTS, P_WPORTS, P_RAMP1, P_HB,
 P_BLOCK, P_TILE, P_DENSE, P_COMMUTE) = range(29)
NPARAMS = 29
# out indices
(O_ST, O_T, O_I0, O_I1, O_I2, O_I3, O_TOTAL, O_NTS, O_NTR, O_VCE, O_VRT, O_MOVES, O_RTONLY,
 O_TSDROP, O_BLOCKED) = range(15)
NOUT = 15
# per-segment counters of one visit call (``visit``)
# (A_SEEN: some agent was due; A_TSLO: where a blocked run's timestamps start, -1 otherwise)
(A_HN, A_NTS, A_NTR, A_VCE, A_VRT, A_MOVES, A_RTONLY, A_TSDROP, A_PROG, A_MOVED, A_ST, A_SEEN,
 A_TSLO) = range(13)
NACC = 13

UT = MAX_MICROTHREADS
# Record indices are wrapped in U (unsigned): numba then skips its negative-index wraparound, which
# costs three instructions and a live array length per access (a third of the hot loop's time).
U = np.uint64
UR = 16  # microthread record length
CH = 16  # channel record length: one cache line (a small ring inline); head-ready words use ch >> 4
CH_RING = 12  # where an inline ring starts in a channel record
CH_INLINE = CH - CH_RING  # capacity up to which a channel's ring is inline (a power of two)
PS = 32  # PE record length (flag offsets decode with >> 5 and & 31)
# PE record fields: the first 16 (one cache line in int32 records) are those a visit reads every
# cycle; the number of running microthreads is the popcount of E_UMASK
(E_UMASK, E_PARK, E_PC, E_CUR, E_MFREE, E_INJT, E_BUSYU, E_BUSY, E_FIN, E_RR, E_RBP, E_CBP,
 E_WAKEAT, E_BLOCK, E_C0, E_NCH, E_FINISHED, E_MPORTS) = range(18)
MAX_ROWS_PER_VISIT = 50_000_000  # scalar rows one visit may run before it is a run-away loop
_BIN_DIV, _BIN_MOD, _BIN_FDIV = BIN_CODES["div"], BIN_CODES["mod"], BIN_CODES["fdiv"]


@cached_njit
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


@cached_njit
def _rnd(x, dt):
    if dt == 1:
        return round_f16(np.float32(x))
    return np.float32(x)


@cached_njit(inline="always")
def _bin(code, a, b):
    """Scalar operator ``code`` (lower.BIN_CODES) on float64 registers; NaN flags a division by 0."""
    if code == 0:
        return a + b
    if code == 1:
        return a - b
    if code == 2:
        return a * b
    if code == 3:
        if b == 0.0:
            return np.nan
        return math.floor(a / b)
    if code == 4:
        if b == 0.0:
            return np.nan
        return a - math.floor(a / b) * b
    if code == 5:
        if b == 0.0:
            return np.nan
        return a / b
    if code == 6:
        return a if a <= b else b
    if code == 7:
        return a if a >= b else b
    if code == 8:
        return 1.0 if a < b else 0.0
    if code == 9:
        return 1.0 if a <= b else 0.0
    if code == 10:
        return 1.0 if a > b else 0.0
    if code == 11:
        return 1.0 if a >= b else 0.0
    if code == 12:
        return 1.0 if a == b else 0.0
    if code == 13:
        return 1.0 if a != b else 0.0
    if code == 14:
        return 1.0 if (a != 0.0 and b != 0.0) else 0.0
    if code == 15:
        return 1.0 if (a != 0.0 or b != 0.0) else 0.0
    if code == 16:
        return -a
    return 1.0 if a == 0.0 else 0.0


@cached_njit
def _opnd(ins, row, k, regs, rb, n):
    """(offset relative to the PE's memory base, stride, dtype, in bounds) of operand k for n elements."""
    f = OPND0 + OPND_FIELDS * k
    off = ins[row, f + O_OFF]
    r = ins[row, f + O_OFFR]
    if r >= 0:
        off += np.int64(regs[rb + r])
    sd = ins[row, f + O_STR]
    ok = off >= ins[row, f + O_LO] and off + (n - 1) * sd < ins[row, f + O_HI]
    if n <= 0:
        ok = off >= ins[row, f + O_LO] and off <= ins[row, f + O_HI]
    return off, sd, np.int64(ins[row, f + O_DT]), ok


@cached_njit
def _compute(ins, row, op, n, regs, rb, mem, base):
    """Functional effect of one compute DSD op over n elements (numerics: see result.py docs)."""
    ao, asd, adt, _ = _opnd(ins, row, np.int64(0), regs, rb, n)
    ao += base
    if op == OP_FILL:
        v = _rnd(np.float32(regs[rb + ins[row, F_SREG]]), adt)
        for i in range(n):
            mem[ao + i * asd] = v
        return
    bo, bsd, bdt, _ = _opnd(ins, row, np.int64(1), regs, rb, n)
    bo += base
    if op == OP_FMAC:
        co, csd, cdt, _ = _opnd(ins, row, np.int64(2), regs, rb, n)
        co += base
        s = np.float32(regs[rb + ins[row, F_SREG]])
        for i in range(n):
            mem[ao + i * asd] = _rnd(mem[bo + i * bsd] + _rnd(mem[co + i * csd] * s, adt), adt)
    elif op == OP_ADD or op == OP_MUL or op == OP_MAX:
        co, csd, cdt, _ = _opnd(ins, row, np.int64(2), regs, rb, n)
        co += base
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
        f = _rnd(np.float32(regs[rb + ins[row, F_SREG]]), bdt)
        for i in range(n):
            mem[ao + i * asd] = _rnd(mem[bo + i * bsd] * f, adt)
    elif op == OP_COPY:
        for i in range(n):
            mem[ao + i * asd] = _rnd(mem[bo + i * bsd], adt)
    else:  # OP_EXP, OP_RSQRT, OP_SILU
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


@cached_njit(inline="always")
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


@cached_njit
def _heap_push(hp, hn, key):
    """Push ``key`` (when << 21 | pe << 1 | kind) on the min-heap of far wake-ups; the new size."""
    hi = hn
    hp[hi] = key
    while hi > 0:
        parent = (hi - 1) >> 1
        if hp[parent] <= hp[hi]:
            break
        tmp = hp[parent]
        hp[parent] = hp[hi]
        hp[hi] = tmp
        hi = parent
    return hn + 1


@cached_njit
def _ts_keep_first(ts_pe, ts_label, ts_cycle, lo, hi, pe, label, t):
    """A full timestamp buffer whose entries from ``lo`` on came out of (cycle, PE) order (a blocked
    run): keep the first in that order. Stamp (pe, label, t), the latest of its (cycle, PE) so far,
    replaces the entry of the largest (cycle, PE) after ``lo`` if that is larger (the last of them:
    entries of one (cycle, PE) stay in order). The entries after it move down one, so the new one is
    appended and entries of one visit keep their order."""
    m = -1
    for i in range(lo, hi):
        if m < 0 or ts_cycle[i] > ts_cycle[m] or (ts_cycle[i] == ts_cycle[m] and ts_pe[i] >= ts_pe[m]):
            m = i
    if m < 0 or ts_cycle[m] < t or (ts_cycle[m] == t and ts_pe[m] <= pe):
        return
    for i in range(m, hi - 1):
        ts_pe[i] = ts_pe[i + 1]
        ts_label[i] = ts_label[i + 1]
        ts_cycle[i] = ts_cycle[i + 1]
    ts_pe[hi - 1] = pe
    ts_label[hi - 1] = label
    ts_cycle[hi - 1] = t


@cached_njit
def _heap_pop(hp, hn):
    """Remove the least key from the min-heap ``hp`` of ``hn`` keys and return it (the size is then
    ``hn - 1``)."""
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
    return key


@cached_njit(inline="always")
def _one_down(tx, d0, d1, d2, d3):
    """The record offset of a route's one downstream channel when it sends to exactly one fabric port
    (the router's fast path then reads no route record), else -1."""
    if tx == 1 or tx == 2 or tx == 4 or tx == 8:
        d = d0 if tx == 1 else d1 if tx == 2 else d2 if tx == 4 else d3
        if d >= 0:
            return d * CH
    return -1


@cached_njit
def init_records(W, H, S, SQ, r_pe, r_tx, r_rampch, r_down, r_chan0, pe_r0, ch_route, ch_port, ch_cap,
                 pe_block, cs, rs, ps, ur):
    """Fill the engine's packed records once per loaded program (they persist across launches).

    channel record (CH = 16, one cache line, at ch * CH; layout: ``channel_layout``): head (it
      counts every pop; masked where it indexes the ring), count, freed-at cycle (at most one pop per
      cycle), its producer's back-pressure flag offset in ps (a router's E_RBP or, for the ramp, the
      CE's E_CBP; stored inverted, so negative, while the producer waits for a slot of this channel:
      the pop that frees one wakes it), capacity, route, input port if the route has several
      (else -1: no two-input check), PE of the route, where its ring of ready cycles starts (an
      index into cs), the ring's mask, a copy of the route's tx mask, and the route's one downstream
      channel when it sends to exactly one fabric port (else -1: the router reads the route record;
      ``SetRoute`` rewrites both copies); a ring of up to CH_INLINE slots sits in the record itself
      (fabric channels: a move touches one line per channel), a larger one (S slots, ramp channels)
      after the head-ready words. After the records, one head-ready word per channel at HB + ch:
      the cycle its head wavelet is ready, -1 when empty. A router's scan reads only those words,
      contiguous per PE (9 words for a MeshGEMM PE, one cache line; the headers took 5 lines), and
      a channel's record only when it moves a wavelet
    route record (RS = 12 + SQ): queue head, queue count, freed-at cycle, its channels' heads summed
      at its last ``SetRoute`` (wavelets forwarded since: their heads now, less that), last
      arrival cycle, last arrival port, ramp channel, tx mask, downstream channel per port (4;
      negative: none), then the CE input-queue ready ring (SQ slots, a power of two)
    PE record (PS = 32): the E_* fields; microthread record (UR = 16): instruction row (-1: free),
      wavelets moved, start cycle, wavelets to move, opcode, receive route, send route, send route's
      ramp channel, memory offset, stride, dtype, elements, completion, packed, ports per step."""
    CS = CH
    RS = 12 + SQ
    P = W * H
    nr = r_tx.shape[0]
    nch = ch_route.shape[0]
    HB = nch * CS
    ring = HB + ((nch + CS - 1) // CS) * CS
    for ch in range(nch):
        cs[U(HB + ch)] = -1  # head-ready word: empty
        b = ch * CS
        if ch_cap[ch] <= CH_INLINE:
            cs[U(b + 8)] = b + CH_RING
            cs[U(b + 9)] = CH_INLINE - 1
        else:
            cs[U(b + 8)] = ring
            cs[U(b + 9)] = S - 1
            ring += S
        rt = ch_route[ch]
        rpe = r_pe[rt]
        port = ch_port[ch]
        cs[U(b + 2)] = -1
        if port == 4:
            cs[U(b + 3)] = rpe * PS + E_CBP
        else:
            up = rpe - W if port == 0 else rpe + W if port == 1 else rpe + 1 if port == 2 else rpe - 1
            cs[U(b + 3)] = up * PS + E_RBP
        cs[U(b + 4)] = ch_cap[ch]
        cs[U(b + 5)] = rt * RS
        cs[U(b + 6)] = port if r_chan0[rt + 1] - r_chan0[rt] > 1 else -1
        cs[U(b + 7)] = rpe
        cs[U(b + 10)] = r_tx[rt]
        cs[U(b + 11)] = _one_down(r_tx[rt], r_down[rt * 4], r_down[rt * 4 + 1], r_down[rt * 4 + 2],
                                  r_down[rt * 4 + 3])
    for r in range(nr):
        b = r * RS
        rs[U(b + 2)] = -1
        rs[U(b + 4)] = -1
        rs[U(b + 6)] = r_rampch[r] * CS if r_rampch[r] >= 0 else -1
        rs[U(b + 7)] = r_tx[r]
        for p in range(4):
            rs[U(b + 8 + p)] = r_down[r * 4 + p] * CS if r_down[r * 4 + p] >= 0 else r_down[r * 4 + p]
    for pe in range(P):
        b = pe * PS
        ps[U(b + E_CUR)] = -1
        ps[U(b + E_PC)] = -1
        ps[U(b + E_BLOCK)] = pe_block[pe]
        c0 = r_chan0[pe_r0[pe]]
        ps[U(b + E_C0)] = c0 * CS
        ps[U(b + E_RR)] = c0 * CS
        ps[U(b + E_NCH)] = r_chan0[pe_r0[pe + 1]] - c0
        ps[U(b + E_INJT)] = -1
        ps[U(b + E_WAKEAT)] = -1
    for u in range(P * UT):
        ur[U(u * UR)] = -1


# The engine's three functions are written once and compiled per mode (``_specialise``): they read
# ``functional``, ``visit`` and ``visit_parts`` as globals of a per-mode namespace. Globals are
# compile-time constants to numba (so the timing-only engine carries no payload code) and, unlike a
# closure's cells, are not part of the on-disk cache key (a cell holding a dispatcher pickles
# differently in every process, which would recompile the engine in every process).

def _visit_py(params, w_lo, w_hi, t, acc, route_of, ins, jtab, tk_entry, tk_data, tk_arg, blk_prio,
          blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts_pe, ts_label, ts_cycle,
          ts_base, ts_lim, tr, out, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ,
          hp):
    """One cycle's due agents of the PEs in bitmap words [w_lo, w_hi), in ascending PE order.
    Counters accumulate in ``acc`` (A_*); timestamps go to ``ts_*`` from ``ts_base`` while below
    ``ts_lim``; wake-ups beyond the wheel go to the segment's heap ``hp``."""

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
    t0 = params[P_T0]
    c_task = params[P_CTASK]
    n_ut = params[P_UT]
    NREG = params[P_NREG]
    c_scal = params[P_CSCAL]
    ts_cap = params[P_TSCAP]
    ncfg = params[P_NCFG]
    rports = params[P_RPORTS]
    wports = params[P_WPORTS]
    ramp1 = params[P_RAMP1] != 0  # the ramp takes one wavelet a cycle
    ts_drop = 0
    SQM = SQ - 1
    P = W * H
    CS = CH
    HB = params[P_HB]  # where the head-ready words start (after the channel records): one per channel
    RS = 12 + SQ
    nwd = (P + 63) >> 6
    nsm = (nwd + 63) >> 6
    nslot = params[P_NSLOT]
    slotm = nslot - 1
    ts_cap = ts_lim
    slot = t & slotm
    hn = acc[A_HN]
    ts_lo = acc[A_TSLO]
    seen = False
    n_ts = ts_base
    n_tr = acc[A_NTR]
    v_ce = 0
    v_rt = 0
    moves = 0
    rt_only = 0
    ts_drop = 0
    last_move = -1
    progress = False
    st = ST_OK
    cb = slot * nwd
    rb = (nslot + slot) * nwd
    csb = slot * nsm
    rsb = (nslot + slot) * nsm

    for sw in range(w_lo >> 6, ((w_hi - 1) >> 6) + 1):
        smask = np.int64(-1)  # the summary bits of this segment's words
        lo_b = w_lo - (sw << 6)
        if lo_b > 0:
            smask &= ~((np.int64(1) << lo_b) - 1)
        hi_b = w_hi - (sw << 6)
        if hi_b < 64:
            smask &= (np.int64(1) << hi_b) - 1
        sbits = (sm[U(csb + sw)] | sm[U(rsb + sw)]) & smask
        if sbits != 0:
            seen = True
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
                    pb = pe * PS
                    base = mem_base[U(pe)] if functional else 0
                    rgb = pe * NREG
                    blk = ps[U(pb + E_BLOCK)]
                    mfree = ps[U(pb + E_MFREE)]
                    if mfree > t:
                        # busy: if stalls by the microthreads moved the end past the wake-up
                        # that brought us here, schedule one at the new end
                        if ps[U(pb + E_WAKEAT)] <= t:
                            ps[U(pb + E_WAKEAT)] = mfree
                            wk_ = mfree  # wake (written out: a call taking arrays costs reference counts)
                            if wk_ - t < nslot:
                                wb = wk_ & slotm
                                wi = U(wb * nwd + (pe >> 6))
                                if bm[wi] == 0:
                                    sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                    occ[U(wk_ & slotm)] = 1
                                bm[wi] |= np.int64(1) << (pe & 63)
                            else:
                                hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 0)
                    elif ps[U(pb + E_PARK)] == 0 and blk >= 0:
                        # -------- the main thread: run rows, or pick a task --------
                        budget = MAX_ROWS_PER_VISIT
                        while True:
                            cur = ps[U(pb + E_CUR)]
                            if cur < 0:
                                # task picker: activated and unblocked; data tasks need a wavelet
                                blkm = tblk[U(pe)]
                                cand = tact[U(pe)] & ~blkm
                                dm = blk_data[U(blk)] & ~blkm
                                dready = np.int64(0)
                                while dm != 0:
                                    tid = trailing_zeros(dm)
                                    dm &= dm - 1
                                    r = route_of[U(pe * C + tk_data[U(blk), tid])] * RS
                                    if r >= 0 and rs[U(r + 1)] > 0 and rs[U(r + 12 + rs[U(r)])] <= t:
                                        dready |= np.int64(1) << tid
                                cand |= dready
                                if cand == 0:
                                    break
                                hi_c = cand & blk_prio[U(blk)]
                                tid = trailing_zeros(hi_c if hi_c != 0 else cand)
                                tbit = np.int64(1) << tid
                                if dready & tbit:
                                    r = route_of[U(pe * C + tk_data[U(blk), tid])] * RS
                                    qs = r + 12 + rs[U(r)]
                                    if functional:
                                        regs[U(rgb + tk_arg[U(blk), tid])] = q_pay[U(2 * qs)]
                                    rs[U(r)] = (rs[U(r)] + 1) & SQM
                                    rs[U(r + 1)] -= 1
                                    rs[U(r + 2)] = t
                                    if ps[U(pb + E_RBP)]:
                                        ps[U(pb + E_RBP)] = 0
                                        wk_ = t + 1  # wake (written out: a call taking arrays costs reference counts)
                                        if wk_ - t < nslot:
                                            wb = 1 * nslot + (wk_ & slotm)
                                            wi = U(wb * nwd + (pe >> 6))
                                            if bm[wi] == 0:
                                                sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                occ[U(wk_ & slotm)] = 1
                                            bm[wi] |= np.int64(1) << (pe & 63)
                                        else:
                                            hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 1)
                                else:
                                    tact[U(pe)] &= ~tbit
                                ps[U(pb + E_CUR)] = tid
                                ps[U(pb + E_PC)] = tk_entry[U(blk), tid]
                                progress = True
                                if n_tr < trace_cap:
                                    tr[n_tr, 0] = pe
                                    tr[n_tr, 1] = 0
                                    tr[n_tr, 2] = -1 - tid
                                    tr[n_tr, 3] = t
                                    tr[n_tr, 4] = t + c_task
                                    n_tr += 1
                                if c_task > 0:
                                    e = t + c_task
                                    if e > ps[U(pb + E_BUSYU)]:
                                        ps[U(pb + E_BUSY)] += e - max(t, ps[U(pb + E_BUSYU)])
                                        ps[U(pb + E_BUSYU)] = e
                                    if e > ps[U(pb + E_FIN)]:
                                        ps[U(pb + E_FIN)] = e
                                    ps[U(pb + E_MFREE)] = e
                                    ps[U(pb + E_MPORTS)] = 0
                                    ps[U(pb + E_WAKEAT)] = e
                                    wk_ = e  # wake (written out: a call taking arrays costs reference counts)
                                    if wk_ - t < nslot:
                                        wb = wk_ & slotm
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U(wk_ & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    else:
                                        hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 0)
                                    break
                                continue
                            # run the current task's rows
                            tv = t
                            stop = False
                            while True:
                                row = ps[U(pb + E_PC)]
                                op = ins[U(row), F_OP]
                                budget -= 1
                                if budget <= 0:
                                    st = ST_RUNAWAY
                                    out[O_I0] = pe
                                    out[O_I1] = row
                                    stop = True
                                    break
                                if op <= LAST_SCALAR:
                                    tv += c_scal
                                    nxt = row + 1
                                    if op == OP_MOV:
                                        regs[U(rgb + ins[U(row), F_A])] = regs[U(rgb + ins[U(row), F_B])]
                                    elif op == OP_BIN:
                                        v = _bin(ins[U(row), F_D], regs[U(rgb + ins[U(row), F_B])],
                                                 regs[U(rgb + ins[U(row), F_C])])
                                        if v != v and functional and (
                                                ins[U(row), F_D] == _BIN_DIV or ins[U(row), F_D] == _BIN_MOD
                                                or ins[U(row), F_D] == _BIN_FDIV):
                                            st = ST_SCALAR
                                            out[O_I0] = pe
                                            out[O_I1] = row
                                            stop = True
                                            break
                                        regs[U(rgb + ins[U(row), F_A])] = v
                                    elif op == OP_SEL:
                                        if regs[U(rgb + ins[U(row), F_B])] != 0.0:
                                            regs[U(rgb + ins[U(row), F_A])] = regs[U(rgb + ins[U(row), F_C])]
                                        else:
                                            regs[U(rgb + ins[U(row), F_A])] = regs[U(rgb + ins[U(row), F_D])]
                                    elif op == OP_JMP:
                                        nxt = ins[U(row), F_TGT]
                                    elif op == OP_BRZ:
                                        if regs[U(rgb + ins[U(row), F_A])] == 0.0:
                                            nxt = ins[U(row), F_TGT]
                                    elif op == OP_JTAB:
                                        k = np.int64(regs[U(rgb + ins[U(row), F_A])]) - ins[U(row), F_D]
                                        if 0 <= k < ins[U(row), F_C]:
                                            nxt = jtab[U(ins[U(row), F_B] + k)]
                                        else:
                                            nxt = ins[U(row), F_TGT]
                                    elif op == OP_LOOPINIT:
                                        cnt = regs[U(rgb + ins[U(row), F_B])]
                                        if cnt < 0:
                                            st = ST_NEGCOUNT
                                            out[O_I0] = pe
                                            out[O_I1] = row
                                            out[O_I2] = np.int64(cnt)
                                            stop = True
                                            break
                                        regs[U(rgb + ins[U(row), F_A])] = 0.0
                                        if cnt < 1.0:
                                            nxt = ins[U(row), F_TGT]
                                    elif op == OP_LOOPNEXT:
                                        ra = U(rgb + ins[U(row), F_A])
                                        regs[ra] += 1.0
                                        if regs[ra] < regs[U(rgb + ins[U(row), F_B])]:
                                            nxt = ins[U(row), F_TGT]
                                    elif op == OP_CHECKNN:
                                        cnt = regs[U(rgb + ins[U(row), F_A])]
                                        if cnt < 0:
                                            st = ST_NEGCOUNT
                                            out[O_I0] = pe
                                            out[O_I1] = row
                                            out[O_I2] = np.int64(cnt)
                                            stop = True
                                            break
                                    elif op == OP_LOAD or op == OP_STORE:
                                        fo_ = OPND0 + OPND_FIELDS * 0  # operand 0 (written out: see the wake-ups)
                                        off = ins[U(row), fo_ + O_OFF]
                                        if ins[U(row), fo_ + O_OFFR] >= 0:
                                            off += np.int64(regs[U(rgb + ins[U(row), fo_ + O_OFFR])])
                                        sd = ins[U(row), fo_ + O_STR]
                                        dt = np.int64(ins[U(row), fo_ + O_DT])
                                        if 1 > 0:
                                            ok = off >= ins[U(row), fo_ + O_LO] and off + (1 - 1) * sd < ins[U(row), fo_ + O_HI]
                                        else:
                                            ok = off >= ins[U(row), fo_ + O_LO] and off <= ins[U(row), fo_ + O_HI]
                                        if not ok:
                                            st = ST_BOUNDS
                                            out[O_I0] = pe
                                            out[O_I1] = row
                                            out[O_I2] = 0
                                            out[O_I3] = off
                                            stop = True
                                            break
                                        if op == OP_LOAD:
                                            regs[U(rgb + ins[U(row), F_A])] = mem[base + off] if functional else 0.0
                                        elif functional:
                                            mem[base + off] = _rnd(np.float32(regs[U(rgb + ins[U(row), F_B])]), dt)
                                    elif op == OP_ACT:
                                        tact[U(pe)] |= np.int64(1) << ins[U(row), F_A]
                                    elif op == OP_BLK:
                                        tblk[U(pe)] |= np.int64(1) << ins[U(row), F_A]
                                    elif op == OP_UNBLK:
                                        tblk[U(pe)] &= ~(np.int64(1) << ins[U(row), F_A])
                                    else:  # OP_FINISH
                                        ps[U(pb + E_FINISHED)] += 1
                                    ps[U(pb + E_PC)] = nxt
                                    continue
                                if op >= OP_FMAC and ps[U(pb + E_UMASK)] == 0:
                                    # a compute op with no microthread running touches nothing
                                    # another agent sees and cannot be stalled: run it at its
                                    # virtual time and go on (one visit per compute run)
                                    n = ins[U(row), F_LEN]
                                    if ins[U(row), F_LENR] >= 0:
                                        n = np.int64(regs[U(rgb + ins[U(row), F_LENR])])
                                    nops = 3 if (op == OP_FMAC or op == OP_ADD or op == OP_MUL or op == OP_MAX) \
                                        else (1 if op == OP_FILL else 2)
                                    bad = -1
                                    for k in range(nops):
                                        fo_ = OPND0 + OPND_FIELDS * k  # operand k (written out: see the wake-ups)
                                        off = ins[U(row), fo_ + O_OFF]
                                        if ins[U(row), fo_ + O_OFFR] >= 0:
                                            off += np.int64(regs[U(rgb + ins[U(row), fo_ + O_OFFR])])
                                        sd = ins[U(row), fo_ + O_STR]
                                        dt = np.int64(ins[U(row), fo_ + O_DT])
                                        if n > 0:
                                            ok = off >= ins[U(row), fo_ + O_LO] and off + (n - 1) * sd < ins[U(row), fo_ + O_HI]
                                        else:
                                            ok = off >= ins[U(row), fo_ + O_LO] and off <= ins[U(row), fo_ + O_HI]
                                        if not ok or n < 0:
                                            bad = k
                                            out[O_I3] = off
                                            break
                                    if bad >= 0:
                                        st = ST_BOUNDS
                                        out[O_I0] = pe
                                        out[O_I1] = row
                                        out[O_I2] = bad
                                        stop = True
                                        break
                                    if functional:
                                        _compute(ins, row, op, n, regs, rgb, mem, base)
                                    wdt = ins[U(row), F_W]
                                    cost = ins[U(row), F_COST] + ((n + wdt - 1) // wdt) * ins[U(row), F_MULT]
                                    e = tv + cost
                                    if e > ps[U(pb + E_BUSYU)]:
                                        ps[U(pb + E_BUSY)] += e - max(tv, ps[U(pb + E_BUSYU)])
                                        ps[U(pb + E_BUSYU)] = e
                                    if e > ps[U(pb + E_FIN)]:
                                        ps[U(pb + E_FIN)] = e
                                    if n_tr < trace_cap and cost > 0:
                                        tr[n_tr, 0] = pe
                                        tr[n_tr, 1] = 0
                                        tr[n_tr, 2] = row
                                        tr[n_tr, 3] = tv
                                        tr[n_tr, 4] = e
                                        n_tr += 1
                                    tv = e
                                    progress = True
                                    ps[U(pb + E_PC)] = row + 1
                                    continue
                                # rows below run at their exact cycle
                                if tv > t:
                                    ps[U(pb + E_MFREE)] = tv
                                    ps[U(pb + E_MPORTS)] = 0
                                    ps[U(pb + E_WAKEAT)] = tv
                                    wk_ = tv  # wake (written out: a call taking arrays costs reference counts)
                                    if wk_ - t < nslot:
                                        wb = wk_ & slotm
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U(wk_ & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    else:
                                        hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 0)
                                    stop = True
                                    break
                                progress = True
                                if op == OP_RET:
                                    ps[U(pb + E_CUR)] = -1
                                    ps[U(pb + E_PC)] = -1
                                    if t > ps[U(pb + E_FIN)]:
                                        ps[U(pb + E_FIN)] = t
                                    break  # back to the picker
                                cost = ins[U(row), F_COST]
                                mports = 0
                                if op == OP_SETROUTE:
                                    # install route configuration B of colour A (teardown: the
                                    # colour must carry no wavelets in this router)
                                    r = route_of[U(pe * C + ins[U(row), F_A])]
                                    k = ins[U(row), F_B]
                                    busy_r = rs[U(r * RS + 1)] > 0
                                    for ch in range(r_chan0[r], r_chan0[r + 1]):
                                        if cs[U(ch * CS + 1)] > 0:
                                            busy_r = True
                                    if busy_r:
                                        st = ST_ROUTEBUSY
                                        out[O_I0] = pe
                                        out[O_I1] = row
                                        out[O_I2] = ins[U(row), F_A]
                                        stop = True
                                        break
                                    rb_ = r * RS
                                    oldtx = rs[U(rb_ + 7)]
                                    # forwarded so far (pops of the route's channels since the last
                                    # change, modulo 2^32: int32 heads wrap) count on the old ports
                                    pops = np.int64(0)
                                    for ch in range(r_chan0[r], r_chan0[r + 1]):
                                        pops += cs[U(ch * CS)]
                                    fwd = (pops - rs[U(rb_ + 3)]) & 0xFFFFFFFF
                                    for p in range(5):
                                        if (oldtx >> p) & 1:
                                            link_acc[U(pe * 5 + p)] += fwd
                                    rs[U(rb_ + 3)] = pops
                                    newtx = r_cfg_tx[U(r * ncfg + k)]
                                    rs[U(rb_ + 7)] = newtx
                                    for p in range(4):
                                        d = r_cfg_down[U((r * ncfg + k) * 4 + p)]
                                        rs[U(rb_ + 8 + p)] = d * CS if d >= 0 else d
                                    kd = (r * ncfg + k) * 4
                                    one = _one_down(newtx, r_cfg_down[U(kd)], r_cfg_down[U(kd + 1)],
                                                    r_cfg_down[U(kd + 2)], r_cfg_down[U(kd + 3)])
                                    for ch in range(r_chan0[r], r_chan0[r + 1]):  # the channels' copies
                                        cs[U(ch * CS + 10)] = newtx
                                        cs[U(ch * CS + 11)] = one
                                    wk_ = t + 1  # wake (written out: a call taking arrays costs reference counts)
                                    if wk_ - t < nslot:
                                        wb = 1 * nslot + (wk_ & slotm)
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U(wk_ & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    else:
                                        hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 1)
                                elif op == OP_TS:
                                    if n_ts < ts_cap:
                                        ts_pe[n_ts] = pe
                                        ts_label[n_ts] = ins[U(row), F_A]
                                        ts_cycle[n_ts] = t
                                        n_ts += 1
                                    else:
                                        ts_drop += 1
                                        if ts_lo >= 0:  # blocked: keep the first in (cycle, PE) order
                                            _ts_keep_first(ts_pe, ts_label, ts_cycle, ts_lo, n_ts, pe,
                                                           ins[U(row), F_A], t)
                                elif op <= LAST_FABRIC:
                                    # issue a fabric op on a free microthread
                                    rc = ins[U(row), F_COL1]
                                    sc = ins[U(row), F_COL2]
                                    qi = ins[U(row), F_QIN]
                                    qo = ins[U(row), F_QOUT]
                                    free_s = -1
                                    for s in range(UT):
                                        r2 = ur[U((pe * UT + s) * UR)]
                                        if r2 < 0:
                                            if free_s < 0 and s < n_ut:
                                                free_s = s
                                            continue
                                        # two running ops may share neither a colour nor a queue
                                        if rc >= 0 and (ins[U(r2), F_COL1] == rc or ins[U(r2), F_QIN] == qi):
                                            st = ST_QCONFLICT
                                            out[O_I0] = pe
                                            out[O_I1] = rc
                                            out[O_I2] = 0
                                            out[O_I3] = row
                                        if sc >= 0 and (ins[U(r2), F_COL2] == sc or ins[U(r2), F_QOUT] == qo):
                                            st = ST_QCONFLICT
                                            out[O_I0] = pe
                                            out[O_I1] = sc
                                            out[O_I2] = 1
                                            out[O_I3] = row
                                    if st != ST_OK:
                                        stop = True
                                        break
                                    if free_s < 0:
                                        st = ST_UTLIMIT
                                        out[O_I0] = pe
                                        out[O_I1] = n_ut
                                        stop = True
                                        break
                                    n = ins[U(row), F_LEN]
                                    if ins[U(row), F_LENR] >= 0:
                                        n = np.int64(regs[U(rgb + ins[U(row), F_LENR])])
                                    moff = 0
                                    msd = 0
                                    mdt = 0
                                    mports_u = 0
                                    if op != OP_RELAY:
                                        fo_ = OPND0 + OPND_FIELDS * 0  # operand 0 (written out: see the wake-ups)
                                        moff = ins[U(row), fo_ + O_OFF]
                                        if ins[U(row), fo_ + O_OFFR] >= 0:
                                            moff += np.int64(regs[U(rgb + ins[U(row), fo_ + O_OFFR])])
                                        msd = ins[U(row), fo_ + O_STR]
                                        mdt = np.int64(ins[U(row), fo_ + O_DT])
                                        if n > 0:
                                            ok = moff >= ins[U(row), fo_ + O_LO] and moff + (n - 1) * msd < ins[U(row), fo_ + O_HI]
                                        else:
                                            ok = moff >= ins[U(row), fo_ + O_LO] and moff <= ins[U(row), fo_ + O_HI]
                                        if not ok or n < 1:
                                            st = ST_BOUNDS
                                            out[O_I0] = pe
                                            out[O_I1] = row
                                            out[O_I2] = 0
                                            out[O_I3] = moff
                                            stop = True
                                            break
                                        if op == OP_SEND or op == OP_RAS:
                                            mports_u = 4  # one read per wavelet
                                        elif op == OP_RECV:
                                            mports_u = 1  # one write
                                        else:
                                            mports_u = 5  # RecvAdd, RelayStore: read + write
                                    elif n < 1:
                                        st = ST_NEGCOUNT
                                        out[O_I0] = pe
                                        out[O_I1] = row
                                        out[O_I2] = n
                                        stop = True
                                        break
                                    total = (n + 1) // 2 if ins[U(row), F_PACK] == 1 else n
                                    ub = (pe * UT + free_s) * UR
                                    ur[U(ub)] = row
                                    ur[U(ub + 1)] = 0
                                    ur[U(ub + 2)] = t + cost
                                    ur[U(ub + 3)] = total
                                    ur[U(ub + 4)] = op
                                    ri = route_of[U(pe * C + rc)] * RS if rc >= 0 else -1
                                    ro = route_of[U(pe * C + sc)] * RS if sc >= 0 else -1
                                    ur[U(ub + 5)] = ri
                                    ur[U(ub + 6)] = ro
                                    ur[U(ub + 7)] = rs[U(ro + 6)] if ro >= 0 else -1
                                    ur[U(ub + 8)] = base + moff
                                    ur[U(ub + 9)] = msd
                                    ur[U(ub + 10)] = mdt
                                    ur[U(ub + 11)] = n
                                    ur[U(ub + 12)] = ins[U(row), F_DONE]
                                    ur[U(ub + 13)] = ins[U(row), F_PACK]
                                    ur[U(ub + 14)] = mports_u
                                    ps[U(pb + E_UMASK)] |= 1 << free_s
                                    if ins[U(row), F_DONE] < 0:  # synchronous: park until it completes
                                        ps[U(pb + E_PARK)] = free_s + 1
                                    if cost > 0:  # the microthread starts then: visit the CE
                                        wk_ = t + cost  # wake (written out: a call taking arrays costs reference counts)
                                        if wk_ - t < nslot:
                                            wb = wk_ & slotm
                                            wi = U(wb * nwd + (pe >> 6))
                                            if bm[wi] == 0:
                                                sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                occ[U(wk_ & slotm)] = 1
                                            bm[wi] |= np.int64(1) << (pe & 63)
                                        else:
                                            hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 0)
                                else:
                                    # a compute DSD op on the main thread
                                    n = ins[U(row), F_LEN]
                                    if ins[U(row), F_LENR] >= 0:
                                        n = np.int64(regs[U(rgb + ins[U(row), F_LENR])])
                                    nops = 3 if (op == OP_FMAC or op == OP_ADD or op == OP_MUL or op == OP_MAX) \
                                        else (1 if op == OP_FILL else 2)
                                    bad = -1
                                    for k in range(nops):
                                        fo_ = OPND0 + OPND_FIELDS * k  # operand k (written out: see the wake-ups)
                                        off = ins[U(row), fo_ + O_OFF]
                                        if ins[U(row), fo_ + O_OFFR] >= 0:
                                            off += np.int64(regs[U(rgb + ins[U(row), fo_ + O_OFFR])])
                                        sd = ins[U(row), fo_ + O_STR]
                                        dt = np.int64(ins[U(row), fo_ + O_DT])
                                        if n > 0:
                                            ok = off >= ins[U(row), fo_ + O_LO] and off + (n - 1) * sd < ins[U(row), fo_ + O_HI]
                                        else:
                                            ok = off >= ins[U(row), fo_ + O_LO] and off <= ins[U(row), fo_ + O_HI]
                                        if not ok or n < 0:
                                            bad = k
                                            out[O_I3] = off
                                            break
                                    if bad >= 0:
                                        st = ST_BOUNDS
                                        out[O_I0] = pe
                                        out[O_I1] = row
                                        out[O_I2] = bad
                                        stop = True
                                        break
                                    if functional:
                                        _compute(ins, row, op, n, regs, rgb, mem, base)
                                    wdt = ins[U(row), F_W]
                                    cost += ((n + wdt - 1) // wdt) * ins[U(row), F_MULT]
                                    mports = ins[U(row), F_PORTS]
                                if n_tr < trace_cap and cost > 0:
                                    tr[n_tr, 0] = pe
                                    tr[n_tr, 1] = 0
                                    tr[n_tr, 2] = row
                                    tr[n_tr, 3] = t
                                    tr[n_tr, 4] = t + cost
                                    n_tr += 1
                                ps[U(pb + E_PC)] = row + 1
                                if t > ps[U(pb + E_FIN)]:
                                    ps[U(pb + E_FIN)] = t
                                if cost > 0:
                                    e = t + cost
                                    if e > ps[U(pb + E_BUSYU)]:
                                        ps[U(pb + E_BUSY)] += e - max(t, ps[U(pb + E_BUSYU)])
                                        ps[U(pb + E_BUSYU)] = e
                                    if e > ps[U(pb + E_FIN)]:
                                        ps[U(pb + E_FIN)] = e
                                    ps[U(pb + E_MFREE)] = e
                                    ps[U(pb + E_MPORTS)] = mports
                                    if ps[U(pb + E_PARK)] == 0:
                                        ps[U(pb + E_WAKEAT)] = e
                                        wk_ = e  # wake (written out: a call taking arrays costs reference counts)
                                        if wk_ - t < nslot:
                                            wb = wk_ & slotm
                                            wi = U(wb * nwd + (pe >> 6))
                                            if bm[wi] == 0:
                                                sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                occ[U(wk_ & slotm)] = 1
                                            bm[wi] |= np.int64(1) << (pe & 63)
                                        else:
                                            hn = _heap_push(hp, hn, (np.int64(wk_) << 21) | (np.int64(pe) << 1) | 0)
                                    stop = True
                                    break
                                if ps[U(pb + E_PARK)] != 0:
                                    stop = True
                                    break
                            if stop:
                                break
                        if st != ST_OK:
                            break
                    # -------- microthreads: at most one wavelet each, one injection per PE --------
                    ce_moved = False
                    umask = ps[U(pb + E_UMASK)]
                    used = 0  # memory ports used this cycle: reads * 4 + writes
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
                            if ramp1 and ps[U(pb + E_INJT)] == t:  # the ramp took a wavelet this cycle
                                wb = ((t + 1) & slotm)  # wake: due at t + 1
                                wi = U(wb * nwd + (pe >> 6))
                                if bm[wi] == 0:
                                    sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                    occ[U((t + 1) & slotm)] = 1
                                bm[wi] |= np.int64(1) << (pe & 63)
                                continue
                            r = ur[U(ub + 6)]
                            ch = ur[U(ub + 7)]
                            cnt = cs[U(ch + 1)]
                            eff = cnt + (cs[U(ch + 2)] == t)
                            if eff < cs[U(ch + 4)]:
                                v0 = np.float32(0.0)
                                v1 = np.float32(0.0)
                                if functional:
                                    ao = ur[U(ub + 8)]
                                    asd = ur[U(ub + 9)]
                                    if ur[U(ub + 13)] == 1:
                                        v0 = mem[ao + 2 * k * asd]
                                        if 2 * k + 1 < ur[U(ub + 11)]:
                                            v1 = mem[ao + (2 * k + 1) * asd]
                                    else:
                                        v0 = mem[ao + k * asd]
                                # this push into the ramp channel is repeated for RecvAddSend/Relay
                                # below: one shared tail measured 3-6% slower (docs/BENCHMARKS.md)
                                ready = t + rin
                                sl = cs[U(ch + 8)] + ((cs[U(ch)] + cnt) & cs[U(ch + 9)])
                                cs[U(sl)] = ready
                                if functional:
                                    ch_pay[U(2 * sl)] = v0
                                    ch_pay[U(2 * sl + 1)] = v1
                                cs[U(ch + 1)] = cnt + 1
                                if cnt == 0:  # the new head
                                    cs[U(HB + (ch >> 4))] = ready
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
                                ps[U(pb + E_INJT)] = t
                                moved = True
                            elif cnt < cs[U(ch + 4)]:
                                wb = ((t + 1) & slotm)  # wake: due at t + 1
                                wi = U(wb * nwd + (pe >> 6))
                                if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                    sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                    occ[U((t + 1) & slotm)] = 1
                                bm[wi] |= np.int64(1) << (pe & 63)
                            elif cs[U(ch + 3)] >= 0:  # full: the pop that frees a slot wakes the CE
                                cs[U(ch + 3)] = ~cs[U(ch + 3)]
                        else:
                            r = ur[U(ub + 5)]
                            qc = rs[U(r + 1)]
                            if qc > 0 and rs[U(r + 12 + rs[U(r)])] <= t:
                                has_out = True
                                ch = -1
                                cnt = 0
                                ro = -1
                                if op == OP_RAS or op == OP_RELAY or op == OP_RELAYSTORE:
                                    ro = ur[U(ub + 6)]
                                    ch = ur[U(ub + 7)]
                                    cnt = cs[U(ch + 1)]
                                    eff = cnt + (cs[U(ch + 2)] == t)
                                    if ramp1 and ps[U(pb + E_INJT)] == t:  # the ramp took one this cycle
                                        has_out = False
                                        wb = ((t + 1) & slotm)  # wake: due at t + 1
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U((t + 1) & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    elif eff >= cs[U(ch + 4)]:
                                        has_out = False
                                        if cnt < cs[U(ch + 4)]:
                                            wb = ((t + 1) & slotm)  # wake: due at t + 1
                                            wi = U(wb * nwd + (pe >> 6))
                                            if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                                sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                                occ[U((t + 1) & slotm)] = 1
                                            bm[wi] |= np.int64(1) << (pe & 63)
                                        elif cs[U(ch + 3)] >= 0:  # full: flag it in the channel
                                            cs[U(ch + 3)] = ~cs[U(ch + 3)]
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
                                    if ps[U(pb + E_RBP)]:
                                        ps[U(pb + E_RBP)] = 0
                                        wb = nslot + ((t + 1) & slotm)  # wake: due at t + 1
                                        wi = U(wb * nwd + (pe >> 6))
                                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                                            occ[U((t + 1) & slotm)] = 1
                                        bm[wi] |= np.int64(1) << (pe & 63)
                                    if functional and op != OP_RELAY:
                                        ao = ur[U(ub + 8)]
                                        asd = ur[U(ub + 9)]
                                        adt = np.int64(ur[U(ub + 10)])
                                        n = ur[U(ub + 11)]
                                        if ur[U(ub + 13)] == 1:
                                            i0 = 2 * k
                                            npair = 2 if i0 + 1 < n else 1
                                        else:
                                            i0 = k
                                            npair = 1
                                        for j in range(npair):
                                            v = v0 if j == 0 else v1
                                            a = ao + (i0 + j) * asd
                                            if op == OP_RECV or op == OP_RELAYSTORE:
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
                                        sl = cs[U(ch + 8)] + ((cs[U(ch)] + cnt) & cs[U(ch + 9)])
                                        cs[U(sl)] = ready
                                        if functional:
                                            ch_pay[U(2 * sl)] = v0
                                            ch_pay[U(2 * sl + 1)] = v1
                                        cs[U(ch + 1)] = cnt + 1
                                        if cnt == 0:  # the new head
                                            cs[U(HB + (ch >> 4))] = ready
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
                                        ps[U(pb + E_INJT)] = t
                                    moved = True
                        if moved:
                            moves += 1
                            ce_moved = True
                            used += ur[U(ub + 14)]
                            k += 1
                            ur[U(ub + 1)] = k
                            if k == ur[U(ub + 3)]:
                                done = ur[U(ub + 12)]
                                ur[U(ub)] = -1
                                ps[U(pb + E_UMASK)] &= ~(1 << s)
                                if done > 0:
                                    tbit = np.int64(1) << (done % NTASK)
                                    if done // NTASK == DONE_ACT:
                                        tact[U(pe)] |= tbit
                                    else:
                                        tblk[U(pe)] &= ~tbit
                                if ps[U(pb + E_PARK)] == s + 1:  # the synchronous issuer resumes
                                    ps[U(pb + E_PARK)] = 0
                                    if ps[U(pb + E_MFREE)] <= t:
                                        ps[U(pb + E_MFREE)] = t + 1
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
                        if t >= ps[U(pb + E_BUSYU)]:
                            ps[U(pb + E_BUSY)] += 1
                            ps[U(pb + E_BUSYU)] = t + 1
                        if t + 1 > ps[U(pb + E_FIN)]:
                            ps[U(pb + E_FIN)] = t + 1
                        # memory ports: the main thread's op loses this cycle if they ran out
                        mp = ps[U(pb + E_MPORTS)]
                        if mp != 0 and rports > 0 and ps[U(pb + E_MFREE)] > t and (
                                (used >> 2) + (mp >> 2) > rports or (used & 3) + (mp & 3) > wports):
                            e = ps[U(pb + E_MFREE)] + 1
                            ps[U(pb + E_MFREE)] = e
                            if e > ps[U(pb + E_BUSYU)]:
                                ps[U(pb + E_BUSY)] += e - ps[U(pb + E_BUSYU)]
                                ps[U(pb + E_BUSYU)] = e
                            if e > ps[U(pb + E_FIN)]:
                                ps[U(pb + E_FIN)] = e
                        wb = ((t + 1) & slotm)  # wake: due at t + 1
                        wi = U(wb * nwd + (pe >> 6))
                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                            sm[U(wb * nsm + (pe >> 12))] |= np.int64(1) << ((pe >> 6) & 63)
                            occ[U((t + 1) & slotm)] = 1
                        bm[wi] |= np.int64(1) << (pe & 63)
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
                    # empty (-1, the largest unsigned) or its head not ready yet: one word per
                    # channel, the PE's contiguous, so the scan reads no channel header
                    if U(cs[U(HB + (ch >> 4))]) > U(t):
                        continue
                    hs = cs[U(ch + 8)] + (cs[U(ch)] & cs[U(ch + 9)])
                    tx = cs[U(ch + 10)]  # the route's tx ports, copied into the channel record
                    if tx & used:
                        pending = True
                        continue
                    ok = True
                    d1 = cs[U(ch + 11)]  # the one fabric downstream channel, or -1 (see init_records)
                    if d1 >= 0:  # one fabric output: the route record is not read
                        dc = cs[U(d1 + 1)]
                        if dc + (cs[U(d1 + 2)] == t) >= cs[U(d1 + 4)]:
                            ok = False
                            if dc < cs[U(d1 + 4)]:
                                pending = True
                            elif cs[U(d1 + 3)] >= 0:  # full: its pop will wake this router
                                cs[U(d1 + 3)] = ~cs[U(d1 + 3)]
                    else:
                        r = cs[U(ch + 5)]
                        for p in range(5):
                            if (tx >> p) & 1:
                                if p == 4:
                                    qc = rs[U(r + 1)]
                                    if qc + (rs[U(r + 2)] == t) >= capq:
                                        ok = False
                                        if qc < capq:
                                            pending = True
                                        else:
                                            ps[U(pe * PS + E_RBP)] = 1
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
                                        elif cs[U(d + 3)] >= 0:  # full: its pop will wake this router
                                            cs[U(d + 3)] = ~cs[U(d + 3)]
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
                    # the head counts every pop (it is masked where it indexes the ring): the route's
                    # forwarded wavelets are its channels' heads (``link_counts``)
                    nh = cs[U(ch)] + 1
                    cs[U(ch)] = nh
                    left = cs[U(ch + 1)] - 1
                    cs[U(ch + 1)] = left
                    cs[U(ch + 2)] = t
                    cs[U(HB + (ch >> 4))] = cs[U(cs[U(ch + 8)] + (nh & cs[U(ch + 9)]))] if left > 0 else -1
                    f = cs[U(ch + 3)]  # negative: the producer waits for this slot (its flag offset, inverted)
                    if f < 0:
                        f = ~f
                        cs[U(ch + 3)] = f
                        up = f >> 5
                        wb = (nslot if (f & 31) == E_RBP else 0) + ((t + 1) & slotm)  # wake: due at t + 1
                        wi = U(wb * nwd + (up >> 6))
                        if bm[wi] == 0:  # first bit in the word: mark the summary and the slot
                            sm[U(wb * nsm + (up >> 12))] |= np.int64(1) << ((up >> 6) & 63)
                            occ[U((t + 1) & slotm)] = 1
                        bm[wi] |= np.int64(1) << (up & 63)
                    # push into the downstream channels: the fast path's one fabric channel (d1),
                    # else per port from the route record (port 4, the CE's queue, last)
                    pm = 0 if d1 >= 0 else tx
                    d = d1
                    while True:
                        if d >= 0:
                            ready = t + alpha
                            dn = cs[U(d + 1)]
                            ds = cs[U(d + 8)] + ((cs[U(d)] + dn) & cs[U(d + 9)])
                            cs[U(ds)] = ready
                            if functional:
                                ch_pay[U(2 * ds)] = v0
                                ch_pay[U(2 * ds + 1)] = v1
                            cs[U(d + 1)] = dn + 1
                            if dn == 0:  # the new head
                                cs[U(HB + (d >> 4))] = ready
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
                        if pm == 0:
                            break
                        p = trailing_zeros(pm)
                        pm &= pm - 1
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
                            d = -1
                        else:
                            d = rs[U(r + 8 + p)]
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
                    if U(cs[U(HB + (ch >> 4))]) <= U(t):
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
        sm[U(csb + sw)] &= ~smask
        sm[U(rsb + sw)] &= ~smask
    acc[A_HN] = hn
    acc[A_NTS] = n_ts
    acc[A_NTR] = n_tr
    acc[A_VCE] += v_ce
    acc[A_VRT] += v_rt
    acc[A_MOVES] += moves
    acc[A_RTONLY] += rt_only
    acc[A_TSDROP] = ts_drop
    acc[A_PROG] = 1 if progress else 0
    acc[A_MOVED] = 1 if last_move >= 0 else 0
    acc[A_ST] = st
    acc[A_SEEN] = 1 if seen else 0

def _visit_parts_py(params, seg_w, t, acc2, route_of, ins, jtab, tk_entry, tk_data, tk_arg, blk_prio,
                blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts2, ts_room, tr, out2,
                cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ2, hp2):
    """The parts (even segments) of one cycle, one per thread: they touch disjoint records and
    bitmap words (``segments``), so they run concurrently."""
    nparts = (seg_w.shape[0] + 1) // 2
    for k in prange(nparts):
        j = 2 * k
        visit(params, seg_w[j, 0], seg_w[j, 1], t, acc2[j], route_of, ins, jtab, tk_entry, tk_data,
              tk_arg, blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts2[j, 0],
              ts2[j, 1], ts2[j, 2], np.int64(0), ts_room, tr, out2[j], cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down,
              link_acc, bm, sm, occ2[j], hp2[j])

def _block_tiles_py(params, tl, td, i0, n, late, t, k, end, flags, res, acc, route_of, ins, jtab, tk_entry,
                    tk_data, tk_arg, blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts_pe,
                    ts_label, ts_cycle, n_ts, ts_cap, tr, out, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down,
                    link_acc, bm, sm, occ, hp, tix):
    """Cycles [t, t + k) of the tiles ``tix[i0:i0 + n]`` (indices into the tile list: tile i is bitmap
    words [tl[i], tl[i + 1]), in PE order), blocked in time: each tile visited for cycle t + j in
    wavefront order — by diagonal (tile position) + j, and within a diagonal by ascending j — so a
    tile's records are used k times while they are still in cache. Tile i visits cycle t + j only if
    j < td[i] (``late`` 0: the parts, ahead of the bands, ``_block_parts_py``) or j >= td[i] (``late``
    1: the whole mesh, every td 0, or the bands and what the parts left). Cycles from ``end`` on are
    not visited.

    Exact: two PEs whose visits touch common state (a channel: its producer and consumer,
    neighbours; a route's last-arrival fields: its producers, up to 2 W apart; a wake-up: a
    neighbour) lie in one tile or two adjacent ones (tiles of at least ``block_tile`` words cover that
    distance). For such PEs the wavefront orders their visits as one cycle at a time does: (i, c)
    follows (i - 1, c) and (i + 1, c - 1) (earlier diagonal, or same diagonal and smaller j) and
    precedes (i + 1, c) and (i - 1, c + 1). Visits of other tiles touch disjoint records (the bitmap
    bits they set are or-ed), so every visit sees the state it would see one cycle at a time. What one
    cycle at a time keeps in order is restored: timestamps are sorted by (cycle, PE) afterwards
    (simulator.run; a full buffer keeps the first, ``_ts_keep_first``); the first error is the one of
    the least (cycle, PE): after an error in cycle c, only cycles before c are visited (those of lower
    tiles in c are already done). The far heap's wake-ups due in the block go to the wheel first, by
    the caller (those pushed during it are due nslot cycles or more after their visit).

    ``flags[j]``: progress, some agent due, a wavelet moved in cycle t + j. ``res``: timestamps kept,
    the cycle of the first error (-1: none; its status is ``acc[A_ST]``) and its tile's first word."""
    for j in range(k):
        flags[j, 0] = 0
        flags[j, 1] = 0
        flags[j, 2] = 0
    ts_drop = 0
    t_err = -1
    w_err = -1
    st_err = ST_OK
    for dg in range(n + k - 1):
        for j in range(max(0, dg - n + 1), min(k, dg + 1)):
            c = t + j
            if c >= end:
                break
            i = tix[i0 + dg - j]
            if (j >= td[i]) != (late != 0):
                continue
            visit(params, tl[i], tl[i + 1], c, acc, route_of, ins, jtab, tk_entry, tk_data, tk_arg, blk_prio,
                  blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts_pe, ts_label, ts_cycle, n_ts,
                  ts_cap, tr, out, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ, hp)
            n_ts = acc[A_NTS]
            ts_drop += acc[A_TSDROP]
            flags[j, 0] |= acc[A_PROG]
            flags[j, 1] |= acc[A_SEEN]
            flags[j, 2] |= acc[A_MOVED]
            if acc[A_ST] != ST_OK:
                st_err = acc[A_ST]
                t_err = c
                w_err = tl[i]
                end = c
    acc[A_TSDROP] = ts_drop
    acc[A_ST] = st_err
    res[0] = n_ts
    res[1] = t_err
    res[2] = w_err


def _block_parts_py(params, tl, td, seg_t, t, k, flags2, res2, acc2, route_of, ins, jtab, tk_entry, tk_data,
                    tk_arg, blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts2, room, tr,
                    out2, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ2, hp2, tix):
    """The parts' phase of a blocked run cut in parts, one part per thread (``_block_tiles_py``,
    ``late`` 0; part j's tiles are ``seg_t[j]`` to ``seg_t[j + 1]``): they touch disjoint records and
    bitmap words, as in ``_visit_parts_py``.

    The block: tiles of at least ``tile`` words per segment (so interacting PEs lie in one tile or
    adjacent ones, as in ``_block_tiles_py``; a band is wider than that reach, so no two parts interact);
    a part's tile has distance d >= 1 from the nearest band (1: next to it), a band's tile d = 0,
    and distances of adjacent tiles differ by at most one. Tile u visits cycle t + j in this phase
    if j < d(u), in the second (``_run_py``: one thread, all tiles with d < k in PE order) if
    j >= d(u). Exact when the visits of one cycle commute (``Device.commute``: no route with
    several inputs, no SetRoute), so that only the cross-cycle order matters: a visit (u, c) reads
    what (u', c - 1) wrote for u' = u and its neighbours u +- 1, and writes what (u', c + 1) reads.
    Within a phase the wavefront orders these as ``_block_tiles_py`` says. Across phases: a second-phase
    visit (u', c') of a neighbour of a first-phase (u, c) has c' >= t + d(u') >= t + d(u) - 1 >= c,
    so no first-phase visit depends on a second-phase one, and every second-phase visit finds the
    first-phase visits of the cycle before done. Timestamps: each part's buffer keeps its first
    ``room`` in (cycle, PE) order; the merge keeps the first ``room`` of their union. Errors: a part
    with an error in cycle c stops at c, the second phase runs up to c, and the error reported is
    the least (cycle, tile) found (all visits before it, in that order, ran)."""
    nparts = (seg_t.shape[0]) // 2
    for q in prange(nparts):
        j = 2 * q
        block_tiles(params, tl, td, seg_t[j], seg_t[j + 1] - seg_t[j], np.int64(0), t, k, t + k, flags2[j],
                    res2[j], acc2[j], route_of, ins, jtab, tk_entry, tk_data, tk_arg, blk_prio, blk_data, mem,
                    mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts2[j, 0], ts2[j, 1], ts2[j, 2], np.int64(0),
                    room, tr, out2[j], cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ2[j],
                    hp2[j], tix)


def _run_py(params, route_of, r_pe, r_tx, ch_route, ins, jtab, pe_entry, tk_entry, tk_data, tk_arg,
        blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay,
        ts_pe, ts_label, ts_cycle, tr, out, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, seg_w):

    W = params[P_W]
    H = params[P_H]
    max_idle = params[P_MAXIDLE]
    max_cycles = params[P_MAXCYC]
    t0 = params[P_T0]
    ts_cap = params[P_TSCAP]
    P = W * H

    # Scheduling: per wheel slot and agent kind (0 = CE, 1 = router) a bitmap over PEs plus a
    # summary bitmap over its words. A slot is visited in ascending PE order, so the records are
    # read nearly sequentially; setting a bit twice is harmless, so wake-ups need no dedup.
    # Wake-ups nslot or more cycles ahead go to a min-heap of (when << 21 | pe << 1 | kind), one per
    # segment. A call taking arrays costs atomic reference counts, even inlined, so ``_wake``
    # serves only the start, the heap drain and instruction timers; the per-wavelet wake-ups are
    # written out in place (marked "# wake:").
    #
    # Segments (``seg_w``: bitmap word ranges in PE order) split a cycle's visits: one segment is
    # the whole mesh; with several, the even ones (parts) run concurrently and the odd ones
    # (bands between parts) after them, in order. A visit touches only its PE's neighbours and
    # every effect on another PE is due one cycle later or more, so the result is the same.
    # ``PARTS`` (a constant of the compiled variant) is False in the variant that runs one segment:
    # numba then drops the parts' branches before typing, so ``visit_parts`` and ``block_parts``
    # (parallel loops, a fifth of the engine's compile time) compile only when a run is cut in parts.
    nwd = (P + 63) >> 6
    nsm = (nwd + 63) >> 6
    nslot = params[P_NSLOT]
    slotm = nslot - 1
    nseg = seg_w.shape[0]
    bm = np.zeros(2 * nslot * nwd, dtype=np.int64)
    sm = np.zeros(2 * nslot * nsm, dtype=np.int64)
    occ2 = np.zeros((nseg, nslot), dtype=np.int64)
    hp2 = np.empty((nseg, 8 * P + 16), dtype=np.int64)
    acc2 = np.zeros((nseg, NACC), dtype=np.int64)
    out2 = np.zeros((nseg, NOUT), dtype=np.int64)
    ts2 = np.empty((nseg if nseg > 1 else 0, 3, ts_cap), dtype=np.int64)
    occ = occ2[0]
    hp = hp2[0]
    hn = 0

    t = t0
    for pe in range(P):
        b = pe * PS
        ps[U(b + E_FINISHED)] = 0
        if pe_entry[pe] >= 0:  # the launch runs as a pseudo task on every PE that has the entry
            ps[U(b + E_CUR)] = LAUNCH_TASK
            ps[U(b + E_PC)] = pe_entry[pe]
            ps[U(b + E_MFREE)] = t
            ps[U(b + E_WAKEAT)] = t
            hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, t, t, pe, 0)
        elif ps[U(b + E_BLOCK)] >= 0 and ((tact[pe] & ~tblk[pe]) != 0 or blk_data[ps[U(b + E_BLOCK)]] != 0):
            hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, t, t, pe, 0)
    acc2[0, A_HN] = hn
    acc2[:, A_TSLO] = -1
    n_ts = np.int64(0)  # not a literal: a literal 0 would compile the callees a second time
    ts_drop = 0
    last_progress = t
    last_move = -1
    st = ST_OK
    # Temporal blocking (see ``_block``): ``blk`` cycles at a time over tiles of ``tile`` bitmap
    # words, while a cycle visits at least ``dense`` agents on average; one cycle at a time otherwise
    blk = params[P_BLOCK]
    tile = params[P_TILE]
    dense = params[P_DENSE]
    # (cut in parts: only when visits of one cycle commute, P_COMMUTE; see ``_block_parts_py``)
    can_block = (blk >= 2 and tile >= 1 and params[P_TRACE] == 0
                 and (nseg == 1 or params[P_COMMUTE] != 0))
    want_block = False
    blocked = 0  # cycles run in blocks
    flags = np.zeros((max(blk, 1), 3), dtype=np.int64)  # per cycle of a block: progress, seen, moved
    # Cut in parts, a block has two phases. Tiles of at least ``tile`` words, per segment; a part's
    # tile d tiles from the nearest band (1: next to it) runs the block's first d cycles, all parts
    # at once (``_block_parts_py``); then one thread runs the bands' tiles (d = 0) and the rest of
    # the parts' (``_block_tiles_py``), both phases in wavefront order (see ``_block_parts_py``).
    flags2 = np.zeros((nseg, max(blk, 1), 3), dtype=np.int64)
    res2 = np.zeros((nseg, 3), dtype=np.int64)
    tl = np.zeros(nwd + 2, dtype=np.int64)  # tile i: words [tl[i], tl[i + 1])
    td = np.zeros(nwd + 1, dtype=np.int64)  # its distance from the nearest band, in tiles
    seg_t = np.zeros(nseg + 1, dtype=np.int64)  # segment j's tiles: seg_t[j] to seg_t[j + 1]
    tix = np.arange(nwd + 1)
    tixb = np.zeros(nwd + 1, dtype=np.int64)
    nt = np.int64(0)  # tiles
    if nseg > 1 and can_block:
        for j in range(nseg):
            seg_t[j] = nt
            lo_ = seg_w[j, 0]
            hi_ = seg_w[j, 1]
            n_ = max(1, (hi_ - lo_) // tile)
            for i in range(n_):
                # whole tiles from the band on (part 0: from its top); the rest joins the last one
                if j == 0:
                    tl[nt] = lo_ if i == 0 else hi_ - (n_ - i) * tile
                else:
                    tl[nt] = lo_ + i * tile
                d_ = 0
                if j % 2 == 0:
                    d_ = np.int64(1) << 40
                    if j > 0:
                        d_ = min(d_, i + 1)
                    if j < nseg - 1:
                        d_ = min(d_, n_ - i)
                td[nt] = d_
                nt += 1
        seg_t[nseg] = nt
        tl[nt] = nwd
    elif can_block:  # one segment: the whole mesh in tiles of ``tile`` words, all visited (td 0)
        while tl[nt] + tile < nwd:
            tl[nt + 1] = tl[nt] + tile
            nt += 1
        nt += 1
        tl[nt] = nwd
    while True:
        if t > max_cycles:
            st = ST_LIMIT
            break
        slot = t & slotm
        k = 0
        if want_block:
            # a block ends before max_cycles is passed and before the idle limit could be reached
            # (at most nslot: the far wake-ups pushed in a block are due after it)
            k = min(blk, nslot, max_cycles + 1 - t, last_progress + max_idle + 1 - t)
        if k >= 2:
            vis0 = 0
            for j in range(nseg):
                vis0 += acc2[j, A_VCE] + acc2[j, A_VRT]
            for j in range(nseg):  # the far wake-ups due in the block go to the wheel first
                hp = hp2[j]
                hn = acc2[j, A_HN]
                while hn > 0 and (hp[0] >> 21) < t + k:
                    key = _heap_pop(hp, hn)
                    hn -= 1
                    when = key >> 21
                    hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, when, when, (key >> 1) & 0xFFFFF, key & 1)
                acc2[j, A_HN] = hn
            if not PARTS or nseg == 1:
                a = acc2[0]
                a[A_TSLO] = n_ts
                block_tiles(params, tl, td, np.int64(0), nt, np.int64(1), t, k, t + k, flags, res2[0], a,
                            route_of, ins, jtab, tk_entry, tk_data, tk_arg, blk_prio, blk_data, mem, mem_base,
                            regs, tact, tblk, ur, ch_pay, q_pay, ts_pe, ts_label, ts_cycle, n_ts, ts_cap, tr, out,
                            cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ, hp2[0], tix)
                a[A_TSLO] = -1
                n_ts = res2[0, 0]
                t_err = res2[0, 1]
                ts_drop += a[A_TSDROP]
                blocked += k
                if t_err >= 0:  # the first error in (cycle, PE) order; its details are in out
                    st = a[A_ST]
                    t = t_err
                    break
            else:
                room = ts_cap - n_ts
                for j in range(nseg):
                    acc2[j, A_TSLO] = 0  # each buffer keeps its first ``room`` in (cycle, PE) order
                    acc2[j, A_NTS] = 0
                    acc2[j, A_TSDROP] = 0
                    res2[j, 0] = 0
                    res2[j, 1] = -1
                    res2[j, 2] = -1
                    for jj in range(k):
                        flags2[j, jj, 0] = 0
                        flags2[j, jj, 1] = 0
                        flags2[j, jj, 2] = 0
                block_parts(params, tl, td, seg_t, t, k, flags2, res2, acc2, route_of, ins, jtab, tk_entry,
                            tk_data, tk_arg, blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay,
                            q_pay, ts2, room, tr, out2, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm,
                            sm, occ2, hp2, tix)
                # after an error in cycle c in a part, the rest runs up to cycle c (a lower PE's error
                # in c comes first)
                endb = t + k
                for j in range(0, nseg, 2):
                    if res2[j, 1] >= 0 and res2[j, 1] + 1 < endb:
                        endb = res2[j, 1] + 1
                nb = np.int64(0)
                for i in range(nt):
                    if td[i] < k:
                        tixb[nb] = i
                        nb += 1
                block_tiles(params, tl, td, np.int64(0), nb, np.int64(1), t, k, endb, flags2[1], res2[1],
                            acc2[1], route_of, ins, jtab, tk_entry, tk_data, tk_arg, blk_prio, blk_data, mem,
                            mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts2[1, 0], ts2[1, 1], ts2[1, 2],
                            np.int64(0), room, tr, out2[1], cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc,
                            bm, sm, occ2[1], hp2[1], tixb)
                blocked += k
                t_err = -1
                w_err = -1
                j_err = -1
                for j in range(nseg):  # the first error in (cycle, PE) order
                    if res2[j, 1] >= 0 and (t_err < 0 or res2[j, 1] < t_err
                                            or (res2[j, 1] == t_err and res2[j, 2] < w_err)):
                        t_err = res2[j, 1]
                        w_err = res2[j, 2]
                        j_err = j
                if t_err >= 0:
                    st = acc2[j_err, A_ST]
                    for q in range(O_I0, O_I3 + 1):
                        out[q] = out2[j_err, q]
                    t = t_err
                    break
                # timestamps: all, or the first ``room`` in (cycle, PE) order (each buffer holds
                # its first ``room``; a stable sort keeps one visit's in order)
                tot = 0
                for j in range(nseg):
                    tot += res2[j, 0]
                    ts_drop += acc2[j, A_TSDROP]
                tmp = np.empty((3, tot), dtype=np.int64)
                q = 0
                for j in range(nseg):
                    for i in range(res2[j, 0]):
                        tmp[0, q] = ts2[j, 0, i]
                        tmp[1, q] = ts2[j, 1, i]
                        tmp[2, q] = ts2[j, 2, i]
                        q += 1
                if tot > room:
                    order = np.argsort(tmp[2] * P + tmp[0], kind="mergesort")
                    ts_drop += tot - room
                else:
                    order = np.arange(tot)
                for q in range(min(tot, room)):
                    ts_pe[n_ts] = tmp[0, order[q]]
                    ts_label[n_ts] = tmp[1, order[q]]
                    ts_cycle[n_ts] = tmp[2, order[q]]
                    n_ts += 1
                for j in range(nseg):
                    acc2[j, A_TSLO] = -1
                    acc2[j, A_NTS] = 0
                    acc2[j, A_TSDROP] = 0
                    occ2[j, :] = 0
                for jj in range(k):
                    flags[jj, 0] = 0
                    flags[jj, 1] = 0
                    flags[jj, 2] = 0
                    for j in range(nseg):
                        flags[jj, 0] |= flags2[j, jj, 0]
                        flags[jj, 1] |= flags2[j, jj, 1]
                        flags[jj, 2] |= flags2[j, jj, 2]
            if n_ts >= ts_cap:  # full: blocks would re-sort every further timestamp
                can_block = False
            # the cycles one at a time would have visited: the first, and those with agents due;
            # replay their idle accounting (the block ends before it can trip) and moves
            pv = t
            for j in range(k):
                c = t + j
                if j > 0 and flags[j, 1] == 0:
                    continue
                if c > pv + 1:
                    last_progress = c - 1  # the empty cycles before c were skipped
                if flags[j, 0] != 0:
                    last_progress = c
                if flags[j, 2] != 0:
                    last_move = c
                pv = c
            t = pv
            seen = 0
            for j in range(k):
                seen += flags[j, 1]
            vis1 = 0
            for j in range(nseg):
                vis1 += acc2[j, A_VCE] + acc2[j, A_VRT]
            want_block = can_block and 2 * seen >= k and vis1 - vis0 >= dense * k
            # the occupied wheel slots, from the summary words (all due before t + k are done)
            for s_ in range(nslot):
                occ[s_] = 0
                for q in range(nsm):
                    if sm[s_ * nsm + q] != 0 or sm[(nslot + s_) * nsm + q] != 0:
                        occ[s_] = 1
                        break
        else:
            for j in range(nseg):  # far wake-ups now due
                hp = hp2[j]
                hn = acc2[j, A_HN]
                while hn > 0 and (hp[0] >> 21) <= t:
                    key = _heap_pop(hp, hn)
                    hn -= 1
                    hn = _wake(bm, sm, occ, hp, hn, nslot, nwd, nsm, t, t, (key >> 1) & 0xFFFFF, key & 1)
                acc2[j, A_HN] = hn
            progress = False
            if not PARTS or nseg == 1:
                vis0 = acc2[0, A_VCE] + acc2[0, A_VRT]
                visit(params, seg_w[0, 0], seg_w[0, 1], t, acc2[0], route_of, ins, jtab, tk_entry, tk_data,
                      tk_arg, blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts_pe,
                      ts_label, ts_cycle, n_ts, ts_cap, tr, out, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down,
                      link_acc, bm, sm, occ, hp2[0])
                n_ts = acc2[0, A_NTS]
                ts_drop += acc2[0, A_TSDROP]
                progress = acc2[0, A_PROG] != 0
                if acc2[0, A_MOVED] != 0:
                    last_move = t
                st = acc2[0, A_ST]
                want_block = can_block and acc2[0, A_VCE] + acc2[0, A_VRT] - vis0 >= dense
            else:
                vis0 = 0
                for j in range(nseg):
                    vis0 += acc2[j, A_VCE] + acc2[j, A_VRT]
                room = ts_cap - n_ts
                visit_parts(params, seg_w, t, acc2, route_of, ins, jtab, tk_entry, tk_data, tk_arg,
                            blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay, q_pay, ts2, room,
                            tr, out2, cs, rs, ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ2, hp2)
                if acc2[0, A_ST] == ST_OK:  # an error in part 0 comes first in PE order: the rest is moot
                    for j in range(1, nseg, 2):
                        visit(params, seg_w[j, 0], seg_w[j, 1], t, acc2[j], route_of, ins, jtab, tk_entry,
                              tk_data, tk_arg, blk_prio, blk_data, mem, mem_base, regs, tact, tblk, ur, ch_pay,
                              q_pay, ts2[j, 0], ts2[j, 1], ts2[j, 2], np.int64(0), room, tr, out2[j], cs, rs,
                              ps, r_chan0, r_cfg_tx, r_cfg_down, link_acc, bm, sm, occ2[j], hp2[j])
                for j in range(nseg):  # in PE order: the first error, timestamps up to the capacity
                    if st == ST_OK and acc2[j, A_ST] != ST_OK:
                        st = acc2[j, A_ST]
                        for q in range(O_I0, O_I3 + 1):
                            out[q] = out2[j, q]
                    kept = acc2[j, A_NTS]
                    for i in range(kept):
                        if n_ts < ts_cap:
                            ts_pe[n_ts] = ts2[j, 0, i]
                            ts_label[n_ts] = ts2[j, 1, i]
                            ts_cycle[n_ts] = ts2[j, 2, i]
                            n_ts += 1
                        else:
                            ts_drop += 1
                    ts_drop += acc2[j, A_TSDROP]
                    acc2[j, A_NTS] = 0
                    if acc2[j, A_PROG] != 0:
                        progress = True
                    if acc2[j, A_MOVED] != 0:
                        last_move = t
                    acc2[j, A_PROG] = 0
                    acc2[j, A_MOVED] = 0
                vis1 = 0
                for j in range(nseg):
                    vis1 += acc2[j, A_VCE] + acc2[j, A_VRT]
                want_block = can_block and vis1 - vis0 >= dense
            if st != ST_OK:
                break
            for j in range(nseg):
                occ2[j, slot] = 0
            # ---------------- end of cycle ----------------
            if progress:
                last_progress = t
            elif t - last_progress > max_idle:
                st = ST_IDLE
                break
        nxt = -1
        for dd in range(1, nslot):
            s_ = (t + dd) & slotm
            for j in range(nseg):
                if occ2[j, s_] != 0:
                    nxt = t + dd
                    break
            if nxt >= 0:
                break
        hmin = -1
        for j in range(nseg):
            if acc2[j, A_HN] > 0 and (hmin < 0 or (hp2[j, 0] >> 21) < hmin):
                hmin = hp2[j, 0] >> 21
        if nxt >= 0:
            if hmin >= 0 and hmin < nxt:
                nxt = hmin
            # skip the empty cycles in between (max_cycles is checked at the top of a cycle). Nothing
            # is due before nxt: waiting for a wavelet in flight is not idleness, so only cycles in
            # which agents ran and nothing moved count towards the idle limit
            if nxt > max_cycles + 1:
                nxt = max_cycles + 1
            if nxt > t + 1:
                last_progress = nxt - 1
            t = nxt
        elif hmin >= 0:
            # only timers (long instructions) remain: jump; a running instruction is progress
            t = max(t + 1, hmin)
            last_progress = t - 1
        else:
            break  # nothing scheduled: the launch is over (simulator.run inspects the state)
    v_ce = 0
    v_rt = 0
    moves = 0
    rt_only = 0
    n_tr = 0
    for j in range(nseg):
        v_ce += acc2[j, A_VCE]
        v_rt += acc2[j, A_VRT]
        moves += acc2[j, A_MOVES]
        rt_only += acc2[j, A_RTONLY]
        n_tr += acc2[j, A_NTR]
    out[O_ST] = st
    out[O_T] = t
    out[O_TOTAL] = last_move + 1
    out[O_NTS] = n_ts
    out[O_NTR] = n_tr
    out[O_VCE] = v_ce
    out[O_VRT] = v_rt
    out[O_MOVES] = moves
    out[O_RTONLY] = rt_only
    out[O_TSDROP] = ts_drop
    out[O_BLOCKED] = blocked


def _specialise(functional: bool):
    """The engine for one mode: ``run`` (and the ``visit``/``visit_parts`` it calls) compiled with
    ``functional`` a constant; each mode is cached apart under its own name. Two variants of ``run``:
    on one segment, and cut in parts (``seg_w`` with more than one row; it alone compiles the
    parallel functions). They share the compiled ``visit`` and ``block_tiles``."""
    mode = "functional" if functional else "timing"
    one, parts = dict(globals()), dict(globals())
    for g, cut in ((one, False), (parts, True)):
        g["functional"] = functional
        g["PARTS"] = cut

    def jit(py, g, name, **kw):
        f = types.FunctionType(py.__code__, g, name, py.__defaults__)
        f.__qualname__ = name
        return cached_njit(f, **kw)

    one["visit"] = parts["visit"] = jit(_visit_py, one, f"visit_{mode}", error_model="numpy")
    one["block_tiles"] = parts["block_tiles"] = jit(_block_tiles_py, one, f"block_tiles_{mode}",
                                                    error_model="numpy")
    parts["visit_parts"] = jit(_visit_parts_py, parts, f"visit_parts_{mode}", parallel=True)
    parts["block_parts"] = jit(_block_parts_py, parts, f"block_parts_{mode}", parallel=True)
    return (jit(_run_py, one, f"run_{mode}", error_model="numpy"),
            jit(_run_py, parts, f"run_{mode}_parts", error_model="numpy"))


def channel_layout(ch_cap: np.ndarray, S: int) -> tuple[int, int]:
    """(length of the channel array ``cs``, HB: where its head-ready words start) for channels of
    capacities ``ch_cap``: the records, then the head-ready words (whole cache lines), then the rings
    too large to sit in their record (``S`` slots each)."""
    nch = max(int(ch_cap.shape[0]), 1)
    hb = nch * CH
    big = int(np.count_nonzero(ch_cap > CH_INLINE))
    return hb + ((nch + CH - 1) // CH) * CH + big * S + 1, hb


def block_tile(width: int, ch_route: np.ndarray, ch_port: np.ndarray, r_chan0: np.ndarray,
               min_words: int = 4) -> int:
    """Bitmap words per tile of a blocked run (``_block_tiles_py``): at least ``min_words`` and enough that
    two PEs whose visits touch common state lie in one tile or in adjacent ones. Those are a channel's
    producer and consumer (neighbours, up to ``width`` apart in PE index) and the producers of a
    route with several inputs (they write its last-arrival fields): two of its input ports, from
    north and south, are 2 ``width`` apart. PEs up to D apart lie at most ceil(D / 64) words apart."""
    reach = width
    multi = np.nonzero(np.diff(r_chan0) > 1)[0]
    if multi.size:
        off = np.array([-width, width, 1, -1, 0], dtype=np.int64)
        ports = off[np.asarray(ch_port, dtype=np.int64)]
        is_multi = np.zeros(r_chan0.shape[0] - 1, dtype=bool)
        is_multi[multi] = True
        sel = is_multi[np.asarray(ch_route, dtype=np.int64)]
        if sel.any():
            rt = np.asarray(ch_route, dtype=np.int64)[sel]
            hi = np.full(r_chan0.shape[0] - 1, -2 * width - 1, dtype=np.int64)
            lo = np.full(r_chan0.shape[0] - 1, 2 * width + 1, dtype=np.int64)
            np.maximum.at(hi, rt, ports[sel])
            np.minimum.at(lo, rt, ports[sel])
            reach = max(reach, int((hi[multi] - lo[multi]).max()))
    return max(min_words, -(-reach // 64))


def segments(width: int, height: int, parts: int, grain: int = 4096) -> np.ndarray:
    """Bitmap word ranges ``[w_lo, w_hi)`` that split a cycle's visits into ``parts`` concurrent parts
    and the bands between them (rows: part, band, part, ..., part, in PE order); one row, the whole
    mesh, when ``parts`` is 1 or the mesh is too small to split.

    A visit reads and writes only its PE's records and its neighbours' (at most one row away), and
    marks wake-ups in 64-PE bitmap words summarised per 4096 PEs. So each cut sits on a summary-word
    boundary M, and the band around it spans more than a row on either side (whole bitmap words):
    the PEs two parts touch never share a record, a bitmap word or a summary word. A finer ``grain``
    (a multiple of 64) cuts small meshes for tests of the visit order; its parts share summary words,
    so they must then run on one thread."""
    P = width * height
    nwd = (P + 63) >> 6
    whole = np.array([[0, nwd]], dtype=np.int64)
    nsm = (nwd + 63) >> 6
    ng = (nwd * 64) // grain
    if parts < 2 or ng < 2 * parts:
        return whole
    rows = []
    lo = 0
    for k in range(1, parts):
        m = ((k * ng) // parts) * grain  # a PE index on a summary-word boundary
        a = (m - width) >> 6  # band: words [a, b) cover PEs [m - width, m + width)
        b = (m + width + 63) >> 6
        if a <= lo or b >= nwd:
            return whole
        rows += [[lo, a], [a, b]]
        lo = b
    rows.append([lo, nwd])
    return np.array(rows, dtype=np.int64)


_RUN = {(functional, cut): run for functional in (False, True)
        for cut, run in zip((False, True), _specialise(functional))}


def run(functional: bool, *args) -> None:
    """Run one launch of the engine for ``functional`` or timing-only mode (arguments: see
    ``_specialise``'s ``run``; the last, ``seg_w``, says whether the cycle is cut in parts)."""
    _RUN[functional, args[-1].shape[0] > 1](*args)
