"""What `waferllm plan` says about requests it plans differently from how they read: fewer wafers than
asked for, a context beyond the model's trained length or shorter than the prompt, and a model whose
weights alone need more systems than `--wafers auto` tries. Notes only: the planned figures stay."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from waferllm.cli import main

# plans the same requests several times: one search per request (tests/waferllm/conftest.py)
pytestmark = pytest.mark.usefixtures("one_search_per_request")


def plan_json(*args: str) -> dict:
    r = CliRunner().invoke(main, ["plan", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_a_plan_that_holds_on_fewer_wafers_than_requested_says_so():
    one, two = plan_json("llama3-8b"), plan_json("llama3-8b", "--wafers", "2")
    stages = two["layer_placement"]["stages"]
    assert {s["wafer"] for s in stages} == {0} and two["layer_placement"]["wafers"] == 2
    assert two["wafers"] == 1
    assert "holds on 1 of the 2 wafers requested (the stages fill the wafers in order); the others stay unused " \
           "and the figures are for 1" in two["notes"]
    assert not any("wafers requested" in n for n in one["notes"])
    assert two["decode"]["grid"] == one["decode"]["grid"]  # a note only: the plan is the same


def test_the_default_context_beyond_the_models_length_is_noted():
    from waferllm.catalog import resolve_model
    from waferllm.compile import default_context

    model = resolve_model("llama2-7b")
    assert model.max_position_embeddings == 4096  # and the default context is 4096 + 128
    d = plan_json("llama2-7b")
    assert d["context"] == 4096 + 128
    [note] = [n for n in d["notes"] if "max_position_embeddings" in n]
    assert note.startswith("context 4224 (--input-len 4096 + --output-len 128) exceeds the model's "
                           "max_position_embeddings 4096")
    # what compile does instead: its default stops at the model's length, which the note offers
    assert default_context(model) == 4096 and note.endswith("(give --context 4096 or less)")
    # within the model's length: nothing to say (llama3-8b is trained for 8192)
    assert not any("max_position_embeddings" in n for n in plan_json("llama3-8b")["notes"])


def test_a_context_shorter_than_the_prompt_is_noted():
    d = plan_json("llama3-8b", "--context", "16")
    assert (d["input_len"], d["context"]) == (4096, 16)
    assert any(n.startswith("--context 16 is shorter than the 4096-token prompt (--input-len)") for n in d["notes"])
    ok = plan_json("llama3-8b", "--batch", "8", "--input-len", "1920", "--context", "2048")  # the README's
    assert not any("shorter than" in n for n in ok["notes"])


def test_weights_beyond_every_wafer_count_auto_tries_are_one_line_with_the_numbers(tmp_path):
    from plmr.hardware import get_spec
    from waferllm.catalog import resolve_model

    hw = tmp_path / "h_tiny.toml"
    hw.write_text('base = "wse2"\nname = "tiny"\nmesh_width = 20\nmesh_height = 20\nfabric_width = 27\n'
                  'fabric_height = 22\n')
    r = CliRunner().invoke(main, ["plan", "llama3-8b", "--hardware", str(hw), "--wafers", "auto"])
    err = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(err) == 1 and "None" not in err[0], r.output
    spec, model = get_spec(str(hw)), resolve_model("llama3-8b")
    weight_bytes = model.total_params * 2  # fp16
    systems = math.ceil(weight_bytes / (400 * spec.usable_sram_bytes))  # 20 x 20 PEs
    assert systems > 64
    assert err[0] == (f"Error: llama3-8b does not fit 64 x tiny: its fp16 weights ({weight_bytes / 1e9:.2f} GB) "
                      f"need at least {systems:,} systems of {400 * spec.usable_sram_bytes / 1e9:.3f} GB of usable "
                      f"SRAM (400 PEs), more than the 64 --wafers auto tries")


def _prefill_fits(model, **req) -> list[bool]:
    from plmr.hardware import WSE2
    from waferllm.planner import PlanRequest, _NothingFits, _prefill

    fits = []
    for n in range(1, 9):
        try:
            _prefill(model, PlanRequest(hardware=WSE2, wafers=n, **req), [], explain=False)
            fits.append(True)
        except _NothingFits:
            fits.append(False)
    return fits


@pytest.mark.parametrize("name,req", [("llama3-70b", {"input_len": 4096}), ("qwen2-72b", {"input_len": 4096})])
def test_the_prefill_fits_on_every_wafer_count_above_one_that_holds_it(name, req):
    """What `--wafers auto` rests on when it stops at a prefill that fits nowhere: more wafers never take
    the fit away (counted by trying 1-8 wafers, where these models start to fit)."""
    from waferllm.catalog import resolve_model

    fits = _prefill_fits(resolve_model(name), output_len=16, **req)
    assert not fits[0] and fits[-1], fits  # the case exercises a change of fit
    assert fits == sorted(fits), fits


def test_wafers_auto_says_at_once_when_the_prefill_fits_no_wafer_count(monkeypatch):
    """A prompt whose prefill layer fits no region (a 12-layer model, 4K tokens and the programs' own bytes
    on a 16x16 wafer; LLaMA3-8B at 32K tokens on WSE-2 is the same case) fails with the message of the
    most wafers, without planning every count from the first (a minute for LLaMA3-8B before)."""
    from dataclasses import replace

    from plmr.errors import InputError
    from plmr.hardware import WSE2
    from waferllm import planner
    from waferllm.model import spec_from_config_dict

    model = spec_from_config_dict({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 96,
                                   "intermediate_size": 256, "num_hidden_layers": 12, "num_attention_heads": 6,
                                   "num_key_value_heads": 2, "vocab_size": 500}, "tiny12")
    hw = WSE2.with_params(name="small-16x16", mesh_width=16, mesh_height=16, fabric_width=23, fabric_height=18)
    req = planner.PlanRequest(hardware=hw, input_len=4096, context=4112, program_memory=True, wafers="auto")
    with pytest.raises(InputError) as most:
        planner._plan_on(model, replace(req, wafers=planner.MAX_WAFERS))
    counts = []
    real = planner._plan_on
    monkeypatch.setattr(planner, "_plan_on", lambda m, r, *a, **k: counts.append(r.wafers) or real(m, r, *a, **k))
    with pytest.raises(InputError) as auto:
        planner.plan(model, req)
    assert str(auto.value) == f"tiny12 does not fit 64 x small-16x16: {most.value}"
    assert "prefill: no grid holds tiny12" in str(auto.value)
    first = counts[0]
    assert counts == [first, planner.MAX_WAFERS] and first < planner.MAX_WAFERS, counts  # then the explanation


def test_the_stage_map_shows_stages_without_a_region_as_unplaced():
    """The paper method's LLaMA3-8B needs more regions than one WSE-2 has: the stage map names no
    wafer for the stages past the room (it used to put them on a wafer 1 that was not asked for)."""
    d = plan_json("llama3-8b", "--method", "paper")
    lp = d["layer_placement"]
    room, stages = lp["regions_available"], lp["stages"]
    assert d["wafers"] == 1 and len(stages) > room and d["memory"]["fits"] is False
    r = CliRunner(env={"COLUMNS": "160"}).invoke(main, ["plan", "llama3-8b", "--method", "paper"])
    assert r.exit_code == 0, r.output
    over = len(stages) - room
    assert f"stage map ({over} stages without a region: 1 x wse2 has room for {room})" in r.stdout
    rows = [line.split("│") for line in r.stdout.splitlines() if line.startswith("│")]
    by_stage = {int(c[1]): c[2].strip() for c in rows if len(c) > 3 and c[1].strip().isdigit()}
    assert [by_stage[s["stage"]] for s in stages] == ["0"] * room + ["none"] * over
