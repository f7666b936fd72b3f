"""The contract every kernel builder fulfils: a ``KernelRequest`` in, a ``KernelBuild`` out.

A build holds the ``MeshProgram`` (the single description the simulator runs and the CSL emitter
will lower), the input data it was loaded with, the numpy reference of its outputs, a ``gather``
that reassembles outputs from a simulation result, and the PLMR prediction for the same shapes.

The prediction is computed on first use of ``predicted``: some formulas evaluate every PE's steps
(``plmr.gemm_schedules``: seconds at 720²), and a build that is only lowered, emitted as CSL or
simulated without a comparison does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np

from plmr.breakdown import CostBreakdown
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from simulator.program import MeshProgram

KERNEL_DTYPES = ("fp16", "fp32")


@dataclass(frozen=True)
class KernelRequest:
    """What to build. GEMM kernels compute C[m×n] = A[m×k]·B[k×n] (``gemmt``: A[m×k]·B[n×k]ᵀ);
    GEMV kernels compute y[1×n] = x[1×k]·W[k×n] and require m = 1."""

    name: str
    mesh: tuple[int, int]  # (rows P_y, columns P_x)
    m: int
    k: int
    n: int
    dtype: str = "fp32"
    k_tree: int = 2  # GEMV / allreduce kernels
    group_size: int | None = None  # level-1 group size of the K-tree (None: ≈ n^(1/K))
    functional: bool = True  # False: timing-only build, no payload data
    seed: int = 0

    def __post_init__(self) -> None:
        h, w = self.mesh
        if h < 1 or w < 1:
            raise InputError(f"--mesh {h}x{w}: both sides must be >= 1")
        for name in ("m", "k", "n"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in KERNEL_DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(KERNEL_DTYPES)}")
        if self.k_tree < 1:
            raise InputError(f"--k-tree must be >= 1, got {self.k_tree}")
        if self.group_size is not None and self.group_size < 1:
            raise InputError(f"--group-size must be >= 1, got {self.group_size}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


@dataclass
class KernelBuild:
    request: KernelRequest
    program: MeshProgram
    predict: Callable[[], CostBreakdown]  # the PLMR formula bound to these shapes (``predicted`` calls it)
    gather: Callable[[Any], dict[str, np.ndarray]]  # SimResult -> outputs, full (unpadded) shapes
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # empty for timing-only builds
    expected: dict[str, np.ndarray] = field(default_factory=dict)  # numpy reference
    layout: dict[str, str] = field(default_factory=dict)  # where each operand lives, for humans

    @cached_property
    def predicted(self) -> CostBreakdown:
        """The PLMR prediction for the same shapes, computed once, on first use."""
        return self.predict()

    def colors_per_pe(self) -> int:
        """Most distinct colours any PE routes (the R metric)."""
        return int(np.count_nonzero(self.program._rx, axis=1).max())  # noqa: SLF001

    def bytes_per_pe(self) -> int:
        """Most buffer bytes on any PE (the M metric)."""
        p = self.program
        p.finalize()
        used = {int(b) for pl in p.placements for b in np.unique(pl.block_of_pe)}
        return max((p.blocks[b].data_bytes for b in used), default=0)


class ColourMap:
    """Maps a kernel's colour slots to routable hardware colour IDs, in order, and fails at build
    time with the numbers when the kernel needs more than the hardware routes."""

    def __init__(self, spec: HardwareSpec, slots: int, kernel: str):
        routable = spec.routable_colors
        if slots > len(routable):
            raise InputError(
                f"kernel {kernel} needs {slots} colours per PE; {spec.name} has {len(routable)} routable "
                f"colours (reserved: {', '.join(map(str, spec.reserved_colors))})"
            )
        self._ids = routable[:slots]

    def __getitem__(self, slot: int) -> int:
        return self._ids[slot]

    def __len__(self) -> int:
        return len(self._ids)


def round_to_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """Inputs are generated in float64 and stored rounded to the kernel's dtype."""
    return a.astype(np.float16 if dtype == "fp16" else np.float32)
