"""Fabric timing and flow control: latency, streaming rate, backpressure, arbitration, multicast."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import MeshProgram, Port, Recv, Send, Timestamp, Wait, simulate
from simulator import costs
from tests.simulator.conftest import arange_init, line_route


def one_line(spec, h: int, n: int) -> MeshProgram:
    prog = MeshProgram(h + 1, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", n, init=arange_init(n))
    prog.add_buffer(h, 0, "b", "fp32", n)
    line_route(prog, 0, h, 0, colour=1)
    prog.add(0, 0, Send(1, "a"))
    prog.add(h, 0, Recv(1, "b"), Timestamp("done"))
    return prog


@pytest.mark.parametrize("h", [1, 2, 3, 7, 20])
@pytest.mark.parametrize("alpha,rho", [(2.0, 2.0), (1.0, 1.0), (3.0, 4.0), (300.0, 2.0), (5.0, 90.0)])
def test_single_wavelet_latency(spec, h, alpha, rho):  # latencies past the 32-slot wheel included
    spec = spec.with_params(hop_cycles=alpha, ramp_cycles=rho)
    res = simulate(one_line(spec, h, 1))
    # injected at cycle 0, popped by the receive at h*alpha + rho; its Timestamp runs the cycle after
    assert res.timestamp(h, 0, "done") == [h * int(alpha) + int(rho) + 1]
    assert np.array_equal(res.buffer(h, 0, "b"), [0.0])


@pytest.mark.parametrize("h,n", [(1, 10), (4, 64), (10, 300), (30, 5)])
def test_stream_takes_n_plus_latency(spec, h, n):
    res = simulate(one_line(spec, h, n))
    a = costs.hop_cycles(spec)
    rho = sum(costs.ramp_split(spec))
    # last wavelet injected at n-1, popped at n-1 + h*alpha + rho
    assert res.timestamp(h, 0, "done") == [n - 1 + h * a + rho + 1]
    assert np.array_equal(res.buffer(h, 0, "b"), np.arange(n))
    assert res.link_wavelets[0, :h, Port.EAST].tolist() == [n] * h
    assert res.link_wavelets[0, h, Port.RAMP] == n


def test_fractional_hop_rounds_to_nearest_at_least_one(spec):
    assert costs.hop_cycles(spec.with_params(hop_cycles=0.2)) == 1
    assert costs.hop_cycles(spec.with_params(hop_cycles=2.5)) == 3
    assert costs.hop_cycles(spec.with_params(hop_cycles=2.4)) == 2
    assert costs.ramp_split(spec.with_params(ramp_cycles=3.0)) == (1, 2)


def contention_program(spec, senders: int, n: int, slow_receiver: bool) -> MeshProgram:
    """``senders`` PEs west of a receiver each stream n values on their own colour; every stream
    crosses the last link, and the receiver may start late (heavy backpressure)."""
    rx = senders
    prog = MeshProgram(senders + 1, 1, spec)
    ids = []
    prog.add_buffer(rx, 0, "big", "fp32", 2000)
    for i in range(senders):
        prog.add_buffer(i, 0, "a", "fp32", n, init=arange_init(n, 1000.0 * i))
        prog.add_buffer(rx, 0, f"b{i}", "fp32", n)
        line_route(prog, i, rx, 0, colour=1 + i)
        prog.add(i, 0, Send(1 + i, "a"))
    if slow_receiver:
        from simulator import Fill
        prog.add(rx, 0, Fill("big", 1.0), Fill("big", 2.0))
    for i in range(senders):
        prog.add(rx, 0, Recv(1 + i, f"b{i}", id=f"r{i}"))
        ids.append(f"r{i}")
    prog.add(rx, 0, Wait(tuple(ids)))
    return prog


@pytest.mark.parametrize("slow", [False, True])
def test_depth2_queues_under_contention_lose_nothing_and_keep_order(spec, slow):
    assert spec.router_buffer_wavelets == 2 and costs.queue_depths(spec)[0] == 2
    senders, n = 4, 100
    res = simulate(contention_program(spec, senders, n, slow))
    for i in range(senders):
        assert np.array_equal(res.buffer(senders, 0, f"b{i}"), np.arange(n) + 1000.0 * i)
    assert res.link_wavelets[0, senders - 1, Port.EAST] == senders * n
    assert res.total_cycles >= senders * n  # one wavelet per link per cycle


def test_two_colours_share_a_link_about_half_each(spec):
    n = 400
    prog = MeshProgram(4, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", n)
    prog.add_buffer(1, 0, "a", "fp32", n)
    prog.add_buffer(3, 0, "b0", "fp32", n)
    prog.add_buffer(3, 0, "b1", "fp32", n)
    line_route(prog, 0, 3, 0, colour=1)
    line_route(prog, 1, 3, 0, colour=2)
    prog.add(0, 0, Send(1, "a"))
    prog.add(1, 0, Send(2, "a"))
    prog.add(3, 0, Recv(1, "b0", id="r0"), Recv(2, "b1", id="r1"), Wait(("r0", "r1")))
    res = simulate(prog, trace=True)
    ends = [e for (xy, tid, name, t0, e) in res.trace_events if xy == (3, 0) and tid > 0]
    assert len(ends) == 2
    # fair round-robin: both streams finish together, near 2n; unfair would end one near n
    assert min(ends) >= 1.9 * n
    assert abs(ends[0] - ends[1]) <= 4
    assert res.link_wavelets[0, 1, Port.EAST] == 2 * n


def test_multicast_delivers_to_every_tap(spec):
    n, W = 20, 6
    prog = MeshProgram(W, 1, spec)
    prog.add_buffer(range(W), 0, "v", "fp32", n)
    prog.set_data(0, 0, "v", arange_init(n, 5.0))
    prog.set_route(0, 0, 3, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(range(1, W - 1), 0, 3, rx=Port.WEST, tx={Port.RAMP, Port.EAST})
    prog.set_route(W - 1, 0, 3, rx=Port.WEST, tx=Port.RAMP)
    prog.add(0, 0, Send(3, "v"))
    prog.add(range(1, W), 0, Recv(3, "v"), Timestamp("t"))
    res = simulate(prog)
    a, rho = costs.hop_cycles(spec), sum(costs.ramp_split(spec))
    for x in range(1, W):
        assert np.array_equal(res.buffer(x, 0, "v"), np.arange(n) + 5.0)
        assert res.timestamp(x, 0, "t") == [n - 1 + x * a + rho + 1]


def test_multicast_is_paced_by_the_slowest_tap(spec):
    """A tap that starts receiving late holds the whole tree (all-or-nothing multicast)."""
    from simulator import Fill
    n, W = 50, 3
    prog = MeshProgram(W, 1, spec)
    prog.add_buffer(range(W), 0, "v", "fp32", n)
    prog.add_buffer(1, 0, "big", "fp32", 4000)
    prog.set_route(0, 0, 3, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(1, 0, 3, rx=Port.WEST, tx={Port.RAMP, Port.EAST})
    prog.set_route(2, 0, 3, rx=Port.WEST, tx=Port.RAMP)
    prog.add(0, 0, Send(3, "v"))
    prog.add(1, 0, Fill("big", 0.0), Recv(3, "v"))
    prog.add(2, 0, Recv(3, "v"), Timestamp("t"))
    res = simulate(prog)
    fill = costs.vector_op(spec, "mov", "fp32", 4000)
    assert res.timestamp(2, 0, "t")[0] > fill


def test_async_send_overlaps_compute(spec):
    """An async send and a compute op run together; a sync send blocks the main thread."""
    from simulator import Fill

    def prog_for(async_: bool) -> MeshProgram:
        n = 200
        prog = MeshProgram(2, 1, spec)
        prog.add_buffer(0, 0, "a", "fp32", n)
        prog.add_buffer(0, 0, "c", "fp32", 400)
        prog.add_buffer(1, 0, "b", "fp32", n)
        line_route(prog, 0, 1, 0, colour=1)
        if async_:
            prog.add(0, 0, Send(1, "a", id="s"), Fill("c", 1.0), Wait("s"), Timestamp("t"))
        else:
            prog.add(0, 0, Send(1, "a"), Fill("c", 1.0), Timestamp("t"))
        prog.add(1, 0, Recv(1, "b"))
        return prog

    fill = costs.vector_op(spec, "mov", "fp32", 400)
    t_async = simulate(prog_for(True)).timestamp(0, 0, "t")[0]
    t_sync = simulate(prog_for(False)).timestamp(0, 0, "t")[0]
    assert t_async == max(200, fill) + costs.task_cycles(spec)  # the join: one task activation
    assert t_sync >= 200 + fill
