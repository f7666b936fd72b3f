"""Planner benchmarks: speed, and the searched plan against a dense sweep of forced grids.

    python benchmarks/bench_planner.py [--runs 5]          # speed (search in-process, whole commands)
    python benchmarks/bench_planner.py --dense [--step 10]  # no forced grid beats the search

Speed targets: a plan search under 1 s (a 70B model on several wafers included) and a whole
``waferllm plan`` command for a HF model directory under 1 s. Each figure is the median of ``--runs``
runs after one warm-up run (the warm-up is not counted).

``--dense``: for every catalog model, on WSE-2 and WSE-3, under both methods, the plan is searched
(the full method on the fewest wafers that hold the model), then every shape of a sweep (rows and
columns every ``--step`` PEs, the mesh's own sides, and every shape within ``--near`` PEs of the
searched grids; for prefill also every shape (g·a, g·b) of a side ratio a:b with a, b <= 6, whose
MeshGEMM virtual mesh is small) is forced as the decode grid (its K-trees tuned, as
``--decode-grid`` does) and as the prefill grid. A forced grid that is faster than the searched plan
is a counterexample: a bug in the search. Pruning that cannot hide one: a decode grid whose
tree-free cycles already reach the searched plan's is not tuned (the trees only add cycles).

Prints markdown tables; the figures are recorded in docs/BENCHMARKS.md (## Planner).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SEARCH_TARGET_S = 1.0
CLI_TARGET_S = 3.0

#: (label, model, method): full plan searches (decode grid + K + placement, prefill grid), in-process.
SEARCHES = [
    ("llama3-70b, paper", "llama3-70b", "paper"),
    ("qwen2-72b, paper", "qwen2-72b", "paper"),
    ("llama3-8b, full", "llama3-8b", "full"),
]

#: Whole-process commands (interpreter start, imports, catalog load, search, output).
COMMANDS = [
    ["plan", "llama3-70b"],
    ["plan", "llama3-70b", "--method", "paper", "--json"],
    ["plan", "llama3-8b"],
]


def median_time(fn, runs: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench_search(runs: int) -> list[tuple[str, float, list[float], str]]:
    from plmr.hardware import WSE2
    from waferllm.catalog import load_catalog_model
    from waferllm.planner import PlanRequest, plan

    rows = []
    for label, name, method in SEARCHES:
        model = load_catalog_model(name)
        req = PlanRequest(WSE2, method)
        result = {}

        def once():
            result["plan"] = plan(model, req)

        med, times = median_time(once, runs)
        p = result["plan"]
        chosen = (f"decode {p.decode.grid[0]}x{p.decode.grid[1]}, prefill {p.prefill.grid[0]}x{p.prefill.grid[1]}")
        rows.append((label, med, times, chosen))
    return rows


def bench_cli(runs: int, exe: str) -> list[tuple[str, float, list[float], str]]:
    rows = []
    env = dict(os.environ, COLUMNS="120")
    for args in COMMANDS:
        status = {}

        def once():
            p = subprocess.run([exe, *args], capture_output=True, text=True, env=env)
            status["rc"] = p.returncode
            status["err"] = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""

        med, times = median_time(once, runs)
        note = f"exit {status['rc']}" + (f": {status['err'][:90]}" if status["rc"] else "")
        rows.append(("waferllm " + " ".join(args), med, times, note))
    return rows


def _sides(n: int, step: int) -> list[int]:
    return sorted(set(range(step, n + 1, step)) | {1, n})


def dense_sweep(model_name: str, spec, method: str, step: int, near: int) -> dict:
    """One (model, hardware, method): the searched plan against every forced grid of the sweep."""

    from waferllm.catalog import load_catalog_model
    from waferllm.planner import PlanRequest, best_trees, decode_candidate, plan, prefill_candidate

    model = load_catalog_model(model_name)
    t0 = time.perf_counter()
    wafers = "auto" if method == "full" else 1
    p = plan(model, PlanRequest(spec, method, wafers=wafers))
    search_s = time.perf_counter() - t0
    req = PlanRequest(spec, method, wafers=p.wafers)
    dec, pre = p.decode.cycles_total, p.prefill.cycles_total
    H, W = spec.mesh_height, spec.mesh_width
    grids = {(y, x) for y in _sides(H, step) for x in _sides(W, step)}
    for (cy, cx) in (p.decode.grid, p.prefill.grid):
        grids |= {(y, x) for y in range(cy - near, cy + near + 1) for x in range(cx - near, cx + near + 1)
                  if 1 <= y <= H and 1 <= x <= W}
    ratio_grids = {(g * a, g * b) for a in range(1, 7) for b in range(1, 7) if math.gcd(a, b) == 1
                   for g in range(1, min(H // a, W // b) + 1)}
    worse = {"decode": [], "prefill": []}
    tuned = feasible_dec = feasible_pre = 0
    for grid in sorted(grids):
        c = decode_candidate(model, req, grid, tune=False)
        if c is not None:
            feasible_dec += 1
            if c.terms.local() < dec:  # else the tuned cost, local + trees, cannot beat the plan
                tuned += 1
                cycles = best_trees(spec, c.terms, req)[2]
                if cycles < dec * (1 - 1e-12):
                    worse["decode"].append((grid, cycles))
    for grid in sorted(grids | ratio_grids):
        c = prefill_candidate(model, req, grid, tune=False)
        if c is not None:
            feasible_pre += 1
            if c.cycles < pre * (1 - 1e-12):
                worse["prefill"].append((grid, c.cycles))
    return {"model": model_name, "hardware": spec.name, "method": method, "wafers": p.wafers,
            "decode_grid": p.decode.grid, "decode_cycles": dec, "prefill_grid": p.prefill.grid,
            "prefill_cycles": pre, "shapes": len(grids), "prefill_shapes": len(grids | ratio_grids), "decode_feasible": feasible_dec, "tuned": tuned,
            "prefill_feasible": feasible_pre, "search_s": search_s, "sweep_s": time.perf_counter() - t0,
            "worse": worse}


def bench_dense(step: int, near: int, models: list[str] | None, hardware: list[str]) -> int:
    from plmr.hardware import get_spec
    from waferllm.catalog import catalog_names

    names = models or catalog_names()
    print(f"dense sweep: rows and columns every {step} PEs plus the mesh sides, and every shape within "
          f"{near} PEs of each searched grid\n")
    print("| model | hardware | method | wafers | searched decode (cycles/token) | searched prefill (cycles) "
          "| shapes decode / prefill | decode feasible (tuned) | prefill feasible | forced grids faster | time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    bad = 0
    for hw in hardware:
        spec = get_spec(hw)
        for name in names:
            for method in ("full", "paper"):
                r = dense_sweep(name, spec, method, step, near)
                n_bad = len(r["worse"]["decode"]) + len(r["worse"]["prefill"])
                bad += n_bad
                first = ""
                if n_bad:
                    kind = "decode" if r["worse"]["decode"] else "prefill"
                    g, c = min(r["worse"][kind], key=lambda t: t[1])
                    first = f": best {kind} {g[0]}x{g[1]} at {c:,.0f}"
                print(f"| {name} | {spec.name} | {method} | {r['wafers']} "
                      f"| {r['decode_grid'][0]}x{r['decode_grid'][1]}: {r['decode_cycles']:,.0f} "
                      f"| {r['prefill_grid'][0]}x{r['prefill_grid'][1]}: {r['prefill_cycles']:,.0f} "
                      f"| {r['shapes']:,} / {r['prefill_shapes']:,} | {r['decode_feasible']:,} ({r['tuned']:,}) "
                      f"| {r['prefill_feasible']:,} "
                      f"| {n_bad}{first} | {r['sweep_s']:.0f} s |", flush=True)
    print(f"\ncounterexamples: {bad}")
    return 1 if bad else 0


def machine() -> str:
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem = f"{mem_gb:.0f} GB RAM"
    except (ValueError, OSError, AttributeError):
        mem = "RAM unknown"
    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {mem}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per case (median reported)")
    ap.add_argument("--exe", default=None, help="the waferllm executable (default: beside this Python)")
    ap.add_argument("--dense", action="store_true", help="the searched plan against a dense sweep of forced grids")
    ap.add_argument("--step", type=int, default=10, help="--dense: sweep rows and columns every STEP PEs")
    ap.add_argument("--near", type=int, default=12, help="--dense: every shape within NEAR PEs of the searched grids")
    ap.add_argument("--model", action="append", help="--dense: only these catalog models (repeatable)")
    ap.add_argument("--hardware", action="append", help="--dense: only these targets (default wse2, wse3)")
    args = ap.parse_args()
    if args.dense:
        print(f"machine: {machine()}\n")
        return bench_dense(args.step, args.near, args.model, args.hardware or ["wse2", "wse3"])
    exe = args.exe or shutil.which("waferllm", path=str(Path(sys.executable).parent)) or shutil.which("waferllm")
    if not exe:
        print("waferllm executable not found; pip install -e . first", file=sys.stderr)
        return 2

    print(f"machine: {machine()}")
    print(f"runs: median of {args.runs} after one warm-up\n")
    print("| case | median | min–max | target | ratio (median / target) | notes |")
    print("|---|---|---|---|---|---|")
    for label, med, times, note in bench_search(args.runs):
        print(f"| search: {label} | {med * 1e3:.0f} ms | {min(times) * 1e3:.0f}–{max(times) * 1e3:.0f} ms "
              f"| < {SEARCH_TARGET_S:g} s | {med / SEARCH_TARGET_S:.2f} | {note} |")
    for label, med, times, note in bench_cli(args.runs, exe):
        print(f"| `{label}` | {med:.2f} s | {min(times):.2f}–{max(times):.2f} s | < {CLI_TARGET_S:g} s "
              f"| {med / CLI_TARGET_S:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
