"""The static checker: clean programs are clean on both targets; each mutation of a clean program is
reported by its rule at the exact line and column of the mutated text (located here by searching the
mutated source, independently of the checker)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from csl_templates.checker import check_paths

SAMPLES = Path(__file__).parent / "samples"
CHAIN = {"W": 5, "H": 3, "n": 8}
SKELETON = {"W": 4, "H": 2, "K": 8}


@pytest.mark.parametrize("arch", ["wse2", "wse3"])
@pytest.mark.parametrize("layout, params", [
    ("chain_layout.csl", CHAIN), ("skeleton_layout.csl", SKELETON), ("ring_layout.csl", {"W": 7, "H": 2}),
])
def test_clean_programs_have_no_findings(arch, layout, params):
    report = check_paths([SAMPLES / layout], arch=arch, params=params)
    assert report.findings == [] and report.layouts


def test_progress_names_each_stage_and_counts_every_parameter_set():
    said = []
    report = check_paths([SAMPLES / "chain_layout.csl"], params=CHAIN, progress=said.append)
    assert report.findings == check_paths([SAMPLES / "chain_layout.csl"], params=CHAIN).findings == []
    groups = len(list(report.layouts[0].pe_members()))
    assert said[0] == "parsing chain_layout.csl (1/1 files)" and said[1] == "evaluating chain_layout.csl"
    assert groups > 1 and said[2:] == [f"chain_layout.csl: the PE programs it places, parameter set {i}/{groups}"
                                       for i in range(1, groups + 1)]


@pytest.mark.parametrize("arch", ["wse2", "wse3"])
def test_samples_directory_findings_are_the_known_ones(arch):
    """Vendor-style samples: only the genuine issues (SDK 1.x fabin colour; 1.x fabout colour on WSE-3;
    the §6.2 switch example routes NORTH into an unconfigured PE)."""
    params = {"W": 5, "H": 3, "P": 4, "Mt": 2, "Nt": 3, "n": 8, "K": 8, "width": 4}
    got = {(Path(f.path).name, f.rule, f.severity) for f in check_paths([SAMPLES], arch=arch, params=params).findings}
    want = {("legacy_pe.csl", "dsd.fabin_color", "W"), ("switch_fragment.csl", "routes.unmatched_tx", "W")}
    if arch == "wse3":
        want.add(("legacy_pe.csl", "dsd.fabout_color", "E"))
    assert got == want


def test_params_no_checked_file_declares_are_a_warning():
    """A ``--params`` name that is not a param of the layout (a typo, or another layout's names) binds
    nothing: one warning names it and the layout's params; the params it does declare still bind."""
    report = check_paths([SAMPLES / "chain_layout.csl"], params={**CHAIN, "Wdith": 5, "K": 2})
    assert [(f.rule, f.severity, Path(f.path).name) for f in report.findings] == \
        [("params.unknown", "W", "chain_layout.csl")]
    assert report.findings[0].message.startswith("--params K, Wdith: no checked file declares them (params declared: ")
    assert report.layouts  # evaluated with the known params


def _mutate(tmp_path, file, old, new):
    for p in SAMPLES.glob("*.csl"):
        shutil.copy(p, tmp_path / p.name)
    target = tmp_path / file
    text = target.read_text()
    assert text.count(old) >= 1, old
    text = text.replace(old, new, 1)
    target.write_text(text)
    return text


def _where(text, marker, offset=0):
    """1-based line and column of ``marker`` (+ offset characters) in ``text``."""
    pos = text.index(marker) + offset
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


MUTATIONS = [
    # id, file, old, new, marker in new text (+offset), rule, severity, archs, layout, params
    ("missing-semicolon", "pe.csl", "var n_recv: u16 = 0;", "var n_recv: u16 = 0",
     ("var n_recv: u16 = 0", len("var n_recv: u16 = 0")), "syntax", "E", ("wse2", "wse3"), "skeleton_layout.csl", SKELETON),
    ("undeclared-colour", "chain_layout.csl", "@set_color_config(px, py, send_c,", "@set_color_config(px, py, send_x,",
     ("send_x", 0), "names.undeclared", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("reserved-colour", "chain_layout.csl", "@get_color(1)", "@get_color(21)",
     ("@get_color(21)", 0), "colour.reserved", "W", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("colour-out-of-range", "chain_layout.csl", "@get_color(2)", "@get_color(24)",
     ("@get_color(24)", 0), "colour.range", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("local-task-id-below-wse3-range", "chain_pe.csl", "@get_local_task_id(10)", "@get_local_task_id(5)",
     ("@get_local_task_id(5)", 0), "task.local_range", "E", ("wse3",), "chain_layout.csl", CHAIN),
    ("local-task-id-out-of-range", "chain_pe.csl", "@get_local_task_id(10)", "@get_local_task_id(31)",
     ("@get_local_task_id(31)", 0), "task.local_range", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("reserved-task-id", "chain_pe.csl", "@get_local_task_id(10)", "@get_local_task_id(27)",
     ("@get_local_task_id(27)", 0), "task.reserved", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("route-without-receive", "chain_layout.csl", "if (px > 0)", "if (px > 1)",
     ("@set_color_config(px, py, send_c", 0), "routes.unmatched_tx", "W", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("oversized-buffer", "chain_pe.csl", "var part = @zeros([n]f32);", "var part = @zeros([12000]f32);",
     ("var part", 0), "memory.sram", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("fabout-without-colour-on-wse2", "pe.csl", ".{ .extent = K, .output_queue = oq, .fabric_color = c_east }",
     ".{ .extent = K, .output_queue = oq }", ("@get_dsd(fabout_dsd", 0), "dsd.fabout_color", "E", ("wse2",),
     "skeleton_layout.csl", SKELETON),
    ("ut-id-on-wse2", "chain_pe.csl", "@fmovs(out_dsd, part_dsd, .{ .async = true, .activate = done_id });",
     "@fmovs(out_dsd, part_dsd, .{ .async = true, .activate = done_id, .ut_id = @get_ut_id(3) });",
     ("@fmovs(out_dsd", 0), "op.arch_option", "E", ("wse2",), "chain_layout.csl", CHAIN),
    ("priority-on-wse3", "chain_pe.csl", "@fmovs(out_dsd, part_dsd, .{ .async = true, .activate = done_id });",
     "@fmovs(out_dsd, part_dsd, .{ .async = true, .activate = done_id, .priority = .{ .high = true } });",
     ("@fmovs(out_dsd", 0), "op.arch_option", "E", ("wse3",), "chain_layout.csl", CHAIN),
    ("initialise-queue-1-on-wse3", "pe.csl", "const iq = @get_input_queue(2);", "const iq = @get_input_queue(1);",
     ("@initialize_queue(iq", 0), "queue.init_range", "E", ("wse3",), "skeleton_layout.csl", SKELETON),
    ("task-bound-twice", "pe.csl", "  @bind_local_task(done, done_id);\n",
     "  @bind_local_task(done, done_id);\n  @bind_local_task(compute, done_id);\n",
     ("@bind_local_task(compute", 0), "task.bound_twice", "E", ("wse2", "wse3"), "skeleton_layout.csl", SKELETON),
    ("bind-outside-comptime", "pe.csl", "  }                                        // receivers finish in recv()",
     "  }\n  @bind_local_task(done, done_id);", ("@bind_local_task(done, done_id);\n}", 0),
     "placement.comptime_only", "E", ("wse2", "wse3"), "skeleton_layout.csl", SKELETON),
    ("task-called", "pe.csl", "  n_recv += 1;\n", "  n_recv += 1;\n  done();\n", ("done();", 0),
     "tasks.called", "E", ("wse2", "wse3"), "skeleton_layout.csl", SKELETON),
    ("tile-code-twice", "chain_layout.csl", '  @export_name("part"',
     '  @set_tile_code(0, 0, "chain_pe.csl", .{});\n  @export_name("part"', ('@set_tile_code(0, 0', 0),
     "layout.tile_code_twice", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("colour-configured-twice", "chain_layout.csl", '  @export_name("part"',
     '  @set_color_config(0, 0, ca, .{ .routes = .{ .rx = .{RAMP}, .tx = .{EAST} } });\n  @export_name("part"',
     ("@set_color_config(0, 0, ca", 0), "routes.config_twice", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("pe-param-unbound", "chain_layout.csl", ".n = n,", "", ("param n: u16", 0, "chain_pe.csl"), "params.unbound", "E",
     ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("async-ops-share-a-queue", "chain_pe.csl", "    @fadds(out_dsd, in_dsd, part_dsd, .{ .async = true, .activate = done_id });\n",
     "    @fadds(out_dsd, in_dsd, part_dsd, .{ .async = true, .activate = done_id });\n"
     "    @fmovs(out_dsd, part_dsd, .{ .async = true });\n", ("@fmovs(out_dsd, part_dsd, .{ .async = true });", 0),
     "queue.shared_async", "W", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("export-name-mismatch", "chain_layout.csl", '@export_name("part"', '@export_name("parts"',
     ('@export_name("parts"', 0), "export.unmatched", "E", ("wse2", "wse3"), "chain_layout.csl", CHAIN),
    ("switch-position-rx-and-tx-on-wse2", "switch_fragment.csl", ".pos1 = .{ .tx = WEST }",
     ".pos1 = .{ .rx = WEST, .tx = EAST }", ("@set_color_config(1, 1", 0), "switch.rx_and_tx", "E", ("wse2",),
     "switch_fragment.csl", {}),
    ("switch-on-a-colour-without-switches-on-wse3", "switch_fragment.csl", "@get_color(4)", "@get_color(10)",
     ("@set_color_config(1, 1", 0), "switch.colour", "E", ("wse3",), "switch_fragment.csl", {}),
]


@pytest.mark.parametrize("case", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_is_reported_at_its_location(tmp_path, case):
    _id, file, old, new, where, rule, sev, archs, layout, params = case
    text = _mutate(tmp_path, file, old, new)
    if len(where) == 3:  # the finding is in another file than the mutated one
        file = where[2]
        text = (tmp_path / file).read_text()
    line, col = _where(text, where[0], where[1])
    for arch in ("wse2", "wse3"):
        report = check_paths([tmp_path / layout], arch=arch, params=params)
        hits = [f for f in report.findings if f.rule == rule and Path(f.path).name == file]
        if arch in archs:
            assert [(f.line, f.col, f.severity) for f in hits][:1] == [(line, col, sev)], \
                (arch, [str(f) for f in report.findings])
        else:
            assert not hits, (arch, [str(f) for f in hits])


def test_unbound_layout_param_is_reported_and_the_layout_not_evaluated():
    report = check_paths([SAMPLES / "chain_layout.csl"], params={"W": 5, "H": 3})
    where = _where((SAMPLES / "chain_layout.csl").read_text(), "param n: u16")
    assert [(f.rule, f.line, f.col) for f in report.findings] == [("params.unbound", *where)]
    assert not report.layouts


def test_local_colour_configs_join_the_route_rules(tmp_path):
    """fifo_pe.csl routes with @set_local_color_config; making PEs 1.. receive from the NORTH leaves
    every EAST transmission unmatched: PE 0's (first-PE config) and the middle PEs' relays."""
    text = _mutate(tmp_path, "fifo_pe.csl", ".rx = .{WEST}, .tx = if", ".rx = .{NORTH}, .tx = if")
    report = check_paths([tmp_path / "fifo_layout.csl"], params={"width": 4})
    hits = [f for f in report.findings if f.rule == "routes.unmatched_tx"]
    first = _where(text, "@set_local_color_config(c_data, .{ .routes = .{ .rx = .{RAMP}")
    middle = _where(text, "@set_local_color_config(c_data, .{ .routes = .{ .rx = .{NORTH}")
    assert sorted((Path(f.path).name, f.line, f.col) for f in hits) == sorted(
        [("fifo_pe.csl", *first), ("fifo_pe.csl", *middle)])
    assert any("PE (0, 0) sends colour 7 EAST" in f.message for f in hits)
    # the readback says it holds PE programs' routes (the layout read on its own holds none)
    from csl_templates.layout_reader import evaluate_layout
    assert report.layouts[0].local_configs > 0
    assert evaluate_layout(tmp_path / "fifo_layout.csl", {"width": 4}).local_configs == 0


def test_syntax_only_skips_semantic_rules(tmp_path):
    _mutate(tmp_path, "chain_layout.csl", "@get_color(2)", "@get_color(24)")
    assert check_paths([tmp_path / "chain_layout.csl"], params=CHAIN, syntax_only=True).findings == []
    assert check_paths([tmp_path / "chain_layout.csl"], params=CHAIN).errors == 1


def test_report_json_has_a_schema_and_integer_positions():
    d = check_paths([SAMPLES / "legacy_layout.csl"], arch="wse3", params={"P": 4, "Mt": 2, "Nt": 3}).to_dict()
    assert d["schema"] == 2 and d["errors"] == 1 and d["warnings"] == 1
    assert all(isinstance(f["line"], int) and isinstance(f["col"], int) for f in d["findings"])


def test_damaged_programs_give_findings_not_crashes(tmp_path):
    """Delete one line at a time from the chain and fifo programs (every third line): the checker
    reports syntax or rule findings and never raises."""
    names = ["chain_layout.csl", "chain_pe.csl", "fifo_layout.csl", "fifo_pe.csl"]
    params = {"W": 4, "H": 2, "n": 4, "width": 4}
    runs = 0
    for name in names:
        lines = (SAMPLES / name).read_text().splitlines()
        for k in range(1, len(lines), 3):
            for n in names:
                (tmp_path / n).write_text((SAMPLES / n).read_text())
            (tmp_path / name).write_text("\n".join(lines[:k] + lines[k + 1:]) + "\n")
            arch = ("wse2", "wse3")[k % 2]
            report = check_paths([tmp_path / "chain_layout.csl", tmp_path / "fifo_layout.csl"], arch=arch,
                                 params=params)
            assert all(f.line >= 0 and f.severity in "EW" for f in report.findings)
            runs += 1
    assert runs > 20


def test_a_fifo_fill_ends_when_its_synchronous_drain_returns(tmp_path):
    """Two relays through a FIFO, one after the other on the same microthread and queues (as a gathered
    chunk from below, then one from above): each async fill is complete once the synchronous drain of
    its FIFO has returned, so the second does not share anything with the first; without that drain it
    does, and is reported where the second fill is issued."""
    relays = ("    @fmovs(fifo_p, in_dsd, .{ .async = true, .ut_id = @get_ut_id(3) });\n"
              "    @fmovs(out_dsd, fifo_p);\n"
              "    @fmovs(fifo_q, in_dsd, .{ .async = true, .ut_id = @get_ut_id(3) });\n"
              "    @fmovs(out_dsd, fifo_q);\n")
    old = "    @fadds(out_dsd, in_dsd, part_dsd, .{ .async = true, .activate = done_id });\n"
    fifos = ("const done_id: local_task_id = @get_local_task_id(10);\n"
             "var other = @zeros([n]f32);\nconst fifo_p = @allocate_fifo(part);\nconst fifo_q = @allocate_fifo(other);\n")
    for drained in (True, False):
        body = relays if drained else relays.replace("    @fmovs(out_dsd, fifo_p);\n", "", 1)
        text = _mutate(tmp_path, "chain_pe.csl", old, body)
        text = text.replace("const done_id: local_task_id = @get_local_task_id(10);\n", fifos, 1)
        (tmp_path / "chain_pe.csl").write_text(text)
        report = check_paths([tmp_path / "chain_layout.csl"], arch="wse3", params=CHAIN)
        hits = [(f.line, f.col) for f in report.findings if f.rule == "queue.shared_async"]
        if drained:
            assert hits == [], [str(f) for f in report.findings]
        else:
            assert hits and hits[0] == _where(text, "@fmovs(fifo_q", 0), [str(f) for f in report.findings]


# ---------------------------------------------------------------- parameter sets against PE by PE

_SETS_LAYOUT = """param W: i16; param H: i16;
const memcpy = @import_module("<memcpy/get_params>", .{ .width = W, .height = H });
layout {
  @set_rectangle(W, H);
  for (@range(i16, W)) |x| {
    for (@range(i16, H)) |y| {
      @set_tile_code(x, y, "pe.csl", .{ .memcpy_params = memcpy.get_params(x),
                     .n = if (x == BIG_X) 12000 else 16, .tid = if (y == TID_Y) 31 else 5,
                     .c = if (x < C_X) 22 else 3 });
      if (x == 0) { @set_color_config(x, y, @get_color(5), .{ .routes = .{ .rx = .{RAMP}, .tx = .{EAST} } }); }
      if (x >= 1 and x <= RAMP_X) {
        @set_color_config(x, y, @get_color(5), .{ .routes = .{ .rx = .{WEST}, .tx = .{RAMP} } });
      }
    }
  }
  @export_name("buf", [*]f32, true);
}
"""

_SETS_PE = """param memcpy_params; param n: i16; param tid: u16; param c: u16;
const sys_mod = @import_module("<memcpy/memcpy>", memcpy_params);
var buf = @zeros([n]f32);
var buf_ptr: [*]f32 = &buf;
const t_id: local_task_id = @get_local_task_id(tid);
const col: color = @get_color(c);
task t() void { buf[0] = 1.0; }
comptime {
  @bind_local_task(t, t_id);
  @export_symbol(buf_ptr, "buf");
}
"""


@pytest.mark.parametrize("W, H, big_x, tid_y, c_x, ramp_x", [
    (4, 3, 3, 1, 1, 2),    # each parameter changes a finding on some PEs
    (5, 2, 9, 7, 0, 4),    # no PE gets the big buffer, task ID 31 or colour 22
    (3, 4, 0, 0, 3, 1),    # every PE gets colour 22; column 0 the big buffer, row 0 task ID 31
    (6, 1, 2, 0, 2, 0),    # every PE gets task ID 31, none is routed colour 5 to its RAMP
])
def test_parameter_sets_give_what_checking_each_pe_alone_gives(tmp_path, W, H, big_x, tid_y, c_x, ramp_x):
    """The layout path checks each PE program once per distinct parameter struct; checking every PE's
    program on its own with that PE's values (the standalone path) finds the same findings in it.
    task.colour_slot, a layout x PE rule, names the first PE (x-major) of each parameter set whose
    RAMP gets colour 5 and whose task is bound on ID 5: worked out here from the construction."""
    from csl_templates.comptime_values import to_python

    layout = (_SETS_LAYOUT.replace("BIG_X", str(big_x)).replace("TID_Y", str(tid_y))
              .replace("C_X", str(c_x)).replace("RAMP_X", str(ramp_x)))
    (tmp_path / "layout.csl").write_text(layout)
    (tmp_path / "pe.csl").write_text(_SETS_PE)
    report = check_paths([tmp_path], params={"W": W, "H": H})
    got = {f for f in report.findings if Path(f.path).name == "pe.csl" and f.rule != "task.colour_slot"}
    lay = report.layouts[0]
    alone = set()
    for x in range(W):
        for y in range(H):
            fname, values = lay.placement(x, y)
            assert fname == "pe.csl"
            alone.update(check_paths([tmp_path / "pe.csl"], params=values).findings)
    assert got == alone
    want_pes = {}
    for x in range(W):  # x-major, as the layout's [x, y] grids are laid out
        for y in range(H):
            values = to_python(lay.params[int(lay.tile_params[x, y])])
            if values["tid"] == 5 and 1 <= x <= ramp_x:
                want_pes.setdefault(repr(sorted(values.items())), (x, y))
    slots = sorted(f.message for f in report.findings if f.rule == "task.colour_slot")
    assert slots == sorted(f"local task 't' is bound on ID 5, and colour 5 reaches the RAMP of PE ({x}, {y}): "
                           f"they share a task-table slot on wse2" for x, y in want_pes.values())
    rules = {f.rule for f in report.findings}
    assert ("memory.sram" in rules) == (big_x < W) and ("task.local_range" in rules) == (tid_y < H)
    assert ("colour.reserved" in rules) == (c_x > 0)


def test_pe_members_are_the_groups_masks():
    """``pe_members``' flat indices are, group by group and in the same order, the PEs of the masks the
    groups were defined by: one per distinct (file, params) key over the placed PEs."""
    import numpy as np

    report = check_paths([SAMPLES / "chain_layout.csl"], params=CHAIN)
    lay = report.layouts[0]
    key = lay.tile_file.astype(np.int64) * (len(lay.params) + 1) + lay.tile_params
    placed = lay.tile_file >= 0
    members = list(lay.pe_members())
    assert len(members) == len(np.unique(key[placed])) > 1
    for (f, params, pes), k in zip(members, np.unique(key[placed]).tolist()):
        assert np.array_equal(lay.mask_of(pes), key == k) and list(pes) == sorted(pes)
        assert (f, params) == (lay.files[k // (len(lay.params) + 1)], lay.params[k % (len(lay.params) + 1)])
