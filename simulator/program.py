"""``MeshProgram``: the one description of a mesh kernel that the simulator executes and that the CSL
emitter will lower.

The model follows CSL's, not a generic task graph:

* **Rectangle** ``width × height`` of PEs; x is the column (grows EAST), y the row (grows SOUTH),
  NORTH is y−1 (hardware-and-csl.md §2.2).
* **Buffers** per PE (``add_buffer``): name, dtype (``fp16``/``fp32``), length, optional initial data.
  They are static arrays in the PE's SRAM; their bytes are charged against
  ``spec.usable_sram_bytes`` and an overflow is an ``InputError`` at build time.
* **Routes** per (PE, colour) (``set_route``): the set of ports a colour is accepted from (``rx``) and
  the set it is forwarded to (``tx``) — exactly ``@set_color_config(x, y, colour, .{.routes = .{.rx,
  .tx}})``. ``RAMP`` in ``rx`` means injection by this PE's CE, in ``tx`` delivery to it. Several
  ``tx`` ports make a static multicast; a PE whose route has no RAMP passes the colour through.
* **Instructions** per PE (``add``): a straight-line list of DSD-level ops (``simulator.instructions``)
  run by the main thread; fabric ops run on microthreads (async when given an ``id``). Loops are
  unrolled by the builder; double-buffering is two buffer names used alternately.

Every setter takes ``x`` and ``y`` as an int, a ``range``/``slice`` or a sequence of ints, and applies to
the whole selected rectangle, so a 750×994 program is built with a handful of calls. Instructions are
interned and per-PE layouts shared, so large programs stay small in memory.

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
from typing import Callable, Iterable, Sequence, Union

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator import instructions as I

#: Storage dtypes of buffers and their bytes in SRAM.
BUFFER_DTYPES = {"fp16": 2, "fp32": 4}


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


@dataclass(frozen=True, slots=True)
class _Layout:
    """A PE's buffer set, shared between every PE that declared the same buffers in the same order."""

    buffers: tuple[Buffer, ...]
    by_name: dict
    nbytes: int
    nelems: int


Coord = Union[int, range, slice, Sequence[int]]


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


