"""The memory and colours the cost model charges a kernel are what its program allocates.

``predicted.bytes_per_pe`` (the M metric: sweeps and the kernel CLI decide with it whether a point
fits) must equal the buffers the built program places on its busiest PE, on square, non-square and
one-line meshes, with uneven dimensions, in both dtypes. The colour count is a budget: never below
what the program routes on any PE; on the GEMMs exact wherever no axis has just 2 PEs (a 2-PE ring
or chain leaves some of the formula's colours unrouted)."""

from __future__ import annotations

import pytest

from meshgemm.kernel import KernelRequest
from meshgemm.registry import KERNELS, build_kernel
from plmr.hardware import WSE2

MESHES = [(1, 1), (1, 4), (4, 1), (2, 2), (3, 3), (5, 7), (7, 5), (4, 9), (2, 6), (8, 8)]
GEMMS = ("meshgemm", "cannon", "summa", "gemmt", "meshgemm-bsp", "cannon-bsp", "summa-bsp")


def _build(name: str, mesh: tuple[int, int], dtype: str, shape: tuple[int, int, int]):
    m, k, n = shape
    return build_kernel(KernelRequest(name, mesh, 1 if "gemv" in name else m, k, n, dtype=dtype,
                                      functional=False), WSE2)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_predicted_bytes_and_colours_are_the_programs(name):
    for i, mesh in enumerate(MESHES):  # each mesh in one dtype and shape; both of each over the list
        dtype, shape = ("fp16", "fp32")[i % 2], ((13, 29, 31), (40, 24, 56))[i // 2 % 2]
        b = _build(name, mesh, dtype, shape)
        assert b.predicted.bytes_per_pe == b.bytes_per_pe(), (name, mesh, dtype, shape)
        used, charged = b.colors_per_pe(), b.predicted.colors_per_pe
        assert used <= charged, (name, mesh, used, charged)
        if name in GEMMS and 2 not in mesh:
            assert used == charged, (name, mesh, used, charged)
