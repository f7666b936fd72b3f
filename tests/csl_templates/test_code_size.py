"""One SRAM estimate: the checker's estimate of the CSL a program lowers to (``memory.sram``, counted on the
CSL text) equals the program model's, for every parameter set of every kernel, of every example and of tiny
models' decode and prefill programs. Code: ``simulator.resources.code_bytes`` on the program; the two count
different things (CSL statements and program statements) by one table of what each construct costs. Data:
the checker sums the emitted globals' declared sizes, the model the body's buffers and variables plus
``simulator.resources.lowering_data_bytes`` (coordinates, timer, timestamp slots, export pointers). So a
bundle the program model accepts is not flagged by the checker, and the other way round."""

from __future__ import annotations

import json

import pytest

import csl_templates.checker as checker
import csl_templates.target_rules as target_rules
from csl_templates.comptime_values import to_python
from csl_templates.emit import emit_csl
from csl_templates.examples import EXAMPLES
from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from plmr.hardware import WSE2
from simulator.resources import code_bytes

from tests.csl_templates.test_kernels import EMITTED


def checker_code_bytes(monkeypatch, directory, params, spec=WSE2) -> dict:
    """(PE file, parameter values) -> the checker's (code bytes, data bytes), as its memory rule computes them."""
    seen = {}
    rule = target_rules.rule_memory

    def record(f, sp, memcpy):
        values = {k: v for k, v in to_python(f.params).items() if k != "memcpy_params"}
        key = (f.path.rsplit("/", 1)[-1], json.dumps(values, sort_keys=True))
        seen[key] = (f.code_ops * sp.code_bytes_per_op + f.code_statements * sp.code_bytes_per_statement
                     + f.code_bodies * sp.code_bytes_per_task, sum(b for _, _, b in f.data))
        return rule(f, sp, memcpy)

    monkeypatch.setattr(checker, "PE_RULES", tuple(record if r is rule else r for r in checker.PE_RULES))
    checker.check_paths([str(directory)], arch="wse2", params=params)
    return seen


def assert_one_estimate(monkeypatch, tmp_path, prog, name, spec=WSE2, src=None):
    src = src or emit_csl(prog, kernel=name)
    for f, t in src.files.items():
        (tmp_path / f).write_text(t)
    got = checker_code_bytes(monkeypatch, tmp_path, src.params, spec)
    prog.finalize()
    assert prog.blocks
    for blk in prog.blocks:
        key = (f"pe_{blk.body.name}.csl", json.dumps(dict(blk.values), sort_keys=True))
        assert got[key] == (code_bytes(blk.body, blk.values, spec), blk.data_bytes + blk.var_bytes), (key, got[key])


@pytest.mark.parametrize("name", EMITTED)
def test_kernel_code_estimates_are_one(monkeypatch, tmp_path, name):
    b = build_kernel(KernelRequest(name, (4, 3), 1 if "gemv" in name else 12, 12, 12, dtype="fp16",
                                   functional=False), WSE2)
    assert_one_estimate(monkeypatch, tmp_path, b.program, name)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_code_estimates_are_one(monkeypatch, tmp_path, name):
    prog, _ = EXAMPLES[name]()
    assert_one_estimate(monkeypatch, tmp_path, prog, name)


def test_tiny_decode_code_estimates_are_one(monkeypatch, tmp_path, tiny_model):
    from waferllm.compile import CompileRequest, compile_bundle, open_bundle
    from meshgemm.decode_program import build_decode_program

    d, _ = tiny_model("llama_gqa")
    out = tmp_path / "bundle"
    compile_bundle(CompileRequest(model=str(d), hardware="wse2", context=40, dtype="fp32", decode_grid=(4, 4),
                                  prefill_grid=(4, 4), out=out))
    b = open_bundle(out)
    prog = build_decode_program(b.decode_config(), b.hardware).program
    src_dir = out / "csl" / "decode"
    manifest = json.loads((src_dir / "manifest.json").read_text())
    got = checker_code_bytes(monkeypatch, src_dir, manifest["params"], b.hardware)
    prog.finalize()
    for blk in prog.blocks:
        key = (f"pe_{blk.body.name}.csl", json.dumps(dict(blk.values), sort_keys=True))
        assert got[key] == (code_bytes(blk.body, blk.values, b.hardware), blk.data_bytes + blk.var_bytes), key


@pytest.mark.parametrize("name,mesh,tokens,layers", [("llama_gqa", (5, 5), 10, (0, 1)), ("mistral_window", (3, 4), 12, (0,)),
                                                     ("llama_mha", (3, 2), 11, (0,))])
def test_tiny_prefill_code_estimates_are_one(monkeypatch, tmp_path, tiny_model, name, mesh, tokens, layers):
    from meshgemm.prefill_program import build_prefill_program
    from waferllm.catalog import resolve_model

    d, _ = tiny_model(name)
    pp = build_prefill_program(resolve_model(str(d)), WSE2.with_params(sram_bytes=1 << 20), mesh, tokens,
                               layers=layers)
    assert_one_estimate(monkeypatch, tmp_path, pp.program, f"{name} prefill")


def test_code_statement_count_equals_a_walk_of_the_body():
    """``_code_statements`` (prefix counts over a preorder index) against walking each body's tree, for
    random sets of dropped branches (nested in each other too) and of ``if`` tests folded at comptime:
    a dropped branch counts nothing under it, a folded ``if`` counts its kept branch but not its test."""
    import random

    from csl_templates import syntax_tree as st
    from csl_templates.parser import parse
    from csl_templates.pe_reader import _IF_STMT, _OP, _STMT, _code_index, _code_kind, _code_statements

    src = """
fn f(n: u16) void {
  if (n > 1) {
    @fmovs(a, b);
    if (n > 2) { @fadds(a, a, b); x = 1; } else if (n > 3) { @fmuls(a, a, b); } else { y = 2; }
    while (n < 4) { if (n == 5) { @fmovs(a, b); } z = 3; }
  } else {
    const d = @increment_dsd_offset(a, 1, f32);
    @fmovs(d, b);
  }
  for (@range(u16, 4)) |i| { if (i == 0) { @fmovs(a, b); } else { w = i; } }
  return;
}
"""
    (fn,) = [i for i in parse(src, "t.csl").items if isinstance(i, st.FnDecl)]

    def walk(node, pruned, folded):
        if id(node) in pruned:
            return 0, 0
        k = _code_kind(node)
        ops, stmts = int(k == _OP), int(k == _STMT or (k == _IF_STMT and id(node) not in folded))
        for ch in node.children():
            a, b = walk(ch, pruned, folded)
            ops, stmts = ops + a, stmts + b
        return ops, stmts

    ifs = [n for n in fn.body.walk() if isinstance(n, st.If)]
    branches = [b for n in ifs for b in (n.then, n.else_) if b is not None]
    # by hand: 6 DSD ops; 4 assignments, the while, the for, the return and 5 ifs (the const is not one)
    assert len(ifs) == 5 and walk(fn.body, set(), set()) == (6, 12)
    index = _code_index(fn.body)
    rng = random.Random(3)
    for _ in range(300):
        pruned = {id(b) for b in branches if rng.random() < 0.3} | {12345}  # an id of another body
        folded = {id(n) for n in ifs if rng.random() < 0.4} | {id(fn.body)}  # not an if: no effect
        assert _code_statements(index, pruned, folded) == walk(fn.body, pruned, folded)
