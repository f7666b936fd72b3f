"""meshgemm.collectives: each stand-alone collective equals numpy on small meshes, along both axes,
for selected lines, uneven buffer lengths and every K; resource errors name need and limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr.errors import InputError
from plmr.hardware import WSE2
from simulator import Body, MeshProgram, simulate
from simulator.expr import Param, X, Y, eq

from meshgemm import collectives as C
from meshgemm.kernel import ColourMap


def _run(h, w, axis, lens, make, dtype="fp32", seed=0):
    """Build a program whose line l holds buffer 'a' of length lens[l] with random data, add the
    collective ``make(prog)`` returns, simulate; returns (result, data per line)."""
    prog = MeshProgram(w, h, WSE2)
    rng = np.random.default_rng(seed)
    n_ax = C.axis_length(prog, axis)
    data = {line: rng.uniform(-1, 1, size=(n_ax, ln)).astype(np.float32) for line, ln in enumerate(lens)}
    coll = make(prog)
    b = Body("coll")
    length = b.param("len")
    b.buffer("a", dtype, length)
    b.buffer("s", dtype, length)
    coll.declare(b)
    b.function("main", coll.code)
    line = X if axis == "y" else Y
    len_of = np.asarray(lens)
    prog.place(b, params={"len": lambda xs, ys: len_of[xs if axis == "y" else ys], **coll.values()})
    for ln, vals in data.items():
        for p in range(n_ax):
            prog.set_data(*_sel(axis, p, ln), "a", vals[p])
    return simulate(prog, WSE2), data, coll


def _sel(axis, p, line):
    return (line, p) if axis == "y" else (p, line)


def _read(res, axis, p, line):
    return res.buffer(*_sel(axis, p, line), "a").astype(np.float64)


shapes = st.tuples(st.integers(1, 9), st.integers(1, 13), st.sampled_from(["x", "y"]))


@settings(max_examples=20, deadline=None)
@given(shape=shapes, k=st.integers(1, 3), data=st.data())
def test_ktree_allreduce_numerics(shape, k, data):
    h, w, axis = shape
    n_ax, n_lines = (h, w) if axis == "y" else (w, h)
    lens = [data.draw(st.integers(1, 7)) for _ in range(n_lines)]
    counts = None
    if k >= 2 and n_ax > 1:
        g = data.draw(st.integers(1, n_ax))
        counts = C.ktree_group_counts(n_ax, k, g)
    cm = ColourMap(WSE2, 2 * k + 1, "t")
    res, vals, _ = _run(h, w, axis, lens, lambda p: C.ktree_allreduce(p, axis, "a", "s", cm.__getitem__, k=k,
                                                                     group_counts=counts))
    for line in range(n_lines):
        ref = vals[line].astype(np.float64).sum(axis=0)
        for p in range(n_ax):
            np.testing.assert_allclose(_read(res, axis, p, line), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["pipeline", "chain", "ring"])
@pytest.mark.parametrize("shape", [(1, 1, "y"), (2, 3, "y"), (7, 4, "y"), (5, 9, "x"), (9, 13, "x"), (13, 2, "y")])
def test_other_allreduces_numerics(kind, shape):
    h, w, axis = shape
    n_ax, n_lines = (h, w) if axis == "y" else (w, h)
    lens = [max(n_ax, 3 + l % 3) if kind == "ring" else 1 + l % 4 for l in range(n_lines)]
    cm = ColourMap(WSE2, 3, "t").__getitem__

    def make(prog):
        if kind == "pipeline":
            return C.pipeline_allreduce(prog, axis, "a", "s", cm)
        if kind == "chain":
            return C.chain_allreduce(prog, axis, "a", "s", cm, root=n_ax // 3)
        return C.ring_allreduce(prog, axis, "a", Param("len"), cm)

    res, vals, _ = _run(h, w, axis, lens, make, seed=1)
    for line in range(n_lines):
        ref = vals[line].astype(np.float64).sum(axis=0)
        for p in range(n_ax):
            np.testing.assert_allclose(_read(res, axis, p, line), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("root", [0, 2, 5])
def test_broadcast_and_reduce_only_on_selected_lines(root):
    h, w, axis = 6, 4, "y"
    cm = ColourMap(WSE2, 3, "t").__getitem__
    on = eq(X, 1) | eq(X, 3)
    res, vals, _ = _run(h, w, axis, [3, 3, 2, 2], lambda p: C.broadcast(p, axis, "a", root, cm(0), lines=on))
    for line in range(4):
        for p in range(h):
            want = vals[line][root] if line in (1, 3) else vals[line][p]
            np.testing.assert_array_equal(_read(res, axis, p, line), want)
    res, vals, coll = _run(h, w, axis, [3, 3, 2, 2],
                           lambda p: C.ktree_reduce(p, axis, "a", "s", cm, root=root, lines=eq(X, 0)))
    assert coll.root_position(MeshProgram(w, h, WSE2)) == root
    np.testing.assert_allclose(_read(res, axis, root, 0), vals[0].sum(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(_read(res, axis, root, 1), vals[1][root])


def test_ring_needs_a_padded_buffer():
    cm = ColourMap(WSE2, 3, "t").__getitem__
    with pytest.raises(InputError, match="outside its buffer"):
        _run(5, 1, "y", [3], lambda p: C.ring_allreduce(p, "y", "a", Param("len"), cm))


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
