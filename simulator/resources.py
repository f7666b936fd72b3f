"""Per-target PE resources: code size in SRAM, task IDs, queues — checked when a program is built.

* **Code size** is an estimate (no compiler here), the same one the CSL checker makes on the emitted
  code (``memory.sram``; tested equal per parameter set): ``spec.code_bytes_per_op`` per DSD op (the
  call with its descriptor set-up; a ``RelayStore`` is two, ``OPS_OF``), ``spec.code_bytes_per_statement``
  per scalar or control statement (a ``Loop`` is three: initialisation, test, increment) and
  ``spec.code_bytes_per_task`` per task or function, counted on the code one parameter set keeps (a
  branch on parameters only is pruned, as CSL's comptime ``if``), plus what the lowering adds to every
  PE program: the timing helpers (``HELPER_BODIES``, ``HELPER_STATEMENTS``), one helper per mapped
  function (``MAPPED``), a launch's argument copies and helper call, a data task's argument copy.
  Where the two counts differed the larger was kept (docs/CSL_CHECKER.md). It is charged to SRAM with
  buffers and variables; the stack and the memcpy runtime are in ``spec.sram_reserve_bytes``.
* **Data** is the body's buffers and variables plus what the lowering declares on every PE
  (``lowering_data_bytes``: coordinates, timer, timestamp slots, export pointers), the same bytes the
  CSL checker counts on the emitted globals (tested equal per parameter set).
* **Task IDs** (hardware-and-csl.md §1.4-§1.5): local tasks get IDs from ``spec.usable_local_task_ids``
  (reserved ones already removed), the same for every parameter set of a body, avoiding on WSE-2 the
  IDs of colours the body receives (a data task's ID is its colour there, and a local task must not
  share the slot of a colour that reaches the ramp). A data task's ID is its colour (WSE-2) or its
  input queue (WSE-3).
* **Queues**: one input queue per colour expression a body receives on (fabric ops and data tasks),
  one output queue per colour expression it sends on, from ``spec.usable_input_queues`` /
  ``spec.usable_output_queues``, the same for every parameter set; expressions that no parameter set
  uses together may share a queue (WSE-3 binds each queue to one colour with ``@initialize_queue``;
  2.10 initialises input queues with a colour on both targets). A body with ``own_queues`` gives every
  expression its code names a queue of its own, so its plan does not depend on the mesh.

Each failure names the PE, the body, the resource and the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import instructions as I
from simulator import statements as S
from simulator.expr import Const, as_expr, evaluate, evaluate_many, substitute


def specialize(code: tuple, values: dict) -> tuple:
    """``code`` with conditions on parameters resolved (the untaken branch dropped)."""
    out = []
    for st in code:
        if isinstance(st, S.If):
            c = substitute(st.cond, values)
            if isinstance(c, Const):
                out.extend(specialize(st.then if c.value else st.orelse, values))
                continue
            out.append(S.If(st.cond, specialize(st.then, values), specialize(st.orelse, values)))
        elif isinstance(st, S.Switch):
            v = substitute(st.value, values)
            if isinstance(v, Const):
                chosen = dict(st.cases).get(int(v.value), st.default)
                out.extend(specialize(chosen, values))
                continue
            out.append(S.with_blocks(st, tuple(specialize(b, values) for b in S.blocks_of(st))))
        elif isinstance(st, S.Loop):
            out.append(S.Loop(st.count, st.var, specialize(st.body, values)))
        else:
            out.append(st)
    return tuple(out)


def containers(body) -> list[tuple]:
    """The code of every function, then every task, of ``body``."""
    return [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]


def specialized(body, values: dict, code_key: tuple = ()) -> tuple[tuple[tuple, tuple], ...]:
    """Per container of ``body`` (``containers``): its code specialized to ``values`` and that code's
    statements in walk order. Parameter sets of one code key (the values of ``shape_exprs``' leading
    code-deciding expressions, ``Block.code_key``) keep the same code, so with a ``code_key`` it is
    computed once per key and kept on the finalized body (a prefill region has thousands of parameter
    sets and a few dozen codes; every check, the code size and the lowering read it)."""
    memo = body.__dict__.setdefault("_specialized", {}) if code_key else None
    if memo is not None:
        hit = memo.get(code_key)
        if hit is not None:
            return hit
    out = tuple((code, tuple(S.walk(code))) for code in (specialize(c, values) for c in containers(body)))
    if memo is not None:
        memo[code_key] = out
    return out


def block_code(block) -> tuple[tuple[tuple, tuple], ...]:
    """``specialized`` for one block (its body, parameter values and code key)."""
    return specialized(block.body, block.values, getattr(block, "code_key", ()))


#: What the CSL lowering adds to every PE program besides its code (``csl_templates/templates/pe.csl.j2``):
#: the timing helpers ``wl_stamp`` (5 statements), ``wl_launch_begin`` (6) and ``wl_finish`` (2).
HELPER_BODIES, HELPER_STATEMENTS = 3, 13
#: Statements of one ``Loop``: the counter's initialisation, the test and the increment (CSL
#: ``i = 0; while (i < n) : (i += 1)``).
LOOP_STATEMENTS = 3
#: Instructions applied through a scalar helper function (``@map``), one helper per kind and dtype.
MAPPED = ("Exp", "Rsqrt", "Silu")
#: DSD ops of an instruction that lowers to more than one: a ``RelayStore`` fills a FIFO over its buffer
#: from the fabric and drains it onto the next colour (one wavelet: store it, send it on).
OPS_OF = {"RelayStore": 2}


#: Variables the CSL lowering adds to every PE program (``pe.csl.j2``), in the CSL types' sizes: the PE's
#: coordinates ``wl_x``, ``wl_y`` (i32 each) and the timer's read buffer ``wl_now`` (3 u16).
LOWERING_VAR_BYTES = 4 + 4 + 6
#: ``time_stamps``: 4 u16 words per slot; slots 0 and 1 (launch, finish) and one per ``Timestamp`` label of
#: the whole program (the host reads the same symbol from every PE, so every PE has every slot).
STAMP_SLOT_BYTES, FIXED_STAMP_SLOTS = 8, 2
#: An exported buffer goes through a ``[*]T`` pointer variable (§8), 2 B.
EXPORT_POINTER_BYTES = 2


def stamp_labels(body) -> set[str]:
    """The ``Timestamp`` labels of ``body``'s code."""
    return {st.label for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]
            for st in S.walk(code) if isinstance(st, S.Timestamp)}


