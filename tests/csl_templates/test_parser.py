"""The CSL grammar: every construct of the grammar notes (hardware-and-csl.md §7) and of the corpus
census parses into the expected syntax tree; syntax errors carry the exact line and column."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from lark import Lark, logger

from csl_templates import syntax_tree as st
from csl_templates.parser import CslSyntaxError, grammar_text, parse, parse_file

SAMPLES = Path(__file__).parent / "samples"


def _fn_body(src: str) -> list:
    """Statements of ``fn f() void { src }``."""
    m = parse("fn f() void {\n" + src + "\n}\n")
    return m.items[0].body.stmts


def _expr(src: str) -> st.Node:
    return parse(f"const x = {src};").items[0].init


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.csl")))
def test_every_sample_parses(name):
    m = parse_file(SAMPLES / name)
    assert m.items, name


def test_grammar_has_only_the_documented_dangling_else_conflict():
    """LALR conflicts are resolved as shift; the only ones allowed are an if-expression without
    `else` inside an if-statement's simple body (the `else` binds to the inner `if`, as in Zig)."""
    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    h = Grab()
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    try:
        Lark(grammar_text(), parser="lalr", lexer="contextual", debug=True)
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)
    conflicts = [r for r in records if "conflict" in r.lower()]
    assert conflicts and all("ELSE" in r for r in conflicts), conflicts
    body = _fn_body("if (a) x = if (b) 1 else 2;")
    inner = body[0].then.value
    assert isinstance(inner, st.If) and inner.else_ is not None and body[0].else_ is None


def test_params_of_every_form():
    m = parse("""
param a: i16;
param b;
param c: color = @get_color(0);
param d = {};
param e: fn()void;
param f: task () void;
param g: struct { x: bool, y: u16, };
param h: *[n]u16;
param T: type = f16;
""")
    ps = m.params()
    assert [p.name for p in ps] == list("abcdefghT")
    assert ps[1].type is None and ps[1].default is None
    assert isinstance(ps[3].default, st.Block) and ps[3].default.stmts == []
    assert isinstance(ps[4].type, st.FnType) and ps[4].type.kind == "fn"
    assert isinstance(ps[5].type, st.FnType) and ps[5].type.kind == "task"
    assert [f.name for f in ps[6].type.fields] == ["x", "y"]
    assert isinstance(ps[7].type, st.PointerType) and isinstance(ps[7].type.elem, st.ArrayType)


def test_tensor_access_lambdas():
    one = _expr("@get_dsd(mem1d_dsd, .{ .tensor_access = |i|{N - 1} -> x[2*i + 1] })").args[1].fields[0].value
    assert isinstance(one, st.Lambda) and one.captures == ["i"]
    assert isinstance(one.extents[0], st.Binary) and isinstance(one.body, st.Index)
    three = _expr("@get_dsd(mem4d_dsd, .{ .tensor_access = |i, j, k|{a, b, c,} -> buf[i, j, k] })")
    lam = three.args[1].fields[0].value
    assert lam.captures == ["i", "j", "k"] and len(lam.extents) == 3 and len(lam.body.indices) == 3


def test_types_and_multidimensional_arrays():
    m = parse("var M: [4, 6]f16 align(16) = @zeros([4, 6]f16);\nvar p: [*]const f32 = &a;\n"
              "const t = [3]i16{1, 2, 3,};\nconst fp: *const fn (i16, f32) void = &g;\n")
    M, p, t, fp = m.decls()
    assert isinstance(M.type, st.ArrayType) and len(M.type.dims) == 2
    assert isinstance(M.align, st.IntLit) and M.align.value == 16
    assert p.type.many and p.type.const
    assert isinstance(t.init, st.TypedInit) and [i.value for i in t.init.items] == [1, 2, 3]
    assert isinstance(fp.type.elem, st.FnType) and len(fp.type.elem.params) == 2
    idx = _fn_body("M[i, j] = 1.0;")[0].target
    assert isinstance(idx, st.Index) and len(idx.indices) == 2


