"""Record every ``simulate`` call of a test run, then replay them against a changed engine.

An engine optimisation must not change a single result. This records each call's program and
outcome (cycles, busy/stalled/idle, finish, link counts, timestamps, trace, buffers, or the error
message) and later re-runs them all and reports any difference.

    python benchmarks/replay_engine.py record /tmp/calls [pytest args...]   # default: tests/simulator tests/meshgemm
    python benchmarks/replay_engine.py replay /tmp/calls
    python benchmarks/replay_engine.py replay /tmp/calls --parts 2   # visits split into parts and bands

``--parts K`` replays every call with each cycle's visits cut into K parts and the bands between them
(``simulator.engine.segments`` at the finest grain, so even small meshes are cut), run one after the
other on one thread: the results must not depend on that order (the engine's claim that lets the
parts run concurrently on large meshes).

Recordings are pickles of the programs (tens of MB for the default suites); keep them out of git.
"""

from __future__ import annotations

import glob
import os
import pickle
import sys
import types
import copyreg

import numpy as np



def _mapping_proxy(d: dict) -> types.MappingProxyType:
    return types.MappingProxyType(d)


# programs hold read-only mappings; pickle them as their dict
copyreg.pickle(types.MappingProxyType, lambda m: (_mapping_proxy, (dict(m),)))


def outcome(simulate, program, args, kwargs):
    """What a call produced, in a comparable form (timestamps and trace in canonical order)."""
    try:
        r = simulate(program, *args, **kwargs)
    except Exception as exc:  # the error itself is part of the result
        return ("exc", type(exc).__name__, str(exc))
    return ("ok", dict(
        total=r.total_cycles, busy=r.busy.copy(), stalled=r.stalled.copy(), idle=r.idle.copy(),
        finish=r.finish.copy(), links=r.link_wavelets.copy(),
        ts=sorted(r.timestamps, key=lambda e: (e[3], e[1], e[0])),
        trace=sorted(r._trace, key=lambda e: (e[3], e[0][1], e[0][0], e[1])),
        mem=r._device.mem.copy() if r.mode == "functional" else None))


def same(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "exc":
        return a[1:] == b[1:]
    for k, va in a[1].items():
        vb = b[1][k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if va is None or vb is None or va.shape != vb.shape or not np.array_equal(va, vb, equal_nan=True):
                return False
        elif va != vb:
            return False
    return True


class Recorder:
    """pytest plugin: wraps ``simulator.simulate`` so every call is saved with its outcome."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.n = 0
        self.skipped = 0

    def pytest_configure(self, config):
        import simulator
        import simulator.run as run_mod
        original = run_mod.simulate

        def recording(program, *args, **kwargs):
            res = outcome(original, program, args, kwargs)
            try:
                blob = pickle.dumps((program, args, kwargs, res))
            except Exception as exc:  # never fail the test run over a recording
                self.skipped += 1
                print(f"not recorded ({exc})")
            else:
                self.n += 1
                tmp = os.path.join(self.out_dir, f"{self.n:06d}.tmp")
                with open(tmp, "wb") as f:
                    f.write(blob)
                os.replace(tmp, tmp[:-4] + ".pkl")
            return original(program, *args, **kwargs)

        run_mod.simulate = recording
        simulator.simulate = recording
        for mod in list(sys.modules.values()):  # modules that imported simulate by name
            if getattr(mod, "simulate", None) is original:
                mod.simulate = recording


def record(out_dir: str, pytest_args: list[str]) -> int:
    import pytest
    os.makedirs(out_dir, exist_ok=True)
    plugin = Recorder(out_dir)
    # -n 0: the recorder wraps ``simulate`` in this process; xdist's workers (the suite's default) would
    # run the tests, and their calls, elsewhere
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-n", "0",
                      *(pytest_args or ["tests/simulator", "tests/meshgemm"])], plugins=[plugin])
    print(f"recorded {plugin.n} simulate calls in {out_dir} ({plugin.skipped} could not be pickled)")
    return int(rc)


def replay(in_dir: str, parts: int = 1) -> int:
    from simulator.run import simulate
    if parts > 1:
        import numba
        import simulator.run as run_mod
        from simulator import engine
        numba.set_num_threads(1)  # fine cuts share summary words: the parts must not run concurrently
        whole = engine.segments
        run_mod._parts = lambda pes, trace, threads: 1 if trace else parts
        engine.segments = lambda w, h, k, grain=64: whole(w, h, k, 64)
    files = sorted(glob.glob(os.path.join(in_dir, "*.pkl")))
    bad = 0
    for fn in files:
        with open(fn, "rb") as f:
            program, args, kwargs, ref = pickle.load(f)
        if not same(ref, outcome(simulate, program, args, kwargs)):
            bad += 1
            print("MISMATCH", fn)
    print(f"{len(files)} calls replayed, {bad} mismatches")
    return 1 if bad or not files else 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("record", "replay"):
        print(__doc__)
        return 2
    if argv[0] == "record":
        return record(argv[1], argv[2:])
    parts = int(argv[argv.index("--parts") + 1]) if "--parts" in argv else 1
    return replay(argv[1], parts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
