"""simulator.lower's route records against a brute-force walk over every (PE, colour), written from the
definitions in the module docstring (a route per routed colour, sorted by PE then colour; a channel per
accepted port, in port order; ``down[r, p]``: the channel of the neighbour's route that accepts from
this side, −1 if none, −2 off the mesh); and configuration 0, what ``SetRoute(colour, 0)`` restores,
is the layout's routes also in a program without run-time alternatives."""

from __future__ import annotations

import numpy as np
import pytest

from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from plmr.hardware import WSE2, WSE3
from simulator import Body, Fill, If, MeshProgram, Port, Recv, Send, SetRoute, X, Y, eq, simulate
from simulator.expr import select
from simulator.lower import lower_program

NSEW = (Port.NORTH, Port.SOUTH, Port.EAST, Port.WEST)


def brute_force_routes(prog: MeshProgram, C: int) -> dict:
    W, H = prog.width, prog.height
    tables = [(prog._rx, prog._tx)] + [prog._alt[k] for k in sorted(prog._alt)]
    routes = []  # (pe, colour, rx mask over every configuration)
    for pe in range(W * H):
        for c in range(C):
            rx = 0
            for rx_t, _ in tables:
                rx |= int(rx_t[pe, c])
            if rx:
                routes.append((pe, c, rx))
    index = {(pe, c): r for r, (pe, c, _) in enumerate(routes)}
    chan0, ports = [], []
    for pe, c, rx in routes:
        chan0.append(len(ports))
        ports += [p for p in range(5) if rx >> p & 1]

    def channel(r: int, port: int) -> int:
        rx = routes[r][2]
        return chan0[r] + [p for p in range(5) if rx >> p & 1].index(port) if rx >> port & 1 else -1

    def down(tx_t) -> list[int]:
        out = []
        for pe, c, _ in routes:
            x, y = pe % W, pe // W
            for p in NSEW:
                if not int(tx_t[pe, c]) >> p & 1:
                    out.append(-1)
                    continue
                dx, dy = p.delta
                nx, ny = x + dx, y + dy
                if not (0 <= nx < W and 0 <= ny < H):
                    out.append(-2)
                    continue
                r2 = index.get((ny * W + nx, c))
                out.append(-1 if r2 is None else channel(r2, p.opposite))
        return out

    n = len(routes)
    return {
        "r_pe": [pe for pe, _, _ in routes], "r_col": [c for _, c, _ in routes],
        "r_rx": [rx for _, _, rx in routes], "r_tx": [int(prog._tx[pe, c]) for pe, c, _ in routes],
        "r_chan0": chan0 + [len(ports)], "ch_port": ports,
        "ch_route": [r for r in range(n) for _ in range(chan0[r + 1] - chan0[r] if r + 1 < n else len(ports) - chan0[r])],
        "r_rampch": [channel(r, Port.RAMP) for r in range(n)],
        "r_down": down(prog._tx),
        "pe_r0": [sum(1 for pe2, _, _ in routes if pe2 < pe) for pe in range(W * H + 1)],
        "route_of": [index.get((pe, c), -1) for pe in range(W * H) for c in range(C)],
        # per route, per configuration: tx mask and downstream channels (configuration 0: the layout's)
        "r_cfg_tx": [int(t[pe, c]) for pe, c, _ in routes for _, t in tables],
        "r_cfg_down": list(np.array([down(t) for _, t in tables]).reshape(len(tables), n, 4)
                           .transpose(1, 0, 2).ravel()),
    }


def _mask(cond, a: Port, b: Port):
    return select(cond, 1 << int(a), 1 << int(b))


def _switch_program(spec, w: int, h: int) -> MeshProgram:
    """Colour 5 west-going in the layout, east-going in configuration 1; colour 7 only in configuration 2."""
    prog = MeshProgram(w, h, spec)
    prog.route_rule(None, None, 5, rx=_mask(eq(X, 1), Port.RAMP, Port.EAST),
                    tx=_mask(eq(X, 1), Port.WEST, Port.RAMP), when=X <= 1)
    prog.route_rule(None, None, 5, rx=_mask(eq(X, 1), Port.RAMP, Port.WEST),
                    tx=_mask(eq(X, 1), Port.EAST, Port.RAMP), when=(X >= 1) & (X <= 2), config=1)
    prog.route_rule(None, None, 7, rx=_mask(eq(Y, 0), Port.RAMP, Port.NORTH),
                    tx=_mask(eq(Y, h - 1), Port.RAMP, Port.SOUTH), config=2)
    b = Body("switch")
    role = b.param("role")
    b.buffer("a", "fp32", 4)
    b.function("main", [If(eq(role, 1), [Send(5, "a"), Fill("a", 9.0), SetRoute(5, 1), Send(5, "a")],
                           [If(eq(role, 0), [Recv(5, "a")], [SetRoute(5, 1), Recv(5, "a")])])])
    prog.place(b, x=range(3), y=range(h), params={"role": X})
    return prog


def _kernel(name: str, mesh: tuple[int, int]) -> MeshProgram:
    m = 1 if "gemv" in name else 40
    return build_kernel(KernelRequest(name, mesh, m, 40, 40, dtype="fp16", functional=False), WSE2).program


CASES = [("kernel", n, mesh) for n in ("meshgemm", "summa", "gemmt", "meshgemv", "gemv-ring", "cannon-bsp")
         for mesh in ((4, 4), (3, 5))] + [("switch", s, (w, h)) for s in (WSE2, WSE3) for w, h in ((3, 1), (4, 3))]


@pytest.mark.parametrize("kind,what,size", CASES, ids=[f"{k}-{getattr(w, 'name', w)}-{s}" for k, w, s in CASES])
def test_route_records_equal_a_brute_force_walk(kind, what, size):
    if kind == "kernel":
        prog, spec = _kernel(what, size), WSE2
    else:
        prog, spec = _switch_program(what, *size), what
    cp = lower_program(prog, spec, functional=False)
    want = brute_force_routes(prog, spec.num_colors)
    for name, values in want.items():
        np.testing.assert_array_equal(getattr(cp, name), np.asarray(values, dtype=np.int64), err_msg=name)
    assert cp.n_configs == 1 + len(prog._alt)


def test_set_route_to_configuration_zero_keeps_the_layouts_route():
    """``SetRoute(colour, 0)`` restores the layout's route: in a program with no alternatives, that
    is the route it already has, and the stream still arrives (it used to clear the route)."""
    prog = MeshProgram(2, 1, WSE2)
    prog.set_route(0, 0, 5, {Port.RAMP}, {Port.EAST})
    prog.set_route(1, 0, 5, {Port.WEST}, {Port.RAMP})
    b = Body("b")
    role = b.param("role")
    b.buffer("a", "fp32", 4)
    b.function("main", [If(eq(role, 0), [SetRoute(5, 0), Send(5, "a")], [Recv(5, "a")])])
    prog.place(b, params={"role": X})
    prog.set_data(0, 0, "a", [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(simulate(prog, WSE2).buffer(1, 0, "a"), [1, 2, 3, 4])
