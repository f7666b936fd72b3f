"""``simulate``: compile a ``MeshProgram``, run the engine, and turn its state into a ``SimResult`` or
a precise error."""

from __future__ import annotations

import time

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import engine as E
from simulator.compile import F_COL1, F_COL2, F_COST, F_OP, MAX_MICROTHREADS, OP_NAMES, compile_program
from simulator.errors import MisroutedWavelet, SimulationDeadlock, SimulationLimit
from simulator.program import MeshProgram, Port
from simulator.result import SimResult

MODES = ("functional", "timing")
#: Events kept for a Chrome trace; larger runs should not ask for one.
MAX_TRACE_EVENTS = 2_000_000
MAX_FABRIC_LATENCY = 4096  # cycles; FIFO rings and the timing wheel are sized by it


def simulate(program: MeshProgram, spec: HardwareSpec | None = None, mode: str = "functional",
             max_idle_cycles: int = 10_000, max_cycles: int = 2_000_000_000,
             trace: bool = False) -> SimResult:
    """Run ``program`` cycle by cycle on ``spec`` (default: the program's spec).

    ``mode="functional"`` moves and computes data; ``"timing"`` allocates no payloads and gives the
    same cycle counts. Raises ``SimulationDeadlock`` when PEs still have work but nothing can move
    (or agents kept retrying and nothing moved for ``max_idle_cycles``; waiting for a wavelet in
    flight or a running instruction does not count), ``MisroutedWavelet`` for wavelets without a route,
    arriving from two directions at once or left unconsumed, ``SimulationLimit`` past
    ``max_cycles``, and ``InputError`` for programs that cannot run.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    spec = spec or program.spec
    if spec.num_colors != program.spec.num_colors:
        raise InputError("the spec must have the same colour count as the program's spec")
    if not 1 <= max_cycles < 2**40:
        raise InputError(f"max_cycles must be in [1, 2**40), got {max_cycles}")
    t0 = time.perf_counter()
    cp = compile_program(program, spec, functional=(mode == "functional"))
    t1 = time.perf_counter()
    W, H, C = cp.width, cp.height, cp.num_colors
    P = W * H
    if P >= 2**20:
        raise InputError(f"mesh of {P} PEs exceeds the engine's 2^20 PE limit")
    nr = cp.r_tx.shape[0]
    nch = cp.ch_route.shape[0]
    # ring storage per FIFO: a power of two >= its capacity (index wrap is a mask, not a modulo)
    S = 1 << (max(cp.cap_fabric, cp.cap_ramp) - 1).bit_length()
    SQ = 1 << (cp.cap_queue - 1).bit_length()
    UT = MAX_MICROTHREADS
    func = cp.functional
    trace_cap = 0
    if trace:
        trace_cap = int(cp.pe_len.sum()) + 1
        if trace_cap > MAX_TRACE_EVENTS:
            raise InputError(f"a trace of this program needs {trace_cap} events (> {MAX_TRACE_EVENTS}); "
                             "trace smaller runs")
    params = np.zeros(E.NPARAMS, dtype=np.int64)
    params[E.P_W], params[E.P_H], params[E.P_C] = W, H, C
    params[E.P_ALPHA], params[E.P_RIN], params[E.P_ROUT], params[E.P_BETA] = (
        cp.alpha, cp.ramp_in, cp.ramp_out, cp.beta)
    params[E.P_FUNC] = int(func)
    params[E.P_MAXIDLE] = max_idle_cycles
    params[E.P_MAXCYC] = max_cycles
    params[E.P_S], params[E.P_SQ], params[E.P_CAPQ] = S, SQ, cp.cap_queue
    params[E.P_TRACE] = trace_cap
    # timing-wheel slots: fabric wake-ups (at most this far ahead) never need the heap
    longest_hop = max(cp.alpha, cp.ramp_in + cp.beta, cp.ramp_out, 1)
    if longest_hop > MAX_FABRIC_LATENCY:
        raise InputError(f"fabric latency of {longest_hop} cycles (hop, ramp or relay) is beyond the "
                         f"simulator's {MAX_FABRIC_LATENCY}; use hardware figures below that")
    params[E.P_NSLOT] = max(32, 1 << (longest_hop + 1).bit_length())
    # cycle values in the engine's records and microthread start times are int32 when every cycle
    # the run can reach fits (max_cycles plus the longest instruction and fabric latencies), else int64
    longest = int(np.abs(cp.ins[:, F_COST]).max())
    horizon = max_cycles + longest + cp.alpha + cp.ramp_in + cp.ramp_out + cp.beta + 64
    rdt = np.int32 if horizon < 2**31 - 1 else np.int64
    pc = np.zeros(P, dtype=np.int64)
    main_free = np.zeros(P, dtype=np.int64)
    ut_row = np.full(P * UT, -1, dtype=np.int32)
    ur = _zeros_aligned(P * UT * E.UR, rdt)  # the engine's microthread records
    flags = np.zeros(max(cp.n_flags, 1), dtype=np.uint8)
    ch_head = np.zeros(max(nch, 1), dtype=np.int32)
    ch_count = np.zeros(max(nch, 1), dtype=np.int32)
    ch_ready = np.zeros(1, dtype=np.int64)  # unused: the engine keeps rings in its records
    ch_pay = np.zeros(max(nch, 1) * (8 + S) * 2 + 2 if func else 2, dtype=np.float32)
    q_head = np.zeros(max(nr, 1), dtype=np.int32)
    q_count = np.zeros(max(nr, 1), dtype=np.int32)
    q_ready = np.zeros(1, dtype=np.int64)
    q_pay = np.zeros(max(nr, 1) * (12 + SQ) * 2 + 2 if func else 2, dtype=np.float32)
    busy = np.zeros(P, dtype=np.int64)
    finish = np.zeros(P, dtype=np.int64)
    links = np.zeros(P * 5, dtype=np.int64)
    nts = max(cp.n_timestamps, 1)
    ts_pe = np.zeros(nts, dtype=np.int64)
    ts_label = np.zeros(nts, dtype=np.int64)
    ts_cycle = np.zeros(nts, dtype=np.int64)
    tr = np.zeros((max(trace_cap, 1), 5), dtype=np.int64)
    out = np.zeros(E.NOUT, dtype=np.int64)
    # packed engine records (see engine.run)
    cs = _zeros_aligned(max(nch, 1) * (8 + S) + 1, rdt)
    rs = _zeros_aligned(max(nr, 1) * (12 + SQ) + 1, rdt)
    ps = _zeros_aligned(P * 16, rdt)
    t2 = time.perf_counter()
    E.run(params, cp.route_of, cp.r_pe, cp.r_tx, cp.r_rampch, cp.r_down, cp.r_chan0, cp.pe_r0,
          cp.ch_route, cp.ch_port, cp.ch_cap, cp.ins, cp.insf, cp.waitlist, cp.pe_code, cp.pe_len,
          cp.pe_fbase, cp.mem, cp.mem_base, pc, main_free, ut_row, ur, flags,
          ch_head, ch_count, ch_ready, ch_pay, q_head, q_count, q_ready, q_pay,
          busy, finish, links, ts_pe, ts_label, ts_cycle, tr, out, cs, rs, ps, bool(func))
    t3 = time.perf_counter()

    st, t = int(out[E.O_ST]), int(out[E.O_T])
    state = dict(pc=pc, ut_row=ut_row, ch_count=ch_count, q_count=q_count)
    if st != E.ST_OK:
        _raise(st, t, out, program, cp, state, max_idle_cycles, max_cycles)

    total = int(out[E.O_TOTAL])
    busy2 = busy.reshape(H, W)
    fin = finish.reshape(H, W)
    labels = cp.labels
    # the engine records in visit order; report in (cycle, PE) order, program order kept per PE
    nts_out = int(out[E.O_NTS])
    order = np.lexsort((ts_pe[:nts_out], ts_cycle[:nts_out]))
    stamps = [(int(ts_pe[i]) % W, int(ts_pe[i]) // W, labels[int(ts_label[i])], int(ts_cycle[i]))
              for i in order]
    trace_events = []
    if trace:
        events = tr[:out[E.O_NTR]]
        events = events[np.lexsort((events[:, 1], events[:, 0], events[:, 3]))]  # by start, PE, thread
        for pe, tid, row, a, b in events.tolist():
            trace_events.append(((pe % W, pe // W), tid, _row_name(program, cp, row), a, b))
    res = SimResult(
        mode=mode, total_cycles=total, busy=busy2, stalled=fin - busy2, idle=total - fin, finish=fin,
        link_wavelets=links.reshape(H, W, 5), sram_bytes=cp.sram_bytes.reshape(H, W),
        timestamps=stamps,
        stats={"compile_s": t1 - t0, "alloc_s": t2 - t1, "run_s": t3 - t2, "ce_visits": int(out[E.O_VCE]),
               "router_visits": int(out[E.O_VRT]), "wavelet_moves": int(out[E.O_MOVES]),
               "router_only_pe_cycles": int(out[E.O_RTONLY]),
               "routes": nr, "channels": nch, "instruction_rows": int(cp.ins.shape[0])},
        _program=program, _mem=cp.mem if func else None, _mem_base=cp.mem_base, _trace=trace_events,
    )
    return res


def _zeros_aligned(n: int, dtype) -> np.ndarray:
    """Zeros starting on a 64-byte cache line, so the engine's records (16 words) straddle none."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // item, dtype=dtype)
    skip = (-raw.ctypes.data % 64) // item
    return raw[skip:skip + n]


