"""The routing patterns of method §7 (hardware-and-csl.md §6.11) and the roles of the PEs in them,
as expressions of a PE's position on a line — what ``layout.csl`` computes in its comptime loops.

A *line* is one row (``axis="x"``: positions are columns, the positive direction is EAST) or one
column (``axis="y"``: positions are rows, positive is SOUTH) of the program's rectangle. Every
pattern is written once for every line length: sizes are program parameters (``prog.param``), so
the rules are evaluated for each PE (vectorised) by the simulator's builder and printed unchanged by
the CSL emitter.

A pattern is a set of *line transfers* (a source streams to a destination on one colour slot; the
PEs strictly between pass it through in hardware). At position q and colour slot c it is described
by predicates (0/1 expressions): q sends on c (and in which direction), q receives on c from the
negative or the positive side, a transfer on c passes through q going up or down. ``masks`` turns
them into the ``rx``/``tx`` port masks of ``@set_color_config``; a colour has one route per PE, so
at most one transfer of a slot may touch a PE (the tests check every pattern against the
transfer lists of ``meshgemm.routing`` for many line lengths).

Patterns here:

* **interleaved ring** (MeshGEMM; INTERLEAVE of method §4.2, colours of §4.6), forward and reverse;
* **plain ring** (Cannon: 1-hop links plus the n−1-hop wrap);
* **K-tree reduce** (method §6.3-§6.4 as ``plmr.ktree.build_ktree`` builds it: balanced groups with
  boundaries ⌊i·N/G⌋, root the middle member; two colours per level alternating by distance to the
  group root, with opposite parity on the two sides) with the roles a PE plays at each level;
* **multicast** from a root (one colour sent both ways);
* **directed chains** (every PE one hop up on slot p % 2 and down on 2 + p % 2: chains into a root
  chosen at run time, for dist-GEMM-T and SUMMA's relays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from plmr.errors import InputError
from simulator.expr import Const, Expr, ExprLike, X, Y, as_expr, eq, logical_not, max_, min_, ne, select
from simulator.program import MeshProgram, Port

AXES = ("x", "y")
RAMP = 1 << int(Port.RAMP)


def position(axis: str) -> Expr:
    """The position of a PE on its line of ``axis``."""
    if axis not in AXES:
        raise InputError(f"axis must be 'x' or 'y', got {axis!r}")
    return X if axis == "x" else Y


def ports(axis: str) -> tuple[int, int]:
    """(mask bit of the port towards higher positions, towards lower positions)."""
    up, down = (Port.EAST, Port.WEST) if axis == "x" else (Port.SOUTH, Port.NORTH)
    return 1 << int(up), 1 << int(down)


def _b(e: ExprLike) -> Expr:
    """A 0/1 predicate."""
    return as_expr(e)


@dataclass
class SlotRoles:
    """Predicates of one colour slot at a position q (all 0/1 expressions)."""

    send: Expr  # q injects a transfer on this slot
    send_up: Expr  # ... towards higher positions (else lower)
    recv_from_below: Expr  # q receives a transfer that came from lower positions
    recv_from_above: Expr
    pass_up: Expr  # a transfer going up passes through q
    pass_down: Expr

    def masks(self, axis: str) -> tuple[Expr, Expr]:
        """(rx mask, tx mask) of ``@set_color_config`` at q."""
        up, down = ports(axis)
        from_below = self.recv_from_below | self.pass_up  # arrives through the lower port
        from_above = self.recv_from_above | self.pass_down
        rx = self.send * RAMP + from_below * down + from_above * up
        out_up = (self.send & self.send_up) | self.pass_up
        out_down = (self.send & logical_not(self.send_up)) | self.pass_down
        tx = (self.recv_from_below | self.recv_from_above) * RAMP + out_up * up + out_down * down
        return rx, tx


def route_slots(prog: MeshProgram, axis: str, roles: list[SlotRoles], colour_of: Callable[[int], int],
                x=None, y=None, when: ExprLike = 1) -> None:
    """Set the routes of a pattern (one ``route_rule`` per colour slot) on every line of ``axis``
    within the selection (default: the whole rectangle) where ``when`` holds."""
    for slot, r in enumerate(roles):
        if r is None:
            continue
        rx, tx = r.masks(axis)
        prog.route_rule(x, y, colour_of(slot), rx, tx, when=when)


# ------------------------------------------------------------------------------------------------
# Rings
# ------------------------------------------------------------------------------------------------


@dataclass
class RingExprs:
    """A logical ring over a line of n PEs, as functions of a position expression."""

    n: int  # the line length (structure depends on it: 1, 2, or >= 3)
    N: Expr  # the same as an expression (a program parameter), used in the formulas
    kind: str  # "interleaved" or "plain"

    # -- structure -------------------------------------------------------------------------
    def send_to(self, p: Expr) -> Expr:
        n, N = self.n, self.N
        if n == 1:
            return p
        if n == 2:
            return 1 - p
        if self.kind == "plain":
            return select(p < N - 1, p + 1, 0)
        even = eq(p % 2, 0)
        s = select(even, min_(p + 2, N - 1), max_(p - 2, 0))
        return select(eq(p, N - 1) & eq(N % 2, 1), N - 2, s)

    def recv_from(self, p: Expr) -> Expr:
        n, N = self.n, self.N
        if n == 1:
            return p
        if n == 2:
            return 1 - p
        if self.kind == "plain":
            return select(p > 0, p - 1, N - 1)
        even = eq(p % 2, 0)
        r = select(even, max_(p - 2, 0), min_(p + 2, N - 1))
        r = select(eq(p, 0), 1, r)
        return select(eq(p, N - 1) & eq(N % 2, 0), N - 2, r)

    def pos(self, p: Expr) -> Expr:
        """Ring position of PE p (method §4.2): p/2 for even p, N − (p+1)/2 for odd p."""
        if self.n <= 2 or self.kind == "plain":
            return p
        return select(eq(p % 2, 0), p // 2, self.N - (p + 1) // 2)

    def slot(self, p: Expr) -> Expr:
        """Colour slot of the forward transfer p sends (method §4.6 per-sender rule)."""
        n, N = self.n, self.N
        if n == 1:
            return Const(0)
        if n == 2:
            return p
        if self.kind == "plain":
            return select(p < N - 1, p % 2, 2)
        even = eq(p % 2, 0)
        s = select(even, (p + 1) % 3, (p + 2) % 3)  # (p - 1) % 3 written without a negative operand
        return select(eq(p, N - 1) & eq(N % 2, 1), (N - 1) % 3, s)

    @property
    def slots(self) -> int:
        return 0 if self.n <= 1 else 2 if self.n == 2 else 3

    # -- the two shifts --------------------------------------------------------------------
    def transfer(self, p: Expr, reverse: bool) -> tuple[Expr, Expr]:
        """(destination, slot) of the transfer p sends in a forward or reverse shift. The reverse
        shift runs every link backwards on the colour of its forward link (on a 2-ring the reverse
        shift is the forward one)."""
        if not reverse or self.n <= 2:
            return self.send_to(p), self.slot(p)
        d = self.recv_from(p)
        return d, self.slot(d)

    def incoming(self, q: Expr, reverse: bool) -> tuple[Expr, Expr]:
        """(source, slot) of the transfer q receives."""
        if not reverse or self.n <= 2:
            s = self.recv_from(q)
            return s, self.slot(s)
        return self.send_to(q), self.slot(q)

    def roles(self, q: Expr, reverse: bool = False) -> list[SlotRoles]:
        """Route predicates per slot of one shift (every transfer spans at most 2 hops, or is the
        plain ring's wrap)."""
        n, N = self.n, self.N
        out = []
        dst, slot = self.transfer(q, reverse)
        src, in_slot = self.incoming(q, reverse)
        for c in range(self.slots):
            send = eq(slot, c)
            recv = eq(in_slot, c)
            if self.kind == "plain" and n >= 3:
                # only the wrap (slot 2) spans more than one hop: it passes every interior PE
                wrap_down = not reverse
                inner = (q >= 1) & (q <= N - 2) if c == 2 else Const(0)
                pass_up = inner if (c == 2 and not wrap_down) else Const(0)
                pass_down = inner if (c == 2 and wrap_down) else Const(0)
            elif n >= 3:
                lo_dst, lo_slot = self.transfer(q - 1, reverse)
                hi_dst, hi_slot = self.transfer(q + 1, reverse)
                inner = (q >= 1) & (q <= N - 2)
                pass_up = inner & eq(lo_dst, q + 1) & eq(lo_slot, c)
                pass_down = inner & eq(hi_dst, q - 1) & eq(hi_slot, c)
            else:
                pass_up = pass_down = Const(0)
            out.append(SlotRoles(send, dst > q, recv & (src < q), recv & (src > q), pass_up, pass_down))
        return out


def interleaved_ring(n: int, N: ExprLike) -> RingExprs:
    return RingExprs(n, as_expr(N), "interleaved")


def plain_ring(n: int, N: ExprLike) -> RingExprs:
    return RingExprs(n, as_expr(N), "plain")


# ------------------------------------------------------------------------------------------------
# Multicast and directed chains
# ------------------------------------------------------------------------------------------------


def multicast_masks(axis: str, q: Expr, N: ExprLike, root: ExprLike) -> tuple[Expr, Expr]:
    """(rx, tx) masks of a multicast from ``root`` along a line of N (the root injects and sends
    towards whichever sides exist)."""
    up, down = ports(axis)
    N, root = as_expr(N), as_expr(root)
    is_root = eq(q, root)
    below, above = q < root, q > root
    rx = (is_root & (N > 1)) * RAMP + above * down + below * up
    tx_root = (q < N - 1) * up + (q > 0) * down
    tx = is_root * tx_root + (logical_not(is_root)) * (RAMP + (above & (q < N - 1)) * up + (below & (q > 0)) * down)
    return rx, tx


def directed_chain_roles(q: Expr, N: ExprLike) -> list[SlotRoles]:
    """Every PE sends one hop up on slot q % 2 and one hop down on slot 2 + q % 2 (4 slots), so a
    chain into a root chosen at run time has its routes in place (method §5)."""
    N = as_expr(N)
    out = []
    for c in range(4):
        up = c < 2
        par = c % 2
        if up:
            send = eq(q % 2, par) & (q < N - 1)
            recv = eq((q + 1) % 2, par) & (q >= 1)  # from q - 1, whose parity is c
            out.append(SlotRoles(send, Const(1), recv, Const(0), Const(0), Const(0)))
        else:
            send = eq(q % 2, par) & (q >= 1)
            recv = eq((q + 1) % 2, par) & (q < N - 1)
            out.append(SlotRoles(send, Const(0), Const(0), recv, Const(0), Const(0)))
    return out


# ------------------------------------------------------------------------------------------------
# K-tree reduce
# ------------------------------------------------------------------------------------------------

#: roles a PE plays at one K-tree level (the body branches on them at comptime)
ROLE_NONE, ROLE_SEND, ROLE_RELAY, ROLE_ROOT1, ROLE_ROOT2 = 0, 1, 2, 3, 4


@dataclass
class KTreeLevelExprs:
    """One level of a K-tree on a line, as expressions of a position q."""

    k: int  # level index (0-based)
    N: Expr  # participants at this level
    G: Expr  # groups at this level
    prev: "KTreeLevelExprs | None"
    root_at: Expr | None = None  # a single group's root index other than the middle (a chain into an end)

    def pos(self, i: Expr) -> Expr:
        """Physical position of participant index i."""
        if self.prev is None:
            return i
        return self.prev.pos(self.prev.root(i))

    def group(self, i: Expr) -> Expr:
        return ((i + 1) * self.G - 1) // self.N

    def start(self, g: Expr) -> Expr:
        return g * self.N // self.G

    def root(self, g: Expr) -> Expr:
        """Participant index of group g's root (the middle member)."""
        if self.root_at is not None:
            return self.root_at
        b0, b1 = self.start(g), self.start(g + 1)
        return b0 + (b1 - b0) // 2

    def at_or_below(self, q: Expr) -> Expr:
        """Index of the participant at or below position q (−1: none)."""
        if self.prev is None:
            return q
        i = self.prev.at_or_below(q)
        g = self.prev.group(max_(i, 0))
        a = select(self.prev.pos(self.prev.root(g)) <= q, g, g - 1)
        return select(i < 0, -1, a)

    def slot_from(self, j: Expr, ri: Expr) -> Expr:
        """Slot (0 or 1 within the level) of the transfer member j sends towards root index ri."""
        return select(j < ri, (ri - j) % 2, (j - ri + 1) % 2)


def ktree_levels(counts: tuple[int, ...], N: ExprLike, G: list[ExprLike]) -> list[KTreeLevelExprs]:
    """Levels of a K-tree over a line of ``N`` PEs whose level k has ``G[k]`` groups (the last 1)."""
    levels: list[KTreeLevelExprs] = []
    n = as_expr(N)
    prev = None
    for k, g in enumerate(G):
        lv = KTreeLevelExprs(k, n, as_expr(g), prev)
        levels.append(lv)
        prev = lv
        n = as_expr(g)
    return levels


@dataclass
class KTreeRole:
    """What a PE does at one level: a role code and the colour slots (0/1 within the level) of what
    it sends (``out``), receives on its one incoming side or the longer one (``inn``) and, for a
    root fed from both sides, receives from the shorter side (``in2``)."""

    role: Expr
    out: Expr
    inn: Expr
    in2: Expr


def ktree_role(lv: KTreeLevelExprs, q: Expr) -> KTreeRole:
    a = lv.at_or_below(q)
    i = max_(a, 0)
    part = (a >= 0) & eq(lv.pos(i), q)
    g = lv.group(i)
    b0, b1 = lv.start(g), lv.start(g + 1)
    ri = lv.root(g)
    left = ri - b0  # members below the root
    right = b1 - 1 - ri
    is_root = eq(i, ri)
    end = (eq(i, b0) & (i < ri)) | (eq(i, b1 - 1) & (i > ri))
    sides = (left > 0) * 1 + (right > 0) * 1
    role = select(logical_not(part), ROLE_NONE,
                  select(is_root, select(eq(sides, 2), ROLE_ROOT2, select(eq(sides, 1), ROLE_ROOT1, ROLE_NONE)),
                         select(end, ROLE_SEND, ROLE_RELAY)))
    out = lv.slot_from(i, ri)
    from_below = lv.slot_from(i - 1, ri)
    from_above = lv.slot_from(i + 1, ri)
    # the incoming side: below for members below the root, above for those above; a root fed from
    # both sides receives the shorter side (fewer members; above on ties) into scratch first
    short_above = right <= left
    inn = select(i < ri, from_below, select(i > ri, from_above,
                                            select(eq(sides, 2), select(short_above, from_below, from_above),
                                                   select(left > 0, from_below, from_above))))
    in2 = select(short_above, from_above, from_below)
    return KTreeRole(role, out, inn, in2)


def ktree_roles(lv: KTreeLevelExprs, q: Expr) -> list[SlotRoles]:
    """Route predicates of one level's two slots at position q."""
    a = lv.at_or_below(q)
    i = max_(a, 0)
    part = (a >= 0) & eq(lv.pos(i), q)
    g = lv.group(i)
    b0, b1 = lv.start(g), lv.start(g + 1)
    ri = lv.root(g)
    # the transfer between participant i and i + 1 (same group) passes through q when q is strictly
    # between them
    nxt = i + 1
    same = (a >= 0) & (nxt < b1) & logical_not(part) & (lv.pos(i) < q)
    inside = same & (q < lv.pos(nxt))
    out = []
    for c in range(2):
        send = part & ne(i, ri) & eq(lv.slot_from(i, ri), c)
        recv_below = part & (i > b0) & (i <= ri) & eq(lv.slot_from(i - 1, ri), c)
        recv_above = part & (i < b1 - 1) & (i >= ri) & eq(lv.slot_from(i + 1, ri), c)
        going_up = nxt <= ri  # i -> i+1 when both are below (or i+1 is) the root
        pass_up = inside & going_up & eq(lv.slot_from(i, ri), c)
        pass_down = inside & logical_not(going_up) & eq(lv.slot_from(nxt, ri), c)
        out.append(SlotRoles(send, i < ri, recv_below, recv_above, pass_up, pass_down))
    return out


def ktree_global_root(lv_last: KTreeLevelExprs) -> Expr:
    """Position of the global root (the root of the last level's single group)."""
    return lv_last.pos(lv_last.root(Const(0)))
