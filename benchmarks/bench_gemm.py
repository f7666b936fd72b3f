"""GEMM kernel benchmarks: simulated (timing-only) cycles vs the PLMR prediction, and MeshGEMM vs
Cannon vs SUMMA across mesh sides.

    python benchmarks/bench_gemm.py --agreement [--sides 8,16,32] [--tiles 4,16,48] [--kernels ...]
        # the §Kernels: GEMM agreement table; ends with the worst point and the total wall time
    python benchmarks/bench_gemm.py --scaling [--sides 8,16,32,64] [--size 2048] [--plot docs/gemm.png]
    python benchmarks/bench_gemm.py --lockstep [--sides 8,16,32] [--tiles 16,48] [--kernels meshgemm,cannon]
            [--variants unbalanced,balanced,...]
        # MeshGEMM/Cannon PLMR − sim with the method's skew as written (unbalanced), as shipped
        # (balanced skew), with A pre-skewed on the host, unbalanced with links that buffer a whole
        # tile, and pre-skewed with PE (0, 0) delayed by one fill of C
        # (docs/BENCHMARKS.md § Why MeshGEMM's and Cannon's residual grew with the mesh)
"""

from __future__ import annotations

import argparse
import time

from meshgemm.kernel import KernelRequest
from meshgemm.registry import build_kernel
from plmr import gemm as plmr_gemm
from plmr.errors import InputError
from plmr.hardware import WSE2
from simulator.run import simulate

KERNELS = ("meshgemm", "cannon", "summa", "gemmt")


def run_one(name, side, size, dtype="fp16", spec=WSE2):
    t0 = time.perf_counter()
    b = build_kernel(KernelRequest(name, (side, side), size, size, size, dtype=dtype,
                                   functional=False), spec)
    r = simulate(b.program, spec, mode="timing")
    pred = b.predicted.total_cycles
    return r.total_cycles, pred, time.perf_counter() - t0


def agreement(sides, tiles, kernels=KERNELS, dtype="fp16"):
    """Square meshes, M = K = N = tile·side (tile = per-PE tile edge); shapes that overflow SRAM
    are skipped (reported)."""
    rows = []
    for side in sides:
        for tile in tiles:
            size = tile * side
            for name in kernels:
                try:
                    sim, pred, secs = run_one(name, side, size, dtype)
                except InputError as exc:
                    print(f"| {name} | {side}² | {size} | — | — | does not fit: {str(exc)[:60]} |")
                    continue
                rows.append((name, side, size, sim, pred, (pred - sim) / sim, secs))
                print(f"| {name} | {side}² | {size} | {sim} | {pred:.0f} | {100 * (pred - sim) / sim:+.1f}% "
                      f"| {secs:.1f} s |", flush=True)
    return rows


LOCKSTEP_VARIANTS = ("unbalanced", "balanced", "host-skew", "tile-buffers", "one-delayed")


