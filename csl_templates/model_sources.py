"""The CSL sources of a compiled model's programs, as files of the model bundle (``waferllm compile``).

A model bundle is not a kernel bundle: its host side is the token loop of ``waferllm run`` (weights per
stage, hand-offs, the KV cache), not a ``run.py`` of memcpy copies and one launch. What it carries for
the CSL backend is the program itself, lowered exactly as a kernel is (``emit_csl``), for the target the
model was planned for, under ``csl/<program>/``:

```
csl/<program>/src/layout.csl, csl/<program>/src/pe_<body>.csl[, pe_idle.csl]
csl/<program>/commands_<arch>.sh   the exact cslc invocation (simulator fabric; the wafer's in a comment)
csl/<program>/manifest.json        params, targets and cslc commands, bodies, exported symbols
```

``waferllm csl check BUNDLE/csl/<program>`` checks them with the params they were emitted with.
"""

from __future__ import annotations

import json

from plmr.hardware import HardwareSpec
from simulator.program import MeshProgram

from csl_templates.bundle import MANIFEST, SCHEMA, _version, cslc_command
from csl_templates.emit import CslSource, emit_csl, template_env
from csl_templates.target import FABRIC_OFFSETS, csl_target


def model_csl_files(prog: MeshProgram, spec: HardwareSpec, program: str, kernel: str) -> tuple[dict[str, str], CslSource]:
    """Files (paths relative to the model bundle) of ``prog``'s CSL for ``spec``'s architecture, and the
    lowered source. ``program``: the directory name under ``csl/`` (e.g. ``decode``); ``kernel``: the
    name the files' comments give (e.g. ``llama3-8b decode``). Raises ``InputError`` when the program
    cannot be lowered or does not fit the target."""
    target = csl_target(spec)
    src = emit_csl(prog, [target], kernel=kernel)
    base = f"csl/{program}"
    W, H = prog.width, prog.height
    files = {f"{base}/src/{name}": text for name, text in src.files.items()}
    sim_cmd = cslc_command(target, src.params, target.sim_fabric(W, H))
    hw_cmd = cslc_command(target, src.params, target.hardware_fabric())
    files[f"{base}/commands_{target.arch}.sh"] = template_env().get_template("commands.sh.j2").render(
        kernel=kernel, width=W, height=H, arch=target.arch, cslc=sim_cmd, hw_fabric=target.hardware_fabric(),
        run=False)
    manifest = {
        "schema": SCHEMA,
        "waferllm": _version(),
        "kernel": kernel,
        "program": prog.name,
        "hardware": spec.name,
        "width": W,
        "height": H,
        "params": src.params,
        "targets": [{"arch": target.arch, "sim_fabric": list(target.sim_fabric(W, H)),
                     "hardware_fabric": list(target.hardware_fabric()), "fabric_offsets": list(FABRIC_OFFSETS),
                     "cslc": {"simulator": sim_cmd, "hardware": hw_cmd}}],
        "files": sorted(f[len(base) + 1:] for f in files) + [MANIFEST],
        "bodies": {b: {"file": f"src/{f}", "buffers": src.buffers[b]} for b, f in src.bodies.items()},
        "symbols": {"buffers": {n: {"type": t, "mutable": True} for n, t in src.exports.items()},
                    "functions": {n: {"types": list(sig)} for n, sig in src.functions.items()}},
    }
    files[f"{base}/{MANIFEST}"] = json.dumps(manifest, indent=2) + "\n"
    return files, src
