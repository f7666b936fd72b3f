"""The K-tree allreduce structure (waferllm-method.md §6.3-6.4): which PEs form each phase's groups
and where their roots sit. The cost model and the kernel builder both read this one description.

Groups at every level are balanced and contiguous (boundaries ⌊i·n/G⌋), each root is the middle
member, and the last level is always a single group whose root is the global root. This lifts the
authors' constraints (n divisible by the group count, groups of at least two) [O, method §6.4].
"""

from __future__ import annotations

import functools
import itertools
import operator
from dataclasses import dataclass

from plmr.errors import InputError


@dataclass(frozen=True)
class KTreeLevel:
    """One phase: groups of participant positions (physical indices on the line) and their roots."""

    groups: tuple[tuple[int, ...], ...]
    roots: tuple[int, ...]

    def chain_sides(self) -> list[tuple[list[int], list[int]]]:
        """For each group, the hop lengths of its two chains into the root (west side, east side);
        which one is slower depends on α and β, so the cost model takes the max of both."""
        out = []
        for group, root in zip(self.groups, self.roots):
            i = group.index(root)
            hops = list(map(operator.sub, group[1:], group))
            out.append((hops[:i], hops[i:]))
        return out


@dataclass(frozen=True)
class KTree:
    n: int
    levels: tuple[KTreeLevel, ...]

    @property
    def k(self) -> int:
        return len(self.levels)

    @property
    def root(self) -> int:
        return self.levels[-1].roots[0] if self.levels else 0

    @property
    def group_counts(self) -> tuple[int, ...]:
        return tuple(len(level.groups) for level in self.levels)


