"""A per-PE block model of the transformer's distributed data flow: the oracle the mesh programs are checked
against, op by op.

Every PE's data is its own numpy array (``blocks[py][px]``, replicas are separate copies) and every collective is
done as explicit sums and copies over those blocks, **in the order the mesh performs them**: a K-tree reduce
sums chains from both ends of each group into the group's middle root, the root adding its longer side first
and the shorter one last, exactly as `meshgemm.collectives.ktree_reduce` schedules it, then the root's
total is copied to every PE of the line (bit for bit the simulated `emit_ktree_allreduce`, tested). Local
products use numpy's own summation order, so a device program's blocks match within fp32 rounding, not bit for
bit; any layout or schedule error shows up as a wrong block on a named PE.

* `DecodeDataflow` — one decode step, method §3.4 ops 1-14 per layer, then the final norm, the LM head, the
  argmax reduce along X and the broadcast of the next token's embedding row from the column that holds it; a
  real shift-based KV cache (`meshgemm.kv_cache`) in per-PE ring buffers.
* `PrefillDataflow` — a prompt in MeshGEMM's ``L_y feat_x`` layout (method §3.2, §3.6): RMSNorm with an X
  allreduce, every GEMM as MeshGEMM on the virtual Q×Q mesh with host pre-skewed weights, RoPE from global token
  indices, attention by the fused ring attention of §5 (K and V rotate along the y-ring, scores allreduced
  within each KV group's columns, causal/window/padding mask from global token indices, online softmax),
  and dist-GEMM-T score landing (`scores_gemmt`) for the paper's form.
* `generate` — prefill on one grid, KV cache and last hidden state re-laid out to the decode grid, then decode.

Numerics follow `waferllm.reference` (method §10): products and reductions accumulate in fp32 and are rounded
to the model dtype where the reference rounds; softmax in fp32. The numbers differ from the reference only by
summation order, and in decode by where two divisions happen: the decode program applies each RMSNorm's
scale to the next GEMV's sums and divides p·V by the softmax sums (each rides on the next allreduce), so
in fp16 γ ⊙ x and exp(s − m) are what get rounded, not the normalised values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from plmr.ktree import chain_tree
from meshgemm.kv_cache import KVCacheFull, ShiftKVCache
from meshgemm.model_layout import (Blocks, DecodeLayout, ModelDims, ModelShards, PrefillLayout,
                                   PreskewedWeight, make_blocks)
from plmr.decode_memory import SCORE_CHUNK, score_chunk as chunk_length
from plmr.errors import InputError
from plmr.interleave import ring_order, ring_position
from plmr.ktree import KTree, build_ktree

F32 = np.float32


class ModelConfig(ModelDims, Protocol):
    """What the data flow reads from a model (``waferllm.model.ModelSpec`` satisfies it)."""

    num_layers: int
    rms_norm_eps: float

    def rope_inv_freq(self) -> tuple[float, ...]: ...

    def layer_sliding_window(self, layer: int) -> int | None: ...


# ---- collectives over per-PE blocks ---------------------------------------------------------------------
@dataclass(frozen=True)
class TreeChoice:
    """K-tree shape of one reduction axis (method §6.3): K levels and the group counts of levels 1..K−1 for
    the full axis (None: ≈ n^(1/K) members per group). Shorter lines (a KV group's columns) use the default
    counts for their length."""

    k: int = 2
    group_counts: tuple[int, ...] | None = None

    def tree(self, n: int, full_axis: bool = True) -> KTree:
        counts = self.group_counts if full_axis and n > 1 else None
        return build_ktree(n, self.k, counts)


def tree_reduce(values: list[np.ndarray], tree: KTree) -> np.ndarray:
    """Sum ``values`` (one per line position) in the mesh's order: per level and group, a chain from each end
    into the root (each member adds its own value to the stream and forwards it); a root with one side adds
    that stream to its own value; with two, it adds the longer side, then the shorter one (which arrived
    first, into scratch), as `meshgemm.collectives.ktree_reduce` does."""
    acc = {p: values[p] for p in range(len(values))}
    for level in tree.levels:
        new = {}
        for group, root in zip(level.groups, level.roots):
            i = group.index(root)
            left, right = list(group[:i]), list(group[i + 1:])
            streams = {}
            if left:
                s = acc[left[0]]
                for p in left[1:]:
                    s = s + acc[p]
                streams["left"] = s
            if right:
                s = acc[right[-1]]
                for p in reversed(right[:-1]):
                    s = s + acc[p]
                streams["right"] = s
            total = acc[root]
            if len(streams) == 1:
                total = total + next(iter(streams.values()))
            elif streams:
                short = "right" if len(right) <= len(left) else "left"
                long_ = "left" if short == "right" else "right"
                total = (total + streams[long_]) + streams[short]
            new[root] = total
        acc = new
    return acc[tree.root]


def line_allreduce(values: list[np.ndarray], tree: KTree, op: str = "sum") -> list[np.ndarray]:
    """K-tree reduce then multicast: every position of the line receives its own copy of the total."""
    if op == "sum":
        total = tree_reduce(values, tree)
    elif op == "max":
        total = values[0]
        for v in values[1:]:
            total = np.maximum(total, v)
    else:
        raise ValueError(f"unknown reduction {op!r}")
    return [np.array(total, copy=True) for _ in values]


def allreduce(blocks: Blocks, axis: str, choice: TreeChoice, op: str = "sum",
              segments: tuple[tuple[int, ...], ...] | None = None) -> Blocks:
    """Allreduce of per-PE arrays along ``axis`` on every line at once; ``segments`` (axis "x" only) splits
    each row into independent column groups (the per-KV-group score allreduce); columns in no segment keep
    their blocks."""
    p_y, p_x = len(blocks), len(blocks[0])
    out = [list(row) for row in blocks]
    if axis == "y":
        tree = choice.tree(p_y)
        for px in range(p_x):
            res = line_allreduce([blocks[py][px] for py in range(p_y)], tree, op)
            for py in range(p_y):
                out[py][px] = res[py]
        return out
    segs = segments if segments is not None else (tuple(range(p_x)),)
    for seg in segs:
        tree = choice.tree(len(seg), full_axis=len(seg) == p_x)
        for py in range(p_y):
            res = line_allreduce([blocks[py][c] for c in seg], tree, op)
            for c, r in zip(seg, res):
                out[py][c] = r
    return out


def argmax_reduce(pairs: list[tuple[float, int]], tree: KTree) -> tuple[float, int]:
    """Reduce (value, index) pairs in the mesh's tree order: the larger value wins, ties to the lower index."""

    def better(a, b):
        return a if (a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])) else b

    acc = {p: pairs[p] for p in range(len(pairs))}
    for level in tree.levels:
        new = {}
        for group, root in zip(level.groups, level.roots):
            best = acc[root]
            for p in group:
                if p != root:
                    best = better(best, acc[p])
            new[root] = best
        acc = new
    return acc[tree.root]


