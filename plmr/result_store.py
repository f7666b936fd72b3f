"""``stored``: a deterministic computation's result kept on disk, so a process that needs it again does
not compute it again (SUMMA's per-PE schedule at 720² takes ~17 s in every ``waferllm report``).

A result is keyed by the computing module's source text, the numba and numpy versions and the
arguments (their ``repr``: exact for ints, bools and floats), so a changed schedule never reads an old
result. It is stored as JSON (floats round-trip exactly) under ``WAFERLLM_RESULT_STORE``, else beside
numba's cache (``NUMBA_CACHE_DIR``) or in the temporary directory, one private folder per user; written
to a temporary file and renamed, so a reader sees a whole file or none. Two processes that need the same
missing result take turns on its lock file: the second reads what the first wrote. Anything unreadable
is computed again; a store that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable

try:
    import fcntl
except ImportError:  # no flock (Windows): no turns, at worst both compute
    fcntl = None


def store_dir() -> Path:
    """The folder results are kept in (created on first write)."""
    env = os.environ.get("WAFERLLM_RESULT_STORE")
    if env:
        return Path(env)
    from numba import config

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(config.CACHE_DIR or tempfile.gettempdir()) / f"waferllm-results-{uid}"


def result_key(name: str, module: ModuleType, args: tuple) -> str:
    """The file stem of ``name``'s result for ``args`` as ``module``'s source computes it."""
    import numba
    import numpy

    h = hashlib.sha256()
    for part in (name, numba.__version__, numpy.__version__, repr(tuple(args))):
        h.update(part.encode())
        h.update(b"\0")
    h.update(Path(module.__file__).read_bytes())
    return f"{name}-{h.hexdigest()[:32]}"


def _read(path: Path, size: int) -> tuple | None:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(values, list) or len(values) != size or not all(type(v) is float for v in values):
        return None
    return tuple(values)


def _private(folder: Path) -> bool:
    """The folder is this user's and no one else can write in it (a shared temporary directory)."""
    try:
        info = folder.stat()
    except OSError:
        return False
    return (not hasattr(os, "getuid") or info.st_uid == os.getuid()) and not info.st_mode & 0o022


def stored(name: str, module: ModuleType, args: tuple, size: int, compute: Callable[[], tuple]) -> tuple:
    """``compute()`` (``size`` floats, from ``module``'s code on ``args`` alone), read from the store
    when an earlier process kept it, else computed and kept. A store folder that is not private to
    this user is neither read nor written."""
    folder = store_dir()
    stem = result_key(name, module, args)
    path = folder / f"{stem}.json"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass
    if not _private(folder):
        return tuple(float(v) for v in compute())
    got = _read(path, size)
    if got is not None:
        return got
    try:
        fd = os.open(folder / f"{stem}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        return tuple(float(v) for v in compute())
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        got = _read(path, size)  # written while this process waited its turn
        if got is not None:
            return got
        values = tuple(float(v) for v in compute())
        tmp = None
        try:
            with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
                tmp = f.name
                json.dump(list(values), f)
            os.replace(tmp, path)
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return values
    finally:
        os.close(fd)  # releases the lock
