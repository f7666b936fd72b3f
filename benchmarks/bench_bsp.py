"""Agreement of the bulk-synchronous kernels' PLMR formulas (``plmr.bsp``) with the simulator.

    python benchmarks/bench_bsp.py                  # the table of docs/BASELINES.md (~3 min, 2 cores)
    python benchmarks/bench_bsp.py --quick          # 8^2 and 16^2 only

Timing-only simulation, WSE-2, fp16: GEMMs M = K = N = side x tile on square meshes, and the pipeline
GEMV with its barriers, K = N = side x t.
"""

from __future__ import annotations

import argparse
import time

from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from meshgemm.run import run_kernel
from plmr.hardware import WSE2

GEMM = [(side, tile) for side in (8, 16, 32) for tile in (4, 16)] + [(64, 2), (64, 8)]
GEMV = [(side, t) for side in (8, 32, 64, 128, 256) for t in (4, 32)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cases = [(k, s, s * t, s * t, s * t) for s, t in GEMM if not args.quick or s <= 16
             for k in ("cannon-bsp", "summa-bsp", "meshgemm-bsp")]
    cases += [("gemv-pipeline-bsp", s, 1, s * t, s * t) for s, t in GEMV if not args.quick or s <= 32]
    print("| kernel | mesh | m x k x n | simulated | PLMR | sim / PLMR | wall s |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, side, m, k, n in cases:
        t0 = time.perf_counter()
        b = build_kernel(KernelRequest(name, (side, side), m, k, n, dtype="fp16", functional=False), WSE2)
        r = run_kernel(b, WSE2, "timing")
        worst = max(worst, abs(r.simulated_cycles / r.predicted_cycles - 1))
        print(f"| {name} | {side}² | {m}x{k}x{n} | {r.simulated_cycles:,} | {r.predicted_cycles:,.0f} | "
              f"{r.simulated_cycles / r.predicted_cycles:.3f} | {time.perf_counter() - t0:.1f} |", flush=True)
    print(f"\nworst |sim/PLMR - 1| over {len(cases)} points: {worst:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
