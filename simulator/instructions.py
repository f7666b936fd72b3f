"""The DSD operations a code body is written in: one dataclass per CSL DSD builtin.

Operands are *buffer slices* (``Ref``: a ``mem1d_dsd``, with offsets and lengths that may be run-time
expressions, CSL ``@increment_dsd_offset``/``@set_dsd_length``), *colours* (a ``fabin_dsd`` /
``fabout_dsd``; an integer or a body parameter) and *scalars* (an expression: a constant, a
variable, or ``Load(buf, i)``, one element read from memory). A plain string is accepted wherever a
``Ref`` is expected and means the whole buffer.

**Fabric ops** (``Send``, ``Recv``, ``RecvAdd``, ``RecvAddSend``, ``Relay``, ``RelayStore``) run on a microthread:

* no ``done`` and no ``id``: **synchronous** (CSL: no ``.async``) — the task that issued it waits
  until the op has moved its last wavelet;
* ``done=Activate(task)`` / ``done=Unblock(task)``: **asynchronous** (CSL: ``.async = true,
  .activate = t`` / ``.unblock = t``) — the issuing task continues after the issue overhead and the
  op's completion activates or unblocks a task;
* ``id="name"``: asynchronous, joined later by a ``Wait`` statement in the same statement list
  (sugar: ``simulator.joins`` rewrites it into completion actions and join tasks before anything
  else reads the body).

**Compute ops** run on the issuing task's thread and cost ``c_op + ⌈n / F⌉`` cycles, F the op's SIMD
width narrowed by the stride rule of every operand (hardware-and-csl.md §1.2, §3.2, §3.3). ``Fmac``
is the one multiply-accumulate the PE has (CSL ``@fmacs``/``@fmach``/``@fmachs``); a local GEMM or
GEMV is a loop of them. ``Gemv`` and ``Gemm`` are *macros* that expand to those loops when a body is
built (``simulator.macros``), in the loop order documented there.

Element types come from the buffers (``fp32``/``fp16``); a destination of another dtype than its
sources is the mixed form (fp16 operands, fp32 accumulator: ``@fmachs``, ``@faddhs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from simulator.expr import Const, ExprLike, as_expr

LAYOUTS = ("row", "col")
ACC_DTYPES = (None, "fp16", "fp32")


@dataclass(frozen=True, slots=True)
class Ref:
    """A strided slice of a named buffer (CSL ``mem1d_dsd``: ``|i|{length} -> buf[offset + i*stride]``).

    ``offset`` and ``length`` may be expressions (run-time values are checked against the buffer when
    the op is issued); ``length=None`` means "to the end of the buffer". ``stride`` is a constant;
    stride 0 (a scalar broadcast) is allowed for sources only.
    """

    buf: str
    offset: ExprLike = 0
    length: ExprLike | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.buf, str) or not self.buf:
            raise TypeError(f"Ref.buf must be a non-empty buffer name, got {self.buf!r}")
        object.__setattr__(self, "offset", _norm(self.offset))
        if self.length is not None:
            object.__setattr__(self, "length", _norm(self.length))


def _norm(v: ExprLike):
    """Plain ints stay ints (legacy programs compare them); other values become expressions."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    e = as_expr(v)
    if isinstance(e, Const) and isinstance(e.value, int):
        return e.value
    return e


RefLike = Union[Ref, str]


def as_ref(r: RefLike) -> Ref:
    """``"name"`` → ``Ref("name")`` (the whole buffer)."""
    if isinstance(r, Ref):
        return r
    if isinstance(r, str):
        return Ref(r)
    raise TypeError(f"expected a buffer name or Ref, got {r!r}")


def _coerce(obj, *names: str) -> None:
    for n in names:
        object.__setattr__(obj, n, as_ref(getattr(obj, n)))


def _colour(obj, *names: str) -> None:
    for n in names:
        object.__setattr__(obj, n, _norm(getattr(obj, n)))


@dataclass(frozen=True, slots=True)
class Activate:
    """Completion action (or statement): activate local task ``task`` (CSL ``.activate = t`` /
    ``@activate(t)``)."""

    task: str


@dataclass(frozen=True, slots=True)
class Unblock:
    """Completion action (or statement): unblock task ``task`` (CSL ``.unblock = t`` / ``@unblock``)."""

    task: str


@dataclass(frozen=True, slots=True)
class Detached:
    """Completion of an async op that nothing joins (CSL: ``.async = true`` with no action)."""

    task = None


Completion = Union[Activate, Unblock, Detached]


class Instruction:
    """Marker base class of every DSD operation."""

    __slots__ = ()


# ------------------------------------------------------------------------------------------------
# Fabric (microthread) operations
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send(Instruction):
    """Stream ``src`` onto ``colour``, at most one wavelet per cycle, from this PE's RAMP.

    CSL: ``@fmovs/@fmovh(fabout_dsd{colour}, mem1d_dsd)``. ``packed=True`` (fp16 only) puts two
    values in one wavelet (``.simd_mode = .{.simd_32 = true}``).
    """

    colour: ExprLike
    src: RefLike
    id: str | None = None
    packed: bool = False
    done: Completion | None = None

    def __post_init__(self) -> None:
        _coerce(self, "src")
        _colour(self, "colour")


