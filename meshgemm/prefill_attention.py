"""Prefill attention as a piece of the layer program: ring attention along y (method §5, fused rotation)
with the heads' features gathered once per layer and the query rows split over the KV group's columns.

**Why not reduce scores every step.** The head layout (method §3.5) spreads a KV group's d features over
its G columns (2 features per column for Qwen2.5-0.5B at 240², LLaMA3-8B at 480²). The method's fused
variant then allreduces the n_rep·T × T partial scores of every key block across the G columns and every
column runs the whole softmax of its group on its copy: per step a chain of n_rep·T² values each way and
n_rep·T² exps (c_fn each) on every column. Measured on the first version of this program (Qwen2.5-0.5B,
20², 360 tokens): 1.37 M cycles of attention per layer against 0.17 M here, and most of the simulator's
wavelet moves. Here the reduction over features happens once per layer, on K and V (T·d values), not
per key block on the scores:

1. **Gather** (once per layer): every column of a KV group's column range gets the group's K and V for
   the row's T tokens with all d features (an allgather along the range on the x chains,
   `prefill_chains`' routes: an up stream and a down stream, each member ``RelayStore``-ing the chunks
   of one side and adding its own). The chunks from below land in ``KVB``, those from above in
   ``KVA``, each a whole buffer of its own (a CSL FIFO, which a relay that keeps its data lowers to,
   spans a whole array); the own chunk in the spare slot of ``KVR``.
2. **Split the queries**: the group's n_rep·T query rows (token-major, head-minor: row ρ = token·n_rep
   + r) are split balanced over its G columns; an all-to-all on the same chains brings each column the d
   features of its rows (each column sends every other column that column's rows of its own features,
   nearest destination first).
3. **Rotate** (P_y steps): the [K (features × keys) | V (keys × features)] block of the group rotates
   along the y-ring (MeshGEMM's y colours), double buffered, overlapping the step's compute. At step t
   the row holds the block of row j_t = R_y[(pos(py) − t) mod P_y] (t = 0: its own, the diagonal). When
   a query of the row may see a key of the block (d = py − j_t ≥ 0, d·T < W + T − 1) each column, for
   each of its rows: scores over all d features (one ``Fmac`` per feature, T key lanes), scale, the
   causal and window masks (a ``Fill`` of −inf over the keys a row may not see, from global token
   indices), and the online softmax (running max and sum per row: halving trees of ``Max``/``Add``
   over the keys; acc·e^(m_old − m_new) + Σ_keys e^(s − m_new)·V, one ``Fmac`` of d lanes per key).
4. **Return** (once per layer): O = acc/l (1/l as rsqrt(l)², fp32) goes back to the q layout by the
   inverse all-to-all.

No per-step traffic along x, no S beyond one row per owned query, no softmax replicated over columns.
When P_x < n_kv a column holds whole KV groups: it owns all their rows and gathers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshgemm.prefill_gemm import MeshGemmRings
from plmr.prefill_memory import ATTENTION_PARAMS
from plmr.primitives import balanced_split
from simulator.body import Body
from simulator.expr import Expr, Load, Param, Var, Y, as_expr, eq, max_, min_, select
from simulator.instructions import (Add, Copy, Exp, Fill, Fmac, Max, Mul, Recv, Ref, Relay, RelayStore, Rsqrt,
                                    Scale, Send)
from simulator.statements import Assign, If, Loop, Wait

MASKED = float("-inf")
ATT_VARS = ("at_t", "at_jb", "at_dd", "at_cur", "at_g", "at_r", "at_f", "at_k", "at_j", "at_s", "at_p",
            "at_i", "at_x", "lc_dfull", "lc_dlo", "lc_w")
PARAMS = ATTENTION_PARAMS


@dataclass(frozen=True)
class AttentionShape:
    """Sizes the attention code is written with (the same on every PE; per-column values are the
    parameters of `column_params`)."""

    m: int  # token tile
    q_y: int  # token tiles per PE row
    n_rep: int
    d: int  # head dim
    kv_col: int  # K (and V) features allocated per column in the natural layout
    q_col: int  # q features allocated per column in the natural layout
    p_y: int
    scale: float  # d^(-1/2)

    @property
    def T(self) -> int:
        return self.q_y * self.m

    @property
    def rows(self) -> int:
        """Query rows of a KV group on one mesh row."""
        return self.n_rep * self.T

    @property
    def group_block(self) -> int:
        """Elements of one group's rotating block: K [d × T] then V [T × d]."""
        return 2 * self.d * self.T


