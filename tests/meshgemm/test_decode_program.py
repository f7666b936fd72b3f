"""meshgemm.decode_program on the simulator, op by op against the block model (meshgemm.block_dataflow):
every intermediate of every layer on every PE (γ ⊙ input, q, k, v before and after RoPE, the KV cache
after the append and shift, exp(s − m) and the attention output, O projection, residuals, gate, up, SiLU⊙up,
down), the next token and its embedding, over several steps on two stages (one layer each, a hand-off
going south). Also: the per-PE size rules equal the layout's on every column and row; the shift-based
cache with a sliding window wraps its ring and drops the oldest entries as the rule says; every PE receives
on at most the target's input queues; parameter sets and bodies stay bounded as the grid grows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from meshgemm.block_dataflow import DecodeDataflow
from meshgemm.decode_program import DecodeConfig, DecodeStage, Sizes, build_decode_program, snake_origins
from meshgemm.decode_runtime import DecodeRuntime
from meshgemm.kv_cache import KVCacheFull
from meshgemm.model_layout import DecodeLayout
from plmr.hardware import WSE2
from simulator.resources import block_colours
from waferllm.reference import ReferenceModel
from waferllm.weights import load_weights

PROMPT = [3, 17, 42, 5, 88, 61, 29]


def close(got, want, what, rel=2e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def _setup(d, grid, per_stage_layers, capacity, dtype="fp32", prompt=PROMPT, wide=8, chunk=None):
    w = load_weights(d, dtype)
    spec = w.spec
    ref = ReferenceModel(w)
    traces: list = []
    _, cache = ref.prefill(prompt, traces)
    L = spec.num_layers
    bounds, a = [], 0
    for n in per_stage_layers:
        bounds.append((a, a + n - 1))
        a += n
    hw = WSE2.with_params(mesh_width=grid[1] * wide)
    orig = snake_origins(hw, grid, len(bounds))
    stages = tuple(DecodeStage(i, f, l, orig[i], embedding=i == 0, lm_head=i == len(bounds) - 1)
                   for i, (f, l) in enumerate(bounds))
    more = {"score_chunk": chunk} if chunk else {}
    prog = build_decode_program(DecodeConfig(spec, grid, stages, capacity, dtype, **more), hw)
    rt = DecodeRuntime(prog)
    rt.load_weights(w)
    K = [c.reshape(c.shape[0], -1) for c in cache.k]
    V = [c.reshape(c.shape[0], -1) for c in cache.v]
    hidden = traces[-2]["h_out"][-1]
    rt.load_prefix(K, V, hidden)
    lay = prog.layout
    orc = DecodeDataflow(spec, lay, lay.shard_model(w), np.dtype(w.np_dtype), capacity, **more)
    orc.load_prefix(K, V)
    assert L == sum(per_stage_layers)
    return prog, rt, orc, lay.hidden_vec.shard(hidden)


def _device_cache(rt, stage, li, px, py):
    st, cap = rt.prog.strides, rt.cfg.capacity
    kvx = rt.lay.heads.kv.sizes[px]
    kc = rt.read(stage, px, py, "kc")[li * st["kc"]: li * st["kc"] + kvx * cap].reshape(kvx, cap).T
    vc = rt.read(stage, px, py, "vc")[li * st["vc"]: li * st["vc"] + cap * kvx].reshape(cap, kvx)
    return kc, vc


def _tokens_and_logits_equal_the_block_models(prog, rt, orc, hidden, steps: int) -> None:
    """The device's first token and ``steps`` more equal the block model's, logits within 1e-5."""
    r = rt.head()
    _, tok = orc.head(hidden)
    assert r.token == tok
    for _ in range(steps):
        logits, nxt = orc.step(tok)
        r = rt.step()
        assert r.token == nxt
        close(r.logits, prog.layout.logits_vec.gather(logits), "logits", 1e-5)
        tok = nxt


def test_every_op_equals_the_block_model(tiny_model):
    """Two stages of one layer each (the hand-off goes south), four decode steps."""
    d, _ = tiny_model("llama_gqa")
    grid = (3, 4)
    prog, rt, orc, hidden = _setup(d, grid, (1, 1), capacity=5, wide=1)
    assert prog.handoffs[0]["move"] == "south"
    lay, hl = prog.layout, prog.layout.heads
    r = rt.head()
    _, tok = orc.head(hidden)
    assert r.token == tok
    for _ in range(4):
        traces: list = []
        logits, nxt = orc.step(tok, traces)
        r = rt.step()
        assert r.token == nxt
        close(r.logits, lay.logits_vec.gather(logits), "logits", 1e-5)
        for s in prog.config.stages:
            t = traces[1 + s.first]
            for py in range(grid[0]):
                for px in range(grid[1]):
                    ey, qx, kvx, fx = lay.hidden.sizes[py], hl.q.sizes[px], hl.kv.sizes[px], lay.ffn.sizes[px]

                    def dev(name, a=0, n=None):
                        v = rt.read(s.index, px, py, name)
                        return v[a:a + n] if n is not None else v

                    w = f"layer {s.first} PE ({px}, {py})"
                    close(dev("a", 0, ey), t["attn_gx"][py][px], w + " attn_gx")
                    close(dev("qkv", 0, qx), t["q"][py][px], w + " q")
                    close(dev("qkv", qx, kvx), t["k"][py][px], w + " k")
                    close(dev("qkv", qx + kvx, kvx), t["v"][py][px], w + " v")
                    close(dev("qkr", 0, qx), t["q_rope"][py][px], w + " q_rope")
                    close(dev("qkr", qx, kvx), t["k_rope"][py][px], w + " k_rope")
                    kc, vc = _device_cache(rt, s.index, 0, px, py)
                    close(kc, orc.caches[s.first].k[py][px], w + " K cache")
                    close(vc, orc.caches[s.first].v[py][px], w + " V cache")
                    p = t["exp_scores"][py][px]
                    close(dev("sc", 0, p.size).reshape(p.shape), p, w + " exp_scores")
                    close(dev("o", 0, qx), t["attn"][py][px], w + " attn")
                    close(dev("ho", 0, ey), t["attn_out"][py][px], w + " attn_out")
                    close(dev("h1", 0, ey), t["h_attn"][py][px], w + " h_attn")
                    close(dev("a2", 0, ey), t["mlp_gx"][py][px], w + " mlp_gx")
                    close(dev("gu", 0, fx), t["gate"][py][px], w + " gate")
                    close(dev("gu", fx, fx), t["up"][py][px], w + " up")
                    close(dev("z", 0, fx), t["act"][py][px], w + " act")
                    close(dev("hm", 0, ey), t["mlp_out"][py][px], w + " mlp_out")
        # stage 0 ends with the next token's embedding (its row, from the owning column, on every PE)
        emb = orc.embed(nxt)
        for py in range(grid[0]):
            for px in range(grid[1]):
                close(rt.read(0, px, py, "x")[:lay.hidden.sizes[py]], emb[py][px], f"embedding PE ({px}, {py})", 0)
        tok = nxt


@pytest.mark.parametrize("name,dtype", [("llama_gqa", "fp32"), ("llama_mqa_bias", "fp16")])
def test_attention_in_chunks_equals_the_block_model(tiny_model, name, dtype):
    """Rows of 3-4 cached entries walked in chunks of 2 (a ring run wrapping inside a chunk, rows of two
    chunks beside rows of one, so the maxima are reconciled along Y): the last chunk's exp(s − m), the
    attention output and the logits equal the block model's, which equals the reference in chunks too
    (tests/meshgemm/test_block_dataflow.py)."""
    d, _ = tiny_model(name)
    grid = (3, 4)
    prog, rt, orc, hidden = _setup(d, grid, (2,), capacity=5, dtype=dtype, chunk=2)
    lay, hl = prog.layout, prog.layout.heads
    r = rt.head()
    _, tok = orc.head(hidden)
    assert r.token == tok
    # fp16: a few ulps apart (summation order; in one chunk the program is 0.016 from the block model at a
    # scale of 6 in the logits, 0.017 at 4 in the attention output, 0.013 at 1 in exp(s − m), on this model)
    rel = 2e-5 if dtype == "fp32" else 2e-2
    for _ in range(3):
        traces: list = []
        logits, nxt = orc.step(tok, traces)
        r = rt.step()
        assert r.token == nxt
        close(r.logits, lay.logits_vec.gather(logits), "logits", rel)
        rows = [len(orc.cached_slots(1, py, orc.length)) for py in range(grid[0])]
        assert max(rows) > 2 and min(rows) >= 1, rows
        t = traces[2]  # the stage's second layer (its buffers hold the last layer's values)
        for py in range(grid[0]):
            for px in range(grid[1]):
                qx = hl.q.sizes[px]
                p = t["exp_scores"][py][px]
                close(rt.read(0, px, py, "sc")[:p.size].reshape(p.shape), p, f"PE ({px}, {py}) exp_scores", rel)
                close(rt.read(0, px, py, "o")[:qx], t["attn"][py][px], f"PE ({px}, {py}) attn", rel)
        tok = nxt


def test_two_round_south_hand_off_lands_one_round_per_row(tiny_model):
    """A region taller than wide (5×3): the hand-off south takes two rounds, round k landing on row
    P_y − 1 − k of the next region (no PE lands two rounds); tokens and logits equal the block model's."""
    d, _ = tiny_model("llama_gqa")
    grid = (5, 3)
    prog, rt, orc, hidden = _setup(d, grid, (1, 1), capacity=4, wide=1)
    h = prog.handoffs[0]
    assert h["move"] == "south" and sorted(set(h["send"].values())) == [0, 1]
    y0 = prog.config.stages[1].origin[0]
    assert {y - y0 for (_, y) in h["land"]} == {4, 3} and all(v in (1, 2) for v in h["land"].values())
    _tokens_and_logits_equal_the_block_models(prog, rt, orc, hidden, steps=3)


