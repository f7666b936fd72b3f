"""dist-GEMM-T (waferllm-method.md §5): C[M×N] = A[M×K]·B[N×K]ᵀ without transposing B, on any
P_y × P_x mesh.

Layout: A and B are both rows-on-y, features-on-x: PE (px, py) holds A(py, px) (m×k, m = ⌈M/P_y⌉,
k = ⌈K/P_x⌉) and B(py, px) (n_b×k, n_b = ⌈N/P_y⌉, stored as Bᵀ k×n_b row-major — a host storage
choice, B itself is never transposed on the device).

Step t = 0..P_y−1 (no alignment): PE (px, py) holds B block j_t = R_y[(pos(py) − t) mod P_y]; it
computes the partial A(py, px)·B(j_t, px)ᵀ (m×n_b, over its features) and the row chain-reduces it
into root column j_t mod P_x: PEs left of the root ``RecvAddSend`` eastwards, PEs right of it
westwards, the ends ``Send``, the root ``Gemm``s straight into its C block and ``RecvAdd``s both
streams. Routes are root-independent (both directions routed everywhere, 2 alternating colours per
direction: 4), so the root changes per step with static routes. Meanwhile B shifts forward one
position on the interleaved y-ring (async, 3 colours). C block (py, j) lands on PE
(j mod P_x, py): the natural ``L_y L_x`` layout when P_x = P_y; for P_x < P_y a column holds
several blocks (in order of j), for P_x > P_y columns >= P_y hold none.

Note: the root's two ``RecvAdd`` streams accumulate into the same buffer concurrently; the
simulator applies each wavelet's add atomically. (On hardware the two fabric adds would be
serialised by sharing one DSD, or the second side added via a scratch buffer.)
"""

from __future__ import annotations

from functools import partial

import numpy as np

from meshgemm import line_rules as L
from meshgemm.gemm import choose_layout, random_operands, slot_colour
from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest
from meshgemm.layout import flat, interleaved_ring, pad2, tile_of, unflat
from plmr import gemm as plmr_gemm
from plmr.hardware import HardwareSpec
from simulator.body import Body
from simulator.expr import Expr, Param, X, Y, eq, max_, select
from simulator.instructions import Fill, Gemm, Recv, RecvAdd, RecvAddSend, Ref, Send
from simulator.program import MeshProgram
from simulator.statements import Assign, If, Loop, Wait


