"""Prefill ring attention's cost rule: the critical path of the ring against a brute-force search over
every path, the window's effect, and the one-row limiting case."""

from __future__ import annotations

import itertools

import pytest

from plmr import WSE2
from plmr.attention import ring_attention, ring_busy_steps
from plmr.interleave import ring_order


def brute_force_busy(p_y: int, blocks: int) -> int:
    """Every path through (ring position, step) that moves at most one position (cyclically) per step,
    counting the steps at which the row it sits on computes; the best path's count."""
    order = list(ring_order(p_y)) if p_y > 2 else list(range(p_y))
    pos = {y: i for i, y in enumerate(order)}

    def busy(i, t):
        y = order[i]
        j = order[(pos[y] - t) % p_y]
        return 0 <= y - j < blocks

    best = 0
    for start in range(p_y):
        for moves in itertools.product((-1, 0, 1), repeat=p_y - 1):
            i, n = start, int(busy(start, 0))
            for t, mv in enumerate(moves, 1):
                i = (i + mv) % p_y if p_y > 2 else (i if mv == 0 else (1 - i if p_y == 2 else i))
                n += busy(i, t)
            best = max(best, n)
    return best


@pytest.mark.parametrize("p_y", [1, 2, 3, 5, 6, 7])
@pytest.mark.parametrize("blocks", [1, 2, 3, 7])
def test_ring_busy_steps_is_the_best_path(p_y, blocks):
    assert ring_busy_steps(p_y, blocks) == brute_force_busy(p_y, blocks)


def test_causal_ring_computes_every_step():
    assert ring_busy_steps(660, 660) == 660
    assert ring_busy_steps(8, 1) == 1  # only the diagonal block: every row at step 0


def test_one_row_has_no_ring_and_no_streams():
    c = ring_attention(WSE2, 1, 1, rows=32, features=16, groups=1, head_dim=16, n_rep=2, tokens=16, keys=16,
                       tiles=1, m=16, visible=1)
    assert c.comm_cycles == 0 and c.total_cycles > 0


def test_more_visible_blocks_cost_more():
    kw = dict(group_cols=4, rows=8, features=8, groups=1, head_dim=32, n_rep=4, tokens=8, keys=8, tiles=1, m=8)
    costs = [ring_attention(WSE2, 16, visible=v, **kw).total_cycles for v in (1, 16)]
    assert costs[0] < costs[1]
