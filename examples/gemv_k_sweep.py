"""Sweep MeshGEMV's K (levels of the K-tree allreduce) and level-1 group sizes over mesh sizes, and
print the best K and group size per mesh.

    python examples/gemv_k_sweep.py --out runs/ksweep                   # PLMR model, 32^2 ... 720^2
    python examples/gemv_k_sweep.py --out runs/ksweep --sides 8,16 --size 512 --simulate
"""

from __future__ import annotations

import argparse

from waferllm.results import ResultsTable, load_rows
from waferllm.sweep import AXES, Sweep, parse_values
from waferllm.sweep_report import write_report
from waferllm.sweep_run import run_sweep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sides", default="32,64,128,256,512,720")
    ap.add_argument("--size", type=int, default=4096, help="K = N of y[1xN] = x[1xK] W[KxN]")
    ap.add_argument("--k-tree", default="1,2,3,4")
    ap.add_argument("--group-size", default="auto,4,8,16,32", help="level-1 group sizes (auto: about n^(1/K))")
    ap.add_argument("--simulate", action="store_true", help="timing-only simulation instead of the model")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)

    sw = Sweep({"kernel": ["meshgemv"], "mesh": parse_values(AXES["mesh"], args.sides.split(",")),
                "size": [args.size], "k_tree": parse_values(AXES["k_tree"], args.k_tree.split(",")),
                "group_size": parse_values(AXES["group_size"], args.group_size.split(","))},
               "timing" if args.simulate else "model")
    with ResultsTable(args.out) as table:
        s = run_sweep(sw.points(), table, workers=args.workers)
    print(f"{s.total} points, {s.errors} failed (a group size larger than the line is refused)")
    rows = [r for r in load_rows(args.out) if r["status"] == "ok" and r["fits"] is not False and r["k"] == args.size]
    by_mesh: dict[str, list] = {}
    for r in rows:
        cyc = r["simulated_cycles"] if r["simulated_cycles"] is not None else r["predicted_cycles"]
        by_mesh.setdefault(r["mesh"], []).append((cyc, r["k_tree"], r["group_size"]))
    print(f"{'mesh':>9} {'best K':>7} {'group':>6} {'cycles':>8} {'K=2 default':>12}")
    for mesh in sorted(by_mesh, key=lambda m: int(m.split("x")[0])):
        cyc, k, g = min(by_mesh[mesh], key=lambda t: t[0])
        default = next((c for c, kk, gg in by_mesh[mesh] if kk == 2 and gg is None), float("nan"))
        print(f"{mesh:>9} {k:>7} {g or 'auto':>6} {cyc:>8,} {default:>12,}")
    print(f"report: {write_report(args.out, f'{args.out}/report.html', title='MeshGEMV K sweep').html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
