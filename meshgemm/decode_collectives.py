"""The line collectives of the decode program (method §3.4, §6.3, §7): one K-tree per reduction axis of a
region, written once and reused by every reduction of the layer along that axis.

A `LineTree` is a K-tree reduce plus broadcasts on every line of one axis of a region (a column for
``axis="y"``, a row for ``axis="x"``), with

* **level-0 groups given explicitly** as balanced contiguous sizes (the first ``n mod G`` groups one
  longer, `plmr.primitives.balanced_split`), so the X tree's level-0 groups can be the KV-group column
  ranges of the head layout (method §3.5): then the per-KV-group score allreduce is the tree's level 0
  followed by a **group broadcast** from each group root, and needs one extra colour instead of a tree of
  its own. One group is a single chain into the middle (K = 1); more groups add level 1, a chain of the
  group roots into their middle root (K = 2);
* **one-sided level-0 groups** (``one_sided``, the default when K = 2): each group's root is its last
  member, so a group root receives on one colour, not two. A PE then receives on at most 3 colours per
  tree (global root: its group's stream and both level-1 sides), which leaves room for the other tree, the
  KV shift and a hand-off within WSE-2's 7 input queues; the price is g − 1 chain stages per group
  instead of g/2 (level 1 stays two-sided);
* **routes and roles as expressions of the region-local position** (``meshgemm.line_rules``), placed per
  region (``routes``, ``values``), and **code written once** (``reduce``, ``broadcast``,
  ``group_broadcast``, ``allreduce``) for any slice of any buffer: the same parameters and the same colours
  serve every payload (a layer's seven Y reductions share one tree's colours);
* **combines**: ``"sum"`` (fused receive-add-forward stages, as `meshgemm.collectives.ktree_reduce`; a root
  fed from both sides receives the longer side, then the shorter one, with no join),
  ``"max"`` (element-wise; store-and-forward stages: receive, ``Max``, send) and ``"argmax"`` (a (value,
  index) pair in fp32; the larger value wins, ties to the lower index; scalar compare at each stage).

Colours: two per level alternating by distance to the group root (opposite parity on the two sides), one
for the broadcast from the global root, one for the group broadcast (``group_bcast=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plmr.errors import InputError
from plmr.primitives import balanced_split
from simulator.body import Body
from simulator.expr import Const, Expr, ExprLike, Load, Param, as_expr, eq, evaluate, logical_not, min_, select
from simulator.instructions import Copy, Max, Recv, RecvAdd, RecvAddSend, Ref, Send
from simulator.program import MeshProgram
from simulator.statements import If

from meshgemm import line_rules as L

COMBINES = ("sum", "max", "argmax")


@dataclass
class SplitLevel(L.KTreeLevelExprs):
    """Level 0 with balanced-split groups: the first ``n mod G`` groups hold ⌊n/G⌋ + 1 members (the head
    layout's KV column groups), instead of line_rules' ⌊i·n/G⌋ boundaries."""

    n: int = 1
    g: int = 1
    end_root: bool = False  # each group's root is its last member (one-sided chains)

    def root(self, g: Expr) -> Expr:
        if self.end_root:
            return self.start(as_expr(g) + 1) - 1
        return super().root(g)

    def group(self, i: Expr) -> Expr:
        q, r = divmod(self.n, self.g)
        b = r * (q + 1)
        return select(as_expr(i) < b, as_expr(i) // (q + 1), r + (as_expr(i) - b) // q)

    def start(self, g: Expr) -> Expr:
        q, r = divmod(self.n, self.g)
        return as_expr(g) * q + min_(g, r)


@dataclass
class LineTree:
    """A K-tree (K = 1 or 2) with broadcasts on every line of ``axis`` of a region of ``n`` positions.

    ``groups0``: the level-0 group count (1: a single chain into the middle); ``colours``: 2 per level,
    then the broadcast, then the group broadcast if ``group_bcast``. ``prefix`` names the body parameters.
    """

    axis: str
    n: int
    groups0: int
    colours: tuple[int, ...]
    prefix: str
    group_bcast: bool = False
    one_sided: bool = True
    levels: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.axis not in L.AXES:
            raise InputError(f"axis must be 'x' or 'y', got {self.axis!r}")
        if not 1 <= self.groups0 <= max(self.n, 1):
            raise InputError(f"{self.prefix}: {self.groups0} level-0 groups on a line of {self.n}")
        if len(self.colours) < self.slots:
            raise InputError(f"{self.prefix}: needs {self.slots} colours, got {len(self.colours)}")
        lv0 = SplitLevel(0, Const(self.n), Const(self.groups0), None, None, self.n, self.groups0,
                         self.groups0 > 1 and self.one_sided)
        self.levels = [lv0] if self.groups0 == 1 else [lv0, L.KTreeLevelExprs(1, Const(self.groups0), Const(1), lv0)]

    # ---- sizes ---------------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return len(self.levels)

    @property
    def active(self) -> bool:
        return self.n > 1

    @property
    def slots(self) -> int:
        if self.n <= 1:
            return 0
        return 2 * (1 if self.groups0 == 1 else 2) + 1 + (1 if self.group_bcast else 0)

    @property
    def group_sizes(self) -> list[int]:
        return balanced_split(self.n, self.groups0)

    def root(self) -> int:
        """The global root's position."""
        return int(evaluate(L.ktree_global_root(self.levels[-1]), {}))

    def group_roots(self) -> list[int]:
        lv = self.levels[0]
        return [int(evaluate(lv.root(Const(g)), {})) for g in range(self.groups0)]

    # ---- per-PE parameters and routes ---------------------------------------------------------------------
    def _names(self, lvl: int) -> tuple[str, str, str, str]:
        p = self.prefix
        return f"{p}r{lvl}", f"{p}o{lvl}", f"{p}i{lvl}", f"{p}j{lvl}"

    def declare(self, body: Body) -> None:
        if not self.active:
            return
        names = [n for lvl in range(self.k) for n in self._names(lvl)] + [f"{self.prefix}b"]
        if self.group_bcast:
            names.append(f"{self.prefix}g")
        for n in names:
            if n not in body.params:
                body.param(n, "int")

    def values(self, q: Expr) -> dict[str, Expr]:
        """Parameter values at region-local position ``q`` (an expression of X or Y)."""
        if not self.active:
            return {}
        out: dict[str, Expr] = {}
        for lv in self.levels:
            r = L.ktree_role(lv, q)
            role, o, i, j = self._names(lv.k)
            sends = eq(r.role, L.ROLE_SEND) | eq(r.role, L.ROLE_RELAY)
            recvs = eq(r.role, L.ROLE_RELAY) | eq(r.role, L.ROLE_ROOT1) | eq(r.role, L.ROLE_ROOT2)
            out[role] = r.role
            out[o] = select(sends, r.out, 0)
            out[i] = select(recvs, r.inn, 0)
            out[j] = select(eq(r.role, L.ROLE_ROOT2), r.in2, 0)
        root = self.root()
        out[f"{self.prefix}b"] = select(eq(q, root), 0, 1)
        if self.group_bcast:
            lv = self.levels[0]
            g = lv.group(q)
            gr = lv.pos(lv.root(g))
            size = lv.start(g + 1) - lv.start(g)
            out[f"{self.prefix}g"] = select(size < 2, 2, select(eq(q, gr), 0, 1))
        return out

    def routes(self, prog: MeshProgram, x: range, y: range, q: Expr) -> None:
        """Every route of the tree on the region ``x`` × ``y`` (``q``: the region-local position)."""
        if not self.active:
            return
        for lv in self.levels:
            L.route_slots(prog, self.axis, L.ktree_roles(lv, q), lambda s, l=lv.k: self.colours[2 * l + s], x, y)
        rx, tx = L.multicast_masks(self.axis, q, self.n, self.root())
        prog.route_rule(x, y, self.colours[2 * self.k], rx, tx)
        if self.group_bcast:
            lv = self.levels[0]
            g = lv.group(q)
            rx, tx = group_multicast_masks(self.axis, q, lv.start(g), lv.start(g + 1), lv.pos(lv.root(g)))
            prog.route_rule(x, y, self.colours[2 * self.k + 1], rx, tx)

    def receive_counts(self) -> np.ndarray:
        """Colours each position receives on (input queues it needs), for every position of a line."""
        if not self.active:
            return np.zeros(max(self.n, 1), dtype=np.int64)
        from simulator.expr import Coord

        q = Coord("x")
        vals = self.values(q)
        pos = np.arange(self.n)
        env = {"x": pos}

        def ev(e):
            return np.broadcast_to(np.asarray(evaluate(e, env, vectorised=True)), pos.shape)

        count = np.zeros(self.n, dtype=np.int64)
        for lv in range(self.k):
            role = ev(vals[self._names(lv)[0]])
            count += np.isin(role, (L.ROLE_RELAY, L.ROLE_ROOT1)) + 2 * (role == L.ROLE_ROOT2)
        count += ev(vals[f"{self.prefix}b"]) == 1
        if self.group_bcast:
            count += ev(vals[f"{self.prefix}g"]) == 1
        return count

    # ---- code --------------------------------------------------------------------------------------------
    def _colour(self, lvl: int, bit: str, make) -> tuple:
        c0, c1 = self.colours[2 * lvl], self.colours[2 * lvl + 1]
        return (If(eq(Param(bit), 0), (make(c0),), (make(c1),)),)

    def reduce(self, buf: Ref, scr: Ref | None, scr2: Ref | None = None, combine: str = "sum",
               levels: int | None = None, tag: str = "r") -> tuple:
        """Reduce ``buf`` into the global root (``levels=1``: into each level-0 group root). ``scr`` is a
        scratch slice as long as ``buf`` that max/argmax stages receive into; a sum adds the stream into
        ``buf`` itself and needs none (``None``). ``scr2`` is unused."""
        if combine not in COMBINES:
            raise InputError(f"unknown combine {combine!r}; use one of {COMBINES}")
        if combine != "sum" and scr is None:
            raise InputError(f"a {combine} reduction receives into a scratch slice as long as the vector; none given")
        if not self.active:
            return ()
        code: list = []
        for lv in self.levels[:levels]:
            role, o, i, j = self._names(lv.k)
            c0, c1 = self.colours[2 * lv.k], self.colours[2 * lv.k + 1]
            P = Param
            code.append(If(eq(P(role), L.ROLE_SEND), self._colour(lv.k, o, lambda c: Send(c, buf))))
            if combine == "sum":
                relay = (If(eq(P(i), 0), self._colour(lv.k, o, lambda c: RecvAddSend(c0, c, buf)),
                            self._colour(lv.k, o, lambda c: RecvAddSend(c1, c, buf))),)
                root1 = self._colour(lv.k, i, lambda c: RecvAdd(c, buf))
                # both sides through the one ramp (2n wavelets either way): the longer side first, then the
                # shorter one, whose stream waits in the fabric meanwhile — no join, no task switch
                root2 = (self._colour(lv.k, i, lambda c: RecvAdd(c, buf))
                         + self._colour(lv.k, j, lambda c: RecvAdd(c, buf)))
            else:
                comb = _combiner(combine)
                relay = (self._colour(lv.k, i, lambda c: Recv(c, scr)) + comb(buf, scr)
                         + self._colour(lv.k, o, lambda c: Send(c, buf)))
                root1 = self._colour(lv.k, i, lambda c: Recv(c, scr)) + comb(buf, scr)
                root2 = (self._colour(lv.k, i, lambda c: Recv(c, scr)) + comb(buf, scr)
                         + self._colour(lv.k, j, lambda c: Recv(c, scr)) + comb(buf, scr))
            code.append(If(eq(P(role), L.ROLE_RELAY), relay))
            code.append(If(eq(P(role), L.ROLE_ROOT1), root1))
            code.append(If(eq(P(role), L.ROLE_ROOT2), root2))
        return tuple(code)

    def broadcast(self, buf: Ref) -> tuple:
        """Multicast ``buf`` from the global root to every position of the line."""
        if not self.active:
            return ()
        b, c = Param(f"{self.prefix}b"), self.colours[2 * self.k]
        return (If(eq(b, 0), (Send(c, buf),), (Recv(c, buf),)),)

    def group_broadcast(self, buf: Ref) -> tuple:
        """Multicast ``buf`` from each level-0 group root to the members of its group."""
        if not self.active or not self.group_bcast:
            return ()
        g, c = Param(f"{self.prefix}g"), self.colours[2 * self.k + 1]
        return (If(eq(g, 0), (Send(c, buf),), (If(eq(g, 1), (Recv(c, buf),)),)),)

    def allreduce(self, buf: Ref, scr: Ref | None, scr2: Ref | None = None, combine: str = "sum",
                  tag: str = "r") -> tuple:
        """Reduce into the global root, then broadcast: every position ends with the total."""
        return self.reduce(buf, scr, scr2, combine, tag=tag) + self.broadcast(buf)

    def group_allreduce(self, buf: Ref, scr: Ref | None = None, tag: str = "g") -> tuple:
        """Sum within each level-0 group (every member ends with its group's total)."""
        return self.reduce(buf, scr, levels=1, tag=tag) + self.group_broadcast(buf)


def _combiner(kind: str):
    if kind == "max":
        return lambda dst, src: (Max(dst, dst, src),)

    def argmax(dst: Ref, src: Ref) -> tuple:
        """(value, index) pairs: take src when its value is larger, or equal with a lower index."""
        sv, si = Load(src.buf, as_expr(src.offset)), Load(src.buf, as_expr(src.offset) + 1)
        dv, di = Load(dst.buf, as_expr(dst.offset)), Load(dst.buf, as_expr(dst.offset) + 1)
        better = (sv > dv) | (eq(sv, dv) & (si < di))
        return (If(better, (Copy(Ref(dst.buf, dst.offset, 2), Ref(src.buf, src.offset, 2)),)),)

    return argmax


def group_multicast_masks(axis: str, q: Expr, b0: ExprLike, b1: ExprLike, root: ExprLike) -> tuple[Expr, Expr]:
    """(rx, tx) masks of a multicast from ``root`` over positions [b0, b1) (a level-0 group)."""
    up, down = L.ports(axis)
    b0, b1, root = as_expr(b0), as_expr(b1), as_expr(root)
    is_root = eq(q, root)
    below, above = q < root, q > root
    rx = (is_root & (b1 - b0 > 1)) * L.RAMP + above * down + below * up
    tx_root = (q < b1 - 1) * up + (q > b0) * down
    tx = is_root * tx_root + logical_not(is_root) * (L.RAMP + (above & (q < b1 - 1)) * up + (below & (q > b0)) * down)
    return rx, tx
