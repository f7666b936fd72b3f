"""The shift-based KV cache rule against brute force: row lists and ring buffers moved entry by entry."""

from __future__ import annotations

from itertools import combinations

import pytest

from meshgemm.kv_cache import (KVCacheFull, ShiftKVCache, concat_decode_capacity, entries_per_pe,
                               shift_decode_capacity)
from plmr.errors import InputError


def balanced_target(tokens: list[int], rows: int) -> list[list[int]]:
    """The invariant, built the slow way: deal the ordered tokens out, extras to the top rows."""
    out, it = [], iter(tokens)
    for r in range(rows):
        n = len(tokens) // rows + (1 if r < len(tokens) % rows else 0)
        out.append([next(it) for _ in range(n)])
    return out


class RingRows:
    """Physical model: one ring buffer of `cap` slots per row with a head pointer and a count; an append is
    applied as parallel reads (pops of the oldest entry) followed by writes (pushes at the tail)."""

    def __init__(self, rows: int, cap: int):
        self.cap = cap
        self.slots = [[None] * cap for _ in range(rows)]
        self.head = [0] * rows
        self.count = [0] * rows

    def push(self, r: int, token: int) -> None:
        if self.count[r] == 0:
            self.head[r] = token % self.cap  # an empty row starts its ring where the token's slot is
        s = (self.head[r] + self.count[r]) % self.cap
        assert self.count[r] < self.cap and self.slots[r][s] is None, "overwrote a live entry"
        self.slots[r][s] = token
        self.count[r] += 1

    def pop(self, r: int) -> int:
        assert self.count[r] > 0
        t = self.slots[r][self.head[r]]
        self.slots[r][self.head[r]] = None
        self.head[r] = (self.head[r] + 1) % self.cap
        self.count[r] -= 1
        return t

    def apply(self, step) -> None:
        out = [(mv, self.pop(mv.src)) for mv in step.moves]  # all reads first
        for mv, t in out:
            assert t == mv.token
            if mv.dst >= 0:
                self.push(mv.dst, t)
        self.push(step.write_row, step.token)

    def contents(self) -> list[list[int]]:
        return [[self.slots[r][(self.head[r] + i) % self.cap] for i in range(self.count[r])]
                for r in range(len(self.slots))]


@pytest.mark.parametrize("window", [None, 1, 3, 7, 12])
@pytest.mark.parametrize("rows", range(1, 11))
def test_shift_rule_against_brute_force(rows, window):
    n_tokens = 6 * rows + 9
    longest = max(len(r) for n in range(n_tokens + 1)
                  for r in balanced_target(list(range(max(0, n - (window or n)), n)), rows))
    cache = ShiftKVCache(rows, max(longest, 1), window)
    ring = RingRows(rows, cache.capacity)
    for n in range(n_tokens):
        before = balanced_target(list(range(cache.first_retained(n), n)), rows)
        after = balanced_target(list(range(cache.first_retained(n + 1), n + 1)), rows)
        assert [list(range(a, b)) for a, b in cache.row_ranges(n)] == before
        step = cache.append(n)
        # the moves are exactly the tokens whose row changed, each up one row (or dropped from the top)
        where_before = {t: r for r, ts in enumerate(before) for t in ts}
        where_after = {t: r for r, ts in enumerate(after) for t in ts}
        moved = {(t, where_before[t], where_after.get(t, -1)) for t in where_before
                 if where_after.get(t, -1) != where_before[t]}
        assert moved == {(mv.token, mv.src, mv.dst) for mv in step.moves}
        assert all(dst == src - 1 for _, src, dst in moved)
        assert len({mv.src for mv in step.moves}) == len(step.moves)  # one entry per shifting row
        assert where_after[n] == step.write_row
        # the ring buffers, moved entry by entry, end in the invariant with every token in slot t mod C
        ring.apply(step)
        assert ring.contents() == after
        for r in range(rows):
            for i in range(ring.count[r]):
                s = (ring.head[r] + i) % cache.capacity
                assert cache.slot(ring.slots[r][s]) == s
                assert cache.row_of(ring.slots[r][s], n + 1) == r
        # segments: the cached tokens of each row in order, via (slot, length) runs
        for r in range(rows):
            toks = [ring.slots[r][s + i] for s, ln in cache.segments(r, n + 1) for i in range(ln)]
            assert toks == after[r]


