"""Layer placement over one or several wafers (waferllm-method.md §9; multi-system.md): regions,
stages and per-PE memory.

A region is a P_y × P_x rectangle that runs consecutive layers tensor-parallel and holds their
weights and KV cache. Regions tile each wafer's usable mesh on an aligned grid in serpentine order (the decode program's stage order); a model
that does not fit one region is split into stages, one region each, with the fewest stages and then
the most even layer counts (``place_layers``). When the aligned regions do not hold the model, a
decode placement may also use the strip of W mod P_x columns left at the end of each band: a
narrower region of the same P_y rows (``packed_regions``, ``place_layers_packed``). Stages fill
wafer 0's regions, then wafer 1's, ... (layers pipelined over systems, each holding a contiguous
group). The embedding table sits with the first stage and
the LM head (with the final norm) with the last; tied embeddings share one copy when both live in
one stage.

Per-PE bytes are the busiest PE's. A decode placement is charged what the decode program allocates
(``ProgramCharge``, from ``plmr.decode_memory``: every layer alike at the largest column's blocks); the
prefill placement's default charge assumes the splits along x rotate from layer to layer
(``plmr.transformer.StageMemory``), its program-memory charge the prefill program's table. An
infeasible placement raises ``InputError`` naming the binding stage, its busiest PE's buffers and
their bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.decode_memory import SCORE_CHUNK
from plmr.primitives import ceil_div
from plmr.transformer import LayerDims, StageMemory, decode_buffer_bytes


@dataclass(frozen=True)
class Stage:
    """One region of one wafer and what it holds (bytes are the busiest PE's)."""

    index: int
    wafer: int
    origin: tuple[int, int]  # (y, x) of the region's north-west PE on its wafer
    layers: tuple[int, int]  # first, last (inclusive); last < first when the stage holds no layer
    extras: tuple[str, ...]  # "embedding", "lm_head"
    weight_bytes: int
    kv_bytes: int
    buffer_bytes: int
    extras_bytes: int
    grid: tuple[int, int] = (0, 0)  # the region's rows and columns (a strip region is narrower)

    @property
    def num_layers(self) -> int:
        return self.layers[1] - self.layers[0] + 1

    @property
    def bytes_per_pe(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.buffer_bytes + self.extras_bytes

    def to_dict(self) -> dict:
        return {"stage": self.index, "wafer": self.wafer, "origin": list(self.origin), "grid": list(self.grid),
                "layers": list(self.layers), "num_layers": self.num_layers, "extras": list(self.extras),
                "bytes_per_pe": self.bytes_per_pe, "weight_bytes_per_pe": self.weight_bytes,
                "kv_bytes_per_pe": self.kv_bytes, "buffer_bytes_per_pe": self.buffer_bytes,
                "extras_bytes_per_pe": self.extras_bytes}


@dataclass(frozen=True)
class Placement:
    grid: tuple[int, int]
    stages: tuple[Stage, ...]
    wafers: int
    regions_per_wafer: int
    capacity_per_pe: int
    buffer_bytes: int
    #: Columns of the strip regions beside each band's full regions (0: the aligned tiling, no strips).
    strip_width: int = 0
    #: The decode program's attention chunk this placement charged (``ProgramCharge.score_chunk``).
    score_chunk: int = SCORE_CHUNK

    @property
    def packed(self) -> bool:
        return self.strip_width > 0

    @property
    def regions_available(self) -> int:
        return self.wafers * self.regions_per_wafer

    @property
    def bytes_per_pe(self) -> int:
        return max(s.bytes_per_pe for s in self.stages)

    @property
    def wafers_used(self) -> int:
        return self.stages[-1].wafer + 1

    @property
    def fits(self) -> bool:
        return self.bytes_per_pe <= self.capacity_per_pe and len(self.stages) <= self.regions_available


@dataclass(frozen=True)
class ProgramCharge:
    """What the decode program allocates per PE on regions of one width (``plmr.decode_memory``, the
    table the program allocates from): every layer's weights and K|V (``per_layer``), the buffers every
    stage holds (``buffers``, with the code bound when charged), and what the stage holding the
    embedding (``first``), the LM head (``last``) or both (``both``) adds to them."""

    per_layer: tuple[int, int]
    buffers: int
    first: int
    last: int
    both: int
    #: The attention chunk the program is built with (``DecodeConfig.score_chunk``) at these bytes.
    score_chunk: int = SCORE_CHUNK


def regions_per_wafer(spec: HardwareSpec, grid: tuple[int, int]) -> int:
    p_y, p_x = grid
    return (spec.mesh_height // p_y) * (spec.mesh_width // p_x)


def region_origin(spec: HardwareSpec, grid: tuple[int, int], index: int) -> tuple[int, int, int]:
    """(wafer, y, x) of region ``index``: serpentine over each wafer's aligned tiling (left to right on even
    bands, right to left on odd ones, as the decode program places its stages: ``snake_origins``), wafer by
    wafer."""
    p_y, p_x = grid
    per_row = max(1, spec.mesh_width // p_x)
    per_wafer = max(1, regions_per_wafer(spec, grid))
    wafer, i = divmod(index, per_wafer)
    band, k = divmod(i, per_row)
    return wafer, band * p_y, (k if band % 2 == 0 else per_row - 1 - k) * p_x


def embedding_bytes_per_pe(vocab: int, hidden: int, grid: tuple[int, int], dtype_bytes: int) -> int:
    """The table stored V_x E_y (method §3.4): ⌈V/P_x⌉·⌈E/P_y⌉ elements on the busiest PE."""
    p_y, p_x = grid
    return ceil_div(vocab, p_x) * ceil_div(hidden, p_y) * dtype_bytes


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


class LayerMemory:
    """What a stage of consecutive layers costs per PE on one grid: weights plus the KV cache of
    its layers (``plmr.transformer.StageMemory``), remembered per (first layer, count). One
    object per (grid, cached tokens per layer, ...) is shared by every placement that asks
    (``layer_memory``): a search places the same grid for several prompt chunkings or wafer
    counts, a capacity search for many batches."""

    def __init__(self, dims: LayerDims, grid: tuple[int, int], layer_tokens: tuple[int, ...], dtype: str,
                 batch: int, per_layer: tuple[int, int] | None = None):
        self.stage = StageMemory(dims, grid[0], grid[1], dtype)
        self.layer_tokens = layer_tokens
        self.batch = batch
        #: (weight bytes, KV bytes) every layer takes whatever the stage holds, when the program
        #: allocates each layer alike (the prefill program's table), instead of ``StageMemory``'s
        self.per_layer = per_layer
        self.homogeneous = len(set(layer_tokens)) <= 1 or per_layer is not None
        if self.homogeneous:  # every layer keeps the same rows: sums are products
            self._rows = self.stage.rows(layer_tokens[0]) if layer_tokens else 0
        else:
            self.rows = [self.stage.rows(t) for t in layer_tokens]
            self._prefix = [0]
            for r in self.rows:
                self._prefix.append(self._prefix[-1] + r)
        self._bytes: dict[tuple[int, int], int] = {}
        self._weights: dict[int, int] = {}
        #: The most layers a stage holds per (first layer, bytes available), for ``_fewest_even``.
        self.most: dict[tuple[int, int], int] = {}

    def weights(self, n: int) -> int:
        if self.per_layer is not None:
            return max(n, 0) * self.per_layer[0]
        w = self._weights.get(n)
        if w is None:
            w = self._weights[n] = self.stage.weight_bytes(n)
        return w

    def kv(self, first: int, n: int) -> int:
        if n <= 0:
            return 0
        if self.per_layer is not None:
            return n * self.per_layer[1]
        if self.homogeneous:
            return self.stage.kv_bytes(n, n * self._rows, self._rows, self.batch)
        return self.stage.kv_bytes(n, self._prefix[first + n] - self._prefix[first],
                                   max(self.rows[first:first + n]), self.batch)

    def layer_bytes(self, first: int, n: int) -> int:
        """Weights and KV of layers first .. first + n - 1 (every first is alike when every layer
        caches as many tokens)."""
        key = (0 if self.homogeneous else first, n)
        b = self._bytes.get(key)
        if b is None:
            b = self._bytes[key] = self.weights(n) + self.kv(key[0], n)
        return b


class PeOverflow(InputError):
    """Something that must sit in one region (a layer, the embedding or LM head beside the buffers)
    needs more than a PE holds: ``need`` bytes on the busiest PE."""

    def __init__(self, message: str, need: int):
        super().__init__(message)
        self.need = need


class RegionShortage(InputError):
    """Every stage fits its region, but the wafers have too few regions (``needed`` of them)."""

    def __init__(self, message: str, needed: int):
        super().__init__(message)
        self.needed = needed


@functools.lru_cache(maxsize=4096)
def layer_memory(dims: LayerDims, grid: tuple[int, int], layer_tokens: tuple[int, ...], dtype: str,
                 batch: int, per_layer: tuple[int, int] | None = None) -> LayerMemory:
    return LayerMemory(dims, grid, layer_tokens, dtype, batch, per_layer)


def place_layers(spec: HardwareSpec, dims: LayerDims, layer_tokens: tuple[int, ...] | list[int], vocab: int,
                 tied: bool, grid: tuple[int, int], dtype: str = "fp16", batch: int = 1, wafers: int = 1,
                 extra_activation_bytes: int = 0, what: str = "", detail: bool = True,
                 per_layer: tuple[int, int] | None = None, buffer_bytes: int | None = None,
                 charge: ProgramCharge | None = None) -> Placement:
    """Fewest stages that hold every layer, then the most even layer counts (the spare SRAM of
    every stage holds KV). Raises InputError naming the binding constraint with its numbers.

    Per PE: the layers' weights and KV (``StageMemory``, or ``per_layer`` = (weight bytes, KV
    bytes) of every layer), the embedding and LM head, and the buffers: ``buffer_bytes``, by
    default the decode vectors plus ``extra_activation_bytes``. ``charge``: all of them as the decode
    program allocates them (``ProgramCharge``; overrides ``per_layer`` and ``buffer_bytes``).

    ``detail=False`` (a search, which needs only whether the grid fits and its stages' regions):
    the layer counts are not evened (the fewest stages are the same either way), and needing more
    regions than there are raises InputError too."""
    p_y, p_x = grid
    L = len(layer_tokens)
    capacity = spec.usable_sram_bytes
    b = 2 if dtype == "fp16" else 4
    if charge is not None:
        per_layer, buffer_bytes = charge.per_layer, charge.buffers
    mem = layer_memory(dims, grid, tuple(layer_tokens), dtype, batch, per_layer)
    buf = (decode_buffer_bytes(dims, p_y, p_x, dtype, batch) + extra_activation_bytes if buffer_bytes is None
           else buffer_bytes)
    emb = embedding_bytes_per_pe(vocab, dims.hidden, grid, b) if vocab else 0
    # the embedding's stage, the LM head's, both in one stage
    e_first, e_last, e_both = ((charge.first, charge.last, charge.both) if charge is not None
                               else (emb, emb, emb if tied else 2 * emb))
    homogeneous = mem.homogeneous
    layer_bytes = mem.layer_bytes

    per_wafer = regions_per_wafer(spec, grid)
    prefix = f"{what}: " if what else ""
    if per_wafer == 0:
        raise InputError(f"{prefix}a {p_y}x{p_x} region does not fit the {spec.name} mesh "
                         f"({spec.mesh_height}x{spec.mesh_width})")
    one = layer_bytes(0, 1) if L else 0
    too_big = ((L and buf + one > capacity) or buf + max(e_first, e_last) > capacity
               or (L and e_first and buf + e_first + one > capacity))
    if too_big and not detail:
        raise InputError(f"{prefix}does not fit")  # a search drops the grid without reading why
    if L and buf + one > capacity:
        raise PeOverflow(f"{prefix}one layer needs {_kb(buf + one)} on the busiest PE of a {p_y}x{p_x} region "
                         f"(weights {_kb(mem.weights(1))}, KV cache {_kb(mem.kv(0, 1))} for "
                         f"{max(layer_tokens)} tokens x batch {batch}, buffers {_kb(buf)}), "
                         f"{_kb(capacity)} available", buf + one)
    if e_first and buf + e_first > capacity:
        raise PeOverflow(f"{prefix}the embedding table needs {_kb(e_first)} per PE on a {p_y}x{p_x} region "
                         f"(+ buffers {_kb(buf)}), {_kb(capacity)} available", buf + e_first)
    if e_last and buf + e_last > capacity:
        what_last = "the LM head with the final norm and the logits" if charge is not None else "the LM head"
        raise PeOverflow(f"{prefix}{what_last} need{'s' if charge is None else ''} {_kb(e_last)} per PE on a "
                         f"{p_y}x{p_x} region (+ buffers {_kb(buf)}), {_kb(capacity)} available", buf + e_last)
    if too_big:  # the first stage holds the table and a layer
        raise PeOverflow(f"{prefix}the first stage needs {_kb(buf + e_first + one)} on the busiest PE of a "
                         f"{p_y}x{p_x} region (embedding table {_kb(e_first)}, one layer {_kb(one)}, buffers "
                         f"{_kb(buf)}), {_kb(capacity)} available", buf + e_first + one)

    counts = _fewest_even(L, capacity - buf, e_first, e_last, tied, layer_bytes, homogeneous, even=detail,
                          memo=mem.most, both=e_both)
    stages, first = [], 0
    n_st = len(counts)
    if not detail and n_st > per_wafer * wafers:
        raise RegionShortage(f"{prefix}{n_st} regions of {p_y}x{p_x} needed, {per_wafer * wafers} available", n_st)
    for i, count in enumerate(counts):
        extras: list[str] = []
        if i == 0 and vocab:
            extras.append("embedding")
        if i == n_st - 1 and vocab:
            extras.append("lm_head")
        e = (e_both if n_st == 1 else e_first if i == 0 else e_last if i == n_st - 1 else 0) if vocab else 0
        wafer, y, x = region_origin(spec, grid, i)
        w = mem.weights(count)
        stages.append(Stage(index=i, wafer=wafer, origin=(y, x), layers=(first, first + count - 1),
                            extras=tuple(extras), weight_bytes=w, kv_bytes=layer_bytes(first, count) - w
                            if count else 0, buffer_bytes=buf, extras_bytes=e, grid=grid))
        first += count
    return Placement(grid=grid, stages=tuple(stages), wafers=wafers, regions_per_wafer=per_wafer,
                     capacity_per_pe=capacity, buffer_bytes=buf,
                     score_chunk=charge.score_chunk if charge is not None else SCORE_CHUNK)


def strip_width(spec: HardwareSpec, grid: tuple[int, int]) -> int:
    """Columns left over at the end of each band of P_y rows when it holds floor(W/P_x) full regions."""
    return spec.mesh_width % grid[1]


def packed_regions(spec: HardwareSpec, grid: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(y, x, columns) of every region of one wafer, in stage order, when each band of P_y rows holds
    floor(W/P_x) full regions and the strip of W mod P_x columns beside them: serpentine (even bands west to
    east, odd bands mirrored, east to west), the strip last in its band's order. Consecutive regions share
    an edge: within a band side by side, and a band change goes south from a strip into the full region
    below that spans its columns (even bands end with the strip at the east edge, odd bands at the west)."""
    p_y, p_x = grid
    W = spec.mesh_width
    n, s = W // p_x, W % p_x
    out: list[tuple[int, int, int]] = []
    for band in range(spec.mesh_height // p_y):
        y = band * p_y
        if band % 2 == 0:
            out += [(y, k * p_x, p_x) for k in range(n)] + ([(y, n * p_x, s)] if s else [])
        else:
            out += [(y, W - (k + 1) * p_x, p_x) for k in range(n)] + ([(y, 0, s)] if s else [])
    return out


def packed_counts(caps: list[int], widths: list[int], full_width: int, total: int) -> list[int]:
    """Layer counts over packed regions of ``widths`` holding at most ``caps`` layers each (sum >= total):
    the strips (width other than ``full_width``) take as few layers as the full regions leave them, then the
    counts are as even as possible within the full regions and within the strips (``_water_fill``)."""
    full = [i for i in range(len(widths)) if widths[i] == full_width]
    narrow = [i for i in range(len(widths)) if widths[i] != full_width]
    on_strips = max(0, total - sum(caps[i] for i in full))
    counts = [0] * len(widths)
    for group, n in ((narrow, on_strips), (full, total - on_strips)):
        for i, c in zip(group, _water_fill([caps[i] for i in group], n)):
            counts[i] = c
    return counts


def _water_fill(caps: list[int], total: int) -> list[int]:
    """Counts c_i <= caps_i adding up to ``total`` (<= sum of caps) with the smallest largest count;
    the extra ones taken from the latest regions at that largest count."""
    if total <= 0 or not caps:
        return [0] * len(caps)
    lo, hi = 0, max(caps)
    while lo < hi:  # the smallest level T with sum(min(cap, T)) >= total
        mid = (lo + hi) // 2
        if sum(min(c, mid) for c in caps) >= total:
            hi = mid
        else:
            lo = mid + 1
    counts = [min(c, lo) for c in caps]
    excess = sum(counts) - total
    for i in reversed(range(len(counts))):
        if excess == 0:
            break
        if counts[i] == lo and lo > 0:
            counts[i] -= 1
            excess -= 1
    return counts


def place_layers_packed(spec: HardwareSpec, dims: LayerDims, layer_tokens: tuple[int, ...] | list[int], vocab: int,
                        tied: bool, grid: tuple[int, int], dtype: str = "fp16", batch: int = 1,
                        wafers: int = 1, charges: dict[int, ProgramCharge] | None = None) -> Placement:
    """The layers over the packed regions of ``grid`` (``packed_regions``: the full P_y × P_x regions and the
    strip of W mod P_x columns of every band), wafer by wafer: the fewest stages (regions used in stage
    order), the strips holding as few layers as memory allows (a narrower region runs a layer more
    slowly), the layers then spread as evenly as they fit over the full regions and over the strips.

    Every layer must cache as many tokens (no mix of sliding-window and full layers) and the strip must
    hold at least one layer; else, or when the regions do not hold the model, InputError. ``charges``:
    per region width, what the decode program allocates (``ProgramCharge``; see ``place_layers``)."""
    p_y, p_x = grid
    s = strip_width(spec, grid)
    L = len(layer_tokens)
    bands = spec.mesh_height // p_y
    if s == 0 or bands == 0:
        raise InputError(f"{p_y}x{p_x} regions leave no strip on the {spec.name} mesh")
    tokens = tuple(layer_tokens)
    if len(set(tokens)) > 1:
        raise InputError("packing places layers that all cache as many tokens")
    capacity = spec.usable_sram_bytes
    b = 2 if dtype == "fp16" else 4
    mem = {w: layer_memory(dims, (p_y, w), tokens, dtype, batch, charges[w].per_layer if charges else None)
           for w in (p_x, s)}
    buf = {w: charges[w].buffers if charges else decode_buffer_bytes(dims, p_y, w, dtype, batch) for w in (p_x, s)}
    emb = {w: embedding_bytes_per_pe(vocab, dims.hidden, (p_y, w), b) if vocab else 0 for w in (p_x, s)}

    def most(w: int, extra: int) -> int:
        """The most layers a region of w columns holds beside ``extra`` bytes; -1 when they alone do not fit."""
        room = capacity - buf[w] - extra
        if room < 0:
            return -1
        if L == 0:
            return 0
        key = (0, room)
        m = mem[w].most
        if key not in m:
            m[key] = _most_layers(mem[w].layer_bytes, 0, L, room, True)
        return m[key]

    if most(s, 0) < 1:
        raise InputError(f"a strip of {p_y}x{s} PEs does not hold one layer")
    n = spec.mesh_width // p_x
    if wafers * bands * (n * most(p_x, 0) + most(s, 0)) < L:  # cheap: every region without extras
        raise InputError(f"{wafers * bands * (n + 1)} packed regions of {p_y}x{p_x} (strips {p_y}x{s}) do not "
                         f"hold {L} layers")
    regions = packed_regions(spec, grid)
    widths = [w for _, _, w in regions] * wafers

    def extras(i: int, k: int) -> tuple[int, list[str]]:
        w, e, names = widths[i], 0, []
        if charges and vocab:
            c = charges[w]
            names = (["embedding"] if i == 0 else []) + (["lm_head"] if i == k - 1 else [])
            return (c.both if k == 1 else c.first if i == 0 else c.last if i == k - 1 else 0), names
        if i == 0 and vocab:
            e, names = e + emb[w], names + ["embedding"]
        if i == k - 1 and vocab:
            e, names = e + (0 if (tied and k == 1) else emb[w]), names + ["lm_head"]
        return e, names

    counts = None
    middle = 0  # the most layers regions 1 .. k - 2 hold
    bare = {w: max(0, most(w, 0)) for w in (p_x, s)}
    ends: dict = {}  # (region, k == 1) -> the most layers beside its extras
    for k in range(1, len(widths) + 1):
        if k >= 3:
            middle += bare[widths[k - 2]]
        caps = []
        for i in {0, k - 1}:
            key = (0 if i == 0 else widths[i], i == 0, k == 1)
            if key not in ends:
                ends[key] = most(widths[i], extras(i, k)[0])
            caps.append(ends[key])
        if min(caps) < 0:
            continue
        if sum(caps) + middle >= L:
            caps = [most(widths[i], extras(i, k)[0]) for i in range(k)]
            counts = packed_counts(caps, widths[:k], p_x, L)
            break
    if counts is None:
        raise InputError(f"{len(widths)} packed regions of {p_y}x{p_x} (strips {p_y}x{s}) do not hold the model")
    per_wafer = len(regions)
    stages, first = [], 0
    for i, count in enumerate(counts):
        w = widths[i]
        y, x, _ = regions[i % per_wafer]
        e, names = extras(i, len(counts))
        wb = mem[w].weights(count)
        stages.append(Stage(index=i, wafer=i // per_wafer, origin=(y, x), layers=(first, first + count - 1),
                            extras=tuple(names), weight_bytes=wb,
                            kv_bytes=mem[w].layer_bytes(first, count) - wb if count else 0, buffer_bytes=buf[w],
                            extras_bytes=e, grid=(p_y, w)))
        first += count
    return Placement(grid=grid, stages=tuple(stages), wafers=wafers, regions_per_wafer=per_wafer,
                     capacity_per_pe=capacity, buffer_bytes=max(buf.values()), strip_width=s,
                     score_chunk=min(c.score_chunk for c in charges.values()) if charges else SCORE_CHUNK)


def _fewest_even(L: int, room: int, emb: int, lm: int, tied: bool,
                 layer_bytes: Callable[[int, int], int], homogeneous: bool = False,
                 even: bool = True, memo: dict | None = None, both: int | None = None) -> list[int]:
    """Layer counts per stage: the fewest stages, then the smallest largest count. A stage takes
    at most ``cap`` layers; the first also holds ``emb`` bytes, the last ``lm``, one stage holding
    both ``both`` (default ``emb``, and ``lm`` too unless tied); a final stage may hold only the LM head.

    ``layer_bytes(first, n)`` never decreases with n, so the most layers a stage starting at
    ``first`` holds under a cap is min(cap, the most it holds at all): that is searched once per
    (start, extra bytes) (once per extra when every layer costs the same, ``homogeneous``).

    The greedy first pass (each stage takes all it can) already needs the fewest stages: for any
    placement in k stages, greedy's i-th stage ends no earlier than its i-th, so the rest of the
    layers fit greedy's k-th stage too (a stage's bytes never grow when it holds fewer layers).
    ``even=False`` returns that pass. ``memo``: the most layers per (start, bytes), kept by the
    caller for later placements of the same layers on the same grid (``LayerMemory.most``)."""
    most: dict[tuple[int, int], int] = {} if memo is None else memo
    single = both if both is not None else (emb if tied else emb + lm)

    def fit(first: int, limit: int, extra: int) -> int:
        key = (0 if homogeneous else first, room - extra)
        if key not in most:
            most[key] = _most_layers(layer_bytes, key[0], L - key[0], room - extra, homogeneous)
        return min(limit, most[key])

    def assign_homogeneous(cap: int) -> list[int] | None:
        """``assign`` when every layer costs the same: a stage's bytes depend only on its layer
        count, so "the rest fits a last stage with the LM head" is "rest <= the most layers beside
        it" (or, with no layer left, the LM head alone fits), and every middle stage takes
        min(cap, rest, the most layers a stage holds): the same counts, without a call per stage."""
        rem = L
        if rem <= cap and layer_bytes(0, rem) + single <= room:
            return [rem]
        n = fit(0, min(cap, rem), emb)
        if n == 0:
            return None
        counts = [n]
        rem -= n
        m0, m_lm = fit(0, L, 0), fit(0, L, lm)
        while True:
            if rem <= cap:
                if (rem <= m_lm) if rem > 0 else (lm <= room):
                    counts.append(rem)
                    return counts
                if rem == 0:
                    return None
            n = min(cap, rem, m0)
            if n == 0:
                return None
            counts.append(n)
            rem -= n

    def assign(cap: int) -> list[int] | None:
        if homogeneous:
            return assign_homogeneous(cap)
        counts: list[int] = []
        a = 0
        while True:
            first = not counts
            rem = L - a
            if rem <= cap:  # try to make this the last stage (it then holds the LM head too)
                finish = single if first else lm
                if layer_bytes(a, rem) + finish <= room:
                    counts.append(rem)
                    return counts
                if rem == 0:
                    return None
            n = fit(a, min(cap, rem), emb if first else 0)
            if n == 0:
                return None
            counts.append(n)
            a += n

    if L == 0:
        return [0]
    best = assign(L)
    if best is None:
        raise InputError("cannot place the layers")  # unreachable: checked in place_layers
    if not even:
        return best
    lo, hi = ceil_div(L, len(best)), L
    while lo < hi:  # smallest cap that needs no more stages
        mid = (lo + hi) // 2
        c = assign(mid)
        if c is not None and len(c) <= len(best):
            hi = mid
        else:
            lo = mid + 1
    return assign(lo) or best


def _most_layers(layer_bytes: Callable[[int, int], int], first: int, limit: int, room: int,
                 homogeneous: bool) -> int:
    """The largest n <= limit with layer_bytes(first, n) <= room (0 if none), for a
    layer_bytes that never decreases with n. When every layer caches as many tokens, n layers
    never take more than n times one (balancing only saves), so n0 = room // one layer fits and
    the search gallops up from there; else it starts from one layer."""
    one = layer_bytes(first, 1) if limit >= 1 else 0
    if limit < 1 or one > room:
        return 0
    lo = min(limit, room // one) if homogeneous and one > 0 else 1  # fits
    step = 1
    while lo < limit:  # find hi > lo that does not fit (or run out)
        hi = min(limit, lo + step)
        if layer_bytes(first, hi) <= room:
            lo, step = hi, step * 2
            continue
        while lo + 1 < hi:  # lo fits, hi does not
            mid = (lo + hi) // 2
            if layer_bytes(first, mid) <= room:
                lo = mid
            else:
                hi = mid
        return lo
    return lo


def stage_fit_message(spec: HardwareSpec, placement: Placement, model_name: str, what: str = "") -> str:
    """Why a placement does not fit, with the binding numbers: the regions needed, the layers per stage
    and the busiest stage's PE by part (layers' weights and K|V, buffers, embedding or LM head)."""
    p_y, p_x = placement.grid
    prefix = f"{what}: " if what else ""
    need = len(placement.stages)
    busy = max(placement.stages, key=lambda s: s.bytes_per_pe)
    whose = "layers'" if busy.num_layers != 1 else "layer's"
    parts = [f"{busy.num_layers} {whose} weights {_kb(busy.weight_bytes)} "
             f"and K|V {_kb(busy.kv_bytes)}", f"buffers {_kb(busy.buffer_bytes)}"]
    if busy.extras_bytes:
        parts.append(f"{' and '.join(e.replace('_', ' ') for e in busy.extras)} {_kb(busy.extras_bytes)}")
    return (f"{prefix}{model_name} needs {need} regions of {p_y}x{p_x} PEs (layers per stage "
            f"{_runs([s.num_layers for s in placement.stages])}; the busiest, stage {busy.index}, holds "
            f"{_kb(busy.bytes_per_pe)} per PE of {_kb(placement.capacity_per_pe)}: {', '.join(parts)}); "
            f"{placement.wafers} x {spec.name} {'has' if placement.wafers == 1 else 'have'} room for "
            f"{placement.regions_available}")


def _runs(counts: list[int]) -> str:
    """``[1, 2, 2, 2, 1]`` -> ``"1, 2 x 3, 1"``."""
    out: list[list[int]] = []
    for c in counts:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return ", ".join(f"{c} x {n}" if n > 1 else f"{c}" for c, n in out)


def kv_capacity_placed(placement: Placement, mem_for: Callable[[int], Placement | None]) -> int:
    """Largest context (tokens per request, shift layout) whose placement on the same stages still
    fits: ``mem_for(tokens)`` re-places the model at that context (None when it does not fit)."""
    lo, hi = 0, 1
    while mem_for(hi) is not None and hi < 1 << 40:
        lo, hi = hi, hi * 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if mem_for(mid) is not None:
            lo = mid
        else:
            hi = mid
    return lo
