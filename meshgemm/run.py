"""Run a ``KernelBuild`` on the simulator and compare with numpy and with the PLMR prediction.

``run_kernel(build, spec, mode)`` returns a ``KernelReport``:

* ``predicted_cycles``: ``build.predicted.total_cycles`` (the PLMR cost model);
* ``simulated_cycles``: ``SimResult.total_cycles`` (``None`` when ``mode="none"``: prediction only);
* **compute / communication split.** If the kernel stamps ``Timestamp("compute_end")`` on its PEs
  after the local compute (the GEMV kernels do), ``compute_cycles`` is the latest such stamp — the
  cycle by which every PE has finished its local compute — and ``communication_cycles`` is the rest
  of the run (``total − compute``): the collective on the critical path after the compute. Kernels
  that overlap compute and communication (MeshGEMM, Cannon, SUMMA) stamp nothing and get no split
  (both ``None``): the simulator counts a PE's fabric sends and receives as busy cycles, so busy vs
  stalled is not compute vs communication. ``split_source`` says which case applies;
* ``critical_pe``, ``critical_pe_busy_cycles``, ``critical_pe_stalled_cycles``: the PE that finishes
  last and its busy (main thread or a microthread active, fabric operations included) and stalled
  (waiting on the fabric or a join) cycles, for every kernel;
* ``max_abs_error`` and ``max_rel_error`` over all outputs vs the float64 numpy reference of the
  rounded inputs (functional mode only); ``max_rel_error`` is normwise: max |err| / max |ref|;
* ``bytes_per_pe`` and ``colors_per_pe``: measured on the program (most on any PE);
* ``code_bodies``, ``param_sets``, ``code_bytes_per_pe``: the program's size (distinct bodies, distinct
  compiled parameter sets, estimated code bytes on the PE with the most): bounded as the mesh grows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.primitives import whole_cycles

from meshgemm.kernel import KernelBuild

MODES = ("functional", "timing", "none")
COMPUTE_END = "compute_end"
#: Version of ``KernelReport.to_dict`` (``waferllm kernel --json``): bump when a key changes meaning.
KERNEL_SCHEMA = 2  # 2: compute/communication null without a compute_end stamp; critical_pe_* added
#: Totals reported as whole cycles (a formula may average over rows or steps; the simulator counts cycles).
CYCLE_KEYS = ("predicted_cycles", "predicted_compute_cycles", "predicted_communication_cycles",
              "compute_cycles", "communication_cycles", "critical_pe_busy_cycles", "critical_pe_stalled_cycles")


@dataclass
class KernelReport:
    kernel: str
    mesh: tuple[int, int]
    m: int
    k: int
    n: int
    dtype: str
    mode: str
    predicted_cycles: float
    simulated_cycles: int | None
    compute_cycles: float | None
    communication_cycles: float | None
    predicted_compute_cycles: float
    predicted_communication_cycles: float
    split_source: str | None
    max_abs_error: float | None
    max_rel_error: float | None
    bytes_per_pe: int
    colors_per_pe: int
    predicted_bytes_per_pe: int
    predicted_colors_per_pe: int
    k_tree: int | None = None
    group_size: int | None = None
    predicted_parts: dict = field(default_factory=dict)
    layout: dict = field(default_factory=dict)
    sim_seconds: float | None = None
    code_bodies: int = 0  # distinct code bodies (one pe_<body>.csl each)
    param_sets: int = 0  # distinct (body, parameter values): compiled programs
    code_bytes_per_pe: int = 0  # estimated code in SRAM on the PE with the most
    critical_pe: tuple[int, int] | None = None  # (x, y) of the PE that finishes last
    critical_pe_busy_cycles: int | None = None
    critical_pe_stalled_cycles: int | None = None

    @property
    def ratio(self) -> float | None:
        """simulated / predicted cycles."""
        if self.simulated_cycles is None or not self.predicted_cycles:
            return None
        return self.simulated_cycles / self.predicted_cycles

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``waferllm kernel --json``: every field, totals in whole cycles (the
        breakdown in ``predicted_parts`` keeps the formula's terms as they are), and ``schema``."""
        d = asdict(self)
        d["mesh"] = list(self.mesh)
        d["critical_pe"] = None if self.critical_pe is None else list(self.critical_pe)
        for key in CYCLE_KEYS:
            d[key] = whole_cycles(d[key])
        d["ratio"] = self.ratio
        d["schema"] = KERNEL_SCHEMA
        return d