class MeshProgram:
    """A kernel for a ``width × height`` rectangle of PEs on ``spec`` (see the module docstring)."""

    def __init__(self, width: int, height: int, spec: HardwareSpec) -> None:
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
        n = width * height
        # Routes: bit masks per (PE, colour); 0 = no route.
        self._rx = np.zeros((n, spec.num_colors), dtype=np.uint8)
        self._tx = np.zeros((n, spec.num_colors), dtype=np.uint8)
        # Buffers: per-PE layout id into an interned table (append-only layouts).
        self._layouts: list[_Layout] = [_Layout((), {}, 0, 0)]
        self._layout_index: dict[tuple, int] = {(): 0}
        self._layout_id = np.zeros(n, dtype=np.int32)
        self._init: dict[tuple[int, str], np.ndarray] = {}
        # Instructions: interned; per-PE list of instruction ids (None until the PE gets code).
        self._instr_table: list[I.Instruction] = []
        self._instr_ids: dict[I.Instruction, int] = {}
        self._code: list[list[int] | None] = [None] * n
        self._resolved: dict[tuple[int, int], tuple] = {}
        self._colours_checked: set[int] = set()  # instruction ids whose colours passed the checks

    # --------------------------------------------------------------------------------------------
    # PE selection
    # --------------------------------------------------------------------------------------------

    @property
    def num_pes(self) -> int:
        return self.width * self.height

    def _axis(self, v: Coord, size: int, name: str) -> np.ndarray:
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

    def _xy(self, pe: int) -> tuple[int, int]:
        return pe % self.width, pe // self.width

    # --------------------------------------------------------------------------------------------
    # Buffers
    # --------------------------------------------------------------------------------------------

    def add_buffer(self, x: Coord, y: Coord, name: str, dtype: str, length: int,
                   init: Union[None, float, Sequence[float], np.ndarray, Callable[[int, int], object]] = None
                   ) -> None:
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

    def set_data(self, x: Coord, y: Coord, name: str,
                 values: Union[float, Sequence[float], np.ndarray, Callable[[int, int], object]]) -> None:
        """Initial contents of buffer ``name`` on the selected PEs (rounded to the buffer's dtype)."""
        for pe in self.pes(x, y):
            pe = int(pe)
            buf = self.buffer(*self._xy(pe), name)
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
        """The buffers declared on PE (x, y), in declaration order."""
        return self._layouts[self._layout_id[self.pes(x, y)[0]]].buffers

    def buffer(self, x: int, y: int, name: str) -> Buffer:
        lay = self._layouts[self._layout_id[self.pes(x, y)[0]]]
        try:
            return lay.by_name[name]
        except KeyError:
            raise InputError(f"PE {(x, y)}: unknown buffer {name!r}; declared: "
                             f"{', '.join(lay.by_name) or 'none'}") from None

    def sram_bytes(self, x: int, y: int) -> int:
        """Bytes of buffers on PE (x, y) (its SRAM high-water mark: buffers are static)."""
        return self._layouts[self._layout_id[self.pes(x, y)[0]]].nbytes

    # --------------------------------------------------------------------------------------------
    # Routes
    # --------------------------------------------------------------------------------------------

    def _check_colour(self, colour: int, where: str) -> int:
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

    def set_route(self, x: Coord, y: Coord, colour: int, rx: PortSet, tx: PortSet,
                  replace: bool = False) -> None:
        """Route ``colour`` on every selected PE: accept from ``rx`` ports, forward to ``tx`` ports.

        A (PE, colour) has one route; setting a different one again is an ``InputError`` (a colour
        conflict) unless ``replace=True``."""
        pes = self.pes(x, y)
        where = f"PE {self._xy(int(pes[0]))}" if pes.size else "set_route"
        colour = self._check_colour(colour, where)
        rxm, txm = _mask(rx), _mask(tx)
        if not rxm or not txm:
            raise InputError(f"{where}, colour {colour}: a route needs at least one rx and one tx port")
        if rxm & txm & ~(1 << Port.RAMP):
            bad = _ports(rxm & txm & ~(1 << Port.RAMP))
            raise InputError(f"{where}, colour {colour}: port(s) {sorted(p.name for p in bad)} in both "
                             f"rx and tx")
        if not replace:
            old_rx, old_tx = self._rx[pes, colour], self._tx[pes, colour]
            clash = (old_rx != 0) & ((old_rx != rxm) | (old_tx != txm))
            if clash.any():
                pe = int(pes[clash][0])
                raise InputError(
                    f"PE {self._xy(pe)}: colour {colour} already routed rx={sorted(p.name for p in _ports(int(self._rx[pe, colour])))} "
                    f"tx={sorted(p.name for p in _ports(int(self._tx[pe, colour])))}; a PE holds one route per "
                    f"colour (pass replace=True to override)"
                )
        self._rx[pes, colour] = rxm
        self._tx[pes, colour] = txm

    def route(self, x: int, y: int, colour: int) -> Route | None:
        """The route of ``colour`` at PE (x, y), or None."""
        pe = int(self.pes(x, y)[0])
        if not self._rx[pe, colour]:
            return None
        return Route(_ports(int(self._rx[pe, colour])), _ports(int(self._tx[pe, colour])))

    def colours_used(self, x: int, y: int) -> tuple[int, ...]:
        pe = int(self.pes(x, y)[0])
        return tuple(int(c) for c in np.nonzero(self._rx[pe])[0])

    # --------------------------------------------------------------------------------------------
    # Instructions
    # --------------------------------------------------------------------------------------------

    def add(self, x: Coord, y: Coord, *instrs: I.Instruction) -> None:
        """Append instructions to the program of every selected PE. Buffer references and colours are
        checked now (buffers must be declared first); routes are checked by ``validate``."""
        pes = self.pes(x, y)
        # kernels add millions of (mostly repeated) instructions one PE at a time: check each
        # instruction's colours once, and its buffers once per layout
        lids = [int(self._layout_id[pes[0]])] if pes.size == 1 else np.unique(self._layout_id[pes]).tolist()
        for ins in instrs:
            if not isinstance(ins, I.Instruction):
                raise InputError(f"not an instruction: {ins!r}")
            iid = self._intern(ins)
            if iid not in self._colours_checked:
                where = f"PE {self._xy(int(pes[0]))}" if pes.size else "add"
                for c in _colours_of(ins):
                    self._check_colour(c, f"{where}, {type(ins).__name__}")
                self._colours_checked.add(iid)
            for lid in lids:
                if (lid, iid) in self._resolved:
                    continue
                try:
                    self.resolve(lid, iid)
                except InputError as exc:
                    pe = int(pes[self._layout_id[pes] == lid][0])
                    raise InputError(f"PE {self._xy(pe)}: {exc}") from None
            code = self._code
            for pe in pes.tolist():
                lst = code[pe]
                if lst is None:
                    code[pe] = [iid]
                else:
                    lst.append(iid)

    def _intern(self, ins: I.Instruction) -> int:
        iid = self._instr_ids.get(ins)
        if iid is None:
            iid = len(self._instr_table)
            self._instr_table.append(ins)
            self._instr_ids[ins] = iid
        return iid

    def instructions(self, x: int, y: int) -> list[I.Instruction]:
        """The instruction list of PE (x, y)."""
        code = self._code[int(self.pes(x, y)[0])]
        return [self._instr_table[i] for i in code] if code else []

    def resolve(self, layout_id: int, iid: int) -> tuple:
        """Resolve an instruction's buffer slices against a layout (cached): a tuple of
        ``(offset, length, stride, dtype)`` per ``Ref`` operand, in field order. Raises ``InputError``
        for unknown buffers, out-of-range slices and inconsistent lengths."""
        key = (layout_id, iid)
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        lay = self._layouts[layout_id]
        ins = self._instr_table[iid]
        refs = []
        for fname in ins.__dataclass_fields__:
            v = getattr(ins, fname)
            if isinstance(v, I.Ref):
                refs.append(_resolve_ref(v, lay, type(ins).__name__, fname,
                                         dst=fname in ("dst", "y", "c")))
        out = tuple(refs)
        _check_shapes(ins, out)
        self._resolved[key] = out
        return out

    # --------------------------------------------------------------------------------------------
    # Whole-program checks
    # --------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Checks that need the complete program: every fabric op's colour is routed to/from the
        RAMP on its PE, and every ``Wait`` names an id issued earlier on that PE."""
        # What each distinct instruction needs, worked out once: whole-wafer programs repeat the
        # same few instructions millions of times.
        needs: dict[int, tuple] = {}
        seen: set[tuple] = set()
        for pe, code in enumerate(self._code):
            if not code:
                continue
            key = (tuple(code), self._rx[pe].tobytes(), self._tx[pe].tobytes())
            if key in seen:
                continue
            seen.add(key)
            rx, tx = self._rx[pe].tolist(), self._tx[pe].tolist()
            ramp = int(Port.RAMP)
            issued: set[str] = set()
            for iid in code:
                need = needs.get(iid)
                if need is None:
                    ins = self._instr_table[iid]
                    fabric = isinstance(ins, I.FABRIC_INSTRUCTIONS)
                    need = needs[iid] = (
                        _recv_colours(ins) if fabric else (), _send_colours(ins) if fabric else (),
                        ins.id if fabric else None, ins.ids if isinstance(ins, I.Wait) else ())
                recv, send, issues, waits = need
                for c in recv:
                    if not tx[c] >> ramp & 1:
                        raise InputError(f"{self._where(pe, iid)} receives on colour {c}, but the route of "
                                         f"colour {c} there does not deliver to the RAMP "
                                         f"({self._route_str(pe, c)})")
                for c in send:
                    if not rx[c] >> ramp & 1:
                        raise InputError(f"{self._where(pe, iid)} sends on colour {c}, but the route of "
                                         f"colour {c} there does not accept from the RAMP "
                                         f"({self._route_str(pe, c)})")
                if issues is not None:
                    issued.add(issues)
                for name in waits:
                    if name not in issued:
                        raise InputError(f"{self._where(pe, iid)} names op id {name!r} that no earlier "
                                         f"async op on this PE issued")

    def _where(self, pe: int, iid: int) -> str:
        return f"PE {self._xy(pe)}: {type(self._instr_table[iid]).__name__}"

    def _route_str(self, pe: int, c: int) -> str:
        if not self._rx[pe, c]:
            return "no route"
        return (f"rx={sorted(p.name for p in _ports(int(self._rx[pe, c])))}, "
                f"tx={sorted(p.name for p in _ports(int(self._tx[pe, c])))}")

    def stats(self) -> dict:
        """Sizes, for logs and benchmarks."""
        n_instr = sum(len(c) for c in self._code if c)
        return {
            "pes": self.num_pes,
            "routes": int(np.count_nonzero(self._rx)),
            "instructions": n_instr,
            "distinct_instructions": len(self._instr_table),
            "layouts": len(self._layouts),
        }


# ------------------------------------------------------------------------------------------------
# Helpers shared with compile.py
# ------------------------------------------------------------------------------------------------


def _resolve_ref(r: I.Ref, lay: _Layout, op: str, field_name: str, dst: bool) -> tuple[int, int, int, str]:
    buf = lay.by_name.get(r.buf)
    if buf is None:
        raise InputError(f"{op}.{field_name}: unknown buffer {r.buf!r}; declared: "
                         f"{', '.join(lay.by_name) or 'none'}")
    if not isinstance(r.offset, int) or r.offset < 0 or r.offset >= buf.length:
        raise InputError(f"{op}.{field_name}: offset {r.offset} outside buffer {r.buf!r} of length {buf.length}")
    if not isinstance(r.stride, int) or r.stride < 0 or (dst and r.stride == 0):
        raise InputError(f"{op}.{field_name}: stride {r.stride} not allowed "
                         f"({'>= 1 for a destination' if dst else '>= 0'})")
    if r.length is None:
        length = 1 if r.stride == 0 else math.ceil((buf.length - r.offset) / r.stride)
    else:
        length = r.length
    if not isinstance(length, int) or length < 1:
        raise InputError(f"{op}.{field_name}: slice length must be >= 1, got {length!r}")
    last = r.offset + (length - 1) * r.stride
    if last >= buf.length:
        raise InputError(f"{op}.{field_name}: slice {r.buf}[{r.offset}:+{length}:{r.stride}] ends at "
                         f"element {last}, past buffer {r.buf!r} of length {buf.length}")
    return (buf.offset + r.offset, length, r.stride, buf.dtype)


def _colours_of(ins: I.Instruction) -> tuple[int, ...]:
    return _recv_colours(ins) + _send_colours(ins)


def _recv_colours(ins: I.Instruction) -> tuple[int, ...]:
    if isinstance(ins, (I.Recv, I.RecvAdd)):
        return (ins.colour,)
    if isinstance(ins, (I.RecvAddSend, I.Relay)):
        return (ins.in_colour,)
    return ()


def _send_colours(ins: I.Instruction) -> tuple[int, ...]:
    if isinstance(ins, I.Send):
        return (ins.colour,)
    if isinstance(ins, (I.RecvAddSend, I.Relay)):
        return (ins.out_colour,)
    return ()


def _check_shapes(ins: I.Instruction, refs: tuple) -> None:
    name = type(ins).__name__
    if isinstance(ins, (I.Send, I.Recv, I.RecvAdd, I.RecvAddSend)) and ins.packed:
        if refs[0][3] != "fp16":
            raise InputError(f"{name}: packed=True needs an fp16 buffer, got {refs[0][3]}")
    if isinstance(ins, I.Relay):
        if not isinstance(ins.count, int) or ins.count < 1:
            raise InputError(f"Relay: count must be a positive integer, got {ins.count!r}")
    if isinstance(ins, I.ELEMENTWISE_BINARY + I.ELEMENTWISE_UNARY):
        lens = {r[1] for r in refs if r[2] != 0}
        if len(lens) > 1:
            raise InputError(f"{name}: operand lengths differ: {[r[1] for r in refs]}")
        if refs[0][1] != max(r[1] for r in refs):
            raise InputError(f"{name}: destination shorter than the sources: {[r[1] for r in refs]}")
    if isinstance(ins, (I.Gemv, I.Gemm)):
        if ins.layout not in I.LAYOUTS:
            raise InputError(f"{name}: layout {ins.layout!r} not allowed; use one of {I.LAYOUTS}")
        if ins.acc not in I.ACC_DTYPES:
            raise InputError(f"{name}: acc {ins.acc!r} not allowed; use 'fp16', 'fp32' or None")
        dims = (ins.m, ins.n) if isinstance(ins, I.Gemv) else (ins.m, ins.k, ins.n)
        if not all(isinstance(d, int) and d >= 1 for d in dims):
            raise InputError(f"{name}: dimensions must be positive integers, got {dims}")
        if any(r[2] != 1 for r in refs):
            raise InputError(f"{name}: matrix operands must be contiguous (stride 1)")
        if isinstance(ins, I.Gemv):
            need = (ins.n, ins.m, ins.m * ins.n)
        else:
            need = (ins.m * ins.n, ins.m * ins.k, ins.k * ins.n)
        for (off, ln, st, dt), nd, f in zip(refs, need, ("out", "in", "matrix")):
            if ln < nd:
                raise InputError(f"{name}: operand slices hold {[r[1] for r in refs]} elements, need "
                                 f"{list(need)}")
        dts = {r[3] for r in refs[1:]}
        if len(dts) > 1:
            raise InputError(f"{name}: input operands must share a dtype, got {sorted(dts)}")
