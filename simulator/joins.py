"""Rewriting ``Wait`` joins into CSL tasks: a continuation state machine plus a pool of join tasks.

A task cannot wait in CSL. Code written with ``Wait`` (async ops tagged ``id=``, joined later in the
same statement list) is rewritten, per *container* (a function or an author task), into what a CSL
programmer writes by hand (the join idiom of hardware-and-csl.md §3.5, WaferLLM's task chains):

* the code up to the first wait runs where it was written; every later piece of code is a **state**
  of one continuation task ``_cont_<c>``, which starts with ``@block(self)`` (re-arm) and dispatches
  on a state variable ``_state_<c>`` (a ``switch``);
* a ``Wait`` on n async ops ends the current piece with ``_state = k; @activate(_cont)`` and gives
  the ops completion actions that unblock ``_cont`` after all n finished, through a chain of
  n − 1 **join tasks** ``_join<j>_<c>``: the first two ops ``.activate``/``.unblock`` the join task
  ``_join<n-1>``, each further op ``.activate``s the next (``_join<n-2>`` … ``_join1``), each join task
  blocks itself and unblocks its successor, ``_join1`` unblocks ``_cont``. A wait on one op needs no
  join task (the op unblocks ``_cont`` directly). Join tasks are shared by every wait of the
  container, so a container needs (most ops any wait joins) − 1 of them;
* a ``Loop`` whose body waits becomes an ``if`` on the counter, at the loop's entry and again at the
  end of the body's last piece (so an iteration costs only its joins); an ``If`` whose branches
  wait continues with what follows it copied into each branch when that does not wait, else in a
  state of its own ("goto state k": ``_state = k; @unblock(_cont); @activate(_cont)``).

Every join, continuation and goto is one task activation (``c_task`` in the simulator), exactly what
the emitted CSL runs. Rules (each checked, with the statement named): a ``Wait`` joins ops issued at
the top level of the same statement list since the previous ``Wait`` of that list (the join tasks
are shared, so joins never overlap); an async op no ``Wait`` names runs unjoined (fire and forget).
"""

from __future__ import annotations

import copy

from plmr.errors import InputError
from simulator.expr import Var
from simulator.instructions import FABRIC_INSTRUCTIONS, Activate, Detached, Unblock
from simulator import statements as S

CONT, STATE, JOIN, COUNT = "_cont_{c}", "_state_{c}", "_join{j}_{c}", "_count{k}_{c}"


def has_wait(code: tuple) -> bool:
    return any(isinstance(st, S.Wait) for st in S.walk(code))


def _has_finish(code: tuple) -> bool:
    return any(isinstance(st, S.Finish) for st in S.walk(code))


def _with_done(st, done):
    """The async op ``st`` with its join id replaced by a completion action."""
    st = copy.copy(st)
    object.__setattr__(st, "id", None)
    object.__setattr__(st, "done", done)
    return st


def _tagged(st) -> list:
    """Async ops tagged with an id in ``st``, looking into the branches of ``If``/``Switch``
    statements (exactly one branch runs; see ``_assign`` for branches without the op)."""
    if isinstance(st, FABRIC_INSTRUCTIONS):
        return [st] if st.id is not None else []
    if isinstance(st, (S.If, S.Switch)):
        return [op for b in S.blocks_of(st) for s in b for op in _tagged(s)]
    return []


def _assign(st, actions: dict):
    """``st`` with the ops tagged ``id`` given completion ``actions[id]``. A branch of an
    ``If``/``Switch`` that does not issue an op the join waits for runs its action at the end of the
    branch instead (the join then counts the same events whichever branch ran)."""
    if isinstance(st, FABRIC_INSTRUCTIONS):
        return _with_done(st, actions[st.id]) if st.id in actions else st
    if not isinstance(st, (S.If, S.Switch)):
        return st
    wanted = {op.id for op in _tagged(st)} & set(actions)
    blocks = []
    for b in S.blocks_of(st):
        have = {op.id for s in b for op in _tagged(s)}
        missing = tuple(actions[i] for i in sorted(wanted - have))
        blocks.append(tuple(_assign(s, actions) for s in b) + missing)
    return S.with_blocks(st, tuple(blocks))


