"""The values the comptime evaluator computes with.

Integers, floats, booleans and strings are plain Python values. CSL's hardware and aggregate values
get small frozen classes (hashable, so identical parameter structs collapse to one). ``Vec`` holds
one value per lane of a vectorised loop (a numpy array of rank ``MAX_LANE_AXES``); ``UNKNOWN`` is a
value only known at run time (partial evaluation of PE code).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Loops vectorised at once (one array axis each).
MAX_LANE_AXES = 4


class Direction(enum.IntFlag):
    """Router ports; a route's ``rx``/``tx`` set is an OR of these bits."""
    NORTH = 1
    SOUTH = 2
    EAST = 4
    WEST = 8
    RAMP = 16


DIRECTION_NAMES = {"NORTH": Direction.NORTH, "SOUTH": Direction.SOUTH, "EAST": Direction.EAST,
                   "WEST": Direction.WEST, "RAMP": Direction.RAMP}


def direction_set(bits: int) -> frozenset:
    """``{'RAMP', 'EAST'}`` from a bit set."""
    return frozenset(d.name for d in Direction if bits & d)


@dataclass(frozen=True, slots=True)
class Color:
    id: int

    def __repr__(self) -> str:
        return f"color({self.id})"


@dataclass(frozen=True, slots=True)
class TaskId:
    kind: str  # 'local' | 'data' | 'control'
    id: int
    via: Any = None  # for a data task: the Color (WSE-2) or Queue (WSE-3) it came from

    def __repr__(self) -> str:
        return f"{self.kind}_task_id({self.id})"


@dataclass(frozen=True, slots=True)
class Queue:
    kind: str  # 'input' | 'output'
    id: int

    def __repr__(self) -> str:
        return f"{self.kind}_queue({self.id})"


@dataclass(frozen=True, slots=True)
class UtId:
    id: int


@dataclass(frozen=True, slots=True)
class Dsr:
    kind: str  # 'dsr_dest' | 'dsr_src0' | 'dsr_src1'
    id: int


@dataclass(frozen=True, slots=True)
class Dsd:
    """A DSD value: its kind and evaluated fields (``StructVal``); ``site`` is the ``@get_dsd`` node."""
    kind: str
    fields: "StructVal"
    site: Any = field(default=None, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class TypeVal:
    """A type: a name (``i16``, ``color``, ``mem1d_dsd``), an array (``dims``), a pointer, a function."""
    name: str
    dims: tuple = ()
    elem: Any = None
    const: bool = False

    def __repr__(self) -> str:
        if self.name == "array":
            return f"[{', '.join(map(str, self.dims))}]{self.elem!r}"
        if self.name in ("ptr", "many_ptr"):
            return ("[*]" if self.name == "many_ptr" else "*") + repr(self.elem)
        return self.name


#: Bytes of the scalar types, for the memory estimate.
TYPE_BYTES = {"i8": 1, "u8": 1, "bool": 1, "i16": 2, "u16": 2, "f16": 2, "bf16": 2, "cb16": 2,
              "i32": 4, "u32": 4, "f32": 4, "i64": 8, "u64": 8, "ptr": 2, "many_ptr": 2}


def type_bytes(t: Any) -> int | None:
    """Storage bytes of a type (arrays: product of dims x element), or None when not data."""
    if not isinstance(t, TypeVal):
        return None
    if t.name == "array":
        eb = type_bytes(t.elem)
        if eb is None or not all(isinstance(d, int) for d in t.dims):
            return None
        n = 1
        for d in t.dims:
            n *= max(0, d)
        return n * eb
    return TYPE_BYTES.get(t.name)


@dataclass(frozen=True, slots=True)
class StructType:
    fields: tuple  # ((name, TypeVal, default or NO_DEFAULT), ...)


@dataclass(frozen=True, slots=True)
class EnumType:
    members: tuple  # ((name, int), ...)


@dataclass(frozen=True, slots=True)
class EnumVal:
    type: Any
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class EnumLiteral:
    """``.name`` before it meets a type (anonymous enum literal)."""
    name: str


class StructVal:
    """An anonymous or typed struct (``.{ .a = 1 }``) or tuple (``.{ a, b }``); hashable by content."""

    __slots__ = ("fields", "items", "_hash")

    def __init__(self, fields: dict | None = None, items: tuple = ()):
        self.fields = dict(fields or {})
        self.items = tuple(items)
        self._hash = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def _key(self):
        return (tuple((k, _freeze(v)) for k, v in self.fields.items()), tuple(_freeze(v) for v in self.items))

    def __eq__(self, other) -> bool:
        return isinstance(other, StructVal) and self._key() == other._key()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._key())
        return self._hash

    def __repr__(self) -> str:
        parts = [f".{k} = {v!r}" for k, v in self.fields.items()] + [repr(v) for v in self.items]
        return ".{ " + ", ".join(parts) + " }"

    def to_python(self) -> Any:
        """Plain Python: dicts for structs, lists for tuples, ids for colours and queues."""
        if self.fields and not self.items:
            return {k: to_python(v) for k, v in self.fields.items()}
        if self.items and not self.fields:
            return [to_python(v) for v in self.items]
        if not self.fields and not self.items:
            return {}
        return {**{k: to_python(v) for k, v in self.fields.items()}, "_items": [to_python(v) for v in self.items]}