def lowering_data_bytes(body, labels: int) -> int:
    """Data bytes the CSL lowering adds to ``body``'s PE program beside its buffers and variables, in a
    program with ``labels`` distinct ``Timestamp`` labels: the same estimate the CSL checker makes on the
    emitted globals (``memory.sram``; tested equal per parameter set)."""
    exported = sum(1 for b in body.buffers.values() if b.export)
    return (LOWERING_VAR_BYTES + STAMP_SLOT_BYTES * (FIXED_STAMP_SLOTS + labels)
            + EXPORT_POINTER_BYTES * exported)


def _count(flat: tuple) -> tuple[int, int]:
    """DSD ops and statements of ``flat`` (a code's statements in walk order)."""
    ops = stmts = 0
    for st in flat:
        if isinstance(st, I.Instruction):
            ops += OPS_OF.get(type(st).__name__, 1)
        elif isinstance(st, S.Loop):
            stmts += LOOP_STATEMENTS
        else:
            stmts += 1
    return ops, stmts


def code_bytes(body, values: dict, spec: HardwareSpec, code_key: tuple = ()) -> int:
    """Estimated code bytes of ``body`` (finalized) with parameter ``values`` (module docstring);
    ``code_key``: the parameter set's code key, when known (``specialized``)."""
    ops = stmts = 0
    for _, flat in specialized(body, values, code_key):
        o, s = _count(flat)
        ops += o
        stmts += s
    codes = containers(body)
    # a launchable function calls wl_launch_begin and copies each launch argument into its variable;
    # a data task copies its wavelet into its variable
    stmts += sum(1 + len(f.args) for f in body.functions.values())
    stmts += sum(1 for t in body.tasks.values() if t.kind == "data" and t.arg)
    mapped = {(type(st).__name__, body.buffers[st.dst.buf].dtype) for code in codes for st in S.walk(code)
              if type(st).__name__ in MAPPED}
    bodies = len(codes) + HELPER_BODIES + len(mapped)
    stmts += HELPER_STATEMENTS + len(mapped)  # a helper is one return statement
    return (ops * spec.code_bytes_per_op + stmts * spec.code_bytes_per_statement
            + bodies * spec.code_bytes_per_task)


