"""Compare the GEMM algorithms across mesh sizes, under both execution semantics.

MeshGEMM, Cannon and SUMMA as the kernels run (barrier-free: every PE joins on its own transfers)
and Cannon, SUMMA and MeshGEMM with a fabric barrier after every step (bulk-synchronous), on a
2K GEMM: the PLMR model on every mesh, the simulator on the small ones. Writes the results table,
the figures and an HTML report, and prints the ratio table.

    python examples/compare_gemm.py --out runs/gemm                      # 2K GEMM, 64^2 ... 720^2
    python examples/compare_gemm.py --out runs/gemm --sides 8,16 --size 128 --simulate-up-to 16
"""

from __future__ import annotations

import argparse

from waferllm.results import ResultsTable, load_rows
from waferllm.sweep import AXES, Sweep, parse_values
from waferllm.sweep_report import write_report
from waferllm.sweep_run import run_sweep

KERNELS = ["meshgemm", "cannon", "summa", "meshgemm-bsp", "cannon-bsp", "summa-bsp"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--sides", default="64,128,256,360,512,720", help="square mesh sides")
    ap.add_argument("--size", type=int, default=2048, help="M = K = N")
    ap.add_argument("--simulate-up-to", type=int, default=0, help="also simulate (timing) meshes up to this side")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)

    sides = [int(s) for s in args.sides.split(",")]
    meshes = parse_values(AXES["mesh"], sides)
    with ResultsTable(args.out) as table:
        s = run_sweep(Sweep({"kernel": KERNELS, "mesh": meshes, "size": [args.size]}).points(), table,
                      workers=args.workers)
        small = [m for m, side in zip(meshes, sides) if side <= args.simulate_up_to]
        if small:
            run_sweep(Sweep({"kernel": KERNELS, "mesh": small, "size": [args.size]}, "timing").points(), table,
                      workers=args.workers)
    best: dict[tuple, tuple[bool, int]] = {}  # (kernel, mesh) -> (simulated?, cycles): simulated wins
    for r in load_rows(args.out):
        if r["status"] != "ok" or r["m"] != args.size or r["fits"] is False:
            continue
        sim = r["simulated_cycles"] is not None
        cur = best.get((r["kernel"], r["mesh"]))
        if cur is None or (sim and not cur[0]):
            best[(r["kernel"], r["mesh"])] = (sim, r["simulated_cycles"] if sim else r["predicted_cycles"])
    print(f"{s.total} model points ({s.errors} failed). Cycles / MeshGEMM cycles, {args.size}^3 GEMM:")
    print(f"{'mesh':>9} " + " ".join(f"{k:>12}" for k in KERNELS[1:]))
    for mesh in meshes:
        if ("meshgemm", mesh) not in best:
            print(f"{mesh:>9}  (does not fit a PE's SRAM)")
            continue
        ref = best[("meshgemm", mesh)][1]
        cells = [f"{best[(k, mesh)][1] / ref:12.2f}" if (k, mesh) in best else f"{'-':>12}" for k in KERNELS[1:]]
        print(f"{mesh:>9} " + " ".join(cells) + ("  (simulated)" if best[("meshgemm", mesh)][0] else ""))
    rep = write_report(args.out, f"{args.out}/report.html", title=f"GEMM algorithms, {args.size}^3")
    print(f"report: {rep.html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
