"""Functional results equal numpy for the documented operation order, in fp32 and fp16."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import (
    Add, Copy, Exp, Fill, Gemm, Gemv, Max, MeshProgram, Mul, Port, Recv, RecvAdd, RecvAddSend, Relay,
    Rsqrt, Scale, Send, Silu, simulate,
)
from plmr.hardware import WSE2
from simulator.engine import round_f16
from tests.simulator.conftest import line_route

NP = {"fp16": np.float16, "fp32": np.float32}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_fp16_rounding_equals_numpy(bits):
    x = np.array([bits], dtype=np.uint32).view(np.float32)[0]
    with np.errstate(over="ignore"):
        want = np.float32(np.float16(x))
    got = round_f16(x)
    if np.isnan(x):
        assert np.isnan(got)
    else:
        assert got == want and np.signbit(got) == np.signbit(want) or (got == 0 and want == 0)


def chain_program(spec, vals: np.ndarray, dtype: str, packed: bool) -> MeshProgram:
    """PE 0 sends; PEs 1..L-2 receive-add-send; PE L-1 receive-accumulates (colours alternate)."""
    L, n = vals.shape
    prog = MeshProgram(L, 1, spec)
    for x in range(L):
        prog.add_buffer(x, 0, "v", dtype, n, init=vals[x])
    for x in range(L - 1):
        c = 1 + x % 2
        prog.set_route(x, 0, c, rx=Port.RAMP, tx=Port.EAST)
        prog.set_route(x + 1, 0, c, rx=Port.WEST, tx=Port.RAMP)
    prog.add(0, 0, Send(1, "v", packed=packed))
    for x in range(1, L - 1):
        prog.add(x, 0, RecvAddSend(1 + (x - 1) % 2, 1 + x % 2, "v", packed=packed))
    prog.add(L - 1, 0, RecvAdd(1 + (L - 2) % 2, "v", packed=packed))
    return prog


@settings(max_examples=40, deadline=None)
@given(L=st.integers(2, 9), n=st.integers(1, 24), dtype=st.sampled_from(["fp16", "fp32"]),
       packed=st.booleans(), seed=st.integers(0, 2**31))
def test_chain_receive_accumulate_equals_numpy(L, n, dtype, packed, seed):
    spec = WSE2
    packed = packed and dtype == "fp16"
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal((L, n)).astype(NP[dtype])
    res = simulate(chain_program(spec, vals.astype(np.float64), dtype, packed))
    acc = vals[0]
    for x in range(1, L):
        acc = (acc + vals[x]).astype(NP[dtype])
    assert np.array_equal(res.buffer(L - 1, 0, "v"), acc)


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_relay_and_recv_move_values_exactly(spec, dtype):
    n = 17
    vals = np.linspace(-3, 3, n).astype(NP[dtype])
    prog = MeshProgram(3, 1, spec)
    prog.add_buffer(0, 0, "a", dtype, n, init=vals)
    prog.add_buffer(2, 0, "b", dtype, n)
    line_route(prog, 0, 1, 0, 1)
    line_route(prog, 1, 2, 0, 2)
    prog.add(0, 0, Send(1, "a"))
    prog.add(1, 0, Relay(1, 2, n))
    prog.add(2, 0, Recv(2, "b"))
    res = simulate(prog)
    assert np.array_equal(res.buffer(2, 0, "b"), vals)


def single_pe(spec, bufs: dict, *instrs):
    prog = MeshProgram(1, 1, spec)
    for name, arr in bufs.items():
        prog.add_buffer(0, 0, name, "fp16" if arr.dtype == np.float16 else "fp32", arr.size, init=arr)
    prog.add(0, 0, *instrs)
    return simulate(prog)


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_elementwise_ops_equal_numpy(spec, dtype):
    t = NP[dtype]
    rng = np.random.default_rng(1)
    a = rng.standard_normal(33).astype(t)
    b = rng.standard_normal(33).astype(t)
    pos = np.abs(a) + t(0.5)
    cases = [
        (Add("o", "a", "b"), a + b),
        (Mul("o", "a", "b"), a * b),
        (Max("o", "a", "b"), np.maximum(a, b)),
        (Scale("o", "a", 0.3), a * 0.3),
        (Copy("o", "a"), a),
        (Fill("o", 2.5), np.full(33, 2.5, dtype=t)),
    ]
    for ins, want in cases:
        res = single_pe(spec, {"a": a, "b": b, "o": np.zeros(33, t)}, ins)
        assert np.array_equal(res.buffer(0, 0, "o"), want.astype(t)), ins
    tol = 1e-3 if dtype == "fp16" else 1e-6
    for ins, want in [(Exp("o", "a"), np.exp(a.astype(np.float32))),
                      (Rsqrt("o", "p"), 1 / np.sqrt(pos.astype(np.float32))),
                      (Silu("o", "a"), a.astype(np.float32) / (1 + np.exp(-a.astype(np.float32))))]:
        res = single_pe(spec, {"a": a, "p": pos, "o": np.zeros(33, t)}, ins)
        assert np.allclose(res.buffer(0, 0, "o"), want.astype(t), rtol=tol, atol=tol), ins


def test_strided_copy_and_mixed_precision(spec):
    from simulator import Ref
    a = np.arange(12, dtype=np.float16) / 3
    res = single_pe(spec, {"a": a, "o": np.zeros(6, np.float32)}, Copy("o", Ref("a", 1, 6, 2)))
    assert np.array_equal(res.buffer(0, 0, "o"), a[1::2].astype(np.float32))


@pytest.mark.parametrize("dtype,acc", [("fp32", None), ("fp16", None), ("fp16", "fp32")])
@pytest.mark.parametrize("layout", ["row", "col"])
def test_gemv_equals_numpy_in_documented_order(spec, dtype, acc, layout):
    t = NP[dtype]
    at = NP[acc or dtype]
    m, n = 5, 7
    rng = np.random.default_rng(2)
    x = rng.standard_normal(m).astype(t)
    w = rng.standard_normal((m, n)).astype(t)
    y0 = rng.standard_normal(n).astype(t)
    wbuf = w.ravel() if layout == "row" else w.T.ravel()
    res = single_pe(spec, {"y": y0, "x": x, "w": wbuf}, Gemv("y", "x", "w", m, n, layout=layout, acc=acc))
    y = y0.astype(at)
    if layout == "row":
        for i in range(m):
            y = (y + (x[i].astype(at) * w[i].astype(at)).astype(at)).astype(at)
    else:
        y = y.copy()
        for j in range(n):
            s = y[j]
            for i in range(m):
                s = at(s + at(at(x[i]) * at(w[i, j])))
            y[j] = s
    assert np.array_equal(res.buffer(0, 0, "y"), y.astype(t))


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("layout", ["row", "col"])
def test_gemm_equals_numpy_outer_product_order(spec, dtype, layout):
    t = NP[dtype]
    m, k, n = 4, 3, 5
    rng = np.random.default_rng(3)
    A = rng.standard_normal((m, k)).astype(t)
    B = rng.standard_normal((k, n)).astype(t)
    C0 = rng.standard_normal((m, n)).astype(t)
    order = "F" if layout == "col" else "C"
    res = single_pe(spec, {"c": C0.ravel(order=order), "a": A.ravel(order=order), "b": B.ravel()},
                    Gemm("c", "a", "b", m, k, n, layout=layout))
    C = C0.copy()
    for l in range(k):
        C = (C + np.outer(A[:, l], B[l, :]).astype(t)).astype(t)
    got = res.buffer(0, 0, "c").reshape((m, n), order=order)
    assert np.array_equal(got, C)
    if dtype == "fp32":
        assert np.allclose(got, C0 + A @ B, rtol=1e-5)