def shape_exprs(body) -> tuple[tuple, int]:
    """The expressions whose values decide what ``code_bytes`` and ``check_block_shapes`` see of a
    parameter set, and how many of them come first and decide the code alone (``code_key``): the
    comptime ``If``/``Switch`` conditions (which branches it keeps) and the parameters of run-time ones;
    then the fabric ops' and data tasks' colours. Parameter sets on which they agree keep the same code
    (``shape_of``), so a program of many parameter sets (a prefill region has thousands: per-column head
    values, ring and chain roles) counts and checks each code once; those that differ only in colours
    keep the same code too (a prefill region: a thousand shapes, a few dozen codes)."""
    from simulator.expr import BinOp, Load, Param, Select, UnOp, is_comptime, names

    found: dict = {}

    def has_select(e) -> bool:
        if isinstance(e, Select):
            return True
        if isinstance(e, BinOp):
            return has_select(e.a) or has_select(e.b)
        if isinstance(e, UnOp):
            return has_select(e.a)
        if isinstance(e, Load):
            return has_select(e.index)
        return False

    def add(e) -> None:
        e = as_expr(e)
        if e in found:
            return
        if is_comptime(e):
            found[e] = None
        elif has_select(e):  # a run-time expression folds only through a select on parameters
            for p in sorted(names(e)[0]):
                found.setdefault(Param(p), None)

    codes = [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]
    for code in codes:  # what decides the branches kept
        for st in S.walk(code):
            if isinstance(st, S.If):
                add(st.cond)
            elif isinstance(st, S.Switch):
                add(st.value)
    ncode = len(found)
    for code in codes:  # the colours
        for st in S.walk(code):
            if isinstance(st, I.FABRIC_INSTRUCTIONS):
                for c in (I.recv_colour(st), I.send_colour(st)):
                    if c is not None:
                        add(c)
    for t in body.tasks.values():
        if t.kind == "data":
            add(t.colour)
    return tuple(found), ncode


def per_shape(blocks: list, fn) -> dict:
    """``fn(block)`` for every block (by index), computed once per code shape (``Block.shape``) for what
    depends on the code a parameter set keeps and its colours only."""
    memo: dict = {}
    out = {}
    for b in blocks:
        key = getattr(b, "shape", ()) or ("block", id(b))
        if key not in memo:
            memo[key] = fn(b)
        out[b.index] = memo[key]
    return out


def shape_of(exprs: tuple, values: dict) -> tuple:
    """The values of ``shape_exprs`` under one parameter set (None where one is not a number). They
    depend on parameters only, so with every parameter known they are evaluated, not folded
    (``substitute`` builds a new expression per node: a prefill region has thousands of sets)."""
    try:
        return evaluate_many(exprs, values)
    except InputError:  # a parameter without a value or a division by zero: fold what folds
        pass
    out = []
    for e in exprs:
        v = substitute(e, values)
        out.append(v.value if isinstance(v, Const) else None)
    return tuple(out)


def shapes_of(exprs: tuple, sets: list[dict]) -> list[tuple]:
    """``shape_of`` for each of ``sets`` (parameter sets of one body), evaluated once over all of them
    as numpy arrays: a prefill region's thousand shapes cost a few array operations per expression
    instead of a tree walk per set. Sets with a float parameter, an expression that fails on some set
    (a division by zero, a name without a value) or a fractional result take ``shape_of`` one by one,
    so every set gets exactly what ``shape_of`` gives it."""
    got = _shapes_vectorised(exprs, sets) if len(sets) > 1 else None
    return got if got is not None else [shape_of(exprs, v) for v in sets]


