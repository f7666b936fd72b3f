"""A comptime evaluator for CSL: the part of the language a layout file (and a PE file's top-level
``comptime`` blocks and global initialisers) runs at compile time.

Scalar values are plain Python; see ``comptime_values`` for the rest. Two things make it fast enough
for a 720 x 720 layout:

* **Vectorised loops.** A ``for (@range(...))`` loop (and a ``var i = a; while (i < b) : (i += s)``
  counting loop) whose body only assigns variables declared inside it runs **once**, with the loop
  variable bound to a numpy array (``Vec``, one lane per iteration; nested loops add array axes).
  ``if`` on a lane-dependent condition runs each branch under a lane mask; values merge with
  ``np.where``; ``return`` inside a called function is handled per lane. Anything else (``break``,
  ``continue``, assigning an outer variable, a loop bound that differs per lane) raises
  ``NotVectorizable``; the loop's effects are rolled back and it runs iteration by iteration.
* **Lazy globals.** Top-level declarations are evaluated on first use (CSL globals may be used
  before they are declared), once.

Effects (``@set_tile_code``, ``@set_color_config``, ``@bind_local_task``, ...) are delegated to an
``effects`` object (``layout_reader.LayoutEffects``, ``pe_reader.PeEffects``), which sees lane arrays
when called from a vectorised loop.

With ``runtime=True`` the evaluator walks function and task bodies for the static checks: values
that are only known at run time are ``UNKNOWN``, ``if``s on unknown conditions visit both branches,
and loops visit their body once.
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Any, Callable

import numpy as np

from csl_templates import syntax_tree as st
from csl_templates.comptime_values import (
    DIRECTION_NAMES, MAX_LANE_AXES, UNKNOWN, VOID, ArrayVal, Color, Direction, Dsd, Dsr, EnumLiteral,
    EnumType, EnumVal, FnVal, ModuleVal, Opaque, Queue, StructType, StructVal, TaskId, TypeVal, UtId, Vec,
)


class EvalError(Exception):
    """A comptime error at a node (index out of range, unknown name, failed assertion, ...)."""

    def __init__(self, node: st.Node | None, message: str, definite: bool = True, undeclared: bool = False):
        super().__init__(message)
        self.node = node
        self.message = message
        self.undeclared = undeclared  # reported by the names.undeclared rule already
        self.definite = definite  # False: a construct this evaluator does not model, not a program error


class NotVectorizable(Exception):
    """The loop body cannot run on all lanes at once; run it iteration by iteration."""


class _Break(Exception):
    def __init__(self, label, value=VOID):
        self.label, self.value = label, value


class _Continue(Exception):
    def __init__(self, label):
        self.label = label


class _Return(Exception):
    def __init__(self, value):
        self.value = value


NOT_HANDLED = object()

#: Names every CSL file sees (hardware-and-csl.md §7.2).
SCALAR_TYPES = {"bool", "void", "type", "comptime_int", "comptime_float", "comptime_string",
                "comptime_struct", "imported_module", "color", "direction", "data_task_id", "local_task_id",
                "control_task_id", "input_queue", "output_queue", "ut_id", "mem1d_dsd", "mem4d_dsd",
                "fabin_dsd", "fabout_dsd", "dsr_dest", "dsr_src0", "dsr_src1", "f16", "f32", "bf16", "cb16",
                "f64", "anyopaque", "noreturn", "anytype"}


def is_int_type_name(name: str) -> bool:
    return len(name) > 1 and name[0] in "iu" and name[1:].isdigit()


@functools.lru_cache(maxsize=None)
def predeclared(name: str) -> Any:
    """The value of a predeclared name, or NOT_HANDLED (cached: type names are looked up at every ``@as``;
    the values are immutable)."""
    if name in DIRECTION_NAMES:
        return DIRECTION_NAMES[name]
    if name in SCALAR_TYPES or is_int_type_name(name):
        return TypeVal(name)
    return NOT_HANDLED


#: Constants of library modules that comptime code reads.
LIBRARY_CONSTANTS = {"<time>": {"tsc_size_words": 3}}


class Scope:
    __slots__ = ("vars", "parent", "region")

    def __init__(self, parent: "Scope | None", region: int):
        self.vars: dict[str, Any] = {}
        self.parent = parent
        self.region = region

    def find(self, name: str) -> "Scope | None":
        s = self
        while s is not None:
            if name in s.vars:
                return s
            s = s.parent
        return None


class _Frame:
    __slots__ = ("entry_mask", "ret_mask", "ret_value")

    def __init__(self, entry_mask):
        self.entry_mask = entry_mask
        self.ret_mask = None
        self.ret_value = None


class _Global:
    __slots__ = ("node", "state", "value")

    def __init__(self, node):
        self.node = node
        self.state = 0  # 0 not evaluated, 1 evaluating, 2 done
        self.value = None


def _is_vec(v) -> bool:
    return type(v) is Vec


def _np_of(v):
    """numpy array (or 0-d scalar) for a lane value; object arrays for non-numeric values."""
    if type(v) is Vec:
        return v.arr
    if isinstance(v, (bool, int, float, np.generic)) and not isinstance(v, Direction):
        return v
    a = np.empty((), dtype=object)
    a[()] = v
    return a


def _vec(arr) -> Any:
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return arr.item() if arr.dtype != object else arr[()]
    if arr.ndim < MAX_LANE_AXES:
        arr = arr.reshape((1,) * (MAX_LANE_AXES - arr.ndim) + arr.shape)
    return Vec(arr)


def _obj_map(fn: Callable, *vals) -> Any:
    """Apply a scalar function lane by lane (object results)."""
    arrs = [v.arr if type(v) is Vec else _np_of(v) for v in vals]
    b = np.broadcast_arrays(*[np.asarray(a, dtype=object) if np.asarray(a).dtype == object else np.asarray(a)
                              for a in arrs])
    out = np.empty(b[0].shape, dtype=object)
    flat_in = [x.ravel() for x in b]
    flat_out = out.ravel()
    cache: dict = {}
    for i in range(flat_out.size):
        key = tuple(x[i] for x in flat_in)
        try:
            r = cache[key]
        except (KeyError, TypeError):
            r = fn(*[k.item() if isinstance(k, np.generic) else k for k in key])
            try:
                cache[key] = r
            except TypeError:
                pass
        flat_out[i] = r
    return _numeric_if_possible(out)


def _numeric_if_possible(out: np.ndarray):
    if out.size and all(isinstance(x, (bool, np.bool_)) for x in out.flat):
        return _vec(out.astype(bool))
    if out.size and all(isinstance(x, (int, np.integer)) and not isinstance(x, (bool, Direction)) for x in out.flat):
        return _vec(out.astype(np.int64))
    return _vec(out)


def select(cond, a, b):
    """Lane-wise ``cond ? a : b``; structs with the same fields merge field by field."""
    if a is b:
        return a
    if type(a) is type(b) and not _is_vec(a) and not isinstance(a, (StructVal, ArrayVal)):
        try:
            if a == b:
                return a
        except Exception:  # noqa: BLE001
            pass
    if isinstance(a, StructVal) and isinstance(b, StructVal) and list(a.fields) == list(b.fields) \
            and len(a.items) == len(b.items):
        return StructVal({k: select(cond, a.fields[k], b.fields[k]) for k in a.fields},
                         tuple(select(cond, x, y) for x, y in zip(a.items, b.items)))
    # direction lists of different lengths (``.{ NORTH }`` in some lanes, ``.{}`` in others): bit masks
    if isinstance(a, DirBits) or isinstance(b, DirBits) or (
            isinstance(a, StructVal) and isinstance(b, StructVal) and not a.fields and not b.fields):
        da, db = _dir_mask(a), _dir_mask(b)
        if da is not None and db is not None:
            return DirBits(np.where(cond, da, db))
    # other structs of different shapes: one struct per lane
    av, bv = _lane_tuples(a), _lane_tuples(b)
    ad = np.asarray(av).dtype
    bd = np.asarray(bv).dtype
    if ad == object or bd == object:
        av = np.asarray(av, dtype=object) if ad != object else av
        bv = np.asarray(bv, dtype=object) if bd != object else bv
    return _vec(np.where(cond, av, bv))


class DirBits:
    """Direction lists that differ per lane, as a bit mask (``1 << port``, as ``Direction`` values
    are) per lane: what a comptime function returning ``.{ NORTH }`` on some PEs and ``.{}`` on
    others gives when evaluated for many PEs at once. Route readers take it as the lists' bits."""

    __slots__ = ("arr",)

    def __init__(self, arr):
        self.arr = np.asarray(arr, dtype=np.int64)

    def __repr__(self) -> str:
        return f"DirBits{self.arr.shape}"


