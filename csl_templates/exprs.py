"""Printing ``simulator.expr`` expressions as CSL (typed, shared subexpressions bound once) and as
numpy (for the generated host script).

**Types.** CSL needs both operands of a binary operator to have one type (a ``comptime_int`` literal
adapts), so the printer infers a type for every node — parameters, variables and buffers have
declared types, coordinates are ``i32`` in the layout and ``i16`` at run time — and inserts
``@as(T, ..)`` where two differ (ints widen, an int meeting a float becomes the float). Conditions
are ``bool``: an integer used as one is printed ``(e != 0)``, a comparison used as a number
``(if (c) @as(T, 1) else @as(T, 0))``.

**Division.** The expression language has Python's floor semantics for ``//`` and ``%``; CSL's
integer ``/`` and ``%`` truncate. Where both operands are provably non-negative (constants,
parameters whose every placed value is ≥ 0, coordinates, loop counters, unsigned variables, and
sums, products, quotients and minima of those) the plain operators are printed; otherwise the forms
``((a % b) + b) % b`` (floor modulo) and ``(a - fmod) / b`` (floor quotient), right for every sign.

**Sharing.** Expression DAGs share nodes (the routing patterns reuse predicates heavily). Nodes that
occur more than once among the expressions of one statement (or of the layout's loop body) are
bound once, ``const _v3: i32 = ...;``, before their first use (``Bindings``).
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from plmr.errors import InputError
from simulator.expr import BinOp, Const, Coord, Expr, Load, Param, Select, UnOp, Var, as_expr

INT_TYPES = ("i16", "u16", "i32", "u32")
FLOAT_TYPES = ("f16", "f32")
CI, CF, BOOL = "comptime_int", "comptime_float", "bool"
_RANK = {"i16": 1, "u16": 1, "i32": 2, "u32": 2}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
BUFFER_CSL = {"fp16": "f16", "fp32": "f32"}


def unify(a: str, b: str) -> str:
    """The type two operands are brought to."""
    if a == b:
        return a
    if a in (CI, CF):
        return b if not (a == CF and b in INT_TYPES) else "f32"
    if b in (CI, CF):
        return a if not (b == CF and a in INT_TYPES) else "f32"
    if a == BOOL or b == BOOL:
        other = b if a == BOOL else a
        return other if other not in (BOOL,) else BOOL
    fa, fb = a in FLOAT_TYPES, b in FLOAT_TYPES
    if fa and fb:
        return "f32"
    if fa or fb:
        return a if fa else b
    if a.startswith("u") != b.startswith("u"):
        return "i32"
    return a if _RANK[a] >= _RANK[b] else b


@dataclass
class Scope:
    """What names mean where an expression is printed."""

    param_types: dict[str, str]  # parameter -> CSL type (int params i16/i32, floats f32, colours "color")
    var_types: dict[str, str] = field(default_factory=dict)
    buffer_types: dict[str, str] = field(default_factory=dict)  # buffer -> f16/f32
    coord: dict[str, str] = field(default_factory=dict)  # "x"/"y" -> CSL text
    coord_type: str = "i16"
    nonneg_params: frozenset = frozenset()
    nonneg_vars: frozenset = frozenset()
    param_bounds: dict = field(default_factory=dict)  # parameter -> (lowest, highest) placed value
    coord_bounds: dict = field(default_factory=dict)  # "x"/"y" -> (0, side - 1)


class Canon:
    """Hash-consing: structurally equal subexpressions become one node object, so sharing is found
    whether the author reused a Python object or built the same expression twice. Canonical nodes
    are kept alive here, so their ``id`` is a stable key."""

    def __init__(self):
        self._table: dict[tuple, Expr] = {}

    def __call__(self, e) -> Expr:
        memo: dict[int, Expr] = {}
        return self._canon(as_expr(e), memo)

    def _canon(self, e, memo: dict) -> Expr:
        if not isinstance(e, Expr):  # a plain number inside a node: a fresh Const, never memoised by id
            e = as_expr(e)
            memo = {}
        k = id(e)
        hit = memo.get(k)
        if hit is not None:
            return hit
        if isinstance(e, Const):
            key = ("C", type(e.value).__name__, e.value)
            node = e
        elif isinstance(e, Param):
            key, node = ("P", e.name), e
        elif isinstance(e, Var):
            key, node = ("V", e.name), e
        elif isinstance(e, Coord):
            key, node = ("X", e.axis), e
        elif isinstance(e, Load):
            i = self._canon(e.index, memo)
            key, node = ("L", e.buf, id(i)), None
            mk = lambda: Load(e.buf, i)  # noqa: E731
        elif isinstance(e, UnOp):
            a = self._canon(e.a, memo)
            key, node = ("U", e.op, id(a)), None
            mk = lambda: UnOp(e.op, a)  # noqa: E731
        elif isinstance(e, BinOp):
            a, b = self._canon(e.a, memo), self._canon(e.b, memo)
            same = _identity(e.op, a, b)
            if same is not None:  # x + 0, x * 1, ...: the operand itself
                memo[k] = same
                return same
            key, node = ("B", e.op, id(a), id(b)), None
            mk = lambda: BinOp(e.op, a, b)  # noqa: E731
        elif isinstance(e, Select):
            c, a, b = self._canon(e.cond, memo), self._canon(e.a, memo), self._canon(e.b, memo)
            key, node = ("S", id(c), id(a), id(b)), None
            mk = lambda: Select(c, a, b)  # noqa: E731
        else:
            raise InputError(f"not an expression: {e!r}")
        out = self._table.get(key)
        if out is None:
            out = self._table[key] = node if node is not None else mk()
        memo[k] = out
        return out


def _is_int(e: Expr, v: int) -> bool:
    return isinstance(e, Const) and isinstance(e.value, int) and not isinstance(e.value, bool) and e.value == v


def _identity(op: str, a: Expr, b: Expr) -> Expr | None:
    """The operand an integer identity leaves (0 + x, x - 0, 1 * x, x // 1), else None."""
    if op == "add":
        return b if _is_int(a, 0) else a if _is_int(b, 0) else None
    if op == "sub":
        return a if _is_int(b, 0) else None
    if op == "mul":
        return b if _is_int(a, 1) else a if _is_int(b, 1) else None
    if op == "div":
        return a if _is_int(b, 1) else None
    return None


class CslPrinter:
    """Prints expressions of one scope; ``bind`` marks shared nodes before printing a statement."""

    def __init__(self, scope: Scope, prefix: str = "_v"):
        self.scope = scope
        self.prefix = prefix
        self.canon = Canon()
        self.bound: dict[int, tuple[str, str]] = {}  # id(canonical node) -> (name, type)
        self._counter = 0
        self._types: dict[int, str] = {}
        self._bounds: dict[int, tuple] = {}
        self._ct: dict[int, bool] = {}
        #: a callback naming a comptime (parameters-only) subexpression as a top-level constant, or None
        self.hoist = None

    def _comptime(self, e: Expr) -> bool:
        """``e`` depends on constants and parameters only (known when the PE program is compiled)."""
        k = id(e)
        v = self._ct.get(k)
        if v is None:
            if isinstance(e, (Var, Coord, Load)):
                v = False
            elif isinstance(e, (Const, Param)):
                v = True
            else:
                v = all(self._comptime(c) for c in _children(e))
            self._ct[k] = v
        return v

    def hoisted_text(self, e: Expr) -> str:
        """The text of a hoisted constant's value (its own subexpressions printed inline)."""
        saved, self.hoist = self.hoist, None
        saved_b, self.bound = self.bound, {}
        try:
            return self._strip(self._print(e))
        finally:
            self.hoist, self.bound = saved, saved_b

    def set_nonneg_vars(self, names) -> None:
        self.scope.nonneg_vars = frozenset(names)
        self._bounds.clear()

    # ------------------------------------------------------------------------------ types
    def type_of(self, e: Expr) -> str:
        key = id(e)
        t = self._types.get(key)
        if t is None:
            t = self._types[key] = self._infer(e)
        return t

    def _infer(self, e: Expr) -> str:
        s = self.scope
        if isinstance(e, Const):
            if isinstance(e.value, float) and not math.isfinite(e.value):
                return "f32"  # no literal: a bit pattern (``_print``), typed f32
            return CI if isinstance(e.value, int) else CF
        if isinstance(e, Param):
            try:
                return s.param_types[e.name]
            except KeyError:
                raise InputError(f"parameter {e.name!r} is not declared here") from None
        if isinstance(e, Var):
            try:
                return s.var_types[e.name]
            except KeyError:
                raise InputError(f"variable {e.name!r} is not declared here") from None
        if isinstance(e, Coord):
            return s.coord_type
        if isinstance(e, Load):
            return s.buffer_types[e.buf]
        if isinstance(e, UnOp):
            return BOOL if e.op == "not" else self._num(self.type_of(e.a))
        if isinstance(e, Select):
            t = unify(self._num(self.type_of(e.a)), self._num(self.type_of(e.b)))
            return t if t not in (CI, CF) else ("i32" if t == CI else "f32")
        if isinstance(e, BinOp):
            if e.op in _CMP or e.op in ("and", "or"):
                return BOOL
            t = unify(self._num(self.type_of(e.a)), self._num(self.type_of(e.b)))
            if e.op == "fdiv" and t in INT_TYPES + (CI,):
                return "f32"
            return t
        raise InputError(f"not an expression: {e!r}")

    @staticmethod
    def _num(t: str) -> str:
        return "i16" if t == BOOL else t

    # ------------------------------------------------------------------------------ sharing
    def bind(self, roots: list) -> list[str]:
        """Declarations binding every non-leaf node shared among ``roots`` (children first)."""
        counts: dict[int, int] = {}
        nodes: dict[int, Expr] = {}
        order: list[int] = []

        def visit(n: Expr) -> None:
            k = id(n)
            counts[k] = counts.get(k, 0) + 1
            if counts[k] > 1 or k in self.bound:
                return
            nodes[k] = n
            for c in _children(n):
                visit(c)
            order.append(k)  # post-order: children before parents

        for r in roots:
            visit(self.canon(r))
        decls = []
        for k in order:
            n = nodes[k]
            if counts[k] < 2 or not _children(n) or k in self.bound:
                continue
            if self.hoist is not None and self._comptime(n):
                continue  # a top-level constant already
            t = self.type_of(n)
            if t in (CI, CF):
                t = "i32" if t == CI else "f32"
            text = self._print(n)
            self._counter += 1
            name = f"{self.prefix}{self._counter}"
            decls.append(f"const {name}: {t} = {self._strip(text)};")
            self.bound[k] = (name, t)
        return decls

    def unbind(self) -> None:
        self.bound.clear()

    # ------------------------------------------------------------------------------ printing
    def expr(self, e, want: str | None = None) -> str:
        """``e`` printed, converted to type ``want`` (a CSL type, ``bool``) if given."""
        e = self.canon(e)
        t = self.type_of(e)
        text = self._print(e)
        if want is None or want == t:
            return self._strip(text)
        return self._strip(self._convert(text, t, want))

    def cond(self, e) -> str:
        return self.expr(e, BOOL)

    def top(self, e, want: str | None = None) -> str:
        """``e`` printed for a top-level (comptime) declaration: no statement's bindings apply."""
        saved, self.bound = self.bound, {}
        saved_h, self.hoist = self.hoist, None
        try:
            return self.expr(e, want)
        finally:
            self.bound, self.hoist = saved, saved_h

    def _convert(self, text: str, have: str, want: str) -> str:
        if want == BOOL:
            if have == BOOL:
                return text
            return f"({text} != 0)"
        if have == BOOL:
            return f"(if ({self._strip(text)}) @as({want}, 1) else @as({want}, 0))"
        if have in (CI, CF):
            if have == CF and want in INT_TYPES:
                return f"@as({want}, {self._strip(text)})"
            return text
        if have == want:
            return text
        return f"@as({want}, {self._strip(text)})"

    @classmethod
    def _branch(cls, text: str) -> str:
        """A branch of an if-expression: a nested if-expression keeps its parentheses (``if (a) (if
        (b) x else y) else z``; without them the grammar is ambiguous)."""
        return text if text.startswith("(if ") else cls._strip(text)

    @staticmethod
    def _strip(text: str) -> str:
        """Drop one pair of redundant outer parentheses."""
        if text.startswith("(") and text.endswith(")"):
            depth = 0
            for i, ch in enumerate(text):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0 and i < len(text) - 1:
                    return text
            return text[1:-1]
        return text

    def _operand(self, e: Expr, t: str) -> str:
        return self._convert(self._print(e), self.type_of(e), t)

    def _print(self, e: Expr) -> str:
        b = self.bound.get(id(e))
        if b is not None:
            return b[0]
        if self.hoist is not None and _children(e) and self._comptime(e):
            return self.hoist(e)
        s = self.scope
        if isinstance(e, Const):
            v = e.value
            if isinstance(v, float):
                if not math.isfinite(v):
                    # CSL has no infinity or NaN literal: the IEEE single bit pattern, reinterpreted
                    bits = 0x7FC00000 if math.isnan(v) else (0x7F800000 if v > 0 else 0xFF800000)
                    return f"@bitcast(f32, @as(u32, 0x{bits:08X}))"
                r = repr(v)
                return r if v >= 0 else f"({r})"
            return str(v) if v >= 0 else f"({v})"
        if isinstance(e, Param):
            return e.name
        if isinstance(e, Var):
            return e.name
        if isinstance(e, Coord):
            try:
                return s.coord[e.axis]
            except KeyError:
                raise InputError(f"coordinate {e.axis} is not available here") from None
        if isinstance(e, Load):
            idx = self.expr(e.index, "u16")
            return f"{e.buf}[{idx}]"
        if isinstance(e, UnOp):
            if e.op == "not":
                return f"!{self._wrap(self._operand(e.a, BOOL))}"
            t = self.type_of(e)
            return f"(-{self._wrap(self._operand(e.a, t))})"
        if isinstance(e, Select):
            t = self.type_of(e)
            c = self._strip(self._operand(e.cond, BOOL))
            a = self._branch(self._operand(e.a, t))
            b = self._branch(self._operand(e.b, t))
            if self.type_of(e.a) in (CI, CF):
                a = f"@as({t}, {a})"
            if self.type_of(e.b) in (CI, CF):
                b = f"@as({t}, {b})"
            return f"(if ({c}) {a} else {b})"
        if isinstance(e, BinOp):
            return self._binop(e)
        raise InputError(f"not an expression: {e!r}")

    @staticmethod
    def _wrap(text: str) -> str:
        simple = text.replace("_", "").replace(".", "").isalnum()
        return text if simple or (text.startswith("(") and CslPrinter._strip(text) != text) else f"({text})"

    def _binop(self, e: BinOp) -> str:
        op = e.op
        if op in ("and", "or"):
            return f"({self._operand(e.a, BOOL)} {op} {self._operand(e.b, BOOL)})"
        ta, tb = self._num(self.type_of(e.a)), self._num(self.type_of(e.b))
        t = unify(ta, tb)
        if op == "fdiv" and t in INT_TYPES + (CI,):
            t = "f32"
        a, b = self._operand(e.a, t), self._operand(e.b, t)
        if op in _CMP:
            return f"({a} {_CMP[op]} {b})"
        if op in _ARITH:
            return f"({a} {_ARITH[op]} {b})"
        if op == "fdiv":
            return f"({a} / {b})"
        if op in ("min", "max"):  # operands print twice: Bindings binds them where it can
            rel = "<" if op == "min" else ">"
            if t in (CI, CF):
                return f"(if ({a} {rel} {b}) {a} else {b})"
            ta_ = f"@as({t}, {self._strip(a)})" if self.type_of(e.a) in (CI, CF) else a
            tb_ = f"@as({t}, {self._strip(b)})" if self.type_of(e.b) in (CI, CF) else b
            return f"(if ({a} {rel} {b}) {self._branch(ta_)} else {self._branch(tb_)})"
        if op in ("div", "mod"):
            if t in FLOAT_TYPES + (CF,):
                raise InputError(f"integer {'//' if op == 'div' else '%'} of float values has no CSL lowering: {e!r}")
            if self.nonneg(e.a) and self.nonneg(e.b):
                return f"({a} {'/' if op == 'div' else '%'} {b})"
            fmod = f"((({a} % {b}) + {b}) % {b})"
            return fmod if op == "mod" else f"(({a} - {fmod}) / {b})"
        raise InputError(f"unknown operator {op!r}")

    # ------------------------------------------------------------------------------ signs
    def nonneg(self, e: Expr) -> bool:
        """True when ``e`` is provably >= 0 (see the module docstring)."""
        lo = self.bounds(e)[0]
        return lo is not None and lo >= 0

    def bounds(self, e: Expr) -> tuple:
        """(lowest, highest) value ``e`` can take, None where unknown: parameters over the ranges the
        scope gives (the emitters give signs only, ``nonneg_params``, so what is proven does not
        depend on the mesh size), coordinates and variables proven non-negative over [0, ...);
        interval arithmetic with Python's floor ``//`` and ``%``."""
        key = id(e)
        b = self._bounds.get(key)
        if b is None:
            b = self._bounds[key] = self._bound(e)
        return b

    def _bound(self, e: Expr) -> tuple:
        s = self.scope
        if isinstance(e, Const):
            return (e.value, e.value)
        if isinstance(e, Param):
            if e.name in s.param_bounds:
                return s.param_bounds[e.name]
            return (0, None) if e.name in s.nonneg_params else (None, None)
        if isinstance(e, Coord):
            return s.coord_bounds.get(e.axis, (0, None))
        if isinstance(e, Var):
            ok = e.name in s.nonneg_vars or s.var_types.get(e.name, "").startswith("u")
            return (0, None) if ok else (None, None)
        if isinstance(e, UnOp):
            if e.op == "not":
                return (0, 1)
            lo, hi = self.bounds(e.a)
            return (None if hi is None else -hi, None if lo is None else -lo)
        if isinstance(e, Select):
            (al, ah), (bl, bh) = self.bounds(e.a), self.bounds(e.b)
            return (None if al is None or bl is None else min(al, bl), None if ah is None or bh is None else max(ah, bh))
        if not isinstance(e, BinOp):
            return (None, None)
        if e.op in _CMP or e.op in ("and", "or"):
            return (0, 1)
        (al, ah), (bl, bh) = self.bounds(e.a), self.bounds(e.b)
        add = lambda x, y: None if x is None or y is None else x + y  # noqa: E731
        if e.op == "add":
            return (add(al, bl), add(ah, bh))
        if e.op == "sub":
            return (add(al, None if bh is None else -bh), add(ah, None if bl is None else -bl))
        if e.op == "mul":
            if None not in (al, ah, bl, bh):
                c = [al * bl, al * bh, ah * bl, ah * bh]
                return (min(c), max(c))
            if al is not None and bl is not None and al >= 0 and bl >= 0:
                return (al * bl, None)
            return (None, None)
        if e.op in ("min", "max"):
            f = min if e.op == "min" else max
            lo = f(al, bl) if al is not None and bl is not None else (None if e.op == "min" else (al if bl is None else bl))
            hi = f(ah, bh) if ah is not None and bh is not None else (None if e.op == "max" else (ah if bh is None else bh))
            return (lo, hi)
        if e.op == "mod":  # floor modulo by a positive divisor lies in [0, divisor - 1]
            if bl is not None and bl > 0:
                return (0, None if bh is None else bh - 1)
            return (None, None)
        if e.op == "div":
            if bl is not None and bl > 0 and al is not None and al >= 0:
                return (al // (bh if bh is not None else al + 1) if bh else 0, None if ah is None else ah // bl)
            return (None, None)
        return (None, None)


def _children(e: Expr) -> tuple:
    if isinstance(e, BinOp):
        return (e.a, e.b)
    if isinstance(e, UnOp):
        return (e.a,)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Load):
        return (e.index,)
    return ()


def _is_simple(e: Expr, p: CslPrinter) -> bool:
    return not _children(e) or id(e) in p.bound


def needs_binding(e: Expr, p: CslPrinter) -> list:
    """Nodes that must be bound before ``e`` prints: operands used twice by ``min``/``max`` and by
    the floor forms of ``//``/``%``."""
    out = []
    seen = set()

    def walk(n: Expr) -> None:
        if id(n) in seen:
            return
        seen.add(id(n))
        for c in _children(n):
            walk(c)
        if isinstance(n, BinOp):
            twice = n.op in ("min", "max") or (n.op in ("div", "mod") and not (p.nonneg(n.a) and p.nonneg(n.b)))
            if twice:
                out.extend(c for c in (n.a, n.b) if _children(c) and not (p.hoist is not None and p._comptime(c)))

    walk(as_expr(e))
    return out


class Bindings:
    """Binds shared nodes (and operands printed twice) of a group of expressions, in order."""

    def __init__(self, printer: CslPrinter):
        self.p = printer

    def prepare(self, roots: list) -> list[str]:
        roots = [self.p.canon(r) for r in roots if r is not None]
        decls = self.p.bind(roots)
        # operands that min/max/floor forms print twice: bind them too (they are "shared")
        while True:
            extra = [n for r in roots for n in needs_binding(r, self.p) if id(n) not in self.p.bound]
            if not extra:
                break
            new = self.p.bind(extra + extra)
            if not new:
                break  # nothing left that a binding would help
            decls += new
        return decls


# ------------------------------------------------------------------------------------------------
# numpy (host script)
# ------------------------------------------------------------------------------------------------

_NP_BIN = {"add": "+", "sub": "-", "mul": "*", "div": "//", "mod": "%", "fdiv": "/"}
_NP_FN = {"min": "np.minimum", "max": "np.maximum", "and": "np.logical_and", "or": "np.logical_or"}


def numpy_expr(e, names: dict[str, str]) -> str:
    """``e`` as a numpy expression over arrays (floor ``//`` and ``%`` as numpy has them); leaves are
    looked up in ``names`` (``"x"``, ``"y"``, parameter and variable names). Comparisons give 0/1
    integers (``_i(...)``, defined by the host script)."""
    memo: dict[int, str] = {}

    def p(n: Expr) -> str:
        k = id(n)
        if k in memo:
            return memo[k]
        if isinstance(n, Const):
            r = repr(n.value)
        elif isinstance(n, (Param, Var)):
            r = names[n.name]
        elif isinstance(n, Coord):
            r = names[n.axis]
        elif isinstance(n, UnOp):
            r = f"_i(np.logical_not({p(n.a)}))" if n.op == "not" else f"(-{p(n.a)})"
        elif isinstance(n, Select):
            r = f"np.where({p(n.cond)} != 0, {p(n.a)}, {p(n.b)})"
        elif isinstance(n, BinOp):
            if n.op in _NP_BIN:
                r = f"({p(n.a)} {_NP_BIN[n.op]} {p(n.b)})"
            elif n.op in _CMP:
                r = f"_i({p(n.a)} {_CMP[n.op]} {p(n.b)})"
            else:
                inner = f"{_NP_FN[n.op]}({p(n.a)}, {p(n.b)})"
                r = f"_i({inner})" if n.op in ("and", "or") else inner
        else:
            raise InputError(f"{n!r} cannot be printed for the host script")
        memo[k] = r
        return r

    return p(as_expr(e))
