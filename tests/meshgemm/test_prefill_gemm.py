"""The prefill chains' MeshGEMM pieces (`meshgemm.prefill_gemm`) on the simulator: the balanced device skew
leaves every physical row at the same cycle, the cycle `plmr.gemm.meshgemm_chain` charges for it."""

from __future__ import annotations

import math

import pytest

from meshgemm.kernel import ColourMap
from meshgemm.prefill_gemm import GemmGeometry, MeshGemmRings
from meshgemm.prefill_program import hoist_loop_counts, isolate_waiting_loops
from plmr.gemm import meshgemm_chain
from plmr.hardware import WSE2
from simulator import Device
from simulator.body import Body
from simulator.expr import Param
from simulator.instructions import Fill, Ref
from simulator.program import MeshProgram
from simulator.statements import Loop, Timestamp


def launch_main(prog: MeshProgram, body: Body, code: list, params: dict, hw) -> dict:
    """Place ``code`` as ``body``'s ``main`` on every PE (loop counts hoisted into variables and waiting
    loops isolated, as the prefill program does), run it timing-only and return its timestamps as
    {(x, y, label): cycle}."""
    counts: set = set()
    code = isolate_waiting_loops(hoist_loop_counts(code, counts.add))
    for name in sorted(counts):
        body.var(name, "i32")
    body.function("main", code)
    prog.entry = "main"
    prog.place(body, params=params)
    res = Device(prog, hw, mode="timing").launch("main")
    return {(x, y, label): cyc for x, y, label, cyc in res.timestamps}


def skew_ends(mesh: tuple[int, int], m: int, k: int, lag: int) -> dict[tuple[int, int], int]:
    """The cycle at which every PE (x, y) leaves the chain's skew of an m × k-tile activation, column x
    entering it after ``lag``·x fills of 16 elements (0: every PE enters together)."""
    p_y, p_x = mesh
    geom = GemmGeometry(p_y, p_x, m)
    prog = MeshProgram(p_x, p_y, WSE2, name="chain_skew")
    cmap = ColourMap(WSE2, 9, "chain skew")
    rings = MeshGemmRings(prog, geom, lambda i: cmap[i])
    body = Body("chain_skew")
    rings.declare(body)
    body.param("lag")
    body.var("w", "i32")
    ta = m * k
    body.buffer("GA", "fp16", (geom.q_x + 1) * geom.q_y * ta)
    body.buffer("GS", "fp16", rings.scratch_len(ta))
    body.buffer("D", "fp16", 16)
    code = [Loop(Param("lag"), "w", (Fill(Ref("D", 0, 16), 0.0),)), Timestamp("in")] + rings.skew(ta) + [
        Timestamp("out")]
    stamps = launch_main(prog, body, code, {**rings.values(), "lag": lambda xs, ys: xs * lag}, WSE2)
    return {(x, y): stamps[x, y, "out"] - (stamps[x, y, "in"] if not lag else 0)
            for x in range(p_x) for y in range(p_y)}


#: square (one hosted row per PE: rows rotate 0..⌊Q/2⌋ rounds, reverse or forward), non-square (several
#: hosted rows per PE, copies back to the canonical slot map) and one column (rows rotate locally).
MESHES = [(8, 8), (16, 16), (4, 8), (6, 4), (5, 1)]


@pytest.mark.parametrize("mesh", MESHES)
def test_every_row_leaves_the_balanced_skew_together_at_the_charged_cycle(mesh):
    """Every PE enters the skew together: every PE leaves it within a few cycles of every other (the
    method's skew as written leaves the rows up to ⌊Q/2⌋ rounds apart), and
    the slowest at the cycle `meshgemm_chain` charges for the skew (its ``skew`` part)."""
    m, k = 8, 24
    ends = skew_ends(mesh, m, k, 0)
    p_y, p_x = mesh
    charged = meshgemm_chain(WSE2, p_y, p_x, m, k, (8,)).parts["skew"]
    rows = {y: [ends[x, y] for x in range(p_x)] for y in range(p_y)}
    late = [max(v) for v in rows.values()]
    assert max(late) - min(late) <= 24, rows  # a few hops and activations, not a round (~100 cycles)
    assert max(ends.values()) == pytest.approx(charged, abs=24), (ends, charged)


