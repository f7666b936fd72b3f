"""Small programs written as code bodies, each with its host plan: the patterns kernels are built
from (a neighbour shift, a chain reduction, a row broadcast, loops over run-time slices, joins of async
ops, data tasks, repeated launches with a host scalar, a local GEMM). They are the CSL backend's test
programs and short examples of the program model; ``EXAMPLES`` maps a name to its builder.

Every builder takes ``width``, ``height``, ``dtype`` ("fp32"/"fp16") and ``hardware`` (a target name)
and returns ``(MeshProgram, HostPlan)``; its keyword arguments are JSON values, so a bundle's manifest
can name the builder for the stub runtime.
"""

from __future__ import annotations

from plmr.errors import InputError
from plmr.hardware import get_spec
from simulator import statements as S
from simulator.body import Body
from simulator.expr import Load, Param, Var, X, Y, eq, select
from simulator.instructions import (
    Activate, Add, Copy, Fill, Gemm, Recv, RecvAdd, RecvAddSend, Ref, Relay, Scale, Send,
)
from simulator.program import MeshProgram, Port

from csl_templates.host_plan import E, HostCopy, HostPlan, HostTensor, Launch

RAMP, NORTH, SOUTH, EAST, WEST = (1 << int(p) for p in (Port.RAMP, Port.NORTH, Port.SOUTH, Port.EAST, Port.WEST))
#: normwise tolerances of a result that went through a few roundings in the buffer's dtype
TOL = {"fp32": 1e-5, "fp16": 5e-3}


def _program(name: str, width: int, height: int, hardware: str) -> MeshProgram:
    if width < 2:
        raise InputError(f"example {name} needs at least 2 columns, got {width}")
    return MeshProgram(width, height, get_spec(hardware), name=name)


def _east_chain_routes(prog: MeshProgram, Wp, c0: int) -> None:
    """Two colours alternating by column parity: column x sends east on c0 + x % 2 and receives from
    the west on c0 + (x + 1) % 2 (hardware-and-csl.md §6.11, pattern 2)."""
    for par in (0, 1):
        sends = eq(X % 2, par)
        prog.route_rule(None, None, c0 + par,
                        select(sends, select(X < Wp - 1, RAMP, 0), select(X > 0, WEST, 0)),
                        select(sends, select(X < Wp - 1, EAST, 0), select(X > 0, RAMP, 0)))


def _chain_body(name: str, dtype: str) -> Body:
    b = Body(name, doc="one stage of a west-to-east line of PEs")
    b.param("first")
    b.param("last")
    b.param("n")
    b.param("cs", "colour")
    b.param("cr", "colour")
    return b


def _place_chain(prog: MeshProgram, b: Body, Wp, n: int, c0: int) -> None:
    prog.place(b, params={"first": eq(X, 0), "last": eq(X, Wp - 1), "n": n,
                          "cs": c0 + X % 2, "cr": c0 + (X + 1) % 2})


def _grid_tensor(name: str, height: int, width: int, n: int, dtype: str) -> HostTensor:
    return HostTensor(name, (height, width, n), dtype)


def shift_east(width: int = 5, height: int = 3, n: int = 4, dtype: str = "fp32", hardware: str = "wse2"):
    """Every PE but the last sends its ``a`` to its east neighbour, which receives it into ``r``."""
    prog = _program("shift_east", width, height, hardware)
    Wp = prog.param("W", width)
    b = _chain_body("shift", dtype)
    b.buffer("a", dtype, _n(b))
    b.buffer("r", dtype, _n(b))
    b.function("main", [S.If(~b_p("last"), [Send(b_p("cs"), "a")]),
                        S.If(~b_p("first"), [Recv(b_p("cr"), "r")])])
    _place_chain(prog, b, Wp, n, 3)
    _east_chain_routes(prog, Wp, 3)
    plan = HostPlan(
        inputs=[_grid_tensor("A", height, width, n, dtype)],
        outputs=[HostTensor("R", (height, width - 1, n), dtype)],
        copies_in=[HostCopy("A", "a", (Y * Wp + X) * n + E)],
        copies_out=[HostCopy("R", "r", (Y * (Wp - 1) + X - 1) * n + E, x0=1)],
        reference={"R": "A[:, :-1, :]"}, tolerance={"R": 0.0})
    return prog, plan


def b_p(name: str) -> Param:
    return Param(name)


def _n(b: Body):
    return b_p("n")


