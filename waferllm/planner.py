"""The planner: choose prefill and decode grids, K-trees and layer placement for a model on one or
several wafers, and predict tokens/s and energy with the PLMR cost model (waferllm-method.md §9).

Two methods share one set of hardware parameters and one report schema:

- ``full`` plans the real model: true dimensions, GQA head layout, sliding windows, every layer
  placed over stages (and wafers), hand-offs, embedding, LM head and argmax, batch > 1.
- ``paper`` prices the same layer programs on the authors' configuration (method §9,
  calibration-targets §1): one resident layer timed and multiplied by the layer count, dimensions
  rounded up to a multiple of the grid side, their K-tree group counts, in decode one attention head
  as wide as the model (prefill keeps the model's heads, see ``paper_dims``), no LM head or
  hand-offs. So the calibration judges the programs the simulator runs. Its figures are marked
  extrapolated; whether the real model fits is still reported truthfully.

The search (``search_grid``): every (rows, columns) shape that fits the wafer is a candidate. A
ladder of shapes covering the mesh at ~1/24 of its longer side (every shape on small meshes; shapes
that cannot hold the model pruned by a memory bound first) is ranked, the best seeds are refined down
to single-PE steps, and the last steps look where the best shapes sit: decode rows and columns at
which a tile shrinks, prefill shapes along lines of a small side ratio (MeshGEMM's virtual mesh is
lcm(P_y, P_x), so awkward shapes lose on merit). Every decode shape visited is ranked by its exact
cost with its best K and level-1 group counts per axis (the layer cost is a sum of a Y-axis part, an
X-axis part and a part no tree changes, so the axes are chosen independently, then paired under the
colour budget), each tree priced as the decode program's line trees run it; trees are skipped only
by exact floors (a line tree never costs less for a larger payload). Prefill shapes are bounded by
their MeshGEMMs alone (the paper method) before they are costed.
See ``search_decode`` and ``search_prefill``; benchmarks/bench_planner.py --dense checks the result
against a dense sweep of forced grids for every catalog model.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from plmr.breakdown import CostBreakdown
from plmr.collectives import message
from plmr.errors import InputError
from plmr.hardware import DTYPE_BYTES, HardwareSpec
from plmr.ktree import default_group_counts
from plmr import decode_ops as D
from plmr.primitives import balanced_split, ceil_div
from plmr.decode_memory import SCORE_CHUNK, SCORE_CHUNKS, DecodeModel, decode_fixed_bytes, decode_layer_bytes
from plmr.prefill_memory import PrefillModel, kv_block, prefill_data_bytes, prefill_layer_bytes, prefill_tiles
from plmr.program_code import DECODE_CODE, PREFILL_CODE
from plmr.transformer import decode_colors as layer_decode_colors
from plmr.transformer import (
    DECODE_TREE_KS, LayerDims, Reduction, TreeChoice, compose, decode_steps, decode_tree_ks, score_mode, line_tree_args,
    LAST_GROUP, price_reduction,
    local_cycles, prefill_activation_bytes,
    prefill_layer, prefill_layer_floor, reduction_cycles, round_up,
)
from waferllm.placement import (Placement, ProgramCharge, RegionShortage, place_layers, place_layers_packed, regions_per_wafer,
                                stage_fit_message)

METHODS = ("full", "paper")

#: Version of the ``plan --json`` object; bumped when a field changes meaning or disappears
#: (3: ``decode.parts``' per-op keys are ``layers.<op>``, summed over the layers; they were ``layer.<op>``).
SCHEMA_VERSION = 3

#: group_num per P in the authors' decode configs (method §6.5); other sizes use ≈ √P groups.
AUTHORS_GROUP_NUM = {240: 15, 256: 16, 300: 15, 360: 18, 420: 20, 480: 20, 512: 32, 540: 20,
                     600: 24, 660: 22, 720: 24}

#: Level-1 group counts tried per K, as factors of the balanced count n^((K-1)/K).
GROUP_FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0)

#: Axes up to this length try every level-1 group count.
EXHAUSTIVE_GROUPS = 16

#: A MeshGEMM virtual mesh larger than this multiple of the longer side is flagged on forced grids.
LCM_WARN = 4

MAX_WAFERS = 64

#: Shapes per side of the first ladder of the search (every shape when the mesh is this small).
LADDER_POINTS = 24

#: Ladder shapes refined down to single-PE steps.
SEEDS = 6

#: Half-width in PEs of the window of shapes around the best one that the search visits last.
WINDOW = 4

#: Decode: half-length in PEs of the row and column through the best shape visited last.
LINE = 16

#: Decode: how far (a fraction of the side) the last steps look for tile steps along a row or column.
TILE_REACH = 0.3

#: Decode: how far the last steps look for shapes at a tile step in both rows and columns.
TILE_CROSS = 0.12

#: Prefill: side ratios rows:columns a:b with a, b up to this are searched along their lines.
RATIO_MAX = 6

#: Prefill: multiples g of the best shape's ratio, either side, visited last.
RATIO_WINDOW = 12


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
    batch: int = 1
    wafers: int | str = 1  # a count or "auto" (the fewest that fit)
    #: Charge the programs' own bytes per PE (``program_bytes``): the decode program's code and
    #: variables, the prefill program's buffer table and code. Off by default: with them LLaMA2-13B
    #: no longer fits one WSE-2 (docs/PLANNER.md, "The programs' own memory").
    program_memory: bool = False

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
    placement: Placement | None = None
    tree_x_strip: TreeChoice | None = None  # decode on a packed placement: the strips' X tree


@dataclass(frozen=True)
class Plan:
    model: Any
    request: PlanRequest
    prefill: PhasePlan
    decode: PhasePlan
    placement: Placement | None  # the real model on the decode grid (None: it does not fit)
    fits: bool
    fit_reason: str
    switch_cycles: float
    kv_shift_tokens: int
    kv_concat_tokens: int
    kv_shift_tokens_placed: int
    kv_concat_tokens_placed: int
    max_batch: int
    end_to_end_tokens_per_s: float
    energy_j_per_token: float
    wafers: int
    handoff: dict
    wafer_options: tuple[dict, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """The ``plan --json`` object: one schema for both methods, cycles as integers."""
        spec = self.request.hardware
        pl = self.placement
        dec, pre = self.decode, self.prefill
        B = self.request.batch
        stages = [s.to_dict() for s in pl.stages] if pl else []
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model.name,
            "hardware": spec.name,
            "method": self.request.method,
            "extrapolated": self.request.method == "paper",
            "dtype": self.request.dtype,
            "clock_hz": spec.clock_hz,
            "context": self.request.decode_context,
            "input_len": self.request.input_len,
            "output_len": self.request.output_len,
            "batch": B,
            "wafers": self.wafers,
            "prefill": {
                "grid": list(pre.grid),
                "tokens_per_s": pre.tokens_per_s,
                "cycles_per_layer": _cyc(pre.cycles_per_layer),
                "cycles": _cyc(pre.cycles_total),
                "seconds": pre.seconds,
                "stages": len(pre.placement.stages) if pre.placement else 1,
                "meshgemm_virtual_side": math.lcm(*pre.grid),
            },
            "decode": {
                "grid": list(dec.grid),
                "tokens_per_s": dec.tokens_per_s,
                "tokens_per_s_aggregate": dec.tokens_per_s * B,
                "cycles_per_token": _cyc(dec.cycles_total),
                "cycles_per_layer": _cyc(dec.cycles_per_layer),
                "k_tree": dec.tree_y.k,
                "k_tree_x": dec.tree_x.k,
                "groups_y": list(dec.tree_y.group_counts or ()),
                "groups_x": list(dec.tree_x.group_counts or ()),
                "colors_per_pe": dec.colors_per_pe,
                "score_chunk": pl.score_chunk if pl is not None else SCORE_CHUNK,
                "parts": {k: _cyc(v) for k, v in dec.parts.items()},
                "strip": None if dec.tree_x_strip is None or pl is None else {
                    "grid": [dec.grid[0], pl.strip_width], "k_tree_x": dec.tree_x_strip.k,
                    "groups_x": list(dec.tree_x_strip.group_counts or ())},
            },
            "handoffs": {k: _cyc(v) if k.endswith("cycles") else v for k, v in self.handoff.items()},
            "switch_cycles": _cyc(self.switch_cycles),
            "end_to_end": {"tokens_per_s": self.end_to_end_tokens_per_s,
                           "tokens_per_s_aggregate": self.end_to_end_tokens_per_s * B},
            "energy_j_per_token": self.energy_j_per_token,
            "memory": {
                "fits": self.fits,
                "reason": self.fit_reason,
                "bytes_per_pe": pl.bytes_per_pe if pl else 0,
                "capacity_per_pe": spec.usable_sram_bytes,
                "layer_weight_bytes_per_pe": stages[0]["weight_bytes_per_pe"] // max(stages[0]["num_layers"], 1)
                if stages else 0,
                "buffer_bytes_per_pe": pl.buffer_bytes if pl else 0,
                "program_memory": self.request.program_memory,
            },
            "kv_cache": {
                "max_tokens_shift": self.kv_shift_tokens,
                "max_tokens_concat": self.kv_concat_tokens,
                "max_tokens_shift_placed": self.kv_shift_tokens_placed,
                "max_tokens_concat_placed": self.kv_concat_tokens_placed,
                "sliding_window": self.model.sliding_window,
                "sliding_window_layers": len(self.model.sliding_window_layers),
                "max_batch": self.max_batch,
            },
            "layer_placement": {
                "grid": list(pl.grid) if pl else list(dec.grid),
                "wafers": pl.wafers if pl else self.wafers,
                "regions_per_wafer": pl.regions_per_wafer if pl else 0,
                "regions_available": pl.regions_available if pl else 0,
                "stages": stages,
            },
            "wafer_options": list(self.wafer_options),
            "notes": list(self.notes),
        }


def _cyc(x: float) -> int:
    return int(round(x))


# ------------------------------------------------------------------------------------------------
# Dimensions and contexts per method
# ------------------------------------------------------------------------------------------------

def model_dims(model: Any) -> LayerDims:
    return LayerDims(hidden=model.hidden_size, ffn=model.intermediate_size, num_heads=model.num_heads,
                     num_kv_heads=model.num_kv_heads, head_dim=model.head_dim, qkv_bias=model.qkv_bias)


def paper_side(grid: tuple[int, int]) -> int:
    """The multiple the authors round dims to: the grid side (square grids, their only kind); a
    non-square grid uses its longer side, never the lcm (994x750 would inflate dims to 372,750)."""
    return max(grid)


def paper_dims(model: Any, grid: tuple[int, int], one_head: bool = True) -> LayerDims:
    """The authors' simplification: dims rounded up to a multiple of the grid side (4096 → 4200 at
    420), one attention head as wide as the model (calibration-targets §2.1).

    ``one_head=False`` keeps the model's heads (prefill): in the authors' prefill a head as wide as
    the model does the attention work of the real heads (dist-GEMM-T over the row's features), but
    our prefill program gathers a KV group's whole head onto each of its columns (ring attention,
    method §5), so one 4,200-wide head would move 33x the K|V of LLaMA3-8B's 128-wide heads per step
    and not fit a PE: the same work as the authors' is our program on the real heads."""
    side = paper_side(grid)
    d = round_up(model.hidden_size, side)
    ffn = round_up(model.intermediate_size, side)
    if not one_head:
        return replace(model_dims(model), hidden=d, ffn=ffn, qkv_bias=False)
    return LayerDims(hidden=d, ffn=ffn, num_heads=1, num_kv_heads=1, head_dim=d, qkv_bias=False)


def layer_contexts(model: Any, context: int) -> tuple[int, ...]:
    """Cached tokens each layer attends to at ``context``: a sliding-window layer keeps at most
    the window (method §10: keys with key_pos > p − window)."""
    if model.sliding_window is None:
        return (context,) * model.num_layers
    return tuple(min(context, model.layer_sliding_window(i) or context) for i in range(model.num_layers))


def paper_tree(n_ax: int) -> TreeChoice:
    """K = 2 with the authors' group_num where they published one, else ≈ √n groups."""
    if n_ax <= 2:
        return TreeChoice(1, ())
    g = AUTHORS_GROUP_NUM.get(n_ax, default_group_counts(n_ax, 2)[0])
    return TreeChoice(2, (g,))


def tree_for(n_ax: int, k: int, first: int | None = None) -> TreeChoice:
    """A K-tree on ``n_ax`` PEs: ``first`` level-1 groups (default ≈ n^((K-1)/K)), deeper levels
    balanced over the level-1 roots, the grouping the kernel builder uses (meshgemm/collectives.py).
    K is lowered to what the axis can hold, and the group counts always match the K returned."""
    n = max(n_ax, 1)
    k = max(1, min(k, n.bit_length()))
    if k == 1:
        return TreeChoice(1, ())
    c1 = default_group_counts(n, k)[0] if first is None else max(1, min(first, n))
    return TreeChoice(k, (c1,) + default_group_counts(c1, k - 1))


def tree_space(n_ax: int, ks: tuple[int, ...]) -> list[TreeChoice]:
    """Trees searched on one axis: each K, with level-1 group counts at ``GROUP_FACTORS`` times the
    balanced count (every count on short axes); duplicates removed."""
    return list(_tree_space(n_ax, tuple(ks)))


