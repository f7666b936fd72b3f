"""Tables fitted to the terminal: at 80 columns (and 60) no line of a table command is wider than
the terminal and no cell is cut with "…"; the columns dropped are the lowest-priority ones and are
named; ``--wide`` shows every column."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from waferllm.cli import main
from waferllm.tables import Column, fit_columns, natural_width

COMMANDS = [["models"], ["hardware", "list"], ["hardware", "show", "wse2"], ["calibration"]]


def invoke(args, width):
    return CliRunner().invoke(main, args, env={"COLUMNS": str(width)})


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("args", COMMANDS)
def test_fits_the_terminal(args, width):
    r = invoke(args, width)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    assert "…" not in r.stdout


def test_models_keeps_what_matters_and_names_what_it_hides():
    r = invoke(["models"], 80)
    header = next(line for line in r.stdout.splitlines() if "name" in line)
    for col in ("name", "params", "layers", "hidden"):
        assert col in header
    assert "not shown at 80 columns:" in r.stdout and "vocab" in r.stdout.splitlines()[-1]
    wide = invoke(["models", "--wide"], 80)
    for col in ("architecture", "vocab", "head dim", "kv heads", "ffn"):
        assert col in wide.stdout
    assert "not shown" not in wide.stdout
    assert max(len(line) for line in wide.stdout.splitlines()) > 80  # --wide prints at natural width


def test_fit_columns_drops_highest_priority_first():
    cols = [Column("a"), Column("b", 2), Column("c", 1), Column("d", 2)]
    rows = [["x" * 10] * 4]
    assert natural_width(cols, rows) == 1 + 4 * 13
    assert fit_columns(cols, rows, 200) == [0, 1, 2, 3]
    assert fit_columns(cols, rows, 40) == [0, 1, 2]  # d (priority 2, rightmost) goes first
    assert fit_columns(cols, rows, 30) == [0, 2]
    assert fit_columns(cols, rows, 5) == [0]  # priority 0 always stays
