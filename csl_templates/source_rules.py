"""Static rules that need only the syntax tree of one file (hardware-and-csl.md §8).

Each rule is a function ``(module, ctx) -> list[Finding]``; ``SOURCE_RULES`` lists them in order.
``ctx`` says whether the file is the layout entry file or imported by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from csl_templates import syntax_tree as st
from csl_templates.comptime import SCALAR_TYPES, is_int_type_name
from csl_templates.comptime_values import DIRECTION_NAMES
from csl_templates.findings import Finding, at
from csl_templates.pe_reader import COMPTIME_ONLY, DSD_OPS

#: hardware-and-csl.md §7.6 plus the DSD ops of §6.5 and builtins seen in vendor code.
KNOWN_BUILTINS = frozenset("""
import_module set_rectangle get_rectangle set_tile_code set_color_config set_local_color_config export_name
export_symbol rpc concat_structs is_arch get_color get_color_id get_int comptime_assert assert type_of
is_same_type as bitcast ptrcast zeros constants range strcat strlen get_array fp16 get_config set_config
import_comptime_value get_local_task_id get_data_task_id get_control_task_id bind_local_task bind_data_task
bind_control_task bind_task activate block unblock set_teardown_handler set_empty_queue_handler queue_flush
get_input_queue get_output_queue initialize_queue get_ut_id get_dsd get_dsr load_to_dsr set_dsd_base_addr
set_dsd_length set_dsd_stride increment_dsd_offset allocate_fifo set_fifo_read_length set_fifo_write_length
map dfilt get_config_addr_x get_config_addr_y field has_field dimensions element_type get_dsd_length
""".split()) | DSD_OPS

#: Builtins only the layout may call (§8 placement).
LAYOUT_ONLY = frozenset({"set_rectangle", "set_tile_code", "set_color_config", "export_name"})

#: Predeclared names that are not types or directions (accepted although not CSL: cheap).
OTHER_PREDECLARED = frozenset({"_", "undefined", "null"})


@dataclass
class SourceContext:
    is_layout_file: bool  # has a layout block, or is imported by the layout


def rule_const_initialised(m: st.Module, ctx) -> list[Finding]:
    """E: ``const`` has an initialiser; ``extern var`` has none; ``extern fn`` has no body."""
    out = []
    for node in m.nodes():
        if isinstance(node, st.VarDecl):
            if node.kind == "const" and node.init is None and not node.extern:
                out.append(at(m.path, node, "E", "decl.const_init", f"const '{node.name}' has no initialiser"))
            if node.extern and node.init is not None:
                out.append(at(m.path, node, "E", "decl.extern_init", f"extern '{node.name}' has an initialiser"))
        elif isinstance(node, st.FnDecl) and node.extern and node.body is not None:
            out.append(at(m.path, node, "E", "decl.extern_body", f"extern fn '{node.name}' has a body"))
    return out


def rule_one_layout_block(m: st.Module, ctx) -> list[Finding]:
    """E: at most one ``layout {}`` per file."""
    blocks = m.layout_blocks()
    return [at(m.path, b, "E", "layout.count", "more than one 'layout { }' block") for b in blocks[1:]]


def rule_unknown_builtin(m: st.Module, ctx) -> list[Finding]:
    """W: a builtin not in the reference's list (a typo, or one this checker does not know)."""
    return [at(m.path, n, "W", "names.unknown_builtin", f"unknown builtin '@{n.name}'")
            for n in m.nodes() if isinstance(n, st.BuiltinCall) and n.name not in KNOWN_BUILTINS]


def _top_comptime_nodes(m: st.Module) -> set:
    ids = set()
    for block in m.comptime_blocks():
        for n in block.walk():
            ids.add(id(n))
    return ids


def rule_comptime_only_builtins(m: st.Module, ctx) -> list[Finding]:
    """E: ``@bind_*``, ``@export_symbol``, ``@rpc``, ``@initialize_queue``, ... only in a top-level ``comptime {}``."""
    inside = _top_comptime_nodes(m)
    out = []
    for n in m.nodes():
        if isinstance(n, st.BuiltinCall) and n.name in COMPTIME_ONLY and id(n) not in inside:
            out.append(at(m.path, n, "E", "placement.comptime_only",
                          f"@{n.name} is only allowed in a top-level comptime block"))
    return out


def rule_layout_only_builtins(m: st.Module, ctx) -> list[Finding]:
    """E: ``@set_rectangle``, ``@set_tile_code``, ``@set_color_config``, ``@export_name`` only in the layout."""
    if ctx.is_layout_file:
        return []
    return [at(m.path, n, "E", "placement.layout_only", f"@{n.name} is only allowed in the layout file")
            for n in m.nodes() if isinstance(n, st.BuiltinCall) and n.name in LAYOUT_ONLY]


