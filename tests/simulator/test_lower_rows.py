"""Blocks of one body whose parameters differ only in colours share their lowered rows (``simulator.lower``'s
``_RowTemplate``): the first is compiled, the others copy its rows and bind their own colours, queues and
task IDs. The reference is the code generator run on every block (``share_rows=False``): every array the
engine reads, and every row's description, must be the same, on kernels (square and non-square meshes,
fp32 and fp16, WSE-2 and WSE-3, whose data tasks bind differently), the decode and prefill programs of tiny
models, data tasks on colour parameters and ``SetRoute`` on a colour parameter."""

from __future__ import annotations

import numpy as np
import pytest

from meshgemm.kernel import KernelRequest
from meshgemm.registry import KERNELS, build_kernel
from plmr.hardware import WSE2, WSE3
from simulator import Body, Fill, If, MeshProgram, Port, Recv, Send, SetRoute, Timestamp, X, Y, eq, simulate
from simulator.expr import select
from simulator.lower import colour_only_params, lower_program

ARRAYS = ("ins", "jtab", "reg_init", "tk_entry", "tk_data", "tk_arg", "blk_prio", "blk_blocked", "blk_data",
          "pe_block", "mem_base", "mem", "sram_bytes")


def assert_same_lowering(prog, spec, functional=True) -> None:
    ref = lower_program(prog, spec, functional, share_rows=False)
    got = lower_program(prog, spec, functional)
    for name in ARRAYS:
        a, b = getattr(ref, name), getattr(got, name)
        assert a.shape == b.shape and np.array_equal(a, b), name
    assert (ref.nreg, ref.labels, ref.entry_args) == (got.nreg, got.labels, got.entry_args)
    assert {k: v.tolist() for k, v in ref.entries.items()} == {k: v.tolist() for k, v in got.entries.items()}
    assert len(ref.row_meta) == len(got.row_meta)
    assert all(ref.row_meta[i] == got.row_meta[i] for i in range(len(ref.row_meta)))
    return ref, got


def compiled_blocks(prog) -> int:
    """Blocks the code generator compiles with sharing: one per body and values of its other parameters."""
    prog.finalize()
    keys = set()
    for b in {int(b) for b in prog.pe_blocks().tolist() if b >= 0}:
        blk = prog.blocks[b]
        only = colour_only_params(blk.body)
        keys.add((id(blk.body), tuple(sorted((k, v) for k, v in blk.values.items() if k not in only))))
    return len(keys)


@pytest.mark.parametrize("spec", [WSE2, WSE3], ids=["wse2", "wse3"])
@pytest.mark.parametrize("mesh", [(6, 6), (5, 3)], ids=["square", "nonsquare"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_lower_to_the_same_rows(name, mesh, spec):
    gemv = "gemv" in name
    dtype = "fp16" if mesh == (5, 3) else "fp32"
    b = build_kernel(KernelRequest(name, mesh, 1 if gemv else 12, 14, 11, dtype=dtype, functional=True), spec)
    assert_same_lowering(b.program, spec)


def test_sharing_happens_where_only_colours_differ():
    # MeshGEMM's parameter sets differ in ring colours and in nothing else: one compiled block for 36
    b = build_kernel(KernelRequest("meshgemm", (8, 8), 16, 16, 16, functional=False), WSE2)
    b.program.finalize()
    assert len({int(x) for x in b.program.pe_blocks().tolist()}) == 36
    assert compiled_blocks(b.program) == 1


def test_set_route_on_a_colour_parameter():
    """Even rows stream on colour 5, odd rows on 6; SetRoute switches each row's own colour from west to
    east (test_blocking's program with the colour a parameter)."""
    W, H = 3, 4
    for spec in (WSE2, WSE3):
        prog = MeshProgram(W, H, spec)
        one = lambda cond, a, b: select(cond, 1 << int(a), 1 << int(b))  # noqa: E731
        for c, rows in ((5, eq(Y % 2, 0)), (6, eq(Y % 2, 1))):
            prog.route_rule(None, None, c, rx=one(eq(X, 1), Port.RAMP, Port.EAST),
                            tx=one(eq(X, 1), Port.WEST, Port.RAMP), when=(X <= 1) & rows)
            prog.route_rule(None, None, c, rx=one(eq(X, 1), Port.RAMP, Port.WEST),
                            tx=one(eq(X, 1), Port.EAST, Port.RAMP), when=(X >= 1) & rows, config=1)
        b = Body("switch")
        role, col = b.param("role"), b.param("col", "colour")
        b.buffer("a", "fp32", 4)
        b.function("main", [
            If(eq(role, 1), [Send(col, "a"), Fill("a", 9.0), SetRoute(col, 1), Send(col, "a"), Timestamp("s")],
               [If(eq(role, 0), [Recv(col, "a")], [SetRoute(col, 1), Recv(col, "a")]), Timestamp("r")])])
        prog.place(b, params={"role": X, "col": 5 + Y % 2})
        assert colour_only_params(prog.placements[0].body.finalized()) == {"col"}
        assert compiled_blocks(prog) == 3  # the roles; 6 blocks
        assert_same_lowering(prog, spec)
        assert simulate(prog, spec, mode="timing").total_cycles > 0  # a program that runs


def test_csl_examples_lower_to_the_same_rows():
    # among them data tasks bound to a colour parameter (their IDs follow the colour on WSE-2), joins, relays
    from csl_templates.examples import EXAMPLES

    for name, build in EXAMPLES.items():
        for hw in ("wse2", "wse3"):
            prog, _ = build(hardware=hw)
            assert_same_lowering(prog, WSE2 if hw == "wse2" else WSE3)


def test_a_colour_parameter_read_elsewhere_is_not_shared():
    b = Body("mixed")
    c = b.param("c", "colour")
    b.buffer("a", "fp32", 4)
    b.function("main", [If(eq(c, 5), [Send(c, "a")], [Recv(c, "a")])])
    assert colour_only_params(b.finalized()) == frozenset()


@pytest.mark.parametrize("name", ["llama_gqa", "qwen2_bias_tied", "mistral_window"])
def test_tiny_prefill_programs_lower_to_the_same_rows(tiny_model, name):
    from meshgemm.prefill_program import build_prefill_program
    from waferllm.catalog import resolve_model

    d, _ = tiny_model(name)
    spec = WSE3 if name == "mistral_window" else WSE2
    pp = build_prefill_program(resolve_model(str(d)), spec.with_params(sram_bytes=1 << 20), (6, 4), 7,
                               layers=(0, 1), dtype="fp16")
    assert compiled_blocks(pp.program) < len(pp.program.blocks)
    assert_same_lowering(pp.program, spec, functional=False)


def test_a_decode_program_of_two_stages_lowers_to_the_same_rows(tiny_model):
    from meshgemm.decode_program import DecodeConfig, DecodeStage, build_decode_program, snake_origins
    from waferllm.catalog import resolve_model

    d, _ = tiny_model("llama_mha")
    spec = resolve_model(str(d))
    grid = (4, 3)
    hw = WSE2.with_params(mesh_width=24)
    orig = snake_origins(hw, grid, 2)
    stages = (DecodeStage(0, 0, 0, orig[0], embedding=True), DecodeStage(1, 1, 1, orig[1], lm_head=True))
    prog = build_decode_program(DecodeConfig(spec, grid, stages, 8, "fp32"), hw).program
    assert_same_lowering(prog, hw)