@pytest.mark.parametrize("mesh", [(8, 8), (16, 16)])
def test_columns_entering_apart_leave_the_skew_together_on_every_row(mesh):
    """Columns entering the skew at different cycles (2 fills more per column, ~16 cycles: as after
    RMSNorm's chain broadcast, which reaches the first column last), tiles of 16 × 56 (a round ~930
    cycles): every row of a column leaves within a small part of a round of every other, whatever its
    rotation (rows use different rings, so not in the same cycle). The added rounds run on the row's own
    ring; forward rows that switched to the reverse ring for them lost a round on alternate columns
    (1,019 cycles apart at 16²; 104 on their own ring)."""
    p_y, p_x = mesh
    m, k = 16, 56
    ends = skew_ends(mesh, m, k, 2)
    round_t = meshgemm_chain(WSE2, p_y, p_x, m, k, (8,)).parts["skew"] / (math.lcm(*mesh) // 2)
    for x in range(p_x):
        col = [ends[x, y] for y in range(p_y)]
        assert max(col) - min(col) < round_t / 4, (x, col, round_t)


def norm_then_product(mesh: tuple[int, int], m: int, k: int, n: int, resync: bool) -> dict:
    """RMSNorm's chain allreduce of m fp32 token sums along each row (`prefill_chains`, root at the last
    column) and the scale and rsqrt that follow it in the layer, then the prefill chain's resync (``resync``), skew and one product's Q steps on the
    simulator, timing-only. Every PE's cycles after the allreduce (``norm``), at the skew's start
    (``in``), at the steps' start and end (``s0``, ``s1``)."""
    from meshgemm.prefill_chains import CHAIN_COLOURS, ROOT, SegmentRoles, XChains
    from meshgemm.prefill_gemm import WeightSlots
    from plmr.gemm import norm_broadcast_lead, phase_units
    from simulator.expr import X, eq, select
    from simulator.instructions import Rsqrt, Scale
    from simulator.statements import Assign

    p_y, p_x = mesh
    geom = GemmGeometry(p_y, p_x, m)
    hw = WSE2.with_params(sram_bytes=1 << 20)  # the same cycles; only the fit check moves
    prog = MeshProgram(p_x, p_y, hw, name="norm_chain")
    cmap = ColourMap(hw, 9 + CHAIN_COLOURS, "norm chain")
    rings = MeshGemmRings(prog, geom, lambda i: cmap[i])
    chains = XChains(prog, lambda i: cmap[9 + i])
    roles = SegmentRoles.of("nr", p_x, [tuple(range(p_x))])
    body = Body("norm_chain")
    rings.declare(body)
    chains.declare(body)
    roles.declare(body)
    ta, qx, qy = m * k, geom.q_x, geom.q_y
    body.buffer("RS", "fp32", m)
    body.buffer("GA", "fp16", (qx + 1) * qy * ta)
    body.buffer("GS", "fp16", rings.scratch_len(ta))
    body.buffer("WB", "fp16", (qy + 1) * qx * k * n)
    body.buffer("CF", "fp32", qy * qx * m * n)
    w = WeightSlots(0, k, n, qx, qy, qy * qx * k * n)
    lead = norm_broadcast_lead(WSE2, X, eq(Param(roles.name), ROOT), select)
    steps = rings.steps(ta, w, "CF")
    assert isinstance(steps[0], Assign) and isinstance(steps[1], Loop)
    finish = [Scale(Ref("RS", 0, m), Ref("RS", 0, m), 1.0 / 896), Rsqrt(Ref("RS", 0, m), Ref("RS", 0, m))]
    code = (roles.allreduce(Ref("RS", 0, m)) + finish + [Timestamp("norm")]
            + (rings.resync(lead, phase_units(WSE2, "fp32")[1], "CF") if resync else [])
            + [Timestamp("in")] + rings.skew(ta) + steps[:1] + [Timestamp("s0"), steps[1], Timestamp("s1")])
    return launch_main(prog, body, code, {**rings.values(), **chains.values(), **roles.values()}, hw)


def test_columns_leave_the_norm_by_the_broadcast_lead():
    """The lead the resync waits out, derived from the chain's latencies (ρ + α + β a member, β less
    on the root, which sends instead of relaying), is the simulator's: every column leaves the norm's
    allreduce exactly that many cycles before the first column, on every row."""
    from plmr.gemm import norm_broadcast_lead

    p_x = 16
    st = norm_then_product((3, p_x), 16, 8, 8, resync=False)
    lag = WSE2.ramp_cycles + WSE2.hop_cycles + WSE2.relay_cycles  # one stage of the relay chain
    for y in range(3):
        lead = [st[0, y, "norm"] - st[x, y, "norm"] for x in range(p_x)]
        assert lead[:-1] == [lag * x for x in range(p_x - 1)], lead
        assert lead[-1] == lag * (p_x - 1) - WSE2.relay_cycles, lead
        assert lead == [norm_broadcast_lead(WSE2, x, x == p_x - 1) for x in range(p_x)]


@pytest.mark.parametrize("resync", [False, True])
def test_the_resync_puts_the_product_after_the_norm_in_lockstep(resync):
    """Qwen2.5-0.5B's Q product at 16² (256 tokens: m 16, k = n = 56) right after RMSNorm's allreduce.
    Lockstep means every PE enters the skew together and every PE's Q steps take the same cycles, the
    count `meshgemm_chain` charges for them (Q steps of ``shift_step``: its ``product0`` part less the
    accumulator's fill and the conversion, which this product does not run). Without the resync the columns enter ~16
    cycles apart a column and the steps drift apart (the Q product's steps spread by ~8 k cycles in the
    layer); with it every PE enters within a delay unit and the steps stay in lockstep."""
    from plmr.gemm import phase_units
    from plmr.primitives import t_vec

    mesh, m, k, n = (16, 16), 16, 56, 56
    st = norm_then_product(mesh, m, k, n, resync)
    pes = [(x, y) for y in range(mesh[0]) for x in range(mesh[1])]
    enter = [st[x, y, "in"] for x, y in pes]
    took = [st[x, y, "s1"] - st[x, y, "s0"] - 1 for x, y in pes]  # a Timestamp costs one cycle
    chain = meshgemm_chain(WSE2, *mesh, m, k, (n,), "fp16", "fp32")
    # product0 = fill + Q steps + restoring copies (none: Q ≡ 0 mod 2) + the fp32 -> fp16 convert
    lockstep = chain.parts["product0"] - t_vec(WSE2, m * n, "mov", "fp32") - (WSE2.op_issue_cycles + m * n)
    unit = phase_units(WSE2, "fp32")[1]
    if resync:
        assert max(enter) - min(enter) <= unit, (min(enter), max(enter))
        assert max(took) - min(took) <= 8, (min(took), max(took))
        assert max(took) == pytest.approx(lockstep, abs=16), (max(took), lockstep)
    else:
        assert max(enter) - min(enter) >= 15 * 15
        assert max(took) - min(took) > 1000, (min(took), max(took))
