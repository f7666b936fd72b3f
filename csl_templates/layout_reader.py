"""Read a layout file back: evaluate its comptime code and recover placement (per PE: file and
parameter struct) and routes (per PE and colour: ``rx`` and ``tx`` direction sets).

``evaluate_layout(path, params={...}, arch="wse2")`` returns a ``LayoutReadback``. Placement and routes
are stored as numpy grids indexed ``[x, y]`` (colour-keyed for routes), so a 720 x 720 layout costs a
few arrays; ``placement(x, y)``, ``route(x, y, colour)``, ``placements()`` and ``routes()`` give
Python values. ``memcpy.get_params(x)`` and other library results are opaque (``Opaque``) values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csl_templates import syntax_tree as st
from csl_templates.comptime import NOT_HANDLED, DirBits, EvalError, Evaluator, _np_of, object_codes
from csl_templates.comptime_values import (
    UNKNOWN, VOID, ArrayVal, Color, Direction, Opaque, StructVal, Vec, direction_set, to_python,
)
from csl_templates.parser import parse_file


@dataclass
class Problem:
    """Something the layout does wrong, found while evaluating it (becomes a checker finding)."""
    node: Any
    message: str
    rule: str
    severity: str = "E"


@dataclass
class ColorConfigExtra:
    """A colour config with more than ``.routes`` (switches, filters, teardown): kept for the checks."""
    site: int
    colour: int
    config: StructVal
    xs: np.ndarray
    ys: np.ndarray


@dataclass
class LayoutReadback:
    path: str
    width: int
    height: int
    files: list  # file names as written in @set_tile_code
    params: list  # distinct parameter structs (StructVal)
    tile_file: np.ndarray  # [x, y] index into files, -1 where no code
    tile_params: np.ndarray  # [x, y] index into params
    tile_count: np.ndarray  # [x, y] number of @set_tile_code calls
    tile_site: np.ndarray  # [x, y] index into sites of the last @set_tile_code
    rx: dict  # colour -> uint8 [x, y] bit set (comptime_values.Direction)
    tx: dict
    config_count: dict  # colour -> uint8 [x, y] number of configs for (PE, colour)
    route_site: dict  # colour -> int32 [x, y] index into sites
    sites: list  # call-site nodes
    exports: list  # (name, type value, mutable or None, node)
    extras: list  # ColorConfigExtra
    colour_uses: list  # (node, Color) for every @get_color evaluated
    problems: list  # Problem
    unbound_params: list  # ParamDecl nodes without value
    uses_memcpy: bool
    module: st.Module = field(repr=False, default=None)
    site_files: dict = field(default_factory=dict)  # site index -> file, for sites outside the layout file
    local_configs: int = 0  # PE programs' @set_local_color_config merged into rx/tx (add_local_config)

    def site_file(self, site: int) -> str:
        return self.site_files.get(site, self.path)

    def add_local_config(self, path: str, node, colour: int, rx: int, tx: int, mask) -> None:
        """Merge a PE program's ``@set_local_color_config`` into the route grids for the PEs in ``mask``."""
        if colour not in self.rx:
            shape = (self.width, self.height)
            self.rx[colour] = np.zeros(shape, dtype=np.uint8)
            self.tx[colour] = np.zeros(shape, dtype=np.uint8)
            self.config_count[colour] = np.zeros(shape, dtype=np.uint8)
            self.route_site[colour] = np.full(shape, -1, dtype=np.int32)
        site = len(self.sites)
        self.sites.append(node)
        self.site_files[site] = path
        self.local_configs += 1
        self.config_count[colour][mask] += 1
        self.rx[colour][mask] = rx
        self.tx[colour][mask] = tx
        self.route_site[colour][mask] = site

    def placement(self, x: int, y: int) -> tuple[str, dict] | None:
        f = int(self.tile_file[x, y])
        if f < 0:
            return None
        return self.files[f], to_python(self.params[int(self.tile_params[x, y])])

    def placements(self) -> dict:
        """``{(x, y): (file, params as plain Python)}`` for every placed PE."""
        out = {}
        xs, ys = np.nonzero(self.tile_file >= 0)
        py_params = [to_python(p) for p in self.params]
        for x, y in zip(xs.tolist(), ys.tolist()):
            out[(x, y)] = (self.files[self.tile_file[x, y]], py_params[self.tile_params[x, y]])
        return out

    def route(self, x: int, y: int, colour: int) -> tuple[frozenset, frozenset] | None:
        if colour not in self.config_count or not self.config_count[colour][x, y]:
            return None
        return direction_set(int(self.rx[colour][x, y])), direction_set(int(self.tx[colour][x, y]))

    def routes(self) -> dict:
        """``{(x, y, colour): (rx names, tx names)}`` for every configured (PE, colour)."""
        out = {}
        for c in sorted(self.config_count):
            xs, ys = np.nonzero(self.config_count[c])
            for x, y in zip(xs.tolist(), ys.tolist()):
                out[(x, y, c)] = (direction_set(int(self.rx[c][x, y])), direction_set(int(self.tx[c][x, y])))
        return out

    def pe_members(self):
        """Yield ``(file, params, pes)`` for each distinct (file, params) placed, in (file, params) order:
        ``pes`` are the group's flat indices into the ``[x, y]`` grids, ascending (``mask_of`` gives the
        mask). All groups together hold one index per PE, where a mask per group is a whole grid each
        (4,100 groups on 683 x 683: 1.9 GB)."""
        placed = np.flatnonzero(self.tile_file >= 0)
        if not placed.size:
            return
        n = len(self.params) + 1
        key = self.tile_file.ravel()[placed].astype(np.int64) * n + self.tile_params.ravel()[placed]
        order = np.argsort(key, kind="stable")
        keys, starts = np.unique(key[order], return_index=True)
        for k, pes in zip(keys.tolist(), np.split(placed[order], starts[1:])):
            f, p = divmod(k, n)
            yield self.files[f], self.params[p], pes

    def mask_of(self, pes) -> np.ndarray:
        """The ``[x, y]`` mask of flat PE indices (``pe_members``)."""
        mask = np.zeros(self.tile_file.shape, dtype=bool)
        mask.flat[pes] = True
        return mask


