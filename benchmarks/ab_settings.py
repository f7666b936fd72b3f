"""Time one engine under several ``Device(threads=..., block=...)`` settings, interleaved in one process.

    python benchmarks/ab_settings.py 256 512 --repeat 1 2:16 2:1 1:16   # MeshGEMM 256², M=K=N=512

Each setting ``THREADS:BLOCK`` runs MeshGEMM (timing-only, fp16) on a P x P mesh, round-robin
``--repeat`` times; a fresh ``Device`` per run, lowering outside the timing. Prints every run and each
setting's best wall and CPU seconds (CPU counts every thread). The results (cycles, wavelet moves,
busy PE-cycles) must agree across settings."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_engine import kernel_program  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mesh", type=int)
    ap.add_argument("n", type=int, help="M = K = N")
    ap.add_argument("settings", nargs="+", help="THREADS:BLOCK, e.g. 2:16")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--kernel", default="meshgemm")
    a = ap.parse_args(argv)
    from plmr.hardware import WSE2
    from simulator.run import Device
    confs = [tuple(int(v) for v in c.split(":")) for c in a.settings]
    prog = kernel_program(a.kernel, a.mesh, a.n)
    best: dict = {}
    for _ in range(a.repeat):
        for th, bl in confs:
            dev = Device(prog, WSE2, "timing", threads=th, block=bl)
            c0, w0 = time.process_time(), time.perf_counter()
            res = dev.launch()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            key = (res.total_cycles, res.stats["wavelet_moves"], int(res.busy.sum()))
            b = best.setdefault((th, bl), [float("inf"), float("inf"), key])
            b[0], b[1] = min(b[0], w), min(b[1], c)
            print(f"threads={th} block={bl}: wall {w:.2f} s, CPU {c:.2f} s, {res.total_cycles} cycles, "
                  f"{res.stats['wavelet_moves']} moves, {res.stats['blocked_cycles']} cycles blocked", flush=True)
            del dev, res
    if len({b[2] for b in best.values()}) != 1:
        raise SystemExit("ab_settings: the settings disagree (cycles, moves or busy PE-cycles)")
    for (th, bl), b in best.items():
        print(f"best threads={th} block={bl}: wall {b[0]:.2f} s, CPU {b[1]:.2f} s")


if __name__ == "__main__":
    main()
