"""Planner search speed of this tree against another git revision, interleaved in one process.

    python benchmarks/bench_planner_inprocess.py REV [--runs 5]

Both trees are imported into the same interpreter (REV from ``git archive`` into a temporary directory,
its packages kept under their own module objects), and every case runs A, B, A, B, ... with every
memo of both trees emptied before each run, so each run is a fresh process's first plan and the host's
drifting load hits both alike. Reported: median CPU seconds (``time.process_time``) of ``plan()`` per
case, and their ratio. ``bench_planner.py --against`` times fresh processes (wall, CPU, commands).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("plmr", "waferllm", "meshgemm", "simulator", "csl_templates")
CASES = [("llama3-8b", "wse2", 1, "full"), ("llama3-70b", "wse2", "auto", "full"), ("qwen2-72b", "wse2", "auto", "full"),
         ("llama3-70b", "wse3", "auto", "full"), ("llama2-13b", "wse2", 1, "full"), ("llama3-8b", "wse2", 1, "paper")]


def load(path: Path) -> dict:
    """The tree's planner, catalog and hardware modules, imported from ``path`` and then removed from
    ``sys.modules`` so that the next tree imports its own."""
    for k in [k for k in sys.modules if k.split(".")[0] in PACKAGES]:
        del sys.modules[k]
    sys.path.insert(0, str(path))
    importlib.invalidate_caches()
    try:
        tree = {n: importlib.import_module(f"{p}.{n}") for p, n in
                (("waferllm", "planner"), ("waferllm", "catalog"), ("plmr", "hardware"))}
        tree["modules"] = [sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in PACKAGES]
    finally:
        sys.path.remove(str(path))
    if not tree["planner"].__file__.startswith(str(path)):
        raise SystemExit(f"imported {tree['planner'].__file__}, not the tree at {path}")
    return tree


def clear_caches(tree: dict) -> None:
    for mod in tree["modules"]:
        for v in list(vars(mod).values()):
            if callable(getattr(v, "cache_clear", None)) and getattr(v, "__module__", None) == mod.__name__:
                v.cache_clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the git revision to compare with")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        other.mkdir()
        archive = Path(tmp) / "other.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), args.rev], check=True)
        with tarfile.open(archive) as tf:
            tf.extractall(other)
        trees = {"this tree": load(ROOT), args.rev: load(other)}
        times: dict = {}
        for _ in range(args.runs):
            for case in CASES:
                model, hw, wafers, method = case
                for name, t in trees.items():
                    clear_caches(t)
                    m = t["catalog"].load_catalog_model(model)
                    req = t["planner"].PlanRequest(t["hardware"].get_spec(hw), method=method, wafers=wafers)
                    t0 = time.process_time()
                    t["planner"].plan(m, req)
                    times.setdefault((case, name), []).append(time.process_time() - t0)
    names = list(trees)
    print(f"| case | {names[0]}: CPU s, median | {names[1]}: CPU s, median | ratio |")
    print("|---|---|---|---|")
    for case in CASES:
        a, b = (statistics.median(times[(case, n)]) for n in names)
        model, hw, wafers, method = case
        label = f"{model}, {method}, {hw}" + (", --wafers auto" if wafers == "auto" else "")
        print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
