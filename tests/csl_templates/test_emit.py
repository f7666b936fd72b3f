"""Emitting CSL from code bodies: deterministic, independent of the mesh size, target differences
only through the target description, task IDs and queues inside each target's ranges, and clear
refusals of programs that cannot be emitted compactly."""

from __future__ import annotations

import re

import numpy as np
import pytest

from plmr.errors import InputError
from plmr.hardware import WSE2, WSE3
from simulator import Body, MeshProgram, Recv, Send
from simulator.program import Port

from csl_templates.bundle import render_bundle
from csl_templates.emit import emit_csl
from csl_templates.examples import EXAMPLES, data_tasks, joins, loop_offsets, shift_east
from csl_templates.target import csl_target

SIZE_FREE = list(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_reemission_is_byte_identical(name):
    a, _, _ = render_bundle(*EXAMPLES[name](), stub=None, kernel=name)
    b, _, _ = render_bundle(*EXAMPLES[name](), stub=None, kernel=name)
    assert a == b


@pytest.mark.parametrize("name", SIZE_FREE)
def test_csl_is_the_same_for_every_mesh_size(name):
    small, _, _ = render_bundle(*EXAMPLES[name](width=5, height=3), stub=None, kernel=name)
    large, _, _ = render_bundle(*EXAMPLES[name](width=23, height=17), stub=None, kernel=name)
    assert sorted(small) == sorted(large)
    for f in small:
        if f.startswith("src/"):
            assert small[f] == large[f], f
    # the scripts and the manifest name the sizes: only their digits differ
    size = lambda files: sum(len(t) for t in files.values())  # noqa: E731
    assert abs(size(small) - size(large)) < 200


def test_trace_programs_are_refused_in_one_line():
    prog = MeshProgram(2, 1, WSE2, name="traced")
    prog.add_buffer(0, 0, "a", "fp32", 4)
    prog.add_buffer(1, 0, "b", "fp32", 4)
    prog.set_route(0, 0, colour=1, rx={Port.RAMP}, tx={Port.EAST})
    prog.set_route(1, 0, colour=1, rx={Port.WEST}, tx={Port.RAMP})
    prog.add(0, 0, Send(1, "a"))
    prog.add(1, 0, Recv(1, "b"))
    with pytest.raises(InputError, match="per-PE trace API") as exc:
        emit_csl(prog)
    assert "\n" not in str(exc.value)


def test_placements_on_pe_lists_and_tabulated_parameters_read_back_exactly(tmp_path, view):
    """A body placed on a PE list (a region less a row and a column, and that row and column), with a
    parameter given per PE as a function: each prints as rectangles (runs of x merged over rows), and the
    layout evaluates back to every PE's body and value."""
    from csl_templates.layout_emitter import rectangles
    from csl_templates.layout_reader import evaluate_layout

    W, H = 7, 5
    prog = MeshProgram(W, H, WSE2, name="lists")
    pes = np.arange(W * H)
    xs, ys = pes % W, pes // W
    cross = (xs == 3) | (ys == 2)
    for name, sel in (("inner", ~cross), ("cross", cross)):
        b = Body(name)
        b.param("k")
        b.buffer("a", "fp32", 2)
        b.function("main", [])
        table = lambda x, y: np.where((x == 6) & (y == 0), 7, np.where(x < 2, 3, 1))  # noqa: E731
        prog._place(b, None, None, {"k": table}, auto=False, pes=pes[sel])
    assert len(rectangles(pes[~cross], W)) == 4 and len(rectangles(pes[cross], W)) == 3
    src = emit_csl(prog)
    for f, t in src.files.items():
        (tmp_path / f).write_text(t)
    lay = evaluate_layout(str(tmp_path / "layout.csl"), src.params, arch="wse2")
    got = {xy: (f, {k: v for k, v in p.items() if k != "memcpy_params"}) for xy, (f, p) in lay.placements().items()}
    assert got == view(prog)[0]
    assert got[(6, 0)][1]["k"] == 7 and got[(0, 4)][1]["k"] == 3 and got[(3, 2)] == ("pe_cross.csl", {"k": 1})


@pytest.mark.parametrize("what, name", [("buffer", "color"), ("buffer", "while"), ("variable", "time_stamps"),
                                        ("buffer", "wl_now")])
def test_names_that_clash_in_csl_are_refused(what, name):
    prog = MeshProgram(2, 1, WSE2, name="names")
    b = Body("b")
    if what == "buffer":
        b.buffer(name, "fp32", 2)
    else:
        b.var(name, "i16")
    b.function("main", [])
    prog.place(b)
    with pytest.raises(InputError, match=repr(name)):
        emit_csl(prog)


def test_program_parameter_named_like_the_layout_is_refused():
    prog = MeshProgram(2, 1, WSE2, name="p")
    prog.param("width", 2)
    b = Body("b")
    b.function("main", [])
    prog.place(b)
    with pytest.raises(InputError, match="'width' clashes"):
        emit_csl(prog)


def _pe(files: dict, body: str) -> str:
    return files[f"pe_{body}.csl"]


def test_targets_differ_only_through_the_target_description():
    prog, _ = joins(width=4, height=2)
    only2 = _pe(emit_csl(prog, [csl_target(WSE2)]).files, "join")
    only3 = _pe(emit_csl(prog, [csl_target(WSE3)]).files, "join")
    both = _pe(emit_csl(prog, [csl_target(WSE2), csl_target(WSE3)]).files, "join")
    assert "@is_arch" not in only2 and "@is_arch" not in only3 and '@is_arch("wse2")' in both
    assert ".fabric_color" in only2 and ".ut_id" not in only2  # §6.10: WSE-2 fabout names its colour
    assert ".fabric_color" not in only3 and ".ut_id = @get_ut_id(" in only3  # WSE-3 binds queues
    assert "@initialize_queue(@get_output_queue(1), .{});" in only2  # WSE-2: unbound, per op
    assert "@initialize_queue(@get_output_queue(2), .{ .color = cs });" in only3  # WSE-3: bound to the colour
    # a custom target with other task IDs changes only the IDs
    custom = csl_target(WSE2.with_params(local_task_ids=(11, 13)))
    text = _pe(emit_csl(prog, [custom]).files, "join")
    assert re.sub(r"get_local_task_id\(\d+\)", "ID", text) == re.sub(r"get_local_task_id\(\d+\)", "ID", only2)
    assert set(re.findall(r"get_local_task_id\((\d+)\)", text)) <= {"11", "12", "13"}


#: hardware-and-csl.md §1.4-§1.5, typed out independently of plmr.hardware
LOCAL_IDS = {"wse2": set(range(0, 21)),  # 0-30, but avoid 21-31 on WSE-2 (24, 27-30 reserved)
             "wse3": set(range(8, 31)) - {21, 24, 27, 28, 29, 30}}
INPUT_QUEUES = {"wse2": set(range(1, 8)), "wse3": set(range(2, 8))}
OUTPUT_QUEUES = {"wse2": set(range(1, 6)), "wse3": set(range(2, 8))}


@pytest.mark.parametrize("spec", [WSE2, WSE3], ids=["wse2", "wse3"])
@pytest.mark.parametrize("build", [joins, data_tasks, loop_offsets], ids=["joins", "data_tasks", "loops"])
def test_task_ids_and_queues_are_inside_the_targets_ranges(spec, build):
    prog, _ = build()
    files = emit_csl(prog, [csl_target(spec)]).files
    for name, text in files.items():
        if name == "layout.csl":
            continue
        ids = [int(v) for v in re.findall(r"@get_local_task_id\((\d+)\)", text)]
        assert set(ids) <= LOCAL_IDS[spec.name] and len(ids) == len(set(ids)), (name, ids)
        iq = [int(v) for v in re.findall(r"@get_input_queue\((\d+)\)", text)]
        oq = {int(v) for v in re.findall(r"@get_output_queue\((\d+)\)", text)}
        assert set(iq) <= INPUT_QUEUES[spec.name] and len(iq) == len(set(iq))  # one constant per queue
        assert oq <= OUTPUT_QUEUES[spec.name]
        inits = re.findall(r"@initialize_queue\((\w+|@get_output_queue\(\d+\))", text)
        assert len(inits) == len(set(inits))  # each queue initialised once
        binds = re.findall(r"@bind_(local|data)_task\((\w+), t_(\w+)\)", text)
        assert all(task == tid for _, task, tid in binds)
        if spec is WSE3:  # data tasks come from input queues there
            assert "@get_data_task_id(iq_" in text or "data_task_id" not in text


def test_wse2_sends_and_receives_never_share_a_microthread():
    """§3.4: on WSE-2 an async op runs on the microthread of its output queue, or of its input queue
    when it has none; joins sends and receives at once, so their queue IDs must differ."""
    prog, _ = joins()
    text = _pe(emit_csl(prog, [csl_target(WSE2)]).files, "join")
    iq = {int(v) for v in re.findall(r"@get_input_queue\((\d+)\)", text)}
    oq = {int(v) for v in re.findall(r"@get_output_queue\((\d+)\)", text)}
    assert iq and oq and not iq & oq


def test_loops_over_run_time_slices_mutate_a_comptime_dsd():
    prog, _ = loop_offsets()
    text = _pe(emit_csl(prog).files, "loops")
    assert "while (i < i_n1) : (i += 1) {" in text
    assert "@increment_dsd_offset(d_d2, @as(i16, @as(i32, i) * c), f32)" in text
    assert re.search(r"const d_d2 = @get_dsd\(mem1d_dsd, \.\{ \.tensor_access = \|i\|\{c\} -> d\[i\] \}\);", text)
    assert "switch (wl_x % 2) {" in text and "wl_x = @as(i32, layout_mod.get_x_coord());" in text


def test_every_function_is_exported_by_every_pe_program():
    prog, _ = data_tasks(width=4, height=2)
    files = emit_csl(prog).files
    assert set(files) == {"layout.csl", "pe_source.csl", "pe_wavelets.csl"}
    for name in ("pe_source.csl", "pe_wavelets.csl"):
        assert "@export_symbol(main);" in files[name]
        assert '@export_symbol(time_stamps_ptr, "time_stamps");' in files[name]
    assert '@export_name("main", fn()void);' in files["layout.csl"]


def test_idle_pes_get_a_program_that_finishes_every_launch():
    prog, _ = EXAMPLES["broadcast_row"](width=5, height=2)
    files = emit_csl(prog).files
    idle = files["pe_idle.csl"]
    assert "fn main() void {" in idle and "sys_mod.unblock_cmd_stream();" in idle
    assert '"pe_idle.csl"' in files["layout.csl"]


def test_mesh_too_large_for_a_target_is_refused():
    prog = MeshProgram(755, 3, WSE3, name="wide")
    b = Body("b")
    b.function("main", [])
    prog.place(b, x=0, y=0)
    with pytest.raises(InputError, match="wse2"):
        emit_csl(prog, [csl_target(WSE2)])
    assert [t.arch for t in emit_csl(prog).targets] == ["wse3"]


def test_shift_east_text_reads_as_csl_for_both_targets():
    """A regression pin of one small file's key lines (labelled as such): the fabric op with its
    per-target options, the queues and the route literals."""
    prog, _ = shift_east(width=5, height=3)
    files = emit_csl(prog).files
    pe = files["pe_shift.csl"]
    assert "@fmovs(fout2, a_d1);" in pe
    assert 'const iq_cr = @get_input_queue((if (@is_arch("wse2")) 7 else 2));  // colour cr' in pe
    lay = files["layout.csl"]
    # masks that vary over the PEs print through the table of every port mask, once
    assert "@set_color_config(x, y, @get_color(3), .{ .routes = .{ .rx = route_ports(route0_rx), " \
           ".tx = route_ports(route0_tx) } });" in lay
    assert "  if (mask == 20) { return .{ EAST, RAMP }; }" in lay and lay.count("fn route_ports(") == 1
    assert "@set_rectangle(width, height);" in lay and "const W: i32 = @as(i32, width);" in lay
    assert re.search(r"\.cs = @get_color\(3 \+ _v\d+\)", lay)
