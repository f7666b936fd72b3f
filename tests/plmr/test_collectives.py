"""Collective costs along one mesh axis (method §2.3, §6.3-6.6, §7): exact formulas and limiting cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plmr import (
    WSE2, WSE3, broadcast, build_ktree, chain_reduce, ktree_allreduce, message, pipeline_allreduce,
    ring_allreduce, ring_shift,
)
from plmr.collectives import ktree_reduce_cycles
from plmr.primitives import t_msg, t_vec

# Distinct, non-zero parameters so that a term charged to the wrong symbol shows up.
SPEC = WSE2.with_params(op_issue_cycles=11.0, ramp_cycles=5.0, hop_cycles=2.0, relay_cycles=3.0,
                        collective_cycles=37.0, task_cycles=13.0)

specs = st.builds(
    lambda c_op, rho, alpha, beta, coll: WSE2.with_params(
        op_issue_cycles=float(c_op), ramp_cycles=float(rho), hop_cycles=float(alpha),
        relay_cycles=float(beta), collective_cycles=float(coll)),
    st.integers(0, 20), st.integers(0, 10), st.integers(0, 6), st.integers(0, 6), st.integers(0, 100),
)

ALL = {
    "broadcast": lambda s, n_ax, n: broadcast(s, n_ax, n),
    "chain_reduce": lambda s, n_ax, n: chain_reduce(s, n_ax, n),
    "ktree_k1": lambda s, n_ax, n: ktree_allreduce(s, n_ax, n, k=1),
    "ktree_k2": lambda s, n_ax, n: ktree_allreduce(s, n_ax, n, k=2),
    "ktree_k3": lambda s, n_ax, n: ktree_allreduce(s, n_ax, n, k=3),
    "ktree_k2_nobcast": lambda s, n_ax, n: ktree_allreduce(s, n_ax, n, k=2, with_broadcast=False),
    "pipeline": lambda s, n_ax, n: pipeline_allreduce(s, n_ax, n),
    "ring": lambda s, n_ax, n: ring_allreduce(s, n_ax, n),
    "ring_shift": lambda s, n_ax, n: ring_shift(s, n_ax, n),
}



def _side(spec, links):
    """One chain side of L links into its root: the end PE issues its send (c_op), every link is
    injected and ejected (ρ) and hops d·α, every member between the end and the root is a software
    stage (β)."""
    return (spec.op_issue_cycles + len(links) * spec.ramp_cycles
            + sum(d * spec.hop_cycles for d in links) + (len(links) - 1) * spec.relay_cycles)


def _group(spec, left, right, n):
    """A group's phase: one side alone streams n wavelets after its arrival; a root with two sides
    ingests 2n wavelets through its one ramp (the shorter side, ties the right, received first),
    then joins (c_task) and adds (a vector add of n)."""
    if not left or not right:
        side = left or right
        return _side(spec, side) + n if side else 0.0
    first, second = (right, left) if len(right) <= len(left) else (left, right)
    a1 = _side(spec, first)
    a2 = max(_side(spec, second), 2 * spec.op_issue_cycles)
    ingest = max(max(a1, a2) + n, min(a1, a2) + 2 * n)
    return ingest + spec.task_cycles + spec.op_issue_cycles + math.ceil(n / spec.simd_width("add", "fp16"))

def _msg(spec, n, hops, stages=0, e_w=1):
    """T_msg written out from the reference (method §2.3)."""
    return (spec.op_issue_cycles + spec.ramp_cycles + hops * spec.hop_cycles + stages * spec.relay_cycles
            + math.ceil(n / e_w))


# ------------------------------------------------------------------------------------------------
# Limiting cases
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("n", [1, 7, 4096])
def test_one_pe_costs_nothing(name, n):
    r = ALL[name](SPEC, 1, n)
    assert r.total_cycles == 0 and r.comm_cycles == 0 and r.compute_cycles == 0


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("n_ax", [1, 2, 3, 64, 750])
def test_empty_payload_costs_nothing(name, n_ax):
    assert ALL[name](SPEC, n_ax, 0).total_cycles == 0


@settings(max_examples=80, deadline=None)
@given(spec=specs, n=st.integers(1, 5000), r=st.integers(0, 40))
def test_one_hop_message_exact(spec, n, r):
    m = message(spec, n, hops=1, stages=r)
    expected = spec.op_issue_cycles + spec.ramp_cycles + spec.hop_cycles + r * spec.relay_cycles + n
    assert m.total_cycles == expected
    assert m.comm_cycles == expected and m.compute_cycles == 0
    assert m.bytes_per_pe == 2 * n
    assert m.colors_per_pe == 1


def test_message_empty():
    m = message(SPEC, 0, hops=5)
    assert m.total_cycles == 0 and m.colors_per_pe == 0


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 5000), hops=st.integers(0, 750))
def test_packed_fp16_halves_the_streaming_term(n, hops):
    fixed = SPEC.op_issue_cycles + SPEC.ramp_cycles + hops * SPEC.hop_cycles
    plain = message(SPEC, n, hops, dtype="fp16").total_cycles - fixed
    packed = message(SPEC, n, hops, dtype="fp16", packed=True).total_cycles - fixed
    assert plain == n
    assert packed == math.ceil(n / 2)
    # fp32 fills a wavelet already: packing changes nothing.
    assert message(SPEC, n, hops, dtype="fp32", packed=True).total_cycles == fixed + n


@settings(max_examples=40, deadline=None)
@given(n_ax=st.integers(2, 400), n=st.integers(1, 3000))
def test_packed_fp16_allreduce_is_cheaper_by_the_streaming_terms(n_ax, n):
    plain = pipeline_allreduce(SPEC, n_ax, n).total_cycles
    packed = pipeline_allreduce(SPEC, n_ax, n, packed=True).total_cycles
    # two streaming terms (reduce chain and broadcast), each n -> ⌈n/2⌉
    assert plain - packed == 2 * (n - math.ceil(n / 2))


# ------------------------------------------------------------------------------------------------
# Exact formulas (method §6.6)
# ------------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(spec=specs, n_ax=st.integers(2, 800), n=st.integers(1, 2000))
def test_pipeline_formula(spec, n_ax, n):
    r = pipeline_allreduce(spec, n_ax, n)
    reduce_t = _side(spec, [1] * (n_ax - 1)) + n
    bcast = _msg(spec, n, n_ax - 1)
    assert r.total_cycles == spec.collective_cycles + reduce_t + bcast
    assert r.parts["reduce"] == reduce_t and r.parts["broadcast"] == bcast
    # the pipeline reduce is the one-sided chain with the root at an end PE
    assert chain_reduce(spec, n_ax, n, root=0).total_cycles == spec.collective_cycles + reduce_t
    assert chain_reduce(spec, n_ax, n, root=n_ax - 1).total_cycles == spec.collective_cycles + reduce_t


@settings(max_examples=80, deadline=None)
@given(spec=specs, n_ax=st.integers(2, 800), n=st.integers(1, 4000))
def test_ring_allreduce_formula(spec, n_ax, n):
    """2(n-1) steps, each an async send of a chunk, a receive issued c_op later whose first wavelet
    comes ρ + h·α after the predecessor's send starts, and a join."""
    hops = 2 if n_ax >= 3 else 1
    chunk = math.ceil(n / n_ax)
    step = (spec.op_issue_cycles + max(spec.op_issue_cycles, spec.ramp_cycles + hops * spec.hop_cycles)
            + chunk + spec.task_cycles)
    assert ring_allreduce(spec, n_ax, n).total_cycles == spec.collective_cycles + 2 * (n_ax - 1) * step


