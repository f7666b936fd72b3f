"""Every generated ``run.py``, unmodified, against the stub SDK runtime: it passes its own numpy check
and reports, per launch, the cycles the simulator measures for the same program run directly. A
wrong host plan makes it fail; the stub rejects what the SDK rejects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.run import Device

import csl_templates
from csl_templates.bundle import emit_bundle
from csl_templates.examples import EXAMPLES, shift_east
from csl_templates.host_plan import HostCopy, make_inputs, pack, resolve
from csl_templates.stub_runtime import MemcpyDataType, MemcpyOrder, SdkRuntime, StubError

STUB = str(Path(csl_templates.__file__).parent / "stub_sdk")
CASES = [(name, "fp32", {}) for name in EXAMPLES] + [
    (name, "fp16", {}) for name in ("chain_reduce", "joins", "loop_offsets", "local_gemm", "ring_slots")
] + [("relay_row", "fp16", {"packed": True, "n": 7}),
     ("chain_reduce", "fp32", {"width": 7, "height": 5, "n": 3}),
     ("local_gemm", "fp16", {"width": 3, "height": 1, "m": 5, "k": 3, "n": 2})]


def bundle_of(tmp_path: Path, name: str, dtype: str, kw: dict, plan_edit=None) -> Path:
    prog, plan = EXAMPLES[name](dtype=dtype, **kw)
    if plan_edit:
        plan = plan_edit(plan)
    out = tmp_path / f"{name}_{dtype}"
    emit_bundle(prog, out, plan, stub={"builder": "csl_templates.examples:build_example",
                                       "kwargs": {"name": name, "dtype": dtype, **kw}}, kernel=name)
    return out


def run_py(bundle: Path) -> subprocess.CompletedProcess:
    """A new interpreter with the stub on PYTHONPATH: exactly how CI and `waferllm deploy --stub` run it."""
    env = dict(os.environ, PYTHONPATH=STUB)
    return subprocess.run([sys.executable, "run.py", "--name", "out", "--results", "results.npz"], cwd=bundle,
                          env=env, capture_output=True, text=True, timeout=300)


def simulated_cycles(name: str, dtype: str, kw: dict) -> list[int]:
    """The cycles of each launch of the plan, simulated directly (as `waferllm kernel --simulate`)."""
    prog, plan = EXAMPLES[name](dtype=dtype, **kw)
    dev = Device(prog, mode="functional")
    return [dev.launch(la.function, **dict(la.args)).total_cycles for la in plan.launches]


@pytest.mark.parametrize("name, dtype, kw", CASES, ids=[f"{n}-{d}-{'x'.join(map(str, k.values())) or 'default'}"
                                                        for n, d, k in CASES])
def test_generated_run_py_passes_against_the_stub_with_the_simulators_cycles(tmp_path, run_bundle, name, dtype, kw):
    if name == "data_tasks" and dtype != "fp32":
        pytest.skip("32-bit wavelets only")
    bundle = bundle_of(tmp_path, name, dtype, kw)
    code, out = run_bundle(bundle, "--name", "out", "--results", "results.npz")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "PASS"
    cycles = [int(c) for c in re.findall(r"launch \w+: cycles (\d+)", out)]
    assert cycles == simulated_cycles(name, dtype, kw)
    res = np.load(bundle / "results.npz")
    assert res["cycles"].tolist() == cycles


def test_outputs_equal_an_independent_numpy_model(tmp_path):
    """chain_reduce's row sums recomputed here from the same inputs (run.py in a new interpreter)."""
    bundle = bundle_of(tmp_path, "chain_reduce", "fp32", {"width": 6, "height": 4, "n": 3})
    proc = run_py(bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, plan = EXAMPLES["chain_reduce"](width=6, height=4, n=3)
    p = make_inputs(plan)["P"].astype(np.float64)
    got = np.load(bundle / "results.npz")["S"]
    np.testing.assert_allclose(got, p.sum(axis=1), rtol=1e-6)


def test_a_wrong_host_plan_fails_the_numpy_check(tmp_path, run_bundle):
    """Reading each PE's elements back rotated by one (a packing mistake) must fail run.py's check."""
    from csl_templates.host_plan import E

    def rotated(plan):
        c = plan.copies_out[0]
        n = 4
        plan.copies_out = [HostCopy(c.tensor, c.buffer, c.index - E + (E + 1) % n, c.valid, c.x0, c.y0, c.w, c.h)]
        return plan

    bundle = bundle_of(tmp_path, "shift_east", "fp32", {}, plan_edit=rotated)
    code, out = run_bundle(bundle)
    assert code == 1 and out.strip().splitlines()[-1] == "FAIL"
    assert re.search(r"R: max abs error [0-9.e+-]+, relative [0-9.e+-]+ \(tolerance 0\): FAIL", out)


def _loaded(tmp_path, name="shift_east", **kw):
    bundle = bundle_of(tmp_path, name, "fp32", kw)
    rt = SdkRuntime(str(bundle / "out"))
    rt.load()
    rt.run()
    return rt


def test_stub_memcpy_orders_and_widths(tmp_path):
    rt = _loaded(tmp_path, width=3, height=2, n=4)
    data = np.arange(2 * 3 * 4, dtype=np.float32)
    rt.memcpy_h2d(rt.get_id("a"), data, 0, 0, 3, 2, 4, streaming=False, order=MemcpyOrder.COL_MAJOR,
                  data_type=MemcpyDataType.MEMCPY_32BIT, nonblock=False)
    cube = data.reshape((2, 3, 4), order="F")  # (h, w, n) in Fortran order: h fastest
    for y in range(2):
        for x in range(3):
            np.testing.assert_array_equal(rt.device.read(x, y, "a"), cube[y, x])
    back = np.zeros(2 * 3 * 4, dtype=np.float32)
    rt.memcpy_d2h(back, rt.get_id("a"), 0, 0, 3, 2, 4, streaming=False, order=MemcpyOrder.ROW_MAJOR,
                  data_type=MemcpyDataType.MEMCPY_32BIT, nonblock=False)
    np.testing.assert_array_equal(back.reshape(2, 3, 4), cube)
    with pytest.raises(StubError, match="MEMCPY_32BIT"):
        rt.memcpy_h2d(rt.get_id("a"), data.view(np.uint32), 0, 0, 3, 2, 4, streaming=False,
                      order=MemcpyOrder.ROW_MAJOR, data_type=MemcpyDataType.MEMCPY_16BIT, nonblock=False)
    with pytest.raises(StubError, match="4-byte"):
        rt.memcpy_h2d(rt.get_id("a"), data.astype(np.float64), 0, 0, 3, 2, 4, streaming=False,
                      order=MemcpyOrder.ROW_MAJOR, data_type=MemcpyDataType.MEMCPY_32BIT, nonblock=False)
    with pytest.raises(StubError, match="no symbol"):
        rt.get_id("nope")


def test_stub_launch_checks_argument_types_and_starts_from_zeros(tmp_path):
    rt = _loaded(tmp_path, "ring_slots", width=2, height=2, n=3, slots=2)
    assert not rt.device.read(1, 1, "x").any()  # @zeros, whatever the builder loaded
    with pytest.raises(StubError, match="numpy i16"):
        rt.launch("main", 1, nonblock=False)
    with pytest.raises(StubError, match="takes 1 arguments"):
        rt.launch("main", nonblock=False)
    rt.launch("main", np.int16(1), nonblock=False)
    assert rt.results[-1].total_cycles > 0


def test_stub_needs_the_bundle_manifest(tmp_path):
    with pytest.raises(StubError, match="manifest.json"):
        SdkRuntime(str(tmp_path / "out"))
    with pytest.raises(StubError, match="cannot reach"):
        SdkRuntime("out", cmaddr="10.0.0.1:9000")


def test_pack_reproduces_the_builders_placement_of_data():
    """The host plan's index formulas put every input element where the builder's own per-PE layout
    puts it (an independent per-PE construction)."""
    prog, plan = shift_east(width=4, height=3, n=2)
    a = make_inputs(plan)["A"]
    (region,), _ = resolve(plan, prog)
    block = pack(region, a, prog.layout_params)
    for y in range(3):
        for x in range(4):
            np.testing.assert_array_equal(block[y, x], a[y, x])


@pytest.mark.parametrize("order", ["row", "col"])
def test_tile_copy_cuts_matrices_as_meshgemm_lays_them_out(order):
    """``tile_copy`` (index expressions) against meshgemm.layout's tiles (slicing a padded matrix),
    for a plain and a skewed block placement on a 4 x 3 mesh with uneven tiles."""
    from meshgemm.layout import flat, pad2, padded, tile_of
    from simulator import Body, MeshProgram
    from simulator.expr import X, Y

    from plmr.hardware import WSE2
    from csl_templates.host_plan import HostPlan, HostTensor, tile_copy

    rows, cols, W, H = 10, 7, 4, 3
    th, tw = padded(rows, H), padded(cols, W)
    prog = MeshProgram(W, H, WSE2, name="tiles")
    P = prog.param("P", W)
    b = Body("t")
    b.buffer("blk", "fp32", th * tw)
    b.function("main", [])
    prog.place(b)
    a = np.random.default_rng(3).uniform(-1, 1, (rows, cols)).astype(np.float32)
    padm = pad2(a, th * H, tw * W)
    for name, bc, want_col in (("plain", X, lambda x, y: x), ("skewed", (X + Y) % P, lambda x, y: (x + y) % W)):
        copy = tile_copy("A", "blk", (rows, cols), (th, tw), Y, bc, order)
        plan = HostPlan([HostTensor("A", (rows, cols))], [], [copy], [], {}, {})
        (region,), _ = resolve(plan, prog)
        got = pack(region, a, prog.layout_params)
        for y in range(H):
            for x in range(W):
                np.testing.assert_array_equal(got[y, x], flat(tile_of(padm, y, want_col(x, y), th, tw), order),
                                              err_msg=f"{name} PE ({x}, {y})")


def test_a_bundle_without_host_plan_launches_main_and_reports_cycles(tmp_path, run_bundle):
    prog, _ = shift_east(width=4, height=2)
    emit_bundle(prog, tmp_path / "b", None, stub={"builder": "csl_templates.examples:build_example",
                                                  "kwargs": {"name": "shift_east", "width": 4, "height": 2}})
    code, out = run_bundle(tmp_path / "b")
    assert code == 0, out
    from simulator import simulate

    assert f"launch main: cycles {simulate(shift_east(width=4, height=2)[0]).total_cycles} " in out