def split_groups(members: list[int], num_groups: int) -> list[tuple[int, ...]]:
    """Balanced contiguous groups: boundaries b_i = ⌊i·len/G⌋ (method §6.4)."""
    n = len(members)
    bounds = [i * n // num_groups for i in range(num_groups + 1)]
    return [tuple(members[bounds[i]:bounds[i + 1]]) for i in range(num_groups)]


def _checked_counts(n: int, k: int, group_counts: tuple[int, ...] | None) -> tuple[int, ...]:
    """The group counts of levels 1..K-1 of a K-tree over ``n`` PEs (the default when None), after
    the checks every tree builder shares."""
    if n < 1:
        raise InputError(f"K-tree needs at least one PE, got {n}")
    if k < 1:
        raise InputError(f"K-tree needs K >= 1, got K={k}")
    if group_counts is None:
        group_counts = default_group_counts(n, k)
    if len(group_counts) != k - 1:
        raise InputError(f"K={k} needs {k - 1} group counts (levels 1..K-1), got {len(group_counts)}")
    return group_counts


def build_ktree(n: int, k: int = 2, group_counts: tuple[int, ...] | None = None) -> KTree:
    """A K-tree over ``n`` PEs on one line.

    ``group_counts`` gives the number of groups at levels 1..K-1 (level K is one group). When omitted,
    groups are sized about n^(1/K) at every level, the critical-path optimum of method §6.3.
    K = 1 is one chain into the middle PE.
    """
    group_counts = _checked_counts(n, k, group_counts)
    members = list(range(n))
    levels = []
    for count in list(group_counts) + [1]:
        _check_level(len(levels) + 1, count, len(members))
        groups = split_groups(members, count)
        roots = tuple(g[len(g) // 2] for g in groups)
        levels.append(KTreeLevel(groups=tuple(groups), roots=roots))
        members = list(roots)
    return KTree(n=n, levels=tuple(levels))


def _check_level(level: int, count: int, participants: int) -> None:
    if count < 1 or count > participants:
        raise InputError(f"K-tree level {level}: {count} groups for {participants} participants "
                         f"(allowed 1..{participants})")


@dataclass(frozen=True)
class ChainSpans:
    """The two chains of one group into its root, reduced to what their arrival time depends on:
    the number of links on each side and the hops they cover (root minus end position)."""

    west_links: int
    west_hops: int
    east_links: int
    east_hops: int


@functools.lru_cache(maxsize=8192)
def chain_spans(n: int, k: int = 2, group_counts: tuple[int, ...] | None = None
                ) -> tuple[tuple[tuple[ChainSpans, ...], ...], int]:
    """The distinct ``ChainSpans`` of every level of ``build_ktree(n, k, group_counts)`` and the
    global root, without listing every member: a group of positions p[b0..b1) has its root at
    index r = b0 + (b1 - b0) // 2, r - b0 west links over p[r] - p[b0] hops and b1 - 1 - r east
    links over p[b1 - 1] - p[r] hops. Groups with equal spans cost the same, so each level keeps
    one of each (levels of balanced groups have a handful). Memoised: a planner prices the same
    few hundred trees thousands of times. Raises the same ``InputError``s as ``build_ktree``."""
    group_counts = _checked_counts(n, k, group_counts)
    pos: list[int] | range = range(n)
    levels = []
    for count in list(group_counts) + [1]:
        m = len(pos)
        _check_level(len(levels) + 1, count, m)
        roots = []
        spans = {}
        lo = 0
        for i in range(1, count + 1):
            hi = i * m // count
            r = lo + (hi - lo) // 2
            pr = pos[r]
            roots.append(pr)
            key = (r - lo, pr - pos[lo], hi - 1 - r, pos[hi - 1] - pr)
            if key not in spans:
                spans[key] = ChainSpans(*key)
            lo = hi
        levels.append(tuple(spans.values()))
        pos = roots
    return tuple(levels), pos[0]


@functools.lru_cache(maxsize=1 << 15)
def line_chain_spans(n: int, k: int = 2, group_counts: tuple[int, ...] | None = None, one_sided: bool = True
                     ) -> tuple[tuple[tuple[ChainSpans, ...], ...], int]:
    """``chain_spans`` of ``build_line_tree(n, k, group_counts, one_sided)``: the distinct spans of every
    level and the global root, without listing every member. Level 0 is the balanced split (the first
    n mod G groups one longer) with its roots at each group's last member when one-sided (and G > 1),
    else the middle; the levels above are ``build_ktree``'s over the level-0 roots' positions. Raises
    the same ``InputError``s as ``build_line_tree``."""
    group_counts = _checked_counts(n, k, group_counts)
    if k == 1:
        return chain_spans(n, 1, group_counts)
    g0 = group_counts[0]
    if g0 < 1 or g0 > n:
        raise InputError(f"K-tree level 1: {g0} groups for {n} participants (allowed 1..{n})")
    end = one_sided and g0 > 1
    base, extra = divmod(n, g0)
    spans: dict = {}
    for size in ((base + 1,) if extra else ()) + ((base,) if extra < g0 else ()):
        r = size - 1 if end else size // 2
        spans[(r, r, size - 1 - r, size - 1 - r)] = ChainSpans(r, r, size - 1 - r, size - 1 - r)
    levels = [tuple(spans.values())]
    r_first, r_rest = (base if end else (base + 1) // 2), (base - 1 if end else base // 2)
    # the level-0 roots' positions: the first ``extra`` groups of base + 1 members, then groups of base
    pos: list[int] = [*range(r_first, extra * (base + 1), base + 1),
                      *range(extra * (base + 1) + r_rest, n, base)]
    m = g0
    for count in list(group_counts[1:]) + [1]:
        _check_level(len(levels), count, m)
        at = pos.__getitem__
        nxt, spans, lo = [], {}, 0
        for i in range(1, count + 1):
            hi = i * m // count
            r = lo + (hi - lo) // 2
            pr = at(r)
            nxt.append(pr)
            key = (r - lo, pr - at(lo), hi - 1 - r, at(hi - 1) - pr)
            if key not in spans:
                spans[key] = ChainSpans(*key)
            lo = hi
        levels.append(tuple(spans.values()))
        pos, m = nxt, count
    return tuple(levels), pos[0]


def build_line_tree(n: int, k: int = 2, group_counts: tuple[int, ...] | None = None,
                    one_sided: bool = True) -> KTree:
    """The K-tree of the decode program's line collectives (``meshgemm.decode_collectives.LineTree``).

    Level-0 groups are balanced splits (the first ``n mod G`` groups one longer,
    ``plmr.primitives.balanced_split``), so they can be the head layout's KV column groups; with
    ``one_sided`` (the program's default when there is more than one group) each group's root is
    its last member, so a group root receives on one colour. Levels above are built as
    ``build_ktree`` builds them (middle roots, chains from both sides). K = 1 is one chain into the
    middle PE."""
    group_counts = _checked_counts(n, k, group_counts)
    if k == 1:
        return build_ktree(n, 1)
    g0 = group_counts[0]
    if g0 < 1 or g0 > n:
        raise InputError(f"K-tree level 1: {g0} groups for {n} participants (allowed 1..{n})")
    sizes = [n // g0 + (1 if i < n % g0 else 0) for i in range(g0)]
    starts = [0, *itertools.accumulate(sizes)][:g0]
    groups = [tuple(range(a, a + m)) for a, m in zip(starts, sizes)]
    end = one_sided and g0 > 1
    roots = tuple(g[-1] if end else g[len(g) // 2] for g in groups)
    upper = build_ktree(g0, k - 1, tuple(group_counts[1:]))
    levels = [KTreeLevel(groups=tuple(groups), roots=roots)]
    for level in upper.levels:  # positions of the level-0 roots
        levels.append(KTreeLevel(groups=tuple(tuple(roots[i] for i in g) for g in level.groups),
                                 roots=tuple(roots[r] for r in level.roots)))
    return KTree(n=n, levels=tuple(levels))


def chain_tree(n: int, root: int) -> KTree:
    """A one-level 'tree': a single chain over the whole line into ``root``."""
    if not 0 <= root < n:
        raise InputError(f"chain root {root} outside the axis of {n} PEs")
    return KTree(n=n, levels=(KTreeLevel(groups=(tuple(range(n)),), roots=(root,)),))


def default_group_counts(n: int, k: int) -> tuple[int, ...]:
    """Groups of about n^(1/K) members per level (≈ √n for K = 2, like the authors' configs)."""
    counts = []
    remaining = n
    for level in range(1, k):
        size = max(1, round(remaining ** (1.0 / (k - level + 1))))
        count = max(1, min(remaining, round(remaining / size)))
        counts.append(count)
        remaining = count
    return tuple(counts)


def group_sizes(tree: KTree) -> tuple[tuple[int, ...], ...]:
    """Member count of every group at every level (for reports and tests)."""
    return tuple(tuple(len(g) for g in level.groups) for level in tree.levels)


def routed_colours(tree: KTree) -> int:
    """The most colours any PE of the line routes for the tree's reduction (the R metric; a multicast of
    the result adds one on every PE). A level has two colour slots: member i of a group whose root is
    member r sends towards the root on slot (r − i) mod 2 below it, (i − r + 1) mod 2 above it, so
    consecutive hops of one chain alternate; the transfer is routed at its sender, its receiver and
    every PE between them. So a level whose chains are one hop long routes one colour at most, a
    level of one-PE groups none, and a PE can route a lower level's colour and a higher level's one
    passing over it (``meshgemm.line_rules.ktree_roles`` places the routes; the tests compare)."""
    routed: list[set[tuple[int, int]]] = [set() for _ in range(tree.n)]
    for level, lv in enumerate(tree.levels):
        for group, root in zip(lv.groups, lv.roots):
            r = group.index(root)
            for i, pos in enumerate(group):
                if i == r:
                    continue
                to = group[i + 1] if i < r else group[i - 1]
                slot = (r - i) % 2 if i < r else (i - r + 1) % 2
                for q in range(min(pos, to), max(pos, to) + 1):
                    routed[q].add((level, slot))
    return max((len(s) for s in routed), default=0)
