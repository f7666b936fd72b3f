"""The numba step recurrences of ``plmr.gemm_schedules`` against the numpy evaluation they replaced
(tests/plmr/gemm_schedules_numpy.py, kept verbatim): SUMMA's and dist-GEMM-T's formulas must give
exactly the same numbers, total and every part, on every shape."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import pytest

import plmr.gemm as plmr_gemm
from plmr import WSE2, WSE3

_spec = importlib.util.spec_from_file_location(
    "gemm_schedules_numpy", pathlib.Path(__file__).with_name("gemm_schedules_numpy.py"))
numpy_schedules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(numpy_schedules)

#: meshes: square, non-square (lcm steps), single lines both ways, one PE
MESHES = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (8, 8), (2, 3), (3, 2), (4, 6), (6, 4), (3, 5), (5, 7),
          (1, 4), (1, 7), (4, 1), (7, 1), (2, 8), (8, 2), (12, 9), (16, 16)]
#: per-PE tile edges 1..16 (the GEMM is tile × mesh), plus one uneven shape
TILES = [1, 2, 3, 4, 7, 16]
#: SUMMA's reference walks the PEs in plain Python (~0.7 s per tile at 12×9 and 16×16, 3/4 of a
#: case's time): on those two meshes each dtype takes half the tiles, so that the fp16 and fp32 cases
#: of a spec cover every tile between them (the smaller meshes take every tile at both dtypes)
LARGE_MESHES = {(12, 9), (16, 16)}
LARGE_MESH_TILES = {"fp16": [1, 3, 7], "fp32": [2, 4, 16]}
SPECS = [WSE2, WSE3,
         dataclasses.replace(WSE2, memory_read_ports=0),  # no port contention: no product stalls
         dataclasses.replace(WSE3, ramp_wavelets_per_cycle=0),  # streams do not share a ramp
         dataclasses.replace(WSE2, relay_cycles=40)]  # chains dominate


def _both(monkeypatch, fn, *args, **kw):
    fast = fn(*args, **kw)
    with monkeypatch.context() as m:
        m.setattr(plmr_gemm, "summa_schedule", numpy_schedules.summa_schedule)
        m.setattr(plmr_gemm, "gemmt_schedule", numpy_schedules.gemmt_schedule)
        ref = fn(*args, **kw)
    return fast, ref


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-r{s.memory_read_ports}"
                         f"-w{s.ramp_wavelets_per_cycle}-b{s.relay_cycles}")
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("op", ["summa", "gemmt"])
def test_fast_schedules_equal_the_numpy_evaluation(monkeypatch, spec, dtype, op):
    fn = getattr(plmr_gemm, op)
    for p_y, p_x in MESHES:
        for t in (LARGE_MESH_TILES[dtype] if op == "summa" and (p_y, p_x) in LARGE_MESHES else TILES):
            shapes = [(t * p_y, t * max(p_y, p_x), t * p_x), (t * p_y + 1, 3 * t * p_x, t * p_x + 2)]
            for M, K, N in shapes:
                fast, ref = _both(monkeypatch, fn, spec, p_y, p_x, M, K, N, dtype)
                assert fast.total_cycles == ref.total_cycles, (p_y, p_x, M, K, N)
                assert fast == ref, (p_y, p_x, M, K, N)  # every field and part, exactly


def test_fast_schedules_equal_the_numpy_evaluation_at_a_large_mesh(monkeypatch):
    """A 2K GEMM on 40×40 and 24×40 (where the chains zig-zag over many steps). SUMMA's plain-Python
    reference runs on 24×40 only (13 s; 40×40 took 6 s more): its lcm virtual mesh has 120 steps to
    40×40's 40, and square meshes with uneven tiles are the grid's (16×16 and smaller)."""
    for p_y, p_x in [(40, 40), (24, 40)]:
        for op in ("summa", "gemmt") if (p_y, p_x) == (24, 40) else ("gemmt",):
            fast, ref = _both(monkeypatch, getattr(plmr_gemm, op), WSE2, p_y, p_x, 2048, 2048, 2048)
            assert fast == ref