def chain_reduce(width: int = 5, height: int = 3, n: int = 6, dtype: str = "fp32", hardware: str = "wse2"):
    """Row sums by a pipelined chain (§6.11 illustration B): the first column sends its part, every
    middle column adds its own and forwards (``RecvAddSend``), the last adds into its part."""
    prog = _program("chain_reduce", width, height, hardware)
    Wp = prog.param("W", width)
    b = _chain_body("chain", dtype)
    b.buffer("part", dtype, _n(b))
    first, last = b_p("first"), b_p("last")
    b.function("main", [
        S.If(first, [Send(b_p("cs"), "part", id="s"), S.Wait("s")],
             [S.If(last, [RecvAdd(b_p("cr"), "part", id="r"), S.Wait("r")],
                   [RecvAddSend(b_p("cr"), b_p("cs"), "part", id="m"), S.Wait("m")])]),
    ])
    _place_chain(prog, b, Wp, n, 5)
    _east_chain_routes(prog, Wp, 5)
    plan = HostPlan(
        inputs=[_grid_tensor("P", height, width, n, dtype)],
        outputs=[HostTensor("S", (height, n), dtype)],
        copies_in=[HostCopy("P", "part", (Y * Wp + X) * n + E)],
        copies_out=[HostCopy("S", "part", Y * n + E, x0=width - 1, w=1)],
        reference={"S": "P.sum(axis=1)"}, tolerance={"S": TOL[dtype] * width})
    return prog, plan


def broadcast_row(width: int = 5, height: int = 3, n: int = 4, dtype: str = "fp32", hardware: str = "wse2"):
    """Column 0 multicasts its ``a`` along its row on one colour. Column 1 runs no code (its router
    passes the colour on); columns 2.. take a copy and pass it on (rx WEST, tx RAMP and EAST), the last
    only takes it. One body placed twice, on column 0 and on columns 2.."""
    if width < 3:
        raise InputError(f"example broadcast_row needs at least 3 columns, got {width}")
    prog = _program("broadcast_row", width, height, hardware)
    Wp = prog.param("W", width)
    b = Body("bcast", doc="root (column 0) or receiver of a row broadcast")
    root = b.param("root")
    n_ = b.param("n")
    c = b.param("c", "colour")
    b.buffer("a", dtype, n_)
    b.function("main", [S.If(root, [Send(c, "a")], [Recv(c, "a")])])
    prog.place(b, x=0, params={"root": 1, "n": n, "c": 7})
    prog.place(b, x=range(2, width), params={"root": 0, "n": n, "c": 7})
    prog.route_rule(None, None, 7, select(eq(X, 0), RAMP, WEST),
                    select(eq(X, 0), EAST, select(eq(X, 1), EAST, select(X < Wp - 1, RAMP + EAST, RAMP))))
    plan = HostPlan(
        inputs=[HostTensor("A", (height, n), dtype)],
        outputs=[HostTensor("B", (height, width - 2, n), dtype)],
        copies_in=[HostCopy("A", "a", Y * n + E, w=1)],
        copies_out=[HostCopy("B", "a", (Y * (Wp - 2) + X - 2) * n + E, x0=2)],
        reference={"B": f"np.repeat(A[:, None, :], {width - 2}, axis=1)"},
        tolerance={"B": 0.0})
    return prog, plan


def loop_offsets(width: int = 3, height: int = 2, chunk: int = 4, chunks: int = 5, used: int = 3,
                 dtype: str = "fp32", hardware: str = "wse2"):
    """Sums the first ``k`` chunks of ``d`` into ``acc`` with a loop over run-time slices (``k`` a launch
    argument), then scales by (x + 1) chosen by a run-time ``Switch`` on the column parity."""
    prog = _program("loop_offsets", width, height, hardware)
    b = Body("loops", doc="chunked accumulation over run-time slices")
    c = b.param("c")
    nk = b.param("nk")
    b.buffer("d", dtype, c * nk)
    b.buffer("acc", dtype, c)
    b.buffer("head", dtype, 1)
    k = b.var("k", "i16")
    b.var("i", "i16")
    b.var("f", "f32")
    b.function("main", [
        Fill("acc", 0.0),
        S.Loop(k, "i", [Add("acc", "acc", Ref("d", Var("i") * c, c))]),
        S.Switch(X % 2, [(0, [S.Assign("f", 1.0)])], [S.Assign("f", 2.0)]),
        Scale("acc", "acc", Var("f")),
        S.Store("head", 0, Load("acc", 0)),
    ], args=("k",))
    prog.place(b, params={"c": chunk, "nk": chunks})
    acc = f"D[:, :, :{used}, :].sum(axis=2) * (1 + np.arange({width}) % 2)[None, :, None]"
    plan = HostPlan(
        inputs=[HostTensor("D", (height, width, chunks, chunk), dtype)],
        outputs=[HostTensor("ACC", (height, width, chunk), dtype), HostTensor("HEAD", (height, width), dtype)],
        copies_in=[HostCopy("D", "d", (Y * width + X) * (chunks * chunk) + E)],
        copies_out=[HostCopy("ACC", "acc", (Y * width + X) * chunk + E),
                    HostCopy("HEAD", "head", Y * width + X)],
        reference={"ACC": acc, "HEAD": f"({acc})[:, :, 0]"},
        tolerance={"ACC": TOL[dtype] * used, "HEAD": TOL[dtype] * used},
        launches=[Launch("main", (("k", used),))])
    return prog, plan