@functools.lru_cache(maxsize=4096)
def _tree_space(n_ax: int, ks: tuple[int, ...]) -> tuple[TreeChoice, ...]:
    out: list[TreeChoice] = []
    for k in ks:
        base = tree_for(n_ax, k)
        if base.k != k and k > 1:
            continue  # the axis cannot hold K levels
        if k == 1 or n_ax <= 2:
            firsts = [None]
        elif n_ax <= EXHAUSTIVE_GROUPS:
            firsts = list(range(1, n_ax + 1))
        else:
            firsts = sorted({max(1, min(n_ax, round(base.group_counts[0] * f))) for f in GROUP_FACTORS})
        for first in firsts:
            t = tree_for(n_ax, k, first)
            if t not in out:
                out.append(t)
    return tuple(out)


def decode_colors(k_y: int, k_x: int, grid: tuple[int, int] = (2, 2), mode: str | None = None,
                  stage_colors: int = 0) -> int:
    """Colours per PE of the decode program under K_y and K_x: the layer's (``plmr.transformer.decode_colors``:
    the trees, the KV-group multicast, the KV shift's parity colours) plus ``stage_colors``, those of the
    hand-offs between stages and the token return (``handoff_colors``). ``mode`` is how the program sums
    scores over columns (``score_mode``); None: the most any mode needs (a forced K, no model)."""
    p_y, p_x = grid
    modes = ("none", "full", "groups") if mode is None else (mode,)
    return max(layer_decode_colors(k_y, k_x, p_y, p_x, m) for m in modes) + stage_colors


def handoff_colors(spec: HardwareSpec, placement: Placement | None) -> tuple[int, int, int]:
    """(hand-off rounds, hand-off colours, token-return colours) the decode program allocates for the
    placement's stages (``meshgemm.decode_program._allocate_colours``). Stages sit in serpentine order on
    the region tiling (``snake_origins``): a hand-off to the next band of regions goes south, one colour per
    round of ⌈P_y/P_x⌉ rows, else east or west in one round; with three stages or more, consecutive
    hand-offs alternate between two colour sets (a middle stage receives on one and sends on the other); the
    last stage returns the token to the first on one colour. Every PE reserves them all. The rounds are the
    most of any hand-off (``handoff_rounds``: south over the columns both regions span; on several wafers
    each wafer's stages are placed alike and a hand-off between wafers is one round)."""
    if placement is None or len(placement.stages) <= 1:
        return 0, 0, 0
    rounds = max(handoff_rounds(a, b) for a, b in zip(placement.stages, placement.stages[1:]))
    return rounds, rounds * (2 if len(placement.stages) > 2 else 1), 1


def handoff_rounds(a: Any, b: Any) -> int:
    """Rounds of the hand-off from stage ``a`` to stage ``b`` as the decode program runs it: one side by side
    (or between wafers); going south, row r's segment runs down column r mod o of the o columns both regions
    span, so ⌈P_y/o⌉ rounds."""
    if a.wafer != b.wafer or a.origin[0] == b.origin[0]:
        return 1
    (_, xa), (_, xb) = a.origin, b.origin
    o = min(xa + a.grid[1], xb + b.grid[1]) - max(xa, xb)
    return ceil_div(a.grid[0], max(o, 1))


def stage_colors(spec: HardwareSpec, placement: Placement | None) -> int:
    """Hand-off and token-return colours per PE of the placement's stages (``handoff_colors``)."""
    _, hand, token = handoff_colors(spec, placement)
    return hand + token


def _dtype_bytes(req: PlanRequest) -> int:
    return DTYPE_BYTES[req.dtype]


# ------------------------------------------------------------------------------------------------
# Decode cost on one grid
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeTerms:
    """Everything a decode step costs on one grid, with the reductions left symbolic: per-layer
    step lists (one per distinct context), the work after the last layer, and the hand-offs."""

    grid: tuple[int, int]
    layer_groups: tuple[tuple[int, tuple], ...]  # (number of layers, steps) per distinct context
    extras: tuple  # embedding, final norm, LM head, argmax (steps)
    handoff_cycles: float
    handoff: dict
    layers_per_token: int  # layers charged per token (the paper method: the model's count)

    spec: HardwareSpec | None = field(default=None, compare=False, repr=False)
    #: Exact reduction prices by ``line_tree_args`` for ``spec`` (and the search's ``_TreeRow``s),
    #: shared by the terms of one search.
    prices: dict = field(default_factory=dict, compare=False, repr=False)
    #: How the program sums scores over columns (``plmr.transformer.score_mode``): sets its colours.
    score_mode: str = "full"
    #: Colours of the stages' hand-offs and token return (``stage_colors``), besides the layer's.
    stage_colors: int = 0

    def colors(self, ty: TreeChoice, tx: TreeChoice) -> int:
        """Colours per PE of the decode program under these trees (``decode_colors``)."""
        return decode_colors(ty.k, tx.k, self.grid, self.score_mode, self.stage_colors)

    def local(self) -> float:
        return self._local

    @functools.cached_property
    def x_groups0(self) -> int | None:
        """The X tree's level-0 group count when the program fixes it (the KV groups), else None."""
        for _, r in self._items["x"]:
            if r.groups0 is not None and r.groups0 > 1:
                return min(r.groups0, r.n_ax)
        return None

    @functools.cached_property
    def _local(self) -> float:
        return (sum(n * local_cycles(list(st)) for n, st in self.layer_groups)
                + local_cycles(list(self.extras)) + self.handoff_cycles)

    @functools.cached_property
    def _items(self) -> dict[str, tuple[tuple[float, Reduction], ...]]:
        """Per tree axis ("y"; "x" with the per-group score allreduce): every distinct reduction
        (its op name aside) with how often a token runs it (layers times occurrences, 1 for the
        extras), in step order of first appearance."""
        out = {}
        for axis, axes in (("y", ("y",)), ("x", ("x", "group"))):
            weights: dict[Reduction, float] = {}
            for n, steps in (*self.layer_groups, (1, self.extras)):
                for r in steps:
                    if isinstance(r, Reduction) and r.axis in axes and r.n_ax > 1 and r.payload > 0:
                        key = Reduction("", r.axis, r.n_ax, r.payload, r.dtype, r.broadcast, r.combine, r.groups0,
                                        late=r.late)
                        weights[key] = weights.get(key, 0) + n * r.repeat
            out[axis] = tuple((w, r) for r, w in weights.items())
        return out

    def axis(self, spec: HardwareSpec, axis: str, tree: TreeChoice, limit: float = math.inf) -> float:
        """Cycles of one axis's reductions under ``tree``: each distinct reduction priced exactly
        (``plmr.transformer.reduction_cycles``, memoised in ``prices``) times how often it runs.
        Every term is >= 0, so once a partial sum exceeds ``limit`` the result is ``inf`` (the
        caller's test ``cycles < limit`` is decided)."""
        key = (axis, tree)
        known = self._axis_memo.get(key)
        if known is not None:
            return known if known <= limit else math.inf
        memo = self.prices if spec is self.spec else {}
        total = 0.0
        for w, r in self._items[axis]:
            args = line_tree_args(r, tree)
            c = memo.get(args)
            if c is None:
                c = memo[args] = reduction_cycles(spec, args)
            total += w * c
            if total > limit:
                return math.inf
        self._axis_memo[key] = total
        return total

    @functools.cached_property
    def _axis_memo(self) -> dict:
        return {}

    def total(self, spec: HardwareSpec, ty: TreeChoice, tx: TreeChoice) -> float:
        return self.local() + self.axis(spec, "y", ty) + self.axis(spec, "x", tx)

    def breakdown(self, spec: HardwareSpec, ty: TreeChoice, tx: TreeChoice) -> tuple[float, dict]:
        """(cycles of one layer at the longest context, per-token cycles by part); part names are
        the same for both methods: ``layers.<op>`` summed over the layers, then the extras."""
        parts: dict[str, float] = {}
        per_layer = 0.0
        for n, st in self.layer_groups:
            layer = compose(spec, list(st), ty, tx, "decode_layer")
            per_layer = max(per_layer, layer.total_cycles)
            for k, v in layer.parts.items():
                parts[f"layers.{k}"] = parts.get(f"layers.{k}", 0.0) + n * v
        extras = compose(spec, list(self.extras), ty, tx, "extras")
        for name in ("embedding", "final_norm", "lm_head", "argmax"):
            parts[name] = extras.parts.get(name, 0.0)
        parts["handoffs"] = self.handoff_cycles + extras.parts.get("handoffs", 0.0)
        parts["token_return"] = extras.parts.get("token_return", 0.0)
        return per_layer, parts


def decode_terms(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None,
                 prices: dict | None = None) -> DecodeTerms:
    """The decode step on ``grid`` with its reductions symbolic; ``prices``: a memo of exact
    reduction prices to share with other grids of the same hardware (see ``DecodeTerms.prices``)."""
    spec, B, dt = req.hardware, req.batch, req.dtype
    prices = {} if prices is None else prices
    p_y, p_x = grid
    if req.method == "paper":
        dims = paper_dims(model, grid)
        ctx = round_up(req.decode_context, paper_side(grid))
        steps = tuple(decode_steps(spec, dims, p_y, p_x, ctx, dt, B))
        return DecodeTerms(grid, ((model.num_layers, steps),), (), 0.0, _no_handoff(), model.num_layers, spec, prices,
                           score_mode(dims, p_x))
    if placement is not None and placement.packed:
        return packed_terms(model, req, grid, placement, prices)
    dims = model_dims(model)
    contexts = layer_contexts(model, req.decode_context)
    chunk = placement.score_chunk if placement is not None else SCORE_CHUNK
    groups = _layer_groups(model, req, grid, contexts, chunk)
    bounds = _boundaries(model, req, grid, placement)
    handoff = decode_handoff(model, req, grid, placement, bounds)
    extras = _extras(model, req, grid) + handoff_steps(model, req, grid, placement, bounds=bounds)
    return DecodeTerms(grid, groups, extras, handoff["decode_cycles"], handoff, model.num_layers,
                       spec, prices, score_mode(dims, p_x), stage_colors(spec, placement))


def _layer_groups(model: Any, req: PlanRequest, grid: tuple[int, int], contexts: Any,
                  chunk: int = SCORE_CHUNK) -> tuple:
    """(number of layers, decode steps) per distinct context of ``contexts``, longest first; the
    attention in chunks of ``chunk`` entries (the placement's, ``attention_chunk``)."""
    dims = model_dims(model)
    return tuple((contexts.count(c), tuple(decode_steps(req.hardware, dims, grid[0], grid[1], c, req.dtype,
                                                        req.batch, chunk)))
                 for c in sorted(set(contexts), reverse=True))


def _x_groups0(model: Any, p_x: int) -> int | None:
    """The X tree's level-0 group count when the decode program fixes it (the KV groups), else None."""
    dims = model_dims(model)
    return dims.num_kv_heads if score_mode(dims, p_x) == "groups" else None


def _extras_split(model: Any, req: PlanRequest, grid: tuple[int, int]) -> tuple[tuple, tuple]:
    """(first stage's, last stage's) work besides the layers on a region of ``grid``, as the decode
    program runs it (``meshgemm.decode_program._Code.embed`` and ``head``): the next token's
    embedding row (one copy or zeroing, then a sum along X); the final RMSNorm (its own one-value
    allreduce along Y), the LM head (a local GEMV into fp32 partials, their allreduce along Y, every
    row keeping the logits), the logits rounded and each column's argmax (scalar code), then an
    argmax allreduce along X of one (value, index) pair."""
    spec, B, dt = req.hardware, req.batch, req.dtype
    p_y, p_x = grid
    E_y = ceil_div(model.hidden_size, p_y)
    V_x = ceil_div(model.vocab_size, p_x)
    xg = _x_groups0(model, p_x)
    acc = "fp32"

    def times_b(step: CostBreakdown) -> CostBreakdown:
        return step.scaled(B) if B > 1 else step

    norm_before, norm_after = D.final_norm_local(spec, E_y, dt)
    tied = E_y if getattr(model, "tie_word_embeddings", False) else 0
    first = (times_b(D.embedding_local(spec, E_y, dt)), Reduction("embedding", "x", p_x, B * E_y, dt, groups0=xg))
    last = (times_b(norm_before), Reduction("final_norm", "y", p_y, B, acc), times_b(norm_after),
            times_b(D.lm_head_local(spec, E_y, V_x, dt, tied)), Reduction("lm_head", "y", p_y, B * V_x, acc),
            times_b(D.argmax_local(spec, V_x, dt)),
            Reduction("argmax", "x", p_x, 2 * B, acc, combine="argmax", groups0=xg))
    return first, last


def _extras(model: Any, req: PlanRequest, grid: tuple[int, int]) -> tuple:
    """The work besides the layers on a region of ``grid`` (``_extras_split``), in program order."""
    first, last = _extras_split(model, req, grid)
    return last + first


