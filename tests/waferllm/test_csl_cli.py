"""``waferllm csl check``: exit 0 clean, 1 with findings, 2 for unreadable input; text and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from waferllm.cli import main
from waferllm.csl_cli import parse_params

SAMPLES = Path(__file__).parents[1] / "csl_templates" / "samples"


def invoke(*args):
    return CliRunner().invoke(main, ["csl", "check", *map(str, args)])


def test_clean_layout_exits_0():
    r = invoke(SAMPLES / "chain_layout.csl", "--params", "W:5,H:3,n:8", "--arch", "wse3")
    assert r.exit_code == 0, r.output
    assert r.stdout == ""


def test_findings_exit_1_with_file_line_col_lines(tmp_path):
    for p in ("chain_layout.csl", "chain_pe.csl"):
        (tmp_path / p).write_text((SAMPLES / p).read_text())
    pe = tmp_path / "chain_pe.csl"
    pe.write_text(pe.read_text().replace("@get_local_task_id(10)", "@get_local_task_id(40)"))
    r = invoke(tmp_path, "--params", "W:5,H:3,n:8")
    assert r.exit_code == 1
    line = next(ln for ln in r.stdout.splitlines() if "task.local_range" in ln)
    text = pe.read_text()
    pos = text.index("@get_local_task_id(40)")
    want = f"{pe}:{text.count(chr(10), 0, pos) + 1}:{pos - text.rfind(chr(10), 0, pos)}: E task.local_range"
    assert line.startswith(want)


def test_syntax_error_exits_1_and_json_has_the_schema(tmp_path):
    f = tmp_path / "bad.csl"
    f.write_text("const x = 5\nconst y = 1;\n")
    r = invoke(f, "--syntax-only", "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    assert d["schema"] == 2 and d["errors"] == 1
    assert (d["findings"][0]["line"], d["findings"][0]["col"], d["findings"][0]["rule"]) == (1, 12, "syntax")


@pytest.mark.parametrize("args, words", [
    (["/no/such/file.csl"], "no such file"),
    ([SAMPLES / "chain_layout.csl", "--params", "W"], "NAME:VALUE"),
    ([SAMPLES / "chain_layout.csl", "--params", "W:abc"], "not a number"),
])
def test_bad_input_exits_2_with_one_line(args, words):
    r = invoke(*args)
    assert r.exit_code == 2
    assert words in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_binary_file_exits_2(tmp_path):
    f = tmp_path / "x.csl"
    f.write_bytes(b"\xff\xfe\x00")
    r = invoke(f)
    assert r.exit_code == 2 and "not UTF-8" in r.output


def test_parse_params_reads_cslc_forms():
    assert parse_params("W:8, H:0x10,f:1.5,b:true,n:1_000") == {"W": 8, "H": 16, "f": 1.5, "b": True, "n": 1000}


def test_a_bundle_gives_its_target_and_params_and_params_given_override_one_each(tmp_path):
    out = tmp_path / "mg3"
    r = CliRunner().invoke(main, ["kernel", "meshgemm", "--mesh", "4", "--m", "8", "--k", "8", "--n", "8",
                                  "--hardware", "wse3", "--emit-csl", str(out)])
    assert r.exit_code == 0, r.output
    params = json.loads((out / "manifest.json").read_text())["params"]
    r = invoke(out, "--json")  # no --arch: the bundle's own target
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["arch"] == "wse3"
    assert json.loads(invoke(out, "--json", "--arch", "wse2").stdout)["arch"] == "wse2"
    # one param given: the others still come from the bundle (a wrong width makes the layout disagree)
    name = next(iter(params))
    r = invoke(out, "--params", f"{name}:{params[name]}")
    assert r.exit_code == 0, r.output


def test_a_compile_bundles_root_names_its_program_directories(tmp_path):
    (tmp_path / "plan.json").write_text("{}")
    for d in ("decode", "prefill"):
        (tmp_path / "csl" / d / "src").mkdir(parents=True)
        (tmp_path / "csl" / d / "manifest.json").write_text("{}")
    r = invoke(tmp_path)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"waferllm csl check {tmp_path / 'csl' / 'decode'}" in r.output
    assert f"waferllm csl check {tmp_path / 'csl' / 'prefill'}" in r.output