def _map(blocks: Blocks, fn) -> Blocks:
    return [[fn(b, px, py) for px, b in enumerate(row)] for py, row in enumerate(blocks)]


# ---- decode ---------------------------------------------------------------------------------------------
@dataclass
class LayerCache:
    """One layer's KV cache: the §8 rule and per-PE ring buffers K, V [capacity, kv features of the column]."""

    rule: ShiftKVCache
    k: Blocks
    v: Blocks


class DecodeDataflow:
    """One decode step of method §3.4 on the per-PE blocks of `DecodeLayout` (see the module docstring).

    ``capacity`` is the KV entries per PE (the planner derives it from SRAM; `meshgemm.kv_cache.entries_per_pe`).
    ``tree_y`` / ``tree_x`` are the K-tree shapes of the two reduction axes; ``score_chunk`` the cached
    entries per attention chunk (``plmr.decode_memory.SCORE_CHUNK``, as the decode program).
    """

    def __init__(self, spec: ModelConfig, layout: DecodeLayout, shards: ModelShards, dtype, capacity: int,
                 tree_y: TreeChoice = TreeChoice(), tree_x: TreeChoice = TreeChoice(),
                 score_chunk: int = SCORE_CHUNK):
        self.spec, self.lay, self.sh = spec, layout, shards
        self.chunk = chunk_length(capacity, score_chunk)
        self.dtype = np.dtype(dtype).type
        self.tree_y, self.tree_x = tree_y, tree_x
        self.inv_freq = np.asarray(spec.rope_inv_freq(), dtype=np.float64).astype(F32)
        P, X = layout.p_y, layout.p_x
        self.caches = []
        for i in range(spec.num_layers):
            rule = ShiftKVCache(P, capacity, spec.layer_sliding_window(i))
            k = make_blocks(P, X, lambda px, py: np.zeros((capacity, layout.heads.kv.alloc[px]), self.dtype))
            v = make_blocks(P, X, lambda px, py: np.zeros((capacity, layout.heads.kv.alloc[px]), self.dtype))
            self.caches.append(LayerCache(rule, k, v))
        self.length = 0  # tokens appended so far (the next token's position)

    # -- helpers -----------------------------------------------------------------------------------------
    @property
    def p_y(self) -> int:
        return self.lay.p_y

    @property
    def p_x(self) -> int:
        return self.lay.p_x

    def _cast(self, blocks: Blocks) -> Blocks:
        return _map(blocks, lambda b, px, py: b.astype(self.dtype))

    def _add_bias(self, blocks: Blocks, bias: Blocks | None) -> Blocks:
        if bias is None:
            return blocks
        return _map(blocks, lambda b, px, py: b + bias[py][px])

    # -- §3.4 ops ----------------------------------------------------------------------------------------
    def embed(self, token: int) -> Blocks:
        """Embedding lookup: the column owning the token's vocabulary block multicasts its row segment along
        each mesh row, giving the Y-dist hidden vector."""
        if not 0 <= token < self.spec.vocab_size:
            raise InputError(f"token id {token} is outside the vocabulary 0..{self.spec.vocab_size - 1}")
        col, row = self.lay.embedding_source(token)
        segs = [self.sh.embed[py][col][row] for py in range(self.p_y)]
        return make_blocks(self.p_y, self.p_x, lambda px, py: segs[py].copy())

    def rms_norm(self, x: Blocks, gamma: Blocks) -> Blocks:
        """Ops 1 and 10: local Σx² over the segment, allreduce along Y, scale (§10's cast-back rule)."""
        ss = allreduce(_map(x, lambda b, px, py: np.sum(b.astype(F32) ** 2, dtype=F32).reshape(1)),
                       "y", self.tree_y)
        n, eps = F32(self.spec.hidden_size), F32(self.spec.rms_norm_eps)

        def scale(b, px, py):
            r = F32(1.0) / np.sqrt(ss[py][px][0] / n + eps)
            return gamma[py][px] * (b.astype(F32) * r).astype(self.dtype)

        return _map(x, scale)

    def norm_numerator(self, x: Blocks, gamma: Blocks) -> tuple[Blocks, Blocks]:
        """Ops 1 and 10 as the decode program folds them into the next GEMV: (γ ⊙ x in the model dtype, the
        segment's Σx² in fp32). The scale rsqrt(Σx²/E + eps) is applied to the GEMV's sums (``norm_scale``)."""
        gx = _map(x, lambda b, px, py: gamma[py][px] * b)
        ss = _map(x, lambda b, px, py: np.sum(b.astype(F32) ** 2, dtype=F32).reshape(1))
        return gx, ss

    def norm_scale(self, sums: np.ndarray) -> np.ndarray:
        """The GEMV's allreduced sums (Σx² last) scaled by rsqrt(Σx²/E + eps), fp32."""
        n, eps = F32(self.spec.hidden_size), F32(self.spec.rms_norm_eps)
        r = F32(1.0) / np.sqrt(F32(sums[-1] / n + eps))
        return (sums[:-1] * r).astype(F32)

    def qkv(self, layer: int, a: Blocks, ss: Blocks) -> tuple[Blocks, Blocks, Blocks]:
        """Op 2: three local GEMVs of γ ⊙ x against natural W_Q, W_K, W_V, one fused allreduce along Y that
        also carries the input norm's Σx², the norm's scale on the sums; q, k, v X-dist; biases after."""
        w = self.sh.layers[layer]
        nq, nk = self.lay.heads.q.alloc, self.lay.heads.kv.alloc

        def part(b, px, py):
            af = b.astype(F32)
            return np.concatenate([af @ w[n][py][px].astype(F32) for n in ("q", "k", "v")] + [ss[py][px]])

        fused = _map(allreduce(_map(a, part), "y", self.tree_y), lambda b, px, py: self.norm_scale(b))
        q = _map(fused, lambda b, px, py: b[:nq[px]].astype(self.dtype))
        k = _map(fused, lambda b, px, py: b[nq[px]:nq[px] + nk[px]].astype(self.dtype))
        v = _map(fused, lambda b, px, py: b[nq[px] + nk[px]:].astype(self.dtype))
        return (self._add_bias(q, w.get("q_bias")), self._add_bias(k, w.get("k_bias")),
                self._add_bias(v, w.get("v_bias")))

    def rope_tables(self, px: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin at ``position`` for column px's RoPE pairs (fp32, cast to the model dtype)."""
        a, b = self.lay.heads.column_pairs[px]
        ang = F32(position) * self.inv_freq[a:b]
        return np.cos(ang).astype(self.dtype), np.sin(ang).astype(self.dtype)

    def rope(self, q: Blocks, k: Blocks, position: int) -> tuple[Blocks, Blocks]:
        """Op 3: rotate-half on every head chunk with the column's own pairs; partners are local."""
        heads = self.lay.heads

        def rot(vec, px, chunks_kv: bool):
            cos, sin = self.rope_tables(px, position)
            out = vec.copy()
            n = heads.n_pairs(px)
            offsets = sorted({(c.kv_offset if chunks_kv else c.q_offset) for c in heads.chunks(px)})
            for o in offsets:
                x1, x2 = vec[o:o + n], vec[o + n:o + 2 * n]
                out[o:o + n] = x1 * cos - x2 * sin
                out[o + n:o + 2 * n] = x2 * cos + x1 * sin
            return out

        return _map(q, lambda b, px, py: rot(b, px, False)), _map(k, lambda b, px, py: rot(b, px, True))

    def kv_append(self, layer: int, k: Blocks, v: Blocks) -> None:
        """Op 4: the §8 step. k and v are already replicated down each column; the writing row stores its
        copy, and the shifting rows pass their oldest entry one row up in the same ring slot (all reads
        before all writes). Raises `KVCacheFull` before anything changes."""
        c = self.caches[layer]
        step = c.rule.append(self.length)
        for blocks, new in ((c.k, k), (c.v, v)):
            sent = [(mv, [blocks[mv.src][px][mv.slot].copy() for px in range(self.p_x)]) for mv in step.moves]
            for mv, rows in sent:
                if mv.dst >= 0:
                    for px in range(self.p_x):
                        blocks[mv.dst][px][mv.slot] = rows[px]
            for px in range(self.p_x):
                blocks[step.write_row][px][step.slot] = new[step.write_row][px]

    def cached_slots(self, layer: int, py: int, n: int) -> np.ndarray:
        """Ring slots of the tokens row py holds after n appends, in token order (the run-time offsets a device
        loop over the cache walks: at most two runs)."""
        rule = self.caches[layer].rule
        slots = [s + i for s, ln in rule.segments(py, n) for i in range(ln)]
        return np.asarray(slots, dtype=np.int64)

    def scores(self, layer: int, q: Blocks) -> Blocks:
        """Op 5: per-head partial dots with the row's cached keys over the column's features, summed by an
        allreduce along X within each KV group's columns (all groups in parallel); scaled by d^(-1/2).
        Per PE an array [column's query heads, row's cached tokens] (fp32)."""
        heads, c = self.lay.heads, self.caches[layer]
        n_after = self.length + 1  # called after the append of the current token
        scale = self.dtype(self.spec.head_dim ** -0.5)

        def part(b, px, py):
            slots = self.cached_slots(layer, py, n_after)
            keys = c.k[py][px][slots].astype(F32)
            chunks = heads.chunks(px)
            out = np.zeros((len(chunks), slots.size), dtype=F32)
            for hi, ch in enumerate(chunks):
                out[hi] = keys[:, ch.kv_offset:ch.kv_offset + ch.width] @ b[ch.q_offset:ch.q_offset + ch.width].astype(F32)
            return out

        summed = allreduce(_map(q, part), "x", self.tree_x, segments=heads.segments)
        return _map(summed, lambda b, px, py: (b.astype(self.dtype) * scale).astype(F32))

    def attend(self, layer: int, s: Blocks, trace: dict | None = None) -> Blocks:
        """Ops 6 and 7 over each row's cached tokens in chunks of ``self.chunk`` (the decode program's
        order, ``meshgemm.decode_program``): chunk 0 takes its maxima allreduced along Y, exp(s − m) (fp32,
        rounded to the model dtype as p·V's weights), its sums and its p·V partials; a later chunk raises
        the row's running maximum and rescales the partials and sums by exp(m_old − m_new); once some row
        took several chunks a second max along Y rescales every row to the largest. Then one allreduce
        along Y of the partials with the sums, each head divided by its total; o X-dist. ``trace`` gets
        ``exp_scores`` (each PE's last chunk of exp(s − m), as the program holds it) and ``weights`` (the
        factor each cached token's V row ends up weighted by, exp(s − max) of the whole cache)."""
        heads, c = self.lay.heads, self.caches[layer]
        n_after = self.length + 1
        C = self.chunk
        vals = _map(s, lambda b, px, py: c.v[py][px][self.cached_slots(layer, py, n_after)].astype(F32))
        chunks = self.lay.heads.chunks

        def pv(p, vv, px):  # p [heads, t] in the model dtype, vv [t, kv features]: the partials, fp32
            out = np.zeros(heads.q.alloc[px], dtype=F32)
            for hi, ch in enumerate(chunks(px)):
                out[ch.q_offset:ch.q_offset + ch.width] = p[hi].astype(F32) @ vv[:, ch.kv_offset:ch.kv_offset + ch.width]
            return out

        def rescale(st, fac, px):
            acc, sums, ws = st["acc"], st["sums"] * fac, [w * fac[:, None] for w in st["ws"]]
            acc = acc.copy()
            for hi, ch in enumerate(chunks(px)):
                acc[ch.q_offset:ch.q_offset + ch.width] *= fac[hi]
            return dict(st, acc=acc, sums=sums, ws=ws)

        def local_max(b):
            return b.max(axis=1) if b.shape[1] else np.full(b.shape[0], -np.inf, F32)

        # chunk 0 on every row (empty where a row holds nothing)
        first = _map(s, lambda b, px, py: b[:, :C])
        m = allreduce(_map(first, lambda b, px, py: local_max(b)), "y", self.tree_y, op="max")

        def chunk0(b, px, py):
            e = np.exp(b - m[py][px][:, None])
            p = e.astype(self.dtype)
            return dict(m=m[py][px], sums=e.sum(axis=1, dtype=F32), acc=pv(p, vals[py][px][:C], px), ws=[e], last=e)

        state = _map(first, chunk0)
        longest = 0
        for py in range(self.p_y):
            n_row = s[py][0].shape[1]
            longest = max(longest, n_row)
            for px in range(self.p_x):
                st, b = state[py][px], s[py][px]
                for a in range(C, n_row, C):
                    sc = b[:, a:a + C]
                    m_new = np.maximum(st["m"], sc.max(axis=1))
                    st = rescale(st, np.exp(st["m"] - m_new), px)
                    e = np.exp(sc - m_new[:, None])
                    st = dict(st, m=m_new, sums=st["sums"] + e.sum(axis=1, dtype=F32), ws=st["ws"] + [e], last=e,
                              acc=st["acc"] + pv(e.astype(self.dtype), vals[py][px][a:a + C], px))
                state[py][px] = st
        if longest > C:  # the rows' maxima differ: every row rescaled to the largest
            mx = allreduce(_map(state, lambda st, px, py: st["m"]), "y", self.tree_y, op="max")
            state = _map(state, lambda st, px, py: rescale(st, np.exp(st["m"] - mx[py][px]), px))
        if trace is not None:
            trace.update(exp_scores=_map(state, lambda st, px, py: st["last"]),
                         weights=_map(state, lambda st, px, py: np.concatenate(st["ws"], axis=1)))

        def divide(b, px, py):
            out = b[:heads.q.alloc[px]].copy()
            tot = b[heads.q.alloc[px]:]
            for hi, ch in enumerate(chunks(px)):
                out[ch.q_offset:ch.q_offset + ch.width] *= F32(1.0) / tot[hi]
            return out.astype(self.dtype)

        part = _map(state, lambda st, px, py: np.concatenate([st["acc"], st["sums"]]))
        return _map(allreduce(part, "y", self.tree_y), divide)

    def _gemv_x(self, x: Blocks, w: Blocks, bias: Blocks | None) -> Blocks:
        """A GEMV against a weight in transposed block position: local product, allreduce along X, Y-dist."""
        part = _map(x, lambda b, px, py: b.astype(F32) @ w[py][px].astype(F32))
        return self._add_bias(self._cast(allreduce(part, "x", self.tree_x)), bias)

    def o_proj(self, layer: int, o: Blocks) -> Blocks:
        """Op 8: W_O transposed in block position, allreduce along X, Y-dist (+ o bias)."""
        w = self.sh.layers[layer]
        return self._gemv_x(o, w["o"], w.get("o_bias"))

    @staticmethod
    def residual(x: Blocks, h: Blocks) -> Blocks:
        """Ops 9 and 14: x + h in the model dtype (both Y-dist: no communication)."""
        return _map(x, lambda b, px, py: b + h[py][px])

    def gate_up(self, layer: int, a: Blocks, ss: Blocks) -> tuple[Blocks, Blocks]:
        """Op 11: gate and up GEMVs (natural) of γ ⊙ h, one fused allreduce along Y with the post-attention
        norm's Σx², the norm's scale on the sums; X-dist (+ biases)."""
        w = self.sh.layers[layer]
        nf = self.lay.ffn.alloc

        def part(b, px, py):
            af = b.astype(F32)
            return np.concatenate([af @ w["gate"][py][px].astype(F32), af @ w["up"][py][px].astype(F32), ss[py][px]])

        fused = _map(allreduce(_map(a, part), "y", self.tree_y), lambda b, px, py: self.norm_scale(b))
        g = _map(fused, lambda b, px, py: b[:nf[px]].astype(self.dtype))
        u = _map(fused, lambda b, px, py: b[nf[px]:].astype(self.dtype))
        return self._add_bias(g, w.get("gate_bias")), self._add_bias(u, w.get("up_bias"))

    def silu_mul(self, g: Blocks, u: Blocks) -> Blocks:
        """Op 12: SiLU(gate) ⊙ up, local (SiLU in fp32, rounded, then the product in the model dtype)."""
        def f(b, px, py):
            gf = b.astype(F32)
            return (gf / (F32(1.0) + np.exp(-gf))).astype(self.dtype) * u[py][px]

        return _map(g, f)

    def down(self, layer: int, z: Blocks) -> Blocks:
        """Op 13: W_down transposed in block position, allreduce along X, Y-dist (+ down bias)."""
        w = self.sh.layers[layer]
        return self._gemv_x(z, w["down"], w.get("down_bias"))

    def layer(self, i: int, x: Blocks, trace: dict | None = None) -> Blocks:
        """Ops 1-14 of layer i on the hidden state x of the token at position ``self.length``."""
        w = self.sh.layers[i]
        a, ss = self.norm_numerator(x, w["input_norm"])
        q, k, v = self.qkv(i, a, ss)
        q_r, k_r = self.rope(q, k, self.length)
        self.kv_append(i, k_r, v)
        s = self.scores(i, q_r)
        att: dict = {}
        o = self.attend(i, s, att)
        attn_out = self.o_proj(i, o)
        h1 = self.residual(x, attn_out)
        a2, ss2 = self.norm_numerator(h1, w["post_norm"])
        g, u = self.gate_up(i, a2, ss2)
        z = self.silu_mul(g, u)
        mlp = self.down(i, z)
        h2 = self.residual(h1, mlp)
        if trace is not None:
            trace.update(attn_gx=a, q=q, k=k, v=v, q_rope=q_r, k_rope=k_r, scores=s, **att, attn=o,
                         attn_out=attn_out, h_attn=h1, mlp_gx=a2, gate=g, up=u, act=z, mlp_out=mlp, h_out=h2)
        return h2

    def lm_head(self, x: Blocks) -> Blocks:
        """Natural ``E_y V_x`` W_lm (or, tied, the ``V_x E_y`` embedding blocks, one dot per vocabulary row),
        allreduce along Y: logits X-dist over the vocabulary."""
        if self.sh.lm_head is None:
            part = _map(x, lambda b, px, py: self.sh.embed[py][px].astype(F32) @ b.astype(F32))
        else:
            part = _map(x, lambda b, px, py: b.astype(F32) @ self.sh.lm_head[py][px].astype(F32))
        return self._cast(allreduce(part, "y", self.tree_y))

    def argmax(self, logits: Blocks) -> Blocks:
        """Greedy pick: local (max, global index) per PE, reduce along X (ties to the lowest index), broadcast;
        every PE ends with the token id."""
        vocab = self.lay.vocab
        tree = self.tree_x.tree(self.p_x)
        out = []
        for py in range(self.p_y):
            pairs = []
            for px in range(self.p_x):
                b = logits[py][px].astype(F32)
                if b.size:
                    i = int(np.argmax(b))
                    pairs.append((float(b[i]), int(vocab.indices(px)[i])))
                else:
                    pairs.append((-np.inf, self.spec.vocab_size))
            best = argmax_reduce(pairs, tree)
            out.append([best[1] for _ in range(self.p_x)])
        return out

    def step(self, token: int, traces: list | None = None) -> tuple[Blocks, int]:
        """Process ``token`` at position ``self.length``: its embedding, every layer, the final norm, the LM
        head and the argmax. Returns (logits blocks, next token); raises `KVCacheFull` before any change."""
        for c in self.caches:
            c.rule.check_append(self.length)
        x = self.embed(token)
        if traces is not None:
            traces.append({"embed": x})
        for i in range(self.spec.num_layers):
            tr = {} if traces is not None else None
            x = self.layer(i, x, tr)
            if traces is not None:
                traces.append(tr)
        logits, nxt = self.head(x, traces)
        self.length += 1
        return logits, nxt

    def head(self, x: Blocks, traces: list | None = None) -> tuple[Blocks, int]:
        """After the last layer: final RMSNorm, LM head, argmax (the next token, equal on every PE)."""
        n = self.rms_norm(x, self.sh.final_norm)
        logits = self.lm_head(n)
        picks = self.argmax(logits)
        flat = {t for row in picks for t in row}
        if len(flat) != 1:
            raise AssertionError(f"PEs disagree on the next token: {sorted(flat)}")
        if traces is not None:
            traces.append({"final_norm": n, "logits": logits, "next": picks})
        return logits, flat.pop()

    # -- loading the cache from a prefill ----------------------------------------------------------------
    def load_prefix(self, k_full: list[np.ndarray], v_full: list[np.ndarray]) -> None:
        """Place per-layer K (after RoPE) and V of the first L tokens ([L, n_kv·d] each) in the decode cache:
        rows by the balanced split of §8 (the last W tokens with a window), ring slot t mod capacity, features
        by the decode head layout. The prefill → decode re-layout of the cache."""
        L = k_full[0].shape[0]
        kv = self.lay.heads.kv
        for i, c in enumerate(self.caches):
            ranges = c.rule.prefill(L)
            for py, (a, b) in enumerate(ranges):
                for t in range(a, b):
                    for px in range(self.p_x):
                        c.k[py][px][c.rule.slot(t)] = kv.take(k_full[i][t], px)
                        c.v[py][px][c.rule.slot(t)] = kv.take(v_full[i][t], px)
        self.length = L

    def gather_scores(self, layer: int, s: Blocks, n: int) -> np.ndarray:
        """Scores (or probabilities) computed with n tokens appended, as [n_h, cached tokens in order]."""
        heads = self.lay.heads
        rule = self.caches[layer].rule
        out = np.zeros((self.spec.num_heads, rule.cached(n)), dtype=F32)
        first = rule.first_retained(n)
        for py, (a, b) in enumerate(rule.row_ranges(n)):
            for px in range(self.p_x):
                for hi, ch in enumerate(heads.chunks(px)):
                    out[ch.q_head, a - first:b - first] = s[py][px][hi]
        return out


# ---- prefill --------------------------------------------------------------------------------------------
class PrefillDataflow:
    """A prompt through every layer in the prefill layout (see the module docstring). ``h`` inputs are the
    prompt's embedding rows ([L, E], looked up by the host)."""

    def __init__(self, spec: ModelConfig, layout: PrefillLayout, layer_shards: list[dict[str, Blocks]], dtype,
                 tree_x: TreeChoice = TreeChoice()):
        self.spec, self.lay, self.sh = spec, layout, layer_shards
        self.dtype = np.dtype(dtype).type
        self.tree_x = tree_x
        self.inv_freq = np.asarray(spec.rope_inv_freq(), dtype=np.float64).astype(F32)
        self.geom = layout.geom

    @property
    def p_y(self) -> int:
        return self.lay.p_y

    @property
    def p_x(self) -> int:
        return self.lay.p_x

    def input(self, h: np.ndarray) -> Blocks:
        """The host packs the prompt's embedding rows into ``L_y E_x`` blocks."""
        return self.lay.activation(self.lay.hidden).shard(np.asarray(h, dtype=self.dtype))

    def rms_norm(self, x: Blocks, gamma: Blocks) -> Blocks:
        """Per token: local Σx² over the PE's features, allreduce along X, scale by the PE's γ slice."""
        ss = allreduce(_map(x, lambda b, px, py: np.sum(b.astype(F32) ** 2, axis=1, dtype=F32)), "x", self.tree_x)
        n, eps = F32(self.spec.hidden_size), F32(self.spec.rms_norm_eps)

        def scale(b, px, py):
            r = F32(1.0) / np.sqrt(ss[py][px] / n + eps)
            return gamma[py][px] * (b.astype(F32) * r[:, None]).astype(self.dtype)

        return _map(x, scale)

    def meshgemm(self, a: Blocks, w: Blocks, weight: PreskewedWeight) -> Blocks:
        """C = A·W by MeshGEMM on the virtual Q×Q mesh (§4.3-4.4): A's virtual rows are skewed on the device
        (row u rotated back by u positions), W arrives pre-skewed; Q steps of tile products accumulated in
        fp32, A shifted forward along the x-rings and W along the y-rings after each step. Returns C in
        the natural ``L_y (out)_x`` layout, rounded to the model dtype."""
        g = self.geom
        Q, qy, qx = g.q, g.q_y, g.q_x
        m = self.lay.tokens.alloc[0] // qy
        k, n = weight.k, weight.n
        A = [[None] * Q for _ in range(Q)]
        B = [[None] * Q for _ in range(Q)]
        for py in range(self.p_y):
            for px in range(self.p_x):
                for j in range(qy):
                    for i in range(qx):
                        u, v = g.virtual_row(py, j), g.virtual_col(px, i)
                        A[u][v] = a[py][px][j * m:(j + 1) * m, i * k:(i + 1) * k].astype(F32)
                        B[u][v] = w[py][px][j, i].astype(F32)
        A = [[A[u][(v + u) % Q] for v in range(Q)] for u in range(Q)]  # device skew of A
        C = [[np.zeros((m, n), F32) for _ in range(Q)] for _ in range(Q)]
        for t in range(Q):
            for u in range(Q):
                for v in range(Q):
                    C[u][v] += A[u][v] @ B[u][v]
            if t < Q - 1:  # forward shifts: position v receives from v − 1
                A = [[A[u][(v - 1) % Q] for v in range(Q)] for u in range(Q)]
                B = [[B[(u - 1) % Q][v] for v in range(Q)] for u in range(Q)]

        def blk(px, py):
            out = np.zeros((qy * m, qx * n), F32)
            for j in range(qy):
                for i in range(qx):
                    out[j * m:(j + 1) * m, i * n:(i + 1) * n] = C[g.virtual_row(py, j)][g.virtual_col(px, i)]
            return out.astype(self.dtype)

        return make_blocks(self.p_y, self.p_x, blk)

    def _gemm(self, layer: int, name: str, a: Blocks) -> Blocks:
        w = self.sh[layer]
        out = self.meshgemm(a, w[name], self.lay.placements[name])
        bias = w.get(name + "_bias")
        return out if bias is None else _map(out, lambda b, px, py: b + bias[py][px][None, :])

    def qkv(self, layer: int, a: Blocks) -> tuple[Blocks, Blocks, Blocks]:
        return self._gemm(layer, "q", a), self._gemm(layer, "k", a), self._gemm(layer, "v", a)

    def rope(self, q: Blocks, k: Blocks) -> tuple[Blocks, Blocks]:
        """RoPE on every row at its global token index (padding rows use 0; they are masked later)."""
        heads = self.lay.heads

        def rot(b, px, py, kv):
            pos = np.maximum(self.lay.token_rows(py), 0).astype(F32)
            a0, b0 = heads.column_pairs[px]
            ang = pos[:, None] * self.inv_freq[None, a0:b0]
            cos, sin = np.cos(ang).astype(self.dtype), np.sin(ang).astype(self.dtype)
            out = b.copy()
            n = b0 - a0
            for o in sorted({(c.kv_offset if kv else c.q_offset) for c in heads.chunks(px)}):
                x1, x2 = b[:, o:o + n], b[:, o + n:o + 2 * n]
                out[:, o:o + n] = x1 * cos - x2 * sin
                out[:, o + n:o + 2 * n] = x2 * cos + x1 * sin
            return out

        return (_map(q, lambda b, px, py: rot(b, px, py, False)), _map(k, lambda b, px, py: rot(b, px, py, True)))

    def _mask(self, py: int, j: int, window: int | None) -> np.ndarray:
        """Allowed (query row of block py, key row of block j) pairs from global token indices."""
        qi, ki = self.lay.token_rows(py)[:, None], self.lay.token_rows(j)[None, :]
        ok = (ki >= 0) & (qi >= 0) & (ki <= qi)
        if window is not None:
            ok &= ki > qi - window
        return ok

    def _ring_schedule(self) -> list[list[int]]:
        """schedule[t][py] = the K/V block row py holds at step t: R_y[(pos(py) − t) mod P_y] (§5)."""
        P = self.p_y
        order = ring_order(P) if P > 1 else (0,)
        pos = [ring_position(py, P) if P > 1 else 0 for py in range(P)]
        return [[order[(pos[py] - t) % P] for py in range(P)] for t in range(P)]

    def attention(self, layer: int, q: Blocks, k: Blocks, v: Blocks) -> Blocks:
        """The fused ring attention of §5: K and V rotate together along the y-ring; each step the per-head
        partial scores are allreduced within the KV group's columns, masked (causal, window, padding),
        and folded into an online softmax (running max, sum, rescaled accumulator, fp32). O = acc / l lands
        in the q layout ``L_y qfeat_x``."""
        heads = self.lay.heads
        window = self.spec.layer_sliding_window(layer)
        scale = self.dtype(self.spec.head_dim ** -0.5)
        T = self.lay.tokens.alloc[0]
        state = make_blocks(self.p_y, self.p_x, lambda px, py: (
            np.full((len(heads.chunks(px)), T), -np.inf, F32), np.zeros((len(heads.chunks(px)), T), F32),
            np.zeros((len(heads.chunks(px)), T, 2 * heads.n_pairs(px)), F32)))
        kc, vc = k, v
        sched = self._ring_schedule()
        pred = None
        for t in range(self.p_y):
            part = _map(q, lambda b, px, py: np.stack(
                [b[:, c.q_offset:c.q_offset + c.width].astype(F32) @ kc[py][px][:, c.kv_offset:c.kv_offset + c.width].astype(F32).T
                 for c in heads.chunks(px)]) if heads.chunks(px) else np.zeros((0, T, T), F32))
            s = allreduce(part, "x", self.tree_x, segments=heads.segments)
            for py in range(self.p_y):
                ok = self._mask(py, sched[t][py], window)
                if not ok.any():
                    continue  # a key block wholly after the query block (or padding) is skipped
                for px in range(self.p_x):
                    m, l, acc = state[py][px]
                    if not m.shape[0]:
                        continue
                    sc = np.where(ok[None], (s[py][px].astype(self.dtype) * scale).astype(F32), -np.inf)
                    m_new = np.maximum(m, sc.max(axis=2))
                    alive = np.isfinite(m_new)
                    shift = np.where(alive, m_new, 0.0).astype(F32)
                    e = np.exp(sc - shift[:, :, None])
                    corr = np.where(np.isfinite(m), np.exp(m - shift), 0.0).astype(F32)
                    vals = np.stack([vc[py][px][:, c.kv_offset:c.kv_offset + c.width].astype(F32)
                                     for c in heads.chunks(px)])
                    state[py][px] = (m_new, l * corr + e.sum(axis=2, dtype=F32),
                                     acc * corr[:, :, None] + np.einsum("hts,hsf->htf", e, vals))
            if t < self.p_y - 1:  # K and V move one position forward on the y-ring
                if pred is None:
                    order = ring_order(self.p_y) if self.p_y > 1 else (0,)
                    pos = [ring_position(py, self.p_y) if self.p_y > 1 else 0 for py in range(self.p_y)]
                    pred = [order[(pos[py] - 1) % self.p_y] for py in range(self.p_y)]
                kc = [[kc[pred[py]][px] for px in range(self.p_x)] for py in range(self.p_y)]
                vc = [[vc[pred[py]][px] for px in range(self.p_x)] for py in range(self.p_y)]

        def out(px, py):
            m, l, acc = state[py][px]
            o = np.zeros((T, self.lay.q.alloc[px]), F32)
            safe = np.where(l > 0, l, 1.0)
            for hi, c in enumerate(heads.chunks(px)):
                o[:, c.q_offset:c.q_offset + c.width] = np.where((l[hi] > 0)[:, None], acc[hi] / safe[hi][:, None], 0)
            return o.astype(self.dtype)

        return make_blocks(self.p_y, self.p_x, out)

    def scores_gemmt(self, q: Blocks, k: Blocks) -> Blocks:
        """dist-GEMM-T (§5, the paper's form) per KV group: K rotates along the y-ring; at step t row py's
        partial Q(py)·K(j_t)ᵀ over each column's features is chain-reduced within the group's columns into
        root column seg[j_t mod |seg|]. Per PE a dict {key block j: [column's heads, T, T]} of the unscaled
        scores that landed there."""
        heads = self.lay.heads
        sched = self._ring_schedule()
        landed = make_blocks(self.p_y, self.p_x, lambda px, py: {})
        for t in range(self.p_y):
            for py in range(self.p_y):
                j = sched[t][py]
                kblk = k[j]  # the tile that reached row py after t forward shifts
                for seg in heads.segments:
                    root = seg[j % len(seg)]
                    parts = [np.stack([q[py][c][:, ch.q_offset:ch.q_offset + ch.width].astype(F32)
                                       @ kblk[c][:, ch.kv_offset:ch.kv_offset + ch.width].astype(F32).T
                                       for ch in heads.chunks(c)]) for c in seg]
                    landed[py][root][j] = tree_reduce(parts, chain_tree(len(seg), seg.index(root)))
        return landed

    def o_proj(self, layer: int, o: Blocks) -> Blocks:
        return self._gemm(layer, "o", o)

    def silu_mul(self, g: Blocks, u: Blocks) -> Blocks:
        def f(b, px, py):
            gf = b.astype(F32)
            return (gf / (F32(1.0) + np.exp(-gf))).astype(self.dtype) * u[py][px]

        return _map(g, f)

    def layer(self, i: int, x: Blocks, trace: dict | None = None) -> tuple[Blocks, Blocks, Blocks]:
        """Layer i on the prompt; returns (hidden out, K after RoPE, V) — K and V are the prefill KV cache,
        ``L_y kvfeat_x``, where they were produced."""
        w = self.sh[i]
        a = self.rms_norm(x, w["input_norm"])
        q, k, v = self.qkv(i, a)
        q_r, k_r = self.rope(q, k)
        o = self.attention(i, q_r, k_r, v)
        attn_out = self.o_proj(i, o)
        h1 = DecodeDataflow.residual(x, attn_out)
        a2 = self.rms_norm(h1, w["post_norm"])
        g, u = self._gemm(i, "gate", a2), self._gemm(i, "up", a2)
        z = self.silu_mul(g, u)
        mlp = self._gemm(i, "down", z)
        h2 = DecodeDataflow.residual(h1, mlp)
        if trace is not None:
            trace.update(attn_norm=a, q=q, k=k, v=v, q_rope=q_r, k_rope=k_r, attn=o, attn_out=attn_out, h_attn=h1,
                         mlp_norm=a2, gate=g, up=u, act=z, mlp_out=mlp, h_out=h2)
        return h2, k_r, v

    def run(self, h: np.ndarray, traces: list | None = None) -> tuple[Blocks, list[Blocks], list[Blocks]]:
        """Every layer on the prompt rows h [L, E]: (final hidden blocks, per-layer K blocks, V blocks)."""
        x = self.input(h)
        ks, vs = [], []
        for i in range(self.spec.num_layers):
            tr = {} if traces is not None else None
            x, k, v = self.layer(i, x, tr)
            ks.append(k)
            vs.append(v)
            if traces is not None:
                traces.append(tr)
        return x, ks, vs

    def gather(self, blocks: Blocks, features: str) -> np.ndarray:
        """A full [L, features] activation from blocks; ``features`` is "hidden", "ffn", "q" or "kv"."""
        return self.lay.activation(getattr(self.lay, features)).gather(blocks)


# ---- generation -----------------------------------------------------------------------------------------
@dataclass
class Generation:
    """Greedy tokens, the logits they came from (fp32, [n, V]), and why generation stopped early (None if
    it did not: e.g. the KV cache was full; the tokens produced so far are kept)."""

    tokens: list[int]
    logits: np.ndarray
    stopped: str | None = None
    prefill_k: list = field(default_factory=list, repr=False)


def default_capacity(rows: int, context: int) -> int:
    """Entries per PE that hold ``context`` tokens on ``rows`` rows."""
    return max(1, -(-context // rows))


def generate(spec: ModelConfig, weights, prompt: list[int], max_new_tokens: int, decode_mesh: tuple[int, int],
             prefill_mesh: tuple[int, int] | None = None, capacity: int | None = None,
             tree_y: TreeChoice = TreeChoice(), tree_x: TreeChoice = TreeChoice()) -> Generation:
    """Greedy generation on the block model. With ``prefill_mesh`` the prompt runs through `PrefillDataflow`
    on that grid, its KV cache and last hidden state are re-laid out to the decode grid, and the decode
    machinery computes the first token (method §3.6: "last position only"); without it every prompt token is
    a decode step. ``capacity`` = KV entries per PE (default: enough for the whole context)."""
    prompt = list(prompt)
    if not prompt or max_new_tokens < 1:
        raise InputError("need a non-empty prompt and max_new_tokens >= 1")
    bad = [t for t in prompt if not 0 <= t < spec.vocab_size]
    if bad:
        raise InputError(f"token id {bad[0]} is outside the vocabulary 0..{spec.vocab_size - 1}")
    dtype = np.asarray(weights.embed).dtype.type
    d_lay = DecodeLayout(spec, *decode_mesh)
    cap = capacity or default_capacity(decode_mesh[0], len(prompt) + max_new_tokens)
    dec = DecodeDataflow(spec, d_lay, d_lay.shard_model(weights), dtype, cap, tree_y, tree_x)
    for c in dec.caches:
        c.rule.prefill(len(prompt))  # a prompt that does not fit is an error before anything runs
    rows: list[np.ndarray] = []
    tokens: list[int] = []

    def logits_full(blocks):
        return d_lay.logits_vec.gather(blocks).astype(F32)

    try:
        if prefill_mesh is None:
            for t in prompt:
                logits, nxt = dec.step(t)
        else:
            p_lay = PrefillLayout(spec, *prefill_mesh, seq_len=len(prompt))
            pre = PrefillDataflow(spec, p_lay, p_lay.shard_model(weights), dtype, tree_x)
            x, ks, vs = pre.run(np.asarray(weights.embed)[np.asarray(prompt)])
            dec.load_prefix([pre.gather(k, "kv") for k in ks], [pre.gather(v, "kv") for v in vs])
            last = pre.gather(x, "hidden")[-1]  # hand-off of the last position to the decode layout
            logits, nxt = dec.head(d_lay.hidden_vec.shard(last))
        rows.append(logits_full(logits))
        tokens.append(nxt)
        while len(tokens) < max_new_tokens:
            logits, nxt = dec.step(tokens[-1])
            rows.append(logits_full(logits))
            tokens.append(nxt)
    except KVCacheFull as e:
        return Generation(tokens, np.stack(rows) if rows else np.zeros((0, spec.vocab_size), F32), str(e))
    return Generation(tokens, np.stack(rows))
