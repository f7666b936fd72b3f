"""INTERLEAVE (waferllm-method.md §4.2): a logical ring over a line of N cores whose every link spans
at most 2 hops, so a MeshGEMM shift has a constant critical path instead of Cannon's N-1 hop wrap."""

from __future__ import annotations

from functools import lru_cache


def interleave(index: int, n: int) -> tuple[int, int]:
    """(recv_from, send_to) of core ``index`` on a line of ``n`` cores (paper Algorithm 1).

    n = 1 is its own neighbour; n = 2 is a 1-hop exchange (the authors' code is wrong for n = 2 [C]).
    """
    if n < 1 or not 0 <= index < n:
        raise ValueError(f"interleave: need 0 <= index < n and n >= 1, got index={index}, n={n}")
    if n == 1:
        return 0, 0
    if n == 2:
        other = 1 - index
        return other, other
    if index % 2 == 0:
        recv, send = max(index - 2, 0), min(index + 2, n - 1)
    else:
        recv, send = min(index + 2, n - 1), max(index - 2, 0)
    if index == 0:
        recv = 1
    if index == n - 1:
        if n % 2 == 0:
            recv = n - 2
        else:
            send = n - 2
    return recv, send


@lru_cache(maxsize=256)
def ring_order(n: int) -> tuple[int, ...]:
    """R: even cores ascending, then odd cores descending, e.g. n=6 -> (0, 2, 4, 5, 3, 1)."""
    return tuple(range(0, n, 2)) + tuple(range(n - 1 if (n - 1) % 2 else n - 2, 0, -2))


def ring_position(p: int, n: int) -> int:
    """pos(p) with R[pos(p)] = p: p/2 for even p, n - (p+1)/2 for odd p."""
    return p // 2 if p % 2 == 0 else n - (p + 1) // 2


def max_link_hops(n: int) -> int:
    """Longest physical distance between ring neighbours (2 for n >= 3)."""
    order = ring_order(n)
    return max((abs(order[i] - order[(i + 1) % n]) for i in range(n)), default=0)