@dataclass(frozen=True, slots=True)
class Recv(Instruction):
    """Receive ``len(dst)`` values arriving on ``colour`` at this PE's RAMP into ``dst``.

    CSL: ``@fmovs/@fmovh(mem1d_dsd, fabin_dsd{input queue bound to colour})``.
    """

    colour: ExprLike
    dst: RefLike
    id: str | None = None
    packed: bool = False
    done: Completion | None = None

    def __post_init__(self) -> None:
        _coerce(self, "dst")
        _colour(self, "colour")


@dataclass(frozen=True, slots=True)
class RecvAdd(Instruction):
    """Receive values on ``colour`` and accumulate: ``dst[i] = dst[i] + in[i]`` in dst's dtype.

    CSL: ``@fadds/@faddh(mem1d_dsd, mem1d_dsd, fabin_dsd)`` — a chain root or sink.
    """

    colour: ExprLike
    dst: RefLike
    id: str | None = None
    packed: bool = False
    done: Completion | None = None

    def __post_init__(self) -> None:
        _coerce(self, "dst")
        _colour(self, "colour")


@dataclass(frozen=True, slots=True)
class RecvAddSend(Instruction):
    """Fused chain stage: ``out[i] = in[i] + src[i]``, received on ``in_colour``, sent on ``out_colour``.

    CSL: ``@fadds/@faddh(fabout_dsd{out_colour}, fabin_dsd{in_colour}, mem1d_dsd)``. Each element pays
    the software-relay latency β (``spec.relay_cycles``) between arrival and re-injection; the stage
    streams one wavelet per cycle. The sum is rounded to ``src``'s dtype.
    """

    in_colour: ExprLike
    out_colour: ExprLike
    src: RefLike
    id: str | None = None
    packed: bool = False
    done: Completion | None = None

    def __post_init__(self) -> None:
        _coerce(self, "src")
        _colour(self, "in_colour", "out_colour")


@dataclass(frozen=True, slots=True)
class Relay(Instruction):
    """Software relay: receive ``count`` wavelets on ``in_colour`` and re-send them on ``out_colour``.

    CSL: ``@fmovs(fabout_dsd{out_colour}, fabin_dsd{in_colour})``. Costs β per wavelet of latency
    (pipelined), unlike a hardware pass-through route which costs only α per hop.
    """

    in_colour: ExprLike
    out_colour: ExprLike
    count: ExprLike
    id: str | None = None
    done: Completion | None = None

    def __post_init__(self) -> None:
        _colour(self, "in_colour", "out_colour", "count")


@dataclass(frozen=True, slots=True)
class RelayStore(Instruction):
    """Software relay that keeps a copy: receive ``len(dst)`` values on ``in_colour``, store each in
    ``dst`` and re-send it on ``out_colour``, pipelined (β per wavelet of latency, like ``Relay``).

    CSL: a FIFO over ``dst`` (``@allocate_fifo``) fed by ``@fmovs(fifo, fabin_dsd{in_colour})`` and
    drained by ``@fmovs(fabout_dsd{out_colour}, fifo)``, both async: the buffer keeps every value
    (each slot is written once), so a relay in a broadcast chain needs no loopback copy."""

    in_colour: ExprLike
    out_colour: ExprLike
    dst: RefLike
    id: str | None = None
    packed: bool = False
    done: Completion | None = None

    def __post_init__(self) -> None:
        _coerce(self, "dst")
        _colour(self, "in_colour", "out_colour")


# ------------------------------------------------------------------------------------------------
# Compute operations (the issuing thread)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fmac(Instruction):
    """``dst = a + b * s`` element-wise, ``s`` a scalar. CSL: ``@fmacs/@fmach/@fmachs(dst, a, b, s)``.

    The product is rounded to dst's dtype, then the sum (hardware-and-csl.md §6.5)."""

    dst: RefLike
    a: RefLike
    b: RefLike
    s: ExprLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "a", "b")
        object.__setattr__(self, "s", as_expr(self.s))


@dataclass(frozen=True, slots=True)
class Add(Instruction):
    """``dst = a + b`` element-wise. CSL: ``@fadds/@faddh``."""

    dst: RefLike
    a: RefLike
    b: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "a", "b")


@dataclass(frozen=True, slots=True)
class Mul(Instruction):
    """``dst = a * b`` element-wise. CSL: ``@fmuls/@fmulh``."""

    dst: RefLike
    a: RefLike
    b: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "a", "b")


@dataclass(frozen=True, slots=True)
class Max(Instruction):
    """``dst = max(a, b)`` element-wise. CSL: ``@fmaxs/@fmaxh``."""

    dst: RefLike
    a: RefLike
    b: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "a", "b")


