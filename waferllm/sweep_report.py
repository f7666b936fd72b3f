"""The HTML report of a sweep: one self-contained page (figures embedded as PNG data URIs, inline
CSS, no scripts, nothing fetched), with PNG copies of the figures beside it.

Sections: what the sweep holds; the figures (``waferllm.figures``); predicted vs published, built
from the published WSE-2 figures the package ships (``waferllm/data/calibration_targets.json``):
the LLaMA3-8B throughput and KV-capacity points, and the kernel claims (MeshGEMV time, MeshGEMV vs
the pipeline GEMV, MeshGEMM vs SUMMA and Cannon) predicted under both execution semantics; and
the results table. The plan renderer of ``waferllm plan`` is ``waferllm.report``.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from plmr.errors import InputError
from plmr.atomic_output import atomic_write, swap_dir, temp_dir_beside
from waferllm.results import load_arrays, load_rows, results_path

TABLE_ROW_LIMIT = 2000
#: result columns shown in the HTML table when any row has them, in order
TABLE_COLUMNS = ("status", "kind", "evaluator", "kernel", "semantics", "model", "method", "hardware", "mesh",
                 "m", "k", "n", "k_tree", "group_size", "dtype", "prefill_grid", "decode_grid", "context",
                 "predicted_cycles", "simulated_cycles", "predicted_compute_cycles", "sim_compute_cycles",
                 "max_rel_error", "predicted_bytes_per_pe", "bytes_per_pe", "colors_per_pe", "fits",
                 "prefill_rows", "decode_rows", "prefill_tokens_per_s", "decode_tokens_per_s",
                 "end_to_end_tokens_per_s", "kv_shift_tokens", "kv_concat_tokens", "error")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
table { border-collapse: collapse; font-size: 0.8em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
th.text, td.text { text-align: left; } tr.error td { background: #fff0f0; }
.scroll { overflow: auto; max-height: 40em; }
.note { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>{{ summary }}</p>
<p class="note">Results: <code>{{ source }}</code>. Figures: filled markers are simulated points, hollow ones
the PLMR model; dashed lines are bulk-synchronous kernels.</p>

<h2>Figures</h2>
{% if not figures %}<p>These results hold nothing to plot (a figure needs a swept mesh, grid or K).</p>{% endif %}
{% for f in figures %}
<figure id="{{ f.name }}">
<img src="data:image/png;base64,{{ f.data }}" alt="{{ f.title }}" width="{{ f.width }}" height="{{ f.height }}">
<figcaption><b>{{ f.title }}.</b> {{ f.caption }} (<code>{{ f.file }}</code>)</figcaption>
</figure>
{% endfor %}

<h2>Predicted vs published (WSE-2)</h2>
<p class="note">{{ published_note }}</p>
<table>
<tr><th class="text">figure</th><th>published</th><th>predicted</th><th>predicted / published</th>
<th class="text">how predicted</th></tr>
{% for r in published %}
<tr><td class="text">{{ r.figure }}</td><td>{{ r.published }}</td><td>{{ r.predicted }}</td><td>{{ r.ratio }}</td>
<td class="text">{{ r.how }}</td></tr>
{% endfor %}
</table>

<h2>Results table</h2>
<p class="note">{{ table_note }}</p>
<div class="scroll"><table>
<tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}
<tr{% if row.error %} class="error"{% endif %}>{% for cell in row.cells %}<td{% if cell.text %} class="text"{% endif %}>{{ cell.value }}</td>{% endfor %}</tr>
{% endfor %}
</table></div>
</body>
</html>
"""


@dataclass
class WrittenReport:
    html: Path
    figure_dir: Path
    figures: list[Path] = field(default_factory=list)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def published_rows(spec_name: str = "wse2") -> list[dict[str, str]]:
    """Every published WSE-2 figure the package ships, with the current prediction. Computed once per
    process and spec (SUMMA's schedule at 720² alone takes ~18 s, the first time on a machine: then
    ``plmr.result_store`` holds it); each call returns fresh dicts."""
    from plmr.hardware import get_spec

    return [dict(r) for r in _published_rows(get_spec(spec_name))]


