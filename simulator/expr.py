"""Integer and float expressions over per-PE parameters, coordinates and run-time scalars.

One small expression language serves three readers, so a value is written once:

* **placement** evaluates it vectorised over every PE of a rectangle (numpy), to give each PE its
  parameters and routes (CSL: comptime arithmetic in ``layout.csl``);
* **lowering** folds what is known per parameter set and compiles the rest to scalar instructions
  that the engine runs (CSL: run-time code in ``pe_<body>.csl``);
* the **CSL emitter** prints it.

Leaves: ``Const``, ``Param`` (a per-PE parameter, comptime), ``Coord`` (the PE's column ``x`` or
row ``y``: comptime in the layout, ``<layout>.get_x_coord()`` at run time), ``Var`` (a PE-local
run-time scalar) and ``Load`` (one element of a buffer, read at run time). Nodes: ``BinOp``,
``UnOp`` and ``Select`` (CSL's ``if (c) a else b`` expression).

Python operators build expressions: ``+ - * // % < <= > >= & | ~`` (``&``/``|``/``~`` are logical
and, or, not on conditions), and ``-x``. Equality has named helpers (``eq``, ``ne``) because ``==``
on expressions is structural equality (expressions are hashable dataclasses). Integer division and
modulo follow Python's floor semantics; programs keep operands non-negative, where floor and CSL's
truncation agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np

from plmr.errors import InputError

Number = Union[int, float]

#: binary operators: name -> (CSL spelling, precedence class, result kind)
BINARY_OPS = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "fdiv": "/",
    "min": "min", "max": "max",
    "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
    "and": "and", "or": "or",
}
COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")
LOGICAL = ("and", "or")
UNARY_OPS = ("neg", "not")


class Expr:
    """Base class of expression nodes; Python operators build new nodes."""

    __slots__ = ()

    # arithmetic
    def __add__(self, o): return binop("add", self, o)
    def __radd__(self, o): return binop("add", o, self)
    def __sub__(self, o): return binop("sub", self, o)
    def __rsub__(self, o): return binop("sub", o, self)
    def __mul__(self, o): return binop("mul", self, o)
    def __rmul__(self, o): return binop("mul", o, self)
    def __floordiv__(self, o): return binop("div", self, o)
    def __rfloordiv__(self, o): return binop("div", o, self)
    def __truediv__(self, o): return binop("fdiv", self, o)
    def __rtruediv__(self, o): return binop("fdiv", o, self)
    def __mod__(self, o): return binop("mod", self, o)
    def __rmod__(self, o): return binop("mod", o, self)
    def __neg__(self): return UnOp("neg", self)
    # comparisons and logic
    def __lt__(self, o): return binop("lt", self, o)
    def __le__(self, o): return binop("le", self, o)
    def __gt__(self, o): return binop("gt", self, o)
    def __ge__(self, o): return binop("ge", self, o)
    def __and__(self, o): return binop("and", self, o)
    def __rand__(self, o): return binop("and", o, self)
    def __or__(self, o): return binop("or", self, o)
    def __ror__(self, o): return binop("or", o, self)
    def __invert__(self): return UnOp("not", self)

    def __bool__(self):
        raise TypeError("an expression has no truth value when the program is built; use select() or If")


def _cached_hash(self) -> int:
    """The hash of a composite node (its fields), computed once: nested trees are hashed at every
    dict lookup (the lowering's memo), which re-hashed every subtree each time."""
    h = self._h
    if h is None:
        h = hash(tuple(getattr(self, n) for n in self.__match_args__))
        object.__setattr__(self, "_h", h)
    return h


def _rebuilt(self) -> tuple:
    """Pickle a composite node by its fields: the cached hash is per process (str hashes are salted)."""
    return type(self), tuple(getattr(self, n) for n in self.__match_args__)


@dataclass(frozen=True, slots=True, eq=True)
class Const(Expr):
    value: Number

    def __repr__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, slots=True, eq=True)
class Param(Expr):
    """A per-PE parameter of the body (comptime)."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, eq=True)
class Coord(Expr):
    """The PE's column (``"x"``) or row (``"y"``) inside the program's rectangle."""

    axis: str

    def __repr__(self) -> str:
        return self.axis


@dataclass(frozen=True, slots=True, eq=True)
class Var(Expr):
    """A PE-local run-time scalar variable declared in the body."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, eq=True)
class Load(Expr):
    """Element ``index`` of buffer ``buf``, read at run time (CSL: ``buf[index]``)."""

    buf: str
    index: Expr

    _h: int | None = field(default=None, init=False, compare=False, repr=False)

    __hash__ = _cached_hash
    __reduce__ = _rebuilt

    def __repr__(self) -> str:
        return f"{self.buf}[{self.index!r}]"


