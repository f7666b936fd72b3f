"""meshgemm.decode_collectives: the decode program's line trees, simulated on small regions placed away from
the program's origin, against numpy: sums, element-wise maxima, (value, index) argmax with ties to the lowest
index, and the per-group allreduce whose groups are balanced column ranges; the K = 1 tree sums in the block
model's order bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from meshgemm.block_dataflow import line_allreduce
from meshgemm.decode_collectives import LineTree
from plmr.hardware import WSE2
from plmr.ktree import build_ktree
from plmr.primitives import balanced_split
from simulator import Body, MeshProgram, simulate
from simulator.expr import X, Y
from simulator.instructions import Ref

RNG = np.random.default_rng(7)


def _run(axis, n, lines, groups, combine, width, data, group_only=False, x0=2, y0=1):
    """A region of n positions × ``lines`` lines at (x0, y0) inside a larger program; every PE holds
    ``data[line][pos]`` (``width`` values) in buffer a; returns the simulated buffers [line][pos]."""
    w, h = (lines, n) if axis == "y" else (n, lines)
    prog = MeshProgram(w + x0 + 1, h + y0 + 2, WSE2)
    tree = LineTree(axis, n, groups, tuple(range(3, 3 + 6)), "t", group_bcast=group_only)
    body = Body("coll")
    body.buffer("a", "fp32", width)
    body.buffer("s", "fp32", width)
    body.buffer("s2", "fp32", width)
    tree.declare(body)
    a, s, s2 = Ref("a", 0, width), Ref("s", 0, width), Ref("s2", 0, width)
    code = tree.group_allreduce(a, s) if group_only else tree.allreduce(a, s, s2, combine)
    body.function("main", code)
    xr, yr = range(x0, x0 + w), range(y0, y0 + h)
    q = (Y - y0) if axis == "y" else (X - x0)
    prog.place(body, xr, yr, params=tree.values(q))
    tree.routes(prog, xr, yr, q)
    for ln in range(lines):
        for p in range(n):
            xy = (x0 + ln, y0 + p) if axis == "y" else (x0 + p, y0 + ln)
            prog.set_data(*xy, "a", data[ln][p])
    res = simulate(prog, WSE2)
    out = [[res.buffer(*((x0 + ln, y0 + p) if axis == "y" else (x0 + p, y0 + ln)), "a")
            for p in range(n)] for ln in range(lines)]
    return out, tree


@pytest.mark.parametrize("axis,n,groups", [("y", 7, 1), ("x", 9, 3), ("x", 10, 4), ("y", 2, 1), ("x", 13, 2),
                                           ("y", 5, 5)])
def test_sum_allreduce(axis, n, groups):
    data = [RNG.normal(size=(n, 5)).astype(np.float32) for _ in range(2)]
    out, _ = _run(axis, n, 2, groups, "sum", 5, data)
    for ln in range(2):
        want = data[ln].astype(np.float64).sum(axis=0)
        for p in range(n):
            np.testing.assert_allclose(out[ln][p], want, rtol=1e-5, atol=1e-6)


def test_single_chain_sums_in_the_block_models_order():
    n = 8
    data = [(RNG.normal(size=(n, 4)) * 10 ** RNG.uniform(-3, 3, size=(n, 1))).astype(np.float32)]
    out, _ = _run("y", n, 1, 1, "sum", 4, data)
    ours = line_allreduce([data[0][i] for i in range(n)], build_ktree(n, 1))
    for p in range(n):
        np.testing.assert_array_equal(out[0][p], ours[p])


@pytest.mark.parametrize("axis,n,groups", [("y", 6, 1), ("x", 11, 3)])
def test_max_allreduce(axis, n, groups):
    data = [RNG.normal(size=(n, 3)).astype(np.float32) for _ in range(3)]
    data[1][:, 0] = -np.inf  # a head with no cached keys on any row stays -inf
    out, _ = _run(axis, n, 3, groups, "max", 3, data)
    for ln in range(3):
        for p in range(n):
            np.testing.assert_array_equal(out[ln][p], data[ln].max(axis=0))


@pytest.mark.parametrize("n,groups", [(7, 1), (12, 3)])
def test_argmax_allreduce_ties_to_the_lowest_index(n, groups):
    vals = RNG.integers(0, 4, size=n).astype(np.float32)  # many ties
    idx = RNG.permutation(n).astype(np.float32) * 10
    data = [np.stack([vals, idx], axis=1)]
    out, _ = _run("x", n, 1, groups, "argmax", 2, data)
    best = vals.max()
    want = idx[vals == best].min()
    for p in range(n):
        np.testing.assert_array_equal(out[0][p], [best, want])


@pytest.mark.parametrize("n,groups", [(9, 2), (10, 3), (7, 7), (8, 1)])
def test_group_allreduce_sums_within_balanced_column_groups(n, groups):
    data = [RNG.normal(size=(n, 4)).astype(np.float32) for _ in range(2)]
    out, tree = _run("x", n, 2, groups, "sum", 4, data, group_only=True)
    sizes = balanced_split(n, groups)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for ln in range(2):
        for g in range(groups):
            want = data[ln][starts[g]:starts[g + 1]].astype(np.float64).sum(axis=0)
            for p in range(starts[g], starts[g + 1]):
                np.testing.assert_allclose(out[ln][p], want, rtol=1e-5, atol=1e-6)


def test_receive_counts_match_the_programs_input_queues():
    """The per-position colour count the landing-column choice relies on equals what the build binds."""
    n, groups = 13, 3
    tree = LineTree("x", n, groups, tuple(range(3, 9)), "t", group_bcast=True)
    prog = MeshProgram(n, 1, WSE2)
    body = Body("coll")
    body.buffer("a", "fp32", 2)
    body.buffer("s", "fp32", 2)
    tree.declare(body)
    body.function("main", tree.allreduce(Ref("a", 0, 2), Ref("s", 0, 2)) + tree.group_allreduce(
        Ref("a", 0, 2), Ref("s", 0, 2)))
    prog.place(body, params=tree.values(X))
    from simulator.resources import block_colours
    prog.finalize()
    blocks = prog.pe_blocks()
    got = [len(block_colours(prog.blocks[int(blocks[x])])[0]) for x in range(n)]
    assert got == list(tree.receive_counts())
    assert max(got) <= 4


def test_a_sum_needs_no_scratch_a_max_does():
    """A sum adds each stream into the vector itself: its code never names the scratch (the decode program
    therefore sizes ``scr`` for the max and argmax vectors only); a max without one is refused."""
    from plmr.errors import InputError
    tree = LineTree("x", 9, 3, tuple(range(3, 9)), "t", group_bcast=True)
    a, s = Ref("a", 0, 4), Ref("s", 0, 4)
    assert tree.allreduce(a, None) == tree.allreduce(a, s)
    assert tree.group_allreduce(a) == tree.group_allreduce(a, s)
    assert "'s'" not in repr(tree.allreduce(a, s)) and "'s'" in repr(tree.allreduce(a, s, combine="max"))
    with pytest.raises(InputError, match="scratch"):
        tree.allreduce(a, None, combine="max")
