"""Kernels at the paper's mesh sizes: build, lowering and simulation time, CPU time and peak memory.

One point per process (peak memory is per process), timing-only, WSE-2, fp16:

    /usr/bin/time -v python benchmarks/bench_scale.py meshgemm 360            # 2K GEMM at 360²
    python benchmarks/bench_scale.py meshgemv 720 --size 16384                 # MeshGEMV 16K at 720²
    python benchmarks/bench_scale.py summa 720 --lower-only                    # build + lowering only
    python benchmarks/bench_scale.py meshgemm 240 --size 480 --threads 1,2,1,2  # concurrent parts vs one thread

Prints one JSON line: simulated and predicted cycles, the program's size (bodies, parameter sets,
code bytes), seconds for build / lowering / simulation (wall and CPU), the CPU seconds of the PLMR
prediction (computed on first use, after the build: ``predict_cpu_s``), wavelet moves and the peak
resident set (JIT warm-up excluded). ``--lower-only`` stops after lowering (the "build and lower in under 5 s" figure).
``--threads K1,K2,...`` simulates once per entry, back to back in this process, with the cycle's
visits cut into that many concurrent parts (``Device(threads=K)``), one JSON line each; the results
must agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plmr.hardware import WSE2  # noqa: E402

from meshgemm.kernel import KernelRequest  # noqa: E402
from meshgemm.registry import build_kernel  # noqa: E402
from simulator.run import Device  # noqa: E402


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kernel")
    ap.add_argument("mesh", type=int, help="side P of the P x P mesh")
    ap.add_argument("--size", type=int, default=2048, help="K = N (and M for GEMMs); default 2048")
    ap.add_argument("--lower-only", action="store_true")
    ap.add_argument("--threads", default=None,
                    help="comma-separated part counts, one simulation each (default: the environment's)")
    a = ap.parse_args()
    m = 1 if "gemv" in a.kernel else a.size
    req = KernelRequest(a.kernel, (a.mesh, a.mesh), m, a.size, a.size, dtype="fp16", functional=False, k_tree=2)
    # JIT warm-up apart from the timed run (numba compiles the engine on first use after a change)
    threads = [int(k) for k in a.threads.split(",")] if a.threads else [None]
    for k in set(threads):
        Device(build_kernel(KernelRequest(a.kernel, (2, 2), min(m, 8), 8, 8, dtype="fp16", functional=False,
                                          k_tree=2), WSE2).program, WSE2, "timing", threads=k).launch()
    w0, c0 = _clock()
    build = build_kernel(req, WSE2)
    wb, cb = _clock()
    first = None
    for k in threads:
        w1, c1 = _clock()
        dev = Device(build.program, WSE2, "timing", threads=k)
        w2, c2 = _clock()
        out = {"kernel": a.kernel, "mesh": a.mesh, "size": a.size,
               **{k_: v for k_, v in build.program.stats().items() if isinstance(v, int)},
               "build_s": round(wb - w0, 2), "lower_s": round(w2 - w1, 2),
               "build_lower_cpu_s": round(cb - c0 + c2 - c1, 2),
               "parts": int((dev.seg_w.shape[0] + 1) // 2)}
        if first is None:  # the PLMR formula, evaluated on first use of ``predicted``: timed apart
            c4 = time.process_time()
            predicted = int(build.predicted.total_cycles)
            c5 = time.process_time()
            out.update(predicted_cycles=predicted, predict_cpu_s=round(c5 - c4, 2))
        else:
            out.update(predicted_cycles=int(build.predicted.total_cycles))
        w2, c2 = _clock()  # the simulation's clock starts after the prediction
        if not a.lower_only:
            res = dev.launch()
            w3, c3 = _clock()
            out.update(simulated_cycles=int(res.total_cycles), sim_s=round(w3 - w2, 1), sim_cpu_s=round(c3 - c2, 1),
                       wavelet_moves=res.stats["wavelet_moves"],
                       moves_per_cpu_s=round(res.stats["wavelet_moves"] / max(c3 - c2, 1e-9)))
            key = (res.total_cycles, res.busy.tobytes(), res.link_wavelets.tobytes(), res.stats["wavelet_moves"])
            if first is not None and key != first:
                raise SystemExit("bench_scale: the runs with different part counts disagree")
            first = key
            del res
        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
        print(json.dumps(out), flush=True)
        del dev


if __name__ == "__main__":
    main()