def joins(width: int = 4, height: int = 3, n: int = 5, dtype: str = "fp32", hardware: str = "wse2"):
    """Concurrent send east and receive from the west, joined by ``Wait`` (a join task), then
    ``r += a``: r = a(x - 1) + a(x) on every PE but the first."""
    prog = _program("joins", width, height, hardware)
    Wp = prog.param("W", width)
    b = _chain_body("join", dtype)
    b.buffer("a", dtype, _n(b))
    b.buffer("r", dtype, _n(b))
    first, last = b_p("first"), b_p("last")
    cs, cr = b_p("cs"), b_p("cr")
    b.function("main", [
        S.If(first, [Send(cs, "a", id="s"), S.Wait("s")],
             [S.If(last, [Recv(cr, "r", id="r"), S.Wait("r"), Add("r", "r", "a")],
                   [Send(cs, "a", id="s"), Recv(cr, "r", id="r"), S.Wait(("s", "r")), Add("r", "r", "a")])]),
    ])
    _place_chain(prog, b, Wp, n, 9)
    _east_chain_routes(prog, Wp, 9)
    plan = HostPlan(
        inputs=[_grid_tensor("A", height, width, n, dtype)],
        outputs=[HostTensor("R", (height, width - 1, n), dtype)],
        copies_in=[HostCopy("A", "a", (Y * Wp + X) * n + E)],
        copies_out=[HostCopy("R", "r", (Y * (Wp - 1) + X - 1) * n + E, x0=1)],
        reference={"R": "A[:, :-1, :] + A[:, 1:, :]"}, tolerance={"R": TOL[dtype]})
    return prog, plan


def data_tasks(width: int = 3, height: int = 2, n: int = 4, dtype: str = "fp32", hardware: str = "wse2"):
    """Column 0 (body ``source``) sends its ``a`` east. The other columns (body ``wavelets``) take the
    wavelets of their west neighbour one by one in a data task (one wavelet per activation), store each
    at the next index and finish from a local task after the n-th; all but the last also send their
    own ``a`` east."""
    if dtype != "fp32":
        raise InputError("example data_tasks moves 32-bit wavelets into an f32 task argument; use fp32")
    prog = _program("data_tasks", width, height, hardware)
    Wp = prog.param("W", width)
    src = Body("source", doc="first column: sends its buffer east")
    n_ = src.param("n")
    src.param("cs", "colour")
    src.buffer("a", dtype, n_)
    src.function("main", [Send(b_p("cs"), "a"), S.Finish()])
    b = _chain_body("wavelets", dtype)
    b.buffer("a", dtype, _n(b))
    b.buffer("r", dtype, _n(b))
    b.var("got", "i16")
    b.var("w", "f32")
    b.function("main", [S.Assign("got", 0), S.If(~b_p("last"), [Send(b_p("cs"), "a")])])
    b.task("on_wavelet", [S.Store("r", Var("got"), Var("w")), S.Assign("got", Var("got") + 1),
                          S.If(eq(Var("got"), _n(b)), [Activate("done")])],
           kind="data", colour=b_p("cr"), arg="w")
    b.task("done", [S.Finish()])
    prog.place(src, x=0, params={"n": n, "cs": 11})
    prog.place(b, x=range(1, width), params={"first": 0, "last": eq(X, Wp - 1), "n": n,
                                             "cs": 11 + X % 2, "cr": 11 + (X + 1) % 2})
    _east_chain_routes(prog, Wp, 11)
    plan = HostPlan(
        inputs=[_grid_tensor("A", height, width, n, dtype)],
        outputs=[HostTensor("R", (height, width - 1, n), dtype)],
        copies_in=[HostCopy("A", "a", (Y * Wp + X) * n + E)],
        copies_out=[HostCopy("R", "r", (Y * (Wp - 1) + X - 1) * n + E, x0=1)],
        reference={"R": "A[:, :-1, :]"}, tolerance={"R": 0.0})
    return prog, plan


