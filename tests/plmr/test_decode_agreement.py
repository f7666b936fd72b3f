"""The decode layer's cost model against the program it describes: ``plmr.collectives.line_tree_allreduce``
against the decode program's line trees (``meshgemm.decode_collectives.LineTree``) simulated alone, and
``plmr.transformer.decode_steps`` against one layer of ``meshgemm.decode_program`` simulated timing-only,
op by op on the critical path (each op's latest end over the busiest column's rows), on grids of
every score mode (per KV group, the whole row, none), both shapes of head chunk and every kind of
KV append (rows shifting, none shifting, fewer tokens than rows). The simulator is the independent derivation: it runs the program's DSD ops."""

from __future__ import annotations

import dataclasses

import pytest

from meshgemm.decode_collectives import LineTree
from meshgemm.decode_program import OP_LABELS, DecodeConfig, DecodeStage, build_decode_program
from meshgemm.decode_runtime import DecodeRuntime, critical_path_ops
from plmr.collectives import line_tree_allreduce
from plmr.decode_memory import SCORE_CHUNK
from plmr.hardware import WSE2
from plmr.transformer import TreeChoice, decode_layer, score_mode
from simulator import Body, MeshProgram, simulate
from simulator.expr import X
from simulator.instructions import Ref
from waferllm.catalog import load_catalog_model
from waferllm.planner import model_dims


def _simulate_tree(n, groups, combine, width, group_only=False):
    prog = MeshProgram(n, 1, WSE2)
    tree = LineTree("x", n, groups, tuple(range(3, 9)), "t", group_bcast=group_only)
    body = Body("coll")
    for b in ("a", "s", "s2"):
        body.buffer(b, "fp32", width)
    tree.declare(body)
    a, s, s2 = Ref("a", 0, width), Ref("s", 0, width), Ref("s2", 0, width)
    body.function("main", tree.group_allreduce(a, s) if group_only else tree.allreduce(a, s, s2, combine))
    prog.place(body, range(n), range(1), params=tree.values(X))
    tree.routes(prog, range(n), range(1), X)
    return simulate(prog, WSE2).total_cycles


@pytest.mark.parametrize("n,groups", [(20, 1), (20, 4), (21, 4), (40, 6), (97, 10), (241, 16)])
@pytest.mark.parametrize("combine,width", [("sum", 1), ("sum", 40), ("max", 1), ("max", 4), ("max", 40)])
def test_line_tree_allreduce_is_the_simulated_line_tree(n, groups, combine, width):
    """One-sided level-0 groups of a balanced split, level 1 into the middle root taking its sides one
    after the other, then the multicast; sums fused, maxima store and forward. Exact on these lines
    (a root whose two sides tie can be a few cycles off: the second stream refills the queue)."""
    k, g = (1, ()) if groups == 1 else (2, (groups,))
    want = _simulate_tree(n, groups, combine, width)
    got = line_tree_allreduce(WSE2, n, width, k, g, "fp32", combine).total_cycles
    assert got == want


@pytest.mark.parametrize("n,groups", [(20, 4), (21, 4), (420, 8), (533, 8)])
def test_group_allreduce_is_level_zero_and_a_group_multicast(n, groups):
    want = _simulate_tree(n, groups, "sum", 10, group_only=True)
    got = line_tree_allreduce(WSE2, n, 10, 2, (groups,), "fp32", group_only=True).total_cycles
    assert got == want


def test_max_allreduce_costs_more_per_stage_than_the_fused_sum():
    """Store and forward pays two issues and the whole vector per stage; the fused sum one wavelet and
    β. At fixed parameters (c_op 8, β 1: issue-heavy stages), so the claim does not move with a refit."""
    spec = WSE2.with_params(op_issue_cycles=8.0, relay_cycles=1.0)
    s = line_tree_allreduce(spec, 100, 4, 2, (10,), "fp32", "sum").total_cycles
    m = line_tree_allreduce(spec, 100, 4, 2, (10,), "fp32", "max").total_cycles
    assert m > 1.5 * s


SMALL = dict(hidden_size=512, intermediate_size=1408, num_heads=8, num_kv_heads=2, head_dim=64, vocab_size=256,
             num_layers=1, sliding_window_layers=())


