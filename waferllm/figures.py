"""Figures of a sweep's results (matplotlib, Agg backend), in the shape of the paper's:

* ``cycles``: cycles vs mesh size per algorithm, with the compute share drawn beside the total
  (the GEMM and GEMV comparison figures), one panel per problem size;
* ``ratios``: each baseline's cycles over MeshGEMM's (GEMM) or MeshGEMV's (GEMV) at the same mesh,
  barrier-free and bulk-synchronous, against the ratios the paper publishes;
* ``ksweep``: MeshGEMV cycles vs mesh size per K (and level-1 group size);
* ``tokens``: tokens/s vs grid per phase (prefill, decode) per model and method;
* ``kv``: KV-cache capacity with shifting vs concatenation vs decode grid;
* ``heatmaps``: from a simulation, per-PE SRAM use, wavelets sent out of each router (per-link
  traffic) and per-PE busy cycles.

Simulated points are drawn where the sweep simulated them and model points elsewhere, told apart
by the marker: filled = simulated, hollow = PLMR model. Bulk-synchronous kernels are dashed.
Every ``fig_*`` returns a ``Figure`` or None when the rows hold nothing to draw.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GEMM_REFERENCE = "meshgemm"
GEMV_REFERENCE = "meshgemv"
GEMV_FAMILY = ("meshgemv", "gemv-pipeline", "gemv-ring", "gemv-pipeline-bsp")


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    figure: Any  # matplotlib.figure.Figure
    _png: bytes | None = field(default=None, repr=False, compare=False)

    def png(self) -> bytes:
        """The figure as PNG (110 dpi, tight bounding box), rendered once: the report writes the
        same bytes to its file and into its page."""
        if self._png is None:
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            self._png = buf.getvalue()
        return self._png

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / f"{self.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.png())
        return path


def _ok(rows, kind: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("kind") == kind and r.get("fits") is not False]


def kernel_cycles(r: dict) -> tuple[float, float | None, bool]:
    """(total, compute, simulated?): simulated cycles where the point was simulated, else the model's.
    A simulated kernel that does not stamp the end of its compute (MeshGEMM, Cannon, SUMMA overlap it
    with communication) has no measured compute part: None."""
    if r.get("simulated_cycles") is not None:
        comp = r.get("sim_compute_cycles")
        return float(r["simulated_cycles"]), None if comp is None else float(comp), True
    return float(r["predicted_cycles"]), float(r["predicted_compute_cycles"] or 0), False


def _side(r: dict) -> float:
    return math.sqrt(r["mesh_rows"] * r["mesh_cols"])


def _size_label(r: dict) -> str:
    if r["kernel"] in GEMV_FAMILY:
        return f"GEMV [1x{r['k']}]x[{r['k']}x{r['n']}] {r['dtype']}"
    return f"GEMM {r['m']}x{r['k']}x{r['n']} {r['dtype']}"


def _size_key(r: dict) -> tuple:
    return (r["kernel"] in GEMV_FAMILY, r["m"], r["k"], r["n"], r["dtype"], r["hardware"])


def _algorithm(r: dict) -> str:
    name = r["kernel"]
    if name == "meshgemv" and r.get("k_tree"):
        name += f" K={r['k_tree']}" + (f" g={r['group_size']}" if r.get("group_size") else "")
    return name


def _style(name: str) -> dict:
    return {"linestyle": "--" if "-bsp" in name else "-"}


def _plot_points(ax, xs, ys, sim, color, label, linestyle="-") -> None:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    xs = [xs[i] for i in order]
    ys = [ys[i] for i in order]
    sim = [sim[i] for i in order]
    ax.plot(xs, ys, color=color, linestyle=linestyle, linewidth=1.4, label=label)
    for s, fill in ((True, color), (False, "none")):
        px = [x for x, f in zip(xs, sim) if f == s]
        py = [y for y, f in zip(ys, sim) if f == s]
        if px:
            ax.plot(px, py, "o", color=color, markerfacecolor=fill, markersize=5, linestyle="none")


def _marker_legend(ax) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", color="0.3", linestyle="none", label="simulated"),
                Line2D([], [], marker="o", color="0.3", markerfacecolor="none", linestyle="none", label="PLMR model")]
    ax.legend(handles=handles, fontsize=7, loc="best")


def _log_if_wide(ax, values) -> None:
    vals = [v for v in values if v and v > 0]
    if vals and max(vals) / min(vals) > 20:
        ax.set_yscale("log")


def _panels(n: int, width: float = 5.2, height: float = 3.8):
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _by_size(rows: list[dict], limit: int = 4) -> list[list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[_size_key(r)].append(r)
    return sorted(groups.values(), key=len, reverse=True)[:limit]


def _representative(rows: list[dict]) -> list[dict]:
    """One MeshGEMV line per size: K = 2 if swept, else the smallest K; default group size."""
    ks = {r["k_tree"] for r in rows if r["kernel"] == "meshgemv"}
    keep_k = 2 if 2 in ks else (min(ks) if ks else None)
    return [r for r in rows if r["kernel"] != "meshgemv" or (r["k_tree"] == keep_k and r["group_size"] is None)]


def fig_cycles(rows: list[dict]) -> Figure | None:
    rows = _representative([r for r in _ok(rows, "kernel")])
    groups = [g for g in _by_size(rows) if len({_side(r) for r in g}) > 1]
    if not groups:
        return None
    fig, axes = _panels(len(groups))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, group in zip(axes, groups):
        lines: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            lines[_algorithm(r)].append(r)
        allv = []
        for i, (name, pts) in enumerate(sorted(lines.items())):
            c = colors[i % len(colors)]
            xs = [_side(r) for r in pts]
            tot = [kernel_cycles(r) for r in pts]
            _plot_points(ax, xs, [t[0] for t in tot], [t[2] for t in tot], c, name, **_style(name))
            comp = sorted((x, t[1]) for x, t in zip(xs, tot) if t[1] is not None)
            ax.plot([x for x, _ in comp], [y for _, y in comp], color=c, linestyle=":", linewidth=1.0)
            allv += [t[0] for t in tot] + [y for _, y in comp]
        _log_if_wide(ax, allv)
        ax.set_xlabel("mesh side (√PEs)")
        ax.set_ylabel("cycles (total; dotted: compute)")
        ax.set_title(_size_label(group[0]), fontsize=9)
        ax.grid(alpha=0.3)
        _marker_legend(ax)
    fig.tight_layout()
    return Figure("cycles", "Cycles vs mesh size per algorithm",
                  "Total cycles per algorithm (solid: barrier-free, dashed: bulk-synchronous); the dotted line "
                  "of the same colour is the compute part, the gap above it communication: the PLMR model's "
                  "split, or the simulated one where the kernel stamps the end of its compute (the GEMV "
                  "kernels); simulated kernels that overlap compute and communication have no dotted part. "
                  "Filled markers: simulated; hollow: PLMR model.", fig)


def fig_ratios(rows: list[dict], published: dict | None = None) -> Figure | None:
    """Baseline cycles / MeshGEMM (or MeshGEMV K = 2) cycles at the same mesh, one panel per
    problem size."""
    rows = _representative(_ok(rows, "kernel"))
    ref_at = {(_size_key(r), r["mesh"]): kernel_cycles(r) for r in rows
              if r["kernel"] == (GEMV_REFERENCE if r["kernel"] in GEMV_FAMILY else GEMM_REFERENCE)}
    panels: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    labels = {}
    for r in rows:
        family = r["kernel"] in GEMV_FAMILY
        if r["kernel"] in (GEMM_REFERENCE, GEMV_REFERENCE):
            continue
        base = ref_at.get((_size_key(r), r["mesh"]))
        if base and base[0] > 0:
            c = kernel_cycles(r)
            panels[_size_key(r)][r["kernel"]].append((_side(r), c[0] / base[0], c[2] and base[2]))
            labels[_size_key(r)] = (_size_label(r), GEMV_REFERENCE if family else GEMM_REFERENCE, family)
    chosen = sorted(panels, key=lambda k: -sum(len(v) for v in panels[k].values()))[:4]
    if not chosen:
        return None
    published = published or {}
    fig, axes = _panels(len(chosen))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes, chosen):
        size, ref, family = labels[key]
        series = panels[key]
        for i, (kernel, pts) in enumerate(sorted(series.items())):
            pts.sort()
            _plot_points(ax, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts],
                         colors[i % len(colors)], kernel, **_style(kernel))
        if family and published.get("meshgemv_vs_pipeline_gemv"):
            ax.axhline(published["meshgemv_vs_pipeline_gemv"], color="k", linewidth=0.8, linestyle="-.",
                       label=f"paper: pipeline / MeshGEMV = {published['meshgemv_vs_pipeline_gemv']}")
        if not family and published.get("meshgemm_vs_summa_cannon"):
            lo, hi = published["meshgemm_vs_summa_cannon"]
            ax.axhspan(lo, hi, color="k", alpha=0.08, label=f"paper: SUMMA, Cannon / MeshGEMM = {lo:g}-{hi:g}")
        ax.axhline(1.0, color="0.5", linewidth=0.6)
        ax.set_xlabel("mesh side (√PEs)")
        ax.set_ylabel(f"cycles / {ref} cycles")
        ax.set_title(f"vs {ref}, {size}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        _log_if_wide(ax, [p[1] for pts in series.values() for p in pts] + [1.0])
        _marker_legend(ax)
    fig.tight_layout()
    return Figure("ratios", "Baselines vs MeshGEMM / MeshGEMV under both execution semantics",
                  "Each baseline's cycles divided by MeshGEMM's (GEMM) or MeshGEMV's (GEMV, K = 2) at the same "
                  "mesh and size: solid lines are barrier-free kernels (per-PE joins, as CSL tasks run), dashed "
                  "ones bulk-synchronous (a fabric barrier after every step). The grey band and dash-dotted line "
                  "are the ratios the paper publishes.", fig)


def fig_ksweep(rows: list[dict]) -> Figure | None:
    rows = [r for r in _ok(rows, "kernel") if r["kernel"] == "meshgemv"]
    groups = [g for g in _by_size(rows) if len({(r["k_tree"], r["group_size"]) for r in g}) > 1]
    if not groups:
        return None
    fig, axes = _panels(len(groups))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, group in zip(axes, groups):
        lines: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            lines[_algorithm(r)].append(r)
        sides = {_side(r) for r in group}
        for i, (name, pts) in enumerate(sorted(lines.items())):
            c = colors[i % len(colors)]
            if len(sides) > 1:
                tot = [kernel_cycles(r) for r in pts]
                _plot_points(ax, [_side(r) for r in pts], [t[0] for t in tot], [t[2] for t in tot], c, name)
            else:
                t = kernel_cycles(pts[0])
                ax.bar([i], [t[0]], color=c if t[2] else "none", edgecolor=c, label=name)
        if len(sides) > 1:
            ax.set_xlabel("mesh side (√PEs)")
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"mesh {group[0]['mesh']}")
        ax.set_ylabel("cycles")
        ax.set_title(f"MeshGEMV K sweep, {_size_label(group[0])}", fontsize=9)
        ax.grid(alpha=0.3)
        _marker_legend(ax)
    fig.tight_layout()
    return Figure("ksweep", "MeshGEMV: the K sweep",
                  "MeshGEMV cycles per K of the K-tree allreduce (and level-1 group size g where swept).", fig)


def _plan_lines(rows: list[dict]) -> dict[str, list[dict]]:
    lines: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        lines[f"{r['model']} ({r['method']}, {r['hardware']})"].append(r)
    return lines


def fig_tokens(rows: list[dict]) -> Figure | None:
    rows = _ok(rows, "plan")
    panels = []
    for phase in ("decode", "prefill"):
        if len({r[f"{phase}_rows"] * r[f"{phase}_cols"] for r in rows}) > 1:
            panels.append(phase)
    if not panels:
        return None
    fig, axes = _panels(len(panels))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, phase in zip(axes, panels):
        for i, (name, pts) in enumerate(sorted(_plan_lines(rows).items())):
            xs = [math.sqrt(r[f"{phase}_rows"] * r[f"{phase}_cols"]) for r in pts]
            ys = [r[f"{phase}_tokens_per_s"] for r in pts]
            _plot_points(ax, xs, ys, [False] * len(xs), colors[i % len(colors)], name)
        ax.set_xlabel(f"{phase} grid side (√PEs)")
        ax.set_ylabel(f"{phase} tokens/s")
        ax.set_title(f"{phase}: tokens/s vs grid", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("tokens", "Tokens/s vs grid, per phase",
                  "Predicted (PLMR model) prefill and decode throughput against the grid of that phase.", fig)


def fig_kv(rows: list[dict]) -> Figure | None:
    rows = [r for r in _ok(rows, "plan") if r.get("kv_shift_tokens") is not None]
    if len({r["decode_rows"] * r["decode_cols"] for r in rows}) < 2:
        return None
    fig, (ax,) = _panels(1, 6.4, 4.0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, pts) in enumerate(sorted(_plan_lines(rows).items())):
        pts = sorted(pts, key=lambda r: r["decode_rows"] * r["decode_cols"])
        xs = [math.sqrt(r["decode_rows"] * r["decode_cols"]) for r in pts]
        c = colors[i % len(colors)]
        ax.plot(xs, [r["kv_shift_tokens"] for r in pts], "o-", color=c, markerfacecolor="none",
                label=f"{name}: shifting")
        ax.plot(xs, [max(r["kv_concat_tokens"], 0.5) for r in pts], "s--", color=c, markerfacecolor="none",
                label=f"{name}: concatenation")
    ax.set_yscale("log")
    ax.set_xlabel("decode grid side (√PEs)")
    ax.set_ylabel("KV-cache capacity (tokens)")
    ax.set_title("KV capacity: shift-based cache vs concatenation", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("kv", "KV-cache capacity, shifting vs concatenation",
                  "Tokens the whole wafer's KV cache holds with the shift-based cache (balanced over every row) "
                  "and with concatenation (one row fills), PLMR model.", fig)


def fig_heatmaps(row: dict, arrays: dict) -> Figure:
    """Per-PE SRAM bytes, fabric wavelets sent and busy cycles of one simulated point."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], (("sram_bytes", "SRAM bytes per PE"),
                                           ("link_wavelets", "wavelets sent on fabric links, per router"),
                                           ("busy", "busy cycles per PE"))):
        im = ax.imshow(arrays[key], cmap="viridis", interpolation="nearest", aspect="auto")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("x (column)")
        ax.set_ylabel("y (row)")
        fig.colorbar(im, ax=ax, shrink=0.85)
    how = "functional" if row["evaluator"] == "simulate" else "timing-only"
    fig.suptitle(f"{row['kernel']} on {row['mesh']} PEs, {_size_label(row)}, {how} simulation",
                 fontsize=10)
    fig.tight_layout()
    name = f"heatmaps_{row['kernel']}_{row['mesh']}"
    return Figure(name, f"Per-PE heatmaps: {row['kernel']} on {row['mesh']}",
                  "From the simulation of this point: buffer bytes each PE holds, wavelets each router sends on "
                  "its four fabric links, and cycles each PE was busy.", fig)


def heatmap_rows(rows: list[dict], limit: int = 3) -> list[dict]:
    """The simulated points to draw heatmaps of: the largest mesh of each kernel, up to ``limit``."""
    best: dict[str, dict] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("sim_arrays"):
            cur = best.get(r["kernel"])
            if cur is None or r["mesh_rows"] * r["mesh_cols"] > cur["mesh_rows"] * cur["mesh_cols"]:
                best[r["kernel"]] = r
    return [best[k] for k in sorted(best)][:limit]


def all_figures(rows: list[dict], load_arrays: Callable[[dict], dict | None] | None = None,
                published: dict | None = None) -> list[Figure]:
    """Every figure the rows support, in report order."""
    out = [f for f in (fig_cycles(rows), fig_ratios(rows, published), fig_ksweep(rows), fig_tokens(rows),
                       fig_kv(rows)) if f is not None]
    if load_arrays is not None:
        for r in heatmap_rows(rows):
            arrays = load_arrays(r)
            if arrays:
                out.append(fig_heatmaps(r, arrays))
    return out


def close(figures: list[Figure]) -> None:
    for f in figures:
        plt.close(f.figure)