@settings(max_examples=80, deadline=None)
@given(spec=specs, n_ax=st.integers(2, 800), n=st.integers(1, 2000), data=st.data())
def test_broadcast_formula(spec, n_ax, n, data):
    root = data.draw(st.integers(0, n_ax - 1))
    expected = spec.collective_cycles + _msg(spec, n, max(root, n_ax - 1 - root))
    assert broadcast(spec, n_ax, n, root=root).total_cycles == expected
    # default root: the middle PE
    mid = n_ax // 2
    assert broadcast(spec, n_ax, n).total_cycles == spec.collective_cycles + _msg(spec, n, max(mid, n_ax - 1 - mid))


def test_ktree_k2_reference_formula_even_split():
    """n_ax = 64 = 8 x 8: groups of 8 rooted at member 4 (4 links west, 3 east), roots 4, 12, ..., 60
    with the global root 36; then a multicast from 36. Level 1 is followed by a level that joins (its
    two-sided root), so every PE goes on to level 2 through one task activation (c_task)."""
    s, n = SPEC, 40
    phase1 = _group(s, [1] * 4, [1] * 3, n) + s.task_cycles
    phase2 = _group(s, [8] * 4, [8] * 3, n)
    bcast = _msg(s, n, 36)
    r = ktree_allreduce(s, 64, n, k=2, group_counts=(8,))
    assert r.parts["phase1"] == phase1
    assert r.parts["phase2"] == phase2
    assert r.parts["broadcast"] == bcast
    assert r.total_cycles == s.collective_cycles + phase1 + phase2 + bcast