def lockstep_variant(kind, side, tile, variant, dtype="fp16"):
    """(simulated, PLMR) cycles of a square MeshGEMM/Cannon run in one of ``LOCKSTEP_VARIANTS``."""
    import meshgemm.gemm as mg
    from plmr.primitives import t_vec
    from simulator.expr import X, Y, eq
    from simulator.instructions import Fill
    from simulator.statements import If

    spec = WSE2.with_params(router_buffer_wavelets=2000) if variant == "tile-buffers" else WSE2
    size = side * tile
    body_of = mg._cannon_body

    def delayed_body(*args, **kw):  # PE (0, 0) fills C once more before the steps
        body = body_of(*args, **kw)
        main = body.functions["main"]
        code = list(main.code)
        code.insert(1, If(eq(X, 0) & eq(Y, 0), (Fill("C", 0.0),)))
        body.functions["main"] = type(main)(main.name, tuple(code), main.args)
        return body

    if variant == "one-delayed":
        mg._cannon_body = delayed_body
    try:
        b = mg.build_cannon_family(KernelRequest(kind, (side, side), size, size, size, dtype=dtype,
                                                 functional=False),
                                   spec, kind, a_skew="host" if variant in ("host-skew", "one-delayed") else "device",
                                   balance_skew=variant == "balanced")
    finally:
        mg._cannon_body = body_of
    pred = b.predicted.total_cycles
    if variant == "one-delayed":  # its own run is one fill longer; every other PE's is the lockstep one
        pred += t_vec(spec, tile * tile, "mov", dtype)
    return simulate(b.program, spec, mode="timing").total_cycles, pred


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--lockstep", action="store_true")
    ap.add_argument("--sides", default="8,16,32")
    ap.add_argument("--tiles", default="4,16,48", help="per-PE tile edges for --agreement")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--variants", default=",".join(LOCKSTEP_VARIANTS), help="columns of --lockstep")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--known", default="", help="reuse simulated points: kernel:side:cycles,...")
    ap.add_argument("--simulate", default="meshgemm,cannon,summa",
                    help="kernels to simulate in --scaling (others: PLMR only)")
    a = ap.parse_args(argv)
    sides = [int(s) for s in a.sides.split(",")]
    kernels = a.kernels.split(",")
    if a.agreement:
        print("| kernel | mesh | M=K=N | simulated | PLMR | PLMR − sim | wall |")
        print("|---|---|---|---|---|---|---|")
        rows = agreement(sides, [int(s) for s in a.tiles.split(",")], kernels, a.dtype)
        if rows:
            # The doc quotes the worst |PLMR − sim| over the table and the sweep's cost; print
            # both so a partial sweep (one mesh or tile at a time) can be merged by hand.
            name, side, size, _, _, diff, _ = max(rows, key=lambda r: abs(r[5]))
            print(f"worst: {name} {side}² M=K=N={size} {100 * diff:+.1f}%; "
                  f"total wall {sum(r[6] for r in rows):.0f} s over {len(rows)} points")
    if a.lockstep:
        variants = a.variants.split(",")
        bad = [v for v in variants if v not in LOCKSTEP_VARIANTS]
        if bad:
            ap.error(f"--variants: unknown {bad[0]!r}; use some of {', '.join(LOCKSTEP_VARIANTS)}")
        print("| kernel | mesh | tile | " + " | ".join(variants) + " |")
        print("|---|---|---|" + "---|" * len(variants))
        for name in kernels:
            for tile in (int(t) for t in a.tiles.split(",")):
                for side in sides:
                    cells = []
                    for v in variants:
                        sim, pred = lockstep_variant(name, side, tile, v, a.dtype)
                        cells.append(f"{sim} / {pred:.0f} ({100 * (pred - sim) / sim:+.3f}%)")
                    print(f"| {name} | {side}² | {tile} | " + " | ".join(cells) + " |", flush=True)
    if a.scaling:
        known = {}
        for item in filter(None, a.known.split(",")):
            k, side, cyc = item.split(":")
            known[(k, int(side))] = int(cyc)
        scaling(sides, a.size, a.dtype, a.plot, known, a.simulate.split(","))


def scaling(sides, size, dtype, plot, known=None, simulate_kernels=("meshgemm", "cannon", "summa")):
    sim = {k: {} for k in ("meshgemm", "cannon", "summa")}
    print("| mesh | kernel | simulated | PLMR |")
    print("|---|---|---|---|")
    for side in sides:
        for name in sim:
            if known and (name, side) in known:
                sim[name][side] = known[(name, side)]
                continue
            if name not in simulate_kernels:
                continue
            s, p, secs = run_one(name, side, size, dtype)
            sim[name][side] = s
            print(f"| {side}² | {name} | {s} | {p:.0f} | ({secs:.0f} s)", flush=True)
    pred_sides = sorted(set(sides) | {64, 128, 256, 360, 512, 720})
    pred = {k: {s: getattr(plmr_gemm, k)(WSE2, s, s, size, size, size, dtype).total_cycles
                for s in pred_sides} for k in sim}
    for s in pred_sides:
        print(f"PLMR {s}²: " + ", ".join(f"{k} {pred[k][s]:.0f}" for k in sim)
              + f"; summa/meshgemm {pred['summa'][s] / pred['meshgemm'][s]:.2f}, "
              f"cannon/meshgemm {pred['cannon'][s] / pred['meshgemm'][s]:.2f}")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for (k, c) in zip(sim, ("C0", "C1", "C2")):
            ax.plot(pred_sides, [pred[k][s] for s in pred_sides], "--", color=c, label=f"{k} (PLMR)")
            ax.plot(sorted(sim[k]), [sim[k][s] for s in sorted(sim[k])], "o", color=c,
                    label=f"{k} (simulated)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("mesh side P (P×P PEs)")
        ax.set_ylabel("cycles")
        ax.set_title(f"GEMM M=K=N={size} {dtype} on WSE-2 parameters")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=120)


if __name__ == "__main__":
    main()
