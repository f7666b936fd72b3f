"""Every script in examples/ runs as a user would run it (small arguments, so the suite stays fast)
and produces what it promises; the example TOML sweep file is a valid sweep.

The scripts run unmodified as ``__main__`` with their command line in ``sys.argv``, from the repo
root, in this process (as ``python examples/X.py ...`` does, without a new interpreter): their
sweeps still fork their own workers or start their Dask cluster, and the reports they write share
this process's published-figures section (``waferllm.sweep_report.published_rows``, ~20 s to
compute) instead of recomputing it in three fresh interpreters."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from waferllm.results import load_rows
from waferllm.sweep import Sweep, load_sweep_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture
def run(monkeypatch, capsys):
    """``run(script, *args)`` -> the script's stdout; it must exit with status 0."""

    def run(script: str, *args: str) -> str:
        monkeypatch.chdir(REPO)
        monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), *args])
        capsys.readouterr()
        try:
            runpy.run_path(str(EXAMPLES / script), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        assert code == 0, err[-2000:]
        return out

    return run


def test_plan_llama3_8b(tmp_path, run):
    out = run("plan_llama3_8b.py", "--json", str(tmp_path / "plan.json"))
    assert "method full" in out and "method paper" in out and "tokens/s" in out
    plans = json.loads((tmp_path / "plan.json").read_text())["plans"]
    assert plans["full"]["model"] == "llama3-8b" and plans["paper"]["decode"]["tokens_per_s"] > 0


def test_compare_gemm(tmp_path, run):
    out = run("compare_gemm.py", "--out", str(tmp_path / "gemm"), "--sides", "2,4,64", "--size", "64",
              "--simulate-up-to", "4", "--workers", "2")
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith(("2x2", "4x4", "64x64"))}
    assert "(simulated)" in lines["2x2"] and "(simulated)" in lines["4x4"] and "(simulated)" not in lines["64x64"]
    rows = load_rows(tmp_path / "gemm")
    assert {r["evaluator"] for r in rows} == {"model", "timing"} and len(rows) == 6 * 3 + 6 * 2
    assert (tmp_path / "gemm" / "report.html").is_file()


def test_gemv_k_sweep(tmp_path, run):
    out = run("gemv_k_sweep.py", "--out", str(tmp_path / "k"), "--sides", "8,16", "--size", "256",
              "--k-tree", "1,2,3", "--group-size", "auto,4", "--simulate", "--workers", "2")
    rows = [r for r in load_rows(tmp_path / "k") if r["status"] == "ok"]
    assert rows and all(r["simulated_cycles"] for r in rows)
    # the best K printed for each mesh is the fastest simulated row
    for mesh in ("8x8", "16x16"):
        line = next(line for line in out.splitlines() if line.strip().startswith(mesh))
        best = min((r for r in rows if r["mesh"] == mesh), key=lambda r: r["simulated_cycles"])
        assert int(line.split()[1]) == best["k_tree"]
        assert f"{best['simulated_cycles']:,}" in line


def test_dask_sweep(tmp_path, run):
    pytest.importorskip("distributed")
    out = run("dask_sweep.py", "--out", str(tmp_path / "d"), "--meshes", "20:100:20", "--size", "4096")
    assert "15 points on Dask (local)" in out
    assert len(load_rows(tmp_path / "d")) == 15 and (tmp_path / "d" / "report.html").is_file()


def test_toml_example_is_a_valid_sweep():
    axes, evaluator = load_sweep_file(EXAMPLES / "gemv_mesh_sweep.toml")
    points = Sweep(axes, evaluator).points()
    assert len(points) == 180 and {p["kernel"] for p in points} == {"meshgemv", "gemv-pipeline", "gemv-pipeline-bsp"}