@settings(max_examples=100, deadline=None)
@given(spec=specs, n_ax=st.integers(2, 800), n=st.integers(1, 2000))
def test_k1_ktree_reduce_equals_chain_reduce(spec, n_ax, n):
    """K = 1 is one chain into the middle PE; both pay the collective constant exactly once."""
    kt = ktree_allreduce(spec, n_ax, n, k=1, with_broadcast=False)
    ch = chain_reduce(spec, n_ax, n)
    assert kt.total_cycles == ch.total_cycles
    mid = n_ax // 2
    assert ch.total_cycles == spec.collective_cycles + _group(spec, [1] * mid, [1] * (n_ax - 1 - mid), n)
    # with the broadcast: + one multicast from the middle, but no second collective constant
    full = ktree_allreduce(spec, n_ax, n, k=1)
    assert full.total_cycles == ch.total_cycles + broadcast(spec, n_ax, n).total_cycles - spec.collective_cycles


@settings(max_examples=100, deadline=None)
@given(spec=specs, n_ax=st.integers(2, 600), n=st.integers(1, 500), data=st.data())
def test_singleton_first_level_equals_one_level_less(spec, n_ax, n, data):
    """Level-1 groups of one member move nothing, but the program still passes through the level:
    K = 2 with n_ax groups is K = 1 plus the one task activation that continues into level 2 (the
    simulator agrees: meshgemv on 8×8, N = 256, K = 1: 780 cycles, K = 2 with groups of one: 790), and
    K = 3 with (n_ax, g) is K = 2 with (g,) plus one."""
    k2 = ktree_allreduce(spec, n_ax, n, k=2, group_counts=(n_ax,))
    k1 = ktree_allreduce(spec, n_ax, n, k=1)
    assert k2.total_cycles == k1.total_cycles + spec.task_cycles
    assert k2.parts["phase1"] == spec.task_cycles
    g = data.draw(st.integers(1, n_ax))
    k3 = ktree_allreduce(spec, n_ax, n, k=3, group_counts=(n_ax, g))
    k2g = ktree_allreduce(spec, n_ax, n, k=2, group_counts=(g,))
    assert k3.total_cycles == k2g.total_cycles + spec.task_cycles


