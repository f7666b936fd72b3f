"""Decode benchmarks on the simulator, timing-only (docs/BENCHMARKS.md "Decode on the simulated wafer").

    python benchmarks/bench_decode.py layer [--grid 420] [--context 4096] [--model llama3-8b] [--y-groups G]
    python benchmarks/bench_decode.py token BUNDLE [--context N]   # default: the bundle's planned context
    python benchmarks/bench_decode.py fp16 [--write]            # fp16 divergence on the tiny models
    python benchmarks/bench_decode.py table RUN.json ...        # op-by-op table: saved layer runs vs plmr now

``layer``: one decode layer of the model on one region (no embedding, LM head or hand-off), the KV cache
holding ``context`` tokens: build, lowering and simulation wall times, simulated cycles, the per-op cycles
on the critical path (each op's latest end over the rows of a column with the most attention features;
``meshgemm.decode_runtime.critical_path_ops``), next to the plmr prediction for the same trees and the
paper's estimate. ``token``: one whole decode token of a compiled bundle (every stage's layers, the
hand-offs, the LM head, argmax and the next embedding, the token's return), KV at ``context``.
Peak memory: the process's maximum resident set size (``resource.getrusage``). ``table``: the markdown
table of docs/BENCHMARKS.md from saved ``layer`` outputs, with plmr recomputed by today's formulas (the
simulated cycles depend on the hardware parameters, so the runs must be made with today's).
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

#: The paper's per-layer decode estimate for LLaMA3-8B on WSE-2 (calibration-targets.md; method §9's
#: tokens/s × layers back to cycles at 1.1 GHz).
PAPER_LAYER_CYCLES = 12_700


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def plmr_layer(model, grid, context, ty, tx, dtype="fp16") -> tuple[float, dict]:
    """The planner's per-layer decode cycles for the program's trees (K and level-0 group counts)."""
    from plmr.hardware import WSE2
    from plmr.transformer import TreeChoice
    from waferllm.planner import PlanRequest, decode_cost

    req = PlanRequest(hardware=WSE2, dtype=dtype, context=context, input_len=min(context, 4096))
    one = dataclasses.replace(model, num_layers=1, sliding_window_layers=())
    tyc = TreeChoice(ty.k, (ty.groups0,) if ty.k > 1 else ())
    txc = TreeChoice(tx.k, (tx.groups0,) if tx.k > 1 else ())
    per_layer, _, parts = decode_cost(one, req, grid, tyc, txc)
    return per_layer, {k: int(round(v)) for k, v in parts.items() if k.startswith("layers.")}


def bench_layer(args) -> dict:
    from meshgemm.decode_program import DecodeConfig, DecodeStage, build_decode_program
    from meshgemm.decode_runtime import DecodeRuntime, critical_path_ops
    from plmr.hardware import WSE2
    from waferllm.catalog import load_catalog_model

    model = load_catalog_model(args.model)
    one = dataclasses.replace(model, num_layers=1, sliding_window_layers=())
    grid = args.grid
    cap = -(-args.context // grid[0])
    cfg = DecodeConfig(one, grid, (DecodeStage(0, 0, 0, (0, 0)),), cap, "fp16", timestamps=True, layers_only=True,
                       timestamp_rows=True, y_groups=args.y_groups, x_groups=args.x_groups)
    t0 = time.perf_counter()
    prog = build_decode_program(cfg, WSE2)
    t1 = time.perf_counter()
    rt = DecodeRuntime(prog, mode="timing")
    t2 = time.perf_counter()
    rt.length = args.context - 1  # the step appends token context-1: the cache then holds ``context`` tokens
    r = rt.step()
    t3 = time.perf_counter()
    ops = critical_path_ops(r.result.timestamps)
    pred, parts = plmr_layer(model, grid, args.context, prog.tree_y, prog.tree_x)
    return {"bench": "layer", "model": args.model, "grid": list(grid), "context": args.context,
            "cycles": int(r.cycles), "plmr_cycles": int(round(pred)), "paper_cycles": PAPER_LAYER_CYCLES,
            "ops": ops, "plmr_parts": parts, "trees": {"y": [prog.tree_y.k, prog.tree_y.groups0],
                                                        "x": [prog.tree_x.k, prog.tree_x.groups0]},
            "build_s": round(t1 - t0, 2), "lower_s": round(t2 - t1, 2), "simulate_s": round(t3 - t2, 2),
            "wall_s": round(t3 - t0, 2), "wavelet_moves": int(r.result.stats["wavelet_moves"]),
            "stats": prog.program.stats(), "peak_rss_gb": round(rss_gb(), 2)}


def bundle_placement(b):
    """The plan's placement of bundle ``b`` (``plan.json``'s ``layer_placement``) as a ``Placement``."""
    from waferllm.placement import Placement, Stage

    lp = b.doc["plan"]["layer_placement"]
    grid = tuple(lp["grid"])
    stages = tuple(Stage(index=s["stage"], wafer=s["wafer"], origin=tuple(s["origin"]), layers=tuple(s["layers"]),
                         extras=tuple(s["extras"]), weight_bytes=s["weight_bytes_per_pe"],
                         kv_bytes=s["kv_bytes_per_pe"], buffer_bytes=s["buffer_bytes_per_pe"],
                         extras_bytes=s["extras_bytes_per_pe"], grid=tuple(s["grid"])) for s in lp["stages"])
    strips = {s.grid[1] for s in stages if tuple(s.grid) != grid}
    return Placement(grid=grid, stages=stages, wafers=lp["wafers"], regions_per_wafer=lp["regions_per_wafer"],
                     capacity_per_pe=b.hardware.usable_sram_bytes, buffer_bytes=0,
                     strip_width=max(strips) if strips else 0,
                     score_chunk=b.doc["plan"]["decode"]["score_chunk"])


def plmr_token(b, context: int, ty, tx) -> tuple[int, dict]:
    """plmr's cycles for one whole decode token of bundle ``b`` with ``context`` cached tokens, for the
    plan's placement and the trees the program runs. The plan itself prices its own context
    (``planned_cycles_per_token``): a cache whose token count P_y divides has no shifting rows and one
    ring run, so the layer cost is not monotonic in the context."""
    from plmr.transformer import TreeChoice
    from waferllm.planner import PlanRequest, decode_cost

    plan = b.doc["plan"]
    req = PlanRequest(hardware=b.hardware, dtype=b.doc["dtype"], context=context,
                      input_len=min(context, plan["input_len"]))
    tyc = TreeChoice(ty.k, (ty.groups0,) if ty.k > 1 else ())
    txc = TreeChoice(tx.k, (tx.groups0,) if tx.k > 1 else ())
    _, total, parts = decode_cost(b.model, req, tuple(b.doc["decode_program"]["grid"]), tyc, txc,
                                  bundle_placement(b))
    return int(round(total)), {k: int(round(v)) for k, v in parts.items()}


def bench_token(args) -> dict:
    from meshgemm.decode_program import build_decode_program
    from meshgemm.decode_runtime import DecodeRuntime
    from waferllm.compile import open_bundle

    b = open_bundle(args.bundle)
    t0 = time.perf_counter()
    prog = build_decode_program(b.decode_config(timestamps=False), b.hardware)
    t1 = time.perf_counter()
    rt = DecodeRuntime(prog, mode="timing")
    t2 = time.perf_counter()
    context = args.context or b.doc["context"]
    rt.length = context - 1
    r = rt.step()
    t3 = time.perf_counter()
    pred, parts = plmr_token(b, context, prog.tree_y, prog.tree_x)
    cfg = prog.config
    return {"bench": "token", "model": b.doc["model"], "grid": list(cfg.grid), "stages": len(cfg.stages),
            "layers_per_stage": [s.num_layers for s in cfg.stages], "context": context,
            "cycles": int(r.cycles), "cycles_per_layer": int(r.cycles) / b.model.num_layers,
            "plmr_cycles_per_token": pred, "plmr_parts": parts, "planned_context": b.doc["context"],
            "planned_cycles_per_token": b.doc["plan"]["decode"]["cycles_per_token"],
            "build_s": round(t1 - t0, 2), "lower_s": round(t2 - t1, 2),
            "simulate_s": round(t3 - t2, 2), "wall_s": round(t3 - t0, 2),
            "wavelet_moves": int(r.result.stats["wavelet_moves"]), "stats": prog.program.stats(),
            "peak_rss_gb": round(rss_gb(), 2)}


def bench_fp16(args) -> dict:
    """Greedy tokens and logit errors of the decode program in fp32 and fp16 against transformers fp32
    (16 new tokens, the tiny models of tests/conftest.py, 4x4 or 3x4 regions), the prompt run on the host
    (numpy, ``--prefill host``) and on the simulated prefill regions (``--prefill device``): the leading
    tokens equal to transformers', the first token's logit error (the prefill and the head alone), the
    largest logit error over the equal tokens, and the first divergent token (None: all 16 equal)."""
    import tempfile

    import numpy as np
    import torch  # noqa: F401  (transformers' generate)

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import TINY_MODELS, build_tiny_model
    from waferllm.compile import CompileRequest, compile_bundle
    from waferllm.run import RunRequest, run_bundle

    prompt = [3, 17, 42, 5, 88, 61, 29]
    rows = []
    for name in TINY_MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / name
            model = build_tiny_model(d, name)
            ids = torch.tensor([prompt])
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, min_new_tokens=16,
                                     do_sample=False, output_logits=True, return_dict_in_generate=True,
                                     pad_token_id=0)
            want = out.sequences[0, len(prompt):].tolist()
            logits = torch.stack(out.logits)[:, 0].float().numpy()
            grid = (3, 4) if name in ("llama3_rope", "mistral_window") else (4, 4)
            compile_bundle(CompileRequest(model=str(d), context=40, dtype="fp32", decode_grid=grid, prefill_grid=grid,
                                          out=Path(tmp) / "b"))
            row = {"model": name, "max_abs_logit": float(np.abs(logits).max())}
            for pre in ("host", "device"):
                for dt in ("fp32", "fp16"):
                    r = run_bundle(RunRequest(bundle=str(Path(tmp) / "b"), prompt_ids=prompt, max_new_tokens=16,
                                              dtype=dt, keep_logits=True, prefill=pre))
                    same = 0
                    for a, b in zip(r["tokens"], want):
                        if a != b:
                            break
                        same += 1
                    err = float(np.abs(r["logits"][:max(same, 1)] - logits[:max(same, 1)]).max())
                    row[f"{pre}-{dt}"] = {"prefill": r["prefill"], "equal_leading_tokens": same,
                                          "first_token_logit_error": float(np.abs(r["logits"][0] - logits[0]).max()),
                                          "max_abs_logit_error": err,
                                          "first_divergent_token": same if same < len(want) else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"bench": "fp16", "rows": rows}


class _Tree:
    def __init__(self, k: int, groups0: int):
        self.k, self.groups0 = k, groups0


def table(paths: list[str]) -> str:
    """Op-by-op markdown table (one column pair per run) and the totals, plmr recomputed now."""
    from meshgemm.decode_program import OP_LABELS
    from waferllm.catalog import load_catalog_model

    runs = []
    for p in paths:
        d = json.loads(Path(p).read_text())
        pred, parts = plmr_layer(load_catalog_model(d["model"]), tuple(d["grid"]), d["context"],
                                 _Tree(*d["trees"]["y"]), _Tree(*d["trees"]["x"]))
        runs.append((d, pred, parts))
    head = "| op | " + " | ".join(f"{d['model']} {d['grid'][0]}×{d['grid'][1]} sim / plmr" for d, _, _ in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    for op in OP_LABELS:
        cells = [f"{d['ops'].get(op, 0):,} / {parts.get('layers.' + op, 0):,}" for d, _, parts in runs]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| **layer** | " + " | ".join(f"**{d['cycles']:,} / {pred:,.0f}**" for d, pred, _ in runs) + " |")
    lines.append("| sim / plmr | " + " | ".join(f"{d['cycles'] / pred:.3f}" for d, pred, _ in runs) + " |")
    return "\n".join(lines)


def main() -> None:
    from waferllm.grids import parse_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("layer")
    a.add_argument("--grid", default="420")
    a.add_argument("--context", type=int, default=4096)
    a.add_argument("--model", default="llama3-8b")
    a.add_argument("--y-groups", type=int, default=None, help="level-0 groups of the Y tree (default: the program's)")
    a.add_argument("--x-groups", type=int, default=None, help="level-0 groups of the X tree (default: the program's)")
    t = sub.add_parser("token")
    t.add_argument("bundle")
    t.add_argument("--context", type=int, default=None, help="cached tokens (default: the bundle's planned context)")
    sub.add_parser("fp16")
    tb = sub.add_parser("table")
    tb.add_argument("runs", nargs="+")
    args = ap.parse_args()
    if args.what == "table":
        print(table(args.runs))
        return
    if args.what == "layer":
        args.grid = parse_grid(args.grid, "grid")
        out = bench_layer(args)
    elif args.what == "token":
        out = bench_token(args)
    else:
        out = bench_fp16(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
