"""``cached_njit``: numba's ``njit(cache=True)``, safe when several processes compile at once.

numba names a new on-disk cache entry after the first free slot in the function's index, which it
reads just before writing. Two processes that compile *different* signatures of one function at the
same moment (pytest-xdist workers, sweep workers, two shells; the engine has one signature per record
width) can both take slot 1: the index then names one signature while the file holds the other's
machine code, and the next process that loads it runs code compiled for other argument types
(seen as a segfault). Every compilation of a function made here therefore holds that function's
file lock, shared by this user's processes on the machine. A call whose signature is already
compiled in the process never takes it; a process that waited usually loads what the other one
compiled. One lock per function (the race is per index file), so unrelated functions still compile
in parallel.

Lock order: numba's own (process-wide, reentrant) compiler lock first, then the function's file
lock. A compilation compiles its callees inside it, so file locks nest along the call graph, which
has no cycles: no two processes can wait for each other.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator

from numba import config, njit
from numba.core import event, sigutils
from numba.core.compiler_lock import global_compiler_lock

try:
    import fcntl
except ImportError:  # no flock (Windows): compile unlocked, as plain numba does
    fcntl = None


def lock_path(name: str) -> str:
    """The lock file that compilations of function ``name`` (module-qualified) hold: one per user and
    function, in ``NUMBA_CACHE_DIR`` when that is set (processes that share a cache share its locks)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    tag = hashlib.sha1(name.encode()).hexdigest()[:12]
    return os.path.join(config.CACHE_DIR or tempfile.gettempdir(), f"waferllm-numba-{uid}-{tag}.lock")


class _CompileLock:
    """One function's file lock, taken by its outermost compilation in this process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.depth = 0
        self.fd = -1

    @contextmanager
    def held(self):
        with global_compiler_lock:  # serialises this process's threads; reentrant
            if self.depth == 0 and fcntl is not None:
                path = lock_path(self.name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd >= 0:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                    os.close(self.fd)
                    self.fd = -1


def cached_njit(func=None, **options):
    """``numba.njit(cache=True, **options)`` whose compilations (and cache loads) hold the
    function's lock. Use as ``@cached_njit`` or ``@cached_njit(error_model="numpy", ...)``."""
    if func is None:
        return lambda f: cached_njit(f, **options)
    dispatcher = njit(cache=True, **options)(func)
    if not hasattr(dispatcher, "overloads"):  # NUMBA_DISABLE_JIT: the Python function itself
        return dispatcher
    compile_unlocked = dispatcher.compile
    lock = _CompileLock(f"{func.__module__}.{func.__qualname__}")

    def compile(sig):
        args, _ = sigutils.normalize_signature(sig)
        if tuple(args) in dispatcher.overloads:  # compiled in this process: no lock needed
            return compile_unlocked(sig)
        with lock.held():
            return compile_unlocked(sig)

    dispatcher.compile = compile  # numba calls self.compile for every new signature
    return dispatcher


class _CompileNotices(event.Listener):
    """Calls ``started(name)`` when numba starts compiling a function for real (a cache miss) and
    ``ended(name)`` when it is done, once per outermost compilation: its callees compile inside it
    and are not announced again."""

    def __init__(self, started: Callable[[str], None], ended: Callable[[str], None] | None) -> None:
        self.started, self.ended = started, ended
        self.names: list[str] = []

    def on_start(self, ev) -> None:
        func = getattr(ev.data["dispatcher"], "py_func", None)
        self.names.append(getattr(func, "__qualname__", "a numba function"))
        if len(self.names) == 1:
            self.started(self.names[0])

    def on_end(self, ev) -> None:
        name = self.names.pop()
        if not self.names and self.ended is not None:
            self.ended(name)


@contextmanager
def compile_notices(started: Callable[[str], None],
                    ended: Callable[[str], None] | None = None) -> Iterator[None]:
    """While the block runs, ``started(name)`` is called when a function starts compiling instead of
    loading from numba's on-disk cache, and ``ended(name)`` when that compilation is over. The
    simulator's engine compiles once after an install or an upgrade (minutes), then loads in a
    fraction of a second: the CLI says which one the user is waiting for."""
    with event.install_listener("numba:compile", _CompileNotices(started, ended)):
        yield