@dataclass(frozen=True, slots=True)
class Scale(Instruction):
    """``dst = src * factor`` with a scalar factor. CSL: ``@fmuls/@fmulh(dst, src, factor)``
    (costed with the ``scale`` SIMD width, like ``@fscales``)."""

    dst: RefLike
    src: RefLike
    factor: ExprLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "src")
        object.__setattr__(self, "factor", as_expr(self.factor))


@dataclass(frozen=True, slots=True)
class Copy(Instruction):
    """``dst = src`` (with dtype conversion if they differ). CSL: ``@fmovs/@fmovh`` (``@fh2s/@fs2h``)."""

    dst: RefLike
    src: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "src")


@dataclass(frozen=True, slots=True)
class Fill(Instruction):
    """``dst[:] = value`` (e.g. zero an accumulator). CSL: ``@fmovs/@fmovh(dst, value)``."""

    dst: RefLike
    value: ExprLike = 0.0

    def __post_init__(self) -> None:
        _coerce(self, "dst")
        object.__setattr__(self, "value", as_expr(self.value))


@dataclass(frozen=True, slots=True)
class Exp(Instruction):
    """``dst = exp(src)``; a scalar function, c_fn cycles per element. CSL: ``@map(math.exp, ...)``."""

    dst: RefLike
    src: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "src")


@dataclass(frozen=True, slots=True)
class Rsqrt(Instruction):
    """``dst = 1/sqrt(src)``; c_fn cycles per element. CSL: ``@map(math.rsqrt, ...)``."""

    dst: RefLike
    src: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "src")


@dataclass(frozen=True, slots=True)
class Silu(Instruction):
    """``dst = src / (1 + exp(-src))``; c_fn cycles per element. CSL: ``@map(silu, ...)``."""

    dst: RefLike
    src: RefLike

    def __post_init__(self) -> None:
        _coerce(self, "dst", "src")


# ------------------------------------------------------------------------------------------------
# Macros: expanded into loops of Fmac when a body is built (simulator.macros)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gemv(Instruction):
    """``y[0:n] += x[0:m] · W[m×n]``: m ``Fmac`` ops ``y += W[i, :] * x[i]`` (i ascending).

    ``layout="row"``: W row-major (``W[i, j]`` at ``i*n + j``), unit-stride rows.
    ``layout="col"``: W column-major (``W[i, j]`` at ``j*m + i``): the same ops on rows of stride m
    (narrower SIMD by the stride rule). ``acc`` other than y's dtype accumulates in a scratch
    buffer of that dtype and rounds into y at the end.
    """

    y: RefLike
    x: RefLike
    w: RefLike
    m: ExprLike
    n: ExprLike
    layout: str = "row"
    acc: str | None = None

    def __post_init__(self) -> None:
        _coerce(self, "y", "x", "w")


@dataclass(frozen=True, slots=True)
class Gemm(Instruction):
    """``C[m×n] += A[m×k] · B[k×n]`` as loops of ``Fmac``.

    ``layout="col"``: A and C column-major, B row-major; k·n ops ``C[:, j] += A[:, l] * B[l, j]``
    (l outer, j inner), vector length m — WaferLLM's local MeshGEMM compute (method §4.3).
    ``layout="row"``: all row-major; m·k ops ``C[i, :] += B[l, :] * A[i, l]`` (i outer, l inner),
    vector length n.
    """

    c: RefLike
    a: RefLike
    b: RefLike
    m: ExprLike
    k: ExprLike
    n: ExprLike
    layout: str = "col"
    acc: str | None = None

    def __post_init__(self) -> None:
        _coerce(self, "c", "a", "b")


FABRIC_INSTRUCTIONS = (Send, Recv, RecvAdd, RecvAddSend, Relay, RelayStore)
ELEMENTWISE_BINARY = (Add, Mul, Max)
ELEMENTWISE_UNARY = (Scale, Copy, Exp, Rsqrt, Silu)
MACROS = (Gemv, Gemm)
COMPUTE_INSTRUCTIONS = (Fmac, Add, Mul, Max, Scale, Copy, Fill, Exp, Rsqrt, Silu)
ALL_INSTRUCTIONS = FABRIC_INSTRUCTIONS + COMPUTE_INSTRUCTIONS + MACROS


def ref_fields(ins: Instruction) -> tuple[str, ...]:
    """Names of the ``Ref`` operands of ``ins``, destination first."""
    return tuple(f for f in ins.__dataclass_fields__ if isinstance(getattr(ins, f), Ref))


def recv_colour(ins: Instruction) -> ExprLike | None:
    if isinstance(ins, (Recv, RecvAdd)):
        return ins.colour
    if isinstance(ins, (RecvAddSend, Relay, RelayStore)):
        return ins.in_colour
    return None


def send_colour(ins: Instruction) -> ExprLike | None:
    if isinstance(ins, Send):
        return ins.colour
    if isinstance(ins, (RecvAddSend, Relay, RelayStore)):
        return ins.out_colour
    return None


def is_async(ins: Instruction) -> bool:
    return isinstance(ins, FABRIC_INSTRUCTIONS) and (ins.id is not None or ins.done is not None)

