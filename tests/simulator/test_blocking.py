"""Temporal blocking (``simulator.engine._block_py``, ``Device(block=...)``): a run that advances tiles
of the mesh several cycles at a time gives exactly the results of one cycle at a time, the
definition of the engine's semantics (cycle by cycle, PEs in ascending order).

Each case runs one program unblocked (``block=1``) and blocked at several depths, on meshes whose
width is not a multiple of 64 (bitmap words straddle rows) and that are cut into several tiles, with
the density threshold at 0 so that blocks run on these small meshes; every case checks that blocks
did run. Compared: the outcome (cycles, busy/stalled/finish per PE, link counts, the ordered
timestamps and how many were dropped, wavelet moves, every PE's memory in functional mode) or the
error raised, message included (its cycle and PE)."""

from __future__ import annotations

import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import simulator.run as R
from plmr.hardware import WSE2
from simulator import (
    Assign, Body, Device, Fill, If, Loop, MeshProgram, Port, Recv, Ref, Send, SetRoute, Timestamp, Var, X, Y,
    eq,
)
from simulator import engine as E

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from engine_equivalence import same  # noqa: E402  (results and memory compared field by field)

DEPTHS = (2, 3, 7, 16)


def _outcome(prog, mode, block, monkeypatch, min_words=1, parts=1, **kw):
    """(result or error, cycles run in blocks) of ``prog`` run with block depth ``block``; tiles of
    ``min_words`` bitmap words or the least that is exact (``engine.block_tile``). ``parts`` > 1: each
    cycle cut in that many parts and the bands between them (``engine.segments``) at a grain of one
    bitmap word, so that small meshes are cut; such parts share summary words, so the run is on one
    numba thread (it still runs the parts' and the bands' phases of a block one after the other)."""
    monkeypatch.setattr(R, "BLOCK_DENSE", 0)
    dev = Device(prog, WSE2, mode, threads=1, block=block, **kw)
    cp = dev.lowered
    dev.block_tile = E.block_tile(cp.width, cp.ch_route, cp.ch_port, cp.r_chan0, min_words=min_words)
    if parts > 1:
        dev.seg_w = E.segments(cp.width, cp.height, parts, grain=64)
        assert dev.seg_w.shape[0] == 2 * parts - 1
    nthreads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        r = dev.launch()
    except Exception as exc:  # the error is the result
        return ("error", type(exc).__name__, str(exc)), -1
    finally:
        numba.set_num_threads(nthreads)
    return (("ok", r.total_cycles, r.busy, r.stalled, r.finish, r.link_wavelets, list(r.timestamps),
             r.stats["timestamps_dropped"], r.stats["wavelet_moves"],
             dev.mem.copy() if mode == "functional" else None), r.stats["blocked_cycles"])



def _check(prog, mode, monkeypatch, depths=DEPTHS, min_words=1, expect_error=None, parts=(1, 2),
           commute=True, **kw):
    """One cycle at a time on one thread against each depth, for each count of ``parts``. A program
    whose visits of one cycle may not commute (``commute`` False: a route with several inputs, or
    SetRoute) runs cut in parts one cycle at a time, and must give the same results too."""
    ref, nb = _outcome(prog, mode, 1, monkeypatch, min_words, **kw)
    assert nb in (0, -1)
    if expect_error is not None:
        assert ref[0] == "error" and expect_error in ref[2], ref
    else:
        assert ref[0] == "ok", ref
    for n in parts:
        for d in depths if n == 1 or len(depths) <= 2 else depths[1::2]:  # parts: 3 and 16 of DEPTHS
            res, nb = _outcome(prog, mode, d, monkeypatch, min_words, parts=n, **kw)
            assert same(ref, res), (n, d, ref[:2], res[:2])
            if ref[0] == "ok":
                assert (nb > 0) == (commute or n == 1)  # blocks ran
    return ref


def _kernel(name, mesh, m, k, n, dtype, functional):
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    return build_kernel(KernelRequest(name, mesh, m, k, n, dtype=dtype, functional=functional, k_tree=2),
                        WSE2).program


