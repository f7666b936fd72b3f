"""meshgemm.routing: every collective pattern passes the mechanical colour check, with the slot
counts of method §6.4/§7."""

from __future__ import annotations

import pytest

from plmr.ktree import build_ktree
from meshgemm.routing import (
    Transfer, chain_reduce_transfers, check_colours, ktree_transfers, multicast_transfer,
    pipeline_allreduce_transfers, ring_transfers, slots_used, transfers_from, transfers_into,
)


@pytest.mark.parametrize("n", range(1, 40))
def test_ktree_transfers_conflict_free_with_2k_plus_1_slots(n):
    for k in (1, 2, 3, 4):
        tree = build_ktree(n, k)
        flat = [t for ph in ktree_transfers(tree) for t in ph]
        check_colours(flat, n)
        assert slots_used(flat) <= 2 * k + 1


@pytest.mark.parametrize("n", range(2, 30))
def test_chain_any_root_and_multicast(n):
    for root in range(n):
        tr = chain_reduce_transfers(n, root, 0) + multicast_transfer(n, root, 2)
        check_colours(tr, n)
        # every non-root PE sends exactly once; the root receives from each side present
        for p in range(n):
            assert len(transfers_from(chain_reduce_transfers(n, root), p)) == (0 if p == root else 1)
        sides = (root > 0) + (root < n - 1)
        assert len(transfers_into(chain_reduce_transfers(n, root), root)) == sides


def test_multicast_receivers_and_trivial_lines():
    (t,) = multicast_transfer(5, 2, 0)
    assert set(t.receivers) == {0, 1, 3, 4}
    assert multicast_transfer(1, 0, 0) == []
    assert pipeline_allreduce_transfers(1) == []
    with pytest.raises(ValueError):
        multicast_transfer(3, 3, 0)


@pytest.mark.parametrize("n", range(2, 20))
def test_pipeline_is_three_colours(n):
    flat = [t for ph in pipeline_allreduce_transfers(n) for t in ph]
    check_colours(flat, n)
    assert slots_used(flat) == (3 if n > 2 else 2)  # n = 2: one link, one chain colour


def test_check_colours_rejects_conflict():
    with pytest.raises(ValueError, match="colour slot 0"):
        check_colours([Transfer(0, 2, 0), Transfer(1, 3, 0)], 4)
    with pytest.raises(ValueError, match="leaves the line"):
        check_colours([Transfer(0, 4, 0)], 4)


@pytest.mark.parametrize("n", range(2, 20))
def test_ring_is_conflict_free(n):
    check_colours(ring_transfers(n), n)