def _row_name(program: MeshProgram, cp, row: int) -> str:
    iid = int(cp.row_iid[row])
    if iid < 0:
        return "the join of its synchronous fabric op"
    return repr(program._instr_table[iid])


def _pe_str(W: int, pe: int) -> str:
    return f"PE ({pe % W}, {pe // W})"


def _blocked_report(program: MeshProgram, cp, state: dict, limit: int = 10) -> str:
    W, C = cp.width, cp.num_colors
    pc, ut_row = state["pc"], state["ut_row"]
    ch_count, q_count = state["ch_count"], state["q_count"]
    UT = MAX_MICROTHREADS
    lines = []
    blocked = np.nonzero((pc < cp.pe_len) | (ut_row.reshape(-1, UT) >= 0).any(axis=1))[0]
    for pe in blocked[:limit]:
        pe = int(pe)
        parts = []
        if pc[pe] < cp.pe_len[pe]:
            row = int(cp.pe_code[pe] + pc[pe])
            parts.append(f"main at {_row_name(program, cp, row)}")
        for s in range(UT):
            row = int(ut_row[pe * UT + s])
            if row < 0:
                continue
            op = OP_NAMES[int(cp.ins[row, F_OP])]
            desc = [op]
            rc, sc = int(cp.ins[row, F_COL1]), int(cp.ins[row, F_COL2])
            if rc >= 0:
                r = int(cp.route_of[pe * C + rc])
                desc.append(f"recv colour {rc} (input queue {int(q_count[r])}/{cp.cap_queue})")
            if sc >= 0:
                r = int(cp.route_of[pe * C + sc])
                ch = int(cp.r_rampch[r])
                desc.append(f"send colour {sc} (output queue {int(ch_count[ch])}/{cp.cap_ramp})")
            parts.append(" ".join(desc))
        lines.append(f"  {_pe_str(W, pe)}: " + "; ".join(parts))
    more = len(blocked) - limit
    if more > 0:
        lines.append(f"  ... and {more} more PEs")
    return f"{len(blocked)} PEs blocked:\n" + "\n".join(lines)