def rule_tasks_not_called(m: st.Module, ctx) -> list[Finding]:
    """E: tasks are activated, never called."""
    tasks = {f.name for f in m.functions() if f.kind == "task"}
    shadow_free = tasks - {p.name for p in m.params()}
    return [at(m.path, n, "E", "tasks.called", f"task '{n.callee.id}' is called; tasks are activated, not called")
            for n in m.nodes() if isinstance(n, st.Call) and isinstance(n.callee, st.Name)
            and n.callee.id in shadow_free]


def rule_activate_xor_unblock(m: st.Module, ctx) -> list[Finding]:
    """E: an op's options set ``.activate`` or ``.unblock``, not both."""
    out = []
    for n in m.nodes():
        if isinstance(n, st.BuiltinCall) and (n.name in DSD_OPS or n.name == "load_to_dsr") and n.args:
            opt = n.args[-1]
            if isinstance(opt, st.StructLit):
                names = {f.name for f in opt.fields}
                if {"activate", "unblock"} <= names:
                    out.append(at(m.path, n, "E", "op.activate_unblock",
                                  f"@{n.name} sets both .activate and .unblock; they are exclusive"))
    return out


# ------------------------------------------------------------------ name resolution

def _predeclared(name: str) -> bool:
    return (name in SCALAR_TYPES or is_int_type_name(name) or name in DIRECTION_NAMES
            or name in OTHER_PREDECLARED)


class _Resolver:
    """Reports names used but declared nowhere visible (globals may be used before declaration;
    locals only after)."""

    def __init__(self, m: st.Module):
        self.m = m
        self.globals = {i.name for i in m.items if isinstance(i, (st.ParamDecl, st.VarDecl, st.FnDecl))}
        self.out: list[Finding] = []
        self.reported: set = set()

    def run(self) -> list[Finding]:
        for item in self.m.items:
            self.visit(item, [])
        return self.out

    def known(self, name, scopes) -> bool:
        if name in self.globals or _predeclared(name):
            return True
        return any(name in s for s in scopes)

    def visit(self, node, scopes):
        if node is None:
            return
        t = type(node)
        if t is st.Name:
            if not self.known(node.id, scopes) and (node.line, node.col) not in self.reported:
                self.reported.add((node.line, node.col))
                self.out.append(at(self.m.path, node, "E", "names.undeclared",
                                   f"undeclared identifier '{node.id}'"))
            return
        if t is st.Field:
            self.visit(node.obj, scopes)
            return
        if t is st.Block:
            inner = scopes + [set()]
            for s in node.stmts:
                self.visit(s, inner)
            return
        if t is st.VarDecl:
            for ch in (node.type, node.align, node.linksection, node.linkname, node.init):
                self.visit(ch, scopes)
            if scopes:
                scopes[-1].add(node.name)
            return
        if t is st.FnDecl:
            inner = scopes + [set()]
            for p in node.params:
                self.visit(p.type, inner)
                if p.name:
                    inner[-1].add(p.name)
            self.visit(node.ret, inner)
            self.visit(node.body, inner)
            return
        if t is st.FnType:
            inner = scopes + [set()]
            for p in node.params:
                self.visit(p.type, inner)
                if p.name:
                    inner[-1].add(p.name)
            self.visit(node.ret, inner)
            return
        if t is st.For:
            self.visit(node.iterable, scopes)
            self.visit(node.body, scopes + [set(node.captures)])
            return
        if t is st.Lambda:
            inner = scopes + [set(node.captures)]
            for e in node.extents:
                self.visit(e, scopes)
            self.visit(node.body, inner)
            return
        if t is st.StructType:
            inner = scopes + [{d.name for d in node.decls}]
            for f in node.fields:
                self.visit(f.type, inner)
                self.visit(f.default, inner)
            for d in node.decls:
                self.visit(d, inner)
            return
        if t is st.EnumType:
            self.visit(node.tag, scopes)
            for mbr in node.members:
                self.visit(mbr.value, scopes)
            return
        for ch in node.children():
            self.visit(ch, scopes)


def rule_names_declared(m: st.Module, ctx) -> list[Finding]:
    """E: every identifier is declared (params, globals, locals before use, captures, predeclared names)."""
    return _Resolver(m).run()


SOURCE_RULES = (
    rule_const_initialised,
    rule_one_layout_block,
    rule_names_declared,
    rule_unknown_builtin,
    rule_comptime_only_builtins,
    rule_layout_only_builtins,
    rule_tasks_not_called,
    rule_activate_xor_unblock,
)


def check_source(m: st.Module, ctx: SourceContext) -> list[Finding]:
    out = []
    for rule in SOURCE_RULES:
        out.extend(rule(m, ctx))
    return out
