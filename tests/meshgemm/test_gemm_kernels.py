"""GEMM mesh kernels (meshgemm, cannon, summa, gemmt): numerics vs numpy, resource checks, routes,
and cost-model agreement with the simulator.

Tolerances: elementwise |C - C_ref| <= (K + P_x + 2)·u·(|A|·|B|), with u = 2^-24 (fp32) or 2^-11
(fp16: fp16 accumulation, each product and sum rounded) — the standard γ_{K+1} dot-product bound, plus
the extra rounded additions of the x chain reduce (gemmt) and the final rounding. (A bound relative to
||C_ref|| fails where the products cancel: hypothesis found a 1×16·16×1 fp32 product of -0.0048 from
terms near 1, 1.03e-5 apart relative to it and 5e-8 apart in absolute terms.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgemm.kernel import KernelRequest
from meshgemm.layout import directed_chain_transfers, interleaved_ring, plain_ring
from meshgemm.registry import build_kernel
from meshgemm.routing import check_colours
from plmr.errors import InputError
from plmr.hardware import WSE2, WSE3
from simulator.run import simulate

GEMM_KERNELS = ("meshgemm", "cannon", "summa", "gemmt")


def _run(name, mesh, m, k, n, dtype="fp32", seed=0):
    b = build_kernel(KernelRequest(name, mesh, m, k, n, dtype=dtype, seed=seed), WSE2)
    res = simulate(b.program, WSE2)
    return b, b.gather(res)["C"]


def _check(b, c, dtype):
    ref = b.expected["C"]
    assert c.shape == ref.shape
    a = np.abs(b.inputs["A"].astype(np.float64))
    bb = np.abs(b.inputs["B"].astype(np.float64))
    mag = a @ (bb.T if b.request.name == "gemmt" else bb)
    u, floor = (2.0 ** -24, 1e-12) if dtype == "fp32" else (2.0 ** -11, 1e-7)
    bound = (b.request.k + b.request.mesh[1] + 2) * u * mag + floor
    assert np.all(np.abs(c.astype(np.float64) - ref) <= bound)


# ---------------------------------------------------------------------------------------------
# Numerics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GEMM_KERNELS)
@pytest.mark.parametrize("mesh,dims", [((1, 1), (3, 4, 5)), ((2, 2), (5, 7, 3)), ((3, 3), (7, 9, 11)),
                                       ((2, 3), (7, 5, 9)), ((4, 6), (13, 17, 11)), ((3, 1), (4, 5, 6)),
                                       ((1, 3), (4, 5, 6)), ((5, 3), (9, 16, 8))])
def test_kernel_matches_numpy_fp32(name, mesh, dims):
    b, c = _run(name, mesh, *dims)
    _check(b, c, "fp32")


@pytest.mark.parametrize("name", GEMM_KERNELS)
def test_kernel_matches_numpy_fp16(name):
    b, c = _run(name, (3, 4), 13, 29, 10, dtype="fp16")
    _check(b, c, "fp16")


@pytest.mark.parametrize("name", GEMM_KERNELS)
@settings(max_examples=15, deadline=None)
@given(p_y=st.integers(1, 9), p_x=st.integers(1, 13), m=st.integers(1, 14), k=st.integers(1, 20),
       n=st.integers(1, 14), fp16=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_property(name, p_y, p_x, m, k, n, fp16, seed):
    """Any mesh 1x1..9x13 (non-square, primes) and odd dims; the lcm virtual mesh of MeshGEMM /
    Cannon / SUMMA is kept small by the dims bound."""
    import math
    if name != "gemmt" and math.lcm(p_y, p_x) > 40:
        p_x = p_y  # co-prime sides explode the lcm (method §4.4 restriction); keep runs short
    dt = "fp16" if fp16 else "fp32"
    b, c = _run(name, (p_y, p_x), m, k, n, dtype=dt, seed=seed)
    _check(b, c, dt)


def test_padding_never_changes_results():
    b, c = _run("meshgemm", (4, 4), 5, 6, 7)  # every dim padded to 8
    _check(b, c, "fp32")
    assert b.layout["C"].endswith("padded to 8x8")


# ---------------------------------------------------------------------------------------------
# Routes and resources
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", list(range(1, 41)))
def test_rings_are_single_rings_with_checked_colours(n):
    for ring in (interleaved_ring(n), plain_ring(n)):
        assert sorted(ring.order) == list(range(n))
        if n > 1:
            check_colours(list(ring.fwd), n)
            check_colours(list(ring.rev), n)
    if n >= 3:
        assert interleaved_ring(n).hops == 2 and plain_ring(n).hops == n - 1
    up, down = directed_chain_transfers(n)
    check_colours(up + down, n)


@pytest.mark.parametrize("name,colours", [("meshgemm", 9), ("cannon", 9), ("summa", 8), ("gemmt", 7)])
def test_colour_counts(name, colours):
    b = build_kernel(KernelRequest(name, (5, 5), 10, 10, 10, functional=False), WSE2)
    assert b.colors_per_pe() <= colours
    from simulator.lower import lower_program
    lower_program(b.program, WSE2, functional=False)  # routes, task IDs and queues all check out


@pytest.mark.parametrize("name", GEMM_KERNELS)
def test_colour_budget_error_names_need_and_limit(name):
    spec = WSE2.with_params(reserved_colors=tuple(range(6, 24)))
    with pytest.raises(InputError, match=r"needs \d+ colours per PE; .* has 6 routable"):
        build_kernel(KernelRequest(name, (5, 5), 10, 10, 10), spec)


@pytest.mark.parametrize("name", GEMM_KERNELS)
def test_sram_overflow_names_the_pe(name):
    with pytest.raises(InputError, match=r"PE \(0, 0\): SRAM overflow"):
        build_kernel(KernelRequest(name, (1, 1), 200, 200, 200), WSE2)


def test_build_metadata():
    b = build_kernel(KernelRequest("meshgemm", (3, 4), 12, 12, 12), WSE2)
    assert set(b.inputs) == {"A", "B"} and set(b.expected) == {"C"}
    assert {"A", "B", "C", "mesh"} <= set(b.layout)
    assert b.predicted.op == "meshgemm" and b.predicted.parts["steps"] == 12
    t = build_kernel(KernelRequest("meshgemm", (3, 4), 12, 12, 12, functional=False), WSE2)
    assert not t.inputs and not t.expected


# ---------------------------------------------------------------------------------------------
# Cost-model agreement (timing-only simulation vs PLMR), per-PE tile edge 16
# ---------------------------------------------------------------------------------------------

def _agree(name, side, tile, tol=0.10):
    size = side * tile
    b = build_kernel(KernelRequest(name, (side, side), size, size, size, dtype="fp16",
                                   functional=False), WSE2)
    sim = simulate(b.program, WSE2, mode="timing").total_cycles
    assert abs(b.predicted.total_cycles - sim) <= tol * sim, (name, side, sim, b.predicted.total_cycles)


@pytest.mark.parametrize("name", GEMM_KERNELS)
@pytest.mark.parametrize("side", [8, 16])
def test_cost_model_agreement(name, side):
    _agree(name, side, 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", GEMM_KERNELS)
def test_cost_model_agreement_32(name):
    _agree(name, 32, 16)


# ---------------------------------------------------------------------------------------------
# MeshGEMM / Cannon: the shifting steps in lockstep, and what takes them out of it
# ---------------------------------------------------------------------------------------------

def _cannon_run(kind, side, tile, spec=WSE2, a_skew="device", balance_skew=True):
    from meshgemm.gemm import build_cannon_family
    size = side * tile
    b = build_cannon_family(KernelRequest(kind, (side, side), size, size, size, dtype="fp16", functional=False),
                            spec, kind, a_skew=a_skew, balance_skew=balance_skew)
    sim = simulate(b.program, spec, mode="timing").total_cycles
    return sim, b.predicted.total_cycles


@pytest.mark.parametrize("kind", ["meshgemm", "cannon"])
@pytest.mark.parametrize("mesh,dims", [((1, 1), (3, 4, 5)), ((3, 3), (7, 9, 11)), ((2, 3), (7, 5, 9)),
                                       ((4, 6), (13, 17, 11)), ((3, 1), (4, 5, 6)), ((1, 3), (4, 5, 6)),
                                       ((6, 4), (12, 8, 10))])
def test_host_skewed_a_matches_numpy(kind, mesh, dims):
    """A pre-skewed on the host lands where the device skew would have put it."""
    from meshgemm.gemm import build_cannon_family
    b = build_cannon_family(KernelRequest(kind, mesh, *dims, dtype="fp32"), WSE2, kind, a_skew="host")
    _check(b, b.gather(simulate(b.program, WSE2))["C"], "fp32")


@pytest.mark.parametrize("kind", ["meshgemm", "cannon"])
def test_lockstep_steps_are_the_programs(kind):
    """With A pre-skewed every PE enters the shifting steps at the same cycle and they stay in
    lockstep: the per-step terms (issues, the product, the cycles the moves take from it, the
    shift, the join, the last product) are then the whole run, and must be the simulated cycles at
    large tiles on two meshes, with no residual growing with the mesh."""
    res = {}
    for side in (8, 16):
        sim, pred = _cannon_run(kind, side, 16, a_skew="host")
        res[side] = pred / sim - 1
        assert abs(res[side]) <= 0.001, (kind, side, sim, pred)
    assert abs(res[16]) <= abs(res[8]) + 0.0005


@pytest.mark.parametrize("kind", ["meshgemm", "cannon"])
def test_backpressure_is_what_takes_the_steps_out_of_lockstep(kind):
    """The method's skew as written (``balance_skew=False``) leaves the rows up to ⌊Q/2⌋ rounds
    apart. With links that buffer a whole tile no receiver ever holds its sender back, and the
    lockstep formula still gives the run; with the shipped links the run is longer, by more on the
    larger mesh: what the rows out of phase cost comes from backpressure, not from the phases alone."""
    res = {}
    for side in (8, 16):
        for spec in (WSE2.with_params(router_buffer_wavelets=2000), WSE2):
            sim, pred = _cannon_run(kind, side, 16, spec, balance_skew=False)
            res[side, spec.router_buffer_wavelets] = pred / sim - 1
        assert abs(res[side, 2000]) <= 0.001, (kind, side, res)
        assert res[side, WSE2.router_buffer_wavelets] < -0.004, (kind, side, res)
    assert res[16, WSE2.router_buffer_wavelets] < res[8, WSE2.router_buffer_wavelets], res


def test_unbalanced_skew_residual_grows_with_the_mesh():
    """The drift the balanced skew removes, in small form (docs/BENCHMARKS.md § Why MeshGEMM's and
    Cannon's residual grew with the mesh): the method's skew as written, tile 16, PLMR − sim is
    −2.2% at 8² and −2.9% at 16²; the rows that leave the skew early are held back by their late
    successors, and the steps never return to lockstep."""
    r8 = (lambda s, p: p / s - 1)(*_cannon_run("meshgemm", 8, 16, balance_skew=False))
    r16 = (lambda s, p: p / s - 1)(*_cannon_run("meshgemm", 16, 16, balance_skew=False))
    assert r16 < r8 < -0.01, (r8, r16)


def test_meshgemm_residual_does_not_grow_with_the_mesh():
    """With the balanced skew every physical row spends as many rounds as the row that rotates
    most, so every PE enters the shifting steps at the same cycle and they stay in lockstep: the
    lockstep formula is the run to a few cycles at 8² and 16², with no residual growing with the
    mesh (the method's skew as written: −2.2% and −2.9%, test above)."""
    r = {side: (lambda s, p: p / s - 1)(*_cannon_run("meshgemm", side, 16)) for side in (8, 16)}
    assert abs(r[8]) <= 0.0002 and abs(r[16]) <= 0.0002, r
    assert abs(r[16]) <= abs(r[8]) + 0.0001, r


@pytest.mark.parametrize("kind", ["meshgemm", "cannon"])
@pytest.mark.parametrize("mesh", [(4, 8), (6, 4)])
def test_balanced_skew_on_non_square_meshes(kind, mesh):
    """Several hosted rows per PE (q_y = 2 at 4×8) or columns (q_x = 3 at 6×4): the rows also pad
    the copies back to the canonical slot map to the most any row makes, and leave the skew
    together (tile 16; MeshGEMM within 0.01%, Cannon within 0.03%)."""
    from meshgemm.gemm import build_cannon_family
    Q = math.lcm(*mesh)
    b = build_cannon_family(KernelRequest(kind, mesh, 16 * Q, 16 * Q, 16 * Q, dtype="fp16", functional=False),
                            WSE2, kind)
    sim = simulate(b.program, WSE2, mode="timing").total_cycles
    assert b.predicted.total_cycles == pytest.approx(sim, rel=0.0005)


def test_cannon_residual_does_not_grow_with_the_mesh():
    """Cannon's plain rings: the P links of a ring add up to 2(P − 1) hops, so the steps' steady
    state (the max-plus period of the ring) is the mean link, each PE running α(P − 2)/P behind its
    predecessor. Entered in lockstep, the wrap link's lag ran ahead as a wave; once it exceeded a
    one-hop link's buffering (from about 32²) senders stalled and the phases never settled (−2.2%
    at 32², −2.9% at 48², tile 16). Each PE now waits for its phase (and the lag its row's skew left
    it) before the steps, and the formula charges the latest PE's entry: the run to a few cycles at
    16², 32² and 48²."""
    r = {side: (lambda s, p: p / s - 1)(*_cannon_run("cannon", side, 16)) for side in (16, 32, 48)}
    assert all(abs(v) <= 0.0003 for v in r.values()), r
    assert abs(r[48]) <= abs(r[16]) + 0.0001 and abs(r[32]) <= abs(r[16]) + 0.0001, r


@pytest.mark.parametrize("kind", ["meshgemm", "cannon"])
def test_balanced_skew_is_faster(kind):
    """The rounds a balanced row adds end when the slowest row's own rounds do, and the rows then
    do not hold each other back: the run is shorter than with the method's skew as written (so on
    every MeshGEMM point measured at tiles 16-48, docs/BENCHMARKS.md)."""
    for side in (8, 16):
        bal, _ = _cannon_run(kind, side, 16)
        raw, _ = _cannon_run(kind, side, 16, balance_skew=False)
        assert bal < raw, (kind, side, bal, raw)


# ---------------------------------------------------------------------------------------------
# Small tiles: the regime where SUMMA's relays and dist-GEMM-T's chains set the pace
# ---------------------------------------------------------------------------------------------

#: (kernel, mesh (P_y, P_x), tile edge, target); SUMMA gets K = tile·lcm(P_y, P_x) (one tile per panel)
SMALL_TILES = [(name, (s, s), t, "wse2") for name in ("summa", "gemmt") for s in (4, 8) for t in (1, 2, 4)]
SMALL_TILES += [(name, mesh, t, "wse2") for name in ("summa", "gemmt")
                for mesh, t in (((16, 16), 2), ((16, 16), 4), ((3, 5), 1), ((5, 3), 4), ((6, 10), 2), ((12, 8), 4),
                                ((1, 6), 2), ((7, 1), 4))]
SMALL_TILES += [(name, mesh, t, "wse3") for name in ("summa", "gemmt") for mesh, t in (((8, 8), 4), ((6, 10), 1))]
#: SUMMA follows its program within 1.1% and dist-GEMM-T within 2.2% on every point measured at tiles
#: 1-4 (docs/BENCHMARKS.md § Cost-model agreement)
SMALL_TILE_TOLERANCE = {"summa": 0.015, "gemmt": 0.025}


def _small_tile_run(name, mesh, tile, spec):
    p_y, p_x = mesh
    dims = (tile * p_y, tile * math.lcm(p_y, p_x), tile * p_x) if name == "summa" else \
        (tile * p_y, tile * p_x, tile * p_y)
    b = build_kernel(KernelRequest(name, mesh, *dims, dtype="fp16", functional=False), spec)
    return simulate(b.program, spec, mode="timing").total_cycles, b.predicted.total_cycles


@pytest.mark.parametrize("name,mesh,tile,target", SMALL_TILES)
def test_cost_model_follows_small_tiles(name, mesh, tile, target):
    """At tiles of 1-4 a step is a few dozen cycles against a relay stage of ρ + α + β (16 cycles at
    the shipped parameters), so the chains' lateness carried from step to step is most of the run;
    the formulas evaluate the programs' steps PE by PE (``plmr.gemm_schedules``)."""
    spec = {"wse2": WSE2, "wse3": WSE3}[target]
    sim, pred = _small_tile_run(name, mesh, tile, spec)
    assert pred == pytest.approx(sim, rel=SMALL_TILE_TOLERANCE[name])


@pytest.mark.parametrize("mesh,tile,target", [(mesh, t, tg) for name, mesh, t, tg in SMALL_TILES if name == "summa"])
def test_summa_follows_small_tiles_at_other_parameters(mesh, tile, target):
    """c_op 3, β 14 (a refit's parameters; the shipped ones are 4 and 12): the streams meet
    differently (a PE's x and y streams share its one delivery, a y op waits for the x op's
    injections, a stream split or slowed upstream arrives as late one stage on), and the formula
    must follow the program there too."""
    spec = {"wse2": WSE2, "wse3": WSE3}[target].with_params(op_issue_cycles=3.0, relay_cycles=14.0)
    sim, pred = _small_tile_run("summa", mesh, tile, spec)
    assert pred == pytest.approx(sim, rel=SMALL_TILE_TOLERANCE["summa"])


@pytest.mark.parametrize("name,mesh,tile", [("summa", (5, 5), 1), ("summa", (1, 8), 1), ("summa", (4, 6), 2),
                                            ("gemmt", (8, 8), 1), ("gemmt", (6, 4), 2)])
def test_chain_latency_counts_as_the_program_pays_it(name, mesh, tile):
    """With β = 200 a relay stage outweighs everything else, so the run is the longest path through
    the chains: how many relay stages the critical path crosses (the run's slope in β) must be the
    program's, and the cycles with it."""
    runs = [_small_tile_run(name, mesh, tile, WSE2.with_params(relay_cycles=beta)) for beta in (200.0, 201.0)]
    (sim0, pred0), (sim1, pred1) = runs
    assert pred1 - pred0 == sim1 - sim0
    assert pred0 == pytest.approx(sim0, rel=0.005)
