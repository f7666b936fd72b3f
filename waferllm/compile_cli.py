"""``waferllm compile MODEL --hardware NAME [--context N] -o BUNDLE``: plan a model onto a wafer and write a
bundle (``waferllm.compile``). Registered in ``waferllm.cli``; user mistakes are one ``Error:`` line and
exit 2; an interrupted compile leaves no bundle."""

from __future__ import annotations

import json

import click

from waferllm.grids import parse_grid


@click.command("compile")
@click.argument("model")
@click.option("--hardware", "hardware_name", default="wse2", show_default=True,
              help="built-in target name or a .toml/.json spec file")
@click.option("--context", type=int, help="KV tokens the decode program holds [default: min(4224, the model's "
                                          "max_position_embeddings)]")
@click.option("--dtype", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="the decode program's element type (weights, KV cache)")
@click.option("--decode-grid", help="force the decode region shape: N or HxW (rows x columns)")
@click.option("--prefill-grid", help="force the prefill grid the plan reports: N or HxW")
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="bundle directory to write")
@click.option("--force", is_flag=True, help="replace an existing bundle (a directory compile wrote; never anything else)")
@click.option("--json", "as_json", is_flag=True, help="print the bundle's plan.json summary as JSON")
def compile_cmd(model: str, hardware_name: str, context: int | None, dtype: str, decode_grid: str | None,
                prefill_grid: str | None, out: str, force: bool, as_json: bool) -> None:
    """Plan MODEL (catalog name or HF model directory) on a wafer and write a runnable bundle."""
    from pathlib import Path

    from waferllm.compile import CompileRequest, compile_bundle
    from waferllm.activity import activity

    req = CompileRequest(model=model, hardware=hardware_name, context=context, dtype=dtype,
                         decode_grid=parse_grid(decode_grid, "decode-grid"),
                         prefill_grid=parse_grid(prefill_grid, "prefill-grid"), out=Path(out), force=force)
    with activity(f"compile {model}") as step:
        doc = compile_bundle(req, progress=step)
    dp = doc["decode_program"]
    if as_json:
        click.echo(json.dumps({"schema": doc["schema"], "bundle": out, "model": doc["model"],
                               "hardware": doc["hardware"]["name"], "dtype": doc["dtype"],
                               "context": doc["context"], "weights": doc["weights"]["present"],
                               "decode_program": dp, "notes": doc["notes"]}, indent=2))
        return
    g = dp["grid"]
    st = dp["stages"]
    click.echo(f"{doc['model']} -> {out}: {len(st)} stage(s) of {g[0]}x{g[1]} PEs on {doc['hardware']['name']}, "
               f"{doc['dtype']}, KV {dp['capacity']} entries per PE ({dp['capacity'] * g[0]} tokens per layer)")
    for s in st:
        extras = [e for e, on in (("embedding", s["embedding"]), ("LM head", s["lm_head"])) if on]
        click.echo(f"  stage {s['stage']}: layers {s['layers'][0]}-{s['layers'][1]} at (y={s['origin'][0]}, "
                   f"x={s['origin'][1]})" + (f" + {', '.join(extras)}" if extras else ""))
    if not doc["weights"]["present"]:
        click.echo("  no weights (catalog model): run it with --timing-only")
    for n in doc["notes"]:
        click.echo(f"  note: {n}")