# MeshGEMM runs on the virtual Q x Q mesh, Q = lcm(P_y, P_x): meshes with a small Q keep its runs
# short (13 x 20, Q = 260, ran 451K cycles a launch; 12 x 18, Q = 36, runs 5K)
@pytest.mark.parametrize("name,mesh,mode", [
    ("meshgemm", (12, 18), "functional"), ("meshgemm", (11, 33), "timing"), ("cannon", (7, 70), "timing"),
    ("summa", (13, 20), "functional"), ("gemmt", (10, 33), "functional"), ("meshgemv", (13, 20), "timing"),
])
def test_kernels_blocked_equal_one_cycle_at_a_time(name, mesh, mode, monkeypatch):
    py, px = mesh
    m = 1 if "gemv" in name else 2 * py
    prog = _kernel(name, mesh, m, px, 2 * px, "fp32" if mode == "functional" else "fp16",
                   mode == "functional")
    _check(prog, mode, monkeypatch)


@pytest.mark.parametrize("mode", ["functional", "timing"])
def test_three_parts_blocked_equal_one_cycle_at_a_time(mode, monkeypatch):
    """Parts between two bands (tiles near both), on a mesh cut in 3 parts and 2 bands."""
    prog = _kernel("meshgemm", (24, 36), 48, 36, 72, "fp32" if mode == "functional" else "fp16",
                   mode == "functional")
    _check(prog, mode, monkeypatch, depths=(3, 16), parts=(3,))