def relay_row(width: int = 5, height: int = 2, n: int = 6, dtype: str = "fp32", packed: bool = False,
              hardware: str = "wse2"):
    """Column 0 sends its ``a`` east; the middle columns pass it on in software (``Relay``: receive and
    re-send each wavelet), the last column receives it. ``packed`` (fp16): two values per wavelet."""
    if packed and dtype != "fp16":
        raise InputError("example relay_row: packed needs fp16")
    prog = _program("relay_row", width, height, hardware)
    Wp = prog.param("W", width)
    b = _chain_body("relay", dtype)
    b.buffer("a", dtype, _n(b))
    first, last = b_p("first"), b_p("last")
    words = (n + 1) // 2 if packed else n
    b.function("main", [S.If(first, [Send(b_p("cs"), "a", packed=packed)],
                             [S.If(last, [Recv(b_p("cr"), "a", packed=packed)],
                                   [Relay(b_p("cr"), b_p("cs"), words)])])])
    _place_chain(prog, b, Wp, n, 15)
    _east_chain_routes(prog, Wp, 15)
    plan = HostPlan(
        inputs=[HostTensor("A", (height, n), dtype)],
        outputs=[HostTensor("B", (height, n), dtype)],
        copies_in=[HostCopy("A", "a", Y * n + E, w=1)],
        copies_out=[HostCopy("B", "a", Y * n + E, x0=width - 1, w=1)],
        reference={"B": "A"}, tolerance={"B": 0.0})
    return prog, plan


def ring_slots(width: int = 3, height: int = 3, n: int = 4, slots: int = 3, dtype: str = "fp32",
               hardware: str = "wse2"):
    """Launched once per slot with the slot index as a host scalar: writes (slot + 1) * x into slot
    ``slot`` of a ring buffer that keeps its contents across launches."""
    prog = _program("ring_slots", width, height, hardware)
    b = Body("ring", doc="ring buffer indexed by a launch argument")
    n_ = b.param("n")
    ns = b.param("ns")
    b.buffer("x", dtype, n_)
    b.buffer("ring", dtype, n_ * ns)
    b.var("slot", "i16")
    b.function("main", [Copy(Ref("ring", Var("slot") * n_, n_), "x"),
                        Scale(Ref("ring", Var("slot") * n_, n_), Ref("ring", Var("slot") * n_, n_),
                              Var("slot") + 1)], args=("slot",))
    prog.place(b, params={"n": n, "ns": slots})
    terms = ", ".join(f"X * {k + 1}" for k in range(slots))
    plan = HostPlan(
        inputs=[_grid_tensor("X", height, width, n, dtype)],
        outputs=[HostTensor("RING", (height, width, slots * n), dtype)],
        copies_in=[HostCopy("X", "x", (Y * width + X) * n + E)],
        copies_out=[HostCopy("RING", "ring", (Y * width + X) * (slots * n) + E)],
        reference={"RING": f"np.concatenate([{terms}], axis=2)"}, tolerance={"RING": TOL[dtype]},
        launches=[Launch("main", (("slot", k),)) for k in range(slots)])
    return prog, plan


def local_gemm(width: int = 2, height: int = 2, m: int = 3, k: int = 4, n: int = 5, dtype: str = "fp32",
               hardware: str = "wse2"):
    """Each PE multiplies its own A (m x k, column-major) by B (k x n, row-major) into C (column-major)
    with the ``Gemm`` macro (fp16 accumulates in fp32): loops of ``Fmac`` with scalars read from B."""
    prog = _program("local_gemm", width, height, hardware)
    b = Body("gemm", doc="local product C += A B")
    M, K, N = b.param("m"), b.param("k"), b.param("n")
    b.buffer("a", dtype, M * K)
    b.buffer("b", dtype, K * N)
    b.buffer("c", dtype, M * N)
    b.function("main", [Fill("c", 0.0),
                        Gemm("c", "a", "b", m, k, n, layout="col", acc="fp32" if dtype == "fp16" else None)])
    prog.place(b, params={"m": m, "k": k, "n": n})
    pe = Y * width + X
    plan = HostPlan(
        inputs=[HostTensor("A", (height, width, m, k), dtype), HostTensor("B", (height, width, k, n), dtype)],
        outputs=[HostTensor("C", (height, width, m, n), dtype)],
        copies_in=[HostCopy("A", "a", (pe * m + E % m) * k + E // m),
                   HostCopy("B", "b", pe * (k * n) + E)],
        copies_out=[HostCopy("C", "c", (pe * m + E % m) * n + E // m)],
        reference={"C": "A @ B"}, tolerance={"C": TOL[dtype] * k})
    return prog, plan


EXAMPLES = {
    "shift_east": shift_east,
    "chain_reduce": chain_reduce,
    "broadcast_row": broadcast_row,
    "loop_offsets": loop_offsets,
    "joins": joins,
    "data_tasks": data_tasks,
    "relay_row": relay_row,
    "ring_slots": ring_slots,
    "local_gemm": local_gemm,
}


def build_example(name: str, **kwargs):
    """``(MeshProgram, HostPlan)`` of example ``name`` (the stub runtime's entry point)."""
    try:
        return EXAMPLES[name](**kwargs)
    except KeyError:
        raise InputError(f"unknown example {name!r}; examples: {', '.join(EXAMPLES)}") from None
