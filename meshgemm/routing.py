"""The routing patterns every kernel is built from (waferllm-method.md §7, hardware-and-csl.md §6.11),
as lists of line transfers with colour slots, independent of any particular axis or program.

A ``Transfer`` moves data from one position on a line of PEs to another; the PEs strictly between
pass it through in hardware. Each PE holds one route per colour, so every transfer touching a PE
(as source, destination or pass-through) must use its own colour: ``check_colours`` verifies that
mechanically, as method §4.6 asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from plmr.interleave import interleave
from plmr.ktree import KTree


@dataclass(frozen=True)
class Transfer:
    src: int
    dst: int  # or several destinations for a multicast (see ``dsts``)
    color: int  # a slot index; the kernel maps slots to hardware colour IDs
    dsts: tuple[int, ...] = ()  # multicast: every PE in dsts receives (src excluded)

    @property
    def receivers(self) -> tuple[int, ...]:
        return self.dsts if self.dsts else (self.dst,)

    def touched(self) -> range:
        """Every position this transfer's route occupies."""
        lo = min((self.src,) + self.receivers)
        hi = max((self.src,) + self.receivers)
        return range(lo, hi + 1)


def ring_transfers(n: int, reverse: bool = False) -> list[Transfer]:
    """One shift on the interleaved ring of a line of n PEs: p sends to its ring successor
    (``reverse``: to its predecessor). Colour rule of method §4.6: the transfer sent by p uses
    (p+1) mod 3 for even p and (p-1) mod 3 for odd p; for odd n the last PE's 1-hop turnaround
    uses (n-1) mod 3. n = 2 is a 1-hop exchange on two colours; n = 1 needs no transfer."""
    if n <= 1:
        return []
    if n == 2:
        return [Transfer(0, 1, 0), Transfer(1, 0, 1)]
    out = []
    for p in range(n):
        recv, send = interleave(p, n)
        dst = recv if reverse else send
        if not reverse:
            if n % 2 == 1 and p == n - 1:
                color = (n - 1) % 3
            else:
                color = (p + 1) % 3 if p % 2 == 0 else (p - 1) % 3
        else:
            # The reverse ring runs every link backwards: reuse the forward colour of that link.
            _, fwd_of_dst = interleave(dst, n)
            assert fwd_of_dst == p
            color = (dst + 1) % 3 if dst % 2 == 0 else (dst - 1) % 3
            if n % 2 == 1 and dst == n - 1:
                color = (n - 1) % 3
        out.append(Transfer(p, dst, color))
    return out


def chain_transfers(members: tuple[int, ...], root: int, color_base: int) -> list[Transfer]:
    """Receive-add-forward chains from both ends of ``members`` into ``root``. Two colours alternate
    by distance to the root, with opposite parity on the two sides so the root's two incoming
    streams differ (method §6.4 [D])."""
    i = members.index(root)
    out = []
    for j in range(i):  # left side: members[j] -> members[j+1]
        dist = i - j  # distance (in participants) of the sender from the root
        out.append(Transfer(members[j], members[j + 1], color_base + (dist % 2)))
    for j in range(i + 1, len(members)):  # right side: members[j] -> members[j-1]
        dist = j - i
        out.append(Transfer(members[j], members[j - 1], color_base + ((dist + 1) % 2)))
    return out


def ktree_transfers(tree: KTree, with_broadcast: bool = True) -> list[list[Transfer]]:
    """Per phase, the transfers of a K-tree reduce (2 colour slots per level: 2k, 2k+1), then the
    multicast of the total from the global root on slot 2K (one colour, both directions)."""
    phases = []
    for k, level in enumerate(tree.levels):
        phase = []
        for group, root in zip(level.groups, level.roots):
            phase += chain_transfers(group, root, 2 * k)
        phases.append(phase)
    if with_broadcast and tree.n > 1:
        r = tree.root
        others = tuple(p for p in range(tree.n) if p != r)
        phases.append([Transfer(r, others[0], 2 * tree.k, dsts=others)])
    return phases


def check_colours(transfers: list[Transfer], n: int) -> None:
    """Raise ValueError if two transfers touching one PE share a colour slot (a colour has one
    route per PE), naming the PE and both transfers."""
    seen: dict[tuple[int, int], Transfer] = {}
    for t in transfers:
        for p in t.touched():
            if not 0 <= p < n:
                raise ValueError(f"transfer {t} leaves the line of {n} PEs")
            key = (p, t.color)
            if key in seen and seen[key] != t:
                raise ValueError(f"PE {p}: colour slot {t.color} used by {seen[key]} and {t}")
            seen[key] = t


def slots_used(transfers: list[Transfer]) -> int:
    return len({t.color for t in transfers})


# ------------------------------------------------------------------------------------------------
# Collective patterns (method §7): chains with any root, multicasts, pipeline and ring allreduce
# ------------------------------------------------------------------------------------------------


def multicast_transfer(n: int, root: int, color: int) -> list[Transfer]:
    """Single-colour multicast from ``root`` to every other PE of a line of n (pattern 4: the root
    sends both ways on one colour, intermediate PEs deliver to their ramp and forward, end PEs only
    deliver). n = 1 needs no transfer."""
    if not 0 <= root < n:
        raise ValueError(f"multicast root {root} outside a line of {n} PEs")
    others = tuple(p for p in range(n) if p != root)
    if not others:
        return []
    return [Transfer(root, others[0], color, dsts=others)]


def chain_reduce_transfers(n: int, root: int, color_base: int = 0) -> list[Transfer]:
    """Nearest-neighbour receive-add-forward chains from both ends of a line of n into ``root``
    (2 colour slots, alternating by distance to the root). ``root = n - 1`` is the pipeline
    (Cerebras GEMV) reduce."""
    if not 0 <= root < n:
        raise ValueError(f"chain root {root} outside a line of {n} PEs")
    return chain_transfers(tuple(range(n)), root, color_base)


def pipeline_allreduce_transfers(n: int) -> list[list[Transfer]]:
    """Pipeline allreduce (method §6.2): a chain into the end PE n-1 (slots 0, 1), then a multicast
    back from it (slot 2). 3 colours."""
    if n <= 1:
        return []
    return [chain_reduce_transfers(n, n - 1, 0), multicast_transfer(n, n - 1, 2)]


def transfers_into(transfers: list[Transfer], p: int) -> list[Transfer]:
    """The transfers that deliver to position p."""
    return [t for t in transfers if p in t.receivers]


def transfers_from(transfers: list[Transfer], p: int) -> list[Transfer]:
    """The transfers that position p injects."""
    return [t for t in transfers if t.src == p]