class PackedTerms:
    """The decode step of a packed placement: stages on full P_y × P_x regions and on strips of P_y × s.

    Every stage has P_y rows, so the Y tree is one (priced over the reductions of both widths together,
    ``merged``); each width runs its own X tree (``main`` and ``strip`` hold the layers, embedding and
    head placed on regions of that width, each priced with its own tree). The tree-free work and the
    hand-offs are ``merged.local()``."""

    def __init__(self, grid: tuple[int, int], main: DecodeTerms, strip: DecodeTerms, merged: DecodeTerms):
        self.grid, self.main, self.strip, self.merged = grid, main, strip, merged
        self.strip_grid = strip.grid
        self.handoff = merged.handoff
        self.stage_colors = merged.stage_colors
        self.prices = merged.prices
        self.spec = merged.spec

    def colors(self, ty: TreeChoice, tx: TreeChoice, tx_strip: TreeChoice | None = None) -> int:
        """Colours per PE: the program allocates the Y tree's, the most X-tree slots of any width, the
        KV shift's and the stages' (``decode_colors`` at each width, the larger)."""
        ts = tx_strip or TreeChoice(1, ())
        return max(self.main.colors(ty, tx), self.strip.colors(ty, ts))

    def total(self, spec: HardwareSpec, ty: TreeChoice, tx: TreeChoice, tx_strip: TreeChoice) -> float:
        return (self.merged.local() + self.merged.axis(spec, "y", ty) + self.main.axis(spec, "x", tx)
                + self.strip.axis(spec, "x", tx_strip))

    def breakdown(self, spec: HardwareSpec, ty: TreeChoice, tx: TreeChoice,
                  tx_strip: TreeChoice) -> tuple[float, dict]:
        """As ``DecodeTerms.breakdown``, the parts of both widths added (one layer: the slower width's)."""
        a_layer, parts = self.main.breakdown(spec, ty, tx)
        b_layer, b_parts = self.strip.breakdown(spec, ty, tx_strip)
        for k, v in b_parts.items():
            parts[k] = parts.get(k, 0.0) + v
        return max(a_layer, b_layer), parts


def packed_terms(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement,
                 prices: dict | None = None) -> PackedTerms:
    """``PackedTerms`` of a packed placement: each stage's layers and extras on the terms of its width."""
    spec = req.hardware
    prices = {} if prices is None else prices
    dims = model_dims(model)
    strip = (grid[0], placement.strip_width)
    contexts = layer_contexts(model, req.decode_context)
    st = placement.stages
    bounds = _boundaries(model, req, grid, placement)
    handoff = decode_handoff(model, req, grid, placement, bounds)
    colours = stage_colors(spec, placement)
    parts = {}
    for g in (grid, strip):
        ctx = [contexts[i] for s in st if tuple(s.grid) == g for i in range(s.layers[0], s.layers[1] + 1)]
        first, last = _extras_split(model, req, g)
        extras = ((last if tuple(st[-1].grid) == g else ()) + (first if tuple(st[0].grid) == g else ())
                  + handoff_steps(model, req, grid, placement, g[1], bounds))
        parts[g] = (_layer_groups(model, req, g, ctx, placement.score_chunk), extras)
    terms = {g: DecodeTerms(g, parts[g][0], parts[g][1], 0.0, handoff, model.num_layers, spec, prices,
                            score_mode(dims, g[1]), colours) for g in (grid, strip)}
    main = replace(terms[grid], handoff_cycles=handoff["decode_cycles"])
    merged = DecodeTerms(grid, parts[grid][0] + parts[strip][0], parts[grid][1] + parts[strip][1],
                         handoff["decode_cycles"], handoff, model.num_layers, spec, prices,
                         score_mode(dims, grid[1]), colours)
    return PackedTerms(grid, main, terms[strip], merged)


def _no_handoff() -> dict:
    return {"decode_cycles": 0.0, "decode_on_wafer_cycles": 0.0, "decode_between_wafers_cycles": 0.0,
            "boundaries_on_wafer": 0, "boundaries_between_wafers": 0,
            "decode_per_wafer_boundary_cycles": 0.0, "prefill_per_wafer_boundary_cycles": 0.0}


def system_hop_cycles(spec: HardwareSpec, nbytes: int) -> float:
    """One hand-off between two systems: the assumed per-hop latency plus the bytes over the
    system I/O bandwidth (multi-system.md), in cycles of this clock."""
    seconds = spec.system_hop_latency_us * 1e-6 + nbytes * 8 / (spec.system_io_gbps * 1e9)
    return seconds * spec.clock_hz


def edge_hops(spec: HardwareSpec, grid: tuple[int, int], origin: tuple[int, int]) -> int:
    """On-wafer hops from the far side of a region to the nearest wafer edge (the system I/O sits
    at the edge, hardware-and-csl.md §4)."""
    p_y, p_x = grid
    y, x = origin
    to_edge = min(y, x, spec.mesh_height - (y + p_y), spec.mesh_width - (x + p_x))
    return max(0, to_edge) + max(p_y, p_x)


@dataclass(frozen=True)
class Boundary:
    """One hand-off between consecutive stages as the decode program runs it
    (``meshgemm.decode_program._Code.handoff_in``/``handoff_out``): the cycles no tree choice changes
    (``message_cycles``: the segments' travel, the landing copies; between wafers the system link too)
    and the receiving region's reductions (``landing``, priced under the searched trees)."""

    between_wafers: bool
    width: int  # columns of the receiving region
    message_cycles: float
    landing: tuple  # Reductions on the receiving region


def _boundaries(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None) -> tuple:
    """Every hand-off of ``placement`` (``Boundary``). Side by side (east or west), each row's edge PE
    sends its segment to the receiving region's landing column (east: its first column, one hop;
    west: the first column of its last X level-0 group), then a sum along X gives every PE of the row
    the segment. Going south, row r's segment runs down column r mod o of the o columns both regions
    span and lands on the receiving region's row P_y − 1 − ⌊r/o⌋: round 0's first segment crosses
    2·P_y − 1 rows; each of the ⌈P_y/o⌉ rounds is a sum along Y of the padded segment (one row holds
    it, the others zeros) and a copy by the row it belongs to; then a sum along X. Between wafers the
    vector leaves through the edge (on-wafer hops), crosses the system link, and lands as side by side."""
    spec, B, dt = req.hardware, req.batch, req.dtype
    p_y, p_x = grid
    E_y = ceil_div(model.hidden_size, p_y)
    if placement is None:
        return ()
    vec_bytes = B * model.hidden_size * _dtype_bytes(req)
    copy = D.t_op(spec, B * E_y, "mov", dt)
    out = []
    st = placement.stages
    for a, b in zip(st, st[1:]):
        ga, gb = _stage_grid(a, grid), _stage_grid(b, grid)
        wb = gb[1]
        xg = _x_groups0(model, wb)
        across = Reduction("handoffs", "x", wb, B * E_y, dt, groups0=xg)  # every PE of the row after the rounds
        if a.wafer != b.wafer:
            hops = edge_hops(spec, ga, a.origin) + edge_hops(spec, gb, b.origin)
            cost = system_hop_cycles(spec, vec_bytes) + message(spec, B * E_y, hops, 0, dt).total_cycles
            out.append(Boundary(True, wb, cost, (replace(across, late=0),)))
        elif a.origin[0] == b.origin[0]:
            west = b.origin[1] < a.origin[1]
            hops = 1
            if west and xg is not None and xg > 1:  # into the last X group (tree-dependent otherwise: 1 hop)
                hops = balanced_split(wb, min(xg, wb))[-1]
            out.append(Boundary(False, wb, message(spec, B * E_y, hops, 0, dt).total_cycles,
                                (replace(across, late=LAST_GROUP if west else 0),)))
        else:
            rounds = handoff_rounds(a, b)
            hops = b.origin[0] + p_y - 1 - a.origin[0]
            n_w = math.ceil(B * E_y / spec.elements_per_wavelet(dt))
            cost = (message(spec, B * E_y, hops, 0, dt).total_cycles + (rounds - 1) * (spec.op_issue_cycles + n_w)
                    + rounds * copy)
            # round 0 lands on the bottom row while the other rows wait in its sum; later rounds start together
            down = (Reduction("handoffs", "y", p_y, B * E_y, dt, late=p_y - 1),)
            if rounds > 1:
                down += (Reduction("handoffs", "y", p_y, B * E_y, dt, repeat=rounds - 1),)
            out.append(Boundary(False, wb, cost, down + (across,)))
    return tuple(out)


def token_return_steps(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None) -> tuple:
    """With several stages the last returns the token to the first (``_Code.token_out``/``token_in``):
    one wavelet from its bottom-left PE to the first stage's (along the bottom row, then the column),
    then a sum along X and one along Y of that one value give every PE of the first stage the token."""
    if placement is None or len(placement.stages) <= 1:
        return ()
    spec, B = req.hardware, req.batch
    first, last = placement.stages[0], placement.stages[-1]
    gf, gl = _stage_grid(first, grid), _stage_grid(last, grid)
    if first.wafer == last.wafer:
        hops = abs(last.origin[0] + gl[0] - first.origin[0] - gf[0]) + abs(last.origin[1] - first.origin[1])
        msg = message(spec, B, hops, 0, "fp32").total_cycles
    else:
        hops = edge_hops(spec, gl, last.origin) + edge_hops(spec, gf, first.origin)
        msg = system_hop_cycles(spec, 4 * B) + message(spec, B, hops, 0, "fp32").total_cycles
    # it lands on the bottom row's first PE, while every other PE waits in the sums (the other rows'
    # sums along X are over zeros, done long before)
    return (CostBreakdown(op="token_return", compute_cycles=0.0, comm_cycles=msg, total_cycles=msg),
            Reduction("token_return", "x", gf[1], B, "fp32", groups0=_x_groups0(model, gf[1]), late=0),
            Reduction("token_return", "y", gf[0], B, "fp32", late=gf[0] - 1))


def handoff_steps(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None,
                  width: int | None = None, bounds: tuple | None = None) -> tuple:
    """The decode step's symbolic work for the hand-offs and the token return: every boundary's
    landing reductions and the token's return (``token_return_steps``); with ``width``, only those on
    regions of that many columns (a packed placement prices each width's X tree apart). ``bounds``: the
    placement's ``_boundaries`` when the caller has them."""
    steps: list = []
    for bd in _boundaries(model, req, grid, placement) if bounds is None else bounds:
        if width is None or bd.width == width:
            steps.extend(bd.landing)
    tr = token_return_steps(model, req, grid, placement)
    if tr and (width is None or _stage_grid(placement.stages[0], grid)[1] == width):
        steps.extend(tr)
    return tuple(steps)


def decode_handoff(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None,
                   bounds: tuple | None = None) -> dict:
    """Per-token hand-offs between consecutive stages (method §9): the cycles no tree choice changes
    (``Boundary.message_cycles``); the landing reductions are priced with the trees
    (``handoff_steps``, ``priced_handoff``). ``bounds``: the placement's ``_boundaries`` when known."""
    out = _no_handoff()
    if placement is None:
        return out
    prompt_bytes = req.input_len * model.hidden_size * _dtype_bytes(req)
    for bd in _boundaries(model, req, grid, placement) if bounds is None else bounds:
        if bd.between_wafers:
            out["boundaries_between_wafers"] += 1
            out["decode_between_wafers_cycles"] += bd.message_cycles
            out["decode_per_wafer_boundary_cycles"] = bd.message_cycles
            out["prefill_per_wafer_boundary_cycles"] = system_hop_cycles(req.hardware, prompt_bytes)
        else:
            out["boundaries_on_wafer"] += 1
            out["decode_on_wafer_cycles"] += bd.message_cycles
    out["decode_cycles"] = out["decode_on_wafer_cycles"] + out["decode_between_wafers_cycles"]
    return out


def priced_handoff(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None,
                   tree_y: TreeChoice, tree_x: TreeChoice, tree_x_strip: TreeChoice | None = None) -> dict:
    """``decode_handoff`` with each boundary's landing reductions priced under the chosen trees (the X
    tree of a packed placement's strips for landings on a strip)."""
    bounds = _boundaries(model, req, grid, placement)
    out = decode_handoff(model, req, grid, placement, bounds)
    spec = req.hardware
    for bd in bounds:
        tx = tree_x_strip if (tree_x_strip is not None and bd.width != grid[1]) else tree_x
        land = sum(r.repeat * price_reduction(spec, r, tree_y if r.axis == "y" else tx) for r in bd.landing)
        if bd.between_wafers:
            out["decode_between_wafers_cycles"] += land
            out["decode_per_wafer_boundary_cycles"] = bd.message_cycles + land
        else:
            out["decode_on_wafer_cycles"] += land
    out["decode_cycles"] = out["decode_on_wafer_cycles"] + out["decode_between_wafers_cycles"]
    return out


def _stage_grid(stage: Any, grid: tuple[int, int]) -> tuple[int, int]:
    return tuple(stage.grid) if stage.grid[0] else grid


# ------------------------------------------------------------------------------------------------
# Placement per method
# ------------------------------------------------------------------------------------------------

def _wafer_count(req: PlanRequest) -> int:
    return req.wafers if isinstance(req.wafers, int) else 1


def real_placement(model: Any, req: PlanRequest, grid: tuple[int, int], context: int | None = None,
                   batch: int | None = None, what: str = "", detail: bool = True) -> Placement:
    """The real model (every layer, embedding, LM head, KV at ``context``) on ``grid`` regions
    (``detail``: see ``place_layers``)."""
    ctx = req.decode_context if context is None else context
    b = req.batch if batch is None else batch
    tokens = layer_contexts(model, ctx)
    return place_layers(req.hardware, model_dims(model), tokens, model.vocab_size,
                        model.tie_word_embeddings, grid, req.dtype, b, _wafer_count(req), what=what, detail=detail,
                        charge=decode_charge(model, req, grid, tokens, b))


