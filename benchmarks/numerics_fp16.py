"""Measure how far fp16 runs drift from transformers in fp32, on the tiny random-weight test models.

    python benchmarks/numerics_fp16.py

For every model of the test zoo (tests/conftest.py): greedy-generate 16 tokens after a 7-token prompt with
transformers in fp32 (the truth), then compare: the numpy reference (waferllm.reference) and the per-PE block
model (meshgemm.block_dataflow; prefill on 2x3, decode on 3x2) in fp32 and fp16, and transformers itself in
fp16. Reports the number of leading tokens equal to the fp32 truth and the largest logit error over those steps
(later steps have a different history and are not comparable). Prints a Markdown table (docs/DESIGN.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PROMPT = [3, 17, 42, 5, 88, 61, 29]
N = 16


def main() -> None:
    import torch
    from conftest import TINY_MODELS, build_tiny_model

    from meshgemm.block_dataflow import generate
    from waferllm.reference import ReferenceModel
    from waferllm.weights import load_weights

    def hf(model):
        ids = torch.tensor([PROMPT])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, min_new_tokens=N,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        return out.sequences[0, len(PROMPT):].tolist(), torch.stack(out.logits)[:, 0].float().numpy()

    def cmp(tokens, logits, truth_t, truth_l):
        k = next((i for i, (a, b) in enumerate(zip(tokens, truth_t)) if a != b), N)
        err = float(np.abs(np.asarray(logits[:k]) - truth_l[:k]).max()) if k else float("nan")
        return f"{k}/{N}, {err:.1e}"

    print("| model | max abs logit | reference fp32 | block model fp32 | reference fp16 | block model fp16 "
          "| transformers fp16 |")
    print("|---|---|---|---|---|---|---|")
    for name in TINY_MODELS:
        d = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        model = build_tiny_model(d, name)
        tt, tl = hf(model)
        cells = []
        for dtype in ("fp32", "fp16"):
            w = load_weights(d, dtype)
            g = ReferenceModel(w).generate(PROMPT, N)
            b = generate(w.spec, w, PROMPT, N, (3, 2), (2, 3))
            cells.append((cmp(g.tokens, g.logits, tt, tl), cmp(b.tokens, b.logits, tt, tl)))
        t16, l16 = hf(model.half())
        print(f"| {name} | {np.abs(tl).max():.1f} | {cells[0][0]} | {cells[0][1]} | {cells[1][0]} | {cells[1][1]} "
              f"| {cmp(t16, l16, tt, tl)} |")


if __name__ == "__main__":
    main()