def test_west_hand_off_lands_on_the_first_column_of_the_last_x_group(tiny_model):
    """Four stages in a snake two regions wide (east, south, west; the middle two hold no layer): the west
    hand-off passes b's last column and lands on the first column of its last X level-0 group;
    tokens and logits equal the block model's."""
    d, _ = tiny_model("llama_gqa")
    grid = (3, 4)
    prog, rt, orc, hidden = _setup(d, grid, (1, 0, 0, 1), capacity=4, wide=2)
    assert [h["move"] for h in prog.handoffs] == ["east", "south", "west"]
    west = prog.handoffs[2]
    x0 = prog.config.stages[3].origin[1]
    assert {x - x0 for (x, _) in west["land"]} == {grid[1] - prog.tree_x.group_sizes[-1]}
    _tokens_and_logits_equal_the_block_models(prog, rt, orc, hidden, steps=3)


def test_sliding_window_cache_wraps_and_drops_as_the_rule_says(tiny_model):
    """Mistral's window of 5 on 3 rows with 2 entries per PE: the ring wraps and the top row drops its
    oldest entry once the window is full; the device cache equals the rule's after every step."""
    d, _ = tiny_model("mistral_window")
    prog, rt, orc, hidden = _setup(d, (3, 4), (2,), capacity=2)
    r = rt.head()
    _, tok = orc.head(hidden)
    for _ in range(6):
        _, nxt = orc.step(tok)
        r = rt.step()
        assert r.token == nxt
        for li in range(2):
            for py in range(3):
                for px in range(4):
                    kc, vc = _device_cache(rt, 0, li, px, py)
                    close(kc, orc.caches[li].k[py][px], f"K layer {li} PE ({px}, {py})")
                    close(vc, orc.caches[li].v[py][px], f"V layer {li} PE ({px}, {py})")
        tok = nxt