def decode_charge(model: Any, req: PlanRequest, grid: tuple[int, int], tokens: tuple[int, ...],
                  batch: int, chunk: int | None = None) -> ProgramCharge:
    """What the decode program allocates per PE on ``grid`` regions (``plmr.decode_memory``, the table it
    allocates from): each layer's blocks at the largest column's size and K|V ring buffers of
    ⌈tokens/P_y⌉ entries at the longest layer's cache (the program's one capacity), its vectors (the
    scores of one attention chunk: ``chunk``, by default ``attention_chunk``), the embedding table on
    the first stage, the LM head (tied: the table again), final norm and logits on the last, and the
    code bound when charged. A batch of requests holds one KV cache and one set of working vectors each
    (the program runs one request; the planner's batch is an estimate)."""
    p_y, p_x = grid
    cap = max(1, ceil_div(max(tokens, default=1), p_y))
    if chunk is None:
        chunk = attention_chunk(model, req, grid, tokens, batch)
    return _decode_charge(_decode_model(model), p_y, p_x, cap, req.dtype, batch, decode_program_bytes(req), chunk)


@functools.lru_cache(maxsize=64)
def _decode_model(model: Any) -> DecodeModel:
    """``DecodeModel.of`` once per model (the search charges thousands of placements)."""
    return DecodeModel.of(model)


def attention_chunk(model: Any, req: PlanRequest, grid: tuple[int, int], tokens: tuple[int, ...],
                    batch: int) -> int:
    """The decode program's attention chunk on ``grid`` regions (``DecodeConfig.score_chunk``, cached
    entries per chunk, at most the ring's capacity): the whole ring, one chunk per row (a plain softmax:
    no rescaling, no second max along Y), when the aligned regions hold the model with the scores of
    every cached entry; else the largest of ``plmr.decode_memory.SCORE_CHUNKS`` with which they do
    (fewer chunks, fewer cycles); the smallest when none does (the placement then reports the
    shortfall)."""
    cap = max(1, ceil_div(max(tokens, default=1), grid[0]))
    ladder = [cap] + [c for c in SCORE_CHUNKS if c < cap]
    mod, code = _decode_model(model), decode_program_bytes(req)

    def fits(i: int) -> bool:
        charge = _decode_charge(mod, grid[0], grid[1], cap, req.dtype, batch, code, ladder[i])
        return _fits_or_none(lambda: place_layers(req.hardware, model_dims(model), tokens, model.vocab_size,
                                                  model.tie_word_embeddings, grid, req.dtype, batch,
                                                  _wafer_count(req), detail=False, charge=charge)) is not None

    # a smaller chunk never needs more bytes: the whole ring first (the plans' case), then the smallest
    # (a context beyond the placed one), then a bisection for the largest that fits
    if len(ladder) == 1 or fits(0):
        return ladder[0]
    lo, hi = 1, len(ladder) - 1
    if not fits(hi):
        return ladder[hi]
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return ladder[lo]


@functools.lru_cache(maxsize=1 << 14)
def _decode_charge(mod: DecodeModel, p_y: int, p_x: int, cap: int, dtype: str, batch: int,
                   code: int, chunk: int = SCORE_CHUNK) -> ProgramCharge:
    w, kv = decode_layer_bytes(mod, p_y, p_x, cap, dtype, chunk)
    fixed = decode_fixed_bytes(mod, p_y, p_x, cap, dtype, chunk)
    return ProgramCharge((w, batch * kv), batch * fixed["buffers"] + code, fixed["first"], fixed["last"],
                         fixed["both"], chunk)


def decode_program_bytes(req: PlanRequest) -> int:
    """Bytes per PE the decode program adds beside its blocks and vectors: its code and variables
    (``plmr.program_code.DECODE_CODE``) when the request charges the programs' memory, else 0."""
    return DECODE_CODE.bytes(req.hardware) if req.program_memory else 0


def prefill_program_bytes(model: Any, req: PlanRequest, grid: tuple[int, int],
                          chunks: int = 1) -> tuple[int, tuple[int, int]]:
    """(bytes per PE besides the layers, (weight bytes, KV bytes) per resident layer) of the prefill
    program on ``grid`` (``plmr.prefill_memory``, the table the program allocates from, and the
    code bound ``plmr.program_code.PREFILL_CODE``). The program is built for one chunk of
    ⌈L/chunks⌉ tokens; each layer's K|V block is charged at the whole prompt (a chunk attends to
    every key before it)."""
    p_y, p_x = grid
    mod = PrefillModel.of(model)
    tokens = ceil_div(req.input_len, chunks)
    b = _dtype_bytes(req)
    fixed = prefill_data_bytes(mod, p_y, p_x, tokens, 0, req.dtype) + PREFILL_CODE.bytes(req.hardware)
    layer = prefill_layer_bytes(mod, p_y, p_x, tokens, req.dtype)
    kv_chunk = kv_block(prefill_tiles(mod, p_y, p_x, tokens)) * b
    kv_full = kv_block(prefill_tiles(mod, p_y, p_x, req.input_len)) * b
    return fixed, (layer - kv_chunk, kv_full)


def _fits_or_none(fn: Callable[[], Placement]) -> Placement | None:
    try:
        p = fn()
    except InputError:
        return None
    return p if p.fits else None


# ------------------------------------------------------------------------------------------------
# Candidates and the search
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One evaluated grid: its cost and what was chosen on it."""

    grid: tuple[int, int]
    cycles: float
    tree_y: TreeChoice = TreeChoice(1, ())
    tree_x: TreeChoice = TreeChoice(1, ())
    placement: Placement | None = None
    terms: Any = None
    tree_x_strip: TreeChoice | None = None  # a packed placement's strips' X tree

    @property
    def key(self) -> tuple[float, int]:
        """Objective: fewest cycles, ties to fewer PEs (method §9)."""
        return self.cycles, self.grid[0] * self.grid[1]


def _ks(req: PlanRequest, axis: str, n: int) -> tuple[int, ...]:
    """K searched on a line of ``n`` PEs along ``axis``: the trees the decode program runs there
    (``plmr.transformer.decode_tree_ks``), or the forced K (``_validate`` checked that it is one)."""
    ks = decode_tree_ks(req.hardware, axis, n)
    if req.k_tree is None:
        return ks
    # a line too short for the forced K's levels (tree_for lowers K there) runs one chain
    return (req.k_tree,) if req.k_tree in ks and tree_for(n, req.k_tree).k == req.k_tree else (1,)


def _program_trees(terms: "DecodeTerms", ty: TreeChoice, tx: TreeChoice) -> tuple[TreeChoice, TreeChoice]:
    """The trees the program runs: an X tree whose level 0 the KV groups fix ("groups" score mode) is
    K = 2 over those groups whatever tree its (then tree-free) prices were looked up with; a K = 2
    tree of one level-0 group is the one chain (K = 1) it is priced as."""
    def one_group_is_a_chain(t: TreeChoice) -> TreeChoice:  # priced alike; the program builds one chain
        return TreeChoice(1, ()) if t.k == 2 and t.group_counts and t.group_counts[0] <= 1 else t

    g0 = terms.x_groups0
    return one_group_is_a_chain(ty), one_group_is_a_chain(tx if g0 is None else TreeChoice(2, (g0,)))


def best_trees(spec: HardwareSpec, terms: DecodeTerms, req: PlanRequest) -> tuple[TreeChoice, TreeChoice, float]:
    """K and level-1 groups per axis minimising the step, under the colour budget. The cost is a
    sum of a Y part, an X part and a tree-free part, so each axis is minimised per K, then the
    best (K_y, K_x) pair that fits the routable colours is taken."""
    if isinstance(terms, PackedTerms):
        raise TypeError("best_trees: a packed placement's trees come from best_packed_trees")
    p_y, p_x = terms.grid
    budget = len(spec.routable_colors)
    if req.method == "paper" and req.k_tree is None:
        ty, tx = _program_trees(terms, *default_trees(req, terms.grid))
        return ty, tx, terms.total(spec, ty, tx)
    (cy, ty), (cx, tx) = best_axis_tree(spec, terms, "y", req), best_axis_tree(spec, terms, "x", req)
    if req.k_tree is not None or terms.colors(ty, tx) <= budget:
        return (*_program_trees(terms, ty, tx), terms.local() + (cy + cx))
    # The colours bind: the best tree of every K on each axis, then the best pair that fits.
    best_per_k: dict[str, dict[int, tuple[float, TreeChoice]]] = {"y": {}, "x": {}}
    for axis, n in (("y", p_y), ("x", p_x)):
        per_k = best_per_k[axis]
        for t in _tree_space(n, _ks(req, axis, n)):
            known = per_k.get(t.k)
            c = terms.axis(spec, axis, t, known[0] if known else math.inf)
            if known is None or c < known[0]:
                per_k[t.k] = (c, t)
    pair = None
    for ky, (cy, ty) in best_per_k["y"].items():
        for kx, (cx, tx) in best_per_k["x"].items():
            if decode_colors(ky, kx, terms.grid, terms.score_mode, terms.stage_colors) > budget:
                continue
            if pair is None or cy + cx < pair[0]:
                pair = (cy + cx, ty, tx)
    if pair is None:
        raise InputError(f"no K-tree pair fits the {budget} routable colours of {spec.name} "
                         f"({terms.stage_colors} of them taken by the stages' hand-offs and token return)")
    return (*_program_trees(terms, pair[1], pair[2]), terms.local() + pair[0])


def best_packed_trees(spec: HardwareSpec, terms: PackedTerms,
                      req: PlanRequest) -> tuple[TreeChoice, TreeChoice, TreeChoice, float] | None:
    """(Y tree, full regions' X tree, strips' X tree, cycles) of a packed placement: the cost is a sum of
    a Y part over both widths, an X part per width and a tree-free part, so each is minimised alone
    (``best_axis_tree``); None when that choice does not fit the routable colours (the search then
    leaves the packed placement of this grid out)."""
    cy, ty = best_axis_tree(spec, terms.merged, "y", req)
    cx, tx = best_axis_tree(spec, terms.main, "x", req)
    cs, ts = best_axis_tree(spec, terms.strip, "x", req)
    ty, tx = _program_trees(terms.main, ty, tx)
    ts = _program_trees(terms.strip, ty, ts)[1]
    if terms.colors(ty, tx, ts) > len(spec.routable_colors):
        return None
    return ty, tx, ts, terms.merged.local() + (cy + cx + cs)


def best_axis_tree(spec: HardwareSpec, terms: DecodeTerms, axis: str, req: PlanRequest,
                   ks: tuple[int, ...] | None = None) -> tuple[float, TreeChoice]:
    """The tree of the tree space (K in ``ks``, default every K searched) with the fewest cycles
    on one axis, every tree priced exactly; ties go to the first in the space (the smallest K).
    The best tree of the last grid with this axis length is priced first; every other tree is
    first bounded by ``_TreeRow.floor`` and priced only when that floor is below the best so far,
    and dropped as soon as its partial sum exceeds it (exact: every term is >= 0). The sum is the
    one ``DecodeTerms.axis`` adds (same terms, same order)."""
    n = terms.grid[0] if axis == "y" else terms.grid[1]
    ks = ks or _ks(req, axis, n)
    space = _tree_space(n, ks)
    prices = terms.prices if spec is terms.spec else {}  # the memo holds prices for terms.spec
    rows = [(w, _tree_row(prices, r, ks, space)) for w, r in terms._items[axis]]
    if all(row.tree_free for _, row in rows):
        return _row_sum(spec, rows, 0, math.inf), space[0]
    hints = prices.setdefault("hint", {})
    best_i = hints.get((axis, n, ks), 0)
    best_c = _row_sum(spec, rows, best_i, math.inf)
    by_payload = sorted(rows, key=lambda wr: wr[1].payload)
    for i in range(len(space)):
        if i == best_i or _tree_floor(spec, rows, by_payload, i, best_c) > best_c:
            continue
        c = _row_sum(spec, rows, i, best_c)
        if c < best_c or (c == best_c and i < best_i):
            best_c, best_i = c, i
    hints[(axis, n, ks)] = best_i
    return best_c, space[best_i]


def _tree_floor(spec: HardwareSpec, rows: list, by_payload: list, i: int, limit: float = -math.inf) -> float:
    """A lower bound of ``_row_sum(rows, i)``: known prices, and ``_TreeRow.floor`` for the others.
    While the bound is at most ``limit``, the unpriced row of the smallest payload is priced and
    the bound taken again (a price at a small payload is a floor for the larger payloads of its
    kind), so that a tree that cannot win is dropped after a price or two."""
    while True:
        floor, todo = 0.0, None
        for w, row in rows:
            c = row.prices[i]
            floor += w * (c if c is not None else row.floor(i))
            if floor > limit:  # every term is >= 0: the whole sum exceeds it too
                return floor
        for _, row in by_payload:
            if row.prices[i] is None:
                todo = row
                break
        if todo is None:
            return floor
        todo.price(spec, i)


class _TreeRow:
    """One reduction (its op name aside) on one axis: its ``line_tree_args`` and its exact price
    under each tree of the axis's tree space, priced on demand and shared by every grid of a search
    that runs the same reduction (``DecodeTerms.prices``)."""

    __slots__ = ("r", "space", "payload", "prices", "tree_free", "ladder", "memo")

    def __init__(self, r: Reduction, space: tuple[TreeChoice, ...], ladder: dict, memo: dict):
        self.r, self.space = r, space
        self.payload = r.payload
        self.prices: list[float | None] = [None] * len(space)
        # the trees of a space are distinct, so the arguments either follow the tree (and differ between
        # the first and the last) or ignore it (the same for all)
        self.tree_free = len(space) <= 1 or line_tree_args(r, space[0]) == line_tree_args(r, space[-1])
        self.ladder = ladder  # per tree: (payloads, prices) of the rows of this kind priced under it
        self.memo = memo

    def price(self, spec: HardwareSpec, i: int) -> float:
        c = self.prices[i]
        if c is None:
            args = line_tree_args(self.r, self.space[i])
            c = self.memo.get(args)
            if c is None:
                c = self.memo[args] = reduction_cycles(spec, args)
            self.prices[i] = c
            priced = self.ladder.get(i)
            if priced is None:
                priced = self.ladder[i] = ([], [])
            j = bisect.bisect_left(priced[0], self.payload)
            priced[0].insert(j, self.payload)
            priced[1].insert(j, c)
        return c

    def floor(self, i: int) -> float:
        """A lower bound of ``price(i)`` from prices known already: the price under the same tree of
        the largest smaller payload of the same kind priced so far (0 when none is), looked up in the
        ladder's payloads priced under that tree. Valid because a line tree's cycles never fall when its
        payload grows (tests/plmr/test_collectives.py)."""
        priced = self.ladder.get(i)
        if priced is None:
            return 0.0
        j = bisect.bisect_left(priced[0], self.payload)
        return priced[1][j - 1] if j > 0 else 0.0


def _tree_row(prices: dict, r: Reduction, ks: tuple[int, ...], space: tuple[TreeChoice, ...]) -> _TreeRow:
    rows = prices.setdefault("rows", {})
    row = rows.get((r, ks))
    if row is None:
        kind = (replace(r, payload=0), ks)
        ladder = prices.setdefault("ladders", {}).setdefault(kind, {})
        row = rows[(r, ks)] = _TreeRow(r, space, ladder, prices)
    return row


def _row_sum(spec: HardwareSpec, rows: list, i: int, limit: float) -> float:
    """Σ weight × price under tree ``i``, in the order of ``rows``; ``inf`` once it exceeds ``limit``."""
    total = 0.0
    for w, row in rows:
        total += w * row.price(spec, i)
        if total > limit:
            return math.inf
    return total


def decode_floor(spec: HardwareSpec, terms: DecodeTerms, req: PlanRequest) -> float:
    """A lower bound of ``best_trees(...)``'s cycles (trees searched) from what a search has priced
    already: the tree-free part, and per axis the least over its tree space of the prices known
    under each tree plus, for the others, ``_TreeRow.floor`` (0 when nothing is known yet); an
    axis no tree changes is priced exactly (one tree). The colour budget only removes pairs.
    A packed placement's floor adds its Y part and each width's X part (``PackedTerms``)."""
    if isinstance(terms, PackedTerms):
        total = terms.merged.local()
        for t, axis in ((terms.merged, "y"), (terms.main, "x"), (terms.strip, "x")):
            total += _axis_floor(spec, t, req, axis)
        return total * (1 - 1e-12)
    total = terms.local()
    for axis in ("y", "x"):
        total += _axis_floor(spec, terms, req, axis)
    return total * (1 - 1e-12)  # margin: the tuned cost adds the same terms in another order


def _axis_floor(spec: HardwareSpec, terms: DecodeTerms, req: PlanRequest, axis: str) -> float:
    """``decode_floor``'s part of one axis."""
    prices = terms.prices if spec is terms.spec else {}  # the memo holds prices for terms.spec
    n = terms.grid[0] if axis == "y" else terms.grid[1]
    ks = _ks(req, axis, n)
    space = _tree_space(n, ks)
    if not space:  # no tree of the asked K on this side: nothing to bound with (0 is a floor)
        return 0.0
    rows = [(w, _tree_row(prices, r, ks, space)) for w, r in terms._items[axis]]
    if not rows:
        return 0.0
    if all(row.tree_free for _, row in rows):
        return _row_sum(spec, rows, 0, math.inf)
    least = math.inf
    for i in range(len(space)):
        floor = 0.0
        for w, row in rows:
            c = row.prices[i]
            floor += w * (c if c is not None else row.floor(i))
            if floor > least:  # every term is >= 0: this tree cannot be the least
                break
        else:
            least = min(least, floor)
    return least


