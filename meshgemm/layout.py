"""Tile layouts and line routing shared by the mesh kernels (waferllm-method.md §4.2-4.4, §5, §7).

* **Padding / tiling**: rotating operands are zero-padded to whole tiles (``padded``, ``pad2``);
  ``tile_of`` cuts a tile, ``flat``/``unflat`` store it row- or column-major in a PE buffer.
* **Rings**: ``Ring`` is a logical ring over a line of PEs with its forward and reverse shift as
  ``routing.Transfer`` lists (colour slots checked by ``routing.check_colours``):
  ``interleaved_ring`` (MeshGEMM, every link <= 2 hops) and ``plain_ring`` (Cannon: 1-hop links plus
  the P-1 hop wrap-around, passed through in hardware).
* **Routes**: ``route_line`` turns a list of line transfers into ``MeshProgram.set_route`` calls on
  every line of an axis at once; ``directed_chain_transfers`` are the root-independent chain routes
  (both directions routed everywhere, 2 colours per direction) used by dist-GEMM-T's reduce and by
  SUMMA's relay broadcast.

Axis convention: ``axis="x"`` means a line is a mesh row (positions are columns px, direction
EAST = increasing px); ``axis="y"`` a mesh column (positions are rows py, SOUTH = increasing py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshgemm.routing import Transfer, check_colours, ring_transfers
from plmr.interleave import ring_order, ring_position
from simulator.program import MeshProgram, Port


# ------------------------------------------------------------------------------------------------
# Padding and tiles
# ------------------------------------------------------------------------------------------------

def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def padded(d: int, parts: int) -> int:
    """Per-part tile of a zero-padded split: ⌈d/parts⌉."""
    return ceil_div(d, parts)


def pad2(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Zero-pad a 2-D array to rows × cols (padding never changes a product's unpadded block)."""
    out = np.zeros((rows, cols), dtype=a.dtype)
    out[:a.shape[0], :a.shape[1]] = a
    return out


def tile_of(a: np.ndarray, bi: int, bj: int, th: int, tw: int) -> np.ndarray:
    """Block (bi, bj) of size th × tw of a (padded) matrix."""
    return a[bi * th:(bi + 1) * th, bj * tw:(bj + 1) * tw]


def flat(tile: np.ndarray, order: str) -> np.ndarray:
    """Store a tile in a PE buffer: ``"row"`` = row-major, ``"col"`` = column-major."""
    return np.ascontiguousarray(tile if order == "row" else tile.T).ravel()


def unflat(v: np.ndarray, rows: int, cols: int, order: str) -> np.ndarray:
    return v.reshape(rows, cols) if order == "row" else v.reshape(cols, rows).T


# ------------------------------------------------------------------------------------------------
# Rings
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ring:
    """A logical ring over a line of ``n`` PEs. ``order[i]`` is the PE at ring position i, ``pos`` the
    inverse; a forward shift moves data from position i to i+1 (``fwd`` transfers), a reverse shift
    from i to i-1 (``rev``). Colour slots are 0-based per transfer list."""

    n: int
    kind: str
    order: tuple[int, ...]
    pos: tuple[int, ...]
    fwd: tuple[Transfer, ...]
    rev: tuple[Transfer, ...]

    def succ(self, p: int) -> int:
        return self.order[(self.pos[p] + 1) % self.n]

    def pred(self, p: int) -> int:
        return self.order[(self.pos[p] - 1) % self.n]

    @property
    def slots(self) -> int:
        return len({t.color for t in self.fwd})

    @property
    def hops(self) -> int:
        """Longest link of one shift (the per-step critical path in hops)."""
        return max((abs(t.dst - t.src) for t in self.fwd), default=0)

    def send_slot(self, p: int, reverse: bool = False) -> int | None:
        for t in (self.rev if reverse else self.fwd):
            if t.src == p:
                return t.color
        return None

    def recv_slot(self, p: int, reverse: bool = False) -> int | None:
        for t in (self.rev if reverse else self.fwd):
            if t.dst == p:
                return t.color
        return None


def interleaved_ring(n: int) -> Ring:
    """INTERLEAVE (method §4.2): R = [0, 2, 4, ..., 5, 3, 1], every link <= 2 hops, 3 colours
    (2 for n = 2, none for n = 1)."""
    order = ring_order(n) if n > 1 else (0,)
    pos = tuple(ring_position(p, n) if n > 1 else 0 for p in range(n))
    fwd = tuple(ring_transfers(n))
    rev = tuple(ring_transfers(n, reverse=True)) if n > 2 else fwd
    ring = Ring(n, "interleaved", order, pos, fwd, rev)
    _check_ring(ring)
    return ring


