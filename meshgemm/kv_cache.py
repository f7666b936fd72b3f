"""The shift-based KV cache of method §8: which mesh row holds which token, and what moves on each append.

Tokens are on y (rows); each PE row keeps a contiguous, ordered range of the cached tokens, oldest at the top.
With m cached tokens on P_y rows, rows 0 … (m mod P_y)−1 hold ⌊m/P_y⌋+1 entries and the others ⌊m/P_y⌋
(the invariant; a balanced prefill split satisfies it). Appending token n, with j = m mod P_y:

* m < P_y: the token is written into row j (empty so far), nothing moves;
* otherwise the bottom row appends it while rows j+1 … P_y−1 each pass their oldest entry up one row, all at
  once over 1-hop links, and row j absorbs one. Every PE knows n, so no fill comparison is communicated.

**Sliding window** [O]. A layer with window W needs only the last W tokens (a query at p sees keys in
(p − W, p]), so the cache keeps m = min(n, W) tokens. Once m = W, an append also drops the oldest token: the
new token enters the last non-empty row, every non-empty row below the top passes its oldest entry up, and the
top row discards its own. The cache then never grows past W, whatever the context length.

**Ring buffers** [O]. Each PE stores its entries in a ring of ``capacity`` slots and token t always lives in
slot ``t mod capacity``, on whichever row holds it. A row's range is at most ``capacity`` consecutive tokens,
so its slots are distinct; an entry passed up lands in the *same* slot one row up, so one run-time offset
(n mod capacity, or the oldest token's) serves sender and receiver, and nothing is ever compacted. All reads
of an append happen before its writes: a full row that shifts receives into the slot its departing entry
leaves (`AppendStep.same_slot_rows`), so the device sends before it receives there.

**Capacity.** ``capacity`` entries per PE give P_y·capacity cached tokens; appending past that raises
`KVCacheFull` before anything is written. The concatenation baseline (new entries all on the last row) is
`concat_decode_capacity`, about P_y times smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

from plmr.errors import InputError


class KVCacheFull(InputError):
    """The next token does not fit the KV cache; raised before anything is written."""


@dataclass(frozen=True)
class Move:
    """Entry ``token`` passes from row ``src`` up to row ``dst`` = src − 1 (``dst`` = −1: dropped by the top row
    of a full sliding window). It sits in ring slot ``slot`` on both rows."""

    token: int
    src: int
    dst: int
    slot: int


@dataclass(frozen=True)
class AppendStep:
    """What appending ``token`` does: it is written into row ``write_row`` at ring slot ``slot``; ``moves`` run
    at the same time (all reads before all writes); ``absorb_row`` gains one entry (None when no row grows)."""

    token: int
    write_row: int
    slot: int
    moves: tuple[Move, ...]
    absorb_row: int | None
    same_slot_rows: tuple[int, ...]

    @property
    def shifting_rows(self) -> tuple[int, ...]:
        """Rows that pass their oldest entry up (or drop it, for the top row of a full window)."""
        return tuple(mv.src for mv in self.moves)


@dataclass(frozen=True)
class ShiftKVCache:
    """The §8 rule for one layer's cache on ``rows`` (P_y) mesh rows with ``capacity`` entries per PE;
    ``window`` is the layer's sliding window (None: full causal attention). Pure: the cache contents after n
    appended tokens are a function of n alone."""

    rows: int
    capacity: int
    window: int | None = None

    def __post_init__(self) -> None:
        for name in ("rows", "capacity"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"KV cache: {name} must be a positive integer, got {v!r}")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise InputError(f"KV cache: window must be a positive integer or None, got {self.window!r}")

    # ---- sizes ---------------------------------------------------------------------------------------
    @property
    def max_cached(self) -> int:
        """Entries the whole cache holds: P_y × capacity."""
        return self.rows * self.capacity

    @property
    def max_context(self) -> int | None:
        """Tokens that can be appended in total; None (unbounded) when a sliding window fits the cache."""
        if self.window is not None and -(-self.window // self.rows) <= self.capacity:
            return None
        return self.max_cached

    def first_retained(self, n: int) -> int:
        """Oldest token still cached after n appends (0 without a window)."""
        return max(0, n - self.window) if self.window is not None else 0

    def cached(self, n: int) -> int:
        """Tokens cached after n appends: m = n − first_retained(n)."""
        return n - self.first_retained(n)

    # ---- the invariant -------------------------------------------------------------------------------
    def row_counts(self, n: int) -> tuple[int, ...]:
        """Entries per row after n appends: the first (m mod P_y) rows hold ⌊m/P_y⌋ + 1, the rest ⌊m/P_y⌋."""
        q, r = divmod(self.cached(n), self.rows)
        return tuple(q + (1 if i < r else 0) for i in range(self.rows))

    def row_ranges(self, n: int) -> tuple[tuple[int, int], ...]:
        """[start, stop) token range of each row after n appends (contiguous, in order down the rows)."""
        out, start = [], self.first_retained(n)
        for c in self.row_counts(n):
            out.append((start, start + c))
            start += c
        return tuple(out)

    def row_of(self, token: int, n: int) -> int | None:
        """Row holding ``token`` after n appends, or None if it is not cached (not yet appended, or dropped)."""
        for r, (a, b) in enumerate(self.row_ranges(n)):
            if a <= token < b:
                return r
        return None

    def slot(self, token: int) -> int:
        """Ring-buffer slot of ``token`` on any row: token mod capacity."""
        return token % self.capacity

    def segments(self, row: int, n: int) -> tuple[tuple[int, int], ...]:
        """The row's cached entries after n appends as at most two (first slot, length) runs of its ring, in
        token order (the run-time offsets a device loop over the cache uses)."""
        a, b = self.row_ranges(n)[row]
        if a == b:
            return ()
        s, length = self.slot(a), b - a
        first = min(length, self.capacity - s)
        return ((s, first),) + (((0, length - first),) if length > first else ())

    # ---- appending -----------------------------------------------------------------------------------
    def check_append(self, n: int) -> None:
        """Raise `KVCacheFull` if token n (the (n+1)-th) does not fit; nothing has been written then."""
        if max(self.row_counts(n + 1)) > self.capacity:
            raise KVCacheFull(
                f"KV cache full: {self.rows} row{'s' if self.rows != 1 else ''} x {self.capacity} entries per PE hold {self.max_cached} "
                f"tokens; token {n + 1} of the context does not fit (use a shorter prompt or fewer new "
                f"tokens, or give the cache more rows or memory)")

    def append(self, n: int) -> AppendStep:
        """The step that appends token n to the cache holding tokens appended before it (see the module)."""
        if n < 0:
            raise InputError(f"KV cache: token index must be >= 0, got {n}")
        self.check_append(n)
        P = self.rows
        before = self.row_ranges(n)
        m = self.cached(n)
        full = self.window is not None and m == self.window
        if full:
            last = min(m, P) - 1  # last non-empty row
            srcs = range(0, last + 1) if m else range(0)
            moves = tuple(Move(before[r][0], r, r - 1, self.slot(before[r][0])) for r in srcs)
            write_row, absorb = max(last, 0), None
        else:
            j = m % P
            if m < P:
                write_row, moves, absorb = j, (), j
            else:
                write_row = P - 1
                moves = tuple(Move(before[r][0], r, r - 1, self.slot(before[r][0])) for r in range(j + 1, P))
                absorb = j
        counts = self.row_counts(n)
        same = tuple(r for r in range(P)
                     if counts[r] == self.capacity and any(mv.src == r for mv in moves)
                     and (r == write_row or any(mv.dst == r for mv in moves)))
        return AppendStep(token=n, write_row=write_row, slot=self.slot(n), moves=moves, absorb_row=absorb,
                          same_slot_rows=same)

    # ---- prefill -------------------------------------------------------------------------------------
    def prefill(self, prompt_len: int) -> tuple[tuple[int, int], ...]:
        """Row ranges after a prompt of ``prompt_len`` tokens (the balanced split; with a window, of its last W
        tokens), or `KVCacheFull` if the prompt does not fit."""
        if prompt_len < 0:
            raise InputError(f"prompt length must be >= 0, got {prompt_len}")
        if max(self.row_counts(prompt_len)) > self.capacity:
            raise KVCacheFull(
                f"KV cache full: a prompt of {prompt_len} tokens needs {max(self.row_counts(prompt_len))} "
                f"entries per PE on {self.rows} row{'s' if self.rows != 1 else ''}; each PE holds {self.capacity}")
        return self.row_ranges(prompt_len)

    def decode_capacity(self, prompt_len: int) -> int | None:
        """Tokens that can still be appended after the prompt (None: unbounded, a window that fits)."""
        mc = self.max_context
        return None if mc is None else max(0, mc - prompt_len)


# ---- sizing ---------------------------------------------------------------------------------------------
def entries_per_pe(budget_bytes: int, kv_features: int, dtype_bytes: int, layers: int = 1) -> int:
    """c_max of method §8: cache entries fitting ``budget_bytes`` on a PE holding ``kv_features`` K and as many
    V features per entry, for ``layers`` resident layers."""
    per_entry = 2 * kv_features * dtype_bytes * layers
    return budget_bytes // per_entry if per_entry else 0


def concat_decode_capacity(rows: int, capacity: int, prompt_len: int) -> int:
    """New tokens the concatenation baseline holds: the prompt is split balanced and every new entry goes to
    the last row, which already holds ⌊L/P_y⌋ prompt tokens (method §8). 0 when the prompt does not fit."""
    q, r = divmod(prompt_len, rows)
    if q + (1 if r else 0) > capacity:
        return 0
    return capacity - q


def shift_decode_capacity(rows: int, capacity: int, prompt_len: int) -> int:
    """New tokens the shift-based cache holds: P_y·capacity − L (0 when the prompt does not fit)."""
    return max(0, rows * capacity - prompt_len)
