"""Host plans of the ``meshgemm`` kernels: where each kernel's builder puts its operands (``set_data``)
and where it reads its result (``gather``), written as index expressions of ``X``, ``Y``, ``E`` and the
program's parameters, so a bundle's ``run.py`` cuts the matrices exactly as the builder does, at any
mesh size, in constant text.

Each function mirrors the host-data code of one builder (cited); the tests check every plan against
the builder itself: packing the builder's inputs with the plan gives the builder's per-PE buffers,
element for element, and unpacking a simulated run gives the builder's ``gather``.
"""

from __future__ import annotations

import math

from plmr.errors import InputError
from simulator.expr import Expr, Param, X, Y, as_expr, min_

from csl_templates.host_plan import E, HostCopy, HostPlan, HostTensor

#: unit roundoff of the buffer dtypes
UNIT = {"fp16": 2.0 ** -11, "fp32": 2.0 ** -24}


def tolerance(dtype: str, k: int) -> float:
    """Normwise tolerance of a k-term dot product accumulated in ``dtype``: 8 sqrt(k) u (rounding
    errors of a sum grow like sqrt(k) u relative to its size for inputs of random sign)."""
    return 8.0 * math.sqrt(max(k, 1)) * UNIT[dtype]


def _tile(r: Expr, rows, cols, order: str) -> tuple[Expr, Expr]:
    """(row, column) of element r of a rows x cols tile stored row- or column-major."""
    return (r // cols, r % cols) if order == "row" else (r % rows, r // rows)


def cannon_family(build) -> HostPlan:
    """MeshGEMM and Cannon (``meshgemm.gemm.build_cannon_family``): per PE, q_x x q_y tiles of A
    (m_v x k, natural block position) and of B (k x n_v, pre-skewed in ring coordinates:
    row block lam((u + v) mod Q) with u, v the PE's ring positions), and of C (m_v x n_v)."""
    from meshgemm.gemm import choose_layout
    from meshgemm.gemmt import _ring_order
    from meshgemm import line_rules as L

    prog, req = build.program, build.request
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    lp = prog.layout_params
    mv, kt, nv, qx, qy, Q = (Param(n) for n in ("MV", "KT", "NV", "QX", "QY", "Q"))
    order = choose_layout(prog.spec, lp["MV"], lp["KT"], lp["NV"], dt)
    kind = "interleaved" if req.name.startswith("meshgemm") else "plain"
    rx, ry = L.RingExprs(P_x, Param("W"), kind), L.RingExprs(P_y, Param("H"), kind)
    ta, tb, tc = mv * kt, kt * nv, mv * nv
    # A: slot (i, j) at (i * qy + j) * ta holds tile (Y qy + j, X qx + i), stored like the product reads it
    s, r = E // ta, E % ta
    i, j = s // qy, s % qy
    tr, tcl = _tile(r, mv, kt, order)
    a_row, a_col = (Y * qy + j) * mv + tr, (X * qx + i) * kt + tcl
    # B: slot (j, i) at (j * qx + i) * tb holds row block lam((u + v) mod Q), column block X qx + i
    s, r = E // tb, E % tb
    j, i = s // qx, s % qx
    u, v = ry.pos(Y) * qy + j, rx.pos(X) * qx + i
    lv = (u + v) % Q
    ring_order = _ring_order(rx, lv // qx) if kind == "interleaved" else lv // qx  # a plain ring is in order
    lam = ring_order * qx + lv % qx
    tr, tcl = _tile(r, kt, nv, "row")
    b_row, b_col = lam * kt + tr, (X * qx + i) * nv + tcl
    # C: slot (j, i) at (j * qx + i) * tc holds block (Y qy + j, X qx + i)
    s, r = E // tc, E % tc
    j, i = s // qx, s % qx
    tr, tcl = _tile(r, mv, nv, order)
    c_row, c_col = (Y * qy + j) * mv + tr, (X * qx + i) * nv + tcl
    slots = qx * qy
    return HostPlan(
        inputs=[HostTensor("A", (M, K), dt), HostTensor("B", (K, N), dt)],
        outputs=[HostTensor("C", (M, N), dt)],
        copies_in=[HostCopy("A", "A", a_row * K + a_col, (E // ta < slots) & (a_row < M) & (a_col < K)),
                   HostCopy("B", "B", b_row * N + b_col, (E // tb < slots) & (b_row < K) & (b_col < N))],
        copies_out=[HostCopy("C", "C", c_row * N + c_col, (E // tc < slots) & (c_row < M) & (c_col < N))],
        reference={"C": "A @ B"}, tolerance={"C": tolerance(dt, K)}, seed=req.seed)


def gemmt(build) -> HostPlan:
    """dist-GEMM-T (``meshgemm.gemmt.build_gemmt``): A's tile (Y, X) of m x k; B's tile (Y, X) of the
    n x k matrix stored transposed (k x nb row-major); C's block (Y, j) on PE (j mod W, Y) at slot
    j div W."""
    from meshgemm.gemm import choose_layout

    prog, req = build.program, build.request
    P_y, P_x = req.mesh
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    lp = prog.layout_params
    m, k, nb = Param("MT"), Param("KT"), Param("NB")
    W, H = Param("W"), Param("H")
    order = choose_layout(prog.spec, lp["MT"], lp["KT"], lp["NB"], dt)
    tr, tcl = _tile(E, m, k, order)
    a_row, a_col = Y * m + tr, X * k + tcl
    kk, nn = E // nb, E % nb  # B stored k-major: element (kk, nn) of the transposed tile
    b_row, b_col = Y * nb + nn, X * k + kk
    tc = m * nb
    slot, r = E // tc, E % tc
    jj = X + slot * W
    tr, tcl = _tile(r, m, nb, order)
    c_row, c_col = Y * m + tr, jj * nb + tcl
    return HostPlan(
        inputs=[HostTensor("A", (M, K), dt), HostTensor("B", (N, K), dt)],
        outputs=[HostTensor("C", (M, N), dt)],
        copies_in=[HostCopy("A", "A", a_row * K + a_col, (a_row < M) & (a_col < K)),
                   HostCopy("B", "B", b_row * K + b_col, (E < k * nb) & (b_row < N) & (b_col < K))],
        copies_out=[HostCopy("C", "C", c_row * N + c_col, (jj < H) & (c_row < M) & (c_col < N))],
        reference={"C": "A @ B.T"}, tolerance={"C": tolerance(dt, K)}, seed=req.seed)


def summa(build) -> HostPlan:
    """SUMMA (``meshgemm.gemm_baselines.build_summa``): q_x K-panels of A (tiles (Y, X qx + i), m x k)
    and q_y of B (tiles (Y qy + j, X), k x n row-major); C's tile (Y, X) of m x n."""
    from meshgemm.gemm import choose_layout

    prog, req = build.program, build.request
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    lp = prog.layout_params
    m, k, n, qx, qy = (Param(p) for p in ("MT", "KT", "NT", "QX", "QY"))
    order = choose_layout(prog.spec, lp["MT"], lp["KT"], lp["NT"], dt)
    i, r = E // (m * k), E % (m * k)
    tr, tcl = _tile(r, m, k, order)
    a_row, a_col = Y * m + tr, (X * qx + i) * k + tcl
    j, r = E // (k * n), E % (k * n)
    tr, tcl = _tile(r, k, n, "row")
    b_row, b_col = (Y * qy + j) * k + tr, X * n + tcl
    tr, tcl = _tile(E, m, n, order)
    c_row, c_col = Y * m + tr, X * n + tcl
    return HostPlan(
        inputs=[HostTensor("A", (M, K), dt), HostTensor("B", (K, N), dt)],
        outputs=[HostTensor("C", (M, N), dt)],
        copies_in=[HostCopy("A", "A", a_row * K + a_col, (a_row < M) & (a_col < K)),
                   HostCopy("B", "B", b_row * N + b_col, (b_row < K) & (b_col < N))],
        copies_out=[HostCopy("C", "C", c_row * N + c_col, (c_row < M) & (c_col < N))],
        reference={"C": "A @ B"}, tolerance={"C": tolerance(dt, K)}, seed=req.seed)


def _balanced(total, parts, i) -> tuple[Expr, Expr]:
    """(offset, length) of block i of a balanced split (the first ``total mod parts`` one longer)."""
    total, parts, i = as_expr(total), as_expr(parts), as_expr(i)
    q, rem = total // parts, total % parts
    return i * q + min_(i, rem), q + (i < rem)


def gemv(build) -> HostPlan:
    """The GEMVs (``meshgemm.gemv._build``, reduction along y): PE (X, Y) holds W's block (rows of
    block Y of K, columns of block X of N; row-major) and x's segment Y; the result's segment X is read
    on the root row."""
    req = build.request
    K, N, dt = req.k, req.n, req.dtype
    root = int(build.layout["root"])
    ko, _ = _balanced(Param("K"), Param("H"), Y)
    no, nl = _balanced(Param("N"), Param("W"), X)
    w_row, w_col = ko + E // nl, no + E % nl
    return HostPlan(
        inputs=[HostTensor("x", (1, K), dt), HostTensor("W", (K, N), dt)],
        outputs=[HostTensor("y", (1, N), dt)],
        copies_in=[HostCopy("x", "x", ko + E), HostCopy("W", "w", w_row * N + w_col)],
        copies_out=[HostCopy("y", "y", no + E, E < nl, y0=root, h=1)],
        reference={"y": "x @ W"}, tolerance={"y": tolerance(dt, K)}, seed=req.seed)


PLANS = {
    "meshgemm": cannon_family, "cannon": cannon_family, "gemmt": gemmt, "summa": summa,
    "meshgemv": gemv, "gemv-pipeline": gemv, "gemv-ring": gemv,
}


def kernel_host_plan(build) -> HostPlan:
    """The host plan of a kernel build (its bulk-synchronous variant shares the kernel's)."""
    name = build.request.name.removesuffix("-bsp")
    try:
        fn = PLANS[name]
    except KeyError:
        raise InputError(f"no host plan for kernel {build.request.name!r}; plans: {', '.join(PLANS)}") from None
    return fn(build)