def _shapes_vectorised(exprs: tuple, sets: list[dict]) -> list[tuple] | None:
    """``shapes_of`` over integer parameter sets, or None where the vectorised pass is not exact."""
    env = {}
    for name in sets[0]:
        col = [v[name] for v in sets]
        if not all(isinstance(c, int) for c in col):
            return None
        env[name] = np.asarray(col, dtype=np.int64)
    cols = []
    for e in exprs:
        try:
            got = np.asarray(evaluate(e, env, vectorised=True))
        except InputError:
            return None
        if got.dtype.kind not in "iub":
            return None
        cols.append(np.broadcast_to(got.astype(np.int64), (len(sets),)).tolist())
    return list(zip(*cols)) if cols else [()] * len(sets)


def check_block_shapes(block, spec: HardwareSpec) -> None:
    """Parameter-dependent checks of one block: colours of fabric ops are comptime and routable."""
    routable = set(spec.routable_colors)
    for _, flat in block_code(block):
        for st in flat:
            if not isinstance(st, I.FABRIC_INSTRUCTIONS):
                continue
            for c in (I.recv_colour(st), I.send_colour(st)):
                if c is None:
                    continue
                v = substitute(as_expr(c), block.values)
                if not isinstance(v, Const):
                    raise InputError(f"body {block.body.name}: {type(st).__name__} colour {c!r} must be known "
                                     f"when the body is placed (a parameter or a number), not a run-time value")
                if int(v.value) not in routable:
                    raise InputError(f"body {block.body.name}: {type(st).__name__} colour {v.value} is not a "
                                     f"routable colour of {spec.name} (reserved {list(spec.reserved_colors)})")


@dataclass
class BlockResources:
    """What one parameter set of a body binds: task IDs, data-task IDs, queues per colour."""

    task_ids: dict[str, int] = field(default_factory=dict)  # local tasks and data tasks
    input_queue: dict[int, int] = field(default_factory=dict)  # colour -> input queue
    output_queue: dict[int, int] = field(default_factory=dict)  # colour -> output queue (bound targets)
    op_output_queue: dict[int, int] = field(default_factory=dict)  # id(op) -> output queue (unbound)


def block_colours(block) -> tuple[set[int], set[int]]:
    """(received, sent) colour values of a block: fabric ops and data tasks."""
    recv: set[int] = set()
    send: set[int] = set()
    body = block.body
    for _, flat in block_code(block):
        for st in flat:
            if isinstance(st, I.FABRIC_INSTRUCTIONS):
                for c, acc in ((I.recv_colour(st), recv), (I.send_colour(st), send)):
                    if c is not None:
                        acc.add(int(substitute(as_expr(c), block.values).value))
    for t in body.tasks.values():
        if t.kind == "data":
            v = substitute(t.colour, block.values)
            if not isinstance(v, Const):
                raise InputError(f"body {body.name}: data task {t.name!r} colour {t.colour!r} must be a "
                                 f"parameter or a number")
            recv.add(int(v.value))
    return recv, send


