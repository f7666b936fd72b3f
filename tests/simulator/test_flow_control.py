"""Back-pressure wake-ups: a full buffer holds its producer, and the pop that frees a slot wakes it.

The engine marks a producer waiting on a full channel in that channel's record (the router's fast
path for a route with one fabric output reads no route record). If a wake-up were lost or late, a
back-pressured stream would drain with bubbles (or not at all); if it came early nothing would show.
So each case here fills a line while the receiver is busy, then checks that the line drains one
wavelet per cycle: receiving n wavelets takes n - 1 cycles more than receiving one (the limiting
case, same program). The streams are much longer than everything the line buffers, so the sender's
CE (blocked on its full ramp channel) and every router (blocked on a full downstream channel) must
be woken again and again for the line to keep up.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator import Fill, MeshProgram, Port, Recv, Send, Timestamp, simulate
from simulator import costs
from tests.simulator.conftest import arange_init, line_route


def _late_receiver_line(spec, h: int, n: int, fill: int) -> MeshProgram:
    """PE 0 streams n values to PE h along row 0; PE h first runs a long Fill, so the line backs up."""
    prog = MeshProgram(h + 1, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", n, init=arange_init(n))
    prog.add_buffer(h, 0, "b", "fp32", n)
    prog.add_buffer(h, 0, "big", "fp32", fill)
    line_route(prog, 0, h, 0, colour=1)
    prog.add(0, 0, Send(1, "a"))
    prog.add(h, 0, Fill("big", 1.0), Timestamp("go"), Recv(1, "b"), Timestamp("done"))
    return prog


def _receive_time(res, x: int) -> int:
    (go,), (done,) = res.timestamp(x, 0, "go"), res.timestamp(x, 0, "done")
    return done - go


@pytest.mark.parametrize("h", [1, 2, 5])
def test_a_backed_up_line_drains_one_wavelet_per_cycle(spec, h):
    n, fill = 150, 3000
    one = simulate(_late_receiver_line(spec, h, 1, fill))
    res = simulate(_late_receiver_line(spec, h, n, fill))
    assert costs.vector_op(spec, "mov", "fp32", fill) > n + 10 * h  # the line is full when the receive starts
    assert _receive_time(res, h) == _receive_time(one, h) + n - 1
    assert np.array_equal(res.buffer(h, 0, "b"), np.arange(n))
    assert res.link_wavelets[0, :h, Port.EAST].tolist() == [n] * h


def test_a_multicast_held_by_its_slow_tap_drains_one_wavelet_per_cycle(spec):
    """A route with two outputs (the router's per-port path): the tap that starts late backs up the
    tree, the fast tap then receives at the slow tap's pace, and both drain without bubbles."""
    n, fill = 120, 3000

    def prog(n: int) -> MeshProgram:
        p = MeshProgram(3, 1, spec)
        p.add_buffer(range(3), 0, "v", "fp32", n)
        p.set_data(0, 0, "v", arange_init(n, 7.0))
        p.add_buffer(1, 0, "big", "fp32", fill)
        p.set_route(0, 0, 3, rx=Port.RAMP, tx=Port.EAST)
        p.set_route(1, 0, 3, rx=Port.WEST, tx={Port.RAMP, Port.EAST})
        p.set_route(2, 0, 3, rx=Port.WEST, tx=Port.RAMP)
        p.add(0, 0, Send(3, "v"))
        p.add(1, 0, Fill("big", 0.0), Timestamp("go"), Recv(3, "v"), Timestamp("done"))
        p.add(2, 0, Recv(3, "v"), Timestamp("done"))
        return p

    one, res = simulate(prog(1)), simulate(prog(n))
    assert _receive_time(res, 1) == _receive_time(one, 1) + n - 1
    # one tree: the east tap cannot finish before the slow tap has taken most of the stream
    assert res.timestamp(2, 0, "done")[0] > res.timestamp(1, 0, "go")[0] + n // 2
    for x in range(1, 3):
        assert np.array_equal(res.buffer(x, 0, "v"), np.arange(n) + 7.0)
