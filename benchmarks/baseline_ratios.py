"""The PLMR comparison of MeshGEMM/MeshGEMV with their baselines at the paper's sizes, under both
execution semantics (docs/BASELINES.md, "What the two semantics predict at the paper's sizes").

    python benchmarks/baseline_ratios.py                       # print both tables (WSE-2, fp16)
    python benchmarks/baseline_ratios.py --write docs/BASELINES.md   # replace them between their markers

Predictions only (``meshgemm.predict.predict_kernel``, the formula a build attaches), at the shipped
hardware parameters, so the tables follow every change to a formula or a refit.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile

from meshgemm.kernel import KernelRequest
from meshgemm.predict import predict_kernel
from plmr.bsp import barrier
from plmr.hardware import WSE2

GEMM_SIDES = (64, 128, 256, 360, 512, 720)
GEMM_KERNELS = ("meshgemm", "cannon", "summa", "cannon-bsp", "summa-bsp", "meshgemm-bsp")
GEMV_POINTS = [(side, n) for side in (120, 240, 360, 480, 600, 720) for n in (4096, 16384)]


def _cycles(name: str, side: int, m: int, k: int, n: int, **kw) -> int:
    req = KernelRequest(name, (side, side), m, k, n, dtype="fp16", functional=False, **kw)
    return round(predict_kernel(req, WSE2).total_cycles)


def gemm_table() -> str:
    rows = ["| mesh | MeshGEMM | Cannon | SUMMA | Cannon BSP | SUMMA BSP | MeshGEMM BSP | one barrier |",
            "|---|---|---|---|---|---|---|---|"]
    for side in GEMM_SIDES:
        c = {k: _cycles(k, side, 2048, 2048, 2048) for k in GEMM_KERNELS}
        base = c["meshgemm"]
        cells = [f"{base:,}"] + [f"{c[k]:,} ({c[k] / base:.2f}×)" for k in GEMM_KERNELS[1:]]
        rows.append(f"| {side}² | " + " | ".join(cells)
                    + f" | {round(barrier(WSE2, side, side).total_cycles):,} |")
    return "\n".join(rows)


def gemv_table() -> str:
    rows = ["| mesh | N | MeshGEMV K=2 | pipeline | pipeline BSP |", "|---|---|---|---|---|"]
    for side, n in GEMV_POINTS:
        mv = _cycles("meshgemv", side, 1, n, n, k_tree=2)
        cells = [f"{mv:,}"] + [f"{c:,} ({c / mv:.2f}×)" for c in
                               (_cycles("gemv-pipeline", side, 1, n, n), _cycles("gemv-pipeline-bsp", side, 1, n, n))]
        rows.append(f"| {side}² | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _replace(text: str, tag: str, table: str) -> str:
    pat = re.compile(rf"(<!-- {tag} -->\n).*?(\n<!-- end {tag} -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"baseline_ratios: no '<!-- {tag} -->' ... '<!-- end {tag} -->' block in the file")
    return pat.sub(lambda m: m.group(1) + table + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", metavar="FILE", help="replace the tables between their markers in FILE")
    args = ap.parse_args(argv)
    gemm, gemv = gemm_table(), gemv_table()
    if not args.write:
        print(gemm, gemv, sep="\n\n")
        return 0
    with open(args.write, encoding="utf-8") as f:
        text = f.read()
    text = _replace(_replace(text, "gemm ratios", gemm), "gemv ratios", gemv)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.write)), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
