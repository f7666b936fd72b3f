"""Check that the working tree's engine gives the same results as another revision's, and that the
parts of a cycle give the same results whether they run concurrently or one after the other.

    python benchmarks/engine_equivalence.py --rev 0dc4e8a            # every kernel, several shapes
    python benchmarks/engine_equivalence.py --rev 0dc4e8a --large    # + meshes cut into parts (slow)

Each case builds a kernel of the registry (fp32 functional and fp16 timing-only; GEMMs, GEMVs with
their collectives, the bulk-synchronous baselines) and compares, between the revision ``--rev`` and
this tree: total cycles, busy/stalled/finish per PE, link counts, timestamps, wavelet moves and, in
functional mode, every PE's memory. This tree runs each case on one thread (blocked in time where a
cycle is dense, ``Device(block=...)``), on small meshes also blocked in every cycle on tiles of a
bitmap word or two (and, where a mesh can be cut at a grain of one word, cut in two parts, run one
after the other), and, where the mesh can be cut (``simulator.engine.segments``), on two concurrent
parts too (blocked where dense); ``--large`` adds meshes large enough for the default cut. The recorded test calls (``replay_engine.py``) cover the decode and prefill
layers and the collectives' own tests; this script covers the kernels at sizes the tests do not run.
Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ab_engine import build_with, load_revision  # noqa: E402

KERNELS = ("meshgemm", "gemmt", "cannon", "summa", "meshgemv", "gemv-pipeline", "gemv-ring",
           "meshgemm-bsp", "cannon-bsp", "summa-bsp", "gemv-pipeline-bsp")
#: (mesh (P_y, P_x), M, K, N) per case; GEMVs take M = 1
SHAPES = (((4, 4), 16, 16, 16), ((6, 5), 13, 22, 17), ((8, 8), 40, 40, 40), ((16, 24), 32, 48, 48))
LARGE = (((120, 120), 240, 240, 240), ((136, 128), 272, 256, 256))


def program(name: str, mesh, m: int, k: int, n: int, dtype: str, functional: bool):
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from plmr.hardware import WSE2
    if "gemv" in name:
        m = 1
    return build_kernel(KernelRequest(name, mesh, m, k, n, dtype=dtype, functional=functional, k_tree=2),
                        WSE2).program


def outcome(device_cls, prog, mode: str, **kw):
    from plmr.hardware import WSE2
    dev = device_cls(prog, WSE2, mode, **kw)
    try:
        r = dev.launch()
    except Exception as exc:  # the error is part of the result
        return ("exc", type(exc).__name__, str(exc))
    return ("ok", r.total_cycles, r.busy.copy(), r.stalled.copy(), r.finish.copy(), r.link_wavelets.copy(),
            sorted(r.timestamps), r.stats["wavelet_moves"], dev.mem.copy() if mode == "functional" else None)


def _every_cycle_blocked(parts: int = 1):
    """A ``Device`` that blocks (``simulator.engine._block_py``) whatever a cycle's load, on tiles of
    the fewest bitmap words that are exact: small meshes are then cut into several tiles. ``parts``
    > 1: each cycle also cut into that many parts at a grain of one bitmap word (such parts share
    summary words: run on one numba thread)."""
    import numba

    import simulator.run as R
    from simulator import engine as E

    class Blocked(R.Device):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            cp = self.lowered
            self.block_tile = E.block_tile(cp.width, cp.ch_route, cp.ch_port, cp.r_chan0, min_words=1)
            if parts > 1:
                self.seg_w = E.segments(cp.width, cp.height, parts, grain=64)

        def launch(self, *a, **kw):
            dense, R.BLOCK_DENSE = R.BLOCK_DENSE, 0
            nthreads = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                return super().launch(*a, **kw)
            finally:
                R.BLOCK_DENSE = dense
                numba.set_num_threads(nthreads)
    return Blocked


def same(a, b) -> bool:
    if a[0] != b[0] or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
                return False
        elif x != y:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD", help="git revision whose engine is the reference")
    ap.add_argument("--large", action="store_true", help="add meshes cut into concurrent parts (slow)")
    ap.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated kernel names")
    args = ap.parse_args(argv)
    import numba
    from simulator.run import Device
    from simulator.engine import segments
    global _EveryCycleBlocked
    _EveryCycleBlocked = _every_cycle_blocked()
    blocked_parts = _every_cycle_blocked(parts=2)
    shapes = SHAPES + (LARGE if args.large else ())
    bad = 0
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        other = load_revision(args.rev, Path(tmp))
        for name in args.kernels.split(","):
            for mesh, m, k, nn in shapes:
                big = mesh[0] * mesh[1] >= 10_000
                for dtype, mode in (("fp16", "timing"),) if big else (("fp32", "functional"), ("fp16", "timing")):
                    t0 = time.process_time()
                    fn = mode == "functional"
                    ref_prog = build_with(other, lambda: program(name, mesh, m, k, nn, dtype, fn))
                    ref = outcome(sys.modules[other.__name__ + ".run"].Device, ref_prog, mode)
                    prog = program(name, mesh, m, k, nn, dtype, fn)
                    runs = {"1 thread": outcome(Device, prog, mode, threads=1)}
                    if not big:  # blocks of 16 cycles in every cycle, tiles as small as is exact
                        runs["blocked"] = outcome(_EveryCycleBlocked, prog, mode, threads=1, block=16)
                        if segments(mesh[1], mesh[0], 2, grain=64).shape[0] == 3:  # cut at a fine grain
                            runs["blocked, 2 parts"] = outcome(blocked_parts, prog, mode, threads=1, block=16)
                    if big and numba.get_num_threads() > 1:
                        runs["2 parts"] = outcome(Device, prog, mode, threads=2)
                    for tag, res in runs.items():
                        n += 1
                        ok = same(ref, res)
                        bad += not ok
                        print(f"{'ok  ' if ok else 'DIFF'} {name} {mesh} {m}x{k}x{nn} {dtype} {mode} {tag}"
                              f" ({ref[1] if ref[0] == 'ok' else ref[1]} cycles;"
                              f" {time.process_time() - t0:.1f} s)", flush=True)
    print(f"{n} runs compared with {args.rev}, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
