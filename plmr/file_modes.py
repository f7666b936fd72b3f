"""The modes a new file or directory gets from the process's umask.

Outputs are written atomically: into a temporary file (``tempfile.mkstemp``: mode 0600) or directory
(``mkdtemp``: 0700) next to the target, then renamed into place. Without a ``chmod`` the result would
keep those private modes, and a bundle, a results table or a report meant for a team (or for the
appliance's user node) would be unreadable to everyone else. These give what ``open``/``mkdir`` would.
"""

from __future__ import annotations

import os


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
