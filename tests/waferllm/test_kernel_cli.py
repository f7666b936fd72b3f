"""``waferllm kernel``: prediction, --simulate output and JSON fields, and one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from waferllm.cli import _Group
from waferllm.grids import parse_grid
from waferllm.kernel_cli import kernel

GROUP = _Group(name="waferllm", commands={"kernel": kernel})


def invoke(*args):
    return CliRunner().invoke(GROUP, ["kernel", *args])


def test_prediction_only():
    r = invoke("meshgemv", "--mesh", "8x6", "--k", "100", "--n", "77")
    assert r.exit_code == 0, r.output
    assert "predicted cycles" in r.output and "simulated" not in r.output


@pytest.mark.parametrize("name", ["meshgemv", "gemv-pipeline", "gemv-ring"])
def test_simulate_json(name):
    tree = ["--k-tree", "2", "--group-size", "2"] if name == "meshgemv" else []
    r = invoke(name, "--mesh", "5x3", "--k", "23", "--n", "11", "--simulate", "--json", "--dtype", "fp32",
               *tree, "--seed", "3")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("predicted_cycles", "simulated_cycles", "max_abs_error", "max_rel_error", "bytes_per_pe",
                "colors_per_pe", "compute_cycles", "communication_cycles", "mode"):
        assert key in d
    assert d["max_rel_error"] < 1e-5 and d["mode"] == "functional"
    assert d["schema"] == 2


def test_threads_cut_a_large_mesh_into_parts_with_the_same_result(monkeypatch):
    """``--threads 2`` on a mesh large enough to be cut (128x128) gives the one-thread run's JSON; without
    --simulate it is refused."""
    from simulator import run as sim_run

    parts = []
    real = sim_run._parts
    monkeypatch.setattr(sim_run, "_parts", lambda pes, trace, threads: parts.append(real(pes, trace, threads))
                        or parts[-1])
    args = ("meshgemv", "--mesh", "128", "--k", "256", "--n", "256", "--simulate", "--timing-only", "--json")
    one, two = invoke(*args), invoke(*args, "--threads", "2")
    assert one.exit_code == two.exit_code == 0, (one.output, two.output)
    assert parts == [1, 2]
    a, b = json.loads(one.output), json.loads(two.output)
    a.pop("sim_seconds", None), b.pop("sim_seconds", None)
    assert a == b and a["simulated_cycles"] > 0
    r = invoke("meshgemm", "--mesh", "8", "--k", "8", "--n", "8", "--threads", "2")
    assert r.exit_code == 2 and "--threads goes with --simulate" in r.output


def test_json_cycles_are_whole():
    # Cannon on a non-square mesh: the formula averages the wrap link's hops over the rows, so its total
    # is fractional; the JSON reports whole cycles (halves up), the text and sweeps alike.
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from meshgemm.run import run_kernel
    from plmr.hardware import WSE2

    r = invoke("cannon", "--mesh", "5x7", "--m", "13", "--k", "29", "--n", "31", "--json")
    d = json.loads(r.output)
    exact = run_kernel(build_kernel(KernelRequest(name="cannon", mesh=(5, 7), m=13, k=29, n=31, dtype="fp16", functional=False), WSE2), WSE2, "none")
    assert exact.predicted_cycles != int(exact.predicted_cycles)  # the case this test is about
    assert d["predicted_cycles"] == int(exact.predicted_cycles + 0.5)
    for key in ("predicted_cycles", "predicted_compute_cycles", "predicted_communication_cycles"):
        assert type(d[key]) is int


def test_simulate_text_and_timing_only():
    r = invoke("meshgemv", "--mesh", "4", "--k", "32", "--n", "32", "--simulate")
    assert r.exit_code == 0 and "error vs numpy" in r.output and "compute / comm" in r.output
    r = invoke("meshgemv", "--mesh", "4", "--k", "32", "--n", "32", "--simulate", "--timing-only", "--json")
    d = json.loads(r.output)
    assert d["mode"] == "timing" and d["max_abs_error"] is None and d["simulated_cycles"] > 0


@pytest.mark.parametrize("args,msg", [
    (["bogus", "--mesh", "4", "--k", "8", "--n", "8"], "unknown kernel 'bogus'"),
    (["meshgemv", "--mesh", "4y", "--k", "8", "--n", "8"], "expected N or HxW"),
    (["meshgemv", "--mesh", "0x4", "--k", "8", "--n", "8"], "expected N or HxW"),
    (["meshgemv", "--mesh", "4", "--m", "0", "--k", "8", "--n", "8"], "--m must be >= 1"),
    (["meshgemv", "--mesh", "4", "--m", "2", "--k", "8", "--n", "8"], "m = 1"),
    (["gemv-ring", "--mesh", "2000", "--k", "8", "--n", "8"], "larger than wse2"),
    (["meshgemv", "--mesh", "64", "--k", "128", "--n", "128", "--k-tree", "20"], "needs 41 colours per PE"),
    (["meshgemv", "--mesh", "2", "--k", "2000", "--n", "2000"], "SRAM overflow"),
    (["meshgemv", "--mesh", "4", "--k", "8", "--n", "8", "--hardware", "nope"], ""),
])
def test_errors_are_one_line_exit_2(args, msg):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and msg in err[0]


def test_parse_mesh():
    assert parse_grid("8x16", "mesh") == (8, 16) and parse_grid("12", "mesh") == (12, 12)
    assert parse_grid("3×5", "mesh") == (3, 5)


@pytest.mark.parametrize("name", ["meshgemm", "gemmt", "cannon", "summa"])
def test_gemm_kernels_dispatch(name):
    r = invoke(name, "--mesh", "4", "--m", "8", "--k", "8", "--n", "8", "--simulate", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["kernel"] == name and d["max_rel_error"] < 1e-2 and d["simulated_cycles"] > 0


def test_module_import_is_light():
    import subprocess
    import sys

    code = "import sys, waferllm.kernel_cli; print('numba' in sys.modules, 'simulator' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("args,msg", [
    (["meshgemm", "--mesh", "8", "--k", "8", "--n", "8", "--timing-only"], "--timing-only goes with --simulate"),
    (["meshgemv", "--mesh", "8", "--k", "64", "--n", "64", "--k-tree", "1", "--group-size", "3"], "K=1 is one chain"),
    (["meshgemm", "--mesh", "8", "--k", "8", "--n", "8", "--group-size", "3", "--k-tree", "5"],
     "--k-tree and --group-size: kernel meshgemm has no K-tree allreduce; the options apply to meshgemv only"),
    (["gemv-pipeline", "--mesh", "8", "--k", "64", "--n", "64", "--k-tree", "2"], "apply to meshgemv only"),
    (["meshgemm", "--mesh", "8", "--k", "8", "--n", "8", "--simulate", "--threads", "0"], "--threads"),
])
def test_options_the_kernel_ignores_or_cannot_build_are_refused(args, msg):
    r = invoke(*args)
    err = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(err) == 1 and err[0].startswith("Error: ") and msg in err[0], r.output


@pytest.mark.parametrize("args", [["--k-tree", "4"], ["--k-tree", "9"], ["--group-size", "100"]])
def test_trees_with_levels_that_merge_nothing_are_predicted_as_they_run(args):
    """On 8 rows a fourth level (or a level-1 group of the whole line) has nothing to merge: the program
    routes no colour for it and the prediction counts none (it used to count 2K+1)."""
    r = invoke("meshgemv", "--mesh", "8", "--k", "64", "--n", "64", *args, "--simulate", "--timing-only", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["colors_per_pe"] == d["predicted_colors_per_pe"]
    assert abs(d["simulated_cycles"] - d["predicted_cycles"]) <= 0.02 * d["simulated_cycles"]


def test_fractional_predictions_print_as_whole_numbers_with_separators():
    """Cannon on 3x5 predicts a fractional total; the table shows the JSON's whole cycles (halves up)
    with thousands separators, never scientific notation."""
    d = json.loads(invoke("cannon", "--mesh", "3x5", "--m", "10", "--k", "10", "--n", "10", "--json").output)
    text = invoke("cannon", "--mesh", "3x5", "--m", "10", "--k", "10", "--n", "10").output
    assert d["predicted_cycles"] >= 1000  # so the separator shows
    line = next(x for x in text.splitlines() if "predicted cycles" in x)
    assert line.split() == ["predicted", "cycles", f"{d['predicted_cycles']:,}", "(compute",
                            f"{d['predicted_compute_cycles']:,},", "communication",
                            f"{d['predicted_communication_cycles']:,})"]
    assert "e+" not in text
    from waferllm.kernel_cli import _fmt

    assert [_fmt(2908.6), _fmt(2.5), _fmt(1e7 + 0.3), _fmt(None), _fmt(7, " B")] == \
        ["2,909", "3", "10,000,000", "-", "7 B"]


def test_overlapped_kernels_report_busy_and_stalled_not_a_made_up_split():
    """MeshGEMM does not stamp the end of its compute, and the simulator counts fabric operations as
    busy: no compute/communication split is reported, only the critical PE's busy/stalled cycles,
    which with its idle cycles add up to the run. MeshGEMV stamps it: compute + comm = simulated."""
    args = ["--mesh", "4x6", "--m", "12", "--k", "9", "--n", "14", "--simulate"]
    d = json.loads(invoke("meshgemm", *args, "--json").output)
    assert d["compute_cycles"] is None and d["communication_cycles"] is None
    assert d["split_source"] == "none (no compute_end stamp)"
    x, y = d["critical_pe"]
    assert 0 <= x < 6 and 0 <= y < 4
    assert 0 < d["critical_pe_busy_cycles"] and d["critical_pe_busy_cycles"] + d["critical_pe_stalled_cycles"] \
        <= d["simulated_cycles"]
    text = invoke("meshgemm", *args).output
    assert "compute / comm" not in text
    assert (f"  busy / stalled        {d['critical_pe_busy_cycles']:,} / {d['critical_pe_stalled_cycles']:,}  "
            f"[critical PE ({x}, {y}); busy includes") in text
    g = json.loads(invoke("meshgemv", "--mesh", "4", "--k", "32", "--n", "32", "--simulate", "--json").output)
    assert g["split_source"] == "timestamp compute_end"
    assert g["compute_cycles"] > 0 and g["compute_cycles"] + g["communication_cycles"] == g["simulated_cycles"]
