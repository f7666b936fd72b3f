"""``waferllm run BUNDLE (--prompt-ids 1,2,3 | --prompt TEXT) --max-new-tokens N [--dtype fp32|fp16]
[--timing-only] [--json]``: a compiled bundle on the simulated wafer (``waferllm.run``). Registered in
``waferllm.cli``; user mistakes are one ``Error:`` line and exit 2. A run that fills the KV cache prints
the tokens it produced, then the error, and exits 2."""

from __future__ import annotations

import json
import sys

import click

from plmr.errors import InputError


def _ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    text_ = text.replace(" ", "")
    if not text_:
        return []  # run_bundle says the prompt is empty
    try:
        return [int(t) for t in text_.split(",")]  # an empty item (1,,2 or 1,2,) is a typo: refused
    except ValueError:
        raise InputError(f"--prompt-ids {text!r}: expected comma-separated token ids, e.g. 1,2,3") from None


@click.command("run")
@click.argument("bundle", type=click.Path())
@click.option("--prompt-ids", help="the prompt as token ids, comma-separated")
@click.option("--prompt", help="the prompt as text (needs the model's tokenizer in the bundle)")
@click.option("--prompt-len", type=int, help="with --timing-only: a prompt of N tokens (their values do not matter)")
@click.option("--max-new-tokens", type=int, default=16, show_default=True, help="tokens to generate")
@click.option("--dtype", type=click.Choice(["fp32", "fp16"]), help="element type [default: the bundle's]")
@click.option("--timing-only", is_flag=True, help="simulate cycles only (no data; tokens are not computed; where control depends on values, e.g. which column holds the next token's embedding row, cycles differ slightly from a functional run)")
@click.option("--prefill", type=click.Choice(["auto", "device", "host"]), default="auto", show_default=True,
              help="where the prompt runs: simulated prefill regions (device), numpy on the host (host: not "
                   "simulated), or auto: the device when one layer of the prompt fits a prefill region and the "
                   "simulation is small (up to 1e10 PE-cycles: minutes), else the host with the reason in the "
                   "output")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="cut each simulated cycle into this many concurrent parts (regions of 16,384 PEs or more; "
                   "same results) [default: WAFERLLM_SIM_THREADS, else 1]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def run_cmd(bundle: str, prompt_ids: str | None, prompt: str | None, prompt_len: int | None, max_new_tokens: int,
            dtype: str | None, timing_only: bool, prefill: str, threads: int | None, as_json: bool) -> None:
    """Generate with BUNDLE (from 'waferllm compile') on the simulated wafer."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from waferllm.activity import compile_notices
    from waferllm.run import RunEvents, RunRequest, run_bundle

    req = RunRequest(bundle=bundle, prompt_ids=_ids(prompt_ids), prompt=prompt, max_new_tokens=max_new_tokens,
                     dtype=dtype, timing_only=timing_only, prefill=prefill, prompt_len=prompt_len, threads=threads)
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        phase = bar.add_task("loading", total=None)
        toks = bar.add_task("tokens", total=max_new_tokens, visible=False)
        shown = ["loading"]

        def on_phase(text: str) -> None:
            shown[0] = text
            bar.update(phase, description=text)

        def on_token(i: int, token, cycles: int) -> None:
            bar.update(toks, visible=True, completed=i + 1,
                       description=f"token {i + 1}: {token if token is not None else '-'} ({cycles:,} cycles)")

        with compile_notices(lambda text: bar.update(phase, description=f"{shown[0]}: {text}"),
                             lambda: bar.update(phase, description=shown[0])):
            out = run_bundle(req, RunEvents(on_phase, on_token))
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        _print(out)
    if out["stopped"]:
        click.echo(f"Error: {out['stopped']} (kept the {out['new_tokens']} token(s) produced)", err=True)
        sys.exit(2)


def _print(out: dict) -> None:
    mode = "timing only" if out["mode"] == "timing" else out["dtype"]
    click.echo(f"{out['model']} on {out['hardware']} ({mode}), {out['stages']} stage(s) of "
               f"{out['grid'][0]}x{out['grid'][1]} PEs")
    if out["tokens"]:
        click.echo(f"tokens: {', '.join(map(str, out['tokens']))}")
    if "text" in out:
        click.echo(f"text: {out['text']!r}")
    if out["prefill"] == "host":
        pre = "on the host (not simulated)"
        if out.get("prefill_note"):
            pre += f"; {out['prefill_note']}"
    else:
        g = out["prefill_grid"]
        pre = (f"{out['prefill_cycles']:,} cycles simulated on {out['prefill_regions']} region(s) of {g[0]}x{g[1]} "
               f"PEs, then the switch to the decode layout ({out['switch_cycles_modelled']:,} cycles, modelled)")
    click.echo(f"prefill: {out['prompt_len']} tokens, {pre}")
    click.echo(f"first token (final norm, LM head, argmax, embedding): {out['first_token_cycles']:,} cycles")
    if out["decode_cycles_per_token"]:
        click.echo(f"decode: {out['decode_cycles_per_token']:,} cycles per token over {len(out['decode_cycles'])} "
                   f"step(s) = {out['tokens_per_s']:,.0f} tokens/s at {out['clock_hz'] / 1e9:g} GHz")
    else:
        why = "the KV cache was full after the first token" if out["stopped"] else "--max-new-tokens 1"
        click.echo(f"decode: no decode step ran ({why}); ask for 2 or more tokens to time one")
