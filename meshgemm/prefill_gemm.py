"""MeshGEMM as a piece of the prefill layer program (waferllm-method.md §4.3-§4.4).

The stand-alone kernel (`meshgemm.gemm`) is one program per product. A prefill layer chains seven
products (Q, K, V, O, gate, up, down) on one body, so the same schedule is written here as code a
body includes, with the rings set once on the program:

* **Rings** (`MeshGemmRings`): the interleaved x-ring (forward; it also carries forward skew
  rounds), the reverse x-ring (reverse skew rounds) and the interleaved y-ring (forward; attention's
  K/V rotation reuses it), 9 colours as in `meshgemm.gemm`, with the same per-PE colour parameters
  (`line_rules.RingExprs`), so every GEMM of the layer receives on the same three colour
  expressions (three input queues).
* **Left operand** (`load_a`, `skew`): an activation in the layer's natural layout (per PE q_y × q_x
  tiles of m × k, tile (j, i) at (j·q_x + i)·m·k, each column-major) is copied into the scratch
  ``GA`` (q_x + 1 slot columns of q_y tiles: the layout `meshgemm.gemm` shifts) and skewed on the
  device the shorter way round, per hosted virtual row (method §4.3), balanced as the kernel's skew:
  every physical row takes the rounds and copies of the row that rotates most, so the rows enter the
  steps in lockstep (`plmr.gemm.balanced_skew_cycles`).
* **Steps** (`steps`): Q steps, each an async shift of A along the x-ring and of B along the y-ring
  overlapping the q_y·q_x local products (`Gemm`, column order: vectors along the m tokens of a
  tile), then a join. Unlike the kernel, the last step shifts too: after Q shifts A is back in its
  skewed position, so the next product of a *chain* (K and V after Q; up after gate) uses it
  without a new copy and skew, and B is back in its pre-skewed position for the next prompt.
* **Right operand** (`WeightSlots`): every weight of every resident layer lives in one buffer
  ``WB``, pre-skewed on the host (`model_layout.PreskewedWeight`), q_y slot rows of q_x tiles of
  k × n (row-major). One spare slot row, shared by all weights, is the receive double buffer; the
  rotation through it leaves a weight's rows in other slots after Q shifts, and `restore_b` moves
  them back with local copies (a static sequence: the rotation is known when the body is built).
  Memory per PE is then one copy of each weight plus one row, not two copies.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgemm import line_rules as L
from meshgemm.gemm import slot_colour
from meshgemm.model_layout import MeshGemmGeometry
from plmr import gemm as plmr_gemm
from simulator.body import Body
from simulator.expr import Expr, ExprLike, Param, Var, Y, as_expr, eq, max_, min_, ne, select
from simulator.instructions import Copy, Fill, Gemm, Recv, Ref, Send
from simulator.program import MeshProgram
from simulator.statements import Assign, If, Loop, Wait

# variables of the fragments (declared by `MeshGemmRings.declare`)
AR, BR, GJ, GI, GR, GT, GU, GN1, GN2, GD = ("g_ar", "g_br", "g_j", "g_i", "g_r", "g_t", "g_u", "g_nrev",
                                              "g_nfwd", "g_d")
GEMM_VARS = (AR, BR, GJ, GI, GR, GT, GU, GN1, GN2, GD)


@dataclass(frozen=True)
class GemmGeometry(MeshGemmGeometry):
    """The virtual Q×Q mesh of MeshGEMM on P_y × P_x (method §4.4, ``MeshGemmGeometry``) and the
    token tile m."""

    m: int

    @property
    def comm_x(self) -> bool:
        return self.p_x > 1

    @property
    def comm_y(self) -> bool:
        return self.p_y > 1

    @property
    def la(self) -> int:
        """Physical A slot columns a rotation cycles through (the spare only with a neighbour)."""
        return self.q_x + 1 if self.comm_x else self.q_x

    @property
    def lb(self) -> int:
        return self.q_y + 1 if self.comm_y else self.q_y


@dataclass(frozen=True)
class WeightSlots:
    """One weight's place in ``WB``: q_y slot rows of q_x tiles of k × n at ``base`` (an expression:
    it depends on the layer), the shared spare row at ``spare``."""

    base: ExprLike
    k: int
    n: int
    q_x: int
    q_y: int
    spare: int
    buf: str = "WB"

    @property
    def tile(self) -> int:
        return self.k * self.n

    @property
    def row(self) -> int:
        return self.q_x * self.tile

    def slot(self, s: ExprLike) -> Expr:
        """Element offset of physical slot row s (s = q_y is the spare)."""
        s = as_expr(s)
        return select(eq(s, self.q_y), self.spare, as_expr(self.base) + s * self.row)


class MeshGemmRings:
    """The three rings of MeshGEMM on a program (routes once) and the per-PE colour parameters."""

    def __init__(self, prog: MeshProgram, geom: GemmGeometry, colour_of):
        self.geom = g = geom
        self.rx = L.RingExprs(g.p_x, Param("W"), "interleaved")
        self.ry = L.RingExprs(g.p_y, Param("H"), "interleaved")
        sx, sy = self.rx.slots, self.ry.slots
        rev_own = g.p_x >= 3  # a 2-ring's reverse shift is its forward shift
        self.slots = sx + sy + (sx if rev_own else 0)
        cx = lambda s: colour_of(s)  # noqa: E731
        cy = lambda s: colour_of(sx + s)  # noqa: E731
        crev = (lambda s: colour_of(sx + sy + s)) if rev_own else cx
        if g.comm_x:
            L.route_slots(prog, "x", self.rx.roles(L.X), cx)
            if rev_own:
                L.route_slots(prog, "x", self.rx.roles(L.X, reverse=True), crev)
        if g.comm_y:
            L.route_slots(prog, "y", self.ry.roles(Y), cy)
        self._params: dict[str, tuple[str, Expr]] = {
            "mg_Q": ("int", prog.param("Q", g.q)), "mg_H": ("int", Param("H"))}
        if g.comm_y and g.comm_x:  # the balanced skew's rounds (`skew`)
            self._params["mg_skewtot"] = ("int", prog.param("SKEWTOT", skew_rounds(g)))
        if g.comm_y and (g.q_y > 1 or not g.comm_x):  # and its copies
            self._params["mg_copymax"] = ("int", prog.param(
                "COPYMAX", plmr_gemm.most_skew_copies(g.q, g.p_y, g.q_x, g.q_y, g.comm_x)))
        if g.comm_x:
            ex = self.rx
            self._params.update(
                ax_send=("colour", slot_colour(cx, ex.slot(L.X), sx)),
                ax_recv=("colour", slot_colour(cx, ex.slot(ex.recv_from(L.X)), sx)),
                ar_send=("colour", slot_colour(crev, ex.transfer(L.X, True)[1], sx)),
                ar_recv=("colour", slot_colour(crev, ex.incoming(L.X, True)[1], sx)))
        if g.comm_y:
            ey = self.ry
            self._params.update(by_send=("colour", slot_colour(cy, ey.slot(Y), sy)),
                                by_recv=("colour", slot_colour(cy, ey.slot(ey.recv_from(Y)), sy)))

    # ---- body plumbing -------------------------------------------------------------------------
    def declare(self, body: Body) -> None:
        for name, (kind, _) in self._params.items():
            body.param(name, kind)
        for v in GEMM_VARS:
            body.var(v, "i32")

    def values(self) -> dict[str, Expr]:
        return {name: v for name, (_, v) in self._params.items()}

    def pos_y(self) -> Expr:
        """This PE's position on the y-ring (run-time expression of its row)."""
        if self.geom.p_y <= 2:
            return Y
        return select(eq(Y % 2, 0), Y // 2, Param("mg_H") - (Y + 1) // 2)

    # ---- left operand --------------------------------------------------------------------------
    def a_tile(self, slot: ExprLike, row: ExprLike, ta: int, a: str = "GA") -> Ref:
        return Ref(a, (as_expr(slot) * self.geom.q_y + row) * ta, ta)

    def load_a(self, src: str, ta: int, a: str = "GA", src_off: ExprLike = 0) -> list:
        """Copy an activation (natural layout: tile (j, i) at (j·q_x + i)·ta of ``src``) into A's slots
        (tile (i, j) at (i·q_y + j)·ta). One copy when one side hosts one tile per PE."""
        g = self.geom
        base = as_expr(src_off)
        if g.q_y == 1 or g.q_x == 1:
            return [Copy(Ref(a, 0, g.q_x * g.q_y * ta), Ref(src, base, g.q_x * g.q_y * ta))]
        j, i = Var(GJ), Var(GI)
        return [Loop(g.q_y, GJ, (Loop(g.q_x, GI, (
            Copy(self.a_tile(i, j, ta, a), Ref(src, base + (j * g.q_x + i) * ta, ta)),)),))]

    def resync(self, lead: ExprLike, unit: int, buf: str) -> list:
        """Before a chain that follows RMSNorm: the column waits ``plmr.gemm.column_resync_iters``
        units (a loop of one-element fills of ``buf``, ``unit`` cycles each, its count a run-time
        expression of the column; no memory, colour or task added). The norm's chain allreduce
        broadcasts from the last column down, so a column leaves it ``lead`` cycles
        (``plmr.gemm.norm_broadcast_lead``, ~16 a column) before the first; entered that far apart,
        the chain's shifting steps leave lockstep (+1.3% on the Q product at 16²). Delayed, every
        column enters the skew with the first and the steps run in lockstep. Nothing with one column."""
        if not self.geom.comm_x:
            return []
        return [Loop(plmr_gemm.column_resync_iters(as_expr(lead), unit), GR, (Fill(Ref(buf, 0, 1), 0.0),))]

    def skew(self, ta: int, a: str = "GA", scratch: str = "GS") -> list:
        """Cannon's skew of A in ring coordinates, on the device, the shorter way round (method §4.3;
        `meshgemm.gemm` per hosted virtual row), **balanced** as the kernel's (``balance_skew``): every
        physical row takes as many rounds as the row that rotates most (``plmr.gemm.most_skew_rounds``),
        its first hosted row adding the rounds beyond its own (``row_skew_rounds``) to the loop of its
        own direction, each sending a tile and receiving into the spare slot without renaming (the data
        stays, the traffic and the join are a round's). On its own ring, not the reverse one as the
        kernel's: columns enter the skew apart here (RMSNorm's chain broadcast reaches the first column
        last, ~16 cycles a column), and a row that switched rings mid-skew lost a round on alternate
        columns (tests/meshgemm/test_prefill_gemm.py). And a row of several hosted rows (or one that rotates
        locally) copies tiles out and back in place after the skew until it has made as many copies as
        the row that makes most (``most_skew_copies``, ``row_skew_copies``). Every physical row then
        leaves the skew at the same cycle and the steps start in lockstep. One physical row (P_y = 1)
        has nothing to balance. Leaves ``g_ar`` for the steps."""
        g = self.geom
        LA, qx, qy = g.la, g.q_x, g.q_y
        P = Param
        j, i, u, ar, r = Var(GJ), Var(GI), Var(GU), Var(AR), Var(GR)
        Q = P("mg_Q")
        pos = self.pos_y()
        balance = g.p_y > 1

        def copy_back(d: ExprLike, row: ExprLike) -> tuple:
            """Hosted row ``row``'s tiles out through the scratch and back ``d`` slots on (tile i takes
            slot (i + d) mod LA's)."""
            return (Loop(LA, GI, (Copy(Ref(scratch, i * ta, ta), self.a_tile((i + d) % LA, row, ta, a)),)),
                    Loop(LA, GI, (Copy(self.a_tile(i, row, ta, a), Ref(scratch, i * ta, ta)),)))

        row = [Assign(GU, pos * qy + j)]
        if g.comm_x:
            rev = u <= Q - u
            nrev, nfwd = select(rev, u, 0), select(rev, 0, Q - u)
            pad_rev = pad_fwd = 0
            if balance:  # rounds that move nothing, on the row's first hosted row and on its own ring
                pad = select(eq(j, 0), P("mg_skewtot") - plmr_gemm.row_skew_rounds(Q, qy, pos, min_, max_), 0)
                pad_rev, pad_fwd = select(rev, pad, 0), select(rev, 0, pad)
            row += [
                Assign(GN1, nrev + pad_rev, nonneg=True),
                Assign(GN2, nfwd + pad_fwd, nonneg=True),
                Assign(AR, 0),
                Loop(Var(GN2), GR, (Recv(P("ax_recv"), self.a_tile((LA - 1 + ar) % LA, j, ta, a), id="g_fr"),
                                    Send(P("ax_send"), self.a_tile((qx - 1 + ar) % LA, j, ta, a), id="g_fs"),
                                    Wait(("g_fr", "g_fs")),
                                    Assign(AR, select(r < nfwd, ar - 1, ar)) if balance else Assign(AR, ar - 1))),
                Loop(Var(GN1), GR, (Recv(P("ar_recv"), self.a_tile((LA - 1 + ar) % LA, j, ta, a), id="g_rr"),
                                    Send(P("ar_send"), self.a_tile(ar % LA, j, ta, a), id="g_rs"),
                                    Wait(("g_rr", "g_rs")),
                                    Assign(AR, select(r < nrev, ar + 1, ar)) if balance else Assign(AR, ar + 1))),
            ]
            if qy > 1:  # back to the canonical slot map (tile i in slot i) for every hosted row
                d = Var(GD)
                row += [Assign(GD, (ar % LA + LA) % LA), If(ne(d, 0), copy_back(d, j)), Assign(AR, 0)]
        else:  # one PE holds the whole virtual row: rotate it locally by u
            d = Var(GD)
            row += [Assign(GD, u % LA), If(ne(d, 0), copy_back(d, j))]
        code = [Assign(AR, 0), Loop(qy, GJ, tuple(row))]
        if balance and (qy > 1 or not g.comm_x):  # copies in place, up to the most any row makes
            made = plmr_gemm.row_skew_copies(Q, qx, qy, pos, g.comm_x, min_, max_)
            code += [Assign(GN1, P("mg_copymax") - made, nonneg=True), Loop(Var(GN1), GR, copy_back(0, 0))]
        return code

    def scratch_len(self, ta_max: int) -> int:
        """Elements of the skew's scratch (one hosted row's slots), 1 when unused."""
        g = self.geom
        return g.la * ta_max if (g.q_y > 1 or not g.comm_x) else 1

    # ---- steps ---------------------------------------------------------------------------------
    def steps(self, ta: int, w: WeightSlots, c: str, c_off: ExprLike = 0, a: str = "GA") -> list:
        """Q compute-shift steps: C (natural layout, tile (j, i) at (j·q_x + i)·m·n, column-major) +=
        A·B. A and B both shift every step (see the module docstring)."""
        g = self.geom
        LA, LB, qx, qy = g.la, g.lb, g.q_x, g.q_y
        m, k, n = g.m, w.k, w.n
        tb, tc = w.tile, m * n
        ar, br = Var(AR), Var(BR)
        j, i = Var(GJ), Var(GI)
        P = Param
        c0 = as_expr(c_off)
        gemms = Loop(qy, GJ, (Loop(qx, GI, (
            Gemm(Ref(c, c0 + (j * qx + i) * tc, tc), self.a_tile((i + ar) % LA, j, ta, a),
                 Ref(w.buf, w.slot((j + br) % LB) + i * tb, tb), m, k, n, layout="col"),)),))
        step: list = []
        ids = []
        if g.comm_x:
            step.append(Recv(P("ax_recv"), Ref(a, ((LA - 1 + ar) % LA) * qy * ta, qy * ta), id="g_ra"))
            ids.append("g_ra")
        if g.comm_y:
            step.append(Recv(P("by_recv"), Ref(w.buf, w.slot((LB - 1 + br) % LB), qx * tb), id="g_rb"))
            ids.append("g_rb")
        if g.comm_x:
            step.append(Send(P("ax_send"), Ref(a, ((qx - 1 + ar) % LA) * qy * ta, qy * ta), id="g_sa"))
            ids.append("g_sa")
        if g.comm_y:
            step.append(Send(P("by_send"), Ref(w.buf, w.slot((qy - 1 + br) % LB), qx * tb), id="g_sb"))
            ids.append("g_sb")
        step.append(gemms)
        if ids:
            step.append(Wait(tuple(ids)))
        step += [Assign(AR, ar - 1), Assign(BR, br - 1)]
        return [Assign(BR, 0), Loop(P("mg_Q"), GT, tuple(step))] + self.restore_b(w)

    def restore_b(self, w: WeightSlots) -> list:
        """Local copies that put a weight's rows back in its own slots after the Q shifts (row j of
        the weight is in slot (j − Q) mod LB; the spare must end free)."""
        g = self.geom
        LB, qy = g.lb, g.q_y
        br = (-g.q) % LB if g.comm_y else 0
        if br == 0:
            return []
        where = {j: (j + br) % LB for j in range(qy)}  # row -> slot now
        holder = {s: j for j, s in where.items()}  # slot -> row
        hole = next(s for s in range(LB) if s not in holder)
        moves = []
        while True:
            if hole != qy:  # slot `hole` must hold row `hole`
                src = where[hole]
                moves.append((src, hole))
                where[hole] = hole
                hole = src
                continue
            wrong = [j for j in range(qy) if where[j] != j]
            if not wrong:
                break
            j = wrong[0]  # another cycle: park row j in the spare and follow the chain from its slot
            moves.append((where[j], qy))
            hole, where[j] = where[j], qy
        return [Copy(Ref(w.buf, w.slot(d), w.row), Ref(w.buf, w.slot(s), w.row)) for s, d in moves]


def skew_rounds(geom: GemmGeometry) -> int:
    """The skew rounds every PE runs with the balanced skew: the most any physical row rotates
    (``plmr.gemm.most_skew_rounds``; ⌊Q/2⌋ with one hosted row per PE), none without an x-ring."""
    return plmr_gemm.most_skew_rounds(geom.q, geom.p_y, geom.q_y) if geom.comm_x else 0