def test_a_full_cache_raises_before_the_launch(tiny_model):
    d, _ = tiny_model("llama_mha")
    prog, rt, orc, _ = _setup(d, (3, 3), (2,), capacity=3)  # 9 entries, 7 from the prompt
    rt.head()
    rt.step()
    rt.step()
    cycles = rt.dev.cycle
    with pytest.raises(KVCacheFull, match="KV cache full"):
        rt.step()
    assert rt.length == 9 and rt.dev.cycle == cycles


@pytest.mark.parametrize("name", ["llama_gqa", "llama_mha", "llama_mqa_bias", "llama3_rope", "qwen2_bias_tied"])
@pytest.mark.parametrize("grid", [(1, 1), (3, 2), (2, 5), (4, 7), (5, 13), (3, 40)])
def test_size_rules_equal_the_layout(tiny_model, name, grid):
    """Including P_x < n_kv (several KV groups per column) and P_x > n_kv·d/2 (columns without features)."""
    from waferllm.weights import model_spec_fast
    d, _ = tiny_model(name)
    lay = DecodeLayout(model_spec_fast(d), *grid)
    Sizes.of(lay).check(lay)


def _llama8b_one_layer():
    from waferllm.catalog import load_catalog_model
    return dataclasses.replace(load_catalog_model("llama3-8b"), num_layers=2, sliding_window_layers=())


