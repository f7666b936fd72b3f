"""Modes, determinism, accounting, costs, traces and the benchmark workloads at small size."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator import Add, Fill, Gemm, Gemv, MeshProgram, Timestamp, simulate
from simulator import costs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_simulator import broadcast_reduce, shift_broadcast  # noqa: E402


@pytest.mark.parametrize("build", [lambda: shift_broadcast(9, 5, 12), lambda: broadcast_reduce(7, 11, 9)])
def test_timing_mode_equals_functional_cycles_and_is_deterministic(build):
    f1 = simulate(build(), mode="functional")
    f2 = simulate(build(), mode="functional")
    t1 = simulate(build(), mode="timing")
    assert f1.total_cycles == f2.total_cycles == t1.total_cycles
    for a, b in [(f1.busy, t1.busy), (f1.stalled, t1.stalled), (f1.link_wavelets, t1.link_wavelets)]:
        assert np.array_equal(a, b)
    assert np.array_equal(f1.link_wavelets, f2.link_wavelets)
    assert np.array_equal(f1.busy + f1.stalled + f1.idle, np.full(f1.busy.shape, f1.total_cycles))
    with pytest.raises(Exception, match="functional"):
        t1.buffer(0, 0, "v")


def test_broadcast_reduce_sums_columns():
    W, H, n = 5, 6, 7
    prog = broadcast_reduce(W, H, n)
    prog.set_data(0, range(H), "v", lambda x, y: np.arange(n) + 10 * y)
    res = simulate(prog)
    want = sum(np.arange(n) + 10 * y for y in range(H)).astype(np.float32)
    for x in range(W):
        assert np.array_equal(res.buffer(x, H - 1, "v"), want)


def test_compute_costs_follow_the_spec(spec):
    from plmr.hardware import WSE2
    spec = WSE2
    prog = MeshProgram(1, 1, spec)
    prog.add_buffer(0, 0, "a", "fp16", 100)
    prog.add_buffer(0, 0, "b", "fp16", 100)
    prog.add_buffer(0, 0, "c", "fp32", 64)
    prog.add(0, 0, Timestamp("t0"), Add("a", "a", "b"), Timestamp("t1"),
             Gemm("c", "a", "b", 8, 4, 8, layout="col"), Timestamp("t2"),
             Gemv("c", "a", "b", 8, 8, layout="row", acc="fp32"), Timestamp("t3"))
    res = simulate(prog, mode="timing")
    c_op = costs.issue_cycles(spec)
    t = [res.timestamp(0, 0, f"t{i}")[0] for i in range(4)]
    assert t[1] - t[0] == 1 + c_op + math.ceil(100 / spec.simd_width("add", "fp16"))
    assert t[2] - t[1] == 1 + 4 * 8 * (c_op + math.ceil(8 / spec.simd_width("fmac", "fp16_fp32")))
    assert t[3] - t[2] == 1 + 8 * (c_op + math.ceil(8 / spec.simd_width("fmac", "fp16_fp32")))
    assert res.busy[0, 0] == res.total_cycles and res.stalled[0, 0] == 0
    assert res.sram_bytes[0, 0] == 100 * 2 * 2 + 64 * 4


def test_stride_limits_simd_width(spec):
    assert costs.width(spec, "add", "fp16", 1) == spec.simd_width("add", "fp16")
    assert costs.width(spec, "add", "fp16", 8) == 1
    assert costs.width(spec, "add", "fp16", 7) == 2
    assert costs.width(spec, "add", "fp16", 3) == spec.simd_width("add", "fp16")
    # mixed operands: the narrowest limit wins (the largest stride, 9, alone would allow 2)
    assert costs.width(spec, "add", "fp16", (1, 8, 9)) == 1
    assert costs.width(spec, "add", "fp16", (2, 7)) == 2


def test_mixed_stride_op_is_timed_at_the_narrowest_width(spec):
    """A copy from a stride-8 source into a stride-9 destination runs one element per cycle."""
    from simulator import Copy, Ref, Timestamp
    prog = MeshProgram(1, 1, spec)
    prog.add_buffer(0, 0, "a", "fp16", 200)
    prog.add_buffer(0, 0, "b", "fp16", 200)
    prog.add(0, 0, Timestamp("t0"), Copy(Ref("b", 0, 20, 9), Ref("a", 0, 20, 8)), Timestamp("t1"))
    res = simulate(prog, mode="timing")
    assert res.timestamp(0, 0, "t1")[0] - res.timestamp(0, 0, "t0")[0] == 1 + costs.issue_cycles(spec) + 20


def test_chrome_trace_loads(tmp_path):
    res = simulate(shift_broadcast(4, 3, 5), trace=True)
    path = tmp_path / "trace.json"
    res.to_chrome_trace(path)
    data = json.loads(path.read_text())
    events = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert events and all(e["dur"] >= 0 for e in events)
    assert any("Send" in e["name"] for e in events)


def test_accounting_of_a_waiting_pe():
    res = simulate(broadcast_reduce(4, 5, 6), mode="timing")
    assert (res.busy + res.stalled + res.idle == res.total_cycles).all()
    assert res.stalled[-1, -1] > 0  # the reduction sink waits for the chain
    assert res.active_pe_cycles == int((res.busy + res.stalled).sum())
    assert res.link_wavelets[:, :, 1].sum() == 4 * 4 * 6  # SOUTH: 4 hops per column, 6 wavelets


def test_fill_costs_and_values(spec):
    prog = MeshProgram(1, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 10)
    prog.add(0, 0, Fill("a", 3.0))
    res = simulate(prog)
    assert np.array_equal(res.buffer(0, 0, "a"), np.full(10, 3.0, np.float32))
    assert res.total_cycles == costs.vector_op(spec, "mov", "fp32", 10)


@pytest.mark.slow
def test_benchmark_sizes_timing_only():
    res = simulate(shift_broadcast(256, 256, 64), mode="timing")
    assert res.total_cycles > 0
