"""``waferllm sweep``: evaluate the product of parameter lists (flags or a TOML file) with the PLMR
model or the simulator, locally or on a Dask cluster, into a results table that survives faults
(``waferllm.results``). Registered in ``waferllm.cli`` with ``main.add_command(sweep)``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from plmr.errors import InputError

_LIST = "comma-separated list; repeatable"


def _axis_option(name: str, help_text: str):
    return click.option("--" + name.replace("_", "-"), name, multiple=True, help=f"{help_text} ({_LIST})")


def _axis_options(f):
    from waferllm.sweep import AXES

    for name in reversed(list(AXES)):
        f = _axis_option(name, AXES[name].help)(f)
    return f


@click.command("sweep")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False),
              help="results directory (results.csv; re-running skips finished points)")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML sweep file ([sweep] axis = [values]); "
              "flags replace its axes")
@_axis_options
@click.option("--simulate", is_flag=True, help="run kernels on the simulator against numpy (else: PLMR model)")
@click.option("--timing-only", is_flag=True, help="with --simulate: timing-only simulation (no data)")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="worker processes (local) or LocalCluster workers [default: CPU count]")
@click.option("--scheduler", help="run on dask.distributed: a scheduler address, or 'local' for a LocalCluster")
@click.option("--retry-failed", is_flag=True, help="re-evaluate points recorded with an error")
@click.option("--dry-run", is_flag=True, help="list the points and exit")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary object")
def sweep(out: str, config: str | None, simulate: bool, timing_only: bool, workers: int | None,
          scheduler: str | None, retry_failed: bool, dry_run: bool, no_progress: bool, as_json: bool,
          **axes_flags) -> None:
    """Evaluate a sweep of kernel or plan points into OUT/results.csv.

    \b
    Kernels:  waferllm sweep --kernel meshgemv,gemv-pipeline --mesh 8:64:8 --size 4096 -o runs/gemv
    Plans:    waferllm sweep --model llama3-8b --decode-grid 200:600:100 --method paper -o runs/plan
    Simulate: add --simulate (functional, vs numpy) or --simulate --timing-only
    Cluster:  add --scheduler local (a LocalCluster) or --scheduler tcp://host:8786

    Then: waferllm report OUT -o OUT/report.html
    """
    from plmr.atomic_output import atomic_write
    from waferllm.results import SPEC_FILENAME, ResultsTable
    from waferllm.sweep import AXES, Sweep, load_sweep_file, parse_values, split_list
    from waferllm.sweep_run import resolve_workers, run_sweep

    workers = resolve_workers(workers)  # before the results directory is made
    if timing_only and not simulate:
        raise InputError("--timing-only goes with --simulate")
    axes, evaluator = load_sweep_file(config) if config else ({}, None)
    for name, given in axes_flags.items():
        if given:
            values = [v for g in given for v in split_list(g)]
            if not values:
                raise InputError(f"--{name.replace('_', '-')}: no values")
            axes[name] = parse_values(AXES[name], values)
    if simulate:
        evaluator = "timing" if timing_only else "simulate"
    sw = Sweep(axes, evaluator or "model")
    points = sw.points()
    if dry_run:
        if as_json:
            click.echo(json.dumps({"schema": 1, "points": points}))
        else:
            click.echo(f"{len(points)} point{'s' * (len(points) != 1)} ({sw.kind}, evaluator {sw.evaluator})")
            for line in _point_lines(points):
                click.echo(line)
        return
    with ResultsTable(out, retry_failed=retry_failed) as table:
        atomic_write(table.directory / SPEC_FILENAME, sw.to_toml().encode())
        errors: Counter = Counter()
        summary = run_sweep(points, table, workers=workers, scheduler=scheduler, progress=not no_progress,
                            on_row=lambda r: r["status"] != "ok" and errors.update([r["error"]]))
    if as_json:
        click.echo(json.dumps({"schema": 1, "results": str(table.path), "points": summary.total,
                               "skipped": summary.skipped, "ok": summary.ok, "errors": summary.errors,
                               "seconds": round(summary.seconds, 3)}))
        return
    rate = summary.evaluated / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(f"{summary.total} points: {summary.ok} evaluated, {summary.errors} failed, {summary.skipped} "
               f"already done ({summary.seconds:.1f} s, {rate:.1f} points/s) -> {table.path}")
    for message, count in errors.most_common(5):
        click.echo(f"  {count} x {message}")
    click.echo(f"report: waferllm report {out} -o {Path(out) / 'report.html'}")


def _point_lines(points: list[dict]) -> list[str]:
    """The points one per line: the fields shared by all first ("every point: ..."), then each point's
    own (None fields, left to the planner or the kernel's default, are not shown)."""
    keys = [k for k in points[0] if k not in ("kind", "evaluator")] if points else []
    shared = [k for k in keys if len({str(p[k]) for p in points}) == 1]
    lines = []
    common = " ".join(f"{k}={points[0][k]}" for k in shared if points[0][k] is not None)
    if common and len(points) > 1:
        lines.append(f"every point: {common}")
    own = [k for k in keys if k not in shared] if len(points) > 1 else shared
    for p in points:
        lines.append("  " + " ".join(f"{k}={p[k]}" for k in own if p[k] is not None))
    return lines
