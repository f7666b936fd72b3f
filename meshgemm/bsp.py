"""Bulk-synchronous variants of the kernels: the barrier-free kernel's exact program with a global
fabric barrier after every step (docs/BASELINES.md).

The barrier-free kernels (``gemm.py``, ``gemm_baselines.py``, ``gemv.py``) join per PE, as CSL
tasks do, so no PE waits for a transfer it does not take part in. A straightforward CSL
implementation of a step-by-step algorithm instead synchronises the whole mesh after each step;
these builders add exactly that and nothing else, so the two semantics can be compared on the same
schedule:

* ``cannon-bsp`` and ``meshgemm-bsp``: a barrier after each skew round and after each shifting
  step (the last step, which does not shift, is followed by none);
* ``summa-bsp``: a barrier after the first panel's fetch and after each step;
* ``gemv-pipeline-bsp``: a barrier after the local GEMV and after the chain reduce (before the
  broadcast back).

**The barrier** is real fabric traffic on the nearest-neighbour chains: every PE holds a one-element
fp32 token, reduced up a chain into the last PE of its row, the rows' totals up the last column into
its last PE, relayed back down that column and then down every row (``barrier_fragment``). No PE
leaves it before every PE has entered it. It takes 4 colours per axis with more than one PE on top
of the kernel's (SUMMA's own chains serve it). A PE receives on at most 3 of them (the last column's:
its row's reduce and both column chains; every other PE: its row's two), and no parameter set uses
both the row relay's receive and a column one, so the barrier needs 3 input queues: with Cannon's
and MeshGEMM's 3 ring receives, 6 — within WSE-3's usable input queues (2-7) as well as WSE-2's.
(Rows then columns, each a full allreduce, has the same critical path and exit times, but a PE
receives on 4 barrier colours: 7 queues with the rings'; a chain into the middle with a multicast
back is shorter, but its root receives on 3 colours per axis.)
Its cost model is ``plmr.bsp``.

Each barrier-free builder takes ``bsp=True`` and includes ``barrier_fragment``'s statements at its
step boundaries (after a step's join), so both semantics are one body each and share every other
statement. In MeshGEMM's skew a PE whose hosted rows rotate fewer rounds than the most any PE needs
meets the remaining barriers right after its last round.
"""

from __future__ import annotations

import dataclasses
from functools import partial

from meshgemm.gemm import build_cannon_family
from meshgemm.gemm_baselines import build_summa
from meshgemm.gemv import build_gemv_pipeline
from meshgemm.kernel import KernelBuild, KernelRequest
from plmr import bsp as plmr_bsp
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator.program import MeshProgram

BARRIER_BUF = "barrier_token"
SEMANTICS = ("barrier-free", "bulk-synchronous")

#: name -> (barrier-free kernel it synchronises); the registry maps each name to its builder
BSP_OF = {"meshgemm-bsp": "meshgemm", "cannon-bsp": "cannon", "summa-bsp": "summa",
          "gemv-pipeline-bsp": "gemv-pipeline"}


def semantics(kernel: str) -> str:
    """``"bulk-synchronous"`` for the kernels of this module, ``"barrier-free"`` for the others."""
    return "bulk-synchronous" if kernel in BSP_OF else "barrier-free"


def barrier_program(width: int, height: int, spec: HardwareSpec, colours: list[int],
                    work: tuple = ()) -> MeshProgram:
    """A program whose PEs run ``work`` (statements, e.g. a slow op placed by a parameter), stamp
    ``enter``, meet one barrier and stamp ``leave`` (``colours``: 3 for the rows, 3 for the columns)."""
    from simulator.body import Body
    from simulator.statements import Timestamp

    prog = MeshProgram(width, height, spec, name="barrier")
    body = Body("barrier")
    code, params = barrier_fragment(prog, body, colours)
    body.function("main", tuple(work) + (Timestamp("enter"),) + code + (Timestamp("leave"),))
    return prog, body, params


