"""The two GEMM baselines MeshGEMM is compared with (waferllm-method.md §4.1, §4.5).

* **Cannon** (``build_cannon``): MeshGEMM's exact schedule (``gemm.build_cannon_family``) on plain
  rings 0 → 1 → … → P−1 → 0. The 1-hop links alternate two colours; the P−1 hop wrap-around link
  uses a third and is passed through in hardware by every PE between (α per hop, no β), so each
  step's critical path is P−1 hops. Same skew/padding/virtual-mesh handling as MeshGEMM.
* **SUMMA** (``build_summa``), the paper's baseline, method §4.5 variant (i): step t broadcasts A's
  K-panel t (m×k, owned by column t // q_x) along every row and B's K-panel (k×n, owned by row
  t // q_y) along every column, by **store-and-forward software relays**: the owner sends both ways;
  every PE on the way runs a ``Relay`` (β per stage, pipelined per wavelet) onto the next colour and
  keeps a copy through a RAMP loopback of its relay output (``Recv``). Routes are static and
  root-independent (2 colours per direction per axis = 8). S = lcm(P_y, P_x) panels; panel t+1 is
  prefetched into a second buffer while panel t is multiplied (double buffering), so a step costs
  about c_task + max(T_comp, T_bc) with T_bc = T_msg(panel, P−1 hops, P−1 relays) for the
  farthest owner.
"""

from __future__ import annotations

import math

import numpy as np

from meshgemm.gemm import build_cannon_family, choose_layout, random_operands
from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest
from meshgemm.layout import directed_chain_transfers, flat, pad2, route_line, tile_of, unflat
from plmr import gemm as plmr_gemm
from plmr.hardware import HardwareSpec
from simulator.instructions import Fill, Gemm, Recv, Ref, Relay, Send
from simulator.statements import Wait
from simulator.program import MeshProgram


