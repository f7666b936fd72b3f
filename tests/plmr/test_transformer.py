"""One transformer layer in decode and prefill (method §3.4-3.6), and the head-aligned layout (§3.5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plmr import WSE2
from plmr.primitives import balanced_split
from plmr.transformer import (
    PREFILL_PHASES, LayerDims, TreeChoice, decode_layer, head_layout, kv_bytes_per_token_per_pe, prefill_layer,
    prefill_phases, round_up,
)

LLAMA3_8B = LayerDims(hidden=4096, ffn=14336, num_heads=32, num_kv_heads=8, head_dim=128)
SMALL = LayerDims(hidden=256, ffn=688, num_heads=8, num_kv_heads=2, head_dim=32)


# ------------------------------------------------------------------------------------------------
# Head layout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p_x,q,kv,heads,width",
    [
        (1, 32 * 128, 8 * 128, 32, 1),  # one column holds every group
        (4, 8 * 128, 2 * 128, 8, 1),  # two whole KV groups per column
        (8, 4 * 128, 128, 4, 1),  # one whole group per column
        (360, 4 * 4, 4, 4, 45),  # 45 columns per group: ⌈64/45⌉ = 2 pairs = 4 features
    ],
)
def test_head_layout_llama3_8b(p_x, q, kv, heads, width):
    hl = head_layout(LLAMA3_8B, p_x)
    assert (hl.q_features, hl.kv_features, hl.q_heads, hl.group_width) == (q, kv, heads, width)


@pytest.mark.parametrize("p_x", [1, 4, 8, 360])
def test_head_layout_llama3_8b_covers_all_pairs(p_x):
    d, n_kv = LLAMA3_8B.head_dim, LLAMA3_8B.num_kv_heads
    hl = head_layout(LLAMA3_8B, p_x)
    if p_x >= n_kv:
        narrowest = min(balanced_split(p_x, n_kv))
        assert narrowest * (hl.kv_features // 2) >= d // 2
    else:
        assert p_x * hl.kv_features >= n_kv * d
    assert hl.q_features == hl.kv_features * LLAMA3_8B.n_rep


@settings(max_examples=150, deadline=None)
@given(n_kv=st.integers(1, 16), n_rep=st.integers(1, 8), half=st.integers(1, 128), p_x=st.integers(1, 800))
def test_head_layout_properties(n_kv, n_rep, half, p_x):
    d = 2 * half
    dims = LayerDims(hidden=n_kv * n_rep * d, ffn=64, num_heads=n_kv * n_rep, num_kv_heads=n_kv, head_dim=d)
    hl = head_layout(dims, p_x)
    assert hl.q_features == hl.kv_features * n_rep
    assert hl.kv_features % 2 == 0  # RoPE pairs stay together
    if p_x < n_kv:
        assert hl.group_width == 1
        assert hl.kv_features == math.ceil(n_kv / p_x) * d
        assert hl.q_heads == math.ceil(n_kv / p_x) * n_rep
    else:
        widths = balanced_split(p_x, n_kv)
        assert hl.group_width == max(widths)
        assert hl.q_heads == n_rep
        # the busiest column's share of pairs, over the narrowest group's columns, covers d/2 pairs
        assert min(widths) * (hl.kv_features // 2) >= half
        assert hl.kv_features <= d
        # and it is no more than needed: one pair fewer would not cover
        assert min(widths) * (hl.kv_features // 2 - 1) < half
    # every column together covers every feature of every KV head
    assert p_x * hl.kv_features >= n_kv * d or p_x > n_kv * half


def test_kv_bytes_per_token():
    assert kv_bytes_per_token_per_pe(LLAMA3_8B, 360) == 2 * 4 * 2
    assert kv_bytes_per_token_per_pe(LLAMA3_8B, 8) == 2 * 128 * 2


# ------------------------------------------------------------------------------------------------
# Decode
# ------------------------------------------------------------------------------------------------

DECODE_OPS = {"rmsnorm", "qkv", "rope", "kv_append", "scores", "softmax", "pv", "o_proj", "residual",
              "rmsnorm_post", "gate_up", "silu_mul", "down", "residual_mlp"}


def test_decode_layer_parts_are_the_programs_ops():
    """Parts carry the decode program's op labels (its timestamps), so the two compare op by op; the
    agreement itself is tests/plmr/test_decode_agreement.py, against the simulated program."""
    r = decode_layer(WSE2, SMALL, 4, 8, 100)
    assert set(r.parts) == DECODE_OPS
    assert all(v > 0 for v in r.parts.values()), r.parts
    assert r.total_cycles == pytest.approx(sum(r.parts.values()))
    assert r.total_cycles == pytest.approx(r.compute_cycles + r.comm_cycles)
    # colours as the program allocates them: K = 2 on Y (2 per level + multicast), the X tree's level 0
    # the KV groups plus their group multicast, and the KV shift's two parity colours
    assert r.colors_per_pe == 5 + 6 + 2


def test_decode_one_pe_has_no_allreduces():
    one = decode_layer(WSE2, SMALL, 1, 1, 50)
    assert one.colors_per_pe == 0
    assert one.comm_cycles == 0
    row, column = decode_layer(WSE2, SMALL, 1, 8, 50), decode_layer(WSE2, SMALL, 4, 1, 50)
    assert row.comm_cycles > 0 and column.comm_cycles > 0


@pytest.mark.parametrize("p_x", [1, 8])
def test_decode_single_row_has_no_kv_shift(p_x):
    """With P_y = 1 the whole cache is one row: no row passes an entry up (method §8), and the
    layer's colour count already has no shift colour; the shift's cycles must be 0 too."""
    r = decode_layer(WSE2, SMALL, 1, p_x, 50)
    assert r.colors_per_pe == (6 if p_x > 1 else 0)
    shifting = decode_layer(WSE2, SMALL, 2, p_x, 50)
    assert r.parts["kv_append"] < shifting.parts["kv_append"]  # the new entry's copies only


def test_decode_tree_choice_changes_colours_and_cost():
    base = decode_layer(WSE2, LLAMA3_8B, 64, 64, 1024)
    k1 = decode_layer(WSE2, LLAMA3_8B, 64, 64, 1024, tree_y=TreeChoice(k=1), tree_x=TreeChoice(k=1))
    assert k1.colors_per_pe == 3 + 6 + 2  # the X tree keeps its KV-group level 0 (scores per group)
    assert base.colors_per_pe == 5 + 6 + 2
    assert k1.total_cycles != base.total_cycles


def test_decode_grows_with_context():
    costs = [decode_layer(WSE2, LLAMA3_8B, 64, 64, ctx).total_cycles for ctx in (1, 1000, 4000, 16000)]
    assert costs == sorted(costs) and costs[0] < costs[-1]


@pytest.mark.parametrize("rounded", [False, True], ids=["hidden4096", "hidden_rounded_up"])
def test_decode_slower_on_a_bigger_grid_at_paper_dims(rounded):
    """LLaMA3-8B decode: communication dominates, so 660×660 is slower per layer than 420×420."""
    def dims(p):
        if not rounded:
            return LLAMA3_8B
        return LayerDims(hidden=round_up(4096, p), ffn=round_up(14336, p), num_heads=32, num_kv_heads=8,
                         head_dim=128)
    small = decode_layer(WSE2, dims(420), 420, 420, 4096)
    big = decode_layer(WSE2, dims(660), 660, 660, 4096)
    assert big.total_cycles > small.total_cycles
    assert big.comm_cycles > small.comm_cycles


def test_round_up():
    assert round_up(4096, 420) == 4200
    assert round_up(4096, 660) == 4620
    assert round_up(4200, 420) == 4200


# ------------------------------------------------------------------------------------------------
# Prefill
# ------------------------------------------------------------------------------------------------


CHAINS = ("qkv", "o_proj", "gate_up", "down")


@pytest.mark.parametrize("p", [4, 16, 64])
def test_prefill_layer_is_its_phases_in_the_programs_order(p):
    phases = prefill_phases(WSE2, LLAMA3_8B, p, p, 4096)
    assert tuple(phases) == PREFILL_PHASES  # the program's phase names (meshgemm.prefill_program.PHASES)
    r = prefill_layer(WSE2, LLAMA3_8B, p, p, 4096)
    assert r.total_cycles == pytest.approx(sum(c.total_cycles for c in phases.values()))
    assert all(c.total_cycles > 0 for c in phases.values())
    # the products dominate a LLaMA3-8B layer at 4096 tokens on small meshes
    assert sum(phases[c].total_cycles for c in CHAINS) > 0.5 * r.total_cycles


def test_one_pe_prefill_chain_by_hand():
    """1×1, 8 tokens, E = 4: Q|K|V on one PE is a fill, k·n column FMACs of 8 token lanes and a
    convert per product (fp16 operands, fp32 accumulator: FMAC 2 lanes a cycle, convert 1), after
    one copy of the activation; no skew, no shift, no restore."""
    dims = LayerDims(hidden=4, ffn=6, num_heads=2, num_kv_heads=1, head_dim=2)
    c_op = WSE2.op_issue_cycles
    load = c_op + math.ceil(8 * 4 / 4)  # mov fp16, 4 lanes
    fill = lambda n: c_op + math.ceil(8 * n / 2)  # noqa: E731  (mov fp32, 2 lanes)
    fmacs = lambda n: 4 * n * (c_op + math.ceil(8 / 2))  # noqa: E731
    conv = lambda n: c_op + 8 * n  # noqa: E731
    want = load + sum(fill(n) + fmacs(n) + conv(n) for n in (4, 2, 2))
    got = prefill_phases(WSE2, dims, 1, 1, 8)["qkv"]
    assert got.total_cycles == pytest.approx(want)
    assert got.comm_cycles == 0


@settings(max_examples=25, deadline=None)
@given(p_y=st.integers(1, 24), p_x=st.integers(1, 24), tokens=st.integers(1, 2048))
def test_prefill_positive_and_grows_with_tokens(p_y, p_x, tokens):
    assume(math.lcm(p_y, p_x) <= 4 * max(p_y, p_x))
    a = prefill_layer(WSE2, SMALL, p_y, p_x, tokens)
    b = prefill_layer(WSE2, SMALL, p_y, p_x, tokens + math.lcm(p_y, p_x) * 8)
    assert 0 < a.total_cycles < b.total_cycles


def test_prefill_one_pe_has_no_communication():
    r = prefill_layer(WSE2, SMALL, 1, 1, 64)
    assert r.comm_cycles == 0


def test_a_sliding_window_shorter_than_the_prompt_costs_less_attention():
    full = prefill_phases(WSE2, SMALL, 16, 16, 4096)["attention"].total_cycles
    windowed = prefill_phases(WSE2, SMALL, 16, 16, 4096, window=256)["attention"].total_cycles
    assert windowed < full


def test_layer_dims():
    assert LLAMA3_8B.q_dim == 4096 and LLAMA3_8B.kv_dim == 1024 and LLAMA3_8B.n_rep == 4
    E, F = 4096, 14336
    assert LLAMA3_8B.weight_elements() == E * (4096 + 2 * 1024) + 4096 * E + 3 * E * F


# ------------------------------------------------------------------------------------------------
# The prefill formula against the simulated layer program
# ------------------------------------------------------------------------------------------------

#: (hidden, ffn, heads, kv heads, head dim, sliding window, grid, prompt): two widths and grids; one with
#: a column holding two KV groups (P_x < n_kv) and a sliding window shorter than the prompt.
AGREEMENT = [
    (128, 352, 4, 2, 32, None, (6, 8), 96),
    (192, 512, 6, 6, 32, 64, (8, 4), 512),
]


@pytest.mark.parametrize("hidden,ffn,heads,kv,d,window,grid,L", AGREEMENT)
def test_prefill_phases_follow_the_simulated_layer(hidden, ffn, heads, kv, d, window, grid, L):
    """``prefill_phases`` against the timing-only simulation of the layer program (fp16, fp32 products),
    phase by phase at the probe PE that ends last: the layer within 3%, every phase above 2% of it within
    10%. Attention and the O projection are compared together: when columns carry unequal attention work
    the probe's column finishes attention early and waits inside the O projection's first steps."""
    import dataclasses

    from meshgemm import prefill_program as PP
    from meshgemm.prefill_run import _stage_run
    from simulator import Device
    from waferllm.catalog import load_catalog_model

    base = load_catalog_model("llama3-8b")
    model = dataclasses.replace(base, name="agreement", num_layers=1, hidden_size=hidden, intermediate_size=ffn,
                                num_heads=heads, num_kv_heads=kv, head_dim=d, sliding_window=window,
                                sliding_window_layers=(0,) if window else ())
    hw = WSE2.with_params(sram_bytes=1 << 24)  # the weights of a mesh this small do not fit a real PE
    pp = PP.build_prefill_program(model, hw, grid, L, layers=(0,), dtype="fp16")
    res = Device(pp.program, hw, mode="timing").launch("prefill", nl=1)
    sim = dict(_stage_run(pp, res).phase_cycles)
    dims = LayerDims(hidden, ffn, heads, kv, d)
    pred = {k: v.total_cycles for k, v in prefill_phases(WSE2, dims, grid[0], grid[1], L, "fp16",
                                                         window=window).items()}
    assert sum(pred.values()) == pytest.approx(res.total_cycles, rel=0.03)
    for table in (sim, pred):
        table["attention"] += table.pop("o_proj")
    for name, cycles in sim.items():
        if cycles > 0.02 * res.total_cycles:
            assert pred[name] == pytest.approx(cycles, rel=0.10), name


def test_prefill_layer_floor_never_exceeds_the_layer():
    """The full method's prefill floor (``prefill_layer_floor``: the phases with MeshGEMM chains at
    their FMACs) against ``prefill_layer`` on 300 random grids, for GQA, MHA and MQA layers, whole
    prompts and chunks attending to more keys, with and without a sliding window."""
    import random

    from plmr.transformer import LayerDims, prefill_layer, prefill_layer_floor

    rng = random.Random(41)
    layers = [LayerDims(4096, 14336, 32, 8, 128), LayerDims(512, 1408, 8, 8, 64), LayerDims(896, 4864, 14, 1, 64, True)]
    for _ in range(300):
        dims = rng.choice(layers)
        p_y, p_x = rng.randint(1, 200), rng.randint(1, 200)
        if math.lcm(p_y, p_x) > 3000:
            continue
        tokens = rng.choice([64, 512, 4096])
        keys = rng.choice([None, tokens * rng.randint(1, 4)])
        window = rng.choice([None, 256])
        exact = prefill_layer(WSE2, dims, p_y, p_x, tokens, dtype="fp16", keys=keys, window=window).total_cycles
        floor = prefill_layer_floor(WSE2, dims, p_y, p_x, tokens, "fp16", keys, window)
        assert 0 < floor <= exact, (dims, p_y, p_x, tokens, keys, window)