def barrier_fragment(prog: MeshProgram, body, colours: list[int] | None) -> tuple[tuple, dict]:
    """The global barrier as statements a body includes, with the parameters its PEs take: a
    one-token reduce up every row's nearest-neighbour chain into its last PE (``RecvAddSend``
    stages), then up the last column's, a relay of the total back down the last column, then down
    every row to its first PE (``RelayStore`` stages); with one row or one column, that line's
    reduce and relay. The chains are the directed chains of ``line_rules`` (2 colours per direction per axis);
    ``colours`` gives their 8 IDs (x up, x down, y up, y down), or None when the kernel already routes
    them under the same parameter names (SUMMA). Declares the token buffer and the parameters on
    ``body``."""
    from meshgemm import line_rules as L
    from meshgemm.gemm_baselines import _chain_params
    from simulator.expr import Param, X, Y, eq
    from simulator.instructions import Recv, RecvAdd, RecvAddSend, RelayStore, Send
    from simulator.statements import If

    body.buffer(BARRIER_BUF, "fp32", 1, export=False)
    params: dict = {}
    axes = [axis for axis, on in (("x", prog.width > 1), ("y", prog.height > 1)) if on]
    for axis in axes:
        k = 0 if axis == "x" else 1
        if colours is not None:
            cols = colours[4 * k:4 * k + 4]
            # routed on every line (their colour IDs are the kernel's either way), as SUMMA's chains
            L.route_slots(prog, axis, L.directed_chain_roles(X if axis == "x" else Y,
                                                             Param("W" if axis == "x" else "H")),
                          lambda s, c=cols: c[s])
            cp = _chain_params(list(cols), 0, axis, Param("W" if axis == "x" else "H"))
            for name in cp:
                if name not in body.params:
                    body.param(name, "int" if name.endswith(("first", "last")) else "colour")
            params.update(cp)
    t = BARRIER_BUF

    def reduce_up(a: str) -> tuple:
        P = lambda n: Param(f"{a}{n}")  # noqa: E731
        return (If(eq(P("first"), 1), (Send(P("up_out"), t),),
                   (If(eq(P("last"), 1), (RecvAdd(P("up_in"), t),), (RecvAddSend(P("up_in"), P("up_out"), t),)),)),)

    def relay_down(a: str) -> tuple:
        P = lambda n: Param(f"{a}{n}")  # noqa: E731
        return (If(eq(P("last"), 1), (Send(P("dn_out"), t),),
                   (If(eq(P("first"), 1), (Recv(P("dn_in"), t),), (RelayStore(P("dn_in"), P("dn_out"), t),)),)),)

    code: tuple = ()
    if axes == ["x", "y"]:
        # rows into the last column, the last column into its last PE, and back the same way
        code = reduce_up("x") + (If(eq(Param("xlast"), 1), reduce_up("y") + relay_down("y")),) + relay_down("x")
    elif axes:
        code = reduce_up(axes[0]) + relay_down(axes[0])
    return code, params


def barrier_colours(spec: HardwareSpec, kernel_colours: int, kernel: str, width: int, height: int) -> int:
    """Colour slots a kernel plus its barrier takes (the barrier's come after the kernel's)."""
    need = plmr_bsp.BARRIER_COLOURS_PER_AXIS * 2
    if kernel_colours + need > len(spec.routable_colors):
        raise InputError(f"kernel {kernel} needs {kernel_colours} + {need} colours per PE (the kernel and its "
                         f"barrier); {spec.name} has {len(spec.routable_colors)} routable colours")
    return kernel_colours + need


# ------------------------------------------------------------------------------------------------
# Builders: the barrier-free builders with barriers at their step boundaries
# ------------------------------------------------------------------------------------------------

def _finish(req: KernelRequest, build: KernelBuild, predict) -> KernelBuild:
    layout = dict(build.layout)
    layout["semantics"] = ("bulk-synchronous: a global fabric barrier (one-token chain allreduce along "
                           "rows, then columns) after every step")
    return dataclasses.replace(build, request=req, predict=predict, layout=layout)


def build_meshgemm_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    base = build_cannon_family(dataclasses.replace(req, name="meshgemm"), spec, "meshgemm", bsp=True)
    return _finish(req, base, partial(plmr_bsp.meshgemm_bsp, spec, P_y, P_x, req.m, req.k, req.n, req.dtype))


def build_cannon_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    base = build_cannon_family(dataclasses.replace(req, name="cannon"), spec, "cannon", bsp=True)
    return _finish(req, base, partial(plmr_bsp.cannon_bsp, spec, P_y, P_x, req.m, req.k, req.n, req.dtype))


def build_summa_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    base = build_summa(dataclasses.replace(req, name="summa"), spec, bsp=True)
    return _finish(req, base, partial(plmr_bsp.summa_bsp, spec, P_y, P_x, req.m, req.k, req.n, req.dtype))


def build_gemv_pipeline_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    base = build_gemv_pipeline(dataclasses.replace(req, name="gemv-pipeline"), spec, bsp=True)
    return _finish(req, base, partial(plmr_bsp.gemv_pipeline_bsp, spec, P_y, P_x, req.k, req.n, dtype=req.dtype))
