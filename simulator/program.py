"""``MeshProgram``: the one description of a mesh kernel that the simulator executes, the CSL emitter
lowers and the cost model reads.

The model is CSL's:

* **Rectangle** ``width × height`` of PEs; x is the column (grows EAST), y the row (grows SOUTH),
  NORTH is y−1 (hardware-and-csl.md §2.2). CSL: ``@set_rectangle(W, H)``.
* **Bodies** (``simulator.body.Body``) are written once and **placed** on PEs with per-PE
  parameters (``place``; CSL ``@set_tile_code(x, y, "pe_<body>.csl", .{...})`` in comptime loops).
  A parameter is given as a number, an expression of the coordinates ``X``/``Y`` (evaluated for every
  PE, vectorised), an array over the placed PEs, or a function ``f(xs, ys) -> array``. PEs with the
  same body and parameter values share one *block* (one compiled program), so memory and lowering
  cost grow with the number of distinct bodies and parameter sets, not with the number of PEs.
* **Routes** per (PE, colour) (``set_route`` on a rectangle, or ``route_rule`` with the colour, the
  ports and a condition as expressions of the coordinates and the program's parameters, as
  ``layout.csl`` writes them): the ports a colour is accepted from (``rx``) and forwarded to (``tx``)
  — exactly ``@set_color_config(x, y, colour, .{.routes = .{.rx, .tx}})``.
* **Program parameters** (``param``): comptime integers of the layout (sizes, group counts) that
  placement values and routes use by name, so the layout is size-independent. ``RAMP`` in ``rx`` is injection by this PE's CE, in ``tx`` delivery to
  it. Several ``tx`` ports make a static multicast; a route without RAMP passes the colour through.
* **Buffers** are static arrays in SRAM (``set_data`` gives initial contents); with the body's code
  (estimated at ``spec.code_bytes_*``) and variables they must fit ``spec.usable_sram_bytes``, or the
  placement fails naming the PE, the body and the bytes.

The per-PE **trace API** of earlier versions stays as sugar: ``add_buffer`` and ``add`` build, for
every distinct (buffers, instruction list) of PEs, a parameterless body with one function ``main``.

Example — PE (0, 0) sends 4 floats east to PE (1, 0)::

    prog = MeshProgram(2, 1, WSE2)
    prog.add_buffer(0, 0, "a", "fp32", 4, init=[1, 2, 3, 4])
    prog.add_buffer(1, 0, "b", "fp32", 4)
    prog.set_route(0, 0, colour=1, rx={Port.RAMP}, tx={Port.EAST})
    prog.set_route(1, 0, colour=1, rx={Port.WEST}, tx={Port.RAMP})
    prog.add(0, 0, Send(1, "a"))
    prog.add(1, 0, Recv(1, "b"))
    result = simulate(prog, WSE2)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import instructions as I
from simulator import statements as S
from simulator.body import BUFFER_DTYPES, VAR_DTYPES, Body
from simulator.expr import Expr, Param, as_expr, evaluate, names

__all__ = ["MeshProgram", "Port", "Buffer", "Route", "Placement", "Block", "BUFFER_DTYPES"]


class Port(enum.IntEnum):
    """Router ports (hardware-and-csl.md §2.2). Values index the simulator's arrays."""

    NORTH = 0
    SOUTH = 1
    EAST = 2
    WEST = 3
    RAMP = 4

    @property
    def opposite(self) -> "Port":
        return _OPPOSITE[self]

    @property
    def delta(self) -> tuple[int, int]:
        """(dx, dy) of the neighbour this port leads to (RAMP: none)."""
        return _DELTA[self]


_OPPOSITE = {Port.NORTH: Port.SOUTH, Port.SOUTH: Port.NORTH, Port.EAST: Port.WEST,
             Port.WEST: Port.EAST, Port.RAMP: Port.RAMP}
_DELTA = {Port.NORTH: (0, -1), Port.SOUTH: (0, 1), Port.EAST: (1, 0), Port.WEST: (-1, 0),
          Port.RAMP: (0, 0)}

PortSet = Union[Port, Iterable[Port]]
Coord = Union[int, range, slice, Sequence[int]]


@dataclass(frozen=True, slots=True)
class Buffer:
    """A static array in one PE's SRAM. ``offset`` is its element offset in the PE's simulated memory."""

    name: str
    dtype: str
    length: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.length * BUFFER_DTYPES[self.dtype]


@dataclass(frozen=True, slots=True)
class Route:
    """One (PE, colour) router configuration: accepted input ports and output ports."""

    rx: frozenset[Port]
    tx: frozenset[Port]


@dataclass
class Block:
    """One body with one set of parameter values: what a group of PEs runs (one CSL binary)."""

    index: int
    body: Body  # finalized
    values: dict[str, Any]
    buffers: tuple[Buffer, ...]
    by_name: dict[str, Buffer]
    nelems: int
    data_bytes: int
    var_bytes: int  # the body's variables and those the CSL lowering adds (resources.lowering_data_bytes)
    code_bytes: int
    labels: int = 0  # the program's Timestamp labels var_bytes counts a slot for
    shape: tuple = ()  # what decides the code it keeps and its colours (resources.shape_exprs' values)
    code_key: tuple = ()  # what decides the code it keeps (the leading part of those values): equal -> same code

    @property
    def sram_bytes(self) -> int:
        return self.data_bytes + self.var_bytes + self.code_bytes


@dataclass
class Placement:
    """``body`` placed on ``pes`` (flat indices) with per-PE parameter arrays; ``params_given`` keeps
    what the author passed (expressions for the CSL emitter)."""

    body: Body
    pes: np.ndarray
    params: dict[str, np.ndarray]
    params_given: dict[str, Any]
    rect: tuple[range, range] | None
    block_of_pe: np.ndarray  # block index per PE of ``pes``
    auto: bool = False  # a trace-API body


