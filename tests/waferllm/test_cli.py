"""The command line: every subcommand succeeds on good input, and bad input is one ``Error: ...`` line on
stderr with exit status 2 and no traceback. Mostly in-process (CliRunner); a few runs of the installed
``waferllm`` executable check the real exit status and stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from plmr.hardware import BUILTIN_SPECS, WSE2
from waferllm.catalog import catalog_names
from waferllm.cli import main, parse_grid

# plans the same requests several times: one search per request (tests/waferllm/conftest.py)
pytestmark = pytest.mark.usefixtures("one_search_per_request")

REPO = Path(__file__).resolve().parents[2]
CUSTOM_MESH = REPO / "examples" / "custom_mesh.toml"
EXE = shutil.which("waferllm", path=str(Path(sys.executable).parent)) or shutil.which("waferllm")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def invoke_wide(*args: str):
    """For rich tables: a wide terminal, so cells are not wrapped whatever the caller's COLUMNS."""
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def assert_clean_error(r, *must_contain: str) -> str:
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output[:300]} {r.exception!r}"
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for text in must_contain:
        assert text in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Good input
# ------------------------------------------------------------------------------------------------

def test_hardware_list():
    r = invoke_wide("hardware", "list")
    assert r.exit_code == 0, r.output
    assert "wse2" in r.stdout and "wse3" in r.stdout