def _layer(model, grid, context, chunk=SCORE_CHUNK):
    """Simulated cycles of one decode layer (timing-only, KV holding ``context`` tokens, attention in
    chunks of ``chunk`` entries), per op on the critical path of the busiest column (an op's latest
    end over the rows minus the previous op's: the rows that shift the KV cache and the rows that
    hold one more entry are the busiest for different ops), and the plmr layer for the program's
    own trees."""
    cap = -(-context // grid[0])
    cfg = DecodeConfig(model, grid, (DecodeStage(0, 0, 0, (0, 0)),), cap, "fp16", timestamps=True, layers_only=True,
                       score_chunk=chunk, timestamp_rows=True)
    prog = build_decode_program(cfg, WSE2)
    rt = DecodeRuntime(prog, mode="timing")
    rt.length = context - 1
    r = rt.step()
    assert {y for _, y, _, _ in r.result.timestamps} == set(range(grid[0]))
    ops = critical_path_ops(r.result.timestamps)
    ty, tx = prog.tree_y, prog.tree_x
    tree = lambda t: TreeChoice(t.k, (t.groups0,) if t.k > 1 else ())  # noqa: E731
    pred = decode_layer(WSE2, model_dims(model), grid[0], grid[1], context, tree(ty), tree(tx), "fp16", chunk=chunk)
    return int(r.cycles), ops, pred


@pytest.mark.parametrize("grid,kv,context,chunk", [
    ((16, 16), 2, 200, SCORE_CHUNK),   # scores per KV group (8 columns each), 4 RoPE pairs per column
    ((12, 20), 2, 296, SCORE_CHUNK),   # uneven rows and columns, groups of 10
    ((16, 8), 8, 90, SCORE_CHUNK),     # P_x = n_kv: a whole KV group per column, no score reduction
    ((10, 24), 1, 125, SCORE_CHUNK),   # MQA: one KV head spans the row, the score allreduce runs on the whole X tree
    ((16, 16), 2, 200, 4),             # the attention in chunks: 13 entries per row, 4 chunks on the busiest
    ((12, 20), 2, 296, 7),             # 25 entries per row, 4 chunks, the last 4 entries
    ((16, 8), 8, 1100, 32),            # 69 entries per row at the default chunk's scale, no score reduction
    ((10, 24), 1, 125, 5),             # MQA, 13 entries: rows of 3 chunks
    ((16, 16), 2, 192, SCORE_CHUNK),   # 12 entries on every row: nobody shifts, the bottom row writes
    ((16, 16), 2, 10, SCORE_CHUNK),    # fewer tokens than rows: one entry on 10 rows
    ((12, 20), 2, 35, SCORE_CHUNK),    # 3 entries on 11 rows, 2 on the bottom one, which alone shifts (sends, writes)
])
def test_decode_layer_follows_the_simulated_program(grid, kv, context, chunk):
    small = {**SMALL, "num_kv_heads": kv, **({"hidden_size": 256, "head_dim": 32} if kv == 8 else {})}
    model = dataclasses.replace(load_catalog_model("llama3-8b"), **small)
    cycles, ops, pred = _layer(model, grid, context, chunk)
    assert set(ops) == set(OP_LABELS) and set(pred.parts) == set(OP_LABELS)
    assert score_mode(model_dims(model), grid[1]) == {2: "groups", 8: "none", 1: "full"}[kv]
    assert pred.total_cycles == pytest.approx(cycles, rel=0.04)
    # op by op on the critical path (within 10% or 40 cycles: the allreduces' rows arrive at different
    # times, which their formula does not see)
    for op in OP_LABELS:
        assert abs(pred.parts[op] - ops[op]) <= max(0.1 * ops[op], 40), (op, ops, pred.parts)


@pytest.mark.parametrize("grid,strip,context", [((16, 16), 10, 200), ((12, 20), 12, 296)])
def test_stages_of_two_widths_follow_the_simulated_program(grid, strip, context):
    """A packed placement's step: one layer on a P_y × P_x region, the hand-off east, one layer on a strip of
    P_y × s beside it (its own layout, body and X tree), simulated timing-only, against plmr priced per stage:
    ``decode_layer`` at each stage's width with the tree that stage's program runs, plus the hand-off as the
    planner prices it (a message over the sender's longer side, a broadcast over the receiver's columns)."""
    from plmr.collectives import broadcast, message

    model = dataclasses.replace(load_catalog_model("llama3-8b"), **{**SMALL, "num_layers": 2})
    cap = -(-context // grid[0])
    stages = (DecodeStage(0, 0, 0, (0, 0)), DecodeStage(1, 1, 1, (0, grid[1]), width=strip))
    cfg = DecodeConfig(model, grid, stages, cap, "fp16", layers_only=True)
    prog = build_decode_program(cfg, WSE2.with_params(sram_bytes=1 << 20))  # timing only: bytes are not the point
    assert [prog.layout_of(s.index).p_x for s in stages] == [grid[1], strip]
    rt = DecodeRuntime(prog, mode="timing")
    rt.length = context - 1
    sim = rt.step().cycles
    tree = lambda t: TreeChoice(t.k, (t.groups0,) if t.k > 1 else ())  # noqa: E731
    dims, e_y = model_dims(model), -(-model.hidden_size // grid[0])
    pred = sum(decode_layer(WSE2, dims, grid[0], w, context, tree(prog.tree_y), tree(prog.shapes[w][3]),
                            "fp16").total_cycles for w in (grid[1], strip))
    pred += (message(WSE2, e_y, max(grid), 0, "fp16").total_cycles
             + broadcast(WSE2, strip, e_y, root=0, dtype="fp16").total_cycles)
    assert pred == pytest.approx(sim, rel=0.04)
