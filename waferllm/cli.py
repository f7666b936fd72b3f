"""The ``waferllm`` command line (click).

Every user mistake surfaces as one line on stderr and exit status 2; heavy libraries (transformers,
numba, rich) are imported only by the commands that need them, so ``waferllm plan`` starts fast.
"""

from __future__ import annotations

import json
import sys

import click

from plmr.errors import InputError
from waferllm.grids import parse_grid  # noqa: F401  (re-exported for tests and scripts)


class _Group(click.Group):
    """Turns ``InputError`` into ``Error: <message>`` and exit 2, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"Error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
            ctx.exit(2)


def _console():
    from rich.console import Console

    return Console()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
def hardware_list(as_json: bool) -> None:
    """List the built-in hardware targets."""
    from plmr.hardware import BUILTIN_SPECS

    if as_json:
        click.echo(json.dumps([{"name": s.name, "description": s.description} for s in BUILTIN_SPECS.values()]))
        return
    from rich.table import Table

    table = Table(title="hardware targets")
    for col in ("name", "mesh (rows x cols)", "SRAM/PE", "colours", "clock", "description"):
        table.add_column(col)
    for s in BUILTIN_SPECS.values():
        table.add_row(s.name, f"{s.mesh_height} x {s.mesh_width}", f"{s.sram_bytes // 1024} KB",
                      f"{len(s.routable_colors)} routable", f"{s.clock_hz / 1e9:g} GHz", s.description)
    _console().print(table)


@hardware.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def hardware_show(name: str, as_json: bool) -> None:
    """Show every field of a target (NAME is a built-in or a .toml/.json file)."""
    from plmr.hardware import get_spec

    spec = get_spec(name)
    d = spec.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"hardware {spec.name}")
    table.add_column("field")
    table.add_column("value")
    for k, v in d.items():
        table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    _console().print(table)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def models(as_json: bool) -> None:
    """List the offline model catalog (official config.json files shipped with waferllm)."""
    from waferllm.catalog import catalog_names, load_catalog_model

    specs = [load_catalog_model(n) for n in catalog_names()]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in specs], indent=2))
        return
    from rich.table import Table

    table = Table(title="model catalog")
    table.add_column("name", no_wrap=True)
    for col in ("architecture", "layers", "hidden", "heads", "kv heads", "head dim", "ffn", "vocab", "params"):
        table.add_column(col)
    for s in specs:
        table.add_row(s.name, s.architecture, str(s.num_layers), str(s.hidden_size), str(s.num_heads),
                      str(s.num_kv_heads), str(s.head_dim), str(s.intermediate_size), str(s.vocab_size),
                      f"{s.total_params / 1e9:.2f} B")
    _console().print(table)


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
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def plan_cmd(model: str, hardware_name: str, method: str, prefill_grid: str | None, decode_grid: str | None,
             k_tree: int | None, context: int | None, input_len: int, output_len: int, dtype: str,
             as_json: bool) -> None:
    """Plan MODEL (catalog name or HF model directory) on a wafer and predict its speed."""
    from plmr.hardware import get_spec
    from waferllm.catalog import resolve_model
    from waferllm.planner import PlanRequest, plan

    spec = get_spec(hardware_name)
    req = PlanRequest(hardware=spec, method=method, prefill_grid=parse_grid(prefill_grid, "prefill-grid"),
                      decode_grid=parse_grid(decode_grid, "decode-grid"), k_tree=k_tree, context=context,
                      input_len=input_len, output_len=output_len, dtype=dtype)
    model_spec = resolve_model(model)
    result = plan(model_spec, req)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from waferllm.report import render_plan

    render_plan(result, _console())


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------

@main.command("calibration")
@click.option("--hardware", "hardware_name", default="wse2", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def calibration_cmd(hardware_name: str, as_json: bool) -> None:
    """Predicted vs published WaferLLM figures (LLaMA3-8B on WSE-2) with the current parameters."""
    from plmr.hardware import get_spec
    from waferllm.calibration import check_targets, predict_targets

    spec = get_spec(hardware_name)
    rows = predict_targets(spec) + check_targets(spec)
    if as_json:
        click.echo(json.dumps([{"figure": r.figure, "published": r.published, "predicted": r.predicted,
                                "error": r.error} for r in rows], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"calibration ({spec.name})")
    for col in ("figure", "published", "predicted", "error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.figure, f"{r.published:,.1f}", f"{r.predicted:,.1f}", f"{r.error:+.1%}")
    _console().print(table)


# --------------------------------------------------------------------------------------------
# kernel (its module imports numpy, numba and the simulator only inside the command)
# --------------------------------------------------------------------------------------------

from waferllm.kernel_cli import kernel  # noqa: E402

from waferllm.deploy_cli import deploy  # noqa: E402

main.add_command(kernel)
main.add_command(deploy)


def run() -> None:  # pragma: no cover - console entry for `python -m waferllm`
    main(prog_name="waferllm")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
