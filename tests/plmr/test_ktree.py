"""The K-tree structure (method §6.3-6.4): balanced contiguous groups, middle roots, one final group."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr import InputError, KTree, build_ktree
from plmr.ktree import default_group_counts, group_sizes


def _check_tree(tree: KTree, n: int, k: int) -> None:
    assert tree.n == n and tree.k == k
    members = list(range(n))
    for level in tree.levels:
        # Groups are contiguous runs of the participants, in order, covering all of them.
        flat = [p for g in level.groups for p in g]
        assert flat == members
        assert all(len(g) >= 1 for g in level.groups)
        sizes = [len(g) for g in level.groups]
        assert max(sizes) - min(sizes) <= 1, f"unbalanced {sizes}"
        # Each root is the middle member of its group; a group of one is its own root.
        assert len(level.roots) == len(level.groups)
        for g, r in zip(level.groups, level.roots):
            assert r == g[len(g) // 2]
            if len(g) == 1:
                assert r == g[0]
        members = list(level.roots)
    assert len(tree.levels[-1].groups) == 1
    assert tree.root == tree.levels[-1].roots[0]
    assert 0 <= tree.root < n


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 800), k=st.integers(1, 4))
def test_default_tree_structure(n, k):
    tree = build_ktree(n, k)
    _check_tree(tree, n, k)


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 500), data=st.data())
def test_explicit_counts_respected(n, data):
    k = data.draw(st.integers(1, 4))
    counts = []
    remaining = n
    for _ in range(k - 1):
        c = data.draw(st.integers(1, remaining))
        counts.append(c)
        remaining = c
    tree = build_ktree(n, k, tuple(counts))
    _check_tree(tree, n, k)
    assert tree.group_counts == tuple(counts) + (1,)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 64, 101])
def test_k1_is_one_group_rooted_at_the_middle(n):
    tree = build_ktree(n, 1)
    assert tree.k == 1
    assert tree.levels[0].groups == (tuple(range(n)),)
    assert tree.root == n // 2
    assert tree.group_counts == (1,)


def test_authors_example_p64_groups8():
    """P = 64, group_num = 8: roots 4, 12, ..., 60 and global root 36 (method §6.4)."""
    tree = build_ktree(64, 2, (8,))
    assert tree.levels[0].roots == tuple(range(4, 64, 8))
    assert tree.root == 36
    assert group_sizes(tree) == ((8,) * 8, (8,))


def test_uneven_groups_p10_g3():
    """P = 10 with 3 groups (the authors' code fails here): boundaries ⌊i·10/3⌋ = 0, 3, 6, 10."""
    tree = build_ktree(10, 2, (3,))
    assert tree.levels[0].groups == ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))
    assert tree.levels[0].roots == (1, 4, 8)
    assert tree.root == 4  # root of group ⌊G/2⌋ = 1


def test_groups_of_one():
    tree = build_ktree(5, 2, (5,))
    assert tree.levels[0].groups == ((0,), (1,), (2,), (3,), (4,))
    assert tree.levels[0].roots == (0, 1, 2, 3, 4)
    assert tree.levels[0].chain_sides() == [([], [])] * 5
    assert tree.root == 2


def test_chain_sides():
    tree = build_ktree(9, 2, (3,))
    # level 1: (0,1,2) (3,4,5) (6,7,8), chains of one 1-hop link on each side
    assert tree.levels[0].chain_sides() == [([1], [1])] * 3
    # level 2: roots 1, 4, 7 with root 4: one 3-hop express link from each side
    assert tree.levels[1].chain_sides() == [([3], [3])]
    # K=1 on 8: root 4, west chain 4 links, east 3
    assert build_ktree(8, 1).levels[0].chain_sides() == [([1, 1, 1, 1], [1, 1, 1])]
    # n = 6, K = 3, counts (5, 4): last level (0, 1, 2, 5), root 2
    assert build_ktree(6, 3, (5, 4)).levels[2].chain_sides() == [([1, 1], [3])]


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 600), k=st.integers(1, 4))
def test_chain_sides_span_each_group(n, k):
    for level in build_ktree(n, k).levels:
        for group, root, (west, east) in zip(level.groups, level.roots, level.chain_sides()):
            assert sum(west) == root - group[0]
            assert sum(east) == group[-1] - root
            assert len(west) + len(east) == len(group) - 1
            assert all(d >= 1 for d in west + east)


@pytest.mark.parametrize("n", [420, 400, 256, 660, 720])
def test_default_counts_about_sqrt_n(n):
    (g,) = default_group_counts(n, 2)
    assert abs(g - math.sqrt(n)) <= 2
    tree = build_ktree(n, 2)
    assert tree.group_counts == (g, 1)


