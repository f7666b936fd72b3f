"""Prefill attention as a piece of the layer program: the fused ring attention of method §5.

K and V of a mesh row (its T = q_y·m tokens, the column's KV features, as the K and V products left
them) rotate together along the y-ring (MeshGEMM's y colours) in one double-buffered block. At step
t row py holds the block of row j_t = R_y[(pos(py) − t) mod P_y] (t = 0: its own, the diagonal
block) and, when a query of the row may see a key of the block (causal order and the sliding
window, from global token indices: d = py − j_t ≥ 0 and d·T < W + T − 1), each PE with attention
features

1. adds its partial scores for its heads (local features only) into S (fp32),
2. sums S over the feature-holding columns of its KV group (`prefill_chains.SegmentRoles`: one
   allreduce per group, all groups at once), scales by d^(-1/2) and sets the entries the block
   offset d hides to −inf (the causal triangle of the diagonal block, the window's edge: per key and
   query tile one ``Fill`` of a run of queries, lengths computed from d at run time),
3. updates the online softmax per (head, query): running max m, sum l, accumulator
   acc·e^(m_old − m_new) + e^(S − m_new)·V (fp32).

After P_y steps O = acc/l (1/l as rsqrt(l)², fp32) is in the q layout ``L_y qfeat_x``: no S storage
beyond one block, no V skew, no S·V MeshGEMM. The diagonal block comes first, so every query has a
finite running max from step 0 and masked entries (−inf) contribute e^(−inf) = 0.

**Attention layout** (``AQ``): for vector ops over every query of the row and every head of a KV
group at once, q is copied from its natural layout (tile j, feature (g, r, f), token t) to
[g][f][j][t][r] (g the column's KV group, f its pair features, r the group's query heads, fastest):
one score op per (group, key, feature) has n_rep·T lanes, and the queries a mask hides for one key
and tile are one contiguous run of lanes. S, m, l and acc use the same lane order.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgemm.prefill_chains import SegmentRoles
from meshgemm.prefill_gemm import MeshGemmRings
from simulator.body import Body
from simulator.expr import Expr, Load, Param, Var, Y, as_expr, eq, max_, min_, select
from simulator.instructions import Add, Copy, Exp, Fill, Fmac, Max, Mul, Recv, Ref, Rsqrt, Scale, Send
from simulator.statements import Assign, If, Loop, Wait

ATT_VARS = ("at_t", "at_jb", "at_dd", "at_cur", "at_g", "at_r", "at_f", "at_k", "at_j", "at_mi",
            "lc_dfull", "lc_dlo", "lc_w")
# mask table entries: 0 where the key is visible, -inf where it is not
MASKED = float("-inf")


@dataclass(frozen=True)
class AttentionShape:
    """Sizes the attention code is written with (the same on every PE; per-column counts are the body
    parameters ``ng`` (KV groups) and ``npair`` (RoPE pairs per group))."""

    m: int  # token tile
    q_y: int  # token tiles per PE row
    n_rep: int
    kv_col: int  # K (and V) features allocated per column (q_x tiles)
    q_col: int  # q features allocated per column
    p_y: int
    scale: float  # d^(-1/2)

    @property
    def T(self) -> int:
        return self.q_y * self.m

    @property
    def lanes(self) -> int:
        """One vector: every (query, head) of a KV group on the row."""
        return self.n_rep * self.T

    @property
    def kv_block(self) -> int:
        """Elements of the rotating K|V block."""
        return 2 * self.q_y * self.kv_col * self.m


def declare(body: Body, s: AttentionShape, dt: str) -> None:
    """Buffers and variables of the attention (sizes per column through ``ng`` and ``npair``)."""
    ng, npair = Param("ng"), Param("npair")
    w = 2 * npair
    V, T = s.lanes, s.T
    one = lambda e: (e > 0) * e + (e <= 0) * 1  # noqa: E731  (a buffer holds at least one element)
    body.buffer("AQ", dt, one(ng * w * V), export=False)
    body.buffer("S", "fp32", one(ng * T * V), export=False)
    for name in ("MO", "MX", "NG", "CR", "LS"):
        body.buffer(name, "fp32", one(ng * V), export=False)
    body.buffer("ACC", "fp32", one(ng * w * V), export=False)
    body.buffer("KVR", dt, s.kv_block * (2 if s.p_y > 1 else 1), export=False)
    for v in ATT_VARS:
        body.var(v, "i32")


@dataclass(frozen=True)
class WindowRule:
    """Which key blocks a layer's queries see (method §10: causal, plus the sliding window W), per
    resident layer, in block row offsets d = py − j: a block has visible entries for 0 ≤ d < ``dfull``
    and needs masking for d = 0 (the causal triangle) and d ≥ ``dlo`` (the window's edge). ``window``
    is W (None: no window)."""

    per_layer: tuple[tuple[int, int, int | None], ...]  # (dfull, dlo, W) per resident layer

    @classmethod
    def of(cls, windows: list, T: int, p_y: int) -> "WindowRule":
        per = []
        for W in windows:
            if W is None:
                per.append((p_y, p_y + 1, None))
            else:
                per.append((-(-(W + T - 1) // T), max(1, -(-(W - T + 1) // T)), W))
        return cls(tuple(per))

    @property
    def windowed(self) -> bool:
        return any(c[2] is not None for c in self.per_layer)

    def expr(self, layer: Expr, field: int) -> Expr:
        """The field as an expression of the resident layer index (a constant when all agree)."""
        vals = [c[field] if c[field] is not None else 1 << 30 for c in self.per_layer]
        out = as_expr(vals[-1])
        if len(set(vals)) == 1:
            return out
        for i in reversed(range(len(vals) - 1)):
            out = select(eq(layer, i), vals[i], out)
        return out


def code(s: AttentionShape, rings: MeshGemmRings, roles: SegmentRoles | None, layer: Expr, window: WindowRule,
         kvc: str = "KVC", qb: str = "QB") -> list:
    """The attention of the layer whose K|V block sits at ``layer``·kv_block in ``kvc``; q in ``qb``
    (natural layout), O written back there. ``window`` gives the layer's block-offset limits."""
    ng, npair = Param("ng"), Param("npair")
    w = 2 * npair
    T, V, m, qy, nr = s.T, s.lanes, s.m, s.q_y, s.n_rep
    KB = s.kv_block
    VOFF = qy * s.kv_col * m
    g, r, f, k, j = (Var(n) for n in ("at_g", "at_r", "at_f", "at_k", "at_j"))
    t, jb, dd, cur = Var("at_t"), Var("at_jb"), Var("at_dd"), Var("at_cur")
    dfull, dlo, W = Var("lc_dfull"), Var("lc_dlo"), Var("lc_w")

    def S(gg, kk=None) -> Ref:
        if kk is None:
            return Ref("S", gg * T * V, T * V)
        return Ref("S", (gg * T + kk) * V, V)

    vec = lambda name, gg: Ref(name, gg * V, V)  # noqa: E731
    acc = lambda gg, ff: Ref("ACC", (gg * w + ff) * V, V)  # noqa: E731
    aq = lambda gg, ff: Ref("AQ", (gg * w + ff) * V, V)  # noqa: E731

    def kv_elem(base, gg, ff, kk) -> Expr:
        """Index in KVR of key kk (tile kk // m, token kk % m), feature (g, f)."""
        return cur * KB + base + (kk // m) * s.kv_col * m + (gg * w + ff) * m + kk % m

    # natural q (tile j, feature (g, r, f), token t) <-> lanes (j, t, r) of AQ[g][f]
    def nat(gg, rr, ff, jj) -> Ref:
        return Ref(qb, (jj * s.q_col + (gg * nr + rr) * w + ff) * m, m)

    def lane(gg, rr, ff, jj) -> Ref:
        return Ref("AQ", ((gg * w + ff) * qy + jj) * m * nr + rr, m, stride=nr)

    def over_q(op) -> Loop:
        return Loop(ng, "at_g", (Loop(nr, "at_r", (Loop(w, "at_f", (Loop(qy, "at_j", (op(g, r, f, j),)),)),)),))

    to_aq = over_q(lambda gg, rr, ff, jj: Copy(lane(gg, rr, ff, jj), nat(gg, rr, ff, jj)))
    from_aq = over_q(lambda gg, rr, ff, jj: Copy(nat(gg, rr, ff, jj), lane(gg, rr, ff, jj)))

    scores = [Fill(Ref("S", 0, ng * T * V), 0.0),
              Loop(ng, "at_g", (Loop(T, "at_k", (Loop(w, "at_f", (
                  Fmac(S(g, k), S(g, k), aq(g, f), Load("KVR", kv_elem(0, g, f, k))),)),)),))]

    # masks: in lane block (g, key kk, query tile j) the queries t < kk − d·T − j·m are in the key's
    # future (causal) and t ≥ W + kk − d·T − j·m are past the window
    lo = max_(min_(k - dd * T - j * m, m), 0)
    fill_lo = If(Var("at_mi") > 0, (Fill(Ref("S", ((g * T + k) * qy + j) * m * nr, Var("at_mi") * nr), MASKED),))
    mask_body = [Assign("at_mi", lo), fill_lo]
    if window.windowed:
        hi = max_(min_(W + k - dd * T - j * m, m), 0)
        mask_body += [Assign("at_mi", hi), If(Var("at_mi") < m, (
            Fill(Ref("S", (((g * T + k) * qy + j) * m + Var("at_mi")) * nr, (m - Var("at_mi")) * nr), MASKED),))]
    mask = If((eq(dd, 0) | (dd >= dlo)),
              (Loop(ng, "at_g", (Loop(T, "at_k", (Loop(qy, "at_j", tuple(mask_body)),)),)),))
    softmax = Loop(ng, "at_g", (
        Copy(vec("MX", g), S(g, 0)),
        Loop(T - 1, "at_k", (Max(vec("MX", g), vec("MX", g), S(g, k + 1)),)),
        Max(vec("MX", g), vec("MX", g), vec("MO", g)),
        Scale(vec("NG", g), vec("MX", g), -1.0),
        Add(vec("CR", g), vec("MO", g), vec("NG", g)),
        Exp(vec("CR", g), vec("CR", g)),
        Loop(T, "at_k", (Add(S(g, k), S(g, k), vec("NG", g)),)),
        Exp(S(g), S(g)),
        Mul(vec("LS", g), vec("LS", g), vec("CR", g)),
        Loop(T, "at_k", (Add(vec("LS", g), vec("LS", g), S(g, k)),)),
        Loop(w, "at_f", (Mul(acc(g, f), acc(g, f), vec("CR", g)),)),
        Loop(w, "at_f", (Loop(T, "at_k", (
            Fmac(acc(g, f), acc(g, f), S(g, k), Load("KVR", kv_elem(VOFF, g, f, k))),)),)),
        Copy(vec("MO", g), vec("MX", g)),
    ))
    nS = ng * T * V
    combine = (roles.allreduce(Ref("S", 0, nS)) if roles is not None else []) + [Scale(Ref("S", 0, nS), Ref("S", 0, nS), s.scale), mask, softmax]

    H = Param("mg_H")
    step: list = [Assign("at_jb", _ring_order((rings.pos_y() - t + H) % H, s.p_y)), Assign("at_dd", Y - jb)]
    proc = (dd >= 0) & (dd < dfull)
    shift = s.p_y > 1
    if shift:
        step.append(If(t < H - 1, (Recv(Param("by_recv"), Ref("KVR", (1 - cur) * KB, KB), id="at_rk"),
                                   Send(Param("by_send"), Ref("KVR", cur * KB, KB), id="at_sk"))))
    step.append(If(proc, tuple(scores)))
    if shift:
        step.append(Wait(("at_rk", "at_sk")))
    step += [If(proc, tuple(combine)), Assign("at_cur", 1 - cur)]

    body = [
        to_aq,
        Copy(Ref("KVR", 0, KB), Ref(kvc, layer * KB, KB)),
        Fill(Ref("ACC", 0, ng * w * V), 0.0), Fill(Ref("LS", 0, ng * V), 0.0),
        Fill(Ref("MO", 0, ng * V), MASKED),
        Assign("lc_dfull", window.expr(layer, 0)), Assign("lc_dlo", window.expr(layer, 1)),
        Assign("lc_w", window.expr(layer, 2)),
        Assign("at_cur", 0),
        Loop(H, "at_t", tuple(step)),
        Rsqrt(Ref("LS", 0, ng * V), Ref("LS", 0, ng * V)),
        Mul(Ref("LS", 0, ng * V), Ref("LS", 0, ng * V), Ref("LS", 0, ng * V)),
        Loop(ng, "at_g", (Loop(w, "at_f", (Mul(aq(g, f), acc(g, f), vec("LS", g)),)),)),
        from_aq,
    ]
    return [If(eq(Param("has_heads"), 1), tuple(body))]


def _ring_order(i: Expr, p_y: int) -> Expr:
    """R_y[i]: the row at y-ring position i (evens ascending, then odds descending; method §4.2)."""
    if p_y <= 2:
        return i
    n_even = (p_y + 1) // 2
    return select(i < n_even, 2 * i, 2 * (Param("mg_H") - i) - 1)