def object_codes(arr: np.ndarray, few: int = 16) -> tuple[list, np.ndarray]:
    """(the distinct objects of an object array, each element's index into them, in ``arr``'s shape):
    distinct by identity, read from the array's object pointers without a Python call per element.
    A lane array of a layout holds a few objects (a comptime function returns one of a handful of
    constants) on half a million lanes; mapping those few once beats converting every lane."""
    flat = np.ascontiguousarray(arr, dtype=object).reshape(-1)
    n = flat.size
    if n == 0:
        return [], np.zeros(arr.shape, dtype=np.int64)
    # an object array's buffer is its elements' pointers: equal pointers, the same object
    ptrs = np.ctypeslib.as_array(ctypes.cast(flat.ctypes.data, ctypes.POINTER(ctypes.c_ssize_t)),
                                 shape=(n,)).copy()
    codes = np.empty(n, dtype=np.int64)
    todo = np.ones(n, dtype=bool)
    objs: list = []
    i = 0
    while len(objs) < few:  # few distinct: one pass over the lanes per object, in order of first use
        sel = ptrs == ptrs[i]
        codes[sel] = len(objs)
        objs.append(flat[i])
        todo &= ~sel
        i = int(todo.argmax())
        if not todo[i]:
            return objs, codes.reshape(arr.shape)
    uniq, first, inv = np.unique(ptrs, return_index=True, return_inverse=True)
    return [flat[j] for j in first.tolist()], inv.reshape(arr.shape)


def _as_bits(arr: np.ndarray) -> np.ndarray:
    """Per element of an object array, ``int(d)`` of a ``Direction`` and -1 for anything else."""
    objs, codes = object_codes(arr)
    table = np.array([int(d) if isinstance(d, Direction) else -1 for d in objs], dtype=np.int64)
    return table[codes]


def _dir_mask(v):
    """Bit mask (int or lane array) of a direction list value, or None when ``v`` is not one."""
    if isinstance(v, DirBits):
        return v.arr
    if not isinstance(v, StructVal) or v.fields:
        return None
    total: Any = 0
    for it in v.items:
        if isinstance(it, Direction):
            total = total | int(it)
        elif _is_vec(it) and it.arr.dtype == object:
            bits = _as_bits(it.arr)
            if (bits < 0).any():
                return None
            total = total | bits
        else:
            return None
    return total


def _lane_tuples(v):
    """``_np_of(v)``, but a struct whose fields or items vary per lane becomes an object array of one
    plain struct per lane (so structs of different shapes can be selected lane by lane)."""
    if not isinstance(v, StructVal):
        return _np_of(v)
    parts = list(v.fields.values()) + list(v.items)
    if not any(_is_vec(x) for x in parts):
        return _np_of(v)
    shape = np.broadcast_shapes(*[x.arr.shape for x in parts if _is_vec(x)])
    cols = [np.broadcast_to(_lane_tuples(x), shape) for x in parts]
    nf = len(v.fields)
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        vals = [c[idx] for c in cols]
        out[idx] = StructVal(dict(zip(v.fields, vals[:nf])), tuple(vals[nf:]))
    return out


def _trunc_div(a, b):
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return np.trunc(np.true_divide(a, b)).astype(np.int64) if np.issubdtype(np.result_type(a, b), np.integer) \
        else np.true_divide(a, b)


