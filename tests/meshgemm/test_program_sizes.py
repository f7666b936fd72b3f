"""Every kernel is a bounded program: its distinct code bodies and parameter sets do not grow with the
mesh (the authors' MeshGEMM: ~42 parameter sets at any P >= 64), and its estimated code fits a PE."""

from __future__ import annotations

import pytest

from meshgemm.kernel import KernelRequest
from meshgemm.registry import KERNELS, build_kernel
from plmr.hardware import WSE2


def _sizes(name: str, p: int) -> dict:
    gemv = "gemv" in name
    size = 4 * p
    req = KernelRequest(name, (p, p), 1 if gemv else size, size, size, dtype="fp16", functional=False)
    return build_kernel(req, WSE2).program.stats()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_bodies_and_parameter_sets_stay_bounded(name):
    s8, s64, s256 = (_sizes(name, p) for p in (8, 64, 256))
    assert s8["code_bodies"] == s64["code_bodies"] == s256["code_bodies"] <= 2
    assert s64["param_sets"] == s256["param_sets"] <= 64, (s8, s64, s256)
    assert s256["code_bytes_per_pe"] < WSE2.usable_sram_bytes // 4
