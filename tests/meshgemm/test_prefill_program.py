"""The prefill layer program on the simulator: op by op against the block model (`PrefillDataflow`, itself
checked against the numpy reference and transformers), several layers and repeated launches, the switch
to the decode layout, and end to end (prefill on the simulated wafer, decode on the block model) against
transformers' ``generate``. Tiny random models on small meshes: non-square, P_x < n_kv, columns
without attention features, dimensions that divide no mesh side, one-row and one-column meshes."""

from __future__ import annotations

import numpy as np
import pytest

from meshgemm import prefill_program as PP
from meshgemm.block_dataflow import DecodeDataflow, PrefillDataflow, TreeChoice
from meshgemm.kv_cache import KVCacheFull, ShiftKVCache
from meshgemm.model_layout import DecodeLayout, PrefillLayout
from meshgemm.prefill_relayout import KVRelayout
from meshgemm.prefill_run import layers_per_stage, run_prefill, split_layers
from plmr.errors import InputError
from plmr.hardware import WSE2, WSE3
from simulator import Device
from waferllm.weights import load_weights

PROMPT = [3, 17, 42, 5, 88, 61, 29, 11, 70, 2, 64, 9, 13, 33, 1, 7, 8, 90, 44, 21]
ROOMY = WSE2.with_params(sram_bytes=1 << 20)  # op-by-op checks of one layer on meshes too small for its weights

# which buffer holds each traced value after the launch stopped at a phase (PP.PHASES index)
STOPS = {0: {"attn_norm": ("A1", "hidden")},
         1: {"q": ("QB", "q")},
         2: {"q_rope": ("QB", "q")},
         5: {"attn": ("QB", "q"), "attn_out": ("H", "hidden"), "h_attn": ("X", "hidden")},
         7: {"mlp_norm": ("A1", "hidden"), "gate": ("G", "ffn"), "up": ("U", "ffn")},
         10: {"act": ("G", "ffn"), "mlp_out": ("H", "hidden"), "h_out": ("X", "hidden")}}


def close(got, want, what, tol=2e-5):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), what
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def _oracle(w, mesh, prompt):
    lay = PrefillLayout(w.spec, *mesh, seq_len=len(prompt))
    pre = PrefillDataflow(w.spec, lay, lay.shard_model(w), w.np_dtype, TreeChoice(1))
    tr: list = []
    pre.run(w.embed[prompt], tr)
    return pre, tr


CASES = [
    ("llama_gqa", (3, 4), 11),  # Q = 12: every side hosts several virtual tiles; weights rotate back by copies
    ("llama_mha", (3, 2), 11),  # P_x < n_kv: a column holds two whole KV groups
    ("llama_mqa_bias", (3, 7), 11),  # one KV group over 5 of 7 columns (two without attention features);
    # q, k, v, o and MLP biases
    ("llama3_rope", (4, 4), 11),  # Llama 3 RoPE scaling, head_dim != E / n_h
    ("mistral_window", (2, 2), 20),  # window 5 over 10-token rows: the window's edge masks later blocks
    ("qwen2_bias_tied", (3, 5), 11),
    ("llama_gqa", (1, 5), 9), ("llama_gqa", (4, 1), 9),  # one row, one column
]


@pytest.mark.parametrize("name,mesh,L", CASES)
def test_prefill_layer_equals_the_block_model_op_by_op(tiny_model, name, mesh, L):
    d, _ = tiny_model(name)
    w = load_weights(d)
    prompt = PROMPT[:L]
    pre, tr = _oracle(w, mesh, prompt)
    pp = PP.build_prefill_program(w.spec, ROOMY, mesh, L, layers=(1,), debug_stops=True)
    dev = Device(pp.program, ROOMY)
    PP.load(dev, pp, w.spec, w)
    h_in = pre.gather(tr[0]["h_out"], "hidden")  # layer 1's input: a resident layer other than the first
    for stop, keys in STOPS.items():
        PP.write_hidden(dev, pp, h_in)
        dev.launch("prefill", nl=1, stop=stop)
        for key, (buf, feat) in keys.items():
            part = getattr(pp.layout, feat)
            got = part_gather(pp, dev, buf, part)
            close(got, pre.gather(tr[1][key], feat), f"{name} {mesh} {key}")
        if stop == 1:
            k, v = PP.read_kv(dev, pp, 0)
            close(k, pre.gather(tr[1]["k"], "kv"), "k")
            close(v, pre.gather(tr[1]["v"], "kv"), "v")
        if stop == 2:
            k, _ = PP.read_kv(dev, pp, 0)
            close(k, pre.gather(tr[1]["k_rope"], "kv"), "k_rope (the prefill KV cache)")