@functools.lru_cache(maxsize=4)
def _published_rows(spec) -> tuple[dict[str, str], ...]:
    from meshgemm.kernel import KernelRequest
    from meshgemm.predict import predict_kernel
    from waferllm.calibration import check_targets, load_targets, predict_targets

    out = []
    for r in predict_targets(spec) + check_targets(spec):
        out.append({"figure": r.figure, "published": _fmt(r.published), "predicted": _fmt(round(r.predicted, 1)),
                    "ratio": f"{r.predicted / r.published:.3f}", "how": "planner (PLMR model)"})
    kernels = load_targets().get("kernels", {})

    def cycles(name: str, side: int, m: int, k: int, n: int) -> float:
        return predict_kernel(KernelRequest(name, (side, side), m, k, n, dtype="fp16", functional=False),
                              spec).total_cycles

    if "meshgemv_16k_ms" in kernels:
        for side in (360, 540, 720):
            ms = cycles("meshgemv", side, 1, 16384, 16384) / spec.clock_hz * 1e3
            out.append({"figure": f"MeshGEMV [1,16K]x[16K,16K] fp16, ms (mesh {side}², not published)",
                        "published": _fmt(kernels["meshgemv_16k_ms"]), "predicted": f"{ms:.4f}",
                        "ratio": f"{ms / kernels['meshgemv_16k_ms']:.3f}", "how": "PLMR model, K = 2"})
    if "meshgemv_vs_pipeline_gemv" in kernels:
        pub = kernels["meshgemv_vs_pipeline_gemv"]
        for side in (360, 720):
            ref = cycles("meshgemv", side, 1, 16384, 16384)
            for base, sem in (("gemv-pipeline", "barrier-free"), ("gemv-pipeline-bsp", "bulk-synchronous")):
                ratio = cycles(base, side, 1, 16384, 16384) / ref
                out.append({"figure": f"pipeline GEMV / MeshGEMV, 16K, {side}², {sem} pipeline", "published": _fmt(pub),
                            "predicted": f"{ratio:.2f}", "ratio": f"{ratio / pub:.3f}",
                            "how": "PLMR model"})
    if "meshgemm_vs_summa_cannon" in kernels:
        lo, hi = kernels["meshgemm_vs_summa_cannon"]
        for side in (360, 720):
            ref = cycles("meshgemm", side, 2048, 2048, 2048)
            for base in ("cannon", "summa", "cannon-bsp", "summa-bsp"):
                ratio = cycles(base, side, 2048, 2048, 2048) / ref
                sem = "bulk-synchronous" if base.endswith("-bsp") else "barrier-free"
                out.append({"figure": f"{base.removesuffix('-bsp')} / MeshGEMM, 2K GEMM, {side}², {sem} baseline",
                            "published": f"{lo:g}-{hi:g}", "predicted": f"{ratio:.2f}",
                            "ratio": f"{ratio / ((lo + hi) / 2):.3f}",
                            "how": "PLMR model"})
    return tuple(out)


def _summary(rows: list[dict]) -> str:
    if not rows:
        return "The results table is empty."
    status = Counter(r["status"] for r in rows)
    kinds = Counter(r["kind"] for r in rows)
    evals = Counter(r["evaluator"] for r in rows)
    hw = sorted({r["hardware"] for r in rows if r.get("hardware")})
    parts = [f"{len(rows)} points ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})",
             f"{status.get('ok', 0)} ok, {len(rows) - status.get('ok', 0)} failed",
             "evaluated by " + ", ".join(f"{k} ({v})" for k, v in sorted(evals.items())),
             "hardware " + ", ".join(hw)]
    return "; ".join(parts) + "."


def _sort_key(r: dict) -> tuple:
    return tuple((0, "") if r.get(c) is None else (1, r[c]) if isinstance(r[c], str) else (1, f"{r[c]:020.6f}")
                 for c in ("kind", "kernel", "model", "m", "k", "n", "mesh_rows", "mesh_cols", "k_tree",
                           "group_size", "decode_rows", "prefill_rows", "evaluator", "key"))


