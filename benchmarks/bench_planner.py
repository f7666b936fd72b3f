"""Planner benchmarks: speed, and the searched plan against a dense sweep of forced grids.

    python benchmarks/bench_planner.py [--runs 7] [--against REV]   # speed, interleaved with REV
    python benchmarks/bench_planner.py --dense [--step 10]           # no forced grid beats the search

Speed targets: a plan search under 1 s (a 70B model on several wafers included) and a whole
``waferllm plan`` command for a HF model directory under 1 s. Every case runs in a fresh Python
process, this tree and (``--against``) another git revision alternately, run by run, so that the
host's drifting load hits both alike: compare the two as a ratio. Searches are timed inside the
process (``plan()`` after the imports); commands as a whole process (interpreter start, imports,
search, output), with the peak resident set from ``/usr/bin/time`` where it exists. Each figure is
the median of ``--runs`` runs after one warm-up run of each (the warm-up is not counted). CPU time
(user + system) is printed too: on a loaded host it stays close to what an idle host's wall time
would be, while wall time stretches with the load.

``--dense``: for every catalog model, on WSE-2 and WSE-3, under both methods, the plan is searched
(the full method on the fewest wafers that hold the model), then every shape of a sweep (rows and
columns every ``--step`` PEs, the mesh's own sides, and every shape within ``--near`` PEs of the
searched grids; for prefill also every shape (g·a, g·b) of a side ratio a:b with a, b <= 6, whose
MeshGEMM virtual mesh is small) is forced as the decode grid (its K-trees tuned, as
``--decode-grid`` does) and as the prefill grid; under the full method also, as decode grids, every
shape whose row and column are both at a tile step (where a decode tile shrinks) within
``--lattice`` (a fraction) of the searched decode grid, which a sweep every ``--step`` PEs misses and
where the best decode shapes sit. A forced grid that is faster than the searched plan
is a counterexample: a bug in the search. Pruning that cannot hide one: a decode grid whose
tree-free cycles already reach the searched plan's is not tuned (the trees only add cycles).

Prints markdown tables; the figures are recorded in docs/BENCHMARKS.md (## Planner).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SEARCH_TARGET_S = 1.0
CLI_TARGET_S = 1.0

#: (label, model, plan keyword arguments): plan() timed in-process after the imports.
SEARCHES = [
    ("llama3-70b, full, --wafers auto (5, and the 6- and 7-wafer options)", "llama3-70b", {"wafers": "auto"}),
    ("llama3-70b, paper, --wafers auto", "llama3-70b", {"wafers": "auto", "method": "paper"}),
    ("qwen2-72b, full, --wafers auto", "qwen2-72b", {"wafers": "auto"}),
    ("llama3-8b, full", "llama3-8b", {}),
    ("llama3-8b, paper", "llama3-8b", {"method": "paper"}),
]

#: (label, arguments after ``waferllm``): whole commands; ``DIR`` is a directory holding
#: llama3-8b's config.json (what a user's HF model directory without weights looks like).
COMMANDS = [
    ("plan DIR --json", ["plan", "DIR", "--json"]),
    ("plan DIR (table)", ["plan", "DIR"]),
    ("plan llama3-70b --wafers auto --json", ["plan", "llama3-70b", "--wafers", "auto", "--json"]),
]

_SEARCH_SNIPPET = """
import json, sys, time
from plmr.hardware import WSE2
from waferllm.catalog import load_catalog_model
from waferllm.planner import PlanRequest, plan
model = load_catalog_model(sys.argv[1])
req = PlanRequest(WSE2, **json.loads(sys.argv[2]))
t0, c0 = time.perf_counter(), time.process_time()
p = plan(model, req)
print(time.perf_counter() - t0, time.process_time() - c0, *p.decode.grid, *p.prefill.grid)
"""


def export_revision(rev: str, into: Path) -> Path:
    """The ``plmr`` and ``waferllm`` packages as of ``rev``, extracted under ``into``."""
    into.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "plmr", "waferllm"], capture_output=True)
    if tar.returncode != 0:
        raise SystemExit(f"git archive {rev}: {tar.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar.stdout, check=True)
    return into


def _env(tree: Path) -> dict:
    """Imports from ``tree``; bytecode written and reused (as after a user's first run), even where
    the environment turns it off (PYTHONDONTWRITEBYTECODE): compiling every module each time is
    not what a user's command costs."""
    env = dict(os.environ, PYTHONPATH=str(tree), COLUMNS="100")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _timed(cmd: list[str], env: dict) -> tuple[float, float, int | None, str]:
    """(wall seconds, CPU seconds, peak RSS in KB or None, stdout) of one process, started in a
    neutral directory (``-c`` and ``-m`` put the working directory first on the path)."""
    gnu_time = shutil.which("time", path="/usr/bin")
    prefix = [gnu_time, "-f", "%M"] if gnu_time else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(prefix + cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.strip()[-300:]}")
    rss = int(p.stderr.strip().splitlines()[-1]) if gnu_time else None
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rss, p.stdout


def interleaved(cases: list, trees: list[Path], runs: int, run_one) -> list[list[list[tuple]]]:
    """``run_one(case, tree)`` for every case: one warm-up run on each tree, then ``runs`` rounds
    alternating the trees. ``result[case][tree]`` lists the timed runs."""
    out = [[[] for _ in trees] for _ in cases]
    for ci, case in enumerate(cases):
        for tree in trees:
            run_one(case, tree)
        for _ in range(runs):
            for ti, tree in enumerate(trees):
                out[ci][ti].append(run_one(case, tree))
    return out


def bench_speed(runs: int, against: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        trees = [ROOT] + ([export_revision(against, Path(tmp) / "rev")] if against else [])
        model_dir = Path(tmp) / "my-llama3"
        model_dir.mkdir()
        sys.path.insert(0, str(ROOT))
        from waferllm.catalog import catalog_config

        (model_dir / "config.json").write_text(json.dumps(catalog_config("llama3-8b")))

        def search(case, tree):
            _, name, kwargs = case
            _, _, rss, out = _timed([sys.executable, "-c", _SEARCH_SNIPPET, name, json.dumps(kwargs)], _env(tree))
            wall, cpu, dy, dx, py, px = out.split()
            return float(wall), float(cpu), rss, f"decode {dy}x{dx}, prefill {py}x{px}"

        def command(case, tree):
            args = [str(model_dir) if a == "DIR" else a for a in case[1]]
            return _timed([sys.executable, "-m", "waferllm.cli", *args], _env(tree))[:3] + ("",)

        names = ["this tree"] + ([against] if against else [])
        cols = [f"{n}: wall, median (min–max)" for n in names] + (["ratio"] if against else [])
        cols += [f"{n}: CPU, median" for n in names]
        cols += ["peak RSS (this tree)", "target", "plan (this tree)"]
        print("| case | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for kind, cases, fn, target in (("search", SEARCHES, search, SEARCH_TARGET_S),
                                        ("command", COMMANDS, command, CLI_TARGET_S)):
            for case, per_tree in zip(cases, interleaved(cases, trees, runs, fn)):
                meds = [statistics.median(r[0] for r in rs) for rs in per_tree]
                cells = [f"{m:.2f} s ({min(r[0] for r in rs):.2f}–{max(r[0] for r in rs):.2f})"
                         for m, rs in zip(meds, per_tree)]
                if against:
                    cells.append(f"{meds[1] / meds[0]:.1f}x")
                cells += [f"{statistics.median(r[1] for r in rs):.2f} s" for rs in per_tree]
                rss = [r[2] for r in per_tree[0] if r[2]]
                cells += [f"{max(rss) / 1024:.0f} MB" if rss else "–", f"< {target:g} s", per_tree[0][-1][3]]
                label = case[0] if kind == "search" else f"`waferllm {case[0]}`"
                print(f"| {kind}: {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


def _sides(n: int, step: int) -> list[int]:
    return sorted(set(range(step, n + 1, step)) | {1, n})


def tile_lattice(model, req, grid: tuple[int, int], reach: float) -> set[tuple[int, int]]:
    """Every shape within ``reach`` (a fraction) of ``grid`` whose rows and columns are both sides
    at which a decode tile ⌈total/p⌉ shrinks: rows for the hidden size and each layer's cached
    context, columns for the FFN width and the KV heads, and every multiple of the KV head count
    (the head layout changes there). Written here, apart from the planner's own scan."""
    from waferllm.planner import layer_contexts

    def starts(total: int, lo: int, hi: int) -> set[int]:
        return {-(-total // e) for e in range(1, total + 1)} & set(range(max(lo, 1), hi + 1)) if total > 0 else set()

    spec = req.hardware
    (cy, cx), n_kv = grid, model.num_kv_heads
    ylo, yhi = int(cy * (1 - reach)), min(spec.mesh_height, int(cy * (1 + reach)) + 1)
    xlo, xhi = int(cx * (1 - reach)), min(spec.mesh_width, int(cx * (1 + reach)) + 1)
    ys = starts(model.hidden_size, ylo, yhi)
    for c in set(layer_contexts(model, req.decode_context)):
        ys |= starts(c, ylo, yhi)
    xs = starts(model.intermediate_size, xlo, xhi) | starts(n_kv, xlo, xhi)
    xs |= {m for m in range(n_kv, xhi + 1, n_kv) if m >= xlo}
    return {(y, x) for y in ys for x in xs}


def dense_sweep(model_name: str, spec, method: str, step: int, near: int, lattice: float) -> dict:
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
    decode_grids = grids | (tile_lattice(model, req, p.decode.grid, lattice) if method == "full" and lattice > 0 else set())
    worse = {"decode": [], "prefill": []}
    tuned = feasible_dec = feasible_pre = 0
    for grid in sorted(decode_grids):
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
            "prefill_cycles": pre, "shapes": len(decode_grids), "prefill_shapes": len(grids | ratio_grids), "decode_feasible": feasible_dec, "tuned": tuned,
            "prefill_feasible": feasible_pre, "search_s": search_s, "sweep_s": time.perf_counter() - t0,
            "worse": worse}


def bench_dense(step: int, near: int, lattice: float, models: list[str] | None, hardware: list[str]) -> int:
    from plmr.hardware import get_spec
    from waferllm.catalog import catalog_names

    names = models or catalog_names()
    print(f"dense sweep: rows and columns every {step} PEs plus the mesh sides, and every shape within "
          f"{near} PEs of each searched grid; full method: every shape at tile steps of both sides within "
          f"{lattice:.0%} of the searched decode grid\n")
    print("| model | hardware | method | wafers | searched decode (cycles/token) | searched prefill (cycles) "
          "| shapes decode / prefill | decode feasible (tuned) | prefill feasible | forced grids faster | time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    bad = 0
    for hw in hardware:
        spec = get_spec(hw)
        for name in names:
            for method in ("full", "paper"):
                r = dense_sweep(name, spec, method, step, near, lattice)
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
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per case and tree (median reported)")
    ap.add_argument("--against", metavar="REV", help="also time this git revision, interleaved run by run")
    ap.add_argument("--dense", action="store_true", help="the searched plan against a dense sweep of forced grids")
    ap.add_argument("--step", type=int, default=10, help="--dense: sweep rows and columns every STEP PEs")
    ap.add_argument("--near", type=int, default=12, help="--dense: every shape within NEAR PEs of the searched grids")
    ap.add_argument("--lattice", type=float, default=0.35,
                    help="--dense: every tile-step shape within this fraction of the searched decode grid (0: none)")
    ap.add_argument("--model", action="append", help="--dense: only these catalog models (repeatable)")
    ap.add_argument("--hardware", action="append", help="--dense: only these targets (default wse2, wse3)")
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    if args.dense:
        return bench_dense(args.step, args.near, args.lattice, args.model, args.hardware or ["wse2", "wse3"])
    print(f"runs: median of {args.runs} after one warm-up, trees alternating run by run\n")
    return bench_speed(args.runs, args.against)


if __name__ == "__main__":
    raise SystemExit(main())
