"""Atomic outputs get the modes the umask gives a new file or directory, not the temporary file's 0600
or the temporary directory's 0700 (a bundle or a report is shared with a team)."""

from __future__ import annotations

import os
import stat

import pytest

from csl_templates.bundle import _atomic_dir
from waferllm.results import atomic_write


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_outputs_get_the_umasks_modes(tmp_path, umask):
    # what open() and mkdir() give under this umask, measured, not computed
    (tmp_path / "plain").write_text("x")
    (tmp_path / "plain_dir").mkdir()
    want_file, want_dir = mode(tmp_path / "plain"), mode(tmp_path / "plain_dir")
    atomic_write(tmp_path / "results.csv", b"a,b\n")
    assert mode(tmp_path / "results.csv") == want_file
    _atomic_dir(tmp_path / "bundle", {"src/layout.csl": "// x", "run.sh": "true"}, {"run.sh"})
    assert mode(tmp_path / "bundle") == want_dir
    assert mode(tmp_path / "bundle" / "src") == want_dir and mode(tmp_path / "bundle" / "src" / "layout.csl") == want_file
