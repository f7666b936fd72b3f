"""Bad programs: build-time InputErrors and run-time deadlock / mis-routing errors."""

from __future__ import annotations

import time

import pytest

from plmr.errors import InputError
from simulator import (
    MeshProgram, MisroutedWavelet, Port, Recv, Send, SimulationDeadlock, SimulationLimit, Wait, simulate,
)
from tests.simulator.conftest import line_route


def test_sram_overflow_at_build_time_names_pe_need_and_limit(spec):
    prog = MeshProgram(3, 2, spec)
    prog.add_buffer(range(3), range(2), "a", "fp32", 10000)
    with pytest.raises(InputError) as e:
        prog.add_buffer(2, 1, "b", "fp16", 3000)
    msg = str(e.value)
    assert "PE (2, 1)" in msg and "46000" in msg and str(spec.usable_sram_bytes) in msg


def test_reserved_and_unknown_colours_rejected(spec):
    prog = MeshProgram(2, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 4)
    with pytest.raises(InputError, match=r"PE \(1, 0\).*colour 21 is reserved"):
        prog.set_route(1, 0, 21, rx=Port.WEST, tx=Port.RAMP)
    with pytest.raises(InputError, match="unknown colour 30"):
        prog.set_route(0, 0, 30, rx=Port.RAMP, tx=Port.EAST)
    with pytest.raises(InputError, match="colour 22 is reserved"):
        prog.add(0, 0, Send(22, "a"))


def test_unknown_buffer_and_bad_slices(spec):
    from simulator import Ref
    prog = MeshProgram(2, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 4)
    with pytest.raises(InputError, match="unknown buffer 'zz'"):
        prog.add(0, 0, Send(1, "zz"))
    with pytest.raises(InputError, match="past buffer 'a'"):
        prog.add(0, 0, Send(1, Ref("a", 2, 3)))
    with pytest.raises(InputError, match="offset 4 outside"):
        prog.add(0, 0, Send(1, Ref("a", 4)))
    with pytest.raises(InputError, match="stride"):
        prog.add(0, 0, Recv(1, Ref("a", 0, 2, 0)))
    with pytest.raises(InputError, match="outside the 2x1 mesh"):
        prog.add_buffer(2, 0, "a", "fp32", 4)


def test_route_conflict_and_missing_ramp(spec):
    prog = MeshProgram(3, 1, spec)
    prog.set_route(1, 0, 2, rx=Port.WEST, tx=Port.EAST)
    with pytest.raises(InputError, match="already routed"):
        prog.set_route(1, 0, 2, rx=Port.EAST, tx=Port.WEST)
    prog.add_buffer(1, 0, "a", "fp32", 4)
    prog.add(1, 0, Recv(2, "a"))
    with pytest.raises(InputError, match="does not deliver to the RAMP"):
        simulate(prog)


def test_wait_on_unknown_id(spec):
    prog = MeshProgram(2, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 4)
    line_route(prog, 0, 1, 0, 1)
    prog.add(0, 0, Wait("nope"))
    with pytest.raises(InputError, match="'nope'"):
        simulate(prog)


def test_misrouted_wavelet_no_route_downstream(spec):
    prog = MeshProgram(3, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 4)
    prog.set_route(0, 0, 1, rx=Port.RAMP, tx=Port.EAST)
    prog.add(0, 0, Send(1, "a"))
    with pytest.raises(MisroutedWavelet, match=r"PE \(0, 0\) forwards colour 1 EAST.*PE \(1, 0\)"):
        simulate(prog)


def test_misrouted_wavelet_off_mesh(spec):
    prog = MeshProgram(2, 1, spec)
    prog.add_buffer(1, 0, "a", "fp32", 4)
    prog.set_route(1, 0, 1, rx=Port.RAMP, tx=Port.EAST)
    prog.add(1, 0, Send(1, "a"))
    with pytest.raises(MisroutedWavelet, match="off the"):
        simulate(prog)


def test_unconsumed_wavelets_are_an_error(spec):
    prog = MeshProgram(2, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 1)
    line_route(prog, 0, 1, 0, 1)
    prog.add(0, 0, Send(1, "a"))
    with pytest.raises(MisroutedWavelet, match=r"never received.*PE \(1, 0\) colour 1"):
        simulate(prog)