@pytest.mark.parametrize("spec", [WSE2])
def test_every_pe_receives_within_the_input_queues(spec):
    """Two stages of LLaMA3-8B's shapes stacked vertically (a hand-off south, the token's return) on a
    non-square grid: no PE receives on more colours than the target has input queues, and the program
    lowers (its bodies' queue bindings fit)."""
    from simulator.lower import lower_program
    model = _llama8b_one_layer()
    hw = spec.with_params(mesh_width=40)
    grid = (24, 40)
    orig = snake_origins(hw, grid, 2)
    stages = (DecodeStage(0, 0, 0, orig[0], embedding=True), DecodeStage(1, 1, 1, orig[1], lm_head=True))
    big = hw.with_params(sram_bytes=1 << 22)  # the vocabulary does not fit 24x40 PEs; resources are the point
    prog = build_decode_program(DecodeConfig(model, grid, stages, 8, "fp16"), big)
    p = prog.program
    p.finalize()
    used = set(int(b) for b in p.pe_blocks().tolist() if b >= 0)
    worst = max(len(block_colours(p.blocks[b])[0]) for b in used)
    assert worst <= len(spec.usable_input_queues)
    lower_program(p, big, functional=False)  # raises if a body's queue binding does not fit


def test_parameter_sets_and_bodies_stay_bounded_as_the_grid_grows():
    model = _llama8b_one_layer()
    big = WSE2.with_params(sram_bytes=1 << 23)  # LLaMA3-8B layers do not fit 16x16 PEs; the count is the point
    sets = {}
    for n in (16, 32, 64):
        cfg = DecodeConfig(model, (n, n), (DecodeStage(0, 0, 1, (0, 0)),), 8, "fp16", layers_only=True)
        st = build_decode_program(cfg, big).program.stats()
        assert st["code_bodies"] <= 8
        sets[n] = st["param_sets"]
    assert sets[64] <= 2 * sets[16] + 40, sets


def test_only_the_lm_head_stage_holds_buffers_of_the_vocabulary():
    """Three stages of LLaMA3-8B's shapes, the vocabulary 128,256 or 1,024 tokens: a stage with neither the
    embedding nor the LM head places the same bytes per PE either way (no working vector is sized for the
    logits), the LM head's stage more with the larger vocabulary (its logits and blocks)."""
    model = dataclasses.replace(_llama8b_one_layer(), num_layers=3)
    big = WSE2.with_params(sram_bytes=1 << 26, mesh_width=24)  # the LM head on 8x8 PEs: 16 MB; bytes are the point

    def stage_bytes(vocab: int) -> list[int]:
        m = dataclasses.replace(model, vocab_size=vocab)
        stages = tuple(DecodeStage(i, i, i, (0, 8 * i), embedding=i == 0, lm_head=i == 2) for i in range(3))
        prog = build_decode_program(DecodeConfig(m, (8, 8), stages, 8, "fp16"), big).program
        prog.finalize()
        of_pe = prog.pe_blocks().reshape(prog.height, prog.width)
        return [max(prog.blocks[int(b)].data_bytes for b in np.unique(of_pe[:8, 8 * i: 8 * i + 8])) for i in range(3)]

    large, small = stage_bytes(128_256), stage_bytes(1_024)
    assert large[1] == small[1], (large, small)
    assert large[2] - small[2] > 6 * (128_256 - 1_024) // 8, (large, small)  # the fp32 and fp16 logits alone


