"""Timestamps of every PE inside a prefill layer's chains and attention (diagnostic only: the stamps are
added to the program here, one cycle each, never to the program `waferllm` builds).

    python benchmarks/prefill_trace.py --model qwen2.5-0.5b --grid 16 --tokens 256 --stop qkv
    python benchmarks/prefill_trace.py --model qwen2.5-0.5b --grid 16 --tokens 256 --stop attention --json t.json

Every PE is a probe (it stamps every phase's end). Inside each MeshGEMM chain it stamps the skew's start
(``skew0``, after any delay before it) and end (``skew1``) and each product's steps (``steps0``,
``steps1``); inside the attention, the end of each top-level statement of its code (``att<i>``) and of each
ring step (``att_step``). The run stops after phase ``--stop`` (``debug_stops``). Prints, per label, the
spread of the cycle over the PEs and, for the chains, the spread of the skew's start and end and of each
product's step time per PE; ``--json`` writes every PE's stamps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def traced(fn, before: str | None, after: str | None):
    from simulator.expr import Param, eq
    from simulator.statements import If, Timestamp

    def stamp(label):
        return [If(eq(Param("probe"), 1), (Timestamp(label),))]

    def wrapped(*a, **k):
        code = fn(*a, **k)
        if after == "steps1":  # [Assign(g_br), Loop(steps), restoring copies...]: stamp around the loop
            return code[:1] + stamp(before) + code[1:2] + stamp(after) + code[2:]
        return stamp(before) + code + stamp(after)
    return wrapped


def trace_attention(fn):
    from simulator.expr import Param, eq
    from simulator.statements import If, Loop, Timestamp

    def stamp(label):
        return If(eq(Param("probe"), 1), (Timestamp(label),))

    def wrapped(*a, **k):
        out = []
        for i, st in enumerate(fn(*a, **k)):
            if isinstance(st, Loop) and st.var == "at_t":
                st = Loop(st.count, st.var, tuple(st.body) + (stamp("att_step"),))
            out += [st, stamp(f"att{i}")]
        return out
    return wrapped


def run(model_name: str, grid, tokens: int, stop: str, hardware: str = "wse2", sram: int = 16777216,
        dtype: str = "fp16", cols=None):
    from meshgemm import prefill_attention as A
    from meshgemm import prefill_program as PP
    from meshgemm.prefill_gemm import MeshGemmRings
    from plmr.hardware import get_spec
    from simulator import Device
    from waferllm.catalog import load_catalog_model

    model = load_catalog_model(model_name)
    one = dataclasses.replace(model, num_layers=1, sliding_window_layers=())
    hw = get_spec(hardware).with_params(sram_bytes=sram)
    p_y, p_x = grid
    saved = (MeshGemmRings.skew, MeshGemmRings.steps, A.code)
    MeshGemmRings.skew = traced(saved[0], "skew0", "skew1")
    MeshGemmRings.steps = traced(saved[1], "steps0", "steps1")
    A.code = trace_attention(saved[2])
    try:
        pp = PP.build_prefill_program(one, hw, grid, tokens, layers=(0,), dtype=dtype, acc="fp32", debug_stops=True,
                                      probes=[(x, y) for y in range(p_y) for x in (cols or range(p_x))])
    finally:
        MeshGemmRings.skew, MeshGemmRings.steps, A.code = saved
    dev = Device(pp.program, hw, mode="timing")
    res = dev.launch("prefill", nl=1, stop=PP.PHASES.index(stop))
    stamps: dict = {}
    for (x, y, label, cyc) in res.timestamps:
        stamps.setdefault((int(x), int(y)), []).append((label, int(cyc)))
    return stamps


def summarise(stamps: dict) -> None:
    pes = sorted(stamps)
    seq0 = [lab for lab, _ in stamps[pes[0]]]
    counts: dict = {}
    chain = None
    for i, lab in enumerate(seq0):
        counts[lab] = counts.get(lab, 0) + 1
        vals = [stamps[p][i][1] for p in pes if len(stamps[p]) > i]
        first, last = min(vals), max(vals)
        who_first = pes[vals.index(first)]
        who_last = pes[vals.index(last)]
        if lab in PHASES:
            chain = lab
        line = f"{i:4d} {lab:10s}#{counts[lab]:<3d} min {first:>11,d} at {who_first}  max {last:>11,d} at {who_last}  spread {last - first:>7,d}"
        if lab == "steps1":
            d = [stamps[p][i][1] - stamps[p][i - 1][1] for p in pes]
            line += f"  | per-PE steps {min(d):,d}-{max(d):,d} (spread {max(d) - min(d)})"
        print(line)


PHASES = ("attn_norm", "qkv", "rope", "attention", "o_proj", "h_attn", "mlp_norm", "gate_up", "act", "down", "h_out")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--grid", default="16")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--stop", default="qkv", choices=PHASES)
    ap.add_argument("--cols", help="probe only these columns (comma-separated; every row of each): the simulator "
                    "keeps max(4096, 8·PEs) stamps in all")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    g, _, h = a.grid.partition("x")
    grid = (int(g), int(h or g))
    stamps = run(a.model, grid, a.tokens, a.stop, cols=[int(c) for c in a.cols.split(",")] if a.cols else None)
    summarise(stamps)
    if a.json:
        Path(a.json).write_text(json.dumps({f"{x},{y}": v for (x, y), v in stamps.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