@dataclass
class RouteRule:
    """One ``@set_color_config`` statement as the layout writes it: on the PEs of ``rect`` (or of
    ``pes``) where ``when`` holds and the masks are non-zero, ``colour`` is routed from the ``rx`` ports
    to the ``tx`` ports. ``colour``, ``rx``, ``tx`` and ``when`` are expressions of ``X``, ``Y`` and the
    program's parameters (masks: bit ``1 << port`` per ``Port``)."""

    rect: tuple[range, range] | None
    pes: np.ndarray | None
    colour: Expr
    rx: Expr
    tx: Expr
    when: Expr
    config: int = 0  # 0: the layout's routes; k >= 1: an alternative SetRoute(colour, k) installs


@dataclass(frozen=True, slots=True)
class _Layout:
    """A trace-API PE's buffer set, shared between PEs that declared the same buffers in order."""

    buffers: tuple[Buffer, ...]
    by_name: dict
    nbytes: int
    nelems: int


def _mask(ports: PortSet) -> int:
    if isinstance(ports, (Port, int)) and not isinstance(ports, bool):
        ports = (ports,)
    m = 0
    for p in ports:
        try:
            m |= 1 << int(Port(p))
        except ValueError:
            raise InputError(f"unknown port {p!r}; ports are {', '.join(p.name for p in Port)}") from None
    return m


def _ports(mask: int) -> frozenset[Port]:
    return frozenset(p for p in Port if mask >> int(p) & 1)


def port_names(mask: int) -> list[str]:
    return sorted(p.name for p in _ports(mask))


