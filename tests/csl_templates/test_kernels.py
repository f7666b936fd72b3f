"""The kernel matrix of the CSL backend: every ``meshgemm`` kernel emits a bundle whose host plan cuts
the operands exactly as the kernel's builder does, whose ``run.py`` passes against the stub with the
cycles ``waferllm kernel --simulate`` reports, whose layout reads back to the program, which the
checker accepts, and whose CSL is the same at two mesh sizes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from meshgemm.run import run_kernel
from plmr.hardware import WSE2, get_spec

from csl_templates.bundle import render_bundle
from csl_templates.emit import emit_csl
from csl_templates.host_plan import make_inputs, pack, resolve
from csl_templates.kernel_bundle import emit_kernel_bundle
from csl_templates.kernel_hosts import kernel_host_plan

EMITTED = ["meshgemm", "cannon", "gemmt", "summa", "meshgemv", "gemv-pipeline", "gemv-ring", "meshgemm-bsp",
           "cannon-bsp", "summa-bsp", "gemv-pipeline-bsp"]
PLANNED = EMITTED


def request(name: str, mesh, dims=(10, 9, 7), dtype="fp32", functional=True) -> KernelRequest:
    m, k, n = dims
    return KernelRequest(name, tuple(mesh), 1 if "gemv" in name else m, k, n, dtype=dtype, functional=functional)


@pytest.mark.parametrize("mesh, dims", [((3, 4), (10, 9, 7)), ((5, 3), (7, 11, 13)), ((1, 4), (6, 8, 5)),
                                        ((4, 1), (9, 6, 8))], ids=["3x4", "5x3", "1x4", "4x1"])
@pytest.mark.parametrize("name", PLANNED)
def test_host_plans_cut_operands_exactly_as_the_builders(name, mesh, dims):
    """Packing the builder's own inputs with the plan gives the builder's per-PE buffers (its
    ``set_data``), element for element, and the plan draws the same inputs from the seed."""
    b = build_kernel(request(name, mesh, dims, "fp16"), WSE2)
    plan = kernel_host_plan(b)
    prog = b.program
    drawn = make_inputs(plan)
    for t, v in b.inputs.items():
        np.testing.assert_array_equal(drawn[t], v)
    copies_in, _ = resolve(plan, prog)
    covered = set()
    for r in copies_in:
        block = pack(r, drawn[r.copy.tensor], prog.layout_params)
        for yy in range(r.h):
            for xx in range(r.w):
                pe = (r.y0 + yy) * prog.width + r.x0 + xx
                want = prog._init[(pe, r.copy.buffer)]
                np.testing.assert_array_equal(block[yy, xx].astype(np.float32), want[:r.elems])
                assert not want[r.elems:].any()
                covered.add((pe, r.copy.buffer))
    assert covered >= set(prog._init)


CASES = [("meshgemm", (3, 4), (10, 9, 7), "fp32"), ("meshgemm", (5, 5), (13, 11, 9), "fp16"),
         ("cannon", (3, 4), (10, 9, 7), "fp16"), ("gemmt", (4, 3), (9, 10, 11), "fp32"),
         ("gemmt", (3, 3), (7, 9, 5), "fp16"), ("meshgemv", (5, 3), (1, 17, 9), "fp32"),
         ("gemv-pipeline", (3, 4), (1, 10, 7), "fp16"), ("gemv-ring", (4, 3), (1, 11, 9), "fp32"),
         ("meshgemm-bsp", (3, 2), (5, 4, 6), "fp32"), ("cannon-bsp", (3, 3), (7, 8, 9), "fp16"),
         ("gemv-pipeline-bsp", (3, 4), (1, 10, 7), "fp32"), ("summa", (3, 4), (10, 9, 7), "fp32"),
         ("summa", (5, 3), (7, 11, 13), "fp16"), ("summa", (1, 4), (6, 8, 5), "fp32"),
         ("summa-bsp", (3, 3), (7, 8, 9), "fp16"), ("summa-bsp", (4, 1), (9, 6, 8), "fp32")]


@pytest.mark.parametrize("name, mesh, dims, dtype", CASES,
                         ids=[f"{c[0]}-{c[1][0]}x{c[1][1]}-{c[3]}" for c in CASES])
def test_kernel_run_py_passes_against_the_stub_with_the_simulated_cycles(tmp_path, run_bundle, name, mesh, dims,
                                                                         dtype):
    build = build_kernel(request(name, mesh, dims, dtype), WSE2)
    emit_kernel_bundle(build, "wse2", tmp_path / "b")
    code, out = run_bundle(tmp_path / "b", "--name", "out")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "PASS"
    cycles = [int(c) for c in re.findall(r"launch main: cycles (\d+)", out)]
    assert cycles == [run_kernel(build, WSE2, "functional").simulated_cycles]  # `waferllm kernel --simulate`


def _size_free(text: str) -> str:
    """``text`` with every number replaced by one mark: what is left does not name a size."""
    return re.sub(r"\d+", "#", text)


def kernel_bundle_files(name: str, side: int, hardware: str, again: bool = False) -> dict[str, str]:
    """The bundle of kernel ``name`` on a side x side mesh (GEMMs M = K = N = 2·side, GEMVs K = N = 2·side:
    equal blocks on every PE), built for ``hardware``; ``again``: check that re-emission is byte-identical."""
    d = 2 * side
    b = build_kernel(request(name, (side, side), (d, d, d), "fp16", functional=False), get_spec(hardware))
    files = render_bundle(b.program, kernel_host_plan(b), None, kernel=name)[0]
    if again:
        assert render_bundle(b.program, kernel_host_plan(b), None, kernel=name)[0] == files
    return files


def assert_same_bundle_at_both_sizes(small: dict[str, str], large: dict[str, str]) -> None:
    """The issue's rule for a kernel's bundle at two mesh sizes: the same files, for both targets; the
    CSL sources byte-identical (the sizes reach them through --params only); the scripts, the
    manifest and the README identical but for their numbers (the sizes they must name; docs/CSL_CHECKER.md
    says why they name them rather than read them at run time)."""
    assert sorted(small) == sorted(large)
    assert {"commands_wse2.sh", "commands_wse3.sh", "run.py", "deploy.py", "manifest.json", "README.md",
            "src/layout.csl"} <= set(small)
    for f in small:
        if f.startswith("src/"):
            assert small[f] == large[f], f
        else:
            assert _size_free(small[f]) == _size_free(large[f]), f


@pytest.mark.parametrize("hardware", ["wse2", "wse3"])
@pytest.mark.parametrize("name", EMITTED)
def test_kernel_csl_is_the_same_at_two_mesh_sizes_and_re_emits_identically(name, hardware):
    assert_same_bundle_at_both_sizes(kernel_bundle_files(name, 8, hardware),
                                     kernel_bundle_files(name, 20, hardware, again=True))


@pytest.mark.slow
@pytest.mark.parametrize("hardware", ["wse2", "wse3"])
@pytest.mark.parametrize("name", EMITTED)
def test_kernel_csl_is_the_same_at_8_and_720(name, hardware):
    """The full-scale case: 8² and 720² (518,400 PEs), where MeshGEMV's level-1 K-tree chains have interior
    PEs that a small mesh lacks (which once changed its PE program's queues)."""
    assert_same_bundle_at_both_sizes(kernel_bundle_files(name, 8, hardware), kernel_bundle_files(name, 720, hardware))


GEMVS = ["meshgemv", "gemv-pipeline", "gemv-ring", "gemv-pipeline-bsp"]


@pytest.mark.parametrize("name", GEMVS)
def test_gemv_bundles_differ_between_mesh_sizes_by_their_copy_rectangles_only(name):
    """At 8² with K = N = 1024 every PE holds equal blocks: one copy rectangle per tensor. At 97² with
    K = N = 1000 the balanced blocks take two lengths along each axis, and memcpy moves one count per
    PE, so a copy takes up to four rectangles. Everything else is the same text but for digits: the
    bundles differ by less than 600 bytes (a rectangle is ~25
    bytes in run.py and ~25 in the manifest), where they differed by 3-5 KB when the layout printed the
    route cases and the sign proofs of each size and run.py repeated a copy per rectangle."""
    files, rects = {}, {}
    for side, kn in ((8, 1024), (97, 1000)):
        b = build_kernel(request(name, (side, side), (1, kn, kn), "fp16", functional=False), WSE2)
        files[side], _, bundle = render_bundle(b.program, kernel_host_plan(b), None, kernel=name)
        rects[side] = max(len(c["rects"]) for c in bundle["copies_in"])
    assert (rects[8], rects[97]) == (1, 4)
    assert files[8]["src/layout.csl"] == files[97]["src/layout.csl"]
    total = {s: sum(len(t) for t in f.values()) for s, f in files.items()}
    assert abs(total[8] - total[97]) < 600


@pytest.mark.parametrize("name", EMITTED)
def test_kernel_layouts_read_back_to_the_program(tmp_path, view, name):
    layout_reader = pytest.importorskip("csl_templates.layout_reader")
    for mesh in ((3, 3), (4, 7)):
        b = build_kernel(request(name, mesh, (16, 16, 16), functional=False), WSE2)
        src = emit_csl(b.program, kernel=name)
        d = tmp_path / f"{mesh[0]}x{mesh[1]}"
        d.mkdir()
        for f, t in src.files.items():
            (d / f).write_text(t)
        lay = layout_reader.evaluate_layout(str(d / "layout.csl"), src.params, arch="wse2")
        place, routes = view(b.program)
        got = {xy: (f, {k: v for k, v in p.items() if k != "memcpy_params"}) for xy, (f, p) in lay.placements().items()}
        assert got == place
        assert lay.routes() == routes


@pytest.mark.parametrize("name", EMITTED)
def test_the_checker_finds_nothing_in_kernel_csl(tmp_path, name):
    checker = pytest.importorskip("csl_templates.checker")
    b = build_kernel(request(name, (5, 3), (16, 16, 16), functional=False), WSE2)
    src = emit_csl(b.program, kernel=name)
    for f, t in src.files.items():
        (tmp_path / f).write_text(t)
    for t in src.targets:
        report = checker.check_paths([str(tmp_path)], arch=t.arch, params=src.params)
        assert report.findings == [], [str(f) for f in report.findings]


def _fan_in(receives: int):
    """Two PEs: the west one sends a word on each of ``receives`` colours, the east one receives
    every one of them in one piece of code (so each needs its own input queue)."""
    from simulator import Body, MeshProgram, Recv, Send
    from simulator.instructions import Ref
    from simulator.expr import X, eq
    from simulator.program import Port
    from simulator.statements import If, Wait

    prog = MeshProgram(2, 1, WSE2, name="fan_in")
    colours = list(WSE2.routable_colors[:receives])
    b = Body("fan_in")
    b.buffer("a", "fp32", 1)
    b.buffer("r", "fp32", receives)
    sends = tuple(Send(c, "a") for c in colours)  # one after the other: one output queue
    recvs = tuple(Recv(c, Ref("r", i, 1), id=f"r{i}") for i, c in enumerate(colours))
    b.function("main", [If(eq(X, 0), sends,
                           recvs + (Wait(tuple(f"r{i}" for i in range(receives))),))])
    for c in colours:
        prog.set_route(0, 0, colour=c, rx={Port.RAMP}, tx={Port.EAST})
        prog.set_route(1, 0, colour=c, rx={Port.WEST}, tx={Port.RAMP})
    prog.place(b)
    return prog


def test_a_program_that_needs_more_input_queues_than_wse3_has_is_emitted_for_wse2_only():
    """Seven concurrent receives fit WSE-2's seven usable input queues (1-7), not WSE-3's six (2-7)."""
    src = emit_csl(_fan_in(7), kernel="fan_in")
    assert [t.arch for t in src.targets] == ["wse2"]
    assert "needing 7 input queues" in src.skipped["wse3"]
    assert [t.arch for t in emit_csl(_fan_in(6), kernel="fan_in").targets] == ["wse2", "wse3"]


@pytest.mark.parametrize("name", ["meshgemm-bsp", "cannon-bsp"])
@pytest.mark.parametrize("mesh", [(3, 3), (2, 5), (1, 4), (4, 1), (5, 7)], ids=["3x3", "2x5", "1x4", "4x1", "5x7"])
def test_bulk_synchronous_cannon_family_emits_for_both_targets(tmp_path, name, mesh):
    """The kernel's three ring receives and its barrier's (at most three on a PE: rows into the last
    column, then that column) fit WSE-3's six input queues; the bundle names both targets and checks
    clean on each."""
    checker = pytest.importorskip("csl_templates.checker")
    b = build_kernel(request(name, mesh, (12, 12, 12), functional=False), WSE2)
    bundle = emit_kernel_bundle(b, "wse2", tmp_path / "b")
    assert [t.arch for t in bundle.source.targets] == ["wse2", "wse3"]
    assert not bundle.manifest["skipped_targets"]
    assert (tmp_path / "b" / "commands_wse3.sh").exists()
    for t in bundle.source.targets:
        report = checker.check_paths([str(tmp_path / "b")], arch=t.arch, params=bundle.source.params)
        assert report.findings == [], [str(f) for f in report.findings]


WSE3_CASES = [("meshgemm", (3, 4), (10, 9, 7), "fp16"), ("summa", (5, 3), (7, 11, 13), "fp32"),
              ("gemmt", (3, 3), (7, 9, 5), "fp32"), ("meshgemv", (5, 3), (1, 17, 9), "fp16"),
              ("summa-bsp", (3, 4), (10, 9, 7), "fp32"), ("gemv-pipeline-bsp", (3, 3), (1, 10, 7), "fp16"),
              ("meshgemm-bsp", (3, 2), (5, 4, 6), "fp32"), ("cannon-bsp", (3, 3), (7, 8, 9), "fp16"),
              ("meshgemm-bsp", (4, 5), (9, 10, 11), "fp16"), ("cannon-bsp", (1, 4), (6, 8, 5), "fp32")]


@pytest.mark.parametrize("name, mesh, dims, dtype", WSE3_CASES,
                         ids=[f"{c[0]}-{c[1][0]}x{c[1][1]}-{c[3]}" for c in WSE3_CASES])
def test_kernel_run_py_on_wse3_passes_against_the_stub_with_the_simulated_cycles(tmp_path, run_bundle, name, mesh,
                                                                                 dims, dtype):
    """The same on a WSE-3 build: the stub simulates the WSE-3 spec the bundle names."""
    from plmr.hardware import WSE3

    build = build_kernel(request(name, mesh, dims, dtype), WSE3)
    emit_kernel_bundle(build, "wse3", tmp_path / "b")
    code, out = run_bundle(tmp_path / "b", "--name", "out")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "PASS"
    cycles = [int(c) for c in re.findall(r"launch main: cycles (\d+)", out)]
    assert cycles == [run_kernel(build, WSE3, "functional").simulated_cycles]
