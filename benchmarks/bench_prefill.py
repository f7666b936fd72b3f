"""Prefill benchmarks on the simulator, timing-only (docs/BENCHMARKS.md "Prefill on the simulated wafer").

    python benchmarks/bench_prefill.py layer --model qwen2.5-0.5b --grid 240 --tokens 4096
    python benchmarks/bench_prefill.py layer --model llama3-8b --grid 96 --tokens 4096 [--threads 2] [--json out.json]
    python benchmarks/bench_prefill.py layer --model llama3-8b --grid 16 --tokens 4096 \
        --sram-bytes 16777216 --max-cycles 4000000000

One prefill layer of the model (`meshgemm.prefill_program`, the program `waferllm run --prefill device`
runs) on one P_y × P_x region, timing-only, fp16 with fp32 accumulation: build, lowering and simulation
wall and CPU times, simulated cycles, cycles per phase at the probe PE that finished last (and at every
probe: ``phases_per_probe``), wavelet moves
(and moves per second of simulation), next to `plmr.transformer.prefill_layer` for the same grid and
prompt, phase by phase. Peak memory: the process's maximum resident set size (``resource.getrusage``;
``/usr/bin/time -v`` around the command gives the same figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def grid_arg(s: str) -> tuple[int, int]:
    a, _, b = s.partition("x")
    return (int(a), int(b or a))


def plmr_phases(model, hw, grid, tokens, dtype) -> tuple[int, dict]:
    """plmr's prefill layer for the same grid and prompt, mapped onto the program's phases."""
    from plmr.transformer import prefill_phases
    from waferllm.planner import model_dims

    layer = prefill_phases(hw, model_dims(model), grid[0], grid[1], tokens, dtype)
    cycles = {k: c.total_cycles for k, c in layer.items()}  # CostBreakdown per phase
    return int(round(sum(cycles.values()))), {k: int(round(v)) for k, v in cycles.items()}


def probe_phases(timestamps) -> dict:
    """Cycles per phase at every probe ("x,y": {phase: cycles}): a PE that leaves a phase early waits in
    the next one, so the phases of the probe that ended last (``phases``) need not be the busiest PE's
    (plmr's charge); the busiest row's probe is the one to compare a phase with."""
    out: dict = {}
    prev: dict = {}
    for (x, y, label, cyc) in timestamps:
        key = f"{int(x)},{int(y)}"
        ph = out.setdefault(key, {})
        ph[label] = ph.get(label, 0) + int(cyc) - prev.get(key, 0)
        prev[key] = int(cyc)
    return out


def bench_layer(args) -> dict:
    from meshgemm.prefill_run import _stage_run
    from meshgemm import prefill_program as PP
    from plmr.hardware import get_spec
    from simulator import Device
    from waferllm.catalog import load_catalog_model

    model = load_catalog_model(args.model)
    one = dataclasses.replace(model, num_layers=1, sliding_window_layers=())
    hw = get_spec(args.hardware)
    if args.sram_bytes:  # same program and cycles; only the fit check moves
        hw = hw.with_params(sram_bytes=args.sram_bytes)
    c0, t0 = cpu_s(), time.perf_counter()
    pp = PP.build_prefill_program(one, hw, args.grid, args.tokens, layers=(0,), dtype=args.dtype, acc="fp32")
    t1 = time.perf_counter()
    dev = Device(pp.program, hw, mode="timing", max_cycles=args.max_cycles, threads=args.threads)
    t2, c2 = time.perf_counter(), cpu_s()
    res = dev.launch("prefill", nl=1)
    t3, c3 = time.perf_counter(), cpu_s()
    run = _stage_run(pp, res)
    try:
        pred, parts = plmr_phases(model, hw, args.grid, args.tokens, args.dtype)
    except ImportError:  # an older plmr without the per-phase composition
        pred, parts = None, {}
    moves = int(res.stats["wavelet_moves"])
    return {"bench": "prefill_layer", "model": args.model, "hardware": hw.name, "grid": list(args.grid),
            "threads": int(dev.seg_w.shape[0] + 1) // 2,
            "tokens": args.tokens, "dtype": args.dtype, "cycles": int(res.total_cycles),
            "phases": run.phase_cycles, "plmr_cycles": pred, "plmr_phases": parts,
            "phases_per_probe": probe_phases(res.timestamps),
            "build_s": round(t1 - t0, 2), "lower_s": round(t2 - t1, 2), "simulate_s": round(t3 - t2, 2),
            "wall_s": round(t3 - t0, 2), "cpu_s": round(c3 - c0, 2), "simulate_cpu_s": round(c3 - c2, 2),
            "wavelet_moves": moves, "moves_per_cpu_s": round(moves / max(c3 - c2, 1e-9)),
            "ce_visits": int(res.stats["ce_visits"]), "router_visits": int(res.stats["router_visits"]),
            "code_bytes_per_pe": int(res.stats["code_bytes_per_pe"]),
            "sram_bytes_per_pe": int(res.stats["sram_bytes_per_pe"]), "peak_rss_gb": round(rss_gb(), 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("layer", help="one prefill layer, timing-only")
    p.add_argument("--model", default="qwen2.5-0.5b")
    p.add_argument("--grid", type=grid_arg, default=(240, 240))
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hardware", default="wse2")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "fp32"))
    p.add_argument("--sram-bytes", type=int, default=0,
                   help="lift the PE's SRAM (bytes) to run a layer whose weights do not fit; cycles are unchanged")
    p.add_argument("--max-cycles", type=int, default=2_000_000_000, help="stop the simulation past this cycle")
    p.add_argument("--threads", type=int, default=None,
                   help="concurrent parts of each cycle (meshes of 16,384 PEs or more; identical results); "
                        "default: the environment's WAFERLLM_SIM_THREADS, else 1")
    p.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    out = bench_layer(args)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
