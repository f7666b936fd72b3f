"""INTERLEAVE (method §4.2): one ring over a line of cores whose every link spans at most 2 hops."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr import interleave, ring_order, ring_position
from plmr.interleave import max_link_hops


def _check_ring(n: int) -> None:
    recv = [interleave(i, n)[0] for i in range(n)]
    send = [interleave(i, n)[1] for i in range(n)]
    # Following send from core 0 visits every core exactly once and comes back to 0.
    seen, core = [], 0
    for _ in range(n):
        seen.append(core)
        core = send[core]
    assert core == 0, f"n={n}: ring does not close after n steps"
    assert sorted(seen) == list(range(n)), f"n={n}: not one ring through all cores"
    # send and recv agree: send(i) = j <=> recv(j) = i.
    for i in range(n):
        assert recv[send[i]] == i, f"n={n}: send({i})={send[i]} but recv({send[i]})={recv[send[i]]}"
        assert send[recv[i]] == i
    # Every link at most 2 hops, and no self-links.
    for i in range(n):
        assert 1 <= abs(send[i] - i) <= 2, f"n={n}: link {i}->{send[i]}"
    # The ring in send order is R, and R[pos(p)] = p.
    assert tuple(seen) == ring_order(n)
    for p in range(n):
        assert ring_order(n)[ring_position(p, n)] == p
    # The reverse ring follows recv: R_rev[i] = R[(-i) mod n].
    order = ring_order(n)
    core = 0
    for i in range(n):
        assert core == order[(-i) % n]
        core = recv[core]


def test_exhaustive_3_to_200():
    for n in range(3, 201):
        _check_ring(n)


@settings(max_examples=150, deadline=None)
@given(st.integers(3, 400))
def test_ring_property(n):
    _check_ring(n)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 400), st.data())
def test_ring_position_inverts_ring_order(n, data):
    p = data.draw(st.integers(0, n - 1))
    pos = ring_position(p, n)
    assert 0 <= pos < n
    assert ring_order(n)[pos] == p


@pytest.mark.parametrize(
    "n,ring",
    [
        (5, (0, 2, 4, 3, 1)),
        (6, (0, 2, 4, 5, 3, 1)),
        (8, (0, 2, 4, 6, 7, 5, 3, 1)),
    ],
)
def test_reference_examples(n, ring):
    assert ring_order(n) == ring
    # 0 -> 2 -> 4 -> ... following send
    for a, b in zip(ring, ring[1:] + ring[:1]):
        assert interleave(a, n)[1] == b
        assert interleave(b, n)[0] == a


def test_reverse_ring_example():
    order = ring_order(8)
    assert tuple(order[(-i) % 8] for i in range(8)) == (0, 1, 3, 5, 7, 6, 4, 2)


def test_algorithm_1_ends():
    # Odd n: the last core turns around with a 1-hop send to n-2.
    assert interleave(4, 5) == (2, 3)
    # Even n: the last core receives from n-2 and sends 2 hops down.
    assert interleave(5, 6) == (4, 3)
    assert interleave(0, 7) == (1, 2)
    assert interleave(1, 7) == (3, 0)


def test_n1_and_n2():
    assert interleave(0, 1) == (0, 0)
    assert ring_order(1) == (0,)
    assert ring_position(0, 1) == 0
    assert interleave(0, 2) == (1, 1)
    assert interleave(1, 2) == (0, 0)
    assert ring_order(2) == (0, 1)
    assert ring_position(1, 2) == 1


def test_max_link_hops():
    assert max_link_hops(1) == 0
    assert max_link_hops(2) == 1
    for n in range(3, 120):
        assert max_link_hops(n) == 2


@pytest.mark.parametrize("index,n", [(0, 0), (-1, 4), (4, 4), (7, 3)])
def test_invalid_index(index, n):
    with pytest.raises(ValueError):
        interleave(index, n)
