"""Atomic outputs: the modes the umask gives a new file or directory (not the temporary file's 0600 or the
temporary directory's 0700: a bundle or a report is shared with a team), and a directory swapped in
whole, the old one back in place when the swap fails."""

from __future__ import annotations

import os
import stat

import pytest

from csl_templates.bundle import _atomic_dir
from plmr import atomic_output
from plmr.atomic_output import atomic_write, swap_dir, temp_dir_beside


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


def test_swap_dir_replaces_the_old_directory_whole(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new = temp_dir_beside(target)
    (new / "new.txt").write_text("new")
    swap_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it


def test_a_failed_swap_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new = temp_dir_beside(target)
    real = atomic_output.os.replace

    def second_fails(src, dst):
        if str(src) == str(new):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(atomic_output.os, "replace", second_fails)
    with pytest.raises(OSError):
        swap_dir(new, target)
    assert (target / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", new.name])  # the caller removes its tmp