def test_hardware_list_json():
    r = invoke("hardware", "list", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["schema"] == 1 and [h["name"] for h in d["hardware"]] == list(BUILTIN_SPECS)


def test_hardware_show_wse2_json():
    r = invoke("hardware", "show", "wse2", "--json")
    assert r.exit_code == 0, f"{r.output[:300]} {r.exception!r}"
    d = json.loads(r.stdout)
    assert d["name"] == "wse2"
    assert (d["mesh_height"], d["mesh_width"]) == (994, 750)
    assert d["sram_bytes"] == 48 * 1024 and d["clock_hz"] == 1.1e9
    assert d["simd_widths"]["fmac"]["fp16"] == 4
    assert d["op_issue_cycles"] == WSE2.op_issue_cycles
    assert d["schema"] == 1


def test_hardware_show_json_reads_back_as_a_spec_file(tmp_path):
    # What `hardware show --json` prints is a spec file `--hardware` accepts, schema key and all; a spec
    # file of another schema version is refused with the versions named.
    r = invoke("hardware", "show", str(CUSTOM_MESH), "--json")
    f = tmp_path / "spec.json"
    f.write_text(r.stdout)
    again = invoke("hardware", "show", str(f), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == json.loads(r.stdout)
    f.write_text(json.dumps({**json.loads(r.stdout), "schema": 2}))
    assert_clean_error(invoke("hardware", "show", str(f)), "schema 2", "reads schema 1")


def test_hardware_show_wse2_table():
    r = invoke_wide("hardware", "show", "wse2")
    assert r.exit_code == 0, f"{r.output[:300]} {r.exception!r}"
    assert "mesh_width" in r.stdout


def test_hardware_show_custom_file_json():
    r = invoke("hardware", "show", str(CUSTOM_MESH), "--json")
    assert r.exit_code == 0, f"{r.output[:300]} {r.exception!r}"
    d = json.loads(r.stdout)
    assert d["name"] == "mesh-192kb" and d["sram_bytes"] == 196608 and d["mesh_width"] == 600
    assert d["hop_cycles"] == WSE2.hop_cycles  # inherited from base = "wse2"


def test_models_table_readable_in_80_columns():
    # A standard 80-column terminal must still show which model each row is.
    r = CliRunner().invoke(main, ["models"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    missing = [n for n in catalog_names() if n not in r.stdout]
    assert not missing, f"model names cut off at 80 columns: {missing}"


def test_models_table_wide_terminal():
    r = CliRunner().invoke(main, ["models"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert all(n in r.stdout for n in catalog_names())


def test_models_json():
    r = invoke("models", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == 1
    models = doc["models"]
    assert [m["name"] for m in models] == list(catalog_names())
    l3 = next(m for m in models if m["name"] == "llama3-8b")
    assert l3["num_layers"] == 32 and l3["hidden_size"] == 4096


def test_calibration_json():
    r = invoke("calibration", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == 1 and doc["hardware"] == "wse2"
    rows = doc["figures"]
    assert len(rows) == 3 + 3 + 2  # decode, prefill, KV shift and concat
    for row in rows:
        assert set(row) == {"figure", "published", "predicted", "error"}
        assert row["error"] == pytest.approx(row["predicted"] / row["published"] - 1, rel=1e-9, abs=1e-12)
    # the rows are the calibration module's (how close they are to the published figures is
    # tests/waferllm/test_calibration.py's question)
    from plmr.hardware import WSE2
    from waferllm.calibration import check_targets, predict_targets

    want = predict_targets(WSE2) + check_targets(WSE2)
    assert [r["figure"] for r in rows] == [w.figure for w in want]
    assert [r["predicted"] for r in rows] == pytest.approx([w.predicted for w in want], rel=1e-9)


def test_calibration_table():
    r = invoke_wide("calibration")
    assert r.exit_code == 0, r.output
    assert "decode tokens/s" in r.stdout


def test_plan_human_readable():
    r = invoke_wide("plan", "llama3-8b")
    assert r.exit_code == 0, r.output
    assert "llama3-8b on wse2" in r.stdout and "decode" in r.stdout and "stage map" in r.stdout


def test_plan_paper_human_readable_has_note():
    r = invoke_wide("plan", "llama3-8b", "--method", "paper")
    assert r.exit_code == 0, r.output
    assert "note: paper method" in r.stdout


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and "0.1.0" in r.stdout


@pytest.mark.parametrize("text,grid", [("420", (420, 420)), ("360x480", (360, 480)), ("360X480", (360, 480)),
                                       ("360×480", (360, 480)), (None, None)])
def test_parse_grid_forms(text, grid):
    assert parse_grid(text, "decode-grid") == grid


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no traceback
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    broken = root / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": 4096,\n')
    empty = root / "empty-dir"
    empty.mkdir()
    syntax = root / "syntax.toml"
    syntax.write_text('base = "wse2"\nname = \n')
    unknown = root / "unknown.toml"
    unknown.write_text('base = "wse2"\nname = "x"\nbogus_key = 3\n')
    unknown_nobase = root / "unknown-nobase.toml"
    unknown_nobase.write_text('name = "x"\nbogus_key = 3\n')
    bad_json = root / "bad.json"
    bad_json.write_text('{"base": "wse2", ')
    negative = root / "negative.toml"
    negative.write_text('base = "wse2"\nname = "neg"\nmesh_width = -4\n')
    return {"broken": broken, "empty": empty, "syntax": syntax, "unknown": unknown,
            "unknown_nobase": unknown_nobase, "bad_json": bad_json, "negative": negative}


BAD_PLANS = {
    "unknown-model": (["nope"], ["unknown model", "nope"]),
    "grid-larger-than-wafer": (["llama3-8b", "--decode-grid", "1000"], ["larger than", "wse2"]),
    "prefill-grid-larger-than-wafer": (["llama3-8b", "--prefill-grid", "995x10"], ["larger than"]),
    "grid-malformed-4x": (["llama3-8b", "--decode-grid", "4x"], ["--decode-grid", "4x"]),
    "grid-malformed-word": (["llama3-8b", "--prefill-grid", "big"], ["--prefill-grid"]),
    "grid-zero": (["llama3-8b", "--decode-grid", "0"], ["--decode-grid"]),
    "grid-three-sides": (["llama3-8b", "--decode-grid", "3x4x5"], ["--decode-grid"]),
    "context-cannot-fit": (["llama3-8b", "--method", "full", "--context", "100000000"], ["100000000", "closest", "KB"]),
    "model-larger-than-wafer": (["llama3-70b", "--method", "full"], ["GB"]),
    "unknown-hardware": (["llama3-8b", "--hardware", "nope"], ["unknown hardware", "nope"]),
    "missing-hardware-file": (["llama3-8b", "--hardware", "does-not-exist.toml"], ["does-not-exist.toml"]),
    "input-len-0": (["llama3-8b", "--input-len", "0"], ["--input-len"]),
    "output-len-0": (["llama3-8b", "--output-len", "0"], ["--output-len"]),
    "context-0": (["llama3-8b", "--context", "0"], ["--context"]),
    "k-tree-0": (["llama3-8b", "--k-tree", "0"], ["--k-tree"]),
    "k-tree-6": (["llama3-8b", "--k-tree", "6"], ["--k-tree must be one of 1, 2"]),
    "k-tree-2-wse3": (["llama3-8b", "--k-tree", "2", "--hardware", "wse3"], ["input queues", "allowed: 1"]),
    # 420 fits since packing (2 regions of 420x420 and 2 strips of 420x330); at 500 one region and its
    # 500x250 strip do not hold the model
    "forced-full-grid-too-small-for-model": (["llama3-8b", "--method", "full", "--decode-grid", "500"],
                                             ["regions"]),
}


@pytest.mark.parametrize("case", BAD_PLANS, ids=list(BAD_PLANS))
def test_plan_bad_input(case):
    args, must = BAD_PLANS[case]
    assert_clean_error(invoke("plan", *args), *must)
    assert_clean_error(invoke("plan", *args, "--json"), *must)


@pytest.mark.parametrize("key,must", [
    ("broken", ["config.json"]),
    ("empty", ["config.json"]),
])
def test_plan_bad_model_directory(bad_files, key, must):
    assert_clean_error(invoke("plan", str(bad_files[key]), "--json"), *must)


@pytest.mark.parametrize("key,must", [
    ("syntax", ["TOML"]),
    ("unknown", ["bogus_key"]),
    ("unknown_nobase", ["bogus_key"]),
    ("bad_json", ["JSON"]),
    ("negative", ["mesh_width"]),
])
def test_plan_bad_hardware_file(bad_files, key, must):
    assert_clean_error(invoke("plan", "llama3-8b", "--hardware", str(bad_files[key]), "--json"), *must)


@pytest.mark.parametrize("key,must", [("syntax", ["TOML"]), ("unknown", ["bogus_key"])])
def test_hardware_show_bad_file(bad_files, key, must):
    assert_clean_error(invoke("hardware", "show", str(bad_files[key])), *must)


def test_hardware_show_unknown_name():
    assert_clean_error(invoke("hardware", "show", "nope"), "nope")
    assert_clean_error(invoke("hardware", "show", "nope", "--json"), "nope")


@pytest.mark.parametrize("group", ["hardware", "csl"])
def test_a_group_without_a_command_prints_its_help(group):
    # Like `waferllm` alone: the group's usage and commands, not an "Error:" line wrapping the help.
    r = CliRunner().invoke(main, [group])
    assert r.exit_code == 2
    assert r.output.startswith(f"Usage: main {group} [OPTIONS] COMMAND") and "Error" not in r.output
    assert "Commands:" in r.output


def test_calibration_unknown_hardware():
    assert_clean_error(invoke("calibration", "--hardware", "nope"), "nope")


def test_click_usage_errors_exit_2():
    # click's own checks (choices, integers) also exit 2 without a traceback.
    for args in (["plan", "llama3-8b", "--method", "bogus"], ["plan", "llama3-8b", "--input-len", "many"],
                 ["plan"]):
        r = invoke(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)


# ------------------------------------------------------------------------------------------------
# The real executable
# ------------------------------------------------------------------------------------------------

def run_exe(*args: str) -> subprocess.CompletedProcess:
    assert EXE, "the waferllm console script is not installed"
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60, env=env)


def test_exe_plan_json():
    p = run_exe("plan", "llama3-8b", "--method", "paper", "--decode-grid", "420", "--context", "4096", "--json")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    d = json.loads(p.stdout)
    assert d["decode"]["grid"] == [420, 420] and d["method"] == "paper"


@pytest.mark.parametrize("args,must", [
    (["plan", "nope"], "unknown model"),
    (["plan", "llama3-8b", "--decode-grid", "4x"], "--decode-grid"),
    (["plan", "llama3-70b", "--method", "full", "--json"], "GB"),
    (["hardware", "show", "nope"], "nope"),
])
def test_exe_bad_input(args, must):
    p = run_exe(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and must in lines[0], p.stderr


def test_exe_custom_hardware_file():
    p = run_exe("plan", "llama3-8b", "--hardware", str(CUSTOM_MESH), "--json")
    assert p.returncode == 0, p.stderr[-500:]
    assert json.loads(p.stdout)["hardware"] == "mesh-192kb"


def test_calibration_help_says_which_hardware_it_takes():
    text = " ".join(invoke_wide("calibration", "--help").output.split())  # help wraps at 80 columns
    assert "--hardware TEXT wse2, or a spec file that differs from it only in the fitted overheads" in text
    assert_clean_error(invoke("calibration", "--hardware", "wse3"), "wse2")
