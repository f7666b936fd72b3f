"""Plan LLaMA3-8B on a WSE-2 and print what the planner chose, with both planning methods.

    python examples/plan_llama3_8b.py                 # the full method and the paper's conventions
    python examples/plan_llama3_8b.py --json plan.json

The same as ``waferllm plan llama3-8b`` (and ``--method paper``), from Python.
"""

from __future__ import annotations

import argparse
import json

from plmr.hardware import get_spec
from waferllm.catalog import load_catalog_model
from waferllm.planner import PlanRequest, plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hardware", default="wse2")
    ap.add_argument("--json", help="write both plans as JSON to this file")
    args = ap.parse_args(argv)

    model = load_catalog_model("llama3-8b")
    spec = get_spec(args.hardware)
    plans = {}
    for method in ("full", "paper"):
        d = plan(model, PlanRequest(spec, method)).to_dict()
        plans[method] = d
        pre, dec = d["prefill"], d["decode"]
        print(f"{model.name} on {spec.name}, method {method}:")
        print(f"  prefill {pre['grid'][0]}x{pre['grid'][1]}: {pre['tokens_per_s']:,.0f} tokens/s "
              f"({d['input_len']}-token prompt)")
        print(f"  decode  {dec['grid'][0]}x{dec['grid'][1]}: {dec['tokens_per_s']:,.0f} tokens/s, K={dec['k_tree']}, "
              f"{dec['colors_per_pe']} colours/PE")
        print(f"  KV cache: {d['kv_cache']['max_tokens_shift']:,} tokens shifting, "
              f"{d['kv_cache']['max_tokens_concat']:,} concatenating; {d['energy_j_per_token']:.2f} J/token")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": 1, "plans": plans}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