def test_two_directions_same_colour_same_cycle(spec):
    prog = MeshProgram(3, 1, spec)
    prog.add_buffer(range(3), 0, "a", "fp32", 2)
    prog.set_route(0, 0, 1, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(2, 0, 1, rx=Port.RAMP, tx=Port.WEST)
    prog.set_route(1, 0, 1, rx={Port.WEST, Port.EAST}, tx=Port.RAMP)
    prog.add(0, 0, Send(1, "a"))
    prog.add(2, 0, Send(1, "a"))
    prog.add(1, 0, Recv(1, "a"))
    with pytest.raises(MisroutedWavelet, match="two directions"):
        simulate(prog)


def cyclic_program(spec, n: int) -> MeshProgram:
    """A 2x2 ring: every PE sends n values two hops clockwise, and only then receives. Once the
    buffers on the ring fill, every sender waits on a receiver that waits on its own send."""
    prog = MeshProgram(2, 2, spec)
    ring = [(0, 0), (1, 0), (1, 1), (0, 1)]
    out_port = {(0, 0): Port.EAST, (1, 0): Port.SOUTH, (1, 1): Port.WEST, (0, 1): Port.NORTH}
    for i, (x, y) in enumerate(ring):
        prog.add_buffer(x, y, "a", "fp32", n)
        prog.add_buffer(x, y, "b", "fp32", n)
        c = 1 + i
        mid, dst = ring[(i + 1) % 4], ring[(i + 2) % 4]
        prog.set_route(x, y, c, rx=Port.RAMP, tx=out_port[(x, y)])
        prog.set_route(*mid, c, rx=out_port[(x, y)].opposite, tx=out_port[mid])
        prog.set_route(*dst, c, rx=out_port[mid].opposite, tx=Port.RAMP)
    for i, (x, y) in enumerate(ring):
        src_c = 1 + (i - 2) % 4
        prog.add(x, y, Send(1 + i, "a"), Recv(src_c, "b"))
    return prog


def test_cyclic_wait_raises_deadlock_quickly(spec):
    assert simulate(cyclic_program(spec, 4)).total_cycles > 0  # short messages fit in the buffers
    t0 = time.perf_counter()
    with pytest.raises(SimulationDeadlock) as e:
        simulate(cyclic_program(spec, 200), max_idle_cycles=1000)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "deadlock at cycle" in msg and "4 PEs blocked" in msg
    assert "PE (0, 0)" in msg and "send colour 1 (output queue" in msg and "main waits for its synchronous" in msg


def test_receive_that_never_comes_is_a_deadlock(spec):
    prog = MeshProgram(2, 1, spec)
    prog.add_buffer(1, 0, "b", "fp32", 3)
    prog.add_buffer(0, 0, "a", "fp32", 2)
    line_route(prog, 0, 1, 0, 1)
    prog.add(0, 0, Send(1, "a"))
    prog.add(1, 0, Recv(1, "b"))
    with pytest.raises(SimulationDeadlock, match=r"PE \(1, 0\).*recv colour 1 \(input queue 0/"):
        simulate(prog)


def test_cycle_limit(spec):
    from simulator import Fill
    prog = MeshProgram(1, 1, spec)
    prog.add_buffer(0, 0, "a", "fp32", 1000)
    prog.add(0, 0, *[Fill("a", float(i)) for i in range(5)])
    with pytest.raises(SimulationLimit):
        simulate(prog, max_cycles=100)


def _one_wavelet_one_hop(spec, hop_cycles: float):
    """A wavelet sent one hop east on a spec whose hop takes ``hop_cycles``: (spec, program)."""
    slow = spec.with_params(hop_cycles=hop_cycles)
    prog = MeshProgram(2, 1, slow)
    prog.add_buffer(range(2), 0, "a", "fp32", 1)
    line_route(prog, 0, 1, 0, 1)
    prog.add(0, 0, Send(1, "a"))
    prog.add(1, 0, Recv(1, "a"))
    return slow, prog


def test_absurd_fabric_latency_is_a_clear_error(spec):
    slow, prog = _one_wavelet_one_hop(spec, 5000.0)
    with pytest.raises(InputError, match=r"fabric latency of 5000 cycles .* beyond the simulator's 4096"):
        simulate(prog, slow)


def test_a_wavelet_in_flight_is_not_idleness(spec):
    """A 300-cycle hop with a 50-cycle idle limit finishes: waiting for a scheduled arrival is not a
    deadlock (only retries that move nothing count)."""
    slow, prog = _one_wavelet_one_hop(spec, 300.0)
    assert simulate(prog, slow, max_idle_cycles=50).total_cycles > 300
