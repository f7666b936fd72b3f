"""Run-time failures of a simulated program. Bad programs found while building or compiling raise
``plmr.InputError`` instead."""

from __future__ import annotations


class SimulationError(RuntimeError):
    """Base class of every run-time simulation failure."""


class SimulationDeadlock(SimulationError):
    """Nothing moved and no instruction progressed for ``max_idle_cycles`` (or nothing ever can
    again) while PEs still had work; the message names the cycle and the blocked PEs."""


class MisroutedWavelet(SimulationError):
    """A wavelet reached a router with no route for its colour from that direction, left the mesh,
    arrived from two directions at once, or was never consumed."""


class SimulationLimit(SimulationError):
    """The run exceeded ``max_cycles``."""
