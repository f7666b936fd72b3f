"""benchmarks/replay_engine.py: recorded outcomes replay equal, and a changed outcome is caught."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

from simulator import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_simulator import shift_broadcast  # noqa: E402
from replay_engine import outcome, replay, same  # noqa: E402


def _record(directory: Path, name: str, program, kwargs) -> tuple:
    res = outcome(simulate, program, (), kwargs)
    (directory / f"{name}.pkl").write_bytes(pickle.dumps((program, (), kwargs, res)))
    return res


def test_recorded_runs_replay_equal(tmp_path):
    res = _record(tmp_path, "a", shift_broadcast(6, 3, 5), {"mode": "functional"})
    _record(tmp_path, "b", shift_broadcast(4, 2, 3), {"mode": "timing", "trace": True})
    assert res[0] == "ok" and res[1]["total"] > 0
    assert replay(str(tmp_path)) == 0


def test_a_changed_outcome_is_a_mismatch(tmp_path, capsys):
    program = shift_broadcast(5, 2, 4)
    res = _record(tmp_path, "a", program, {"mode": "timing"})
    res[1]["busy"][0, 0] += 1
    (tmp_path / "a.pkl").write_bytes(pickle.dumps((program, (), {"mode": "timing"}, res)))
    assert replay(str(tmp_path)) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_errors_are_outcomes_too():
    bad = outcome(simulate, shift_broadcast(3, 2, 2), (), {"mode": "no-such-mode"})
    assert bad[0] == "exc" and "mode" in bad[2]
    assert same(bad, bad)
    assert not same(bad, ("exc", bad[1], bad[2] + " (changed)"))


def test_an_empty_recording_fails(tmp_path):
    assert replay(str(tmp_path)) == 1


@pytest.mark.parametrize("argv", [[], ["play", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    from replay_engine import main
    assert main(argv) == 2


def test_record_runs_the_tests_in_its_own_process_and_saves_their_calls(tmp_path):
    """``record`` under the project's pytest options (which start xdist workers): the calls are made
    where the recorder wraps ``simulate``, saved, and replay equal."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    test = tmp_path / "test_two_calls.py"
    test.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(repo / 'benchmarks')!r})\n"
        "from bench_simulator import shift_broadcast\n"
        "from simulator import simulate\n\n"
        "def test_two_calls():\n"
        "    assert simulate(shift_broadcast(4, 2, 3), mode='timing').total_cycles > 0\n"
        "    assert simulate(shift_broadcast(3, 3, 2), mode='functional').total_cycles > 0\n")
    out = tmp_path / "calls"
    r = subprocess.run([sys.executable, str(repo / "benchmarks" / "replay_engine.py"), "record", str(out),
                        "-c", str(repo / "pyproject.toml"), "--rootdir", str(repo), str(test)],
                       cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "recorded 2 simulate calls" in r.stdout, r.stdout[-2000:]
    assert len(list(out.glob("*.pkl"))) == 2
    # replayed as the script is run (its pickles name the script's own helpers, in its __main__)
    r = subprocess.run([sys.executable, str(repo / "benchmarks" / "replay_engine.py"), "replay", str(out)],
                       cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "2 calls replayed, 0 mismatches" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