class MeshProgram:
    """A kernel for a ``width × height`` rectangle of PEs on ``spec`` (see the module docstring)."""

    def __init__(self, width: int, height: int, spec: HardwareSpec, name: str = "kernel") -> None:
        if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
            raise InputError(f"mesh size must be positive integers, got {width}x{height}")
        if width > spec.mesh_width or height > spec.mesh_height:
            raise InputError(
                f"mesh {width}x{height} is larger than {spec.name}'s kernel rectangle "
                f"{spec.mesh_width}x{spec.mesh_height}"
            )
        self.width = width
        self.height = height
        self.spec = spec
        self.name = name
        n = width * height
        # Routes: bit masks per (PE, colour); 0 = no route. Rules keep how they were written.
        self._rx = np.zeros((n, spec.num_colors), dtype=np.uint8)
        self._tx = np.zeros((n, spec.num_colors), dtype=np.uint8)
        # run-time alternatives (SetRoute): config k >= 1 -> (rx, tx) masks per (PE, colour)
        self._alt: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.route_rules: list[RouteRule] = []
        self.layout_params: dict[str, int] = {"W": width, "H": height}  # the rectangle, by name
        # Bodies
        self.placements: list[Placement] = []
        self._place_of = np.full(n, -1, dtype=np.int32)  # placement index per PE
        self.blocks: list[Block] = []
        self._block_index: dict[tuple, int] = {}
        self._stamp_labels: set[str] = set()  # Timestamp labels of the bodies placed so far
        # per body: its Timestamp labels and resources.shape_exprs; per code key (Block.code_key): the
        # code bytes (parameter sets that agree on it keep the same code); the shapes checked so far
        self._body_facts: dict[int, tuple] = {}  # id -> (labels, shape expressions, code-deciding ones, body)
        self._code_of_key: dict[tuple, int] = {}
        self._checked_shapes: set[tuple] = set()
        self._stamps_settled: tuple = ()
        # Trace API: per-PE layouts and instruction lists, turned into bodies by ``finalize``
        self._layouts: list[_Layout] = [_Layout((), {}, 0, 0)]
        self._layout_index: dict[tuple, int] = {(): 0}
        self._layout_id = np.zeros(n, dtype=np.int32)
        self._instr_table: list = []
        self._instr_ids: dict = {}
        self._code: list[list[int] | None] = [None] * n
        self._has_code = np.zeros(n, dtype=bool)  # _code[pe] is not None, as an array
        self._checked: set[tuple[int, int]] = set()  # (layout, instruction) pairs checked
        self._auto_done = False
        # initial buffer contents per (PE, buffer)
        self._init: dict[tuple[int, str], np.ndarray] = {}
        self.entry = "main"

    # --------------------------------------------------------------------------------------------
    # PE selection
    # --------------------------------------------------------------------------------------------

    @property
    def num_pes(self) -> int:
        return self.width * self.height

    def _axis(self, v: Coord, size: int, name: str) -> np.ndarray:
        if v is None:
            v = range(size)
        if isinstance(v, slice):
            v = range(*v.indices(size))
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            arr = np.array([int(v)], dtype=np.int64)
        else:
            arr = np.asarray(list(v) if isinstance(v, range) else v, dtype=np.int64).ravel()
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            bad = arr[(arr < 0) | (arr >= size)][0]
            raise InputError(f"{name} = {bad} is outside the {self.width}x{self.height} mesh")
        return arr

    def pes(self, x: Coord, y: Coord) -> np.ndarray:
        """Flat PE indices (``y * width + x``) of the selection, row-major."""
        xs = self._axis(x, self.width, "x")
        ys = self._axis(y, self.height, "y")
        return (ys[:, None] * self.width + xs[None, :]).ravel()

    def _rect(self, x: Coord, y: Coord) -> tuple[range, range] | None:
        """The selection as (x range, y range) when both are contiguous, else None."""
        def rng(v, size):
            if v is None:
                return range(size)
            if isinstance(v, slice):
                return range(*v.indices(size))
            if isinstance(v, range) and v.step == 1:
                return v
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                return range(int(v), int(v) + 1)
            return None
        rx, ry = rng(x, self.width), rng(y, self.height)
        return (rx, ry) if rx is not None and ry is not None else None

    def _xy(self, pe: int) -> tuple[int, int]:
        return pe % self.width, pe // self.width

    def _invalidate(self) -> None:
        self._auto_done = False

    # --------------------------------------------------------------------------------------------
    # Bodies
    # --------------------------------------------------------------------------------------------

    def place(self, body: Body, x: Coord = None, y: Coord = None,
              params: dict[str, Any] | None = None) -> Placement:
        """Place ``body`` on the selected PEs (default: the whole rectangle) with per-PE ``params``.

        Raises ``InputError`` for a PE that already has code, a parameter missing, unknown or out of
        range (colours must be routable), and a PE whose buffers, variables and code overflow SRAM."""
        return self._place(body, x, y, params or {}, auto=False)

    def _place(self, body: Body, x: Coord, y: Coord, params: dict, auto: bool,
               pes: np.ndarray | None = None) -> Placement:
        if not isinstance(body, Body):
            raise InputError(f"place() needs a Body, got {body!r}")
        rect = None if pes is not None else self._rect(x, y)
        pes = self.pes(x, y) if pes is None else pes
        if pes.size == 0:
            raise InputError(f"body {body.name}: placed on no PE")
        taken = self._place_of[pes] >= 0
        if not auto:
            taken |= self._has_code[pes] | (self._layout_id[pes] != 0)
        if taken.any():
            pe = int(pes[taken][0])
            raise InputError(f"body {body.name}: PE {self._xy(pe)} already has code; a PE runs one body")
        final = body.finalized()
        unknown = sorted(set(params) - set(final.params))
        if unknown:
            raise InputError(f"body {body.name}: unknown parameter {unknown[0]!r}; declared: "
                             f"{', '.join(final.params) or 'none'}")
        missing = [p for p in final.params if p not in params]
        if missing:
            raise InputError(f"body {body.name}: parameter {missing[0]!r} has no value for PE "
                             f"{self._xy(int(pes[0]))}")
        xs, ys = pes % self.width, pes // self.width
        arrays: dict[str, np.ndarray] = {}
        for name, kind in final.params.items():
            arr = self._param_values(body.name, name, params[name], xs, ys, pes)
            if kind == "colour":
                bad = ~_isin(arr, self.spec.routable_colors)
                if bad.any():
                    i = int(np.nonzero(bad)[0][0])
                    raise InputError(
                        f"body {body.name}: parameter {name!r} = {arr[i]} on PE {self._xy(int(pes[i]))} is not "
                        f"a routable colour of {self.spec.name} ({self.spec.routable_colors[0]}.."
                        f"{self.spec.routable_colors[-1]}, reserved {list(self.spec.reserved_colors)})")
            arrays[name] = arr
        block_of = self._blocks_for(final, arrays, pes)
        pl = Placement(body, pes, arrays, dict(params), rect, block_of, auto)
        self._place_of[pes] = len(self.placements)
        self.placements.append(pl)
        return pl

    def _param_values(self, body: str, name: str, v, xs, ys, pes) -> np.ndarray:
        where = f"body {body}: parameter {name!r}"
        try:
            if callable(v) and not isinstance(v, Expr):
                arr = np.asarray(v(xs, ys))
            elif isinstance(v, (Expr, int, float, np.integer, np.floating)):
                e = as_expr(v)
                self._coord_expr(e, where)
                arr = np.asarray(self.evaluate_at(e, xs, ys))
            else:
                arr = np.asarray(v)
                if arr.ndim == 2 and arr.shape[0] * arr.shape[1] == pes.size:
                    arr = arr.ravel()
        except InputError:
            raise
        except Exception as exc:  # a user's callable or array went wrong
            raise InputError(f"{where}: could not evaluate the value ({exc})") from None
        if arr.ndim == 0:
            arr = np.full(pes.size, arr.item())
        if arr.shape != (pes.size,):
            raise InputError(f"{where}: {arr.shape} values for {pes.size} PEs")
        if arr.dtype.kind == "f" and np.all(arr == np.floor(arr)):
            arr = arr.astype(np.int64)
        elif arr.dtype.kind in "iub":
            arr = arr.astype(np.int64)
        return arr

    def _blocks_for(self, final: Body, arrays: dict[str, np.ndarray], pes: np.ndarray) -> np.ndarray:
        """Block index per PE: one block per distinct parameter row (checked for SRAM)."""
        from simulator import resources

        names_ = list(final.params)
        if names_:
            # one integer key per PE (mixed radix over each parameter's distinct values): a 1-D unique
            key = np.zeros(pes.size, dtype=np.int64)
            for n in names_:
                u, c = _unique_inverse(arrays[n])
                key = key * len(u) + c
            first, inverse = _first_and_inverse(key)
            rows = np.stack([arrays[n][first].astype(np.float64) for n in names_], axis=1)
        else:
            rows, inverse = np.zeros((1, 0)), np.zeros(pes.size, dtype=np.int64)
        nrow = rows.shape[0]
        row_values = []
        for r in range(nrow):
            values = {}
            for n, v in zip(names_, rows[r]):
                values[n] = int(v) if float(v).is_integer() and final.params[n] != "float" else float(v)
            row_values.append(values)
        _, exprs, ncode, _ = self._facts(final)
        # shapes and buffer lengths once per distinct value of the parameters they read (rows differ
        # mostly in parameters that decide neither: head offsets, ring positions)
        shape_of = self._per_distinct(rows, names_, row_values, exprs,
                                      lambda sets: resources.shapes_of(exprs, sets))
        lengths = [b.length for b in final.buffers.values()]
        length_of = self._per_distinct(rows, names_, row_values, lengths,
                                       lambda sets: [tuple(evaluate(n, v) for n in lengths) for v in sets])
        out = np.empty(nrow, dtype=np.int32)
        for r in range(nrow):
            values = row_values[r]
            key = (id(final), tuple(sorted(values.items())))
            bi = self._block_index.get(key)
            if bi is None:
                bi = len(self.blocks)
                shape = (id(final),) + shape_of[r]
                blk = self._make_block(bi, final, values, shape, shape[:1 + ncode], length_of[r])
                self._check_block_sram(blk, int(pes[np.nonzero(inverse == r)[0][0]]))
                if shape not in self._checked_shapes:
                    resources.check_block_shapes(blk, self.spec)
                    self._checked_shapes.add(shape)
                self.blocks.append(blk)
                self._block_index[key] = bi
            out[r] = bi
        return out[inverse]

    @staticmethod
    def _per_distinct(rows: np.ndarray, names_: list, row_values: list, exprs, fn) -> list:
        """The result for every parameter row of ``fn(sets)`` (one result per parameter set of the list
        it is given), called once with one set per distinct value of the parameters ``exprs`` read
        (the result depends on nothing else)."""
        used = set()
        for e in exprs:
            used |= names(e)[0]
        cols = [i for i, n in enumerate(names_) if n in used]
        if not cols:
            one = fn(row_values[:1])[0] if row_values else None
            return [one] * len(row_values)
        _, first, inv = np.unique(rows[:, cols], axis=0, return_index=True, return_inverse=True)
        got = fn([row_values[int(i)] for i in first])
        return [got[int(i)] for i in inv.ravel()]

    def _check_block_sram(self, blk: Block, pe: int) -> None:
        need = blk.sram_bytes
        limit = self.spec.usable_sram_bytes
        if need > limit:
            biggest = max(blk.buffers, key=lambda b: b.nbytes, default=None)
            raise InputError(
                f"PE {self._xy(pe)}: SRAM overflow in body {blk.body.name}: {need} B needed "
                f"(buffers {blk.data_bytes} B"
                + (f", largest {biggest.name!r} {biggest.nbytes} B" if biggest else "")
                + f", variables {blk.var_bytes} B, code ~{blk.code_bytes} B) but {limit} B are usable "
                f"({self.spec.sram_bytes} B SRAM - {self.spec.sram_reserve_bytes} B stack and runtime reserve)")

    def _settle_stamp_slots(self) -> None:
        """Every PE program holds a timestamp slot per label of the whole program: blocks made before
        a body with new labels was placed grow by those slots (and are checked against SRAM again)."""
        from simulator import resources

        state = (len(self.placements), len(self.blocks), id(self.placements))
        if state == self._stamps_settled:
            return
        labels = set()
        for p in self.placements:
            labels |= resources.stamp_labels(self.blocks[int(p.block_of_pe[0])].body)
        n = len(labels)
        for p in self.placements:
            for b in np.unique(p.block_of_pe).tolist():
                blk = self.blocks[b]
                if blk.labels != n:
                    blk.var_bytes += resources.STAMP_SLOT_BYTES * (n - blk.labels)
                    blk.labels = n
                    self._check_block_sram(blk, int(p.pes[np.nonzero(p.block_of_pe == b)[0][0]]))
        self._stamps_settled = state

    def _facts(self, final: Body) -> tuple:
        from simulator import resources

        facts = self._body_facts.get(id(final))
        if facts is None:
            exprs, ncode = resources.shape_exprs(final)
            facts = self._body_facts[id(final)] = (resources.stamp_labels(final), exprs, ncode, final)
        return facts

    def _make_block(self, index: int, final: Body, values: dict, shape: tuple, code_key: tuple,
                    lengths: tuple) -> Block:
        from simulator import resources

        bufs = []
        off = 0
        for b, n in zip(final.buffers.values(), lengths):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                raise InputError(f"body {final.name}: buffer {b.name!r} length {b.length!r} = {n!r} with "
                                 f"parameters {values}; lengths must be positive integers")
            bufs.append(Buffer(b.name, b.dtype, int(n), off))
            off += int(n)
        data = sum(b.nbytes for b in bufs)
        self._stamp_labels |= self._facts(final)[0]
        labels = len(self._stamp_labels)
        var_bytes = (sum(VAR_DTYPES[v.dtype] for v in final.vars.values())
                     + resources.lowering_data_bytes(final, labels))
        code = self._code_of_key.get(code_key)
        if code is None:
            code = self._code_of_key[code_key] = resources.code_bytes(final, values, self.spec, code_key)
        return Block(index, final, values, tuple(bufs), {b.name: b for b in bufs}, off, data, var_bytes, code,
                     labels, shape, code_key)

    # --------------------------------------------------------------------------------------------
    # Trace API (sugar): per-PE buffers and straight-line instruction lists
    # --------------------------------------------------------------------------------------------

    def _check_trace_pes(self, pes: np.ndarray, what: str) -> None:
        placed = self._place_of[pes] >= 0
        if placed.any():
            pe = int(pes[placed][0])
            raise InputError(f"PE {self._xy(pe)}: {what} on a PE that runs a placed body")

    def add_buffer(self, x: Coord, y: Coord, name: str, dtype: str, length: int,
                   init=None) -> None:
        """Declare buffer ``name`` on every selected PE. ``init``: a scalar, a length-``length`` array
        (same on every PE) or ``f(x, y) -> array``; default zeros. Raises ``InputError`` if a PE's
        buffers exceed ``spec.usable_sram_bytes``."""
        if not isinstance(name, str) or not name:
            raise InputError(f"buffer name must be a non-empty string, got {name!r}")
        if dtype not in BUFFER_DTYPES:
            raise InputError(f"buffer {name!r}: dtype {dtype!r} not allowed; use one of "
                             f"{', '.join(BUFFER_DTYPES)}")
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
            raise InputError(f"buffer {name!r}: length must be a positive integer, got {length!r}")
        length = int(length)
        pes = self.pes(x, y)
        self._check_trace_pes(pes, f"add_buffer({name!r})")
        self._invalidate()
        limit = self.spec.usable_sram_bytes
        ids = self._layout_id[pes]
        new_ids = np.empty_like(ids)
        for old in np.unique(ids):
            lay = self._layouts[old]
            sel = ids == old
            if name in lay.by_name:
                pe = int(pes[sel][0])
                raise InputError(f"PE {self._xy(pe)}: buffer {name!r} declared twice")
            buf = Buffer(name, dtype, length, lay.nelems)
            need = lay.nbytes + buf.nbytes
            if need > limit:
                pe = int(pes[sel][0])
                raise InputError(
                    f"PE {self._xy(pe)}: SRAM overflow adding buffer {name!r} ({length} x {dtype} = "
                    f"{buf.nbytes} B): buffers need {need} B but only {limit} B are usable "
                    f"({self.spec.sram_bytes} B SRAM - {self.spec.sram_reserve_bytes} B reserve)"
                )
            key = tuple((b.name, b.dtype, b.length) for b in lay.buffers) + ((name, dtype, length),)
            nid = self._layout_index.get(key)
            if nid is None:
                bufs = lay.buffers + (buf,)
                nid = len(self._layouts)
                self._layouts.append(_Layout(bufs, {b.name: b for b in bufs}, need, lay.nelems + length))
                self._layout_index[key] = nid
            new_ids[sel] = nid
        self._layout_id[pes] = new_ids
        if init is not None:
            self.set_data(x, y, name, init)

    def add(self, x: Coord, y: Coord, *instrs) -> None:
        """Append DSD ops and statements to the straight-line program of every selected PE (sugar for
        a parameterless body per distinct list). Buffers and colours are checked now."""
        pes = self.pes(x, y)
        self._check_trace_pes(pes, "add()")
        self._invalidate()
        lids = [int(self._layout_id[pes[0]])] if pes.size == 1 else np.unique(self._layout_id[pes]).tolist()
        for ins in instrs:
            if not isinstance(ins, (I.Instruction,) + S.CONTROL_STATEMENTS):
                raise InputError(f"not an instruction: {ins!r}")
            iid = self._instr_ids.get(ins)
            if iid is None:
                iid = len(self._instr_table)
                self._instr_table.append(ins)
                self._instr_ids[ins] = iid
            for lid in lids:
                if (lid, iid) in self._checked:
                    continue
                try:
                    self._check_trace_op(ins, self._layouts[lid])
                except InputError as exc:
                    pe = int(pes[self._layout_id[pes] == lid][0])
                    raise InputError(f"PE {self._xy(pe)}: {exc}") from None
                self._checked.add((lid, iid))
            code = self._code
            self._has_code[pes] = True
            for pe in pes.tolist():
                lst = code[pe]
                if lst is None:
                    code[pe] = [iid]
                else:
                    lst.append(iid)

    def _check_trace_op(self, ins, lay: _Layout) -> None:
        name = type(ins).__name__
        for c in (I.recv_colour(ins), I.send_colour(ins)) if isinstance(ins, I.FABRIC_INSTRUCTIONS) else ():
            if c is not None:
                self._check_colour(c, name)
        if not isinstance(ins, I.Instruction):
            return
        for fname in I.ref_fields(ins):
            r = getattr(ins, fname)
            buf = lay.by_name.get(r.buf)
            if buf is None:
                raise InputError(f"{name}.{fname}: unknown buffer {r.buf!r}; declared: "
                                 f"{', '.join(lay.by_name) or 'none'}")
            check_static_slice(r, buf, name, fname, dst=fname in ("dst", "y", "c"))

    def instructions(self, x: int, y: int) -> list:
        """The trace-API instruction list of PE (x, y)."""
        code = self._code[int(self.pes(x, y)[0])]
        return [self._instr_table[i] for i in code] if code else []

    def _finalize_trace(self) -> None:
        """Turn trace-API PEs into parameterless bodies (one per distinct buffers + code)."""
        if self._auto_done:
            return
        # drop earlier auto placements (the trace may have grown since)
        keep = [p for p in self.placements if not p.auto]
        if len(keep) != len(self.placements):
            self.placements = keep
            self._place_of[:] = -1
            for i, p in enumerate(keep):
                self._place_of[p.pes] = i
        groups: dict[tuple, list[int]] = {}
        for pe in np.flatnonzero(self._has_code | (self._layout_id != 0)).tolist():
            code = self._code[pe]
            lid = int(self._layout_id[pe])
            groups.setdefault((lid, tuple(code or ())), []).append(pe)
        for k, ((lid, code), pes) in enumerate(groups.items()):
            lay = self._layouts[lid]
            b = Body(f"pe_trace{k}")
            for buf in lay.buffers:
                b.buffer(buf.name, buf.dtype, buf.length)
            code_list = tuple(self._instr_table[i] for i in code)
            _declare_trace_vars(b, code_list)
            b.function("main", code_list)
            self._place(b, None, None, {}, auto=True, pes=np.asarray(pes, dtype=np.int64))
        self._auto_done = True

    # --------------------------------------------------------------------------------------------
    # Buffers and data
    # --------------------------------------------------------------------------------------------

    def _pe_buffers(self, pe: int) -> dict[str, Buffer]:
        pl = self._place_of[pe]
        if pl >= 0:
            p = self.placements[pl]
            idx = int(np.searchsorted(p.pes, pe)) if p.pes.size > 1 and np.all(p.pes[:-1] <= p.pes[1:]) \
                else int(np.nonzero(p.pes == pe)[0][0])
            return self.blocks[int(p.block_of_pe[idx])].by_name
        return self._layouts[self._layout_id[pe]].by_name

    def set_data(self, x: Coord, y: Coord, name: str,
                 values: Union[float, Sequence[float], np.ndarray, Callable[[int, int], object]]) -> None:
        """Initial contents of buffer ``name`` on the selected PEs (rounded to the buffer's dtype)."""
        for pe in self.pes(x, y):
            pe = int(pe)
            buf = self._pe_buffers(pe).get(name)
            if buf is None:
                raise InputError(f"PE {self._xy(pe)}: unknown buffer {name!r}; declared: "
                                 f"{', '.join(self._pe_buffers(pe)) or 'none'}")
            v = values(*self._xy(pe)) if callable(values) else values
            arr = np.asarray(v, dtype=np.float64)
            if arr.ndim == 0:
                arr = np.full(buf.length, float(arr))
            arr = arr.ravel()
            if arr.size != buf.length:
                raise InputError(f"PE {self._xy(pe)}: data for buffer {name!r} has {arr.size} values, "
                                 f"the buffer holds {buf.length}")
            np_dtype = np.float16 if buf.dtype == "fp16" else np.float32
            self._init[(pe, name)] = arr.astype(np_dtype).astype(np.float32)

    def buffers(self, x: int, y: int) -> tuple[Buffer, ...]:
        """The buffers of PE (x, y), in declaration order."""
        return tuple(self._pe_buffers(int(self.pes(x, y)[0])).values())

    def buffer(self, x: int, y: int, name: str) -> Buffer:
        bufs = self._pe_buffers(int(self.pes(x, y)[0]))
        try:
            return bufs[name]
        except KeyError:
            raise InputError(f"PE {(x, y)}: unknown buffer {name!r}; declared: "
                             f"{', '.join(bufs) or 'none'}") from None

    def sram_bytes(self, x: int, y: int) -> int:
        """Bytes of buffers on PE (x, y) (its data high-water mark: buffers are static)."""
        return sum(b.nbytes for b in self.buffers(x, y))

    def block_of(self, x: int, y: int) -> Block | None:
        """The block (body + parameter values) PE (x, y) runs, after ``finalize``."""
        self.finalize()
        pe = int(self.pes(x, y)[0])
        pl = self._place_of[pe]
        if pl < 0:
            return None
        p = self.placements[pl]
        return self.blocks[int(p.block_of_pe[int(np.nonzero(p.pes == pe)[0][0])])]

    # --------------------------------------------------------------------------------------------
    # Routes
    # --------------------------------------------------------------------------------------------

    def _check_colour(self, colour, where: str) -> int:
        if isinstance(colour, bool) or not isinstance(colour, (int, np.integer)):
            raise InputError(f"{where}: colour must be an integer, got {colour!r}")
        colour = int(colour)
        if not 0 <= colour < self.spec.num_colors:
            raise InputError(f"{where}: unknown colour {colour}; {self.spec.name} has colours "
                             f"0..{self.spec.num_colors - 1}")
        if colour in self.spec.reserved_colors:
            raise InputError(f"{where}: colour {colour} is reserved on {self.spec.name} "
                             f"(reserved: {list(self.spec.reserved_colors)})")
        return colour

    def _route_masks(self, rx: PortSet, tx: PortSet, where: str) -> tuple[int, int]:
        rxm, txm = _mask(rx), _mask(tx)
        if not rxm or not txm:
            raise InputError(f"{where}: a route needs at least one rx and one tx port")
        if rxm & txm & ~(1 << Port.RAMP):
            bad = _ports(rxm & txm & ~(1 << Port.RAMP))
            raise InputError(f"{where}: port(s) {sorted(p.name for p in bad)} in both rx and tx")
        return rxm, txm

    def _tables(self, config: int) -> tuple[np.ndarray, np.ndarray]:
        if config == 0:
            return self._rx, self._tx
        if config not in self._alt:
            self._alt[config] = (np.zeros_like(self._rx), np.zeros_like(self._tx))
        return self._alt[config]

    def _write_routes(self, pes: np.ndarray, colours: np.ndarray, rxm, txm, replace: bool,
                      config: int = 0) -> None:
        """Set masks ``rxm``/``txm`` (numbers or per-PE arrays) for ``colours`` at ``pes``."""
        if not pes.size:
            return
        rx_t, tx_t = self._tables(config)
        bad = ~_isin(colours, self.spec.routable_colors)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            self._check_colour(int(colours[i]), f"PE {self._xy(int(pes[i]))}")
        flat = pes * self.spec.num_colors + colours  # (PE, colour) in the C-ordered tables
        rx_t, tx_t = rx_t.reshape(-1), tx_t.reshape(-1)
        if not replace:
            old_rx, old_tx = rx_t[flat], tx_t[flat]
            clash = (old_rx != 0) & ((old_rx != rxm) | (old_tx != txm))
            if clash.any():
                i = int(np.nonzero(np.atleast_1d(clash))[0][0])
                pe, c = int(pes[i]), int(colours[i])
                f = pe * self.spec.num_colors + c
                raise InputError(
                    f"PE {self._xy(pe)}: colour {c} already routed rx={port_names(int(rx_t[f]))} "
                    f"tx={port_names(int(tx_t[f]))}" + (f" in route configuration {config}" if config else "")
                    + "; a PE holds one route per colour (pass replace=True to override)")
        rx_t[flat] = rxm
        tx_t[flat] = txm

    def set_route(self, x: Coord, y: Coord, colour, rx: PortSet, tx: PortSet,
                  replace: bool = False) -> None:
        """Route ``colour`` on every selected PE: accept from ``rx`` ports, forward to ``tx`` ports. A
        (PE, colour) has one route; setting a different one again is an ``InputError`` (a colour
        conflict) unless ``replace=True``. ``route_rule`` takes expressions of the coordinates."""
        self.route_rule(x, y, colour, _mask(rx), _mask(tx), replace=replace)

    def route_rule(self, x: Coord, y: Coord, colour, rx, tx, when=1, replace: bool = False,
                   config: int = 0) -> None:
        """Route ``colour`` on the selected PEs where ``when`` holds: ``colour``, ``rx`` and ``tx``
        (port sets, or integer masks with bit ``1 << port`` per port) and ``when`` may be expressions
        of ``X``, ``Y`` and program parameters, evaluated at every PE (a PE whose masks are both 0 gets
        no route). This is how a layout writes a routing pattern once for every size.

        ``config`` k >= 1 declares a run-time alternative: the statement ``SetRoute(colour, k)`` puts
        it in place on a PE (``SetRoute(colour, 0)`` restores the layout's); CSL's ``<tile_config>``
        ``reset_routes``, as WaferLLM's WSE-3 decode re-routes its colours between the X and Y
        reductions."""
        if not isinstance(config, int) or config < 0:
            raise InputError(f"route configuration must be an integer >= 0, got {config!r}")
        pes = self.pes(x, y)
        rect = self._rect(x, y)
        xs, ys = pes % self.width, pes // self.width
        exprs = []
        vals = []
        for what, v in (("route colour", colour), ("rx ports", rx), ("tx ports", tx), ("route condition", when)):
            if what in ("rx ports", "tx ports") and (isinstance(v, Port) or not isinstance(v, (Expr, int, np.integer))):
                v = _mask(v)  # a port set
            e = as_expr(v)
            self._coord_expr(e, what)
            exprs.append(e)
            vals.append(self.evaluate_at(e, xs, ys).astype(np.int64))
        cols, rxm, txm, cond = vals
        on = (cond != 0) & ((rxm != 0) | (txm != 0))
        sel, cols, rxm, txm = pes[on], cols[on], rxm[on], txm[on]
        if sel.size:
            where = lambda i: f"PE {self._xy(int(sel[i]))}, colour {int(cols[i])}"  # noqa: E731
            empty = (rxm == 0) | (txm == 0)
            if empty.any():
                raise InputError(f"{where(int(np.nonzero(empty)[0][0]))}: a route needs at least one rx and one tx port")
            bad = ((rxm | txm) >> 5) != 0
            if bad.any():
                i = int(np.nonzero(bad)[0][0])
                raise InputError(f"{where(i)}: port mask rx={int(rxm[i])} tx={int(txm[i])} has bits beyond the 5 ports")
            both = (rxm & txm & ~(1 << int(Port.RAMP))) != 0
            if both.any():
                i = int(np.nonzero(both)[0][0])
                raise InputError(f"{where(i)}: port(s) {port_names(int(rxm[i] & txm[i]))} in both rx and tx")
            self._write_routes(sel, cols, rxm.astype(np.uint8), txm.astype(np.uint8), replace, config)
        self.route_rules.append(RouteRule(rect, None if rect else pes, *exprs, config=config))

    def evaluate_at(self, e: Expr, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Value of ``e`` (an expression of X, Y and program parameters) at the PEs (xs, ys). An
        expression of one coordinate is evaluated once per distinct value of it (a line pattern:
        once per position, not once per PE)."""
        _, coords, _, _ = names(e)
        env = dict(self.layout_params)
        if coords == {"x"} or coords == {"y"}:
            c = xs if coords == {"x"} else ys
            uniq, inv = _line_index(c, self.width if coords == {"x"} else self.height)
            env[next(iter(coords))] = uniq
            out = np.broadcast_to(np.asarray(evaluate(e, env, vectorised=True)), uniq.shape)
            return out[inv]
        env.update(x=xs, y=ys)
        return np.broadcast_to(np.asarray(evaluate(e, env, vectorised=True)), xs.shape)

    def _coord_expr(self, e: Expr, what: str) -> None:
        p, c, v, b = names(e)
        unknown = sorted(p - set(self.layout_params))
        if unknown or v or b:
            raise InputError(f"{what} may use only X, Y, numbers and program parameters "
                             f"({', '.join(self.layout_params) or 'none declared'}), got {e!r}")

    def param(self, name: str, value: int) -> Param:
        """A program (layout) parameter: a comptime integer that placement values and routes may use
        by name, so the layout is written once for every size (CSL: ``param name: i16;`` in
        ``layout.csl``, bound by ``--params``)."""
        if not isinstance(name, str) or not name.isidentifier() or name in ("x", "y"):
            raise InputError(f"program parameter name {name!r} must be an identifier other than x and y")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"program parameter {name!r} must be an integer, got {value!r}")
        if name in self.layout_params and self.layout_params[name] != int(value):
            raise InputError(f"program parameter {name!r} already set to {self.layout_params[name]}")
        self.layout_params[name] = int(value)
        return Param(name)

    def route(self, x: int, y: int, colour: int) -> Route | None:
        """The route of ``colour`` at PE (x, y), or None."""
        pe = int(self.pes(x, y)[0])
        if not self._rx[pe, colour]:
            return None
        return Route(_ports(int(self._rx[pe, colour])), _ports(int(self._tx[pe, colour])))

    def colours_used(self, x: int, y: int) -> tuple[int, ...]:
        pe = int(self.pes(x, y)[0])
        return tuple(int(c) for c in np.nonzero(self._rx[pe])[0])

    def _route_str(self, pe: int, c: int) -> str:
        if not self._rx[pe, c]:
            return "no route"
        return f"rx={port_names(int(self._rx[pe, c]))}, tx={port_names(int(self._tx[pe, c]))}"

    # --------------------------------------------------------------------------------------------
    # Whole-program view
    # --------------------------------------------------------------------------------------------

    def finalize(self) -> None:
        """Bring the trace API's PEs into bodies (idempotent until the program changes)."""
        self._finalize_trace()
        self._settle_stamp_slots()

    def pe_blocks(self) -> np.ndarray:
        """Block index per PE (−1: no code)."""
        self.finalize()
        out = np.full(self.num_pes, -1, dtype=np.int32)
        for p in self.placements:
            out[p.pes] = p.block_of_pe
        return out

    def stats(self) -> dict:
        """Sizes, for logs, reports and benchmarks: bodies, parameter sets, code bytes per PE."""
        self.finalize()
        used = sorted({int(b) for p in self.placements for b in np.unique(p.block_of_pe)})
        bodies = {id(self.blocks[b].body) for b in used}
        return {
            "pes": self.num_pes,
            "routes": int(np.count_nonzero(self._rx)),
            "code_bodies": len(bodies),
            "param_sets": len(used),
            "code_bytes_per_pe": max((self.blocks[b].code_bytes for b in used), default=0),
            "sram_bytes_per_pe": max((self.blocks[b].sram_bytes for b in used), default=0),
            "route_rules": len(self.route_rules),
        }


def _isin(values: np.ndarray, allowed) -> np.ndarray:
    """``np.isin`` by a lookup table for integers (one pass, no sort)."""
    return np.isin(values, np.asarray(allowed, dtype=np.int64), kind="table" if values.dtype.kind in "iub" else None)


def _unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, return_inverse=True)``; integers of a small range (parameter values per PE)
    are counted in one pass instead of sorted."""
    if a.dtype.kind in "iu" and a.size:
        lo, hi = int(a.min()), int(a.max())
        if hi - lo <= 4 * a.size + 1024:
            seen = np.zeros(hi - lo + 1, dtype=bool)
            seen[a - lo] = True
            return (np.flatnonzero(seen) + lo).astype(a.dtype), (np.cumsum(seen) - 1)[a - lo]
    u, inv = np.unique(a, return_inverse=True)
    return u, inv.ravel()


def _first_and_inverse(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index of each distinct key's first occurrence (in key order) and each element's distinct
    key: ``np.unique(key, return_index=True, return_inverse=True)[1:]``, by counting when the keys
    (non-negative integers) span a small range."""
    hi = int(key.max()) if key.size else 0
    if key.size and hi <= 4 * key.size + 1024:
        first_of = np.full(hi + 1, key.size, dtype=np.intp)
        np.minimum.at(first_of, key, np.arange(key.size, dtype=np.intp))
        seen = first_of < key.size
        return first_of[seen], (np.cumsum(seen) - 1)[key]
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return first, inv.ravel()