def _slowest_chain(spec, level, n, last=True):
    """A phase lasts as long as its slowest group (method §6.3, §6.6 with the per-link ramp and the
    root's two-stream ingest); a phase followed by another continues into it through one task
    activation."""
    worst = 0.0
    for group, root in zip(level.groups, level.roots):
        i = group.index(root)
        left = [group[j + 1] - group[j] for j in range(i)]
        right = [group[j + 1] - group[j] for j in range(i, len(group) - 1)]
        worst = max(worst, _group(spec, left, right, n))
    return worst + (0 if last else spec.task_cycles)


def test_ktree_phase_is_the_slowest_chain_regression():
    """n_ax = 6, K = 3, counts (5, 4): the last phase's group is roots (0, 1, 2, 5) with root 2:
    a west side of 2 one-hop links and an east side of one 3-hop link. The phase is costed from
    both sides' true arrival times, not from whichever side has more links."""
    tree = build_ktree(6, 3, (5, 4))
    assert tree.levels[2].groups == ((0, 1, 2, 5),)
    phases = ktree_reduce_cycles(WSE2, tree, 5)
    assert phases[2] == _group(WSE2, [1, 1], [3], 5)
    assert _side(WSE2, [3]) != _side(WSE2, [1, 1])  # the two sides really differ


@settings(max_examples=150, deadline=None)
@given(n_ax=st.integers(2, 1000), n=st.integers(1, 64), k=st.integers(1, 4))
def test_ktree_phase_is_the_slowest_chain_default_groups(n_ax, n, k):
    tree = build_ktree(n_ax, k)
    phases = ktree_reduce_cycles(WSE2, tree, n)
    assert phases == [_slowest_chain(WSE2, level, n, i == tree.k - 1) for i, level in enumerate(tree.levels)]


def test_ktree_phase_is_the_slowest_chain_all_small_trees():
    """Every K = 2 and K = 3 tree over up to 24 PEs, all group counts (deterministic sweep)."""
    wrong = []
    for n_ax in range(2, 25):
        for g1 in range(1, n_ax + 1):
            trees = [build_ktree(n_ax, 2, (g1,))] + [build_ktree(n_ax, 3, (g1, g2)) for g2 in range(1, g1 + 1)]
            for tree in trees:
                phases = ktree_reduce_cycles(WSE2, tree, 5)
                expected = [_slowest_chain(WSE2, level, 5, i == tree.k - 1) for i, level in enumerate(tree.levels)]
                if phases != expected:
                    wrong.append((n_ax, tree.group_counts[:-1], phases, expected))
    assert not wrong, f"{len(wrong)} trees mis-costed, first: {wrong[0]}"


# ------------------------------------------------------------------------------------------------
# Monotonicity and comparisons
# ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(spec=specs, n_ax=st.integers(2, 800), n=st.integers(1, 3000), extra=st.integers(1, 3000))
def test_cost_grows_with_payload(spec, n_ax, n, extra):
    for name, f in ALL.items():
        a, b = f(spec, n_ax, n).total_cycles, f(spec, n_ax, n + extra).total_cycles
        if name == "ring":  # streams ⌈n/n_ax⌉-element chunks: grows once the chunk does
            assert a <= b, name
            assert a < f(spec, n_ax, n + n_ax).total_cycles, name
        else:
            assert a < b, name


MONOTONE_IN_AXIS = {
    "broadcast": lambda s, n_ax, n: broadcast(s, n_ax, n),
    "chain_reduce": lambda s, n_ax, n: chain_reduce(s, n_ax, n),
    "ktree_k1": lambda s, n_ax, n: ktree_allreduce(s, n_ax, n, k=1),
    "pipeline": lambda s, n_ax, n: pipeline_allreduce(s, n_ax, n),
    "ring_shift": lambda s, n_ax, n: ring_shift(s, n_ax, n),
}


@pytest.mark.parametrize("name", sorted(MONOTONE_IN_AXIS))
def test_cost_grows_with_axis_length(name):
    f = MONOTONE_IN_AXIS[name]
    for n in (1, 16, 300):
        costs = [f(SPEC, n_ax, n).total_cycles for n_ax in range(1, 760)]
        assert all(a <= b for a, b in zip(costs, costs[1:])), name
        assert costs[0] < costs[-1]


