"""GEMV kernels (meshgemv, gemv-pipeline, gemv-ring): numerics vs numpy on small meshes and odd
dims, both reduction axes, K in {1, 2, 3} with explicit group sizes; the result on every PE of the
line; resource errors at build time; cost-model agreement on a fast subset.

fp32 check: |y - y_ref| <= 1e-5 · Σ_i |x_i W_ij| per output (the scale of the sum's rounding, not of
its result: an output that nearly cancels has a tiny |y_ref| and the same rounding; a wrong or missing
term is off by |x_i W_ij| and fails).

fp16 bound (documented in docs/KERNEL_AGREEMENT.md): every product and every sum is rounded to fp16
(unit roundoff u = 2^-11): the local GEMV rounds 2 times per term of its m-term sum, the allreduce
once per stage (at most n_ax stages), so |y - y_ref| <= (2m + n_ax + 1) · u · Σ_i |x_i W_ij| to
first order; tested with a factor 1.5.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr.errors import InputError
from plmr.hardware import WSE2
from plmr.primitives import balanced_split
from simulator import simulate

from meshgemm import gemv as G
from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from meshgemm.run import run_kernel

BUILDERS = {"meshgemv": G.build_meshgemv, "gemv-pipeline": G.build_gemv_pipeline, "gemv-ring": G.build_gemv_ring}


def _build(name, mesh, k, n, axis="y", dtype="fp32", K=2, g=None, seed=0, functional=True):
    req = KernelRequest(name, mesh, 1, k, n, dtype=dtype, k_tree=K, group_size=g, seed=seed,
                        functional=functional)
    return BUILDERS[name](req, WSE2, axis=axis)


def _abs_sum(b) -> np.ndarray:
    """Σ_i |x_i W_ij| per output: the scale of the sum's rounding error."""
    return np.abs(b.inputs["x"].astype(np.float64)) @ np.abs(b.inputs["W"].astype(np.float64))


def _check_all_copies(b, res, axis):
    """Every PE of each reduction line holds the full result block (after the broadcast)."""
    prog = b.program
    y = b.expected["y"][0]
    scale = _abs_sum(b)[0]
    n_ax, n_other = (prog.height, prog.width) if axis == "y" else (prog.width, prog.height)
    off = 0
    for line, ln in enumerate(balanced_split(len(y), n_other)):
        blk = None
        for p in range(n_ax):
            x, yy = (line, p) if axis == "y" else (p, line)
            v = res.buffer(x, yy, "y")[:ln].astype(np.float64)
            if blk is None:
                blk = v
                assert np.all(np.abs(v - y[off:off + ln]) <= 1e-5 * scale[off:off + ln]), (v, y[off:off + ln])
            else:
                np.testing.assert_array_equal(v, blk)
        off += ln


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(BUILDERS)), py=st.integers(1, 9), px=st.integers(1, 13),
       axis=st.sampled_from(["x", "y"]), K=st.integers(1, 3), data=st.data())
def test_fp32_equals_numpy(name, py, px, axis, K, data):
    n_ax, n_other = (py, px) if axis == "y" else (px, py)
    k = data.draw(st.integers(n_ax, 3 * n_ax + 5))
    n = data.draw(st.integers(n_other, 3 * n_other + 4))
    g = data.draw(st.one_of(st.none(), st.integers(1, max(n_ax, 1))))
    b = _build(name, (py, px), k, n, axis, "fp32", K, g, seed=data.draw(st.integers(0, 99)))
    res = simulate(b.program, WSE2)
    y = b.gather(res)["y"]
    ref = b.expected["y"]
    assert y.shape == ref.shape == (1, n)
    assert np.all(np.abs(y - ref) <= 1e-5 * _abs_sum(b)), (y, ref)
    _check_all_copies(b, res, axis)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(BUILDERS)), py=st.integers(1, 9), px=st.integers(1, 13),
       K=st.integers(1, 3), seed=st.integers(0, 99))