def part_gather(pp, dev, buf, part):
    return pp.layout.activation(part).gather(PP.read_blocks(dev, pp, buf, part.alloc[0]))


def test_resident_layers_and_repeated_launches(tiny_model):
    """Two layers in one launch equal the block model; a second prompt on the same device gives what a
    fresh device gives (the weights are back in their pre-skewed slots after every product)."""
    d, _ = tiny_model("qwen2_bias_tied")
    w = load_weights(d)
    mesh, L = (2, 3), 11  # Q = 6, 3 weight rows + the spare: the rotation leaves rows displaced
    pp = PP.build_prefill_program(w.spec, ROOMY, mesh, L)
    assert pp.layers == (0, 1)
    dev = Device(pp.program, ROOMY)
    PP.load(dev, pp, w.spec, w)
    for prompt in (PROMPT[:L], PROMPT[5:5 + L]):
        pre, tr = _oracle(w, mesh, prompt)
        PP.write_hidden(dev, pp, w.embed[prompt])
        dev.launch("prefill", nl=2)
        close(PP.read_hidden(dev, pp), pre.gather(tr[1]["h_out"], "hidden"), "hidden after two layers")
        for i in range(2):
            k, v = PP.read_kv(dev, pp, i)
            close(k, pre.gather(tr[i]["k_rope"], "kv"), f"K of layer {i}")
            close(v, pre.gather(tr[i]["v"], "kv"), f"V of layer {i}")


def test_fp16_tracks_the_fp16_block_model(tiny_model):
    d, _ = tiny_model("llama_gqa")
    w = load_weights(d, "fp16")
    mesh, L = (3, 4), 11
    pre, tr = _oracle(w, mesh, PROMPT[:L])
    pp = PP.build_prefill_program(w.spec, ROOMY, mesh, L, layers=(0,), dtype="fp16")
    dev = Device(pp.program, ROOMY)
    PP.load(dev, pp, w.spec, w)
    PP.write_hidden(dev, pp, w.embed[PROMPT[:L]])
    dev.launch("prefill", nl=1)
    got = PP.read_hidden(dev, pp)
    assert got.dtype == np.float16
    close(got, pre.gather(tr[0]["h_out"], "hidden"), "fp16 layer output", tol=4e-3)  # a few fp16 ulps


def test_timing_mode_runs_the_same_program(tiny_model):
    d, _ = tiny_model("mistral_window")
    w = load_weights(d)
    pp = PP.build_prefill_program(w.spec, ROOMY, (2, 2), 20, layers=(0,))
    cycles = []
    for mode in ("functional", "timing"):
        dev = Device(pp.program, ROOMY, mode=mode)
        if mode == "functional":
            PP.load(dev, pp, w.spec, w)
            PP.write_hidden(dev, pp, w.embed[PROMPT])
        cycles.append(dev.launch("prefill", nl=1).total_cycles)
    assert cycles[0] == cycles[1]


def test_the_layer_fits_both_targets_queues_and_colours(tiny_model):
    """Five receive colours (three MeshGEMM rings, two chain directions) and 13 colours per PE: within
    WSE-3's six usable input queues."""
    d, _ = tiny_model("llama_gqa")
    w = load_weights(d)
    for hw in (WSE2.with_params(sram_bytes=1 << 20), WSE3.with_params(sram_bytes=1 << 20)):
        pp = PP.build_prefill_program(w.spec, hw, (3, 3), 11, layers=(0,))
        assert pp.stats["colours"] == 13
        Device(pp.program, hw, mode="timing").launch("prefill", nl=1)


# ---- the switch to the decode layout ----------------------------------------------------------------------
@pytest.mark.parametrize("pmesh,dmesh,window", [((3, 4), (2, 3), None), ((2, 14), (3, 5), None),
                                                ((3, 2), (4, 3), 5), ((1, 1), (2, 2), None)])
def test_kv_relayout_equals_the_block_models_load_prefix(tiny_model, pmesh, dmesh, window):
    """The element map from prefill blocks to decode ring buffers puts every retained (token, feature)
    where `DecodeDataflow.load_prefix` (rows by the §8 rule, ring slot t mod capacity, decode head
    layout) puts it, for random K."""
    d, _ = tiny_model("llama_gqa")
    w = load_weights(d)
    L, cap = 11, 6
    pre = PrefillLayout(w.spec, *pmesh, seq_len=L)
    dec = DecodeLayout(w.spec, *dmesh)
    rng = np.random.default_rng(0)
    k = rng.normal(size=(L, w.spec.num_kv_heads * w.spec.head_dim)).astype(np.float32)
    rule = ShiftKVCache(dmesh[0], cap, window)
    got = KVRelayout.build(pre, dec, rule, L).apply(pre.activation(pre.kv).shard(k), np.float32)
    import dataclasses
    spec = dataclasses.replace(w.spec, sliding_window=window, sliding_window_layers=(0, 1) if window else ())
    want = DecodeDataflow(spec, dec, dec.shard_model(w), np.float32, cap)
    want.load_prefix([k, k], [k, k])
    for py in range(dmesh[0]):
        for px in range(dmesh[1]):
            np.testing.assert_array_equal(got[py][px], want.caches[0].k[py][px])