@settings(max_examples=60, deadline=None)
@given(n_ax=st.integers(4, 700), g=st.integers(2, 30), n=st.integers(1, 200))
def test_ktree_with_fixed_group_count_grows_with_axis(n_ax, g, n):
    assume(g <= n_ax)
    a = ktree_allreduce(SPEC, n_ax, n, k=2, group_counts=(g,)).total_cycles
    b = ktree_allreduce(SPEC, n_ax + 1, n, k=2, group_counts=(g,)).total_cycles
    assert a <= b


def test_ktree_and_ring_grow_over_long_axis_spans():
    """Default K-tree groups (≈√n) and the ring's ⌈n/n_ax⌉ chunks make these a little non-monotone
    from one axis length to the next, but never across a doubling of the axis."""
    for n_ax in range(4, 380):
        for f in (ktree_allreduce, ring_allreduce):
            for n in (1, 16, 300):
                assert f(SPEC, n_ax, n).total_cycles < f(SPEC, 2 * n_ax, n).total_cycles, (f.__name__, n_ax, n)


@pytest.mark.parametrize("spec", [WSE2, WSE3, SPEC], ids=["wse2", "wse3", "distinct"])
def test_ktree_k2_beats_pipeline_from_64(spec):
    for n_ax in range(64, 1001):
        for n in (1, 8, 64):
            kt = ktree_allreduce(spec, n_ax, n, k=2).total_cycles
            pl = pipeline_allreduce(spec, n_ax, n).total_cycles
            assert kt < pl, (n_ax, n)


def test_ktree_advantage_grows_with_axis():
    ratios = [pipeline_allreduce(WSE2, p, 8).total_cycles / ktree_allreduce(WSE2, p, 8).total_cycles
              for p in (64, 256, 750)]
    assert ratios[0] < ratios[1] < ratios[2]
    assert ratios[2] > 2


def test_ring_shift_formula():
    assert ring_shift(SPEC, 2, 10).total_cycles == _msg(SPEC, 10, 1)
    for n_ax in (3, 4, 99, 750):
        assert ring_shift(SPEC, n_ax, 10).total_cycles == _msg(SPEC, 10, 2)


# ------------------------------------------------------------------------------------------------
# Resources
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_ktree_colours(k):
    # groups of 3+ PEs at every level: each level's chains alternate both slots, and the global root
    # receives on both of every level (the slot of the hop into it differs on its two sides)
    assert ktree_allreduce(SPEC, 100, 8, k=k).colors_per_pe == 2 * k + 1
    assert ktree_allreduce(SPEC, 100, 8, k=k, with_broadcast=False).colors_per_pe == 2 * k


def test_ktree_colours_of_one_hop_levels():
    # 8 PEs, K = 3: groups of two at every level, so every chain is one hop on one slot: 3 + the multicast
    assert ktree_allreduce(SPEC, 8, 8, k=3).colors_per_pe == 4
    # 2 PEs, K = 1: one hop, one slot, + the multicast
    assert ktree_allreduce(SPEC, 2, 8, k=1).colors_per_pe == 2


def test_other_colours_and_bytes():
    assert pipeline_allreduce(SPEC, 100, 8).colors_per_pe == 3
    assert ring_allreduce(SPEC, 100, 8).colors_per_pe == 3
    assert broadcast(SPEC, 100, 8).colors_per_pe == 1
    # two colours alternating by distance to the fixed root serve both sides (method §6.4 [D], §7)
    assert chain_reduce(SPEC, 100, 8).colors_per_pe == 2
    assert chain_reduce(SPEC, 100, 8, root=0).colors_per_pe == 2
    assert ring_shift(SPEC, 100, 8).colors_per_pe == 3
    assert ring_shift(SPEC, 2, 8).colors_per_pe == 2
    assert ktree_allreduce(SPEC, 100, 8).bytes_per_pe == 2 * 8 * 2
    assert ktree_allreduce(SPEC, 100, 8, dtype="fp32").bytes_per_pe == 2 * 8 * 4
    assert ring_allreduce(SPEC, 100, 250).bytes_per_pe == (250 + 3) * 2


