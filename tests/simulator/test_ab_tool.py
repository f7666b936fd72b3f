"""benchmarks/ab_engine.py: another revision's engine runs beside this one on the same program."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ab_engine import main  # noqa: E402


def test_interleaved_against_head(capsys, monkeypatch):
    """The tool copies HEAD's simulator, runs both on one program and reports times once their results
    agree. The copy is imported with numba's JIT off, so its engine runs as plain Python: compiling it
    (its numba cache lives in a temporary directory) took a minute of the suite, and the results of the
    interpreted engine must still equal the compiled one's, which the tool checks before reporting."""
    import numba
    from numba.core.dispatcher import Dispatcher

    import ab_engine

    load = ab_engine.load_revision

    def load_interpreted(rev, into):
        with monkeypatch.context() as m:
            m.setattr(numba.config, "DISABLE_JIT", True)
            return load(rev, into)

    monkeypatch.setattr(ab_engine, "load_revision", load_interpreted)
    main(["--rev", "HEAD", "--size", "6", "--repeat", "2"])
    out = capsys.readouterr().out
    assert "shift (6x6), best of 2 interleaved runs: HEAD" in out
    assert "speedup" in out
    engine = sys.modules["simulator_ab.engine"]
    assert not [v for v in vars(engine).values() if isinstance(v, Dispatcher)]  # it ran interpreted


def test_unknown_revision_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--rev", "no-such-revision", "--size", "6", "--repeat", "1"])
    assert exc.value.code == 2
    assert "no simulator/ at git revision 'no-such-revision'" in capsys.readouterr().err
