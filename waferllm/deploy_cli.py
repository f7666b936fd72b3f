"""``waferllm deploy BUNDLE``: run a kernel bundle (``waferllm kernel ... --emit-csl DIR``) on Cerebras hardware.

Only kernel bundles carry the host scripts (``run.py``, ``deploy.py``) every step below runs; the
``csl/<program>`` directories of a compiled model (``waferllm compile``) hold CSL sources only, so
they are refused before any step, also for ``--dry-run`` (a plan that can never run helps nobody).

Every step goes through the bundle's own ``deploy.py`` in the SDK's Python 3.11 environment (the
``cerebras-sdk`` pins clash with this package's dependencies, so it is never imported here):

* ``--dry-run`` prints each step a deployment runs — compile, upload, launch, read back — with the
  exact commands and arguments, and runs nothing;
* without it, checks that ``--python`` (default: this interpreter) can import ``cerebras.sdk`` and
  runs ``deploy.py``; if it cannot, one line says how to set the SDK environment up (exit 2);
* ``--stub`` runs the bundle's ``run.py`` here instead, against the stub SDK runtime backed by the
  simulator (``csl_templates/stub_sdk``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

from plmr.errors import InputError

SDK_SETUP = ("python3.11 -m venv ~/wse-env && ~/wse-env/bin/pip install cerebras-sdk==2.10.0, then pass "
             "--python ~/wse-env/bin/python")


def deploy_steps(bundle: str, manifest: dict, arch: str, simulator: bool) -> list[tuple[str, str]]:
    """(step, exact command) of a deployment, as ``deploy.py`` runs them (hardware-and-csl.md §11.4)."""
    from csl_templates.bundle import params_arg

    target = next(t for t in manifest["targets"] if t["arch"] == arch)
    fabric = target["sim_fabric"] if simulator else target["hardware_fabric"]
    offs = target["fabric_offsets"]
    opts = (f"--arch={arch} --fabric-dims={fabric[0]},{fabric[1]} --fabric-offsets={offs[0]},{offs[1]} "
            f"--params={params_arg(manifest['params'])} --memcpy --channels=1 -o out")
    root = Path(bundle)
    src, art = str(root / "src"), str(root / "artifacts")
    run = "cs_python run.py --name out --results results.npz" + ("" if simulator else " --cmaddr %CMADDR%")
    return [
        ("compile", f"SdkCompiler(disable_version_check=True).compile({src!r}, 'layout.csl', {opts!r}, {art!r})"),
        ("", f"with a local SDK instead: cd {shlex.quote(str(root))} && cslc ./src/layout.csl {opts}"),
        ("upload", f"SdkLauncher(<artifact>, simulator={simulator}).stage({str(root / 'run.py')!r})"),
        ("launch", f"SdkLauncher.run({run!r})"),
        ("read back", f"SdkLauncher.download_artifact('results.npz', {str(root / 'artifacts' / 'results.npz')!r})"),
    ]


def check_host_scripts(bundle: str, manifest: dict, stub: bool) -> None:
    """Refuse (one line, before any step runs) a bundle without the host script its steps need: ``--stub``
    runs ``run.py``, the other modes run ``deploy.py``, which uploads ``run.py``."""
    need = ["run.py"] if stub else ["run.py", "deploy.py"]
    missing = [f for f in need if not (Path(bundle) / f).is_file()]
    if not missing:
        return
    if "inputs" not in manifest:  # a compiled model's csl/<program> manifest has no host side at all
        what = ("it holds the CSL sources of a compiled model's program (waferllm compile), which cannot be "
                "deployed yet (check them with waferllm csl check)")
    else:
        what = "the bundle is incomplete (emit it again)"
    raise InputError(f"{bundle} has no host script ({', '.join(missing)}): {what}; deploy runs bundles written by "
                     f"waferllm kernel ... --emit-csl DIR")


def probe_sdk(python: str) -> None:
    """Check that ``python`` runs and imports the SDK client (it must print the marker: ``/bin/true``
    'succeeds' without importing anything)."""
    try:
        probe = subprocess.run([python, "-c", "import cerebras.sdk.client; print('sdk ok')"], capture_output=True,
                               text=True)
    except OSError as exc:
        raise InputError(f"--python {python}: cannot run it ({exc.strerror}); give the interpreter of the SDK "
                         f"environment: {SDK_SETUP}") from None
    if probe.returncode != 0 or probe.stdout.strip() != "sdk ok":
        raise InputError(f"cerebras.sdk is not importable by {python}; set up the SDK environment: {SDK_SETUP}")


def stub_path() -> str:
    import csl_templates

    return str(Path(csl_templates.__file__).parent / "stub_sdk")


@click.command("deploy")
@click.argument("bundle")
@click.option("--arch", type=click.Choice(["wse2", "wse3"]), default=None,
              help="target architecture (default: the bundle's first)")
@click.option("--simulator", is_flag=True, help="the SDK's simulator on the appliance, on the smallest fabric")
@click.option("--dry-run", is_flag=True, help="print every step with its exact command; run nothing")
@click.option("--python", "python", default=None, metavar="PATH",
              help="interpreter of the SDK environment (default: this one)")
@click.option("--stub", is_flag=True, help="run run.py here against the stub SDK runtime (waferllm's simulator)")
def deploy(bundle: str, arch: str | None, simulator: bool, dry_run: bool, python: str | None, stub: bool) -> None:
    """Compile BUNDLE, upload its host script, launch it on a Cerebras system (or the SDK's simulator)
    and read the results back.

    BUNDLE is a kernel bundle, written by `waferllm kernel ... --emit-csl DIR`. The csl/decode and
    csl/prefill directories of a compiled model (`waferllm compile`) have no host script and are
    refused; check them with `waferllm csl check`."""
    from csl_templates.bundle import load_manifest

    manifest = load_manifest(bundle)
    archs = [t["arch"] for t in manifest["targets"]]
    arch = arch or archs[0]
    if arch not in archs:
        raise InputError(f"--arch {arch}: bundle {bundle} was emitted for {', '.join(archs)}")
    check_host_scripts(bundle, manifest, stub)
    python = python or sys.executable
    deploy_py = str(Path(bundle) / "deploy.py")
    cmd = [python, deploy_py, "--arch", arch] + (["--simulator"] if simulator else [])
    if stub:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([stub_path()] + [p for p in [env.get("PYTHONPATH")] if p])
        click.echo(f"stub run: cd {shlex.quote(bundle)} && PYTHONPATH={stub_path()} {sys.executable} run.py --name out")
        if dry_run:
            return
        proc = subprocess.run([sys.executable, "run.py", "--name", "out"], cwd=bundle, env=env)
        sys.exit(proc.returncode)
    where = "the SDK simulator on the appliance" if simulator else f"a {arch.upper().replace('WSE', 'CS-')} system"
    if dry_run:
        click.echo(f"deploy kernel {manifest['kernel']!r} ({manifest['width']} x {manifest['height']} PEs, {arch}) "
                   f"to {where}")
        n = 0
        for step, command in deploy_steps(bundle, manifest, arch, simulator):
            if step:
                n += 1
                click.echo(f"{n}. {step:<9} {command}")
            else:
                click.echo(f"   {'':<9} ({command})")
        click.echo(f"all steps: {' '.join(shlex.quote(c) for c in cmd)}")
        return
    probe_sdk(python)
    proc = subprocess.run(cmd, cwd=bundle)
    sys.exit(proc.returncode)
