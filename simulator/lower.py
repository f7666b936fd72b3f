"""Lowering a ``MeshProgram`` to the flat arrays the engine runs on.

* **Routes** become a table sorted by (PE, colour); each accepted input port of a route is a
  *channel* (a router FIFO); ``down[r, port]`` is the channel a wavelet leaving route r through that
  port lands in (−1: no matching route there, −2: off the mesh), so mis-routing is one array read.
* **Code**: each *block* (a body with one set of parameter values) is compiled once into rows of a
  small register machine — parameters folded to constants, branches on parameters pruned, run-time
  expressions compiled to scalar rows over a per-PE register file (constants, variables, the PE's
  coordinates in registers 0 and 1, temporaries). PEs of a block share its rows. Blocks of one body
  whose parameters differ only in colours (ring and chain colours per row and column: most of a
  prefill region's parameter sets) lower to the same rows but for colours, queues and task IDs: the
  first is compiled, the others copy its rows and bind those again (``_RowTemplate``).
* **Tasks**: per block, a table of 64 task IDs (entry row, data-task colour and argument register,
  priority, initially blocked), with IDs from ``simulator.resources``.
* **Memory** (functional mode only) is one float32 array holding every PE's buffers; fp16 values are
  stored as float32 that are exactly representable in fp16.

Row layout: ``F_*`` fields below; ``OP_*`` opcodes. Scalar rows (``OP_MOV`` … ``OP_RET``'s
predecessors) touch only registers and task state and run back to back within one engine visit;
DSD ops, ``Timestamp`` and the end of a task run at their exact cycle.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import costs
from simulator import instructions as I
from simulator import resources
from simulator import statements as S
from simulator.expr import BinOp, Const, Coord, Expr, Load, Param, Select, UnOp, Var, as_expr, names, substitute
from simulator.program import Buffer, MeshProgram, Port, check_static_slice

# ---- opcodes ------------------------------------------------------------------------------------
# scalar (register) rows: run back to back in one visit, each costing spec.scalar_op_cycles
OP_MOV, OP_BIN, OP_SEL, OP_JMP, OP_BRZ, OP_JTAB, OP_LOOPINIT, OP_LOOPNEXT, OP_CHECKNN = range(1, 10)
OP_LOAD, OP_STORE, OP_ACT, OP_BLK, OP_UNBLK, OP_FINISH = range(10, 16)
LAST_SCALAR = OP_FINISH
# rows that run at their exact cycle
OP_TS, OP_RET, OP_SETROUTE = 16, 17, 18
OP_SEND, OP_RECV, OP_RECVADD, OP_RAS, OP_RELAY, OP_RELAYSTORE = 20, 21, 22, 23, 24, 25
OP_FMAC, OP_ADD, OP_MUL, OP_MAX, OP_SCALE, OP_COPY, OP_FILL, OP_EXP, OP_RSQRT, OP_SILU = range(30, 40)
FIRST_FABRIC, LAST_FABRIC = OP_SEND, OP_RELAYSTORE
OP_NAMES = {
    OP_MOV: "Assign", OP_BIN: "scalar op", OP_SEL: "select", OP_JMP: "jump", OP_BRZ: "If",
    OP_JTAB: "Switch", OP_LOOPINIT: "Loop", OP_LOOPNEXT: "Loop", OP_CHECKNN: "loop count",
    OP_LOAD: "load", OP_STORE: "Store", OP_ACT: "Activate", OP_BLK: "Block", OP_UNBLK: "Unblock",
    OP_FINISH: "Finish", OP_TS: "Timestamp", OP_RET: "end of task", OP_SETROUTE: "SetRoute", OP_SEND: "Send",
    OP_RECV: "Recv", OP_RECVADD: "RecvAdd", OP_RAS: "RecvAddSend", OP_RELAY: "Relay",
    OP_RELAYSTORE: "RelayStore",
    OP_FMAC: "Fmac", OP_ADD: "Add", OP_MUL: "Mul", OP_MAX: "Max", OP_SCALE: "Scale", OP_COPY: "Copy",
    OP_FILL: "Fill", OP_EXP: "Exp", OP_RSQRT: "Rsqrt", OP_SILU: "Silu",
}
_FABRIC_OP = {I.Send: OP_SEND, I.Recv: OP_RECV, I.RecvAdd: OP_RECVADD, I.RecvAddSend: OP_RAS,
              I.Relay: OP_RELAY, I.RelayStore: OP_RELAYSTORE}
_COMPUTE_OP = {I.Fmac: OP_FMAC, I.Add: OP_ADD, I.Mul: OP_MUL, I.Max: OP_MAX, I.Scale: OP_SCALE,
               I.Copy: OP_COPY, I.Fill: OP_FILL, I.Exp: OP_EXP, I.Rsqrt: OP_RSQRT, I.Silu: OP_SILU}
# scalar binary operator codes (OP_BIN field F_D)
BIN_CODES = {"add": 0, "sub": 1, "mul": 2, "div": 3, "mod": 4, "fdiv": 5, "min": 6, "max": 7,
             "lt": 8, "le": 9, "gt": 10, "ge": 11, "eq": 12, "ne": 13, "and": 14, "or": 15,
             "neg": 16, "not": 17}

# ---- row fields ---------------------------------------------------------------------------------
(F_OP, F_A, F_B, F_C, F_D, F_TGT, F_COST, F_W, F_MULT, F_LEN, F_LENR, F_SREG, F_PORTS, F_DONE,
 F_COL1, F_COL2, F_PACK, F_ORIG, F_QIN, F_QOUT) = range(20)
OPND0 = 20  # operand k occupies OPND0 + 6k .. +5: offset, offset register, stride, dtype, buffer lo, hi
OPND_FIELDS = 6
NFIELDS = OPND0 + 3 * OPND_FIELDS
O_OFF, O_OFFR, O_STR, O_DT, O_LO, O_HI = range(6)

DT_FP32, DT_FP16 = 0, 1
_DT = {"fp32": DT_FP32, "fp16": DT_FP16}
# completion codes (F_DONE): -1 synchronous, 0 async with no action, kind*64 + task id otherwise
DONE_SYNC, DONE_NONE, DONE_ACT, DONE_UNBLK = -1, 0, 1, 2
NTASK = 64
LAUNCH_TASK = NTASK  # the pseudo task a launch runs in
REG_X, REG_Y = 0, 1

#: Microthread slots per PE (the engine's array width; the target's count is checked at run time).
MAX_MICROTHREADS = 8


@dataclass
class Lowered:
    """Everything the engine needs, plus maps back to program objects for reports and errors."""

    width: int
    height: int
    num_colors: int
    functional: bool
    # parameters
    alpha: int
    ramp_in: int
    ramp_out: int
    beta: int
    task_cycles: int
    scalar_cycles: int
    cap_fabric: int
    cap_ramp: int
    cap_queue: int
    microthreads: int
    # routes and channels
    route_of: np.ndarray
    r_pe: np.ndarray
    r_col: np.ndarray
    r_rx: np.ndarray
    r_tx: np.ndarray
    r_chan0: np.ndarray
    r_rampch: np.ndarray
    r_down: np.ndarray
    pe_r0: np.ndarray
    ch_route: np.ndarray
    ch_port: np.ndarray
    ch_cap: np.ndarray
    r_cfg_tx: np.ndarray  # (routes * configs,) tx mask per run-time route configuration
    r_cfg_down: np.ndarray  # (routes * configs * 4,) downstream channel per configuration and port
    n_configs: int
    # code
    ins: np.ndarray  # (rows, NFIELDS) int64
    jtab: np.ndarray
    row_meta: "RowMeta"  # per row: (block index, container, statement or opcode); see ``describe_row``
    labels: list
    # blocks and PEs
    pe_block: np.ndarray  # (P,) block index, -1 none
    nreg: int
    reg_init: np.ndarray  # (blocks, nreg) float64
    tk_entry: np.ndarray  # (blocks, 64) row or -1
    tk_data: np.ndarray  # (blocks, 64) colour of a data task or -1
    tk_arg: np.ndarray  # (blocks, 64) argument register or -1
    blk_prio: np.ndarray  # (blocks,) int64 mask of high-priority task IDs
    blk_blocked: np.ndarray  # (blocks,) int64 mask of initially blocked task IDs
    blk_data: np.ndarray  # (blocks,) int64 mask of data task IDs
    entries: dict  # function name -> (blocks,) entry row or -1
    entry_args: dict  # function name -> {block: tuple of argument registers}
    resources: list
    # memory
    mem_base: np.ndarray
    mem: np.ndarray
    sram_bytes: np.ndarray
    block_names: list = field(default_factory=list)


def describe_row(cp: Lowered, row: int) -> str:
    """``body/container: statement`` for error messages."""
    blk, container, what = cp.row_meta[row]
    text = OP_NAMES.get(what, "?") if isinstance(what, int) else S.describe(what)
    return f"{cp.block_names[blk]}/{container}: {text[:200]}"


def lower_program(prog: MeshProgram, spec: HardwareSpec, functional: bool, share_rows: bool = True) -> Lowered:
    """Lower ``prog`` for ``spec``. Raises ``InputError`` for programs that cannot run. ``share_rows=False``
    compiles every block's rows, including those a block of other colours could lend (the same result)."""
    prog.finalize()
    W, H, C = prog.width, prog.height, spec.num_colors
    P = W * H
    alpha = costs.hop_cycles(spec)
    ramp_in, ramp_out = costs.ramp_split(spec)
    beta = costs.relay_cycles(spec)
    q_in, q_out = costs.queue_depths(spec)
    routes = _lower_routes(prog, C)
    pe_block = prog.pe_blocks()
    blocks = prog.blocks
    used = sorted(set(np.unique(pe_block).tolist()) - {-1})

    def where(b) -> str:
        pe = int(np.nonzero(pe_block == b.index)[0][0]) if b.index in used else 0
        return f"PE {prog._xy(pe)}"

    res = resources.allocate([blocks[i] for i in used], spec, where)
    res_of = dict(zip(used, res))
    _check_block_routes(prog, pe_block, [blocks[i] for i in used], res_of)

    rows = _Rows()
    meta = RowMeta()
    jtab: list[int] = []
    labels: list[str] = []
    done: dict[int, tuple] = {}
    nb = len(blocks)
    templates: dict[tuple, _RowTemplate] = {}
    colour_only: dict[int, frozenset] = {}
    for bi in used:  # a block's generator (its expression memos) is dropped once its rows are stacked
        blk = blocks[bi]
        key = None
        if share_rows:
            only = colour_only.get(id(blk.body))
            if only is None:
                only = colour_only[id(blk.body)] = colour_only_params(blk.body)
            key = (id(blk.body), tuple(sorted((k, v) for k, v in blk.values.items() if k not in only)))
        tpl = templates.get(key) if key is not None else None
        g = _CodeGen(blk, res_of[bi], spec, rows, meta, jtab, labels)
        if tpl is not None:
            done[bi] = tpl.copy(g)
            continue
        start, j0 = len(rows), len(jtab)
        g.lower_all()
        rows.seal()
        done[bi] = (g.reg_values, g.task_table, g.functions)
        if key is not None:
            templates[key] = _RowTemplate(g, start, j0)
        del g
    meta.seal()
    nreg = max([len(d[0]) for d in done.values()] + [2])
    reg_init = np.zeros((max(nb, 1), nreg), dtype=np.float64)
    tk_entry = np.full((max(nb, 1), NTASK), -1, dtype=np.int64)
    tk_data = np.full((max(nb, 1), NTASK), -1, dtype=np.int64)
    tk_arg = np.full((max(nb, 1), NTASK), -1, dtype=np.int64)
    blk_prio = np.zeros(max(nb, 1), dtype=np.int64)
    blk_blocked = np.zeros(max(nb, 1), dtype=np.int64)
    blk_data = np.zeros(max(nb, 1), dtype=np.int64)
    entries: dict[str, np.ndarray] = {}
    entry_args: dict[str, dict] = {}
    for bi, (reg_values, task_table, functions) in done.items():
        reg_init[bi, :len(reg_values)] = reg_values
        for tid, (entry, colour, arg, prio, blocked) in task_table.items():
            tk_entry[bi, tid] = entry
            tk_data[bi, tid] = colour
            tk_arg[bi, tid] = arg
            if prio:
                blk_prio[bi] |= np.int64(1) << tid
            if blocked:
                blk_blocked[bi] |= np.int64(1) << tid
            if colour >= 0:
                blk_data[bi] |= np.int64(1) << tid
        for name, (entry, args) in functions.items():
            entries.setdefault(name, np.full(max(nb, 1), -1, dtype=np.int64))[bi] = entry
            entry_args.setdefault(name, {})[bi] = args
    ins = rows.array()

    # --- memory ------------------------------------------------------------------------------
    nelems = np.array([b.nelems for b in blocks] + [0], dtype=np.int64)
    per_pe = nelems[pe_block]  # -1 indexes the trailing 0
    mem_base = np.zeros(P, dtype=np.int64)
    if P > 1:
        np.cumsum(per_pe[:-1], out=mem_base[1:])
    if functional:
        mem = np.zeros(int(per_pe.sum()) + 1, dtype=np.float32)
        for (pe, name), arr in prog._init.items():
            buf = prog._pe_buffers(pe)[name]
            base = mem_base[pe] + buf.offset
            mem[base:base + buf.length] = arr
    else:
        mem = np.zeros(1, dtype=np.float32)
    sram = np.array([b.data_bytes for b in blocks] + [0], dtype=np.int64)[pe_block]

    cap_fabric = spec.router_buffer_wavelets + alpha
    cap_ramp = q_out + ramp_in + beta
    routes["ch_cap"] = np.where(routes["ch_port"] == Port.RAMP, np.int32(cap_ramp), np.int32(cap_fabric))
    return Lowered(
        width=W, height=H, num_colors=C, functional=functional, alpha=alpha, ramp_in=ramp_in,
        ramp_out=ramp_out, beta=beta, task_cycles=costs.task_cycles(spec),
        scalar_cycles=costs.scalar_cycles(spec), cap_fabric=cap_fabric,
        cap_ramp=cap_ramp, cap_queue=q_in + ramp_out,
        microthreads=min(spec.microthreads, MAX_MICROTHREADS), **routes,
        ins=ins, jtab=np.array(jtab or [0], dtype=np.int64), row_meta=meta, labels=labels,
        pe_block=pe_block.astype(np.int64), nreg=nreg, reg_init=reg_init, tk_entry=tk_entry,
        tk_data=tk_data, tk_arg=tk_arg, blk_prio=blk_prio, blk_blocked=blk_blocked,
        blk_data=blk_data, entries=entries, entry_args=entry_args, resources=res,
        mem_base=mem_base, mem=mem, sram_bytes=sram, block_names=[b.body.name for b in blocks],
    )