def critical_pe(res) -> tuple[int, int, int, int]:
    """(x, y, busy, stalled) of the PE that finishes last."""
    y, x = np.unravel_index(int(np.argmax(res.finish)), res.finish.shape)
    return int(x), int(y), int(res.busy[y, x]), int(res.stalled[y, x])


def _split(res) -> tuple[float | None, float | None, str]:
    """(compute, communication, source). Only a ``compute_end`` stamp separates the two; without
    one, both are None (busy cycles include fabric operations: no split is measured)."""
    stamps = [c for (_, _, lab, c) in res.timestamps if lab == COMPUTE_END]
    if stamps:
        comp = float(max(stamps))
        return comp, float(res.total_cycles - comp), "timestamp compute_end"
    return None, None, "none (no compute_end stamp)"


def _program_sizes(build: KernelBuild) -> dict:
    st = build.program.stats()
    return {"code_bodies": st["code_bodies"], "param_sets": st["param_sets"],
            "code_bytes_per_pe": st["code_bytes_per_pe"]}


def run_kernel(build: KernelBuild, spec: HardwareSpec | None = None, mode: str = "functional",
               threads: int | None = None) -> KernelReport:
    """Simulate ``build`` (``mode``: ``"functional"``, ``"timing"`` or ``"none"`` for the
    prediction only; ``threads``: concurrent parts per cycle, see ``simulator.Device``) and report
    (see the module docstring)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    req = build.request
    spec = spec or build.program.spec
    if mode == "functional" and not req.functional:
        raise InputError("this build is timing-only (no data); build with functional=True or run mode='timing'")
    pred = build.predicted
    sim_cycles = comp = comm = source = abs_err = rel_err = secs = None
    critical: dict = {}
    if mode != "none":
        import time

        from simulator import simulate

        t0 = time.perf_counter()
        res = simulate(build.program, spec, mode=mode, threads=threads)
        secs = time.perf_counter() - t0
        sim_cycles = int(res.total_cycles)
        comp, comm, source = _split(res)
        cx, cy, busy, stalled = critical_pe(res)
        critical = dict(critical_pe=(cx, cy), critical_pe_busy_cycles=busy, critical_pe_stalled_cycles=stalled)
        if mode == "functional" and build.expected:
            got = build.gather(res)
            abs_err, rel_err = 0.0, 0.0
            for name, ref in build.expected.items():
                ref = np.asarray(ref, dtype=np.float64)
                out = np.asarray(got[name], dtype=np.float64)
                if out.shape != ref.shape:
                    raise AssertionError(f"output {name}: shape {out.shape}, expected {ref.shape}")
                err = float(np.max(np.abs(out - ref))) if ref.size else 0.0
                scale = float(np.max(np.abs(ref))) if ref.size else 0.0
                abs_err = max(abs_err, err)
                rel_err = max(rel_err, err / scale if scale > 0 else err)
    return KernelReport(
        kernel=req.name, mesh=tuple(req.mesh), m=req.m, k=req.k, n=req.n, dtype=req.dtype, mode=mode,
        predicted_cycles=float(pred.total_cycles), simulated_cycles=sim_cycles,
        compute_cycles=comp, communication_cycles=comm,
        predicted_compute_cycles=float(pred.compute_cycles),
        predicted_communication_cycles=float(pred.total_cycles - pred.compute_cycles),
        split_source=source, max_abs_error=abs_err, max_rel_error=rel_err,
        bytes_per_pe=build.bytes_per_pe(), colors_per_pe=build.colors_per_pe(),
        predicted_bytes_per_pe=int(pred.bytes_per_pe), predicted_colors_per_pe=int(pred.colors_per_pe),
        k_tree=req.k_tree, group_size=req.group_size, predicted_parts=dict(pred.parts),
        layout=dict(build.layout), sim_seconds=secs, **_program_sizes(build), **critical,
    )
