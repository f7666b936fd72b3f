"""``Body``: one PE program written once and placed on many PEs — CSL's ``pe_<name>.csl``.

A body declares

* **parameters** (``param``): per-PE comptime values (integers, colours, roles), bound when the body
  is placed (``MeshProgram.place``; CSL ``@set_tile_code(x, y, "pe.csl", .{...})``);
* **buffers** (``buffer``): static arrays in SRAM whose lengths may depend on parameters; exported
  ones are host-visible symbols for memcpy (CSL ``var A = @zeros([n]f16); var A_ptr: [*]f16 = &A;``
  + ``@export_symbol``);
* **variables** (``var``): PE-local run-time scalars (loop counters, a token position, an argmax
  index); a launch can set some of them from host scalars;
* **functions** (``function``): host-launchable entry points (CSL exported ``fn``); ``"main"`` is the
  one ``simulate`` launches;
* **tasks** (``task``): local tasks (activated by ``Activate`` statements or by completions of async
  ops), and data tasks bound to a colour, activated by each arriving wavelet (its value lands in
  ``arg``).

Code is a tuple of statements: DSD ops (``simulator.instructions``) and control statements
(``simulator.statements``). ``finalized()`` returns the form every reader uses — the simulator's
lowering, the CSL emitter and the cost checks: macros expanded to ``Fmac`` loops and ``Wait`` joins
rewritten into tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from plmr.errors import InputError
from simulator.expr import ExprLike, Param, Var, as_expr, names
from simulator.instructions import (
    FABRIC_INSTRUCTIONS, Activate, Detached, Instruction, Ref, Unblock, recv_colour, send_colour,
)
from simulator import statements as S

#: Storage dtypes of buffers and their bytes in SRAM.
BUFFER_DTYPES = {"fp16": 2, "fp32": 4}
#: Scalar variable types (CSL names) and their bytes.
VAR_DTYPES = {"i16": 2, "u16": 2, "i32": 4, "u32": 4, "f16": 2, "f32": 4}
PARAM_KINDS = ("int", "colour", "float")
TASK_KINDS = ("local", "data")
PRIORITIES = ("low", "high")
MAIN = "main"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class BufferDecl:
    name: str
    dtype: str
    length: ExprLike
    export: bool = True


@dataclass(frozen=True)
class VarDecl:
    name: str
    dtype: str = "i32"
    init: float = 0


@dataclass(frozen=True)
class Function:
    """A host-launchable entry point; ``args`` name variables set from the launch's scalars."""

    name: str
    code: tuple
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """A task. ``kind="data"``: bound to ``colour`` (CSL ``@bind_data_task``), one wavelet per
    activation, its value stored in variable ``arg``. ``blocked``: starts blocked (CSL
    ``comptime { @block(id); }``). ``id``: an explicit task ID, else one is allocated inside the
    target's ranges."""

    name: str
    code: tuple
    kind: str = "local"
    colour: ExprLike | None = None
    arg: str | None = None
    blocked: bool = False
    priority: str = "low"
    id: int | None = None
    synthetic: bool = False  # made by the join rewrite, not by the author