def plain_ring(n: int) -> Ring:
    """Cannon's ring 0 → 1 → ... → n-1 → 0: 1-hop links on two alternating colours and the n-1 hop
    wrap-around link on a third colour, passed through in hardware by every PE between."""
    order = tuple(range(n))
    if n <= 2:
        return Ring(n, "plain", order, order, tuple(ring_transfers(n)), tuple(ring_transfers(n)))
    fwd = tuple(Transfer(p, p + 1, p % 2) for p in range(n - 1)) + (Transfer(n - 1, 0, 2),)
    # Reverse: every link backwards, on the colour of its forward link.
    rev = tuple(Transfer(t.dst, t.src, t.color) for t in fwd)
    ring = Ring(n, "plain", order, order, fwd, rev)
    _check_ring(ring)
    return ring


def _check_ring(ring: Ring) -> None:
    n = ring.n
    for ts, step in ((ring.fwd, 1), (ring.rev, -1)):
        if n <= 1:
            continue
        check_colours(list(ts), n)
        for t in ts:
            assert ring.pos[t.dst] == (ring.pos[t.src] + step) % n, (ring.kind, t)
    assert all(ring.order[ring.pos[p]] == p for p in range(n))


# ------------------------------------------------------------------------------------------------
# Routes
# ------------------------------------------------------------------------------------------------

def _ports(axis: str) -> tuple[Port, Port]:
    """(port towards higher positions, port towards lower positions)."""
    return (Port.EAST, Port.WEST) if axis == "x" else (Port.SOUTH, Port.NORTH)


def route_line(prog: MeshProgram, transfers, axis: str, colour_of, lines=None,
               loopback: bool = False) -> None:
    """Set the routes of line ``transfers`` (colour slot → hardware colour via ``colour_of``) on every
    line of ``axis`` (or the given ``lines``: rows for axis x, columns for axis y). ``loopback``:
    senders also deliver their own stream back to their RAMP (a software-relay stage keeps a copy)."""
    up, down = _ports(axis)
    if lines is None:
        lines = range(prog.height if axis == "x" else prog.width)
    lines = list(lines)
    for t in transfers:
        c = colour_of(t.color)
        if t.dsts:  # a multicast: the source sends both ways, receivers deliver and pass on
            _route_multicast(prog, t, axis, c, lines)
            continue
        fwd = t.dst > t.src
        out_port, in_port = (up, down) if fwd else (down, up)
        hops = range(t.src, t.dst + 1) if fwd else range(t.src, t.dst - 1, -1)
        for p in hops:
            if p == t.src:
                rx, tx = {Port.RAMP}, ({out_port, Port.RAMP} if loopback else {out_port})
            elif p == t.dst:
                rx, tx = {in_port}, {Port.RAMP}
            else:
                rx, tx = {in_port}, {out_port}
            if axis == "x":
                prog.set_route(p, lines, c, rx, tx)
            else:
                prog.set_route(lines, p, c, rx, tx)


def _route_multicast(prog: MeshProgram, t: Transfer, axis: str, colour: int, lines: list[int]) -> None:
    up, down = _ports(axis)

    def set_(p, rx, tx):
        if axis == "x":
            prog.set_route(p, lines, colour, rx, tx)
        else:
            prog.set_route(lines, p, colour, rx, tx)

    recv = set(t.receivers)
    sides = {d > t.src: [] for d in t.receivers}
    for d in t.receivers:
        sides[d > t.src].append(d)
    set_(t.src, {Port.RAMP}, {up if hi else down for hi in sides})
    for hi, v in sides.items():
        far = max(v) if hi else min(v)
        step = 1 if hi else -1
        out = up if hi else down
        for p in range(t.src + step, far + step, step):
            tx = ({Port.RAMP} if p in recv else set()) | ({out} if p != far else set())
            set_(p, {down if hi else up}, tx)


def directed_chain_transfers(n: int) -> tuple[list[Transfer], list[Transfer]]:
    """Root-independent chain routes on a line of n PEs: every p sends 1 hop up on slot p % 2 and
    1 hop down on slot 2 + p % 2, so a chain into any root uses fixed routes (4 colours; method §5).
    Returns (up transfers, down transfers); colours checked."""
    up = [Transfer(p, p + 1, p % 2) for p in range(n - 1)]
    down = [Transfer(p, p - 1, 2 + p % 2) for p in range(1, n)]
    check_colours(up + down, n)
    return up, down
