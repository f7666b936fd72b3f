"""Time CSL bundle emission (`csl_templates.bundle.emit_bundle`) at small and full-wafer mesh sizes.

For each program (the `csl_templates.examples`, every `meshgemm.line_rules` routing pattern on one
mesh, and every registered kernel written as code bodies: 2K GEMMs and 16K GEMVs in fp16, 128 and 1K
below 64 PEs a side) and each size, builds the program once, then
emits its bundle for WSE-2 and WSE-3 into a temporary directory `--repeat` times; prints the best and
median emission time (the program's build is not included), the number of files and their bytes, and
the process's peak RSS at the end.

    python benchmarks/bench_csl_emit.py --sizes 8 720 [--repeat 3] [--only NAME ...] [--check]

``--check`` also runs ``waferllm csl check`` (``csl_templates.checker.check_paths``) on each bundle for
each of its targets with the bundle's params and prints the findings and the check's time.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plmr.errors import InputError  # noqa: E402

from csl_templates.bundle import emit_bundle  # noqa: E402
from csl_templates.examples import EXAMPLES  # noqa: E402


def line_patterns(width: int, height: int):
    """Every routing pattern of meshgemm.line_rules as route rules of one program (no data plane)."""
    from meshgemm import line_rules as L
    from plmr.hardware import WSE2
    from plmr.ktree import build_ktree
    from simulator import Body, MeshProgram
    from simulator.expr import X, Y

    prog = MeshProgram(width, height, WSE2, name="patterns")
    Wp, Hp = prog.param("PX", width), prog.param("PY", height)
    tree = build_ktree(width, 2, None)
    G = [prog.param(f"G{k}", g) for k, g in enumerate(tree.group_counts)]
    b = Body("router")
    b.function("main", [])
    prog.place(b)
    L.route_slots(prog, "x", L.RingExprs(width, Wp, "interleaved").roles(X), lambda s: 1 + s)
    L.route_slots(prog, "y", L.RingExprs(height, Hp, "plain").roles(Y, reverse=True), lambda s: 4 + s)
    for lv in L.ktree_levels(tree.group_counts, Wp, G):
        L.route_slots(prog, "x", L.ktree_roles(lv, X), lambda s, k=lv.k: 8 + 2 * k + s)
    rx, tx = L.multicast_masks("y", Y, Hp, prog.param("R", height // 2))
    prog.route_rule(None, None, 13, rx, tx)
    L.route_slots(prog, "y", L.directed_chain_roles(Y, Hp), lambda s: 14 + s)
    return prog, None


def _request(name: str, size: int, dim: int | None = None):
    """The paper's shapes (2K GEMM, 16K GEMV) from 64 PEs a side (smaller meshes cannot hold them:
    128 and 1K there), or ``dim`` for a small probe."""
    from meshgemm.kernel import KernelRequest

    gemv = "gemv" in name
    k = dim or ((16384 if gemv else 2048) if size >= 64 else (1024 if gemv else 128))
    return KernelRequest(name=name, mesh=(size, size), m=1 if gemv else k, k=k, n=k, dtype="fp16",
                         functional=False)


def kernels(size: int):
    """(name, program, host plan) of every registered kernel that is written as code bodies (checked
    on a 4 x 4 build first: a trace-API kernel is never built at full size)."""
    from meshgemm.registry import KERNELS, build_kernel
    from plmr.hardware import WSE2

    for name in KERNELS:
        try:
            probe = build_kernel(_request(name, 4, dim=8), WSE2).program
            probe.finalize()
            if any(p.auto for p in probe.placements):
                print(f"  {name}: built with the per-PE trace API, not emitted")
                continue
            build = build_kernel(_request(name, size), WSE2)
        except InputError as exc:
            print(f"  {name} {size}x{size}: not built ({exc})")
            continue
        from csl_templates.kernel_bundle import host_plan_of

        yield name, build.program, host_plan_of(build)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 720])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="program names to run")
    ap.add_argument("--check", action="store_true", help="check every bundle with the CSL checker")
    args = ap.parse_args()
    print(f"{'program':<16} {'mesh':>9} {'best s':>8} {'median s':>9} {'files':>6} {'bytes':>8}")
    for size in args.sizes:
        progs = [(n, *EXAMPLES[n](width=size, height=size)) for n in EXAMPLES]
        progs.append(("patterns", *line_patterns(size, size)))
        progs += list(kernels(size))
        for name, prog, plan in progs:
            if args.only and name not in args.only:
                continue
            times, nfiles, nbytes = [], 0, 0
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        b = emit_bundle(prog, Path(tmp) / "bundle", plan, kernel=name)
                        times.append(time.perf_counter() - t0)
                except InputError as exc:
                    print(f"{name:<16} {f'{size}x{size}':>9} not emitted: {exc}")
                    continue
                files = [p for p in (Path(tmp) / "bundle").rglob("*") if p.is_file()]
                nfiles, nbytes = len(files), sum(p.stat().st_size for p in files)
                checked = ""
                if args.check:
                    from csl_templates.checker import check_paths
                    for t in b.source.targets:
                        t0 = time.perf_counter()
                        rep = check_paths([str(Path(tmp) / "bundle")], arch=t.arch, params=b.manifest["params"])
                        checked += f"  {t.arch}: {len(rep.findings)} findings ({time.perf_counter() - t0:.1f} s)"
                        for f in rep.findings[:3]:
                            checked += f"\n    {f}"
                skipped = "".join(f"  (not for {a})" for a in b.source.skipped)
            assert nfiles == len(b.manifest["files"])
            print(f"{name:<16} {f'{size}x{size}':>9} {min(times):8.3f} {statistics.median(times):9.3f} "
                  f"{nfiles:6d} {nbytes:8d}{skipped}{checked}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