@dataclass(frozen=True)
class WindowRule:
    """Which key blocks a layer's queries see (method §10: causal, plus the sliding window W), per
    resident layer, in block row offsets d = py − j: a block has visible entries for 0 ≤ d < ``dfull``
    and needs masking for d = 0 (the causal triangle) and d ≥ ``dlo`` (the window's edge)."""

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


def column_params(heads, s: AttentionShape) -> dict[str, np.ndarray]:
    """Per-column parameters: KV groups on the column (``ng``), its position in its group's column
    range and the range's width (``at_pos``, ``at_G``), the balanced split of the group's rows
    (``at_rb`` rows each, the first ``at_re`` one more) and of its RoPE pairs (``at_pb``, ``at_pe``:
    pairs per column, the `model_layout.head_layout` split)."""
    p_x, n_kv, half = heads.columns, heads.num_kv_heads, heads.head_dim // 2
    out = {k: np.zeros(p_x, dtype=np.int64) for k in PARAMS}
    if p_x < n_kv:
        for c in range(p_x):
            out["ng"][c] = len(heads.column_kv_heads[c])
        out["at_G"][:] = 1
        out["at_rb"][:] = s.rows
        out["at_pb"][:] = half
        return out
    start = 0
    for width in balanced_split(p_x, n_kv):
        for i in range(width):
            c = start + i
            out["ng"][c] = 1
            out["at_pos"][c] = i
            out["at_G"][c] = width
            out["at_rb"][c], out["at_re"][c] = divmod(s.rows, width)
            out["at_pb"][c], out["at_pe"][c] = divmod(half, width)
        start += width
    # the pair split must be head_layout's (first columns one pair more)
    for c in range(p_x):
        if heads.column_kv_heads[c]:
            assert heads.n_pairs(c) == out["at_pb"][c] + (out["at_pos"][c] < out["at_pe"][c])
    return out


def _features_before(p: Expr) -> Expr:
    """Features of a KV group held by the columns before position ``p`` of its range."""
    return 2 * (p * Param("at_pb") + min_(p, Param("at_pe")))


def declare(body: Body) -> None:
    """The attention's parameters and variables; its buffers are in the layer's table
    (`plmr.prefill_memory.attention_buffers`, which the planner charges too)."""
    for name in PARAMS:
        body.param(name)
    for v in ATT_VARS:
        body.var(v, "i32")


