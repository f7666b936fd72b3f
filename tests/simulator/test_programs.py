"""Programs, not traces: bodies placed with parameters, loops, run-time offsets, tasks, launches and the
PE's datapath rules, each checked against a hand-worked expectation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plmr.errors import InputError
from plmr.hardware import WSE2, WSE3
from simulator import (
    Activate, Add, Assign, Block, Body, Device, Fill, Finish, If, Load, Loop, MeshProgram, Port, Recv,
    RecvAdd, Ref, Send, SetRoute, SimulationDeadlock, Store, Timestamp, Unblock, Var, Wait, X, Y, eq,
    simulate,
)
from simulator import costs
from simulator.expr import Param


@pytest.fixture
def spec():
    return WSE2


def _one_pe(spec, body: Body, params=None) -> MeshProgram:
    prog = MeshProgram(1, 1, spec)
    prog.place(body, params=params or {})
    return prog


# ---------------------------------------------------------------------------------------------
# Loops of DSD ops, run-time offsets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7])
def test_a_loop_of_dsd_ops_costs_the_sum_of_its_ops(spec, n):
    b = Body("loop")
    b.buffer("a", "fp16", 64)
    b.var("i")
    b.function("main", [Timestamp("t0"), Loop(n, "i", [Add("a", "a", "a"), Fill(Ref("a", 0, 10), 1.0)]),
                        Timestamp("t1")])
    res = simulate(_one_pe(spec, b), spec, mode="timing")
    t0, t1 = res.timestamp(0, 0, "t0")[0], res.timestamp(0, 0, "t1")[0]
    add = costs.vector_op(spec, "add", "fp16", 64)
    fill = costs.vector_op(spec, "mov", "fp16", 10)
    # Timestamp costs one cycle; scalar loop statements cost spec.scalar_op_cycles (0 on WSE-2)
    assert t1 - t0 == 1 + n * (add + fill)


def test_run_time_offsets_index_a_ring_buffer(spec):
    """Store i*i into slot (i + 3) mod 8 for i < 8: a run-time offset through Store and a DSD Fill."""
    b = Body("ring")
    b.buffer("a", "fp32", 8)
    b.buffer("b", "fp32", 16)
    b.var("i")
    b.function("main", [Loop(8, "i", [Store("a", (Var("i") + 3) % 8, Var("i") * Var("i")),
                                      Fill(Ref("b", Var("i") * 2, 2), Var("i"))])])
    res = simulate(_one_pe(spec, b), spec)
    want = np.zeros(8)
    for i in range(8):
        want[(i + 3) % 8] = i * i
    np.testing.assert_array_equal(res.buffer(0, 0, "a"), want)
    np.testing.assert_array_equal(res.buffer(0, 0, "b"), np.repeat(np.arange(8), 2))


def test_computed_loop_counts_and_hoisted_values_survive_the_body(spec):
    """A count computed from variables (n + m = 5 outer, x + 2 = 2 inner on PE 0) stays the count
    while the body computes other values; expressions invariant in a loop (here (n*m + x) * 2, with
    n, m assigned before the loop) give the values a straight evaluation gives: sum over i < 5, j < 2
    of 12 + i*2 + j = 5*2*12 + 2*(0+1+2+3+4)*2 + 5*(0+1) = 120 + 40 + 5."""
    b = Body("counts")
    b.buffer("out", "fp32", 1)
    for v in ("n", "m", "i", "j", "acc"):
        b.var(v)
    n, m, i, j, acc = (Var(v) for v in ("n", "m", "i", "j", "acc"))
    b.function("main", [
        Assign("n", 2), Assign("m", 3), Assign("acc", 0),
        Loop(n + m, "i", [
            Loop(X + 2, "j", [Assign("acc", acc + (n * m + X) * 2 + i * 2 + j)])]),
        Store("out", 0, acc)])
    res = simulate(_one_pe(spec, b), spec)
    assert res.buffer(0, 0, "out")[0] == 120 + 40 + 5


def test_code_in_a_loop_that_never_runs_or_is_guarded_cannot_fail_early(spec):
    """Loop-invariant code motion moves only what cannot fail: a division by a variable that is 0
    stays behind its guard and inside a loop that runs 0 times; a load stays inside the loop that
    writes the element (so each iteration reads the value the previous one stored)."""
    b = Body("guard")
    b.buffer("a", "fp32", 2)
    for v in ("d", "q", "i"):
        b.var(v)
    d, q, i = Var("d"), Var("q"), Var("i")
    b.function("main", [
        Assign("d", 0),
        Loop(0, "i", [Assign("q", 10 // d)]),
        Loop(3, "i", [If(d > 0, [Assign("q", 10 // d)]),
                      Store("a", 0, Load("a", 0) + Load("a", 1) + 1), Store("a", 1, 1)])])
    res = simulate(_one_pe(spec, b), spec)
    assert res.buffer(0, 0, "a")[0] == 1 + 2 + 2   # 0+0+1, then 1+1+1, then 3+1+1


def test_offset_past_the_end_at_run_time_names_pe_body_and_op(spec):
    b = Body("bad_offset")
    b.buffer("a", "fp32", 8)
    b.var("i")
    b.function("main", [Loop(3, "i", [Fill(Ref("a", Var("i") * 4, 4), 1.0)])])
    with pytest.raises(InputError, match=r"PE \(0, 0\) \(body bad_offset\).*Fill.*outside its buffer"):
        simulate(_one_pe(spec, b), spec)


def test_loop_count_below_zero_names_pe_body_and_statement(spec):
    b = Body("neg")
    b.buffer("a", "fp32", 8)
    n = b.param("n")
    b.var("i")
    b.var("c")
    b.function("main", [Assign("c", n - 5), Loop(Var("c"), "i", [Fill("a", 1.0)])])
    with pytest.raises(InputError, match=r"PE \(0, 0\) \(body neg\).*count -3 is below zero"):
        simulate(_one_pe(spec, b, {"n": 2}), spec)
    b2 = Body("neg_static")
    b2.buffer("a", "fp32", 8)
    b2.var("i")
    b2.function("main", [Loop(-1, "i", [Fill("a", 1.0)])])
    with pytest.raises(InputError, match="count -1 is below zero"):
        simulate(_one_pe(spec, b2), spec)


def test_a_parameter_missing_for_a_placed_pe(spec):
    b = Body("needs_k")
    b.param("k")
    b.buffer("a", "fp32", 4)
    b.function("main", [])
    with pytest.raises(InputError, match=r"body needs_k: parameter 'k' has no value for PE \(0, 0\)"):
        MeshProgram(2, 1, spec).place(b)


# ---------------------------------------------------------------------------------------------
# The PE: one datapath, one ramp
# ---------------------------------------------------------------------------------------------


def _recvadd_beside_add(spec, with_add: bool, with_recv: bool) -> int:
    """PE 1 receives-and-accumulates 200 wavelets (async) while its main thread adds 400 fp32."""
    n = 200
    prog = MeshProgram(2, 1, spec)
    src, dst = Body("src"), Body("dst")
    src.buffer("a", "fp32", n)
    src.function("main", [Send(1, "a")] if with_recv else [])
    dst.buffer("b", "fp32", n)
    dst.buffer("c", "fp32", 400)
    code = []
    if with_recv:
        code.append(RecvAdd(1, "b", id="r"))
    if with_add:
        code.append(Add("c", "c", "c"))
    if with_recv:
        code.append(Wait("r"))
    code.append(Timestamp("end"))
    dst.function("main", code)
    prog.place(src, 0, 0)
    prog.place(dst, 1, 0)
    prog.set_route(0, 0, 1, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(1, 0, 1, rx=Port.WEST, tx=Port.RAMP)
    return simulate(prog, spec, mode="timing").timestamp(1, 0, "end")[0]


def test_async_receive_accumulate_beside_a_vector_op_takes_longer_than_either(spec):
    both = _recvadd_beside_add(spec, True, True)
    add_only = _recvadd_beside_add(spec, True, False)
    recv_only = _recvadd_beside_add(spec, False, True)
    assert both > add_only and both > recv_only
    # every cycle in which a wavelet is added in memory (1 read + 1 write) stalls the add (2 reads +
    # 1 write): the add takes its own cycles plus those the 200 receive-adds take while it runs
    add = costs.vector_op(spec, "add", "fp32", 400)
    assert both >= add + 150


def _two_senders(spec, same_pe: bool) -> tuple[int, int]:
    """Two streams of 50 wavelets on two colours to one receiver, from one PE or from two."""
    n = 50
    prog = MeshProgram(3, 1, spec)
    s0 = Body("s0")
    s0.buffer("a", "fp32", n)
    s1 = Body("s1")
    s1.buffer("a", "fp32", n)
    r = Body("r")
    r.buffer("b", "fp32", n)
    r.buffer("c", "fp32", n)
    r.function("main", [Recv(1, "b", id="x"), Recv(2, "c", id="y"), Wait(("x", "y")), Timestamp("end")])
    if same_pe:  # PE 1 sends both streams
        s1.function("main", [Send(1, "a", id="p"), Send(2, "a", id="q"), Wait(("p", "q")), Timestamp("sent")])
        s0.function("main", [])
        prog.set_route(1, 0, 1, rx=Port.RAMP, tx=Port.EAST)
        prog.set_route(1, 0, 2, rx=Port.RAMP, tx=Port.EAST)
    else:  # PE 0 sends on colour 1 (passing PE 1), PE 1 on colour 2
        s0.function("main", [Send(1, "a")])
        s1.function("main", [Send(2, "a"), Timestamp("sent")])
        prog.set_route(0, 0, 1, rx=Port.RAMP, tx=Port.EAST)
        prog.set_route(1, 0, 1, rx=Port.WEST, tx=Port.EAST)
        prog.set_route(1, 0, 2, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(2, 0, 1, rx=Port.WEST, tx=Port.RAMP)
    prog.set_route(2, 0, 2, rx=Port.WEST, tx=Port.RAMP)
    prog.place(s0, 0, 0)
    prog.place(s1, 1, 0)
    prog.place(r, 2, 0)
    res = simulate(prog, spec.with_params(op_issue_cycles=0.0), mode="timing")
    return res.timestamp(2, 0, "end")[0], res


def test_a_pe_injects_one_wavelet_per_cycle_and_receives_one(spec):
    end_same, res = _two_senders(spec, True)
    end_two, _ = _two_senders(spec, False)
    # one PE's ramp takes one wavelet a cycle: its 100 wavelets need >= 100 cycles; the receiver's
    # ramp delivers one a cycle, so even from two PEs the 100 wavelets need >= 100 cycles
    assert end_same >= 100 and end_two >= 100
    assert res.link_wavelets[0, 1, Port.EAST] == 100 and res.link_wavelets[0, 2, Port.RAMP] == 100


# ---------------------------------------------------------------------------------------------
# Tasks: picker order, block/unblock join, data tasks
# ---------------------------------------------------------------------------------------------


def test_task_picker_runs_high_priority_then_lowest_id(spec):
    """main activates three tasks; they run after main returns: the high-priority one first, then by
    ascending ID, each after one task switch."""
    b = Body("tasks")
    b.buffer("log", "fp32", 3)
    b.var("n", "i32")
    b.task("tb", [Store("log", Var("n"), 2), Assign("n", Var("n") + 1)], id=12)
    b.task("ta", [Store("log", Var("n"), 1), Assign("n", Var("n") + 1)], id=11)
    b.task("th", [Store("log", Var("n"), 3), Assign("n", Var("n") + 1)], id=14, priority="high")
    b.function("main", [Activate("tb"), Activate("th"), Activate("ta"), Finish()])
    res = simulate(_one_pe(spec, b), spec)
    np.testing.assert_array_equal(res.buffer(0, 0, "log"), [3, 1, 2])
    assert res.total_cycles == 3 * costs.task_cycles(spec)


def test_block_unblock_join_needs_both(spec):
    """A task blocked at start runs only after it is both activated and unblocked."""
    b = Body("join")
    b.buffer("log", "fp32", 2)
    b.task("j", [Store("log", 0, 7)], blocked=True)
    b.task("u", [Store("log", 1, 5), Unblock("j")])
    b.function("main", [Activate("j"), Finish()])
    with pytest.raises(SimulationDeadlock, match=r"PE \(0, 0\) \(body join\): task IDs \[\d+\] activated but "
                                                  r"blocked"):
        simulate(_one_pe(spec, b), spec)  # activated, never unblocked: the launch cannot end
    b2 = Body("join2")
    b2.buffer("log", "fp32", 2)
    b2.task("j", [Store("log", 0, 7)], blocked=True)
    b2.task("u", [Store("log", 1, 5), Unblock("j")])
    b2.function("main", [Activate("j"), Activate("u"), Finish()])
    res = simulate(_one_pe(spec, b2), spec)
    np.testing.assert_array_equal(res.buffer(0, 0, "log"), [7, 5])


def test_one_wavelet_per_data_task_activation(spec):
    """A data task bound to a colour runs once per wavelet, with the wavelet as its argument."""
    n = 6
    prog = MeshProgram(2, 1, spec)
    src = Body("src")
    src.buffer("a", "fp32", n)
    src.function("main", [Send(3, "a")])
    dst = Body("sink")
    dst.buffer("got", "fp32", n)
    dst.var("v", "f32")
    dst.var("k", "i32")
    dst.task("on_wavelet", [Store("got", Var("k"), Var("v") * 10), Assign("k", Var("k") + 1)],
             kind="data", colour=3, arg="v")
    dst.function("main", [Finish()])
    prog.place(src, 0, 0)
    prog.place(dst, 1, 0)
    prog.set_route(0, 0, 3, rx=Port.RAMP, tx=Port.EAST)
    prog.set_route(1, 0, 3, rx=Port.WEST, tx=Port.RAMP)
    prog.set_data(0, 0, "a", np.arange(n) + 1.0)
    dev = Device(prog, spec)
    res = dev.launch()
    np.testing.assert_array_equal(res.buffer(1, 0, "got"), (np.arange(n) + 1.0) * 10)
    assert dev.get(1, 0, "k") == n


# ---------------------------------------------------------------------------------------------
# Launches: host scalars, state kept, host copies
# ---------------------------------------------------------------------------------------------


def test_repeated_launch_with_a_host_scalar_keeps_state(spec):
    """A token-position-like scalar selects a ring-buffer slot; buffers keep their contents."""
    b = Body("kv")
    b.buffer("ring", "fp32", 4)
    b.buffer("acc", "fp32", 1)
    b.var("pos", "i32")
    b.function("step", [Store("ring", Var("pos") % 4, Var("pos") + 100),
                        Store("acc", 0, Load("acc", 0) + Var("pos"))], args=("pos",))
    dev = Device(_one_pe(spec, b), spec)
    for pos in range(6):
        dev.launch("step", pos=pos)
    np.testing.assert_array_equal(dev.read(0, 0, "ring"), [104, 105, 102, 103])
    assert dev.read(0, 0, "acc")[0] == sum(range(6))
    dev.write(0, 0, "acc", [1000.0])
    dev.launch("step", pos=7)
    assert dev.read(0, 0, "acc")[0] == 1007
    with pytest.raises(InputError, match="argument 'pos' has no value"):
        dev.launch("step")
    with pytest.raises(InputError, match="no body of this program has a function 'nope'"):
        dev.launch("nope")


def test_memcpy_shapes_are_row_major_per_pe(spec):
    b = Body("m")
    b.buffer("a", "fp32", 3)
    b.function("main", [Add("a", "a", "a")])
    prog = MeshProgram(2, 2, spec)
    prog.place(b)
    dev = Device(prog, spec)
    data = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    dev.memcpy_h2d("a", data)
    dev.launch()
    np.testing.assert_array_equal(dev.memcpy_d2h("a"), 2 * data)
    np.testing.assert_array_equal(dev.read(1, 0, "a"), 2 * data[0, 1])


def test_a_launch_must_end_in_finish_on_every_pe(spec):
    b = Body("never")
    b.buffer("a", "fp32", 1)
    b.task("t", [Fill("a", 1.0)])
    b.function("main", [Activate("t")])  # an explicit Finish elsewhere... never reached
    b.task("f", [Finish()])
    with pytest.raises(SimulationDeadlock, match="never reached Finish"):
        simulate(_one_pe(spec, b), spec)


# ---------------------------------------------------------------------------------------------
# Run-time route changes
# ---------------------------------------------------------------------------------------------


def test_set_route_switches_a_colour_between_directions(spec):
    """Colour 5 first carries PE 1's stream west to PE 0, then (after SetRoute on every PE) east to
    PE 2: one colour, two routes, chosen at run time."""
    prog = MeshProgram(3, 1, spec)
    prog.route_rule(None, None, 5, rx=select_mask(eq(X, 1), Port.RAMP, Port.EAST),
                    tx=select_mask(eq(X, 1), Port.WEST, Port.RAMP), when=X <= 1)
    prog.route_rule(None, None, 5, rx=select_mask(eq(X, 1), Port.RAMP, Port.WEST),
                    tx=select_mask(eq(X, 1), Port.EAST, Port.RAMP), when=X >= 1, config=1)
    b = Body("switch")
    role = b.param("role")  # 0 west end, 1 middle (sender), 2 east end
    b.buffer("a", "fp32", 4)
    b.function("main", [
        If(eq(role, 1), [Send(5, "a"), Fill("a", 9.0), SetRoute(5, 1), Send(5, "a")],
           [If(eq(role, 0), [Recv(5, "a")], [SetRoute(5, 1), Recv(5, "a")])])])
    prog.place(b, params={"role": X})
    prog.set_data(1, 0, "a", [1.0, 2.0, 3.0, 4.0])
    res = simulate(prog, spec)
    np.testing.assert_array_equal(res.buffer(0, 0, "a"), [1, 2, 3, 4])
    np.testing.assert_array_equal(res.buffer(2, 0, "a"), [9, 9, 9, 9])
    assert res.link_wavelets[0, 1, Port.WEST] == 4 and res.link_wavelets[0, 1, Port.EAST] == 4


def select_mask(cond, a: Port, b: Port):
    from simulator.expr import select
    return select(cond, 1 << int(a), 1 << int(b))


def test_set_route_to_an_undeclared_configuration_fails_at_build(spec):
    prog = MeshProgram(1, 1, spec)
    b = Body("bad")
    b.buffer("a", "fp32", 1)
    b.function("main", [SetRoute(3, 2)])
    prog.place(b)
    prog.set_route(0, 0, 3, rx=Port.RAMP, tx=Port.RAMP)
    with pytest.raises(InputError, match="no route configuration 2 was declared"):
        simulate(prog, spec)


# ---------------------------------------------------------------------------------------------
# Build-time resource checks, with the numbers
# ---------------------------------------------------------------------------------------------


def test_code_that_overflows_sram_fails_at_build(spec):
    b = Body("big")
    b.buffer("a", "fp32", 10_000)  # 40,000 B of data
    b.var("i")
    b.function("main", [Loop(3, "i", [Add("a", "a", "a")] * 200)])  # ~200 ops x 32 B of code
    with pytest.raises(InputError, match=r"PE \(0, 0\): SRAM overflow in body big: \d+ B needed .* code ~\d+ B"):
        _one_pe(spec, b)


@pytest.mark.parametrize("target,limit", [(WSE2, 21), (WSE3, 17)])
def test_too_many_task_ids(target, limit):
    b = Body("many_tasks")
    b.buffer("a", "fp32", 1)
    for i in range(limit + 1):
        b.task(f"t{i}", [Fill("a", float(i))])
    b.function("main", [Finish()])
    with pytest.raises(InputError, match=rf"needs {limit + 1} local task IDs, {target.name} has {limit} usable"):
        simulate(_one_pe(target, b), target)


def test_too_many_receive_colours(spec):
    prog = MeshProgram(2, 1, spec)
    src = Body("src")
    src.buffer("a", "fp32", 1)
    dst = Body("dst")
    dst.buffer("a", "fp32", 1)
    cols = list(range(8))
    src.function("main", [Send(c, "a") for c in cols])
    dst.function("main", [Recv(c, "a") for c in cols])
    for c in cols:
        prog.set_route(0, 0, c, rx=Port.RAMP, tx=Port.EAST)
        prog.set_route(1, 0, c, rx=Port.WEST, tx=Port.RAMP)
    prog.place(src, 0, 0)
    prog.place(dst, 1, 0)
    with pytest.raises(InputError, match=r"PE \(1, 0\), body dst: receives on colours needing 8 input queues at "
                                         r"once .* wse2 has 7 usable"):
        simulate(prog, spec)


def test_reserved_or_unknown_colour_fails_at_build(spec):
    b = Body("c")
    b.param("c", "colour")
    b.buffer("a", "fp32", 1)
    b.function("main", [Send(Param("c"), "a")])
    with pytest.raises(InputError, match=r"parameter 'c' = 22 .* not a routable colour of wse2"):
        MeshProgram(1, 1, spec).place(b, params={"c": 22})


# ---------------------------------------------------------------------------------------------
# Bounded bodies and parameter sets
# ---------------------------------------------------------------------------------------------


def test_parameter_sets_follow_distinct_values_not_pes(spec):
    b = Body("p")
    par = b.param("par")
    b.buffer("a", "fp32", par + 1)
    b.function("main", [Fill("a", 1.0)])
    for side in (4, 40):
        prog = MeshProgram(side, side, spec)
        prog.place(b, params={"par": (X + Y) % 2})
        st = prog.stats()
        assert st["code_bodies"] == 1 and st["param_sets"] == 2


# ---------------------------------------------------------------------------------------------
# Queue plans and the code a parameter set keeps
# ---------------------------------------------------------------------------------------------


def _role_program(spec, roles, own_queues: bool):
    """A row of PEs; a PE of role r receives on colour r (0 or 1) and role 2 receives on both at once."""
    from simulator import resources

    b = Body("roles", own_queues=own_queues)
    role = b.param("role")
    b.buffer("r", "fp32", 2)
    c0, c1 = spec.routable_colors[:2]
    b.function("main", [If(eq(role, 0), (Recv(c0, Ref("r", 0, 1)),)),
                        If(eq(role, 1), (Recv(c1, Ref("r", 1, 1)),)),
                        If(eq(role, 2), (Recv(c0, Ref("r", 0, 1), id="a"), Recv(c1, Ref("r", 1, 1), id="b"),
                                         Wait(("a", "b"))))])
    prog = MeshProgram(len(roles), 1, spec)
    prog.place(b, params={"role": np.array([roles])})
    prog.finalize()
    return prog, resources


@pytest.mark.parametrize("spec", [WSE2, WSE3])
def test_own_queues_give_the_same_plan_whatever_parameter_sets_are_placed(spec):
    """Shared (default): colours 0 and 1 share a queue while no placed PE receives on both, and stop sharing
    once one does, so the plan follows the mesh. ``own_queues``: one queue each, in code order, either way."""
    c0, c1 = spec.routable_colors[:2]
    plans = {}
    for own in (False, True):
        for roles in ((0, 1), (0, 1, 2)):
            prog, resources = _role_program(spec, roles, own)
            (qin, nin), _ = resources.body_queues(prog.blocks)
            plans[own, roles] = ({int(c.value): i for c, i in qin.items()}, nin)
    assert plans[False, (0, 1)] == ({c0: 0, c1: 0}, 1)
    assert plans[False, (0, 1, 2)] == ({c0: 0, c1: 1}, 2)
    assert plans[True, (0, 1)] == plans[True, (0, 1, 2)] == ({c0: 0, c1: 1}, 2)


def test_code_counted_once_per_code_shape_equals_counting_every_parameter_set(spec):
    """Parameter sets that agree on the body's conditions and colours share one code count (the memo of
    ``MeshProgram``); each equals ``resources.code_bytes`` on its own values."""
    from simulator import resources

    b = Body("shapes")
    k, n = b.param("k"), b.param("n")
    b.buffer("a", "fp32", n)
    b.function("main", [If(eq(k, 0), (Fill(Ref("a", 0, n), 1.0),), (Fill(Ref("a", 0, n), 2.0),
                                                                      Add(Ref("a", 0, n), "a", "a")))])
    prog = MeshProgram(6, 1, spec)
    prog.place(b, params={"k": np.array([[0, 0, 1, 1, 1, 0]]), "n": np.array([[1, 2, 3, 4, 4, 5]])})
    prog.finalize()
    assert len(prog.blocks) == 5
    assert len({blk.shape for blk in prog.blocks}) == 2
    for blk in prog.blocks:
        assert blk.code_bytes == resources.code_bytes(blk.body, blk.values, spec)
    by_k = {blk.values["k"]: blk.code_bytes for blk in prog.blocks}
    assert by_k[1] > by_k[0]


def test_parameter_sets_differing_only_in_colours_share_one_code_count_and_each_colour_is_checked(
        spec, monkeypatch):
    """A colour parameter splits the parameter sets into shapes (each checked for a routable colour), not
    into codes: four sets (k in {0, 1} x colour in {1, 2}) count their code twice, once per branch kept,
    and a set whose colour is not routable still fails."""
    from simulator import resources

    calls = []
    real = resources.code_bytes
    monkeypatch.setattr(resources, "code_bytes", lambda *a, **kw: calls.append(a[1]) or real(*a, **kw))
    b = Body("colours")
    k, c = b.param("k"), b.param("c")  # an integer used as a colour: checked per shape, when placed
    b.buffer("a", "fp32", 4)
    b.function("main", [If(eq(k, 0), (Send(c, Ref("a", 0, 4)),),
                           (Send(c, Ref("a", 0, 2)), Fill(Ref("a", 0, 4), 1.0)))])
    prog = MeshProgram(4, 1, spec)
    prog.place(b, params={"k": np.array([[0, 0, 1, 1]]), "c": np.array([[1, 2, 1, 2]])})
    prog.finalize()
    assert len(prog.blocks) == 4 and len({blk.shape for blk in prog.blocks}) == 4
    assert sorted(v["k"] for v in calls) == [0, 1]
    for blk in prog.blocks:
        assert blk.code_bytes == real(blk.body, blk.values, spec)
    bad = max(set(range(64)) - set(spec.routable_colors))  # a colour the target reserves
    p2 = MeshProgram(4, 1, spec)
    with pytest.raises(InputError, match=f"colour {bad} is not a routable colour"):
        p2.place(b, params={"k": np.array([[0, 0, 1, 1]]), "c": np.array([[1, 2, 1, bad]])})


def test_a_run_time_condition_that_folds_on_a_parameter_keeps_its_own_code_count(spec):
    """``if (k == 0 ? i < 3 : 1)`` is a run-time test where k = 0 and always true where k = 1, so a k = 1 PE
    keeps only the then-branch: the two parameter sets are two code shapes with different counts."""
    from simulator import resources
    from simulator.expr import select

    b = Body("folds")
    k = b.param("k")
    i = b.var("i")
    b.buffer("a", "fp32", 4)
    b.function("main", [If(select(eq(k, 0), i < 3, 1), (Fill(Ref("a", 0, 4), 1.0),),
                           (Fill(Ref("a", 0, 4), 2.0), Add(Ref("a", 0, 4), "a", "a")))])
    prog = MeshProgram(2, 1, spec)
    prog.place(b, params={"k": np.array([[0, 1]])})
    prog.finalize()
    got = {blk.values["k"]: blk.code_bytes for blk in prog.blocks}
    assert got == {v: resources.code_bytes(blk.body, blk.values, spec) for blk in prog.blocks
                   for v in [blk.values["k"]]}
    assert got[0] > got[1]