def test_t_msg_primitive():
    assert t_msg(SPEC, 0, 10) == 0
    assert t_msg(SPEC, 9, 3, 2) == _msg(SPEC, 9, 3, 2)
    assert t_msg(SPEC, 9, 3, 2, packed=True) == _msg(SPEC, 9, 3, 2, e_w=2)


# ------------------------------------------------------------------------------------------------
# The fast K-tree path against the previous implementation
# ------------------------------------------------------------------------------------------------

def _reference_ktree_total(spec, n_ax, n, k, group_counts, dtype, packed, with_broadcast):
    """REFERENCE: ``ktree_allreduce(...).total_cycles`` as computed before the per-level memo (a
    copy of that implementation): build the tree, walk every group of every level with its chain
    hop lists, take each level's slowest group plus, before every level but the last, the task
    activation that continues into the next level; add the phases, the broadcast and the constant."""
    if n_ax <= 1 or n <= 0:
        return 0.0

    def side(links):
        return (spec.op_issue_cycles + len(links) * spec.ramp_cycles
                + sum(d * spec.hop_cycles for d in links) + (len(links) - 1) * spec.relay_cycles)

    def group(left, right):
        n_w = math.ceil(n / spec.elements_per_wavelet(dtype, packed))
        if not left or not right:
            links = left or right
            return side(links) + n_w if links else 0.0
        first, second = (right, left) if len(right) <= len(left) else (left, right)
        a1 = side(first)
        a2 = max(side(second), 2 * spec.op_issue_cycles)
        ingest = max(max(a1, a2) + n_w, min(a1, a2) + 2 * n_w)
        return ingest + spec.task_cycles + t_vec(spec, n, "add", dtype)

    tree = build_ktree(n_ax, k, group_counts)
    phases = [max((group(left, right) for left, right in level.chain_sides()), default=0.0)
              + (spec.task_cycles if i < tree.k - 1 else 0.0)
              for i, level in enumerate(tree.levels)]
    r = tree.root
    bcast = t_msg(spec, n, max(r, n_ax - 1 - r), 0, dtype, packed) if with_broadcast else 0.0
    return spec.collective_cycles + sum(phases) + bcast


def _random_counts(rng, n_ax, k):
    counts, m = [], n_ax
    for _ in range(k - 1):
        c = rng.randint(1, m)
        counts.append(c)
        m = c
    return tuple(counts)


def test_ktree_allreduce_equals_the_reference_walk_on_random_trees():
    """Bit-identical totals (and phases) on 800 random (spec, axis, K, group counts, payload,
    dtype) draws, whole-number and fractional α (the fractional one takes the general path)."""
    import random

    from plmr.collectives import ktree_allreduce_cycles

    rng = random.Random(17)
    spec_pool = [WSE2, WSE3, SPEC, WSE2.with_params(hop_cycles=1.3, ramp_cycles=0.7, relay_cycles=2.9),
                 WSE2.with_params(hop_cycles=3.0, ramp_cycles=0.0, relay_cycles=0.0, op_issue_cycles=0.0)]
    for _ in range(800):
        spec = rng.choice(spec_pool)
        n_ax = rng.choice([rng.randint(2, 40), rng.randint(2, 1200)])
        k = rng.randint(1, 6)
        counts = None if rng.random() < 0.3 else _random_counts(rng, n_ax, k)
        n = rng.choice([1, rng.randint(1, 200), rng.randint(1, 200000)])
        dtype, packed, bcast = rng.choice(["fp16", "fp32"]), rng.random() < 0.3, rng.random() < 0.8
        want = _reference_ktree_total(spec, n_ax, n, k, counts, dtype, packed, bcast)
        got = ktree_allreduce(spec, n_ax, n, k, counts, dtype, packed, bcast)
        assert got.total_cycles == want, (spec.name, n_ax, n, k, counts)
        assert ktree_allreduce_cycles(spec, n_ax, n, k, counts, dtype, packed, bcast) == want
        phases = ktree_reduce_cycles(spec, build_ktree(n_ax, k, counts), n, dtype, packed)
        assert [got.parts[f"phase{i + 1}"] for i in range(len(phases))] == phases


