"""Sweep throughput: points per second of ``waferllm sweep``'s machinery (evaluation, results table,
scheduling), for PLMR-model and simulated points, locally and on a Dask LocalCluster.

    /usr/bin/time -v python benchmarks/bench_sweep.py                 # all four cases
    python benchmarks/bench_sweep.py --cases model-local,sim-dask --workers 2

Workloads (fixed, so runs compare):
* model: MeshGEMV, pipeline GEMV and its bulk-synchronous variant on 240 square meshes 3..720 step 3,
  K = N = 16384 (720 points), plus 2K GEMMs (MeshGEMM, Cannon, SUMMA and their BSP variants) on
  64..720 step 16 (252 points) -- 972 points;
* sim: timing-only simulation of MeshGEMV and the pipeline GEMV on meshes 8..64 step 4, K = N = 1024
  (30 points; the numba engine is warmed up before timing).
Each case writes to a fresh directory; the figure is points / wall seconds of ``run_sweep``
(LocalCluster start-up excluded and reported apart). Cases run interleaved, ``--repeat`` times.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from waferllm.results import ResultsTable
from waferllm.sweep import AXES, Sweep, evaluate_point, parse_values
from waferllm.sweep_run import run_sweep

CASES = ("model-local", "model-dask", "sim-local", "sim-dask")


def workloads() -> dict[str, list[dict]]:
    gemv = Sweep({"kernel": ["meshgemv", "gemv-pipeline", "gemv-pipeline-bsp"],
                  "mesh": parse_values(AXES["mesh"], ["3:720:3"]), "size": [16384]})
    gemm = Sweep({"kernel": ["meshgemm", "cannon", "summa", "meshgemm-bsp", "cannon-bsp", "summa-bsp"],
                  "mesh": parse_values(AXES["mesh"], ["64:720:16"]), "size": [2048]})
    sim = Sweep({"kernel": ["meshgemv", "gemv-pipeline"], "mesh": parse_values(AXES["mesh"], ["8:64:4"]),
                 "size": [1024]}, "timing")
    return {"model": gemv.points() + gemm.points(), "sim": sim.points()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    cases = args.cases.split(",")
    loads = workloads()
    evaluate_point(loads["sim"][0])  # compile / load the numba engine before timing
    cluster = client = None
    if any(c.endswith("dask") for c in cases):
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        client.run(evaluate_point, loads["sim"][0])  # warm every worker's engine
        print(f"LocalCluster with {args.workers} workers: started and warmed in {time.perf_counter() - t0:.1f} s")
        scheduler = cluster.scheduler_address
    results: dict[str, list[float]] = {c: [] for c in cases}
    try:
        for _ in range(args.repeat):
            for case in cases:
                kind, where = case.split("-")
                points = loads[kind]
                d = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
                try:
                    with ResultsTable(d) as table:
                        s = run_sweep(points, table, workers=args.workers,
                                      scheduler=scheduler if where == "dask" else None, progress=False)
                    assert s.evaluated == len(points), s
                    results[case].append(len(points) / s.seconds)
                    print(f"{case:12s} {len(points):5d} points  {s.seconds:7.2f} s  {len(points) / s.seconds:8.1f} "
                          f"points/s  ({s.errors} failed)", flush=True)
                finally:
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        if client is not None:
            client.close()
            cluster.close()
    print("best points/s: " + ", ".join(f"{c} {max(v):.1f}" for c, v in results.items()))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: this process {own:.0f} MB, largest reaped child {kids:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
