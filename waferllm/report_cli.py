"""``waferllm report RESULTS -o report.html``: one self-contained HTML page (figures embedded) from
a sweep's results table, with PNG copies of the figures beside it. Registered in ``waferllm.cli``."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("results", type=click.Path())
@click.option("-o", "--out", "out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write (the PNGs go to <name>_figures/ beside it)")
@click.option("--title", default=None, help="page title [default: from the results]")
def report(results: str, out: str, title: str | None) -> None:
    """Write an HTML report of RESULTS (a sweep directory or its results.csv)."""
    from waferllm.activity import activity
    from waferllm.sweep_report import write_report

    with activity("report") as step:  # a spinner on a terminal's stderr
        written = write_report(results, out, title=title, progress=step)
    click.echo(f"wrote {written.html} ({len(written.figures)} figures, PNGs in {written.figure_dir})")
