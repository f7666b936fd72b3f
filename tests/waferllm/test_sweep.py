"""``waferllm sweep``: axes and points, evaluation (against the model and the simulator called
directly), the results table's fault tolerance (a SIGKILL half-way through a 60-point sweep loses
nothing but the points in flight and a re-run completes it with every point exactly once), and the
same results from a Dask LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from meshgemm.run import run_kernel
from plmr.errors import InputError
from plmr.hardware import WSE2
from waferllm.cli import main
from waferllm.results import COLUMNS, ResultsTable, comparable, load_arrays, load_rows
from waferllm.sweep import AXES, Sweep, evaluate_point, load_sweep_file, parse_values, point_key

REPO = Path(__file__).resolve().parents[2]
GEMV_60 = ["--kernel", "meshgemv", "--mesh", "2:120:2", "--size", "4096"]  # 60 points


def sweep(*args: str):
    return CliRunner().invoke(main, ["sweep", *args, "--no-progress"])


# ------------------------------------------------------------------------------------------------
# Axes and points
# ------------------------------------------------------------------------------------------------

def test_axis_values():
    assert parse_values(AXES["mesh"], ["8:24:8", "3x5", "8"]) == ["8x8", "16x16", "24x24", "3x5"]
    assert parse_values(AXES["size"], ["64", "128:256:64"]) == [64, 128, 192, 256]
    assert parse_values(AXES["decode_grid"], ["auto", "300x360"]) == [None, "300x360"]
    assert parse_values(AXES["k_tree"], [3, "auto"]) == [3, None]
    for axis, bad, msg in (("mesh", "0x4", "expected N or HxW"), ("size", "8:4", "a range is"),
                           ("size", "x", "expected an integer"), ("dtype", "bf16", "allowed: fp16, fp32"),
                           ("m", "0", "must be >= 1"), ("seed", "-1", "must be >= 0"), ("size", "auto", "integer")):
        with pytest.raises(InputError, match=msg):
            parse_values(AXES[axis], [bad])


def test_absurd_worker_count_is_an_input_error(tmp_path):
    """Found by the CLI fuzz test: 2³¹ workers overflowed the OS semaphore a process pool allocates."""
    r = sweep(*GEMV_60, "-o", str(tmp_path / "out"), "--workers", str(2**31))
    assert r.exit_code == 2 and "--workers 2147483648: must be between 1 and 1024" in r.output
    assert not (tmp_path / "out").exists()


def test_points_are_the_product():
    sw = Sweep({"kernel": ["meshgemv", "cannon"], "mesh": ["4x4", "8x8", "2x6"], "size": [64, 128], "k_tree": [1, 2]})
    pts = sw.points()
    # meshgemv: 3 meshes x 2 sizes x 2 K; cannon has no K: 3 x 2
    assert len(pts) == 12 + 6 and len({point_key(p) for p in pts}) == 18
    gemv = [p for p in pts if p["kernel"] == "meshgemv"]
    assert all(p["m"] == 1 and p["k"] == p["n"] for p in gemv)
    assert all(p["m"] == p["k"] == p["n"] and p["k_tree"] is None for p in pts if p["kernel"] == "cannon")
    assert set(pts[0]) == set(COLUMNS[2:2 + len(pts[0])])


@pytest.mark.parametrize("axes,evaluator,msg", [
    ({"kernel": ["meshgemv"], "model": ["llama3-8b"]}, "model", "not both"),
    ({}, "model", "nothing to sweep"),
    ({"kernel": ["bogus"], "mesh": ["4x4"], "size": [8]}, "model", "unknown kernel"),
    ({"kernel": ["meshgemv"], "size": [8]}, "model", "needs --mesh"),
    ({"kernel": ["meshgemv"], "mesh": ["4x4"]}, "model", "needs --size"),
    ({"kernel": ["meshgemv"], "mesh": ["4x4"], "size": [8], "k": [8]}, "model", "either --size"),
    ({"model": ["llama3-8b"], "mesh": ["4x4"]}, "model", "--mesh does not apply to a plan sweep"),
    ({"model": ["llama3-8b"], "mesh": ["4x4"], "seed": [1]}, "model", "--mesh, --seed do not apply to a plan sweep"),
    ({"model": ["llama3-8b"]}, "timing", "PLMR model only"),
])
def test_bad_sweeps(axes, evaluator, msg):
    with pytest.raises(InputError, match=msg):
        Sweep(axes, evaluator).points()


def test_toml_file_equals_flags(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[sweep]\nkernel = ["meshgemv", "gemv-pipeline"]\nmesh = ["4:12:4", "3x5"]\nsize = 256\n'
                   'k_tree = [1, 2]\nevaluator = "timing"\n')
    axes, ev = load_sweep_file(cfg)
    flags = Sweep({"kernel": ["meshgemv", "gemv-pipeline"], "mesh": parse_values(AXES["mesh"], ["4:12:4", "3x5"]),
                   "size": [256], "k_tree": [1, 2]}, "timing")
    assert [point_key(p) for p in Sweep(axes, ev).points()] == [point_key(p) for p in flags.points()]
    # the file a sweep writes reads back to the same points
    again = tmp_path / "again.toml"
    again.write_text(flags.to_toml())
    axes2, ev2 = load_sweep_file(again)
    assert [point_key(p) for p in Sweep(axes2, ev2).points()] == [point_key(p) for p in flags.points()]
    for text, msg in (("[sweep]\nbogus = 1\n", "unknown parameter"), ("[sweep\n", "not a valid TOML"),
                      ('[sweep]\nevaluator = "x"\n', "evaluator")):
        cfg.write_text(text)
        with pytest.raises(InputError, match=msg):
            load_sweep_file(cfg)


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,mesh,size", [("meshgemv", "6x4", 48), ("cannon-bsp", "3x3", 12),
                                              ("gemv-pipeline", "5x2", 20), ("summa", "2x3", 12)])
def test_simulated_point_matches_the_simulator(kernel, mesh, size):
    """A simulated point reports what ``run_kernel`` measures on the same build."""
    point = Sweep({"kernel": [kernel], "mesh": [mesh], "size": [size]}, "simulate").points()[0]
    row, arrays = evaluate_point(point)
    assert row["status"] == "ok", row["error"]
    h, w = (int(v) for v in mesh.split("x"))
    m = 1 if "gemv" in kernel else size
    rep = run_kernel(build_kernel(KernelRequest(kernel, (h, w), m, size, size, dtype="fp16"), WSE2), WSE2)
    assert row["simulated_cycles"] == rep.simulated_cycles
    assert row["predicted_cycles"] == round(rep.predicted_cycles)
    assert row["max_rel_error"] == pytest.approx(rep.max_rel_error)
    assert row["bytes_per_pe"] == rep.bytes_per_pe and row["colors_per_pe"] == rep.colors_per_pe
    assert arrays["sram_bytes"].shape == (h, w) and arrays["sram_bytes"].max() == rep.bytes_per_pe
    assert arrays["busy"].max() <= rep.simulated_cycles and arrays["link_wavelets"].sum() > 0
    # the split: measured only where the kernel stamps the end of its compute (the GEMV kernels)
    assert (row["sim_compute_cycles"], row["sim_comm_cycles"], row["split_source"]) == \
        (rep.compute_cycles, rep.communication_cycles, rep.split_source)
    if "gemv" in kernel:
        assert row["split_source"] == "timestamp compute_end"
        assert row["sim_compute_cycles"] + row["sim_comm_cycles"] == row["simulated_cycles"]
    else:  # summa, cannon-bsp: compute overlaps the fabric, whose operations count as busy
        assert row["split_source"] == "none (no compute_end stamp)" and row["sim_compute_cycles"] is None


def test_model_point_is_the_builders_prediction():
    point = Sweep({"kernel": ["summa-bsp"], "mesh": ["4x6"], "size": [48]}).points()[0]
    row, arrays = evaluate_point(point)
    b = build_kernel(KernelRequest("summa-bsp", (4, 6), 48, 48, 48, dtype="fp16", functional=False), WSE2)
    assert arrays is None and row["simulated_cycles"] is None
    assert row["predicted_cycles"] == round(b.predicted.total_cycles)
    assert row["semantics"] == "bulk-synchronous"


def test_failing_points_are_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "run"
    # mesh 8 with k = 4 < 8 rows fails; a 2000x2000 mesh is larger than wse2; mesh 2 succeeds
    args = ["--kernel", "meshgemv", "--mesh", "2,8,2000", "--size", "4", "--hardware", "wse2", "-o", str(out)]
    r = sweep(*args, "--workers", "2")
    assert r.exit_code == 0, r.output
    rows = load_rows(out)
    status = {x["mesh"]: (x["status"], x["error"]) for x in rows}
    assert status["2x2"] == ("ok", None)
    assert status["8x8"][0] == "error" and "smaller than the 8 PEs" in status["8x8"][1]
    assert status["2000x2000"][0] == "error" and "larger than wse2" in status["2000x2000"][1]
    assert "2 failed" in r.output
    # re-running skips every recorded point; --retry-failed re-evaluates the failed ones only
    r = sweep(*args)
    assert "3 already done" in r.output
    r = sweep(*args, "--retry-failed", "--json")
    assert json.loads(r.output)["errors"] == 2 and len(load_rows(out)) == 3


@pytest.mark.parametrize("args,msg", [
    (["--model", "llama3-8b,nope"], "Error: --model 'nope': unknown model 'nope'; catalog: "),
    (["--model", "llama3-8b", "--hardware", "wse2,nope"], "Error: --hardware 'nope': unknown hardware 'nope'"),
    (["--kernel", "meshgemv", "--mesh", "4", "--size", "8", "--hardware", "nope"],
     "Error: --hardware 'nope': unknown hardware 'nope'"),
    (["--kernel", "meshgemv", "--mesh", "4", "--size", "8", "--hardware", "missing.toml"],
     "Error: --hardware 'missing.toml': cannot read hardware file"),
])
def test_unknown_model_or_hardware_names_are_refused_before_the_directory_exists(tmp_path, args, msg):
    out = tmp_path / "runs" / "e10"
    for extra in ([], ["--dry-run"]):
        r = sweep(*args, *extra, "-o", str(out))
        err = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(err) == 1 and err[0].startswith(msg), r.output
        assert not (tmp_path / "runs").exists()


def test_dry_run_lists_every_point_and_writes_nothing(tmp_path):
    """``--dry-run`` prints the points (the shared fields once, then each point's own), the same points
    as ``--dry-run --json``, and makes no directory."""
    out = tmp_path / "runs"
    args = ("--kernel", "meshgemm,cannon", "--mesh", "8,16", "--size", "64", "-o", str(out))
    text = sweep(*args, "--dry-run")
    points = json.loads(sweep(*args, "--dry-run", "--json").output)["points"]
    assert text.exit_code == 0 and not out.exists()
    lines = text.output.splitlines()
    assert lines[0] == "4 points (kernel, evaluator model)"
    assert lines[1] == "every point: hardware=wse2 m=64 k=64 n=64 dtype=fp16"
    assert sorted(lines[2:]) == sorted(f"  kernel={p['kernel']} mesh={p['mesh']}" for p in points)
    one = sweep("--model", "llama3-8b", "--dry-run", "-o", str(out)).output.splitlines()
    assert one[0] == "1 point (plan, evaluator model)" and "model=llama3-8b" in one[1] and "wafers=1" in one[1]


def test_plan_points(tmp_path):
    out = tmp_path / "plans"
    r = sweep("--model", "llama3-8b,qwen2.5-0.5b", "--decode-grid", "200,300x360", "--method", "paper",
              "--batch", "1,2", "-o", str(out), "--workers", "1")
    assert r.exit_code == 0, r.output
    rows = load_rows(out)
    ok = [x for x in rows if x["status"] == "ok"]
    assert len(rows) == 8 and len(ok) == 8  # the planner plans batch > 1
    assert {(x["decode_rows"], x["decode_cols"]) for x in ok} == {(200, 200), (300, 360)}
    assert all(x["decode_tokens_per_s"] > 0 and x["kv_shift_tokens"] >= x["kv_concat_tokens"] for x in ok)


# ------------------------------------------------------------------------------------------------
# The results table
# ------------------------------------------------------------------------------------------------

def test_partial_last_line_is_dropped(tmp_path):
    out = tmp_path / "run"
    r = sweep("--kernel", "meshgemv", "--mesh", "2,4", "--size", "16", "-o", str(out), "--workers", "1")
    assert r.exit_code == 0
    csv = out / "results.csv"
    whole = csv.read_text()
    csv.write_text(whole + whole.splitlines()[1][:20])  # a torn write: no newline, too few fields
    assert len(load_rows(out)) == 2
    with ResultsTable(out) as t:
        assert len(t.done) == 2
    assert csv.read_text() == whole


def test_arrays_written_before_the_row(tmp_path):
    out = tmp_path / "run"
    r = sweep("--kernel", "gemv-pipeline-bsp", "--mesh", "3x2", "--size", "12", "--simulate", "--timing-only",
              "-o", str(out))
    assert r.exit_code == 0, r.output
    (row,) = load_rows(out)
    arrays = load_arrays(out, row)
    assert row["sim_arrays"] == f"sim/{row['key']}.npz" and arrays["busy"].shape == (3, 2)
    assert row["max_rel_error"] is None and row["simulated_cycles"] > 0


_SLOW_SWEEP = textwrap.dedent("""
    import sys, time
    import waferllm.sweep_run as run
    from waferllm.cli import main
    real = run.evaluate_point
    def slow(point):
        time.sleep(0.1)
        return real(point)
    slow.__module__, slow.__qualname__ = "__main__", "slow"
    run.evaluate_point = slow
    main(sys.argv[1:], prog_name="waferllm")
""")


def _processes_with(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and fork")
def test_sigkill_half_way_then_rerun(tmp_path):
    """60 MeshGEMV points (model), slowed to 0.1 s each, two workers; SIGKILL once about half are
    written; the re-run completes with every point exactly once, equal to an uninterrupted run, and
    writes PNG figures and an HTML report."""
    out = tmp_path / "killed"
    script = tmp_path / "slow_sweep.py"
    script.write_text(_SLOW_SWEEP)
    args = ["sweep", *GEMV_60, "--k-tree", "2", "-o", str(out), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    csv = out / "results.csv"
    deadline = time.time() + 60
    while time.time() < deadline:
        if csv.exists() and csv.read_text().count("\n") >= 31:
            break
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before it was killed: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    # the workers die with the sweep: nothing keeps computing
    deadline = time.time() + 10
    while _processes_with(str(script)) and time.time() < deadline:
        time.sleep(0.1)
    assert _processes_with(str(script)) == []
    partial = load_rows(out)
    assert 30 <= len(partial) < 60
    r = sweep(*GEMV_60, "--k-tree", "2", "-o", str(out), "--workers", "2", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["skipped"] == len(partial) and summary["ok"] == 60 - len(partial)
    rows = load_rows(out)
    keys = [x["key"] for x in rows]
    assert len(keys) == 60 and len(set(keys)) == 60
    clean = tmp_path / "clean"
    assert sweep(*GEMV_60, "--k-tree", "2", "-o", str(clean), "--workers", "1").exit_code == 0
    assert comparable(rows) == comparable(load_rows(clean))
    r = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "report.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert (tmp_path / "report_figures" / "cycles.png").stat().st_size > 1000


def test_local_cluster_gives_identical_results(tmp_path):
    pytest.importorskip("distributed")
    args = ["--kernel", "meshgemv,gemv-pipeline-bsp,cannon", "--mesh", "2,3x4", "--size", "24"]
    local, dask = tmp_path / "local", tmp_path / "dask"
    for extra, out in (([], local), (["--scheduler", "local"], dask)):
        r = sweep(*args, "--simulate", "-o", str(out), "--workers", "2", *extra)
        assert r.exit_code == 0, r.output
    a, b = load_rows(local), load_rows(dask)
    assert len(a) == 6 and all(x["status"] == "ok" for x in a)
    assert comparable(a) == comparable(b)
    for row in a:
        other = next(x for x in b if x["key"] == row["key"])
        for k, v in load_arrays(local, row).items():
            assert (v == load_arrays(dask, other)[k]).all()


def test_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("waferllm.sweep_run.CONNECT_TIMEOUT", "1s")
    r = sweep("--kernel", "meshgemv", "--mesh", "2", "--size", "8", "-o", str(tmp_path / "x"),
              "--scheduler", "tcp://127.0.0.1:1")
    assert r.exit_code == 2 and r.stderr.startswith("Error: --scheduler") and len(r.stderr.splitlines()) == 1


def test_ctrl_c_of_a_dask_sweep_prints_no_worker_tracebacks(tmp_path):
    """Ctrl-C reaches the whole process group: the LocalCluster's worker processes leave it to the
    sweep process, which stops with click's one word; the rows written so far stay readable."""
    pytest.importorskip("distributed")
    out = tmp_path / "dk"
    # points enough (up to 120²) that the sweep cannot end on its own within the minute of Ctrl-Cs below
    cmd = [sys.executable, "-m", "waferllm.cli", "sweep", "--kernel", "meshgemm,cannon", "--mesh", "4:120:4",
           "--size", "64", "--simulate", "--scheduler", "local", "--workers", "2", "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # interrupt while the cluster starts or its workers run the first points (where an idle
        # worker's event loop raised KeyboardInterrupt), and again, as a user would, until it stops
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(_children(proc.pid)) < 2:
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        err = out_text = ""
        for _ in range(120):
            os.killpg(proc.pid, signal.SIGINT)
            try:
                out_text, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, (out_text, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip() == "Aborted!", err
    load_rows(out)  # readable


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def test_the_report_hint_writes_into_the_results_directory(tmp_path, monkeypatch):
    """The command a sweep suggests runs as printed and puts the page beside the results (as the
    README's `waferllm report runs/gemv -o runs/gemv/report.html`), not in the current directory."""
    import shlex

    from waferllm import sweep_report

    out = tmp_path / "runs" / "gemv"
    r = sweep("--kernel", "meshgemv", "--mesh", "2,4", "--size", "8", "-o", str(out), "--workers", "1")
    assert r.exit_code == 0, r.output
    hint = r.output.strip().splitlines()[-1]
    assert hint == f"report: waferllm report {out} -o {out / 'report.html'}"
    monkeypatch.setattr(sweep_report, "published_rows", lambda: [])  # its ~20 s are the report tests'
    monkeypatch.chdir(tmp_path)
    args = shlex.split(hint.removeprefix("report: waferllm "))
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / "report.html").is_file() and not (tmp_path / "report.html").exists()


def test_sweep_help_describes_batch_and_wafers_as_they_work():
    text = CliRunner().invoke(main, ["sweep", "--help"], env={"COLUMNS": "200"}).output
    assert "only 1 until" not in text
    assert "decode requests sharing the weights" in text and "systems to pipeline the layers over" in text
