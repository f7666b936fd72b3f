"""Regressions found by the kernel work."""

from __future__ import annotations

from plmr import WSE2
from simulator import Gemv, MeshProgram, Port, Recv, Send, simulate


def test_many_pes_waking_from_the_heap_at_once():
    """Every PE of a 64x40 mesh finishes a long op in the same cycle: more than 1024 agents leave
    the long-delay heap together. The wake queue once had 1024 slots and numba does not check
    bounds, so this corrupted memory (process abort) instead of simulating."""
    W, H = 40, 64
    prog = MeshProgram(W, H, WSE2)
    prog.add_buffer(range(W), range(H), "w", "fp32", 4, init=1.0)
    prog.add_buffer(range(W), range(H), "x", "fp32", 4, init=1.0)
    prog.add_buffer(range(W), range(H), "y", "fp32", 1)
    prog.add(range(W), range(H), Gemv("y", "x", "w", 4, 1))  # 4 x (c_op + 1) cycles on every PE
    # column 0 multicasts its result south; everyone below receives it
    prog.set_route(0, 0, 1, rx={Port.RAMP}, tx={Port.SOUTH})
    prog.set_route(0, range(1, H - 1), 1, rx={Port.NORTH}, tx={Port.RAMP, Port.SOUTH})
    prog.set_route(0, H - 1, 1, rx={Port.NORTH}, tx={Port.RAMP})
    prog.add_buffer(0, range(1, H), "r", "fp32", 1)
    prog.add(0, 0, Send(1, "y"))
    prog.add(0, range(1, H), Recv(1, "r"))
    for mode in ("timing", "functional"):
        res = simulate(prog, WSE2, mode=mode)
        gemv = 4 * (WSE2.op_issue_cycles + 1)
        assert res.total_cycles >= gemv + (H - 1) * WSE2.hop_cycles
        if mode == "functional":
            assert float(res.buffer(0, H - 1, "r")[0]) == 4.0
