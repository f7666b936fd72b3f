"""Planner speed: in-process plan search time and whole-process ``waferllm plan`` wall time.

    /work/venv/bin/python benchmarks/bench_planner.py [--runs 5]

Targets (foundation issue): a plan search under 1 s, a whole ``waferllm plan`` command under 3 s.
Each figure is the median of ``--runs`` runs after one warm-up run (the warm-up is not counted).
Prints a markdown table; the figures are recorded in docs/BENCHMARKS.md (## Planner).
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()
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
