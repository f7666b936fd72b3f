"""Evaluate a PE program for one parameter struct and collect the facts the static checks read.

Global initialisers and top-level ``comptime {}`` blocks run at comptime (``@is_arch`` and params
known, so untaken branches are pruned, as cslc does). Function and task bodies are then walked with
run-time values unknown: DSD-op calls are recorded with their evaluated operands and options, the
function they are in and the unknown-condition branches they sit under (``path``), which is what the
queue-sharing check needs.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

from csl_templates import syntax_tree as st
from csl_templates.comptime import NOT_HANDLED, EvalError, Evaluator
from csl_templates.comptime_values import (
    UNKNOWN, VOID, ArrayVal, Color, Dsd, Dsr, FnVal, ModuleVal, Opaque, Queue, StructVal, TaskId, TypeVal, UtId,
    type_bytes,
)

#: DSD-op builtins (hardware-and-csl.md §6.5), destination first.
DSD_OPS = frozenset("""
fmacs fmach fmachs fadds faddh faddhs fsubs fsubh fmuls fmulh fmaxs fmaxh fmovs fmovh mov16 mov32 fnegs fnegh
fabss fabsh fnorms fnormh fscales fscaleh fh2s fs2h fh2xp16 fs2xp16 xp162fh xp162fs add16 addc16 sub16 and16
or16 xor16 sll16 slr16 sar16 clz ctz popcnt dfilt map
""".split())

#: Builtins allowed only in a top-level comptime block (§8, placement).
COMPTIME_ONLY = frozenset({"bind_local_task", "bind_data_task", "bind_control_task", "bind_task",
                           "export_symbol", "rpc", "set_local_color_config", "initialize_queue",
                           "set_teardown_handler", "set_empty_queue_handler"})

_GETTERS = frozenset({"get_color", "get_local_task_id", "get_data_task_id", "get_control_task_id",
                      "get_input_queue", "get_output_queue", "get_ut_id", "get_dsr", "get_dsd"})


@dataclass
class OpRecord:
    node: st.BuiltinCall
    op: str
    function: str  # enclosing fn/task name, or "comptime"
    operands: list
    options: StructVal | None
    path: tuple  # ((if/switch node id, branch), ...) of unknown conditions above the op


@dataclass
class PeFacts:
    path: str
    params: Any
    colours: list = field(default_factory=list)  # (node, Color)
    task_ids: list = field(default_factory=list)  # (node, TaskId)
    queues: list = field(default_factory=list)  # (node, Queue)
    ut_ids: list = field(default_factory=list)  # (node, UtId)
    dsrs: list = field(default_factory=list)  # (node, Dsr)
    dsds: list = field(default_factory=list)  # (node, Dsd)
    binds: list = field(default_factory=list)  # (node, builtin name, task name, TaskId)
    queue_inits: list = field(default_factory=list)  # (node, Queue, config)
    exports: list = field(default_factory=list)  # (node, exported name)
    local_color_configs: list = field(default_factory=list)  # (node, Color, config)
    dsr_loads: list = field(default_factory=list)  # (node, Dsr, Dsd, options)
    ops: list = field(default_factory=list)  # OpRecord
    data: list = field(default_factory=list)  # (node, name, bytes)
    code_ops: int = 0  # DSD-op statements (and @map) in run-time bodies, without comptime-pruned branches
    code_statements: int = 0  # other statements there
    code_bodies: int = 0  # functions and tasks with a body
    problems: list = field(default_factory=list)  # (node, message, rule)
    unbound_params: list = field(default_factory=list)
    uses_memcpy: bool = False
    modules: list = field(default_factory=list)  # imported local modules' facts are merged here


class PeEffects:
    """Records getters, binds and DSD ops while a PE file is evaluated."""

    def __init__(self, facts: PeFacts):
        self.facts = facts
        self.names = _GETTERS | COMPTIME_ONLY | DSD_OPS | {"load_to_dsr", "import_module", "comptime_assert"}
        self._seen: set = set()
        self.function = "comptime"

    def builtin(self, ev: Evaluator, n: st.BuiltinCall):
        name = n.name
        f = self.facts
        if name in _GETTERS:
            v = getattr(ev, "b_" + name)(n)
            # a DSD's repr prints its site, ``n`` itself, as a whole syntax subtree: key it without (same
            # distinctions, a tenth of a parameter set's time less)
            key = (id(n), v.kind, repr(v.fields)) if type(v) is Dsd and v.site is n else (id(n), repr(v))
            if key not in self._seen:
                self._seen.add(key)
                bucket = {Color: f.colours, TaskId: f.task_ids, Queue: f.queues, UtId: f.ut_ids, Dsr: f.dsrs,
                          Dsd: f.dsds}.get(type(v))
                if bucket is not None:
                    bucket.append((n, v))
            return v
        if name == "import_module":
            if n.args and isinstance(n.args[0], st.StringLit) and n.args[0].value.startswith("<memcpy"):
                f.uses_memcpy = True
            return NOT_HANDLED
        if name == "comptime_assert":
            if ev.runtime:
                return VOID
            a = ev.args(n)
            if a and a[0] is False:
                f.problems.append((n, "@comptime_assert condition is false", "decl.comptime_assert"))
            return VOID
        if name in DSD_OPS or name == "load_to_dsr":
            args = [ev.eval(a) for a in n.args]
            options = args[-1] if args and isinstance(args[-1], StructVal) else None
            operands = args[:-1] if options is not None else args
            path = tuple((id(node), br) for node, br in ev.path_stack)
            f.ops.append(OpRecord(n, name, self.function, operands, options, path))
            if name == "load_to_dsr" and len(operands) >= 2:
                f.dsr_loads.append((n, operands[0], operands[1], options))
            return VOID
        # comptime-only builtins
        if ev.runtime:
            for a in n.args:
                ev.eval(a)
            return VOID
        if name in ("bind_local_task", "bind_data_task", "bind_control_task", "bind_task"):
            fn, tid = ev.args(n)[:2]
            f.binds.append((n, name, fn.name if isinstance(fn, FnVal) else repr(fn), tid))
        elif name == "initialize_queue":
            a = ev.args(n)
            f.queue_inits.append((n, a[0], a[1] if len(a) > 1 else StructVal({})))
        elif name == "export_symbol":
            sym = n.args[0] if n.args else None
            a = ev.args(n)
            exported = a[1] if len(a) > 1 else (sym.id if isinstance(sym, st.Name) else None)
            f.exports.append((n, exported))
        elif name == "set_local_color_config":
            a = ev.args(n)
            f.local_color_configs.append((n, a[0], a[1] if len(a) > 1 else None))
        else:
            for a in n.args:
                ev.eval(a)
        return VOID


def _data_bytes(ev: Evaluator, decl: st.VarDecl, value) -> int | None:
    """Storage of a global: its declared type, else the type of an array value; None when not data."""
    t = None
    if decl.type is not None:
        try:
            t = ev.eval(decl.type)
        except EvalError:
            t = None
    if t is None and isinstance(value, ArrayVal):
        t = value.type
    if t is None:
        if decl.kind == "var" and isinstance(value, (int, float)):
            return 4 if isinstance(value, float) else 2
        return None
    if isinstance(t, TypeVal) and decl.kind == "const" and t.name != "array":
        return None  # comptime scalars, colours, task IDs, DSDs fold into code
    return type_bytes(t)


def evaluate_pe(module: st.Module, params: Any = None, arch: str = "wse2", loader=None,
                facts: PeFacts | None = None) -> PeFacts:
    """Facts of one PE program (``module``) for one parameter struct (``StructVal``, dict or None)."""
    if isinstance(params, StructVal):
        values = dict(params.fields)
    else:
        values = dict(params or {})
    facts = facts or PeFacts(module.path, params)
    effects = PeEffects(facts)
    ev = Evaluator(module, arch=arch, params=values, effects=effects, vectorize=False,
                   loader=_SubLoader(loader, arch, facts) if loader is not None else None)
    for name, g in ev.globals.items():
        try:
            value = ev.global_value(name)
        except EvalError as exc:
            facts.problems.append((exc.node or g.node, _eval_text(exc), _eval_rule(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a construct the evaluator mishandles: say so, go on
            facts.problems.append((g.node, _internal(exc), "eval.unsupported"))
            continue
        node = g.node
        if isinstance(node, st.VarDecl) and not node.extern:
            size = _data_bytes(ev, node, value)
            if size:
                align = 1
                if node.align is not None:
                    try:
                        a = ev.eval(node.align)
                        align = a if isinstance(a, int) and a > 0 else 1
                    except EvalError:
                        pass
                facts.data.append((node, node.name, -(-size // align) * align))
    for block in module.comptime_blocks():
        try:
            ev.run_block(block.body)
        except EvalError as exc:
            facts.problems.append((exc.node or block, _eval_text(exc), _eval_rule(exc)))
        except Exception as exc:  # noqa: BLE001
            facts.problems.append((block, _internal(exc), "eval.unsupported"))
    facts.unbound_params.extend(ev.unbound_params)
    # run-time bodies
    for fn in module.functions():
        if fn.body is None:
            continue
        effects.function = fn.name
        saved = ev._enter_global()
        ev.runtime = True
        scope = ev.scope
        for p in fn.params:
            if p.name is not None:
                scope.vars[p.name] = UNKNOWN
        try:
            ev.exec_block(fn.body)
        except EvalError as exc:
            facts.problems.append((exc.node or fn, _eval_text(exc), _eval_rule(exc)))
        except Exception as exc:  # noqa: BLE001 - control-flow signals end the walk; others are reported
            if not type(exc).__name__.startswith("_"):
                facts.problems.append((fn, _internal(exc), "eval.unsupported"))
        finally:
            ev._leave_global(saved)
            ev.path_stack.clear()
    effects.function = "comptime"
    pruned = ev.branches_pruned - ev.branches_taken
    folded = ev.ifs_comptime - ev.ifs_runtime
    indexes = module.derived.setdefault("code_index", {}) if isinstance(module, st.Module) else {}
    for fn in module.functions():
        if fn.body is not None:
            if id(fn.body) not in indexes:
                indexes[id(fn.body)] = _code_index(fn.body)
            ops, stmts = _code_statements(indexes[id(fn.body)], pruned, folded)
            facts.code_ops += ops
            facts.code_statements += stmts
            facts.code_bodies += 1
    seen, unique = set(), []
    for pr in facts.problems:
        if pr[2] == "eval.undeclared":
            continue  # the names.undeclared rule reports it
        key = (id(pr[0]), pr[1])
        if key not in seen:
            seen.add(key)
            unique.append(pr)
    facts.problems[:] = unique
    return facts


def _internal(exc: Exception) -> str:
    return f"not evaluated (this checker failed on it: {type(exc).__name__}: {exc}); rules depending on it are skipped"


def _eval_rule(exc: EvalError) -> str:
    if exc.undeclared:
        return "eval.undeclared"
    return "eval" if exc.definite else "eval.unsupported"


def _eval_text(exc: EvalError) -> str:
    if exc.definite:
        return f"comptime evaluation failed: {exc.message}"
    return f"not evaluated (this checker does not model it; rules depending on it are skipped): {exc.message}"


class _SubLoader:
    """Local modules imported by a PE file: evaluated into the same facts (their data share the PE)."""

    def __init__(self, loader, arch, facts):
        self.loader, self.arch, self.facts = loader, arch, facts
        self.done: dict = {}

    def __call__(self, ev, node, name, params):
        from pathlib import Path

        path = Path(ev.module.path).parent / name
        if not path.exists():
            raise EvalError(node, f"cannot find module '{name}'")
        mod = self.loader.module(path)
        key = (str(path), params)
        if key not in self.done:
            sub = evaluate_pe(mod, params, self.arch, self.loader, facts=self.facts)
            self.done[key] = sub
        values = dict(params.fields) if isinstance(params, StructVal) else {}
        return Evaluator(mod, arch=self.arch, params=values, effects=None, loader=self)


__all__ = ["PeFacts", "OpRecord", "evaluate_pe", "DSD_OPS", "COMPTIME_ONLY", "Opaque", "ModuleVal"]


_STATEMENTS = (st.ExprStmt, st.Assign, st.VarDecl, st.Return, st.Break, st.Continue, st.While, st.For, st.Switch)
#: Builtins that make a DSD from another: the set-up of the op that uses it (``code_bytes_per_op`` covers it).
DSD_SETUP = frozenset("get_dsd increment_dsd_offset set_dsd_length set_dsd_base_addr set_dsd_stride".split())


def _code_statements(index: tuple, pruned: set, folded: set) -> tuple[int, int]:
    """(DSD ops, other statements) of a run-time body (its ``_code_index``) that produce code: all of them but those in branches of
    ``if`` statements whose condition is known at comptime for this parameter set and never holds that way
    (``pruned``: ids of branch nodes), which cslc drops. A DSD op or ``@map`` is an expression statement
    calling one; a ``const``
    declaration — a DSD made from another (``DSD_SETUP``), or a name for a subexpression — is part of
    the statement that uses it, as the program model counts an expression with its statement (a
    subexpression bound once is computed once: counting it again would charge its code twice);
    ``if`` statements count as statements, but those whose condition is known
    at comptime for this parameter set (``folded``: cslc keeps only the branch that runs, and the
    program model drops the test with the branch)."""
    pos, ends, prefix = index
    hits = sorted(at for i in (pruned if len(pruned) < len(pos) else pos.keys() & pruned) for at in pos.get(i, ()))
    ops, stmts, ifs = (p[-1] for p in prefix)
    skipped = []  # the outermost pruned subtrees, in order (preorder ranges nest or are disjoint)
    reach = -1
    for i in hits:
        if i < reach:
            continue  # inside a subtree already dropped
        reach = ends[i]
        skipped.append((i, reach))
        ops -= prefix[0][reach] - prefix[0][i]
        stmts -= prefix[1][reach] - prefix[1][i]
        ifs -= prefix[2][reach] - prefix[2][i]
    starts = [a for a, _ in skipped]
    for i in (folded if len(folded) < len(pos) else pos.keys() & folded):
        for at in pos.get(i, ()):
            if prefix[2][at + 1] == prefix[2][at]:
                continue  # not an ``if`` statement
            k = bisect.bisect_right(starts, at) - 1
            if k < 0 or at >= skipped[k][1]:
                ifs -= 1  # a kept ``if`` whose test cslc folds
    return ops, stmts + ifs


_OTHER, _OP, _STMT, _IF_STMT = range(4)


def _code_kind(node: st.Node) -> int:
    if isinstance(node, st.ExprStmt) and isinstance(node.expr, st.BuiltinCall) and (
            node.expr.name in DSD_OPS or node.expr.name == "map"):
        return _OP
    if isinstance(node, st.VarDecl) and node.kind == "const":
        return _OTHER  # a DSD made from another, or a name for a subexpression: part of the statement using it
    if isinstance(node, _STATEMENTS):
        return _STMT
    if isinstance(node, st.If) and not node.is_expr:
        return _IF_STMT
    return _OTHER


def _code_index(body: st.Node) -> tuple[dict, list, tuple]:
    """``body``'s nodes in preorder, what ``_code_statements`` counts for every parameter set, classified
    once (a PE file is read once per set): each node's positions, the position past each subtree, and the
    running counts of DSD ops, other statements and ``if`` statements up to each position."""
    pos, kinds, ends = {}, [], []
    stack = [(body, -1)]
    while stack:
        node, at = stack.pop()
        if at >= 0:
            ends[at] = len(kinds)
            continue
        at = len(kinds)
        pos.setdefault(id(node), []).append(at)  # a node reached twice counts twice, as in a walk
        kinds.append(_code_kind(node))
        ends.append(0)
        stack.append((node, at))
        stack.extend((ch, -1) for ch in reversed(list(node.children())))
    prefix = tuple(list(itertools.accumulate((k == want for k in kinds), initial=0))
                   for want in (_OP, _STMT, _IF_STMT))
    return pos, ends, prefix
