"""``HostPlan``: what the host does around a program — the tensors it makes, how they are cut into
PE buffers, what it launches, what it reads back and what numpy says the result must be.

A bundle's ``run.py`` is generated from it, so the plan is written with the same expressions as the
program: a copy between a host tensor and a buffer says, for element ``E`` of the buffer on PE
(``X``, ``Y``), which flat index of the tensor it holds (``index``) and whether it holds one at all
(``valid``: padding is zero on the way in and ignored on the way out). Both are expressions of
``X``, ``Y``, ``E`` and the program's parameters, printed as numpy for ``run.py`` — so the script's
size does not depend on the mesh — and checked here against the program (buffers exist and are
exported, lengths agree over the region, indices stay inside the tensor).

Inputs are drawn as ``meshgemm`` draws them: uniform in [-1, 1) from ``numpy.random.default_rng(seed)``
in the order listed, rounded to the tensor's dtype; the reference is a numpy expression over the
inputs in float64, and an output passes when max |out - ref| / max |ref| <= its tolerance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from plmr.errors import InputError
from simulator.expr import ExprLike, Var, as_expr, evaluate, names
from simulator.program import MeshProgram

#: The element index inside a PE's buffer, for ``HostCopy.index`` and ``HostCopy.valid``.
E = Var("e")
TENSOR_DTYPES = ("fp16", "fp32")
INITS = ("uniform", "zeros", "ones", "arange")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: Copies with more elements than this are checked on a sample of rows, columns and elements.
CHECK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class HostTensor:
    """A host array: inputs are drawn (``init``), outputs are assembled from PE buffers."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "fp32"
    init: str = "uniform"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class HostCopy:
    """Tensor ``tensor`` <-> buffer ``buffer`` on the PEs of the rectangle ``x0, y0, w, h`` (``None``:
    to the mesh's edge): element ``E`` of the buffer on PE (``X``, ``Y``) is ``tensor.flat[index]``
    where ``valid`` holds."""

    tensor: str
    buffer: str
    index: ExprLike
    valid: ExprLike = 1
    x0: int = 0
    y0: int = 0
    w: int | None = None
    h: int | None = None


