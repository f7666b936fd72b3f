"""Speed of the CSL checker: parsing (LALR vs an Earley build of the same grammar), layout read-back
(vectorised vs iteration by iteration, interleaved) and a whole `check_paths` at 720 x 720.

Usage: python benchmarks/bench_csl.py [--repeat N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

from lark import Lark

from csl_templates.checker import check_paths
from csl_templates.layout_reader import evaluate_layout
from csl_templates.parser import _lark, _ToNodes, grammar_text, parse

SAMPLES = Path(__file__).parents[1] / "tests" / "csl_templates" / "samples"


def timed(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    texts = [p.read_text() for p in sorted(SAMPLES.glob("*.csl"))]
    nbytes = sum(len(t) for t in texts)
    t = time.perf_counter()
    _lark()
    print(f"LALR grammar build: {time.perf_counter() - t:.3f} s")
    earley = Lark(grammar_text(), parser="earley", lexer="dynamic", propagate_positions=True)
    lalr_t, earley_t = [], []
    for _ in range(a.repeat):  # interleaved: the VM's speed drifts
        lalr_t += timed(lambda: [_lark().parse(x) for x in texts], 1)
        earley_t += timed(lambda: [earley.parse(x) for x in texts], 1)
    tree_t, full_t = [], []
    for _ in range(a.repeat):  # typed nodes: built in the parser (parse) vs a lark tree transformed afterwards
        tree_t += timed(lambda: [_ToNodes().transform(_lark().parse(x)) for x in texts], 1)
        full_t += timed(lambda: [parse(x) for x in texts], 1)
    lm, em = statistics.median(lalr_t), statistics.median(earley_t)
    fm, tm = statistics.median(full_t), statistics.median(tree_t)
    print(f"parse {len(texts)} sample files ({nbytes} bytes): LALR {lm * 1e3:.1f} ms "
          f"({lm / len(texts) * 1e3:.2f} ms/file), Earley {em * 1e3:.0f} ms ({em / len(texts) * 1e3:.1f} ms/file), "
          f"ratio {em / lm:.0f}x")
    print(f"typed tree: built in the parser {fm * 1e3:.1f} ms, lark tree then transformed {tm * 1e3:.1f} ms, "
          f"ratio {tm / fm:.2f}x")
    ring = SAMPLES / "ring_layout.csl"
    vec, sca = [], []
    for _ in range(a.repeat):
        vec += timed(lambda: evaluate_layout(ring, {"W": 100, "H": 100}), 1)
        sca += timed(lambda: evaluate_layout(ring, {"W": 100, "H": 100}, vectorize=False), 1)
    print(f"ring layout 100x100: vectorised {statistics.median(vec) * 1e3:.0f} ms, "
          f"iteration by iteration {statistics.median(sca) * 1e3:.0f} ms, ratio {statistics.median(sca) / statistics.median(vec):.0f}x")
    for name, params in (("ring_layout.csl", {"W": 720, "H": 720}), ("chain_layout.csl", {"W": 720, "H": 720, "n": 8}),
                         ("legacy_layout.csl", {"P": 720, "Mt": 2, "Nt": 3})):
        ts = timed(lambda: evaluate_layout(SAMPLES / name, params), a.repeat)
        print(f"read back {name} at 720x720: median {statistics.median(ts):.2f} s (min {min(ts):.2f})")
    for arch in ("wse2", "wse3"):
        ts = timed(lambda: check_paths([SAMPLES / "chain_layout.csl"], arch=arch,
                                       params={"W": 720, "H": 720, "n": 8}), a.repeat)
        print(f"check_paths chain_layout 720x720 {arch}: median {statistics.median(ts):.2f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