def test_fp16_within_documented_bound(name, py, px, K, seed):
    k, n = 4 * py + 3, 2 * px + 1
    b = _build(name, (py, px), k, n, "y", "fp16", K, seed=seed)
    rep = run_kernel(b, WSE2, "functional")
    x, w = b.inputs["x"].astype(np.float64), b.inputs["W"].astype(np.float64)
    m = -(-k // py)
    bound = 1.5 * (2 * m + py + 1) * 2.0 ** -11 * (np.abs(x) @ np.abs(w))
    y = b.gather(simulate(b.program, WSE2))["y"].astype(np.float64)
    assert np.all(np.abs(y - b.expected["y"]) <= bound)
    assert rep.max_abs_error <= bound.max()


@pytest.mark.parametrize("K,g", [(1, None), (2, 2), (2, 3), (2, 9), (3, 2), (3, 4), (4, None)])
def test_k_and_group_sizes_17_rows(K, g):
    b = _build("meshgemv", (17, 3), 61, 10, "y", "fp32", K, g)
    res = simulate(b.program, WSE2)
    np.testing.assert_allclose(b.gather(res)["y"], b.expected["y"], rtol=1e-5, atol=1e-5)
    _check_all_copies(b, res, "y")


def test_without_broadcast_result_only_on_root_row():
    req = KernelRequest("meshgemv", (6, 2), 1, 20, 5, dtype="fp32")
    b = G.build_meshgemv(req, WSE2, with_broadcast=False)
    res = simulate(b.program, WSE2)
    np.testing.assert_allclose(b.gather(res)["y"], b.expected["y"], rtol=1e-5, atol=1e-5)
    assert "root row" in b.layout["y"]


def test_registry_dispatch_and_layout():
    b = build_kernel(KernelRequest("gemv-ring", (4, 3), 1, 9, 7), WSE2)
    assert b.layout["scheme"] == "ring allreduce"
    b = build_kernel(KernelRequest("meshgemv", (4, 3), 1, 9, 7, k_tree=1), WSE2)
    assert "X-dist" in b.layout["y"]


def test_bad_requests():
    with pytest.raises(InputError, match="m = 1"):
        G.build_meshgemv(KernelRequest("meshgemv", (2, 2), 2, 4, 4), WSE2)
    with pytest.raises(InputError, match="smaller than the 5 PEs"):
        G.build_gemv_pipeline(KernelRequest("gemv-pipeline", (5, 2), 1, 4, 4), WSE2)
    # K = 10 needs 2K+1 = 21 colours: exactly wse2's routable count
    G.build_meshgemv(KernelRequest("meshgemv", (64, 1), 1, 64, 1, k_tree=10, functional=False), WSE2)
    with pytest.raises(InputError, match=r"needs 23 colours per PE; wse2 has 21"):
        G.build_meshgemv(KernelRequest("meshgemv", (64, 1), 1, 64, 1, k_tree=11, functional=False), WSE2)


def test_sram_overflow_names_the_pe():
    # a 200 x 200 fp32 weight block (160,000 B) per PE of 48 KB
    with pytest.raises(InputError, match=r"PE \(0, 0\): SRAM overflow .* largest 'w' 160000 B"):
        _build("meshgemv", (2, 2), 400, 400, functional=False)


def test_resources_match_prediction():
    b = _build("meshgemv", (8, 8), 64, 64, dtype="fp16", functional=False)
    assert b.bytes_per_pe() == b.predicted.bytes_per_pe == (8 * 8 + 8 + 16) * 2
    assert b.colors_per_pe() <= b.predicted.colors_per_pe == 5


@pytest.mark.parametrize("name,P,N,K", [
    ("meshgemv", 8, 256, 1), ("meshgemv", 16, 1024, 2), ("meshgemv", 32, 1024, 3),
    ("gemv-pipeline", 16, 1024, 2), ("gemv-pipeline", 32, 512, 2),
    ("gemv-ring", 16, 1024, 2), ("gemv-ring", 32, 512, 2),
])
def test_agreement_fast_subset(name, P, N, K):
    b = _build(name, (P, P), N, N, dtype="fp16", K=K, functional=False)
    rep = run_kernel(b, WSE2, "timing")
    assert abs(rep.ratio - 1) <= 0.10, rep.to_dict()
    assert rep.compute_cycles == rep.predicted_compute_cycles


def test_predicted_colours_per_pe_are_the_programs():
    """The R metric of a MeshGEMV: the most colours a PE routes in the built program (its route table)
    equals ``plmr.ktree.routed_colours`` + the multicast, for K 1-3, default and given group sizes."""
    from meshgemm.collectives import ktree_group_counts
    from plmr.ktree import build_ktree, routed_colours

    seen = set()
    for n in range(2, 25):
        for k, g in [(1, None), (2, None), (2, 2), (2, 3), (3, None), (3, 2)]:
            try:
                tree = build_ktree(n, k, ktree_group_counts(n, k, g))
            except InputError:
                continue  # more levels than the line has PEs for
            b = build_kernel(KernelRequest("meshgemv", (n, 2), 1, 4 * n, 8, k_tree=k, group_size=g,
                                           functional=False), WSE2)
            assert b.predicted.colors_per_pe == b.colors_per_pe() == routed_colours(tree) + 1, (n, k, g)
            seen.add(b.colors_per_pe())
    assert len(seen) >= 4  # the cases reach levels of one-hop chains, not only 2K + 1
