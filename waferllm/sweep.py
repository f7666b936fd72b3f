"""Sweeps: the product of parameter lists, expanded into points, each evaluated on its own by the
PLMR model or the simulator.

A sweep varies either **kernels** (``kernel``, ``mesh``, matrix sizes, ``k_tree``, ``group_size``,
``dtype``, ``hardware``) or **plans** (``model``, ``hardware``, ``method``, ``prefill_grid``,
``decode_grid``, ``k_tree``, ``context``, ``input_len``, ``output_len``, ``dtype``, ``batch``,
``wafers``). Every axis is a list; the sweep is their Cartesian product. Values are written as on
the command line: ``8x16`` or ``8`` for grids, ``A:B:S`` for an inclusive range (``8:64:8``; for
grids, the squares of the range), ``auto`` for a grid or K the planner chooses. ``size`` sets
M = K = N for a GEMM and K = N (M = 1) for a GEMV.

Evaluators: ``model`` (the PLMR formula, no program is built), ``simulate`` (the program run
functionally on the simulator against numpy, with the model's prediction beside it) and ``timing``
(timing-only simulation). Plan points are always evaluated by the model (a whole model is not
simulated).

``evaluate_point`` is a pure function of the point (it runs in worker processes or on a Dask
cluster) and never raises: a point that fails is returned with ``status = "error"`` and the
error's first line.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import tomllib
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from plmr.errors import InputError
from plmr.primitives import whole_cycles
from waferllm.grids import parse_grid
from waferllm.results import PARAM_COLUMNS, RESULT_COLUMNS

EVALUATORS = ("model", "simulate", "timing")
DTYPES = ("fp16", "fp32")
METHODS = ("full", "paper")


@dataclass(frozen=True)
class Axis:
    name: str
    kind: str  # "int", "grid", "choice", "text"
    help: str
    choices: tuple[str, ...] = ()
    auto: bool = False  # "auto" (None) allowed
    minimum: int = 1


KERNEL_AXES = (
    Axis("kernel", "text", "kernel names (see `waferllm kernel --help`)"),
    Axis("mesh", "grid", "meshes: N, HxW or A:B:S (squares)"),
    Axis("size", "int", "M = K = N for a GEMM, K = N for a GEMV"),
    Axis("m", "int", "rows of the output (1 for a GEMV)"),
    Axis("k", "int", "reduction dimension"),
    Axis("n", "int", "columns of the output"),
    Axis("group_size", "int", "level-1 group size of the K-tree (GEMV)", auto=True),
    Axis("seed", "int", "seed of the random inputs (simulate)", minimum=0),
)
PLAN_AXES = (
    Axis("model", "text", "catalog names or HF model directories"),
    Axis("method", "choice", "planning methods", METHODS),
    Axis("prefill_grid", "grid", "prefill grids (auto: the planner's choice)", auto=True),
    Axis("decode_grid", "grid", "decode grids (auto: the planner's choice)", auto=True),
    Axis("context", "int", "KV tokens a decode step attends to (auto: input + output)", auto=True),
    Axis("input_len", "int", "prompt tokens"),
    Axis("output_len", "int", "generated tokens"),
    Axis("batch", "int", "decode requests sharing the weights, each with its own KV cache"),
    Axis("wafers", "int", "systems to pipeline the layers over (at most; the stages fill them in order)"),
)
SHARED_AXES = (
    Axis("hardware", "text", "built-in targets or TOML/JSON spec files"),
    Axis("k_tree", "int", "K of the K-tree allreduce (plans: auto = the planner's choice)", auto=True),
    Axis("dtype", "choice", "data types", DTYPES),
)
AXES = {a.name: a for a in KERNEL_AXES + PLAN_AXES + SHARED_AXES}
KERNEL_DEFAULTS = {"hardware": ["wse2"], "m": [1], "k_tree": [2], "group_size": [None], "dtype": ["fp16"],
                   "seed": [0]}
PLAN_DEFAULTS = {"hardware": ["wse2"], "method": ["full"], "prefill_grid": [None], "decode_grid": [None],
                 "k_tree": [None], "context": [None], "input_len": [4096], "output_len": [128],
                 "dtype": ["fp16"], "batch": [1], "wafers": [1]}


# ------------------------------------------------------------------------------------------------
# Parsing axis values
# ------------------------------------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _range(text: str, what: str) -> list[int]:
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 2:
        parts.append(1)
    if len(parts) != 3 or parts[2] < 1 or parts[1] < parts[0]:
        raise InputError(f"{what} {text!r}: a range is START:STOP or START:STOP:STEP with STOP >= START and "
                         f"STEP >= 1, e.g. 8:64:8")
    return list(range(parts[0], parts[1] + 1, parts[2]))


def parse_values(axis: Axis, values: list[Any]) -> list[Any]:
    """Canonical values of one axis: ints, ``"RxC"`` grids, choices, or None for auto."""
    what = _flag(axis.name)
    out: list[Any] = []
    for v in values:
        if isinstance(v, bool):
            raise InputError(f"{what} {v!r}: expected {axis.help}")
        text = str(v).strip()
        if axis.auto and text.lower() in ("auto", "none", ""):
            out.append(None)
            continue
        if axis.kind == "int":
            if isinstance(v, int):
                ints = [v]
            elif ":" in text:
                ints = _range(text, what)
            else:
                try:
                    ints = [int(text)]
                except ValueError:
                    raise InputError(f"{what} {text!r}: expected an integer or a range START:STOP:STEP"
                                     + (" or auto" if axis.auto else "")) from None
            for i in ints:
                if i < axis.minimum:
                    raise InputError(f"{what} {i}: must be >= {axis.minimum}")
            out += ints
        elif axis.kind == "grid":
            if ":" in text:
                out += [f"{s}x{s}" for s in _range(text, what) if s >= 1]
                if any(s < 1 for s in _range(text, what)):
                    raise InputError(f"{what} {text!r}: grid sides must be >= 1")
            else:
                h, w = parse_grid(text, axis.name.replace("_", "-"))
                out.append(f"{h}x{w}")
        elif axis.kind == "choice":
            if text not in axis.choices:
                raise InputError(f"{what} {text!r}: allowed: {', '.join(axis.choices)}")
            out.append(text)
        else:
            if not text:
                raise InputError(f"{what}: empty value")
            out.append(text)
    # keep the first of repeated values, in order
    seen, uniq = set(), []
    for v in out:
        if v not in seen:
            seen.add(v)
            uniq.append(v)
    return uniq


def split_list(text: str) -> list[str]:
    """``"a,b, c"`` → ``["a", "b", "c"]`` (a flag's comma-separated list)."""
    return [p.strip() for p in text.split(",") if p.strip()]


# ------------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------------

@dataclass
class Sweep:
    """Axes (name -> canonical values) and the evaluator."""

    axes: dict[str, list[Any]] = field(default_factory=dict)
    evaluator: str = "model"

    @property
    def kind(self) -> str:
        return "kernel" if "kernel" in self.axes else "plan"

    def validate(self) -> None:
        if self.evaluator not in EVALUATORS:
            raise InputError(f"evaluator {self.evaluator!r}: allowed: {', '.join(EVALUATORS)}")
        has_k, has_p = "kernel" in self.axes, "model" in self.axes
        if has_k and has_p:
            raise InputError("a sweep varies kernels (--kernel) or models (--model), not both: run two sweeps")
        if not has_k and not has_p:
            raise InputError("nothing to sweep: give --kernel NAMES (with --mesh and sizes) or --model NAMES")
        own = {a.name for a in (KERNEL_AXES if has_k else PLAN_AXES) + SHARED_AXES}
        other = sorted(set(self.axes) - own)
        if other:
            raise InputError(f"{', '.join(_flag(o) for o in other)} {'does' if len(other) == 1 else 'do'} not apply "
                             f"to a {'kernel' if has_k else 'plan'} sweep")
        if has_k:
            from meshgemm.registry import KERNELS

            for name in self.axes["kernel"]:
                if name not in KERNELS:
                    raise InputError(f"--kernel {name!r}: unknown kernel; kernels: {', '.join(KERNELS)}")
            if "mesh" not in self.axes:
                raise InputError("a kernel sweep needs --mesh (e.g. 8,16,32 or 8:64:8)")
            sizes = "size" in self.axes
            explicit = [a for a in ("m", "k", "n") if a in self.axes]
            if sizes and explicit:
                raise InputError(f"--size sets m, k and n: give either --size or {', '.join(_flag(a) for a in explicit)}")
            if not sizes and not {"k", "n"} <= set(explicit):
                raise InputError("a kernel sweep needs --size, or --k and --n (and --m for a GEMM)")
        elif self.evaluator != "model":
            raise InputError("plan points are evaluated by the PLMR model only; drop --simulate/--timing-only "
                             "or sweep kernels")
        for name, values in self.axes.items():
            if not values:
                raise InputError(f"{_flag(name)}: no values")
        # a typo in a name is the user's mistake, not a point that could not be run: say so before the
        # results directory exists (the loads are cached for the points' evaluation)
        for name in self.axes.get("hardware", []):
            try:
                _spec(name)
            except InputError as exc:
                raise InputError(f"--hardware {name!r}: {exc}") from None
        for name in self.axes.get("model", []):
            try:
                _model(name)
            except InputError as exc:
                raise InputError(f"--model {name!r}: {exc}") from None

    def points(self) -> list[dict[str, Any]]:
        """Every point of the product, in order, with every parameter column set (None: unused)."""
        self.validate()
        defaults = KERNEL_DEFAULTS if self.kind == "kernel" else PLAN_DEFAULTS
        axes = {**defaults, **self.axes}
        names = list(axes)
        out, seen = [], set()
        for combo in product(*(axes[n] for n in names)):
            p = dict(zip(names, combo))
            point = {c: None for c in PARAM_COLUMNS}
            point["kind"], point["evaluator"] = self.kind, self.evaluator
            if self.kind == "kernel":
                from meshgemm.predict import GEMV_KERNELS

                size = p.pop("size", None)
                if size is not None:
                    p["m"], p["k"], p["n"] = (1 if p["kernel"] in GEMV_KERNELS else size), size, size
                if p["kernel"] != "meshgemv":  # K and groups are MeshGEMV's parameters only
                    p["k_tree"], p["group_size"] = None, None
            for k, v in p.items():
                point[k] = v
            if self.kind == "kernel" and self.evaluator != "simulate":
                point["seed"] = None  # no data: the seed changes nothing
            key = point_key(point)
            if key in seen:
                continue
            seen.add(key)
            out.append(point)
        return out

    def to_toml(self) -> str:
        """The sweep as a TOML file ``waferllm sweep --config`` reads back."""
        lines = ["# waferllm sweep", "[sweep]", f'evaluator = "{self.evaluator}"']
        for name, values in self.axes.items():
            vals = ", ".join(json.dumps("auto" if v is None else v) for v in values)
            lines.append(f"{name} = [{vals}]")
        return "\n".join(lines) + "\n"


def point_key(point: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a point's parameters."""
    canon = json.dumps({c: point.get(c) for c in PARAM_COLUMNS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canon.encode()).hexdigest()[:16]


def load_sweep_file(path: str | Path) -> tuple[dict[str, list[Any]], str | None]:
    """Axes and evaluator of a TOML sweep file: a ``[sweep]`` table of ``axis = [values]`` (or a
    single value) and an optional ``evaluator = "model" | "simulate" | "timing"``."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise InputError(f"--config {path}: not a valid TOML file ({str(exc).splitlines()[0]})") from None
    table = data.get("sweep", data)
    if not isinstance(table, dict):
        raise InputError(f"--config {path}: expected a [sweep] table")
    evaluator = table.pop("evaluator", None)
    if evaluator is not None and evaluator not in EVALUATORS:
        raise InputError(f"--config {path}: evaluator {evaluator!r}; allowed: {', '.join(EVALUATORS)}")
    axes = {}
    for name, values in table.items():
        key = name.replace("-", "_")
        if key not in AXES:
            raise InputError(f"--config {path}: unknown parameter {name!r}; parameters: {', '.join(AXES)}")
        if not isinstance(values, list):
            values = [values]
        axes[key] = parse_values(AXES[key], values)
    return axes, evaluator


# ------------------------------------------------------------------------------------------------
# Evaluating one point (runs in worker processes)
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _spec(name: str):
    from plmr.hardware import get_spec

    return get_spec(name)


@functools.lru_cache(maxsize=64)
def _model(name: str):
    from waferllm.catalog import resolve_model

    return resolve_model(name)


def _grid(text: str | None) -> tuple[int, int] | None:
    return None if text is None else tuple(int(v) for v in text.split("x"))


def _evaluate_kernel(point: dict[str, Any]) -> tuple[dict[str, Any], dict | None]:
    from meshgemm.bsp import semantics
    from meshgemm.kernel import KernelRequest

    spec = _spec(point["hardware"])
    mesh = _grid(point["mesh"])
    ev = point["evaluator"]
    req = KernelRequest(name=point["kernel"], mesh=mesh, m=point["m"], k=point["k"], n=point["n"],
                        dtype=point["dtype"], k_tree=point["k_tree"] or 2, group_size=point["group_size"],
                        functional=ev == "simulate", seed=point["seed"] or 0)
    row: dict[str, Any] = {"semantics": semantics(req.name), "mesh_rows": mesh[0], "mesh_cols": mesh[1]}
    if ev == "model":
        from meshgemm.predict import fits, predict_kernel

        pred = predict_kernel(req, spec)
        row["fits"] = fits(pred, spec)
        arrays = None
    else:
        import numpy as np

        from meshgemm.registry import build_kernel
        from meshgemm.run import _split
        from simulator import simulate

        build = build_kernel(req, spec)
        pred = build.predicted
        res = simulate(build.program, spec, mode="functional" if ev == "simulate" else "timing")
        comp, comm, source = _split(res)
        row.update(simulated_cycles=int(res.total_cycles), sim_compute_cycles=whole_cycles(comp),
                   sim_comm_cycles=whole_cycles(comm), split_source=source, bytes_per_pe=build.bytes_per_pe(),
                   colors_per_pe=build.colors_per_pe(), fits=True)
        if ev == "simulate" and build.expected:
            got = build.gather(res)
            worst = 0.0
            for name, ref in build.expected.items():
                ref = np.asarray(ref, dtype=np.float64)
                err = float(np.max(np.abs(np.asarray(got[name], dtype=np.float64) - ref))) if ref.size else 0.0
                scale = float(np.max(np.abs(ref))) if ref.size else 0.0
                worst = max(worst, err / scale if scale > 0 else err)
            row["max_rel_error"] = worst
        arrays = {"sram_bytes": np.asarray(res.sram_bytes, dtype=np.int64),
                  "link_wavelets": np.asarray(res.link_wavelets[..., :4].sum(axis=-1), dtype=np.int64),
                  "busy": np.asarray(res.busy, dtype=np.int64)}
    row.update(predicted_cycles=whole_cycles(pred.total_cycles), predicted_compute_cycles=whole_cycles(pred.compute_cycles),
               predicted_comm_cycles=whole_cycles(pred.total_cycles - pred.compute_cycles),
               predicted_bytes_per_pe=int(pred.bytes_per_pe), predicted_colors_per_pe=int(pred.colors_per_pe))
    return row, arrays


def _evaluate_plan(point: dict[str, Any]) -> dict[str, Any]:
    from waferllm.planner import PlanRequest, plan

    spec = _spec(point["hardware"])
    model = _model(point["model"])
    fields = {f.name for f in dataclasses.fields(PlanRequest)}
    kwargs: dict[str, Any] = dict(hardware=spec, method=point["method"], prefill_grid=_grid(point["prefill_grid"]),
                                  decode_grid=_grid(point["decode_grid"]), k_tree=point["k_tree"],
                                  context=point["context"], input_len=point["input_len"],
                                  output_len=point["output_len"], dtype=point["dtype"])
    for extra in ("batch", "wafers"):
        value = point[extra]
        if extra in fields:
            kwargs[extra] = value
        elif value != 1:
            raise InputError(f"{_flag(extra)} {value}: the planner does not take a {extra} yet (only 1)")
    d = plan(model, PlanRequest(**kwargs)).to_dict()
    pre, dec, kv = d["prefill"], d["decode"], d["kv_cache"]
    return {
        "prefill_rows": pre["grid"][0], "prefill_cols": pre["grid"][1],
        "decode_rows": dec["grid"][0], "decode_cols": dec["grid"][1],
        "prefill_tokens_per_s": pre["tokens_per_s"], "decode_tokens_per_s": dec["tokens_per_s"],
        "end_to_end_tokens_per_s": d["end_to_end"]["tokens_per_s"], "prefill_cycles": whole_cycles(pre["cycles"]),
        "decode_cycles_per_token": whole_cycles(dec["cycles_per_token"]), "decode_k_tree": dec["k_tree"],
        "kv_shift_tokens": kv["max_tokens_shift"], "kv_concat_tokens": kv["max_tokens_concat"],
        "kv_shift_tokens_placed": kv["max_tokens_shift_placed"],
        "kv_concat_tokens_placed": kv["max_tokens_concat_placed"],
        "energy_j_per_token": d["energy_j_per_token"], "plan_bytes_per_pe": d["memory"]["bytes_per_pe"],
        "fits": d["memory"]["fits"],
    }


def evaluate_point(point: dict[str, Any]) -> tuple[dict[str, Any], dict | None]:
    """Evaluate one point: ``(row, arrays)``; ``row`` holds the point, ``key``, ``status``
    (``ok`` or ``error``), ``error`` and the results; ``arrays`` the per-PE arrays of a simulated
    kernel (else None). Never raises for a failing point."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {c: None for c in RESULT_COLUMNS}
    row.update(point)
    row["key"] = point_key(point)
    arrays = None
    try:
        if point["kind"] == "kernel":
            res, arrays = _evaluate_kernel(point)
        else:
            res = _evaluate_plan(point)
        row.update(res)
        row["status"], row["error"] = "ok", None
    except InputError as exc:
        row["status"], row["error"] = "error", (str(exc).splitlines() or [type(exc).__name__])[0]
    except MemoryError:
        row["status"], row["error"] = "error", "MemoryError: out of memory"
    except Exception as exc:  # a failing point is recorded and the sweep goes on
        first = (str(exc).splitlines() or [""])[0]
        row["status"], row["error"] = "error", f"{type(exc).__name__}: {first}".rstrip(": ")
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row, arrays
