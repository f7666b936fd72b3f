"""`waferllm deploy BUNDLE`: the dry run prints every step with its exact command; without the SDK it
says how to set it up (exit 2); --stub runs the host script on the simulator; `waferllm kernel
--emit-csl` writes a bundle or refuses in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from waferllm.cli import main

from csl_templates.bundle import emit_bundle
from csl_templates.examples import shift_east


def make_bundle(tmp_path):
    prog, plan = shift_east(width=5, height=3, n=4)
    out = tmp_path / "b"
    emit_bundle(prog, out, plan, stub={"builder": "csl_templates.examples:build_example",
                                       "kwargs": {"name": "shift_east", "width": 5, "height": 3, "n": 4}},
                kernel="shift_east")
    return out


def test_dry_run_prints_every_step_with_the_exact_commands(tmp_path):
    b = make_bundle(tmp_path)
    r = CliRunner().invoke(main, ["deploy", str(b), "--dry-run", "--python", "/opt/wse/bin/python"])
    assert r.exit_code == 0, r.output
    opts = ("--arch=wse2 --fabric-dims=757,996 --fabric-offsets=4,1 --params=width:5,height:3 --memcpy "
            "--channels=1 -o out")
    assert r.output.splitlines() == [
        "deploy kernel 'shift_east' (5 x 3 PEs, wse2) to a CS-2 system",
        f"1. compile   SdkCompiler(disable_version_check=True).compile('{b}/src', 'layout.csl', '{opts}', "
        f"'{b}/artifacts')",
        f"             (with a local SDK instead: cd {b} && cslc ./src/layout.csl {opts})",
        f"2. upload    SdkLauncher(<artifact>, simulator=False).stage('{b}/run.py')",
        "3. launch    SdkLauncher.run('cs_python run.py --name out --results results.npz --cmaddr %CMADDR%')",
        f"4. read back SdkLauncher.download_artifact('results.npz', '{b}/artifacts/results.npz')",
        f"all steps: /opt/wse/bin/python {b}/deploy.py --arch wse2",
    ]


def test_dry_run_on_the_appliance_simulator_uses_the_smallest_fabric(tmp_path):
    b = make_bundle(tmp_path)
    r = CliRunner().invoke(main, ["deploy", str(b), "--dry-run", "--arch", "wse3", "--simulator"])
    assert r.exit_code == 0, r.output
    assert "--arch=wse3 --fabric-dims=12,5 --fabric-offsets=4,1" in r.output  # W + 7, H + 2
    assert "SdkLauncher.run('cs_python run.py --name out --results results.npz')" in r.output
    assert "to the SDK simulator on the appliance" in r.output.splitlines()[0]


def test_without_the_sdk_deploy_says_how_to_set_it_up(tmp_path):
    b = make_bundle(tmp_path)
    r = CliRunner().invoke(main, ["deploy", str(b)])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cerebras.sdk is not importable by ")
    assert "pip install cerebras-sdk==2.10.0" in lines[0]


def test_commands_files_hold_the_exact_cslc_invocation(tmp_path):
    b = make_bundle(tmp_path)
    for arch in ("wse2", "wse3"):
        text = (b / f"commands_{arch}.sh").read_text()
        assert (f"cslc ./src/layout.csl --arch={arch} --fabric-dims=12,5 --fabric-offsets=4,1 "
                f"--params=width:5,height:3 --memcpy --channels=1 -o out") in text.splitlines()
        assert "cs_python run.py --name out" in text.splitlines()
        assert (b / f"commands_{arch}.sh").stat().st_mode & 0o111


def test_stub_runs_the_host_script_on_the_simulator(tmp_path):
    b = make_bundle(tmp_path)
    r = subprocess.run([sys.executable, "-m", "waferllm.cli", "deploy", str(b), "--stub"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "PASS"


def test_a_directory_that_is_no_bundle_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["deploy", str(tmp_path), "--dry-run"])
    assert r.exit_code == 2 and "not a waferllm bundle" in r.output
    r = CliRunner().invoke(main, ["deploy", str(tmp_path / "missing"), "--dry-run"])
    assert r.exit_code == 2 and "is not a directory" in r.output


def test_a_bundle_never_overwrites_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    prog, plan = shift_east()
    import pytest

    from plmr.errors import InputError

    with pytest.raises(InputError, match="not a waferllm bundle"):
        emit_bundle(prog, tmp_path / "mine", plan)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    emit_bundle(prog, tmp_path / "b", plan)
    emit_bundle(prog, tmp_path / "b", plan)  # a bundle is replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_kernel_emit_csl_writes_a_bundle_and_keeps_json_on_stdout(tmp_path):
    import json

    r = subprocess.run([sys.executable, "-m", "waferllm.cli", "kernel", "gemv-ring", "--mesh", "3x4", "--m", "1",
                        "--k", "10", "--n", "9", "--simulate", "--json", "--emit-csl", str(tmp_path / "k")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "CSL bundle for wse2, wse3" in r.stderr
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert manifest["kernel"] == "gemv-ring" and manifest["request"]["mesh"] == [3, 4]
    assert report["simulated_cycles"] > 0


def test_kernel_emit_csl_summa_bundle_checks_clean_with_the_bundles_own_params(tmp_path):
    """SUMMA's relays fill whole panel buffers (one FIFO each); ``csl check BUNDLE`` takes the params
    from the bundle's manifest, and an explicit --params still wins over the bundle's own (a tile too
    large for a PE is reported; the other params still come from the manifest)."""
    r = CliRunner().invoke(main, ["kernel", "summa", "--mesh", "3x4", "--m", "10", "--k", "9", "--n", "7",
                                  "--emit-csl", str(tmp_path / "k")])
    assert r.exit_code == 0, r.output
    for arch in ("wse2", "wse3"):
        c = CliRunner().invoke(main, ["csl", "check", str(tmp_path / "k"), "--arch", arch])
        assert c.exit_code == 0, c.output
    bad = CliRunner().invoke(main, ["csl", "check", str(tmp_path / "k" / "src"), "--params", "MT:100000"])
    assert bad.exit_code == 1 and "memory.sram" in bad.output and "params.unbound" not in bad.output


def _imports(path) -> set[str]:
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(node.module)
    return out


def test_host_scripts_import_only_the_sdk_numpy_and_the_standard_library(tmp_path):
    b = make_bundle(tmp_path)
    assert _imports(b / "deploy.py") == {"argparse", "os", "sys", "numpy", "cerebras.sdk.client"}
    assert _imports(b / "run.py") == {"argparse", "sys", "numpy", "cerebras.sdk.runtime.sdkruntimepybind"}


FAKE_CLIENT = '''
"""A fake appliance client: records calls, runs the staged host script here (cs_python -> python)."""
import json, os, shutil, subprocess, sys

LOG = os.environ["FAKE_SDK_LOG"]


def _log(*item):
    with open(LOG, "a") as f:
        f.write(json.dumps(item) + "\\n")


class SdkCompiler:
    def __init__(self, **kw):
        _log("SdkCompiler", kw)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def compile(self, app_path, csl_main, options, out_path):
        _log("compile", app_path, csl_main, options, out_path)
        return os.path.join(out_path, "cs_fake.tar.gz")


class SdkLauncher:
    def __init__(self, artifact, simulator=False, **kw):
        _log("SdkLauncher", artifact, simulator)
        self.staged = []

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def stage(self, path):
        _log("stage", path)
        self.staged.append(path)

    def run(self, cmd):
        _log("run", cmd)
        here = os.path.dirname(self.staged[0])
        argv = cmd.replace("cs_python", sys.executable).split()
        return subprocess.run(argv, cwd=here, capture_output=True, text=True).stdout

    def download_artifact(self, name, out_path):
        _log("download", name, out_path)
        shutil.copy(os.path.join(os.path.dirname(self.staged[0]), name), out_path)
'''


def test_deploy_runs_every_step_through_the_sdk_client(tmp_path, monkeypatch):
    """Without --dry-run, deploy.py compiles, stages, launches and reads back through the SDK client;
    here a fake client that runs the staged run.py on the stub runtime records the calls."""
    import json
    import shutil

    import csl_templates

    b = make_bundle(tmp_path)
    sdk = tmp_path / "fake_sdk"
    shutil.copytree(Path(csl_templates.__file__).parent / "stub_sdk", sdk)
    (sdk / "cerebras" / "sdk" / "client.py").write_text(FAKE_CLIENT)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(sdk))
    monkeypatch.setenv("FAKE_SDK_LOG", str(log))
    r = subprocess.run([sys.executable, "-m", "waferllm.cli", "deploy", str(b), "--simulator"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["SdkCompiler", "compile", "SdkLauncher", "stage", "run", "download"]
    assert calls[1][1:] == [str(b / "src"), "layout.csl",
                            "--arch=wse2 --fabric-dims=12,5 --fabric-offsets=4,1 --params=width:5,height:3 "
                            "--memcpy --channels=1 -o out", str(b / "artifacts")]
    assert calls[4][1] == "cs_python run.py --name out --results results.npz"
    assert (b / "artifacts" / "results.npz").is_file()
    from simulator import simulate

    cycles = simulate(shift_east(width=5, height=3, n=4)[0]).total_cycles
    assert f"cycles per launch: [{cycles}]" in r.stdout


def test_a_compiled_models_csl_program_is_refused_before_any_step(tmp_path, tiny_model):
    """A compiled model's csl/decode has CSL sources but no run.py/deploy.py: every mode (the dry run
    too, whose plan could never run) refuses it in one line, and nothing runs."""
    from waferllm.compile import CompileRequest, compile_bundle

    d, _ = tiny_model("llama_gqa")
    out = tmp_path / "bundle"
    compile_bundle(CompileRequest(model=str(d), hardware="wse2", context=40, dtype="fp32", decode_grid=(4, 4),
                                  prefill_grid=(4, 4), out=out))
    decode = out / "csl" / "decode"
    assert (decode / "manifest.json").is_file() and not (decode / "run.py").exists()
    for extra in (["--dry-run"], ["--stub"], ["--stub", "--dry-run"], [], ["--simulator"]):
        r = CliRunner().invoke(main, ["deploy", str(decode), *extra])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, (extra, r.output)
        assert lines[0].startswith(f"Error: {decode} has no host script (run.py"), lines[0]
        assert "compiled model" in lines[0] and "waferllm kernel ... --emit-csl DIR" in lines[0]
    assert not (decode / "artifacts").exists() and not (decode / "out").exists()


def test_a_kernel_bundle_without_its_host_script_is_refused(tmp_path):
    b = make_bundle(tmp_path)
    (b / "deploy.py").unlink()
    r = CliRunner().invoke(main, ["deploy", str(b), "--dry-run"])
    assert r.exit_code == 2 and r.output.startswith(f"Error: {b} has no host script (deploy.py)")
    r = CliRunner().invoke(main, ["deploy", str(b), "--stub", "--dry-run"])  # the stub runs run.py only
    assert r.exit_code == 0, r.output


def test_an_interpreter_that_does_not_exist_is_one_line(tmp_path):
    b = make_bundle(tmp_path)
    r = CliRunner().invoke(main, ["deploy", str(b), "--python", str(tmp_path / "nonexistent" / "python")])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith(f"Error: --python {tmp_path}/nonexistent/python: cannot run it (")


def test_an_interpreter_that_imports_nothing_is_not_taken_for_the_sdk(tmp_path):
    b = make_bundle(tmp_path)
    r = CliRunner().invoke(main, ["deploy", str(b), "--python", "/bin/true"])
    assert r.exit_code == 2 and r.output.startswith("Error: cerebras.sdk is not importable by /bin/true"), r.output