@dataclass(frozen=True, slots=True, eq=True)
class BinOp(Expr):
    op: str
    a: Expr
    b: Expr

    _h: int | None = field(default=None, init=False, compare=False, repr=False)

    __hash__ = _cached_hash
    __reduce__ = _rebuilt

    def __repr__(self) -> str:
        if self.op in ("min", "max"):
            return f"{self.op}({self.a!r}, {self.b!r})"
        sym = {"div": "//", "fdiv": "/", "and": "&", "or": "|"}.get(self.op, BINARY_OPS[self.op])
        return f"({self.a!r} {sym} {self.b!r})"


@dataclass(frozen=True, slots=True, eq=True)
class UnOp(Expr):
    op: str
    a: Expr

    _h: int | None = field(default=None, init=False, compare=False, repr=False)

    __hash__ = _cached_hash
    __reduce__ = _rebuilt

    def __repr__(self) -> str:
        return f"(-{self.a!r})" if self.op == "neg" else f"(~{self.a!r})"


@dataclass(frozen=True, slots=True, eq=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    _h: int | None = field(default=None, init=False, compare=False, repr=False)

    __hash__ = _cached_hash
    __reduce__ = _rebuilt

    def __repr__(self) -> str:
        return f"select({self.cond!r}, {self.a!r}, {self.b!r})"


ExprLike = Union[Expr, int, float, bool, np.integer, np.floating]

X = Coord("x")
Y = Coord("y")


def as_expr(v: ExprLike) -> Expr:
    """Wrap Python and numpy numbers as ``Const``; expressions pass through."""
    if isinstance(v, Expr):
        return v
    if isinstance(v, (bool, np.bool_)):
        return Const(int(v))
    if isinstance(v, (int, np.integer)):
        return Const(int(v))
    if isinstance(v, (float, np.floating)):
        return Const(float(v))
    raise TypeError(f"not an expression or a number: {v!r}")


def binop(op: str, a: ExprLike, b: ExprLike) -> Expr:
    """A binary node, folded when both sides are constants."""
    a, b = as_expr(a), as_expr(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(_apply_scalar(op, a.value, b.value))
    return BinOp(op, a, b)


def select(cond: ExprLike, a: ExprLike, b: ExprLike) -> Expr:
    cond, a, b = as_expr(cond), as_expr(a), as_expr(b)
    if isinstance(cond, Const):
        return a if cond.value else b
    return Select(cond, a, b)


def eq(a: ExprLike, b: ExprLike) -> Expr:
    return binop("eq", a, b)


def ne(a: ExprLike, b: ExprLike) -> Expr:
    return binop("ne", a, b)


def min_(a: ExprLike, b: ExprLike) -> Expr:
    return binop("min", a, b)


def max_(a: ExprLike, b: ExprLike) -> Expr:
    return binop("max", a, b)


def logical_not(a: ExprLike) -> Expr:
    a = as_expr(a)
    if isinstance(a, Const):
        return Const(int(not a.value))
    return UnOp("not", a)


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


def _apply_scalar(op: str, a: Number, b: Number) -> Number:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op in ("div", "mod"):
        if b == 0:
            raise InputError(f"division by zero in an expression ({a} {'//' if op == 'div' else '%'} 0)")
        if isinstance(a, float) or isinstance(b, float):
            return math.floor(a / b) if op == "div" else math.fmod(a, b)
        return a // b if op == "div" else a % b
    if op == "fdiv":
        if b == 0:
            raise InputError(f"division by zero in an expression ({a} / 0)")
        return a / b
    if op == "min":
        return min(a, b)
    if op == "max":
        return max(a, b)
    if op == "lt":
        return int(a < b)
    if op == "le":
        return int(a <= b)
    if op == "gt":
        return int(a > b)
    if op == "ge":
        return int(a >= b)
    if op == "eq":
        return int(a == b)
    if op == "ne":
        return int(a != b)
    if op == "and":
        return int(bool(a) and bool(b))
    if op == "or":
        return int(bool(a) or bool(b))
    raise ValueError(f"unknown operator {op!r}")


def _apply_array(op: str, a, b):
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op in ("div", "mod"):
        if np.any(np.asarray(b) == 0):
            raise InputError(f"division by zero in an expression ({'//' if op == 'div' else '%'} 0 on some PE)")
        return np.floor_divide(a, b) if op == "div" else np.mod(a, b)
    if op == "fdiv":
        if np.any(np.asarray(b) == 0):
            raise InputError("division by zero in an expression (/ 0 on some PE)")
        return np.true_divide(a, b)
    if op == "min":
        return np.minimum(a, b)
    if op == "max":
        return np.maximum(a, b)
    if op == "lt":
        return np.asarray(a < b).astype(np.int64)
    if op == "le":
        return np.asarray(a <= b).astype(np.int64)
    if op == "gt":
        return np.asarray(a > b).astype(np.int64)
    if op == "ge":
        return np.asarray(a >= b).astype(np.int64)
    if op == "eq":
        return np.asarray(a == b).astype(np.int64)
    if op == "ne":
        return np.asarray(a != b).astype(np.int64)
    if op == "and":
        return np.logical_and(a, b).astype(np.int64)
    if op == "or":
        return np.logical_or(a, b).astype(np.int64)
    raise ValueError(f"unknown operator {op!r}")


def evaluate(e: ExprLike, env: Mapping[str, Any], vectorised: bool = False):
    """Value of ``e``; ``env`` maps parameter and variable names, ``"x"`` and ``"y"`` to numbers (or,
    with ``vectorised``, to numpy arrays over PEs). ``Load`` needs ``env["__load__"](buf, index)``.
    Raises ``InputError`` naming a missing name. Shared subexpressions (an expression is a DAG) are
    evaluated once."""
    return _Evaluator(env, vectorised).value(as_expr(e))


def evaluate_many(exprs, env: Mapping[str, Any]) -> tuple:
    """``evaluate`` of each of ``exprs`` (scalars) in one environment, sharing the evaluation of common
    subexpressions across them."""
    ev = _Evaluator(env, False)
    return tuple(ev.value(as_expr(e)) for e in exprs)


class _Evaluator:
    def __init__(self, env, vectorised: bool):
        self.env = env
        self.vec = vectorised
        self.memo: dict[int, Any] = {}
        self.keep: list = []  # keeps memoised nodes alive so their ids stay unique

    def value(self, e: Expr):
        if isinstance(e, Const):
            return e.value
        key = id(e)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        v = self._compute(e)
        self.memo[key] = v
        self.keep.append(e)
        return v

    def _compute(self, e: Expr):
        env, vec = self.env, self.vec
        if isinstance(e, (Param, Var)):
            try:
                return env[e.name]
            except KeyError:
                kind = "parameter" if isinstance(e, Param) else "variable"
                raise InputError(f"{kind} {e.name!r} has no value here") from None
        if isinstance(e, Coord):
            return env[e.axis]
        if isinstance(e, Load):
            loader = env.get("__load__")
            if loader is None:
                raise InputError(f"{e!r} reads a buffer, which only run-time code can do")
            return loader(e.buf, self.value(e.index))
        if isinstance(e, UnOp):
            v = self.value(e.a)
            if e.op == "neg":
                return -v
            return np.logical_not(v).astype(np.int64) if vec else int(not v)
        if isinstance(e, BinOp):
            a = self.value(e.a)
            b = self.value(e.b)
            return _apply_array(e.op, a, b) if vec else _apply_scalar(e.op, a, b)
        if isinstance(e, Select):
            c = self.value(e.cond)
            if vec:
                return np.where(np.asarray(c) != 0, self.value(e.a), self.value(e.b))
            return self.value(e.a) if c else self.value(e.b)
        raise TypeError(f"not an expression: {e!r}")


def substitute(e: ExprLike, values: Mapping[str, Number]) -> Expr:
    """``e`` with the named parameters replaced by constants, folded (per parameter set)."""
    e = as_expr(e)
    if isinstance(e, Param):
        if e.name in values:
            return as_expr(values[e.name])
        return e
    if isinstance(e, (Const, Coord, Var)):
        return e
    if isinstance(e, Load):
        return Load(e.buf, substitute(e.index, values))
    if isinstance(e, UnOp):
        a = substitute(e.a, values)
        if isinstance(a, Const):
            return as_expr(-a.value if e.op == "neg" else int(not a.value))
        return UnOp(e.op, a)
    if isinstance(e, BinOp):
        return binop(e.op, substitute(e.a, values), substitute(e.b, values))
    if isinstance(e, Select):
        return select(substitute(e.cond, values), substitute(e.a, values), substitute(e.b, values))
    raise TypeError(f"not an expression: {e!r}")


def names(e: ExprLike) -> tuple[set[str], set[str], set[str], set[str]]:
    """(parameters, coordinates, variables, buffers read) that ``e`` refers to."""
    params: set[str] = set()
    coords: set[str] = set()
    vars_: set[str] = set()
    bufs: set[str] = set()
    seen: set[int] = set()
    keep: list = []

    def walk(n: Expr) -> None:
        if id(n) in seen:
            return
        seen.add(id(n))
        keep.append(n)
        if isinstance(n, Param):
            params.add(n.name)
        elif isinstance(n, Coord):
            coords.add(n.axis)
        elif isinstance(n, Var):
            vars_.add(n.name)
        elif isinstance(n, Load):
            bufs.add(n.buf)
            walk(n.index)
        elif isinstance(n, UnOp):
            walk(n.a)
        elif isinstance(n, BinOp):
            walk(n.a)
            walk(n.b)
        elif isinstance(n, Select):
            walk(n.cond)
            walk(n.a)
            walk(n.b)

    walk(as_expr(e))
    return params, coords, vars_, bufs


def is_comptime(e: ExprLike) -> bool:
    """True when ``e`` depends only on constants and parameters (known when a body is placed)."""
    _, coords, vars_, bufs = names(e)
    return not coords and not vars_ and not bufs


def const_value(e: ExprLike) -> Number | None:
    """The value of a constant expression, else None."""
    e = as_expr(e)
    return e.value if isinstance(e, Const) else None
