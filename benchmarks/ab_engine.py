"""Time the working tree's simulator against another git revision's, interleaved in one process.

    python benchmarks/ab_engine.py                         # against HEAD, 256x256 shift+broadcast
    python benchmarks/ab_engine.py --rev ef49202 --repeat 9
    python benchmarks/ab_engine.py --workload reduce       # full WSE-2 rectangle, slow
    python benchmarks/ab_engine.py --workload kernel --kernel meshgemm --size 120 --n 360 --allow-different

On a shared VM the host's load moves absolute timings by up to 40% within minutes. Alternating the
two engines run by run, and keeping each one's best engine time, separates a code change from that
drift. Besides the engine's wall time (``run_s``) it reports the engine's CPU seconds (a fresh
``Device`` per run, lowering outside the timing): on a loaded host the wall time counts other
tenants' time slices. The other revision's ``simulator/`` is copied out of git into a temporary package
(``simulator_ab``), whole: each package builds the workload with its own classes (the workloads use
the per-PE trace API, which both revisions have), lowers and runs it. ``--workload kernel`` builds a
kernel (timing-only) for each revision with the working tree's builders, but with classes that
are that revision's (the builders are imported afresh against it), so both revisions need the same
builder API. Results are checked equal
(cycles, busy, link counts, wavelet moves) before any time is reported; where a PE rule changed
between the revisions, ``--allow-different`` times them anyway and prints both results (the work,
wavelet moves, must still be equal). The copy's numba cache lives in the temporary directory: its
first run compiles.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_simulator import broadcast_reduce, overlap, shift_broadcast  # noqa: E402



def load_revision(rev: str, into: Path):
    """Import ``simulator/`` as of ``rev`` as the package ``simulator_ab`` (from a copy under ``into``)."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:simulator"],
                           capture_output=True, text=True)
    if names.returncode != 0:
        raise ValueError(f"no simulator/ at git revision {rev!r} ({names.stderr.strip()})")
    pkg = into / "simulator_ab"
    pkg.mkdir()
    for name in names.stdout.split():
        if not name.endswith(".py"):
            continue
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:simulator/{name}"],
                             capture_output=True, text=True, check=True).stdout
        src = re.sub(r"\bsimulator\b", "simulator_ab", src)
        (pkg / name).write_text(src)
    for mod in [m for m in sys.modules if m == "simulator_ab" or m.startswith("simulator_ab.")]:
        del sys.modules[mod]  # an earlier call's copy
    sys.path.insert(0, str(into))
    try:
        return importlib.import_module("simulator_ab")
    finally:
        sys.path.remove(str(into))


def build_with(pkg, fn):
    """Call ``fn`` with ``pkg`` (the other revision's simulator) standing in for ``simulator``: the
    kernel builders are imported afresh, so the program is made of that revision's classes."""
    mine = {k: v for k, v in sys.modules.items()
            if k == "simulator" or k.startswith(("simulator.", "meshgemm"))}
    for k in mine:
        del sys.modules[k]
    for k, v in list(sys.modules.items()):
        if k == pkg.__name__ or k.startswith(pkg.__name__ + "."):
            sys.modules["simulator" + k[len(pkg.__name__):]] = v
    try:
        return fn()
    finally:
        for k in [k for k in sys.modules if k == "simulator" or k.startswith(("simulator.", "meshgemm"))]:
            del sys.modules[k]
        sys.modules.update(mine)


