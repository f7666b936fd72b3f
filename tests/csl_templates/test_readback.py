"""Reading the emitted CSL back with the project's CSL parser, checker and comptime evaluator:
placement, parameters and routes recovered from ``layout.csl`` equal the program's exactly, at several
sizes, and ``waferllm csl check`` finds nothing in any emitted bundle (both targets)."""

from __future__ import annotations

import pytest

layout_reader = pytest.importorskip("csl_templates.layout_reader", reason="the CSL reader is not merged yet")
checker = pytest.importorskip("csl_templates.checker", reason="the CSL checker is not merged yet")

from simulator import Body  # noqa: E402
from simulator.expr import X, eq, select  # noqa: E402
from simulator.program import MeshProgram, Port  # noqa: E402

from plmr.hardware import WSE2  # noqa: E402

from csl_templates.emit import emit_csl  # noqa: E402
from csl_templates.examples import EXAMPLES  # noqa: E402

SIZES = [(5, 3), (8, 8), (9, 4)]


def write(tmp_path, src) -> str:
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    for name, text in src.files.items():
        (d / name).write_text(text)
    return str(d)


def assert_reads_back(tmp_path, prog, program_view, arch="wse2"):
    src = emit_csl(prog)
    lay = layout_reader.evaluate_layout(write(tmp_path, src) + "/layout.csl", src.params, arch=arch)
    assert (lay.width, lay.height) == (prog.width, prog.height)
    place, routes = program_view(prog)
    got = {xy: (f, {k: v for k, v in p.items() if k != "memcpy_params"}) for xy, (f, p) in lay.placements().items()}
    assert got == place
    assert lay.routes() == routes


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_placement_parameters_and_routes_read_back_exactly(tmp_path, view, name, size):
    prog, _ = EXAMPLES[name](width=size[0], height=size[1])
    assert_reads_back(tmp_path, prog, view)


def test_a_route_rule_overridden_later_configures_each_pe_once(tmp_path, view):
    prog = MeshProgram(6, 2, WSE2, name="override")
    Wp = prog.param("W", 6)
    b = Body("b")
    b.param("last")
    b.buffer("a", "fp32", 3)
    b.function("main", [])
    prog.place(b, params={"last": eq(X, Wp - 1)})
    ramp, east, west = 1 << Port.RAMP, 1 << Port.EAST, 1 << Port.WEST
    prog.route_rule(None, None, 2, select(eq(X, 0), ramp, west), select(X < Wp - 1, east, ramp))
    prog.route_rule(range(2, 4), None, 2, west, ramp, replace=True)  # columns 2, 3 end the line here
    prog.route_rule(None, None, 3, select(eq(X, 0), ramp, west), select(eq(X, 0), east, ramp), when=X < 2)
    assert_reads_back(tmp_path, prog, view)
    src = emit_csl(prog)
    report = checker.check_paths([write(tmp_path, src)], arch="wse2", params=src.params)
    assert report.findings == [], [str(f) for f in report.findings]


@pytest.mark.parametrize("arch", ["wse2", "wse3"])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_checker_finds_nothing_in_emitted_csl(tmp_path, name, arch):
    for dtype in ("fp32", "fp16") if name != "data_tasks" else ("fp32",):
        prog, _ = EXAMPLES[name](width=7, height=3, dtype=dtype)
        src = emit_csl(prog)
        report = checker.check_paths([write(tmp_path, src)], arch=arch, params=src.params)
        assert report.findings == [], [str(f) for f in report.findings]


def line_patterns(width: int, height: int) -> MeshProgram:
    """Route rules of every routing pattern of meshgemm.line_rules (rings, a K-tree, a multicast,
    directed chains) on one mesh: deep expressions with floor divisions of negative values."""
    from meshgemm import line_rules as L
    from plmr.ktree import build_ktree
    from simulator.expr import Y

    prog = MeshProgram(width, height, WSE2, name="patterns")
    Wp, Hp = prog.param("PX", width), prog.param("PY", height)
    tree = build_ktree(width, 2, None)
    G = [prog.param(f"G{k}", g) for k, g in enumerate(tree.group_counts)]
    root = prog.param("R", height // 2)
    b = Body("idle_router")
    b.function("main", [])
    prog.place(b)
    L.route_slots(prog, "x", L.RingExprs(width, Wp, "interleaved").roles(X), lambda s: 1 + s)
    L.route_slots(prog, "y", L.RingExprs(height, Hp, "plain").roles(Y, reverse=True), lambda s: 4 + s)
    for lv in L.ktree_levels(tree.group_counts, Wp, G):
        L.route_slots(prog, "x", L.ktree_roles(lv, X), lambda s, k=lv.k: 8 + 2 * k + s)
    rx, tx = L.multicast_masks("y", Y, Hp, root)
    prog.route_rule(None, None, 13, rx, tx)
    L.route_slots(prog, "y", L.directed_chain_roles(Y, Hp), lambda s: 14 + s)
    return prog


@pytest.mark.parametrize("size", [(3, 3), (7, 5), (12, 9), (20, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_routing_patterns_read_back_exactly(tmp_path, view, size):
    assert_reads_back(tmp_path, line_patterns(*size), view)
