"""The CSL expression printer: floor ``//`` and ``%`` printed in forms that are right under CSL's
truncating integer division for every sign (evaluated here with C semantics, an independent model of
CSL arithmetic), shared subexpressions bound once, and types made to agree."""

from __future__ import annotations

import ast
import itertools
import operator

import pytest

from simulator.expr import Param, Var, X, eq, max_, min_, select

from csl_templates.exprs import Bindings, CslPrinter, Scope, numpy_expr


def c_eval(text: str, env: dict) -> int:
    """Evaluate printed integer CSL with C/Zig semantics: ``/`` and ``%`` truncate toward zero."""

    def trunc_div(a, b):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q

    def trunc_mod(a, b):
        return a - b * trunc_div(a, b)

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: trunc_div,
           ast.Mod: trunc_mod}

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.BinOp):
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            return env[n.id]
        raise AssertionError(f"unexpected node {ast.dump(n)} in {text!r}")

    return ev(ast.parse(text, mode="eval"))


def printer(nonneg=()):
    return CslPrinter(Scope(param_types={"a": "i32", "b": "i32"}, nonneg_params=frozenset(nonneg)))


VALUES = [-7, -6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6, 7]


@pytest.mark.parametrize("op", ["div", "mod"])
def test_floor_division_and_modulo_are_right_for_every_sign(op):
    a, b = Param("a"), Param("b")
    text = printer().expr(a // b if op == "div" else a % b)
    for va, vb in itertools.product(VALUES, VALUES):
        if vb == 0:
            continue
        want = va // vb if op == "div" else va % vb
        assert c_eval(text, {"a": va, "b": vb}) == want, (text, va, vb)


def test_non_negative_operands_print_plain_operators():
    a, b = Param("a"), Param("b")
    p = printer(nonneg=("a", "b"))
    assert p.expr(a // b) == "a / b"
    assert p.expr(a % (b + 1)) == "a % (b + 1)"
    # a difference may be negative: the floor form again
    assert p.expr((a - b) % 3) != "(a - b) % 3"
    for va, vb in itertools.product(VALUES, VALUES):
        assert c_eval(p.expr((a - b) % 3), {"a": va, "b": vb}) == (va - vb) % 3


def test_shared_subexpressions_are_bound_once_and_values_kept():
    a, b = Param("a"), Param("b")
    shared = (a - b) * 3
    roots = [shared + 1, shared * shared, (a - b) * 3 - a]  # the last builds the same node again
    p = printer()
    decls = Bindings(p).prepare(roots)
    assert len(decls) == 1 and decls[0].startswith("const _v1: i32 = ")
    env = {"a": 4, "b": -9}
    env["_v1"] = c_eval(decls[0].split(" = ", 1)[1].rstrip(";"), env)
    for r in roots:
        text = p.expr(r)
        assert "_v1" in text
        assert c_eval(text, env) == eval(repr(r).replace("//", "/"), {}, {"a": 4, "b": -9})


def test_types_meet_with_casts():
    s = Scope(param_types={"n": "i16"}, var_types={"k": "i32", "f": "f32"}, buffer_types={"buf": "f16"})
    p = CslPrinter(s)
    assert p.expr(Param("n") + Var("k")) == "@as(i32, n) + k"
    assert p.expr(Var("f") * Var("k")) == "f * @as(f32, k)"
    assert p.expr(Var("k") < Param("n"), "bool") == "k < @as(i32, n)"
    assert p.expr(Var("k"), "bool") == "k != 0"
    # a comparison used as a number, and min/max as if-expressions
    assert p.expr(select(Var("k") > 0, 2, 5)) == "if (k > 0) @as(i32, 2) else @as(i32, 5)"
    assert p.expr(min_(Param("n"), 7)) == "if (n < 7) n else @as(i16, 7)"
    assert p.expr(max_(Var("k"), Param("n"))) == "if (k > @as(i32, n)) k else @as(i32, n)"


def test_numpy_printer_matches_python_semantics():
    import numpy as np

    e = select(eq(X % 3, 0), (X - 5) // 2, -X % 4)
    text = numpy_expr(e, {"x": "X"})
    xs = np.arange(-6, 7)
    got = eval(text, {"np": np, "_i": lambda v: np.asarray(v).astype(np.int64)}, {"X": xs})
    want = [((x - 5) // 2) if x % 3 == 0 else (-x % 4) for x in xs.tolist()]
    assert got.tolist() == want
