"""meshgemm.collectives: each stand-alone collective equals numpy on small meshes, along both axes,
for selected lines, uneven buffer lengths and every K; resource errors name need and limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr.errors import InputError
from plmr.hardware import WSE2
from simulator import MeshProgram, simulate

from meshgemm import collectives as C
from meshgemm.kernel import ColourMap


def _prog(h, w, axis, lens, dtype="fp32", seed=0):
    """A program whose line l holds buffer 'a' of length lens[l] with random data."""
    prog = MeshProgram(w, h, WSE2)
    rng = np.random.default_rng(seed)
    n_ax = C.axis_length(prog, axis)
    data = {}
    for line, ln in enumerate(lens):
        vals = rng.uniform(-1, 1, size=(n_ax, ln)).astype(np.float32)
        data[line] = vals
        for p in range(n_ax):
            x, y = C.sel(axis, p, line)
            prog.add_buffer(x, y, "a", dtype, ln, init=vals[p])
            prog.add_buffer(x, y, "s", dtype, ln)
    return prog, data


def _read(res, axis, p, line):
    x, y = C.sel(axis, p, line)
    return res.buffer(x, y, "a").astype(np.float64)


shapes = st.tuples(st.integers(1, 9), st.integers(1, 13), st.sampled_from(["x", "y"]))


@settings(max_examples=20, deadline=None)
@given(shape=shapes, k=st.integers(1, 3), data=st.data())
def test_ktree_allreduce_numerics(shape, k, data):
    h, w, axis = shape
    prog = MeshProgram(w, h, WSE2)
    n_ax, n_lines = C.axis_length(prog, axis), C.num_lines(prog, axis)
    lens = [data.draw(st.integers(1, 7)) for _ in range(n_lines)]
    prog, vals = _prog(h, w, axis, lens)
    counts = None
    if k >= 2 and n_ax > 1:
        g = data.draw(st.integers(1, n_ax))
        counts = C.ktree_group_counts(n_ax, k, g)
    cm = ColourMap(WSE2, 2 * k + 1, "t")
    C.emit_ktree_allreduce(prog, axis, "a", "s", cm, k=k, group_counts=counts)
    res = simulate(prog, WSE2)
    for line in range(n_lines):
        ref = vals[line].astype(np.float64).sum(axis=0)
        for p in range(n_ax):
            np.testing.assert_allclose(_read(res, axis, p, line), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["pipeline", "chain", "ring"])
@pytest.mark.parametrize("shape", [(1, 1, "y"), (2, 3, "y"), (7, 4, "y"), (5, 9, "x"), (9, 13, "x"), (13, 2, "y")])
def test_other_allreduces_numerics(kind, shape):
    h, w, axis = shape
    prog = MeshProgram(w, h, WSE2)
    n_ax, n_lines = C.axis_length(prog, axis), C.num_lines(prog, axis)
    lens = [max(n_ax, 3 + l % 3) if kind == "ring" else 1 + l % 4 for l in range(n_lines)]
    prog, vals = _prog(h, w, axis, lens, seed=1)
    cm = ColourMap(WSE2, 3, "t")
    if kind == "pipeline":
        C.emit_pipeline_allreduce(prog, axis, "a", "s", cm)
    elif kind == "chain":
        C.emit_chain_allreduce(prog, axis, "a", "s", cm, root=n_ax // 3)
    else:
        C.emit_ring_allreduce(prog, axis, "a", cm)
    res = simulate(prog, WSE2)
    for line in range(n_lines):
        ref = vals[line].astype(np.float64).sum(axis=0)
        for p in range(n_ax):
            np.testing.assert_allclose(_read(res, axis, p, line), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("root", [0, 2, 5])
def test_broadcast_and_reduce_only_on_selected_lines(root):
    h, w, axis = 6, 4, "y"
    prog, vals = _prog(h, w, axis, [3, 3, 2, 2])
    C.emit_broadcast(prog, axis, "a", root, ColourMap(WSE2, 1, "t")[0], lines=[1, 3])
    res = simulate(prog, WSE2)
    for line in range(4):
        for p in range(h):
            want = vals[line][root] if line in (1, 3) else vals[line][p]
            np.testing.assert_array_equal(_read(res, axis, p, line), want)
    prog, vals = _prog(h, w, axis, [3, 3, 2, 2])
    r = C.emit_chain_reduce(prog, axis, "a", "s", ColourMap(WSE2, 2, "t"), root=root, lines=[0])
    assert r == root
    res = simulate(prog, WSE2)
    np.testing.assert_allclose(_read(res, axis, root, 0), vals[0].sum(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(_read(res, axis, root, 1), vals[1][root])


def test_ring_needs_a_padded_buffer():
    prog, _ = _prog(5, 1, "y", [3])
    with pytest.raises(InputError, match="pad it to at least 5"):
        C.emit_ring_allreduce(prog, "y", "a", [0, 1, 2])


def test_colour_counts():
    assert C.colours_needed("ktree", 64, 2) == 5
    assert C.colours_needed("ktree", 64, 4, broadcast=False) == 8
    assert C.colours_needed("pipeline", 10) == 3
    assert C.colours_needed("ring", 2) == 2 and C.colours_needed("ring", 3) == 3
    assert C.colours_needed("ktree", 1, 5) == 0
    with pytest.raises(InputError, match="needs 23 colours per PE; wse2 has 21"):
        ColourMap(WSE2, 23, "meshgemv")


def test_group_size_maps_to_level1_groups():
    assert C.ktree_group_counts(64, 2, 8) == (8,)
    assert C.ktree_group_counts(10, 2, 3) == (4,)
    assert C.ktree_group_counts(10, 1, 3) is None
    c = C.ktree_group_counts(100, 3, 5)
    assert c[0] == 20 and len(c) == 2
