"""benchmarks/decode_fit.py: bad input is a one-line usage error (exit 2), not a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import decode_fit  # noqa: E402


@pytest.mark.parametrize("argv, expect", [
    (["--grid", "142y250"], "a grid is HxW with positive integers"),
    (["--grid", "0x250"], "a grid is HxW with positive integers"),
    (["no-such-model"], "unknown model 'no-such-model'"),
    (["--hardware", "wse9"], "unknown hardware 'wse9'"),
])
def test_bad_input_is_a_usage_error(monkeypatch, capsys, argv, expect):
    monkeypatch.setattr(sys, "argv", ["decode_fit.py", *argv])
    with pytest.raises(SystemExit) as exc:
        decode_fit.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert expect in err[-1] and "Traceback" not in "\n".join(err)