def kernel_program(name: str, P: int, n: int):
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from plmr.hardware import WSE2
    m = 1 if "gemv" in name else n
    return build_kernel(KernelRequest(name, (P, P), m, n, n, dtype="fp16", functional=False, k_tree=2),
                        WSE2).program


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD", help="git revision to compare against (default HEAD)")
    ap.add_argument("--workload", choices=["shift", "reduce", "overlap", "kernel"], default="shift",
                    help="shift: shift+broadcast on a SIZE x SIZE mesh; reduce: broadcast + column "
                         "reduction on the full WSE-2 rectangle; overlap: compute beside async sends and "
                         "receives on a SIZE x SIZE mesh")
    ap.add_argument("--size", type=int, default=256, help="mesh edge for the shift workload (default 256)")
    ap.add_argument("--kernel", default="meshgemm", help="kernel of --workload kernel (default meshgemm)")
    ap.add_argument("--n", type=int, default=360, help="matrix size of --workload kernel (default 360)")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each engine (default 7)")
    ap.add_argument("--allow-different", action="store_true",
                    help="time the engines even if their results differ (a changed PE rule); the "
                         "wavelet moves must still agree")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.size < 2:
        ap.error("--repeat must be at least 1 and --size at least 2")
    import simulator
    from plmr.hardware import WSE2

    def build(pkg):
        if args.workload == "shift":
            return shift_broadcast(args.size, args.size, 64, pkg)
        if args.workload == "overlap":
            return overlap(args.size, args.size, 36, sim=pkg)
        return broadcast_reduce(WSE2.mesh_width, WSE2.mesh_height, 64, pkg)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            other = load_revision(args.rev, Path(tmp))
        except ValueError as exc:
            ap.error(str(exc))
        if args.workload == "kernel":
            progs = {"this": kernel_program(args.kernel, args.size, args.n),
                     "other": build_with(other, lambda: kernel_program(args.kernel, args.size, args.n))}
        else:
            progs = {"other": build(other), "this": build(simulator)}
        sims = {"other": other.simulate, "this": simulator.simulate}
        devices = {"other": importlib.import_module("simulator_ab.run").Device,
                   "this": importlib.import_module("simulator.run").Device}
        prog = progs["this"]
        best = {tag: float("inf") for tag in sims}
        cpu = {tag: float("inf") for tag in sims}
        eng_cpu = {tag: float("inf") for tag in sims}
        first = {}
        for _ in range(args.repeat):
            for tag, sim in sims.items():
                c0 = time.process_time()
                res = sim(progs[tag], mode="timing")
                cpu[tag] = min(cpu[tag], time.process_time() - c0)
                best[tag] = min(best[tag], res.stats["run_s"])
                del res
                # the engine alone in CPU seconds (lowering outside): on a loaded host the
                # engine's wall time counts other tenants' time slices
                dev = devices[tag](progs[tag], WSE2, "timing")
                c0 = time.process_time()
                res = dev.launch()
                eng_cpu[tag] = min(eng_cpu[tag], time.process_time() - c0)
                del dev
                first.setdefault(tag, (res.total_cycles, res.busy.copy(), res.link_wavelets.copy(),
                                       res.stats["wavelet_moves"]))
                del res
        a, b = first["other"], first["this"]
        if a[0] != b[0] or not np.array_equal(a[1], b[1]) or not np.array_equal(a[2], b[2]):
            if not args.allow_different or a[3] != b[3]:
                raise SystemExit("ab_engine: the two engines disagree on this workload (cycles, busy or "
                                 "link counts); timing them would compare different work"
                                 + (f" (wavelet moves {a[3]} vs {b[3]})" if args.allow_different else ""))
            print(f"results differ (allowed): {args.rev} {a[0]} cycles, {int(a[1].sum())} busy PE-cycles; "
                  f"working tree {b[0]} cycles, {int(b[1].sum())} busy PE-cycles; {b[3]} wavelet moves each")
    print(f"{args.workload} ({prog.width}x{prog.height}), best of {args.repeat} interleaved runs: "
          f"{args.rev} {best['other']:.3f} s, working tree {best['this']:.3f} s, "
          f"speedup {best['other'] / best['this']:.2f}x; CPU seconds of the whole call (lowering too) "
          f"{cpu['other']:.3f} vs {cpu['this']:.3f}, {cpu['other'] / cpu['this']:.2f}x; engine CPU seconds "
          f"{eng_cpu['other']:.3f} vs {eng_cpu['this']:.3f}, {eng_cpu['other'] / eng_cpu['this']:.2f}x")


if __name__ == "__main__":
    main()