def test_default_counts_420_is_about_20():
    (g,) = default_group_counts(420, 2)
    assert 19 <= g <= 22


@settings(max_examples=100, deadline=None)
@given(n=st.integers(4, 2000))
def test_default_counts_k2_near_sqrt(n):
    (g,) = default_group_counts(n, 2)
    assert 1 <= g <= n
    assert 0.6 * math.sqrt(n) <= g <= 1.6 * math.sqrt(n)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(8, 4000))
def test_default_counts_k3_decrease(n):
    counts = default_group_counts(n, 3)
    assert len(counts) == 2
    assert n >= counts[0] >= counts[1] >= 1
    # about n^(2/3) then n^(1/3) groups
    assert counts[0] <= 2.5 * n ** (2 / 3)


@pytest.mark.parametrize(
    "n,k,counts,needle",
    [
        (0, 2, None, "at least one PE"),
        (-3, 1, None, "at least one PE"),
        (10, 0, None, "K >= 1"),
        (10, -1, None, "K >= 1"),
        (10, 2, (11,), "11 groups for 10"),
        (10, 2, (0,), "0 groups"),
        (10, 3, (4, 5), "5 groups for 4"),
        (10, 2, (2, 2), "needs 1 group counts"),
        (10, 3, (2,), "needs 2 group counts"),
        (10, 1, (2,), "needs 0 group counts"),
    ],
)
def test_invalid_inputs(n, k, counts, needle):
    with pytest.raises(InputError) as exc:
        build_ktree(n, k, counts)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 1200), k=st.integers(1, 6))
def test_chain_spans_are_the_distinct_chain_sides_of_the_tree(data, n, k):
    """``chain_spans`` (from group boundaries, memoised) against the tree's own groups: per level,
    the set of (west links, west hops, east links, east hops) of ``chain_sides``, and the root."""
    from plmr.ktree import chain_spans

    counts, m = [], n
    for _ in range(k - 1):
        counts.append(data.draw(st.integers(1, m)))
        m = counts[-1]
    counts = tuple(counts) if data.draw(st.booleans()) else None
    tree = build_ktree(n, k, counts)
    levels, root = chain_spans(n, k, counts)
    assert root == tree.root and len(levels) == tree.k
    for level, spans in zip(tree.levels, levels):
        want = {(len(w), sum(w), len(e), sum(e)) for w, e in level.chain_sides()}
        got = [(c.west_links, c.west_hops, c.east_links, c.east_hops) for c in spans]
        assert len(got) == len(set(got)) and set(got) == want


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 1200), k=st.integers(1, 6), one_sided=st.booleans())
def test_line_chain_spans_are_the_distinct_chain_sides_of_the_line_tree(data, n, k, one_sided):
    """``line_chain_spans`` (from group sizes and root positions, memoised) against ``build_line_tree``'s
    own groups: per level, the set of (west links, west hops, east links, east hops), and the root."""
    from plmr.ktree import build_line_tree, line_chain_spans

    counts, m = [], n
    for _ in range(k - 1):
        counts.append(data.draw(st.integers(1, m)))
        m = counts[-1]
    counts = tuple(counts) if data.draw(st.booleans()) else None
    tree = build_line_tree(n, k, counts, one_sided)
    levels, root = line_chain_spans(n, k, counts, one_sided)
    assert root == tree.root and len(levels) == tree.k
    for level, spans in zip(tree.levels, levels):
        want = {(len(w), sum(w), len(e), sum(e)) for w, e in level.chain_sides()}
        got = [(c.west_links, c.west_hops, c.east_links, c.east_hops) for c in spans]
        assert len(got) == len(set(got)) and set(got) == want


@pytest.mark.parametrize("n,groups", [(20, 4), (21, 4), (420, 20), (533, 8), (7, 7), (9, 1)])
def test_line_tree_roots_are_the_decode_programs(n, groups):
    """build_line_tree describes meshgemm.decode_collectives.LineTree: its level-0 group roots (the last
    member of each balanced group) and its global root, read from the program's own expressions."""
    from meshgemm.decode_collectives import LineTree
    from plmr.ktree import build_line_tree

    prog = LineTree("x", n, groups, tuple(range(8)), "t")
    tree = build_line_tree(n, 1 if groups == 1 else 2, () if groups == 1 else (groups,))
    if groups > 1:
        assert list(tree.levels[0].roots) == prog.group_roots()
        assert [len(g) for g in tree.levels[0].groups] == prog.group_sizes
    assert tree.root == prog.root()
