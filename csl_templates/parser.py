"""Parse CSL source into the typed syntax tree of ``csl_templates.syntax_tree``.

The grammar (``csl.lark``, package data) is LALR(1) with lark's contextual lexer; its header says how
the hazards of hardware-and-csl.md §7.5 are resolved. Syntax errors raise ``CslSyntaxError`` whose
message is ``file:line:col: message`` (1-based line and column).
"""

from __future__ import annotations

import functools
import re
import threading
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.grammar import Rule

from csl_templates import syntax_tree as st


class CslSyntaxError(Exception):
    """A file that is not CSL. ``str(err)`` is ``file:line:col: message``."""

    def __init__(self, path: str, line: int, col: int, message: str):
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path = path
        self.line = line
        self.col = col
        self.message = message


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return resources.files("csl_templates").joinpath("csl.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    """The grammar's parser building a lark tree (``_ToNodes`` turns it into typed nodes afterwards)."""
    return Lark(grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True)


# ------------------------------------------------------------------ literal decoding

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)")


def _unescape(body: str) -> str:
    def repl(m: re.Match) -> str:
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0] == "u" and len(e) > 1:
            return chr(int(e[2:-1], 16))
        return _ESCAPES[e]

    return _ESCAPE_RE.sub(repl, body)


def _int_value(text: str) -> int:
    t = text.replace("_", "")
    if t[:2].lower() in ("0x", "0b", "0o"):
        return int(t, 0)
    return int(t, 10)


# ------------------------------------------------------------------ tree -> typed nodes

def _pos(meta_or_tok) -> dict:
    return {"line": getattr(meta_or_tok, "line", 0) or 0, "col": getattr(meta_or_tok, "column", 0) or 0}


def _split_inits(children) -> tuple[list, list]:
    fields = [c for c in children if isinstance(c, st.FieldInit)]
    items = [c for c in children if not isinstance(c, st.FieldInit) and c is not None]
    return fields, items