def test_loops_old_style_captures_and_continue_expressions():
    body = _fn_body("for (@zeros([W]u8)) |_, Px| { n += Px; }\n"
                    "while (px < P) : (px += 1) { }\n"
                    "outer: for (@range(u16, 3)) |a| { for (a) |b| { continue :outer; } }")
    f, w, lab = body
    assert isinstance(f, st.For) and f.captures == ["_", "Px"]
    assert isinstance(w, st.While) and isinstance(w.cont, st.Assign) and w.cont.op == "+="
    assert lab.label == "outer"
    cont = lab.body.stmts[0].body.stmts[0]
    assert isinstance(cont, st.Continue) and cont.label == "outer"


def test_if_expressions_with_and_without_final_else():
    e = _expr('if (@is_arch("wse2")) a else if (@is_arch("wse3")) b')
    assert isinstance(e, st.If) and e.is_expr and isinstance(e.else_, st.If) and e.else_.else_ is None
    s = _fn_body('if (@is_arch("wse3")) @unblock(iq) else @unblock(c);')[0]
    assert isinstance(s, st.If) and not s.is_expr and isinstance(s.else_, st.ExprStmt)


def test_switch_statement_and_expression():
    body = _fn_body("const v = switch (y) { 1, 2 => @as(u16, 10), else => 20, };\n"
                    "switch (m) { .send => @activate(t), mode.recv => { n = 0; }, else => {} }")
    sw = body[0].init
    assert isinstance(sw, st.Switch) and len(sw.prongs[0].items) == 2 and sw.prongs[1].items is None
    stmt = body[1]
    assert isinstance(stmt, st.Switch) and isinstance(stmt.prongs[0].items[0], st.EnumLit)


def test_pointers_labelled_blocks_and_struct_literals():
    body = _fn_body("p.* = 5; (p.*)[i] = 1; @bitcast(*u16, a).* = 7;\n"
                    "const v = blk: { if (c) break :blk 1; break :blk 0; };\n"
                    "const s = .{ .routes = .{ .rx = .{WEST}, .tx = .{RAMP, EAST,}, }, };")
    assert isinstance(body[0].target, st.Deref)
    assert isinstance(body[1].target, st.Index) and isinstance(body[1].target.obj, st.Deref)
    assert isinstance(body[2].target, st.Deref) and isinstance(body[2].target.obj, st.BuiltinCall)
    blk = body[3].init
    assert blk.label == "blk" and isinstance(blk.stmts[-1], st.Break) and blk.stmts[-1].label == "blk"
    tx = body[4].init.fields[0].value.fields[1].value
    assert [n.id for n in tx.items] == ["RAMP", "EAST"]


def test_functions_linkname_return_types_and_struct_enum_declarations():
    m = parse("""
const P = struct { a: color, b: u16 = 3, };
const Mode = enum(u16) { send = 0, receive = 1, };
fn make() P { return P{ .a = @get_color(1), .b = 2 }; }
fn l1() linkname("x") void {}
fn l2() void linkname("y") {}
fn noret() {}
extern fn g(f16, f16) f16;
export var flag: bool = false;
inline fn sq(comptime T: type, x: T) T { return x * x; }
fn any(x: anytype) void {}
""")
    fns = {f.name: f for f in m.functions()}
    assert isinstance(fns["make"].ret, st.Name) and isinstance(fns["make"].body.stmts[0].value, st.TypedInit)
    assert isinstance(fns["l1"].linkname, st.StringLit) and isinstance(fns["l2"].linkname, st.StringLit)
    assert fns["noret"].ret is None
    assert fns["g"].extern and fns["g"].body is None and fns["g"].params[0].name is None
    assert fns["sq"].inline and fns["sq"].params[0].comptime
    assert isinstance(fns["any"].params[0].type, st.AnyType)
    mode = m.decls()[1].init
    assert isinstance(mode, st.EnumType) and [x.name for x in mode.members] == ["send", "receive"]
    assert m.decls()[2].export


def test_numeric_literals_and_escapes_have_their_values():
    vals = {d.name: d.init for d in parse(r"""
const a = 0xFF_FF; const b = 0b1010_0101; const c = 0o17; const d = 1_000; const e = 007;
const f = 1.5; const g = 1e-6; const h = 8.507059173023462e+37; const i = 1.e-43;
const j = '\n'; const k = '\x41'; const l = '\''; const m = "a\tb\\c\"d\x42\u{e9}";
""").decls()}
    assert [vals[k].value for k in "abcde"] == [0xFFFF, 0b10100101, 0o17, 1000, 7]
    assert [vals[k].value for k in "fghi"] == [1.5, 1e-6, 8.507059173023462e+37, 1e-43]
    assert [vals[k].value for k in "jkl"] == [10, 0x41, ord("'")]
    assert vals["m"].value == 'a\tb\\c"dBé'


