"""Prefill on the simulated wafer: a prompt through every layer, then its KV cache and last hidden state in
the decode layout (method §3.2, §3.6, §9).

`run_prefill` is the one entry point `waferllm run` uses:

* the layers are split over **stages**, each a P_y × P_x region running `prefill_program` for its
  resident layers (as many layers as fit its SRAM, `layers_per_stage`); each stage is a simulated
  `Device` (functional, or timing-only: the same program and cycles without data);
* between stages the hidden rows move to the next region (host copy; the cycles are **modelled**
  like the planner's prefill hand-off: one PE's activation block over a region side);
* after the last stage, `prefill_relayout` moves every layer's K and V and the last position's hidden
  vector to the decode layout (host copy; the switch cycles are **modelled**: busiest link plus
  distance).

The result carries the decode blocks (`DecodeDataflow.caches` / `DecodeLayout.hidden_vec` shapes) and
the simulated cycles per stage, per layer and per phase, with every modelled figure labelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from meshgemm import prefill_program as PP
from meshgemm.kv_cache import ShiftKVCache
from meshgemm.model_layout import Blocks, DecodeLayout
from meshgemm.prefill_relayout import KVRelayout, LinkLoad, Region, SwitchCost, hidden_relayout
from plmr.collectives import message
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.prefill_memory import PrefillModel, prefill_layer_bytes
from simulator import Device

MODES = ("functional", "timing")


@dataclass
class StageRun:
    """One stage's launch: its layers, simulated cycles, per-layer and per-phase cycles (at the probe
    PE that finished last), and the simulator's statistics."""

    layers: tuple[int, ...]
    mesh: tuple[int, int]
    cycles: int
    layer_cycles: list[int]
    phase_cycles: dict[str, int]
    stats: dict


@dataclass
class PrefillResult:
    """What a prefill leaves for decode, and what it cost.

    ``k_cache[i]``, ``v_cache[i]``: layer i's cache per decode PE, [capacity, kv features of the
    column], token t in ring slot t mod capacity on the row `ShiftKVCache.prefill` gives (None in
    timing mode or without a decode layout). ``hidden``: the last position's hidden vector, Y-dist
    over the decode mesh (``DecodeLayout.hidden_vec`` blocks). ``final_hidden``: every position [L, E]
    after the last layer (functional). Cycles: ``stages`` (simulated), ``handoff_cycles`` and
    ``switch`` (modelled)."""

    length: int
    stages: list[StageRun]
    handoff_cycles: int
    switch: SwitchCost
    k_cache: list | None = None
    v_cache: list | None = None
    hidden: Blocks | None = None
    final_hidden: np.ndarray | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def prefill_cycles(self) -> int:
        """Simulated layers plus the modelled hand-offs between stages."""
        return sum(s.cycles for s in self.stages) + self.handoff_cycles

    @property
    def total_cycles(self) -> int:
        """Prefill plus the modelled switch to the decode layout."""
        return self.prefill_cycles + self.switch.cycles

    def phases(self) -> dict:
        """Cycles per phase, JSON-ready (integers), with what is modelled said so."""
        return {"prefill_layers_cycles": sum(s.cycles for s in self.stages),
                "prefill_handoff_cycles_modelled": int(self.handoff_cycles),
                "switch_cycles_modelled": int(self.switch.cycles),
                "per_stage_cycles": [int(s.cycles) for s in self.stages],
                "per_layer_cycles": [int(c) for s in self.stages for c in s.layer_cycles]}