@dataclass
class Body:
    """A code body (see the module docstring)."""

    name: str
    params: dict[str, str] = field(default_factory=dict)
    buffers: dict[str, BufferDecl] = field(default_factory=dict)
    vars: dict[str, VarDecl] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    doc: str = ""
    #: Queue plan (``simulator.resources.body_queues``). False: colour expressions that no parameter
    #: set of the program uses together share a queue (fewest queues; which ones share follows the
    #: mesh). True: every colour expression the code receives (sends) on has a queue of its own, in
    #: the order the code names them — the same plan, and so the same CSL, at every mesh size.
    own_queues: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "body")
        self._final: Body | None = None

    # ---------------------------------------------------------------------------------- declare
    def param(self, name: str, kind: str = "int") -> Param:
        self._declare(name, "parameter")
        if kind not in PARAM_KINDS:
            raise InputError(f"body {self.name}: parameter {name!r} kind {kind!r}; use one of {PARAM_KINDS}")
        self.params[name] = kind
        return Param(name)

    def buffer(self, name: str, dtype: str, length: ExprLike, export: bool = True) -> str:
        self._declare(name, "buffer")
        if dtype not in BUFFER_DTYPES:
            raise InputError(f"body {self.name}: buffer {name!r} dtype {dtype!r}; use one of "
                             f"{', '.join(BUFFER_DTYPES)}")
        length = as_expr(length)
        p, c, v, b = names(length)
        if c or v or b:
            raise InputError(f"body {self.name}: buffer {name!r} length must depend on parameters only "
                             f"(buffers are static), got {length!r}")
        self.buffers[name] = BufferDecl(name, dtype, length, export)
        return name

    def var(self, name: str, dtype: str = "i32", init: float = 0) -> Var:
        self._declare(name, "variable")
        if dtype not in VAR_DTYPES:
            raise InputError(f"body {self.name}: variable {name!r} dtype {dtype!r}; use one of "
                             f"{', '.join(VAR_DTYPES)}")
        self.vars[name] = VarDecl(name, dtype, init)
        return Var(name)

    def function(self, name: str, code: Iterable, args: Iterable[str] = ()) -> None:
        self._declare(name, "function")
        self.functions[name] = Function(name, tuple(code), tuple(args))

    def task(self, name: str, code: Iterable, kind: str = "local", colour: ExprLike | None = None,
             arg: str | None = None, blocked: bool = False, priority: str = "low",
             id: int | None = None) -> str:
        self._declare(name, "task")
        if kind not in TASK_KINDS:
            raise InputError(f"body {self.name}: task {name!r} kind {kind!r}; use one of {TASK_KINDS}")
        if priority not in PRIORITIES:
            raise InputError(f"body {self.name}: task {name!r} priority {priority!r}; use one of {PRIORITIES}")
        if kind == "data" and colour is None:
            raise InputError(f"body {self.name}: data task {name!r} needs the colour it is bound to")
        if kind == "local" and (colour is not None or arg is not None):
            raise InputError(f"body {self.name}: local task {name!r} takes no colour and no argument")
        self.tasks[name] = Task(name, tuple(code), kind, None if colour is None else as_expr(colour),
                                arg, blocked, priority, id)
        return name

    def _declare(self, name: str, what: str) -> None:
        if self._final is not None:
            raise InputError(f"body {self.name}: cannot declare {what} {name!r} after the body was placed")
        _check_name(name, what)
        for kind, table in (("parameter", self.params), ("buffer", self.buffers),
                            ("variable", self.vars), ("function", self.functions),
                            ("task", self.tasks)):
            if name in table:
                raise InputError(f"body {self.name}: {what} {name!r} clashes with the {kind} of that name")

    # ---------------------------------------------------------------------------------- final form
    def finalized(self) -> "Body":
        """The body every reader uses: macros expanded, ``Wait`` joins rewritten into tasks; checked.
        Computed once (the body is frozen from then on)."""
        if self._final is None:
            from simulator import joins, macros

            self.check()
            b = macros.expand_body(self)
            b = joins.rewrite_body(b)
            b.check()
            b._final = b
            self._final = b
        return self._final

    def entry_points(self) -> tuple[str, ...]:
        return tuple(self.functions)

    # ---------------------------------------------------------------------------------- checks
    def check(self) -> None:
        """Every name a statement uses is declared with the right kind; raises ``InputError``."""
        for t in self.tasks.values():
            if t.kind == "data" and t.arg is not None and t.arg not in self.vars:
                raise InputError(f"body {self.name}: data task {t.name!r} argument {t.arg!r} is not a "
                                 f"declared variable")
            self._check_expr(t.colour, f"task {t.name}")
        for f in self.functions.values():
            for a in f.args:
                if a not in self.vars:
                    raise InputError(f"body {self.name}: function {f.name!r} argument {a!r} is not a "
                                     f"declared variable")
            self._check_code(f.code, f"function {f.name}", set())
        for t in self.tasks.values():
            self._check_code(t.code, f"task {t.name}", set())
        for b in self.buffers.values():
            self._check_expr(b.length, f"buffer {b.name}")

    def _check_expr(self, e, where: str) -> None:
        if e is None:
            return
        p, _, v, bufs = names(e)
        for n in p:
            if n not in self.params:
                raise InputError(f"body {self.name}, {where}: undeclared parameter {n!r}")
        for n in v:
            if n not in self.vars:
                raise InputError(f"body {self.name}, {where}: undeclared variable {n!r}")
        for n in bufs:
            if n not in self.buffers:
                raise InputError(f"body {self.name}, {where}: unknown buffer {n!r}")

    def _check_code(self, code: tuple, where: str, loop_vars: set) -> None:
        for st in code:
            w = f"{where}, {type(st).__name__}"
            if isinstance(st, Instruction):
                for fname in st.__dataclass_fields__:
                    v = getattr(st, fname)
                    if isinstance(v, Ref):
                        if v.buf not in self.buffers:
                            raise InputError(f"body {self.name}, {w}.{fname}: unknown buffer {v.buf!r}; "
                                             f"declared: {', '.join(self.buffers) or 'none'}")
                        self._check_expr(as_expr(v.offset), w)
                        if v.length is not None:
                            self._check_expr(as_expr(v.length), w)
                    elif fname in ("colour", "in_colour", "out_colour", "count", "s", "factor", "value"):
                        if not isinstance(v, (str, type(None))):
                            self._check_expr(as_expr(v), w)
                done = getattr(st, "done", None)
                if done is not None and not isinstance(done, Detached):
                    self._check_task(done.task, w)
                    if not isinstance(st, FABRIC_INSTRUCTIONS):
                        raise InputError(f"body {self.name}, {w}: only fabric ops run asynchronously")
                if isinstance(st, FABRIC_INSTRUCTIONS) and st.id is not None and done is not None:
                    raise InputError(f"body {self.name}, {w}: give an async op either id= (joined by a "
                                     f"Wait) or done=, not both")
            elif isinstance(st, S.Loop):
                if st.var not in self.vars:
                    raise InputError(f"body {self.name}, {w}: loop variable {st.var!r} is not a declared "
                                     f"variable")
                self._check_expr(st.count, w)
                self._check_code(st.body, where, loop_vars | {st.var})
            elif isinstance(st, S.If):
                self._check_expr(st.cond, w)
                self._check_code(st.then, where, loop_vars)
                self._check_code(st.orelse, where, loop_vars)
            elif isinstance(st, S.Switch):
                self._check_expr(st.value, w)
                for b in S.blocks_of(st):
                    self._check_code(b, where, loop_vars)
            elif isinstance(st, S.Assign):
                if st.var not in self.vars:
                    raise InputError(f"body {self.name}, {w}: undeclared variable {st.var!r}")
                self._check_expr(st.value, w)
            elif isinstance(st, S.Store):
                if st.buf not in self.buffers:
                    raise InputError(f"body {self.name}, {w}: unknown buffer {st.buf!r}")
                self._check_expr(st.index, w)
                self._check_expr(st.value, w)
            elif isinstance(st, (Activate, Unblock, S.Block)):
                self._check_task(st.task, w)
            elif isinstance(st, S.SetRoute):
                self._check_expr(as_expr(st.colour), w)
            elif isinstance(st, (S.Finish, S.Timestamp, S.Wait)):
                pass
            else:
                raise InputError(f"body {self.name}, {where}: not a statement: {st!r}")

    def _check_task(self, name: str, where: str) -> None:
        if name not in self.tasks:
            raise InputError(f"body {self.name}, {where}: unknown task {name!r}; declared: "
                             f"{', '.join(self.tasks) or 'none'}")

    # ---------------------------------------------------------------------------------- queries
    def colours(self) -> list:
        """Every colour expression a fabric op or data task of the body uses (receive, send)."""
        recv, send = [], []

        for code in [f.code for f in self.functions.values()] + [t.code for t in self.tasks.values()]:
            for st in S.walk(code):
                if isinstance(st, FABRIC_INSTRUCTIONS):
                    if recv_colour(st) is not None:
                        recv.append(recv_colour(st))
                    if send_colour(st) is not None:
                        send.append(send_colour(st))
        for t in self.tasks.values():
            if t.kind == "data":
                recv.append(t.colour)
        return recv + send


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"{what} name {name!r} must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
