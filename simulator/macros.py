"""Expansion of the ``Gemv`` and ``Gemm`` macros into loops of ``Fmac`` DSD ops.

A PE has no matrix instruction: WaferLLM's local GEMM is ``@map``/``@fmach`` loops (method §4.3), so a
local product is written as the loop of vector FMACs it is, and costs what those ops cost. The loop
order is the macro's ``layout`` (the builder's choice); see ``simulator.instructions.Gemm``/``Gemv``.

All macros of a body share two hidden loop variables (``_mac_i``, ``_mac_j``: a macro's loops finish
before the next statement runs). ``acc`` other than the destination's dtype accumulates in a hidden
scratch buffer of that dtype (``_acc_<dtype>``, as long as the largest such product), copied in
before and rounded back after.
"""

from __future__ import annotations

import copy

from plmr.errors import InputError
from simulator.expr import Expr, Load, Var, as_expr
from simulator.instructions import ACC_DTYPES, LAYOUTS, Copy, Fmac, Gemm, Gemv, Ref
from simulator import statements as S

LOOP_I, LOOP_J = "_mac_i", "_mac_j"


def _contiguous(r: Ref, name: str, what: str) -> None:
    if r.stride != 1:
        raise InputError(f"{name}: matrix operand {what} must be contiguous (stride 1), got stride {r.stride}")


def _dims(ins, name: str, dims: tuple) -> None:
    """Dimensions are positive integers or expressions of the body's parameters (checked when the
    body is placed, as loop counts)."""
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, Expr)) or (isinstance(d, int) and d < 1):
            raise InputError(f"{name}: dimensions must be positive integers or parameter expressions, got {dims}")
    if ins.layout not in LAYOUTS:
        raise InputError(f"{name}: layout {ins.layout!r} not allowed; use one of {LAYOUTS}")
    if ins.acc not in ACC_DTYPES:
        raise InputError(f"{name}: acc {ins.acc!r} not allowed; use 'fp16', 'fp32' or None")


def _slice(r: Ref, off, length: int) -> Ref:
    return Ref(r.buf, as_expr(r.offset) + off, length)


def expand_gemv(ins: Gemv, acc_buf: str | None) -> tuple:
    """m FMACs ``y += W[i, :] * x[i]``; W's row i is ``w[i*n : +n]`` (row) or ``w[i :: m]`` (col)."""
    m, n = ins.m, ins.n
    i = Var(LOOP_I)
    dst = Ref(acc_buf, 0, n) if acc_buf else _slice(ins.y, 0, n)
    if ins.layout == "row":
        row = Ref(ins.w.buf, as_expr(ins.w.offset) + i * n, n)
    else:
        row = Ref(ins.w.buf, as_expr(ins.w.offset) + i, n, stride=m)
    xi = Load(ins.x.buf, as_expr(ins.x.offset) + i)
    body = [S.Loop(m, LOOP_I, (Fmac(dst, dst, row, xi),))]
    if acc_buf:
        return (Copy(dst, _slice(ins.y, 0, n)), *body, Copy(_slice(ins.y, 0, n), dst))
    return tuple(body)


def expand_gemm(ins: Gemm, acc_buf: str | None) -> tuple:
    """``col``: for l, for j: ``C[:, j] += A[:, l] * B[l, j]``; ``row``: for i, for l:
    ``C[i, :] += B[l, :] * A[i, l]``."""
    m, k, n = ins.m, ins.k, ins.n
    o, p = Var(LOOP_I), Var(LOOP_J)
    c = Ref(acc_buf, 0, m * n) if acc_buf else ins.c
    if ins.layout == "col":
        cj = _slice(c, p * m, m)
        fm = Fmac(cj, cj, _slice(ins.a, o * m, m), Load(ins.b.buf, as_expr(ins.b.offset) + o * n + p))
        body = [S.Loop(k, LOOP_I, (S.Loop(n, LOOP_J, (fm,)),))]
    else:
        ci = _slice(c, o * n, n)
        fm = Fmac(ci, ci, _slice(ins.b, p * n, n), Load(ins.a.buf, as_expr(ins.a.offset) + o * k + p))
        body = [S.Loop(m, LOOP_I, (S.Loop(k, LOOP_J, (fm,)),))]
    if acc_buf:
        return (Copy(Ref(acc_buf, 0, m * n), _slice(ins.c, 0, m * n)), *body,
                Copy(_slice(ins.c, 0, m * n), Ref(acc_buf, 0, m * n)))
    return tuple(body)


def expand_body(body):
    """A copy of ``body`` with every macro expanded (the original is left as written)."""
    from simulator.body import BufferDecl, Function, Task, VarDecl

    scratch: dict[str, int] = {}  # acc dtype -> elements needed
    used = [False]

    def acc_name(ins, out: Ref, size: int) -> str | None:
        out_dt = body.buffers[out.buf].dtype
        if ins.acc is None or ins.acc == out_dt:
            return None
        if not isinstance(size, int):
            raise InputError(f"body {body.name}: acc={ins.acc!r} needs constant dimensions (the scratch "
                             f"buffer's length), got {size!r}")
        scratch[ins.acc] = max(scratch.get(ins.acc, 0), size)
        return f"_acc_{ins.acc}"

    def walk(code: tuple) -> tuple:
        out = []
        for st in code:
            if isinstance(st, Gemv):
                name = f"body {body.name}, Gemv"
                _dims(st, name, (st.m, st.n))
                for r in (st.y, st.x, st.w):
                    _contiguous(r, name, r.buf)
                used[0] = True
                out += expand_gemv(st, acc_name(st, st.y, st.n))
            elif isinstance(st, Gemm):
                name = f"body {body.name}, Gemm"
                _dims(st, name, (st.m, st.k, st.n))
                for r in (st.c, st.a, st.b):
                    _contiguous(r, name, r.buf)
                used[0] = True
                out += expand_gemm(st, acc_name(st, st.c, st.m * st.n))
            elif S.blocks_of(st):
                out.append(S.with_blocks(st, tuple(walk(b) for b in S.blocks_of(st))))
            else:
                out.append(st)
        return tuple(out)

    new = copy.copy(body)
    new.params = dict(body.params)
    new.buffers = dict(body.buffers)
    new.vars = dict(body.vars)
    new.functions = {n: Function(f.name, walk(f.code), f.args) for n, f in body.functions.items()}
    new.tasks = {n: Task(t.name, walk(t.code), t.kind, t.colour, t.arg, t.blocked, t.priority, t.id,
                         t.synthetic) for n, t in body.tasks.items()}
    new._final = None
    if used[0]:
        for v in (LOOP_I, LOOP_J):
            if v not in new.vars:
                new.vars[v] = VarDecl(v, "i16", 0)
        for dt, size in scratch.items():
            new.buffers[f"_acc_{dt}"] = BufferDecl(f"_acc_{dt}", dt, as_expr(size), export=False)
    return new
