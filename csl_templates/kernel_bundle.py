"""Bundles of ``meshgemm`` kernels: ``waferllm kernel NAME ... --emit-csl DIR``.

The bundle's manifest records the kernel request, so the stub runtime rebuilds the same program
(``kernel_program``). The host side comes from the build's ``host_plan`` (a ``HostPlan``: how the
kernel's operands are cut into PE buffers and what numpy expects); a build without one gets a
``run.py`` that loads, launches ``main`` and reports cycles, with no numpy check.
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
    return build.program, getattr(build, "host_plan", None)


def emit_kernel_bundle(build, hardware: str, out: str | Path) -> Bundle:
    """Write the bundle of a kernel build to ``out`` and say so on stderr (stdout may carry JSON)."""
    req = dataclasses.asdict(build.request)
    req.pop("functional", None)
    req["mesh"] = list(req["mesh"])
    bundle = emit_bundle(build.program, out, plan=getattr(build, "host_plan", None),
                         stub={"builder": "csl_templates.kernel_bundle:kernel_program",
                               "kwargs": {"hardware": hardware, **req}},
                         kernel=build.request.name, request=req)
    files = bundle.manifest["files"]
    print(f"CSL bundle for {', '.join(t.arch for t in bundle.source.targets)}: {len(files)} files in {out}",
          file=sys.stderr)
    return bundle
