"""Shared builders for simulator tests: small line programs on WSE-2-like specs."""

from __future__ import annotations

import numpy as np
import pytest

from plmr.hardware import WSE2
from simulator import MeshProgram, Port


@pytest.fixture
def spec():
    """WSE-2 with c_op = 0, so fabric timings are easy to state exactly."""
    return WSE2.with_params(op_issue_cycles=0.0)


def line_route(prog: MeshProgram, x0: int, x1: int, y: int, colour: int) -> None:
    """Route ``colour`` along row y from PE x0 (RAMP in) to PE x1 (RAMP out), passing through."""
    step = 1 if x1 > x0 else -1
    out = Port.EAST if step == 1 else Port.WEST
    inp = out.opposite
    prog.set_route(x0, y, colour, rx=Port.RAMP, tx=out)
    for x in range(x0 + step, x1, step):
        prog.set_route(x, y, colour, rx=inp, tx=out)
    prog.set_route(x1, y, colour, rx=inp, tx=Port.RAMP)


def arange_init(n: int, offset: float = 0.0) -> np.ndarray:
    return np.arange(n, dtype=np.float64) + offset