def default_trees(req: PlanRequest, grid: tuple[int, int]) -> tuple[TreeChoice, TreeChoice]:
    """The trees without a search: the authors' (paper method) or K = 2 (the forced K), each lowered
    to what the decode program runs on that axis of the target."""
    out = []
    for axis, n in (("y", grid[0]), ("x", grid[1])):
        if req.method == "paper" and req.k_tree is None:
            t = paper_tree(n)
        else:
            t = tree_for(n, req.k_tree or 2)
        out.append(t if t.k in decode_tree_ks(req.hardware, axis, n) else TreeChoice(1, ()))
    return out[0], out[1]


def decode_candidate(model: Any, req: PlanRequest, grid: tuple[int, int], forced: bool = False,
                     tune: bool = True) -> Candidate | None:
    """The decode step on one grid (tuned or default K-trees), or None when the real model cannot
    be placed there (an InputError with the binding numbers when the user forced the grid; the
    paper method places one layer and never refuses)."""
    placed = _placed_terms(model, req, grid, forced)
    if placed is None:
        return None
    placement, terms = placed
    if isinstance(terms, PackedTerms):
        return _packed_candidate(req, grid, placement, terms, forced)
    if tune:
        ty, tx, cycles = best_trees(req.hardware, terms, req)
    else:
        ty, tx = _program_trees(terms, *default_trees(req, grid))
        cycles = terms.total(req.hardware, ty, tx)
    return Candidate(grid, cycles, ty, tx, placement, terms)


def _packed_candidate(req: PlanRequest, grid: tuple[int, int], placement: Placement, terms: PackedTerms,
                      forced: bool = False) -> Candidate | None:
    tuned = best_packed_trees(req.hardware, terms, req)
    if tuned is None:
        if forced:
            raise InputError(f"decode: {len(placement.stages)} packed stages of {grid[0]}x{grid[1]} (strips "
                             f"{grid[0]}x{placement.strip_width}) need more than the "
                             f"{len(req.hardware.routable_colors)} routable colours of {req.hardware.name}")
        return None
    ty, tx, ts, cycles = tuned
    return Candidate(grid, cycles, ty, tx, placement, terms, ts)


def packed_placement(model: Any, req: PlanRequest, grid: tuple[int, int], context: int | None = None,
                     batch: int | None = None) -> Placement | None:
    """The real model on the packed regions of ``grid`` (full regions and the strips beside them,
    ``waferllm.placement.place_layers_packed``), or None when they do not hold it. Tried only where the
    aligned regions do not (``decode_placement``): plans that fit the aligned tiling never change."""
    if req.method != "full" or req.hardware.mesh_width % grid[1] == 0:
        return None
    ctx = req.decode_context if context is None else context
    b = req.batch if batch is None else batch
    tokens = layer_contexts(model, ctx)
    widths = (grid[1], req.hardware.mesh_width % grid[1])
    cap = max(1, ceil_div(max(tokens, default=1), grid[0]))
    # one attention chunk for both widths (the program has one): the largest with which they hold the model
    for chunk in [cap] + [c for c in SCORE_CHUNKS if c < cap]:
        try:
            p = place_layers_packed(req.hardware, model_dims(model), tokens, model.vocab_size,
                                    model.tie_word_embeddings, grid, req.dtype, b, _wafer_count(req),
                                    charges={w: decode_charge(model, req, (grid[0], w), tokens, b, chunk)
                                             for w in widths})
        except InputError:
            continue
        if p.fits:
            return p
    return None


def decode_placement(model: Any, req: PlanRequest, grid: tuple[int, int], context: int | None = None,
                     batch: int | None = None) -> Placement | None:
    """The decode placement on ``grid`` that fits: the aligned regions, else the packed ones; None when
    neither holds the model."""
    p = _fits_or_none(lambda: real_placement(model, req, grid, context=context, batch=batch))
    return p if p is not None else packed_placement(model, req, grid, context, batch)


