"""``waferllm kernel NAME``: build one mesh kernel, print its PLMR prediction and (``--simulate``)
run it on the simulator against numpy.

Registered in ``waferllm.cli`` with ``main.add_command(kernel)``; user mistakes raise
``plmr.InputError``, which the command group turns into one ``Error: ...`` line and exit 2. numpy,
numba and the simulator are imported inside the command only.
"""

from __future__ import annotations

import json
import math

import click

from plmr.errors import InputError
from plmr.primitives import whole_cycles
from waferllm.activity import activity
from waferllm.grids import parse_grid

KERNEL_NAMES = ("meshgemm", "gemmt", "meshgemv", "cannon", "summa", "gemv-pipeline", "gemv-ring",
                "meshgemm-bsp", "cannon-bsp", "summa-bsp", "gemv-pipeline-bsp")


#: the kernels whose allreduce is a K-tree: the only ones --k-tree and --group-size change
KTREE_KERNELS = ("meshgemv",)


def _fmt(v, unit: str = "") -> str:
    """Cycles and bytes as whole numbers with thousands separators: a prediction is a float, and a
    table row in scientific notation (2.91e+03) cannot be compared with the JSON's 2909."""
    if v is None:
        return "-"
    if isinstance(v, float) and math.isfinite(v):
        v = whole_cycles(v)  # halves up, as the JSON
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def check_tree_options(name: str, k_tree: int | None, group_size: int | None) -> None:
    """Refuse (one line) a --k-tree or --group-size that the kernel ignores. Any K and group size a
    MeshGEMV builds is predicted as it runs, levels with nothing to merge included (they cost the same
    in both and route no colour)."""
    given = [o for o, v in (("--k-tree", k_tree), ("--group-size", group_size)) if v is not None]
    if given and name not in KTREE_KERNELS:
        raise InputError(f"{' and '.join(given)}: kernel {name} has no K-tree allreduce; the options apply to "
                         f"{', '.join(KTREE_KERNELS)} only")
    if group_size is not None and k_tree == 1:
        raise InputError(f"--group-size {group_size}: a K-tree with K=1 is one chain, it has no groups to size; "
                         f"give --k-tree 2 or more")


@click.command("kernel")
@click.argument("name")
@click.option("--mesh", required=True, help="mesh: HxW (rows x columns) or N")
@click.option("--m", "m", type=int, default=1, show_default=True, help="rows of the output (1 for a GEMV)")
@click.option("--k", "k", type=int, required=True, help="reduction dimension")
@click.option("--n", "n", type=int, required=True, help="columns of the output")
@click.option("--k-tree", type=int, default=None,
              help="K of the K-tree allreduce (meshgemv only; default 2)")
@click.option("--group-size", type=int, default=None,
              help="level-1 group size of the K-tree (meshgemv only, K >= 2; default about rows^(1/K))")
@click.option("--dtype", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--hardware", "hardware_name", default="wse2", show_default=True,
              help="built-in target or a TOML/JSON spec file")
@click.option("--simulate", is_flag=True, help="run the kernel on the simulator")
@click.option("--timing-only", is_flag=True, help="with --simulate: timing mode (no data, no error check)")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="with --simulate: cut each simulated cycle into this many concurrent parts (meshes of "
                   "16,384 PEs or more; same results; 2 nearly halves the wall time on a quiet 2-core "
                   "machine) [default: WAFERLLM_SIM_THREADS, else 1]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="seed of the random inputs (>= 0)")
