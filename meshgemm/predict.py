"""The PLMR prediction of a kernel without building its program.

A build (``registry.build_kernel``) lays out every PE's code, which takes seconds to minutes for a
whole-wafer GEMM; a model-only sweep needs just the formula the builder attaches. ``predict_kernel``
returns that same ``CostBreakdown`` (tested equal to ``build.predicted``) after the checks a build
makes before it could fail on shapes: the mesh fits the hardware, a GEMV has m = 1 and at least one
row and column of W per PE, the K-tree grouping is valid, the colours fit the router. Whether the
buffers fit a PE's SRAM is left to the caller (``fits``): the model's memory metric says it.
"""

from __future__ import annotations

from plmr import bsp as plmr_bsp
from plmr import gemm as plmr_gemm
from plmr import gemv as plmr_gemv
from plmr.breakdown import CostBreakdown
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.ktree import build_ktree

from meshgemm import collectives as C
from meshgemm.kernel import KernelRequest
from meshgemm.registry import KERNELS

GEMV_KERNELS = ("meshgemv", "gemv-pipeline", "gemv-ring", "gemv-pipeline-bsp")


def _group_counts(n_ax: int, k: int, group_size: int | None) -> tuple[int, ...] | None:
    """The K-tree's group counts for a level-1 group size (``collectives.ktree_group_counts``)."""
    if group_size is None or k == 1 or n_ax <= 1:
        return None
    from plmr.ktree import default_group_counts

    c1 = max(1, min(n_ax, -(-n_ax // group_size)))
    return (c1,) + default_group_counts(c1, k - 1)


def _check_gemv(req: KernelRequest) -> None:
    p_y, p_x = req.mesh
    if req.m != 1:
        raise InputError(f"kernel {req.name}: a GEMV has m = 1 (y[1×n] = x[1×k]·W[k×n]), got --m {req.m}")
    if req.k < p_y:
        raise InputError(f"kernel {req.name}: k = {req.k} is smaller than the {p_y} PEs of the reduction "
                         f"axis; every PE needs at least one row of W")
    if req.n < p_x:
        raise InputError(f"kernel {req.name}: n = {req.n} is smaller than the {p_x} PEs across the "
                         f"reduction axis; every PE needs at least one column of W")


def predict_kernel(req: KernelRequest, spec: HardwareSpec) -> CostBreakdown:
    """``build_kernel(req, spec).predicted``, without the build (see the module docstring)."""
    if req.name not in KERNELS:
        raise InputError(f"unknown kernel {req.name!r}; kernels: {', '.join(KERNELS)}")
    p_y, p_x = req.mesh
    if p_x > spec.mesh_width or p_y > spec.mesh_height:
        raise InputError(f"mesh {p_y}x{p_x} (rows x columns) is larger than {spec.name}'s kernel rectangle "
                         f"{spec.mesh_height}x{spec.mesh_width}")
    M, K, N, dt = req.m, req.k, req.n, req.dtype
    name = req.name
    if name in GEMV_KERNELS:
        _check_gemv(req)
        if name == "meshgemv":
            counts = _group_counts(p_y, req.k_tree, req.group_size)
            build_ktree(max(p_y, 1), req.k_tree, counts)  # validates the grouping
            out = plmr_gemv.meshgemv(spec, p_y, p_x, K, N, k=req.k_tree, group_counts=counts, dtype=dt)
        elif name == "gemv-pipeline":
            out = plmr_gemv.gemv_pipeline(spec, p_y, p_x, K, N, dtype=dt)
        elif name == "gemv-ring":
            out = plmr_gemv.gemv_ring(spec, p_y, p_x, K, N, dtype=dt)
        else:
            out = plmr_bsp.gemv_pipeline_bsp(spec, p_y, p_x, K, N, dtype=dt)
    else:
        formula = {"meshgemm": plmr_gemm.meshgemm, "cannon": plmr_gemm.cannon, "summa": plmr_gemm.summa,
                   "gemmt": plmr_gemm.gemmt, "meshgemm-bsp": plmr_bsp.meshgemm_bsp,
                   "cannon-bsp": plmr_bsp.cannon_bsp, "summa-bsp": plmr_bsp.summa_bsp}[name]
        out = formula(spec, p_y, p_x, M, K, N, dt)
    routable = len(spec.routable_colors)
    # the colour IDs the program allocates (``ColourMap``): a K-tree takes 2K+1 slots even where no PE
    # routes all of them (``CostBreakdown.colors_per_pe`` counts what a PE routes)
    ids = C.colours_needed("ktree", p_y, req.k_tree) if name == "meshgemv" else out.colors_per_pe
    if ids > routable:
        raise InputError(f"kernel {name} needs {ids} colours per PE; {spec.name} has {routable} "
                         f"routable colours (reserved: {', '.join(map(str, spec.reserved_colors))})")
    return out


def fits(breakdown: CostBreakdown, spec: HardwareSpec) -> bool:
    """The model's memory metric: the predicted bytes per PE fit the usable SRAM."""
    return breakdown.bytes_per_pe <= spec.usable_sram_bytes
