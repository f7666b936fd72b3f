"""Human-readable rendering of a plan (rich tables); JSON output lives on ``Plan.to_dict``.

Tables fit the terminal: below ``WIDE_COLUMNS`` columns the least important columns are dropped
(cycles, then per-stage byte splits) and long cells wrap, so an 80-column terminal shows every
figure a user acts on; ``wide`` keeps every column whatever the width.
"""

from __future__ import annotations

from typing import Any

#: Terminal width from which every column is shown.
WIDE_COLUMNS = 110
#: ``plan --wide`` prints at least this wide, whatever the terminal: no column header cut, no cell wrapped
WIDE_PRINT = 130


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def render_plan(result: Any, console: Any, wide: bool = False) -> None:
    from rich.table import Table

    d = result.to_dict()
    full = wide or console.width >= WIDE_COLUMNS
    if wide and console.width < WIDE_PRINT:  # every column at its natural width, past a narrow terminal
        from rich.console import Console

        console = Console(width=WIDE_PRINT)
    where = d["hardware"] if d["wafers"] == 1 else f"{d['wafers']} x {d['hardware']}"
    title = f"{d['model']} on {where}, method {d['method']}, {d['dtype']}"
    if d["batch"] > 1:
        title += f", batch {d['batch']}"
    t = Table(title=title, show_header=True)
    t.add_column("phase", no_wrap=True)
    t.add_column("grid", no_wrap=True)
    t.add_column("tokens/s", justify="right", no_wrap=True)
    if full:
        t.add_column("cycles/layer", justify="right", no_wrap=True)
    t.add_column("detail", overflow="fold")
    pre, dec = d["prefill"], d["decode"]
    rows = [
        ("prefill", f"{pre['grid'][0]}x{pre['grid'][1]}", _num(pre["tokens_per_s"]), _num(pre["cycles_per_layer"]),
         f"{d['input_len']} prompt tokens, {pre['seconds'] * 1e3:.2f} ms, {pre['stages']} stage{'s' if pre['stages'] != 1 else ''}"),
        ("decode", f"{dec['grid'][0]}x{dec['grid'][1]}", _num(dec["tokens_per_s"]), _num(dec["cycles_per_layer"]),
         f"per request; {dec['cycles_per_token']:,} cycles/token, K={dec['k_tree']}/{dec['k_tree_x']} (y/x), "
         f"ctx {d['context']}, {dec['colors_per_pe']} colours/PE"
         + (f"; packed: strips of {dec['strip']['grid'][0]}x{dec['strip']['grid'][1]} beside the regions, "
            f"K_x={dec['strip']['k_tree_x']} there" if dec["strip"] else "")),
    ]
    if d["batch"] > 1:
        rows.append(("decode, all", "", _num(dec["tokens_per_s_aggregate"]), "",
                     f"aggregate over {d['batch']} requests"))
    rows.append(("end to end", "", _num(d["end_to_end"]["tokens_per_s"]), "",
                 f"{d['output_len']} output tokens; switch {d['switch_cycles']:,} cycles"))
    for r in rows:
        t.add_row(*(r if full else (r[0], r[1], r[2], r[4])))
    console.print(t)

    m, kv, h = d["memory"], d["kv_cache"], d["handoffs"]
    s = Table(title="memory, KV cache and hand-offs", show_header=True)
    s.add_column("item", no_wrap=True)
    s.add_column("value", overflow="fold")
    s.add_row("fits", "yes" if m["fits"] else f"NO: {m['reason']}")
    if m["bytes_per_pe"]:
        s.add_row("busiest PE", f"{_kb(m['bytes_per_pe'])} of {_kb(m['capacity_per_pe'])}")
    s.add_row("KV capacity, whole system", f"shift {kv['max_tokens_shift']:,} tokens, "
              f"concatenation {kv['max_tokens_concat']:,}")
    s.add_row("KV capacity, this placement", f"shift {kv['max_tokens_shift_placed']:,}, "
              f"concatenation {kv['max_tokens_concat_placed']:,}; largest batch {kv['max_batch']}")
    if kv["sliding_window"]:
        s.add_row("sliding window", f"{kv['sliding_window']:,} tokens on {kv['sliding_window_layers']} layers")
    s.add_row("hand-offs per token", f"{h['decode_cycles']:,} cycles ({h['boundaries_on_wafer']} on a wafer, "
              f"{h['boundaries_between_wafers']} between wafers"
              + (f", {h['decode_per_wafer_boundary_cycles']:,} each" if h["boundaries_between_wafers"] else "")
              + ")")
    s.add_row("energy", f"{d['energy_j_per_token']:.3f} J per output token")
    console.print(s)

    stages = d["layer_placement"]["stages"]
    if stages:
        room = d["layer_placement"]["regions_available"]  # stages past it have no region: shown, not placed
        over = len(stages) - room
        systems = f"{d['layer_placement']['wafers']} x {d['hardware']}"
        title = "stage map" if over <= 0 else \
            f"stage map ({over} stage{'s' * (over > 1)} without a region: {systems} has room for {room})"
        st = Table(title=title, show_header=True)
        for col in ("stage", "wafer", "origin", "region", "layers", "KB/PE"):
            st.add_column(col, no_wrap=True, justify="right" if col != "layers" else "left")
        if full:
            st.add_column("weights / KV / other", no_wrap=True)
        for x in stages:
            layers = f"{x['layers'][0]}-{x['layers'][1]}" if x["num_layers"] > 0 else "-"
            if x["extras"]:
                layers += " +" + ",".join("emb" if e == "embedding" else "lm" for e in x["extras"])
            row = [str(x["stage"]), str(x["wafer"]) if x["stage"] < room else "none",
                   f"{x['origin'][0]},{x['origin'][1]}" if x["stage"] < room else "-",
                   f"{x['grid'][0]}x{x['grid'][1]}", layers,
                   f"{x['bytes_per_pe'] / 1024:.1f}"]
            if full:
                row.append(f"{_kb(x['weight_bytes_per_pe'])} / {_kb(x['kv_bytes_per_pe'])} / "
                           f"{_kb(x['buffer_bytes_per_pe'] + x['extras_bytes_per_pe'])}")
            st.add_row(*row)
        console.print(st)
    if d["wafer_options"]:
        w = Table(title="more wafers (decode)", show_header=True)
        for col in ("wafers", "grid", "tokens/s", "tokens/s per wafer"):
            w.add_column(col, justify="right", no_wrap=True)
        for o in d["wafer_options"]:
            w.add_row(str(o["wafers"]), f"{o['decode_grid'][0]}x{o['decode_grid'][1]}",
                      _num(o["decode_tokens_per_s"]), _num(o["tokens_per_s_per_wafer"]))
        console.print(w)
    for note in d["notes"]:
        console.print(f"note: {note}", overflow="fold")