def _line_index(c: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(c, return_inverse=True)`` for coordinates in [0, size), in one pass instead of a
    sort (a route rule at 720² evaluates each of its expressions over 518,400 PEs)."""
    seen = np.zeros(size, dtype=bool)
    seen[c] = True
    uniq = np.flatnonzero(seen)
    rank = np.cumsum(seen) - 1
    return uniq, rank[c]


def check_static_slice(r: I.Ref, buf: Buffer, op: str, field_name: str, dst: bool) -> None:
    """Check a slice whose offset and length are numbers against its buffer (run-time values are
    checked when the op runs)."""
    if not isinstance(r.stride, int) or r.stride < 0 or (dst and r.stride == 0):
        raise InputError(f"{op}.{field_name}: stride {r.stride} not allowed "
                         f"({'>= 1 for a destination' if dst else '>= 0'})")
    if not isinstance(r.offset, int):
        return
    if r.offset < 0 or r.offset >= buf.length:
        raise InputError(f"{op}.{field_name}: offset {r.offset} outside buffer {r.buf!r} of length {buf.length}")
    if r.length is None:
        length = 1 if r.stride == 0 else math.ceil((buf.length - r.offset) / r.stride)
    elif isinstance(r.length, int):
        length = r.length
    else:
        return
    if length < 1:
        raise InputError(f"{op}.{field_name}: slice length must be >= 1, got {length!r}")
    last = r.offset + (length - 1) * r.stride
    if last >= buf.length:
        raise InputError(f"{op}.{field_name}: slice {r.buf}[{r.offset}:+{length}:{r.stride}] ends at "
                         f"element {last}, past buffer {r.buf!r} of length {buf.length}")


def _declare_trace_vars(b: Body, code: tuple) -> None:
    """Variables a trace-API list uses (loops written into ``add``) are declared as i32."""
    for st in S.walk(code):
        if isinstance(st, S.Loop) and st.var not in b.vars:
            b.var(st.var, "i32")
        elif isinstance(st, S.Assign) and st.var not in b.vars:
            b.var(st.var, "i32")