@pytest.mark.parametrize("grid,mesh_width,layers", [
    ((3, 4), 7, (1, 1, 0, 0)),  # strips of 3 columns: east, south (one round), west into a strip
    ((5, 3), 5, (1, 0, 1, 0)),  # strips of 2 columns: the south hand-off takes ⌈5/2⌉ = 3 rounds
])
def test_stages_of_different_widths_equal_the_block_model(tiny_model, grid, mesh_width, layers):
    """A packed placement (waferllm.placement.packed_regions): full regions and the strips of W mod P_x columns
    beside them, in serpentine order, the LM head on a strip. Each stage runs the body of its own width; the
    tokens and logits of four decode steps equal the block model's (one layout: they do not depend on it)."""
    from waferllm.placement import packed_regions

    d, _ = tiny_model("llama_gqa")
    w = load_weights(d, "fp32")
    spec = w.spec
    ref = ReferenceModel(w)
    traces: list = []
    _, cache = ref.prefill(PROMPT, traces)
    hw = WSE2.with_params(mesh_width=mesh_width, mesh_height=2 * grid[0])
    regions = packed_regions(hw, grid)
    assert [r[2] for r in regions] == [grid[1], mesh_width % grid[1]] * 2
    stages, a = [], 0
    for i, n in enumerate(layers):
        y, x, cols = regions[i]
        stages.append(DecodeStage(i, a, a + n - 1, (y, x), embedding=i == 0, lm_head=i == len(layers) - 1,
                                  width=cols))
        a += n
    assert a == spec.num_layers
    capacity = 5
    prog = build_decode_program(DecodeConfig(spec, grid, tuple(stages), capacity, "fp32"), hw)
    assert [h["move"] for h in prog.handoffs] == ["east", "south", "west"]
    south = prog.handoffs[1]
    assert south["overlap"][1] == mesh_width % grid[1]
    assert prog.colours.rounds == -(-grid[0] // south["overlap"][1])
    for s in stages:  # each stage's PEs run its own width's body, laid out at its own width
        assert prog.layout_of(s.index).p_x == s.columns(grid)
    rt = DecodeRuntime(prog)
    rt.load_weights(w)
    K = [c.reshape(c.shape[0], -1) for c in cache.k]
    V = [c.reshape(c.shape[0], -1) for c in cache.v]
    hidden = traces[-2]["h_out"][-1]
    rt.load_prefix(K, V, hidden)
    lay = DecodeLayout(spec, *grid)
    orc = DecodeDataflow(spec, lay, lay.shard_model(w), np.dtype(w.np_dtype), capacity)
    orc.load_prefix(K, V)
    r = rt.head()
    _, tok = orc.head(lay.hidden_vec.shard(hidden))
    assert r.token == tok
    for _ in range(4):
        logits, nxt = orc.step(tok)
        r = rt.step()
        assert r.token == nxt
        close(r.logits, lay.logits_vec.gather(logits), "logits", 1e-5)
        tok = nxt


# (model, grid, layers per stage, capacity, dtype, packed strips: mesh width or None): MHA, GQA, MQA with
# biases, tied embeddings, Llama 3 rope, a sliding window; sizes not divisible by the grid, P_x < n_kv and
# P_x > n_kv·d/2; one stage (embedding and LM head on one region), first/middle/last stages, a stage
# holding only the LM head, and a packed placement whose strips are narrower
TABLE_CASES = [
    ("llama_gqa", (3, 4), (4,), 5, "fp32", None),
    ("llama_mha", (2, 5), (1, 2, 1), 7, "fp16", None),
    ("llama_mqa_bias", (4, 7), (2, 2), 3, "fp16", None),
    ("qwen2_bias_tied", (3, 2), (2, 2), 6, "fp32", None),
    ("qwen2_bias_tied", (5, 3), (4,), 4, "fp16", None),
    ("llama3_rope", (2, 40), (3, 1, 0), 2, "fp16", None),
    ("mistral_window", (3, 1), (2, 2), 5, "fp32", None),
    ("llama_gqa", (3, 4), (1, 1, 2, 0), 5, "fp16", 7),
]


@pytest.mark.parametrize("name,grid,layers,capacity,dt,mesh_width", TABLE_CASES)
def test_the_programs_buffers_are_the_planners_table(tiny_model, name, grid, layers, capacity, dt, mesh_width):
    """Every parameter set's buffers (the simulator's own accounting of the body's lengths at its
    parameter values, which the CSL lowering equals) are ``plmr.decode_memory``'s for its stage, its bytes
    are ``decode_stage_bytes``; and the table's per-layer blocks are the layout's largest (from
    ``DecodeLayout``'s partitions, not the table): the busiest PE's weights, K|V and embedding fill
    exactly their buffers."""
    from plmr.decode_memory import DecodeModel, buffer_length, decode_buffers, decode_sizes, decode_stage_bytes
    from waferllm.placement import packed_regions
    from waferllm.weights import model_spec_fast

    d, _ = tiny_model(name)
    base = model_spec_fast(d)
    L = sum(layers)
    win = tuple(range(L)) if base.sliding_window_layers else ()
    spec = dataclasses.replace(base, num_layers=L, sliding_window_layers=win)
    if mesh_width is None:
        hw = WSE2.with_params(mesh_width=grid[1] * len(layers), mesh_height=grid[0])
        places = [(y, x, grid[1]) for y, x in snake_origins(hw, grid, len(layers))]
    else:
        hw = WSE2.with_params(mesh_width=mesh_width, mesh_height=grid[0] * 2)
        places = packed_regions(hw, grid)[:len(layers)]
    stages, a = [], 0
    for i, n in enumerate(layers):
        y, x, w = places[i]
        stages.append(DecodeStage(i, a, a + n - 1, (y, x), embedding=i == 0, lm_head=i == len(layers) - 1,
                                  width=w if mesh_width else 0))
        a += n
    prog = build_decode_program(DecodeConfig(spec, grid, tuple(stages), capacity, dt), hw.with_params(sram_bytes=1 << 24))
    p = prog.program
    p.finalize()
    mod = DecodeModel.of(spec)
    of_pe = p.pe_blocks().reshape(p.height, p.width)
    for s, (y, x, w) in zip(stages, places):
        first, last = s.embedding, s.lm_head
        table = decode_buffers(mod, decode_sizes(mod, grid[0], w), capacity, dt)
        want = {k: buffer_length(kind, size, s.num_layers, first, last, mod.tied) for k, (_, kind, size) in table.items()}
        blocks = [p.blocks[int(b)] for b in np.unique(of_pe[y:y + grid[0], x:x + w])]
        for blk in blocks:
            assert {b.name: b.length for b in blk.buffers} == want
            assert blk.data_bytes == decode_stage_bytes(mod, grid[0], w, capacity, s.num_layers, first, last, dt)
        # the layout's largest blocks (independent of the table): each layer's stride is the busiest PE's
        lay = DecodeLayout(spec, grid[0], w)
        hl = lay.heads
        rows, cols = range(grid[0]), range(w)
        ey = max(lay.hidden.sizes)
        biggest = {"wqkv": max(lay.hidden.sizes[r] * (hl.q.sizes[c] + 2 * hl.kv.sizes[c]) for r in rows for c in cols),
                   "wo": max(hl.q.sizes[c] * lay.hidden.sizes[r] for r in rows for c in cols),
                   "wgu": max(2 * lay.hidden.sizes[r] * lay.ffn.sizes[c] for r in rows for c in cols),
                   "wd": max(lay.ffn.sizes[c] * lay.hidden.sizes[r] for r in rows for c in cols),
                   "gin": ey, "kc": max(hl.kv.sizes) * capacity}
        for k, n in biggest.items():
            assert want[k] == max(s.num_layers * n, 1), k
        if first or (last and mod.tied):
            assert want["emb"] == max(lay.vocab.sizes) * ey
        if last:
            assert want["lg32"] == want["lg"] == max(lay.vocab.sizes)