def _trunc_rem(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a - b * _trunc_div(a, b)
    return np.fmod(a, b)


def _is_intlike(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


_ARITH = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "<<": lambda a, b: a << b,
    ">>": lambda a, b: a >> b,
    "&": lambda a, b: a & b,
    "|": lambda a, b: a | b,
    "^": lambda a, b: a ^ b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


@functools.lru_cache(maxsize=None)
def _handlers(cls: type, prefix: str) -> tuple:
    """``(node class, method name)`` of ``cls``'s ``ev_``/``ex_`` handlers, found once per class (an
    evaluator is made per PE parameter set)."""
    return tuple((node, prefix + node.__name__) for node in st.Node.__subclasses__()
                 if hasattr(cls, prefix + node.__name__))


def _bound(ev, prefix: str) -> dict:
    return {node: getattr(ev, name) for node, name in _handlers(type(ev), prefix)}


class Evaluator:
    """Evaluates one module's comptime code. See the module docstring."""

    def __init__(self, module: st.Module, *, arch: str = "wse2", params: dict | None = None,
                 effects: Any = None, vectorize: bool = True, loader: Callable | None = None,
                 library_modules: dict | None = None):
        self.module = module
        self.arch = arch
        self.params = dict(params or {})
        self.effects = effects
        self.effect_names = getattr(effects, "names", frozenset())
        self.vectorize = vectorize
        self.loader = loader  # path -> Module, for @import_module of local files
        self.library_modules = library_modules or {}
        self.globals: dict[str, _Global] = {}
        self.unbound_params: list[st.ParamDecl] = []
        for item in module.items:
            if isinstance(item, (st.ParamDecl, st.VarDecl, st.FnDecl)):
                self.globals.setdefault(item.name, _Global(item))
        self.runtime = False  # inside a function/task body walked for the checks
        self.mask = None
        self.depth = 0
        self.lane_shape = [1] * MAX_LANE_AXES
        self.region = 0
        self._regions = 0
        self.frames: list[_Frame] = []
        self.call_depth = 0
        self.scope = Scope(None, 0)
        self.visitor: Callable | None = None  # runtime walk: called with (node, value) per builtin call
        self.path_stack: list = []  # runtime walk: (if-node, branch) of unknown conditions
        # runtime walk: branches of ``if`` statements whose condition was known (ids of the branch nodes),
        # taken and not taken; a branch only ever not taken is pruned by cslc (no code)
        self.branches_taken: set = set()
        self.branches_pruned: set = set()
        # ids of run-time code's ``if`` statements whose condition was known at comptime (cslc keeps
        # no test for them) and of those whose condition was not, for the code-size estimate
        self.ifs_comptime: set = set()
        self.ifs_runtime: set = set()
        self._dispatch = _bound(self, "ev_")
        self._exec_dispatch = _bound(self, "ex_")

    # ------------------------------------------------------------------ entry points
    def global_value(self, name: str, node: st.Node | None = None) -> Any:
        g = self.globals.get(name)
        if g is None:
            raise EvalError(node, f"undeclared identifier '{name}'", undeclared=True)
        if g.state == 2:
            return g.value
        if g.state == 1:
            raise EvalError(g.node, f"'{name}' depends on itself")
        g.state = 1
        saved = self._enter_global()
        try:
            g.value = self._eval_global(g.node)
        finally:
            self._leave_global(saved)
            if g.state == 1:
                g.state = 0
        g.state = 2
        return g.value

    def _enter_global(self):
        saved = (self.scope, self.mask, self.depth, list(self.lane_shape), self.region, self.runtime, self.frames)
        self.scope, self.mask, self.depth, self.region, self.runtime, self.frames = Scope(None, 0), None, 0, 0, False, []
        self.lane_shape = [1] * MAX_LANE_AXES
        return saved

    def _leave_global(self, saved):
        (self.scope, self.mask, self.depth, self.lane_shape, self.region, self.runtime, self.frames) = saved

    def _eval_global(self, node):
        if isinstance(node, st.ParamDecl):
            if node.name in self.params:
                return self.params[node.name]
            if node.default is not None:
                return self.eval(node.default)
            self.unbound_params.append(node)
            return UNKNOWN
        if isinstance(node, st.FnDecl):
            return FnVal(node, self)
        if node.extern or node.init is None:
            return UNKNOWN
        value = self.eval(node.init)
        if node.type is not None:
            value = self._coerce(self.eval(node.type), value, node.init)
        return value

    def run_block(self, block: st.Block) -> None:
        """Run a top-level ``comptime {}`` or ``layout {}`` block."""
        saved = self._enter_global()
        try:
            self.exec_block(block)
        except _Break as b:
            raise EvalError(block, f"'break{' :' + b.label if b.label else ''}' outside a loop or labelled block") from None
        except _Continue:
            raise EvalError(block, "'continue' outside a loop") from None
        except _Return:
            raise EvalError(block, "'return' outside a function") from None
        finally:
            self._leave_global(saved)

    def eval_all_globals(self) -> None:
        for name in list(self.globals):
            self.global_value(name)

    # ------------------------------------------------------------------ expressions
    def eval(self, node: st.Node) -> Any:
        fn = self._dispatch.get(type(node))
        if fn is None:
            raise EvalError(node, f"{type(node).__name__} is not a comptime expression", definite=False)
        return fn(node)

    def ev_IntLit(self, n):
        return n.value

    def ev_FloatLit(self, n):
        return n.value

    def ev_CharLit(self, n):
        return n.value

    def ev_StringLit(self, n):
        return n.value

    def ev_BoolLit(self, n):
        return n.value

    def ev_AnyType(self, n):
        return TypeVal("anytype")

    def ev_EnumLit(self, n):
        return EnumLiteral(n.name)

    def ev_Asm(self, n):
        return UNKNOWN

    def ev_Name(self, n):
        name = n.id
        s = self.scope
        while s is not None:
            v = s.vars.get(name, NOT_HANDLED)
            if v is not NOT_HANDLED:
                return v
            s = s.parent
        g = self.globals.get(name)
        if g is not None:
            if self.runtime and isinstance(g.node, st.VarDecl) and g.node.kind == "var":
                return UNKNOWN
            return self.global_value(name, n)
        v = predeclared(name)
        if v is not NOT_HANDLED:
            return v
        if name == "_":
            return VOID
        raise EvalError(n, f"undeclared identifier '{name}'", undeclared=True)

    def ev_ComptimeExpr(self, n):
        saved = self.runtime
        self.runtime = False
        try:
            return self.eval(n.expr)
        finally:
            self.runtime = saved

    def ev_Block(self, n):
        scope = Scope(self.scope, self.region)
        saved = self.scope
        self.scope = scope
        try:
            for s in n.stmts:
                self.exec(s)
        except _Break as b:
            if n.label is not None and b.label == n.label:
                return b.value
            raise
        finally:
            self.scope = saved
        return VOID

    def ev_Unary(self, n):
        v = self.eval(n.operand) if n.op != "&" else self._address_of(n.operand)
        if v is UNKNOWN:
            return UNKNOWN
        if n.op == "-":
            return _vec(-v.arr) if _is_vec(v) else -v
        if n.op == "!":
            return _vec(np.logical_not(v.arr)) if _is_vec(v) else (not v)
        if n.op == "~":
            return _vec(~v.arr) if _is_vec(v) else ~v
        return v

    def _address_of(self, node):
        root = node
        while isinstance(root, (st.Field, st.Index, st.Deref)):
            root = root.obj
        return Opaque("&" + (root.id if isinstance(root, st.Name) else "expr"))

    def ev_Binary(self, n):
        op = n.op
        if op in ("and", "or"):
            return self._logic(n)
        a = self.eval(n.left)
        b = self.eval(n.right)
        if a is UNKNOWN or b is UNKNOWN:
            return UNKNOWN
        if isinstance(a, Opaque) or isinstance(b, Opaque):
            return UNKNOWN if self.runtime else Opaque(f"({a!r} {op} {b!r})")
        if _is_vec(a) or _is_vec(b):
            x, y = _np_of(a), _np_of(b)
            if op == "/":
                r = _trunc_div(x, y) if (np.issubdtype(np.asarray(x).dtype, np.integer)
                                         and np.issubdtype(np.asarray(y).dtype, np.integer)) else np.true_divide(x, y)
            elif op == "%":
                r = np.fmod(x, y)
            else:
                try:
                    r = _ARITH[op](x, y)
                except TypeError:
                    return _obj_map(lambda p, q: self._scalar_binop(n, op, p, q), a, b)
            return _vec(r)
        return self._scalar_binop(n, op, a, b)

    def _scalar_binop(self, n, op, a, b):
        try:
            if op == "/":
                if _is_intlike(a) and _is_intlike(b):
                    if b == 0:
                        raise EvalError(n, "division by zero")
                    return _trunc_div(int(a), int(b))
                return a / b
            if op == "%":
                if _is_intlike(a) and _is_intlike(b):
                    if b == 0:
                        raise EvalError(n, "remainder by zero")
                    return _trunc_rem(int(a), int(b))
                return math.fmod(a, b)
            if op in ("==", "!="):
                if isinstance(a, EnumLiteral) and isinstance(b, EnumVal):
                    a, b = a.name, b.name
                elif isinstance(b, EnumLiteral) and isinstance(a, EnumVal):
                    a, b = a.name, b.name
            return _ARITH[op](a, b)
        except EvalError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise EvalError(n, f"cannot apply '{op}' to {a!r} and {b!r} ({exc})", definite=False) from None

    def _logic(self, n):
        a = self.eval(n.left)
        if a is UNKNOWN:
            self.eval(n.right)
            return UNKNOWN
        if _is_vec(a):
            la = a.arr.astype(bool)
            need = la if n.op == "and" else ~la
            saved = self.mask
            self.mask = need if saved is None else (saved & need)
            try:
                b = self.eval(n.right) if self.mask.any() else False
            finally:
                self.mask = saved
            if b is UNKNOWN:
                return UNKNOWN
            lb = np.asarray(_np_of(b)).astype(bool)
            return _vec(np.logical_and(la, lb) if n.op == "and" else np.logical_or(la, lb))
        if n.op == "and":
            if not a:
                return False
        elif a:
            return True
        b = self.eval(n.right)
        if _is_vec(b):
            return _vec(b.arr.astype(bool))
        return b if b is UNKNOWN else bool(b)

    def ev_If(self, n):
        c = self.eval(n.cond)
        if c is UNKNOWN:
            self.path_stack.append((n, 0))
            try:
                self.eval(n.then)
            finally:
                self.path_stack[-1] = (n, 1)
            try:
                if n.else_ is not None:
                    self.eval(n.else_)
            finally:
                self.path_stack.pop()
            return UNKNOWN
        if _is_vec(c):
            carr = c.arr.astype(bool)
            saved = self.mask
            m_then = carr if saved is None else saved & carr
            m_else = ~carr if saved is None else saved & ~carr
            a = b = VOID
            try:
                if m_then.any():
                    self.mask = m_then
                    a = self.eval(n.then)
                if m_else.any():
                    self.mask = m_else
                    b = self.eval(n.else_) if n.else_ is not None else VOID
            finally:
                self.mask = saved
            if not m_then.any():
                return b
            if not m_else.any():
                return a
            return select(carr, a, b)
        if c:
            return self.eval(n.then)
        return self.eval(n.else_) if n.else_ is not None else VOID

    def ev_Switch(self, n):
        subject = self.eval(n.subject)
        if subject is UNKNOWN or _is_vec(subject):
            if _is_vec(subject):
                raise NotVectorizable("switch on a lane-dependent value")
            for i, p in enumerate(n.prongs):
                self.path_stack.append((n, i))
                try:
                    self._prong_body(p)
                finally:
                    self.path_stack.pop()
            return UNKNOWN
        default = None
        chosen = None
        for p in n.prongs:
            if p.items is None:
                default = p
                continue
            if any(self._switch_match(subject, self.eval(item)) for item in p.items):
                chosen = p
                break
        chosen = chosen or default
        if chosen is None:
            raise EvalError(n, f"switch on {subject!r} matches no prong")
        if self.runtime:  # the other prongs are pruned for this parameter set (see branches_pruned)
            self.branches_taken.add(id(chosen))
            self.branches_pruned.update(id(p) for p in n.prongs if p is not chosen)
        return self._prong_body(chosen)

    def _switch_match(self, subject, v) -> bool:
        if isinstance(subject, EnumVal) and isinstance(v, EnumLiteral):
            return subject.name == v.name
        if isinstance(v, EnumVal) and isinstance(subject, EnumLiteral):
            return subject.name == v.name
        return subject == v

    def _prong_body(self, p):
        if p.assign_op is not None:
            self._assign(st.Assign(p.body, p.assign_op, p.assign_value, line=p.line, col=p.col))
            return VOID
        return self.eval(p.body)

    def ev_Lambda(self, n):
        extents = tuple(self.eval(e) for e in n.extents)
        return StructVal({"_tensor_access": n, "extents": StructVal(items=extents)})

    def ev_StructLit(self, n):
        return StructVal({f.name: self.eval(f.value) for f in n.fields}, tuple(self.eval(i) for i in n.items))

    def ev_TypedInit(self, n):
        t = self.eval(n.type)
        if isinstance(t, TypeVal) and t.name == "array":
            items = [self.eval(i) for i in n.items]
            if n.fields:
                raise EvalError(n, "an array initialiser takes values, not fields")
            total = 1
            for d in t.dims:
                total = total * d if isinstance(d, int) else total
            if isinstance(t.dims[0], int) and len(items) != total and t.dims != (VOID,):
                raise EvalError(n, f"array of {total} element(s) initialised with {len(items)}")
            return ArrayVal(t.elem, t.dims, items)
        fields = {f.name: self.eval(f.value) for f in n.fields}
        if isinstance(t, StructType):
            out = {}
            for name, _ftype, default in t.fields:
                if name in fields:
                    out[name] = fields.pop(name)
                elif default is not NOT_HANDLED:
                    out[name] = default
                else:
                    raise EvalError(n, f"missing field '.{name}'")
            if fields:
                raise EvalError(n, f"no field '.{next(iter(fields))}' in this struct")
            return StructVal(out)
        return StructVal(fields, tuple(self.eval(i) for i in n.items))

    def ev_ArrayType(self, n):
        dims = tuple(self._as_int_or_opaque(self.eval(d)) for d in n.dims)
        return TypeVal("array", dims, self.eval(n.elem))

    def _as_int_or_opaque(self, v):
        if _is_intlike(v):
            return int(v)
        if _is_vec(v):
            raise NotVectorizable("lane-dependent array size")
        return v

    def ev_PointerType(self, n):
        return TypeVal("many_ptr" if n.many else "ptr", (), self.eval(n.elem), n.const)

    def ev_OptionalType(self, n):
        return TypeVal("optional", (), self.eval(n.elem))

    def ev_FnType(self, n):
        return TypeVal(n.kind + "_type", (), None)

    def ev_StructType(self, n):
        fields = []
        for f in n.fields:
            default = self.eval(f.default) if f.default is not None else NOT_HANDLED
            fields.append((f.name, self.eval(f.type), default))
        return StructType(tuple(fields))

    def ev_EnumType(self, n):
        members, nxt = [], 0
        for m in n.members:
            if m.value is not None:
                nxt = self.eval(m.value)
            members.append((m.name, nxt))
            nxt = nxt + 1 if isinstance(nxt, int) else nxt
        return EnumType(tuple(members))

    def ev_Field(self, n):
        obj = self.eval(n.obj)
        return self._field(n, obj, n.name)

    def _field(self, n, obj, name):
        if obj is UNKNOWN:
            return UNKNOWN
        if isinstance(obj, StructVal):
            if name in obj.fields:
                return obj.fields[name]
            if name == "len" and obj.items:
                return len(obj.items)
            raise EvalError(n, f"no field '.{name}' in {obj!r}")
        if isinstance(obj, ModuleVal):
            if obj.evaluator is not None:
                return obj.evaluator.global_value(name, n)
            consts = LIBRARY_CONSTANTS.get(obj.name, {})
            if name in consts:
                return consts[name]
            return Opaque(f"{obj.name}.{name}")
        if isinstance(obj, EnumType):
            for mname, value in obj.members:
                if mname == name:
                    return EnumVal(obj, mname, value)
            raise EvalError(n, f"enum has no member '{name}'")
        if isinstance(obj, ArrayVal) and name == "len":
            return obj.dims[0]
        if _is_vec(obj):
            return _obj_map(lambda o: self._field(n, o, name), obj)
        if isinstance(obj, Opaque):
            return Opaque(f"{obj.name}.{name}")
        if isinstance(obj, Dsd):
            return obj.fields.get(name, UNKNOWN)
        if self.runtime:
            return UNKNOWN
        raise EvalError(n, f"cannot read field '.{name}' of {obj!r}", definite=False)

    def ev_Deref(self, n):
        self.eval(n.obj)
        return UNKNOWN if self.runtime else Opaque("deref")

    def ev_Index(self, n):
        obj = self.eval(n.obj)
        idx = [self.eval(i) for i in n.indices]
        if obj is UNKNOWN or any(i is UNKNOWN for i in idx):
            return UNKNOWN
        if isinstance(obj, StructVal) and obj.items and len(idx) == 1:
            obj = ArrayVal(None, (len(obj.items),), list(obj.items))
        if not isinstance(obj, ArrayVal):
            if self.runtime or isinstance(obj, Opaque):
                return UNKNOWN
            raise EvalError(n, f"cannot index {obj!r}", definite=False)
        if len(idx) != len(obj.dims):
            raise EvalError(n, f"array of {len(obj.dims)} dimension(s) indexed with {len(idx)}")
        if any(_is_vec(i) for i in idx):
            flat = 0
            for i, d in zip(idx, obj.dims):
                flat = flat * d + np.asarray(_np_of(i))
            active = self._active_mask_full()
            bad = (flat < 0) | (flat >= len(obj.items))
            if active is not None:
                bad = np.broadcast_to(bad, active.shape) & active
            if np.any(bad):
                raise EvalError(n, f"index out of range for an array of {len(obj.items)}")
            flat = np.clip(flat, 0, max(0, len(obj.items) - 1))
            items = np.empty(len(obj.items), dtype=object)
            for k, it in enumerate(obj.items):
                items[k] = it
            return _numeric_if_possible(items[flat])
        flat = 0
        for i, d in zip(idx, obj.dims):
            if not _is_intlike(i):
                raise EvalError(n, f"array index must be an integer, got {i!r}")
            if isinstance(d, int) and not 0 <= i < d:
                raise EvalError(n, f"index {i} out of range for dimension of {d}")
            flat = flat * (d if isinstance(d, int) else 0) + int(i)
        if not 0 <= flat < len(obj.items):
            raise EvalError(n, f"index out of range for an array of {len(obj.items)}")
        return obj.items[flat]

    def _active_mask_full(self):
        if self.mask is None:
            return None
        return np.broadcast_to(self.mask, tuple(self.lane_shape))

    def ev_Call(self, n):
        callee = self.eval(n.callee)
        if self.runtime:  # run-time calls are not followed; their bodies are walked on their own
            for a in n.args:
                self.eval(a)
            return UNKNOWN
        args = [self.eval(a) for a in n.args]
        return self.call_value(n, callee, args)

    def call_value(self, n, callee, args):
        if isinstance(callee, FnVal):
            return self.call_function(n, callee, args)
        if isinstance(callee, Opaque):
            return Opaque(f"{callee.name}()")
        if isinstance(callee, TypeVal):  # a generic type constructor like pair(i32, f16)
            return TypeVal(f"{callee.name}(...)")
        if callee is UNKNOWN:
            return UNKNOWN
        raise EvalError(n, f"{callee!r} is not callable", definite=False)

    def call_function(self, n, fn: FnVal, args: list):
        decl = fn.decl
        if decl.body is None:
            return UNKNOWN
        if len(args) != len(decl.params):
            raise EvalError(n, f"'{decl.name}' takes {len(decl.params)} argument(s), got {len(args)}")
        if self.call_depth > 200:
            raise EvalError(n, "comptime recursion too deep")
        owner = fn.scope if isinstance(fn.scope, Evaluator) else self
        swapped = None
        if owner is not self:  # a function of an imported module: its globals, this evaluator's lanes
            swapped = (self.globals, self.params, self.module, self.loader)
            self.globals, self.params, self.module, self.loader = owner.globals, owner.params, owner.module, owner.loader
        scope = Scope(None, self.region)
        for p, a in zip(decl.params, args):
            if p.name is not None:
                scope.vars[p.name] = a
        saved_scope = self.scope
        self.scope = scope
        frame = _Frame(self.mask)
        self.frames.append(frame)
        self.call_depth += 1
        try:
            self.exec_block(decl.body, new_scope=False)
            result = VOID
        except _Return as r:
            result = r.value
        finally:
            self.call_depth -= 1
            self.frames.pop()
            self.scope = saved_scope
            self.mask = frame.entry_mask
            if swapped is not None:
                self.globals, self.params, self.module, self.loader = swapped
        if frame.ret_mask is not None:
            entry = np.broadcast_to(True if frame.entry_mask is None else frame.entry_mask, tuple(self.lane_shape))
            if (entry & ~frame.ret_mask).any():
                result = select(frame.ret_mask, frame.ret_value, result)
            else:
                result = frame.ret_value
        return result

    # ------------------------------------------------------------------ builtins
    def b_allocate_fifo(self, n):
        """A FIFO over a global array: named after the array, so the rules can tell which op fills and
        which drains the same FIFO."""
        for a in n.args:
            self.eval(a)
        arr = n.args[0] if n.args else None
        return Opaque(f"@allocate_fifo({arr.id})" if isinstance(arr, st.Name) else "@allocate_fifo")

    def ev_BuiltinCall(self, n):
        name = n.name
        if name in self.effect_names:
            v = self.effects.builtin(self, n)
            if v is not NOT_HANDLED:
                return v
        fn = getattr(self, "b_" + name, None)
        if fn is None:
            for a in n.args:
                self.eval(a)
            return UNKNOWN if self.runtime else Opaque("@" + name)
        return fn(n)

    def args(self, n) -> list:
        return [self.eval(a) for a in n.args]

    def b_is_arch(self, n):
        (a,) = self.args(n)
        return a == self.arch

    def b_range(self, n):
        a = self.args(n)
        return ("range", *a[1:])

    def b_as(self, n):
        t, v = self.args(n)
        return self._coerce(t, v, n)

    def _coerce(self, t, v, n):
        if v is UNKNOWN or not isinstance(t, TypeVal):
            return v
        if t.name in ("f16", "f32", "bf16", "cb16", "f64", "comptime_float"):
            if _is_vec(v):
                return _vec(v.arr.astype(np.float64))
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        if is_int_type_name(t.name) or t.name == "comptime_int":
            if _is_vec(v) and v.arr.dtype.kind in "fb":
                return _vec(v.arr.astype(np.int64))
            if isinstance(v, (float, bool)):
                return int(v)
        if t.name == "array" and isinstance(v, StructVal) and v.items and not v.fields:
            return ArrayVal(t.elem, t.dims, list(v.items))
        if t.name == "bool" and _is_vec(v):
            return _vec(v.arr.astype(bool))
        return v

    def b_bitcast(self, n):
        t, v = self.args(n)
        if isinstance(t, TypeVal) and (is_int_type_name(t.name) or t.name == "comptime_int") and _is_intlike(v):
            bits = int(t.name[1:]) if is_int_type_name(t.name) else 64
            v = int(v) & ((1 << bits) - 1)
            if t.name[0] == "i" and v >= 1 << (bits - 1):
                v -= 1 << bits
            return v
        if _is_vec(v) or isinstance(v, (int, float)) and not self.runtime:
            return v if _is_vec(v) or _is_intlike(v) else UNKNOWN
        return UNKNOWN if self.runtime else Opaque("@bitcast")

    b_ptrcast = b_bitcast

    def b_zeros(self, n):
        (t,) = self.args(n)
        if isinstance(t, TypeVal) and t.name == "array" and all(isinstance(d, int) for d in t.dims):
            total = 1
            for d in t.dims:
                total *= d
            zero = 0.0 if isinstance(t.elem, TypeVal) and t.elem.name[0] in "fbc" and t.elem.name != "bool" else 0
            return ArrayVal(t.elem, t.dims, [zero] * total)
        if isinstance(t, TypeVal) and t.name == "array":
            return ArrayVal(t.elem, t.dims, [])
        return 0

    def b_constants(self, n):
        t, v = self.args(n)
        if isinstance(t, TypeVal) and t.name == "array" and all(isinstance(d, int) for d in t.dims):
            total = 1
            for d in t.dims:
                total *= d
            return ArrayVal(t.elem, t.dims, [v] * total)
        return Opaque("@constants")

    def b_concat_structs(self, n):
        a, b = self.args(n)
        if not isinstance(a, StructVal) or not isinstance(b, StructVal):
            if UNKNOWN in (a, b):
                return UNKNOWN
            if isinstance(a, Opaque) or isinstance(b, Opaque):
                return Opaque("@concat_structs")
            raise EvalError(n, "@concat_structs takes two structs", definite=False)
        dup = set(a.fields) & set(b.fields)
        if dup:
            raise EvalError(n, f"@concat_structs: field '.{sorted(dup)[0]}' in both structs")
        return StructVal({**a.fields, **b.fields}, a.items + b.items)

    def b_get_color(self, n):
        (c,) = self.args(n)
        if _is_vec(c):
            return _obj_map(lambda x: Color(int(x)) if _is_intlike(x) else Opaque("color"), c)
        if _is_intlike(c):
            return Color(int(c))
        return UNKNOWN if c is UNKNOWN else Opaque("color")

    def b_get_int(self, n):
        (c,) = self.args(n)
        if isinstance(c, (Color, TaskId, Queue, UtId)):
            return c.id
        if _is_vec(c):
            return _obj_map(lambda x: x.id if hasattr(x, "id") else x, c)
        return c if _is_intlike(c) else UNKNOWN

    b_get_color_id = b_get_int

    def b_get_local_task_id(self, n):
        (v,) = self.args(n)
        return TaskId("local", int(v)) if _is_intlike(v) else UNKNOWN

    def b_get_control_task_id(self, n):
        (v,) = self.args(n)
        return TaskId("control", int(v)) if _is_intlike(v) else UNKNOWN

    def b_get_data_task_id(self, n):
        (v,) = self.args(n)
        if isinstance(v, (Color, Queue)):
            return TaskId("data", v.id, v)
        if _is_intlike(v):
            return TaskId("data", int(v))
        return UNKNOWN

    def b_get_input_queue(self, n):
        (v,) = self.args(n)
        return Queue("input", int(v)) if _is_intlike(v) else UNKNOWN

    def b_get_output_queue(self, n):
        (v,) = self.args(n)
        return Queue("output", int(v)) if _is_intlike(v) else UNKNOWN

    def b_get_ut_id(self, n):
        (v,) = self.args(n)
        return UtId(int(v)) if _is_intlike(v) else UNKNOWN

    def b_get_dsr(self, n):
        kind, v = self.args(n)
        return Dsr(kind.name if isinstance(kind, TypeVal) else str(kind), int(v) if _is_intlike(v) else -1)

    def b_get_dsd(self, n):
        kind, fields = self.args(n)
        if not isinstance(fields, StructVal):
            fields = StructVal({})
        return Dsd(kind.name if isinstance(kind, TypeVal) else str(kind), fields, n)

    def _dsd_mutator(self, n):
        a = self.args(n)
        return a[0] if isinstance(a[0], Dsd) else UNKNOWN

    b_increment_dsd_offset = _dsd_mutator
    b_set_dsd_base_addr = _dsd_mutator
    b_set_dsd_length = _dsd_mutator
    b_set_dsd_stride = _dsd_mutator

    def b_type_of(self, n):
        (v,) = self.args(n)
        if isinstance(v, ArrayVal):
            return v.type
        if isinstance(v, bool):
            return TypeVal("bool")
        if isinstance(v, int):
            return TypeVal("comptime_int")
        if isinstance(v, float):
            return TypeVal("comptime_float")
        return TypeVal("unknown")

    def b_is_same_type(self, n):
        a, b = self.args(n)
        return a == b

    def b_strlen(self, n):
        (s,) = self.args(n)
        return len(s) if isinstance(s, str) else UNKNOWN

    def b_strcat(self, n):
        parts = self.args(n)
        return "".join(p for p in parts if isinstance(p, str)) if all(isinstance(p, str) for p in parts) \
            else Opaque("@strcat")

    def b_get_rectangle(self, n):
        rect = getattr(self.effects, "rectangle", None)
        if rect is None:
            return Opaque("@get_rectangle()")
        return StructVal({"width": rect[0], "height": rect[1]})

    def b_import_module(self, n):
        a = self.args(n)
        name = a[0]
        params = a[1] if len(a) > 1 else StructVal({})
        if not isinstance(name, str):
            raise EvalError(n, "@import_module takes a string")
        if name.startswith("<"):
            return ModuleVal(name, self.library_modules.get(name))
        if self.loader is None:
            return ModuleVal(name, None)
        sub = self.loader(self, n, name, params)
        return ModuleVal(name, sub)

    def b_comptime_assert(self, n):
        a = self.args(n)
        if a and a[0] is False:
            raise EvalError(n, "@comptime_assert failed")
        return VOID

    # ------------------------------------------------------------------ statements
    def exec(self, s: st.Node) -> None:
        fn = self._exec_dispatch.get(type(s))
        if fn is not None:
            fn(s)
        else:
            self.eval(s)

    def exec_block(self, block: st.Block, new_scope: bool = True) -> None:
        saved = self.scope
        if new_scope:
            self.scope = Scope(saved, self.region)
        try:
            frame = self.frames[-1] if self.frames else None
            for s in block.stmts:
                self.exec(s)
                if frame is not None and frame.ret_mask is not None and self.mask is not None:
                    self.mask = self.mask & ~frame.ret_mask
                    if not self.mask.any():
                        return  # every lane still running here has returned
        except _Break as b:
            if block.label is not None and b.label == block.label:
                return
            raise
        finally:
            self.scope = saved

    def ex_Block(self, s):
        self.exec_block(s)

    def ex_Empty(self, s):
        pass

    def ex_ComptimeBlock(self, s):
        saved = self.runtime
        self.runtime = False
        try:
            self.exec_block(s.body)
        finally:
            self.runtime = saved

    def ex_Defer(self, s):
        pass

    def ex_ExprStmt(self, s):
        self.eval(s.expr)

    def ex_VarDecl(self, s):
        if s.init is None:
            value = UNKNOWN
        else:
            value = self.eval(s.init)
            if s.type is not None and value is not UNKNOWN:
                value = self._coerce(self.eval(s.type), value, s.init)
        if self.runtime and s.kind == "var" and not s.comptime:
            value = UNKNOWN if not isinstance(value, (Dsd, Dsr)) else value
        self.scope.vars[s.name] = value

    def ex_Assign(self, s):
        self._assign(s)

    def _assign(self, s):
        value = self.eval(s.value)
        target = s.target
        if not isinstance(target, st.Name):
            self.eval(target) if not isinstance(target, (st.Index, st.Field, st.Deref)) else None
            if self.runtime:
                self._mark_unknown(target)
                return
            self._assign_element(s, target, value)
            return
        scope = self.scope.find(target.id)
        if scope is None:
            if target.id == "_":
                return
            if target.id in self.globals:
                if self.runtime:
                    return
                if self.depth:
                    raise NotVectorizable("assigns a global")
                g = self.globals[target.id]
                self.global_value(target.id, target)
                g.value = self._combine(s, g.value, value, target)
                return
            raise EvalError(target, f"undeclared identifier '{target.id}'", undeclared=True)
        if self.runtime:
            scope.vars[target.id] = UNKNOWN if not isinstance(value, (Dsd, Dsr)) else value
            return
        if scope.region < self.region:
            raise NotVectorizable(f"assigns '{target.id}' declared outside the vectorised loop")
        new = self._combine(s, scope.vars[target.id], value, target)
        if self.mask is not None:
            new = select(self.mask, new, scope.vars[target.id])
        scope.vars[target.id] = new

    def _combine(self, s, old, value, target):
        if s.op == "=":
            return value
        op = s.op[:-1]
        return self.ev_Binary(st.Binary(op, _Const(old), _Const(value), line=s.line, col=s.col))

    def _assign_element(self, s, target, value):
        if isinstance(target, st.Index) and isinstance(target.obj, st.Name):
            arr = self.eval(target.obj)
            idx = [self.eval(i) for i in target.indices]
            if isinstance(arr, ArrayVal) and all(_is_intlike(i) for i in idx) and not self.depth:
                flat = 0
                for i, d in zip(idx, arr.dims):
                    flat = flat * d + int(i)
                if not 0 <= flat < len(arr.items):
                    raise EvalError(target, f"index out of range for an array of {len(arr.items)}")
                old = arr.items[flat]
                arr.items[flat] = self._combine(s, old, value, target)
                return
        if self.depth:
            raise NotVectorizable("element assignment")

    def _mark_unknown(self, target):
        root = target
        while isinstance(root, (st.Field, st.Index, st.Deref)):
            root = root.obj
        if isinstance(root, st.Name):
            scope = self.scope.find(root.id)
            if scope is not None:
                scope.vars[root.id] = UNKNOWN

    def ex_Return(self, s):
        value = self.eval(s.value) if s.value is not None else VOID
        frame = self.frames[-1] if self.frames else None
        if frame is None or self.mask is None or self.runtime:
            if frame is not None and frame.ret_mask is not None:
                value = select(frame.ret_mask, frame.ret_value, value)
                frame.ret_mask = None
            raise _Return(value)
        lanes = np.broadcast_to(self.mask, tuple(self.lane_shape))
        if frame.ret_mask is None:
            frame.ret_mask = lanes.copy()
            frame.ret_value = value
        else:
            frame.ret_value = select(lanes, value, frame.ret_value)
            frame.ret_mask = frame.ret_mask | lanes
        self.mask = self.mask & ~frame.ret_mask

    def ex_Break(self, s):
        if self.mask is not None:
            raise NotVectorizable("break under a lane mask")
        raise _Break(s.label, self.eval(s.value) if s.value is not None else VOID)

    def ex_Continue(self, s):
        if self.mask is not None:
            raise NotVectorizable("continue under a lane mask")
        raise _Continue(s.label)

    def ex_If(self, s):
        if s.is_expr:
            self.eval(s)
            return
        c = self.eval(s.cond)
        if c is UNKNOWN:
            self.ifs_runtime.add(id(s))
            self.path_stack.append((s, 0))
            try:
                self.exec(s.then)
                self.path_stack[-1] = (s, 1)
                if s.else_ is not None:
                    self.exec(s.else_)
            finally:
                self.path_stack.pop()
            return
        if _is_vec(c):
            carr = c.arr.astype(bool)
            saved = self.mask
            frame = self.frames[-1] if self.frames else None
            m_then = carr if saved is None else saved & carr
            if m_then.any():
                self.mask = m_then
                self.exec(s.then)
            self.mask = saved
            if s.else_ is not None:
                m_else = ~carr if saved is None else saved & ~carr
                if frame is not None and frame.ret_mask is not None:
                    m_else = m_else & ~frame.ret_mask
                if m_else.any():
                    self.mask = m_else
                    self.exec(s.else_)
            self.mask = saved
            if frame is not None and frame.ret_mask is not None:
                self.mask = (~frame.ret_mask) if saved is None else saved & ~frame.ret_mask
            return
        if self.runtime:
            self.ifs_comptime.add(id(s))
            taken, other = (s.then, s.else_) if c else (s.else_, s.then)
            if taken is not None:
                self.branches_taken.add(id(taken))
            if other is not None:
                self.branches_pruned.add(id(other))
        if c:
            self.exec(s.then)
        elif s.else_ is not None:
            self.exec(s.else_)

    def ex_Switch(self, s):
        self.ev_Switch(s)

    # ------------------------------------------------------------------ loops
    def _iteration_space(self, node):
        """(start, stop, step) for a range, or (ArrayVal|StructVal items) for an array; None if unknown."""
        it = node.iterable
        if isinstance(it, st.BuiltinCall) and it.name == "range":
            a = [self.eval(x) for x in it.args[1:]]
            if any(v is UNKNOWN for v in a):
                return None
            if any(_is_vec(v) for v in a):
                raise NotVectorizable("lane-dependent loop bound")
            if len(a) == 1:
                return (0, a[0], 1)
            if len(a) == 2:
                return (a[0], a[1], 1)
            return (a[0], a[1], a[2])
        v = self.eval(it)
        if isinstance(v, ArrayVal):
            return list(v.items)
        if isinstance(v, StructVal):
            return list(v.items)
        if _is_vec(v):
            raise NotVectorizable("lane-dependent iterable")
        return None

    def ex_For(self, s):
        space = self._iteration_space(s)
        if space is None or self.runtime:
            self._visit_loop_once(s, s.captures)
            return
        if isinstance(space, tuple):
            start, stop, step = (int(x) for x in space)
            if step == 0:
                raise EvalError(s, "@range step is 0")
            values = range(start, stop, step)
            items = None
        else:
            values = range(len(space))
            items = space
        if self.vectorize and len(values) > 1 and self.depth < MAX_LANE_AXES and _vectorizable_body(s.body, s.label):
            mark = self.effects.mark() if self.effects is not None and hasattr(self.effects, "mark") else None
            try:
                self._vector_loop(s, values, items, s.captures)
                return
            except NotVectorizable:
                if self.depth:
                    raise
                if mark is not None:
                    self.effects.reset(mark)
        self._scalar_loop(s, values, items)

    def _scalar_loop(self, s, values, items):
        for k, v in enumerate(values):
            scope = Scope(self.scope, self.region)
            if s.captures:
                scope.vars[s.captures[0]] = items[k] if items is not None else v
            if len(s.captures) > 1:
                scope.vars[s.captures[1]] = k
            saved = self.scope
            self.scope = scope
            try:
                self.exec(s.body)
            except _Continue as c:
                if c.label is not None and c.label != s.label:
                    raise
            except _Break as b:
                if b.label is not None and b.label != s.label:
                    raise
                break
            finally:
                self.scope = saved

    def _vector_loop(self, s, values, items, captures, var_name=None):
        n = len(values)
        axis = self.depth
        shape = [1] * MAX_LANE_AXES
        shape[axis] = n
        lane_vals = np.arange(values.start, values.stop, values.step, dtype=np.int64).reshape(shape)
        saved = (self.depth, list(self.lane_shape), self.region, self.scope)
        self._regions += 1
        self.depth += 1
        self.lane_shape[axis] = n
        self.region = self._regions
        scope = Scope(self.scope, self.region)
        if var_name is not None:
            scope.vars[var_name] = Vec(lane_vals)
        if captures:
            if items is not None:
                arr = np.empty(n, dtype=object)
                for k, it in enumerate(items):
                    arr[k] = it
                scope.vars[captures[0]] = _numeric_if_possible(arr.reshape(shape))
            else:
                scope.vars[captures[0]] = Vec(lane_vals)
        if len(captures) > 1:
            scope.vars[captures[1]] = Vec(np.arange(n, dtype=np.int64).reshape(shape))
        self.scope = scope
        try:
            self.exec(s.body)
        except (_Break, _Continue):
            raise NotVectorizable("break/continue in a vectorised loop") from None
        finally:
            self.depth, self.lane_shape, self.region, self.scope = saved

    def ex_While(self, s):
        if self.runtime:
            self.eval(s.cond)
            self._visit_loop_once(s, [])
            return
        counted = self._counted_while(s)
        if counted is not None:
            var, scope, start, stop_node, step, inclusive = counted
            stop = self.eval(stop_node)
            if _is_intlike(stop) and step > 0:
                stop = int(stop) + (1 if inclusive else 0)
                values = range(start, stop, step)
                if len(values) > 1 and self.depth < MAX_LANE_AXES:
                    mark = self.effects.mark() if self.effects is not None and hasattr(self.effects, "mark") else None
                    try:
                        self._vector_loop(s, values, None, [], var_name=var)
                        final = start if len(values) == 0 else values[-1] + step
                        scope.vars[var] = max(start, final)
                        return
                    except NotVectorizable:
                        if self.depth:
                            raise
                        if mark is not None:
                            self.effects.reset(mark)
        guard = 0
        while True:
            c = self.eval(s.cond)
            if _is_vec(c):
                raise NotVectorizable("lane-dependent while condition")
            if c is UNKNOWN:
                self._visit_loop_once(s, [])
                return
            if not c:
                break
            guard += 1
            if guard > 50_000_000:
                raise EvalError(s, "comptime loop does not terminate")
            try:
                self.exec(s.body)
            except _Continue as cs:
                if cs.label is not None and cs.label != s.label:
                    raise
            except _Break as b:
                if b.label is not None and b.label != s.label:
                    raise
                break
            if s.cont is not None:
                self.exec(s.cont)

    def _counted_while(self, s):
        """``var i = a; while (i < b) : (i += k) body`` with a body that leaves ``i`` alone."""
        if not self.vectorize or self.mask is not None:
            return None
        c = s.cond
        if not (isinstance(c, st.Binary) and c.op in ("<", "<=") and isinstance(c.left, st.Name)):
            return None
        var = c.left.id
        cont = s.cont
        if not (isinstance(cont, st.Assign) and cont.op == "+=" and isinstance(cont.target, st.Name)
                and cont.target.id == var):
            return None
        scope = self.scope.find(var)
        if scope is None or scope.region != self.region:
            return None
        start = scope.vars[var]
        step = self.eval(cont.value)
        if not (_is_intlike(start) and _is_intlike(step)):
            return None
        if _assigns(s.body, var) or _assigns(c.right, var) or not _vectorizable_body(s.body, s.label):
            return None
        return var, scope, int(start), c.right, int(step), c.op == "<="

    def _visit_loop_once(self, s, captures):
        scope = Scope(self.scope, self.region)
        for c in captures:
            scope.vars[c] = UNKNOWN
        saved = self.scope
        self.scope = scope
        try:
            self.exec(s.body)
        except (_Break, _Continue):
            pass
        finally:
            self.scope = saved
        if isinstance(s, st.While) and s.cont is not None:
            try:
                self.exec(s.cont)
            except EvalError:
                pass


class _Const(st.Node):
    """A literal holding an already evaluated value (used by compound assignment)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value
        self.line = 0
        self.col = 0


def _ev_const(self, n):
    return n.value


Evaluator.ev__Const = _ev_const


def _vectorizable_body(body: st.Node, label) -> bool:
    """Static pre-check: no break/continue leaving the loop, no assignment to a name declared outside."""
    declared = set()
    later = []  # assignments and jumps, checked once every declaration is known (one walk of the body)
    for node in body.walk():
        if isinstance(node, st.VarDecl):
            declared.add(node.name)
        elif isinstance(node, (st.For,)):
            declared.update(node.captures)
        elif isinstance(node, (st.Assign, st.Break, st.Continue)):
            later.append(node)
    for node in later:
        if isinstance(node, st.Assign):
            root = node.target
            while isinstance(root, (st.Field, st.Index, st.Deref)):
                root = root.obj
            if isinstance(root, st.Name) and root.id not in declared and root.id != "_":
                return False
        elif isinstance(node, (st.Break, st.Continue)):
            if node.label is None and not _inside_inner_loop(body, node):
                return False
            if node.label is not None and node.label == label:
                return False
    return True


def _inside_inner_loop(body: st.Node, target: st.Node) -> bool:
    def search(node, inner):
        if node is target:
            return inner
        for ch in node.children():
            r = search(ch, inner or isinstance(ch, (st.For, st.While)) and ch is not body)
            if r is not None:
                return r
        return None
    return bool(search(body, False))


def _assigns(node: st.Node, name: str) -> bool:
    for x in node.walk():
        if isinstance(x, st.Assign) and isinstance(x.target, st.Name) and x.target.id == name:
            return True
    return False