def _placed_terms(model: Any, req: PlanRequest, grid: tuple[int, int], forced: bool = False,
                  prices: dict | None = None, pack: bool = True) -> tuple[Placement | None, DecodeTerms] | None:
    """The real model's placement on ``grid`` (full method: the aligned regions, else the packed ones)
    and the decode step's terms, or None when it cannot be placed (an InputError with the binding
    numbers of the aligned placement when ``forced``)."""
    placement: Placement | None = None
    if req.method == "full":
        why, needed = "", None
        try:
            placement = real_placement(model, req, grid, what="decode" if forced else "", detail=forced)
        except RegionShortage as exc:
            why, placement, needed = str(exc), None, exc.needed
        except InputError:  # a region cannot hold a stage: a narrower strip cannot either
            if forced:
                raise
            return None
        if placement is not None and not placement.fits:
            if placement.bytes_per_pe > placement.capacity_per_pe:
                if forced:
                    raise InputError(stage_fit_message(req.hardware, placement, model.name))
                return None
            why, needed, placement = stage_fit_message(req.hardware, placement, model.name), len(placement.stages), None
        if placement is None and not pack:
            return None
        if placement is None:
            # a strip holds no more layers than a full region: packing needs at least as many regions
            spec = req.hardware
            slots = (spec.mesh_height // grid[0]) * ceil_div(spec.mesh_width, grid[1]) * _wafer_count(req)
            placement = packed_placement(model, req, grid) if needed <= slots else None
            if placement is None:
                if forced:
                    strip = spec.mesh_width % grid[1]
                    raise InputError(why + (f"; the {grid[0]}x{strip} strips beside them ({slots} regions in all) "
                                            f"do not hold it either" if strip else ""))
                return None
    terms = decode_terms(model, req, grid, placement, prices)
    if placement is not None and terms.stage_colors and not isinstance(terms, PackedTerms):
        why = _colour_shortfall(req, terms, placement, model.name)
        if why:
            if forced:
                raise InputError(why)
            return None
    return placement, terms


def _colour_shortfall(req: PlanRequest, terms: DecodeTerms, placement: Placement, name: str) -> str:
    """Why no tree pair of the searched (or forced) K fits the routable colours beside the stages'
    hand-offs and token return; "" when the least colourful pair fits."""
    spec, (p_y, p_x) = req.hardware, terms.grid
    ks_y, ks_x = _ks(req, "y", p_y), _ks(req, "x", p_x)
    k_y = 1 if 1 in ks_y else min((t.k for t in _tree_space(p_y, ks_y)), default=1)
    k_x = 1 if 1 in ks_x else min((t.k for t in _tree_space(p_x, ks_x)), default=1)
    need = decode_colors(k_y, k_x, terms.grid, terms.score_mode, terms.stage_colors)
    budget = len(spec.routable_colors)
    if need <= budget:
        return ""
    rounds, hand, token = handoff_colors(spec, placement)
    layer = need - terms.stage_colors
    return (f"decode: {name} on {len(placement.stages)} stages of {p_y}x{p_x} needs {need} colours per PE "
            f"(layer trees and KV shift {layer} at K_y={k_y}, K_x={k_x}; hand-offs {hand} in {rounds} round"
            f"{'s' if rounds > 1 else ''}; token return {token}), {spec.name} routes {budget}")


#: Prompt chunk counts tried when a whole prompt's activations do not fit a PE.
PREFILL_CHUNKS = (1, 2, 4, 8, 16)


def prefill_cost(model: Any, req: PlanRequest, grid: tuple[int, int], placement: Placement | None,
                 chunks: int = 1) -> tuple[float, float, CostBreakdown]:
    """(cycles per layer, cycles per prompt, layer breakdown). With ``chunks`` > 1 the prompt runs
    in that many chunks, each charged as attending to the whole prompt (an upper bound)."""
    spec = req.hardware
    p_y, p_x = grid
    dims, tokens, keys, n = _prefill_layer_shape(model, req, grid, chunks)
    layer = prefill_layer(spec, dims, p_y, p_x, tokens, TreeChoice(1, ()), req.dtype, keys=keys)
    layer = layer.scaled(n) if n > 1 else layer
    if req.method == "paper":  # one resident layer x the layer count, no hand-offs
        return layer.total_cycles, layer.total_cycles * model.num_layers, layer
    total = layer.total_cycles * model.num_layers
    if placement is not None:
        # Each stage boundary moves the activation block (L × E): on a wafer the region's edge
        # links carry it in parallel; between wafers it crosses the system link.
        L_y = ceil_div(req.input_len, p_y)
        E_x = ceil_div(model.hidden_size, p_x)
        on = message(spec, L_y * E_x, max(p_y, p_x), 0, req.dtype).total_cycles
        block = req.input_len * model.hidden_size * _dtype_bytes(req)
        for a, b in zip(placement.stages, placement.stages[1:]):
            total += on if a.wafer == b.wafer else on + system_hop_cycles(spec, block)
    return layer.total_cycles, total, layer


def prefill_candidate(model: Any, req: PlanRequest, grid: tuple[int, int], forced: bool = False,
                      tune: bool = True) -> Candidate | None:
    """The prefill pass on one grid: the whole prompt when its activations fit beside the real
    model, else the fewest prompt chunks that do (the full method); None when nothing fits."""
    placement, chunks = None, 1
    if req.method == "full":
        placement, chunks = prefill_placement(model, req, grid, forced)
        if placement is None:
            return None
    _, total, _ = prefill_cost(model, req, grid, placement, chunks)
    return Candidate(grid, total, placement=placement, terms=chunks)


def prefill_floor(model: Any, req: PlanRequest, grid: tuple[int, int], chunks: int = 1) -> float:
    """A lower bound of ``prefill_cost(...)[1]``, no hand-offs (none negative), at a fraction of its
    price: the layer program's phases with each MeshGEMM chain at its FMACs alone
    (``prefill_layer_floor``), ~85% of the layer on the grids that win. Both methods price the same
    program; the paper method on the authors' grid, dims and rounded prompt."""
    spec, (p_y, p_x) = req.hardware, grid
    dims, tokens, keys, n = _prefill_layer_shape(model, req, grid, chunks)
    layer = n * prefill_layer_floor(spec, dims, p_y, p_x, tokens, req.dtype, keys=keys)
    return layer * model.num_layers * (1 - 1e-12)  # margin: the layer adds its phases in another order


def _prefill_layer_shape(model: Any, req: PlanRequest, grid: tuple[int, int],
                         chunks: int) -> tuple[LayerDims, int, int | None, int]:
    """The prefill layer both the cost and its floor price: (dims, tokens per chunk, keys each chunk
    attends to or None for its own, chunks). The paper method: the authors' configuration (dims and
    prompt rounded to the grid side, real heads), one chunk; the full method: the model's dims."""
    if req.method == "paper":
        return paper_dims(model, grid, one_head=False), round_up(req.input_len, paper_side(grid)), None, 1
    if chunks > 1:
        return model_dims(model), ceil_div(req.input_len, chunks), req.input_len, chunks
    return model_dims(model), req.input_len, None, 1


def prefill_placement(model: Any, req: PlanRequest, grid: tuple[int, int], forced: bool = False,
                      detail: bool = True) -> tuple[Placement | None, int]:
    """The real model on ``grid`` beside one prefill layer's activations: the fewest prompt chunks
    (``PREFILL_CHUNKS``) whose activations fit, and that placement; (None, 1) when none does (an
    InputError with the binding numbers when ``forced``).

    More chunks never need more bytes (each holds fewer tokens), and a placement that fits with
    fewer spare bytes fits with more: so after the whole prompt (the usual case) the most chunks
    are tried, and if they fit the fewest that do are found by bisection, the same answer as
    trying the counts in order."""
    counts = [c for c in PREFILL_CHUNKS if c <= req.input_len]
    tried: dict[int, tuple[Placement | None, str, float]] = {}

    def attempt(i: int) -> Placement | None:
        chunks = counts[i]
        if chunks not in tried:
            tried[chunks] = _prefill_attempt(model, req, grid, chunks, detail or forced)
        return tried[chunks][0]

    if attempt(0) is not None:
        return tried[counts[0]][0], counts[0]
    if attempt(len(counts) - 1) is None:
        if forced:
            raise InputError(tried[counts[-1]][1] or "prefill: nothing fits")
        return None, 1
    lo, hi = 1, len(counts) - 1  # the fewest chunks that fit lie in counts[lo..hi]; counts[hi] fits
    while lo < hi:
        mid = (lo + hi) // 2
        if attempt(mid) is not None:
            hi = mid
        else:
            lo = mid + 1
    return attempt(hi), counts[hi]


def _prefill_attempt(model: Any, req: PlanRequest, grid: tuple[int, int], chunks: int,
                     detail: bool, keep_unfit: bool = False) -> tuple[Placement | None, str, float]:
    """(the placement when it fits, else None; why not; the bytes the busiest PE would need when no
    stage can be formed, else 0). ``keep_unfit``: the placement also when its stages do not fit the
    wafer (None only when no stage can be formed)."""
    dims = model_dims(model)
    act = prefill_activation_bytes(dims, grid[0], grid[1], ceil_div(req.input_len, chunks), req.dtype,
                                   keys=req.input_len)
    buf, per_layer = prefill_program_bytes(model, req, grid, chunks) if req.program_memory else (None, None)
    try:
        placement = place_layers(req.hardware, dims, (req.input_len,) * model.num_layers, model.vocab_size,
                                 model.tie_word_embeddings, grid, req.dtype, 1, _wafer_count(req), act,
                                 what="prefill", detail=detail, per_layer=per_layer, buffer_bytes=buf)
    except InputError as exc:
        return None, str(exc), getattr(exc, "need", math.inf)
    if placement.fits:
        return placement, "", 0
    return (placement if keep_unfit else None,
            stage_fit_message(req.hardware, placement, model.name, "prefill") if detail else "", 0)


def _ladder(n: int, step: int) -> list[int]:
    """Sides every ``step`` PEs, plus n // k for small k (sides that tile the mesh with the least
    left over, where memory-tight models fit), plus a few tiny sides."""
    tiling = [n // k for k in range(1, 13)]
    return sorted({v for v in [1, 2, 3, 4, 6, 8, *range(step, n + 1, step), *tiling] if 1 <= v <= n})


def _memory_bound_ok(model: Any, req: PlanRequest, grid: tuple[int, int], packed: bool = False) -> bool:
    """A necessary condition, cheap: the model's weights fit the whole regions this shape leaves
    on the wafers (``packed``: with the strips beside them) (the full method only)."""
    if req.method != "full":
        return True
    spec = req.hardware
    if packed:  # the full regions and the strips cover whole bands
        pes = (spec.mesh_height // grid[0]) * grid[0] * spec.mesh_width
    else:
        pes = regions_per_wafer(spec, grid) * grid[0] * grid[1]
    return model.total_params * _dtype_bytes(req) <= pes * _wafer_count(req) * spec.usable_sram_bytes


_UNSCORED = object()


class _Shapes:
    """The shapes one search has visited. On a visit ``bound`` gives a lower bound of the shape's
    cost (None: it cannot hold the model), or the exact candidate itself; the exact candidate of a
    bounded shape is computed only when a ranking needs it, cheapest bound first, so the ranking
    is the one full evaluation would give (ties: fewer PEs, then the earlier visit)."""

    def __init__(self, spec: HardwareSpec, bound: Callable[[tuple[int, int]], Any],
                 exact: Callable[[tuple[int, int]], Candidate | None] | None = None):
        self.height, self.width = spec.mesh_height, spec.mesh_width
        self._bound, self._exact = bound, exact
        self.bounds: dict[tuple[int, int], tuple[float, int] | None] = {}
        self.exact: dict[tuple[int, int], Any] = {}

    def visit(self, grid: tuple[int, int]) -> None:
        if grid in self.bounds or not (1 <= grid[0] <= self.height and 1 <= grid[1] <= self.width):
            return
        b = self._bound(grid)
        if isinstance(b, Candidate) or b is None:
            self.exact[grid] = b
            b = None if b is None else b.cycles
        self.bounds[grid] = None if b is None else (b, len(self.bounds))

    def best(self, k: int = 1, centre: tuple[int, int] | None = None, radius: int = 0) -> list[Candidate]:
        """The ``k`` cheapest visited shapes (within ``radius`` PEs of ``centre`` on both sides)."""
        if centre is None:
            return self.best_of(self.bounds, k)
        if (2 * radius + 1) ** 2 < len(self.bounds):
            cy, cx = centre
            return self.best_of([(y, x) for y in range(cy - radius, cy + radius + 1)
                                 for x in range(cx - radius, cx + radius + 1)], k)
        return self.best_of([g for g in self.bounds
                             if abs(g[0] - centre[0]) <= radius and abs(g[1] - centre[1]) <= radius], k)

    def best_of(self, grids: Any, k: int = 1) -> list[Candidate]:
        """The ``k`` cheapest of ``grids`` (those visited), exact candidates computed as needed."""
        heap = []
        for g in grids:
            b = self.bounds.get(g)
            if b is None:
                continue
            c = self.exact.get(g, _UNSCORED)
            if c is _UNSCORED:
                heap.append((b[0], g[0] * g[1], b[1], g))
            elif c is not None:
                heap.append((c.cycles, g[0] * g[1], b[1], g))
        heapq.heapify(heap)
        out: list[Candidate] = []
        while heap and len(out) < k:
            item = heapq.heappop(heap)
            g = item[3]
            c = self.exact.get(g, _UNSCORED)
            if c is _UNSCORED:
                c = self.exact[g] = self._exact(g)
                if c is not None:
                    heapq.heappush(heap, (c.cycles,) + item[1:])
            else:
                out.append(c)
        return out

    def window(self, centre: tuple[int, int], radius: int) -> None:
        for y in range(centre[0] - radius, centre[0] + radius + 1):
            for x in range(centre[1] - radius, centre[1] + radius + 1):
                self.visit((y, x))


def _ladder_step(spec: HardwareSpec) -> int:
    return max(1, math.ceil(max(spec.mesh_height, spec.mesh_width) / LADDER_POINTS))


def _refine(shapes: _Shapes, seed: tuple[int, int], step: int) -> tuple[int, int]:
    """Pattern search from ``seed``: at steps halving down to one PE, every shape at 0, ±s, ±2s
    rows and columns from the centre is visited and the best shape within ±2s becomes the centre."""
    centre, s = seed, step
    while True:
        s = max(1, s // 2)
        for dy in (-2 * s, -s, 0, s, 2 * s):
            for dx in (-2 * s, -s, 0, s, 2 * s):
                shapes.visit((centre[0] + dy, centre[1] + dx))
        around = shapes.best(1, centre, 2 * s)
        centre = around[0].grid if around else centre
        if s == 1:
            return centre


def search_grid(model: Any, req: PlanRequest, evaluate: Callable[..., Candidate | None],
                memo: dict | None = None) -> Candidate | None:
    """The best decode (``evaluate=decode_candidate``) or prefill (``prefill_candidate``) grid: see
    ``search_decode`` (and its ``memo``) and ``search_prefill``."""
    if evaluate is prefill_candidate:
        return search_prefill(model, req)
    if evaluate is decode_candidate:
        return search_decode(model, req, memo)
    raise ValueError("search_grid: evaluate must be decode_candidate or prefill_candidate")


def _plateau_starts(total: int, lo: int, hi: int) -> set[int]:
    """The sides p in [lo, hi] at which the tile ⌈total/p⌉ steps down: p = ⌈total/e⌉."""
    if total <= 0 or hi < 1:
        return set()
    lo = max(lo, 1)
    starts = (-(-total // e) for e in range(max(1, -(-total // hi)), -(-total // lo) + 1))
    return {p for p in starts if lo <= p <= hi}


def _tile_steps(model: Any, req: PlanRequest, p_y: int, p_x: int, reach: float) -> tuple[set[int], set[int]]:
    """Rows and columns within ``reach`` (a fraction) of (p_y, p_x) at which a decode tile shrinks.

    A decode step's local work depends on the grid only through its tile sizes (E_y and the
    cached tokens per row S_y; the FFN columns F_x and the attention features per column, which
    change at multiples of n_kv), while its reductions grow with the axis lengths. So along a row
    or a column the cost is lowest where a tile has just shrunk, and the best shapes sit at these
    steps, often tens of PEs apart (full method; the paper method's dims follow the grid)."""
    if req.method != "full":
        return set(), set()
    spec = req.hardware
    ylo, yhi = int(p_y * (1 - reach)), min(spec.mesh_height, int(p_y * (1 + reach)) + 1)
    xlo, xhi = int(p_x * (1 - reach)), min(spec.mesh_width, int(p_x * (1 + reach)) + 1)
    ys = _plateau_starts(model.hidden_size, ylo, yhi)
    for c in set(layer_contexts(model, req.decode_context)):
        ys |= _plateau_starts(c, ylo, yhi)
    n_kv = model.num_kv_heads
    xs = _plateau_starts(model.intermediate_size, xlo, xhi) | _plateau_starts(n_kv, xlo, min(xhi, n_kv))
    xs |= {m for m in range(n_kv * max(1, xlo // n_kv), xhi + 1, n_kv) if xlo <= m}
    return ys, xs


def search_decode(model: Any, req: PlanRequest, memo: dict | None = None, pack: bool = False) -> Candidate | None:
    """The decode grid and K-trees. Every shape that fits the mesh is a candidate, and every shape
    the search visits is ranked by its exact cost with its best trees (``best_trees``: each tree
    of the tree space priced by the decode program's line trees, ``DecodeTerms.axis``), so no
    proxy can hide a better shape among those visited.

    A ladder over the mesh (shapes that cannot hold the model pruned by a memory bound first) is
    ranked, and the ``SEEDS`` best are refined down to single-PE steps. Then, around the best
    shape, every shape within ``WINDOW`` PEs, along its row and column within ``LINE`` PEs and at
    the tile steps of its row and column (``_tile_steps``) is visited, again around each new best
    until it stays put. Then every shape at a tile step of both its row and its column within
    ``TILE_CROSS`` is visited (a better shape can sit at steps of both sides at once, which no
    single row or column reaches: llama3-8b on WSE-2, 205×512 against 241×533), and the whole
    again from a new best.

    ``memo`` (a dict) carries costs between searches of one request on more and more wafers: a
    shape that holds the model on n wafers has the same stages, hand-offs and costs on more.

    ``pack``: a shape whose aligned regions do not hold the model may use the strips beside them
    (``packed_placement``); the plan asks for it only when no shape's aligned regions hold the model
    on these wafers (``_plan_on``), so plans that fit the aligned tiling never change."""
    spec = req.hardware
    step = _ladder_step(spec)
    fitted: dict = {} if memo is None else memo.setdefault("fitted", {})
    tunings: dict = {} if memo is None else memo.setdefault("tuned", {})
    prices: dict = {} if memo is None else memo.setdefault("prices", {})

    searched_trees = not (req.method == "paper" and req.k_tree is None)

    # a packed placement holds on its wafer count only (on more, the aligned regions may hold the model)
    packed_fits: dict = fitted.setdefault(("packed", _wafer_count(req)), {})
    packed_tunings: dict = tunings.setdefault(("packed", _wafer_count(req)), {})

    def tuned(grid: tuple[int, int]) -> Candidate | None:
        placed = fitted.get(grid)
        if placed is None:
            placement, terms = packed_fits[grid]
            if grid not in packed_tunings:
                packed_tunings[grid] = _packed_candidate(req, grid, placement, terms)
            return packed_tunings[grid]
        placement, terms = placed
        if grid not in tunings:
            tunings[grid] = best_trees(spec, terms, req)
        ty, tx, cycles = tunings[grid]
        return Candidate(grid, cycles, ty, tx, placement, terms)

    def bound(grid: tuple[int, int]) -> Candidate | float | None:
        """None when the model cannot be placed; else the tuned candidate when it is known (or the
        trees are the authors', not searched), else a lower bound of its cost (``decode_floor``)."""
        placed = fitted.get(grid) or packed_fits.get(grid)
        if placed is None:
            if not _memory_bound_ok(model, req, grid, packed=pack):
                return None
            placed = _placed_terms(model, req, grid, prices=prices, pack=pack)
            if placed is None:
                return None
            (packed_fits if isinstance(placed[1], PackedTerms) else fitted)[grid] = placed
        if grid in tunings or grid in packed_tunings or not searched_trees:
            return tuned(grid)
        return decode_floor(spec, placed[1], req)

    shapes = _Shapes(spec, bound, tuned)
    for py in _ladder(spec.mesh_height, step):
        for px in _ladder(spec.mesh_width, step):
            shapes.visit((py, px))
    seeds = shapes.best(SEEDS)
    if not seeds:
        return None
    for seed in seeds:
        _refine(shapes, seed.grid, step)

    def look(around: list[tuple[int, int]]) -> Candidate:
        for g in around:
            shapes.visit(g)
        return shapes.best(1)[0]

    best = shapes.best(1)[0]
    centres: set[tuple[int, int]] = set()
    crossed: set[tuple[int, int]] = set()
    while best.grid not in crossed:
        while best.grid not in centres:  # windows and lines until the best stays put
            centres.add(best.grid)
            (cy, cx), around = best.grid, []
            for y in range(cy - WINDOW, cy + WINDOW + 1):
                around += [(y, x) for x in range(cx - WINDOW, cx + WINDOW + 1)]
            ys, xs = _tile_steps(model, req, cy, cx, TILE_REACH)
            around += [(cy, x) for x in sorted(xs | set(range(cx - LINE, cx + LINE + 1)))]
            around += [(y, cx) for y in sorted(ys | set(range(cy - LINE, cy + LINE + 1)))]
            best = look(around)
        crossed.add(best.grid)  # then the shapes at a tile step in both the row and the column
        ys, xs = _tile_steps(model, req, *best.grid, TILE_CROSS)
        best = look([(y, x) for y in sorted(ys) for x in sorted(xs)])
    if best.placement is not None and not best.placement.packed:  # placed with greedy counts: even them
        best = replace(best, placement=real_placement(model, req, best.grid))
    return best


def _ratios(limit: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(1, limit + 1) for b in range(1, limit + 1) if math.gcd(a, b) == 1]


def search_prefill(model: Any, req: PlanRequest) -> Candidate | None:
    """The prefill grid. MeshGEMM runs a virtual lcm(P_y, P_x) mesh, so the shapes that matter
    lie on lines of a small side ratio a:b ((g·a, g·b): lcm = g·a·b). Visited: the ladder of
    ``search_decode`` and, for every ratio a:b with a, b <= ``RATIO_MAX``, a ladder of g; the
    ``SEEDS`` best are refined (by rows and columns, and along their ratio line); then every shape
    within ``WINDOW`` PEs and every g within ``RATIO_WINDOW`` of the best, until it stays put.
    A shape is first bounded by its MeshGEMMs alone (``prefill_floor``, once its placement and
    prompt chunks are known) and fully costed only when it could rank."""
    spec = req.hardware
    H, W = spec.mesh_height, spec.mesh_width
    step = _ladder_step(spec)
    placed: dict[tuple[int, int], tuple[Placement | None, int]] = {}

    def bound(grid: tuple[int, int]) -> float | None:
        if not _memory_bound_ok(model, req, grid):
            return None
        placement, chunks = None, 1
        if req.method == "full":
            placement, chunks = prefill_placement(model, req, grid, detail=False)
            if placement is None:
                return None
        placed[grid] = (placement, chunks)
        return prefill_floor(model, req, grid, chunks)

    def exact(grid: tuple[int, int]) -> Candidate:
        placement, chunks = placed[grid]
        _, total, _ = prefill_cost(model, req, grid, placement, chunks)
        return Candidate(grid, total, placement=placement, terms=chunks)

    shapes = _Shapes(spec, bound, exact)
    for py in _ladder(H, step):
        for px in _ladder(W, step):
            shapes.visit((py, px))
    ratios = _ratios(RATIO_MAX)
    for a, b in ratios:
        top = min(H // a, W // b)
        for g in _ladder(top, max(1, math.ceil(top / LADDER_POINTS))):
            shapes.visit((g * a, g * b))

    def line(grid: tuple[int, int], centre: int, radius: int) -> list[tuple[int, int]]:
        """Shapes (g·a, g·b) of ``grid``'s ratio a:b, g within ``radius`` of ``centre``."""
        g0 = math.gcd(*grid)
        a, b = grid[0] // g0, grid[1] // g0
        return [(g * a, g * b) for g in range(max(1, centre - radius), centre + radius + 1)]

    seeds = shapes.best(SEEDS)
    if not seeds:
        return None
    for seed in seeds:
        _refine(shapes, seed.grid, step)
        g = math.gcd(*seed.grid)
        s = max(1, math.ceil(min(H, W) / LADDER_POINTS))
        while s > 1:  # along the seed's ratio line, halving the step in g
            s = max(1, s // 2)
            for dg in (-2 * s, -s, s, 2 * s):
                shapes.visit(line(seed.grid, g + dg, 0)[0] if g + dg >= 1 else seed.grid)
            here = shapes.best_of(line(seed.grid, g, 2 * s))
            g = math.gcd(*here[0].grid) if here else g
    best = shapes.best(1)[0]
    centres: set[tuple[int, int]] = set()
    while best.grid not in centres:
        centres.add(best.grid)
        shapes.window(best.grid, WINDOW)
        g = math.gcd(*best.grid)
        for grid in line(best.grid, g, RATIO_WINDOW):
            shapes.visit(grid)
        best = shapes.best(1)[0]
    if best.placement is not None:  # the search placed with greedy layer counts: even them
        best = replace(best, placement=prefill_placement(model, req, best.grid)[0])
    return best


# ------------------------------------------------------------------------------------------------
# Validation, capacities and the plan
# ------------------------------------------------------------------------------------------------

def _check_grid(spec: HardwareSpec, grid: tuple[int, int], what: str) -> None:
    p_y, p_x = grid
    if p_y < 1 or p_x < 1:
        raise InputError(f"{what} grid {p_y}x{p_x}: sides must be >= 1")
    if p_y > spec.mesh_height or p_x > spec.mesh_width:
        raise InputError(f"{what} grid {p_y}x{p_x} is larger than the {spec.name} mesh "
                         f"({spec.mesh_height}x{spec.mesh_width} rows x columns)")


def _validate(req: PlanRequest) -> None:
    if req.method not in METHODS:
        raise InputError(f"unknown method {req.method!r}; allowed: {', '.join(METHODS)}")
    if req.dtype not in ("fp16", "fp32"):
        raise InputError(f"unknown dtype {req.dtype!r}; allowed: fp16, fp32")
    for name in ("input_len", "output_len", "batch"):
        if getattr(req, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(req, name)}")
    if req.context is not None and req.context < 1:
        raise InputError(f"--context must be >= 1, got {req.context}")
    if req.k_tree is not None and req.k_tree not in DECODE_TREE_KS:
        raise InputError(f"--k-tree must be one of {', '.join(map(str, DECODE_TREE_KS))} (the decode program's "
                         f"allreduce trees have one or two levels), got {req.k_tree}")
    if req.k_tree is not None and req.k_tree not in decode_tree_ks(req.hardware, "y", 2):
        raise InputError(f"--k-tree {req.k_tree}: a {req.k_tree}-level Y tree binds more input queues than "
                         f"{req.hardware.name}'s {len(req.hardware.usable_input_queues)} usable; allowed: "
                         f"{', '.join(map(str, decode_tree_ks(req.hardware, 'y', 2)))}")
    if req.wafers != "auto" and (not isinstance(req.wafers, int) or not 1 <= req.wafers <= MAX_WAFERS):
        raise InputError(f"--wafers must be an integer in 1..{MAX_WAFERS} or 'auto', got {req.wafers!r}")
    budget = len(req.hardware.routable_colors)
    if req.k_tree is not None and decode_colors(req.k_tree, req.k_tree) > budget:
        raise InputError(f"K={req.k_tree} needs {decode_colors(req.k_tree, req.k_tree)} colours per PE for "
                         f"two reduction axes; {req.hardware.name} has {budget} routable colours "
                         f"(K <= {(budget - 3) // 4})")
    for grid, what in ((req.decode_grid, "decode"), (req.prefill_grid, "prefill")):
        if grid is not None:
            _check_grid(req.hardware, grid, what)


def wafer_tokens(model: Any, req: PlanRequest, buffer_bytes: int, wafers: int) -> int:
    """Table 5's definition of KV capacity (shift layout): all SRAM of the system(s) left after the
    reserve, the weights and per-PE buffers, over the KV bytes per token of every layer; a sliding-
    window layer stops growing at its window. The same figure under both methods (real dims)."""
    spec = req.hardware
    b = _dtype_bytes(req)
    free = wafers * spec.num_pes * (spec.usable_sram_bytes - buffer_bytes) - model.total_params * b
    per_layer = 2 * model.kv_dim * b * req.batch
    if free <= 0:
        return 0

    def need(t: int) -> int:
        return per_layer * sum(min(t, model.layer_sliding_window(i) or t) for i in range(model.num_layers))

    lo, hi = 0, 1
    while need(hi) <= free:
        if hi >= 1 << 62:
            return hi  # every layer is windowed: the cache stops growing
        lo, hi = hi, hi * 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid) <= free else (lo, mid)
    return lo


def placed_tokens(model: Any, req: PlanRequest, grid: tuple[int, int], batch: int, packed: bool = False) -> int:
    """The largest context whose real placement on ``grid`` (same wafers; ``packed``: the aligned or the
    packed regions, ``decode_placement``, as a plan at that context places it) still fits."""
    def fits(t: int) -> bool:
        if packed:
            return decode_placement(model, req, grid, context=t, batch=batch) is not None
        return _fits_or_none(lambda: real_placement(model, req, grid, context=t, batch=batch)) is not None

    if not fits(1):
        return 0
    if model.sliding_window is not None and len(model.sliding_window_layers) == model.num_layers:
        if fits(1 << 40):
            return 1 << 62
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def max_batch(model: Any, req: PlanRequest, grid: tuple[int, int], limit: int = 1 << 14, packed: bool = False) -> int:
    """The largest batch whose KV caches (one per request at the planned context) and buffers fit
    (``packed``: on the aligned or the packed regions)."""
    def fits(b: int) -> bool:
        if packed:
            return decode_placement(model, req, grid, batch=b) is not None
        return _fits_or_none(lambda: real_placement(model, req, grid, batch=b)) is not None

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _nothing_fits(model: Any, req: PlanRequest, what: str) -> str:
    """Why no grid holds the model: weights alone, or the closest shape's binding stage."""
    spec = req.hardware
    n = _wafer_count(req)
    b = _dtype_bytes(req)
    need = model.total_params * b / 1e9
    holds = n * spec.num_pes * spec.usable_sram_bytes / 1e9
    systems = f"{n} x {spec.name}" if n > 1 else spec.name
    prefix = "" if what == "decode" else f"{what}: "
    if need > holds:
        return (f"{prefix}weights need {need:.1f} GB, {systems} holds {holds:.1f} GB ({req.dtype}); "
                f"try --wafers auto")
    # The binding constraint of the shape that comes closest: fewest regions short; when no shape
    # forms stages at all (one layer outgrows every region), the least bytes on the busiest PE (the
    # largest region is not always it: a MeshGEMM on a region whose sides have a large lcm holds more).
    best = None
    step = max(1, math.ceil(max(spec.mesh_height, spec.mesh_width) / 40))
    chunks = max(c for c in PREFILL_CHUNKS if c <= max(1, req.input_len))
    for py in _ladder(spec.mesh_height, step):
        for px in _ladder(spec.mesh_width, step):
            if what == "decode":
                try:
                    p, why, need = real_placement(model, req, (py, px)), "", 0
                except InputError as exc:
                    p, why, need = None, str(exc), getattr(exc, "need", math.inf)
            else:  # the most prompt chunks: the fewest bytes per PE
                p, why, need = _prefill_attempt(model, req, (py, px), chunks, True, keep_unfit=True)
            if p is None:
                cand = (1, (need, -py * px), why)
            else:
                cand = (0, len(p.stages) / max(p.regions_available, 1), stage_fit_message(spec, p, model.name))
            if best is None or cand[:2] < best[:2]:
                best = cand
    return f"{prefix}no grid holds {model.name} at context {req.decode_context} x batch {req.batch} " \
           f"on {systems}; closest: {best[2]}"


class _NothingFits(InputError):
    """No grid holds the model on this many wafers (``--wafers auto`` then tries one more).
    ``phase``: the search that found nothing, "decode" or "prefill"."""

    def __init__(self, message: str, phase: str):
        super().__init__(message)
        self.phase = phase


def _plan_on(model: Any, req: PlanRequest, memo: dict | None = None, explain: bool = True) -> Plan:
    """The plan for a fixed wafer count. ``explain=False``: when nothing fits, raise
    ``_NothingFits`` without working out the binding constraint (a search of its own)."""
    notes: list[str] = []

    def decode() -> Candidate:
        if req.decode_grid is not None:
            return decode_candidate(model, req, req.decode_grid, forced=True)
        found = search_grid(model, req, decode_candidate, memo)
        if found is None and req.method == "full":  # the strips beside the regions may hold it
            found = search_decode(model, req, memo, pack=True)
        if found is None:
            raise _NothingFits(_nothing_fits(model, req, "decode") if explain else "decode: nothing fits", "decode")
        return found

    # --wafers auto (explain=False) asks the prefill search first: it is the cheaper one to fail on too
    # few wafers, where the decode search (packed strips included) may find placements that go unused
    pre = None if explain else _prefill(model, req, notes, explain)
    dec = decode()
    pre = pre or _prefill(model, req, notes, explain)
    return _assemble(model, req, dec, pre, notes)


def _prefill(model: Any, req: PlanRequest, notes: list[str], explain: bool) -> Candidate:
    if req.prefill_grid is not None:
        pre = prefill_candidate(model, req, req.prefill_grid, forced=True)
        q = math.lcm(*req.prefill_grid)
        if q > LCM_WARN * max(req.prefill_grid):
            notes.append(f"prefill grid {req.prefill_grid[0]}x{req.prefill_grid[1]}: MeshGEMM runs a virtual "
                         f"{q}x{q} mesh ({q // max(req.prefill_grid)}x the steps of its longer side); "
                         f"a shape with a small lcm of its sides is much faster")
    else:
        pre = search_grid(model, req, prefill_candidate)
        if pre is None:
            raise _NothingFits(_nothing_fits(model, req, "prefill") if explain else "prefill: nothing fits",
                               "prefill")
    return pre


def _assemble(model: Any, req: PlanRequest, dec: Candidate, pre: Candidate, notes: list[str]) -> Plan:
    spec = req.hardware
    f = spec.clock_hz
    packed = isinstance(dec.terms, PackedTerms)
    strip_tree = (dec.tree_x_strip,) if packed else ()
    per_layer, parts = dec.terms.breakdown(spec, dec.tree_y, dec.tree_x, *strip_tree)
    # The real model's placement on the decode grid, under either method: the fit is never hidden.
    placement = dec.placement
    reason = ""
    if placement is None:
        try:
            placement = real_placement(model, req, dec.grid)
        except InputError as exc:
            reason = str(exc)
    if placement is not None and not placement.fits:
        reason = stage_fit_message(spec, placement, model.name)
    fits = placement is not None and placement.fits
    if req.method == "paper":
        notes.append("paper method: figures are extrapolated (one resident layer x layer count, dims "
                     "rounded up to the grid side, one head as wide as the model, no LM head or hand-offs)")
        if not fits:
            notes.append(f"the real model does not fit: {reason}")
    chunks = pre.terms if isinstance(pre.terms, int) else 1
    if chunks > 1:
        notes.append(f"prefill runs the prompt in {chunks} chunks (a whole prompt's activations do not fit "
                     f"beside the model); each chunk is charged as attending to the whole prompt")
    _, pre_total, _ = prefill_cost(model, req, pre.grid, pre.placement, chunks)
    decode_s = dec.cycles / f
    prefill_s = pre_total / f
    sw = 0.0 if req.method == "paper" else switch_cycles(model, req, placement)
    e2e_s = prefill_s + sw / f + req.output_len * decode_s
    e2e = req.output_len / e2e_s
    wafers = placement.wafers_used if (placement is not None and fits) else _wafer_count(req)
    energy = wafers * spec.power_watts * e2e_s / (req.output_len * req.batch)
    buf = placement.buffer_bytes if placement is not None else 0
    shift_w = wafer_tokens(model, req, buf, _wafer_count(req))
    shift_p = placed_tokens(model, req, dec.grid, req.batch, req.method == "full") if fits else 0
    p_y = dec.grid[0]
    ctx, max_pos = req.decode_context, model.max_position_embeddings
    if ctx > max_pos:  # the default (input + output) too: compile caps its default there, refuses more
        how = "" if req.context is not None else f" (--input-len {req.input_len} + --output-len {req.output_len})"
        notes.append(f"context {ctx}{how} exceeds the model's max_position_embeddings {max_pos}: the figures "
                     f"are for a context the model was not trained for, and waferllm compile refuses it "
                     f"(give --context {max_pos} or less)")
    if req.context is not None and req.context < req.input_len:
        notes.append(f"--context {req.context} is shorter than the {req.input_len}-token prompt (--input-len): "
                     f"the prefill figures are for the whole prompt, the decode figures for a {req.context}-token "
                     f"KV cache that cannot hold it; give --input-len {req.context} or less for a consistent plan")
    if req.method == "full" and fits and not req.program_memory:
        from plmr.program_code import DECODE_CODE

        if not DECODE_CODE.fits_beside(spec, placement.bytes_per_pe):
            notes.append(f"the busiest decode PE holds {placement.bytes_per_pe:,} of {spec.usable_sram_bytes:,} B "
                         f"without the decode program's code (up to {DECODE_CODE.bytes(spec):,} B, charged with "
                         f"--program-memory): `waferllm compile` plans again with that code reserved (its grid or "
                         f"stages may differ)")
    if model.sliding_window is not None and req.method == "full":
        notes.append(f"sliding window {model.sliding_window} on {len(model.sliding_window_layers)} of "
                     f"{model.num_layers} layers: their KV cache and attention stop growing at the window")
    if dec.terms is None:
        handoff = _no_handoff()
    elif req.method == "paper":  # one layer's figure times the layers: no stages, no hand-offs
        handoff = dict(dec.terms.handoff)
    else:
        handoff = priced_handoff(model, req, dec.grid, dec.placement, dec.tree_y, dec.tree_x, *strip_tree)
    pre_handoff = pre_total - prefill_cost(model, req, pre.grid, None, chunks)[1]
    handoff["prefill_cycles"] = pre_handoff
    return Plan(
        model=model, request=req,
        prefill=PhasePlan(grid=pre.grid, cycles_per_layer=prefill_cost(model, req, pre.grid, None, chunks)[0],
                          cycles_total=pre_total, seconds=prefill_s, tokens_per_s=req.input_len / prefill_s,
                          placement=pre.placement),
        decode=PhasePlan(grid=dec.grid, cycles_per_layer=per_layer, cycles_total=dec.cycles, seconds=decode_s,
                         tokens_per_s=1.0 / decode_s, tree_y=dec.tree_y, tree_x=dec.tree_x, parts=parts,
                         colors_per_pe=dec.terms.colors(dec.tree_y, dec.tree_x, *strip_tree),
                         placement=placement, tree_x_strip=dec.tree_x_strip if packed else None),
        placement=placement, fits=fits, fit_reason=reason, switch_cycles=sw,
        kv_shift_tokens=shift_w, kv_concat_tokens=shift_w // p_y,
        kv_shift_tokens_placed=shift_p, kv_concat_tokens_placed=shift_p // p_y,
        max_batch=max_batch(model, req, dec.grid, packed=req.method == "full") if fits else 0,
        end_to_end_tokens_per_s=e2e, energy_j_per_token=energy, wafers=wafers, handoff=handoff,
        notes=tuple(notes),
    )


def switch_cycles(model: Any, req: PlanRequest, placement: Placement | None) -> float:
    """Prefill → decode re-layout (method §9 [O]): bytes over the busiest cut plus the distance.

    The KV cache of the prompt always moves; the weights too unless both layouts fit at once.
    Wafers switch in parallel, so one wafer's share counts."""
    spec = req.hardware
    b = _dtype_bytes(req)
    wafers = placement.wafers_used if placement is not None else 1
    kv = req.batch * req.input_len * 2 * model.num_kv_heads * model.head_dim * model.num_layers * b
    weights = model.total_params * b
    dual = placement is not None and 2 * placement.bytes_per_pe <= placement.capacity_per_pe
    moved = (kv + (0 if dual else weights)) / wafers
    cut_links = min(spec.mesh_width, spec.mesh_height)
    return moved / (cut_links * spec.wavelet_bytes) + (spec.mesh_width + spec.mesh_height) * spec.hop_cycles


def _fewest_wafers(model: Any, req: PlanRequest) -> int:
    spec = req.hardware
    need = model.total_params * _dtype_bytes(req)
    return max(1, math.ceil(need / (spec.num_pes * spec.usable_sram_bytes)))


def plan(model: Any, req: PlanRequest) -> Plan:
    """Search grids, trees, placement and (``wafers="auto"``) the wafer count; predict the metrics.
    Raises InputError when infeasible, naming the binding constraint."""
    _validate(req)
    if req.wafers != "auto":
        p = _plan_on(model, req)
        if p.fits and p.wafers < req.wafers:  # stages fill the wafers in order: say the rest stay idle
            p = replace(p, notes=p.notes + (f"holds on {p.wafers} of the {req.wafers} wafers requested (the "
                                            f"stages fill the wafers in order); the others stay unused and "
                                            f"the figures are for {p.wafers}",))
        return p
    first = _fewest_wafers(model, req) if req.method == "full" else 1
    if first > MAX_WAFERS:  # the search below would not even start: say why with the numbers
        spec = req.hardware
        raise InputError(f"{model.name} does not fit {MAX_WAFERS} x {spec.name}: its {req.dtype} weights "
                         f"({model.total_params * _dtype_bytes(req) / 1e9:,.2f} GB) need at least {first:,} "
                         f"systems of {spec.num_pes * spec.usable_sram_bytes / 1e9:,.3f} GB of usable SRAM "
                         f"({spec.num_pes:,} PEs), more than the {MAX_WAFERS} --wafers auto tries")
    last_error = None
    memo: dict = {}  # decode costs carried from one wafer count to the next (see search_decode)
    prefill_fits_most: bool | None = None
    for n in range(first, MAX_WAFERS + 1):
        try:
            best = _plan_on(model, replace(req, wafers=n), memo, explain=req.method == "paper")
        except InputError as exc:
            last_error = exc
            if req.method == "paper":
                raise
            if isinstance(exc, _NothingFits) and exc.phase == "prefill" and n < MAX_WAFERS:
                if prefill_fits_most is None:  # asked once: the answer is the same at every count
                    prefill_fits_most = _prefill_fits_somewhere(model, req)
                if not prefill_fits_most:
                    break  # more wafers never make room for the prefill: say why now, not after every count
            continue
        options = [_wafer_option(best)]
        for more in (n + 1, n + 2):  # what more systems would buy (decode tokens/s per wafer)
            if more > MAX_WAFERS:
                break
            try:
                alt = search_grid(model, replace(req, wafers=more), decode_candidate, memo)
            except InputError:
                alt = None
            if alt is not None:
                tps = req.hardware.clock_hz / alt.cycles
                options.append({"wafers": more, "decode_grid": list(alt.grid),
                                "decode_tokens_per_s": tps, "tokens_per_s_per_wafer": tps * req.batch / more})
        notes = (f"--wafers auto: {best.wafers} is the fewest {req.hardware.name} systems that hold "
                 f"{model.name} at this context",) + best.notes
        return replace(best, wafer_options=tuple(options), notes=notes)
    if isinstance(last_error, _NothingFits):  # now say why, for the most wafers
        try:
            _plan_on(model, replace(req, wafers=MAX_WAFERS), memo)
        except InputError as exc:
            last_error = exc
    raise InputError(f"{model.name} does not fit {MAX_WAFERS} x {req.hardware.name}: {last_error}")


def _prefill_fits_somewhere(model: Any, req: PlanRequest) -> bool:
    """Whether the prefill pass fits on the most wafers ``--wafers auto`` tries. More wafers only add
    regions for its stages, so when it does not fit there it fits on no count (one search instead
    of one per count: a layer too large for every region used to take a minute to report)."""
    try:
        _prefill(model, replace(req, wafers=MAX_WAFERS), [], explain=False)
    except _NothingFits:
        return False
    return True


def _wafer_option(p: Plan) -> dict:
    return {"wafers": p.wafers, "decode_grid": list(p.decode.grid), "decode_tokens_per_s": p.decode.tokens_per_s,
            "tokens_per_s_per_wafer": p.decode.tokens_per_s * p.request.batch / p.wafers}


def decode_cost(model: Any, req: PlanRequest, grid: tuple[int, int], tree_y: TreeChoice, tree_x: TreeChoice,
                placement: Placement | None = None) -> tuple[float, float, dict]:
    """(cycles per layer, cycles per token, per-token parts) of one decode step with given trees."""
    terms = decode_terms(model, req, grid, placement)
    per_layer, parts = terms.breakdown(req.hardware, tree_y, tree_x)
    return per_layer, terms.total(req.hardware, tree_y, tree_x), parts
