"""The ``waferllm`` command line (click).

Every user mistake surfaces as one line on stderr and exit status 2; heavy libraries (transformers,
numba, rich) are imported only by the commands that need them, so ``waferllm plan`` starts fast.
"""

from __future__ import annotations

import importlib
import json
import sys

import click

from plmr.errors import InputError
from waferllm.grids import parse_grid  # noqa: F401  (re-exported for tests and scripts)


#: Version of the JSON objects of `hardware list`, `models` and `calibration` (`plan`, `kernel`, `run`,
#: `compile`, `sweep` and `csl check` carry their own): bump when a key changes meaning.
CLI_SCHEMA = 1


class _Group(click.Group):
    """Turns ``InputError`` and click's usage errors (a bad option value, an unknown option or
    command) into one line ``Error: <message>`` and exit 2, without a traceback.

    ``lazy`` maps command names to ``"module:attribute"``: the module is imported when the command
    is used or listed, so one command's imports (numpy for ``sweep``) do not slow the others."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands and name in self._lazy:
            module, attr = self._lazy.pop(name).split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # No path, name or number can hold a NUL byte; the OS would raise ValueError deep inside.
        bad = next((a for a in args if "\x00" in a), None)
        if ctx.parent is None and bad is not None:
            click.echo(f"Error: argument {bad!r} contains a NUL byte; arguments are plain text", err=True)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"Error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
            ctx.exit(2)
        except click.exceptions.NoArgsIsHelpError as exc:
            # A group named without a command: its help, as for the top-level group (no "Error:").
            click.echo(exc.format_message(), err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"Error: {exc.format_message()} (see '{where} --help')", err=True)
            ctx.exit(2)


def _console():
    from rich.console import Console

    return Console()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             lazy={"kernel": "waferllm.kernel_cli:kernel", "csl": "waferllm.csl_cli:csl",
                   "sweep": "waferllm.sweep_cli:sweep", "report": "waferllm.report_cli:report",
                   "deploy": "waferllm.deploy_cli:deploy", "compile": "waferllm.compile_cli:compile_cmd",
                   "run": "waferllm.run_cli:run_cmd"})
@click.version_option(package_name="waferllm")
def main() -> None:
    """Plan, simulate and build LLM inference for wafer-scale mesh accelerators (WaferLLM)."""


# --------------------------------------------------------------------------------------------
# hardware
# --------------------------------------------------------------------------------------------

@main.group(cls=_Group)
def hardware() -> None:
    """The hardware catalog (built-in targets and custom TOML/JSON specs)."""


@hardware.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--wide", is_flag=True, help="show every column, whatever the terminal width")
def hardware_list(as_json: bool, wide: bool) -> None:
    """List the built-in hardware targets."""
    from plmr.hardware import BUILTIN_SPECS
    from waferllm.tables import Column, print_table

    if as_json:
        click.echo(json.dumps({"schema": CLI_SCHEMA, "hardware": [{"name": s.name, "description": s.description}
                                                                  for s in BUILTIN_SPECS.values()]}))
        return
    cols = [Column("name", no_wrap=True), Column("mesh (rows x cols)"), Column("SRAM/PE", 2, "right"),
            Column("colours", 3), Column("clock", 4, "right"), Column("description", 1, wrap_to=24)]
    rows = [(s.name, f"{s.mesh_height} x {s.mesh_width}", f"{s.sram_bytes // 1024} KB",
             f"{len(s.routable_colors)} routable", f"{s.clock_hz / 1e9:g} GHz", s.description)
            for s in BUILTIN_SPECS.values()]
    print_table("hardware targets", cols, rows, wide)


@hardware.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--wide", is_flag=True, help="print at the table's natural width (no wrapping)")
def hardware_show(name: str, as_json: bool, wide: bool) -> None:
    """Show every field of a target (NAME is a built-in or a .toml/.json file)."""
    from plmr.hardware import HARDWARE_SCHEMA, get_spec
    from waferllm.tables import Column, print_table

    spec = get_spec(name)
    d = spec.to_dict()
    if as_json:  # a spec file as `--hardware FILE` reads it (the schema key included)
        click.echo(json.dumps({**d, "schema": HARDWARE_SCHEMA}, indent=2))
        return
    rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in d.items()]
    print_table(f"hardware {spec.name}", [Column("field", no_wrap=True), Column("value", wrap_to=30)], rows,
                wide)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--wide", is_flag=True, help="show every column, whatever the terminal width")
def models(as_json: bool, wide: bool) -> None:
    """List the offline model catalog (official config.json files shipped with waferllm)."""
    from waferllm.catalog import catalog_names, load_catalog_model
    from waferllm.tables import Column, print_table

    specs = [load_catalog_model(n) for n in catalog_names()]
    if as_json:
        click.echo(json.dumps({"schema": CLI_SCHEMA, "models": [s.to_dict() for s in specs]}, indent=2))
        return
    cols = [Column("name", no_wrap=True), Column("params", 0, "right"), Column("layers", 0, "right"),
            Column("hidden", 0, "right"), Column("heads", 2, "right"), Column("kv heads", 1, "right"),
            Column("head dim", 3, "right"), Column("ffn", 2, "right"), Column("vocab", 4, "right"),
            Column("architecture", 5)]
    rows = [(s.name, f"{s.total_params / 1e9:.2f} B", s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads,
             s.head_dim, s.intermediate_size, s.vocab_size, s.architecture) for s in specs]
    print_table("model catalog", cols, rows, wide)


# --------------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------------

@main.command("plan")
@click.argument("model")
@click.option("--hardware", "hardware_name", default="wse2", show_default=True,
              help="built-in target name or a .toml/.json spec file")
@click.option("--method", type=click.Choice(["full", "paper"]), default="full", show_default=True,
              help="full: the real model; paper: the authors' conventions (one layer x layers)")
@click.option("--prefill-grid", help="force the prefill grid: N or HxW")
@click.option("--decode-grid", help="force the decode grid: N or HxW")
@click.option("--k-tree", type=int, help="force K of the K-tree allreduce")
@click.option("--context", type=int, help="KV tokens a decode step attends to [default: input + output]")
@click.option("--input-len", type=int, default=4096, show_default=True, help="prompt tokens")
@click.option("--output-len", type=int, default=128, show_default=True, help="generated tokens")
@click.option("--dtype", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--batch", type=int, default=1, show_default=True,
              help="decode requests sharing the weights (each with its own KV cache)")
@click.option("--wafers", default="1", show_default=True,
              help="systems to pipeline the layers over: at most this many (the stages fill them in order; a note "
                   "says when fewer hold the model), or 'auto' for the fewest that fit")
@click.option("--program-memory", is_flag=True,
              help="charge the programs' own bytes per PE too (code, variables, the prefill program's buffers)")
@click.option("--wide", is_flag=True, help="show every column (default: fit the terminal width)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def plan_cmd(model: str, hardware_name: str, method: str, prefill_grid: str | None, decode_grid: str | None,
             k_tree: int | None, context: int | None, input_len: int, output_len: int, dtype: str,
             batch: int, wafers: str, program_memory: bool, wide: bool, as_json: bool) -> None:
    """Plan MODEL (catalog name or HF model directory) on one or several wafers and predict its speed."""
    from plmr.hardware import get_spec
    from waferllm.catalog import resolve_model
    from waferllm.planner import MAX_WAFERS, PlanRequest, plan

    spec = get_spec(hardware_name)
    if wafers.strip().lower() == "auto":
        n_wafers: int | str = "auto"
    else:
        try:
            n_wafers = int(wafers)
        except ValueError:
            raise InputError(f"--wafers {wafers!r}: expected an integer in 1..{MAX_WAFERS} or 'auto'") from None
    req = PlanRequest(hardware=spec, method=method, prefill_grid=parse_grid(prefill_grid, "prefill-grid"),
                      decode_grid=parse_grid(decode_grid, "decode-grid"), k_tree=k_tree, context=context,
                      input_len=input_len, output_len=output_len, dtype=dtype, batch=batch, wafers=n_wafers,
                      program_memory=program_memory)
    model_spec = resolve_model(model)
    result = plan(model_spec, req)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from waferllm.report import render_plan

    render_plan(result, _console(), wide=wide)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------

@main.command("calibration")
@click.option("--hardware", "hardware_name", default="wse2", show_default=True,
              help="wse2, or a spec file that differs from it only in the fitted overheads (op_issue_cycles, "
                   "relay_cycles): the published figures were measured on a WSE-2")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--wide", is_flag=True, help="print at the table's natural width (no wrapping)")
def calibration_cmd(hardware_name: str, as_json: bool, wide: bool) -> None:
    """Predicted vs published WaferLLM figures (LLaMA3-8B on WSE-2) with the current parameters."""
    from plmr.hardware import get_spec
    from waferllm.calibration import check_hardware, check_targets, predict_targets
    from waferllm.tables import Column, print_table

    spec = get_spec(hardware_name)
    check_hardware(spec)
    rows = predict_targets(spec) + check_targets(spec)
    if as_json:
        click.echo(json.dumps({"schema": CLI_SCHEMA, "hardware": spec.name,
                               "figures": [{"figure": r.figure, "published": r.published, "predicted": r.predicted,
                                            "error": r.error} for r in rows]}, indent=2))
        return
    cols = [Column("figure"), Column("published", 0, "right"), Column("predicted", 0, "right"),
            Column("error", 0, "right")]
    print_table(f"calibration ({spec.name})", cols,
                [(r.figure, f"{r.published:,.1f}", f"{r.predicted:,.1f}", f"{r.error:+.1%}") for r in rows], wide)


def run() -> None:  # pragma: no cover - console entry for `python -m waferllm`
    main(prog_name="waferllm")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
