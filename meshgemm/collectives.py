"""Collectives along one mesh axis as code a body includes (waferllm-method.md §6-7).

A collective is three things, written once for every mesh size:

* the **routes** it sets on the program (``meshgemm.line_rules`` patterns, one ``route_rule`` per
  colour slot, over every line of the axis);
* the **parameters** each PE takes — its role at each phase and which colour slot it uses, as
  expressions of its position (``Collective.params``; the body declares them with ``declare`` and the
  placement passes ``values()``), so PEs of equal roles share one compiled program;
* the **statements** that run it (``Collective.code``), branching on those parameters at comptime.

``axis="y"`` means positions are rows and a line is one column (data moves NORTH/SOUTH); ``axis="x"``
positions are columns, a line is a row. The buffer reduced or broadcast may have a different length
on different lines (uneven blocks) but the same along a line.

Schedules (fabric ops blocking unless stated):

* **broadcast** (pattern 4): the root ``Send``s, every other PE ``Recv``s.
* **K-tree reduce** (``plmr.ktree.build_ktree``; K = 1 is one chain into the middle, the pipeline
  reduce a chain into the end PE): per level, each group's end members ``Send``, intermediate members
  ``RecvAddSend`` (receive, add own buffer, forward), non-participants between them pass the stream
  through in hardware (express chain). A root with one side ``RecvAdd``s; a root with two sides
  receives the shorter side asynchronously into ``scratch``, ``RecvAdd``s the other, joins and adds.
  Levels run in sequence. Colours: two per level (alternating by distance to the group root) and one
  for the broadcast.
* **ring allreduce** on the interleaved ring (3 colours): reduce-scatter then allgather, n−1 steps
  each, a step an async ``Send`` of one chunk to the ring successor, a blocking receive of the next
  chunk from the predecessor (``RecvAdd``, then ``Recv``) and a join on the send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from plmr.errors import InputError
from plmr.ktree import build_ktree
from simulator.body import Body
from simulator.expr import Const, Expr, ExprLike, Param, Var, as_expr, eq, evaluate, min_, select
from simulator.instructions import Add, Recv, RecvAdd, RecvAddSend, Ref, Send
from simulator.program import MeshProgram
from simulator.statements import Assign, If, Loop, Wait

from meshgemm import line_rules as L

AXES = L.AXES

ColourOf = Callable[[int], int]


@dataclass
class Collective:
    """Parameters (name → (kind, value)), statements and colour slots of one collective."""

    params: dict[str, tuple[str, Expr]] = field(default_factory=dict)
    code: tuple = ()
    slots: int = 0
    root: Expr | None = None  # position on the axis where a reduce lands / a broadcast starts
    vars: tuple[str, ...] = ()  # run-time variables the code uses (declared by ``declare``)

    def declare(self, body: Body) -> None:
        for name, (kind, _) in self.params.items():
            if name not in body.params:
                body.param(name, kind)
        for v in self.vars:
            if v not in body.vars:
                body.var(v, "i32")

    def values(self) -> dict[str, Expr]:
        return {name: v for name, (_, v) in self.params.items()}

    def root_position(self, prog: MeshProgram) -> int:
        """The root as a number for this program's sizes."""
        return int(evaluate(self.root, prog.layout_params))


def axis_length(prog: MeshProgram, axis: str) -> int:
    """Number of positions on a line of ``axis``."""
    _check_axis(axis)
    return prog.height if axis == "y" else prog.width


def axis_size(axis: str) -> Param:
    """The line length as a program parameter (``W`` for rows, ``H`` for columns)."""
    _check_axis(axis)
    return Param("H" if axis == "y" else "W")


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise InputError(f"axis must be 'x' or 'y', got {axis!r}")


