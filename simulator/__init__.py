"""Cycle-level mesh simulator for wafer-scale accelerators (issue 3).

Build a ``MeshProgram`` (buffers, routes, DSD-level instructions per PE), then ``simulate`` it on a
``plmr.HardwareSpec`` in ``"functional"`` or ``"timing"`` mode and read a ``SimResult``::

    from simulator import MeshProgram, Port, Send, Recv, simulate
    prog = MeshProgram(2, 1, spec)
    ...
    res = simulate(prog, mode="functional")
    res.total_cycles, res.busy, res.link_wavelets, res.buffer(1, 0, "b")

Imports only ``plmr`` and third-party libraries. Timing rules: ``simulator.costs``; numerics and
accounting: ``simulator.result``; the model: ``simulator.program``.
"""

from simulator.errors import MisroutedWavelet, SimulationDeadlock, SimulationError, SimulationLimit
from simulator.instructions import (
    Add, Copy, Exp, Fill, Gemm, Gemv, Instruction, Max, Mul, Recv, RecvAdd, RecvAddSend, Ref, Relay,
    Rsqrt, Scale, Send, Silu, Timestamp, Wait,
)
from simulator.program import Buffer, MeshProgram, Port, Route
from simulator.result import SimResult
from simulator.run import simulate

__all__ = [
    "MeshProgram", "Port", "Buffer", "Route", "Ref", "Instruction",
    "Send", "Recv", "RecvAdd", "RecvAddSend", "Relay", "Gemv", "Gemm", "Add", "Mul", "Max", "Scale",
    "Copy", "Fill", "Exp", "Rsqrt", "Silu", "Wait", "Timestamp",
    "simulate", "SimResult",
    "SimulationError", "SimulationDeadlock", "MisroutedWavelet", "SimulationLimit",
]
