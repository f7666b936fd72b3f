"""The planner: choose prefill and decode grids, K-trees and layer placement for a model on a
wafer, and predict tokens/s and energy with the PLMR cost model (waferllm-method.md §9).

Two methods share one set of hardware parameters:

- ``full`` plans the real model: true dimensions, GQA head layout, every layer placed over stages,
  pipeline hand-offs, embedding, LM head and argmax, and a fit error when the model does not fit.
- ``paper`` reproduces the authors' figures (method §9, calibration-targets §1): one resident layer
  timed and multiplied by the layer count, dimensions rounded up to a multiple of the grid side, one
  attention head as wide as the model, no LM head or hand-offs, no fit error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from plmr.breakdown import CostBreakdown
from plmr.collectives import broadcast, chain_reduce, message
from plmr.errors import InputError
from plmr.gemv import meshgemv
from plmr.hardware import DTYPE_BYTES, HardwareSpec
from plmr.ktree import default_group_counts
from plmr.ops import rmsnorm
from plmr.primitives import ceil_div
from plmr.transformer import (
    LayerDims, TreeChoice, decode_buffer_bytes, decode_layer, decode_weight_bytes, kv_bytes_per_token_per_pe,
    prefill_activation_bytes, prefill_layer, round_up,
)
from waferllm.placement import Placement, kv_capacity_placed, place_layers

METHODS = ("full", "paper")

#: group_num per P in the authors' decode configs (method §6.5); other sizes use ≈ √P groups.
AUTHORS_GROUP_NUM = {240: 15, 256: 16, 300: 15, 360: 18, 420: 20, 480: 20, 512: 32, 540: 20,
                     600: 24, 660: 22, 720: 24}

#: K values the planner searches (each axis needs 2K+1 colours; the routable budget bounds K).
K_CHOICES = (1, 2, 3, 4)


@dataclass(frozen=True)
class PlanRequest:
    hardware: HardwareSpec
    method: str = "full"
    prefill_grid: tuple[int, int] | None = None
    decode_grid: tuple[int, int] | None = None
    k_tree: int | None = None
    context: int | None = None  # KV tokens a decode step attends to; default input + output
    input_len: int = 4096
    output_len: int = 128
    dtype: str = "fp16"

    @property
    def decode_context(self) -> int:
        return self.context if self.context is not None else self.input_len + self.output_len


@dataclass(frozen=True)
class PhasePlan:
    """One phase's chosen grid and its predicted cost."""

    grid: tuple[int, int]
    cycles_per_layer: float
    cycles_total: float  # per token (decode) or per prompt (prefill)
    seconds: float
    tokens_per_s: float
    tree_y: TreeChoice = TreeChoice()
    tree_x: TreeChoice = TreeChoice()
    parts: dict = field(default_factory=dict)
    colors_per_pe: int = 0