def code(s: AttentionShape, rings: MeshGemmRings, chains: bool, layer: Expr, window: WindowRule,
         kvc: str = "KVC", qb: str = "QB", dt: str = "fp32") -> list:
    """The attention of the layer whose K|V cache block sits at ``layer``·2·q_y·kv_col·m in ``kvc``; q
    in ``qb`` (natural layout), O written back there. ``chains``: the x chains exist (P_x > 1); ``dt``: the
    element type of ``qb`` and ``OP`` (the softmax state is fp32)."""
    P = Param
    ng, G, pos = P("ng"), P("at_G"), P("at_pos")
    rb, re, pb, pe = P("at_rb"), P("at_re"), P("at_pb"), P("at_pe")
    d, T, R, m, qy, nr = s.d, s.T, s.rows, s.m, s.q_y, s.n_rep
    GB = s.group_block
    KB = 2 * s.q_y * s.kv_col * m  # one layer's K|V cache block (natural layout)

    def rows(p):  # rows owned by position p of the group's range
        return rb + (p < re)

    def rstart(p):
        return p * rb + min_(p, re)

    def wid(p):  # features of position p
        return 2 * (pb + (p < pe))

    wb = _features_before

    n_x, rho_x, w_x, Wb_x = rows(pos), rstart(pos), wid(pos), wb(pos)
    Wa_x = d - wb(pos + 1)  # features after position x
    first, last = eq(pos, 0), eq(pos, G - 1)
    g, r, f, k, j = (Var(n) for n in ("at_g", "at_r", "at_f", "at_k", "at_j"))
    sv, pv, iv = Var("at_s"), Var("at_p"), Var("at_i")
    t, jb, dd, cur = Var("at_t"), Var("at_jb"), Var("at_dd"), Var("at_cur")
    dfull, dlo, W = Var("lc_dfull"), Var("lc_dlo"), Var("lc_w")
    gather = lambda gg: ng * GB + gg * GB  # noqa: E731  (slot 1 of KVR: the own [K | V] chunk of each group)

    # ---- 1. pack own K and V features [f][token] at the own chunk of the gathered layout -------------
    kv0 = layer * KB
    v0 = kv0 + qy * s.kv_col * m
    own_chunk = gather
    pack_kv = Loop(ng, "at_g", (Loop(w_x, "at_f", (Loop(qy, "at_j", (
        Copy(Ref("KVR", own_chunk(g) + f * T + j * m, m), Ref(kvc, kv0 + (j * s.kv_col + g * w_x + f) * m, m)),
        Copy(Ref("KVR", own_chunk(g) + (w_x + f) * T + j * m, m), Ref(kvc, v0 + (j * s.kv_col + g * w_x + f) * m, m)),
    )),)),))
    code: list = [pack_kv]
    cu_s, cu_r, cd_s, cd_r = (P(n) for n in ("cu_send", "cu_recv", "cd_send", "cd_recv")) if chains else (None,) * 4
    multi = G > 1  # a comptime condition

    # ---- 2. allgather of the chunks along the group's range -----------------------------------------
    # (with the chains G > 1 only when a column holds one group: ng = 1; below and above are whole buffers)
    if chains:
        below, above = Ref("KVB"), Ref("KVA")  # 2·Wb_x·T and 2·Wa_x·T when not empty
        mine = Ref("KVR", own_chunk(0), 2 * w_x * T)
        code.append(If(multi, (
            If((pos > 0) & (Wb_x > 0), (If(last, (Recv(cu_r, below),), (RelayStore(cu_r, cu_s, below),)),)),
            If((pos < G - 1) & (w_x > 0), (Send(cu_s, mine),)),
            If((pos > 0) & (w_x > 0), (Send(cd_s, mine),)),
            If((pos < G - 1) & (Wa_x > 0), (If(first, (Recv(cd_r, above),), (RelayStore(cd_r, cd_s, above),)),)),
        )))

    # ---- 3. the rotating block: K [d][T] and V token-major [T][d], per group ----------------------------
    # source position s's chunk [K w_s × T | V w_s × T]: in KVB (s < pos), the own slot of KVR (s = pos)
    # or KVA (s > pos); one copy of its K and one per V feature, as many ops of each length as one loop
    # over the range would issue
    kfull = lambda base, gg: base + gg * GB  # noqa: E731
    vtok = lambda base, gg: base + gg * GB + d * T  # noqa: E731

    def place(src: str, chunk: Expr, gg: Expr, ss: Expr) -> tuple:
        return (If(wid(ss) > 0, (Copy(Ref("KVR", kfull(0, gg) + wb(ss) * T, wid(ss) * T), Ref(src, chunk, wid(ss) * T)),)),
                Loop(wid(ss), "at_f", (Copy(Ref("KVR", vtok(0, gg) + wb(ss) + f, T, stride=d),
                                            Ref(src, chunk + wid(ss) * T + f * T, T)),)))

    # (below and above: G > 1, so ng = 1 and the group's block is at 0)
    if chains:
        code.append(Loop(pos, "at_s", place("KVB", 2 * wb(sv) * T, 0, sv)))
    code.append(Loop(ng, "at_g", place("KVR", gather(g), g, pos)))
    if chains:
        above_s = pos + 1 + sv
        code.append(Loop(G - 1 - pos, "at_s", place("KVA", 2 * (wb(above_s) - wb(pos + 1)) * T, 0, above_s)))

    # ---- 4. queries: pack own features of every group row (row ρ = token·n_rep + r), all-to-all -------
    qp = lambda gg: gg * R * w_x  # noqa: E731
    qin = lambda gg: gg * n_x * d  # noqa: E731
    # (per token: its n_rep·w features are one stride-m run of the natural layout, one row-run of QP)
    code.append(If(w_x > 0, (Loop(ng, "at_g", (Loop(qy, "at_j", (Loop(m, "at_k", (
        Copy(Ref("QP", qp(g) + (j * m + k) * nr * w_x, nr * w_x),
             Ref(qb, (j * s.q_col + g * nr * w_x) * m + k, nr * w_x, stride=m)),)),)),)),)))
    # own block of QIN ([s][own rows][features of s])
    code.append(If((n_x > 0) & (w_x > 0), (Loop(ng, "at_g", (
        Copy(Ref("QIN", qin(g) + n_x * Wb_x, n_x * w_x), Ref("QP", qp(g) + rho_x * w_x, n_x * w_x)),)),)))
    if chains:
        code.append(If(multi, tuple(_q_alltoall(n_x, w_x, Wb_x, Wa_x, pos, G, rows, rstart, wid, wb, qin, qp,
                                                (cu_s, cu_r, cd_s, cd_r), d))))

    # ---- 5. ring steps --------------------------------------------------------------------------------
    blk = lambda gg: cur * ng * GB + gg * GB  # noqa: E731
    S = lambda gg, rr: Ref("S", (gg * n_x + rr) * T, T)  # noqa: E731
    vec = lambda name, gg: Ref(name, gg * n_x, n_x)  # noqa: E731
    acc = lambda gg, rr: Ref("ACC", (gg * n_x + rr) * d, d)  # noqa: E731
    scores = Loop(ng, "at_g", (Loop(n_x, "at_i", (
        Fill(S(g, iv), 0.0),
        Loop(G, "at_s", (Loop(wid(sv), "at_f", (
            Fmac(S(g, iv), S(g, iv), Ref("KVR", blk(g) + (wb(sv) + f) * T, T),
                 Load("QIN", qin(g) + n_x * wb(sv) + iv * wid(sv) + f)),)),)),)),))
    tok = (rho_x + iv) // nr  # the query token of owned row i
    a_lo = max_(min_(dd * T + tok + 1, T), 0)  # keys from here on are in the query's future
    mask_body = [Assign("at_x", a_lo), If(Var("at_x") < T, (Fill(Ref("S", (g * n_x + iv) * T + Var("at_x"), T - Var("at_x")), MASKED),))]
    if window.windowed:
        b_hi = max_(min_(dd * T + tok - W + 1, T), 0)  # keys before here are out of the window
        mask_body += [Assign("at_x", b_hi), If(Var("at_x") > 0, (Fill(Ref("S", (g * n_x + iv) * T, Var("at_x")), MASKED),))]
    mask = If(eq(dd, 0) | (dd >= dlo), (Loop(ng, "at_g", (Loop(n_x, "at_i", tuple(mask_body)),)),))
    softmax = Loop(ng, "at_g", (
        Loop(n_x, "at_i", (Copy(Ref("TMP", iv * T, T), S(g, iv)),) + _tree(Max, iv, T)),
        Copy(vec("MX", g), Ref("TMP", 0, n_x, stride=T)),
        Max(vec("MX", g), vec("MX", g), vec("MO", g)),
        Scale(vec("NG", g), vec("MX", g), -1.0),
        Add(vec("CR", g), vec("MO", g), vec("NG", g)),
        Exp(vec("CR", g), vec("CR", g)),
        Loop(n_x, "at_i", (Add(S(g, iv), S(g, iv), Ref("NG", g * n_x + iv, T, stride=0)),)),
        Exp(Ref("S", g * n_x * T, n_x * T), Ref("S", g * n_x * T, n_x * T)),
        Loop(n_x, "at_i", (Copy(Ref("TMP", iv * T, T), S(g, iv)),) + _tree(Add, iv, T)),
        Mul(vec("LS", g), vec("LS", g), vec("CR", g)),
        Add(vec("LS", g), vec("LS", g), Ref("TMP", 0, n_x, stride=T)),
        Loop(n_x, "at_i", (
            Scale(acc(g, iv), acc(g, iv), Load("CR", g * n_x + iv)),
            Loop(T, "at_k", (Fmac(acc(g, iv), acc(g, iv), Ref("KVR", blk(g) + d * T + k * d, d),
                                  Load("S", (g * n_x + iv) * T + k)),)),)),
        Copy(vec("MO", g), vec("MX", g)),
    ))
    H = P("mg_H")
    step: list = [Assign("at_jb", _ring_order((rings.pos_y() - t + H) % H, s.p_y)), Assign("at_dd", Y - jb)]
    proc = (dd >= 0) & (dd < dfull)
    shift = s.p_y > 1
    if shift:  # fp16 blocks travel two values per wavelet (2·d·T is even): half the wavelets of one per value
        packed = dt == "fp16"
        step.append(If(t < H - 1, (
            Recv(P("by_recv"), Ref("KVR", (1 - cur) * ng * GB, ng * GB), id="at_rk", packed=packed),
            Send(P("by_send"), Ref("KVR", cur * ng * GB, ng * GB), id="at_sk", packed=packed))))
    step.append(If(n_x > 0, (If(proc, (scores, Scale(Ref("S", 0, ng * n_x * T), Ref("S", 0, ng * n_x * T), s.scale),
                                       mask, softmax)),)))
    if shift:
        step.append(Wait(("at_rk", "at_sk")))
    step.append(Assign("at_cur", 1 - cur))
    code += [
        If(n_x > 0, (Fill(Ref("ACC", 0, ng * n_x * d), 0.0), Fill(Ref("LS", 0, ng * n_x), 0.0),
                     Fill(Ref("MO", 0, ng * n_x), MASKED))),
        Assign("lc_dfull", window.expr(layer, 0)), Assign("lc_dlo", window.expr(layer, 1)),
        Assign("lc_w", window.expr(layer, 2)),
        Assign("at_cur", 0),
        Loop(H, "at_t", tuple(step)),
    ]

    # ---- 6. O = acc / l into OP ([s][own rows][features of s]), all-to-all back, unpack ---------------
    o_s = Ref("OP", g * n_x * d + n_x * wb(sv) + iv * wid(sv), wid(sv))
    acc_s = Ref("ACC", (g * n_x + iv) * d + wb(sv), wid(sv))
    if dt == "fp32":
        normalise: tuple = (Scale(o_s, acc_s, Load("LS", g * n_x + iv)),)
    else:  # one CSL op each (no builtin scales f32 into f16): scale acc in place (@fmuls), narrow (@fs2h)
        normalise = (Scale(acc_s, acc_s, Load("LS", g * n_x + iv)), Copy(o_s, acc_s))
    code.append(If(n_x > 0, (
        Rsqrt(Ref("LS", 0, ng * n_x), Ref("LS", 0, ng * n_x)),
        Mul(Ref("LS", 0, ng * n_x), Ref("LS", 0, ng * n_x), Ref("LS", 0, ng * n_x)),
        Loop(ng, "at_g", (Loop(n_x, "at_i", (Loop(G, "at_s", (If(wid(sv) > 0, normalise),)),)),)),
    )))
    orecv = lambda gg: gg * R * w_x  # noqa: E731
    code.append(If((n_x > 0) & (w_x > 0), (Loop(ng, "at_g", (
        Copy(Ref("ORECV", orecv(g) + rho_x * w_x, n_x * w_x), Ref("OP", g * n_x * d + n_x * Wb_x, n_x * w_x)),)),)))
    if chains:
        code.append(If(multi, tuple(_o_alltoall(n_x, w_x, Wb_x, pos, G, R, rows, rstart, wid, wb,
                                                (cu_s, cu_r, cd_s, cd_r), d))))
    code.append(If(w_x > 0, (Loop(ng, "at_g", (Loop(qy, "at_j", (Loop(m, "at_k", (
        Copy(Ref(qb, (j * s.q_col + g * nr * w_x) * m + k, nr * w_x, stride=m),
             Ref("ORECV", orecv(g) + (j * m + k) * nr * w_x, nr * w_x)),)),)),)),)))
    return code


