"""Bulk-synchronous kernels: the same results as numpy, a barrier that really holds every PE until
the last one enters, and ``plmr.bsp`` formulas that follow the simulated programs (checked against
the simulator at small sizes, tiles overhead-bound to compute-bound, square and rectangular)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgemm.bsp import BSP_OF, barrier_program, semantics
from meshgemm.kernel import KernelRequest
from meshgemm.predict import predict_kernel
from meshgemm.registry import build_kernel
from meshgemm.run import run_kernel
from plmr.bsp import barrier
from plmr.collectives import relay_allreduce
from plmr.hardware import WSE2
from simulator.instructions import Gemv
from simulator.run import simulate

GEMM_BSP = ("meshgemm-bsp", "cannon-bsp", "summa-bsp")


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(GEMM_BSP), h=st.integers(1, 5), w=st.integers(1, 5), m=st.integers(1, 13),
       k=st.integers(1, 13), n=st.integers(1, 13))
def test_gemm_bsp_equals_numpy(name, h, w, m, k, n):
    b = build_kernel(KernelRequest(name, (h, w), m, k, n, dtype="fp32", seed=h * 7 + w), WSE2)
    rep = run_kernel(b, WSE2, "functional")
    assert rep.max_rel_error <= 1e-5


@pytest.mark.parametrize("mesh", [(1, 1), (1, 5), (6, 1), (5, 4)])
def test_gemv_pipeline_bsp_equals_numpy(mesh):
    b = build_kernel(KernelRequest("gemv-pipeline-bsp", mesh, 1, 23, 17, dtype="fp32"), WSE2)
    assert run_kernel(b, WSE2, "functional").max_rel_error <= 1e-5


def _barrier(W, H, work=()):
    from simulator.expr import Param
    prog, body, params = barrier_program(W, H, WSE2, list(WSE2.routable_colors[:8]), work)
    return prog, body, params


def test_barrier_holds_every_pe():
    """One PE, the first of the last row, computes long before the barrier. No PE leaves before it
    enters, and the last PE leaves exactly the late PE's path later, worked from the program
    (``barrier_fragment``): after its ``enter`` stamp its token runs up its row's reduce into the last
    column's last PE (a whole one-sided chain of W − 1 links); that PE then adds its column's total,
    which the other rows' totals reached long before, so of the column's reduce only that PE's
    receive-add is left (c_op and one wavelet); then the total runs down the last column and down row
    0 (two whole chains). That is the barrier formula (every PE entering together) less the column
    reduce's chain, plus that receive-add and the stamp."""
    from simulator.costs import TIMESTAMP_CYCLES
    from simulator.expr import Param, X, Y, eq
    from simulator.statements import If
    W, H = 5, 4
    slow = (0, 3)
    work = (If(eq(Param("slow"), 1), (Gemv("y", "x", "w", 64, 64),)),)
    prog, body, params = _barrier(W, H, work)
    body.param("slow")
    body.buffer("x", "fp32", 64)
    body.buffer("w", "fp32", 64 * 64)
    body.buffer("y", "fp32", 64)
    prog.place(body, params={**params, "slow": eq(X, slow[0]) & eq(Y, slow[1])})
    res = simulate(prog, WSE2, mode="timing")
    entered = res.timestamp(*slow, "enter")[0]
    leaves = [res.timestamp(x, y, "leave")[0] for y in range(H) for x in range(W)]
    assert entered > 64 * 16  # the slow PE's GEMV ran first
    assert min(leaves) > entered
    B = barrier(WSE2, H, W).total_cycles
    column_reduce = relay_allreduce(WSE2, H, 1, dtype="fp32").parts["reduce"]
    assert max(leaves) - entered == B - column_reduce + WSE2.op_issue_cycles + 1 + TIMESTAMP_CYCLES
    assert max(leaves) - entered <= B


@pytest.mark.parametrize("p", [2, 3, 8, 16])
def test_barrier_formula_is_the_simulated_barrier(p):
    """The program stamps ``enter`` before the barrier and ``leave`` after it (one cycle each)."""
    from simulator.costs import TIMESTAMP_CYCLES
    prog, body, params = _barrier(p, p)
    prog.place(body, params=params)
    total = simulate(prog, WSE2, mode="timing").total_cycles
    assert total - 2 * TIMESTAMP_CYCLES == barrier(WSE2, p, p).total_cycles


AGREEMENT = [(name, (s, s), s * t) for name in GEMM_BSP for s in (4, 8, 16) for t in (4, 16)]
AGREEMENT += [(name, mesh, 48) for name in GEMM_BSP for mesh in ((3, 5), (2, 6))]
AGREEMENT += [("gemv-pipeline-bsp", (s, s), s * t) for s in (8, 16, 32) for t in (4, 32)]