def _replace(code: tuple, marker, with_: tuple) -> tuple:
    """``code`` with the statement ``marker`` (an identity-unique placeholder) replaced."""
    return S.map_code(code, lambda st: with_ if st is marker else st)


def _strip_ids(code: tuple) -> tuple:
    """Async ops tagged with an id that no wait joins run unjoined (``Detached``)."""
    return S.map_code(code, lambda st: _with_done(st, Detached())
                      if isinstance(st, FABRIC_INSTRUCTIONS) and st.id is not None else st)


class _Container:
    """State of the rewrite of one function or task."""

    def __init__(self, body, cname: str):
        self.body = body
        self.c = cname
        self.states: list[tuple] = []  # code of state k+1 at index k
        self.max_join = 0  # most ops one wait joins
        self.counts = 0

    @property
    def cont(self) -> str:
        return CONT.format(c=self.c)

    @property
    def state(self) -> str:
        return STATE.format(c=self.c)

    def join(self, j: int) -> str:
        return JOIN.format(j=j, c=self.c)

    def new_state(self) -> int:
        self.states.append(())
        return len(self.states)

    def goto(self, k: int) -> tuple:
        return (S.Assign(self.state, k), Unblock(self.cont), Activate(self.cont))

    # -------------------------------------------------------------------------------------
    def conv(self, code: tuple, tail: tuple) -> tuple:
        """Statements of the current piece for ``code`` followed by ``tail``; later pieces are
        registered as states."""
        if not has_wait(code):
            return _strip_ids(code) + tuple(tail)
        for i, st in enumerate(code):
            if has_wait((st,)):
                break
        prefix, st, rest = code[:i], code[i], code[i + 1:]
        if isinstance(st, S.Wait):
            prefix = self._join(prefix, st)
            k = self.new_state()
            self.states[k - 1] = self.conv(rest, tail)
            return prefix + (S.Assign(self.state, k), Activate(self.cont))
        prefix = _strip_ids(prefix)
        if isinstance(st, S.Loop):
            # for → if: the test runs at the loop's entry and again at the end of the body's last
            # piece (inlined there, so an iteration costs no extra task activation)
            self.counts += 1
            cnt = COUNT.format(k=self.counts, c=self.c)
            self._var(cnt)
            marker = S.Timestamp(f"__again_{self.counts}_{self.c}")
            n_before = len(self.states)
            first = self.conv(st.body, (marker,))
            after = self.conv(rest, tail)
            k_head = self.new_state()
            # an iteration that ends without waiting (an inner loop of zero trips, a branch without a
            # wait) re-enters the test through a task activation; one that ended in a later piece
            # tests inline
            first = _replace(first, marker, (S.Assign(st.var, Var(st.var) + 1),) + self.goto(k_head))
            head = (S.If(Var(st.var) < Var(cnt), first, after),)
            self.states[k_head - 1] = head
            again = (S.Assign(st.var, Var(st.var) + 1),) + head
            self.states = self.states[:n_before] + [_replace(code, marker, again)
                                                    for code in self.states[n_before:]]
            return prefix + (S.Assign(st.var, 0), S.Assign(cnt, st.count, nonneg=True)) + head
        # If or Switch: every branch continues with the rest — inline when the rest does not wait
        # (a few statements, copied into each branch), else in a state of its own
        if rest and has_wait(rest):
            k = self.new_state()
            self.states[k - 1] = self.conv(rest, tail)
            tail = self.goto(k)
        elif rest:
            tail = _strip_ids(rest) + tuple(tail)
        return prefix + (S.with_blocks(st, tuple(self.conv(b, tail) for b in S.blocks_of(st))),)

    def _var(self, name: str) -> None:
        from simulator.body import VarDecl

        if name not in self.body.vars:
            self.body.vars[name] = VarDecl(name, "i32", 0)

    def _join(self, prefix: tuple, wait: S.Wait) -> tuple:
        """``prefix`` with completion actions on the ops ``wait`` joins; other tagged ops run
        unjoined. A branch on parameters only is transparent: after pruning one branch remains, so
        the tagged ops in either branch are the candidates for their id."""
        order: dict[str, int] = {}  # id -> position (of the top-level statement) of its last issue
        for i, s in enumerate(prefix):
            for op in _tagged(s):
                order[op.id] = i
        for name in wait.ids:
            if name not in order:
                raise InputError(
                    f"body {self.body.name}, {self.c}: Wait names op id {name!r} that no async op issued "
                    f"earlier in the same statement list (since the previous Wait)")
        ids = sorted(set(wait.ids), key=lambda n: (order[n], wait.ids.index(n)))  # issue order
        n = len(ids)
        self.max_join = max(self.max_join, n)
        actions: dict[str, object] = {}
        if n == 1:
            actions[ids[0]] = Unblock(self.cont)
        else:
            actions[ids[0]] = Activate(self.join(n - 1))
            actions[ids[1]] = Unblock(self.join(n - 1))
            for t, name in enumerate(ids[2:], start=2):
                actions[name] = Activate(self.join(n - t))
        out = []
        for i, s in enumerate(prefix):
            mine = {op.id for op in _tagged(s)} & set(actions)
            if mine and any(order[m] == i for m in mine):
                s = _assign(s, {m: actions[m] for m in mine if order[m] == i})
            out.append(_strip_ids((s,))[0])
        return tuple(out)

    def dispatch(self) -> tuple:
        """The continuation task's code: re-arm, then a switch on the state."""
        cases = tuple((k, code) for k, code in enumerate(self.states, start=1))
        return (S.Block(self.cont), S.Switch(Var(self.state), cases))


