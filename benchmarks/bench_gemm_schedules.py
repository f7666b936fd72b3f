"""CPU time of the SUMMA and dist-GEMM-T formulas (``plmr.gemm.summa`` / ``gemmt``, which evaluate
the programs' steps for every PE, ``plmr.gemm_schedules``) for a 2K GEMM, fp16, WSE-2: the numba
loops against the numpy evaluation they replaced (tests/plmr/gemm_schedules_numpy.py), interleaved
in one process, with the cycles of both (they must be equal):

    python benchmarks/bench_gemm_schedules.py --sides 128,360,720
    python benchmarks/bench_gemm_schedules.py --sides 720 --fast-only     # skip the slow numpy runs

The numba cache is warmed (one tiny evaluation) before timing. Prints one JSON line per point.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plmr.gemm as plmr_gemm  # noqa: E402
from plmr.hardware import WSE2  # noqa: E402


def _numpy_schedules():
    spec = importlib.util.spec_from_file_location("gemm_schedules_numpy",
                                                  ROOT / "tests" / "plmr" / "gemm_schedules_numpy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _timed(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="128,360,720", help="square mesh sides, comma-separated")
    ap.add_argument("--size", type=int, default=2048, help="M = K = N")
    ap.add_argument("--fast-only", action="store_true", help="time the numba loops only")
    args = ap.parse_args()
    ref = None if args.fast_only else _numpy_schedules()
    fast_summa, fast_gemmt = plmr_gemm.summa_schedule, plmr_gemm.gemmt_schedule
    plmr_gemm.summa(WSE2, 3, 2, 12, 12, 12)  # warm the numba cache
    plmr_gemm.gemmt(WSE2, 3, 2, 12, 12, 12)
    n = args.size
    for side in (int(s) for s in args.sides.split(",")):
        for op in ("summa", "gemmt"):
            fn = getattr(plmr_gemm, op)
            row = {"op": op, "mesh": side, "size": n}
            if ref is not None:
                plmr_gemm.summa_schedule, plmr_gemm.gemmt_schedule = ref.summa_schedule, ref.gemmt_schedule
                slow, row["numpy_cpu_s"] = _timed(fn, WSE2, side, side, n, n, n)
                plmr_gemm.summa_schedule, plmr_gemm.gemmt_schedule = fast_summa, fast_gemmt
            out, row["numba_cpu_s"] = _timed(fn, WSE2, side, side, n, n, n)
            row["cycles"] = int(out.total_cycles)
            if ref is not None:
                row["equal"] = out == slow
                row["speedup"] = round(row["numpy_cpu_s"] / row["numba_cpu_s"], 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