def tile_copy(tensor: str, buffer: str, shape: tuple[int, int], tile: tuple[int, int], block_row: ExprLike,
              block_col: ExprLike, order: str = "row", **region) -> HostCopy:
    """A matrix of ``shape`` cut into ``tile``-sized blocks, zero-padded past its edges: the PE at
    (``X``, ``Y``) holds block (``block_row``, ``block_col``) — expressions of ``X``, ``Y`` and program
    parameters (e.g. ``Y``, ``(X + Y) % P`` for a skewed operand) — stored ``"row"``- or
    ``"col"``-major in ``buffer``. ``region``: ``x0``, ``y0``, ``w``, ``h`` of ``HostCopy``."""
    rows, cols = shape
    th, tw = tile
    if order not in ("row", "col"):
        raise InputError(f"tile_copy: order {order!r}; use 'row' or 'col'")
    r, c = (E // tw, E % tw) if order == "row" else (E % th, E // th)
    gr = as_expr(block_row) * th + r
    gc = as_expr(block_col) * tw + c
    return HostCopy(tensor, buffer, gr * cols + gc, (gr < rows) & (gc < cols), **region)


@dataclass(frozen=True)
class Launch:
    """``SdkRuntime.launch(function, *args)``; argument values by the function's argument names."""

    function: str = "main"
    args: tuple[tuple[str, float], ...] = ()


@dataclass
class HostPlan:
    inputs: list[HostTensor]
    outputs: list[HostTensor]
    copies_in: list[HostCopy]
    copies_out: list[HostCopy]
    reference: dict[str, str]  # output -> numpy expression over the inputs (float64)
    tolerance: dict[str, float]  # output -> normwise tolerance
    launches: list[Launch] = field(default_factory=lambda: [Launch()])
    seed: int = 0

    def tensor(self, name: str) -> HostTensor:
        for t in self.inputs + self.outputs:
            if t.name == name:
                return t
        raise InputError(f"host plan: no tensor {name!r}")


@dataclass
class CopyRegion:
    """A copy resolved against a program: a rectangle where the buffer has one length (a copy over
    PEs whose buffer lengths differ is cut into such rectangles)."""

    copy: HostCopy
    x0: int
    y0: int
    w: int
    h: int
    elems: int
    dtype: str  # the buffer's dtype


def resolve(plan: HostPlan, prog: MeshProgram) -> tuple[list[CopyRegion], list[CopyRegion]]:
    """Check ``plan`` against ``prog`` and resolve its copies (raises ``InputError`` naming the copy)."""
    prog.finalize()
    seen = set()
    for t in plan.inputs + plan.outputs:
        if not _IDENT.match(t.name):
            raise InputError(f"host plan: tensor name {t.name!r} must be an identifier starting with a letter")
        if t.name in seen:
            raise InputError(f"host plan: tensor {t.name!r} declared twice")
        seen.add(t.name)
        if t.dtype not in TENSOR_DTYPES:
            raise InputError(f"host plan: tensor {t.name!r} dtype {t.dtype!r}; use one of {TENSOR_DTYPES}")
        if t.init not in INITS:
            raise InputError(f"host plan: tensor {t.name!r} init {t.init!r}; use one of {INITS}")
        if not t.shape or any(int(d) < 1 for d in t.shape):
            raise InputError(f"host plan: tensor {t.name!r} shape {t.shape} must have positive sides")
    outs = {t.name for t in plan.outputs}
    for o in outs:
        if o not in plan.reference:
            raise InputError(f"host plan: output {o!r} has no numpy reference")
        if o not in plan.tolerance:
            raise InputError(f"host plan: output {o!r} has no tolerance")
    ins = {t.name for t in plan.inputs}
    return ([r for c in plan.copies_in for r in _resolve(c, plan, prog, ins, "input")],
            [r for c in plan.copies_out for r in _resolve(c, plan, prog, outs, "output")])


def _resolve(c: HostCopy, plan: HostPlan, prog: MeshProgram, allowed: set, what: str) -> list[CopyRegion]:
    where = f"host plan: copy {c.tensor} <-> {c.buffer}"
    if c.tensor not in allowed:
        raise InputError(f"{where}: {c.tensor!r} is not an {what} tensor")
    w = prog.width - c.x0 if c.w is None else c.w
    h = prog.height - c.y0 if c.h is None else c.h
    if c.x0 < 0 or c.y0 < 0 or w < 1 or h < 1 or c.x0 + w > prog.width or c.y0 + h > prog.height:
        raise InputError(f"{where}: rectangle x0={c.x0} y0={c.y0} w={w} h={h} is outside the "
                         f"{prog.width}x{prog.height} mesh")
    for e, n in ((c.index, "index"), (c.valid, "valid")):
        p, _, v, b = names(as_expr(e))
        bad = sorted(p - set(prog.layout_params)) + sorted(v - {"e"}) + sorted(b)
        if bad:
            raise InputError(f"{where}: {n} may use X, Y, E and program parameters, not {bad[0]!r}")
    blocks = prog.pe_blocks().reshape(prog.height, prog.width)[c.y0:c.y0 + h, c.x0:c.x0 + w]
    length_of: dict[int, int] = {}
    dtypes = set()
    for bi in np.unique(blocks).tolist():
        if bi < 0:
            raise InputError(f"{where}: some PE of the rectangle runs no body")
        blk = prog.blocks[bi]
        buf = blk.by_name.get(c.buffer)
        decl = blk.body.buffers.get(c.buffer)
        if buf is None:
            raise InputError(f"{where}: body {blk.body.name} has no buffer {c.buffer!r}")
        if not decl.export:
            raise InputError(f"{where}: buffer {c.buffer!r} of body {blk.body.name} is not exported")
        length_of[bi] = buf.length
        dtypes.add(buf.dtype)
    if len(dtypes) != 1:
        raise InputError(f"{where}: the buffer's dtype differs over the rectangle ({sorted(dtypes)})")
    dtype = dtypes.pop()
    lengths = np.vectorize(length_of.get, otypes=[np.int64])(blocks)
    regions = [CopyRegion(c, c.x0 + x, c.y0 + y, rw, rh, n, dtype) for x, y, rw, rh, n in _uniform_rects(lengths)]
    size = plan.tensor(c.tensor).size
    for region in regions:
        idx, ok = host_indices(region, prog.layout_params, sample=CHECK_ELEMENTS)
        sel = idx[ok]
        if sel.size and (sel.min() < 0 or sel.max() >= size):
            raise InputError(f"{where}: index reaches {int(sel.min())}..{int(sel.max())} outside tensor "
                             f"{c.tensor!r} of {size} elements")
    return regions


def _uniform_rects(lengths: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Rectangles (x, y, w, h, length) covering a grid of buffer lengths, each of one length: rows
    with the same pattern are grouped, then each group is cut into runs of equal columns (memcpy moves
    one count per PE, and a balanced split gives at most two lengths per axis)."""
    out = []
    H = lengths.shape[0]
    y = 0
    while y < H:
        y2 = y + 1
        while y2 < H and np.array_equal(lengths[y2], lengths[y]):
            y2 += 1
        row = lengths[y]
        x = 0
        while x < row.size:
            x2 = x + 1
            while x2 < row.size and row[x2] == row[x]:
                x2 += 1
            out.append((x, y, x2 - x, y2 - y, int(row[x])))
            x = x2
        y = y2
    return out


def _sample(start: int, n: int, keep: int) -> np.ndarray:
    """All of ``start .. start + n - 1`` when there are few, else both ends and evenly spaced ones."""
    if n <= keep:
        return np.arange(start, start + n)
    ends = np.r_[0:3, n - 3:n, np.linspace(0, n - 1, keep - 6).round().astype(np.int64)]
    return start + np.unique(ends)


def host_indices(r: CopyRegion, params: dict, sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(index, valid) arrays of shape (h, w, elems) — exactly what the generated ``run.py`` computes.
    ``sample``: above that many elements, evaluate on the rectangle's first, last and evenly spaced
    rows, columns and elements only (a check, not a copy)."""
    ys, xs, es = np.arange(r.y0, r.y0 + r.h), np.arange(r.x0, r.x0 + r.w), np.arange(r.elems)
    if sample is not None and r.h * r.w * r.elems > sample:
        ys, xs, es = _sample(r.y0, r.h, 24), _sample(r.x0, r.w, 24), _sample(0, r.elems, 64)
    Y, X, Ev = np.meshgrid(ys, xs, es, indexing="ij")
    env = {"x": X, "y": Y, "e": Ev, **params}
    idx = np.broadcast_to(np.asarray(evaluate(r.copy.index, env, vectorised=True)), X.shape).astype(np.int64)
    ok = np.broadcast_to(np.asarray(evaluate(r.copy.valid, env, vectorised=True)) != 0, X.shape)
    return idx, ok


def make_inputs(plan: HostPlan) -> dict[str, np.ndarray]:
    """The inputs ``run.py`` draws (same generator, same order)."""
    rng = np.random.default_rng(plan.seed)
    out = {}
    for t in plan.inputs:
        dt = np.float16 if t.dtype == "fp16" else np.float32
        if t.init == "uniform":
            a = rng.uniform(-1.0, 1.0, size=t.shape)
        elif t.init == "zeros":
            a = np.zeros(t.shape)
        elif t.init == "ones":
            a = np.ones(t.shape)
        else:
            a = np.arange(t.size, dtype=np.float64).reshape(t.shape)
        out[t.name] = a.astype(dt)
    return out


def pack(region: CopyRegion, tensor: np.ndarray, params: dict) -> np.ndarray:
    """The (h, w, elems) block of buffer contents a copy-in writes."""
    idx, ok = host_indices(region, params)
    dt = np.float16 if region.dtype == "fp16" else np.float32
    out = np.zeros(idx.shape, dtype=dt)
    out[ok] = tensor.ravel()[idx[ok]]
    return out
