"""Kernel names → builders. Builders are imported on first use so ``waferllm`` starts fast."""

from __future__ import annotations

import importlib
from types import MappingProxyType

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from meshgemm.kernel import KernelBuild, KernelRequest

#: name -> (module, function); every builder has the signature ``(KernelRequest, HardwareSpec)``.
KERNELS = MappingProxyType({
    "meshgemm": ("meshgemm.gemm", "build_meshgemm"),
    "gemmt": ("meshgemm.gemmt", "build_gemmt"),
    "cannon": ("meshgemm.gemm_baselines", "build_cannon"),
    "summa": ("meshgemm.gemm_baselines", "build_summa"),
    "meshgemv": ("meshgemm.gemv", "build_meshgemv"),
    "gemv-pipeline": ("meshgemm.gemv", "build_gemv_pipeline"),
    "gemv-ring": ("meshgemm.gemv", "build_gemv_ring"),
    "meshgemm-bsp": ("meshgemm.bsp", "build_meshgemm_bsp"),
    "cannon-bsp": ("meshgemm.bsp", "build_cannon_bsp"),
    "summa-bsp": ("meshgemm.bsp", "build_summa_bsp"),
    "gemv-pipeline-bsp": ("meshgemm.bsp", "build_gemv_pipeline_bsp"),
})


def build_kernel(request: KernelRequest, spec: HardwareSpec) -> KernelBuild:
    try:
        module, fn = KERNELS[request.name]
    except KeyError:
        raise InputError(f"unknown kernel {request.name!r}; kernels: {', '.join(KERNELS)}") from None
    return getattr(importlib.import_module(module), fn)(request, spec)
