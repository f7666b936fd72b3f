"""Replay recordings made with the per-PE trace program model (before code bodies) on today's simulator.

``benchmarks/replay_engine.py record`` run in a checkout of an older revision pickles every
``simulate`` call with its outcome. Those programs are the older ``MeshProgram`` (per-PE buffers,
straight-line instruction lists, per-PE routes); this tool rebuilds each one with today's trace API
(``add_buffer``, ``add``, ``set_route``, ``set_data``), simulates it, and compares the outcome
(cycles, busy, link counts, timestamps, buffers, or the error).

Today's PE follows rules the older model lacked. ``--older-rules`` switches the ones a spec can
switch off — the ramp takes any number of wavelets per cycle (``ramp_wavelets_per_cycle=0``), no
memory-port contention (``memory_read_ports=0``), and joins cost nothing (``task_cycles=0``: a
``Wait`` on n ops is now n task activations, it was one) — so that every remaining difference can be
listed and attributed:

    python benchmarks/replay_trace_recordings.py /tmp/calls                 # today's rules
    python benchmarks/replay_trace_recordings.py /tmp/calls --older-rules   # explain the differences
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import simulator  # noqa: E402
from plmr.hardware import HardwareSpec  # noqa: E402
from simulator import statements as S  # noqa: E402
from simulator import instructions as I  # noqa: E402


class _Unpickler(pickle.Unpickler):
    """Unpickles an older recording into the older simulator package (``simulator_ab``)."""

    def find_class(self, module, name):
        if module == "simulator" or module.startswith("simulator."):
            module = "simulator_ab" + module[len("simulator"):]
        return super().find_class(module, name)


def _instruction(old):
    """Today's statement for an older instruction object (same class names and fields; ``Wait`` and
    ``Timestamp`` are statements now)."""
    name = type(old).__name__
    if name == "Wait":
        return S.Wait(tuple(old.ids))
    if name == "Timestamp":
        return S.Timestamp(old.label)
    kw = {}
    for f in dataclasses.fields(old):
        v = getattr(old, f.name)
        if type(v).__name__ == "Ref":
            v = I.Ref(v.buf, v.offset, v.length, v.stride)
        kw[f.name] = v
    return getattr(I, name)(**kw)


def rebuild(old, spec: HardwareSpec) -> simulator.MeshProgram:
    """Today's trace-API program for an older recorded ``MeshProgram``."""
    W, H = old.width, old.height
    prog = simulator.MeshProgram(W, H, spec)
    lid = np.asarray(old._layout_id)  # noqa: SLF001
    for pe in range(W * H):
        for b in old._layouts[int(lid[pe])].buffers:  # noqa: SLF001
            prog.add_buffer(pe % W, pe // W, b.name, b.dtype, b.length)
    for (pe, name), arr in old._init.items():  # noqa: SLF001
        prog.set_data(pe % W, pe // W, name, np.asarray(arr))
    rx, tx = np.asarray(old._rx), np.asarray(old._tx)  # noqa: SLF001
    for pe, c in zip(*np.nonzero(rx)):
        prog._write_routes(np.array([pe]), np.array([c]), rx[pe, c], tx[pe, c], False)  # noqa: SLF001
    table = [_instruction(ins) for ins in old._instr_table]  # noqa: SLF001
    for pe, code in enumerate(old._code):  # noqa: SLF001
        if code:
            prog.add(pe % W, pe // W, *[table[i] for i in code])
    return prog


def outcome(sim, spec, prog, kwargs):
    try:
        r = sim(prog, spec, **{k: v for k, v in kwargs.items() if k != "spec"})
    except Exception as exc:  # the error itself is part of the result
        return ("exc", type(exc).__name__, str(exc))
    return ("ok", dict(total=r.total_cycles, busy=r.busy, links=r.link_wavelets,
                       ts=sorted(r.timestamps, key=lambda e: (e[3], e[1], e[0]))))


def compare(ref, new) -> str | None:
    """None when equal, else what differs first."""
    if ref[0] != new[0]:
        return f"{ref[0]} vs {new[0]}" + (f" ({new[1]}: {new[2][:120]})" if new[0] == "exc" else "")
    if ref[0] == "exc":
        return None if ref[1] == new[1] else f"error {ref[1]} vs {new[1]}"
    a, b = ref[1], new[1]
    if a["total"] != b["total"]:
        return f"cycles {a['total']} vs {b['total']}"
    if not np.array_equal(a["links"], b["links"]):
        return "link counts"
    if [tuple(e) for e in a["ts"]] != [tuple(e) for e in b["ts"]]:
        return "timestamps"
    if not np.array_equal(a["busy"], b["busy"]):
        return "busy cycles"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("calls", help="directory of recordings (replay_engine.py record, older revision)")
    ap.add_argument("--rev", default="0c54d6b", help="the revision that recorded them (default 0c54d6b)")
    ap.add_argument("--older-rules", action="store_true",
                    help="switch off the rules the older model lacked (ramp, memory ports, join cost) and "
                         "re-run the older engine with joins costing nothing too")
    args = ap.parse_args(argv)
    import tempfile

    from ab_engine import load_revision

    files = sorted(glob.glob(os.path.join(args.calls, "*.pkl")))
    kinds: Counter = Counter()
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        old_sim = load_revision(args.rev, Path(tmp))
        for fn in files:
            with open(fn, "rb") as f:
                program, call_args, kwargs, ref = _Unpickler(f).load()
            spec = call_args[0] if call_args else kwargs.get("spec", program.spec)
            kwargs = dict(kwargs)
            if args.older_rules:
                spec = spec.with_params(task_cycles=0.0)
                ref = outcome(old_sim.simulate, spec, program, kwargs)
                spec = spec.with_params(ramp_wavelets_per_cycle=0, memory_read_ports=0)
            elif ref[0] == "ok":
                ref = ("ok", {k: ref[1][k] for k in ("total", "busy", "links", "ts")})
            try:
                new = outcome(simulator.simulate, spec, rebuild(program, spec), kwargs)
            except Exception as exc:
                new = ("exc", type(exc).__name__, str(exc))
            why = compare(ref, new)
            kinds["equal" if why is None else why.split(" ")[0]] += 1
            if why is not None:
                diffs.append((os.path.basename(fn), why))
    for name, why in diffs[:60]:
        print(f"{name}: {why}")
    print(f"{len(files)} recordings: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
