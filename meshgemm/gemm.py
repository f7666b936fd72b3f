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
  Rows already in place do nothing (per-row round counts, §11).
* **B** (weights) is **pre-skewed on the host**: virtual PE (u, v) starts with B(λ((u+v) mod Q), v).
* **C** accumulates in place in the natural ``M_y N_x`` layout: tile (j, i) of PE (px, py) is
  C(row block py·q_y + j, column block px·q_x + i) — padded rows/columns are dropped by ``gather``.

Buffers per PE: ``A`` = q_x+1 slot columns of q_y tiles (one spare slot: the receive double buffer),
``B`` = q_y+1 slot rows of q_x tiles, ``C`` = q_y·q_x tiles. Virtual shifts inside a PE are pointer
renames; only the boundary slot column (q_y A tiles, one message of m·k) crosses to the x-ring
neighbour and the boundary slot row (k·n) to the y-ring neighbour, async, overlapping the q_x·q_y
local ``Gemm``s of the step; the final (useless) shift is skipped.

P = 1 on an axis: no communication on it (pure renames). P = 2: a 1-hop exchange on 2 colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import zip_longest

import numpy as np

from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest, round_to_dtype
from meshgemm.layout import (Ring, flat, interleaved_ring, pad2, plain_ring, route_line, tile_of,
                             unflat)
from plmr import gemm as plmr_gemm
from plmr.hardware import HardwareSpec
from simulator.instructions import Copy, Fill, Gemm, Recv, Ref, Send
from simulator.statements import Wait
from simulator.program import MeshProgram


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

    def a_ref(self, slot: int, j: int) -> Ref:
        return Ref("A", (slot * self.q_y + j) * self.ta, self.ta)

    def a_col(self, slot: int) -> Ref:
        return Ref("A", slot * self.q_y * self.ta, self.q_y * self.ta)

    def b_ref(self, slot: int, i: int) -> Ref:
        return Ref("B", (slot * self.q_x + i) * self.tb, self.tb)

    def b_row(self, slot: int) -> Ref:
        return Ref("B", slot * self.q_x * self.tb, self.q_x * self.tb)

    def c_ref(self, j: int, i: int) -> Ref:
        return Ref("C", (j * self.q_x + i) * self.tc, self.tc)


def build_meshgemm(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """MeshGEMM on interleaved rings (see the module docstring)."""
    return build_cannon_family(req, spec, "meshgemm")


def build_cannon_family(req: KernelRequest, spec: HardwareSpec, kind: str) -> KernelBuild:
    """The shared Cannon schedule; ``kind`` = ``"meshgemm"`` (interleaved rings, links <= 2 hops)
    or ``"cannon"`` (plain rings with the P-1 hop wrap-around link)."""
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
    cmap = ColourMap(spec, n_slots, kind)
    cx = lambda s: cmap[s]  # noqa: E731
    cy = lambda s: cmap[sx + s]  # noqa: E731
    crev = (lambda s: cmap[sx + sy + s]) if rev_x_own else cx

    prog = MeshProgram(P_x, P_y, spec)
    # ---- buffers (SRAM checked per PE by add_buffer) ----
    prog.add_buffer(range(P_x), range(P_y), "A", dt, (g.q_x + 1) * g.q_y * g.ta)
    prog.add_buffer(range(P_x), range(P_y), "B", dt, (g.q_y + 1) * g.q_x * g.tb)
    prog.add_buffer(range(P_x), range(P_y), "C", dt, g.q_y * g.q_x * g.tc)

    # ---- routes ----
    route_line(prog, rx.fwd, "x", cx)
    route_line(prog, ry.fwd, "y", cy)
    if rev_x_own:
        route_line(prog, rx.rev, "x", crev)

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

        def a_init(px, py):
            buf = np.zeros((g.q_x + 1) * g.q_y * g.ta)
            for i in range(g.q_x):
                for j in range(g.q_y):
                    t = tile_of(Ap, py * g.q_y + j, px * g.q_x + i, g.m_v, g.k)
                    o = (i * g.q_y + j) * g.ta
                    buf[o:o + g.ta] = flat(t, a_tile_order)
            return buf

        def b_init(px, py):
            buf = np.zeros((g.q_y + 1) * g.q_x * g.tb)
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

    # ---- code: one instruction list per (x colour class, row) ----
    groups: dict[tuple, list[int]] = {}
    for px in range(P_x):
        key = (rx.send_slot(px), rx.recv_slot(px), rx.send_slot(px, True), rx.recv_slot(px, True))
        groups.setdefault(key, []).append(px)
    for py in range(P_y):
        for key, xs in groups.items():
            prog.add(xs, py, *_pe_code(g, rx, ry, xs[0], py, cx, cy, crev))

    predicted = (plmr_gemm.meshgemm if kind == "meshgemm" else plmr_gemm.cannon)(
        spec, P_y, P_x, M, K, N, dt)

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
        "A": f"M_y K_x natural, {g.q_y}x{g.q_x} tiles of {g.m_v}x{g.k} per PE, skewed on device "
             f"(shorter way round) over {ring} x-rings",
        "B": f"K_y N_x pre-skewed on host (Cannon in ring coordinates), {g.q_y}x{g.q_x} tiles of "
             f"{g.k}x{g.n_v}",
        "C": f"M_y N_x natural, {g.q_y}x{g.q_x} tiles of {g.m_v}x{g.n_v} ({g.order}-major), "
             f"padded to {Q * g.m_v}x{Q * g.n_v}",
        "mesh": f"{P_y}x{P_x} physical, virtual {Q}x{Q} (q_y={g.q_y}, q_x={g.q_x}); {Q} steps; "
                f"{n_slots} colours",
    }
    return KernelBuild(req, prog, predicted, gather, inputs, expected, layout)