def _tree(op, row: Expr, T: int) -> tuple:
    """Halving tree over TMP[row·T : +T]: the max (or sum) of the row lands in its first element."""
    out = []
    n = T
    base = row * T
    while n > 1:
        h = n // 2
        out.append(op(Ref("TMP", base, h), Ref("TMP", base, h), Ref("TMP", base + n - h, h)))
        n -= h
    return tuple(out)


def _q_alltoall(n_x, w_x, Wb_x, Wa_x, pos, G, rows, rstart, wid, wb, qin, qp, col, d) -> list:
    """Every column sends every other column of the range the features it holds of that column's rows
    (QP[ρ_p·w_x : n_p·w_x]); a column receives, from below then from above, its rows' features in
    source order (QIN [s][own rows][f]). Streams run nearest destination first; a member relays what
    the sources beyond it sent for each farther destination, then adds its own piece (up) — or adds its
    own first, then relays (down), so every receiver gets its sources in increasing order."""
    cu_s, cu_r, cd_s, cd_r = col
    p, q = Var("at_p"), Var("at_s")
    up = [If((pos > 0) & (n_x * Wb_x > 0), (Loop(Param("ng"), "at_g", (
        Recv(cu_r, Ref("QIN", qin(Var("at_g")), n_x * Wb_x)),)),)),
        If(pos < G - 1, (Loop(Param("ng"), "at_g", (Loop(G - 1 - pos, "at_s", (
            Assign("at_p", pos + 1 + q),
            If((pos > 0) & (Wb_x > 0), (If(rows(p) > 0, (Relay(cu_r, cu_s, rows(p) * Wb_x),)),)),
            If(w_x > 0, (If(rows(p) > 0, (Send(cu_s, Ref("QP", qp(Var("at_g")) + rstart(p) * w_x, rows(p) * w_x)),)),)),)),)),)),
    ]
    down = [If((pos < G - 1) & (n_x * Wa_x > 0), (Loop(Param("ng"), "at_g", (
        Recv(cd_r, Ref("QIN", qin(Var("at_g")) + n_x * wb(pos + 1), n_x * Wa_x)),)),)),
        If(pos > 0, (Loop(Param("ng"), "at_g", (Loop(pos, "at_s", (
            Assign("at_p", pos - 1 - q),
            If(w_x > 0, (If(rows(p) > 0, (Send(cd_s, Ref("QP", qp(Var("at_g")) + rstart(p) * w_x, rows(p) * w_x)),)),)),
            If((pos < G - 1) & (Wa_x > 0), (If(rows(p) > 0, (Relay(cd_r, cd_s, rows(p) * Wa_x),)),)),)),)),)),
    ]
    return up + down