def test_a_prompt_longer_than_the_cache_fails_before_anything_moves(tiny_model):
    d, _ = tiny_model("llama_gqa")
    w = load_weights(d)
    pre = PrefillLayout(w.spec, 2, 2, seq_len=11)
    with pytest.raises(KVCacheFull, match="a prompt of 11 tokens needs 6 entries per PE"):
        KVRelayout.build(pre, DecodeLayout(w.spec, 2, 3), ShiftKVCache(2, 5), 11)


# ---- end to end --------------------------------------------------------------------------------------------
E2E = [("llama_gqa", (3, 4), (2, 3), [(0,), (1,)]), ("mistral_window", (3, 2), (4, 3), None),
       ("qwen2_bias_tied", (3, 5), (5, 3), [(0,), (1,)]), ("llama_mha", (4, 2), (3, 2), None)]


@pytest.mark.parametrize("name,pmesh,dmesh,stages", E2E)
def test_simulated_prefill_then_decode_equals_transformers(tiny_model, name, pmesh, dmesh, stages):
    """The prompt runs on the simulated wafer (two regions where ``stages`` says so), its cache and last
    hidden state are re-laid out to another decode grid, the block model decodes 16 greedy tokens: equal
    to transformers' ``generate``, logits within 1e-4."""
    import torch

    d, model = tiny_model(name)
    w = load_weights(d)
    prompt, n = PROMPT[:7], 16
    dl = DecodeLayout(w.spec, *dmesh)
    cap = -(-(len(prompt) + n) // dmesh[0])
    # ROOMY: regions this small hold a layer's weights but not also the ~26 KB of code a WSE-2 PE would need
    # (waferllm run's tests cover real WSE-2 regions)
    r = run_prefill(w.spec, prompt, pmesh, ROOMY, weights=w, stages=stages, decode=dl, capacity=cap)
    assert len(r.stages) == (len(stages) if stages else len(split_layers(2, layers_per_stage(w.spec, ROOMY, pmesh, 7))))
    dec = DecodeDataflow(w.spec, dl, dl.shard_model(w), np.float32, cap, TreeChoice(2), TreeChoice(1))
    for i, c in enumerate(dec.caches):
        c.rule.prefill(len(prompt))
        c.k, c.v = r.k_cache[i], r.v_cache[i]
    dec.length = len(prompt)
    logits, nxt = dec.head(r.hidden)
    tokens, rows = [nxt], [dl.logits_vec.gather(logits)]
    while len(tokens) < n:
        logits, nxt = dec.step(tokens[-1])
        tokens.append(nxt)
        rows.append(dl.logits_vec.gather(logits))
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    assert tokens == out.sequences[0, len(prompt):].tolist()
    assert np.abs(np.stack(rows) - torch.stack(out.logits)[:, 0].numpy()).max() < 1e-4
    phases = r.phases()
    assert phases["prefill_layers_cycles"] == sum(phases["per_layer_cycles"]) + _stamp_slack(r)
    assert phases["switch_cycles_modelled"] > 0


def _stamp_slack(r) -> int:
    """Cycles after the probes' last stamp (other PEs finishing later) per stage."""
    return sum(s.cycles - sum(s.layer_cycles) for s in r.stages)


def test_bad_requests_fail_with_the_numbers(tiny_model):
    d, _ = tiny_model("llama_gqa")
    w = load_weights(d)
    with pytest.raises(InputError, match=r"needs \d+ B per PE for one layer .* 45056 B usable"):
        run_prefill(w.spec, PROMPT, (1, 1), WSE2, weights=w)
    with pytest.raises(InputError, match=r"token id 97 is outside the vocabulary 0\.\.96"):
        run_prefill(w.spec, [1, 97], (3, 4), WSE2, weights=w)
    with pytest.raises(InputError, match="needs the model's weights"):
        run_prefill(w.spec, [1, 2], (3, 4), WSE2)
    with pytest.raises(InputError, match="needs the prompt's token ids"):
        run_prefill(w.spec, 12, (3, 4), WSE2, weights=w)
    with pytest.raises(InputError, match="cover layers 0..1 once each"):
        run_prefill(w.spec, [1, 2], (3, 4), WSE2, weights=w, stages=[(0,), (0,)])


# ---- the buffer table the planner charges (plmr.prefill_memory) --------------------------------------------
TABLE_CASES = [("llama_gqa", (3, 4), 11, 1, "fp32"), ("llama_mha", (3, 2), 11, 2, "fp16"),
               ("llama_mqa_bias", (3, 7), 11, 1, "fp16"), ("llama3_rope", (4, 4), 30, 2, "fp32"),
               ("mistral_window", (2, 2), 20, 2, "fp16"), ("qwen2_bias_tied", (3, 5), 11, 1, "fp16"),
               ("qwen2_bias_tied", (6, 9), 50, 1, "fp32"), ("llama_gqa", (2, 14), 40, 2, "fp16"),
               ("llama_gqa", (1, 5), 9, 1, "fp32"), ("llama_gqa", (4, 1), 9, 1, "fp16")]


def _table_bytes(table) -> int:
    from plmr.primitives import dtype_bytes
    return sum(dtype_bytes(dt) * n for dt, n in table.values())


@pytest.mark.parametrize("name,mesh,L,nl,dt", TABLE_CASES)
def test_the_programs_buffers_are_the_planners_table(tiny_model, name, mesh, L, nl, dt):
    """Every parameter set's buffer bytes (the simulator's own accounting, which the CSL lowering equals)
    are the table's for that column, the busiest PE's are ``prefill_data_bytes``, and the blocks the host
    packs (weights, γ, biases, RoPE tables: from the layout, not the table) fill exactly their buffers."""
    from plmr.prefill_memory import ATTENTION_PARAMS, PrefillModel, prefill_buffers, prefill_data_bytes
    d, _ = tiny_model(name)
    w = load_weights(d)
    pp = PP.build_prefill_program(w.spec, ROOMY, mesh, L, layers=tuple(range(nl)), dtype=dt)
    prog = pp.program
    prog.finalize()
    mod = PrefillModel.of(w.spec)
    blocks = [prog.blocks[int(b)] for b in set(prog.pe_blocks().tolist()) if b >= 0]
    for blk in blocks:
        col = {k: blk.values[k] for k in ATTENTION_PARAMS}
        table = prefill_buffers(mod, *mesh, L, nl, dt, "fp32", col)
        assert {b.name: b.length for b in blk.buffers} == {k: n for k, (_, n) in table.items()}
        assert blk.data_bytes == _table_bytes(table)
    assert max(b.data_bytes for b in blocks) == prefill_data_bytes(mod, *mesh, L, nl, dt)
    packed = {**PP.pack_constants(pp, w.spec), **PP.pack_weights(pp, w)}
    for (px, py) in [(0, 0), (mesh[1] - 1, mesh[0] - 1)]:
        blk = prog.blocks[int(prog.pe_blocks()[py * mesh[1] + px])]
        for name, fn in packed.items():
            assert len(fn(px, py)) == blk.by_name[name].length, name


@pytest.mark.parametrize("mesh,L", [((6, 5), 4096), ((16, 12), 4096), ((8, 8), 64)])
def test_the_table_holds_at_catalog_scale(mesh, L):
    """Qwen2.5-0.5B (biases, 2 KV groups over many columns): the busiest PE equals the table's."""
    from plmr.prefill_memory import PrefillModel, prefill_data_bytes
    from waferllm.catalog import resolve_model
    spec = resolve_model("qwen2.5-0.5b")
    big = WSE2.with_params(sram_bytes=1 << 30)
    prog = PP.build_prefill_program(spec, big, mesh, L, layers=(0,), dtype="fp16").program
    prog.finalize()
    got = max(prog.blocks[int(b)].data_bytes for b in set(prog.pe_blocks().tolist()) if b >= 0)
    assert got == prefill_data_bytes(PrefillModel.of(spec), *mesh, L, 1, "fp16")


@pytest.mark.parametrize("name,mesh,L,dt", [("llama_gqa", (3, 4), 11, "fp32"), ("qwen2_bias_tied", (2, 5), 30, "fp16")])
def test_one_more_resident_layer_adds_the_tables_layer_bytes(tiny_model, name, mesh, L, dt):
    """What `layers_per_stage` and the planner charge per layer: the busiest PE's growth from one to two
    resident layers."""
    from plmr.prefill_memory import PrefillModel, prefill_layer_bytes
    d, _ = tiny_model(name)
    w = load_weights(d)
    one, two = (max(b.sram_bytes for b in PP.build_prefill_program(w.spec, ROOMY, mesh, L, layers=ls,
                                                                   dtype=dt).program.blocks)
                for ls in ((0,), (0, 1)))
    assert two - one == prefill_layer_bytes(PrefillModel.of(w.spec), *mesh, L, dt)