def _raise(st, t, out, program, cp, state, max_idle, max_cycles):
    W, C = cp.width, cp.num_colors
    i0, i1, i2 = int(out[E.O_I0]), int(out[E.O_I1]), int(out[E.O_I2])
    if st in (E.ST_DEADLOCK, E.ST_IDLE):
        why = ("no agent can make progress any more" if st == E.ST_DEADLOCK
               else f"nothing moved for {max_idle} cycles")
        raise SimulationDeadlock(f"deadlock at cycle {t}: {why}; {_blocked_report(program, cp, state)}")
    if st == E.ST_MISROUTE:
        pe, col = int(cp.r_pe[i1]), int(cp.r_col[i1])
        port = Port(i2 // 4)
        offmesh = i2 % 4 == 0
        nx, ny = pe % W + port.delta[0], pe // W + port.delta[1]
        if offmesh:
            why = f"which leads off the {cp.width}x{cp.height} mesh"
        else:
            r2 = int(cp.route_of[(ny * W + nx) * C + col])
            have = "no route" if r2 < 0 else program._route_str(ny * W + nx, col)
            why = f"but PE ({nx}, {ny}) does not accept colour {col} from {port.opposite.name} ({have})"
        raise MisroutedWavelet(f"cycle {t}: {_pe_str(W, pe)} forwards colour {col} {port.name}, {why}")
    if st == E.ST_MULTIRX:
        raise MisroutedWavelet(f"cycle {t}: two wavelets of colour {int(cp.r_col[i1])} reach the router of "
                               f"{_pe_str(W, int(cp.r_pe[i1]))} from two directions in the same cycle "
                               f"(undefined on the hardware)")
    if st == E.ST_LEFTOVER:
        q = np.nonzero(state["q_count"][:len(cp.r_pe)])[0]
        c = np.nonzero(state["ch_count"][:len(cp.ch_route)])[0]
        where = []
        for r in q[:5]:
            where.append(f"{_pe_str(W, int(cp.r_pe[r]))} colour {int(cp.r_col[r])}: "
                         f"{int(state['q_count'][r])} in the input queue")
        for ch in c[:5]:
            r = int(cp.ch_route[ch])
            where.append(f"{_pe_str(W, int(cp.r_pe[r]))} colour {int(cp.r_col[r])}: "
                         f"{int(state['ch_count'][ch])} in the router buffer from {Port(int(cp.ch_port[ch])).name}")
        raise MisroutedWavelet(f"cycle {t}: every PE finished but wavelets were never received "
                               f"(no receive expected them): " + "; ".join(where))
    if st == E.ST_UTLIMIT:
        raise InputError(f"cycle {t}: {_pe_str(W, i0)} has more than {MAX_MICROTHREADS} fabric ops "
                         f"running at once; join some with Wait first")
    if st == E.ST_QCONFLICT:
        kind = "receives" if i2 == 0 else "sends"
        raise InputError(f"cycle {t}: {_pe_str(W, i0)} has two concurrent {kind} on colour {i1} "
                         f"(they would share a queue); join the first with Wait")
    if st == E.ST_LIMIT:
        raise SimulationLimit(f"simulation passed max_cycles = {max_cycles} at cycle {t}; "
                              f"{_blocked_report(program, cp, state)}")
    raise RuntimeError(f"engine returned unknown status {st}")