def rewrite_body(body):
    """A copy of ``body`` without ``Wait``: every container rewritten (see the module docstring).
    Functions with no explicit ``Finish`` get one at the end of their last piece."""
    from simulator.body import Function, Task, VarDecl

    new = copy.copy(body)
    new.vars = dict(body.vars)
    new.functions = dict(body.functions)
    new.tasks = dict(body.tasks)
    new._final = None
    containers = [(f"f_{n}", "function", n) for n in body.functions] + \
                 [(f"t_{n}", "task", n) for n in body.tasks]
    any_finish = any(_has_finish(f.code) for f in body.functions.values()) or \
        any(_has_finish(t.code) for t in body.tasks.values())
    for cname, kind, name in containers:
        src = body.functions[name] if kind == "function" else body.tasks[name]
        tail = (S.Finish(),) if kind == "function" and not any_finish else ()
        if not has_wait(src.code):
            code = _strip_ids(src.code) + tail
            if kind == "function":
                new.functions[name] = Function(src.name, code, src.args)
            else:
                new.tasks[name] = _replace_code(src, code)
            continue
        con = _Container(new, cname)
        code = con.conv(src.code, tail)
        if kind == "function":
            new.functions[name] = Function(src.name, code, src.args)
        else:
            new.tasks[name] = _replace_code(src, code)
        new.vars[con.state] = VarDecl(con.state, "i16", 0)
        new.tasks[con.cont] = Task(con.cont, con.dispatch(), "local", blocked=True, synthetic=True)
        for j in range(1, con.max_join):
            nxt = con.cont if j == 1 else con.join(j - 1)
            new.tasks[con.join(j)] = Task(con.join(j), (S.Block(con.join(j)), Unblock(nxt)), "local",
                                          blocked=True, synthetic=True)
    return new


def _replace_code(t, code: tuple):
    from simulator.body import Task

    return Task(t.name, code, t.kind, t.colour, t.arg, t.blocked, t.priority, t.id, t.synthetic)
