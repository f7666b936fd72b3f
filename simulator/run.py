"""Running programs: ``Device`` (load once, launch repeatedly, copy buffers in and out between
launches — the SDK's memcpy model) and ``simulate`` (one launch of ``main``).

A launch runs the named function on every PE whose body has it, from the same cycle, and ends when
nothing is scheduled anywhere. Buffers, variables, task states and routes persist across launches;
the host sets the function's arguments (variables) and may read or write any buffer of any PE
between launches (``read``/``write``, or the memcpy-shaped ``memcpy_h2d``/``memcpy_d2h``). Host copies
are not simulated cycle by cycle (hardware-and-csl.md §4).

After a launch the state is checked: a PE whose task still waits (a synchronous op that never
completed, a task activated but blocked, a microthread running), wavelets nobody received, and a PE
that ran the launched function without reaching ``Finish`` (the host would wait forever) are errors
naming the PE, the body and the statement.
"""

from __future__ import annotations

import time

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import engine as E
from simulator.errors import MisroutedWavelet, SimulationDeadlock, SimulationLimit
from simulator.lower import (
    F_COL1, F_COL2, F_OP, LAUNCH_TASK, MAX_MICROTHREADS, NTASK, OP_NAMES, Lowered, describe_row,
    lower_program,
)
from simulator.program import MeshProgram, Port
from simulator.result import SimResult

MODES = ("functional", "timing")
#: Events kept for a Chrome trace; larger runs should not ask for one.
MAX_TRACE_EVENTS = 2_000_000
MAX_FABRIC_LATENCY = 4096  # cycles; FIFO rings and the timing wheel are sized by it
UT = MAX_MICROTHREADS


#: meshes from this many PEs may run each cycle's visits on several threads (below it, handing a
#: cycle to the threads costs more than it saves)
PARALLEL_MIN_PES = 16_384


def _parts(pes: int, trace: bool, threads: int | None) -> int:
    """How many concurrent parts a cycle is split into: ``threads`` if given, else the environment's
    ``WAFERLLM_SIM_THREADS`` (default 1: on a shared host a per-cycle hand-off to a second thread
    waits for that thread's time slice, docs/BENCHMARKS.md), for meshes of ``PARALLEL_MIN_PES`` or
    more; one when tracing (the trace keeps the visit order)."""
    if threads is None:
        import os
        env = os.environ.get("WAFERLLM_SIM_THREADS", "1")
        try:
            threads = int(env)
        except ValueError:
            raise InputError(f"WAFERLLM_SIM_THREADS must be an integer, got {env!r}") from None
        if pes < PARALLEL_MIN_PES:
            threads = 1
    if threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    if threads > 1 and not trace:
        import os
        # the parts meet once a cycle: threads that spin while they wait for a descheduled partner
        # burn the CPU it needs (measured 10x slower on a loaded host); read when OpenMP starts
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return 1 if trace else threads


#: cycles a blocked run advances a tile before moving on (simulator.engine._block_tiles_py); 1: one cycle
#: at a time. ``WAFERLLM_SIM_BLOCK`` or ``Device(block=...)`` overrides it.
BLOCK_DEPTH = 16
#: agents due per cycle from which a run blocks (below, a cycle's records fit in the cache anyway)
BLOCK_DENSE = 2048


def _block(block: int | None) -> int:
    """The block depth: ``block`` if given, else ``WAFERLLM_SIM_BLOCK``, else ``BLOCK_DEPTH``."""
    if block is None:
        import os
        env = os.environ.get("WAFERLLM_SIM_BLOCK")
        if env is None:
            return BLOCK_DEPTH
        try:
            block = int(env)
        except ValueError:
            raise InputError(f"WAFERLLM_SIM_BLOCK must be an integer, got {env!r}") from None
    if not 1 <= block <= 64:
        raise InputError(f"block must be in [1, 64], got {block}")
    return block


