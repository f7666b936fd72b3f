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

**The barrier** is real fabric traffic built from the collectives the kernels already use: every
PE holds a one-element fp32 token; a chain allreduce (chains from both ends into the middle PE,
then a multicast back; ``collectives.emit_chain_allreduce``) runs along every row, then one along
every column. No PE leaves it before every PE has entered it. It takes 3 colours per axis with
more than one PE, on top of the kernel's, and 8 bytes per PE. Its cost model is ``plmr.bsp``.

The program is rebuilt from the barrier-free build (buffers, data, routes, per-PE code) with the
barrier's routes and buffers added and its instructions inserted at the step boundaries, which
``_boundaries_*`` locate from the schedule's own structure (its ``Wait`` joins).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Callable

from meshgemm import collectives as C
from meshgemm.gemm import build_meshgemm, skew_plan
from meshgemm.gemm_baselines import build_cannon, build_summa
from meshgemm.gemv import build_gemv_pipeline
from meshgemm.kernel import KernelBuild, KernelRequest
from meshgemm.layout import interleaved_ring, plain_ring
from plmr import bsp as plmr_bsp
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator.instructions import Instruction, Timestamp, Wait
from simulator.program import MeshProgram

BARRIER_BUF = "barrier_token"
BARRIER_SCRATCH = "barrier_in"
SEMANTICS = ("barrier-free", "bulk-synchronous")

#: name -> (barrier-free kernel it synchronises); the registry maps each name to its builder
BSP_OF = {"meshgemm-bsp": "meshgemm", "cannon-bsp": "cannon", "summa-bsp": "summa",
          "gemv-pipeline-bsp": "gemv-pipeline"}


def semantics(kernel: str) -> str:
    """``"bulk-synchronous"`` for the kernels of this module, ``"barrier-free"`` for the others."""
    return "bulk-synchronous" if kernel in BSP_OF else "barrier-free"


def barrier_program(width: int, height: int, spec: HardwareSpec, colours: list[int]) -> MeshProgram:
    """A program holding one barrier only (see the module docstring); ``colours``: 3 for the rows,
    then 3 for the columns."""
    prog = MeshProgram(width, height, spec)
    X, Y = range(width), range(height)
    prog.add_buffer(X, Y, BARRIER_BUF, "fp32", 1)
    prog.add_buffer(X, Y, BARRIER_SCRATCH, "fp32", 1)
    if width > 1:
        C.emit_chain_allreduce(prog, "x", BARRIER_BUF, BARRIER_SCRATCH, colours[0:3])
    if height > 1:
        C.emit_chain_allreduce(prog, "y", BARRIER_BUF, BARRIER_SCRATCH, colours[3:6])
    return prog


