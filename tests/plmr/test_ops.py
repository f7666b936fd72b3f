"""Non-GEMM operator costs (method §3.4, §7, §8): element-wise ops, RMSNorm, softmax, RoPE, KV shift."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr import (
    WSE2, CostBreakdown, elementwise, in_sequence, ktree_allreduce, rmsnorm, rope, scalar_function,
    silu_mul, softmax,
)

SPEC = WSE2.with_params(op_issue_cycles=11.0, ramp_cycles=5.0, hop_cycles=2.0, relay_cycles=3.0,
                        collective_cycles=37.0, task_cycles=13.0, scalar_fn_cycles=7.0)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 5000), rows=st.integers(1, 64))
def test_norm_and_softmax_on_one_pe_have_no_comm(length, rows):
    for r in (rmsnorm(SPEC, 1, length, rows), softmax(SPEC, 1, length, rows)):
        assert r.comm_cycles == 0
        assert r.total_cycles == r.compute_cycles > 0


@pytest.mark.parametrize("n_ax", [2, 8, 64, 420])
def test_rmsnorm_contains_one_allreduce_of_fp32_sums(n_ax):
    r = rmsnorm(SPEC, n_ax, 128, rows=3)
    red = ktree_allreduce(SPEC, n_ax, 3, dtype="fp32")
    assert r.comm_cycles == red.total_cycles > 0
    assert r.parts["ktree_allreduce"] == red.total_cycles
    assert r.total_cycles == r.parts["rmsnorm.local"] + red.total_cycles
    local_1 = rmsnorm(SPEC, 1, 128, rows=3)
    assert r.parts["rmsnorm.local"] == local_1.total_cycles


@pytest.mark.parametrize("n_ax", [2, 8, 64, 420])
def test_softmax_contains_two_allreduces(n_ax):
    r = softmax(SPEC, n_ax, 100, rows=4)
    red = ktree_allreduce(SPEC, n_ax, 4, dtype="fp32").total_cycles
    assert r.comm_cycles == 2 * red
    assert r.parts["ktree_allreduce"] == 2 * red
    assert r.total_cycles == softmax(SPEC, 1, 100, rows=4).total_cycles + 2 * red


def test_rmsnorm_local_formula():
    length, rows = 256, 2
    r = rmsnorm(SPEC, 1, length, rows)
    c = SPEC.op_issue_cycles
    sumsq = rows * (c + math.ceil(length / SPEC.simd_width("fmac", "fp16_fp32")))
    rsqrt = c + rows * SPEC.scalar_fn_cycles
    scale_mul = rows * (c + math.ceil(length / SPEC.simd_width("scale", "fp16"))
                        + c + math.ceil(length / SPEC.simd_width("mul", "fp16")))
    assert r.total_cycles == sumsq + rsqrt + scale_mul


def test_kv_append_independent_of_rows():
    """The shift has no P_y term: every shifting row moves one entry one hop at once, the same in a
    decode layer on 3 or 200 rows, up to the SIMD width of the K copies, whose stride is the ring's
    capacity (⌈context/P_y⌉; hardware-and-csl.md §3.2). When P_y divides the context nobody shifts:
    the bottom row only writes the new entry."""
    from plmr.transformer import LayerDims, decode_layer, head_layout

    dims = LayerDims(hidden=512, ffn=1024, num_heads=8, num_kv_heads=2, head_dim=64)
    shifting = {decode_layer(SPEC, dims, p_y, 16, 40 * p_y + 1).parts["kv_append"] for p_y in (3, 7, 64, 200)}
    assert head_layout(dims, 16).kv_features == 8  # 2 KV groups of 8 columns, 32 RoPE pairs each: 4 per column
    kv_x = head_layout(dims, 16).kv_features
    assert max(shifting) - min(shifting) <= 2 * kv_x  # two strided copies, at worst one element per cycle
    still = {decode_layer(SPEC, dims, p_y, 16, 40 * p_y).parts["kv_append"] for p_y in (3, 7, 64, 200)}
    assert len(still) == 1 and max(still) < min(shifting)


@pytest.mark.parametrize("f", [
    lambda n: rope(SPEC, n),
    lambda n: silu_mul(SPEC, n),
    lambda n: rope(SPEC, n, rows=5),
    lambda n: silu_mul(SPEC, n, rows=5),
    lambda n: scalar_function(SPEC, n),
    lambda n: elementwise(SPEC, n, "add"),
], ids=["rope", "silu", "rope_rows", "silu_rows", "fn", "add"])
def test_local_ops_positive_and_growing(f):
    costs = [f(n).total_cycles for n in range(1, 2000, 7)]
    assert costs[0] > 0
    assert all(a <= b for a, b in zip(costs, costs[1:]))
    assert costs[-1] > costs[0]
    assert all(f(n).comm_cycles == 0 for n in (1, 100, 1999))


def test_rope_formula():
    # features 10 -> half 5: 4 multiplies and 2 adds of 5 elements
    c = SPEC.op_issue_cycles
    assert rope(SPEC, 10).total_cycles == 4 * (c + 2) + 2 * (c + 2)
    assert rope(SPEC, 10, rows=3).total_cycles == 3 * rope(SPEC, 10).total_cycles


def test_silu_formula():
    c = SPEC.op_issue_cycles
    assert silu_mul(SPEC, 100).total_cycles == (c + 100 * SPEC.scalar_fn_cycles) + 2 * (c + 25)


def test_zero_length_is_free():
    assert elementwise(SPEC, 0).total_cycles == 0
    assert scalar_function(SPEC, 0).total_cycles == 0
    assert rope(SPEC, 0).total_cycles == 0


def test_in_sequence():
    a = CostBreakdown("a", 10.0, 5.0, 15.0, bytes_per_pe=100, colors_per_pe=3)
    b = CostBreakdown("b", 1.0, 2.0, 3.0, bytes_per_pe=300, colors_per_pe=1)
    s = in_sequence("ab", [a, b, a])
    assert (s.compute_cycles, s.comm_cycles, s.total_cycles) == (21.0, 12.0, 33.0)
    assert s.bytes_per_pe == 300 and s.colors_per_pe == 3
    assert s.parts == {"a": 30.0, "b": 3.0}
    assert in_sequence("none", []).total_cycles == 0
    t = a.scaled(4)
    assert t.total_cycles == 60.0 and t.bytes_per_pe == 100 and t.colors_per_pe == 3
    assert a.to_dict()["total_cycles"] == 15.0
