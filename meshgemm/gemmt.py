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

import numpy as np

from meshgemm.gemm import choose_layout, random_operands
from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest
from meshgemm.layout import (directed_chain_transfers, flat, interleaved_ring, pad2, route_line,
                             tile_of, unflat)
from plmr import gemm as plmr_gemm
from plmr.hardware import HardwareSpec
from simulator.instructions import Fill, Gemm, Recv, RecvAdd, RecvAddSend, Ref, Send
from simulator.statements import Wait
from simulator.program import MeshProgram


def build_gemmt(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """dist-GEMM-T, C = A·Bᵀ with A (m×k) and B (n×k); see the module docstring."""
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    m, nb, k = -(-M // P_y), -(-N // P_y), -(-K // P_x)
    order = choose_layout(spec, m, k, nb, dt)
    ry = interleaved_ring(P_y)
    up, down = directed_chain_transfers(P_x)
    nx = 4 if P_x > 1 else 0
    cmap = ColourMap(spec, nx + ry.slots, "gemmt")
    X, Y = range(P_x), range(P_y)
    prog = MeshProgram(P_x, P_y, spec)
    ta, tb, tc = m * k, k * nb, m * nb
    blocks = {px: [j for j in range(P_y) if j % P_x == px] for px in X}
    prog.add_buffer(X, Y, "A", dt, ta)
    prog.add_buffer(X, Y, "B", dt, (2 if P_y > 1 else 1) * tb)
    if P_x > 1:
        prog.add_buffer(X, Y, "Pt", dt, tc)
    for px in X:
        if blocks[px]:
            prog.add_buffer(px, Y, "C", dt, len(blocks[px]) * tc)
    if P_x > 1:
        route_line(prog, up + down, "x", lambda s: cmap[s])
    if P_y > 1:
        route_line(prog, ry.fwd, "y", lambda s: cmap[nx + s])

    inputs, expected = {}, {}
    if req.functional:
        a, b = random_operands(req, (M, K), (N, K))
        inputs = {"A": a, "B": b}
        expected = {"C": a.astype(np.float64) @ b.astype(np.float64).T}
        Ap, Bp = pad2(a, P_y * m, P_x * k), pad2(b, P_y * nb, P_x * k)
        prog.set_data(X, Y, "A", lambda px, py: flat(tile_of(Ap, py, px, m, k), order))
        prog.set_data(X, Y, "B", lambda px, py: np.concatenate(
            [flat(tile_of(Bp, py, px, nb, k).T, "row")] + ([np.zeros(tb)] if P_y > 1 else [])))

    for py in Y:
        y_out = cmap[nx + ry.send_slot(py)] if P_y > 1 else None
        y_in = cmap[nx + ry.recv_slot(py)] if P_y > 1 else None
        for px in X:
            code = []
            cur = 0
            for t in range(P_y):
                j = ry.order[(ry.pos[py] - t) % P_y]
                root = j % P_x
                ids = []
                if P_y > 1 and t < P_y - 1:
                    code += [Recv(y_in, Ref("B", (1 - cur) * tb, tb), id="rb"),
                             Send(y_out, Ref("B", cur * tb, tb), id="sb")]
                    ids += ["rb", "sb"]
                bref = Ref("B", cur * tb, tb)
                if px == root:
                    cref = Ref("C", blocks[px].index(j) * tc, tc)
                    code.append(Gemm(cref, "A", bref, m, k, nb, layout=order))
                    if px > 0:
                        code.append(RecvAdd(cmap[(px - 1) % 2], cref, id="cw"))
                        ids.append("cw")
                    if px < P_x - 1:
                        code.append(RecvAdd(cmap[2 + (px + 1) % 2], cref, id="ce"))
                        ids.append("ce")
                else:
                    code += [Fill("Pt", 0.0), Gemm("Pt", "A", bref, m, k, nb, layout=order)]
                    if px < root:
                        code.append(Send(cmap[px % 2], "Pt", id="c") if px == 0 else
                                    RecvAddSend(cmap[(px - 1) % 2], cmap[px % 2], "Pt", id="c"))
                    else:
                        code.append(Send(cmap[2 + px % 2], "Pt", id="c") if px == P_x - 1 else
                                    RecvAddSend(cmap[2 + (px + 1) % 2], cmap[2 + px % 2], "Pt", id="c"))
                    ids.append("c")
                if ids:
                    code.append(Wait(tuple(ids)))
                if P_y > 1 and t < P_y - 1:
                    cur = 1 - cur
            prog.add(px, py, *code)

    predicted = plmr_gemm.gemmt(spec, P_y, P_x, M, K, N, dt)

    def gather(res):
        Cp = np.zeros((P_y * m, P_y * nb))
        for py in Y:
            for px in X:
                if not blocks[px]:
                    continue
                buf = res.buffer(px, py, "C").astype(np.float64)
                for idx, j in enumerate(blocks[px]):
                    Cp[py * m:(py + 1) * m, j * nb:(j + 1) * nb] = unflat(
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
    return KernelBuild(req, prog, predicted, gather, inputs, expected, layout)