def test_two_threads_blocked_equal_one_thread_one_cycle_at_a_time(monkeypatch):
    """Two parts on two threads (a mesh of 16,640 PEs, cut as ``Device(threads=2)`` cuts it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_simulator import shift_broadcast
    monkeypatch.setattr(R, "BLOCK_DENSE", 0)
    prog = shift_broadcast(128, 130, 20)
    out = []
    for threads, block in ((1, 1), (2, 16), (2, 5)):
        dev = Device(prog, WSE2, "functional", threads=threads, block=block)
        assert dev.seg_w.shape[0] == 2 * threads - 1
        r = dev.launch()
        out.append(((r.total_cycles, r.busy, r.stalled, r.finish, r.link_wavelets, list(r.timestamps),
                     r.stats["timestamps_dropped"], r.stats["wavelet_moves"], dev.mem.copy()),
                    r.stats["blocked_cycles"]))
    assert out[0][1] == 0 and out[1][1] > 0 and out[2][1] > 0
    assert same(out[0][0], out[1][0]) and same(out[0][0], out[2][0])


def test_larger_tiles_and_the_default_tile_are_exact_too(monkeypatch):
    prog = _kernel("meshgemm", (7, 70), 14, 70, 70, "fp32", True)  # 8 words: tiles of 3 and 4 words
    _check(prog, "functional", monkeypatch, depths=(4, 16), min_words=3)
    _check(prog, "functional", monkeypatch, depths=(8,), min_words=4)


def _backed_up_rows(W: int, H: int, n: int, fill: int) -> MeshProgram:
    """Every row streams n values from its west end to its east end along colour 1, whose receiver
    first runs a long Fill: the row's buffers fill up, and drain when the receive starts."""
    spec = WSE2
    prog = MeshProgram(W, H, spec)
    prog.add_buffer(0, range(H), "a", "fp32", n, init=lambda x, y: np.arange(n) + 100.0 * y)
    prog.add_buffer(W - 1, range(H), "b", "fp32", n)
    prog.add_buffer(W - 1, range(H), "big", "fp32", fill)
    prog.set_route(0, range(H), 1, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(range(1, W - 1), range(H), 1, rx=Port.WEST, tx=Port.EAST)
    prog.set_route(W - 1, range(H), 1, rx=Port.WEST, tx=Port.RAMP)
    prog.add(0, range(H), Timestamp("start"), Send(1, "a"), Timestamp("sent"))
    prog.add(W - 1, range(H), Fill("big", 1.0), Timestamp("go"), Recv(1, "b"), Timestamp("done"))
    return prog


@pytest.mark.parametrize("mode", ["functional", "timing"])
def test_back_pressure_full_buffers(mode, monkeypatch):
    W, H, n = 70, 5, 1000
    prog = _backed_up_rows(W, H, n, 6000)
    ref = _check(prog, mode, monkeypatch)
    stamps = {(x, y, lab): c for x, y, lab, c in ref[6]}
    for y in range(H):  # the line holds fewer than n wavelets: the sender waits for the receiver
        assert n < stamps[(W - 1, y, "go")] < stamps[(0, y, "sent")]


def test_set_route_switches_directions_on_every_row(monkeypatch):
    """test_programs' SetRoute program on 120 rows of 3 PEs: colour 5 carries the middle PE's stream
    west, then, after SetRoute on every PE, east."""
    W, H = 3, 120
    prog = MeshProgram(W, H, WSE2)
    m = lambda cond, a, b: __import__("simulator.expr", fromlist=["select"]).select(cond, 1 << int(a), 1 << int(b))
    prog.route_rule(None, None, 5, rx=m(eq(X, 1), Port.RAMP, Port.EAST), tx=m(eq(X, 1), Port.WEST, Port.RAMP),
                    when=X <= 1)
    prog.route_rule(None, None, 5, rx=m(eq(X, 1), Port.RAMP, Port.WEST), tx=m(eq(X, 1), Port.EAST, Port.RAMP),
                    when=X >= 1, config=1)
    b = Body("switch")
    role = b.param("role")
    b.buffer("a", "fp32", 4)
    b.function("main", [
        If(eq(role, 1), [Send(5, "a"), Fill("a", 9.0), SetRoute(5, 1), Send(5, "a"), Timestamp("s")],
           [If(eq(role, 0), [Recv(5, "a")], [SetRoute(5, 1), Recv(5, "a")]), Timestamp("r")])])
    prog.place(b, params={"role": X})
    prog.set_data(1, range(H), "a", [1.0, 2.0, 3.0, 4.0])
    ref = _check(prog, "functional", monkeypatch, commute=False)
    assert ref[5][:, 1, Port.WEST].tolist() == [4] * H and ref[5][:, 1, Port.EAST].tolist() == [4] * H


def test_timestamps_past_the_buffer_keep_the_first_in_cycle_and_pe_order(monkeypatch):
    """Each PE stamps 20 times in a loop (6,000 stamps for a buffer of 4,096): the kept ones and their
    order equal one cycle at a time's, although blocks produce them out of (cycle, PE) order."""
    W, H = 30, 10
    prog = MeshProgram(W, H, WSE2)
    b = Body("stamps")
    b.buffer("a", "fp32", 8)
    b.var("i")
    b.function("main", [Loop(20, "i", [Timestamp("t"), Fill("a", 1.0), Timestamp("u")])])
    prog.place(b)
    ref = _check(prog, "timing", monkeypatch)
    assert len(ref[6]) == 4096 and ref[7] == 2 * 20 * W * H - 4096


def _late_errors(W: int, H: int, bad: dict) -> MeshProgram:
    """PE (x, y) in ``bad`` runs ``bad[(x, y)]`` Fills (and Timestamps), then one whose run-time offset is past its
    buffer (an error at a cycle that grows with the count); the others run 40 Fills and finish."""
    prog = MeshProgram(W, H, WSE2)
    b = Body("late")
    d = b.param("d")
    o = b.param("o")
    b.buffer("a", "fp32", 8)
    b.var("i")
    b.var("off")
    # a Timestamp runs at its exact cycle: each iteration is a visit of its own
    b.function("main", [Loop(d, "i", [Fill("a", 1.0), Timestamp("i")]), Assign("off", o),
                        Fill(Ref("a", Var("off"), 4), 2.0)])
    for y in range(H):
        for x in range(W):
            cnt, off = (bad[(x, y)], 8) if (x, y) in bad else (40, 0)
            prog.place(b, x, y, params={"d": cnt, "o": off})
    return prog


def test_the_first_error_in_cycle_and_pe_order_is_reported(monkeypatch):
    """Errors at PE (1, 0) late, at (5, 9) earlier and at (7, 9) in the same cycle as (5, 9): a
    block meets (1, 0)'s first (its tile is ahead), but the error reported is (5, 9)'s."""
    W, H = 20, 12
    prog = _late_errors(W, H, {(1, 0): 30, (5, 9): 20, (7, 9): 20})
    ref = _check(prog, "functional", monkeypatch, expect_error="PE (5, 9)")
    assert ref[1] == "InputError"
    # cut in two parts: (1, 0) is in part 0, (5, 9) in the band, (10, 11) in part 1
    prog = _late_errors(W, H, {(1, 0): 30, (5, 9): 20, (10, 11): 20})
    _check(prog, "functional", monkeypatch, expect_error="PE (5, 9)")
    prog = _late_errors(W, H, {(1, 0): 30, (5, 9): 20, (10, 11): 16})
    _check(prog, "functional", monkeypatch, expect_error="PE (10, 11)")


def test_max_cycles_and_deadlock_reports_are_the_same(monkeypatch):
    prog = _backed_up_rows(70, 5, 1000, 6000)
    ref = _check(prog, "timing", monkeypatch, expect_error="max_cycles", max_cycles=3500)
    assert ref[1] == "SimulationLimit"
    # a receiver that never gets its data: the report names the PEs still waiting
    W, H = 70, 6
    p = MeshProgram(W, H, WSE2)
    p.add_buffer(range(W), range(H), "b", "fp32", 4)
    p.add_buffer(range(W), range(H), "w", "fp32", 64)
    p.set_route(range(W), range(H), 2, rx=Port.WEST, tx=Port.RAMP)
    p.add(range(W), range(H), Fill("w", 1.0), Recv(2, "b"))
    _check(p, "timing", monkeypatch, expect_error="", depths=(2, 7))


def test_the_tile_covers_a_route_fed_from_north_and_south(monkeypatch):
    """PE (x, 4) receives colour 2 from (x, 3) (north) and (x, 5) (south): their visits write its
    route's last-arrival fields, 2 W PEs apart, so a tile spans at least 2 W PEs."""
    W, H, n = 40, 9, 30
    prog = MeshProgram(W, H, WSE2)
    prog.add_buffer(range(W), [3, 5], "a", "fp32", n, init=lambda x, y: np.arange(n) + y)
    prog.add_buffer(range(W), 4, "b", "fp32", 2 * n)
    prog.add_buffer(range(W), 5, "w", "fp32", 400)
    prog.set_route(range(W), 3, 2, rx=Port.RAMP, tx=Port.SOUTH)
    prog.set_route(range(W), 5, 2, rx=Port.RAMP, tx=Port.NORTH)
    prog.set_route(range(W), 4, 2, rx={Port.NORTH, Port.SOUTH}, tx=Port.RAMP)
    prog.add(range(W), 3, Send(2, "a"))
    prog.add(range(W), 5, Fill("w", 0.0), Send(2, "a"))
    prog.add(range(W), 4, Recv(2, "b"))
    cp = Device(prog, WSE2, "timing").lowered
    assert E.block_tile(W, cp.ch_route, cp.ch_port, cp.r_chan0, min_words=1) == 2  # ceil(80 / 64)
    assert E.block_tile(W, cp.ch_route[:0], cp.ch_port[:0], np.zeros(1, np.int64), min_words=1) == 1
    _check(prog, "functional", monkeypatch, commute=False)
    # the south senders without their Fill: both streams arrive together, an error
    p2 = MeshProgram(W, H, WSE2)
    p2.add_buffer(range(W), [3, 5], "a", "fp32", n)
    p2.add_buffer(range(W), 4, "b", "fp32", 2 * n)
    p2.set_route(range(W), 3, 2, rx=Port.RAMP, tx=Port.SOUTH)
    p2.set_route(range(W), 5, 2, rx=Port.RAMP, tx=Port.NORTH)
    p2.set_route(range(W), 4, 2, rx={Port.NORTH, Port.SOUTH}, tx=Port.RAMP)
    p2.add(range(W), [3, 5], Send(2, "a"))
    p2.add(range(W), 4, Recv(2, "b"))
    ref = _check(p2, "timing", monkeypatch, expect_error="two directions", commute=False)
    assert "PE (0, 4)" in ref[2]  # the first in PE order
    # the rule matters: with tiles of one word (80 PEs apart may then be two tiles apart) a depth-7
    # block writes (8, 4)'s route fields out of order and reports another PE
    monkeypatch.setattr(R, "BLOCK_DENSE", 0)
    dev = Device(p2, WSE2, "timing", threads=1, block=7)
    dev.block_tile = 1
    with pytest.raises(Exception, match=r"PE \(8, 4\)"):
        dev.launch()


def test_block_depth_is_checked():
    from plmr.errors import InputError
    prog = _backed_up_rows(4, 2, 4, 16)
    with pytest.raises(InputError, match="block"):
        Device(prog, WSE2, "timing", block=0)


def test_a_bad_block_depth_is_a_one_line_input_error(monkeypatch):
    """Depths outside [1, 64], and a non-integer WAFERLLM_SIM_BLOCK, are refused before any run."""
    from plmr.errors import InputError

    for bad in (0, 65):
        with pytest.raises(InputError, match=r"block must be in \[1, 64\]"):
            R._block(bad)
    monkeypatch.setenv("WAFERLLM_SIM_BLOCK", "deep")
    with pytest.raises(InputError, match="WAFERLLM_SIM_BLOCK must be an integer, got 'deep'"):
        R._block(None)
    monkeypatch.setenv("WAFERLLM_SIM_BLOCK", "3")
    assert R._block(None) == 3