def _o_alltoall(n_x, w_x, Wb_x, pos, G, R, rows, rstart, wid, wb, col, d) -> list:
    """The inverse: every row owner sends every column the rows' output features that column holds
    (OP[n_x·Wb_s : n_x·w_s]); a column receives, in row order, every owner's rows of its features
    (ORECV [rows][f])."""
    cu_s, cu_r, cd_s, cd_r = col
    s_, q = Var("at_p"), Var("at_s")
    rho_x, rho_next = rstart(pos), rstart(pos + 1)
    orecv = lambda gg: gg * R * w_x  # noqa: E731
    op = lambda gg, ss: Ref("OP", gg * n_x * d + n_x * wb(ss), n_x * wid(ss))  # noqa: E731
    up = [If((pos > 0) & (rho_x * w_x > 0), (Loop(Param("ng"), "at_g", (
        Recv(cu_r, Ref("ORECV", orecv(Var("at_g")), rho_x * w_x)),)),)),
        If(pos < G - 1, (Loop(Param("ng"), "at_g", (Loop(G - 1 - pos, "at_s", (
            Assign("at_p", pos + 1 + q),
            If((pos > 0) & (rho_x > 0), (If(wid(s_) > 0, (Relay(cu_r, cu_s, rho_x * wid(s_)),)),)),
            If(n_x > 0, (If(wid(s_) > 0, (Send(cu_s, op(Var("at_g"), s_)),)),)),)),)),)),
    ]
    after = R - rho_next
    down = [If((pos < G - 1) & (after * w_x > 0), (Loop(Param("ng"), "at_g", (
        Recv(cd_r, Ref("ORECV", orecv(Var("at_g")) + rho_next * w_x, after * w_x)),)),)),
        If(pos > 0, (Loop(Param("ng"), "at_g", (Loop(pos, "at_s", (
            Assign("at_p", pos - 1 - q),
            If(n_x > 0, (If(wid(s_) > 0, (Send(cd_s, op(Var("at_g"), s_)),)),)),
            If((pos < G - 1) & (after > 0), (If(wid(s_) > 0, (Relay(cd_r, cd_s, after * wid(s_)),)),)),)),)),)),
    ]
    return up + down


def _ring_order(i: Expr, p_y: int) -> Expr:
    """R_y[i]: the row at y-ring position i (evens ascending, then odds descending; method §4.2)."""
    if p_y <= 2:
        return i
    n_even = (p_y + 1) // 2
    return select(i < n_even, 2 * i, 2 * (Param("mg_H") - i) - 1)
