"""The prefill layer's attention phase on the simulator against `plmr.attention.ring_attention`, the charge
`plmr.transformer.prefill_phases` makes for it: the formula follows the program (the simulator is the
independent side)."""

from __future__ import annotations

import dataclasses

from meshgemm import prefill_program as PP
from plmr.hardware import WSE2
from plmr.transformer import prefill_phases
from simulator import Device
from waferllm.catalog import load_catalog_model
from waferllm.planner import model_dims


def test_the_attention_phase_on_the_busiest_row_is_ring_attentions_charge():
    """Qwen2.5-0.5B, 8², 32 tokens, timing-only: the busiest row (the last: it computes every key block)
    takes the cycles `ring_attention` charges, to 0.2%. That needs its three program facts: a ring
    step that shifts the K|V block loses a cycle per moving wavelet (the block's 1,024 wavelets do not
    hide behind the compute), the last step shifts nothing, and the all-to-alls' directions serialise
    the G = 4 columns' receives; the charge before them was 6.5% short."""
    model = dataclasses.replace(load_catalog_model("qwen2.5-0.5b"), num_layers=1, sliding_window_layers=())
    hw = WSE2.with_params(sram_bytes=1 << 24)  # the same cycles; only the fit check moves
    mesh, tokens = (8, 8), 32
    last = mesh[0] - 1
    pp = PP.build_prefill_program(model, hw, mesh, tokens, layers=(0,), dtype="fp16", acc="fp32",
                                  debug_stops=True, probes=[(x, last) for x in range(mesh[1])])
    res = Device(pp.program, hw, mode="timing").launch("prefill", nl=1, stop=PP.PHASES.index("attention"))
    stamps = {(x, label): cyc for x, y, label, cyc in res.timestamps}
    took = max(stamps[x, "attention"] - stamps[x, "rope"] - 1 for x in range(mesh[1]))  # a stamp costs 1
    charged = prefill_phases(hw, model_dims(model), *mesh, tokens, "fp16")["attention"].total_cycles
    assert abs(took - charged) <= 0.002 * charged, (took, charged)