class _Rules:
    """One method per grammar rule or alias: (the start of the rule's text, its children) -> a typed node.
    Run inside the parser (``_InParser``) or over a lark tree (``_ToNodes``)."""

    # --- top level
    def start(self, meta, items):
        return [i for i in items if i is not None]

    def param_decl(self, meta, c):
        return st.ParamDecl(str(c[0]), c[1], c[2], **_pos(meta))

    def decl_mods(self, meta, c):
        return {t.type.lower() for t in c if isinstance(t, Token)}

    def top_decl(self, meta, c):
        mods, decl = c
        decl.export = "export" in mods
        decl.extern = "extern" in mods
        decl.pub = "pub" in mods
        return decl

    def var_decl(self, meta, c):
        kind, name, typ, align, section, linkname, init = c
        return st.VarDecl(str(kind), str(name), typ, init, align=align, linksection=section,
                          linkname=linkname, **_pos(meta))

    def align_clause(self, meta, c):
        return c[0]

    linksection_clause = align_clause
    linkname_clause = align_clause

    def fn_mods(self, meta, c):
        return {t.type.lower() for t in c if isinstance(t, Token)}

    def fn_decl(self, meta, c):
        mods, kind, name, params, ln1, ret, ln2 = c[:7]
        body = c[7] if len(c) > 7 else None
        return st.FnDecl(str(kind), str(name), params, ret, body, export="export" in mods,
                         extern="extern" in mods, inline="inline" in mods, pub="pub" in mods,
                         linkname=ln1 or ln2, **_pos(meta))

    def fn_params(self, meta, c):
        return [p for p in c if p is not None]

    def named_param(self, meta, c):
        comptime = isinstance(c[0], Token) and c[0].type == "COMPTIME"
        if comptime:
            c = c[1:]
        return st.FnParam(str(c[0]), c[1], comptime=comptime, **_pos(meta))

    def bare_param(self, meta, c):
        return st.FnParam(None, c[0], **_pos(meta))

    def ret_type(self, meta, c):
        return c[0]

    def comptime_block(self, meta, c):
        return st.ComptimeBlock(c[0], **_pos(meta))

    def layout_block(self, meta, c):
        return st.LayoutBlock(c[1], **_pos(meta))

    # --- statements
    def block(self, meta, c):
        return st.Block([s for s in c if s is not None], **_pos(meta))

    def empty_stmt(self, meta, c):
        return st.Empty(**_pos(meta))

    def local_decl(self, meta, c):
        decl = c[-1]
        decl.comptime = len(c) > 1
        return decl

    def comptime_stmt(self, meta, c):
        return st.ComptimeBlock(c[0], **_pos(meta))

    def labeled_stmt(self, meta, c):
        label, body = c
        body.label = str(label)
        body.line, body.col = _pos(meta)["line"], _pos(meta)["col"]
        return body

    def defer_stmt(self, meta, c):
        return st.Defer(c[0], **_pos(meta))

    def if_stmt(self, meta, c):
        return st.If(c[0], c[1], c[2] if len(c) > 2 else None, **_pos(meta))

    def for_stmt(self, meta, c):
        inline = isinstance(c[0], Token) and c[0].type == "INLINE"
        if inline:
            c = c[1:]
        caps = [str(t) for t in c[1:-1]]
        return st.For(c[0], caps, c[-1], inline=inline, **_pos(meta))

    def while_stmt(self, meta, c):
        inline = isinstance(c[0], Token) and c[0].type == "INLINE"
        if inline:
            c = c[1:]
        return st.While(c[0], c[1], c[2], inline=inline, **_pos(meta))

    def assign(self, meta, c):
        return st.Assign(c[0], str(c[1]), c[2], **_pos(meta))

    def expr_stmt(self, meta, c):
        return st.ExprStmt(c[0], **_pos(meta))

    def return_stmt(self, meta, c):
        return st.Return(c[0], **_pos(meta))

    def break_stmt(self, meta, c):
        return st.Break(str(c[0]) if c[0] is not None else None, c[1], **_pos(meta))

    def continue_stmt(self, meta, c):
        return st.Continue(str(c[0]) if c[0] is not None else None, **_pos(meta))

    # --- expressions
    def name(self, meta, c):
        return st.Name(str(c[0]), **_pos(c[0]))

    def int_lit(self, meta, c):
        return st.IntLit(_int_value(str(c[0])), str(c[0]), **_pos(c[0]))

    def float_lit(self, meta, c):
        return st.FloatLit(float(str(c[0]).replace("_", "")), str(c[0]), **_pos(c[0]))

    def char_lit(self, meta, c):
        return st.CharLit(ord(_unescape(str(c[0])[1:-1])), str(c[0]), **_pos(c[0]))

    def string_lit(self, meta, c):
        return st.StringLit(_unescape(str(c[0])[1:-1]), str(c[0]), **_pos(c[0]))

    def true_lit(self, meta, c):
        return st.BoolLit(True, **_pos(meta))

    def false_lit(self, meta, c):
        return st.BoolLit(False, **_pos(meta))

    def anytype(self, meta, c):
        return st.AnyType(**_pos(meta))

    def builtin_call(self, meta, c):
        return st.BuiltinCall(str(c[0])[1:], [a for a in c[1:] if a is not None], **_pos(c[0]))

    def call(self, meta, c):
        return st.Call(c[0], [a for a in c[1:] if a is not None], **_pos(meta))

    def field(self, meta, c):
        return st.Field(c[0], str(c[1]), **_pos(meta))

    def deref(self, meta, c):
        return st.Deref(c[0], **_pos(meta))

    def index(self, meta, c):
        return st.Index(c[0], list(c[1:]), **_pos(meta))

    def binop(self, meta, c):
        return st.Binary(str(c[1]), c[0], c[2], **_pos(meta))

    def unary(self, meta, c):
        return st.Unary(str(c[0]), c[1], **_pos(meta))

    def comptime_expr(self, meta, c):
        return st.ComptimeExpr(c[0], **_pos(meta))

    def if_expr(self, meta, c):
        return st.If(c[0], c[1], c[2], is_expr=True, **_pos(meta))

    def lambda_(self, meta, c):
        caps = [str(t) for t in c if isinstance(t, Token) and t.type == "NAME"]
        rest = [x for x in c if not isinstance(x, Token)]
        return st.Lambda(caps, rest[:-1], rest[-1], **_pos(meta))

    def labeled_block(self, meta, c):
        blk = c[1]
        blk.label = str(c[0])
        blk.line, blk.col = _pos(meta)["line"], _pos(meta)["col"]
        return blk

    def typed_init(self, meta, c):
        fields, items = _split_inits(c[1:])
        return st.TypedInit(c[0], fields, items, **_pos(meta))

    def anon_init(self, meta, c):
        fields, items = _split_inits(c)
        return st.StructLit(fields, items, **_pos(meta))

    def field_init(self, meta, c):
        return st.FieldInit(str(c[0]), c[1], **_pos(meta))

    def enum_lit(self, meta, c):
        return st.EnumLit(str(c[0]), **_pos(meta))

    def array_type(self, meta, c):
        return st.ArrayType(list(c[:-1]), c[-1], **_pos(meta))

    def many_ptr_type(self, meta, c):
        const = any(isinstance(t, Token) and t.type == "CONST" for t in c)
        return st.PointerType(c[-1], many=True, const=const, **_pos(meta))

    def ptr_type(self, meta, c):
        const = any(isinstance(t, Token) and t.type == "CONST" for t in c)
        return st.PointerType(c[-1], many=False, const=const, **_pos(meta))

    def optional_type(self, meta, c):
        return st.OptionalType(c[0], **_pos(meta))

    def fn_type(self, meta, c):
        return st.FnType(str(c[0]), c[1], c[2], **_pos(meta))

    def struct_type(self, meta, c):
        fields = [x for x in c if isinstance(x, st.StructField)]
        decls = [x for x in c if isinstance(x, (st.VarDecl, st.FnDecl))]
        return st.StructType(fields, decls, **_pos(meta))

    def struct_field(self, meta, c):
        if isinstance(c[0], Token) and c[0].type == "COMPTIME":
            c = c[1:]
        return st.StructField(str(c[0]), c[1], c[2], **_pos(meta))

    def enum_type(self, meta, c):
        return st.EnumType(c[0], [m for m in c[1:] if m is not None], **_pos(meta))

    def enum_member(self, meta, c):
        return st.EnumMember(str(c[0]), c[1], **_pos(meta))

    def switch_expr(self, meta, c):
        return st.Switch(c[0], [p for p in c[1:] if p is not None], **_pos(meta))

    def prong(self, meta, c):
        arrow = next(i for i, x in enumerate(c) if isinstance(x, Token) and x.type == "FAT_ARROW")
        head = c[:arrow]
        items = None if (len(head) == 1 and isinstance(head[0], Token) and head[0].type == "ELSE") else list(head)
        body, op, value = c[arrow + 1], c[arrow + 2], c[arrow + 3]
        return st.Prong(items, body, str(op) if op is not None else None, value, **_pos(meta))

    def asm_expr(self, meta, c):
        return st.Asm(str(c[-1]), **_pos(meta))