def build_cannon(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """Cannon on plain rings (wrap link P−1 hops); see the module docstring."""
    return build_cannon_family(req, spec, "cannon")


def _bcast_code(p: int, owner: int, n: int, own: Ref, panel: Ref, count: int, up, down, tag: str):
    """Ops of PE p for one relay broadcast along a line of n PEs from ``owner``.
    ``up(p)``/``down(p)``: hardware colour p sends on towards higher/lower positions."""
    ops, ids = [], []
    if p == owner:
        if p < n - 1:
            ops += [Send(up(p), own, id=tag + "su"), Recv(up(p), panel, id=tag + "lu")]
            ids += [tag + "su", tag + "lu"]
        if p > 0:
            ops += [Send(down(p), own, id=tag + "sd"), Recv(down(p), panel, id=tag + "ld")]
            ids += [tag + "sd", tag + "ld"]
    elif p > owner:  # stream flows up, arriving from p-1 on up(p-1)
        if p < n - 1:
            ops += [Relay(up(p - 1), up(p), count, id=tag + "r"), Recv(up(p), panel, id=tag + "l")]
            ids += [tag + "r", tag + "l"]
        else:
            ops.append(Recv(up(p - 1), panel, id=tag + "l"))
            ids.append(tag + "l")
    else:  # flows down, arriving from p+1 on down(p+1)
        if p > 0:
            ops += [Relay(down(p + 1), down(p), count, id=tag + "r"), Recv(down(p), panel, id=tag + "l")]
            ids += [tag + "r", tag + "l"]
        else:
            ops.append(Recv(down(p + 1), panel, id=tag + "l"))
            ids.append(tag + "l")
    return ops, ids


def build_summa(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    """SUMMA with store-and-forward relay broadcasts (method §4.5 variant (i)); see the module
    docstring."""
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    S = math.lcm(P_y, P_x)
    q_x, q_y = S // P_x, S // P_y
    m, k, n = -(-M // P_y), -(-K // S), -(-N // P_x)
    order = choose_layout(spec, m, k, n, dt)
    ta, tb = m * k, k * n
    up_x, down_x = directed_chain_transfers(P_x)
    up_y, down_y = directed_chain_transfers(P_y)
    nx = 4 if P_x > 1 else 0
    ny = 4 if P_y > 1 else 0
    cmap = ColourMap(spec, nx + ny, "summa")

    prog = MeshProgram(P_x, P_y, spec)
    X, Y = range(P_x), range(P_y)
    prog.add_buffer(X, Y, "A", dt, q_x * ta)
    prog.add_buffer(X, Y, "B", dt, q_y * tb)
    prog.add_buffer(X, Y, "C", dt, m * n)
    if P_x > 1:
        prog.add_buffer(X, Y, "PA", dt, 2 * ta)
        route_line(prog, up_x + down_x, "x", lambda s: cmap[s], loopback=True)
    if P_y > 1:
        prog.add_buffer(X, Y, "PB", dt, 2 * tb)
        route_line(prog, up_y + down_y, "y", lambda s: cmap[nx + s], loopback=True)

    inputs, expected = {}, {}
    if req.functional:
        a, b = random_operands(req, (M, K), (K, N))
        inputs = {"A": a, "B": b}
        expected = {"C": a.astype(np.float64) @ b.astype(np.float64)}
        Ap, Bp = pad2(a, P_y * m, S * k), pad2(b, S * k, P_x * n)
        prog.set_data(X, Y, "A", lambda px, py: np.concatenate(
            [flat(tile_of(Ap, py, px * q_x + i, m, k), order) for i in range(q_x)]))
        prog.set_data(X, Y, "B", lambda px, py: np.concatenate(
            [flat(tile_of(Bp, py * q_y + j, px, k, n), "row") for j in range(q_y)]))

    ux = lambda p: cmap[p % 2]  # noqa: E731
    dx = lambda p: cmap[2 + p % 2]  # noqa: E731
    uy = lambda p: cmap[nx + p % 2]  # noqa: E731
    dy = lambda p: cmap[nx + 2 + p % 2]  # noqa: E731

    def fetch(px, py, t):
        ops, ids = [], []
        s = t % 2
        if P_x > 1:
            o, i = divmod(t, q_x)
            o2, i2 = _bcast_code(px, o, P_x, Ref("A", i * ta, ta), Ref("PA", s * ta, ta), ta,
                                 ux, dx, "a")
            ops += o2
            ids += i2
        if P_y > 1:
            o, j = divmod(t, q_y)
            o2, i2 = _bcast_code(py, o, P_y, Ref("B", j * tb, tb), Ref("PB", s * tb, tb), tb,
                                 uy, dy, "b")
            ops += o2
            ids += i2
        return ops, ids

    def a_of(t):
        return Ref("PA", (t % 2) * ta, ta) if P_x > 1 else Ref("A", t * ta, ta)

    def b_of(t):
        return Ref("PB", (t % 2) * tb, tb) if P_y > 1 else Ref("B", t * tb, tb)

    for py in Y:
        for px in X:
            code = [Fill("C", 0.0)]
            ops, ids = fetch(px, py, 0)
            code += ops + ([Wait(tuple(ids))] if ids else [])
            for t in range(S):
                ids = []
                if t + 1 < S:
                    ops, ids = fetch(px, py, t + 1)
                    code += ops
                code.append(Gemm("C", a_of(t), b_of(t), m, k, n, layout=order))
                if ids:
                    code.append(Wait(tuple(ids)))
            prog.add(px, py, *code)

    predicted = plmr_gemm.summa(spec, P_y, P_x, M, K, N, dt)

    def gather(res):
        Cp = np.zeros((P_y * m, P_x * n))
        for py in Y:
            for px in X:
                Cp[py * m:(py + 1) * m, px * n:(px + 1) * n] = unflat(
                    res.buffer(px, py, "C").astype(np.float64), m, n, order)
        return {"C": Cp[:M, :N]}

    layout = {
        "A": f"M_y K_x natural, {q_x} K-panels of {m}x{k} per PE",
        "B": f"K_y N_x natural, {q_y} K-panels of {k}x{n} per PE",
        "C": f"M_y N_x natural, {m}x{n} ({order}-major) per PE",
        "mesh": f"{P_y}x{P_x}, {S} panel steps, relay broadcasts (variant (i)), {nx + ny} colours",
    }
    return KernelBuild(req, prog, predicted, gather, inputs, expected, layout)
