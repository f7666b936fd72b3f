"""Queues and microthreads of one body on each target, as ``simulator.resources`` allocates them.

* **Input queues**: one per colour expression the body receives on; expressions that no parameter
  set uses together share a queue (``resources.body_queues``). A shared queue is bound to the colour
  of the expression the PE's parameter set uses: ``if (uses_a) a else b``, where ``uses_a`` is the
  comptime condition (on parameters) under which some op or data task on colour ``a`` is in the code.
* **Output queues**: on targets that bind output queues to a colour (WSE-3) one per colour expression,
  like input queues; where they are not bound (WSE-2) one per send op, each async send of a piece of
  code (between joins) its own (``resources.op_output_queues``).
* **Microthreads**: where ops name theirs (WSE-3, ``.ut_id``), each async fabric op of a piece gets its
  own, pieces reuse them — the rule ``op_output_queues`` applies to sends, applied to every fabric op.
  Where they are implicit (WSE-2: the op's output queue, or its input queue when it has none;
  hardware-and-csl.md §3.4) input queue IDs are taken from the top of the range, away from the output
  queues, and two ops of one piece that could run at once on the same microthread are reported.

Queue IDs themselves do not change what the simulator computes: it checks which ops share a queue,
and the numbering here shares exactly as ``resources`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plmr.errors import InputError
from simulator import instructions as I
from simulator import statements as S
from simulator.expr import Const, Expr, as_expr, eq, is_comptime, logical_not, ne
from simulator.resources import body_queues, op_output_queues

from csl_templates.target import CslTarget


def _or(a: Expr, b: Expr) -> Expr:
    a, b = as_expr(a), as_expr(b)
    if isinstance(a, Const):
        return b if not a.value else a
    if isinstance(b, Const):
        return a if not b.value else b
    return a | b


def _and(a: Expr, b: Expr) -> Expr:
    a, b = as_expr(a), as_expr(b)
    if isinstance(a, Const):
        return a if not a.value else b
    if isinstance(b, Const):
        return b if not b.value else a
    return a & b


def use_conditions(body) -> tuple[dict, dict]:
    """For every colour expression received (sent) on: the condition on parameters under which the
    code contains an op (or a data task) on it — the disjunction over its occurrences of the comptime
    ``If``/``Switch`` conditions around them (run-time branches constrain nothing)."""
    recv: dict = {}
    send: dict = {}

    def add(table: dict, c, cond) -> None:
        c = as_expr(c)
        table[c] = _or(table.get(c, Const(0)), cond)

    def walk(code: tuple, cond) -> None:
        for st in code:
            if isinstance(st, I.FABRIC_INSTRUCTIONS):
                if I.recv_colour(st) is not None:
                    add(recv, I.recv_colour(st), cond)
                if I.send_colour(st) is not None:
                    add(send, I.send_colour(st), cond)
            elif isinstance(st, S.If):
                if is_comptime(st.cond):
                    walk(st.then, _and(cond, st.cond))
                    walk(st.orelse, _and(cond, logical_not(st.cond)))
                else:
                    walk(st.then, cond)
                    walk(st.orelse, cond)
            elif isinstance(st, S.Switch):
                if is_comptime(st.value):
                    rest = cond
                    for k, b in st.cases:
                        walk(b, _and(cond, eq(st.value, k)))
                        rest = _and(rest, ne(st.value, k))
                    walk(st.default, rest)
                else:
                    for b in S.blocks_of(st):
                        walk(b, cond)
            elif isinstance(st, S.Loop):
                walk(st.body, cond)

    for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]:
        walk(code, Const(1))
    for t in body.tasks.values():
        if t.kind == "data":
            add(recv, t.colour, Const(1))
    return recv, send


def pieces(body):
    """The pieces of code a task runs between joins: every function and task, and every case of a
    ``Switch`` (a continuation task's states) as a piece of its own."""
    for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]:
        yield code
        for st in S.walk(code):
            if isinstance(st, S.Switch):
                yield from S.blocks_of(st)