def dir_bits(v: Any) -> int | None:
    """Bit set of a direction list value (``.{RAMP, EAST}``, ``[1]direction{RAMP}``, ``{}``)."""
    if isinstance(v, Direction):
        return int(v)
    if isinstance(v, DirBits) and v.arr.ndim == 0:
        return int(v.arr)
    items = None
    if isinstance(v, StructVal):
        if v.fields:
            return None
        items = v.items
    elif isinstance(v, ArrayVal):
        items = v.items
    elif v is VOID:
        return 0
    if items is None:
        return None
    bits = 0
    for d in items:
        if not isinstance(d, Direction):
            return None
        bits |= int(d)
    return bits


class LayoutEffects:
    """Receives the layout builtins from the evaluator (scalar calls or lane arrays)."""

    names = frozenset({"set_rectangle", "set_tile_code", "set_color_config", "export_name", "get_color",
                       "set_local_color_config"})

    def __init__(self):
        self.rectangle = None
        self.sites: list = []
        self._site_ids: dict = {}
        self.files: list = []
        self._file_ids: dict = {}
        self.params: list = []
        self._param_ids: dict = {}
        self.tile_chunks: list = []  # (xs, ys, file_ids, param_ids, site)
        self._tile_buf: list = []
        self.route_chunks: list = []  # (xs, ys, colour, rx, tx, site)
        self._route_buf: list = []
        self.extras: list = []
        self.exports: list = []
        self.colour_uses: list = []
        self._colour_seen: set = set()
        self.problems: list = []
        self._problem_keys: set = set()
        self.tile_before_rect = False

    # -- bookkeeping
    def mark(self):
        self._flush()
        return (len(self.tile_chunks), len(self.route_chunks), len(self.extras), len(self.exports))

    def reset(self, mark):
        self._tile_buf.clear()
        self._route_buf.clear()
        a, b, c, d = mark
        del self.tile_chunks[a:], self.route_chunks[b:], self.extras[c:], self.exports[d:]

    def _flush(self):
        if self._tile_buf:
            arr = np.array(self._tile_buf, dtype=np.int64)
            self.tile_chunks.append((arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4]))
            self._tile_buf.clear()
        if self._route_buf:
            arr = np.array(self._route_buf, dtype=np.int64)
            self.route_chunks.append((arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5]))
            self._route_buf.clear()

    def _site(self, node) -> int:
        k = id(node)
        s = self._site_ids.get(k)
        if s is None:
            s = self._site_ids[k] = len(self.sites)
            self.sites.append(node)
        return s

    def problem(self, node, message, rule, severity="E"):
        key = (id(node), rule)
        if key not in self._problem_keys:
            self._problem_keys.add(key)
            self.problems.append(Problem(node, message, rule, severity))

    def _intern(self, table, ids, value):
        k = value
        try:
            i = ids.get(k)
        except TypeError:
            k = repr(value)
            i = ids.get(k)
        if i is None:
            i = ids[k] = len(table)
            table.append(value)
        return i

    # -- builtins
    def builtin(self, ev: Evaluator, n: st.BuiltinCall):
        if ev.runtime:
            return NOT_HANDLED
        return getattr(self, "b_" + n.name)(ev, n)

    def b_get_color(self, ev, n):
        v = ev.b_get_color(n)
        vals = [v] if not isinstance(v, Vec) else list({x for x in v.arr.ravel().tolist()})
        for c in vals:
            if isinstance(c, Color) and (id(n), c.id) not in self._colour_seen:
                self._colour_seen.add((id(n), c.id))
                self.colour_uses.append((n, c))
        return v

    def b_set_rectangle(self, ev, n):
        if ev.depth:
            from csl_templates.comptime import NotVectorizable
            raise NotVectorizable("@set_rectangle in a loop")
        w, h = ev.args(n)
        if self.rectangle is not None:
            self.problem(n, "@set_rectangle called more than once", "layout.rectangle")
            return VOID
        if not (isinstance(w, int) and isinstance(h, int)) or w <= 0 or h <= 0:
            raise EvalError(n, f"@set_rectangle needs positive integer sizes, got {w!r}, {h!r}")
        self.rectangle = (int(w), int(h))
        return VOID

    def b_export_name(self, ev, n):
        if ev.depth:
            from csl_templates.comptime import NotVectorizable
            raise NotVectorizable("@export_name in a loop")
        a = ev.args(n)
        self.exports.append((a[0], a[1] if len(a) > 1 else None, a[2] if len(a) > 2 else None, n))
        return VOID

    def b_set_local_color_config(self, ev, n):
        self.problem(n, "@set_local_color_config belongs in a PE file's top-level comptime block, not the layout",
                     "placement.layout_only")
        return VOID

    def _lanes(self, ev, values):
        shape = tuple(ev.lane_shape)
        active = ev._active_mask_full()
        out = []
        count = None
        for v in values:
            a = np.asarray(_np_of(v))  # as broadcast_to reads it
            if active is not None and a.ndim == 0:  # one value on every lane: no mask to read
                if count is None:
                    count = int(np.count_nonzero(active))
                out.append(np.full(count, a, dtype=a.dtype))
                continue
            a = np.broadcast_to(a, shape)
            out.append(a[active] if active is not None else a.reshape(-1))
        return out

    def _codes(self, ev, value, table, ids):
        """Per active lane, the index of ``value`` in ``table`` (interning new values)."""
        if isinstance(value, StructVal) and _has_vec(value):
            names = list(value.fields)
            parts = [self._local_codes(ev, value.fields[k]) for k in names] + \
                    [self._local_codes(ev, x) for x in value.items]
            key, radix = _mixed_radix([p[0] for p in parts], [len(p[1]) for p in parts])
            uniq_keys, inv = _factorize_ints(key, radix)
            mapping = np.empty(len(uniq_keys), dtype=np.int64)
            for j, k0 in enumerate(uniq_keys.tolist()):
                digits = []
                for p in parts:
                    k0, d = divmod(k0, len(p[1]))
                    digits.append(d)
                vals = [parts[k][1][digits[k]] for k in range(len(parts))]
                sv = StructVal(dict(zip(names, vals[:len(names)])), tuple(vals[len(names):]))
                mapping[j] = self._intern(table, ids, sv)
            return mapping[inv.reshape(-1)]
        codes, local = self._local_codes(ev, value)
        mapping = np.array([self._intern(table, ids, v) for v in local], dtype=np.int64)
        return mapping[codes]

    def _local_codes(self, ev, value):
        """(codes over active lanes, list of distinct Python values)."""
        if isinstance(value, StructVal) and _has_vec(value):
            tmp_table, tmp_ids = [], {}
            codes = self._codes(ev, value, tmp_table, tmp_ids)
            return codes, tmp_table
        if not isinstance(value, Vec):
            (lane,) = self._lanes(ev, [0])
            return np.zeros(lane.shape, dtype=np.int64), [value]
        src = value.arr  # factorise the (un-broadcast) array, then spread the codes over the lanes
        if src.dtype != object:
            uniq, inv = _unique_inverse(src)
            table = [x.item() for x in uniq]
            codes = inv.reshape(src.shape)
        else:
            ids, table = {}, []
            codes = np.empty(src.size, dtype=np.int64)
            for i, x in enumerate(src.ravel().tolist()):
                k = ids.get(x)
                if k is None:
                    k = ids[x] = len(table)
                    table.append(x)
                codes[i] = k
            codes = codes.reshape(src.shape)
        (lane_codes,) = self._lanes(ev, [Vec(codes)])
        return lane_codes.astype(np.int64, copy=False), table

    def b_set_tile_code(self, ev, n):
        if len(n.args) < 3:
            raise EvalError(n, "@set_tile_code(x, y, file, params) takes at least 3 arguments")
        a = ev.args(n)
        x, y, fname = a[0], a[1], a[2]
        params = a[3] if len(a) > 3 else StructVal({})
        site = self._site(n)
        if self.rectangle is None:
            self.problem(n, "@set_tile_code before @set_rectangle", "layout.rectangle")
            return VOID
        if not isinstance(params, (StructVal, Vec)):
            raise EvalError(n, f"@set_tile_code parameters must be a struct, got {params!r}")
        if not any(isinstance(v, Vec) for v in (x, y, fname)) and not (isinstance(params, StructVal) and _has_vec(params)) \
                and not isinstance(params, Vec):
            self._check_xy(n, x, y)
            if not isinstance(fname, str):
                raise EvalError(n, f"@set_tile_code file must be a string, got {fname!r}")
            f = self._intern(self.files, self._file_ids, fname)
            p = self._intern(self.params, self._param_ids, params)
            self._tile_buf.append((int(x), int(y), f, p, site))
            return VOID
        self._flush()
        xs, ys = self._lanes(ev, [x, y])
        xs, ys = self._int_lanes(n, xs, "x"), self._int_lanes(n, ys, "y")
        fcodes = self._codes(ev, fname, self.files, self._file_ids)
        if any(not isinstance(f, str) for f in self.files):
            raise EvalError(n, "@set_tile_code file must be a string")
        pcodes = self._codes(ev, params, self.params, self._param_ids)
        self.tile_chunks.append((xs, ys, np.broadcast_to(fcodes, xs.shape), np.broadcast_to(pcodes, xs.shape),
                                 np.full(xs.shape, site, dtype=np.int64)))
        return VOID

    def _int_lanes(self, n, arr, what):
        if arr.dtype == object or arr.dtype.kind not in "iu":
            raise EvalError(n, f"PE coordinate {what} must be an integer")
        return arr.astype(np.int64)

    def _check_xy(self, n, x, y):
        if not (isinstance(x, int) and isinstance(y, int)) or isinstance(x, bool) or isinstance(y, bool):
            raise EvalError(n, f"PE coordinates must be integers, got ({x!r}, {y!r})")

    def b_set_color_config(self, ev, n):
        if len(n.args) != 4:
            raise EvalError(n, "@set_color_config(x, y, colour, config) takes 4 arguments")
        x, y, colour, cfg = ev.args(n)
        site = self._site(n)
        if isinstance(cfg, Vec):
            return self._color_config_per_lane(ev, n, site, x, y, colour, cfg)
        if not isinstance(cfg, StructVal):
            raise EvalError(n, f"a colour config must be a struct, got {cfg!r}")
        routes = cfg.get("routes")
        if routes is None:
            self.problem(n, "colour config has no '.routes' (write '.routes = .{}' for none)", "routes.present")
            rx = tx = 0
        elif not isinstance(routes, StructVal):
            raise EvalError(n, "'.routes' must be a struct with '.rx' and '.tx'")
        else:
            rx = self._bits(n, ev, routes.get("rx", VOID))
            tx = self._bits(n, ev, routes.get("tx", VOID))
        scalar = not any(isinstance(v, Vec) for v in (x, y, colour, rx, tx))
        if scalar:
            self._check_xy(n, x, y)
            if not isinstance(colour, Color):
                raise EvalError(n, f"colour must be a color value, got {colour!r}")
            self._route_buf.append((int(x), int(y), colour.id, rx, tx, site))
            if set(cfg.fields) - {"routes"}:
                self._flush()
                self.extras.append(ColorConfigExtra(site, colour.id, cfg, np.array([x]), np.array([y])))
            return VOID
        self._flush()
        cid = colour
        if isinstance(colour, Vec):
            cid = _vec_map_colour(n, colour)
        elif isinstance(colour, Color):
            cid = colour.id
        else:
            raise EvalError(n, f"colour must be a color value, got {colour!r}")
        xs, ys, cs, rxs, txs = self._lanes(ev, [x, y, cid, rx, tx])
        xs, ys = self._int_lanes(n, xs, "x"), self._int_lanes(n, ys, "y")
        self.route_chunks.append((xs, ys, cs.astype(np.int64), rxs.astype(np.int64), txs.astype(np.int64),
                                  np.full(xs.shape, site, dtype=np.int64)))
        if set(cfg.fields) - {"routes"}:
            for c in np.unique(cs).tolist():
                sel = cs == c
                self.extras.append(ColorConfigExtra(site, int(c), _scalar_part(cfg), xs[sel], ys[sel]))
        return VOID

    def _color_config_per_lane(self, ev, n, site, x, y, colour, cfg):
        xs, ys, cs, cfgs = self._lanes(ev, [x, y, colour, cfg])
        for xv, yv, cv, cf in zip(xs.tolist(), ys.tolist(), cs.tolist(), cfgs.tolist()):
            routes = cf.get("routes") if isinstance(cf, StructVal) else None
            if routes is None:
                self.problem(n, "colour config has no '.routes'", "routes.present")
                continue
            rx = dir_bits(routes.get("rx", VOID))
            tx = dir_bits(routes.get("tx", VOID))
            if rx is None or tx is None or not isinstance(cv, Color):
                raise EvalError(n, "malformed colour config")
            self._route_buf.append((int(xv), int(yv), cv.id, rx, tx, site))
        return VOID

    def _bits(self, n, ev, v):
        if isinstance(v, DirBits):
            return Vec(v.arr) if v.arr.ndim else int(v.arr)
        if isinstance(v, Vec):
            # lanes share a few list objects (a comptime function returns one of a handful of
            # constants): read each distinct object once, then index by object identity
            objs, codes = object_codes(v.arr) if v.arr.dtype == object else _value_codes(v.arr)
            bits = np.empty(len(objs), dtype=np.int64)
            for j, o in enumerate(objs):
                b = dir_bits(o)
                if b is None:
                    raise EvalError(n, f"a route's rx/tx must list directions, got {o!r}")
                bits[j] = b
            return Vec(bits[codes])
        if isinstance(v, StructVal) and any(isinstance(i, Vec) for i in v.items):
            total = 0
            for item in v.items:
                b = self._bits(n, ev, item if not isinstance(item, Direction) else item)
                total = total | (b.arr if isinstance(b, Vec) else b)
            return Vec(total) if isinstance(total, np.ndarray) else total
        b = dir_bits(v)
        if b is None:
            raise EvalError(n, f"a route's rx/tx must list directions, got {v!r}")
        return b

    # -- result
    def readback(self, path, module, ev) -> LayoutReadback:
        self._flush()
        w, h = self.rectangle or (0, 0)
        tile_file = np.full((w, h), -1, dtype=np.int32)
        tile_params = np.zeros((w, h), dtype=np.int32)
        tile_count = np.zeros((w, h), dtype=np.uint8)
        tile_site = np.full((w, h), -1, dtype=np.int32)
        for xs, ys, fs, ps, ss in self.tile_chunks:
            ok = self._inside(xs, ys, ss, w, h, "@set_tile_code")
            xs, ys = xs[ok], ys[ok]
            tile_count += _count_at(xs, ys, w, h).astype(np.uint8)
            tile_file[xs, ys] = fs[ok]
            tile_params[xs, ys] = ps[ok]
            tile_site[xs, ys] = ss[ok]
        rx, tx, count, rsite = {}, {}, {}, {}
        for xs, ys, cs, rxs, txs, ss in self.route_chunks:
            ok = self._inside(xs, ys, ss, w, h, "@set_color_config")
            for c in np.unique(cs[ok]).tolist():
                sel = ok & (cs == c)
                if c not in rx:
                    rx[c] = np.zeros((w, h), dtype=np.uint8)
                    tx[c] = np.zeros((w, h), dtype=np.uint8)
                    count[c] = np.zeros((w, h), dtype=np.uint8)
                    rsite[c] = np.full((w, h), -1, dtype=np.int32)
                px, py = xs[sel], ys[sel]
                count[c] += _count_at(px, py, w, h).astype(np.uint8)
                rx[c][px, py] = rxs[sel]
                tx[c][px, py] = txs[sel]
                rsite[c][px, py] = ss[sel]
        uses_memcpy = any(isinstance(d.init, st.BuiltinCall) and d.init.name == "import_module"
                          and d.init.args and isinstance(d.init.args[0], st.StringLit)
                          and d.init.args[0].value.startswith("<memcpy") for d in module.decls())
        return LayoutReadback(path, w, h, list(self.files), list(self.params), tile_file, tile_params, tile_count,
                              tile_site, rx, tx, count, rsite, list(self.sites), list(self.exports),
                              list(self.extras), list(self.colour_uses), self.problems,
                              list(ev.unbound_params), uses_memcpy, module)

    def _inside(self, xs, ys, ss, w, h, what):
        ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        if not ok.all():
            k = int(np.argmin(ok))
            self.problem(self.sites[int(ss[k])], f"{what} at ({int(xs[k])}, {int(ys[k])}) is outside the "
                                                 f"{w} x {h} rectangle", "layout.outside")
        return ok