def colours_needed(kind: str, n_ax: int, k: int = 2, broadcast: bool = True) -> int:
    """Colour slots of a collective on a line of ``n_ax`` PEs (method §6.4 [D], §7)."""
    if n_ax <= 1:
        return 0
    if kind == "broadcast":
        return 1
    if kind in ("chain", "chain_reduce"):
        return 2 + (1 if broadcast else 0)
    if kind == "ktree":
        return 2 * k + (1 if broadcast else 0)
    if kind == "pipeline":
        return 3
    if kind == "ring":
        return 3 if n_ax >= 3 else 2
    raise ValueError(f"unknown collective kind {kind!r}")


def ktree_group_counts(n_ax: int, k: int, group_size: int | None) -> tuple[int, ...] | None:
    """Group counts for ``build_ktree`` from a level-1 group size: level 1 has ⌈n_ax/g⌉ balanced
    groups (so no group is larger than g), the remaining levels ≈ equal sizes. None: the default
    (≈ n_ax^(1/K) members per group). Ignored for K = 1 (one group)."""
    if group_size is None or k == 1 or n_ax <= 1:
        return None
    from plmr.ktree import default_group_counts

    c1 = max(1, min(n_ax, -(-n_ax // group_size)))
    return (c1,) + default_group_counts(c1, k - 1)


# ------------------------------------------------------------------------------------------------
# Broadcast
# ------------------------------------------------------------------------------------------------


def _on_lines(axis: str, lines: ExprLike | None) -> Expr:
    """1 on the lines that take part (``lines``: a condition on the line's coordinate, or None: all)."""
    return as_expr(1) if lines is None else as_expr(lines)


def broadcast(prog: MeshProgram, axis: str, buf: str, root: ExprLike, colour: int,
              prefix: str = "bc", lines: ExprLike | None = None) -> Collective:
    """Multicast ``buf`` from position ``root`` (a number or program-parameter expression) to every
    other PE of every line of ``axis`` where ``lines`` holds (1 colour). Parameter
    ``<prefix>_role``: 0 root, 1 receiver, 2 not taking part."""
    n = axis_length(prog, axis)
    q = L.position(axis)
    N = axis_size(axis)
    root = as_expr(root)
    if n <= 1:
        return Collective(root=root)
    on = _on_lines(axis, lines)
    rx, tx = L.multicast_masks(axis, q, N, root)
    prog.route_rule(None, None, colour, rx, tx, when=on)
    role = f"{prefix}_role"
    code = (If(eq(Param(role), 0), (Send(colour, buf),), (If(eq(Param(role), 1), (Recv(colour, buf),)),)),)
    return Collective({role: ("int", select(on, select(eq(q, root), 0, 1), 2))}, code, 1, root)


# ------------------------------------------------------------------------------------------------
# K-tree reduce and allreduce
# ------------------------------------------------------------------------------------------------


def _slot_branch(bit: str, c0: int, c1: int, make) -> tuple:
    """Statements that use colour c0 or c1 as parameter ``bit`` says (resolved at comptime, so the
    body receives on constant colours and needs one queue per colour)."""
    return (If(eq(Param(bit), 0), (make(c0),), (make(c1),)),)


def ktree_reduce(prog: MeshProgram, axis: str, buf: str, scratch: str, colours: ColourOf, k: int = 2,
                 group_counts: tuple[int, ...] | None = None, prefix: str = "kt",
                 root_at_end: bool = False, root: ExprLike | None = None,
                 lines: ExprLike | None = None) -> Collective:
    """K-tree reduce (method §6.3) of ``buf`` into the global root; ``colours(slot)`` maps the 2K
    slots (two per level) to colour IDs. ``root_at_end``: one chain into the last PE (K = 1), the
    pipeline reduce; ``root``: one chain into that position (K = 1). ``lines``: a condition on the
    line's coordinate selecting the lines that take part. Parameters per level l: ``<p>role<l>`` (line_rules.ROLE_*), ``<p>out<l>``,
    ``<p>in<l>``, ``<p>in2<l>`` (colour slot bits)."""
    n = axis_length(prog, axis)
    q = L.position(axis)
    N = axis_size(axis)
    if root_at_end or root is not None:
        k, counts = 1, ()
    else:
        tree = build_ktree(max(n, 1), k, group_counts)
        counts = tree.group_counts[:-1]
    if n <= 1:
        return Collective(root=Const(0))
    G = [prog.param(f"{prefix}G{lvl}", g) for lvl, g in enumerate(counts)] + [Const(1)]
    levels = L.ktree_levels(tuple(counts) + (1,), N, G)
    if root_at_end:
        levels[0].root_at = N - 1
    elif root is not None:
        levels[0].root_at = as_expr(root)
    on = _on_lines(axis, lines)
    params: dict[str, tuple[str, Expr]] = {}
    code: list = []
    for lv in levels:
        l = lv.k
        L.route_slots(prog, axis, L.ktree_roles(lv, q), lambda s, l=l: colours(2 * l + s), when=on)
        r = L.ktree_role(lv, q)
        role, out, inn, in2 = (f"{prefix}role{l}", f"{prefix}out{l}", f"{prefix}in{l}", f"{prefix}in2{l}")
        sends = eq(r.role, L.ROLE_SEND) | eq(r.role, L.ROLE_RELAY)
        recvs = eq(r.role, L.ROLE_RELAY) | eq(r.role, L.ROLE_ROOT1) | eq(r.role, L.ROLE_ROOT2)
        params[role] = ("int", select(on, r.role, L.ROLE_NONE))
        params[out] = ("int", select(sends, r.out, 0))  # unused bits 0: fewer parameter sets
        params[inn] = ("int", select(recvs, r.inn, 0))
        params[in2] = ("int", select(eq(r.role, L.ROLE_ROOT2), r.in2, 0))
        c0, c1 = colours(2 * l), colours(2 * l + 1)
        P = Param
        tag = f"{prefix}{l}"
        code.append(If(eq(P(role), L.ROLE_SEND), _slot_branch(out, c0, c1, lambda c: Send(c, buf))))
        code.append(If(eq(P(role), L.ROLE_RELAY), (If(eq(P(inn), 0), _slot_branch(
            out, c0, c1, lambda c: RecvAddSend(c0, c, buf)), _slot_branch(
            out, c0, c1, lambda c: RecvAddSend(c1, c, buf))),)))
        code.append(If(eq(P(role), L.ROLE_ROOT1), _slot_branch(inn, c0, c1, lambda c: RecvAdd(c, buf))))
        code.append(If(eq(P(role), L.ROLE_ROOT2), _slot_branch(in2, c0, c1, lambda c: Recv(c, scratch, id=tag))
                       + _slot_branch(inn, c0, c1, lambda c: RecvAdd(c, buf))
                       + (Wait(tag), Add(buf, buf, scratch))))
    return Collective(params, tuple(code), 2 * len(levels), L.ktree_global_root(levels[-1]))


def ktree_allreduce(prog: MeshProgram, axis: str, buf: str, scratch: str, colours: ColourOf, k: int = 2,
                    group_counts: tuple[int, ...] | None = None, broadcast_result: bool = True,
                    prefix: str = "kt", root_at_end: bool = False, root: ExprLike | None = None,
                    lines: ExprLike | None = None) -> Collective:
    """K-tree reduce, then (``broadcast_result``) a multicast of the total from the global root.
    Colour slots: 2K + 1 (2K without the broadcast)."""
    red = ktree_reduce(prog, axis, buf, scratch, colours, k, group_counts, prefix, root_at_end, root, lines)
    if not broadcast_result or axis_length(prog, axis) <= 1:
        return red
    bc = broadcast(prog, axis, buf, red.root, colours(red.slots), prefix=f"{prefix}bc", lines=lines)
    return Collective({**red.params, **bc.params}, red.code + bc.code, red.slots + 1, red.root)


def pipeline_allreduce(prog: MeshProgram, axis: str, buf: str, scratch: str, colours: ColourOf,
                       prefix: str = "pl", lines: ExprLike | None = None) -> Collective:
    """The Cerebras-GEMV allreduce: one chain into the end PE, then a broadcast back (3 colours)."""
    return ktree_allreduce(prog, axis, buf, scratch, colours, k=1, prefix=prefix, root_at_end=True, lines=lines)


def chain_allreduce(prog: MeshProgram, axis: str, buf: str, scratch: str, colours: ColourOf,
                    root: ExprLike | None = None, prefix: str = "ch", lines: ExprLike | None = None) -> Collective:
    """One chain from both ends into ``root`` (default: the middle), then a broadcast (3 colours)."""
    if root is None:
        return ktree_allreduce(prog, axis, buf, scratch, colours, k=1, prefix=prefix, lines=lines)
    return ktree_allreduce(prog, axis, buf, scratch, colours, k=1, prefix=prefix, root=root, lines=lines)


# ------------------------------------------------------------------------------------------------
# Ring allreduce
# ------------------------------------------------------------------------------------------------


def ring_allreduce(prog: MeshProgram, axis: str, buf: str, length: ExprLike, colours: ColourOf,
                   prefix: str = "rg", lines: ExprLike | None = None) -> Collective:
    """Reduce-scatter + allgather on the interleaved ring (3 colours; 2 for n = 2). ``buf`` holds
    ``length`` elements (an expression of the body's parameters), at least one per PE of the ring:
    pad it with zeros. Chunk c of the n balanced chunks starts at c·⌊L/n⌋ + min(c, L mod n)."""
    n = axis_length(prog, axis)
    if n <= 1:
        return Collective(root=Const(0))
    q = L.position(axis)
    N = axis_size(axis)
    ring = L.interleaved_ring(n, N)
    on = _on_lines(axis, lines)
    L.route_slots(prog, axis, ring.roles(q), colours, when=on)
    send_slot, recv_slot = f"{prefix}send", f"{prefix}recv"
    pos = f"{prefix}_pos"
    active = f"{prefix}_on"
    params = {send_slot: ("int", select(on, ring.slot(q), 0)),
              recv_slot: ("int", select(on, ring.slot(ring.recv_from(q)), 0)),
              active: ("int", on), N.name: ("int", N)}  # the line length, used at run time
    s, c = f"{prefix}_s", f"{prefix}_c"
    Ln = as_expr(length)

    def chunk(cv) -> Ref:
        base, extra = Ln // N, Ln % N
        return Ref(buf, cv * base + min_(cv, extra), base + (cv < extra))

    i = Var(pos)
    step = Var(s)
    send_c = [colours(k) for k in range(ring.slots)]

    def by_slot(slot: str, make) -> tuple:
        branches = ()
        for k in reversed(range(ring.slots)):
            branches = (If(eq(Param(slot), k), (make(send_c[k]),), branches),)
        return branches

    def phase(recv_op) -> tuple:
        """n−1 steps: send chunk (i − s + off) mod n, receive chunk (i − s − 1 + off) mod n."""
        return (Loop(N - 1, s, (
            Assign(c, (i - step + N * 2) % N),
            *by_slot(send_slot, lambda col: Send(col, chunk(Var(c)), id=f"{prefix}s")),
            Assign(c, (i - step - 1 + N * 2) % N),
            *by_slot(recv_slot, lambda col: recv_op(col, chunk(Var(c)))),
            Wait(f"{prefix}s"))),)

    code = (If(eq(Param(active), 1), (Assign(pos, _pos_expr(ring, axis)), *phase(RecvAdd),
                                      Assign(pos, _pos_expr(ring, axis) + 1), *phase(Recv))),)
    return Collective(params, code, ring.slots, Const(0), vars=(pos, s, c))


def _pos_expr(ring: L.RingExprs, axis: str) -> Expr:
    """The PE's ring position, computed at run time from its coordinate (a parameter would make
    one parameter set per PE)."""
    return ring.pos(L.position(axis))