def allocate(blocks: list, spec: HardwareSpec, where) -> list[BlockResources]:
    """Resources of every block (``where(block)`` names a PE of it for messages)."""
    out: list[BlockResources] = []
    local_ids: dict[int, dict[str, int]] = {}  # body id -> name -> task ID
    by_body: dict[int, list] = {}
    for b in blocks:
        by_body.setdefault(id(b.body), []).append(b)
    colours_of = per_shape(blocks, block_colours)
    exprs_of = per_shape(blocks, _block_colour_exprs)
    for key, bl in by_body.items():
        body = bl[0].body
        received = set().union(*(colours_of[b.index][0] for b in bl))
        avoid = received if spec.data_task_binding == "colour" else set()
        free = [i for i in spec.usable_local_task_ids if i not in avoid]
        ids: dict[str, int] = {}
        locals_ = [t for t in body.tasks.values() if t.kind == "local"]
        explicit = {t.name: t.id for t in locals_ if t.id is not None}
        for name, tid in explicit.items():
            if tid not in spec.usable_local_task_ids:
                raise InputError(f"{where(bl[0])}, body {body.name}: task {name!r} ID {tid} is not a local task "
                                 f"ID a program may use on {spec.name} ({_ranges(spec.usable_local_task_ids)})")
            if tid in avoid:
                raise InputError(f"{where(bl[0])}, body {body.name}: task {name!r} ID {tid} is the ID of colour "
                                 f"{tid}, which this body receives (its data-task slot on {spec.name})")
        if len(set(explicit.values())) != len(explicit):
            raise InputError(f"{where(bl[0])}, body {body.name}: two tasks bound to one ID {explicit}")
        pool = [i for i in free if i not in explicit.values()]
        auto = [t.name for t in locals_ if t.id is None]
        if len(auto) > len(pool):
            raise InputError(
                f"{where(bl[0])}, body {body.name}: needs {len(locals_)} local task IDs, {spec.name} has "
                f"{len(free)} usable here ({_ranges(spec.usable_local_task_ids)}"
                + (f", less the {len(avoid)} IDs of received colours" if avoid else "") + ")")
        ids.update(explicit)
        ids.update(zip(auto, pool))
        local_ids[key] = ids
    queues_of = {key: body_queues(bl) for key, bl in by_body.items()}
    unbound_out = spec.data_task_binding == "colour"  # WSE-2: a fabout DSD names its output queue
    usable_in, usable_out = spec.usable_input_queues, spec.usable_output_queues  # properties: computed per access
    op_queues = {key: op_output_queues(bl[0].body) for key, bl in by_body.items()} if unbound_out else {}
    for b in blocks:
        (qin, nin), (qout, nout) = queues_of[id(b.body)]
        res = BlockResources(dict(local_ids[id(b.body)]))
        sides = [("receives", nin, usable_in, qin)]
        if unbound_out:
            per_op, nout = op_queues[id(b.body)]
            if nout > len(usable_out):
                raise InputError(f"{where(b)}, body {b.body.name}: {nout} sends may run at once (between two "
                                 f"joins), {spec.name} has {len(usable_out)} usable output queues "
                                 f"({_ranges(usable_out)})")
            res.op_output_queue = {k: usable_out[q] for k, q in per_op.items()}
        else:
            sides.append(("sends", nout, usable_out, qout))
        for kind, n, avail, table in sides:
            if n > len(avail):
                raise InputError(f"{where(b)}, body {b.body.name}: {kind} on colours needing {n} "
                                 f"{'input' if kind == 'receives' else 'output'} queues at once "
                                 f"({', '.join(map(repr, table))}), {spec.name} has {len(avail)} usable "
                                 f"({_ranges(avail)})")
        used_in, used_out = exprs_of[b.index]
        res.input_queue = {_value(c, b): usable_in[qin[c]] for c in used_in}
        if not unbound_out:
            res.output_queue = {_value(c, b): usable_out[qout[c]] for c in used_out}
        used_ids = set(res.task_ids.values())
        for t in b.body.tasks.values():
            if t.kind != "data":
                continue
            c = _value(t.colour, b)
            tid = c if spec.data_task_binding == "colour" else res.input_queue[c]
            if tid in used_ids:
                raise InputError(f"{where(b)}, body {b.body.name}: data task {t.name!r} ID {tid} is already "
                                 f"bound on this PE")
            used_ids.add(tid)
            res.task_ids[t.name] = tid
        out.append(res)
    return out


def _value(c, block) -> int:
    return int(substitute(as_expr(c), block.values).value)


def _block_colour_exprs(block) -> tuple[list, list]:
    """Colour expressions one parameter set receives on and sends on (after pruning), in order."""
    recv: list = []
    send: list = []
    body = block.body
    for _, flat in block_code(block):
        for st in flat:
            if isinstance(st, I.FABRIC_INSTRUCTIONS):
                for c, acc in ((I.recv_colour(st), recv), (I.send_colour(st), send)):
                    if c is not None and as_expr(c) not in acc:
                        acc.append(as_expr(c))
    for t in body.tasks.values():
        if t.kind == "data" and t.colour not in recv:
            recv.append(t.colour)
    return recv, send


def body_colour_exprs(body) -> tuple[list, list]:
    """Colour expressions the code of ``body`` receives on and sends on, whatever the parameters, in
    the order the code names them (functions, then tasks; data tasks' colours last among receives)."""
    recv: list = []
    send: list = []
    for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]:
        for st in S.walk(code):
            if isinstance(st, I.FABRIC_INSTRUCTIONS):
                for c, acc in ((I.recv_colour(st), recv), (I.send_colour(st), send)):
                    if c is not None and as_expr(c) not in acc:
                        acc.append(as_expr(c))
    for t in body.tasks.values():
        if t.kind == "data" and as_expr(t.colour) not in recv:
            recv.append(as_expr(t.colour))
    return recv, send