def _count_at(xs, ys, w, h) -> np.ndarray:
    """How many times each (x, y) occurs, as a [w, h] grid."""
    return np.bincount(xs * h + ys, minlength=w * h).reshape(w, h)


def _mixed_radix(codes: list, sizes: list):
    """One integer per lane from several small codes (first code least significant)."""
    key = np.zeros(codes[0].shape, dtype=np.int64)
    mult = 1
    for c, n in zip(codes, sizes):
        key += c * mult
        mult *= max(1, n)
    return key, mult


def _factorize_ints(key: np.ndarray, radix: int):
    """(sorted distinct keys, index of each lane's key); O(n) through a lookup table when it is small."""
    if radix <= 1 << 24:
        present = np.bincount(key, minlength=radix) > 0
        uniq = np.nonzero(present)[0]
        lut = np.empty(radix, dtype=np.int64)
        lut[uniq] = np.arange(len(uniq))
        return uniq, lut[key]
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq, inv.reshape(-1)


def _unique_inverse(src: np.ndarray):
    """``np.unique(src, return_inverse=True)``; for integers (and bools) in a small range, through a lookup
    table instead of a sort (a layout's per-lane parameters: a few values on half a million lanes)."""
    if src.size and src.dtype.kind in "iub":
        lo, hi = int(src.min()), int(src.max())
        if hi - lo <= max(1 << 16, src.size):
            offsets, inv = _factorize_ints(src.reshape(-1).astype(np.int64) - lo, hi - lo + 1)
            return (offsets + lo).astype(src.dtype), inv
    return np.unique(src, return_inverse=True)