@dataclass(frozen=True)
class Plan:
    model: Any
    request: PlanRequest
    prefill: PhasePlan
    decode: PhasePlan
    placement: Placement
    switch_cycles: float
    kv_shift_tokens: int
    kv_concat_tokens: int
    kv_shift_tokens_placed: int
    kv_concat_tokens_placed: int
    end_to_end_tokens_per_s: float
    energy_j_per_token: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        spec = self.request.hardware
        pl = self.placement
        dec = self.decode
        return {
            "model": self.model.name,
            "hardware": spec.name,
            "method": self.request.method,
            "dtype": self.request.dtype,
            "clock_hz": spec.clock_hz,
            "context": self.request.decode_context,
            "input_len": self.request.input_len,
            "output_len": self.request.output_len,
            "prefill": {
                "grid": list(self.prefill.grid),
                "tokens_per_s": self.prefill.tokens_per_s,
                "cycles_per_layer": self.prefill.cycles_per_layer,
                "cycles": self.prefill.cycles_total,
                "seconds": self.prefill.seconds,
            },
            "decode": {
                "grid": list(dec.grid),
                "tokens_per_s": dec.tokens_per_s,
                "cycles_per_token": dec.cycles_total,
                "cycles_per_layer": dec.cycles_per_layer,
                "k_tree": dec.tree_y.k,
                "k_tree_x": dec.tree_x.k,
                "groups_y": list(dec.tree_y.group_counts or ()),
                "groups_x": list(dec.tree_x.group_counts or ()),
                "colors_per_pe": dec.colors_per_pe,
                "parts": {k: round(v, 1) for k, v in dec.parts.items()},
            },
            "switch_cycles": self.switch_cycles,
            "end_to_end": {"tokens_per_s": self.end_to_end_tokens_per_s},
            "energy_j_per_token": self.energy_j_per_token,
            "memory": {
                "bytes_per_pe": pl.bytes_per_pe,
                "capacity_per_pe": pl.capacity_per_pe,
                "fits": pl.fits,
                "layer_weight_bytes_per_pe": pl.layer_weight_bytes,
                "layer_kv_bytes_per_pe": pl.layer_kv_bytes,
                "buffer_bytes_per_pe": pl.buffer_bytes,
            },
            "kv_cache": {
                "max_tokens_shift": self.kv_shift_tokens,
                "max_tokens_concat": self.kv_concat_tokens,
                "max_tokens_shift_placed": self.kv_shift_tokens_placed,
                "max_tokens_concat_placed": self.kv_concat_tokens_placed,
            },
            "layer_placement": {
                "grid": list(pl.grid),
                "stages": [s.to_dict() for s in pl.stages],
                "regions_available": pl.regions_available,
            },
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------------
# Dimensions per method
# ------------------------------------------------------------------------------------------------

def model_dims(model: Any) -> LayerDims:
    return LayerDims(hidden=model.hidden_size, ffn=model.intermediate_size, num_heads=model.num_heads,
                     num_kv_heads=model.num_kv_heads, head_dim=model.head_dim, qkv_bias=model.qkv_bias)


def paper_dims(model: Any, grid: tuple[int, int]) -> LayerDims:
    """The authors' simplification: dims rounded up to a multiple of the grid side (4096 → 4200 at
    420), one attention head as wide as the model (calibration-targets §2.1)."""
    side = math.lcm(*grid)
    d = round_up(model.hidden_size, side)
    return LayerDims(hidden=d, ffn=round_up(model.intermediate_size, side), num_heads=1, num_kv_heads=1,
                     head_dim=d, qkv_bias=False)


def paper_tree(n_ax: int) -> TreeChoice:
    """K = 2 with the authors' group_num where they published one, else ≈ √n groups."""
    if n_ax <= 2:
        return TreeChoice(1, ())
    g = AUTHORS_GROUP_NUM.get(n_ax, default_group_counts(n_ax, 2)[0])
    return TreeChoice(2, (g,))


def tree_for(n_ax: int, k: int) -> TreeChoice:
    k = max(1, min(k, max(1, n_ax.bit_length())))
    return TreeChoice(k, default_group_counts(n_ax, k) if n_ax > 1 else tuple([1] * (k - 1)))


def decode_colors(k_y: int, k_x: int) -> int:
    return (2 * k_y + 1) + (2 * k_x + 1) + 1


# ------------------------------------------------------------------------------------------------
# Phase costs
# ------------------------------------------------------------------------------------------------

def _dtype_bytes(req: PlanRequest) -> int:
    return DTYPE_BYTES[req.dtype]


def decode_cost(model: Any, req: PlanRequest, grid: tuple[int, int], tree_y: TreeChoice,
                tree_x: TreeChoice, placement: Placement | None) -> tuple[float, float, CostBreakdown]:
    """(cycles per layer, cycles per token, layer breakdown) of one decode step."""
    spec = req.hardware
    p_y, p_x = grid
    if req.method == "paper":
        dims = paper_dims(model, grid)
        ctx = round_up(req.decode_context, math.lcm(p_y, p_x))
        layer = decode_layer(spec, dims, p_y, p_x, ctx, tree_y, tree_x, req.dtype)
        return layer.total_cycles, layer.total_cycles * model.num_layers, layer
    dims = model_dims(model)
    layer = decode_layer(spec, dims, p_y, p_x, req.decode_context, tree_y, tree_x, req.dtype)
    extras = decode_extras(model, req, grid, tree_y, tree_x, placement)
    per_token = layer.total_cycles * model.num_layers + sum(extras.values())
    parts = {f"layer.{k}": v for k, v in layer.parts.items()}
    parts["layers"] = layer.total_cycles * model.num_layers
    parts.update(extras)
    return layer.total_cycles, per_token, CostBreakdown(
        op="decode_token", compute_cycles=layer.compute_cycles * model.num_layers,
        comm_cycles=layer.comm_cycles * model.num_layers, total_cycles=per_token,
        bytes_per_pe=layer.bytes_per_pe, colors_per_pe=layer.colors_per_pe, parts=parts)


def decode_extras(model: Any, req: PlanRequest, grid: tuple[int, int], tree_y: TreeChoice,
                  tree_x: TreeChoice, placement: Placement | None) -> dict[str, float]:
    """Per-token work outside the layers (method §3.4 "after the last layer", §9 hand-offs):
    embedding row broadcast, stage hand-offs, final norm, LM head GEMV and the argmax reduce."""
    spec = req.hardware
    p_y, p_x = grid
    E_y = ceil_div(model.hidden_size, p_y)
    stages = len(placement.stages) if placement is not None else 1
    # Hand-off: one Y-dist vector crosses to the next region (≤ one region side away), re-broadcast.
    handoff = (message(spec, E_y, max(p_y, p_x), 0, req.dtype).total_cycles
               + broadcast(spec, p_x, E_y, root=0, dtype=req.dtype).total_cycles)
    gy = tree_y.group_counts if p_y > 1 else None
    return {
        "embedding": broadcast(spec, p_x, E_y, root=0, dtype=req.dtype).total_cycles,
        "handoffs": (stages - 1) * handoff,
        "final_norm": rmsnorm(spec, p_y, E_y, 1, tree_y.k, gy, req.dtype).total_cycles,
        "lm_head": meshgemv(spec, p_y, p_x, model.hidden_size, model.vocab_size, tree_y.k, gy, "y",
                            req.dtype, with_broadcast=False).total_cycles,
        "argmax": chain_reduce(spec, p_x, 2, dtype="fp32").total_cycles,
    }


def prefill_cost(model: Any, req: PlanRequest, grid: tuple[int, int], stages: int) -> tuple[float, float, CostBreakdown]:
    """(cycles per layer, cycles per prompt, layer breakdown)."""
    spec = req.hardware
    p_y, p_x = grid
    if req.method == "paper":
        dims = paper_dims(model, grid)
        tokens = round_up(req.input_len, math.lcm(p_y, p_x))
        layer = prefill_layer(spec, dims, p_y, p_x, tokens, TreeChoice(1, ()), req.dtype)
        return layer.total_cycles, layer.total_cycles * model.num_layers, layer
    dims = model_dims(model)
    layer = prefill_layer(spec, dims, p_y, p_x, req.input_len, TreeChoice(1, ()), req.dtype)
    total = layer.total_cycles * model.num_layers
    # Hand-off of the whole activation block (L × E) across each stage boundary: the region's edge
    # links carry it in parallel, one wavelet per link per cycle.
    L_y = ceil_div(req.input_len, p_y)
    E_x = ceil_div(model.hidden_size, p_x)
    handoff = message(spec, L_y * E_x, max(p_y, p_x), 0, req.dtype).total_cycles
    total += (stages - 1) * handoff
    return layer.total_cycles, total, layer


def switch_cycles(model: Any, req: PlanRequest, placement: Placement) -> float:
    """Prefill → decode re-layout (method §9 [O]): bytes over the busiest cut plus the distance.

    Weights move unless both layouts fit; we charge the KV cache of the prompt and, when the
    decode placement leaves no room for a second copy, the weights too."""
    spec = req.hardware
    b = _dtype_bytes(req)
    kv = req.input_len * 2 * model.num_kv_heads * model.head_dim * model.num_layers * b
    weights = model.total_params * b
    dual = 2 * placement.bytes_per_pe <= placement.capacity_per_pe
    moved = kv + (0 if dual else weights)
    cut_links = min(spec.mesh_width, spec.mesh_height)
    return moved / (cut_links * spec.wavelet_bytes) + (spec.mesh_width + spec.mesh_height) * spec.hop_cycles


# ------------------------------------------------------------------------------------------------
# Search
# ------------------------------------------------------------------------------------------------

def _check_grid(spec: HardwareSpec, grid: tuple[int, int], what: str) -> None:
    p_y, p_x = grid
    if p_y < 1 or p_x < 1:
        raise InputError(f"{what} grid {p_y}x{p_x}: sides must be >= 1")
    if p_y > spec.mesh_height or p_x > spec.mesh_width:
        raise InputError(f"{what} grid {p_y}x{p_x} is larger than the {spec.name} mesh "
                         f"({spec.mesh_height}x{spec.mesh_width} rows x columns)")


def candidate_grids(spec: HardwareSpec, step: int = 20, smallest: int = 20) -> list[tuple[int, int]]:
    """Square sides on a coarse ladder, each also tried with a wider and a taller neighbour."""
    top = min(spec.mesh_height, spec.mesh_width)
    sides = list(range(smallest, top + 1, step))
    if top not in sides:
        sides.append(top)
    return [(s, s) for s in sides]


def _refine(best: tuple[int, int], spec: HardwareSpec, step: int) -> list[tuple[int, int]]:
    p_y, p_x = best
    out = []
    for dy in (-2 * step, -step, 0, step, 2 * step):
        for dx in (-2 * step, -step, 0, step, 2 * step):
            g = (p_y + dy, p_x + dx)
            if 1 <= g[0] <= spec.mesh_height and 1 <= g[1] <= spec.mesh_width:
                if math.lcm(*g) <= 4 * max(g):  # small virtual mesh for MeshGEMM (§4.4)
                    out.append(g)
    return out


def _check_forced_k(req: PlanRequest) -> None:
    budget = len(req.hardware.routable_colors)
    if req.k_tree is not None and decode_colors(req.k_tree, req.k_tree) > budget:
        raise InputError(f"K={req.k_tree} needs {decode_colors(req.k_tree, req.k_tree)} colours per PE for "
                         f"two reduction axes; {req.hardware.name} has {budget} routable colours "
                         f"(K <= {(budget - 3) // 4})")


def tree_variants(n_ax: int, ks: tuple[int, ...]) -> list[TreeChoice]:
    """K-trees to try on one axis: each K with ≈ n^(1/K) groups, and for K ≥ 2 also half and twice
    as many level-1 groups (later levels clamped so no level has more groups than the one below)."""
    out: list[TreeChoice] = []
    for k in ks:
        base = tree_for(n_ax, k)
        out.append(base)
        if k < 2 or n_ax <= 2:
            continue
        for scale in (0.5, 2.0):
            first = max(1, min(n_ax, round(base.group_counts[0] * scale)))
            counts = [first]
            for c in base.group_counts[1:]:
                counts.append(max(1, min(c, counts[-1])))
            choice = TreeChoice(k, tuple(counts))
            if choice not in out:
                out.append(choice)
    return out


def _best_trees(model: Any, req: PlanRequest, grid: tuple[int, int],
                placement: Placement) -> tuple[TreeChoice, TreeChoice]:
    """K and group sizes per reduction axis. The layer cost is a sum of Y-axis and X-axis terms, so
    choosing Y with X fixed and then X with Y fixed finds the joint optimum; K ≤ 4 on both axes
    always fits the colour budget (4K + 3 ≤ 19 < 21)."""
    p_y, p_x = grid
    if req.method == "paper" and req.k_tree is None:
        return paper_tree(p_y), paper_tree(p_x)
    ks = (req.k_tree,) if req.k_tree is not None else K_CHOICES
    budget = len(req.hardware.routable_colors)
    ks = tuple(k for k in ks if decode_colors(k, k) <= budget) or (1,)

    def cost(ty: TreeChoice, tx: TreeChoice) -> float:
        return decode_cost(model, req, grid, ty, tx, placement)[1]

    if req.method == "paper":  # forced K: the authors' flow with default groups
        return tree_for(p_y, ks[0]), tree_for(p_x, ks[0])
    fixed_x = tree_for(p_x, ks[0])
    best_y = min(tree_variants(p_y, ks), key=lambda ty: cost(ty, fixed_x))
    best_x = min(tree_variants(p_x, ks), key=lambda tx: cost(best_y, tx))
    return best_y, best_x


def _placement(model: Any, req: PlanRequest, grid: tuple[int, int]) -> Placement:
    dims = model_dims(model) if req.method == "full" else paper_dims(model, grid)
    layers = model.num_layers if req.method == "full" else 1
    ctx = req.decode_context if req.method == "full" else round_up(req.decode_context, math.lcm(*grid))
    return place_layers(req.hardware, dims, layers, model.vocab_size if req.method == "full" else 0,
                        model.tie_word_embeddings, grid, ctx, _dtype_bytes(req))


@dataclass(frozen=True)
class _Candidate:
    """One evaluated grid: its cost and what was chosen on it."""

    grid: tuple[int, int]
    cycles_per_layer: float
    cycles_total: float  # per token (decode) or per prompt (prefill)
    breakdown: CostBreakdown
    tree_y: TreeChoice = TreeChoice()
    tree_x: TreeChoice = TreeChoice()
    placement: Placement | None = None

    @property
    def key(self) -> tuple[float, int]:
        """Objective: fewest cycles, ties to fewer PEs (method §9)."""
        return self.cycles_total, self.grid[0] * self.grid[1]


def _decode_candidate(model: Any, req: PlanRequest, grid: tuple[int, int], forced: bool,
                      tune: bool = True) -> _Candidate | None:
    """The decode cost on one grid with the best K-trees (``tune``) or default ones, or None when
    the grid cannot hold the model (an InputError with the numbers when the user forced it)."""
    try:
        placement = _placement(model, req, grid)
    except InputError:
        if req.method == "full":
            if forced:
                raise
            return None
        placement = _paper_overflow_placement(model, req, grid)  # paper method: report, never fail
    if req.method == "full" and len(placement.stages) > placement.regions_available:
        if forced:
            raise InputError(_too_big_message(model, req, grid, placement))
        return None
    if tune:
        ty, tx = _best_trees(model, req, grid, placement)
    elif req.method == "paper" and req.k_tree is None:
        ty, tx = paper_tree(grid[0]), paper_tree(grid[1])
    else:
        k = req.k_tree or 2
        ty, tx = tree_for(grid[0], k), tree_for(grid[1], k)
    per_layer, per_token, layer = decode_cost(model, req, grid, ty, tx, placement)
    return _Candidate(grid, per_layer, per_token, layer, ty, tx, placement)


def _prefill_candidate(model: Any, req: PlanRequest, grid: tuple[int, int], forced: bool,
                       tune: bool = True) -> _Candidate | None:
    stages = 1
    if req.method == "full":
        dims = model_dims(model)
        act = prefill_activation_bytes(dims, grid[0], grid[1], req.input_len, req.dtype)
        try:
            pl = place_layers(req.hardware, dims, model.num_layers, model.vocab_size,
                              model.tie_word_embeddings, grid, req.input_len, _dtype_bytes(req), act)
        except InputError as exc:
            if forced:
                raise InputError(f"prefill: {exc}") from None
            return None
        if len(pl.stages) > pl.regions_available:
            if forced:
                raise InputError("prefill: " + _too_big_message(model, req, grid, pl))
            return None
        stages = len(pl.stages)
    per_layer, total, layer = prefill_cost(model, req, grid, stages)
    return _Candidate(grid, per_layer, total, layer)


def _too_big_message(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement) -> str:
    spec = req.hardware
    if _weights_gb(model, req) > _wafer_gb(spec):
        return _nothing_fits(model, req)
    return (f"{model.name} needs {len(placement.stages)} regions of {grid[0]}x{grid[1]} PEs, the "
            f"{spec.name} mesh has room for {placement.regions_available}")


def _weights_gb(model: Any, req: PlanRequest) -> float:
    return model.total_params * _dtype_bytes(req) / 1e9


def _wafer_gb(spec: HardwareSpec) -> float:
    return spec.num_pes * spec.usable_sram_bytes / 1e9


def _nothing_fits(model: Any, req: PlanRequest) -> str:
    spec = req.hardware
    need, holds = _weights_gb(model, req), _wafer_gb(spec)
    if need > holds:
        return f"weights need {need:.1f} GB, the wafer holds {holds:.1f} GB ({spec.name}, {req.dtype})"
    kv = model.kv_bytes_per_token(_dtype_bytes(req)) * req.decode_context / 1e9
    return (f"no grid holds {model.name} with a {req.decode_context}-token context: weights "
            f"{need:.1f} GB + KV {kv:.1f} GB, the wafer holds {holds:.1f} GB")


def _search(model: Any, req: PlanRequest, forced: tuple[int, int] | None, what: str, step: int,
            evaluate: Callable[..., _Candidate | None], finalists: int = 8) -> _Candidate:
    """A forced grid, or square sides on a ladder of ``step`` PEs refined around the best, scored
    with default choices; the best few grids are then re-scored with tuned choices (K-trees)."""
    spec = req.hardware
    if forced is not None:
        _check_grid(spec, forced, what)
        return evaluate(model, req, forced, forced=True)
    scored: dict[tuple[int, int], _Candidate] = {}

    def visit(grids: list[tuple[int, int]]) -> None:
        for grid in grids:
            if grid not in scored:
                c = evaluate(model, req, grid, forced=False, tune=False)
                if c is not None:
                    scored[grid] = c

    visit(candidate_grids(spec, step, smallest=step))
    if not scored:
        prefix = "" if what == "decode" else f"{what}: "
        raise InputError(prefix + _nothing_fits(model, req))
    for best in sorted(scored.values(), key=lambda c: c.key)[:3]:  # refine around the best three
        visit(_refine(best.grid, spec, step // 2) + _refine(best.grid, spec, step))
    top = sorted(scored.values(), key=lambda c: c.key)[:finalists]
    return min((evaluate(model, req, c.grid, forced=False, tune=True) for c in top), key=lambda c: c.key)


def _validate(req: PlanRequest) -> None:
    if req.method not in METHODS:
        raise InputError(f"unknown method {req.method!r}; allowed: {', '.join(METHODS)}")
    if req.dtype not in ("fp16", "fp32"):
        raise InputError(f"unknown dtype {req.dtype!r}; allowed: fp16, fp32")
    for name in ("input_len", "output_len"):
        if getattr(req, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(req, name)}")
    if req.context is not None and req.context < 1:
        raise InputError(f"--context must be >= 1, got {req.context}")
    if req.k_tree is not None and req.k_tree < 1:
        raise InputError(f"--k-tree must be >= 1, got {req.k_tree}")


def plan(model: Any, req: PlanRequest) -> Plan:
    """Search grids, trees and placement; predict the metrics. Raises InputError when infeasible."""
    _validate(req)
    _check_forced_k(req)
    spec = req.hardware
    notes: list[str] = []
    if req.method == "full" and req.context is not None and req.context > model.max_position_embeddings:
        notes.append(f"context {req.context} exceeds the model's max_position_embeddings "
                     f"{model.max_position_embeddings}")
    dec = _search(model, req, req.decode_grid, "decode", 10, _decode_candidate)
    pre = _search(model, req, req.prefill_grid, "prefill", 40, _prefill_candidate)
    placement = dec.placement
    if not placement.fits and req.method == "paper":
        notes.append("one layer does not fit a PE at this grid; the paper method extrapolates anyway")
    f = spec.clock_hz
    decode_s = dec.cycles_total / f
    prefill_s = pre.cycles_total / f
    sw = 0.0 if req.method == "paper" else switch_cycles(model, req, placement)
    e2e_s = prefill_s + sw / f + req.output_len * decode_s
    e2e = req.output_len / e2e_s
    energy = spec.power_watts * e2e_s / req.output_len
    shift_w, concat_w = kv_capacity_wafer(model, req, placement)
    shift_p, concat_p = kv_capacity_placed(placement, model_dims(model) if req.method == "full"
                                           else paper_dims(model, placement.grid), _dtype_bytes(req))
    if req.method == "paper":
        notes.append("paper method: one resident layer x layer count, dims rounded up to the grid side, "
                     "one head as wide as the model, no LM head or hand-offs")
    return Plan(
        model=model, request=req,
        prefill=PhasePlan(grid=pre.grid, cycles_per_layer=pre.cycles_per_layer, cycles_total=pre.cycles_total,
                          seconds=prefill_s, tokens_per_s=req.input_len / prefill_s,
                          parts=dict(pre.breakdown.parts)),
        decode=PhasePlan(grid=dec.grid, cycles_per_layer=dec.cycles_per_layer, cycles_total=dec.cycles_total,
                         seconds=decode_s, tokens_per_s=1.0 / decode_s, tree_y=dec.tree_y, tree_x=dec.tree_x,
                         parts=dict(dec.breakdown.parts), colors_per_pe=decode_colors(dec.tree_y.k, dec.tree_x.k)),
        placement=placement, switch_cycles=sw,
        kv_shift_tokens=shift_w, kv_concat_tokens=concat_w,
        kv_shift_tokens_placed=shift_p, kv_concat_tokens_placed=concat_p,
        end_to_end_tokens_per_s=e2e, energy_j_per_token=energy, notes=tuple(notes),
    )


def _paper_overflow_placement(model: Any, req: PlanRequest, grid: tuple[int, int]) -> Placement:
    """The paper method's one resident layer on a grid where it overflows a PE: reported as is."""
    from waferllm.placement import Stage, regions_available

    dims = paper_dims(model, grid)
    ctx = round_up(req.decode_context, math.lcm(*grid))
    w = decode_weight_bytes(dims, grid[0], grid[1], req.dtype)
    kv = ceil_div(ctx, grid[0]) * kv_bytes_per_token_per_pe(dims, grid[1], req.dtype)
    buf = decode_buffer_bytes(dims, grid[0], grid[1], req.dtype)
    stage = Stage(0, (0, 0), (0, 0), (), w + kv + buf)
    return Placement(grid=grid, stages=(stage,), regions_available=regions_available(req.hardware, grid),
                     capacity_per_pe=req.hardware.usable_sram_bytes, layer_weight_bytes=w, layer_kv_bytes=kv,
                     buffer_bytes=buf, extras_bytes={})


def kv_capacity_wafer(model: Any, req: PlanRequest, placement: Placement) -> tuple[int, int]:
    """(shift, concat) KV capacity over the whole wafer, the paper's definition (Table 5).

    Shifting keeps the cache balanced over every row, so all SRAM left after the reserve, the
    weights (every layer, embedding and LM head) and per-PE buffers holds KV; concatenation piles
    new entries on one row of the decode grid, so it holds 1/P_y of that (method §8)."""
    spec = req.hardware
    b = _dtype_bytes(req)
    per_token = 2 * model.num_kv_heads * model.head_dim * model.num_layers * b
    free = spec.num_pes * (spec.usable_sram_bytes - placement.buffer_bytes) - model.total_params * b
    shift = max(0, int(free // per_token))
    return shift, shift // placement.grid[0]
