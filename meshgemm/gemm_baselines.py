"""The two GEMM baselines MeshGEMM is compared with (waferllm-method.md §4.1, §4.5).

* **Cannon** (``build_cannon``): MeshGEMM's exact schedule (``gemm.build_cannon_family``) on plain
  rings 0 → 1 → … → P−1 → 0. The 1-hop links alternate two colours; the P−1 hop wrap-around link
  uses a third and is passed through in hardware by every PE between (α per hop, no β), so each
  step's critical path is P−1 hops. Same skew/padding/virtual-mesh handling as MeshGEMM.
* **SUMMA** (``build_summa``), the paper's baseline, method §4.5 variant (i): step t broadcasts A's
  K-panel t (m×k, owned by column t // q_x) along every row and B's K-panel (k×n, owned by row
  t // q_y) along every column, by **store-and-forward software relays**: the owner sends both ways
  (and copies its panel); every PE on the way runs a ``RelayStore`` (β per stage, pipelined per
  wavelet: a FIFO over the panel buffer fed from one colour and drained onto the next), keeping the
  panel. Routes are static and root-independent (2 colours per direction per axis = 8); a PE
  receives on 2 colours per axis, within every target's queues. S = lcm(P_y, P_x) panels; panel t+1 is
  prefetched into the other of two panel buffers (``PA0``/``PA1``, ``PB0``/``PB1``, chosen by the step's
  parity: a relay fills a whole buffer, as a CSL FIFO spans a whole array) while panel t is multiplied
  (double buffering), so a step costs
  about c_task + max(T_comp, T_bc) with T_bc = T_msg(panel, P−1 hops, P−1 relays) for the
  farthest owner.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from meshgemm import line_rules as L
from meshgemm.gemm import build_cannon_family, choose_layout, random_operands
from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest
from meshgemm.layout import flat, pad2, tile_of, unflat
from plmr import gemm as plmr_gemm
from plmr.hardware import HardwareSpec
from simulator.body import Body
from simulator.expr import Const, Expr, Param, X, Y, as_expr, eq, select
from simulator.instructions import Copy, Fill, Gemm, Recv, Ref, RelayStore, Send
from simulator.program import MeshProgram
from simulator.statements import If, Loop, Wait


def build_cannon(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """Cannon on plain rings (wrap link P−1 hops); see the module docstring."""
    return build_cannon_family(req, spec, "cannon")


def _fetch(axis: str, o: Expr, own: Ref, panel: Ref, tag: str) -> tuple:
    """One relay broadcast of a panel along ``axis`` from the owner at position ``o`` (a run-time
    value): the owner sends both ways and keeps its panel; every other PE stores the stream as it
    relays it onward (``RelayStore``), the ends only receive. Branches that cannot run at the ends
    of the line are pruned at comptime (``first``/``last`` parameters)."""
    q = X if axis == "x" else Y
    P = lambda n: Param(f"{axis}{n}")  # noqa: E731
    first, last = P("first"), P("last")
    owner = (If(eq(last, 0), (Send(P("up_out"), own, id=tag + "a"),)),
             If(eq(first, 0), (Send(P("dn_out"), own, id=tag + "b"),)),
             Copy(panel, own))
    from_below = If(eq(last, 0), (RelayStore(P("up_in"), P("up_out"), panel, id=tag + "a"),),
                    (Recv(P("up_in"), panel, id=tag + "a"),))
    from_above = If(eq(first, 0), (RelayStore(P("dn_in"), P("dn_out"), panel, id=tag + "a"),),
                    (Recv(P("dn_in"), panel, id=tag + "a"),))
    return (If(eq(q, o), owner, (If(q > o, (If(eq(first, 1), (), (from_below,)),),
                                    (If(eq(last, 1), (), (from_above,)),)),)),)


def _chain_params(cmap, base: int, axis: str, n: Expr) -> dict:
    q = X if axis == "x" else Y
    pick = lambda parity, b: select(eq(parity, 0), cmap[b], cmap[b + 1])  # noqa: E731
    return {f"{axis}up_out": pick(q % 2, base), f"{axis}up_in": pick((q + 1) % 2, base),
            f"{axis}dn_out": pick(q % 2, base + 2), f"{axis}dn_in": pick((q + 1) % 2, base + 2),
            f"{axis}first": eq(q, 0), f"{axis}last": eq(q, n - 1)}


def build_summa(req: KernelRequest, spec: HardwareSpec, bsp: bool = False) -> KernelBuild:
    """SUMMA with store-and-forward relay broadcasts (method §4.5 variant (i)); see the module
    docstring. ``bsp``: a global barrier after the first fetch and after every step."""
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    S = math.lcm(P_y, P_x)
    q_x, q_y = S // P_x, S // P_y
    m, k, n = -(-M // P_y), -(-K // S), -(-N // P_x)
    order = choose_layout(spec, m, k, n, dt)
    ta, tb = m * k, k * n
    nx = 4 if P_x > 1 else 0
    ny = 4 if P_y > 1 else 0
    y0 = nx  # the first of the y chains' colour slots
    if bsp and (P_x == 1 or P_y == 1):  # the barrier needs chains on both axes: add the missing ones
        cmap = ColourMap(spec, 8, "summa")
        y0 = 4  # the barrier's y chains (slots 4-7) are SUMMA's own, as on the x axis
    else:
        cmap = ColourMap(spec, nx + ny, "summa")

    prog = MeshProgram(P_x, P_y, spec, name="summa")
    X_, Y_ = range(P_x), range(P_y)
    if P_x > 1:
        L.route_slots(prog, "x", L.directed_chain_roles(X, Param("W")), lambda s: cmap[s])
    if P_y > 1:
        L.route_slots(prog, "y", L.directed_chain_roles(Y, Param("H")), lambda s: cmap[y0 + s])

    b = Body("summa", doc="SUMMA: relay broadcasts of A and B panels, one panel prefetched")
    mt, kt, nt, qx, qy, Sp = (b.param(p) for p in ("m", "k", "n", "qx", "qy", "S"))
    TA, TB = mt * kt, kt * nt
    b.buffer("A", dt, qx * TA)
    b.buffer("B", dt, qy * TB)
    b.buffer("C", dt, mt * nt)
    params = {"m": prog.param("MT", m), "k": prog.param("KT", k), "n": prog.param("NT", n),
              "qx": prog.param("QX", q_x), "qy": prog.param("QY", q_y), "S": prog.param("S", S)}
    for axis, on, base in (("x", P_x > 1, 0), ("y", P_y > 1, y0)):
        if not on:
            continue
        for half in (0, 1):
            b.buffer(("PA" if axis == "x" else "PB") + str(half), dt, TA if axis == "x" else TB, export=False)
        cp = _chain_params(cmap, base, axis, Param("W" if axis == "x" else "H"))
        for name in cp:
            b.param(name, "int" if name.endswith(("first", "last")) else "colour")
        params.update(cp)
    t = b.var("t")

    def by_parity(step: Expr, make) -> tuple:
        """``make(half)``'s statements for the panel buffer of ``step``'s parity: chosen at build time
        for a constant step, else by a branch."""
        step = as_expr(step)
        if isinstance(step, Const):
            return tuple(make(step.value % 2))
        return (If(eq(step % 2, 0), tuple(make(0)), tuple(make(1))),)

    def fetch(step: Expr) -> tuple:
        code: tuple = ()
        if P_x > 1:
            code += by_parity(step, lambda h: _fetch("x", step // qx, Ref("A", (step % qx) * TA, TA),
                                                     Ref(f"PA{h}", 0, TA), "x"))
        if P_y > 1:
            code += by_parity(step, lambda h: _fetch("y", step // qy, Ref("B", (step % qy) * TB, TB),
                                                     Ref(f"PB{h}", 0, TB), "y"))
        return code

    ids = tuple(i for axis, on in (("x", P_x > 1), ("y", P_y > 1)) if on for i in (axis + "a", axis + "b"))

    def gemm(step: Expr) -> tuple:
        def make(h):
            a = Ref(f"PA{h}", 0, TA) if P_x > 1 else Ref("A", step * TA, TA)
            bb = Ref(f"PB{h}", 0, TB) if P_y > 1 else Ref("B", step * TB, TB)
            return (Gemm("C", a, bb, mt, kt, nt, layout=order),)
        if P_x == 1 and P_y == 1:
            return make(0)
        return by_parity(step, make)

    bar: tuple = ()
    if bsp and P_x * P_y > 1:
        from meshgemm.bsp import barrier_fragment
        bar, bar_params = barrier_fragment(prog, b, None if P_x > 1 and P_y > 1 else
                                           [cmap[i] for i in range(8)])
        params.update(bar_params)
    code = [Fill("C", 0.0), *fetch(as_expr(0))]
    if ids:
        code.append(Wait(ids))
    code += list(bar)
    code.append(Loop(Sp - 1, "t", (*fetch(t + 1), *gemm(t)) + ((Wait(ids),) if ids else ()) + bar))
    code += gemm(Sp - 1)
    b.function("main", code)
    prog.place(b, params=params)

    inputs, expected = {}, {}
    if req.functional:
        a, bm = random_operands(req, (M, K), (K, N))
        inputs = {"A": a, "B": bm}
        expected = {"C": a.astype(np.float64) @ bm.astype(np.float64)}
        Ap, Bp = pad2(a, P_y * m, S * k), pad2(bm, S * k, P_x * n)
        prog.set_data(X_, Y_, "A", lambda px, py: np.concatenate(
            [flat(tile_of(Ap, py, px * q_x + i, m, k), order) for i in range(q_x)]))
        prog.set_data(X_, Y_, "B", lambda px, py: np.concatenate(
            [flat(tile_of(Bp, py * q_y + j, px, k, n), "row") for j in range(q_y)]))

    predict = partial(plmr_gemm.summa, spec, P_y, P_x, M, K, N, dt)

    def gather(res):
        Cp = np.zeros((P_y * m, P_x * n))
        for py in Y_:
            for px in X_:
                Cp[py * m:(py + 1) * m, px * n:(px + 1) * n] = unflat(
                    res.buffer(px, py, "C").astype(np.float64), m, n, order)
        return {"C": Cp[:M, :N]}

    layout = {
        "A": f"M_y K_x natural, {q_x} K-panels of {m}x{k} per PE",
        "B": f"K_y N_x natural, {q_y} K-panels of {k}x{n} per PE",
        "C": f"M_y N_x natural, {m}x{n} ({order}-major) per PE",
        "mesh": f"{P_y}x{P_x}, {S} panel steps, relay broadcasts (variant (i)), {nx + ny} colours",
    }
    return KernelBuild(req, prog, predict, gather, inputs, expected, layout)