def test_ktree_errors_are_the_tree_builders():
    from plmr import InputError

    for args in [(10, 3, (4,)), (10, 2, (11,)), (10, 2, (0,))]:
        with pytest.raises(InputError) as built:
            build_ktree(*args)
        with pytest.raises(InputError) as priced:
            ktree_allreduce(WSE2, args[0], 8, args[1], args[2])
        assert str(priced.value) == str(built.value)


def _random_line_tree(rng):
    n_ax = rng.choice([rng.randint(2, 40), rng.randint(2, 1200)])
    k = rng.randint(1, 6)
    counts = None if rng.random() < 0.2 else _random_counts(rng, n_ax, k)
    return n_ax, k, counts


def test_line_tree_allreduce_cycles_is_the_breakdowns_total():
    """The planner's hot path against ``line_tree_allreduce`` on 1,500 random lines, trees, payloads
    and flags (both combines, one- and two-sided level 0, the group allreduce), whole-number and
    fractional parameters: the same number, bit for bit."""
    import random

    from plmr.collectives import line_tree_allreduce, line_tree_allreduce_cycles

    rng = random.Random(29)
    spec_pool = [WSE2, WSE3, SPEC, WSE2.with_params(hop_cycles=1.3, ramp_cycles=0.7, relay_cycles=2.9)]
    for _ in range(1500):
        spec = rng.choice(spec_pool)
        n_ax, k, counts = _random_line_tree(rng)
        n = rng.choice([1, rng.randint(1, 64), rng.randint(1, 5000)])
        args = (n_ax, n, k, counts, rng.choice(["fp16", "fp32"]), rng.choice(["sum", "max"]), rng.random() < 0.8,
                rng.random() < 0.8, k >= 2 and rng.random() < 0.2)
        want = line_tree_allreduce(spec, *args).total_cycles
        assert line_tree_allreduce_cycles(spec, *args) == want, args


def test_line_tree_cycles_never_fall_when_the_payload_grows():
    """What the planner's tree floors rely on (``waferllm.planner._payload_floor``): on a fixed line
    tree, a larger payload never costs fewer cycles. Every payload 1..160 and random large ones, on
    random trees, both combines, with and without the multicast."""
    import random

    from plmr.collectives import line_tree_allreduce

    rng = random.Random(31)
    for _ in range(50):
        spec = rng.choice([WSE2, SPEC, WSE2.with_params(hop_cycles=1.3, relay_cycles=2.9)])
        n_ax = rng.choice([rng.randint(2, 40), rng.randint(2, 400)])
        k = rng.randint(1, 6)
        counts = _random_counts(rng, n_ax, k)
        flags = (rng.choice(["fp16", "fp32"]), rng.choice(["sum", "max"]), rng.random() < 0.8, rng.random() < 0.8,
                 k >= 2 and rng.random() < 0.2)
        payloads = list(range(1, 161)) + sorted(rng.randint(161, 20000) for _ in range(10))
        cycles = [line_tree_allreduce(spec, n_ax, n, k, counts, *flags).total_cycles for n in payloads]
        assert all(a <= b for a, b in zip(cycles, cycles[1:])), (n_ax, k, counts, flags)
