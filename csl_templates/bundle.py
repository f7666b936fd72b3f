"""Bundles: everything needed to compile, run and check one program on Cerebras hardware, in one
directory written atomically.

```
DIR/src/layout.csl, DIR/src/pe_<body>.csl[, DIR/src/pe_idle.csl]
DIR/commands_wse2.sh, DIR/commands_wse3.sh   exact cslc invocation, then cs_python run.py
DIR/run.py        host script (SDK runtime API only): inputs in, launch, outputs out, numpy, cycles
DIR/deploy.py     appliance deployment (SdkCompiler + SdkLauncher; cerebras.sdk and numpy only)
DIR/manifest.json inputs, outputs, symbols, expected results, commands, and how to rebuild the program
DIR/README.md
```

The directory is built next to ``DIR`` and renamed into place; an existing bundle there is replaced,
any other existing content is refused. Output is deterministic (byte-identical on re-emission). The
mesh size reaches ``src/`` only through ``--params``; the scripts, manifest and README name the sizes
as numbers (the exact ``cslc`` line, the rectangle, the shapes), which is all that differs between
sizes (docs/DESIGN.md, "Scripts and manifests name the sizes").
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from plmr.errors import InputError
from plmr.atomic_output import swap_dir, temp_dir_beside
from simulator.program import MeshProgram

from csl_templates.emit import CslSource, emit_csl, template_env
from csl_templates.exprs import numpy_expr
from csl_templates.host_plan import HostPlan, resolve
from csl_templates.pe_emitter import FIXED_SLOTS
from csl_templates.target import FABRIC_OFFSETS, CslTarget

SCHEMA = "waferllm.bundle/2"  # 2: a copy lists its rectangles (was one entry per rectangle)
MANIFEST = "manifest.json"
_NP_SCALAR = {"i16": "int16", "u16": "uint16", "i32": "int32", "u32": "uint32", "f16": "float16", "f32": "float32"}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("waferllm")
    except Exception:  # noqa: BLE001  (not installed: running from a source tree)
        return "0+source"


def params_arg(params: dict) -> str:
    """``--params`` as cslc takes it: ``name:value`` pairs joined by commas (§10.1)."""
    return ",".join(f"{k}:{v}" for k, v in params.items())


def cslc_command(target: CslTarget, params: dict, fabric: tuple[int, int], layout: str = "./src/layout.csl") -> str:
    """The exact cslc invocation (hardware-and-csl.md §10.1)."""
    return (f"cslc {layout} --arch={target.arch} --fabric-dims={fabric[0]},{fabric[1]} "
            f"--fabric-offsets={FABRIC_OFFSETS[0]},{FABRIC_OFFSETS[1]} --params={params_arg(params)} "
            f"--memcpy --channels=1 -o out")


@dataclass
class Bundle:
    path: Path
    source: CslSource
    manifest: dict


def _atomic_dir(out: Path, files: dict[str, str], executable: set[str]) -> None:
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise InputError(f"{out} exists and is not a waferllm bundle (no {MANIFEST}); choose an empty or new "
                             f"directory")
    try:
        tmp = temp_dir_beside(out.resolve())
    except OSError as exc:
        raise InputError(f"cannot write a bundle to {out}: {exc.strerror or exc}") from None
    try:
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            if rel in executable:
                p.chmod(0o755)
        swap_dir(tmp, out.resolve())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write a bundle to {out}: {exc.strerror or exc}") from None


def render_bundle(prog: MeshProgram, plan: HostPlan | None, stub: dict | None, kernel: str | None = None,
                  targets: list[CslTarget] | None = None, roles: dict | None = None,
                  request: dict | None = None) -> tuple[dict[str, str], CslSource, dict]:
    """Every file of the bundle as text (no I/O): (files, CSL source, manifest)."""
    src = emit_csl(prog, targets, kernel, roles)
    kernel = kernel or prog.name
    env = template_env()
    version = _version()
    W, H = prog.width, prog.height
    params = src.params
    slots = list(FIXED_SLOTS) + src.stamp_labels
    names = {"x": "X", "y": "Y", "e": "E", **{p: f"PRM[{p!r}]" for p in prog.layout_params}}
    copies_in, copies_out = resolve(plan, prog) if plan is not None else ([], [])

    def copy_ctx(group: list) -> dict:
        r = group[0]
        return {"tensor": r.copy.tensor, "buffer": r.copy.buffer, "dtype": r.dtype,
                "rects": ", ".join(f"({g.x0}, {g.y0}, {g.w}, {g.h}, {g.elems})" for g in group),
                "index": numpy_expr(r.copy.index, names), "valid": numpy_expr(r.copy.valid, names)}

    fn_args = _function_args(prog)
    launches = []
    plan_launches = plan.launches if plan is not None else [_default_launch(src)]
    for launch in plan_launches:
        if launch.function not in src.functions:
            raise InputError(f"host plan: launch of {launch.function!r}, which no body exports "
                             f"({', '.join(src.functions) or 'none'})")
        given = dict(launch.args)
        need = fn_args[launch.function]
        if sorted(given) != sorted(need):
            raise InputError(f"host plan: launch {launch.function} gives {sorted(given)}, the function takes {need}")
        launches.append({"function": launch.function,
                         "args": [{"type": _NP_SCALAR[t], "value": repr(given[a])}
                                  for a, t in zip(need, src.functions[launch.function])]})
    inputs = plan.inputs if plan else []
    outputs = plan.outputs if plan else []
    reference = plan.reference if plan else {}
    run_py = env.get_template("run.py.j2").render(
        kernel=kernel, width=W, height=H, params=repr(dict(prog.layout_params)), seed=plan.seed if plan else 0,
        inputs=[{"name": t.name, "shape": tuple(int(d) for d in t.shape), "dtype": t.dtype, "init": t.init}
                for t in inputs],
        outputs=[{"name": t.name, "shape": tuple(int(d) for d in t.shape), "dtype": t.dtype} for t in outputs],
        reference=reference, tolerance=repr(dict(plan.tolerance) if plan else {}), launches=launches,
        slots=repr(slots), copies_in=[copy_ctx(g) for g in _by_copy(copies_in)],
        copies_out=[copy_ctx(g) for g in _by_copy(copies_out)])
    archs = [t.arch for t in src.targets]
    commands = {}
    files: dict[str, str] = {f"src/{name}": text for name, text in src.files.items()}
    for t in src.targets:
        cmd = cslc_command(t, params, t.sim_fabric(W, H))
        commands[t.arch] = {"simulator": cmd, "hardware": cslc_command(t, params, t.hardware_fabric())}
        files[f"commands_{t.arch}.sh"] = env.get_template("commands.sh.j2").render(
            kernel=kernel, width=W, height=H, arch=t.arch, cslc=cmd, hw_fabric=t.hardware_fabric(), run=True)
    files["run.py"] = run_py
    files["deploy.py"] = env.get_template("deploy.py.j2").render(
        kernel=kernel, width=W, height=H, archs=archs, params=params_arg(params),
        sim_fabric=list(src.targets[0].sim_fabric(W, H)),
        hw_fabric={t.arch: list(t.hardware_fabric()) for t in src.targets})
    stats = prog.stats()
    manifest = {
        "schema": SCHEMA,
        "waferllm": version,
        "kernel": kernel,
        "program": prog.name,
        "hardware": prog.spec.name,
        "request": request or {},
        "width": W,
        "height": H,
        "params": params,
        "targets": [{"arch": t.arch, "sim_fabric": list(t.sim_fabric(W, H)),
                     "hardware_fabric": list(t.hardware_fabric()), "fabric_offsets": list(FABRIC_OFFSETS),
                     "cslc": commands[t.arch]} for t in src.targets],
        "files": sorted(files) + [MANIFEST, "README.md"],
        "bodies": {b: {"file": f"src/{f}", "buffers": src.buffers[b]} for b, f in src.bodies.items()},
        "symbols": {
            "buffers": {n: {"type": t, "mutable": True} for n, t in src.exports.items()},
            "functions": {n: {"args": fn_args[n], "types": list(sig)} for n, sig in src.functions.items()},
            "timestamps": {"name": "time_stamps", "type": "u16", "words_per_slot": 4, "slots": slots},
        },
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "init": t.init} for t in inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in outputs],
        "seed": plan.seed if plan else 0,
        "copies_in": [_copy_json(g) for g in _by_copy(copies_in)],
        "copies_out": [_copy_json(g) for g in _by_copy(copies_out)],
        "launches": [{"function": la.function, "args": dict(la.args)} for la in plan_launches],
        "expected": {t.name: {"reference": reference[t.name], "tolerance": plan.tolerance[t.name],
                              "metric": "max |out - ref| / max |ref|"} for t in outputs},
        "stats": {k: stats[k] for k in ("pes", "code_bodies", "param_sets", "route_rules")},
        "skipped_targets": dict(src.skipped),
        "stub": stub or {},
    }
    files[MANIFEST] = manifest_json(manifest)
    files["README.md"] = env.get_template("README.md.j2").render(
        kernel=kernel, width=W, height=H, version=version, program=prog.name, hardware=prog.spec.name,
        params=[p for p in src.params if p not in ("width", "height")], bodies=list(src.bodies), targets=archs,
        pe_files=[f for f in src.files if f != "layout.csl"], inputs=inputs, outputs=outputs, reference=reference,
        skipped=src.skipped)
    return files, src, manifest


def emit_bundle(prog: MeshProgram, out: str | Path, plan: HostPlan | None = None, stub: dict | None = None,
                kernel: str | None = None, targets: list[CslTarget] | None = None, roles: dict | None = None,
                request: dict | None = None) -> Bundle:
    """Write the bundle of ``prog`` to ``out`` (see the module docstring). ``plan`` describes the host
    side (without it ``run.py`` launches ``main`` and reports cycles only); ``stub`` names the builder
    that rebuilds ``prog`` for the stub runtime (``{"builder": "module:function", "kwargs": {...}}``)."""
    files, src, manifest = render_bundle(prog, plan, stub, kernel, targets, roles, request)
    executable = {f for f in files if f.endswith(".sh") or f in ("run.py", "deploy.py")}
    _atomic_dir(Path(out), files, executable)
    return Bundle(Path(out), src, manifest)


def _function_args(prog: MeshProgram) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pl in prog.placements:
        for f in pl.body.finalized().functions.values():
            have = out.setdefault(f.name, list(f.args))
            if have != list(f.args):
                raise InputError(f"program {prog.name}: function {f.name!r} names its arguments {list(f.args)} in "
                                 f"body {pl.body.name} and {have} in another body; use the same names")
    return out


def _default_launch(src: CslSource):
    from csl_templates.host_plan import Launch

    if "main" not in src.functions:
        raise InputError("no host plan and no function 'main' to launch")
    if src.functions["main"]:
        raise InputError("no host plan: function 'main' takes arguments, give them in a HostPlan launch")
    return Launch("main")


def manifest_json(manifest: dict) -> str:
    """The manifest as indented JSON with every list of numbers on one line (a copy's rectangles, the
    fabric sizes), so it reads as a table and its length does not follow the number of rectangles."""
    text = json.dumps(manifest, indent=2, sort_keys=False)
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + re.sub(r",\s*", ", ", m.group(1)) + "]",
                  text) + "\n"


def _by_copy(regions: list) -> list[list]:
    """The resolved rectangles grouped by the host copy they come from (in the plan's order): a copy
    is written once with its rectangles, so only the list of rectangles varies with the mesh (memcpy
    moves one count per PE, so balanced blocks take up to four)."""
    groups: dict[int, list] = {}
    for r in regions:
        groups.setdefault(id(r.copy), []).append(r)
    return list(groups.values())


def _copy_json(group: list) -> dict:
    r = group[0]
    return {"tensor": r.copy.tensor, "buffer": r.copy.buffer, "dtype": r.dtype, "index": repr(r.copy.index),
            "valid": repr(r.copy.valid),
            "rects": [[g.x0, g.y0, g.w, g.h, g.elems] for g in group]}  # x0, y0, w, h, elements per PE


def load_manifest(bundle: str | Path) -> dict:
    """A bundle's manifest, checked (raises ``InputError`` with one line)."""
    p = Path(bundle)
    if not p.is_dir():
        raise InputError(f"bundle {bundle} is not a directory")
    m = p / MANIFEST
    if not m.is_file():
        raise InputError(f"{bundle} is not a waferllm bundle: no {MANIFEST} (write one with waferllm kernel ... "
                         f"--emit-csl DIR)")
    try:
        data = json.loads(m.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{m}: unreadable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{m}: schema {data.get('schema') if isinstance(data, dict) else None!r}, this waferllm "
                         f"reads {SCHEMA}")
    return data
