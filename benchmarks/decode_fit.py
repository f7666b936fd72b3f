"""Why a model does not fit one wafer for decode, and how much each layout lever would win back.

    python benchmarks/decode_fit.py [MODEL] [--hardware wse2] [--grid 142x250 ...] [--levers]

Prints, for each grid (default: the planner's closest shapes), the busiest PE's bytes per stage of the
placement the planner builds (``real_placement``: layers, weights, K|V, the decode program's buffers,
embedding / LM head) and the largest buffers of the binding stage (``plmr.decode_memory``'s table, the one
the decode program allocates from). ``--levers``: the least usable SRAM per PE at which the model's
layers, embedding and LM head fit the wafer's aligned regions, over every grid (the tallest P_y of each
band count: a taller region never needs more bytes per PE), with the table as it is and with the
table's per-layer blocks shrunk by each lever, an upper bound of what it wins (a perfect schedule):

* ``table``: the decode program today (every layer at the largest column's blocks);
* ``spread extras``: the embedding table and the LM head (with the final norm and logits) spread evenly
  over every region instead of the first and the last (each region holds the share ⌈(first + last) /
  regions⌉ beside its layers);
* ``rotate F``: the FFN's uneven column split rotated from layer to layer (a stage of n layers holds
  ⌈n·F/P_x⌉ FFN features on its busiest column instead of n·⌈F/P_x⌉);
* ``rotate pairs``: each KV group's RoPE pairs rotated over the group's columns from layer to layer
  (the group column ranges, hence the X tree and the score allreduce, unchanged): ⌈n·d/2 / w_min⌉ pairs;
* ``rotate both``: the two together;
* ``rotate groups``: the KV-group column ranges rotated too (the trees change per layer):
  ⌈n·n_kv·d/2 / P_x⌉ pairs and ⌈n·F/P_x⌉ features;
* ``balance``: per layer, columns holding more attention pairs hold fewer FFN features (weights and
  K|V in one per-layer block per PE, the FFN split unequal), the busiest column's block at the water
  level.

Context: the planner's default (input + output tokens). Scores are charged at the smallest attention
chunk (8 entries), the most generous the program allows.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

from plmr.decode_memory import DecodeSizes, decode_buffers, decode_sizes
from plmr.hardware import get_spec
from plmr.primitives import balanced_split, ceil_div, dtype_bytes
from waferllm.catalog import resolve_model
from waferllm.planner import PlanRequest, _decode_charge, _decode_model, attention_chunk, layer_contexts, real_placement

LEVERS = ("table", "spread extras", "rotate F", "rotate pairs", "rotate both", "rotate groups", "balance")


def _kb(n: float) -> str:
    return f"{n / 1024:.2f} KB"


class LayerBlock:
    """Bytes of a column's layer blocks (kinds "layer" and "kv" of the table) when a stage's layers
    together hold ``pairs`` RoPE pairs (of all the column's KV heads) and ``ffn`` FFN features: the
    table's blocks are affine in the head features and F_x, so the sum over n layers is the table at
    the totals plus its constant part (γ, ...) once per further layer."""

    def __init__(self, mod, sz: DecodeSizes, cap: int, dtype: str):
        def block(p: int, f: int) -> int:
            s = dataclasses.replace(sz, QXM=2 * p * mod.n_rep, KVXM=2 * p, FXM=f)
            return sum(dtype_bytes(dt) * size for dt, kind, size in decode_buffers(mod, s, cap, dtype).values()
                       if kind in ("layer", "kv"))
        self.c = block(0, 0)
        self.per_pair, self.per_feature = block(1, 0) - self.c, block(0, 1) - self.c

    def __call__(self, pairs: int, ffn: int, layers: int) -> int:
        return layers * self.c + pairs * self.per_pair + ffn * self.per_feature


def stage_fn(lever: str, mod, py: int, px: int, cap: int, dtype: str):
    """bytes(n): the blocks of a stage of n layers on its busiest PE under ``lever``."""
    sz = decode_sizes(mod, py, px)
    block = LayerBlock(mod, sz, cap, dtype)
    half, n_kv, F = mod.head_dim // 2, mod.num_kv_heads, mod.ffn
    if px < n_kv:  # whole heads per column: "pairs" count whole heads' pairs
        heads = max(balanced_split(n_kv, px))
        p1, pn_group, pn_all = heads * half, (lambda n: n * heads * half), (lambda n: ceil_div(n * n_kv, px) * half)
    else:
        wmin = min(balanced_split(px, n_kv))
        p1, pn_group, pn_all = ceil_div(half, wmin), (lambda n: ceil_div(n * half, wmin)), \
            (lambda n: ceil_div(n * half * n_kv, px))
    f1 = ceil_div(F, px)
    if lever == "balance":
        cols = Counter(p for w in balanced_split(px, n_kv) for p in balanced_split(half, w)) if px >= n_kv else \
            Counter(h * half for h in balanced_split(n_kv, px))
        base = {p: block(p, 0, 1) for p in cols}
        unit = {p: block.per_feature for p in cols}
        lo, hi = max(base.values()), max(base.values()) + max(unit.values()) * F
        while lo < hi:  # the lowest level whose columns hold every FFN feature
            t = (lo + hi) // 2
            lo, hi = (lo, t) if sum(c * ((t - base[p]) // unit[p]) for p, c in cols.items()) >= F else (t + 1, hi)
        return lambda n: n * lo
    pairs = {"table": lambda n: n * p1, "spread extras": lambda n: n * p1, "rotate F": lambda n: n * p1, "rotate pairs": pn_group,
             "rotate both": pn_group, "rotate groups": pn_all}[lever]
    ffn = (lambda n: n * f1) if lever in ("table", "spread extras", "rotate pairs") else (lambda n: ceil_div(n * F, px))
    return lambda n: block(pairs(n), ffn(n), n)


def least_capacity(model, req: PlanRequest, lever: str) -> tuple[int, tuple[int, int], int]:
    """(least usable bytes per PE, grid, regions) at which every layer, the embedding and the LM head fit
    one wafer's aligned regions under ``lever``."""
    spec, mod = req.hardware, _decode_model(model)
    tokens = layer_contexts(model, req.decode_context)
    L = len(tokens)
    best = (1 << 40, (0, 0), 0)
    for bands in range(1, 40):
        py = spec.mesh_height // bands
        cap = ceil_div(max(tokens), py)
        for px in range(1, spec.mesh_width + 1):
            regions = bands * (spec.mesh_width // px)
            ch = _decode_charge(mod, py, px, cap, req.dtype, 1, 0, 8)
            stage = stage_fn(lever, mod, py, px, cap, req.dtype)
            per = [stage(n) for n in range(L + 1)]

            def most(room: int) -> int:
                return max((n for n in range(L + 1) if per[n] <= room), default=-1)

            def held(c: int) -> int:
                free = c - ch.buffers
                if regions == 1:
                    return most(free - ch.both)
                if lever == "spread extras":
                    m = most(free - ceil_div(ch.first + ch.last, regions))
                    return -1 if m < 0 else regions * m
                f, m, last = most(free - ch.first), most(free), most(free - ch.last)
                return -1 if min(f, m, last) < 0 else f + last + (regions - 2) * m

            if held(best[0] - 1) < L:
                continue
            lo, hi = 1, best[0] - 1
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if held(mid) >= L else (mid + 1, hi)
            best = (lo, (py, px), regions)
    return best


def show_grid(model, req: PlanRequest, grid: tuple[int, int]) -> None:
    p = real_placement(model, req, grid)
    mod = _decode_model(model)
    tokens = layer_contexts(model, req.decode_context)
    cap = ceil_div(max(tokens), grid[0])
    chunk = attention_chunk(model, req, grid, tokens, req.batch)
    print(f"\n{grid[0]}x{grid[1]}: {len(p.stages)} stages, {p.regions_available} regions on the wafer, "
          f"{p.capacity_per_pe} B per PE usable, K|V ring {cap} entries, attention chunk {chunk}")
    print("| stage | layers | weights | K\\|V | buffers | embedding / LM head | busiest PE |")
    print("|---|---|---|---|---|---|---|")
    for s in p.stages:
        print(f"| {s.index} | {s.num_layers} | {s.weight_bytes:,} | {s.kv_bytes:,} | {s.buffer_bytes:,} | "
              f"{s.extras_bytes:,} | {s.bytes_per_pe:,} |")
    sz = decode_sizes(mod, *grid)
    print(f"sizes: {sz}")
    rows = sorted(((dtype_bytes(dt) * size, name, kind) for name, (dt, kind, size)
                   in decode_buffers(mod, sz, cap, req.dtype, chunk).items()), reverse=True)
    print("largest buffers (bytes of one layer or of the stage): "
          + ", ".join(f"{name} {b:,} ({kind})" for b, name, kind in rows[:12]))


def _grid(text: str) -> tuple[int, int]:
    """``HxW`` with both sides positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(v.isdigit() and int(v) > 0 for v in parts):
        raise argparse.ArgumentTypeError(f"a grid is HxW with positive integers (e.g. 142x250), got {text!r}")
    return int(parts[0]), int(parts[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="llama2-13b")
    ap.add_argument("--hardware", default="wse2")
    ap.add_argument("--grid", action="append", type=_grid, default=[], help="HxW (repeatable)")
    ap.add_argument("--levers", action="store_true")
    a = ap.parse_args()
    try:
        model, req = resolve_model(a.model), PlanRequest(hardware=get_spec(a.hardware))
    except ValueError as exc:  # an unknown model or hardware name: the library's one-line message
        ap.error(str(exc))
    grids = a.grid or [(142, 250), (198, 750), (248, 375)]
    for g in grids:
        show_grid(model, req, g)
    if a.levers:
        print(f"\nleast usable bytes per PE for {model.name} on one {req.hardware.name} at "
              f"{req.decode_context} tokens ({req.hardware.usable_sram_bytes:,} B usable):")
        print("| lever | least bytes per PE | grid | regions | margin |")
        print("|---|---|---|---|---|")
        for lever in LEVERS:
            c, g, r = least_capacity(model, req, lever)
            print(f"| {lever} | {c:,} | {g[0]}x{g[1]} | {r} | {req.hardware.usable_sram_bytes - c:+,} |", flush=True)


if __name__ == "__main__":
    main()
