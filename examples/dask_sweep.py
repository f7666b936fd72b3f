"""A sweep on a local Dask cluster (2 worker processes): MeshGEMV against the pipeline GEMV under
both semantics, over mesh sizes; the same sweep as ``waferllm sweep ... --scheduler local``.

    python examples/dask_sweep.py --out runs/dask
    python examples/dask_sweep.py --out runs/dask --scheduler tcp://scheduler:8786   # a real cluster

Needs the ``dist`` extra (``pip install -e ".[dist]"``); a remote cluster's workers need waferllm
installed too.
"""

from __future__ import annotations

import argparse

from waferllm.results import ResultsTable
from waferllm.sweep import AXES, Sweep, parse_values
from waferllm.sweep_report import write_report
from waferllm.sweep_run import run_sweep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--meshes", default="20:720:20", help="square sides, START:STOP:STEP")
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--scheduler", default="local", help="'local' (a LocalCluster) or a scheduler address")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    args = ap.parse_args(argv)

    sw = Sweep({"kernel": ["meshgemv", "gemv-pipeline", "gemv-pipeline-bsp"],
                "mesh": parse_values(AXES["mesh"], [args.meshes]), "size": [args.size]})
    points = sw.points()
    with ResultsTable(args.out) as table:
        s = run_sweep(points, table, workers=args.workers, scheduler=args.scheduler)
    print(f"{s.total} points on Dask ({args.scheduler}): {s.ok} evaluated, {s.errors} failed, "
          f"{s.skipped} already done, {s.seconds:.1f} s")
    print(f"report: {write_report(args.out, f'{args.out}/report.html', title='GEMV on a Dask cluster').html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
