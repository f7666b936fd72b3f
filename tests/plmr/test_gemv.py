"""Distributed GEMV costs (method §6.6): MeshGEMV (K-tree), the pipeline baseline and the ring."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr import (
    WSE2, broadcast, chain_reduce, gemv_pipeline, gemv_ring, ktree_allreduce, local_gemv_cycles, meshgemv,
    pipeline_allreduce, ring_allreduce,
)

SPEC = WSE2.with_params(op_issue_cycles=11.0, ramp_cycles=5.0, hop_cycles=2.0, relay_cycles=3.0,
                        collective_cycles=37.0, task_cycles=13.0)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 500), n=st.integers(1, 500))
def test_local_gemv_formula(m, n):
    F = SPEC.simd_width("fmac", "fp16")
    assert local_gemv_cycles(SPEC, m, n) == m * (SPEC.op_issue_cycles + math.ceil(n / F))
    assert local_gemv_cycles(SPEC, 0, n) == 0


@pytest.mark.parametrize("f", [meshgemv, gemv_pipeline, gemv_ring])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_one_pe_is_local_only(f, axis):
    r = f(SPEC, 1, 1, 300, 200, axis=axis)
    assert r.comm_cycles == 0
    assert r.total_cycles == r.compute_cycles == local_gemv_cycles(SPEC, 300, 200)
    assert r.bytes_per_pe == (300 * 200 + 300 + 2 * 200) * 2


@settings(max_examples=60, deadline=None)
@given(a=st.integers(1, 64), b=st.integers(1, 64), M=st.integers(1, 2000), N=st.integers(1, 2000))
def test_axis_x_swaps_roles(a, b, M, N):
    for f in (meshgemv, gemv_pipeline, gemv_ring):
        y = f(SPEC, a, b, M, N, axis="y")
        x = f(SPEC, b, a, M, N, axis="x")
        assert y.total_cycles == x.total_cycles
        assert y.bytes_per_pe == x.bytes_per_pe


def test_axis_y_reduces_along_rows_axis_x_along_columns():
    # 4 rows, 64 columns: reducing along y is a 4-PE allreduce, along x a 64-PE one.
    M, N = 256, 256
    y = meshgemv(SPEC, 4, 64, M, N, axis="y")
    x = meshgemv(SPEC, 4, 64, M, N, axis="x")
    assert y.comm_cycles == ktree_allreduce(SPEC, 4, N // 64).total_cycles
    assert x.comm_cycles == ktree_allreduce(SPEC, 64, N // 4).total_cycles
    assert y.compute_cycles == local_gemv_cycles(SPEC, M // 4, N // 64)
    assert x.compute_cycles == local_gemv_cycles(SPEC, M // 64, N // 4)


def test_bad_axis():
    with pytest.raises(ValueError):
        meshgemv(SPEC, 4, 4, 16, 16, axis="z")


def test_meshgemv_much_faster_than_pipeline_at_512():
    mg = meshgemv(WSE2, 512, 512, 4096, 4096)
    pl = gemv_pipeline(WSE2, 512, 512, 4096, 4096)
    assert pl.total_cycles > 2 * mg.total_cycles
    assert pl.comm_cycles > 2.2 * mg.comm_cycles
    assert mg.compute_cycles == pl.compute_cycles


@settings(max_examples=60, deadline=None)
@given(p_y=st.integers(2, 300), p_x=st.integers(1, 300), M=st.integers(1, 8192), N=st.integers(1, 8192))
def test_k1_meshgemv_is_local_plus_chain_plus_broadcast(p_y, p_x, M, N):
    m, n = math.ceil(M / p_y), math.ceil(N / p_x)
    r = meshgemv(SPEC, p_y, p_x, M, N, k=1)
    local = local_gemv_cycles(SPEC, m, n)
    chain = chain_reduce(SPEC, p_y, n).total_cycles
    bcast = broadcast(SPEC, p_y, n).total_cycles
    # one allreduce = one collective: its constant is paid once, not once per sub-collective
    assert r.total_cycles == local + chain + bcast - SPEC.collective_cycles
    on_wse2 = meshgemv(WSE2, p_y, p_x, M, N, k=1).total_cycles
    assert on_wse2 == (local_gemv_cycles(WSE2, m, n) + chain_reduce(WSE2, p_y, n).total_cycles
                       + broadcast(WSE2, p_y, n).total_cycles)


@settings(max_examples=60, deadline=None)
@given(p_y=st.integers(2, 300), p_x=st.integers(1, 300), M=st.integers(1, 8192), N=st.integers(1, 8192))
def test_gemv_is_local_plus_its_allreduce(p_y, p_x, M, N):
    m, n = math.ceil(M / p_y), math.ceil(N / p_x)
    local = local_gemv_cycles(SPEC, m, n)
    assert meshgemv(SPEC, p_y, p_x, M, N).total_cycles == local + ktree_allreduce(SPEC, p_y, n).total_cycles
    assert gemv_pipeline(SPEC, p_y, p_x, M, N).total_cycles == local + pipeline_allreduce(SPEC, p_y, n).total_cycles
    assert gemv_ring(SPEC, p_y, p_x, M, N).total_cycles == local + ring_allreduce(SPEC, p_y, n).total_cycles


def test_meshgemv_parts_and_colours():
    r = meshgemv(SPEC, 64, 64, 4096, 4096, k=2, group_counts=(8,))
    assert set(r.parts) == {"local", "allreduce.phase1", "allreduce.phase2", "allreduce.broadcast"}
    assert r.parts["local"] == r.compute_cycles
    assert r.colors_per_pe == 5
    assert meshgemv(SPEC, 64, 64, 4096, 4096, k=3).colors_per_pe == 7
    assert meshgemv(SPEC, 64, 64, 4096, 4096, with_broadcast=False).colors_per_pe == 4
    assert gemv_pipeline(SPEC, 64, 64, 4096, 4096).colors_per_pe == 3


def test_meshgemv_bytes():
    r = meshgemv(SPEC, 8, 16, 1000, 2000)
    m, n = 125, 125
    assert r.bytes_per_pe == (m * n + m + 2 * n) * 2
