"""Layouts: partitions, the head-aligned feature layout, placements (checked by the products they must give),
the MeshGEMM pre-skew (checked by running the MeshGEMM kernel in the simulator on blocks packed here), and
whole-model shard/gather round trips on a real tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgemm.gemm import build_meshgemm
from meshgemm.kernel import KernelRequest
from meshgemm.model_layout import (DecodeLayout, MatrixPlacement, MeshGemmGeometry, Partition, PrefillLayout,
                                   PreskewedWeight, VectorPlacement, head_layout, make_blocks)
from plmr.errors import InputError
from plmr.hardware import WSE2
from plmr.transformer import LayerDims
from plmr.transformer import head_layout as plmr_head_layout
from simulator import simulate
from waferllm.reference import apply_rope
from waferllm.weights import load_weights

RNG = np.random.default_rng(7)


# ---- partitions -----------------------------------------------------------------------------------------
def test_balanced_partition_first_blocks_longer():
    p = Partition.balanced(10, 4)
    assert p.sizes == (3, 3, 2, 2) and p.offsets == (0, 3, 6, 8) and p.alloc == p.sizes
    assert [p.owner(e) for e in (0, 5, 6, 9)] == [(0, 0), (1, 2), (2, 0), (3, 1)]
    small = Partition.balanced(2, 5)  # more parts than elements: empty blocks are allowed
    assert small.sizes == (1, 1, 0, 0, 0) and small.owner(1) == (1, 0)


def test_tiled_partition_pads_at_the_end_and_round_trips():
    p = Partition.tiled(10, 3, 2, 2)  # 3 parts of 2 tiles of 2
    assert p.sizes == (4, 4, 2) and p.alloc == (4, 4, 4)
    assert p.storage_index().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1, -1]
    a = RNG.normal(size=(10, 3))
    blocks = [p.take(a, i) for i in range(3)]
    assert blocks[2].shape == (4, 3) and not blocks[2][2:].any()
    np.testing.assert_array_equal(p.assemble(blocks), a)
    with pytest.raises(ValueError):
        Partition.tiled(10, 2, 2, 2)


# ---- head layout ----------------------------------------------------------------------------------------
HEAD_CASES = [  # (n_h, n_kv, d, P_x)
    (6, 2, 12, 1), (6, 2, 12, 2), (6, 2, 12, 5), (6, 2, 12, 16),  # 16 > 2 groups x 6 pairs
    (3, 3, 18, 2), (8, 8, 4, 3), (5, 1, 12, 4), (4, 2, 16, 7), (32, 8, 128, 420), (14, 2, 64, 9),
]


@pytest.mark.parametrize("n_h,n_kv,d,p_x", HEAD_CASES)
def test_head_layout_properties(n_h, n_kv, d, p_x):
    hl = head_layout(n_h, n_kv, d, p_x)
    n_rep, half = n_h // n_kv, d // 2
    for c in range(p_x):
        kv_feats = set(hl.kv.indices(c).tolist())
        q_feats = set(hl.q.indices(c).tolist())
        # RoPE partners on the same column
        for f in kv_feats | q_feats:
            base, i = divmod(f, d)
            assert base * d + (i + half) % d in (kv_feats if f in kv_feats else q_feats)
        # query heads are exactly those of the column's KV groups, over the same pair indices
        assert {f // d for f in q_feats} == {h for h in range(n_h) if h // n_rep in hl.column_kv_heads[c]}
        assert {f % d for f in q_feats} == {f % d for f in kv_feats}
        for ch in hl.chunks(c):
            q_loc = hl.q.indices(c)[ch.q_offset:ch.q_offset + ch.width]
            kv_loc = hl.kv.indices(c)[ch.kv_offset:ch.kv_offset + ch.width]
            assert (q_loc // d == ch.q_head).all() and (kv_loc // d == ch.kv_head).all()
            np.testing.assert_array_equal(q_loc % d, kv_loc % d)
    # group columns: contiguous runs in group order, balanced (capped at d/2 feature-holding columns)
    if p_x >= n_kv:
        assert all(len(h) <= 1 for h in hl.column_kv_heads)
        owners = [h[0] for h in hl.column_kv_heads if h]
        assert owners == sorted(owners) and set(owners) == set(range(n_kv))
        lens = [len(s) for s in hl.segments]
        assert max(lens) - min(lens) <= 1 or min(lens) == half
        assert all(s == tuple(range(s[0], s[0] + len(s))) for s in hl.segments)
        assert sum(1 for h in hl.column_kv_heads if not h) == p_x - sum(lens)
    else:
        assert all(hl.n_pairs(c) == half for c in range(p_x))
        assert sum(len(h) for h in hl.column_kv_heads) == n_kv
        assert hl.segments == tuple((c,) for c in range(p_x))
    # the cost model reads the same layout: its busiest column equals ours. Its score allreduce spans the
    # group's whole column range; ours only the columns with features (fewer when P_x > n_kv·d/2)
    cost = plmr_head_layout(LayerDims(hidden=64, ffn=64, num_heads=n_h, num_kv_heads=n_kv, head_dim=d), p_x)
    assert cost.q_features == hl.q.max_size and cost.kv_features == hl.kv.max_size
    if p_x >= n_kv:
        featureless = any(not h for h in hl.column_kv_heads)
        assert (cost.group_width == max(len(s) for s in hl.segments)) != featureless


@pytest.mark.parametrize("n_h,n_kv,d,p_x", HEAD_CASES[:8])
def test_local_dots_and_rope_reassemble_the_heads(n_h, n_kv, d, p_x):
    """Per-column partial dots summed over a segment give q_h·k_g; RoPE applied per column with the column's
    pair indices equals RoPE on the whole head."""
    hl = head_layout(n_h, n_kv, d, p_x)
    q, k = RNG.normal(size=n_h * d), RNG.normal(size=n_kv * d)
    ang = RNG.uniform(0, 6, size=d // 2)
    cos, sin = np.cos(ang), np.sin(ang)
    full_q = apply_rope(q.reshape(1, n_h, d), cos[None], sin[None]).ravel()
    dots = {}
    for c in range(p_x):
        ql, kl = hl.q.take(q, c), hl.kv.take(k, c)
        a, b = hl.column_pairs[c]
        for ch in hl.chunks(c):
            qq, kk = ql[ch.q_offset:ch.q_offset + ch.width], kl[ch.kv_offset:ch.kv_offset + ch.width]
            dots[ch.q_head] = dots.get(ch.q_head, 0.0) + qq @ kk
            # local rotate-half on the chunk, pairs (i, i + n_pairs)
            n = ch.width // 2
            rq = np.concatenate([qq[:n] * cos[a:b] - qq[n:] * sin[a:b], qq[n:] * cos[a:b] + qq[:n] * sin[a:b]])
            np.testing.assert_allclose(rq, full_q[hl.q.indices(c)[ch.q_offset:ch.q_offset + ch.width]])
    for h in range(n_h):
        g = h // (n_h // n_kv)
        assert dots[h] == pytest.approx(q[h * d:(h + 1) * d] @ k[g * d:(g + 1) * d])


# ---- placements -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("p_y,p_x", [(1, 1), (2, 3), (4, 3), (3, 7)])
def test_natural_and_transposed_gemv_data_flow(p_y, p_x):
    """A Y-dist x against a natural W, summed along Y, gives the X-dist product; an X-dist x against W in
    transposed block position, summed along X, gives the Y-dist product (method §3.3)."""
    e, n = 17, 11
    w = RNG.normal(size=(e, n))
    x = RNG.normal(size=e)
    rows_y, cols_x = Partition.balanced(e, p_y), Partition.balanced(n, p_x)
    nat = MatrixPlacement("w", rows_y, cols_x, "y", p_y, p_x)
    xs = VectorPlacement("x", rows_y, "y", p_y, p_x).shard(x)
    wb = nat.shard(w)
    out = make_blocks(p_y, p_x, lambda px, py: sum(xs[r][px] @ wb[r][px] for r in range(p_y)))
    np.testing.assert_allclose(VectorPlacement("y", cols_x, "x", p_y, p_x).gather(out), x @ w)
    tr = MatrixPlacement("wt", Partition.balanced(e, p_x), Partition.balanced(n, p_y), "x", p_y, p_x)
    xt = VectorPlacement("x", Partition.balanced(e, p_x), "x", p_y, p_x).shard(x)
    wt = tr.shard(w)
    out = make_blocks(p_y, p_x, lambda px, py: sum(xt[py][c] @ wt[py][c] for c in range(p_x)))
    np.testing.assert_allclose(VectorPlacement("y", Partition.balanced(n, p_y), "y", p_y, p_x).gather(out), x @ w)
    np.testing.assert_array_equal(tr.gather(wt), w)
    np.testing.assert_array_equal(nat.gather(wb), w)


def test_vector_gather_catches_a_wrong_replica():
    vp = VectorPlacement("v", Partition.balanced(5, 2), "y", 2, 3)
    b = vp.shard(np.arange(5.0))
    b[1][2] = b[1][2] + 1
    with pytest.raises(ValueError, match=r"replica on PE \(2, 1\) differs"):
        vp.gather(b)


# ---- MeshGEMM pre-skew, checked by the MeshGEMM kernel itself ---------------------------------------------
def _run_meshgemm_with(p_y, p_x, m, weight: PreskewedWeight, w: np.ndarray):
    """Build the MeshGEMM kernel for A[m × K_pad]·B[K_pad × N_pad], replace its B with our pre-skewed blocks,
    simulate, and return (C, A, padded W)."""
    req = KernelRequest("meshgemm", (p_y, p_x), m, weight.rows.padded_total, weight.cols.padded_total, "fp32")
    build = build_meshgemm(req, WSE2)
    blocks = weight.shard(w.astype(np.float32))
    g = weight.geom

    def b_data(px, py):
        t = blocks[py][px]  # [q_y, q_x, k, n]; the kernel keeps one spare slot row of q_x tiles
        return np.concatenate([t.reshape(-1), np.zeros(g.q_x * weight.k * weight.n)])

    build.program.set_data(range(p_x), range(p_y), "B", b_data)
    res = simulate(build.program, WSE2)
    return build.gather(res)["C"], build.inputs["A"], weight.padded(w)


@pytest.mark.parametrize("p_y,p_x", [(1, 1), (2, 2), (2, 3), (3, 2), (3, 4), (1, 3)])
def test_preskew_is_the_rule_the_meshgemm_kernel_uses(p_y, p_x):
    geom = MeshGemmGeometry(p_y, p_x)
    # K = 13 hidden features (tiled), N = head-aligned q features of 4 heads / 2 KV heads of d = 6 (permuted,
    # padded per column): the shapes a Q projection has
    rows = geom.tiled(13, "x")
    cols = geom.tiled_like(head_layout(4, 2, 6, p_x).q)
    weight = PreskewedWeight("q", rows, cols, geom)
    w = RNG.normal(size=(13, 24))
    c, a, wp = _run_meshgemm_with(p_y, p_x, 5, weight, w)
    np.testing.assert_allclose(c, a.astype(np.float64) @ wp, rtol=1e-5, atol=1e-5)
    # and the padded operand is W in storage order: multiplying by it is x @ W with permuted columns
    x = RNG.normal(size=(2, 13))
    xs = np.zeros((2, rows.padded_total))
    xs[:, rows.storage_index() >= 0] = x[:, rows.storage_index()[rows.storage_index() >= 0]]
    out = xs @ wp
    np.testing.assert_allclose(cols.assemble([out[:, i * cols.alloc[0]:(i + 1) * cols.alloc[0]]
                                              for i in range(p_x)], axis=1), x @ w)
    np.testing.assert_array_equal(weight.gather(weight.shard(w)), w)


# ---- whole-model layouts on a real checkpoint -------------------------------------------------------------
@pytest.mark.parametrize("p_y,p_x", [(1, 1), (3, 4), (5, 2), (2, 9)])
def test_decode_shards_round_trip_and_place_what_the_method_says(tiny_model, p_y, p_x):
    d, _ = tiny_model("qwen2_bias_tied")
    w = load_weights(d)
    lay = DecodeLayout(w.spec, p_y, p_x)
    shards = lay.shard_model(w)
    back = lay.gather_model(shards)
    for lw, got in zip(w.layers, back["layers"]):
        for name, arr in got.items():
            ref = getattr(lw, name)
            assert (arr is None) == (ref is None)
            if ref is not None:
                np.testing.assert_array_equal(arr, ref)
    np.testing.assert_array_equal(back["lm_head"], w.lm_head)  # tied: the embedding blocks serve
    assert shards.lm_head is None
    # W_O sits transposed in block position: PE (px, py) holds (q features of column px) × (E segment py)
    l0 = shards.layers[0]
    for py in range(p_y):
        for px in range(p_x):
            np.testing.assert_array_equal(
                l0["o"][py][px], w.layers[0].o[np.ix_(lay.heads.q.indices(px), lay.hidden.indices(py))])
            np.testing.assert_array_equal(l0["input_norm"][py][px], w.layers[0].input_norm[lay.hidden.indices(py)])
    # the embedding row of a token is on the column that owns its vocabulary block
    for tok in (0, 50, 96):
        col, row = lay.embedding_source(tok)
        for py in range(p_y):
            np.testing.assert_array_equal(shards.embed[py][col][row], w.embed[tok, lay.hidden.indices(py)])


@pytest.mark.parametrize("p_y,p_x", [(1, 1), (2, 3), (3, 3)])
def test_prefill_shards_round_trip(tiny_model, p_y, p_x):
    d, _ = tiny_model("llama_mqa_bias")
    w = load_weights(d)
    lay = PrefillLayout(w.spec, p_y, p_x, seq_len=11)
    shards = lay.shard_model(w)
    for lw, s in zip(w.layers, shards):
        got = lay.gather_layer(s)
        for name, arr in got.items():
            if arr is not None:
                np.testing.assert_array_equal(arr, getattr(lw, name))
    # γ is X-dist over the hidden features in prefill (features are on x: the authors' defect #7)
    g = shards[0]["input_norm"]
    for px in range(p_x):
        idx = lay.hidden.indices(px)
        np.testing.assert_array_equal(g[0][px][:idx.size], w.layers[0].input_norm[idx])
        assert not g[0][px][idx.size:].any()
    assert lay.token_rows(p_y - 1)[-1] in (-1, 10)


def test_bad_meshes():
    from waferllm.model import ModelSpec

    spec = ModelSpec(name="t", hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4,
                     intermediate_size=8, vocab_size=10)
    with pytest.raises(InputError, match="mesh 0x2: both sides must be positive integers"):
        DecodeLayout(spec, 0, 2)
    with pytest.raises(InputError, match="prompt length must be a positive integer"):
        PrefillLayout(spec, 2, 2, 0)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_matrix_shard_is_each_pes_block_zero_padded(data):
    """Every PE's block of ``MatrixPlacement.shard``: the rows and columns its partitions give it, in slot
    order, zero-padded to their allocations (built here element by element), for both block positions."""
    p_y, p_x = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    axis = data.draw(st.sampled_from(["y", "x"]))
    ry, cx = (p_y, p_x) if axis == "y" else (p_x, p_y)

    def partition(parts: int) -> Partition:
        total = data.draw(st.integers(0, 12))
        if data.draw(st.booleans()):  # MeshGEMM's tiles: runs of tiles, the last blocks short or empty
            tile = data.draw(st.integers(1, 3))
            per = -(-total // (parts * tile)) + data.draw(st.integers(0, 1))
            part = Partition.tiled(total, parts, per, tile)
        else:  # balanced blocks, allocated at their largest or more
            part = Partition.balanced(total, parts)
            part = part.with_alloc(max(part.sizes) + data.draw(st.integers(0, 2)))
        order = np.array(data.draw(st.permutations(range(total))), dtype=np.int64)
        return Partition(total, part.sizes, part.alloc, order)

    rows, cols = partition(ry), partition(cx)
    place = MatrixPlacement("w", rows, cols, axis, p_y, p_x)
    w = np.arange(1, rows.total * cols.total + 1, dtype=np.float32).reshape(rows.total, cols.total)
    blocks = place.shard(w)
    r_start = np.concatenate([[0], np.cumsum(rows.sizes)])
    c_start = np.concatenate([[0], np.cumsum(cols.sizes)])
    for py in range(p_y):
        for px in range(p_x):
            ri, ci = (py, px) if axis == "y" else (px, py)
            want = np.zeros((rows.alloc[ri], cols.alloc[ci]), dtype=np.float32)
            for a in range(rows.sizes[ri]):
                for b in range(cols.sizes[ci]):
                    want[a, b] = w[rows.order[r_start[ri] + a], cols.order[c_start[ci] + b]]
            np.testing.assert_array_equal(blocks[py][px], want)
            assert blocks[py][px].flags.c_contiguous
