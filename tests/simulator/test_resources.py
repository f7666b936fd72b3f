"""``resources.shapes_of`` (every parameter set of a body at once, numpy arrays) against ``shape_of``
(one set at a time, a tree walk): equal on random expressions and sets, including the sets it must
hand back to ``shape_of`` (a division by zero on one set, a float parameter, a fractional value)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from plmr.errors import InputError
from simulator.expr import BINARY_OPS, BinOp, Const, Param, Select, UnOp, binop, select
from simulator.resources import shape_of, shapes_of

NAMES = ("a", "b", "c")


def _exprs(leaves):
    """Unfolded trees (the nodes' constructors), so a constant division by zero reaches evaluation."""
    def grow(children):
        return st.one_of(
            st.builds(BinOp, st.sampled_from(sorted(BINARY_OPS)), children, children),
            st.builds(UnOp, st.sampled_from(("neg", "not")), children),
            st.builds(Select, children, children, children),
        )
    return st.recursive(leaves, grow, max_leaves=8)


INT_LEAVES = st.one_of(st.sampled_from([Param(n) for n in NAMES]), st.integers(-3, 5).map(Const))
def outcome(f):
    """``f()``, or the error a user would see (``shape_of`` raises for a division by zero)."""
    try:
        return f()
    except InputError as e:
        return ("InputError", str(e))


def one_by_one(exprs, sets):
    return [shape_of(exprs, v) for v in sets]


SETS = st.lists(st.fixed_dictionaries({n: st.integers(-4, 6) for n in NAMES}), min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_exprs(INT_LEAVES), min_size=0, max_size=5), SETS)
def test_shapes_of_equals_shape_of_set_by_set(exprs, sets):
    exprs = tuple(exprs)
    assert outcome(lambda: shapes_of(exprs, sets)) == outcome(lambda: one_by_one(exprs, sets))


@settings(max_examples=100, deadline=None)
@given(st.lists(_exprs(st.one_of(INT_LEAVES, st.floats(-2, 2, allow_nan=False).map(Const))), min_size=1,
                max_size=4), SETS, st.booleans())
def test_float_values_and_parameters_give_shape_of_too(exprs, sets, float_param):
    exprs = tuple(exprs)
    if float_param and sets:
        sets = [dict(v, a=v["a"] + 0.5) for v in sets]
    assert outcome(lambda: shapes_of(exprs, sets)) == outcome(lambda: one_by_one(exprs, sets))


def test_hand_worked_sets_and_a_division_by_zero_on_one_of_them():
    e = (binop("div", 12, Param("a")), binop("mod", Param("a") - 7, 3), select(Param("a") > 3, 1, Param("a")))
    assert shapes_of(e, [{"a": 3}, {"a": 4}]) == [(4, 2, 3), (3, 0, 1)]
    assert outcome(lambda: shapes_of(e, [{"a": 3}, {"a": 0}])) == (
        "InputError", "division by zero in an expression (12 // 0)")