def skew_plan(Q: int, u: int) -> tuple[str, int]:
    """Direction and rounds of virtual row u's device skew: reverse by u, or forward by Q − u when
    that is shorter (ties go reverse)."""
    return ("rev", u) if u <= Q - u else ("fwd", Q - u)


def _pe_code(g: _Geom, rx: Ring, ry: Ring, px: int, py: int, cx, cy, crev) -> list:
    """Straight-line program of PE (px, py)."""
    code: list = []
    q_x, q_y, Q = g.q_x, g.q_y, g.Q
    # ---------------- skew of A along the x-ring (per hosted virtual row) ----------------
    amap = [list(range(q_x)) for _ in range(q_y)]  # slot of virtual tile i, per row j
    afree = [q_x] * q_y
    plans = [skew_plan(Q, ry.pos[py] * q_y + j) for j in range(q_y)]
    rounds = max(r for _, r in plans)
    comm_x = g.P_x > 1
    if comm_x:
        s_out, s_in = cx(rx.send_slot(px)), cx(rx.recv_slot(px))
        r_out, r_in = crev(rx.send_slot(px, True)), crev(rx.recv_slot(px, True))
    for r in range(1, rounds + 1):
        rev = [j for j, (d, n) in enumerate(plans) if d == "rev" and n >= r]
        fwd = [j for j, (d, n) in enumerate(plans) if d == "fwd" and n >= r]
        if not comm_x:
            for j in rev:
                amap[j] = amap[j][1:] + amap[j][:1]
            for j in fwd:
                amap[j] = amap[j][-1:] + amap[j][:-1]
            continue
        if g.P_x >= 3:
            waves = [tuple(w) for w in zip_longest(rev, fwd)]
        else:  # 2-ring: both directions share the two colours, so they take turns
            waves = [(j, None) for j in rev] + [(None, j) for j in fwd]
        for jr, jf in waves:
            ids = []
            if jr is not None:
                code += [Recv(r_in, g.a_ref(afree[jr], jr), id="rr"),
                         Send(r_out, g.a_ref(amap[jr][0], jr), id="rs")]
                ids += ["rr", "rs"]
            if jf is not None:
                code += [Recv(s_in, g.a_ref(afree[jf], jf), id="fr"),
                         Send(s_out, g.a_ref(amap[jf][-1], jf), id="fs")]
                ids += ["fr", "fs"]
            code.append(Wait(tuple(ids)))
            if jr is not None:
                old = amap[jr][0]
                amap[jr] = amap[jr][1:] + [afree[jr]]
                afree[jr] = old
            if jf is not None:
                old = amap[jf][-1]
                amap[jf] = [afree[jf]] + amap[jf][:-1]
                afree[jf] = old
    # Rows rotated by different amounts: move tiles so every row uses row 0's slot map (the compute
    # shifts send one whole slot column). Only for q_y > 1 (non-square meshes).
    canon, cfree = amap[0], afree[0]
    for j in range(1, q_y):
        cur, free = amap[j], afree[j]
        while cur != canon:
            target = {canon[i]: i for i in range(q_x)}
            if free in target:  # fill the free slot with the tile that belongs there
                i = target[free]
            else:  # free slot is canon's free slot: break a cycle
                i = next(i for i in range(q_x) if cur[i] != canon[i])
            code.append(Copy(g.a_ref(free, j), g.a_ref(cur[i], j)))
            cur[i], free = free, cur[i]
        amap[j], afree[j] = cur, free
        assert free == cfree
    amap, afree = amap[0], afree[0]

    # ---------------- compute-shift loop ----------------
    bmap, bfree = list(range(q_y)), q_y
    comm_y = g.P_y > 1
    if comm_y:
        y_out, y_in = cy(ry.send_slot(py)), cy(ry.recv_slot(py))
    code.append(Fill("C", 0.0))
    for t in range(Q):
        ids = []
        shift = t < Q - 1
        if shift and comm_x:
            code.append(Recv(s_in, g.a_col(afree), id="ra"))
            ids.append("ra")
        if shift and comm_y:
            code.append(Recv(y_in, g.b_row(bfree), id="rb"))
            ids.append("rb")
        if shift and comm_x:
            code.append(Send(s_out, g.a_col(amap[-1]), id="sa"))
            ids.append("sa")
        if shift and comm_y:
            code.append(Send(y_out, g.b_row(bmap[-1]), id="sb"))
            ids.append("sb")
        for j in range(q_y):
            for i in range(q_x):
                code.append(Gemm(g.c_ref(j, i), g.a_ref(amap[i], j), g.b_ref(bmap[j], i),
                                 g.m_v, g.k, g.n_v, layout=g.order))
        if ids:
            code.append(Wait(tuple(ids)))
        if shift:
            if comm_x:
                amap, afree = [afree] + amap[:-1], amap[-1]
            else:
                amap = amap[-1:] + amap[:-1]
            if comm_y:
                bmap, bfree = [bfree] + bmap[:-1], bmap[-1]
            else:
                bmap = bmap[-1:] + bmap[:-1]
    return code