@click.option("--emit-csl", "emit_csl", default=None, metavar="DIR", help="write the kernel's CSL bundle to DIR")
def kernel(name: str, mesh: str, m: int, k: int, n: int, k_tree: int | None, group_size: int | None, dtype: str,
           hardware_name: str, simulate: bool, timing_only: bool, threads: int | None, as_json: bool, seed: int,
           emit_csl: str | None) -> None:
    """Build kernel NAME (meshgemm, gemmt, meshgemv, cannon, summa, gemv-pipeline, gemv-ring; the
    bulk-synchronous meshgemm-bsp, cannon-bsp, summa-bsp, gemv-pipeline-bsp), print its PLMR
    prediction and, with --simulate, simulated cycles, the compute/communication split (GEMV
    kernels, which stamp the end of their compute; else the busy/stalled cycles of the PE that
    finishes last), the error vs numpy, bytes and colours per PE."""
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from meshgemm.run import run_kernel
    from plmr.hardware import get_spec

    if timing_only and not simulate:
        raise InputError("--timing-only goes with --simulate")
    if threads is not None and not simulate:
        raise InputError("--threads goes with --simulate")
    spec = get_spec(hardware_name)
    shape = parse_grid(mesh, "mesh")
    if shape[0] > spec.mesh_height or shape[1] > spec.mesh_width:
        raise InputError(f"--mesh {mesh}: {shape[0]}x{shape[1]} (rows x columns) is larger than {spec.name}'s "
                         f"kernel rectangle {spec.mesh_height}x{spec.mesh_width}")
    check_tree_options(name, k_tree, group_size)
    k_tree = 2 if k_tree is None else k_tree
    functional = simulate and not timing_only
    req = KernelRequest(name=name, mesh=shape, m=m, k=k, n=n, dtype=dtype, k_tree=k_tree,
                        group_size=group_size, functional=functional, seed=seed)
    mode = ("functional" if functional else "timing") if simulate else "none"
    with activity(f"{name} on {shape[0]}x{shape[1]} PEs") as step:
        step("building the program")
        build = build_kernel(req, spec)
        if emit_csl:
            from csl_templates.kernel_bundle import emit_kernel_bundle

            emit_kernel_bundle(build, hardware_name, emit_csl)
        if simulate:
            step(f"simulating ({mode})")
        rep = run_kernel(build, spec, mode, threads)
    if as_json:
        click.echo(json.dumps(rep.to_dict()))
        return
    lines = [
        f"kernel {name} on {shape[0]}x{shape[1]} PEs ({spec.name}), m={m} k={k} n={n} {dtype}"
        + (f", K={k_tree}" + (f", group size {group_size}" if group_size else "") if "gemv" in name else ""),
        f"  predicted cycles      {_fmt(rep.predicted_cycles)}  (compute {_fmt(rep.predicted_compute_cycles)}, "
        f"communication {_fmt(rep.predicted_communication_cycles)})",
    ]
    if simulate:
        lines += [
            f"  simulated cycles      {_fmt(rep.simulated_cycles)}  (sim/pred {rep.ratio:.3f}; {rep.mode} mode)",
        ]
        x, y = rep.critical_pe
        if rep.compute_cycles is not None:
            lines.append(f"  compute / comm        {_fmt(rep.compute_cycles)} / {_fmt(rep.communication_cycles)}  "
                         f"[{rep.split_source}]")
        else:  # overlapped kernels: busy counts fabric sends and receives too, so it is no compute figure
            lines.append(f"  busy / stalled        {_fmt(rep.critical_pe_busy_cycles)} / "
                         f"{_fmt(rep.critical_pe_stalled_cycles)}  [critical PE ({x}, {y}); busy includes its "
                         f"fabric sends and receives: no compute/communication split]")
        if rep.max_abs_error is not None:
            lines.append(f"  error vs numpy        max abs {rep.max_abs_error:.3g}, max rel {rep.max_rel_error:.3g}")
    lines += [
        f"  bytes per PE          {_fmt(rep.bytes_per_pe)}  (predicted {_fmt(rep.predicted_bytes_per_pe)})",
        f"  colours per PE        {rep.colors_per_pe}  (predicted {rep.predicted_colors_per_pe})",
        f"  program               {rep.code_bodies} code bodies, {rep.param_sets} parameter sets, "
        f"~{_fmt(rep.code_bytes_per_pe)} B of code per PE",
    ]
    click.echo("\n".join(lines))
