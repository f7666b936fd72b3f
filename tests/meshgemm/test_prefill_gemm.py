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
    counts: set = set()
    code = isolate_waiting_loops(hoist_loop_counts(code, counts.add))
    for name in sorted(counts):
        body.var(name, "i32")
    body.function("main", code)
    prog.entry = "main"
    prog.place(body, params={**rings.values(), "lag": lambda xs, ys: xs * lag})
    res = Device(prog, WSE2, mode="timing").launch("main")
    stamps = {(x, y, label): cyc for x, y, label, cyc in res.timestamps}
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
