"""``SimResult``: what a simulation measured, plus buffer read-back and a Chrome/Perfetto trace.

Per-PE cycle accounting over a launch ``[0, total_cycles)`` (cycles count from the launch's start):
**busy** = cycles in which the main thread ran a DSD op or a task switch, or a microthread moved a
wavelet (counted once per cycle); **stalled** = cycles before the PE's last activity that were not
busy (waiting on the fabric or for a task); **idle** = cycles after it (or all of them for a PE
without code). busy + stalled + idle = total_cycles.

Numerics (functional mode): fp32 buffers hold float32 and every element operation is one float32
operation; fp16 buffers hold values exactly representable in fp16 and each operation is computed in
float32 and rounded to fp16 (ties to even) — numpy's float16 arithmetic. Matrix ops round each
product and each sum to the destination dtype (``Fmac``), in the loop order documented in
``simulator.macros``. ``Scale`` rounds its factor to the source dtype first (numpy's weak scalar
rule). exp / rsqrt / SiLU are computed in float32 and rounded once (within 1 fp32 ulp of numpy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plmr.errors import InputError

LINK_PORTS = ("N", "S", "E", "W", "RAMP")


@dataclass
class SimResult:
    """Outputs of ``simulate``. Per-PE arrays are indexed ``[y, x]``."""

    mode: str
    total_cycles: int
    busy: np.ndarray  # (H, W) int64
    stalled: np.ndarray  # (H, W)
    idle: np.ndarray  # (H, W)
    finish: np.ndarray  # (H, W): cycle after the PE's last activity
    link_wavelets: np.ndarray  # (H, W, 5): wavelets sent out of each router port N, S, E, W, RAMP
    sram_bytes: np.ndarray  # (H, W): buffer bytes (static, so also the high-water mark)
    timestamps: list[tuple[int, int, str, int]]  # (x, y, label, cycle)
    stats: dict = field(default_factory=dict)
    _program: object = field(default=None, repr=False)
    _device: object = field(default=None, repr=False)
    _trace: list = field(default_factory=list, repr=False)

    @property
    def active_pe_cycles(self) -> int:
        """PE-cycles with unfinished work (busy + stalled), summed over the mesh."""
        return int(self.busy.sum() + self.stalled.sum())

    def buffer(self, x: int, y: int, name: str) -> np.ndarray:
        """Contents of buffer ``name`` on PE (x, y) as float16/float32 (functional mode only), as the
        device holds them now (after the last launch)."""
        if self.mode != "functional":
            raise InputError("buffer read-back needs mode='functional'; this run was timing-only")
        return self._device.read(x, y, name)

    def timestamp(self, x: int, y: int, label: str) -> list[int]:
        """Cycles at which PE (x, y) executed ``Timestamp(label)``, in program order."""
        return [c for (tx, ty, lab, c) in self.timestamps if (tx, ty, lab) == (x, y, label)]

    @property
    def trace_events(self) -> list[tuple[tuple[int, int], int, str, int, int]]:
        """Recorded intervals ``((x, y), thread, name, start, end)`` (``simulate(..., trace=True)``);
        thread 0 is the main thread, 1.. the microthreads."""
        return list(self._trace)

    def to_chrome_trace(self, path: str | Path) -> None:
        """Write a Chrome-trace JSON (open in ui.perfetto.dev): one process per PE, thread 0 the main
        thread, threads 1.. the microthreads; 1 µs on the time axis = 1 cycle."""
        if not self._trace:
            raise InputError("no trace recorded: run simulate(..., trace=True) on a small program")
        events = []
        for pe_xy, tid, name, t0, t1 in self._trace:
            pid = pe_xy[1] * 100000 + pe_xy[0]
            events.append({"name": name, "ph": "X", "ts": t0, "dur": max(0, t1 - t0), "pid": pid,
                           "tid": tid, "args": {"pe": list(pe_xy)}})
        seen = {}
        for pe_xy, tid, *_ in self._trace:
            seen[pe_xy] = max(seen.get(pe_xy, 0), tid)
        for (x, y) in seen:
            pid = y * 100000 + x
            events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"PE ({x},{y})"}})
            for tid in range(seen[(x, y)] + 1):
                events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                               "args": {"name": "main" if tid == 0 else f"microthread {tid - 1}"}})
        Path(path).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns",
                                          "otherData": {"total_cycles": self.total_cycles}}))
