"""The routing patterns written as expressions of the line position (meshgemm.line_rules) set exactly
the routes of the transfer lists of meshgemm.routing (the brute-force, per-position derivation), for
every line length and K-tree shape tried."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from meshgemm import line_rules as L
from meshgemm.layout import directed_chain_transfers, interleaved_ring, plain_ring, route_line
from meshgemm.routing import ktree_transfers, multicast_transfer
from plmr.hardware import WSE2
from plmr.ktree import build_ktree
from simulator import MeshProgram
from simulator.expr import X, Y


def _same_routes(n: int, axis: str, old, new) -> None:
    shape = (n, 1) if axis == "x" else (1, n)
    a, b = MeshProgram(*shape, WSE2), MeshProgram(*shape, WSE2)
    old(a)
    new(b)
    assert np.array_equal(a._rx, b._rx) and np.array_equal(a._tx, b._tx), (n, axis)


@pytest.mark.parametrize("kind", ["interleaved", "plain"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_rings(kind, reverse, axis):
    q = X if axis == "x" else Y
    for n in range(2, 26):
        ring = (interleaved_ring if kind == "interleaved" else plain_ring)(n)
        _same_routes(n, axis,
                     lambda p: route_line(p, ring.rev if reverse else ring.fwd, axis, lambda s: s),
                     lambda p: L.route_slots(p, axis, L.RingExprs(n, p.param("N", n), kind).roles(q, reverse),
                                             lambda s: s))


def test_ring_roles_match_the_ring():
    for n in range(3, 30):
        ring = interleaved_ring(n)
        r = L.RingExprs(n, n, "interleaved")
        for p in range(n):
            from simulator.expr import evaluate
            assert evaluate(r.send_to(p), {}) == ring.succ(p)
            assert evaluate(r.recv_from(p), {}) == ring.pred(p)
            assert evaluate(r.pos(p), {}) == ring.pos[p]
            assert evaluate(r.slot(p), {}) == ring.send_slot(p)


def _tree_shapes():
    for n in list(range(1, 24)) + [37, 64]:
        for k in (1, 2, 3):
            options = [None] + [c for c in itertools.product(range(1, min(n, 6) + 1), repeat=k - 1)][:10]
            for counts in options:
                try:
                    yield build_ktree(n, k, counts)
                except Exception:
                    continue


def test_ktree_levels():
    for tree in _tree_shapes():
        n, gc = tree.n, tree.group_counts

        def old(p):
            for phase in ktree_transfers(tree, with_broadcast=False):
                route_line(p, phase, "x", lambda s: s)

        def new(p):
            levels = L.ktree_levels(gc, p.param("N", n), [p.param(f"G{k}", g) for k, g in enumerate(gc)])
            for lv in levels:
                L.route_slots(p, "x", L.ktree_roles(lv, X), lambda s, k=lv.k: 2 * k + s)

        _same_routes(n, "x", old, new)


def test_ktree_roles_and_root():
    from simulator.expr import evaluate
    for tree in _tree_shapes():
        n, gc = tree.n, tree.group_counts
        levels = L.ktree_levels(gc, n, list(gc))
        assert evaluate(L.ktree_global_root(levels[-1]), {}) == tree.root
        for lv, level in zip(levels, tree.levels):
            for group, root in zip(level.groups, level.roots):
                i = group.index(root)
                for j, p in enumerate(group):
                    role = evaluate(L.ktree_role(lv, p).role, {})
                    if p == root:
                        sides = (i > 0) + (i < len(group) - 1)
                        assert role == {0: L.ROLE_NONE, 1: L.ROLE_ROOT1, 2: L.ROLE_ROOT2}[sides]
                    elif j in (0, len(group) - 1):
                        assert role == L.ROLE_SEND
                    else:
                        assert role == L.ROLE_RELAY
            others = set(range(n)) - {p for g in level.groups for p in g}
            for p in others:
                assert evaluate(L.ktree_role(lv, p).role, {}) == L.ROLE_NONE


def test_multicast_and_directed_chains():
    for n in range(1, 20):
        for root in range(n):
            _same_routes(n, "x", lambda p: route_line(p, multicast_transfer(n, root, 0), "x", lambda s: s),
                         lambda p: p.route_rule(None, None, 0, *L.multicast_masks("x", X, p.param("N", n),
                                                                                  p.param("R", root))))
        _same_routes(n, "y", lambda p: route_line(p, sum(directed_chain_transfers(n), []), "y", lambda s: s),
                     lambda p: L.route_slots(p, "y", L.directed_chain_roles(Y, p.param("N", n)), lambda s: s))