def body_queues(blocks: list) -> tuple[tuple[dict, int], tuple[dict, int]]:
    """Queue of every colour expression a body receives (sends) on, the same for all its parameter
    sets so a PE program names its queues as constants: expressions that some parameter set uses
    together get different queues (greedy colouring in order of appearance). A body with
    ``own_queues`` gives each expression of its code its own queue, whatever the parameter sets.
    Returns, for input and output: (expression -> index into the target's usable queues, queues
    needed)."""
    if blocks and blocks[0].body.own_queues:
        return tuple(({c: i for i, c in enumerate(side)}, len(side))
                     for side in body_colour_exprs(blocks[0].body))
    out = []
    exprs_of = per_shape(blocks, _block_colour_exprs)
    for side in (0, 1):
        uses = [exprs_of[b.index][side] for b in blocks]
        order: list = []
        for u in uses:
            for c in u:
                if c not in order:
                    order.append(c)
        clash: dict = {c: set() for c in order}
        for u in uses:
            for c in u:
                clash[c].update(x for x in u if x != c)
        index: dict = {}
        for c in order:
            taken = {index[x] for x in clash[c] if x in index}
            index[c] = next(i for i in range(len(order) + 1) if i not in taken)
        out.append((index, max(index.values(), default=-1) + 1))
    return out[0], out[1]


def op_output_queues(body) -> tuple[dict[int, int], int]:
    """Output queues on a target whose queues are not bound to colours (WSE-2): within one piece of
    code a task runs between joins (a function, a task, a case of a continuation task's switch),
    each async send gets its own queue (they may all still run when the piece ends), the branches of
    an ``If``/``Switch`` reuse the same queues (one branch runs), and every synchronous send takes the
    queue after the piece's async ones (it finishes before the next op starts). Pieces reuse queues:
    a join separates them. Returns (id(op) -> index into the usable queues, most queues a piece
    needs)."""
    out: dict[int, int] = {}

    def count(code: tuple) -> int:
        """Async sends one run of ``code`` may leave running (branches: the most of any)."""
        n = 0
        for st in code:
            if isinstance(st, I.FABRIC_INSTRUCTIONS) and I.send_colour(st) is not None and st.done is not None:
                n += 1
            elif isinstance(st, (S.If, S.Loop)):
                n += max((count(b) for b in S.blocks_of(st)), default=0)
        return n

    def assign(code: tuple, base: int, sync_q: int) -> None:
        for st in code:
            if isinstance(st, S.Switch):
                continue  # its cases are pieces of their own
            if isinstance(st, I.FABRIC_INSTRUCTIONS) and I.send_colour(st) is not None:
                if st.done is not None:
                    out[id(st)] = base
                    base += 1
                else:
                    out[id(st)] = sync_q
            elif isinstance(st, (S.If, S.Loop)):
                for b in S.blocks_of(st):
                    assign(b, base, sync_q)
                base += max((count(b) for b in S.blocks_of(st)), default=0)

    def pieces(code: tuple):
        yield code
        for st in S.walk(code):
            if isinstance(st, S.Switch):
                yield from (b for b in S.blocks_of(st))

    most = 0
    for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]:
        for piece in pieces(code):
            n = count(tuple(st for st in piece if not isinstance(st, S.Switch)))
            has_sync = any(isinstance(st, I.FABRIC_INSTRUCTIONS) and I.send_colour(st) is not None
                           and st.done is None for st in _walk_no_switch(piece))
            assign(piece, 0, n)
            most = max(most, n + int(has_sync))
    return out, most


def _walk_no_switch(code: tuple):
    for st in code:
        if isinstance(st, S.Switch):
            continue
        yield st
        for b in S.blocks_of(st):
            yield from _walk_no_switch(b)


def _ranges(ids) -> str:
    ids = sorted(ids)
    parts, start = [], None
    for i, v in enumerate(ids):
        if start is None:
            start = v
        if i + 1 == len(ids) or ids[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)