class ArrayVal:
    """A comptime array (``[3]color{ ... }``, ``@zeros([4]u16)``): element type, dims and items (flat)."""

    __slots__ = ("elem", "dims", "items")

    def __init__(self, elem: Any, dims: tuple, items: list):
        self.elem = elem
        self.dims = tuple(dims)
        self.items = items

    def __eq__(self, other) -> bool:
        return isinstance(other, ArrayVal) and self.dims == other.dims and \
            tuple(map(_freeze, self.items)) == tuple(map(_freeze, other.items))

    def __hash__(self) -> int:
        return hash((self.dims, tuple(map(_freeze, self.items))))

    def __repr__(self) -> str:
        return f"[{', '.join(map(str, self.dims))}]{self.elem!r}{{{', '.join(map(repr, self.items[:8]))}}}"

    @property
    def type(self) -> TypeVal:
        return TypeVal("array", self.dims, self.elem)


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value the evaluator does not model (``memcpy.get_params(x)``, library functions)."""
    name: str

    def __repr__(self) -> str:
        return f"<{self.name}>"


class _Unknown:
    """A run-time value: known to exist, not known at comptime."""

    _inst = None

    def __new__(cls):
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "<runtime>"


UNKNOWN = _Unknown()


class _Void:
    _inst = None

    def __new__(cls):
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "{}"


VOID = _Void()


@dataclass(frozen=True, slots=True)
class FnVal:
    """A function or task declaration, with the evaluator scope it closes over."""
    decl: Any
    scope: Any = field(compare=False, hash=False, default=None)

    @property
    def name(self) -> str:
        return self.decl.name

    @property
    def is_task(self) -> bool:
        return self.decl.kind == "task"


@dataclass(frozen=True, slots=True)
class ModuleVal:
    """An imported module: a library (``<memcpy/memcpy>``) or a parsed file with its own globals."""
    name: str
    evaluator: Any = field(compare=False, hash=False, default=None)


class Vec:
    """One value per lane of the vectorised loops (numpy array, rank ``MAX_LANE_AXES``)."""

    __slots__ = ("arr",)

    def __init__(self, arr: np.ndarray):
        self.arr = arr

    def __repr__(self) -> str:
        return f"Vec({self.arr.shape}, {self.arr.dtype})"


def _freeze(v: Any) -> Any:
    if isinstance(v, (StructVal, ArrayVal)):
        return v
    if isinstance(v, float) and v != v:
        return ("nan",)
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def to_python(v: Any) -> Any:
    """A comptime value as plain Python (for tests, JSON and comparisons with a program)."""
    if isinstance(v, StructVal):
        return v.to_python()
    if isinstance(v, ArrayVal):
        return [to_python(x) for x in v.items]
    if isinstance(v, Color):
        return v.id
    if isinstance(v, (TaskId, Queue, UtId, Dsr)):
        return v.id
    if isinstance(v, Direction):
        return v.name
    if isinstance(v, (EnumVal, EnumLiteral)):
        return v.name
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, TypeVal):
        return repr(v)
    if isinstance(v, (Opaque, ModuleVal, FnVal, Dsd)) or v is UNKNOWN or v is VOID:
        return repr(v)
    return v
