"""MeshGEMM (waferllm-method.md §4): C[M×N] = A[M×K]·B[K×N] on a P_y × P_x mesh as Cannon on
interleaved rings, on the virtual Q×Q mesh of §4.4 (Q = lcm(P_y, P_x); Q = P when square).

Layout (padded tiles m_v = ⌈M/Q⌉, k = ⌈K/Q⌉, n_v = ⌈N/Q⌉; per PE q_y × q_x virtual tiles,
q_x = Q/P_x, q_y = Q/P_y):

* Virtual x-ring position v lives on column R_x[v // q_x], virtual y-ring position u on row
  R_y[u // q_y]; PE (px, py) hosts virtual rows u = pos_y(py)·q_y + j and columns
  v = pos_x(px)·q_x + i. The K-block at virtual x-position ℓ is λ(ℓ) = R_x[ℓ // q_x]·q_x + ℓ mod q_x.
* **A** (activation) starts in the natural ``M_y K_x`` layout: PE (px, py), tile (j, i) =
  A(row block py·q_y + j, K block px·q_x + i). It is **skewed on the device**: virtual row u rotates
  by u positions in reverse, or by Q − u forward when that is shorter (the authors' "shorter way
  round", §4.3), so every row needs at most ⌊Q/2⌋ rounds. Reverse rounds use a reverse ring (3
  colours); forward rounds reuse the compute x-ring (identical routes, separate phase): 9 colours.
  Rows already in place do nothing (per-row round counts, §11). **Balanced** (the default,
  ``balance_skew``): every physical row then adds rounds that send a tile and receive into the
  spare slot, moving nothing, until it has taken as many as the row that rotates most (and, with
  several hosted rows, as many copies back to the canonical slot map), so every row leaves the
  skew at the same cycle and the shifting steps run in lockstep (rows leaving early were held
  back by their late successors, and the steps never re-settled: docs/BENCHMARKS.md).
* **B** (weights) is **pre-skewed on the host**: virtual PE (u, v) starts with B(λ((u+v) mod Q), v).
* **C** accumulates in place in the natural ``M_y N_x`` layout: tile (j, i) of PE (px, py) is
  C(row block py·q_y + j, column block px·q_x + i) — padded rows/columns are dropped by ``gather``.

Buffers per PE: ``A`` = q_x+1 slot columns of q_y tiles (one spare slot: the receive double buffer),
``B`` = q_y+1 slot rows of q_x tiles, ``C`` = q_y·q_x tiles. Virtual shifts inside a PE are pointer
renames; only the boundary slot column (q_y A tiles, one message of m·k) crosses to the x-ring
neighbour and the boundary slot row (k·n) to the y-ring neighbour, async, overlapping the q_x·q_y
local ``Gemm``s of the step; the final (useless) shift is skipped.

P = 1 on an axis: no communication on it (pure renames). P = 2: a 1-hop exchange on 2 colours.

**Cannon's start phases** (``kind="cannon"``): a plain ring's steps settle with each PE running
α(P − 2)/P behind its predecessor (the ring's mean link paces a step; the wrap into position 0 is
then as late as the one-hop links). Entered together, the wrap's lag runs ahead as a wave whose
front, past a one-hop link's buffering, stalls senders and never settles (−2.2% against the steady
state at 32², −3.3% at 64²). So the balanced skew's pads take the first hosted row's own ring (every
row then rotates one way, and its PEs leave the skew (P − 2)·α late per crossing of the wrap), and
before the steps every PE fills one element of C as many times as its phase in both rings plus the
skew lag it was spared take (``plmr.gemm.cannon_start_delay``, computed on the PE).

``build_cannon_family(..., a_skew="host")`` pre-skews A on the host as well (the layout the device
skew produces, A(row, λ((u + v) mod Q))) and leaves the skew out: every PE then enters the shifting
steps at the same cycle, the lockstep schedule ``plmr.gemm`` charges step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from meshgemm import line_rules as L
from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest, round_to_dtype
from meshgemm.layout import flat, interleaved_ring, pad2, plain_ring, tile_of, unflat
from plmr import gemm as plmr_gemm
from plmr.hardware import HardwareSpec
from simulator.body import Body
from simulator.expr import Expr, ExprLike, Param, Var, X, Y, as_expr, eq, max_, min_, ne, select
from simulator.instructions import Copy, Fill, Gemm, Recv, Ref, Send
from simulator.program import MeshProgram
from simulator.statements import Assign, If, Loop, Wait


def choose_layout(spec: HardwareSpec, m: int, k: int, n: int, dtype: str) -> str:
    """Loop order of the local product: vector along the longer of m and n (c_op per op, §4.3);
    ``col`` (vectors of length m) on ties. Agrees with ``plmr.gemm.local_gemm_cycles``."""
    w = spec.simd_width("fmac", dtype)
    along_m = k * n * (spec.op_issue_cycles + math.ceil(m / w))
    along_n = k * m * (spec.op_issue_cycles + math.ceil(n / w))
    return "col" if along_m <= along_n else "row"


def random_operands(req: KernelRequest, shape_a, shape_b):
    """Seeded inputs in [-1, 1), rounded to the kernel dtype; the reference is the float64 product
    of the rounded inputs."""
    rng = req.rng()
    a = round_to_dtype(rng.uniform(-1.0, 1.0, size=shape_a), req.dtype)
    b = round_to_dtype(rng.uniform(-1.0, 1.0, size=shape_b), req.dtype)
    return a, b


@dataclass
class _Geom:
    P_y: int
    P_x: int
    Q: int
    q_x: int
    q_y: int
    m_v: int
    k: int
    n_v: int
    order: str  # Gemm layout

    @property
    def ta(self) -> int:  # elements of one A tile
        return self.m_v * self.k

    @property
    def tb(self) -> int:
        return self.k * self.n_v

    @property
    def tc(self) -> int:
        return self.m_v * self.n_v


def slot_colour(colour_of, slot: ExprLike, slots: int) -> Expr:
    """The colour ID of colour slot ``slot`` (an expression with values 0..slots-1)."""
    out = as_expr(colour_of(slots - 1))
    for s in reversed(range(slots - 1)):
        out = select(eq(slot, s), colour_of(s), out)
    return out


def build_meshgemm(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """MeshGEMM on interleaved rings (see the module docstring)."""
    return build_cannon_family(req, spec, "meshgemm")


def build_cannon_family(req: KernelRequest, spec: HardwareSpec, kind: str, bsp: bool = False,
                        a_skew: str = "device", balance_skew: bool = True) -> KernelBuild:
    """The shared Cannon schedule; ``kind`` = ``"meshgemm"`` (interleaved rings, links <= 2 hops)
    or ``"cannon"`` (plain rings with the P-1 hop wrap-around link). ``bsp``: a global barrier after
    every skew round and every shifting step (``meshgemm.bsp``). ``a_skew``: ``"device"`` (the
    method's, §4.3) or ``"host"``: A arrives pre-skewed like B, the program has no skew and every
    PE enters the shifting steps at the same cycle (the reference schedule the per-step terms of
    ``plmr.gemm`` are checked against, tests/meshgemm/test_gemm_kernels.py). ``balance_skew``
    (device skew, barrier-free): every physical row spends the same rounds in the skew, the rows
    that rotate fewer adding rounds that move nothing (``plmr.gemm.row_skew_rounds``), so every PE enters the
    shifting steps at the same cycle; False: the method's skew as written, each row leaving it after
    its own rounds."""
    if a_skew not in ("device", "host"):
        raise ValueError(f"a_skew must be 'device' or 'host', not {a_skew!r}")
    if bsp and a_skew != "device":
        raise ValueError("the bulk-synchronous variant skews A on the device")
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    Q = math.lcm(P_y, P_x)
    g = _Geom(P_y, P_x, Q, Q // P_x, Q // P_y, -(-M // Q), -(-K // Q), -(-N // Q), "col")
    g.order = choose_layout(spec, g.m_v, g.k, g.n_v, dt)
    make = interleaved_ring if kind == "meshgemm" else plain_ring
    rx, ry = make(P_x), make(P_y)

    # Colour slots: x forward [0, sx), y forward [sx, sx+sy), x reverse (skew) [sx+sy, ...).
    sx, sy = rx.slots, ry.slots
    rev_x_own = P_x >= 3  # a 2-ring's reverse shift is its forward shift (same transfers)
    n_slots = sx + sy + (rx.slots if rev_x_own else 0)
    if bsp:
        from meshgemm.bsp import barrier_colours
        total = barrier_colours(spec, n_slots, kind + "-bsp", P_x, P_y)
    cmap = ColourMap(spec, total if bsp else n_slots, kind)
    cx = lambda s: cmap[s]  # noqa: E731
    cy = lambda s: cmap[sx + s]  # noqa: E731
    crev = (lambda s: cmap[sx + sy + s]) if rev_x_own else cx

    prog = MeshProgram(P_x, P_y, spec, name=kind)
    ring_kind = "interleaved" if kind == "meshgemm" else "plain"
    ex = L.RingExprs(P_x, Param("W"), ring_kind)
    ey = L.RingExprs(P_y, Param("H"), ring_kind)
    comm_x, comm_y = P_x > 1, P_y > 1
    # ---- routes ----
    if comm_x:
        L.route_slots(prog, "x", ex.roles(X), cx)
    if comm_y:
        L.route_slots(prog, "y", ey.roles(Y), cy)
    if rev_x_own:
        L.route_slots(prog, "x", ex.roles(X, reverse=True), crev)

    balance = balance_skew and a_skew == "device" and not bsp and P_y > 1
    phased = kind == "cannon" and not bsp
    body = _cannon_body(g, kind, comm_x, comm_y, dt, skew=a_skew == "device", balance=balance,
                        phase_units=plmr_gemm.phase_units(spec, dt) if phased else None)
    bar_params: dict = {}
    if bsp and P_x * P_y > 1:
        from meshgemm.bsp import barrier_fragment
        bar, bar_params = barrier_fragment(prog, body, [cmap[n_slots + i] for i in range(8)])
        rounds = max((sum(skew_plan(Q, ry.pos[py] * g.q_y + j)[1] for j in range(g.q_y)) for py in range(P_y)),
                     default=0) if comm_x else 0
        _add_barriers(body, bar, prog.param("SKEWMAX", rounds))
    params_skew = {}
    if balance and comm_x:
        params_skew["skewtot"] = prog.param("SKEWTOT", plmr_gemm.most_skew_rounds(Q, P_y, g.q_y))
    if balance and (g.q_y > 1 or not comm_x):
        params_skew["copymax"] = prog.param("COPYMAX", plmr_gemm.most_skew_copies(Q, P_y, g.q_x, g.q_y, comm_x))
    params = {"mv": prog.param("MV", g.m_v), "kt": prog.param("KT", g.k), "nv": prog.param("NV", g.n_v),
              "qx": prog.param("QX", g.q_x), "qy": prog.param("QY", g.q_y), "Q": prog.param("Q", Q),
              "H": Param("H")}
    if comm_x:
        params.update(ax_send=slot_colour(cx, ex.slot(X), sx), ax_recv=slot_colour(cx, ex.slot(ex.recv_from(X)), sx),
                      ar_send=slot_colour(crev, ex.transfer(X, True)[1], sx),
                      ar_recv=slot_colour(crev, ex.incoming(X, True)[1], sx))
    params.update(params_skew)
    if balance and comm_x and kind == "cannon":  # the pads' ring: the first hosted row's
        first_rev = Y * params["qy"] <= params["Q"] - Y * params["qy"]
        params.update(pad_recv=select(first_rev, params["ar_recv"], params["ax_recv"]),
                      pad_send=select(first_rev, params["ar_send"], params["ax_send"]))
    if phased:
        params["W"] = Param("W")
    if comm_y:
        params.update(by_send=slot_colour(cy, ey.slot(Y), sy), by_recv=slot_colour(cy, ey.slot(ey.recv_from(Y)), sy))
    if bsp and P_x * P_y > 1:
        params.update(bar_params, skewmax=Param("SKEWMAX"))
    prog.place(body, params=params)

    # ---- host data ----
    inputs, expected = {}, {}
    if req.functional:
        a, b = random_operands(req, (M, K), (K, N))
        inputs = {"A": a, "B": b}
        expected = {"C": a.astype(np.float64) @ b.astype(np.float64)}
        Ap = pad2(a, Q * g.m_v, Q * g.k)
        Bp = pad2(b, Q * g.k, Q * g.n_v)
        lam = [rx.order[l // g.q_x] * g.q_x + l % g.q_x for l in range(Q)]
        a_tile_order = "col" if g.order == "col" else "row"

        la, lb = g.q_x + 1, g.q_y + 1

        def a_block(px, py, j, i) -> int:
            """The K block of tile (j, i) of PE (px, py): its own (natural layout), or with A
            pre-skewed the one the device skew would have brought there (B's, λ((u + v) mod Q))."""
            if a_skew == "device":
                return px * g.q_x + i
            return lam[(ry.pos[py] * g.q_y + j + rx.pos[px] * g.q_x + i) % Q]

        def a_init(px, py):
            buf = np.zeros(la * g.q_y * g.ta)
            for i in range(g.q_x):
                for j in range(g.q_y):
                    t = tile_of(Ap, py * g.q_y + j, a_block(px, py, j, i), g.m_v, g.k)
                    o = (i * g.q_y + j) * g.ta
                    buf[o:o + g.ta] = flat(t, a_tile_order)
            return buf

        def b_init(px, py):
            buf = np.zeros(lb * g.q_x * g.tb)
            for j in range(g.q_y):
                u = ry.pos[py] * g.q_y + j
                for i in range(g.q_x):
                    v = rx.pos[px] * g.q_x + i
                    t = tile_of(Bp, lam[(u + v) % Q], px * g.q_x + i, g.k, g.n_v)
                    o = (j * g.q_x + i) * g.tb
                    buf[o:o + g.tb] = flat(t, "row")
            return buf

        prog.set_data(range(P_x), range(P_y), "A", a_init)
        prog.set_data(range(P_x), range(P_y), "B", b_init)

    predict = partial(plmr_gemm.meshgemm if kind == "meshgemm" else plmr_gemm.cannon,
                      spec, P_y, P_x, M, K, N, dt, a_skew=a_skew, balance_skew=balance)

    def gather(res) -> dict[str, np.ndarray]:
        Cp = np.zeros((Q * g.m_v, Q * g.n_v), dtype=np.float64)
        for py in range(P_y):
            for px in range(P_x):
                buf = res.buffer(px, py, "C").astype(np.float64)
                for j in range(g.q_y):
                    for i in range(g.q_x):
                        o = (j * g.q_x + i) * g.tc
                        r0, c0 = (py * g.q_y + j) * g.m_v, (px * g.q_x + i) * g.n_v
                        Cp[r0:r0 + g.m_v, c0:c0 + g.n_v] = unflat(buf[o:o + g.tc], g.m_v, g.n_v,
                                                                 g.order)
        return {"C": Cp[:M, :N]}

    ring = "interleaved" if kind == "meshgemm" else "plain (wrap link P-1 hops)"
    layout = {
        "A": (f"M_y K_x natural, {g.q_y}x{g.q_x} tiles of {g.m_v}x{g.k} per PE, skewed on device "
              f"(shorter way round) over {ring} x-rings") if a_skew == "device" else
             f"M_y rows, pre-skewed on host like B, {g.q_y}x{g.q_x} tiles of {g.m_v}x{g.k} per PE",
        "B": f"K_y N_x pre-skewed on host (Cannon in ring coordinates), {g.q_y}x{g.q_x} tiles of "
             f"{g.k}x{g.n_v}",
        "C": f"M_y N_x natural, {g.q_y}x{g.q_x} tiles of {g.m_v}x{g.n_v} ({g.order}-major), "
             f"padded to {Q * g.m_v}x{Q * g.n_v}",
        "mesh": f"{P_y}x{P_x} physical, virtual {Q}x{Q} (q_y={g.q_y}, q_x={g.q_x}); {Q} steps; "
                f"{n_slots} colours",
    }
    return KernelBuild(req, prog, predict, gather, inputs, expected, layout)


def _add_barriers(body: Body, bar: tuple, skewmax) -> None:
    """Insert the barrier ``bar`` after every skew round's and every shifting step's join, and make
    every PE meet as many skew barriers as the PE with the most rounds (``skewmax``)."""
    main = body.functions["main"]
    body.param("skewmax")
    body.var("nbar")

    def after_join(code: tuple) -> tuple:
        out = []
        for st in code:
            if isinstance(st, Loop):
                st = Loop(st.count, st.var, after_join(st.body))
            out.append(st)
            if isinstance(st, Wait):
                out.extend(bar)
        return tuple(out)

    code = list(after_join(main.code))
    # the skew is the first Loop over "j"; count its rounds, then meet the remaining barriers
    k = next(i for i, st in enumerate(code) if isinstance(st, Loop) and st.var == "j")
    skew = code[k]
    count = Assign("nbar", Var("nbar") + 1)

    def counted(code: tuple) -> tuple:
        out = []
        for st in code:
            if isinstance(st, Loop):
                st = Loop(st.count, st.var, counted(st.body))
            out.append(st)
            if isinstance(st, Wait):
                out.append(count)
        return tuple(out)

    code[k] = Loop(skew.count, skew.var, counted(skew.body))
    code[k:k] = [Assign("nbar", 0)]
    code.insert(k + 2, Loop(Param("skewmax") - Var("nbar"), "r", bar))
    body.functions["main"] = type(main)(main.name, tuple(code), main.args)


def _copy_round(moved, LA, ta, i, d, a_tile, j, count: bool) -> tuple:
    """Tiles of hosted row j copied out through the scratch S and back d slots on (tile i takes
    slot (i + d) mod LA's) when ``moved``; ``count``: and counted in ``nc``."""
    code = (Loop(LA, "i", (Copy(Ref("S", i * ta, ta), a_tile((i + d) % LA, j)),)),
            Loop(LA, "i", (Copy(a_tile(i, j), Ref("S", i * ta, ta)),)))
    return (If(moved, code + ((Assign("nc", Var("nc") + 1),) if count else ())),)


def skew_plan(Q: int, u: int) -> tuple[str, int]:
    """Direction and rounds of virtual row u's device skew: reverse by u, or forward by Q − u when
    that is shorter (ties go reverse)."""
    return ("rev", u) if u <= Q - u else ("fwd", Q - u)


def _cannon_body(g: _Geom, kind: str, comm_x: bool, comm_y: bool, dt: str, skew: bool = True,
                 balance: bool = False, phase_units: tuple[int, int] | None = None) -> Body:
    """The one PE program of MeshGEMM / Cannon (see the module docstring).

    Slot maps are run-time rotations: with ``LA`` A slots, virtual tile i of a hosted row sits in slot
    (i + ar) mod LA and the spare (receive) slot is (LA − 1 + ar) mod LA; each forward shift
    decrements ``ar`` (the tile leaving is the row's last, the one arriving lands in the spare slot),
    each reverse skew round increments it. B likewise along y with ``br``. Without communication on
    an axis the tiles only rotate by renaming (LA = q_x slots, no spare). ``skew=False``: A arrives
    pre-skewed in the canonical slot map, and the skew loop is left out. ``balance``: every physical
    row takes as many rounds as the row that rotates most (``skewtot``), its first hosted row adding
    the rounds beyond its own rotations, each sending a tile and receiving into the spare slot
    without renaming (the row's data stays put; the traffic and the joins are a round's), and a row
    of several hosted rows (or one that rotates locally) copies tiles out and back in place after the
    skew until it has made as many copies as the row that makes most (``copymax``); every physical
    row then leaves the skew at the same cycle. ``phase_units`` (Cannon: α and the cycles of a
    one-element fill): the pads run on the first hosted row's own ring, and every PE fills one
    element of C as many times as puts it at its start phase before the steps
    (``plmr.gemm.cannon_start_delay``, computed on the PE from its coordinates and the layout
    parameters, so the parameter sets do not grow with the mesh)."""
    b = Body(kind, doc=f"{kind}: Cannon on {'interleaved' if kind == 'meshgemm' else 'plain'} rings")
    mv, kt, nv = b.param("mv"), b.param("kt"), b.param("nv")
    qx, qy, Q, Hp = b.param("qx"), b.param("qy"), b.param("Q"), b.param("H")
    ta, tb, tc = mv * kt, kt * nv, mv * nv
    LA = qx + 1 if comm_x else qx  # slots a rotation cycles through (the spare only with a neighbour)
    LB = qy + 1 if comm_y else qy
    b.buffer("A", dt, (qx + 1) * qy * ta)  # always one spare slot: the same layout on every mesh
    b.buffer("B", dt, (qy + 1) * qx * tb)
    b.buffer("C", dt, qy * qx * tc)
    if comm_x:
        for c in ("ax_send", "ax_recv", "ar_send", "ar_recv"):
            b.param(c, "colour")
    if comm_y:
        for c in ("by_send", "by_recv"):
            b.param(c, "colour")
    needs_scratch = skew and (g.q_y > 1 or not comm_x)
    if needs_scratch:
        b.buffer("S", dt, LA * ta, export=False)
        if balance:  # copies made so far, and the loop over the ones a row adds
            b.var("nc")
            b.var("c")
    ar, br = b.var("ar"), b.var("br")
    j, i, r, t = b.var("j"), b.var("i"), b.var("r"), b.var("t")
    u, nrev, nfwd, d = b.var("u"), b.var("nrev"), b.var("nfwd"), b.var("d")
    if balance and comm_x:
        npad, skewtot = b.var("npad"), b.param("skewtot")
    P = Param

    def a_tile(slot, row) -> Ref:
        return Ref("A", (slot * qy + row) * ta, ta)

    code: list = [Fill("C", 0.0), Assign("ar", 0), Assign("br", 0)]
    # ---------------- skew of A along the x-ring, one hosted virtual row at a time ----------------
    pos_y = select(eq(Y % 2, 0), Y // 2, Hp - (Y + 1) // 2) if kind == "meshgemm" else Y
    if g.P_y <= 2:
        pos_y = Y
    row_skew = [Assign("u", pos_y * qy + j)]
    if comm_x:
        row_skew += [
            Assign("nrev", select(u <= Q - u, u, 0)),
            Assign("nfwd", select(u <= Q - u, 0, Q - u)),
            Assign("ar", 0),
            Loop(nrev, "r", (Recv(P("ar_recv"), a_tile((LA - 1 + ar) % LA, j), id="rr"),
                             Send(P("ar_send"), a_tile(ar % LA, j), id="rs"),
                             Wait(("rr", "rs")), Assign("ar", ar + 1))),
            Loop(nfwd, "r", (Recv(P("ax_recv"), a_tile((LA - 1 + ar) % LA, j), id="fr"),
                             Send(P("ax_send"), a_tile((qx - 1 + ar) % LA, j), id="fs"),
                             Wait(("fr", "fs")), Assign("ar", ar - 1))),
        ]
        if balance:  # rounds that move nothing: the row's tiles stay, the spare slot takes a copy
            pad_recv, pad_send = P("ar_recv"), P("ar_send")
            if kind == "cannon":  # on the ring the first hosted row rotates on (cannon_start_delay)
                pad_recv, pad_send = b.param("pad_recv", "colour"), b.param("pad_send", "colour")
            row_skew += [
                Assign("npad", select(eq(j, 0), skewtot - plmr_gemm.row_skew_rounds(Q, qy, pos_y, min_, max_), 0), nonneg=True),
                Loop(npad, "r", (Recv(pad_recv, a_tile((LA - 1 + ar) % LA, j), id="nr"),
                                 Send(pad_send, a_tile((ar % LA + LA) % LA, j), id="ns"),
                                 Wait(("nr", "ns")))),
            ]
        if g.q_y > 1:  # bring the row back to the canonical slot map (tile i in slot i)
            row_skew += [Assign("d", (ar % LA + LA) % LA),
                         *_copy_round(ne(d, 0), LA, ta, i, d, a_tile, j, balance),
                         Assign("ar", 0)]
    else:  # one PE holds the whole row: rotate it locally by u (tile i takes tile (i + u) mod q_x)
        row_skew += [Assign("d", u % LA), *_copy_round(ne(d, 0), LA, ta, i, d, a_tile, j, balance)]
    if skew:
        code.append(Loop(qy, "j", tuple(row_skew)))
    if skew and balance and needs_scratch:  # copies that move nothing, up to the most any row makes
        code.append(Loop(b.param("copymax") - Var("nc"), "c", (
            Loop(LA, "i", (Copy(Ref("S", i * ta, ta), a_tile(i, 0)),)),
            Loop(LA, "i", (Copy(a_tile(i, 0), Ref("S", i * ta, ta)),)))))

    # ---------------- compute-shift loop: Q steps, the last without a shift ----------------
    def gemms() -> Loop:
        return Loop(qy, "j", (Loop(qx, "i", (
            Gemm(Ref("C", (j * qx + i) * tc, tc), a_tile((i + ar) % LA, j),
                 Ref("B", (((j + br) % LB) * qx + i) * tb, tb), mv, kt, nv, layout=g.order),)),))

    if phase_units:  # each PE enters the steps at its ring phase (cannon_start_delay)
        hop, unit = phase_units
        Wp = b.param("W")
        skewed = skew and balance and comm_x and g.q_y == 1
        delay = plmr_gemm.cannon_start_delay(Wp, Hp, hop, unit, skewtot if skewed else 0,
                                             (Wp - 2) * hop, X, Y, Y * qy <= Q - Y * qy, select, skewed)
        code.append(Loop(as_expr(delay), "i", (Fill(Ref("C", 0, 1), 0.0),)))
    step: list = []
    ids = []
    if comm_x:
        step.append(Recv(P("ax_recv"), Ref("A", ((LA - 1 + ar) % LA) * qy * ta, qy * ta), id="ra"))
        ids.append("ra")
    if comm_y:
        step.append(Recv(P("by_recv"), Ref("B", ((LB - 1 + br) % LB) * qx * tb, qx * tb), id="rb"))
        ids.append("rb")
    if comm_x:
        step.append(Send(P("ax_send"), Ref("A", ((qx - 1 + ar) % LA) * qy * ta, qy * ta), id="sa"))
        ids.append("sa")
    if comm_y:
        step.append(Send(P("by_send"), Ref("B", ((qy - 1 + br) % LB) * qx * tb, qx * tb), id="sb"))
        ids.append("sb")
    step.append(gemms())
    if ids:
        step.append(Wait(tuple(ids)))
    step += [Assign("ar", ar - 1), Assign("br", br - 1)]
    code += [Loop(Q - 1, "t", tuple(step)), gemms()]
    b.function("main", code)
    return b