def _zeros_aligned(n: int, dtype) -> np.ndarray:
    """Zeros starting on a 64-byte cache line, so the engine's records straddle fewer lines."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // item, dtype=dtype)
    skip = (-raw.ctypes.data % 64) // item
    return raw[skip:skip + n]


class Device:
    """``program`` loaded on a simulated ``spec`` (see the module docstring)."""

    def __init__(self, program: MeshProgram, spec: HardwareSpec | None = None, mode: str = "functional",
                 max_idle_cycles: int = 10_000, max_cycles: int = 2_000_000_000, trace: bool = False,
                 threads: int | None = None, block: int | None = None):
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        spec = spec or program.spec
        if spec.num_colors != program.spec.num_colors:
            raise InputError("the spec must have the same colour count as the program's spec")
        if not 1 <= max_cycles < 2**40:
            raise InputError(f"max_cycles must be in [1, 2**40), got {max_cycles}")
        t0 = time.perf_counter()
        self.program = program
        self.spec = spec
        self.mode = mode
        self.max_idle = max_idle_cycles
        self.max_cycles = max_cycles
        cp = self.lowered = lower_program(program, spec, functional=(mode == "functional"))
        self.compile_s = time.perf_counter() - t0
        W, H, C = cp.width, cp.height, cp.num_colors
        P = W * H
        if P >= 2**20:
            raise InputError(f"mesh of {P} PEs exceeds the engine's 2^20 PE limit")
        nr = cp.r_tx.shape[0]
        nch = cp.ch_route.shape[0]
        self.S = 1 << (max(cp.cap_fabric, cp.cap_ramp) - 1).bit_length()
        self.SQ = 1 << (cp.cap_queue - 1).bit_length()
        longest_hop = max(cp.alpha, cp.ramp_in + cp.beta, cp.ramp_out, 1)
        if longest_hop > MAX_FABRIC_LATENCY:
            raise InputError(f"fabric latency of {longest_hop} cycles (hop, ramp or relay) is beyond the "
                             f"simulator's {MAX_FABRIC_LATENCY}; use hardware figures below that")
        self.nslot = max(32, 1 << (longest_hop + 1).bit_length())
        big = max_cycles + 2**24 >= 2**31 - 1 or cp.mem.size >= 2**31 - 1
        rdt = np.int64 if big else np.int32
        self.trace = trace
        self.trace_cap = MAX_TRACE_EVENTS if trace else 0
        # ``threads`` concurrent parts of each cycle (results identical to one thread; see
        # simulator.engine.segments); numba runs them on up to its thread count
        self.seg_w = E.segments(W, H, _parts(P, trace, threads))
        # no trace: dense stretches run ``block`` cycles at a time (same results)
        self.block = _block(block)
        self.block_tile = E.block_tile(W, cp.ch_route, cp.ch_port, cp.r_chan0)
        # cut in parts too when the order of one cycle's visits cannot matter (engine docstring):
        # no route with several inputs, no SetRoute
        self.commute = bool(not (np.diff(cp.r_chan0) > 1).any()
                            and not (cp.ins[:, E.F_OP] == E.OP_SETROUTE).any())
        ncs, self.HB = E.channel_layout(cp.ch_cap, self.S)
        self.cs = _zeros_aligned(ncs, rdt)  # channel records, head-ready words, large rings
        self.rs = _zeros_aligned(max(nr, 1) * (12 + self.SQ) + 1, rdt)
        self.ps = _zeros_aligned(P * E.PS, rdt)
        self.ur = _zeros_aligned(P * UT * E.UR, rdt)
        self.regs = np.zeros(P * cp.nreg, dtype=np.float64)
        regs2 = self.regs.reshape(P, cp.nreg)
        has = cp.pe_block >= 0
        if has.all():  # every PE runs code (the kernels): gather the rows in place, no temporary
            np.take(cp.reg_init, cp.pe_block, axis=0, out=regs2)
        else:
            regs2[has] = cp.reg_init[cp.pe_block[has]]
        regs2[:, 0] = np.arange(P) % W
        regs2[:, 1] = np.arange(P) // W
        self.tact = np.zeros(P, dtype=np.int64)
        self.tblk = np.where(has, cp.blk_blocked[np.maximum(cp.pe_block, 0)], 0).astype(np.int64)
        func = mode == "functional"
        self.ch_pay = np.zeros(ncs * 2 if func else 2, dtype=np.float32)
        self.q_pay = np.zeros(max(nr, 1) * (12 + self.SQ) * 2 + 2 if func else 2, dtype=np.float32)
        self.mem = cp.mem
        E.init_records(W, H, self.S, self.SQ, cp.r_pe, cp.r_tx, cp.r_rampch, cp.r_down, cp.r_chan0,
                       cp.pe_r0, cp.ch_route, cp.ch_port, cp.ch_cap, cp.pe_block, self.cs, self.rs, self.ps,
                       self.ur)
        self.cycle = 0
        self.link_acc = np.zeros(P * 5, dtype=np.int64)  # forwards counted on routes later re-routed
        self.launches: list[SimResult] = []
        self._links_before = np.zeros(P * 5, dtype=np.int64)

    # ------------------------------------------------------------------------------------------
    # host copies
    # ------------------------------------------------------------------------------------------

    def _buf(self, x: int, y: int, name: str):
        prog = self.program
        pe = int(prog.pes(x, y)[0])
        buf = prog._pe_buffers(pe).get(name)
        if buf is None:
            raise InputError(f"PE ({x}, {y}): no buffer {name!r}")
        return pe, buf

    def read(self, x: int, y: int, name: str) -> np.ndarray:
        """Contents of buffer ``name`` on PE (x, y) (float16 or float32; functional mode)."""
        if self.mode != "functional":
            raise InputError("buffer read-back needs mode='functional'; this device is timing-only")
        pe, buf = self._buf(x, y, name)
        base = int(self.lowered.mem_base[pe]) + buf.offset
        vals = self.mem[base:base + buf.length]
        return vals.astype(np.float16) if buf.dtype == "fp16" else vals.copy()

    def write(self, x: int, y: int, name: str, values) -> None:
        """Overwrite buffer ``name`` on PE (x, y) (rounded to its dtype; ignored in timing mode)."""
        pe, buf = self._buf(x, y, name)
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size != buf.length:
            raise InputError(f"PE ({x}, {y}): {arr.size} values for buffer {name!r} of length {buf.length}")
        if self.mode != "functional":
            return
        base = int(self.lowered.mem_base[pe]) + buf.offset
        t = np.float16 if buf.dtype == "fp16" else np.float32
        self.mem[base:base + buf.length] = arr.astype(t).astype(np.float32)

    def memcpy_h2d(self, name: str, data, x0: int = 0, y0: int = 0, w: int | None = None,
                   h: int | None = None) -> None:
        """Copy ``data`` shaped (h, w, n) (row-major: PE (x0 + j, y0 + i) gets ``data[i, j]``) into
        buffer ``name`` of a w × h rectangle, as ``SdkRuntime.memcpy_h2d`` with ROW_MAJOR order."""
        w = self.program.width - x0 if w is None else w
        h = self.program.height - y0 if h is None else h
        arr = np.asarray(data)
        arr = arr.reshape(h, w, -1)
        for i in range(h):
            for j in range(w):
                self.write(x0 + j, y0 + i, name, arr[i, j])

    def memcpy_d2h(self, name: str, x0: int = 0, y0: int = 0, w: int | None = None,
                   h: int | None = None) -> np.ndarray:
        """Buffer ``name`` of a w × h rectangle as an (h, w, n) array (``memcpy_d2h``, ROW_MAJOR)."""
        w = self.program.width - x0 if w is None else w
        h = self.program.height - y0 if h is None else h
        rows = [[self.read(x0 + j, y0 + i, name) for j in range(w)] for i in range(h)]
        return np.array(rows)

    def get(self, x: int, y: int, var: str) -> float:
        """Value of scalar variable ``var`` on PE (x, y)."""
        pe = int(self.program.pes(x, y)[0])
        blk = self.program.blocks[int(self.lowered.pe_block[pe])] if self.lowered.pe_block[pe] >= 0 else None
        if blk is None or var not in blk.body.vars:
            raise InputError(f"PE ({x}, {y}): no variable {var!r}")
        g = list(blk.body.vars).index(var)
        return float(self.regs[pe * self.lowered.nreg + 2 + g])

    # ------------------------------------------------------------------------------------------
    # launches
    # ------------------------------------------------------------------------------------------

    def launch(self, name: str | None = None, **scalars) -> SimResult:
        """Run function ``name`` (default: the program's entry, ``main``) on every PE that has it,
        with its arguments from ``scalars``; returns this launch's ``SimResult``."""
        cp = self.lowered
        prog = self.program
        name = name or prog.entry
        if name not in cp.entries:
            have = ", ".join(sorted(cp.entries)) or "none"
            raise InputError(f"no body of this program has a function {name!r}; functions: {have}")
        P = prog.num_pes
        pe_entry = np.where(cp.pe_block >= 0, cp.entries[name][np.maximum(cp.pe_block, 0)], -1).astype(np.int64)
        # launch arguments
        for bi, regs in cp.entry_args.get(name, {}).items():
            args = prog.blocks[bi].body.functions[name].args
            missing = [a for a in args if a not in scalars]
            if missing:
                raise InputError(f"launch {name!r}: argument {missing[0]!r} has no value (arguments: "
                                 f"{', '.join(args)})")
            pes = np.nonzero(cp.pe_block == bi)[0]
            for a, r in zip(args, regs):
                self.regs[pes * cp.nreg + r] = float(scalars[a])
        known = {a for bi in cp.entry_args.get(name, {}) for a in prog.blocks[bi].body.functions[name].args}
        extra = sorted(set(scalars) - known)
        if extra:
            raise InputError(f"launch {name!r}: unknown argument {extra[0]!r}; arguments: "
                             f"{', '.join(sorted(known)) or 'none'}")
        t_start = self.cycle
        params = np.zeros(E.NPARAMS, dtype=np.int64)
        params[E.P_W], params[E.P_H], params[E.P_C] = cp.width, cp.height, cp.num_colors
        params[E.P_ALPHA], params[E.P_RIN], params[E.P_ROUT], params[E.P_BETA] = (
            cp.alpha, cp.ramp_in, cp.ramp_out, cp.beta)
        params[E.P_MAXIDLE] = self.max_idle
        params[E.P_MAXCYC] = self.max_cycles
        params[E.P_S], params[E.P_SQ], params[E.P_CAPQ] = self.S, self.SQ, cp.cap_queue
        params[E.P_HB] = self.HB
        params[E.P_TRACE] = self.trace_cap
        params[E.P_NSLOT] = self.nslot
        params[E.P_T0] = t_start
        params[E.P_CTASK] = cp.task_cycles
        params[E.P_UT] = cp.microthreads
        params[E.P_NREG] = cp.nreg
        params[E.P_CSCAL] = cp.scalar_cycles
        ts_cap = max(4096, 8 * P)
        params[E.P_TSCAP] = ts_cap
        params[E.P_NCFG] = cp.n_configs
        params[E.P_RPORTS] = self.spec.memory_read_ports if self.spec.memory_write_ports > 0 else 0
        params[E.P_WPORTS] = self.spec.memory_write_ports
        params[E.P_RAMP1] = self.spec.ramp_wavelets_per_cycle
        params[E.P_BLOCK] = self.block
        params[E.P_TILE] = self.block_tile
        params[E.P_DENSE] = BLOCK_DENSE
        params[E.P_COMMUTE] = int(self.commute)
        ts_pe = np.zeros(ts_cap, dtype=np.int64)
        ts_label = np.zeros(ts_cap, dtype=np.int64)
        ts_cycle = np.zeros(ts_cap, dtype=np.int64)
        tr = np.zeros((max(self.trace_cap, 1), 5), dtype=np.int64)
        out = np.zeros(E.NOUT, dtype=np.int64)
        ps2 = self.ps.reshape(P, E.PS)
        busy0 = ps2[:, E.E_BUSY].astype(np.int64).copy()
        t1 = time.perf_counter()
        E.run(cp.functional, params, cp.route_of, cp.r_pe, cp.r_tx, cp.ch_route, cp.ins, cp.jtab, pe_entry,
              cp.tk_entry, cp.tk_data, cp.tk_arg, cp.blk_prio, cp.blk_data, self.mem, cp.mem_base, self.regs,
              self.tact, self.tblk, self.ur, self.ch_pay, self.q_pay, ts_pe, ts_label, ts_cycle, tr, out,
              self.cs, self.rs, self.ps, cp.r_chan0, cp.r_cfg_tx, cp.r_cfg_down, self.link_acc, self.seg_w)
        t2 = time.perf_counter()
        st, t = int(out[E.O_ST]), int(out[E.O_T])
        if st != E.ST_OK:
            self._raise(st, t, out)
        self._check_quiescent(t, pe_entry, name)
        fin = ps2[:, E.E_FIN].astype(np.int64)
        end = max(int(out[E.O_TOTAL]), int(fin.max(initial=0)), t_start)
        total = end - t_start
        busy = ps2[:, E.E_BUSY].astype(np.int64) - busy0
        finish = np.where(fin > t_start, fin - t_start, 0)
        links = self._links()
        lk = links - self._links_before
        self._links_before = links
        labels = cp.labels
        nts = int(out[E.O_NTS])
        order = np.lexsort((ts_pe[:nts], ts_cycle[:nts]))
        W = cp.width
        stamps = [(int(ts_pe[i]) % W, int(ts_pe[i]) // W, labels[int(ts_label[i])], int(ts_cycle[i]) - t_start)
                  for i in order]
        events = []
        if self.trace:
            ev = tr[:out[E.O_NTR]]
            ev = ev[np.lexsort((ev[:, 1], ev[:, 0], ev[:, 3]))]
            for pe, tid, row, a, b in ev.tolist():
                events.append(((pe % W, pe // W), tid, self._row_name(row), a - t_start, b - t_start))
        H = cp.height
        res = SimResult(
            mode=self.mode, total_cycles=total, busy=busy.reshape(H, W),
            stalled=np.maximum(finish - busy, 0).reshape(H, W),
            idle=(total - np.maximum(finish, busy)).reshape(H, W), finish=finish.reshape(H, W),
            link_wavelets=lk.reshape(H, W, 5), sram_bytes=cp.sram_bytes.reshape(H, W), timestamps=stamps,
            stats={"compile_s": self.compile_s, "run_s": t2 - t1, "launch": name, "start_cycle": t_start,
                   "ce_visits": int(out[E.O_VCE]), "router_visits": int(out[E.O_VRT]),
                   "wavelet_moves": int(out[E.O_MOVES]), "router_only_pe_cycles": int(out[E.O_RTONLY]),
                   "routes": int(cp.r_tx.shape[0]), "channels": int(cp.ch_route.shape[0]),
                   "instruction_rows": int(cp.ins.shape[0]), "timestamps_dropped": int(out[E.O_TSDROP]),
                   "blocked_cycles": int(out[E.O_BLOCKED]),
                   **self.program.stats()},
            _program=self.program, _device=self, _trace=events,
        )
        self.cycle = end
        self.launches.append(res)
        return res

    def _links(self) -> np.ndarray:
        cp = self.lowered
        RS = 12 + self.SQ
        nr = cp.r_tx.shape[0]
        # a route's forwarded wavelets: its channels' pops (their heads count every pop, int32 ones
        # modulo 2^32) since its last reconfiguration (the sum then, in its record)
        pops = np.zeros(nr, dtype=np.int64)
        nch = cp.ch_route.shape[0]
        np.add.at(pops, cp.ch_route.astype(np.int64), self.cs[np.arange(nch) * E.CH].astype(np.int64))
        fwd = (pops - self.rs[np.arange(nr) * RS + 3].astype(np.int64)) & 0xFFFFFFFF
        tx_now = self.rs[np.arange(nr) * RS + 7].astype(np.int64)  # the configuration in place now
        links = self.link_acc.copy()
        for p in range(5):
            has = ((tx_now >> p) & 1).astype(bool)
            np.add.at(links, cp.r_pe[has].astype(np.int64) * 5 + p, fwd[has])
        return links

    # ------------------------------------------------------------------------------------------
    # errors
    # ------------------------------------------------------------------------------------------

    def _row_name(self, row: int) -> str:
        cp = self.lowered
        if row < 0:
            return f"task switch to task ID {-1 - row}" if -1 - row < NTASK else "launch"
        return describe_row(cp, row)

    def _pe_str(self, pe: int) -> str:
        W = self.lowered.width
        blk = int(self.lowered.pe_block[pe])
        body = f" (body {self.lowered.block_names[blk]})" if blk >= 0 else ""
        return f"PE ({pe % W}, {pe // W}){body}"

    def _blocked_report(self, pes, limit: int = 10) -> str:
        cp = self.lowered
        C = cp.num_colors
        ps2 = self.ps.reshape(-1, E.PS)
        lines = []
        for pe in pes[:limit]:
            pe = int(pe)
            parts = []
            cur = int(ps2[pe, E.E_CUR])
            if cur >= 0 and ps2[pe, E.E_PC] >= 0:
                who = "main" if cur == LAUNCH_TASK else f"task ID {cur}"
                if ps2[pe, E.E_PARK]:
                    parts.append(f"{who} waits for its synchronous {self._row_name(int(ps2[pe, E.E_PC]) - 1)}")
                else:
                    parts.append(f"{who} at {self._row_name(int(ps2[pe, E.E_PC]))}")
            CS, RS = E.CH, 12 + self.SQ
            for s in range(UT):
                row = int(self.ur[(pe * UT + s) * E.UR])
                if row < 0:
                    continue
                desc = [OP_NAMES[int(cp.ins[row, F_OP])]]
                rc, sc = int(cp.ins[row, F_COL1]), int(cp.ins[row, F_COL2])
                if rc >= 0:
                    r = int(cp.route_of[pe * C + rc])
                    desc.append(f"recv colour {rc} (input queue {int(self.rs[r * RS + 1])}/{cp.cap_queue})")
                if sc >= 0:
                    r = int(cp.route_of[pe * C + sc])
                    ch = int(cp.r_rampch[r])
                    desc.append(f"send colour {sc} (output queue {int(self.cs[ch * CS + 1])}/{cp.cap_ramp})")
                parts.append(" ".join(desc))
            waiting = int(self.tact[pe] & self.tblk[pe])
            if waiting:
                ids = [i for i in range(64) if waiting >> i & 1]
                parts.append(f"task IDs {ids} activated but blocked")
            lines.append(f"  {self._pe_str(pe)}: " + "; ".join(parts))
        more = len(pes) - limit
        if more > 0:
            lines.append(f"  ... and {more} more PEs")
        return f"{len(pes)} PEs blocked:\n" + "\n".join(lines)

    def _check_quiescent(self, t: int, pe_entry: np.ndarray, name: str) -> None:
        cp = self.lowered
        ps2 = self.ps.reshape(-1, E.PS)
        stuck = (ps2[:, E.E_PARK] != 0) | (ps2[:, E.E_UMASK] != 0) | (ps2[:, E.E_CUR] >= 0) | \
            ((self.tact & self.tblk) != 0)
        if stuck.any():
            raise SimulationDeadlock(f"deadlock at cycle {t - self.cycle}: no agent can make progress any more; "
                                     f"{self._blocked_report(np.nonzero(stuck)[0])}")
        CS, RS = E.CH, 12 + self.SQ
        nch, nr = cp.ch_route.shape[0], cp.r_tx.shape[0]
        ch_cnt = self.cs[np.arange(nch) * CS + 1]
        q_cnt = self.rs[np.arange(nr) * RS + 1]
        if ch_cnt.any() or q_cnt.any():
            W = cp.width
            where = []
            for r in np.nonzero(q_cnt)[0][:5]:
                where.append(f"{self._pe_str(int(cp.r_pe[r]))} colour {int(cp.r_col[r])}: "
                             f"{int(q_cnt[r])} in the input queue")
            for ch in np.nonzero(ch_cnt)[0][:5]:
                r = int(cp.ch_route[ch])
                where.append(f"{self._pe_str(int(cp.r_pe[r]))} colour {int(cp.r_col[r])}: {int(ch_cnt[ch])} in "
                             f"the router buffer from {Port(int(cp.ch_port[ch])).name}")
            raise MisroutedWavelet(f"cycle {t - self.cycle}: every PE finished but wavelets were never received "
                                   f"(no receive or unblocked data task expected them): " + "; ".join(where))
        fin = ps2[:, E.E_FINISHED]
        missing = np.nonzero((pe_entry >= 0) & (fin == 0))[0]
        if missing.size:
            raise SimulationDeadlock(
                f"launch {name!r}: {self._pe_str(int(missing[0]))} and {missing.size - 1} more PEs ran the function "
                f"but never reached Finish (sys_mod.unblock_cmd_stream()); the host would wait forever")
        twice = np.nonzero(fin > 1)[0]
        if twice.size:
            raise SimulationDeadlock(f"launch {name!r}: {self._pe_str(int(twice[0]))} reached Finish "
                                     f"{int(fin[twice[0]])} times; a launch ends once per PE")

    def _raise(self, st: int, t: int, out: np.ndarray) -> None:
        cp = self.lowered
        W, C = cp.width, cp.num_colors
        i0, i1, i2, i3 = (int(out[E.O_I0]), int(out[E.O_I1]), int(out[E.O_I2]), int(out[E.O_I3]))
        rel = t - self.cycle
        if st == E.ST_IDLE:
            ps2 = self.ps.reshape(-1, E.PS)
            stuck = np.nonzero((ps2[:, E.E_PARK] != 0) | (ps2[:, E.E_UMASK] != 0) | (ps2[:, E.E_CUR] >= 0))[0]
            raise SimulationDeadlock(f"deadlock at cycle {rel}: nothing moved for {self.max_idle} cycles; "
                                     f"{self._blocked_report(stuck)}")
        if st == E.ST_MISROUTE:
            pe, col = int(cp.r_pe[i1]), int(cp.r_col[i1])
            port = Port(i2 // 4)
            offmesh = i2 % 4 == 0
            nx, ny = pe % W + port.delta[0], pe // W + port.delta[1]
            if offmesh:
                why = f"which leads off the {cp.width}x{cp.height} mesh"
            else:
                r2 = int(cp.route_of[(ny * W + nx) * C + col])
                have = "no route" if r2 < 0 else self.program._route_str(ny * W + nx, col)
                why = f"but PE ({nx}, {ny}) does not accept colour {col} from {port.opposite.name} ({have})"
            raise MisroutedWavelet(f"cycle {rel}: PE ({pe % W}, {pe // W}) forwards colour {col} {port.name}, {why}")
        if st == E.ST_MULTIRX:
            raise MisroutedWavelet(f"cycle {rel}: two wavelets of colour {int(cp.r_col[i1])} reach the router of "
                                   f"PE ({int(cp.r_pe[i1]) % W}, {int(cp.r_pe[i1]) // W}) from two directions in "
                                   f"the same cycle (undefined on the hardware)")
        if st == E.ST_UTLIMIT:
            raise InputError(f"cycle {rel}: {self._pe_str(i0)} has more than {i1} fabric ops running at once "
                             f"({self.spec.name} has {self.spec.microthreads} microthreads); join some first")
        if st == E.ST_QCONFLICT:
            kind = "receives" if i2 == 0 else "sends"
            raise InputError(f"cycle {rel}: {self._pe_str(i0)}: {self._row_name(i3)} {kind} on colour {i1} "
                             f"while another running op uses that colour or its queue; join the first "
                             f"before issuing the second")
        if st == E.ST_BOUNDS:
            row = i1
            what = "an operand" if i2 < 0 else f"operand {i2}"
            raise InputError(f"cycle {rel}: {self._pe_str(i0)}: {self._row_name(row)}: {what} at element {i3} "
                             f"runs outside its buffer (a run-time offset or length past the buffer's end)")
        if st == E.ST_NEGCOUNT:
            raise InputError(f"cycle {rel}: {self._pe_str(i0)}: {self._row_name(i1)}: count {i2} is below zero")
        if st == E.ST_RUNAWAY:
            raise InputError(f"cycle {rel}: {self._pe_str(i0)}: {self._row_name(i1)}: more than "
                             f"{E.MAX_ROWS_PER_VISIT} scalar statements in one cycle (a loop that does no work?)")
        if st == E.ST_ROUTEBUSY:
            raise InputError(f"cycle {rel}: {self._pe_str(i0)}: {self._row_name(i1)}: colour {i2} still carries "
                             f"wavelets in this router; change a route only while its colour is idle (teardown)")
        if st == E.ST_SCALAR:
            raise InputError(f"cycle {rel}: {self._pe_str(i0)}: {self._row_name(i1)}: division by zero")
        if st == E.ST_LIMIT:
            ps2 = self.ps.reshape(-1, E.PS)
            busy = np.nonzero((ps2[:, E.E_PARK] != 0) | (ps2[:, E.E_UMASK] != 0) | (ps2[:, E.E_CUR] >= 0))[0]
            raise SimulationLimit(f"simulation passed max_cycles = {self.max_cycles} at cycle {t}; "
                                  f"{self._blocked_report(busy)}")
        raise RuntimeError(f"engine returned unknown status {st}")


def simulate(program: MeshProgram, spec: HardwareSpec | None = None, mode: str = "functional",
             max_idle_cycles: int = 10_000, max_cycles: int = 2_000_000_000,
             trace: bool = False, threads: int | None = None) -> SimResult:
    """Load ``program`` and launch its entry function (``main``) once; see ``Device`` for repeated
    launches and host copies.

    ``mode="functional"`` moves and computes data; ``"timing"`` allocates no payloads and gives the
    same cycle counts (run-time values read from memory are 0 there). Raises ``SimulationDeadlock``
    when work remains but nothing can move (or agents kept retrying and nothing moved for
    ``max_idle_cycles``), ``MisroutedWavelet`` for wavelets without a route, arriving from two
    directions at once or left unconsumed, ``SimulationLimit`` past ``max_cycles``, and
    ``InputError`` for programs that cannot run (naming the PE, the body and the statement).
    ``threads``: concurrent parts per cycle, as ``Device`` takes them (same results)."""
    dev = Device(program, spec, mode, max_idle_cycles, max_cycles, trace, threads)
    return dev.launch()