# lark calls the rule ``lambda``, a Python keyword
setattr(_Rules, "lambda", _Rules.lambda_)

_RULE_NAMES = tuple(n for n, v in vars(_Rules).items() if not n.startswith("_") and callable(v))


# the rules over a lark tree parsed with ``propagate_positions``: the reference for ``_InParser``, and the
# path taken when the installed lark does not let the parser run them (v_args wraps a class's own methods)
_ToNodes = v_args(meta=True)(type("_ToNodes", (Transformer,), {n: vars(_Rules)[n] for n in _RULE_NAMES}))


class _Meta:
    """The start of a rule's text, as lark's ``propagate_positions`` gives it (no line: no text)."""

    __slots__ = ("line", "column")


class _Malformed(Exception):
    """A rule failed on a literal the grammar accepts (e.g. a character code past U+10FFFF), at line:col."""

    def __init__(self, cause: Exception, line: int, col: int):
        super().__init__(cause)
        self.line, self.col = line, col


class _InParser:
    """The LALR parser with the rules run at each reduction, so no lark tree is built and walked again
    (about 2x faster on a whole model's CSL). lark gives rules run inside the parser no positions, so each
    reduction takes its start as ``propagate_positions`` does: from the first of its raw children (its
    anonymous tokens included) that has one, a reduced child standing for all of its text, a child passed
    through by a ``?rule`` for its container's. The nodes equal ``_ToNodes().transform(_lark().parse(t))``
    (tested on the samples and generated bundles). A parse keeps its starts on the instance: one per thread.
    """

    def __init__(self) -> None:
        self.meta = _Meta()
        # id(result) -> (result, its start or None): kept alive for the parse, so no id is reused
        self.starts: dict[int, tuple[object, tuple[int, int] | None]] = {}
        rules = _Rules()
        callbacks = type("_Callbacks", (), {})()
        for name in _RULE_NAMES:
            setattr(callbacks, name, self._rule(getattr(rules, name)))
        self.lark = Lark(grammar_text(), parser="lalr", lexer="contextual", maybe_placeholders=True,
                         transformer=callbacks)
        table = self.lark._callbacks
        lalr = getattr(getattr(getattr(self.lark, "parser", None), "parser", None), "parser", None)
        # the reductions read this dict (as in lark 1.3); if a later lark copies it, the tree path is used
        self.usable = getattr(lalr, "callbacks", None) is table
        for key, reduce in list(table.items()):
            if isinstance(key, Rule):
                table[key] = _first_child if _passes_through(key) else self._positioned(reduce)

    def _rule(self, method):
        meta, starts = self.meta, self.starts

        def run(children):
            try:
                res = method(meta, children)
            except Exception as exc:  # noqa: BLE001 - reported as a malformed literal, as the tree path does
                raise _Malformed(exc, meta.line, meta.column) from None
            if type(res) is Token:  # a rule's token stands for the rule's text (``_positioned`` skips tokens)
                starts[id(res)] = (res, (meta.line, meta.column) if meta.line else None)
            return res
        return run

    def _positioned(self, reduce):
        meta, starts = self.meta, self.starts
        get = starts.get

        def run(children):
            start = None
            for c in children:
                e = get(id(c))
                if e is not None:
                    start = e[1]
                    if start is not None:
                        break
                elif type(c) is Token:
                    start = (c.line, c.column)
                    break
            if start is None:
                meta.line = meta.column = 0
            else:
                meta.line, meta.column = start
            res = reduce(children)
            if type(res) is not Token:  # a token passed through by a ?rule keeps its own start
                starts[id(res)] = (res, start)
            return res
        return run

    def parse(self, text: str) -> list:
        self.starts.clear()  # an error report may have fed tokens after the last parse
        try:
            return self.lark.parse(text)
        finally:
            self.starts.clear()