def _width(st) -> int:
    """Microthreads an op takes: a ``RelayStore`` is two async moves (fill and drain a FIFO)."""
    return 2 if isinstance(st, I.RelayStore) else 1


def op_slots(body, pred) -> tuple[dict[int, int], int]:
    """``resources.op_output_queues``'s rule for the fabric ops ``pred`` selects: in a piece each async
    op gets its own slot, the branches of an ``If``/``Loop`` start from the same slot, synchronous ops
    take the slot after the piece's async ones. Returns (id(op) -> slot, most slots a piece needs)."""
    out: dict[int, int] = {}

    def count(code: tuple) -> int:
        n = 0
        for st in code:
            if isinstance(st, S.Switch):
                continue
            if isinstance(st, I.FABRIC_INSTRUCTIONS) and pred(st) and st.done is not None:
                n += _width(st)
            elif isinstance(st, (S.If, S.Loop)):
                n += max((count(b) for b in S.blocks_of(st)), default=0)
        return n

    def sync_in(code: tuple) -> int:
        """Slots the widest synchronous op of ``code`` takes (0: none)."""
        w = 0
        for st in code:
            if isinstance(st, S.Switch):
                continue
            if isinstance(st, I.FABRIC_INSTRUCTIONS) and pred(st) and st.done is None:
                w = max(w, _width(st))
            if isinstance(st, (S.If, S.Loop)):
                w = max([w] + [sync_in(b) for b in S.blocks_of(st)])
        return w

    def assign(code: tuple, base: int, sync_slot: int) -> None:
        for st in code:
            if isinstance(st, S.Switch):
                continue
            if isinstance(st, I.FABRIC_INSTRUCTIONS) and pred(st):
                if st.done is not None:
                    out[id(st)] = base
                    base += _width(st)
                else:
                    out[id(st)] = sync_slot
            elif isinstance(st, (S.If, S.Loop)):
                for b in S.blocks_of(st):
                    assign(b, base, sync_slot)
                base += max((count(b) for b in S.blocks_of(st)), default=0)

    most = 0
    for piece in pieces(body):
        n = count(piece)
        assign(piece, 0, n)
        most = max(most, n + sync_in(piece))
    return out, most


@dataclass
class TargetQueues:
    """Queue IDs on one target."""

    input_ids: list[int]  # input queue index -> ID
    bound: bool = True  # output queues bound to colours (one per colour) or per op
    out_bound: list[int] = field(default_factory=list)  # output queue index -> ID (bound targets)
    out_of_op: dict[int, int] = field(default_factory=dict)  # id(op) -> output queue ID (unbound)
    ut_of_op: dict[int, int] = field(default_factory=dict)  # id(op) -> microthread slot (explicit targets)


@dataclass
class QueueAnalysis:
    """What ``BodyQueues`` needs that does not depend on the target (computed once per body)."""

    in_index: dict
    nin: int
    out_index: dict
    nout: int
    uses_in: dict
    uses_out: dict
    per_op: dict
    n_op: int
    uts: dict
    n_ut: int


def analyse(body, blocks: list) -> QueueAnalysis:
    (in_index, nin), (out_index, nout) = body_queues(blocks)
    uses_in, uses_out = use_conditions(body)
    per_op, n_op = op_output_queues(body)
    uts, n_ut = op_slots(body, lambda st: True)
    return QueueAnalysis(in_index, nin, out_index, nout, uses_in, uses_out, per_op, n_op, uts, n_ut)


