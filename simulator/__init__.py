"""Cycle-level mesh simulator for wafer-scale accelerators.

Write a ``Body`` (a PE program: parameters, buffers, variables, functions, tasks) once, ``place`` it
on rectangles of PEs of a ``MeshProgram`` with per-PE parameters, set routes, then ``simulate`` it
(one launch of ``main``) or load it on a ``Device`` (repeated launches, host copies) in
``"functional"`` or ``"timing"`` mode and read a ``SimResult``::

    from simulator import Body, MeshProgram, Port, Send, Recv, X, simulate
    b = Body("pe")
    ...
    prog = MeshProgram(2, 1, spec)
    prog.place(b, params={"role": X})
    res = simulate(prog, mode="functional")
    res.total_cycles, res.busy, res.link_wavelets, res.buffer(1, 0, "b")

The per-PE trace API (``add_buffer``, ``add``) remains as sugar. Imports only ``plmr`` and
third-party libraries. Timing rules: ``simulator.costs`` and ``simulator.engine``; numerics and
accounting: ``simulator.result``; the program model: ``simulator.program``, ``simulator.body``.
"""

from simulator.body import Body
from simulator.errors import MisroutedWavelet, SimulationDeadlock, SimulationError, SimulationLimit
from simulator.expr import X, Y, Var, Load, Param, select, eq, ne, min_, max_
from simulator.instructions import (
    Activate, Add, Copy, Detached, Exp, Fill, Fmac, Gemm, Gemv, Instruction, Max, Mul, Recv, RecvAdd,
    RecvAddSend, Ref, Relay, Rsqrt, Scale, Send, Silu, Unblock,
)
from simulator.statements import (
    Assign, Block, Finish, If, Loop, SetRoute, Store, Switch, Timestamp, Wait,
)
from simulator.program import Buffer, MeshProgram, Port, Route
from simulator.result import SimResult
from simulator.run import Device, simulate

__all__ = [
    "Body", "MeshProgram", "Port", "Buffer", "Route", "Ref", "Instruction", "X", "Y", "Var", "Load",
    "Param", "select", "eq", "ne", "min_", "max_",
    "Send", "Recv", "RecvAdd", "RecvAddSend", "Relay", "Fmac", "Gemv", "Gemm", "Add", "Mul", "Max",
    "Scale", "Copy", "Fill", "Exp", "Rsqrt", "Silu", "Activate", "Unblock", "Detached",
    "Loop", "If", "Switch", "Assign", "Store", "Block", "Finish", "Timestamp", "SetRoute", "Wait",
    "simulate", "Device", "SimResult",
    "SimulationError", "SimulationDeadlock", "MisroutedWavelet", "SimulationLimit",
]