def _first_child(children: list):
    return children[0]


def _passes_through(rule: Rule) -> bool:
    """A ``?rule`` alternative of one symbol that is kept as it is (not an anonymous token, not an inlined
    ``_rule``, no placeholder): lark returns that child, whose start is already known."""
    o = rule.options
    if not o.expand1 or rule.alias or len(rule.expansion) != 1 or any(o.empty_indices or ()):
        return False
    sym = rule.expansion[0]
    return not sym.filter_out if sym.is_term else not sym.name.startswith("_")


_THREAD = threading.local()


def _in_parser() -> _InParser:
    p = getattr(_THREAD, "parser", None)
    if p is None:
        p = _THREAD.parser = _InParser()
    return p


# ------------------------------------------------------------------ errors

_TERMINAL_TEXT = {
    "SEMICOLON": "';'", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['",
    "RSQB": "']'", "COMMA": "','", "COLON": "':'", "DOT": "'.'", "EQ": "'='", "NAME": "a name",
    "INT": "an integer", "FLOAT": "a float", "STRING": "a string", "CHAR": "a character",
    "BUILTIN": "a builtin", "FAT_ARROW": "'=>'", "ARROW": "'->'", "VBAR": "'|'", "PIPE": "'|'",
    "AMP": "'&'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "PERCENT": "'%'",
    "CARET": "'^'", "BANG": "'!'", "TILDE": "'~'", "QMARK": "'?'", "DEREF": "'.*'",
    "CMP_OP": "a comparison", "SHIFT_OP": "a shift", "ASSIGN_OP": "an assignment", "ASM_BODY": "'('",
    "FLOAT": "a number",
}

_BLOCK_COMMENT_SCAN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|(/\*)')


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _block_comment(text: str) -> int | None:
    """Offset of the first ``/*`` outside strings and ``//`` comments (CSL has no block comments)."""
    for m in _BLOCK_COMMENT_SCAN.finditer(text):
        if m.group(1):
            return m.start(1)
    return None


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    return f"{str(tok)!r}"


def _expected_text(expected) -> str:
    names = sorted({_TERMINAL_TEXT.get(e, repr(e.lower()) if e.isupper() and len(e) > 1 else e)
                    for e in expected if not e.startswith("__")})
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _previous_token_end(text: str, offset: int) -> tuple[int, int]:
    """Line and column just after the last token before ``offset`` (skipping blanks and comments)."""
    lines = text[:offset].split("\n")
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        code = _strip_line_comment(line).rstrip()
        if code:
            return i + 1, len(code) + 1
    return 1, 1


def _strip_line_comment(line: str) -> str:
    for m in re.finditer(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|(//)', line):
        if m.group(1):
            return line[:m.start(1)]
    return line


def _semicolon_fixes(exc: UnexpectedToken) -> bool:
    """True when inserting ';' before the unexpected token lets the parser accept that token."""
    ip = getattr(exc, "interactive_parser", None)
    if ip is None:
        return False
    try:
        ip = ip.copy()
        ip.feed_token(Token("SEMICOLON", ";"))
        ip.feed_token(exc.token)
        return True
    except Exception:  # noqa: BLE001 - any failure means ';' was not the fix
        return False


def _syntax_error(path: str, text: str, exc: UnexpectedInput) -> CslSyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        what = "an unterminated or malformed literal" if ch in "\"'" else f"unexpected character {ch!r}"
        return CslSyntaxError(path, exc.line, exc.column, what)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = set(exc.expected or ())
        if tok.type == "$END":
            line, col = _previous_token_end(text, len(text))
            if "SEMICOLON" in expected and _semicolon_fixes(exc):
                return CslSyntaxError(path, line, col, "expected ';' at end of file")
            return CslSyntaxError(path, line, col, f"unexpected end of file; expected {_expected_text(expected)}")
        if "SEMICOLON" in expected and tok.start_pos is not None and _semicolon_fixes(exc):
            line, col = _previous_token_end(text, tok.start_pos)
            where = f" (line {tok.line})" if line < tok.line else ""
            return CslSyntaxError(path, line, col, f"expected ';' before {_describe(tok)}{where}")
        return CslSyntaxError(path, tok.line, tok.column,
                              f"unexpected {_describe(tok)}; expected {_expected_text(expected)}")
    if isinstance(exc, UnexpectedEOF):
        line, col = _previous_token_end(text, len(text))
        return CslSyntaxError(path, line, col, "unexpected end of file")
    return CslSyntaxError(path, getattr(exc, "line", 0), getattr(exc, "column", 0), str(exc))


# ------------------------------------------------------------------ public API

def parse(text: str, path: str = "<string>") -> st.Module:
    """Parse CSL source text; raise ``CslSyntaxError`` (``file:line:col: message``) if it is not CSL."""
    off = _block_comment(text)
    if off is not None:
        line, col = _line_col(text, off)
        raise CslSyntaxError(path, line, col, "block comments '/* */' do not exist in CSL; use '//'")
    parser = _in_parser()
    try:
        items = parser.parse(text) if parser.usable else _ToNodes().transform(_lark().parse(text))
    except UnexpectedInput as exc:
        raise _syntax_error(path, text, exc) from None
    except _Malformed as exc:  # a literal the grammar accepts but Python cannot read
        raise CslSyntaxError(path, exc.line, exc.col, f"malformed literal: {exc.args[0]}") from None
    except VisitError as exc:
        meta = getattr(exc.obj, "meta", None)
        raise CslSyntaxError(path, getattr(meta, "line", 0), getattr(meta, "column", 0),
                             f"malformed literal: {exc.orig_exc}") from None
    return st.Module(items, path=path, source=text, line=1, col=1)


def parse_file(path: str | Path) -> st.Module:
    """Read and parse one file. ``OSError``/``UnicodeDecodeError`` propagate (unreadable input)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse(text, str(path))