def layers_per_stage(spec, hardware: HardwareSpec, mesh: tuple[int, int], seq_len: int, dtype: str = "fp32",
                     acc: str = "fp32") -> int:
    """The most layers one region of ``mesh`` holds with the prefill program (weights, caches and
    buffers of every resident layer, the program's code): built once with one layer; each more layer
    adds the same bytes on every PE, the buffer table's (``plmr.prefill_memory.prefill_layer_bytes``,
    which the program allocates from). Raises InputError with the numbers when not even one fits."""
    big = hardware.with_params(sram_bytes=1 << 30)
    one = PP.build_prefill_program(spec, big, mesh, seq_len, layers=(0,), dtype=dtype, acc=acc)
    need1 = max(b.sram_bytes for b in one.program.blocks)
    per = 0 if spec.num_layers == 1 else prefill_layer_bytes(PrefillModel.of(spec), *mesh, seq_len, dtype)
    limit = hardware.usable_sram_bytes
    if need1 > limit:
        raise InputError(f"prefill of {spec.name} ({seq_len} tokens) on a {mesh[0]}x{mesh[1]} region needs "
                         f"{need1} B per PE for one layer (weights, caches, buffers, code); {hardware.name} has "
                         f"{limit} B usable: use a larger region or a shorter prompt")
    if per <= 0:
        return spec.num_layers
    return int(min(spec.num_layers, 1 + (limit - need1) // per))


def split_layers(num_layers: int, per_stage: int) -> list[tuple[int, ...]]:
    """Consecutive layers over the fewest stages, as even as possible."""
    n = -(-num_layers // per_stage)
    base, extra = divmod(num_layers, n)
    out, start = [], 0
    for s in range(n):
        k = base + (1 if s < extra else 0)
        out.append(tuple(range(start, start + k)))
        start += k
    return out


def plan_stages(spec, hardware: HardwareSpec, mesh: tuple[int, int], seq_len: int, dtype: str = "fp32",
                acc: str = "fp32") -> list[tuple[int, ...]]:
    """The layers of each prefill region: as many consecutive layers per region as its SRAM holds
    (`layers_per_stage`), over the fewest regions. InputError with the numbers when one layer does not fit."""
    return split_layers(spec.num_layers, layers_per_stage(spec, hardware, mesh, seq_len, dtype, acc))


def run_prefill(spec, prompt: Sequence[int] | int, mesh: tuple[int, int], hardware: HardwareSpec, *,
                weights=None, stages: Sequence[Sequence[int]] | None = None, decode: DecodeLayout | None = None,
                capacity: int | None = None, dtype: str = "fp32", acc: str = "fp32", mode: str = "functional",
                progress: Callable[[str], None] | None = None, threads: int | None = None) -> PrefillResult:
    """Run the prompt through every layer on simulated ``mesh`` regions and re-lay its KV cache and last
    hidden state out for ``decode`` (see the module docstring). ``prompt``: token ids (functional) or
    the prompt length (timing). ``stages``: the layers of each stage (default: as many per region as
    fit). ``capacity``: KV entries per decode PE (default: the prompt's rows, ⌈L/D_y⌉)."""
    t0 = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(prompt, (int, np.integer)):
        if mode == "functional":
            raise InputError("a functional prefill needs the prompt's token ids, not just its length")
        L, ids = int(prompt), None
    else:
        ids = [int(t) for t in prompt]
        L = len(ids)
        bad = [t for t in ids if not 0 <= t < spec.vocab_size]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the vocabulary 0..{spec.vocab_size - 1}")
    if L < 1:
        raise InputError("the prompt needs at least one token")
    if mode == "functional" and weights is None:
        raise InputError("a functional prefill needs the model's weights")
    if stages is None:
        stages = plan_stages(spec, hardware, mesh, L, dtype, acc)
    stages = [tuple(s) for s in stages]
    if sorted(i for s in stages for i in s) != list(range(spec.num_layers)):
        raise InputError(f"stages must cover layers 0..{spec.num_layers - 1} once each, got {stages}")
    say = progress or (lambda msg: None)

    h = None
    if mode == "functional":
        h = np.asarray(weights.embed)[np.asarray(ids)]
    runs: list[StageRun] = []
    kv_pre: dict[int, tuple] = {}  # layer -> (stage index, K blocks, V blocks) in the prefill layout
    last_blocks = None
    pp = None
    for si, layers in enumerate(stages):
        say(f"stage {si + 1}/{len(stages)}: layers {layers[0]}-{layers[-1]} on {mesh[0]}x{mesh[1]}")
        pp = PP.build_prefill_program(spec, hardware, mesh, L, layers=layers, dtype=dtype, acc=acc)
        dev = Device(pp.program, hardware, mode=mode, threads=threads)
        if mode == "functional":
            PP.load(dev, pp, spec, weights)
            PP.write_hidden(dev, pp, h)
        res = dev.launch("prefill", nl=len(layers))
        runs.append(_stage_run(pp, res))
        if mode == "functional":
            h = PP.read_hidden(dev, pp)
            s = pp.sizes
            for i, layer in enumerate(layers):
                kvc = s.cols(s.tkv)
                off = i * pp.kv_block
                kv_pre[layer] = (si, PP.read_blocks(dev, pp, "KVC", kvc, off),
                                 PP.read_blocks(dev, pp, "KVC", kvc, off + s.q_y * kvc * s.m))
            if si == len(stages) - 1:
                last_blocks = PP.read_blocks(dev, pp, "X", s.cols(s.e))
        del dev

    lay = pp.layout
    s = pp.sizes
    handoff = 0
    if len(stages) > 1:  # the planner's prefill hand-off: one PE's block over a region side, per boundary
        blk = s.q_y * s.m * s.cols(s.e)
        handoff = int(round(message(hardware, blk, max(mesh), 0, dtype).total_cycles)) * (len(stages) - 1)

    result = PrefillResult(L, runs, handoff, SwitchCost(), final_hidden=h if mode == "functional" else None)
    result.notes.append("hand-offs between stages and the prefill -> decode switch are modelled, not simulated")
    if decode is not None:
        cap = capacity or -(-L // decode.p_y)
        D_y, D_x = decode.p_y, decode.p_x
        width = max(len(stages) * mesh[1], D_x)
        links = LinkLoad(width, max(mesh[0], D_y))
        np_dt = np.float16 if dtype == "fp16" else np.float32
        k_out, v_out = [], []
        say("switch: KV cache and last hidden state to the decode layout")
        plans: dict = {}
        for layer in range(spec.num_layers):
            rule = ShiftKVCache(D_y, cap, spec.layer_sliding_window(layer))
            key = rule.window
            if key not in plans:
                plans[key] = KVRelayout.build(lay, decode, rule, L)
            rl = plans[key]
            si = next(i for i, st in enumerate(stages) if layer in st)
            rl.load(links, Region(si * mesh[1], 0, *mesh), Region(0, 0, D_y, D_x))
            if mode == "functional":
                _, kb, vb = kv_pre[layer]
                k_out.append(rl.apply(kb, np_dt))
                v_out.append(rl.apply(vb, np_dt))
        last = Region((len(stages) - 1) * mesh[1], 0, *mesh)
        if mode == "functional":
            result.k_cache, result.v_cache = k_out, v_out
            result.hidden = hidden_relayout(lay, decode, last_blocks, L - 1, np_dt, links, last, Region(0, 0, D_y, D_x))
        else:
            dummy = [[np.zeros((s.T, s.cols(s.e))) for _ in range(mesh[1])] for _ in range(mesh[0])]
            hidden_relayout(lay, decode, dummy, L - 1, np_dt, links, last, Region(0, 0, D_y, D_x))
        result.switch = links.cost(hardware)
    result.wall_s = time.perf_counter() - t0
    return result


def _stage_run(pp: PP.PrefillProgram, res) -> StageRun:
    """Per-layer and per-phase cycles from the probes' timestamps (the probe that ended last)."""
    stamps: dict = {}
    for (x, y, label, cyc) in res.timestamps:
        stamps.setdefault((x, y), []).append((label, cyc))
    layer_cycles: list[int] = []
    phases: dict[str, int] = {}
    if stamps:
        probe = max(stamps, key=lambda k: stamps[k][-1][1])
        seq = stamps[probe]
        prev = 0
        for label, cyc in seq:
            phases[label] = phases.get(label, 0) + (cyc - prev)
            if label == PP.PHASES[-1]:
                layer_cycles.append(cyc - (sum(layer_cycles)))
            prev = cyc
    stats = {k: res.stats[k] for k in ("run_s", "compile_s", "ce_visits", "router_visits", "wavelet_moves",
                                       "code_bytes_per_pe", "sram_bytes_per_pe", "param_sets")}
    return StageRun(pp.layers, (pp.p_y, pp.p_x), int(res.total_cycles), layer_cycles, phases, stats)