def build_gemmt(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """dist-GEMM-T, C = A·Bᵀ with A (m×k) and B (n×k); see the module docstring."""
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    m, nb, k = -(-M // P_y), -(-N // P_y), -(-K // P_x)
    order = choose_layout(spec, m, k, nb, dt)
    ry = interleaved_ring(P_y)
    nx = 4 if P_x > 1 else 0
    cmap = ColourMap(spec, nx + ry.slots, "gemmt")
    X_, Y_ = range(P_x), range(P_y)
    prog = MeshProgram(P_x, P_y, spec, name="gemmt")
    ta, tb, tc = m * k, k * nb, m * nb
    blocks = {px: [j for j in range(P_y) if j % P_x == px] for px in X_}
    ey = L.RingExprs(P_y, Param("H"), "interleaved")
    if P_x > 1:
        L.route_slots(prog, "x", L.directed_chain_roles(X, Param("W")), lambda s: cmap[s])
    if P_y > 1:
        L.route_slots(prog, "y", ey.roles(Y), lambda s: cmap[nx + s])

    b = Body("gemmt", doc="dist-GEMM-T: B rotates on the y-ring, partials chain-reduce along x")
    mt, kt, nt = b.param("m"), b.param("k"), b.param("nb")
    H, W, nblk = b.param("H"), b.param("W"), b.param("nblk")
    b.buffer("A", dt, mt * kt)
    b.buffer("B", dt, (2 if P_y > 1 else 1) * kt * nt)
    b.buffer("C", dt, nblk * mt * nt)
    if P_x > 1:
        b.buffer("Pt", dt, mt * nt, export=False)
        for c in ("cu_send", "cu_recv", "cd_send", "cd_recv"):
            b.param(c, "colour")
        b.param("first")
        b.param("last")
    if P_y > 1:
        b.param("by_send", "colour")
        b.param("by_recv", "colour")
    t, cur, j, root = b.var("t"), b.var("cur"), b.var("j"), b.var("root")
    TA, TB, TC = mt * kt, kt * nt, mt * nt
    P = Param
    shift = (P_y > 1)
    bref = Ref("B", cur * TB, TB)

    def b_shift(ids: list) -> list:
        if not shift:
            return []
        ids += ["rb", "sb"]
        return [Recv(P("by_recv"), Ref("B", (1 - cur) * TB, TB), id="rb"),
                Send(P("by_send"), Ref("B", cur * TB, TB), id="sb")]

    def step(last_step: bool) -> list:
        """Step t: B block j_t is here; the row reduces its partials into root column j_t mod P_x."""
        ids_root: list = []
        ids_other: list = []
        do_shift = shift and not last_step
        cref = Ref("C", (j // W) * TC, TC)
        root_ops = (b_shift(ids_root) if do_shift else []) + [Gemm(cref, "A", bref, mt, kt, nt, layout=order)]
        other_ops = (b_shift(ids_other) if do_shift else []) + [Fill("Pt", 0.0) if P_x > 1 else None,
                                                                  Gemm("Pt", "A", bref, mt, kt, nt, layout=order)
                                                                  if P_x > 1 else None]
        other_ops = [o for o in other_ops if o is not None]
        if P_x > 1:
            root_ops += [If(eq(P("first"), 0), (RecvAdd(P("cu_recv"), cref, id="cw"),)),
                         If(eq(P("last"), 0), (RecvAdd(P("cd_recv"), cref, id="ce"),))]
            # the joins: the root waits on its side streams (none at an end of the row)
            root_wait = Wait(tuple(ids_root) + ("cw", "ce"))
            below = If(eq(P("first"), 1), (Send(P("cu_send"), "Pt", id="c"),),
                       (RecvAddSend(P("cu_recv"), P("cu_send"), "Pt", id="c"),))
            above = If(eq(P("last"), 1), (Send(P("cd_send"), "Pt", id="c"),),
                       (RecvAddSend(P("cd_recv"), P("cd_send"), "Pt", id="c"),))
            # the first PE is never above a root, the last never below one: prune what cannot run
            other_ops += [If(X < root, (If(eq(P("last"), 1), (), (below,)),),
                             (If(eq(P("first"), 1), (), (above,)),))]
            other_wait = Wait(tuple(ids_other) + ("c",))
            return [Assign("j", _ring_order(ey, (ey.pos(Y) - t + H) % H)), Assign("root", j % W),
                    If(eq(X, root), tuple(root_ops) + (root_wait,), tuple(other_ops) + (other_wait,))]
        return [Assign("j", _ring_order(ey, (ey.pos(Y) - t + H) % H))] + root_ops + (
            [Wait(tuple(ids_root))] if ids_root else [])

    code = [Assign("cur", 0)]
    if P_y > 1:
        code.append(Loop(H - 1, "t", tuple(step(False) + [Assign("cur", 1 - cur)])))
        code += [Assign("t", H - 1)] + step(True)
    else:
        code += [Assign("t", 0)] + step(True)
    b.function("main", code)
    params = {"m": prog.param("MT", m), "k": prog.param("KT", k), "nb": prog.param("NB", nb), "H": Param("H"),
              "W": Param("W"), "nblk": max_((Param("H") - 1 - X) // Param("W") + 1, 1)}
    if P_x > 1:
        params.update(cu_send=_pick(cmap, X % 2, 0), cu_recv=_pick(cmap, (X + 1) % 2, 0),
                      cd_send=_pick(cmap, X % 2, 2), cd_recv=_pick(cmap, (X + 1) % 2, 2),
                      first=eq(X, 0), last=eq(X, Param("W") - 1))
    if P_y > 1:
        params.update(by_send=slot_colour(lambda s: cmap[nx + s], ey.slot(Y), ry.slots),
                      by_recv=slot_colour(lambda s: cmap[nx + s], ey.slot(ey.recv_from(Y)), ry.slots))
    prog.place(b, params=params)

    inputs, expected = {}, {}
    if req.functional:
        a, bm = random_operands(req, (M, K), (N, K))
        inputs = {"A": a, "B": bm}
        expected = {"C": a.astype(np.float64) @ bm.astype(np.float64).T}
        Ap, Bp = pad2(a, P_y * m, P_x * k), pad2(bm, P_y * nb, P_x * k)
        prog.set_data(X_, Y_, "A", lambda px, py: flat(tile_of(Ap, py, px, m, k), order))
        prog.set_data(X_, Y_, "B", lambda px, py: np.concatenate(
            [flat(tile_of(Bp, py, px, nb, k).T, "row")] + ([np.zeros(tb)] if P_y > 1 else [])))

    predict = partial(plmr_gemm.gemmt, spec, P_y, P_x, M, K, N, dt)

    def gather(res):
        Cp = np.zeros((P_y * m, P_y * nb))
        for py in Y_:
            for px in X_:
                if not blocks[px]:
                    continue
                buf = res.buffer(px, py, "C").astype(np.float64)
                for idx, jj in enumerate(blocks[px]):
                    Cp[py * m:(py + 1) * m, jj * nb:(jj + 1) * nb] = unflat(
                        buf[idx * tc:(idx + 1) * tc], m, nb, order)
        return {"C": Cp[:M, :N]}

    layout = {
        "A": f"rows_y feat_x, {m}x{k} per PE",
        "B": f"rows_y feat_x (n x k), {nb}x{k} per PE stored k-major; rotates on the y-ring",
        "C": f"block (py, j) of {m}x{nb} on PE (j mod {P_x}, py) ({order}-major); natural L_y L_x "
             f"when P_x = P_y",
        "mesh": f"{P_y}x{P_x}, {P_y} steps, chain reduce along x (4 colours) + y-ring "
                f"({ry.slots} colours)",
    }
    return KernelBuild(req, prog, predict, gather, inputs, expected, layout)


def _pick(cmap, parity: Expr, base: int) -> Expr:
    """Colour of slot base + parity (parity an expression 0/1)."""
    return select(eq(parity, 0), cmap[base], cmap[base + 1])


def _ring_order(ring: L.RingExprs, i: Expr) -> Expr:
    """R[i]: the PE at ring position i (evens ascending, then odds descending; method §4.2)."""
    if ring.n <= 2:
        return i
    n_even = (ring.N + 1) // 2
    return select(i < n_even, 2 * i, 2 * (ring.N - i) - 1)
