"""benchmarks/ab_engine.py: another revision's engine runs beside this one on the same program."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ab_engine import main  # noqa: E402


def test_interleaved_against_head(capsys):
    main(["--rev", "HEAD", "--size", "6", "--repeat", "2"])
    out = capsys.readouterr().out
    assert "shift (6x6), best of 2 interleaved runs: HEAD" in out
    assert "speedup" in out


def test_unknown_revision_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--rev", "no-such-revision", "--size", "6", "--repeat", "1"])
    assert exc.value.code == 2
    assert "no simulator/ at git revision 'no-such-revision'" in capsys.readouterr().err
