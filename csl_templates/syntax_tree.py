"""The typed syntax tree of a CSL file, as produced by ``csl_templates.parser.parse``.

One small dataclass per construct of hardware-and-csl.md §7. Every node carries the 1-based ``line``
and ``col`` of its first token, so findings can say ``file:line:col``. Statements and expressions
share node types where CSL does (an ``If`` is a statement or an expression; ``Block`` is a block
statement, the void value ``{}`` or, with a label, a labelled block expression).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache
from typing import Iterator, Optional, Union


@dataclass(eq=False, slots=True)
class Node:
    line: int = field(default=0, kw_only=True)
    col: int = field(default=0, kw_only=True)

    def children(self) -> Iterator["Node"]:
        """Direct child nodes, in source order."""
        for name in _child_fields(type(self)):
            v = getattr(self, name)
            if isinstance(v, Node):
                yield v
            elif isinstance(v, (list, tuple)):
                for item in v:
                    if isinstance(item, Node):
                        yield item
                    elif isinstance(item, tuple):
                        for sub in item:
                            if isinstance(sub, Node):
                                yield sub

    def walk(self) -> Iterator["Node"]:
        """This node and all its descendants, depth first, in source order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children())))


@cache
def _child_fields(cls: type) -> tuple[str, ...]:
    """The fields of a node class that may hold child nodes (all but the source position); read per class
    once, as the checker walks millions of nodes and ``dataclasses.fields`` rebuilds its tuple per call."""
    return tuple(f.name for f in fields(cls) if f.name not in ("line", "col"))


# ------------------------------------------------------------------ expressions

@dataclass(eq=False, slots=True)
class Name(Node):
    id: str


@dataclass(eq=False, slots=True)
class IntLit(Node):
    value: int
    text: str = ""


@dataclass(eq=False, slots=True)
class FloatLit(Node):
    value: float
    text: str = ""


@dataclass(eq=False, slots=True)
class CharLit(Node):
    value: int  # a comptime_int (the code point)
    text: str = ""


@dataclass(eq=False, slots=True)
class StringLit(Node):
    value: str
    text: str = ""


@dataclass(eq=False, slots=True)
class BoolLit(Node):
    value: bool


@dataclass(eq=False, slots=True)
class AnyType(Node):
    pass


@dataclass(eq=False, slots=True)
class EnumLit(Node):
    """``.EAST``, ``.MEMCPYH2D_1``."""
    name: str


@dataclass(eq=False, slots=True)
class BuiltinCall(Node):
    """``@name(args)``; ``name`` without the ``@``."""
    name: str
    args: list


@dataclass(eq=False, slots=True)
class Call(Node):
    callee: Node
    args: list


@dataclass(eq=False, slots=True)
class Field(Node):
    obj: Node
    name: str


@dataclass(eq=False, slots=True)
class Deref(Node):
    """``p.*``."""
    obj: Node


@dataclass(eq=False, slots=True)
class Index(Node):
    """``a[i]`` or ``a[i, j]``."""
    obj: Node
    indices: list


@dataclass(eq=False, slots=True)
class Unary(Node):
    op: str  # '-', '!', '~', '&'
    operand: Node


@dataclass(eq=False, slots=True)
class Binary(Node):
    op: str  # 'or', 'and', '==', ..., '+', '<<', ...
    left: Node
    right: Node


@dataclass(eq=False, slots=True)
class ComptimeExpr(Node):
    expr: Node


@dataclass(eq=False, slots=True)
class FieldInit(Node):
    name: str
    value: Node


@dataclass(eq=False, slots=True)
class StructLit(Node):
    """``.{ .a = 1, .b = x }`` (``fields``) or the tuple ``.{ a, b }`` (``items``); ``.{}`` has neither."""
    fields: list  # list[FieldInit]
    items: list


@dataclass(eq=False, slots=True)
class TypedInit(Node):
    """``[3]i16{1, 2, 3}``, ``Params{ .a = 1 }``."""
    type: Node
    fields: list
    items: list


@dataclass(eq=False, slots=True)
class ArrayType(Node):
    """``[N]T`` and ``[M, N]T``."""
    dims: list
    elem: Node


@dataclass(eq=False, slots=True)
class PointerType(Node):
    """``*T``, ``*const T`` and (``many``) ``[*]T``."""
    elem: Node
    many: bool = False
    const: bool = False


@dataclass(eq=False, slots=True)
class OptionalType(Node):
    elem: Node


@dataclass(eq=False, slots=True)
class FnParam(Node):
    name: Optional[str]  # None for a bare type (``extern fn g(f16, f16) f16;``)
    type: Node
    comptime: bool = False


@dataclass(eq=False, slots=True)
class FnType(Node):
    """``fn(i16, f32) void`` and ``task () void`` as values."""
    kind: str  # 'fn' | 'task'
    params: list
    ret: Node


