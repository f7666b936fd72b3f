"""One transformer layer in decode and prefill (method §3.4-3.6), and the head-aligned layout (§3.5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plmr import WSE2, meshgemm
from plmr.primitives import balanced_split
from plmr.transformer import (
    LayerDims, TreeChoice, decode_layer, head_layout, kv_bytes_per_token_per_pe, prefill_layer, round_up,
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


@pytest.mark.parametrize("p", [4, 16, 64])
def test_prefill_total_covers_its_meshgemms(p):
    L = 4096
    r = prefill_layer(WSE2, LLAMA3_8B, p, p, L)
    d = LLAMA3_8B
    gemms = [meshgemm(WSE2, p, p, L, d.hidden, d.q_dim), meshgemm(WSE2, p, p, L, d.hidden, d.kv_dim),
             meshgemm(WSE2, p, p, L, d.hidden, d.kv_dim), meshgemm(WSE2, p, p, L, L, d.q_dim),
             meshgemm(WSE2, p, p, L, d.q_dim, d.hidden), meshgemm(WSE2, p, p, L, d.hidden, d.ffn),
             meshgemm(WSE2, p, p, L, d.hidden, d.ffn), meshgemm(WSE2, p, p, L, d.ffn, d.hidden)]
    total_gemm = sum(g.total_cycles for g in gemms)
    assert r.parts["meshgemm"] == pytest.approx(total_gemm)
    assert r.total_cycles >= total_gemm
    assert r.total_cycles > total_gemm  # norms, scores, softmax, SiLU are not free
    assert r.parts["gemmt"] > 0 and r.parts["softmax"] > 0 and r.parts["rmsnorm"] > 0


@settings(max_examples=25, deadline=None)
@given(p_y=st.integers(1, 24), p_x=st.integers(1, 24), tokens=st.integers(1, 2048))
def test_prefill_positive_and_grows_with_tokens(p_y, p_x, tokens):
    assume(math.lcm(p_y, p_x) <= 4 * max(p_y, p_x))
    a = prefill_layer(WSE2, SMALL, p_y, p_x, tokens)
    b = prefill_layer(WSE2, SMALL, p_y, p_x, tokens + math.lcm(p_y, p_x) * 8)
    assert 0 < a.total_cycles < b.total_cycles
    assert a.total_cycles >= a.parts["meshgemm"]


def test_prefill_one_pe_has_no_communication():
    r = prefill_layer(WSE2, SMALL, 1, 1, 64)
    assert r.comm_cycles == 0


def test_layer_dims():
    assert LLAMA3_8B.q_dim == 4096 and LLAMA3_8B.kv_dim == 1024 and LLAMA3_8B.n_rep == 4
    E, F = 4096, 14336
    assert LLAMA3_8B.weight_elements() == E * (4096 + 2 * 1024) + 4096 * E + 3 * E * F
