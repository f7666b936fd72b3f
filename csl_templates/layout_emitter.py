"""Lowering a program's placements and route rules to ``layout.csl``.

One comptime loop nest over the rectangle (``x`` columns, ``y`` rows) holds, per PE:

* **placement**: ``@set_tile_code(x, y, "pe_<body>.csl", .{...})`` inside the placement's rectangle,
  with each parameter printed from the expression the author gave (numbers, expressions of ``X``,
  ``Y`` and program parameters); PEs without a body get ``pe_idle.csl``;
* **routes**: one block per route rule: where its condition holds, ``@set_color_config`` with the
  direction literals of its masks — printed directly when the masks are constants, else through
  ``route_ports(mask)``, a table of every mask of the five ports printed once — so a rule written once
  prints the same text whatever the mesh size. A (PE, colour) that a later rule re-routes is excluded from the
  earlier rule's condition, so every (PE, colour) is configured once.

Sizes are layout ``param``s bound by ``cslc --params`` (``width``, ``height`` and the program's
parameters), so the text does not grow with the mesh. Subexpressions shared between parameters and
route masks are bound once per PE (``const _vN``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmr.errors import InputError
from simulator.expr import Const, Expr, as_expr, evaluate, names
from simulator.program import MeshProgram, Port

from csl_templates.exprs import Bindings, CslPrinter, Scope
from csl_templates.names import check_layout_name

#: Direction literals in the order they are printed.
_PORT_ORDER = (Port.NORTH, Port.SOUTH, Port.EAST, Port.WEST, Port.RAMP)


def directions(mask: int) -> str:
    return ".{ " + ", ".join(p.name for p in _PORT_ORDER if mask >> int(p) & 1) + " }" if mask else ".{}"


@dataclass
class _RuleInfo:
    index: int
    rule: object
    keys: np.ndarray  # configured (pe * C + colour)


class LayoutEmitter:
    def __init__(self, prog: MeshProgram, pe_files: dict, idle_file: str | None, exports: dict,
                 functions: dict, param_types: dict, kernel: str):
        self.prog = prog
        self.pe_files = pe_files  # id(body) -> file name
        self.idle_file = idle_file
        self.exports = exports
        self.functions = functions
        self.param_types = param_types  # id(body) -> {param: CSL type}
        self.kernel = kernel
        for n in prog.layout_params:
            check_layout_name(n, f"program {prog.name}", "program parameter")
        nonneg = frozenset(n for n, v in prog.layout_params.items() if v >= 0)
        # signs only, not this size's values: what the printer proves (and so prints) must not
        # depend on the mesh size, or the text would grow with it
        self.scope = Scope(param_types={n: "i32" for n in prog.layout_params},
                           coord={"x": "xi", "y": "yi"}, coord_type="i32", nonneg_params=nonneg)
        self.p = CslPrinter(self.scope)

    # ---------------------------------------------------------------------------------- bounds
    def _bound(self, v: int, size: int, axis: str) -> str:
        """A rectangle bound, written against the mesh side when it sits near the far end (so the
        text is the same for every mesh size)."""
        side = "width_i32" if axis == "x" else "height_i32"
        if v == 0:
            return "0"
        if v == size:
            return side
        if 2 * v > size:
            return f"{side} - {size - v}"
        return str(v)

    def _in_rects(self, rects: list) -> str | None:
        """The condition of a PE set given as rectangles (``rectangles``): their conditions or'ed."""
        conds = [self._in_rect(r) for r in rects]
        if any(c is None for c in conds):
            return None
        return conds[0] if len(conds) == 1 else " or ".join(f"({c})" for c in conds)

    def _in_rect(self, rect) -> str | None:
        rx, ry = rect
        W, H = self.prog.width, self.prog.height
        parts = []
        for r, size, coord, axis in ((rx, W, "xi", "x"), (ry, H, "yi", "y")):
            if r.start > 0:
                parts.append(f"{coord} >= {self._bound(r.start, size, axis)}")
            if r.stop < size:
                parts.append(f"{coord} < {self._bound(r.stop, size, axis)}")
        return " and ".join(parts) if parts else None

    # ---------------------------------------------------------------------------------- rules
    def _rule_infos(self) -> list[_RuleInfo]:
        prog = self.prog
        C = prog.spec.num_colors
        out = []
        for k, r in enumerate(prog.route_rules):
            if r.config:
                continue  # a run-time alternative (SetRoute): not a layout route
            if r.rect is None:
                raise InputError(f"program {prog.name}: route rule {k} (colour {r.colour!r}) is set on a list of "
                                 f"PEs, not a rectangle; the CSL emitter needs rectangles (ranges of x and y)")
            xr = np.arange(r.rect[0].start, r.rect[0].stop, dtype=np.int64)
            yr = np.arange(r.rect[1].start, r.rect[1].stop, dtype=np.int64)
            # evaluated on a (rows, columns) grid by broadcasting: a rule of x alone costs one row
            env = {"x": xr[None, :], "y": yr[:, None], **prog.layout_params}
            shape = (yr.size, xr.size)
            cols, rxm, txm, cond = (np.broadcast_to(np.asarray(evaluate(e, env, vectorised=True)), shape)
                                    .astype(np.int64) for e in (r.colour, r.rx, r.tx, r.when))
            on = (cond != 0) & ((rxm != 0) | (txm != 0))
            pes = yr[:, None] * prog.width + xr[None, :]
            out.append(_RuleInfo(k, r, (pes[on] * C + cols[on]).astype(np.int64)))
        return out

    def _overrides(self, infos: list[_RuleInfo]) -> dict[int, list[int]]:
        """For each rule, the later rules that re-route some of its (PE, colour) pairs: where several
        rules configure one pair, each is overridden by the next (so by the last one, transitively)."""
        # rules on distinct constant colours never meet: only the others need the per-PE check
        const = [as_expr(i.rule.colour) for i in infos]
        const_vals = [c.value for c in const if isinstance(c, Const)]
        clash = {v for v in const_vals if const_vals.count(v) > 1}
        if len(const_vals) == len(infos):  # (a colour that varies per PE could meet any rule)
            infos = [i for i, c in zip(infos, const) if c.value in clash]
        if len(infos) < 2:
            return {}
        keys = np.concatenate([i.keys for i in infos])
        rule = np.concatenate([np.full(i.keys.size, i.index) for i in infos])
        if not keys.size:
            return {}
        counts = np.bincount(keys)
        shared = counts[keys] > 1
        if not shared.any():
            return {}
        keys, rule = keys[shared], rule[shared]
        order = np.lexsort((rule, keys))
        k, r = keys[order], rule[order]
        dup = k[:-1] == k[1:]
        n = max(i.index for i in infos) + 1
        pairs = np.unique(r[:-1][dup] * n + r[1:][dup])
        out: dict[int, list[int]] = {}
        for v in pairs.tolist():
            out.setdefault(v // n, []).append(v % n)
        return out

    # ---------------------------------------------------------------------------------- params
    def _param_value(self, pl, name: str, kind: str, ptype: str) -> str:
        given = pl.params_given[name]
        if callable(given) and not isinstance(given, Expr) or isinstance(given, (list, tuple, np.ndarray)):
            e = tabulated(pl.params[name], pl.pes, self.prog.width)
        else:
            e = as_expr(given)
        if kind == "colour":
            return f"@get_color({self.p.expr(e)})"
        return self.p.expr(e, ptype)

    # ---------------------------------------------------------------------------------- render
    def render(self, env) -> str:
        from csl_templates.emit import rectangle_aliases

        prog = self.prog
        aliases = rectangle_aliases(prog)
        infos = self._rule_infos()
        overrides = self._overrides(infos)
        # every expression printed inside the loop, for sharing
        roots = []
        for pl in prog.placements:
            for v in pl.params_given.values():
                if isinstance(v, (Expr, int, float, np.integer, np.floating)) and not isinstance(v, bool):
                    roots.append(as_expr(v))
        for info in infos:
            r = info.rule
            roots += [r.colour, r.when, r.rx, r.tx]
        shared = Bindings(self.p).prepare(roots)
        placements = []
        covered = np.zeros(prog.num_pes, dtype=bool)
        for pl in prog.placements:
            if pl.auto:
                raise InputError(f"program {prog.name} places code with the per-PE trace API (add/add_buffer); "
                                 f"only programs written as bodies placed with parameters emit compact CSL")
            covered[pl.pes] = True
            final = pl.body.finalized()
            ptypes = self.param_types[id(final)]
            fields = [".memcpy_params = memcpy.get_params(x)"]
            for name, kind in final.params.items():
                fields.append(f".{name} = {self._param_value(pl, name, kind, ptypes[name])}")
            where = self._in_rect(pl.rect) if pl.rect is not None else \
                self._in_rects(rectangles(pl.pes, prog.width))
            placements.append((where, final.name, self.pe_files[id(final)], fields))
        if not covered.all():
            placements.append((None, None, self.idle_file, [".memcpy_params = memcpy.get_params(x)"]))
        placement_lines = _placement_lines(placements)
        rules = []
        uses_table = False
        for info in infos:
            r = info.rule
            cond = []
            rect = self._in_rect(r.rect)
            if rect:
                cond.append(rect)
            when = as_expr(r.when)
            if not (when == as_expr(1)):
                cond.append(self.p.cond(when))
            for j in overrides.get(info.index, []):
                later = prog.route_rules[j]
                parts = [self._in_rect(later.rect)]
                if not _const(later.when):
                    parts.append(self.p.cond(later.when))
                if not (_const(later.colour) and as_expr(later.colour) == as_expr(r.colour)):
                    parts.append(f"{self.p.expr(later.colour, 'i32')} == {self.p.expr(r.colour, 'i32')}")
                if not (_const(later.rx) and _const(later.tx)):
                    parts.append(f"({self.p.expr(later.rx, 'i32')} != 0 or {self.p.expr(later.tx, 'i32')} != 0)")
                parts = [q for q in parts if q]
                cond.append("!(" + (" and ".join(parts) if parts else "true") + ")")
            const_masks = not any(names(as_expr(r.rx))) and not any(names(as_expr(r.tx)))
            colour = f"@get_color({self.p.expr(r.colour, 'i32')})"
            lines = [f"// route rule {info.index}: colour {r.colour!r}"]
            cond_text = " and ".join(f"({c})" if " or " in c else c for c in cond)
            lines.append(f"if ({cond_text}) {{" if cond_text else "{")
            body = []
            if const_masks:
                rxm, txm = int(as_expr(r.rx).value), int(as_expr(r.tx).value)
                body.append(_config(colour, rxm, txm) if rxm or txm else "// (routes nothing)")
            else:
                # the masks' direction literals from one table (``route_ports``): the same text whatever
                # pairs the rule takes at this size
                rx, tx = f"route{info.index}_rx", f"route{info.index}_tx"
                body.append(f"const {rx}: i32 = {self.p.expr(r.rx, 'i32')};")
                body.append(f"const {tx}: i32 = {self.p.expr(r.tx, 'i32')};")
                body.append(f"if ({rx} != 0 or {tx} != 0) {{")
                body.append(f"  @set_color_config(x, y, {colour}, .{{ .routes = .{{ .rx = route_ports({rx}), "
                            f".tx = route_ports({tx}) }} }});")
                body.append("}")
                uses_table = True
            lines += ["  " + b for b in body] + ["}"]
            rules.append(lines)
        exports = [{"name": n, "type": t} for n, t in self.exports.items()]
        functions = [{"name": n, "sig": "fn(" + ", ".join(a) + ")void"} for n, a in self.functions.items()]
        return env.get_template("layout.csl.j2").render(
            kernel=self.kernel, prog=prog, shared=shared,
            params=[n for n in prog.layout_params if n not in aliases], aliases=aliases,
            placement_lines=placement_lines, rules=rules, exports=exports, functions=functions,
            port_table=_port_table() if uses_table else [],
            n_bodies=len({id(pl.body) for pl in prog.placements}))


def _const(e) -> bool:
    """A constant (a non-zero one, for conditions and masks: zero never reaches the layout)."""
    c = as_expr(e)
    return isinstance(c, Const) and c.value != 0


def _config(colour: str, rxm: int, txm: int) -> str:
    return (f"@set_color_config(x, y, {colour}, .{{ .routes = .{{ .rx = {directions(rxm)}, "
            f".tx = {directions(txm)} }} }});")


def _port_table() -> list[str]:
    """``route_ports(mask)``: the direction literals of a port mask (bit ``1 << port``), every mask of
    the five ports, so a rule whose masks vary over the PEs prints one ``@set_color_config``."""
    lines = ["fn route_ports(comptime mask: i32) comptime_struct {"]
    for m in range(1, 1 << len(_PORT_ORDER)):
        lines.append(f"  if (mask == {m}) {{ return {directions(m)}; }}")
    lines += ["  return .{};", "}"]
    return lines


def _placement_lines(placements: list) -> list[str]:
    """``@set_tile_code`` per placement: an if/else-if chain on the rectangles, the idle program last."""
    lines = []
    chained = len(placements) > 1 or placements[0][0] is not None
    for i, (cond, body, file, fields) in enumerate(placements):
        what = f"body {body}" if body else "no body: an idle PE that finishes every launch at once"
        if chained:
            last = i == len(placements) - 1
            if cond is None and not last:
                raise AssertionError("a placement without a rectangle condition must come last")
            head = ("} else " if i else "") + (f"if ({cond}) {{" if cond is not None else "{")
            lines.append(head)
            ind = "  "
        else:
            ind = ""
        lines.append(f"{ind}// {what}")
        lines.append(f'{ind}@set_tile_code(x, y, "{file}", .{{')
        lines += [f"{ind}  {f}," for f in fields]
        lines.append(f"{ind}}});")
    if chained:
        lines.append("}")
    return lines


def rectangles(pes: np.ndarray, width: int) -> list[tuple[range, range]]:
    """A set of PEs (flat indices) as few rectangles: the runs of consecutive x in each row, merged over
    consecutive rows that have the same run. Placements and parameter tables on PE lists print as
    these (their number follows the set's shape: a row, a column, a region less a row and a column)."""
    pes = np.unique(np.asarray(pes, dtype=np.int64))
    ys, xs = pes // width, pes % width
    runs: dict[int, list[tuple[int, int]]] = {}
    if pes.size:
        brk = np.nonzero((np.diff(xs) != 1) | (np.diff(ys) != 0))[0] + 1
        for a, b in zip(np.r_[0, brk], np.r_[brk, pes.size]):
            runs.setdefault(int(ys[a]), []).append((int(xs[a]), int(xs[b - 1]) + 1))
    out: list[tuple[range, range]] = []
    open_: dict[tuple[int, int], int] = {}  # run -> first row
    last_y = None
    for y in sorted(runs) + [None]:
        cur = set(runs.get(y, [])) if y is not None and (last_y is None or y == last_y + 1) else set()
        for run, y0 in list(open_.items()):
            if run not in cur:
                out.append((range(*run), range(y0, last_y + 1)))
                del open_[run]
        if y is not None:
            for run in runs[y]:
                open_.setdefault(run, y)
        last_y = y
    return sorted(out, key=lambda r: (r[1].start, r[0].start))


def tabulated(values: np.ndarray, pes: np.ndarray, width: int) -> Expr:
    """A parameter given per PE (an array or a function of the coordinates) as an expression of ``X`` and
    ``Y`` equal to it on ``pes``: its most common value, and each other value where its rectangles are."""
    from simulator.expr import X, Y, select

    values = np.asarray(values)
    uniq, counts = np.unique(values, return_counts=True)
    default = uniq[int(np.argmax(counts))]
    e: Expr = as_expr(default.item())
    for v in reversed(uniq.tolist()):
        if v == default:
            continue
        cond = None
        for rx, ry in rectangles(pes[values == v], width):
            c = (X >= rx.start) & (X < rx.stop) & (Y >= ry.start) & (Y < ry.stop)
            cond = c if cond is None else (cond | c)
        e = select(cond, v, e)
    return e
