"""The planner against the programs it plans for: the colours per PE it counts (and budgets) are the ones
the decode program allocates for the plan's stages, built here on the planned grid and stages."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from meshgemm.decode_program import DecodeConfig, DecodeStage, build_decode_program, snake_origins
from plmr.errors import InputError
from plmr.hardware import WSE2, WSE3
from waferllm.model import spec_from_config_dict
from waferllm.planner import PlanRequest, decode_candidate, plan, search_grid

TINY12 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 96,
          "intermediate_size": 256, "num_hidden_layers": 12, "num_attention_heads": 6,
          "num_key_value_heads": 2, "vocab_size": 500, "max_position_embeddings": 4096}


def tiny12(**changes):
    return spec_from_config_dict({**TINY12, **changes}, "tiny12")


def small_wafer(base, width: int, height: int, sram_kb: int):
    return base.with_params(name=f"small-{height}x{width}", mesh_width=width, mesh_height=height,
                            fabric_width=width + 7, fabric_height=height + 2, sram_bytes=sram_kb * 1024)


def program_for(model, p, hw):
    """The decode program of plan ``p`` as ``waferllm compile`` builds it: the stages' layers in serpentine
    order on the plan's grid, the plan's trees (``compile.program_trees``); on a copy of the wafer without
    an SRAM limit (colours are the point, not bytes)."""
    from waferllm.compile import program_trees

    grid, st = p.decode.grid, p.placement.stages
    origins = snake_origins(hw, grid, len(st))
    stages = tuple(DecodeStage(i, s.layers[0], s.layers[1], origins[i], embedding=i == 0, lm_head=i == len(st) - 1)
                   for i, s in enumerate(st))
    return build_decode_program(DecodeConfig(model, grid, stages, 8, "fp16", **program_trees(p)),
                                hw.with_params(sram_bytes=1 << 22))


def allocated(prog) -> int:
    """Distinct colours the program allocates (its trees, KV shift, hand-off sets, token return); every
    colour it routes on any PE is one of them."""
    c = prog.colours
    colours = set(c.y + c.x + c.shift + c.handoff[0] + c.handoff[1] + ((c.token,) if c.token is not None else ()))
    p = prog.program
    routed = set().union(*(p.colours_used(x, y) for x in range(p.width) for y in range(p.height)))
    assert routed <= colours, (routed, colours)
    assert c.used == len(colours)
    return len(colours)


# (base, mesh width, height, SRAM KB, grid, K forced or None (searched), stages): one stage; two side by
# side (one hand-off colour, the token's); three or four over two bands of regions (a south hand-off:
# ⌈P_y/P_x⌉ rounds, two alternating sets)
CASES = [
    (WSE2, 16, 8, 48, (8, 8), 2, 1),
    (WSE2, 16, 8, 28, (8, 8), 2, 2),
    (WSE2, 16, 16, 20, (8, 8), 2, 3),
    (WSE2, 16, 16, 18, (8, 8), 1, 4),
    (WSE2, 8, 16, 30, (8, 4), 2, 4),
    (WSE2, 8, 24, 28, (12, 4), 1, 3),
    (WSE3, 8, 24, 23, (12, 4), 1, 4),
    (WSE3, 16, 8, 28, (8, 8), None, 2),
    (WSE2, 16, 16, 20, (8, 8), None, 3),
]


@pytest.mark.parametrize("base,w,h,kb,grid,k,n_stages", CASES,
                         ids=[f"{c[0].name}-{c[2]}x{c[1]}-{c[4][0]}x{c[4][1]}-K{c[5] or 'searched'}-{c[6]}st"
                              for c in CASES])
def test_plan_colours_equal_the_decode_programs(base, w, h, kb, grid, k, n_stages):
    model = tiny12()
    hw = small_wafer(base, w, h, kb)
    p = plan(model, PlanRequest(hw, context=64, input_len=32, output_len=8, decode_grid=grid, k_tree=k))
    assert len(p.placement.stages) == n_stages
    prog = program_for(model, p, hw)
    assert prog.tree_y.k == p.decode.tree_y.k
    assert p.decode.colors_per_pe == allocated(prog), prog.colours
    assert p.decode.colors_per_pe <= len(hw.routable_colors)


def test_a_grid_whose_hand_offs_need_too_many_colours_is_refused_in_one_line():
    """16x2 regions in a column on a 4-wide wafer: the stages' hand-offs go south in ⌈16/2⌉ = 8 rounds, two
    sets of 8 colours with three stages or more, plus the token's: more than the 21 routable. Forced, the
    planner says so; searched, it avoids such grids; and the program refuses the same stages."""
    model = tiny12()
    hw = small_wafer(WSE2, 4, 32, 40)
    req = PlanRequest(hw, context=64, input_len=32, output_len=8, decode_grid=(16, 2))
    with pytest.raises(InputError) as exc:
        plan(model, req)
    msg = str(exc.value)
    assert "colours" in msg and "hand-offs 16 in 8 rounds" in msg and "\n" not in msg, msg
    found = search_grid(model, PlanRequest(hw, context=64, input_len=32, output_len=8), decode_candidate)
    assert found is not None and found.terms.colors(found.tree_y, found.tree_x) <= len(hw.routable_colors)
    # the program asked for the same stages refuses too
    n = 3
    origins = snake_origins(hw, (16, 2), n)
    stages = tuple(DecodeStage(i, 4 * i, 4 * i + 3, origins[i], embedding=i == 0, lm_head=i == n - 1)
                   for i in range(n))
    with pytest.raises(InputError, match="colours"):
        build_decode_program(DecodeConfig(model, (16, 2), stages, 8, "fp16"), hw.with_params(sram_bytes=1 << 22))


def test_cli_refuses_a_grid_whose_hand_offs_need_too_many_colours(tmp_path):
    import json

    from waferllm.cli import main
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY12))
    hw = small_wafer(WSE2, 4, 32, 40)
    hw_file = tmp_path / "hw.json"
    hw_file.write_text(json.dumps(hw.to_dict()))
    r = CliRunner().invoke(main, ["plan", str(model_dir), "--hardware", str(hw_file), "--decode-grid", "16x2",
                                  "--context", "64", "--input-len", "32", "--output-len", "8"])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "colours" in lines[0], r.stderr


@pytest.mark.parametrize("kb,wafers", [(17, "auto"), (19, 1)])
def test_packed_plan_colours_equal_the_decode_programs(kb, wafers):
    """A packed plan (full 10x8 regions and 10x6 strips of a 20x14 wafer): the program built on the plan's
    stages (origins, widths, layers) and trees, the strips' X tree included, allocates the colours the plan
    counts, and its hand-off rounds are the plan's (the south hand-off runs over the strip's 6 columns)."""
    from waferllm.compile import program_trees
    from waferllm.planner import handoff_colors

    model = tiny12()
    hw = small_wafer(WSE2, 14, 20, kb)
    p = plan(model, PlanRequest(hw, context=64, input_len=32, output_len=8, decode_grid=(10, 8), wafers=wafers))
    assert p.placement.packed and p.wafers == 1
    st = p.placement.stages
    stages = tuple(DecodeStage(i, s.layers[0], s.layers[1], s.origin, embedding=i == 0, lm_head=i == len(st) - 1,
                               width=s.grid[1]) for i, s in enumerate(st))
    prog = build_decode_program(DecodeConfig(model, p.decode.grid, stages, 8, "fp16", **program_trees(p)),
                                hw.with_params(sram_bytes=1 << 22))
    assert p.decode.colors_per_pe == allocated(prog), prog.colours
    assert handoff_colors(hw, p.placement)[0] == prog.colours.rounds
    assert prog.shapes[6][3].groups0 == (p.decode.tree_x_strip.group_counts or (1,))[0]


# ---- the programs' own memory (PlanRequest.program_memory) ---------------------------------------------------
def _wafer(base, w, h):
    return base.with_params(name=f"small-{h}x{w}", mesh_width=w, mesh_height=h, fabric_width=w + 7,
                            fabric_height=h + 2)


MEMORY_CASES = [({}, WSE2, 32, 24), ({}, WSE3, 48, 40), ({"num_key_value_heads": 1}, WSE2, 32, 24),
                ({"attention_bias": True, "mlp_bias": True}, WSE2, 32, 24),
                ({"num_key_value_heads": 6, "hidden_size": 120}, WSE2, 32, 24),
                ({"num_key_value_heads": 6, "hidden_size": 120}, WSE3, 48, 40)]


@pytest.mark.parametrize("changes,base,w,h", MEMORY_CASES)
def test_a_prefill_plan_that_charges_the_program_builds(changes, base, w, h):
    """With the programs' memory charged, the prefill program of the plan's grid, holding its busiest
    stage's layers for one prompt chunk, builds on the real wafer (no SRAM error); its buffers are exactly
    the plan's bytes less the code bound (and, with chunks, the K|V of the rest of the prompt): the table
    both read. The code bound is within 40% of the program's code and variables."""
    from meshgemm.prefill_program import build_prefill_program
    from plmr.program_code import PREFILL_CODE
    from waferllm.planner import prefill_placement, prefill_program_bytes
    model, hw = tiny12(**changes), _wafer(base, w, h)
    req = PlanRequest(hardware=hw, input_len=64, output_len=16, program_memory=True)
    p = plan(model, req)
    grid = tuple(p.prefill.grid)
    placement, chunks = prefill_placement(model, req, grid)
    stage = max(placement.stages, key=lambda s: s.num_layers)
    tokens = -(-req.input_len // chunks)
    pp = build_prefill_program(model, hw, grid, tokens, layers=tuple(range(stage.layers[0], stage.layers[1] + 1)),
                               dtype=req.dtype)  # raises on an SRAM overflow
    prog = pp.program
    prog.finalize()
    blocks = [prog.blocks[int(b)] for b in set(prog.pe_blocks().tolist()) if b >= 0]
    used = max(b.sram_bytes for b in blocks)
    code = max(b.code_bytes + b.var_bytes for b in blocks)
    charged = stage.bytes_per_pe - stage.extras_bytes  # the prefill program holds no embedding or LM head
    _, (_, kv_full) = prefill_program_bytes(model, req, grid, chunks)
    kv_chunk = pp.kv_block * 2  # fp16
    assert used <= charged
    data = max(b.data_bytes for b in blocks)
    assert charged - PREFILL_CODE.bytes(hw) - stage.num_layers * (kv_full - kv_chunk) == data
    assert PREFILL_CODE.bytes(hw) - code <= 0.4 * code


@pytest.mark.parametrize("changes,base,w,h", MEMORY_CASES[:3])
def test_a_decode_plan_charges_the_programs_code_and_variables(changes, base, w, h):
    """The decode placement's buffers grow by the code bound, which holds on the plan's own program."""
    from plmr.program_code import DECODE_CODE
    model, hw = tiny12(**changes), _wafer(base, w, h)
    off = plan(model, PlanRequest(hardware=hw, input_len=64, output_len=16))
    on = plan(model, PlanRequest(hardware=hw, input_len=64, output_len=16, program_memory=True))
    if tuple(on.decode.grid) == tuple(off.decode.grid):
        assert on.placement.buffer_bytes - off.placement.buffer_bytes == DECODE_CODE.bytes(hw)
    prog = program_for(model, on, hw).program
    prog.finalize()
    blocks = [prog.blocks[int(b)] for b in set(prog.pe_blocks().tolist()) if b >= 0]
    assert max(b.code_bytes + b.var_bytes for b in blocks) <= DECODE_CODE.bytes(hw)


@pytest.mark.parametrize("changes,base,w,h", MEMORY_CASES)
def test_a_decode_plan_that_charges_the_program_builds(changes, base, w, h):
    """With the programs' memory charged, the decode program of the plan's stages builds on the real wafer
    (no SRAM error), and every stage's buffers are exactly the plan's bytes for that stage less the code
    bound: the table both read (plmr.decode_memory)."""
    from meshgemm.decode_program import DecodeConfig, DecodeStage, build_decode_program, snake_origins
    from plmr.program_code import DECODE_CODE
    from waferllm.compile import kv_capacity, program_trees
    model, hw = tiny12(**changes), _wafer(base, w, h)
    p = plan(model, PlanRequest(hardware=hw, input_len=64, output_len=16, context=2000, program_memory=True))
    assert p.fits and not p.placement.packed
    grid, st = p.decode.grid, p.placement.stages
    origins = snake_origins(hw, grid, len(st))
    stages = tuple(DecodeStage(i, s.layers[0], s.layers[1], origins[i], embedding=i == 0, lm_head=i == len(st) - 1)
                   for i, s in enumerate(st))
    dp = build_decode_program(DecodeConfig(model, grid, stages, kv_capacity(model, grid[0], 2000), "fp16",
                                           **program_trees(p), score_chunk=p.placement.score_chunk),
                              hw)  # raises on an SRAM overflow
    prog = dp.program
    prog.finalize()
    of_pe = prog.pe_blocks().reshape(prog.height, prog.width)
    for s, (y, x) in zip(st, origins):
        blocks = [prog.blocks[int(b)] for b in np.unique(of_pe[y:y + grid[0], x:x + grid[1]])]
        assert max(b.data_bytes for b in blocks) == s.bytes_per_pe - DECODE_CODE.bytes(hw), s
        assert max(b.sram_bytes for b in blocks) <= s.bytes_per_pe


def test_cli_program_memory_flag():
    """``--program-memory`` is recorded in the JSON and adds the programs' bytes; a small model still plans."""
    import json

    from waferllm.cli import main
    r0 = CliRunner().invoke(main, ["plan", "qwen2.5-0.5b", "--json"])
    r1 = CliRunner().invoke(main, ["plan", "qwen2.5-0.5b", "--json", "--program-memory"])
    assert r0.exit_code == 0 and r1.exit_code == 0, r1.output
    d0, d1 = json.loads(r0.stdout), json.loads(r1.stdout)
    assert d0["memory"]["program_memory"] is False and d1["memory"]["program_memory"] is True
    assert d1["memory"]["buffer_bytes_per_pe"] > d0["memory"]["buffer_bytes_per_pe"]


@pytest.mark.parametrize("sram_kb", [48, 16])
def test_a_plan_says_when_compile_will_plan_again_for_the_programs_code(sram_kb):
    # `plan` does not charge the decode program's code by default; it says so exactly when `compile`
    # (plan_decode, which builds what it plans) has to plan again with the code reserved.
    from waferllm.compile import plan_decode

    hw = small_wafer(WSE2, 40, 48, sram_kb)
    p = plan(tiny12(), PlanRequest(hardware=hw, context=256, input_len=256))
    noted = any("decode program's code" in n for n in p.notes)
    _, stages = plan_decode(tiny12(), hw, "fp16", 256, None)
    assert noted == bool(stages.notes)
    assert noted == (sram_kb == 16)  # both outcomes are exercised
