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
from meshgemm.decode_program import HEAD_LABELS, OP_LABELS, DecodeConfig, DecodeStage, build_decode_program
from meshgemm.decode_runtime import DecodeRuntime, critical_path_ops
from plmr.collectives import line_tree_allreduce
from plmr.decode_memory import SCORE_CHUNK
from plmr.hardware import WSE2
from plmr.transformer import TreeChoice, decode_layer, score_mode
from simulator import Body, MeshProgram, simulate
from simulator.expr import X
from simulator.instructions import Ref
from waferllm.catalog import load_catalog_model
from waferllm.placement import Placement, Stage
from waferllm.planner import PlanRequest, decode_cost, model_dims, priced_handoff


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
@pytest.mark.parametrize("combine,width", [("sum", 1), ("sum", 40), ("max", 1), ("max", 4), ("max", 40),
                                           ("argmax", 2)])
def test_line_tree_allreduce_is_the_simulated_line_tree(n, groups, combine, width):
    """One-sided level-0 groups of a balanced split, level 1 into the middle root taking its sides one
    after the other, then the multicast; sums fused, maxima and (value, index) argmaxes store and
    forward (an argmax stage's copy runs only when the received pair wins: never on these zeros).
    Exact on these lines (a root whose two sides tie can be a few cycles off: the second stream
    refills the queue)."""
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
    planner prices it (``waferllm.planner.priced_handoff``: the segments' hop onto the strip's first column,
    then a sum along the strip's X tree)."""
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
    dims = model_dims(model)
    pred = sum(decode_layer(WSE2, dims, grid[0], w, context, tree(prog.tree_y), tree(prog.shapes[w][3]),
                            "fp16").total_cycles for w in (grid[1], strip))
    pl = _placement(grid, [(0, 0), (0, grid[1])], widths=[grid[1], strip])
    req = PlanRequest(hardware=WSE2, dtype="fp16", context=context, input_len=context)
    hand = priced_handoff(model, req, grid, pl, tree(prog.tree_y), tree(prog.tree_x), tree(prog.shapes[strip][3]))
    assert hand["boundaries_on_wafer"] == 1
    pred += hand["decode_cycles"]
    assert pred == pytest.approx(sim, rel=0.04)


def _placement(grid, origins, widths=None):
    """A one-wafer ``Placement`` of one layer per stage at ``origins`` (the planner's view of the stages the
    test builds as ``DecodeStage``s), embedding on the first and LM head on the last."""
    n = len(origins)
    widths = widths or [grid[1]] * n
    stages = tuple(Stage(index=i, wafer=0, origin=o, layers=(i, i),
                         extras=(("embedding",) if i == 0 else ()) + (("lm_head",) if i == n - 1 else ()),
                         weight_bytes=0, kv_bytes=0, buffer_bytes=0, extras_bytes=0, grid=(grid[0], w))
                   for i, (o, w) in enumerate(zip(origins, widths)))
    strips = {w for w in widths if w != grid[1]}
    return Placement(grid=grid, stages=stages, wafers=1, regions_per_wafer=n, capacity_per_pe=1 << 20,
                     buffer_bytes=0, strip_width=max(strips) if strips else 0)


@pytest.mark.parametrize("grid,context", [((12, 8), 40), ((8, 12), 61)])
def test_the_whole_token_follows_the_simulated_program(grid, context):
    """One decode token over four stages in a snake (east, south, west), each one layer: the final norm, LM
    head and argmax on the last, the token's return and the next embedding on the first. Every part is
    measured on the critical path (the latest stamp over the rows of each stage's busiest column) and
    compared with the planner's part (``waferllm.planner.decode_cost`` for this placement and the
    program's trees). The head and the embedding follow the program within 2%. The hand-offs and the
    token's return within 6%: their first allreduce waits for the landing PE alone (priced so,
    ``line_tree_late_allreduce_cycles``), but a later round going south starts as the previous round's
    multicast reaches each row, priced as if every row started it together. The whole token within 1%.
    Grid (12, 8): two rounds going south."""
    p_y, p_x = grid
    model = dataclasses.replace(load_catalog_model("llama3-8b"), **{**SMALL, "num_layers": 4})
    origins = [(0, 0), (0, p_x), (p_y, p_x), (p_y, 0)]
    n = len(origins)
    stages = tuple(DecodeStage(i, i, i, o, embedding=i == 0, lm_head=i == n - 1) for i, o in enumerate(origins))
    cfg = DecodeConfig(model, grid, stages, -(-context // p_y), "fp16", timestamps=True, timestamp_rows=True)
    prog = build_decode_program(cfg, WSE2.with_params(sram_bytes=1 << 20))  # timing only: bytes are not the point
    rt = DecodeRuntime(prog, mode="timing")
    rt.length = context - 1
    r = rt.step()
    rows: dict = {}  # stage -> row -> stamps in order
    for x, y, label, c in r.result.timestamps:
        s = next(i for i, (oy, ox) in enumerate(origins) if oy <= y < oy + p_y and ox <= x < ox + p_x)
        rows.setdefault(s, {}).setdefault(y, []).append((label, c))
    assert set(HEAD_LABELS) <= {lab for st in rows.values() for seq in st.values() for lab, _ in seq}

    def at(s, label, which=0):  # the latest over the stage's stamped rows of one occurrence of ``label``
        return max([c for lab, c in seq if lab == label][which] for seq in rows[s].values())

    sim = {"final_norm": at(n - 1, "final_norm") - at(n - 1, "residual_mlp", -1),
           "lm_head": at(n - 1, "lm_head") - at(n - 1, "final_norm"),
           "argmax": at(n - 1, "argmax") - at(n - 1, "lm_head"),
           "token_return": at(0, "token_return") - at(n - 1, "argmax"),
           "embedding": at(0, "embedding") - at(0, "token_return")}
    tree = lambda t: TreeChoice(t.k, (t.groups0,) if t.k > 1 else ())  # noqa: E731
    req = PlanRequest(hardware=WSE2, dtype="fp16", context=context, input_len=context)
    _, total, parts = decode_cost(model, req, grid, tree(prog.tree_y), tree(prog.tree_x), _placement(grid, origins))
    # a hand-off runs from the sender's layer end to the receiver's first stamp (after its first norm's local part)
    sim["handoffs"] = sum(at(b, "rmsnorm") - at(b - 1, "residual_mlp", -1) for b in range(1, n))
    pred = dict(parts, handoffs=parts["handoffs"] + (n - 1) * parts["layers.rmsnorm"] / n)
    for op in ("final_norm", "lm_head", "argmax", "embedding"):
        assert pred[op] == pytest.approx(sim[op], rel=0.02, abs=2), (op, sim, pred)
    for op in ("handoffs", "token_return"):
        assert pred[op] == pytest.approx(sim[op], rel=0.06), (op, sim, pred)
    assert total == pytest.approx(r.cycles, rel=0.01)


def _simulate_late(n, groups, width, late, delay=4000):
    """Simulated cycles of the line tree's sum allreduce after position ``late`` enters it, every other
    position having entered it at the start (``late`` first fills a ``delay``-element buffer)."""
    from simulator.expr import Param, eq
    from simulator.instructions import Fill
    from simulator.statements import If

    prog = MeshProgram(n, 1, WSE2)
    tree = LineTree("x", n, groups, tuple(range(3, 9)), "t")
    body = Body("late")
    for b in ("a", "s", "s2"):
        body.buffer(b, "fp32", width)
    body.buffer("big", "fp32", delay)
    tree.declare(body)
    body.param("late")
    a, s, s2 = Ref("a", 0, width), Ref("s", 0, width), Ref("s2", 0, width)
    wait = If(eq(Param("late"), 1), (Fill(Ref("big", 0, delay), 0.0),))
    body.function("main", (wait,) + tree.allreduce(a, s, s2, "sum"))
    prog.place(body, range(n), range(1), params={**tree.values(X), "late": lambda xs, ys: (xs == late).astype(int)})
    tree.routes(prog, range(n), range(1), X)
    return simulate(prog, WSE2).total_cycles - (WSE2.op_issue_cycles + delay // WSE2.simd_width("mov", "fp32"))


@pytest.mark.parametrize("n,groups,width", [(8, 2, 43), (20, 1, 5), (97, 10, 13), (271, 8, 13)])
def test_a_late_position_pays_only_its_path_through_the_tree(n, groups, width):
    """A hand-off's landing PE (or the returned token's) enters the region's allreduce after every other
    PE: from then on only its contribution's path is left (its chain to its group root, the upper
    levels, the multicast). Against the simulated line tree at the ends, the level-0 roots, interior
    relays and the first member of the last group (a landing going west)."""
    from plmr.collectives import line_tree_late_allreduce_cycles
    from plmr.ktree import build_line_tree

    k, g = (1, ()) if groups == 1 else (2, (groups,))
    tree = build_line_tree(n, k, g or None)
    positions = {0, n - 1, n // 3, tree.levels[0].groups[-1][0], *tree.levels[0].roots[:2]}
    full = line_tree_allreduce(WSE2, n, width, k, g, "fp32").total_cycles
    for q in sorted(positions):
        got = line_tree_late_allreduce_cycles(WSE2, n, width, k, g, "fp32", late=q)
        assert got == _simulate_late(n, groups, width, q), q
        assert got <= full
