"""``cached_njit`` against numba's cache race, reproduced with the race window widened.

Two processes compile different signatures of one function into one fresh cache while numba's
``IndexDataCacheFile.save`` is slowed between reading the index, writing it and writing the entry,
so that, unlocked, both claim slot 1: the index ends up naming process B's signature and the file
holding process A's machine code. A third process then loads B's signature from the cache. With
plain ``njit`` it runs A's code (a wrong sum, or a crash); with ``cached_njit`` the second compiler
waits for the first and takes slot 2, and the third process computes both sums right.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TOY = """
import numpy as np
from numba import njit
from plmr.cached_jit import cached_njit

@{decorator}
def total(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s
"""

# slows numba's save: (sleep after reading the index, sleep after writing it) per process
WORKER = """
import os, sys, time, numpy as np
from numba.core import caching
first, second = (float(x) for x in os.environ["RACE_DELAYS"].split(","))
C = caching.IndexDataCacheFile
save, load_index, save_index = C.save, C._load_index, C._save_index
saving = []
def slow_save(self, key, data):
    saving.append(1); save(self, key, data); saving.pop()
def slow_load_index(self):
    out = load_index(self)
    if saving:
        time.sleep(first)
    return out
def slow_save_index(self, overloads):
    save_index(self, overloads); time.sleep(second)
C.save, C._load_index, C._save_index = slow_save, slow_load_index, slow_save_index
sys.path.insert(0, os.environ["TOY_DIR"])
import toy
print("ready", flush=True)
while not os.path.exists(os.environ["GO"]):
    time.sleep(0.01)
time.sleep(float(os.environ["OFFSET"]))
dtype = {"i": np.int32, "f": np.float64}[sys.argv[1]]
print(toy.total(np.arange(1000, dtype=dtype)))
"""

READER = """
import os, sys, numpy as np
sys.path.insert(0, os.environ["TOY_DIR"])
import toy
print(toy.total(np.arange(1000, dtype=np.float64)), toy.total(np.arange(1000, dtype=np.int32)))
"""


def _start_race(tmp_path, decorator: str, offset: float) -> tuple[list[subprocess.Popen], dict]:
    """Start the two compiling processes of one race; they import, say "ready", and wait for the
    file ``tmp_path/go``, then ``offset`` seconds more, before they compile."""
    toy_dir = tmp_path / decorator
    toy_dir.mkdir()
    (toy_dir / "toy.py").write_text(TOY.format(decorator=decorator))
    env = dict(os.environ, TOY_DIR=str(toy_dir), NUMBA_CACHE_DIR=str(toy_dir / "cache"),
               GO=str(tmp_path / "go"), OFFSET=str(offset))
    env.pop("NUMBA_DISABLE_JIT", None)
    # A: reads the index, 2 s, writes it, 4 s, writes its entry (last). B (starting with A):
    # reads the (still empty) index, 3 s, writes it (last), 0.5 s, writes its entry.
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, kind], env=dict(env, RACE_DELAYS=delays),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for kind, delays in (("i", "2,4"), ("f", "3,0.5"))]
    return procs, env


def _finish_race(procs: list[subprocess.Popen], env: dict) -> subprocess.CompletedProcess:
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    return subprocess.run([sys.executable, "-c", READER], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_concurrent_compiles_of_two_signatures_leave_a_cache_that_loads_right(tmp_path):
    want = f"{float(sum(range(1000)))} {float(sum(range(1000)))}"
    # both races at once (each is mostly sleeps), in their own caches and lock files; the cached_njit
    # pair compiles 1.5 s after the plain pair (whose 0.3 s compiles set its race's timing) so
    # that the four compilations do not share the cores
    plain_race = _start_race(tmp_path, "njit(cache=True)", 0.0)
    locked_race = _start_race(tmp_path, "cached_njit", 1.5)
    for p in plain_race[0] + locked_race[0]:  # every process has imported numba and the toy
        assert p.stdout.readline().strip() == "ready", p.communicate(timeout=120)[1]
    (tmp_path / "go").touch()
    plain = _finish_race(*plain_race)
    locked = _finish_race(*locked_race)
    if plain.returncode == 0 and plain.stdout.split() == want.split():
        pytest.skip("the widened window no longer breaks plain numba: nothing to guard against")
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout.split() == want.split()


NOTICES = """
import os, sys, numpy as np
sys.path.insert(0, os.environ["TOY_DIR"])
from plmr.cached_jit import cached_njit, compile_notices
import nested
seen = []
with compile_notices(lambda n: seen.append(("start", n)), lambda n: seen.append(("end", n))):
    a = nested.outer(np.arange(10.0))
    b = nested.outer(np.arange(10.0))  # compiled in this process now: nothing to announce
print(a, b, seen)
"""

NESTED = """
from plmr.cached_jit import cached_njit

@cached_njit
def inner(a):
    return a.sum()

@cached_njit
def outer(a):
    return inner(a) * 2.0
"""


def test_compile_notices_announce_a_compilation_once_and_not_a_cache_load(tmp_path):
    (tmp_path / "nested.py").write_text(NESTED)
    env = dict(os.environ, TOY_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    runs = [subprocess.run([sys.executable, "-c", NOTICES], env=env, capture_output=True, text=True, timeout=120)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    # the first process compiles outer, and inner inside it: one notice for the outermost compilation
    assert runs[0].stdout.strip() == "90.0 90.0 [('start', 'outer'), ('end', 'outer')]"
    # the second loads both from numba's on-disk cache: no compilation to announce
    assert runs[1].stdout.strip() == "90.0 90.0 []"
