"""Control flow, scalar and task statements of a code body (everything that is not a DSD op).

Each maps to one CSL construct:

| statement | CSL |
|---|---|
| ``Loop(count, var, body)`` | ``for (@range(i16, count)) \\|var\\| { ... }`` (run-time count allowed) |
| ``Switch(value, cases, default)`` | ``switch (value) { k => {...}, else => {...} }`` |
| ``If(cond, then, orelse)`` | ``if (cond) { ... } else { ... }``; a condition on parameters only is resolved per parameter set, as CSL prunes a comptime-known branch |
| ``Assign(var, value)`` | ``var = value;`` |
| ``Store(buf, index, value)`` | ``buf[index] = value;`` |
| ``Activate(task)`` / ``Block`` / ``Unblock`` | ``@activate(id)`` / ``@block(id)`` / ``@unblock(id)`` |
| ``Finish()`` | ``sys_mod.unblock_cmd_stream();`` — every PE ends a launch with it |
| ``Timestamp(label)`` | ``<time>.get_timestamp(&buf)`` |
| ``SetRoute(colour, rx, tx)`` | ``<tile_config>.color_config.reset_routes(colour, ...)`` |
| ``Wait(ids)`` | sugar: a join over async ops issued earlier in the same statement list; rewritten into completion actions and join tasks (``simulator.joins``) |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from simulator.expr import ExprLike, as_expr
from simulator.instructions import Activate, Instruction, Unblock


@dataclass(frozen=True, slots=True)
class Loop:
    """Run ``body`` ``count`` times with ``var`` = 0 … count−1. A count below zero is an error when
    the loop starts."""

    count: ExprLike
    var: str
    body: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", as_expr(self.count))
        object.__setattr__(self, "body", tuple(self.body))


@dataclass(frozen=True, slots=True)
class If:
    cond: ExprLike
    then: tuple
    orelse: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cond", as_expr(self.cond))
        object.__setattr__(self, "then", tuple(self.then))
        object.__setattr__(self, "orelse", tuple(self.orelse))


@dataclass(frozen=True, slots=True)
class Switch:
    """Run the code of the case equal to ``value`` (else ``default``). CSL: ``switch (value) { k => {
    ... }, else => { ... } }``; one dispatch whatever the number of cases."""

    value: ExprLike
    cases: tuple  # ((int, code), ...)
    default: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", as_expr(self.value))
        object.__setattr__(self, "cases", tuple((int(k), tuple(c)) for k, c in self.cases))
        object.__setattr__(self, "default", tuple(self.default))


@dataclass(frozen=True, slots=True)
class Assign:
    """``var = value``. ``nonneg``: the value is a loop count, and a value below zero is an error
    (raised when the statement runs, naming the PE, the body and the statement)."""

    var: str
    value: ExprLike
    nonneg: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", as_expr(self.value))


@dataclass(frozen=True, slots=True)
class Store:
    buf: str
    index: ExprLike
    value: ExprLike

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", as_expr(self.index))
        object.__setattr__(self, "value", as_expr(self.value))


@dataclass(frozen=True, slots=True)
class Block:
    task: str


@dataclass(frozen=True, slots=True)
class Finish:
    """This PE is done with the current launch (CSL ``sys_mod.unblock_cmd_stream()``)."""


@dataclass(frozen=True, slots=True)
class Timestamp:
    """Record the current cycle under ``label`` (CSL ``<time>.get_timestamp``); costs 1 cycle."""

    label: str


@dataclass(frozen=True, slots=True)
class SetRoute:
    """Change this PE's route of ``colour`` at run time to configuration ``config`` (an index into
    the alternatives declared with ``MeshProgram.set_route(..., alternatives=...)``). The colour
    must carry no wavelets in this router when it changes (teardown semantics)."""

    colour: ExprLike
    config: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Join on the most recent async ops issued with these ids earlier in the same statement list.

    Sugar for the CSL join idiom: rewritten into ``.activate``/``.unblock`` completion actions, join
    tasks and a continuation task (``simulator.joins``); each join task costs one task activation.
    """

    ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        ids = (self.ids,) if isinstance(self.ids, str) else tuple(self.ids)
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise TypeError(f"Wait needs one or more non-empty op ids, got {self.ids!r}")
        object.__setattr__(self, "ids", ids)


Statement = Union[Instruction, Loop, If, Switch, Assign, Store, Activate, Block, Unblock, Finish, Timestamp,
                  SetRoute, Wait]
CONTROL_STATEMENTS = (Loop, If, Switch, Assign, Store, Activate, Block, Unblock, Finish, Timestamp, SetRoute, Wait)


def blocks_of(st) -> tuple:
    """The nested statement lists of a compound statement (none for a simple one)."""
    if isinstance(st, Loop):
        return (st.body,)
    if isinstance(st, If):
        return (st.then, st.orelse)
    if isinstance(st, Switch):
        return tuple(c for _, c in st.cases) + (st.default,)
    return ()


def with_blocks(st, blocks: tuple):
    """``st`` with its nested statement lists replaced (same order as ``blocks_of``)."""
    if isinstance(st, Loop):
        return Loop(st.count, st.var, blocks[0])
    if isinstance(st, If):
        return If(st.cond, blocks[0], blocks[1])
    if isinstance(st, Switch):
        return Switch(st.value, tuple((k, b) for (k, _), b in zip(st.cases, blocks[:-1])), blocks[-1])
    return st


def map_code(code: tuple, fn) -> tuple:
    """Apply ``fn`` (statement -> statement or tuple of statements) to every simple statement of
    ``code``, recursing into compound ones."""
    out = []
    for st in code:
        sub = blocks_of(st)
        if sub:
            out.append(with_blocks(st, tuple(map_code(b, fn) for b in sub)))
            continue
        r = fn(st)
        if isinstance(r, tuple):
            out.extend(r)
        else:
            out.append(r)
    return tuple(out)


def walk(code: tuple):
    """Every statement of ``code``, nested ones included, in program order."""
    for st in code:
        yield st
        for b in blocks_of(st):
            yield from walk(b)


def describe(st) -> str:
    """A short human description of a statement for error messages, e.g. ``Recv(colour 1 -> b)``."""
    from simulator.instructions import Instruction, Ref

    def ref(r: Ref) -> str:
        if isinstance(r.offset, int) and r.offset == 0 and r.length is None and r.stride == 1:
            return r.buf
        s = f"{r.buf}[{r.offset!r}"
        s += f":+{r.length!r}" if r.length is not None else ":"
        return s + (f":{r.stride}]" if r.stride != 1 else "]")

    if isinstance(st, Instruction):
        parts = []
        for name in st.__dataclass_fields__:
            v = getattr(st, name)
            if v is None or name == "packed" and not v:
                continue
            if isinstance(v, Ref):
                parts.append(ref(v))
            elif name in ("colour", "in_colour", "out_colour"):
                parts.append(f"{name.replace('_', ' ')} {v!r}")
            elif name == "done":
                parts.append(f"done={type(v).__name__}({getattr(v, 'task', '') or ''})")
            else:
                parts.append(f"{name}={v!r}")
        return f"{type(st).__name__}({', '.join(parts)})"
    if isinstance(st, Loop):
        return f"Loop({st.var} < {st.count!r})"
    if isinstance(st, If):
        return f"If({st.cond!r})"
    if isinstance(st, Switch):
        return f"Switch({st.value!r})"
    return repr(st)
