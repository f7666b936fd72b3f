"""The DSD-level instruction set a ``MeshProgram`` is written in.

Each instruction is a small frozen dataclass and maps to one CSL DSD builtin (named in its docstring),
so the same program can be simulated and, later, lowered to CSL. Operands are *buffer slices*
(``Ref``, a ``mem1d_dsd``: buffer name, offset, length, stride) and *colours* (a ``fabin_dsd`` /
``fabout_dsd``). A plain string is accepted wherever a ``Ref`` is expected and means the whole buffer.

Fabric instructions (``Send``, ``Recv``, ``RecvAdd``, ``RecvAddSend``, ``Relay``) run on a microthread:

* with ``id=None`` they are **synchronous** (CSL: no ``.async``): the main thread waits until the
  op has moved its last wavelet;
* with ``id="name"`` they are **asynchronous** (CSL: ``.async = true, .activate = task``): the main
  thread continues after the issue overhead and a later ``Wait(("name", ...))`` joins on them. An id
  refers to the most recent op issued with that name, so unrolled loops may reuse names.

Element types come from the buffers: ``fp32`` or ``fp16``. Matrix ops take their accumulate type
from ``acc`` (default: the output buffer's dtype); fp16 operands with ``acc="fp32"`` is the mixed
``@fmachs`` form.

Matrix layouts (contiguous buffers, stride 1):

* ``Gemv(layout="row")``: ``W`` is m×n row-major (``W[i, j]`` at ``i*n + j``); the op is m vector
  FMACs ``y[0:n] += x[i] * W[i, :]`` for i = 0..m-1 (CSL: ``@fmach/@fmacs`` per row).
  ``layout="col"``: ``W`` is m×n column-major (``W[i, j]`` at ``j*m + i``); n dot products of length m.
* ``Gemm(layout="col")``: ``A`` (m×k) and ``C`` (m×n) column-major, ``B`` (k×n) row-major; the op is
  k·n vector FMACs ``C[:, j] += A[:, l] * B[l, j]`` (l outer, j inner), vector length m, as WaferLLM's
  local MeshGEMM compute (method §4.3). ``layout="row"``: A, B, C row-major; m·k FMACs
  ``C[i, :] += A[i, l] * B[l, :]`` (i outer, l inner), vector length n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

LAYOUTS = ("row", "col")
ACC_DTYPES = (None, "fp16", "fp32")


@dataclass(frozen=True, slots=True)
class Ref:
    """A strided slice of a named buffer (CSL ``mem1d_dsd``: ``|i|{length} -> buf[offset + i*stride]``).

    ``length=None`` means "to the end of the buffer". Stride 0 (a scalar broadcast) is allowed for
    sources only.
    """

    buf: str
    offset: int = 0
    length: int | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.buf, str) or not self.buf:
            raise TypeError(f"Ref.buf must be a non-empty buffer name, got {self.buf!r}")


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


class Instruction:
    """Marker base class of every DSD-level instruction."""

    __slots__ = ()


# ------------------------------------------------------------------------------------------------
# Fabric (microthread) instructions
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send(Instruction):
    """Stream ``src`` onto ``colour``, one wavelet per cycle, from this PE's RAMP.

    CSL: ``@fmovs/@fmovh(fabout_dsd{colour}, mem1d_dsd)`` (``.async = true`` when ``id`` is set).
    ``packed=True`` (fp16 only) puts two values in one wavelet (``.simd_mode = .{.simd_32 = true}``).
    """

    colour: int
    src: RefLike
    id: str | None = None
    packed: bool = False

    def __post_init__(self) -> None:
        _coerce(self, "src")


@dataclass(frozen=True, slots=True)
class Recv(Instruction):
    """Receive ``len(dst)`` values arriving on ``colour`` at this PE's RAMP into ``dst``.

    CSL: ``@fmovs/@fmovh(mem1d_dsd, fabin_dsd{queue bound to colour})``.
    """

    colour: int
    dst: RefLike
    id: str | None = None
    packed: bool = False

    def __post_init__(self) -> None:
        _coerce(self, "dst")


@dataclass(frozen=True, slots=True)
class RecvAdd(Instruction):
    """Receive values on ``colour`` and accumulate: ``dst[i] = dst[i] + in[i]`` in dst's dtype.

    CSL: ``@fadds/@faddh(mem1d_dsd, mem1d_dsd, fabin_dsd)`` — a chain root or sink.
    """

    colour: int
    dst: RefLike
    id: str | None = None
    packed: bool = False

    def __post_init__(self) -> None:
        _coerce(self, "dst")


@dataclass(frozen=True, slots=True)
class RecvAddSend(Instruction):
    """Fused chain stage: ``out[i] = in[i] + src[i]``, received on ``in_colour``, sent on ``out_colour``.

    CSL: ``@fadds/@faddh(fabout_dsd{out_colour}, fabin_dsd{in_colour}, mem1d_dsd)``. Each element pays
    the software-relay latency β (``spec.relay_cycles``) between arrival and re-injection; the stage
    streams one wavelet per cycle. The sum is rounded to ``src``'s dtype.
    """

    in_colour: int
    out_colour: int
    src: RefLike
    id: str | None = None
    packed: bool = False

    def __post_init__(self) -> None:
        _coerce(self, "src")


@dataclass(frozen=True, slots=True)
class Relay(Instruction):
    """Software relay: receive ``count`` wavelets on ``in_colour`` and re-send them on ``out_colour``.

    CSL: ``@fmovs(fabout_dsd{out_colour}, fabin_dsd{in_colour})``. Costs β per wavelet of latency
    (pipelined), unlike a hardware pass-through route which costs only α per hop.
    """

    in_colour: int
    out_colour: int
    count: int
    id: str | None = None


# ------------------------------------------------------------------------------------------------
# Main-thread compute instructions
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gemv(Instruction):
    """``y[0:n] += x[0:m] · W[m×n]`` (see module docstring for the layouts).

    CSL: one ``@fmach/@fmacs/@fmachs(y_dsd, y_dsd, w_row_dsd, x[i])`` per row (``layout="row"``).
    Cost: m·(c_op + ⌈n/F_fmac⌉) for row, n·(c_op + ⌈m/F_fmac⌉) for col.
    """

    y: RefLike
    x: RefLike
    w: RefLike
    m: int
    n: int
    layout: str = "row"
    acc: str | None = None

    def __post_init__(self) -> None:
        _coerce(self, "y", "x", "w")


@dataclass(frozen=True, slots=True)
class Gemm(Instruction):
    """``C[m×n] += A[m×k] · B[k×n]`` (see module docstring for the layouts and loop order).

    CSL: k·n (``col``) or m·k (``row``) vector ``@fmach/@fmacs`` ops, each paying c_op.
    """

    c: RefLike
    a: RefLike
    b: RefLike
    m: int
    k: int
    n: int
    layout: str = "col"
    acc: str | None = None

    def __post_init__(self) -> None:
        _coerce(self, "c", "a", "b")


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
    """``dst = src * factor`` with a compile-time scalar. CSL: ``@fmuls/@fmulh(dst, src, factor)``
    (costed with the ``scale`` SIMD width, like ``@fscales``)."""

    dst: RefLike
    src: RefLike
    factor: float

    def __post_init__(self) -> None:
        _coerce(self, "dst", "src")


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
    value: float = 0.0

    def __post_init__(self) -> None:
        _coerce(self, "dst")


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
# Synchronisation and instrumentation
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wait(Instruction):
    """Block the main thread until the most recent async ops with these ids have finished.

    CSL: the join idiom — completion ``.activate``/``.unblock`` of a task that continues the program;
    costs one task activation (``spec.task_cycles``) once satisfied.
    """

    ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        ids = (self.ids,) if isinstance(self.ids, str) else tuple(self.ids)
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise TypeError(f"Wait needs one or more non-empty op ids, got {self.ids!r}")
        object.__setattr__(self, "ids", ids)


@dataclass(frozen=True, slots=True)
class Timestamp(Instruction):
    """Record the current cycle under ``label`` (CSL: ``<time>.get_timestamp``); costs 1 cycle."""

    label: str


FABRIC_INSTRUCTIONS = (Send, Recv, RecvAdd, RecvAddSend, Relay)
ELEMENTWISE_BINARY = (Add, Mul, Max)
ELEMENTWISE_UNARY = (Scale, Copy, Exp, Rsqrt, Silu)
ALL_INSTRUCTIONS = (
    Send, Recv, RecvAdd, RecvAddSend, Relay, Gemv, Gemm, Add, Mul, Max, Scale, Copy, Fill, Exp,
    Rsqrt, Silu, Wait, Timestamp,
)
