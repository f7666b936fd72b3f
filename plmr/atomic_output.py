"""Outputs written whole or not at all: a temporary file or directory beside the target, renamed into
place when finished, with the modes a new file or directory gets from the umask.

``tempfile.mkstemp`` makes its file 0600 and ``mkdtemp`` its directory 0700: without a ``chmod`` a bundle,
a results table or a report meant for a team (or for the appliance's user node) would stay unreadable to
everyone else. Every atomic writer of the project (bundles of ``compile`` and ``kernel --emit-csl``, the
results table, the report's figures) goes through here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask (0644 under 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a new directory under the current umask (0755 under 022)."""
    return 0o777 & ~_umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename, with the
    mode a new file gets under the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would make the result private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_dir_beside(target: Path) -> Path:
    """A new empty directory next to ``target`` (same file system, so the final rename is atomic; the
    parent is made if missing), with the mode a new directory gets; the caller removes it if it does not
    rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(dir_mode())
    return tmp


def swap_dir(tmp: Path, target: Path) -> None:
    """Put the finished directory ``tmp`` at ``target``. An old ``target`` is moved aside first and
    deleted once the new one is in place; if the second rename fails, the old one is put back."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    try:
        os.replace(target, old / "d")
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old / "d", target)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
