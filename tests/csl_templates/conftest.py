"""Helpers shared by the CSL backend's tests."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

import csl_templates
from csl_templates.emit import IDLE_FILE

STUB = str(Path(csl_templates.__file__).parent / "stub_sdk")


def program_view(prog):
    """Placement (file, parameter values) and routes of every PE, from the program object."""
    place, routes = {}, {}
    blocks = prog.pe_blocks()
    for y in range(prog.height):
        for x in range(prog.width):
            bi = int(blocks[y * prog.width + x])
            if bi < 0:
                place[(x, y)] = (IDLE_FILE, {})
            else:
                blk = prog.blocks[bi]
                place[(x, y)] = (f"pe_{blk.body.name}.csl", dict(blk.values))
            for c in range(prog.spec.num_colors):
                r = prog.route(x, y, c)
                if r is not None:
                    routes[(x, y, c)] = (frozenset(p.name for p in r.rx), frozenset(p.name for p in r.tx))
    return place, routes


@pytest.fixture
def view():
    return program_view


@pytest.fixture
def run_bundle(monkeypatch, capsys):
    """Run a bundle's run.py unmodified in this process, with the stub SDK on the path (as
    ``PYTHONPATH=stub_sdk python run.py`` does, without a new interpreter): (exit status, stdout)."""

    def run(bundle: Path, *args: str) -> tuple[int, str]:
        monkeypatch.chdir(bundle)
        monkeypatch.syspath_prepend(STUB)
        monkeypatch.setattr(sys, "argv", ["run.py", *args])
        capsys.readouterr()
        try:
            runpy.run_path(str(Path(bundle) / "run.py"), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, capsys.readouterr().out

    return run