class BodyQueues:
    """See the module docstring."""

    def __init__(self, body, blocks: list, targets: list[CslTarget], where: str,
                 analysis: QueueAnalysis | None = None):
        a = analysis or analyse(body, blocks)
        self.in_index, self.nin, self.out_index, self.nout = a.in_index, a.nin, a.out_index, a.nout
        self.uses_in, self.uses_out = a.uses_in, a.uses_out
        self.targets = targets
        self.per_target: list[TargetQueues] = []
        self.warnings: list[str] = []
        per_op, n_op, uts, n_ut = a.per_op, a.n_op, a.uts, a.n_ut
        for t in targets:
            ins_pool = list(t.spec.usable_input_queues)
            outs_pool = list(t.spec.usable_output_queues)
            bound = t.spec.data_task_binding == "queue"
            n_out = self.nout if bound else n_op
            if self.nin > len(ins_pool) or n_out > len(outs_pool):
                raise InputError(f"{t.name}: {where} needs {self.nin} input and {n_out} output queues at once, "
                                 f"{t.name} has {len(ins_pool)} and {len(outs_pool)}")
            used_out = outs_pool[:n_out]
            if not t.op_ut_id:  # implicit microthreads: inputs from the top, away from the outputs
                ins_pool = [q for q in reversed(ins_pool) if q not in used_out] + \
                           [q for q in reversed(ins_pool) if q in used_out]
            tq = TargetQueues(ins_pool[:self.nin], bound=bound)
            if bound:
                tq.out_bound = used_out
            else:
                tq.out_of_op = {k: outs_pool[v] for k, v in per_op.items()}
            if t.op_ut_id:
                if n_ut > len(t.microthreads):
                    raise InputError(f"{t.name}: {where} may run {n_ut} fabric ops at once, {t.name} has "
                                     f"{len(t.microthreads)} microthreads a program may name")
                tq.ut_of_op = uts  # slots; a RelayStore's drain takes the slot after its fill
            self.per_target.append(tq)

    # ------------------------------------------------------------------------------ per op
    def input_index(self, colour) -> int | None:
        """Input queue index of a colour expression; None for a colour only code that no parameter
        set keeps uses (pruned at comptime on every PE, so any queue will do)."""
        return self.in_index.get(as_expr(colour))

    def output_id(self, k: int, st) -> int:
        """Output queue ID of send op ``st`` on target k (for code no parameter set keeps: the first)."""
        tq = self.per_target[k]
        if tq.bound:
            if not tq.out_bound:
                return self.targets[k].spec.usable_output_queues[0]
            return tq.out_bound[self.out_index.get(as_expr(I.send_colour(st)), 0)]
        if id(st) in tq.out_of_op:
            return tq.out_of_op[id(st)]
        return self.targets[k].spec.usable_output_queues[0]

    def sharers(self, kind: str, index: int) -> list:
        table = self.in_index if kind == "in" else self.out_index
        return [c for c, i in table.items() if i == index]

    def implicit_clashes(self, body, k: int) -> list[str]:
        """Pairs of fabric ops of one piece, not in exclusive branches, whose implicit microthreads
        (output queue, else input queue) are the same ID on target k."""
        tq = self.per_target[k]
        out = []

        def ut(st) -> int:
            if I.send_colour(st) is not None:
                return self.output_id(k, st)
            i = self.input_index(I.recv_colour(st))
            return tq.input_ids[i] if i is not None else -1 - id(st)

        def ops(code: tuple, path: tuple):
            for st in code:
                if isinstance(st, S.Switch):
                    continue
                if isinstance(st, I.FABRIC_INSTRUCTIONS):
                    yield st, path
                for bi, b in enumerate(S.blocks_of(st)):
                    yield from ops(b, path + ((id(st), bi),))

        for piece in pieces(body):
            found = list(ops(piece, ()))
            for i, (a, pa) in enumerate(found):
                for b, pb in found[i + 1:]:
                    da, db = dict(pa), dict(pb)
                    if any(n in db and db[n] != br for n, br in da.items()):
                        continue  # exclusive branches
                    if a.done is None:
                        continue  # a synchronous op has finished before the next one starts
                    if ut(a) == ut(b):
                        out.append(f"{S.describe(a)} and {S.describe(b)} may run at once on microthread "
                                   f"{ut(a)}")
        return out
