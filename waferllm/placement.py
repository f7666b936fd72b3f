"""Layer placement over the wafer (waferllm-method.md §9): regions, stages and per-PE memory.

A region is a P_y × P_x rectangle that runs consecutive layers tensor-parallel and holds their
weights and KV cache. Regions tile the usable mesh on an aligned grid; a model that does not fit one
region is split into stages, one region each, filled greedily in layer order. The embedding table
sits with the first stage and the LM head (with the final norm) with the last; tied embeddings share
one copy when both live in one region.
"""

from __future__ import annotations

from dataclasses import dataclass

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.primitives import ceil_div
from plmr.transformer import LayerDims, decode_buffer_bytes, decode_weight_bytes, kv_bytes_per_token_per_pe


@dataclass(frozen=True)
class Stage:
    """One region of the wafer and what it holds."""

    index: int
    origin: tuple[int, int]  # (y, x) of the region's north-west PE
    layers: tuple[int, int]  # first, last (inclusive)
    extras: tuple[str, ...]  # "embedding", "lm_head"
    bytes_per_pe: int  # weights + KV (planned context) + buffers, busiest PE

    def to_dict(self) -> dict:
        return {"stage": self.index, "origin": list(self.origin), "layers": list(self.layers),
                "num_layers": self.layers[1] - self.layers[0] + 1, "extras": list(self.extras),
                "bytes_per_pe": self.bytes_per_pe}


@dataclass(frozen=True)
class Placement:
    grid: tuple[int, int]
    stages: tuple[Stage, ...]
    regions_available: int
    capacity_per_pe: int
    layer_weight_bytes: int  # one layer, busiest PE
    layer_kv_bytes: int  # one layer at the planned context, busiest PE
    buffer_bytes: int
    extras_bytes: dict

    @property
    def bytes_per_pe(self) -> int:
        return max(s.bytes_per_pe for s in self.stages)

    @property
    def fits(self) -> bool:
        return self.bytes_per_pe <= self.capacity_per_pe and len(self.stages) <= self.regions_available


def regions_available(spec: HardwareSpec, grid: tuple[int, int]) -> int:
    p_y, p_x = grid
    return (spec.mesh_height // p_y) * (spec.mesh_width // p_x)


def region_origin(spec: HardwareSpec, grid: tuple[int, int], index: int) -> tuple[int, int]:
    """Regions are laid out row-major over the aligned tiling, north-west first."""
    p_y, p_x = grid
    per_row = max(1, spec.mesh_width // p_x)
    return (index // per_row) * p_y, (index % per_row) * p_x


def embedding_bytes_per_pe(vocab: int, hidden: int, grid: tuple[int, int], dtype_bytes: int) -> int:
    """The table stored V_x E_y (method §3.4): ⌈V/P_x⌉·⌈E/P_y⌉ elements on the busiest PE."""
    p_y, p_x = grid
    return ceil_div(vocab, p_x) * ceil_div(hidden, p_y) * dtype_bytes


def place_layers(spec: HardwareSpec, dims: LayerDims, num_layers: int, vocab: int, tied: bool,
                 grid: tuple[int, int], context: int, dtype_bytes: int = 2,
                 extra_activation_bytes: int = 0) -> Placement:
    """Fewest stages that hold every layer, with layers water-filled so stages are balanced (the
    spare SRAM of every stage then holds KV). Raises InputError with numbers when one layer alone
    cannot fit a PE of this grid."""
    p_y, p_x = grid
    capacity = spec.usable_sram_bytes
    dtype = "fp16" if dtype_bytes == 2 else "fp32"
    w = decode_weight_bytes(dims, p_y, p_x, dtype)
    kv = ceil_div(max(context, 0), p_y) * kv_bytes_per_token_per_pe(dims, p_x, dtype)
    buf = decode_buffer_bytes(dims, p_y, p_x, dtype) + extra_activation_bytes
    emb = embedding_bytes_per_pe(vocab, dims.hidden, grid, dtype_bytes) if vocab else 0
    per_layer = w + kv
    if buf + per_layer > capacity:
        raise InputError(
            f"one layer needs {(buf + per_layer) / 1024:.1f} KB per PE on a {p_y}x{p_x} grid "
            f"(weights {w / 1024:.1f} KB, KV {kv / 1024:.1f} KB at context {context}, buffers "
            f"{buf / 1024:.1f} KB), {capacity / 1024:.1f} KB available"
        )
    if emb and buf + emb > capacity:
        raise InputError(f"the embedding table needs {(buf + emb) / 1024:.1f} KB per PE on a {p_y}x{p_x} "
                         f"grid, {capacity / 1024:.1f} KB available")
    for n in range(1, num_layers + 2):
        # Stage 0 holds the embedding, the last stage the LM head; tied weights share one copy only
        # when both ends are the same stage.
        extras = [0] * n
        extras[0] += emb
        extras[-1] += 0 if (tied and n == 1) else emb
        caps = [max(0, (capacity - buf - e) // per_layer) if buf + e <= capacity else -1 for e in extras]
        if min(caps) < 0 or sum(caps) < num_layers:
            continue
        counts = _water_fill(caps, num_layers)
        stages, first = [], 0
        for i, count in enumerate(counts):
            names = (("embedding",) if i == 0 and emb else ()) + (("lm_head",) if i == n - 1 and vocab else ())
            stages.append(Stage(index=i, origin=region_origin(spec, grid, i), layers=(first, first + count - 1),
                                extras=names, bytes_per_pe=buf + extras[i] + count * per_layer))
            first += count
        return Placement(grid=grid, stages=tuple(stages), regions_available=regions_available(spec, grid),
                         capacity_per_pe=capacity, layer_weight_bytes=w, layer_kv_bytes=kv, buffer_bytes=buf,
                         extras_bytes={"embedding": emb, "lm_head": extras[-1] - (emb if n == 1 else 0)})
    raise InputError(f"cannot place {num_layers} layers on {p_y}x{p_x} regions")  # unreachable: n = L+1 fits


def _water_fill(caps: list[int], total: int) -> list[int]:
    """Counts ≤ caps summing to ``total`` with the largest count as small as possible."""
    level = 0
    while sum(min(c, level) for c in caps) < total:
        level += 1
    counts = [min(c, level) for c in caps]
    excess = sum(counts) - total
    for i in reversed(range(len(counts))):  # trim the surplus from the last full stages
        if excess and counts[i] == level:
            counts[i] -= 1
            excess -= 1
    return counts


def kv_capacity_placed(placement: Placement, dims: LayerDims, dtype_bytes: int = 2) -> tuple[int, int]:
    """(shift, concat) token capacity under this placement: the fullest stage limits it.

    Free bytes per PE after weights and buffers hold c_max entries; shifting spreads them over all
    P_y rows, concatenation piles them on one row (method §8)."""
    p_y, p_x = placement.grid
    dtype = "fp16" if dtype_bytes == 2 else "fp32"
    per_token_layer = kv_bytes_per_token_per_pe(dims, p_x, dtype)
    c_max = None
    for s in placement.stages:
        n_layers = s.layers[1] - s.layers[0] + 1
        if n_layers <= 0:
            continue
        kv_now = n_layers * placement.layer_kv_bytes
        free = placement.capacity_per_pe - (s.bytes_per_pe - kv_now)
        c = free // (n_layers * per_token_layer) if per_token_layer else 0
        c_max = c if c_max is None else min(c_max, c)
    c_max = max(c_max or 0, 0)
    return p_y * c_max, c_max