@dataclass(eq=False, slots=True)
class StructField(Node):
    name: str
    type: Node
    default: Optional[Node] = None


@dataclass(eq=False, slots=True)
class StructType(Node):
    fields: list  # list[StructField]
    decls: list  # nested declarations


@dataclass(eq=False, slots=True)
class EnumMember(Node):
    name: str
    value: Optional[Node] = None


@dataclass(eq=False, slots=True)
class EnumType(Node):
    tag: Optional[Node]
    members: list


@dataclass(eq=False, slots=True)
class Lambda(Node):
    """A tensor-access expression ``|i, j|{M, N} -> A[i, j]``."""
    captures: list  # list[str]
    extents: list
    body: Node


@dataclass(eq=False, slots=True)
class Prong(Node):
    items: Optional[list]  # None for ``else``
    body: Node
    assign_op: Optional[str] = None  # a prong body ``x = y`` (statement switch)
    assign_value: Optional[Node] = None


@dataclass(eq=False, slots=True)
class Switch(Node):
    subject: Node
    prongs: list


@dataclass(eq=False, slots=True)
class If(Node):
    """``if`` statement or expression; ``else_`` may be another ``If``."""
    cond: Node
    then: Node
    else_: Optional[Node] = None
    is_expr: bool = False


@dataclass(eq=False, slots=True)
class Asm(Node):
    text: str


# ------------------------------------------------------------------ statements

@dataclass(eq=False, slots=True)
class Block(Node):
    stmts: list
    label: Optional[str] = None


@dataclass(eq=False, slots=True)
class VarDecl(Node):
    kind: str  # 'const' | 'var'
    name: str
    type: Optional[Node]
    init: Optional[Node]
    align: Optional[Node] = None
    linksection: Optional[Node] = None
    linkname: Optional[Node] = None
    export: bool = False
    extern: bool = False
    comptime: bool = False
    pub: bool = False


@dataclass(eq=False, slots=True)
class Assign(Node):
    target: Node
    op: str  # '=', '+=', ...
    value: Node


@dataclass(eq=False, slots=True)
class ExprStmt(Node):
    expr: Node


@dataclass(eq=False, slots=True)
class Return(Node):
    value: Optional[Node] = None


@dataclass(eq=False, slots=True)
class Break(Node):
    label: Optional[str] = None
    value: Optional[Node] = None


@dataclass(eq=False, slots=True)
class Continue(Node):
    label: Optional[str] = None


@dataclass(eq=False, slots=True)
class For(Node):
    """``for (iterable) |x| body`` and the old form ``|x, i|`` (element, index)."""
    iterable: Node
    captures: list  # list[str]
    body: Node
    label: Optional[str] = None
    inline: bool = False


@dataclass(eq=False, slots=True)
class While(Node):
    cond: Node
    cont: Optional[Node]  # the continue expression ``: (i += 1)``
    body: Node
    label: Optional[str] = None
    inline: bool = False


@dataclass(eq=False, slots=True)
class ComptimeBlock(Node):
    """A ``comptime { }`` block, at top level or inside a body."""
    body: Block


@dataclass(eq=False, slots=True)
class Defer(Node):
    body: Node


@dataclass(eq=False, slots=True)
class Empty(Node):
    pass


# ------------------------------------------------------------------ top level

@dataclass(eq=False, slots=True)
class ParamDecl(Node):
    name: str
    type: Optional[Node]
    default: Optional[Node]


@dataclass(eq=False, slots=True)
class FnDecl(Node):
    kind: str  # 'fn' | 'task'
    name: str
    params: list  # list[FnParam]
    ret: Optional[Node]
    body: Optional[Block]
    export: bool = False
    extern: bool = False
    inline: bool = False
    pub: bool = False
    linkname: Optional[Node] = None


@dataclass(eq=False, slots=True)
class LayoutBlock(Node):
    body: Block


@dataclass(eq=False, slots=True)
class Module(Node):
    """One parsed file: its top-level items in order, and the path it came from."""
    items: list
    path: str = "<string>"
    source: str = ""
    #: facts derived from the tree by readers that see it many times (one per parameter set), keyed by the
    #: reader; the tree itself is never changed after parsing, so they stay valid as long as the module
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def nodes(self) -> list:
        """``walk()`` as a list, made once per module: the source rules read it several times."""
        got = self.derived.get("nodes")
        if got is None:
            got = self.derived["nodes"] = list(self.walk())
        return got

    def params(self) -> list:
        return [i for i in self.items if isinstance(i, ParamDecl)]

    def decls(self) -> list:
        return [i for i in self.items if isinstance(i, VarDecl)]

    def functions(self) -> list:
        return [i for i in self.items if isinstance(i, FnDecl)]

    def comptime_blocks(self) -> list:
        return [i for i in self.items if isinstance(i, ComptimeBlock)]

    def layout_blocks(self) -> list:
        return [i for i in self.items if isinstance(i, LayoutBlock)]


Expr = Union[Node]
