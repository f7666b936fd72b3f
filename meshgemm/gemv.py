"""Distributed GEMV y[1×n] = x[1×k]·W[k×n] as mesh programs (waferllm-method.md §6).

Layout (``axis="y"``, the default; P_y × P_x = ``req.mesh``): PE (px, py) holds the x segment
``x[Kb(py)]`` (Y-dist: segment py replicated along row py), the natural W block
``W[Kb(py), Nb(px)]`` row-major, and accumulates ``y[Nb(px)]``. Kb/Nb are balanced contiguous
blocks (the first D mod P one longer; no padding, nothing rotates). After the local ``Gemv`` (m FMACs
of length n, the authors' form) the partials are allreduced along y, so every PE of column px ends
with ``y[Nb(px)]``: the result is X-dist, the layout the next GEMV's x needs.

``axis="x"`` is the transposed-block-position variant: PE (px, py) holds ``x[Kb(px)]`` and
``W[Kb(px), Nb(py)]``, reduces along x, and the result is Y-dist.

Builders (``KernelRequest`` → ``KernelBuild``; registered in ``meshgemm.registry``):

* ``build_meshgemv``: K-tree allreduce, any K ≥ 1 (``req.k_tree``), level-1 group size
  ``req.group_size``; express chains for levels ≥ 2; multicast of the result from the global root.
* ``build_gemv_pipeline``: chain into the end PE, broadcast back (the Cerebras GEMV example).
* ``build_gemv_ring``: reduce-scatter + allgather on the interleaved ring.

Every PE stamps ``Timestamp("compute_end")`` after its local GEMV; ``meshgemm.run`` uses it to split
compute from communication.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from plmr import gemv as plmr_gemv
from plmr.breakdown import CostBreakdown
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.ktree import build_ktree
from plmr.primitives import balanced_split
from simulator.body import Body
from simulator.expr import Expr, ExprLike, Param, X, Y, as_expr, max_
from simulator.instructions import Gemv, Ref
from simulator.program import MeshProgram
from simulator.statements import Timestamp

from meshgemm import collectives as C
from meshgemm.kernel import ColourMap, KernelBuild, KernelRequest, round_to_dtype

COMPUTE_END = "compute_end"


def _offsets(sizes: list[int]) -> list[int]:
    return [sum(sizes[:i]) for i in range(len(sizes))]


def _check(req: KernelRequest, spec: HardwareSpec, axis: str) -> tuple[int, int, int, int]:
    """(P_y, P_x, n_ax, n_other) after validating the request."""
    if req.m != 1:
        raise InputError(f"kernel {req.name}: a GEMV has m = 1 (y[1×n] = x[1×k]·W[k×n]), got --m {req.m}")
    if axis not in C.AXES:
        raise InputError(f"axis must be 'x' or 'y', got {axis!r}")
    p_y, p_x = req.mesh
    if p_x > spec.mesh_width or p_y > spec.mesh_height:
        raise InputError(f"mesh {p_y}x{p_x} (rows x columns) is larger than {spec.name}'s kernel "
                         f"rectangle {spec.mesh_height}x{spec.mesh_width}")
    n_ax, n_other = (p_y, p_x) if axis == "y" else (p_x, p_y)
    if req.k < n_ax:
        raise InputError(f"kernel {req.name}: k = {req.k} is smaller than the {n_ax} PEs of the reduction "
                         f"axis; every PE needs at least one row of W")
    if req.n < n_other:
        raise InputError(f"kernel {req.name}: n = {req.n} is smaller than the {n_other} PEs across the "
                         f"reduction axis; every PE needs at least one column of W")
    return p_y, p_x, n_ax, n_other


def balanced_block(total: ExprLike, parts: ExprLike, i: ExprLike) -> Expr:
    """Length of block i of a balanced split (the first ``total mod parts`` one longer)."""
    total, parts, i = as_expr(total), as_expr(parts), as_expr(i)
    return total // parts + (i < total % parts)


def _build(req: KernelRequest, spec: HardwareSpec, axis: str, scheme: str,
           collective: Callable[[MeshProgram, ColourMap], C.Collective], slots: int,
           predict: Callable[[], CostBreakdown], pad_to: int = 0, with_broadcast: bool = True,
           bsp: bool = False, own_queues: bool = False) -> KernelBuild:
    """One body on every PE: a local GEMV (m FMACs of length n) then the collective along ``axis``.
    ``own_queues``: a queue per colour (``Body.own_queues``), the same queue plan at every mesh size."""
    p_y, p_x, n_ax, n_other = _check(req, spec, axis)
    kb = balanced_split(req.k, n_ax)  # reduction-axis blocks of x / rows of W
    nb = balanced_split(req.n, n_other)  # output blocks
    ko, no = _offsets(kb), _offsets(nb)
    if bsp:
        from meshgemm.bsp import barrier_colours
        colours = ColourMap(spec, barrier_colours(spec, slots, req.name + "-bsp", p_x, p_y), req.name)
    else:
        colours = ColourMap(spec, slots, req.name)
    prog = MeshProgram(p_x, p_y, spec, name=req.name)
    dt = req.dtype
    q, line = (Y, X) if axis == "y" else (X, Y)
    Kd, Nd = prog.param("K", req.k), prog.param("N", req.n)
    n_ax_p, n_other_p = C.axis_size(axis), C.axis_size("x" if axis == "y" else "y")
    coll = collective(prog, colours)

    b = Body(f"gemv_{axis}", doc=f"{req.name}: local GEMV, then {scheme} along {axis}", own_queues=own_queues)
    m, n, ylen = b.param("m"), b.param("n"), b.param("ylen")
    b.buffer("w", dt, m * n)
    b.buffer("x", dt, m)
    b.buffer("y", dt, ylen)
    b.buffer("r", dt, ylen, export=False)
    coll.declare(b)
    code = [Gemv(Ref("y", 0, n), "x", "w", m=m, n=n), Timestamp(COMPUTE_END), *coll.code]
    bar_params: dict = {}
    if bsp and n_ax > 1:  # one PE per line: the local GEMV is the only (and last) step, no barrier
        from meshgemm.bsp import barrier_fragment
        bar, bar_params = barrier_fragment(prog, b, [colours[slots + i] for i in range(8)])
        # after the local GEMV, and after the reduce (before the broadcast, the collective's last statement)
        code = code[:2] + list(bar) + code[2:-1] + list(bar) + code[-1:]
    b.function("main", code)
    n_blk = balanced_block(Nd, n_other_p, line)
    ylen_v = n_blk if pad_to <= 0 else max_(n_blk, prog.param("ypad", pad_to))
    prog.place(b, params={"m": balanced_block(Kd, n_ax_p, q), "n": n_blk, "ylen": ylen_v, **coll.values(),
                          **bar_params})

    x_in = w_in = None
    if req.functional:
        rng = req.rng()
        x_in = round_to_dtype(rng.uniform(-1, 1, size=(1, req.k)), dt)
        w_in = round_to_dtype(rng.uniform(-1, 1, size=(req.k, req.n)), dt)

        def pos_line(px: int, py: int) -> tuple[int, int]:
            return (py, px) if axis == "y" else (px, py)

        def w_blk(px, py):
            p, l = pos_line(px, py)
            return w_in[ko[p]:ko[p] + kb[p], no[l]:no[l] + nb[l]].ravel()

        def x_blk(px, py):
            p, _ = pos_line(px, py)
            return x_in[0, ko[p]:ko[p] + kb[p]]

        all_x, all_y = range(p_x), range(p_y)
        prog.set_data(all_x, all_y, "w", w_blk)
        prog.set_data(all_x, all_y, "x", x_blk)

    root = coll.root_position(prog) if coll.root is not None else 0

    def gather(res) -> dict[str, np.ndarray]:
        parts = []
        for ln in range(n_other):
            x, y = C_sel(axis, root, ln)
            parts.append(np.asarray(res.buffer(x, y, "y"))[:nb[ln]])
        return {"y": np.concatenate(parts)[None, :]}

    inputs, expected = {}, {}
    if req.functional:
        inputs = {"x": x_in, "W": w_in}
        expected = {"y": (x_in.astype(np.float64) @ w_in.astype(np.float64))}
    dist = "X-dist" if axis == "y" else "Y-dist"
    layout = {
        "x": f"{'Y' if axis == 'y' else 'X'}-dist: segment of the reduction block replicated across it",
        "W": "natural 2D blocks" if axis == "y" else "2D blocks, transposed block position",
        "y": (f"{dist}: block {'px on every PE of column px' if axis == 'y' else 'py on every PE of row py'}"
              if with_broadcast else f"on the root {'row' if axis == 'y' else 'column'} {root} only"),
        "scheme": scheme,
        "root": str(root),
    }
    return KernelBuild(request=req, program=prog, predict=predict, gather=gather, inputs=inputs,
                       expected=expected, layout=layout)


def C_sel(axis: str, pos: int, line: int) -> tuple[int, int]:
    """(x, y) of position ``pos`` on line ``line`` of ``axis``."""
    return (line, pos) if axis == "y" else (pos, line)


def _ktree_counts(req: KernelRequest, n_ax: int) -> tuple[int, ...] | None:
    return C.ktree_group_counts(n_ax, req.k_tree, req.group_size)


def build_meshgemv(req: KernelRequest, spec: HardwareSpec, axis: str = "y",
                   with_broadcast: bool = True) -> KernelBuild:
    """MeshGEMV: local GEMV + K-tree allreduce along ``axis`` (K = ``req.k_tree``)."""
    p_y, p_x, n_ax, _ = _check(req, spec, axis)
    k = req.k_tree
    counts = _ktree_counts(req, n_ax)
    build_ktree(max(n_ax, 1), k, counts)  # validates the grouping (InputError)
    slots = C.colours_needed("ktree", n_ax, k, with_broadcast)
    predict = partial(plmr_gemv.meshgemv, spec, p_y, p_x, req.k, req.n, k=k, group_counts=counts, axis=axis,
                      dtype=req.dtype, with_broadcast=with_broadcast)

    def coll(prog, colours):
        return C.ktree_allreduce(prog, axis, "y", "r", colours.__getitem__, k=k, group_counts=counts,
                                 broadcast_result=with_broadcast)

    # Which K-tree colours a PE receives on together depends on the mesh (the interior PEs of a
    # level-1 chain appear only past a few groups), so queues shared by that rule would make the PE
    # program follow the mesh. For K <= 2 the 2K + 1 colours fit one queue each on every target
    # (WSE-2 has 7 usable input queues, WSE-3 6), at no cost in cycles; for K >= 3 the colours
    # share queues where the mesh allows, and the PE program may differ between sizes.
    return _build(req, spec, axis, f"K-tree allreduce, K={k}", coll, slots, predict,
                  with_broadcast=with_broadcast, own_queues=k <= 2)


def build_gemv_pipeline(req: KernelRequest, spec: HardwareSpec, axis: str = "y", bsp: bool = False) -> KernelBuild:
    """GEMV with the pipeline allreduce: chain into the end PE, then broadcast back. ``bsp``: a
    global barrier after the local GEMV and after the reduce."""
    p_y, p_x, n_ax, _ = _check(req, spec, axis)
    predict = partial(plmr_gemv.gemv_pipeline, spec, p_y, p_x, req.k, req.n, axis=axis, dtype=req.dtype)

    def coll(prog, colours):
        return C.pipeline_allreduce(prog, axis, "y", "r", colours.__getitem__)

    return _build(req, spec, axis, "pipeline allreduce", coll, C.colours_needed("pipeline", n_ax),
                  predict, bsp=bsp)


def build_gemv_ring(req: KernelRequest, spec: HardwareSpec, axis: str = "y") -> KernelBuild:
    """GEMV with a ring allreduce (reduce-scatter + allgather on the interleaved ring). The partial
    sum buffer is padded with zeros to at least one element per ring PE."""
    p_y, p_x, n_ax, _ = _check(req, spec, axis)
    predict = partial(plmr_gemv.gemv_ring, spec, p_y, p_x, req.k, req.n, axis=axis, dtype=req.dtype)

    def coll(prog, colours):
        return C.ring_allreduce(prog, axis, "y", Param("ylen"), colours.__getitem__)

    return _build(req, spec, axis, "ring allreduce", coll, C.colours_needed("ring", n_ax), predict,
                  pad_to=n_ax if n_ax > 1 else 0)
