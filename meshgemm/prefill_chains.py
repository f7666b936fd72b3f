"""Allreduces along x on contiguous column segments, over one set of 1-hop directed chains (method §5, §7).

The prefill layer reduces along x twice per layer for RMSNorm (every column of a row, one value per
token) and once per attention step for the scores (the feature-holding columns of each KV group, all
groups at once). Both run on the same four routes: every PE sends one hop up (EAST) on slot x % 2 and
one hop down (WEST) on slot 2 + x % 2 (`line_rules.directed_chain_roles`, as dist-GEMM-T's run-time
root uses them). A PE receives on two colour expressions only (``cu_recv`` from below, ``cd_recv``
from above), whatever the segments, so the layer fits the input queues of WSE-2 and WSE-3 next to
MeshGEMM's three.

Schedule on a segment of n columns, root at its last (highest) column — `plmr.ktree.chain_tree(n,
n − 1)`, the order `block_dataflow.tree_reduce` sums in:

* reduce: the first column ``Send``s up, the others ``RecvAddSend`` up (receive, add own, forward), the
  root ``RecvAdd``s;
* broadcast: the root ``Send``s the total down, the others ``RelayStore`` it onwards (keep a copy and
  forward, β per stage), the first column ``Recv``s it.

**Why a root at the end, not in the middle.** A middle root halves the hops but receives two streams:
either into a scratch buffer as long as the payload (the score block is the largest buffer of the
layer) or one after the other (one more payload time), and it broadcasts with two sends joined by a
wait. At the end the payload streams once each way and the code has no join: for a score block of
n_rep·T² values over G columns the chain costs 2·G·(α + β + ρ) + 2·payload against G·(α + β + ρ) +
3·payload, less whenever the payload exceeds the hops (it does at every size we run).

Roles are per-column parameters (`SegmentRoles`), so every PE of a role shares one parameter set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshgemm import line_rules as L
from simulator.body import Body
from simulator.expr import Expr, Param, X, eq, select
from simulator.instructions import Recv, RecvAdd, RecvAddSend, Ref, RelayStore, Send
from simulator.program import MeshProgram
from simulator.statements import If

NONE, FIRST, MEMBER, ROOT = range(4)
CHAIN_COLOURS = 4


class XChains:
    """The directed chain routes along x and the colour parameters every segment allreduce uses."""

    def __init__(self, prog: MeshProgram, colour_of):
        self.p_x = prog.width
        self.on = self.p_x > 1
        if self.on:
            L.route_slots(prog, "x", L.directed_chain_roles(X, Param("W")), colour_of)
            pick = lambda par, base: select(eq(par, 0), colour_of(base), colour_of(base + 1))  # noqa: E731
            self._params = {"cu_send": pick(X % 2, 0), "cu_recv": pick((X + 1) % 2, 0),
                            "cd_send": pick(X % 2, 2), "cd_recv": pick((X + 1) % 2, 2)}
        else:
            self._params = {}

    def declare(self, body: Body) -> None:
        for name in self._params:
            body.param(name, "colour")

    def values(self) -> dict[str, Expr]:
        return dict(self._params)


@dataclass(frozen=True)
class SegmentRoles:
    """Per-column roles of one family of segment allreduces (``prefix``)."""

    prefix: str
    role: np.ndarray  # per column

    @classmethod
    def of(cls, prefix: str, p_x: int, segments) -> "SegmentRoles":
        role = np.full(p_x, NONE, dtype=np.int64)
        for seg in segments:
            seg = list(seg)
            n = len(seg)
            if n <= 1:
                continue
            if seg != list(range(seg[0], seg[0] + n)):
                raise ValueError(f"segment {seg} is not a contiguous run of columns")
            for idx, c in enumerate(seg):
                role[c] = FIRST if idx == 0 else ROOT if idx == n - 1 else MEMBER
        return cls(prefix, role)

    @property
    def name(self) -> str:
        return f"{self.prefix}_role"

    def declare(self, body: Body) -> None:
        body.param(self.name, "int")

    def values(self) -> dict:
        r = self.role
        return {self.name: lambda xs, ys: r[xs]}

    def allreduce(self, v: Ref) -> list:
        """Sum ``v`` over each segment; every member ends with the total."""
        role = Param(self.name)
        P = Param
        is_ = lambda k: eq(role, k)  # noqa: E731
        return [
            If(is_(FIRST), (Send(P("cu_send"), v), Recv(P("cd_recv"), v))),
            If(is_(MEMBER), (RecvAddSend(P("cu_recv"), P("cu_send"), v), RelayStore(P("cd_recv"), P("cd_send"), v))),
            If(is_(ROOT), (RecvAdd(P("cu_recv"), v), Send(P("cd_send"), v))),
        ]
