"""The planner's bounds of the programs' code and variables (``plmr.program_code``) hold on built programs:
the decode and prefill programs for a spread of models, grids, stage counts, prompts and dtypes, their code
counted by the simulator (``simulator.resources.code_bytes``, the CSL checker's estimate), every parameter
set. And the bounds are not loose: within the margin ``plmr.program_code`` states."""

from __future__ import annotations

import pytest

from plmr.hardware import WSE2, WSE3
from plmr.program_code import DECODE_CODE, PREFILL_CODE, CodeBound
from simulator import resources as R


def measured(prog, spec) -> tuple[CodeBound, int]:
    """The most ops, statements, bodies and variable bytes of any parameter set of ``prog``, and the most
    code and variable bytes."""
    prog.finalize()
    unit = lambda o, s, t: spec.with_params(code_bytes_per_op=o, code_bytes_per_statement=s,  # noqa: E731
                                            code_bytes_per_task=t)
    ops, st, bo = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)
    blocks = [prog.blocks[int(b)] for b in set(prog.pe_blocks().tolist()) if b >= 0]
    for b in blocks:  # the three counts add up to the simulator's own figure
        assert (R.code_bytes(b.body, b.values, ops) * spec.code_bytes_per_op
                + R.code_bytes(b.body, b.values, st) * spec.code_bytes_per_statement
                + R.code_bytes(b.body, b.values, bo) * spec.code_bytes_per_task) == b.code_bytes
    return CodeBound(max(R.code_bytes(b.body, b.values, ops) for b in blocks),
                     max(R.code_bytes(b.body, b.values, st) for b in blocks),
                     max(R.code_bytes(b.body, b.values, bo) for b in blocks),
                     max(b.var_bytes for b in blocks)), max(b.code_bytes + b.var_bytes for b in blocks)


def _holds(bound: CodeBound, got: CodeBound) -> None:
    assert got.ops <= bound.ops and got.statements <= bound.statements and got.bodies <= bound.bodies
    assert got.variable_bytes <= bound.variable_bytes


def _big(spec, p_y, p_x):
    w, h = max(spec.mesh_width, p_x), max(spec.mesh_height, p_y)
    return spec.with_params(sram_bytes=1 << 34, mesh_width=w, mesh_height=h, fabric_width=max(spec.fabric_width, w),
                            fabric_height=max(spec.fabric_height, h))


PREFILL = [("qwen2.5-0.5b", (3, 7), 4096, "fp16", WSE2), ("qwen2.5-0.5b", (6, 5), 64, "fp32", WSE3),
           ("qwen2.5-0.5b", (12, 16), 4096, "fp16", WSE2), ("llama3-8b", (6, 5), 4096, "fp16", WSE2),
           ("mistral-7b", (4, 6), 4096, "fp16", WSE3), ("llama2-7b", (2, 2), 64, "fp16", WSE2),
           ("qwen2.5-0.5b", (1, 6), 64, "fp16", WSE2), ("qwen2.5-0.5b", (6, 1), 64, "fp32", WSE2)]


@pytest.mark.parametrize("name,mesh,L,dt,spec", PREFILL)
def test_the_prefill_code_bound_holds(name, mesh, L, dt, spec):
    from meshgemm.prefill_program import build_prefill_program
    from waferllm.catalog import resolve_model
    pp = build_prefill_program(resolve_model(name), _big(spec, *mesh), mesh, L, layers=(0,), dtype=dt)
    got, total = measured(pp.program, spec)
    _holds(PREFILL_CODE, got)
    assert total <= PREFILL_CODE.bytes(spec)
    if min(mesh) >= 2:  # not loose: within 40% of the program (grids the planner picks: within 20%)
        assert PREFILL_CODE.bytes(spec) <= 1.4 * total, (total, PREFILL_CODE.bytes(spec))


DECODE = [("qwen2.5-0.5b", (4, 4), 1, "fp16", WSE2), ("qwen2.5-0.5b", (12, 20), 3, "fp16", WSE3),
          ("llama3-8b", (12, 20), 2, "fp16", WSE2), ("llama3-8b", (24, 40), 1, "fp32", WSE2),
          ("qwen2-72b", (24, 40), 5, "fp16", WSE3), ("qwen2-72b", (12, 20), 1, "fp16", WSE2),
          ("mistral-7b", (3, 7), 2, "fp16", WSE2),
          ("llama2-13b", (1, 8), 4, "fp16", WSE2), ("llama2-13b", (8, 1), 3, "fp16", WSE3)]


@pytest.mark.parametrize("name,grid,stages,dt,spec", DECODE)
def test_the_decode_code_bound_holds(name, grid, stages, dt, spec):
    from meshgemm.decode_program import DecodeConfig, DecodeStage, build_decode_program
    from waferllm.catalog import resolve_model
    m = resolve_model(name)
    p_y, p_x = grid
    cuts = [round(i * m.num_layers / stages) for i in range(stages + 1)]
    st = tuple(DecodeStage(i, cuts[i], cuts[i + 1] - 1, (0, i * p_x), embedding=i == 0, lm_head=i == stages - 1)
               for i in range(stages))
    dp = build_decode_program(DecodeConfig(m, grid, st, 64, dt), _big(spec, p_y, stages * p_x))
    got, total = measured(dp.program, spec)
    _holds(DECODE_CODE, got)
    assert total <= DECODE_CODE.bytes(spec)
    assert DECODE_CODE.bytes(spec) <= 1.4 * total, (total, DECODE_CODE.bytes(spec))
