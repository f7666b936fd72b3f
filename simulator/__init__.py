"""Cycle-level mesh simulator for wafer-scale accelerators (issue 3).

Build a ``MeshProgram`` (buffers, routes, DSD-level instructions per PE), then ``simulate`` it on a
``plmr.HardwareSpec`` in ``"functional"`` or ``"timing"`` mode and read a ``SimResult``.
Imports only ``plmr`` and third-party libraries.
"""

from simulator.instructions import (
    Add, Copy, Exp, Fill, Gemm, Gemv, Instruction, Max, Mul, Recv, RecvAdd, RecvAddSend, Ref, Relay,
    Rsqrt, Scale, Send, Silu, Timestamp, Wait,
)
from simulator.program import Buffer, MeshProgram, Port, Route

__all__ = [
    "MeshProgram", "Port", "Buffer", "Route", "Ref", "Instruction",
    "Send", "Recv", "RecvAdd", "RecvAddSend", "Relay", "Gemv", "Gemm", "Add", "Mul", "Max", "Scale",
    "Copy", "Fill", "Exp", "Rsqrt", "Silu", "Wait", "Timestamp",
]