def _value_codes(arr: np.ndarray) -> tuple[list, np.ndarray]:
    """``object_codes`` of a numeric array: its distinct values (as Python scalars) and indices."""
    uniq, inv = _unique_inverse(arr)
    return [x.item() for x in uniq], inv.reshape(arr.shape)


def _has_vec(v: StructVal) -> bool:
    return any(isinstance(x, Vec) or (isinstance(x, StructVal) and _has_vec(x))
               for x in list(v.fields.values()) + list(v.items))


def _scalar_part(cfg: StructVal) -> StructVal:
    return StructVal({k: v for k, v in cfg.fields.items() if not isinstance(v, Vec)})


def _vec_map_colour(n, v: Vec) -> Vec:
    flat = v.arr.ravel().tolist()
    out = np.empty(len(flat), dtype=np.int64)
    for i, c in enumerate(flat):
        if not isinstance(c, Color):
            raise EvalError(n, f"colour must be a color value, got {c!r}")
        out[i] = c.id
    return Vec(out.reshape(v.arr.shape))


class ModuleLoader:
    """Parses files once and evaluates imported local modules (``@import_module("x.csl", ...)``)."""

    def __init__(self, arch: str, effects=None):
        self.arch = arch
        self.cache: dict = {}
        self.effects = effects
        self.errors: list = []

    def module(self, path: Path) -> st.Module:
        key = str(path)
        if key not in self.cache:
            self.cache[key] = parse_file(path)
        return self.cache[key]

    def __call__(self, ev: Evaluator, node, name: str, params) -> Evaluator:
        base = Path(ev.module.path).parent
        path = (base / name)
        if not path.exists():
            raise EvalError(node, f"cannot find module '{name}' (looked in {base})")
        mod = self.module(path)
        values = dict(params.fields) if isinstance(params, StructVal) else {}
        return Evaluator(mod, arch=self.arch, params=values, effects=self.effects, loader=self)


def evaluate_layout(source: str | Path | st.Module, params: dict | None = None, arch: str = "wse2",
                    vectorize: bool = True) -> LayoutReadback:
    """Evaluate a layout file's params, globals and ``layout {}`` block; return what it placed and routed.

    ``params`` maps param names to values (ints, floats, bools, or comptime values); raises
    ``EvalError`` (with the node) if the layout's comptime code fails, ``CslSyntaxError`` if it does
    not parse.
    """
    module = source if isinstance(source, st.Module) else parse_file(source)
    effects = LayoutEffects()
    loader = ModuleLoader(arch, effects)
    ev = Evaluator(module, arch=arch, params=params or {}, effects=effects, vectorize=vectorize, loader=loader)
    blocks = module.layout_blocks()
    if not blocks:
        raise EvalError(module, "no 'layout { }' block in this file")
    for p in module.params():
        ev.global_value(p.name, p)
    for b in blocks[:1]:
        ev.run_block(b.body)
    return effects.readback(module.path, module, ev)


__all__ = ["LayoutReadback", "evaluate_layout", "dir_bits", "Problem", "UNKNOWN", "Opaque"]