# ------------------------------------------------------------------------------------------------
# Routes
# ------------------------------------------------------------------------------------------------


# Port-mask tables (a route's rx or tx mask has one bit per port, 5 bits): how many ports a mask
# has, how many of its ports lie below port p (port p's channel within its route) and its j-th port.
_MASKS = range(1 << len(Port))
_POPCOUNT = np.array([bin(m).count("1") for m in _MASKS], dtype=np.int8)
_RANK = np.array([[bin(m & ((1 << p) - 1)).count("1") for p in range(len(Port))] for m in _MASKS], dtype=np.int8)
_NTH_PORT = np.array([[p for p in range(len(Port)) if m >> p & 1] + [0] * (len(Port) - bin(m).count("1"))
                      for m in _MASKS], dtype=np.int8)


def _lower_routes(prog: MeshProgram, C: int) -> dict:
    """Route records for the union of the layout's routes and their run-time alternatives: a route
    has a channel for every port any of its configurations accepts; ``r_cfg_tx``/``r_cfg_down`` hold
    each configuration's outputs (configuration 0: the layout's). Every step is a pass over the
    routes (millions at 720²), none a Python loop over them."""
    W, H = prog.width, prog.height
    P = W * H
    configs = [(prog._rx, prog._tx)] + [prog._alt[k] for k in sorted(prog._alt)]
    union = prog._rx.copy()
    for rx, _ in configs[1:]:
        union |= rx
    flat = np.flatnonzero(union)  # routes sorted by (PE, colour): index PE * C + colour
    pe_idx = (flat // C).astype(np.int32)
    nr = flat.size
    route_of = np.full(P * C, -1, dtype=np.int32)
    route_of[flat] = np.arange(nr, dtype=np.int32)
    rx8, tx8 = union.ravel()[flat], prog._tx.ravel()[flat]  # uint8 masks (the int32 copies are outputs)
    r_rx, r_tx = rx8.astype(np.int32), tx8.astype(np.int32)
    nrx = _POPCOUNT[rx8]
    r_chan0 = np.zeros(nr + 1, dtype=np.int64)
    np.cumsum(nrx, out=r_chan0[1:])
    nch = int(r_chan0[-1])
    ch_route = np.repeat(np.arange(nr, dtype=np.int32), nrx)
    # a route's channels are its accepted ports in ascending order; the RAMP's channel per route
    ch_port = np.zeros(nch, dtype=np.int8)
    r_rampch = np.full(nr, -1, dtype=np.int64)
    for p in range(len(Port)):
        sel = np.flatnonzero(rx8 & (1 << p))
        ch = r_chan0[sel] + _RANK[rx8[sel], p]
        ch_port[ch] = p
        if p == Port.RAMP:
            r_rampch[sel] = ch

    def downstream(tx_mask: np.ndarray) -> np.ndarray:
        """Per route and output port, the neighbour's channel a wavelet lands in (-1: none, -2: off)."""
        r_down = np.full((nr, 4), -1, dtype=np.int64)
        for p in (Port.NORTH, Port.SOUTH, Port.EAST, Port.WEST):
            dx, dy = p.delta
            sel = np.flatnonzero(tx_mask & (1 << p))  # the routes that send through p
            pe = pe_idx[sel]
            off = (pe % W == (0 if dx < 0 else W - 1)) if dx else (pe // W == (0 if dy < 0 else H - 1))
            r_down[sel[off], p] = -2
            ok = sel[~off]
            r2 = route_of[flat[ok] + (dy * W + dx) * C]  # the same colour's route at the neighbour
            ok, r2 = ok[r2 >= 0], r2[r2 >= 0]
            rx2 = rx8[r2]
            acc = (rx2 & (1 << p.opposite)) != 0  # it accepts from this side
            r_down[ok[acc], p] = r_chan0[r2[acc]] + _RANK[rx2[acc], p.opposite]
        return r_down.ravel()

    r_down = downstream(tx8)
    K = len(configs)
    if K == 1 and nr:  # configuration 0 (what SetRoute(colour, 0) restores) is the layout's
        r_cfg_tx, r_cfg_down = r_tx.astype(np.int64), r_down
    else:
        r_cfg_tx = np.zeros((max(nr, 1), K), dtype=np.int64)
        r_cfg_down = np.full((max(nr, 1), K, 4), -1, dtype=np.int64)
        for k, (_, tx) in enumerate(configs):
            t = tx.ravel()[flat]
            r_cfg_tx[:nr, k] = t
            r_cfg_down[:nr, k, :] = (r_down if k == 0 else downstream(t)).reshape(nr, 4)
    pe_r0 = np.searchsorted(pe_idx, np.arange(P + 1, dtype=np.int32)).astype(np.int64)
    return dict(route_of=route_of, r_pe=pe_idx, r_col=(flat % C).astype(np.int32), r_rx=r_rx,
                r_tx=r_tx, r_chan0=r_chan0, r_rampch=r_rampch, r_down=r_down, pe_r0=pe_r0,
                ch_route=ch_route, ch_port=ch_port, r_cfg_tx=r_cfg_tx.ravel(), r_cfg_down=r_cfg_down.ravel(),
                n_configs=K, ch_cap=np.zeros(nch, dtype=np.int32))  # capacities filled by the caller's spec


def _check_block_routes(prog: MeshProgram, pe_block: np.ndarray, blocks: list, res_of: dict) -> None:
    """Every colour a block receives on is delivered to the RAMP at its PEs, and every colour it
    sends on accepts from the RAMP there (in some route configuration); every ``SetRoute`` names a
    configuration that routes its colour at every PE of the block."""
    ramp = 1 << int(Port.RAMP)
    rx_any, tx_any = prog._rx.copy(), prog._tx.copy()
    for rx, tx in prog._alt.values():
        rx_any |= rx
        tx_any |= tx
    for b in blocks:
        pes = np.nonzero(pe_block == b.index)[0]
        recv, send = resources.block_colours(b)
        for c in sorted(recv):
            bad = (tx_any[pes, c] & ramp) == 0
            if bad.any():
                pe = int(pes[bad][0])
                raise InputError(f"PE {prog._xy(pe)}, body {b.body.name}: receives on colour {c}, but the route "
                                 f"of colour {c} there does not deliver to the RAMP ({prog._route_str(pe, c)})")
        for c in sorted(send):
            bad = (rx_any[pes, c] & ramp) == 0
            if bad.any():
                pe = int(pes[bad][0])
                raise InputError(f"PE {prog._xy(pe)}, body {b.body.name}: sends on colour {c}, but the route of "
                                 f"colour {c} there does not accept from the RAMP ({prog._route_str(pe, c)})")
        body = b.body
        for _, flat in resources.block_code(b):
            for st in flat:
                if not isinstance(st, S.SetRoute):
                    continue
                c = int(substitute(as_expr(st.colour), b.values).value)
                if st.config != 0 and st.config not in prog._alt:
                    raise InputError(f"body {body.name}: SetRoute(colour {c}, {st.config}): no route configuration "
                                     f"{st.config} was declared (route_rule(..., config={st.config}))")
                rx = prog._rx if st.config == 0 else prog._alt[st.config][0]
                bad = rx[pes, c] == 0
                if bad.any():
                    pe = int(pes[bad][0])
                    raise InputError(f"PE {prog._xy(pe)}, body {body.name}: SetRoute(colour {c}, {st.config}): "
                                     f"configuration {st.config} has no route of colour {c} there")


# ------------------------------------------------------------------------------------------------
# Code generation for one block
# ------------------------------------------------------------------------------------------------


def _children(n) -> tuple:
    if isinstance(n, BinOp):
        return (n.a, n.b)
    if isinstance(n, UnOp):
        return (n.a,)
    if isinstance(n, Select):
        return (n.cond, n.a, n.b)
    if isinstance(n, Load):
        return (n.index,)
    return ()


def _run_time_exprs(st) -> list:
    """The expressions statement ``st`` itself evaluates (not those of the code blocks it holds)."""
    if isinstance(st, S.Loop):
        return [st.count]
    if isinstance(st, S.If):
        return [st.cond]
    if isinstance(st, S.Switch):
        return [st.value]
    if isinstance(st, S.Assign):
        return [st.value]
    if isinstance(st, S.Store):
        return [st.index, st.value]
    out = []
    if isinstance(st, I.Instruction):
        for f in I.ref_fields(st):
            r = getattr(st, f)
            out.append(r.offset)
            if r.length is not None:
                out.append(r.length)
        for f in ("s", "factor", "value", "count"):
            v = getattr(st, f, None)
            if v is not None:
                out.append(v)
    return [as_expr(e) for e in out]


# a row before its fields are set: no length/count register, completion, colours, queues or
# operand offset registers (-1); multiplicity and width 1
_ROW_DEFAULTS = np.zeros(NFIELDS, dtype=np.int64)
for _f in ("F_LENR", "F_SREG", "F_DONE", "F_COL1", "F_COL2", "F_QIN", "F_QOUT"):
    _ROW_DEFAULTS[globals()[_f]] = -1
_ROW_DEFAULTS[[F_MULT, F_W]] = 1
_ROW_DEFAULTS[[OPND0 + OPND_FIELDS * k + O_OFFR for k in range(3)]] = -1
_FIELD = {name[2:]: v for name, v in globals().items() if name.startswith("F_") and isinstance(v, int)}


_COLOUR_FIELDS = ("colour", "in_colour", "out_colour")
_STATEMENTS = (I.Instruction, I.Activate, I.Unblock, S.Loop, S.If, S.Switch, S.Assign, S.Store, S.Block, S.Finish,
               S.Timestamp, S.SetRoute, S.Wait)
_JUMPS = (OP_JMP, OP_BRZ, OP_LOOPINIT, OP_LOOPNEXT, OP_JTAB)


def colour_only_params(body) -> frozenset:
    """The parameters ``body`` reads only as colours (of fabric ops, ``SetRoute`` and data tasks): blocks
    of the body that differ in these alone lower to the same rows but for colours, queues and task IDs.
    Any other reading (a condition, an offset, a buffer length, ...) keeps a parameter out."""
    slots: set = set()
    other: set = set()

    def scan(v, acc: set) -> None:
        if isinstance(v, Expr):
            acc |= names(v)[0]
        elif isinstance(v, I.Ref):
            scan(v.offset, acc)
            scan(v.length, acc)
        elif isinstance(v, (tuple, list)):
            for x in v:
                scan(x, acc)
        elif dataclasses.is_dataclass(v) and not isinstance(v, (type, *_STATEMENTS)):
            for f in dataclasses.fields(v):  # nested statements are scanned by the walk
                scan(getattr(v, f.name), acc)

    for code in resources.containers(body):
        for st in S.walk(code):
            colours = isinstance(st, (*I.FABRIC_INSTRUCTIONS, S.SetRoute))
            for f in dataclasses.fields(st):
                scan(getattr(st, f.name), slots if colours and f.name in _COLOUR_FIELDS else other)
    for t in body.tasks.values():
        scan(t.colour, slots)
    for b in body.buffers.values():
        scan(b.length, other)
    return frozenset(slots - other)


class _RowTemplate:
    """A lowered block's rows as another block of the same body and the same values of every parameter
    but colour-only ones (``colour_only_params``) would lower them: the same rows at another place,
    with its own colours, input and output queues and task IDs (which follow colours: a data task's ID
    is its colour's on WSE-2). The fields rebound are exactly those ``_CodeGen`` computes from them."""

    def __init__(self, g: "_CodeGen", start: int, j0: int):
        self.start, self.n = start, len(g.rows) - start
        self.j0, self.j1 = j0, len(g.jtab)
        self.reg_values = g.reg_values
        self.functions = g.functions
        ins = g.rows.ins[start:start + self.n]
        ops = ins[:, F_OP]
        self.jumps = np.flatnonzero(np.isin(ops, _JUMPS))
        self.jtabs = np.flatnonzero(ops == OP_JTAB)
        # rows whose fields follow colours: fabric ops, SetRoute, task activations (their statements)
        bound = np.flatnonzero(((ops >= FIRST_FABRIC) & (ops <= LAST_FABRIC)) | np.isin(ops, (OP_SETROUTE, OP_ACT, OP_BLK,
                                                                                              OP_UNBLK)))
        self.bound = [(int(i), int(ops[i]), g.meta.what[start + int(i)][1]) for i in bound]
        self.tasks = []  # (task, its entry row, argument register, priority, blocked), as lower_all made them
        for t in g.body.tasks.values():
            entry, _, arg, prio, blocked = g.task_table[g.res.task_ids[t.name]]
            self.tasks.append((t, (entry, arg, prio, blocked)))

    def copy(self, g: "_CodeGen") -> tuple:
        """Append the rows for ``g``'s block (its generator, not run) and return what ``lower_all`` would."""
        rows, jtab = g.rows, g.jtab
        shift = len(rows) - self.start
        ins = rows.ins[self.start:self.start + self.n].copy()
        ins[self.jumps, F_TGT] += shift
        ins[self.jtabs, F_B] += len(jtab) - self.j0
        jtab.extend(int(r) + shift for r in jtab[self.j0:self.j1])
        for i, op, st in self.bound:
            g.current = st
            if op == OP_SETROUTE:
                ins[i, F_A] = int(g.sub(st.colour).value)
            elif op in (OP_ACT, OP_BLK, OP_UNBLK):
                ins[i, F_A] = g.res.task_ids[st.task]
            else:
                col1, col2, done, qin, qout = g.fabric_binding(st)
                ins[i, F_COL1], ins[i, F_COL2], ins[i, F_DONE], ins[i, F_QIN], ins[i, F_QOUT] = col1, col2, done, qin, qout
        g.current = None
        rows.append_rows(ins)
        g.meta.extend_from(self.start, self.n, g.block.index)
        tasks = {}
        for t, (entry, arg, prio, blocked) in self.tasks:
            colour = int(g.sub(t.colour).value) if t.kind == "data" else -1
            tasks[g.res.task_ids[t.name]] = (entry + shift, colour, arg, prio, blocked)
        functions = {name: (entry + shift, args) for name, (entry, args) in self.functions.items()}
        return list(self.reg_values), tasks, functions


class _Rows:
    """The rows emitted so far: the block being lowered as one array per row (its branches are patched
    while it lowers), the blocks before it copied into one (rows, NFIELDS) array grown in place by a
    quarter at a time (``realloc``), so lowering holds neither a Python object per row of the whole
    program (millions at 240², one block per ring position) nor a second copy of the rows."""

    GROWTH = 1.25

    def __init__(self):
        self.base = 0  # index of the current block's first row
        self.cur: list[np.ndarray] = []
        self.ins = np.zeros((0, NFIELDS), dtype=np.int64)

    def __len__(self) -> int:
        return self.base + len(self.cur)

    def __getitem__(self, row: int) -> np.ndarray:
        assert row >= self.base, "only the block being lowered has its rows patched"
        return self.cur[row - self.base]

    def append(self, row: np.ndarray) -> None:
        self.cur.append(row)

    def seal(self) -> None:
        """The current block is complete: copy its rows after the earlier blocks'."""
        if not self.cur:
            return
        self._put(np.stack(self.cur))
        self.cur = []

    def append_rows(self, rows: np.ndarray) -> None:
        """Append a whole block's rows, already complete."""
        self.seal()
        self._put(rows)

    def _put(self, rows: np.ndarray) -> None:
        need = self.base + rows.shape[0]
        if need > self.ins.shape[0]:
            self.ins.resize((max(need, int(self.ins.shape[0] * self.GROWTH), 4096), NFIELDS), refcheck=False)
        self.ins[self.base:need] = rows
        self.base = need

    def array(self) -> np.ndarray:
        """All rows as one (rows, NFIELDS) array (one zero row for a program without code)."""
        self.seal()
        self.ins.resize((max(self.base, 1), NFIELDS), refcheck=False)
        return self.ins


class RowMeta:
    """Per row (block index, container, statement or opcode) for messages (``describe_row``), at one
    reference per row: a block's rows are contiguous (its index is found from the blocks' first
    rows) and the blocks of one body share their (container, statement) pairs."""

    def __init__(self):
        self.first: list[int] = []  # first row of each block, ascending
        self.block: list[int] = []
        self.what: list[tuple] = []  # per row, an interned (container, statement or opcode)
        self._shared: dict = {}

    def append(self, item: tuple) -> None:
        blk, container, what = item
        self._enter(blk)
        key = (container, id(what))  # statements are kept alive by the tuple: their ids stay unique
        pair = self._shared.get(key)
        if pair is None:
            pair = self._shared[key] = (container, what)
        self.what.append(pair)

    def extend_from(self, first: int, n: int, blk: int) -> None:
        """Rows ``first`` .. ``first + n`` again, as block ``blk``'s."""
        if n == 0:
            return
        self._enter(blk)
        self.what.extend(self.what[first:first + n])

    def _enter(self, blk: int) -> None:
        """The next row is block ``blk``'s: record where its rows start if it is a new block."""
        if not self.block or self.block[-1] != blk:
            self.first.append(len(self.what))
            self.block.append(blk)

    def seal(self) -> None:
        self._shared = {}

    def __len__(self) -> int:
        return len(self.what)

    def __getitem__(self, row: int) -> tuple:
        container, what = self.what[row]
        return (self.block[bisect_right(self.first, row) - 1], container, what)


class _CodeGen:
    def __init__(self, block, res, spec: HardwareSpec, rows: _Rows, meta: RowMeta, jtab: list, labels: list):
        self.block = block
        self.body = block.body
        self.values = block.values
        self.res = res
        self.spec = spec
        self.rows = rows
        self.meta = meta
        self.jtab = jtab
        self.labels = labels
        self.reg_values: list[float] = [0.0, 0.0]  # x, y filled per PE
        self.consts: dict[tuple, int] = {}
        self._subs: dict[int, tuple] = {}  # id(expression) -> (expression, substituted): see sub
        self._scalar_cost = costs.scalar_cycles(spec)
        self.var_reg: dict[str, int] = {}
        for v in self.body.vars.values():
            self.var_reg[v.name] = self._new_reg(float(v.init))
        self.temps: list[int] = []
        self.ntemp = 0
        # expressions whose value a register holds for the rest of the enclosing loop (hoisted out of
        # it, see _hoist), and the registers free for that; per statement, values already computed
        self.held: dict = {}
        self.free_held: list[int] = []
        self.memo: dict = {}
        self.task_table: dict[int, tuple] = {}
        self.functions: dict[str, tuple[int, tuple]] = {}
        self.c_op = costs.issue_cycles(spec)
        self.container = ""
        self.current = None  # statement being lowered, for messages

    @property
    def nreg(self) -> int:
        return len(self.reg_values)

    def _new_reg(self, init: float = 0.0) -> int:
        self.reg_values.append(init)
        return len(self.reg_values) - 1

    def const(self, v) -> int:
        key = (type(v).__name__, v)
        r = self.consts.get(key)
        if r is None:
            r = self.consts[key] = self._new_reg(float(v))
        return r

    def temp(self) -> int:
        if self.ntemp == len(self.temps):
            self.temps.append(self._new_reg())
        r = self.temps[self.ntemp]
        self.ntemp += 1
        return r

    def where(self) -> str:
        return f"body {self.body.name}, {self.container}"

    # ------------------------------------------------------------------------------- rows
    def emit(self, op: int, **f) -> int:
        row = _ROW_DEFAULTS.copy()
        row[F_OP] = op
        for k, v in f.items():
            if k.startswith("opnd"):
                o = OPND0 + OPND_FIELDS * int(k[4])
                row[o:o + len(v)] = v
            else:
                row[_FIELD[k]] = v
        if op <= LAST_SCALAR:
            row[F_COST] = self._scalar_cost
        self.rows.append(row)
        # the statement itself: described only when an error names it
        self.meta.append((self.block.index, self.container, self.current if self.current is not None else op))
        return len(self.rows) - 1

    def patch(self, row: int, **f) -> None:
        for k, v in f.items():
            self.rows[row][_FIELD[k]] = v

    # ------------------------------------------------------------------------------- expressions
    def expr(self, e) -> int:
        """Register holding the value of ``e`` (parameters already substituted)."""
        e = as_expr(e)
        if isinstance(e, Const):
            return self.const(e.value)
        if isinstance(e, Coord):
            return REG_X if e.axis == "x" else REG_Y
        if isinstance(e, Var):
            return self.var_reg[e.name]
        if isinstance(e, Param):
            raise InputError(f"{self.where()}: parameter {e.name!r} has no value")
        r = self.held.get(e)
        if r is None:
            r = self.memo.get(e)
        if r is None:
            r = self.memo[e] = self._compute(e)
        return r

    def _compute(self, e) -> int:
        if isinstance(e, Load):
            ri = self.expr(e.index)
            buf = self._buffer(e.buf)
            rd = self.temp()
            self.emit(OP_LOAD, A=rd, LEN=1, opnd0=(buf.offset, ri, 1, _DT[buf.dtype], buf.offset,
                                                   buf.offset + buf.length))
            return rd
        if isinstance(e, BinOp):
            ra, rb = self.expr(e.a), self.expr(e.b)
            rd = self.temp()
            self.emit(OP_BIN, A=rd, B=ra, C=rb, D=BIN_CODES[e.op])
            return rd
        if isinstance(e, UnOp):
            ra = self.expr(e.a)
            rd = self.temp()
            self.emit(OP_BIN, A=rd, B=ra, C=ra, D=BIN_CODES[e.op])
            return rd
        if isinstance(e, Select):
            rc, ra, rb = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
            rd = self.temp()
            self.emit(OP_SEL, A=rd, B=rc, C=ra, D=rb)
            return rd
        raise InputError(f"{self.where()}: not an expression: {e!r}")

    def sub(self, e):
        """``e`` with this block's parameter values substituted, once per expression object (a
        loop's body is walked again by every enclosing loop's hoisting)."""
        hit = self._subs.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        out = substitute(as_expr(e), self.values)
        self._subs[id(e)] = (e, out)  # keeps e alive, so its id is not reused
        return out

    def _hold(self, e, r: int) -> int:
        """Keep the value of ``e`` (now in register r) in a register of its own for the rest of the
        enclosing loop."""
        h = self.free_held.pop() if self.free_held else self._new_reg()
        self.emit(OP_MOV, A=h, B=r)
        self.held[e] = h
        return h

    def _hoist(self, loop) -> None:
        """Loop-invariant code motion, as a compiler does for CSL: before the loop starts, compute each
        largest subexpression of its body that reads no variable the body assigns (nor the loop
        counter) and no memory, and hold it in a register. Only subexpressions that cannot fail are
        moved (a division or modulo needs a non-zero constant divisor), since the body may not run.
        Simulated cycles are unchanged while scalar ops are free (``scalar_op_cycles`` = 0)."""
        assigned = {loop.var}
        for st in S.walk(loop.body):
            if isinstance(st, S.Assign):
                assigned.add(st.var)
            elif isinstance(st, S.Loop):
                assigned.add(st.var)
        found: dict = {}
        memo: dict = {}

        def movable(n) -> bool:
            k = id(n)
            if k not in memo:
                if isinstance(n, (Const, Coord)):
                    ok = True
                elif isinstance(n, Var):
                    ok = n.name not in assigned
                elif isinstance(n, BinOp):
                    ok = movable(n.a) and movable(n.b)
                    if ok and n.op in ("div", "mod", "fdiv"):
                        ok = isinstance(n.b, Const) and n.b.value != 0
                elif isinstance(n, UnOp):
                    ok = movable(n.a)
                elif isinstance(n, Select):
                    ok = movable(n.cond) and movable(n.a) and movable(n.b)
                else:  # Load, Param
                    ok = False
                memo[k] = (ok, n)
            return memo[k][0]

        def collect(n) -> None:
            if isinstance(n, (Const, Coord, Var, Param)) or n in self.held:
                return
            if movable(n):
                found.setdefault(n, None)
                return
            for c in _children(n):
                collect(c)

        for st in S.walk(loop.body):
            for e in _run_time_exprs(st):
                collect(self.sub(e))
        for e in found:
            self.ntemp = 0
            self.memo = {}
            self._hold(e, self.expr(e))
        self.memo = {}

    def _buffer(self, name: str) -> Buffer:
        return self.block.by_name[name]

    # ------------------------------------------------------------------------------- operands
    def operand(self, r: I.Ref, dst: bool) -> tuple[tuple, int | None, int]:
        """(operand fields, static length or None, length register or -1)."""
        buf = self._buffer(r.buf)
        off = self.sub(r.offset)
        length = None if r.length is None else self.sub(r.length)
        name = type(self.current).__name__
        if isinstance(off, Const) and (length is None or isinstance(length, Const)):
            check_static_slice(I.Ref(r.buf, int(off.value), None if length is None else int(length.value),
                                     r.stride), buf, f"{self.where()}, {name}", r.buf, dst)
        if length is None:
            if not isinstance(off, Const):
                raise InputError(f"{self.where()}, {name}: a slice of {r.buf!r} with a run-time offset needs "
                                 f"an explicit length")
            n = 1 if r.stride == 0 else math.ceil((buf.length - int(off.value)) / r.stride)
            length = Const(n)
        if isinstance(off, Const):
            fields = (buf.offset + int(off.value), -1, r.stride, _DT[buf.dtype], buf.offset, buf.offset + buf.length)
        else:
            fields = (buf.offset, self.expr(off), r.stride, _DT[buf.dtype], buf.offset, buf.offset + buf.length)
        if isinstance(length, Const):
            return fields, int(length.value), -1
        return fields, None, self.expr(length)

    # ------------------------------------------------------------------------------- statements
    def lower_all(self) -> None:
        codes = [code for code, _ in resources.block_code(self.block)]  # functions, then tasks
        for (name, f), code in zip(self.body.functions.items(), codes):
            self.container = f"function {name}"
            self.held = {}
            entry = len(self.rows)
            self.block_code(code)
            self.current = None
            self.emit(OP_RET)
            self.functions[name] = (entry, tuple(self.var_reg[a] for a in f.args))
        for t, code in zip(self.body.tasks.values(), codes[len(self.body.functions):]):
            self.container = f"task {t.name}"
            self.held = {}
            entry = len(self.rows)
            self.block_code(code)
            self.current = None
            self.emit(OP_RET)
            tid = self.res.task_ids[t.name]
            colour = int(self.sub(t.colour).value) if t.kind == "data" else -1
            arg = self.var_reg[t.arg] if t.arg else -1
            self.task_table[tid] = (entry, colour, arg, t.priority == "high", t.blocked)

    def block_code(self, code: tuple) -> None:
        for st in code:
            self.current = st
            self.ntemp = 0
            self.memo = {}
            self.statement(st)
        self.memo = {}  # the temporaries are reused by what follows

    def statement(self, st) -> None:
        if isinstance(st, I.FABRIC_INSTRUCTIONS):
            self.fabric(st)
        elif isinstance(st, I.COMPUTE_INSTRUCTIONS):
            self.compute(st)
        elif isinstance(st, S.Loop):
            count = self.sub(st.count)
            if isinstance(count, Const) and count.value < 0:
                raise InputError(f"{self.where()}, Loop over {st.var}: count {count.value} is below zero")
            outer = dict(self.held)
            rc = self.expr(count)
            if not isinstance(count, (Const, Var)) and count not in self.held:
                rc = self._hold(count, rc)  # the body reuses the temporaries
            self._hoist(st)
            rv = self.var_reg[st.var]
            init = self.emit(OP_LOOPINIT, A=rv, B=rc)
            start = len(self.rows)
            self.block_code(st.body)
            self.current = st
            self.emit(OP_LOOPNEXT, A=rv, B=rc, TGT=start)
            self.patch(init, TGT=len(self.rows))
            self.free_held += [r for e, r in self.held.items() if e not in outer]
            self.held = outer
        elif isinstance(st, S.If):
            c = self.sub(st.cond)
            if isinstance(c, Const):  # already pruned by specialize unless it involved coordinates folding
                self.block_code(st.then if c.value else st.orelse)
                return
            rc = self.expr(c)
            br = self.emit(OP_BRZ, A=rc)
            self.block_code(st.then)
            if st.orelse:
                self.current = st
                j = self.emit(OP_JMP)
                self.patch(br, TGT=len(self.rows))
                self.block_code(st.orelse)
                self.patch(j, TGT=len(self.rows))
            else:
                self.patch(br, TGT=len(self.rows))
        elif isinstance(st, S.Switch):
            v = self.sub(st.value)
            rv = self.expr(v)
            keys = [k for k, _ in st.cases]
            lo, hi = (min(keys), max(keys)) if keys else (0, -1)
            base = len(self.jtab)
            self.jtab.extend([-1] * (hi - lo + 1))
            jr = self.emit(OP_JTAB, A=rv, B=base, C=hi - lo + 1, D=lo)
            ends = []
            for k, code in st.cases:
                self.jtab[base + k - lo] = len(self.rows)
                self.block_code(code)
                self.current = st
                ends.append(self.emit(OP_JMP))
            default = len(self.rows)
            self.block_code(st.default)
            for i in range(base, base + hi - lo + 1):
                if self.jtab[i] < 0:
                    self.jtab[i] = default
            self.patch(jr, TGT=default)
            for e in ends:
                self.patch(e, TGT=len(self.rows))
        elif isinstance(st, S.Assign):
            r = self.expr(self.sub(st.value))
            rv = self.var_reg[st.var]
            self.emit(OP_MOV, A=rv, B=r)
            if st.nonneg:
                self.emit(OP_CHECKNN, A=rv)
        elif isinstance(st, S.Store):
            ri = self.expr(self.sub(st.index))
            rv = self.expr(self.sub(st.value))
            buf = self._buffer(st.buf)
            self.emit(OP_STORE, B=rv, LEN=1, opnd0=(buf.offset, ri, 1, _DT[buf.dtype], buf.offset,
                                                     buf.offset + buf.length))
        elif isinstance(st, I.Activate):
            self.emit(OP_ACT, A=self.res.task_ids[st.task])
        elif isinstance(st, S.Block):
            self.emit(OP_BLK, A=self.res.task_ids[st.task])
        elif isinstance(st, I.Unblock):
            self.emit(OP_UNBLK, A=self.res.task_ids[st.task])
        elif isinstance(st, S.Finish):
            self.emit(OP_FINISH)
        elif isinstance(st, S.Timestamp):
            if st.label not in self.labels:
                self.labels.append(st.label)
            self.emit(OP_TS, A=self.labels.index(st.label), COST=1)
        elif isinstance(st, S.SetRoute):
            c = self.sub(st.colour)
            if not isinstance(c, Const):
                raise InputError(f"{self.where()}, SetRoute: the colour must be known when the body is placed")
            self.emit(OP_SETROUTE, A=int(c.value), B=int(st.config), COST=self.c_op)
        elif isinstance(st, S.Wait):
            raise AssertionError("Wait must have been rewritten into tasks")
        else:
            raise InputError(f"{self.where()}: cannot lower {st!r} (not supported by the simulator yet)")

    def _done(self, st) -> int:
        d = st.done
        if d is None:
            return DONE_SYNC if st.id is None else DONE_NONE
        if isinstance(d, I.Detached):
            return DONE_NONE
        kind = DONE_ACT if isinstance(d, I.Activate) else DONE_UNBLK
        return kind * NTASK + self.res.task_ids[d.task]

    def fabric_binding(self, st) -> tuple[int, int, int, int, int]:
        """A fabric op's receive and send colours, completion code, input and output queues."""
        rc = I.recv_colour(st)
        sc = I.send_colour(st)
        col1 = -1 if rc is None else int(self.sub(rc).value)
        col2 = -1 if sc is None else int(self.sub(sc).value)
        done = self._done(st)
        qin = self.res.input_queue.get(col1, -1) if col1 >= 0 else -1
        qout = (self.res.op_output_queue.get(id(st), self.res.output_queue.get(col2, -1))
                if col2 >= 0 else -1)
        return col1, col2, done, qin, qout

    def fabric(self, st) -> None:
        op = _FABRIC_OP[type(st)]
        col1, col2, done, qin, qout = self.fabric_binding(st)
        if isinstance(st, I.Relay):
            n = self.sub(st.count)
            if isinstance(n, Const):
                if n.value < 1:
                    raise InputError(f"{self.where()}, Relay: count must be a positive integer, got {n.value}")
                self.emit(op, COL1=col1, COL2=col2, LEN=int(n.value), DONE=done, COST=self.c_op, QIN=qin,
                          QOUT=qout)
            else:
                self.emit(op, COL1=col1, COL2=col2, LEN=0, LENR=self.expr(n), DONE=done, COST=self.c_op,
                          QIN=qin, QOUT=qout)
            return
        ref = st.src if isinstance(st, (I.Send, I.RecvAddSend)) else st.dst
        fields, n, lenr = self.operand(ref, dst=isinstance(st, (I.Recv, I.RecvAdd, I.RelayStore)))
        packed = int(st.packed)
        if packed and self._buffer(ref.buf).dtype != "fp16":
            raise InputError(f"{self.where()}, {type(st).__name__}: packed=True needs an fp16 buffer")
        self.emit(op, COL1=col1, COL2=col2, LEN=n if n is not None else 0, LENR=lenr, DONE=done,
                  COST=self.c_op, PACK=packed, QIN=qin, QOUT=qout, opnd0=fields)

    def compute(self, st) -> None:
        op = _COMPUTE_OP[type(st)]
        name = type(st).__name__
        refs = [(f, getattr(st, f)) for f in I.ref_fields(st)]
        opnds = []
        n0, lenr0 = None, -1
        for k, (fname, r) in enumerate(refs):
            fields, n, lenr = self.operand(r, dst=(k == 0))
            opnds.append(fields)
            if k == 0:
                n0, lenr0 = n, lenr
            elif n is not None and n0 is not None and r.stride != 0 and n != n0:
                raise InputError(f"{self.where()}, {name}: operand lengths differ: {r.buf!r} has {n}, the "
                                 f"destination {n0}")
        dts = [self.block.by_name[r.buf].dtype for _, r in refs]
        strides = [r.stride for _, r in refs]
        sreg = -1
        mult = 1
        reads = sum(1 for _, r in refs[1:])
        if isinstance(st, I.Fmac):
            w = costs.width(self.spec, "fmac", costs.op_dtype([dts[2], dts[0]]), strides)
            sreg = self.expr(self.sub(st.s))
        elif isinstance(st, I.Add):
            w = costs.width(self.spec, "add", costs.op_dtype(dts), strides)
        elif isinstance(st, I.Mul):
            w = costs.width(self.spec, "mul", costs.op_dtype(dts), strides)
        elif isinstance(st, I.Max):
            w = costs.width(self.spec, "max", costs.op_dtype(dts), strides)
        elif isinstance(st, I.Scale):
            w = costs.width(self.spec, "scale", costs.op_dtype(dts), strides)
            sreg = self.expr(self.sub(st.factor))
        elif isinstance(st, I.Copy):
            family = "mov" if dts[0] == dts[1] else "convert"
            w = costs.width(self.spec, family, costs.op_dtype(dts) if family == "mov" else "fp16", strides)
        elif isinstance(st, I.Fill):
            w = costs.width(self.spec, "mov", dts[0], strides)
            sreg = self.expr(self.sub(st.value))
        else:  # Exp, Rsqrt, Silu: scalar functions
            w, mult = 1, costs.scalar_fn_cycles(self.spec)
        ports = min(reads, 2) * 4 + 1
        kw = {f"opnd{k}": f for k, f in enumerate(opnds)}
        self.emit(op, LEN=n0 if n0 is not None else 0, LENR=lenr0, W=w, MULT=mult, SREG=sreg,
                  COST=self.c_op, PORTS=ports, **kw)
