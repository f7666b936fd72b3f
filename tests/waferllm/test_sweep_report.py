"""``waferllm report``: figures are real, non-empty images drawn from the results; the page is
self-contained and loads in a real headless Chromium with no console errors and every image
decoded; a screenshot of it is not blank."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from waferllm import figures as F
from waferllm.cli import main
from waferllm.results import load_rows

REPO = Path(__file__).resolve().parents[2]


def _sweep(out: Path, *args: str) -> None:
    r = CliRunner().invoke(main, ["sweep", *args, "-o", str(out), "--workers", "1", "--no-progress"])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Model points over GEMM and GEMV meshes (both semantics), a K sweep, plans over decode grids,
    two simulated GEMM points (heatmaps) and one failing point."""
    out = tmp_path_factory.mktemp("report") / "run"
    _sweep(out, "--kernel", "meshgemm,cannon,cannon-bsp,summa-bsp", "--mesh", "64:256:64", "--size", "1024")
    _sweep(out, "--kernel", "meshgemv,gemv-pipeline,gemv-pipeline-bsp", "--mesh", "32:128:32", "--size", "4096",
           "--k-tree", "1,2")
    _sweep(out, "--kernel", "meshgemm,cannon-bsp", "--mesh", "2,3", "--size", "12", "--simulate")
    _sweep(out, "--kernel", "meshgemv", "--mesh", "4", "--size", "2")  # k < rows: recorded as an error
    _sweep(out, "--model", "llama3-8b", "--decode-grid", "250,300", "--prefill-grid", "600", "--method", "paper")
    return out


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    """``waferllm report`` of ``results``, written once for the tests that read the page and its PNGs."""
    out = tmp_path_factory.mktemp("report_page") / "report.html"
    r = CliRunner().invoke(main, ["report", str(results), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def test_figures_follow_the_rows(results):
    rows = load_rows(results)
    assert any(r["status"] == "error" for r in rows)
    names = [f.name for f in F.all_figures(rows, lambda r: None)]
    assert names == ["cycles", "ratios", "ksweep", "tokens", "kv"]
    # a table with nothing to plot draws nothing rather than empty axes
    assert F.all_figures([r for r in rows if r["kind"] == "plan"][:1]) == []


def test_ratio_figure_uses_the_same_mesh_and_size(results):
    """The ratio plotted is cycles(baseline) / cycles(reference) from the table, point by point."""
    rows = [r for r in load_rows(results) if r["status"] == "ok" and r["evaluator"] == "model"]
    fig = F.fig_ratios(rows)
    assert fig is not None
    ax = fig.figure.axes[0]
    by = {(r["kernel"], r["mesh"]): r["predicted_cycles"] for r in rows if r["kernel"] in ("meshgemm", "cannon-bsp")}
    line = next(l for l in ax.get_lines() if l.get_label() == "cannon-bsp")
    xs, ys = line.get_data()
    for x, y in zip(xs, ys):
        mesh = f"{int(round(x))}x{int(round(x))}"
        assert y == pytest.approx(by[("cannon-bsp", mesh)] / by[("meshgemm", mesh)])
    F.close([fig])


def test_report_files_and_pngs(report):
    out = report
    pngs = sorted((out.parent / "report_figures").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"cycles", "ratios", "ksweep", "tokens", "kv"} <= names
    assert any(n.startswith("heatmaps_") for n in names)
    for p in pngs:
        px = _png_pixels(p)
        assert px.shape[0] > 100 and px.shape[1] > 100, p
        assert float(px[..., :3].std()) > 0.01, f"{p} is blank"
    page = out.read_text()
    assert page.count("<img ") == len(pngs)
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "the page must not fetch anything"
    assert "Predicted vs published" in page and "bulk-synchronous" in page


def test_report_progress_names_each_stage(tmp_path, monkeypatch):
    """``write_report(progress=...)`` (the CLI's spinner): reading, one step per figure, then the page;
    the published section is stubbed here (its ~20 s of predictions are the report fixture's)."""
    from waferllm import sweep_report

    out = tmp_path / "run"
    _sweep(out, "--kernel", "meshgemv,gemv-pipeline", "--mesh", "32,64", "--size", "4096")
    monkeypatch.setattr(sweep_report, "published_rows", lambda: [])
    said = []
    written = sweep_report.write_report(out, tmp_path / "r.html", progress=said.append)
    n = len(written.figures)
    assert n > 0 and said == (["reading the results"] + [f"drawing figure {i}/{n}" for i in range(1, n + 1)]
                              + ["predicting the published figures and writing the page"])
    assert (tmp_path / "r.html").stat().st_size > 1000


def test_report_bad_input_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and r.stderr.startswith("Error: no results table") and len(r.stderr.splitlines()) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.csv").write_text("a,b\n1,2\n")
    r = CliRunner().invoke(main, ["report", str(bad), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and "results columns" in r.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_in_headless_chromium(results, report, tmp_path, chromium):
    chromium.get(report.resolve().as_uri())
    assert chromium.title.startswith("waferllm sweep report")
    errors = [e for e in chromium.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
    assert len(images) >= 6
    for complete, w, h, alt in images:
        assert complete and w > 0 and h > 0, alt
    rows = chromium.execute_script("return document.querySelectorAll('tr').length;")
    assert rows > len(load_rows(results))  # the results table and the published section
    # screenshot: a real rendering, not a blank page
    shot = tmp_path / "report.png"
    assert chromium.save_screenshot(str(shot))
    px = _png_pixels(shot)
    assert px.shape[1] >= 1000 and float(px[..., :3].std()) > 0.05


def test_an_interrupted_report_leaves_nothing_half_written(tmp_path, monkeypatch):
    """Ctrl-C while the figures are drawn: neither a figures directory with some PNGs nor a temporary
    directory is left; a previous report's figures stay whole. A finished report replaces them."""
    from waferllm import sweep_report

    out = tmp_path / "run"
    _sweep(out, "--kernel", "meshgemv,gemv-pipeline", "--mesh", "32,64", "--size", "4096")
    monkeypatch.setattr(sweep_report, "published_rows", lambda: [])
    page = tmp_path / "site" / "r.html"
    saved = F.Figure.save
    calls = []

    def interrupted(self, directory):
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return saved(self, directory)

    monkeypatch.setattr(F.Figure, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep_report.write_report(out, page)
    assert len(calls) == 2
    assert not page.parent.exists() or list(page.parent.iterdir()) == []
    monkeypatch.setattr(F.Figure, "save", saved)
    first = sweep_report.write_report(out, page)
    before = {p.name: p.read_bytes() for p in (page.parent / "r_figures").iterdir()}
    assert sorted(before) == sorted(p.name for p in first.figures) and len(before) >= 2
    calls.clear()
    monkeypatch.setattr(F.Figure, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep_report.write_report(out, page)
    assert sorted(p.name for p in page.parent.iterdir()) == ["r.html", "r_figures"]
    assert {p.name: p.read_bytes() for p in (page.parent / "r_figures").iterdir()} == before
    # the figures directory is replaced whole, so one holding other files is refused, untouched
    (page.parent / "r_figures" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["report", str(out), "-o", str(page)])
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "holds files other than figures (notes.txt)" \
        in r.stderr
    assert (page.parent / "r_figures" / "notes.txt").read_text() == "mine"