def render_html(rows: list[dict], figures: list, source: str, title: str | None = None) -> str:
    """The page, from rows and ``waferllm.figures.Figure``s (each rendered to PNG here)."""
    import jinja2

    figs = []
    for f in figures:
        png = f.png()
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        figs.append({"name": f.name, "title": f.title, "caption": f.caption, "file": f"{f.name}.png",
                     "data": base64.b64encode(png).decode(), "width": w, "height": h})
    present = [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)]
    ordered = sorted(rows, key=_sort_key)
    shown = ordered[:TABLE_ROW_LIMIT]
    text_cols = {"status", "kind", "evaluator", "kernel", "semantics", "model", "method", "hardware", "mesh",
                 "dtype", "prefill_grid", "decode_grid", "error"}
    table_rows = [{"error": r["status"] != "ok",
                   "cells": [{"value": _fmt(r.get(c)), "text": c in text_cols} for c in present]} for r in shown]
    note = f"{len(rows)} rows" + (f", the first {TABLE_ROW_LIMIT} shown" if len(rows) > TABLE_ROW_LIMIT else "")
    note += "; every column is in the CSV."
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    try:
        published = published_rows()
        pub_note = ("Published: WaferLLM (OSDI '25) as collected in the package's calibration targets. "
                    "Predicted: the planner and the kernels' PLMR formulas with the calibrated wse2 parameters. "
                    "Ratios are shown for both baseline semantics: barrier-free (per-PE joins, as the kernels "
                    "run) and bulk-synchronous (a fabric barrier after every step).")
    except InputError as exc:  # a broken install; the rest of the report still stands
        published, pub_note = [], f"Not available: {exc}"
    return env.from_string(PAGE).render(
        title=title or f"waferllm sweep report: {Path(source).name}", summary=_summary(rows),
        source=source, figures=figs, published=published, published_note=pub_note, columns=present,
        rows=table_rows, table_note=note)


def _check_figure_dir(fig_dir: Path) -> None:
    """A figures directory is replaced as a whole: refuse one that holds anything but PNGs."""
    if not fig_dir.exists():
        return
    if not fig_dir.is_dir():
        raise InputError(f"{fig_dir} exists and is not a directory; the report's figures go there")
    other = sorted(p.name for p in fig_dir.iterdir() if p.suffix.lower() != ".png")
    if other:
        raise InputError(f"{fig_dir} holds files other than figures ({', '.join(other[:3])}"
                         f"{', ...' if len(other) > 3 else ''}); a report replaces that directory: move them or "
                         f"choose another -o")


def write_report(results: str | os.PathLike, out: str | os.PathLike, title: str | None = None,
                 progress: Callable[[str], None] | None = None) -> WrittenReport:
    """Read a results table, draw its figures, write ``out`` (HTML) and ``<stem>_figures/*.png``.
    ``progress(text)`` is told each stage (the published figures' predictions: ~20 s the first time on a
    machine, ~3 s after). The figures are drawn into a temporary directory beside their place and
    renamed into it once the page is ready, so an interrupted report leaves neither half."""
    from waferllm import figures as F
    from waferllm.calibration import load_targets

    step = progress or (lambda text: None)
    step("reading the results")
    rows = load_rows(results)
    path = results_path(results)
    out = Path(out)
    if out.exists() and out.is_dir():
        raise InputError(f"-o {out}: is a directory; give the HTML file to write")
    fig_dir = out.with_name(out.stem + "_figures")
    _check_figure_dir(fig_dir)
    figs = F.all_figures(rows, lambda r: load_arrays(path, r), load_targets().get("kernels"))
    written = WrittenReport(out, fig_dir)
    tmp = None
    try:
        try:
            tmp = temp_dir_beside(fig_dir)
        except OSError as exc:
            raise InputError(f"cannot write the report's figures to {fig_dir}: {exc.strerror or exc}") from None
        for i, f in enumerate(figs):
            step(f"drawing figure {i + 1}/{len(figs)}")
            written.figures.append(fig_dir / f.save(tmp).name)
        step("predicting the published figures and writing the page")
        page = render_html(rows, figs, str(path), title)
        swap_dir(tmp, fig_dir)
        tmp = None
    finally:
        F.close(figs)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write(out, page.encode())
    return written
