"""Lowering a ``MeshProgram`` to the flat numpy arrays the engine runs on.

* **Routes** become a table sorted by (PE, colour); each accepted input port of a route is a
  *channel* (a router FIFO); ``down[r, port]`` is the channel a wavelet leaving route r through that
  port lands in (−1: no matching route there, −2: off the mesh), so mis-routing is one array read.
* **Code** is deduplicated: PEs with the same instruction list and buffer layout share one block of
  instruction rows (buffer offsets are relative to the PE's memory base). A synchronous fabric op
  is lowered to the async op plus an implicit zero-cost wait on it.
* **Memory** (functional mode only) is one float32 array holding every PE's buffers; fp16 values
  are stored as float32 that are exactly representable in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import costs
from simulator import instructions as I
from simulator.program import MeshProgram, Port

# Opcodes
OP_SEND, OP_RECV, OP_RECVADD, OP_RAS, OP_RELAY = 1, 2, 3, 4, 5
OP_WAIT, OP_TS = 6, 7
OP_GEMV, OP_GEMM = 8, 9
OP_ADD, OP_MUL, OP_MAX, OP_SCALE, OP_COPY, OP_FILL, OP_EXP, OP_RSQRT, OP_SILU = range(10, 19)
OP_NAMES = {
    OP_SEND: "Send", OP_RECV: "Recv", OP_RECVADD: "RecvAdd", OP_RAS: "RecvAddSend", OP_RELAY: "Relay",
    OP_WAIT: "Wait", OP_TS: "Timestamp", OP_GEMV: "Gemv", OP_GEMM: "Gemm", OP_ADD: "Add", OP_MUL: "Mul",
    OP_MAX: "Max", OP_SCALE: "Scale", OP_COPY: "Copy", OP_FILL: "Fill", OP_EXP: "Exp", OP_RSQRT: "Rsqrt",
    OP_SILU: "Silu",
}
_OPCODE = {
    I.Send: OP_SEND, I.Recv: OP_RECV, I.RecvAdd: OP_RECVADD, I.RecvAddSend: OP_RAS, I.Relay: OP_RELAY,
    I.Wait: OP_WAIT, I.Timestamp: OP_TS, I.Gemv: OP_GEMV, I.Gemm: OP_GEMM, I.Add: OP_ADD, I.Mul: OP_MUL,
    I.Max: OP_MAX, I.Scale: OP_SCALE, I.Copy: OP_COPY, I.Fill: OP_FILL, I.Exp: OP_EXP,
    I.Rsqrt: OP_RSQRT, I.Silu: OP_SILU,
}

# Instruction-row fields (int32)
(F_OP, F_COST, F_A_OFF, F_A_LEN, F_A_STR, F_A_DT, F_B_OFF, F_B_STR, F_B_DT, F_C_OFF, F_C_STR, F_C_DT,
 F_COL1, F_COL2, F_M, F_K, F_N, F_X, F_Y, F_FLAG, F_WN) = range(21)
NFIELDS = 21

DT_FP32, DT_FP16 = 0, 1
_DT = {"fp32": DT_FP32, "fp16": DT_FP16}

#: Micro-threads per PE (WSE-3 has 8; WSE-2 one per queue).
MAX_MICROTHREADS = 8


@dataclass
class Compiled:
    """Everything the engine needs, plus the maps back to program objects for reports."""

    width: int
    height: int
    num_colors: int
    functional: bool
    # parameters
    alpha: int
    ramp_in: int
    ramp_out: int
    beta: int
    cap_fabric: int
    cap_ramp: int
    cap_queue: int
    # routes and channels
    route_of: np.ndarray  # (P*C,) int32, -1 = none
    r_pe: np.ndarray
    r_col: np.ndarray
    r_rx: np.ndarray
    r_tx: np.ndarray
    r_chan0: np.ndarray  # (nr+1,)
    r_rampch: np.ndarray  # channel fed by this PE's CE, or -1
    r_down: np.ndarray  # (nr*4,) downstream channel per out port
    pe_r0: np.ndarray  # (P+1,)
    ch_route: np.ndarray
    ch_port: np.ndarray
    ch_cap: np.ndarray
    # code
    ins: np.ndarray  # (rows, NFIELDS) int32
    insf: np.ndarray  # (rows,) float64 scalars
    waitlist: np.ndarray
    pe_code: np.ndarray  # (P,) first row
    pe_len: np.ndarray  # (P,) rows
    pe_fbase: np.ndarray  # (P,) first completion flag
    n_flags: int
    pe_instr: list  # per row: index into the source instruction list of its PE (for reports)
    row_iid: np.ndarray  # (rows,) interned instruction id (-1 for implicit waits)
    labels: list
    n_timestamps: int
    # memory
    mem_base: np.ndarray
    mem: np.ndarray
    sram_bytes: np.ndarray


def compile_program(prog: MeshProgram, spec: HardwareSpec, functional: bool) -> Compiled:
    """Lower ``prog`` for ``spec``. Raises ``InputError`` for programs that cannot run."""
    prog.validate()
    W, H, C = prog.width, prog.height, spec.num_colors
    P = W * H
    alpha = costs.hop_cycles(spec)
    ramp_in, ramp_out = costs.ramp_split(spec)
    beta = costs.relay_cycles(spec)
    q_in, q_out = costs.queue_depths(spec)
    cap_fabric = spec.router_buffer_wavelets + alpha
    cap_ramp = q_out + ramp_in + beta
    cap_queue = q_in + ramp_out

    # --- routes ------------------------------------------------------------------------------
    pe_idx, col_idx = np.nonzero(prog._rx)
    nr = pe_idx.size
    route_of = np.full(P * C, -1, dtype=np.int32)
    route_of[pe_idx * C + col_idx] = np.arange(nr, dtype=np.int32)
    r_rx = prog._rx[pe_idx, col_idx].astype(np.int32)
    r_tx = prog._tx[pe_idx, col_idx].astype(np.int32)
    nrx = np.zeros(nr, dtype=np.int64)
    for p in range(5):
        nrx += (r_rx >> p) & 1
    r_chan0 = np.zeros(nr + 1, dtype=np.int64)
    np.cumsum(nrx, out=r_chan0[1:])
    nch = int(r_chan0[-1])
    ch_route = np.repeat(np.arange(nr, dtype=np.int32), nrx)
    ch_port = np.zeros(nch, dtype=np.int8)

    def rank(rx, p):
        below = rx & ((1 << p) - 1)
        cnt = np.zeros_like(rx)
        for q in range(p):
            cnt += (below >> q) & 1
        return cnt

    for p in range(5):
        has = ((r_rx >> p) & 1).astype(bool)
        ch_port[(r_chan0[:-1] + rank(r_rx, p))[has]] = p
    ch_cap = np.where(ch_port == Port.RAMP, cap_ramp, cap_fabric).astype(np.int32)
    r_rampch = np.where((r_rx >> Port.RAMP) & 1, r_chan0[:-1] + rank(r_rx, Port.RAMP), -1).astype(np.int64)
    r_down = np.full(nr * 4, -1, dtype=np.int64)
    xs, ys = pe_idx % W, pe_idx // W
    for p in (Port.NORTH, Port.SOUTH, Port.EAST, Port.WEST):
        has = ((r_tx >> p) & 1).astype(bool)
        dx, dy = p.delta
        nx, ny = xs + dx, ys + dy
        off = (nx < 0) | (nx >= W) | (ny < 0) | (ny >= H)
        down = np.full(nr, -1, dtype=np.int64)
        down[off] = -2
        ok = has & ~off
        nb = (ny * W + nx)[ok]
        r2 = route_of[nb * C + col_idx[ok]]
        opp = p.opposite
        valid = r2 >= 0
        r2v = r2[valid]
        accepts = ((r_rx[r2v] >> opp) & 1).astype(bool)
        d = np.full(r2.size, -1, dtype=np.int64)
        sub = np.full(r2v.size, -1, dtype=np.int64)
        sub[accepts] = (r_chan0[r2v] + rank(r_rx[r2v], opp))[accepts]
        d[valid] = sub
        down[ok] = d
        r_down[np.arange(nr) * 4 + p] = np.where(has, down, -1)
    pe_r0 = np.searchsorted(pe_idx, np.arange(P + 1)).astype(np.int64)

    # --- code --------------------------------------------------------------------------------
    labels: list[str] = []
    label_ids: dict[str, int] = {}
    blocks: dict[tuple, tuple[int, int, int, int]] = {}
    rows: list[list[int]] = []
    rowf: list[float] = []
    row_iid: list[int] = []
    waitlist: list[int] = []
    pe_code = np.zeros(P, dtype=np.int64)
    pe_len = np.zeros(P, dtype=np.int64)
    pe_nflag = np.zeros(P, dtype=np.int64)
    n_ts = 0
    templates: dict[tuple[int, int], tuple] = {}
    layout_id = prog._layout_id
    for pe, code in enumerate(prog._code):
        if not code:
            continue
        key = (tuple(code), int(layout_id[pe]))
        blk = blocks.get(key)
        if blk is None:
            start = len(rows)
            nflag, nts = _lower(prog, spec, code, int(layout_id[pe]), rows, rowf, row_iid, waitlist,
                                labels, label_ids, templates)
            blk = (start, len(rows) - start, nflag, nts)
            blocks[key] = blk
        pe_code[pe], pe_len[pe], pe_nflag[pe] = blk[0], blk[1], blk[2]
        n_ts += blk[3]
    ins = np.array(rows, dtype=np.int32).reshape(-1, NFIELDS) if rows else np.zeros((1, NFIELDS), np.int32)
    insf = np.array(rowf if rowf else [0.0], dtype=np.float64)
    pe_fbase = np.zeros(P, dtype=np.int64)
    if P > 1:
        np.cumsum(pe_nflag[:-1], out=pe_fbase[1:])
    n_flags = int(pe_nflag.sum())

    # --- memory ------------------------------------------------------------------------------
    lay_elems = np.array([lay.nelems for lay in prog._layouts], dtype=np.int64)
    lay_bytes = np.array([lay.nbytes for lay in prog._layouts], dtype=np.int64)
    per_pe = lay_elems[layout_id]
    mem_base = np.zeros(P, dtype=np.int64)
    if P > 1:
        np.cumsum(per_pe[:-1], out=mem_base[1:])
    if functional:
        mem = np.zeros(int(per_pe.sum()) + 1, dtype=np.float32)
        for (pe, name), arr in prog._init.items():
            buf = prog._layouts[layout_id[pe]].by_name[name]
            base = mem_base[pe] + buf.offset
            mem[base:base + buf.length] = arr
    else:
        mem = np.zeros(1, dtype=np.float32)

    return Compiled(
        width=W, height=H, num_colors=C, functional=functional, alpha=alpha, ramp_in=ramp_in,
        ramp_out=ramp_out, beta=beta, cap_fabric=cap_fabric, cap_ramp=cap_ramp, cap_queue=cap_queue,
        route_of=route_of, r_pe=pe_idx.astype(np.int32), r_col=col_idx.astype(np.int32), r_rx=r_rx,
        r_tx=r_tx, r_chan0=r_chan0, r_rampch=r_rampch, r_down=r_down, pe_r0=pe_r0, ch_route=ch_route,
        ch_port=ch_port, ch_cap=ch_cap, ins=ins, insf=insf,
        waitlist=np.array(waitlist if waitlist else [0], dtype=np.int32), pe_code=pe_code,
        pe_len=pe_len, pe_fbase=pe_fbase, n_flags=n_flags, pe_instr=[], row_iid=np.array(row_iid or [-1]),
        labels=labels, n_timestamps=n_ts, mem_base=mem_base, mem=mem,
        sram_bytes=lay_bytes[layout_id],
    )


_OTHER, _FABRIC, _WAIT, _STAMP = range(4)


def _template(prog: MeshProgram, spec: HardwareSpec, iid: int, layout_id: int) -> tuple:
    """The row of one instruction on one layout, less what depends on its place in the code
    (completion flag, wait list, timestamp label): (row, float operand, kind, instruction)."""
    ins = prog._instr_table[iid]
    refs = prog.resolve(layout_id, iid)
    row = [0] * NFIELDS
    row[F_OP] = _OPCODE[type(ins)]
    row[F_COST] = costs.instruction_cycles(spec, ins, refs)
    for (off, ln, st, dt), (fo, fs, fd) in zip(
        refs, ((F_A_OFF, F_A_STR, F_A_DT), (F_B_OFF, F_B_STR, F_B_DT), (F_C_OFF, F_C_STR, F_C_DT))
    ):
        row[fo], row[fs], row[fd] = off, st, _DT[dt]
    if refs:
        row[F_A_LEN] = refs[0][1]
    value = 0.0
    kind = _OTHER
    if isinstance(ins, I.FABRIC_INSTRUCTIONS):
        kind = _FABRIC
        if isinstance(ins, (I.Send, I.Recv, I.RecvAdd)):
            row[F_COL1] = ins.colour
        else:
            row[F_COL1], row[F_COL2] = ins.in_colour, ins.out_colour
        if isinstance(ins, I.Relay):
            row[F_X] = ins.count
        else:
            row[F_X] = costs.wavelets(refs[0][1], ins.packed)
            row[F_Y] = int(ins.packed)
        if isinstance(ins, I.Send):
            row[F_COL2] = ins.colour
            row[F_COL1] = -1
        elif isinstance(ins, (I.Recv, I.RecvAdd)):
            row[F_COL2] = -1
    elif isinstance(ins, I.Wait):
        kind = _WAIT
        row[F_WN] = len(ins.ids)
    elif isinstance(ins, I.Timestamp):
        kind = _STAMP
    elif isinstance(ins, (I.Gemv, I.Gemm)):
        row[F_M] = ins.m
        row[F_N] = ins.n
        if isinstance(ins, I.Gemm):
            row[F_K] = ins.k
        row[F_X] = 0 if ins.layout == "row" else 1
        row[F_Y] = _DT[costs.acc_dtype(ins, refs)]
    elif isinstance(ins, I.Scale):
        value = float(ins.factor)
    elif isinstance(ins, I.Fill):
        value = float(ins.value)
    return row, value, kind, ins


def _lower(prog: MeshProgram, spec: HardwareSpec, code: list[int], layout_id: int, rows: list,
           rowf: list, row_iid: list, waitlist: list, labels: list, label_ids: dict,
           templates: dict) -> tuple[int, int]:
    """Append the rows of one distinct (code, layout) block; returns (completion flags, timestamps).
    ``templates`` caches each (instruction, layout) row across blocks."""
    last_issue: dict[str, int] = {}
    nflag = 0
    nts = 0
    for iid in code:
        tpl = templates.get((iid, layout_id))
        if tpl is None:
            tpl = templates[(iid, layout_id)] = _template(prog, spec, iid, layout_id)
        row, value, kind, ins = tpl
        if kind == _FABRIC:
            row = row.copy()
            row[F_FLAG] = nflag
            ordinal = nflag
            nflag += 1
            rows.append(row)
            rowf.append(0.0)
            row_iid.append(iid)
            if ins.id is None:  # synchronous: implicit zero-cost join on itself
                w = [0] * NFIELDS
                w[F_OP], w[F_COST], w[F_FLAG], w[F_WN] = OP_WAIT, 0, len(waitlist), 1
                waitlist.append(ordinal)
                rows.append(w)
                rowf.append(0.0)
                row_iid.append(-1)
            else:
                last_issue[ins.id] = ordinal
            continue
        if kind == _WAIT:
            row = row.copy()
            row[F_FLAG] = len(waitlist)
            for name in ins.ids:
                if name not in last_issue:
                    raise InputError(f"Wait names op id {name!r} that no earlier async op issued")
                waitlist.append(last_issue[name])
        elif kind == _STAMP:
            row = row.copy()
            lid = label_ids.get(ins.label)
            if lid is None:
                lid = label_ids[ins.label] = len(labels)
                labels.append(ins.label)
            row[F_X] = lid
            nts += 1
        rows.append(row)  # rows are only read from here on: identical ones may be shared
        rowf.append(value)
        row_iid.append(iid)
    return nflag, nts
