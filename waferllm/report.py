"""Human-readable rendering of a plan (rich tables); JSON output lives on ``Plan.to_dict``."""

from __future__ import annotations

from typing import Any


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def render_plan(result: Any, console: Any) -> None:
    from rich.table import Table

    d = result.to_dict()
    title = f"{d['model']} on {d['hardware']} — method {d['method']}, {d['dtype']}"
    t = Table(title=title, show_header=True)
    t.add_column("phase")
    t.add_column("grid (rows x cols)")
    t.add_column("tokens/s", justify="right")
    t.add_column("cycles", justify="right")
    t.add_column("detail")
    pre, dec = d["prefill"], d["decode"]
    t.add_row("prefill", f"{pre['grid'][0]} x {pre['grid'][1]}", f"{pre['tokens_per_s']:,.1f}",
              f"{pre['cycles_per_layer']:,.0f} / layer", f"{d['input_len']} prompt tokens, {pre['seconds'] * 1e3:.2f} ms")
    t.add_row("decode", f"{dec['grid'][0]} x {dec['grid'][1]}", f"{dec['tokens_per_s']:,.1f}",
              f"{dec['cycles_per_layer']:,.0f} / layer",
              f"{dec['cycles_per_token']:,.0f} cycles/token, K={dec['k_tree']}, ctx {d['context']}, "
              f"{dec['colors_per_pe']} colours/PE")
    t.add_row("end to end", "", f"{d['end_to_end']['tokens_per_s']:,.1f}", "",
              f"{d['output_len']} output tokens; switch {d['switch_cycles']:,.0f} cycles")
    console.print(t)
    m, kv = d["memory"], d["kv_cache"]
    s = Table(title="memory and placement", show_header=True)
    s.add_column("item")
    s.add_column("value")
    s.add_row("busiest PE", f"{_kb(m['bytes_per_pe'])} of {_kb(m['capacity_per_pe'])} "
              f"({'fits' if m['fits'] else 'DOES NOT FIT'})")
    s.add_row("one layer", f"weights {_kb(m['layer_weight_bytes_per_pe'])}, KV {_kb(m['layer_kv_bytes_per_pe'])}, "
              f"buffers {_kb(m['buffer_bytes_per_pe'])}")
    s.add_row("KV capacity (whole wafer)", f"shift {kv['max_tokens_shift']:,} tokens, "
              f"concatenation {kv['max_tokens_concat']:,}")
    s.add_row("KV capacity (this placement)", f"shift {kv['max_tokens_shift_placed']:,}, "
              f"concatenation {kv['max_tokens_concat_placed']:,}")
    s.add_row("energy", f"{d['energy_j_per_token']:.3f} J per output token")
    for st in d["layer_placement"]["stages"]:
        layers = (f"layers {st['layers'][0]}-{st['layers'][1]}" if st["num_layers"] > 0 else "no layers")
        extras = f" + {', '.join(st['extras'])}" if st["extras"] else ""
        s.add_row(f"stage {st['stage']} @ {tuple(st['origin'])}", f"{layers}{extras}, {_kb(st['bytes_per_pe'])}/PE")
    console.print(s)
    for note in d["notes"]:
        console.print(f"note: {note}")