@pytest.mark.parametrize("rows", range(1, 7))
def test_the_rule_is_the_only_one_hop_update(rows):
    """Among every choice of write row and set of rows passing their oldest entry up, only the rule's gives
    the balanced ordered state (so the rule is forced by the invariant and 1-hop moves)."""
    cache = ShiftKVCache(rows, 100)
    for n in range(3 * rows + 4):
        before = balanced_target(list(range(n)), rows)
        target = balanced_target(list(range(n + 1)), rows)
        found = []
        for w in range(rows):
            for k in range(rows + 1):
                for shifting in combinations(range(1, rows), k):
                    if any(not before[r] for r in shifting):
                        continue
                    state = [list(ts) for ts in before]
                    ups = [(r, state[r].pop(0)) for r in shifting]
                    for r, t in ups:
                        state[r - 1].append(t)
                    state[w].append(n)
                    if all(s == sorted(s) for s in state) and state == target:
                        found.append((w, shifting))
        step = cache.append(n)
        assert found == [(step.write_row, step.shifting_rows)]


def test_worked_example_p4():
    """P_y = 4, hand-worked: tokens 0-3 fill one row each; token 4 goes to the bottom while rows 1-3 pass up."""
    c = ShiftKVCache(4, 8)
    assert [c.append(n).write_row for n in range(4)] == [0, 1, 2, 3]
    assert c.append(4).shifting_rows == (1, 2, 3) and c.append(4).absorb_row == 0
    assert c.row_ranges(5) == ((0, 2), (2, 3), (3, 4), (4, 5))
    assert c.append(6).shifting_rows == (3,)  # j = 2: only the bottom row passes up
    assert c.append(7).shifting_rows == ()  # j = 3: the bottom row just appends
    assert c.row_counts(8) == (2, 2, 2, 2)


def test_capacity_and_errors():
    c = ShiftKVCache(3, 2)
    assert c.max_cached == 6 and c.max_context == 6 and c.decode_capacity(4) == 2
    for n in range(6):
        c.append(n)
    with pytest.raises(KVCacheFull, match=r"3 rows x 2 entries per PE hold 6 tokens; token 7 of the context"):
        c.append(6)
    with pytest.raises(KVCacheFull, match="a prompt of 7 tokens needs 3 entries per PE"):
        c.prefill(7)
    assert c.prefill(5) == ((0, 2), (2, 4), (4, 5))
    # a window that fits makes the context unbounded; one that does not is bounded like no window
    assert ShiftKVCache(3, 2, window=6).max_context is None
    assert ShiftKVCache(3, 2, window=7).max_context == 6
    w = ShiftKVCache(3, 2, window=5)
    assert w.row_ranges(100) == ((95, 97), (97, 99), (99, 100))
    assert w.append(100).moves[0].dst == -1  # the top row drops token 95
    with pytest.raises(InputError, match="capacity must be a positive integer"):
        ShiftKVCache(3, 0)
    with pytest.raises(InputError, match="window must be a positive integer"):
        ShiftKVCache(3, 2, window=0)


def test_full_shifting_rows_reuse_their_slot():
    c = ShiftKVCache(2, 2)  # tokens 0-3 fill both rows; no more fit
    assert c.append(2).same_slot_rows == ()  # row 0 absorbs, row 1 (one entry) shifts and appends
    w = ShiftKVCache(2, 2, window=4)
    step = w.append(4)  # full window: both full rows send their oldest and receive into that slot
    assert step.same_slot_rows == (0, 1)
    assert [(mv.token, mv.slot) for mv in step.moves] == [(0, 0), (2, 0)] and step.slot == 0


def test_shift_capacity_is_about_p_times_concatenation():
    for rows, cap, prompt in [(8, 64, 100), (30, 200, 4096), (1, 50, 10)]:
        shift, concat = shift_decode_capacity(rows, cap, prompt), concat_decode_capacity(rows, cap, prompt)
        assert shift == rows * cap - prompt
        # concatenation: the last row holds ⌊L/P⌋ prompt tokens plus every new one
        assert concat == cap - prompt // rows
        if rows > 1:
            assert shift > (rows - 1) * concat
    assert concat_decode_capacity(4, 3, 13) == 0  # the prompt itself does not fit
    # c_max from a byte budget: 2 (K and V) × 48 features × 2 bytes × 2 layers = 384 bytes per entry
    assert entries_per_pe(10_000, 48, 2, layers=2) == 26
