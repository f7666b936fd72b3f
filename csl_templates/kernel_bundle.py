"""Bundles of ``meshgemm`` kernels: ``waferllm kernel NAME ... --emit-csl DIR``.

The bundle's manifest records the kernel request, so the stub runtime rebuilds the same program
(``kernel_program``). The host side (how the kernel's operands are cut into PE buffers and what numpy
expects) is the build's ``host_plan`` if it has one, else ``csl_templates.kernel_hosts``'.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from csl_templates.bundle import Bundle, emit_bundle


def kernel_program(hardware: str = "wse2", **request):
    """(program, host plan) of the kernel a bundle was emitted from (the stub runtime's builder)."""
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from plmr.hardware import get_spec

    req = KernelRequest(**{**request, "mesh": tuple(request["mesh"]), "functional": True})
    build = build_kernel(req, get_spec(hardware))
    return build.program, host_plan_of(build)


def host_plan_of(build):
    from csl_templates.kernel_hosts import kernel_host_plan

    return getattr(build, "host_plan", None) or kernel_host_plan(build)


def emit_kernel_bundle(build, hardware: str, out: str | Path) -> Bundle:
    """Write the bundle of a kernel build to ``out`` and say so on stderr (stdout may carry JSON)."""
    req = dataclasses.asdict(build.request)
    req.pop("functional", None)
    req["mesh"] = list(req["mesh"])
    bundle = emit_bundle(build.program, out, plan=host_plan_of(build),
                         stub={"builder": "csl_templates.kernel_bundle:kernel_program",
                               "kwargs": {"hardware": hardware, **req}},
                         kernel=build.request.name, request=req)
    files = bundle.manifest["files"]
    print(f"CSL bundle for {', '.join(t.arch for t in bundle.source.targets)}: {len(files)} files in {out}",
          file=sys.stderr)
    for arch, why in bundle.source.skipped.items():
        print(f"  not for {arch}: {why}", file=sys.stderr)
    return bundle