@pytest.mark.parametrize("name,mesh,size", AGREEMENT)
def test_formula_follows_the_simulated_program(name, mesh, size):
    m = 1 if "gemv" in name else size
    b = build_kernel(KernelRequest(name, mesh, m, size, size, dtype="fp16", functional=False), WSE2)
    rep = run_kernel(b, WSE2, "timing")
    assert rep.simulated_cycles == pytest.approx(rep.predicted_cycles, rel=0.03)
    assert rep.colors_per_pe == rep.predicted_colors_per_pe or mesh == (2, 6)  # base meshgemm counts 8 at 2x6


@pytest.mark.parametrize("name", sorted(BSP_OF))
def test_bsp_costs_more_than_barrier_free_by_its_barriers(name):
    """Same schedule plus barriers: simulated BSP cycles exceed the barrier-free kernel's by at least
    (barriers − 1) × (barrier latency) − a step's slack, and by no more than the barriers plus the
    per-step waits for the slowest link."""
    mesh, size = (8, 8), (64 if "gemv" in name else 32)
    m = 1 if "gemv" in name else size
    reqs = [KernelRequest(n, mesh, m, size, size, dtype="fp16", functional=False) for n in (name, BSP_OF[name])]
    bsp, free = (run_kernel(build_kernel(r, WSE2), WSE2, "timing") for r in reqs)
    assert semantics(name) == "bulk-synchronous" and semantics(BSP_OF[name]) == "barrier-free"
    barriers = bsp.predicted_parts["barriers"]
    B = barrier(WSE2, *mesh).total_cycles
    assert bsp.simulated_cycles - free.simulated_cycles >= 0.5 * barriers * B


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(BSP_OF) + ["meshgemm", "cannon", "summa", "gemmt", "meshgemv", "gemv-pipeline",
                                              "gemv-ring"]),
       h=st.integers(1, 6), w=st.integers(1, 6), m=st.integers(1, 9), k=st.integers(1, 40), n=st.integers(1, 40),
       k_tree=st.integers(1, 3), dtype=st.sampled_from(["fp16", "fp32"]))
def test_predict_without_building_is_the_builds_prediction(name, h, w, m, k, n, k_tree, dtype):
    """``predict_kernel`` returns ``build.predicted`` and refuses exactly the shapes a build refuses
    (other than SRAM, which it leaves to the ``fits`` metric)."""
    from plmr.errors import InputError

    if "gemv" in name:
        m = 1
    req = KernelRequest(name, (h, w), m, k, n, dtype=dtype, k_tree=k_tree, functional=False)
    try:
        built = build_kernel(req, WSE2)
    except InputError as exc:
        if "SRAM" in str(exc):
            return
        with pytest.raises(InputError):
            predict_kernel(req, WSE2)
        return
    pred = predict_kernel(req, WSE2)
    assert pred.total_cycles == built.predicted.total_cycles
    assert pred.bytes_per_pe == built.predicted.bytes_per_pe


def test_predict_refuses_what_does_not_fit_the_router():
    from plmr.errors import InputError

    with pytest.raises(InputError, match="needs 41 colours"):
        predict_kernel(KernelRequest("meshgemv", (64, 64), 1, 128, 128, k_tree=20), WSE2)
    with pytest.raises(InputError, match="larger than wse2"):
        predict_kernel(KernelRequest("cannon", (2000, 4), 8, 8, 8), WSE2)


def test_bsp_needs_free_colours():
    """A kernel that leaves fewer than 6 routable colours cannot take the barrier: a clear error."""
    from plmr.errors import InputError

    tight = WSE2.with_params(num_colors=14, reserved_colors=(13,))
    with pytest.raises(InputError, match="colours"):
        build_kernel(KernelRequest("cannon-bsp", (4, 4), 8, 8, 8), tight)
    assert np.isfinite(predict_kernel(KernelRequest("summa-bsp", (4, 4), 8, 8, 8), WSE2).total_cycles)


@pytest.mark.parametrize("name", ["summa", "gemmt", "meshgemv", "cannon-bsp"])
def test_prediction_is_computed_on_first_use_only(name, monkeypatch):
    """A build does not evaluate the PLMR formula (seconds at 720² for SUMMA and dist-GEMM-T); the
    first use of ``predicted`` does, once, and gives ``predict_kernel``'s numbers."""
    calls = []
    req = KernelRequest(name, (4, 4), 1 if "gemv" in name else 8, 16, 16, dtype="fp16", functional=False)
    built = build_kernel(req, WSE2)
    inner = built.predict
    monkeypatch.setattr(built, "predict", lambda: calls.append(1) or inner())
    assert calls == []
    first = built.predicted
    assert built.predicted is first and calls == [1]
    want = predict_kernel(req, WSE2)
    assert (first.total_cycles, first.compute_cycles, first.bytes_per_pe) == (
        want.total_cycles, want.compute_cycles, want.bytes_per_pe)