def with_barriers(base: MeshProgram, spec: HardwareSpec, kernel: str,
                  boundaries: Callable[[int, int, list[Instruction]], list[int]]) -> MeshProgram:
    """``base`` with a barrier inserted into every PE's code before each position that
    ``boundaries(x, y, code)`` returns (every PE must return as many). A 1×1 program is returned
    unchanged."""
    W, H = base.width, base.height
    codes = [[base.instructions(x, y) for x in range(W)] for y in range(H)]
    cuts = [[boundaries(x, y, codes[y][x]) for x in range(W)] for y in range(H)]
    counts = {len(c) for row in cuts for c in row}
    if len(counts) > 1:
        raise AssertionError(f"{kernel}: PEs disagree on the number of barriers: {sorted(counts)}")
    if W * H == 1 or counts == {0}:
        return base
    used: set[int] = set()
    for y in range(H):
        for x in range(W):
            used.update(base.colours_used(x, y))
    free = [c for c in spec.routable_colors if c not in used]
    need = plmr_bsp.BARRIER_COLOURS_PER_AXIS * (int(W > 1) + int(H > 1))
    if len(free) < need:
        raise InputError(f"kernel {kernel} needs {len(used)} + {need} colours per PE (the kernel and its "
                         f"barrier); {spec.name} has {len(spec.routable_colors)} routable colours")
    cols = free[:3] + free[3:6] if W > 1 else [None] * 3 + free[:3]
    bar = barrier_program(W, H, spec, cols)
    prog = MeshProgram(W, H, spec)
    # buffers, row by row, PEs with the same layout together
    for y in range(H):
        groups: dict[tuple, list[int]] = defaultdict(list)
        for x in range(W):
            groups[base.buffers(x, y)].append(x)
        for bufs, xs in groups.items():
            for b in bufs:
                prog.add_buffer(xs, y, b.name, b.dtype, b.length)
            prog.add_buffer(xs, y, BARRIER_BUF, "fp32", 1)
            prog.add_buffer(xs, y, BARRIER_SCRATCH, "fp32", 1)
    # initial data (the only MeshProgram internals read here: there is no public getter yet)
    for (pe, name), values in base._init.items():  # noqa: SLF001
        prog.set_data(pe % W, pe // W, name, values)
    # routes: the kernel's, then the barrier's
    for src, colours in ((base, sorted(used)), (bar, [c for c in cols if c is not None])):
        for c in colours:
            for y in range(H):
                groups = defaultdict(list)
                for x in range(W):
                    r = src.route(x, y, c)
                    if r is not None:
                        groups[(r.rx, r.tx)].append(x)
                for (rx, tx), xs in groups.items():
                    prog.set_route(xs, y, c, rx, tx)
    # code with the barrier inserted at every boundary
    for y in range(H):
        groups = defaultdict(list)
        for x in range(W):
            code, b = codes[y][x], bar.instructions(x, y)
            out: list[Instruction] = []
            last = 0
            for cut in cuts[y][x]:
                out += code[last:cut] + b
                last = cut
            out += code[last:]
            groups[tuple(map(id, out))].append((x, out))
        for members in groups.values():
            prog.add([x for x, _ in members], y, *members[0][1])
    return prog


# ------------------------------------------------------------------------------------------------
# Step boundaries, read from each schedule's structure
# ------------------------------------------------------------------------------------------------

_CANNON_STEP_IDS = {"ra", "rb", "sa", "sb"}


def _boundaries_cannon_family(req: KernelRequest, kind: str):
    """After each of the ⌊Q/2⌋ skew rounds (a PE whose hosted rows rotate fewer rounds meets the
    remaining barriers right after its last round) and after each shifting step's join."""
    P_y, P_x = req.mesh
    Q = math.lcm(P_y, P_x)
    q_y = Q // P_y
    ry = (interleaved_ring if kind == "meshgemm" else plain_ring)(P_y)
    rounds = max((skew_plan(Q, u)[1] for u in range(Q)), default=0) if P_x > 1 else 0

    def cuts(px: int, py: int, code: list[Instruction]) -> list[int]:
        plans = [skew_plan(Q, ry.pos[py] * q_y + j) for j in range(q_y)]
        waits = [i for i, ins in enumerate(code) if isinstance(ins, Wait)]
        out, used, at = [], 0, 0
        for r in range(1, rounds + 1):
            rev = sum(1 for d, n in plans if d == "rev" and n >= r)
            fwd = sum(1 for d, n in plans if d == "fwd" and n >= r)
            waves = max(rev, fwd) if P_x >= 3 else rev + fwd
            if waves:
                used += waves
                at = waits[used - 1] + 1
            out.append(at)
        for i in waits[used:]:
            if not set(code[i].ids) <= _CANNON_STEP_IDS:
                raise AssertionError(f"{kind}: unexpected join {code[i]} in the step loop")
            out.append(i + 1)
        return out

    return cuts


def _boundaries_after_every_join(px: int, py: int, code: list[Instruction]) -> list[int]:
    """SUMMA: every join ends a step (the first panel's fetch, then each prefetching step)."""
    return [i + 1 for i, ins in enumerate(code) if isinstance(ins, Wait)]


def _boundaries_gemv_pipeline(px: int, py: int, code: list[Instruction]) -> list[int]:
    """After the local GEMV (its ``compute_end`` stamp) and before the broadcast (the last op)."""
    if len(code) <= 2:  # one PE on the reduction axis: no collective
        return []
    stamp = next(i for i, ins in enumerate(code) if isinstance(ins, Timestamp))
    if len(code) != stamp + 3:
        raise AssertionError(f"gemv-pipeline: expected one reduce op and one broadcast op, got {code[stamp + 1:]}")
    return [stamp + 1, len(code) - 1]


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------

def _build(req: KernelRequest, spec: HardwareSpec, build_base, boundaries, predicted) -> KernelBuild:
    base = build_base(dataclasses.replace(req, name=BSP_OF[req.name]), spec)
    prog = with_barriers(base.program, spec, req.name, boundaries)
    layout = dict(base.layout)
    layout["semantics"] = ("bulk-synchronous: a global fabric barrier (one-token chain allreduce along "
                           "rows, then columns) after every step")
    return KernelBuild(request=req, program=prog, predicted=predicted, gather=base.gather,
                       inputs=base.inputs, expected=base.expected, layout=layout)


def build_meshgemm_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    return _build(req, spec, build_meshgemm, _boundaries_cannon_family(req, "meshgemm"),
                  plmr_bsp.meshgemm_bsp(spec, P_y, P_x, req.m, req.k, req.n, req.dtype))


def build_cannon_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    return _build(req, spec, build_cannon, _boundaries_cannon_family(req, "cannon"),
                  plmr_bsp.cannon_bsp(spec, P_y, P_x, req.m, req.k, req.n, req.dtype))


def build_summa_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    return _build(req, spec, build_summa, _boundaries_after_every_join,
                  plmr_bsp.summa_bsp(spec, P_y, P_x, req.m, req.k, req.n, req.dtype))


def build_gemv_pipeline_bsp(req: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    P_y, P_x = req.mesh
    return _build(req, spec, build_gemv_pipeline, _boundaries_gemv_pipeline,
                  plmr_bsp.gemv_pipeline_bsp(spec, P_y, P_x, req.k, req.n, dtype=req.dtype))