def test_layout_is_a_keyword_only_at_top_level():
    m = parse("const layout = @import_module(\"<layout>\");\nfn f() void { const x = layout.get_x_coord(); }\n"
              "layout { @set_rectangle(1, 1); }\n")
    assert m.decls()[0].name == "layout" and len(m.layout_blocks()) == 1


def test_asm_is_a_balanced_blob():
    body = _fn_body('asm volatile ("mov r0, (r1)" : : "r"(x) : "memory");')
    assert isinstance(body[0].expr, st.Asm) and body[0].expr.text.startswith("(")


def test_positions_are_one_based():
    m = parse("\n  const  abc = 1;")
    assert (m.items[0].line, m.items[0].col) == (2, 3)


@pytest.mark.parametrize("src, line, col, words", [
    ("const x = 5\nconst y = 6;\n", 1, 12, "expected ';'"),                    # missing semicolon
    ("fn f() void {\n  x = 1\n  y = 2;\n}\n", 2, 8, "expected ';'"),
    ("const a = 1; /* no */\n", 1, 14, "block comments"),
    ('const s = "abc;\n', 1, 11, "literal"),
    ("const a = (1 + );\n", 1, 16, "unexpected ')'"),
    ("fn f() void {\n  for (a) |x| {}\n", 2, 17, "end of file"),
])
def test_syntax_errors_point_at_the_exact_place(src, line, col, words):
    with pytest.raises(CslSyntaxError) as ei:
        parse(src, "m.csl")
    e = ei.value
    assert (e.line, e.col) == (line, col), str(e)
    assert words in e.message and str(e).startswith(f"m.csl:{line}:{col}: ")


# ---- nodes built inside the parser equal lark's tree with propagated positions ---------------------------
def _dump(x):
    """Every field of every node, positions included (node equality need not compare them all)."""
    import dataclasses

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__,) + tuple((f.name, _dump(getattr(x, f.name))) for f in dataclasses.fields(x))
    if isinstance(x, (list, tuple)):
        return tuple(_dump(i) for i in x)
    if isinstance(x, (set, frozenset)):
        return ("set", tuple(sorted(map(repr, x))))
    return x


def _example_sources() -> dict[str, str]:
    from csl_templates.bundle import render_bundle
    from csl_templates.examples import EXAMPLES

    out = {}
    for name, build in EXAMPLES.items():
        files, _, _ = render_bundle(*build(width=5, height=3), stub=None, kernel=name)
        out.update({f"{name}/{f}": t for f, t in files.items() if f.endswith(".csl")})
    return out


def test_nodes_built_in_the_parser_equal_the_tree_path_with_lark_positions():
    """The parser runs the rules at each reduction and computes each rule's start itself; lark's own
    ``propagate_positions`` over a parse tree, transformed afterwards, is the reference: every node and
    every position equal, on the corpus samples and every example program's emitted CSL."""
    from csl_templates.parser import _in_parser, _lark, _ToNodes

    assert _in_parser().usable  # the installed lark runs the rules in its parser
    sources = {p.name: p.read_text() for p in sorted(SAMPLES.glob("*.csl"))} | _example_sources()
    assert len(sources) > 30
    for name, text in sources.items():
        want = _dump(_ToNodes().transform(_lark().parse(text)))
        assert _dump(parse(text).items) == want, name


def test_a_literal_python_cannot_read_is_a_syntax_error_at_its_place_on_both_paths(monkeypatch):
    from csl_templates.parser import _in_parser

    src = "fn f() void {\n  const c = 1 + '\\u{110000}';\n}\n"
    for usable in (True, False):
        monkeypatch.setattr(_in_parser(), "usable", usable)
        with pytest.raises(CslSyntaxError) as ei:
            parse(src, "m.csl")
        assert str(ei.value).startswith("m.csl:2:17: malformed literal"), (usable, str(ei.value))
    # the parser holds no node once a parse is over (the error report above fed it tokens afterwards)
    monkeypatch.setattr(_in_parser(), "usable", True)
    m = parse("\n  const b = 2;\n")
    assert (m.items[0].line, m.items[0].col) == (2, 3) and not _in_parser().starts
