"""Layer placement: the fewest stages against a brute-force partition, the search's quick
placements against the full ones, and the layer-count search against a linear scan."""

from __future__ import annotations

import functools
import random

import pytest

from plmr.errors import InputError
from plmr.hardware import WSE2
from plmr.transformer import LayerDims
from waferllm.placement import _most_layers, embedding_bytes_per_pe, layer_memory, place_layers

# plans the same requests several times: one search per request (tests/waferllm/conftest.py)
pytestmark = pytest.mark.usefixtures("one_search_per_request")

DIMS = [LayerDims(4096, 14336, 32, 8, 128), LayerDims(5120, 13824, 40, 40, 128),
        LayerDims(8192, 29568, 64, 8, 128, qkv_bias=True), LayerDims(896, 4864, 14, 2, 64, qkv_bias=True)]


def _draw(rng: random.Random):
    dims = rng.choice(DIMS)
    layers = rng.choice([1, 2, 7, 24, 40, 80])
    ctx = rng.choice([128, 4096, 32768])
    tokens = tuple([ctx] * layers) if rng.random() < 0.6 else \
        tuple(rng.choice([ctx, 1024, rng.randint(0, 9000)]) for _ in range(layers))
    grid = (rng.randint(60, 600), rng.randint(60, 750))
    vocab = rng.choice([0, 32000, 152064])
    return dims, tokens, vocab, rng.random() < 0.3, grid, rng.choice([1, 1, 4]), rng.choice([1, 5])


def _fewest_by_partition(spec, dims, tokens, vocab, tied, grid, batch) -> int | None:
    """Brute force over every split into consecutive stages: a stage [a, b) fits when its layers'
    bytes plus its extras fit beside the buffers; the first holds the embedding table, the last
    the LM head (nothing more when tied and alone), and a last stage may hold only the LM head."""
    mem = layer_memory(dims, grid, tokens, "fp16", batch)
    from plmr.transformer import decode_buffer_bytes

    room = spec.usable_sram_bytes - decode_buffer_bytes(dims, grid[0], grid[1], "fp16", batch)
    emb = embedding_bytes_per_pe(vocab, dims.hidden, grid, 2) if vocab else 0
    L = len(tokens)

    def fits(a: int, b: int, extra: int) -> bool:
        return mem.weights(b - a) + mem.kv(a, b - a) + extra <= room

    @functools.lru_cache(maxsize=None)
    def open_stages(b: int) -> float:  # fewest stages covering [0, b), none of them the last
        if b == 0:
            return 0
        return min((open_stages(a) + 1 for a in range(b) if fits(a, b, emb if a == 0 else 0)),
                   default=float("inf"))

    last = [open_stages(a) + 1 for a in range(L)
            if fits(a, L, ((emb if tied else 2 * emb) if a == 0 else emb))]
    if L and emb <= room:
        last.append(open_stages(L) + 1)  # a stage holding only the LM head
    best = min(last, default=float("inf"))
    return None if best == float("inf") else int(best)


def test_fewest_stages_equal_a_brute_force_partition():
    rng = random.Random(5)
    checked = 0
    for _ in range(150):
        dims, tokens, vocab, tied, grid, batch, wafers = _draw(rng)
        if len(tokens) > 40:
            tokens = tokens[:40]
        want = _fewest_by_partition(WSE2, dims, tokens, vocab, tied, grid, batch)
        try:
            got = place_layers(WSE2, dims, tokens, vocab, tied, grid, "fp16", batch, 1 << 10)
        except InputError:
            assert want is None, (grid, want)
            continue
        assert len(got.stages) == want, (grid, [s.layers for s in got.stages])
        checked += 1
    assert checked > 50


def test_search_placements_agree_with_full_ones():
    """``detail=False`` skips evening the layer counts and raises when the regions run out: the
    same verdict, the same number of stages and the same regions as the full placement."""
    rng = random.Random(6)
    for _ in range(300):
        dims, tokens, vocab, tied, grid, batch, wafers = _draw(rng)
        try:
            full = place_layers(WSE2, dims, tokens, vocab, tied, grid, "fp16", batch, wafers)
        except InputError:
            with pytest.raises(InputError):
                place_layers(WSE2, dims, tokens, vocab, tied, grid, "fp16", batch, wafers, detail=False)
            continue
        if not full.fits:
            with pytest.raises(InputError):
                place_layers(WSE2, dims, tokens, vocab, tied, grid, "fp16", batch, wafers, detail=False)
            continue
        quick = place_layers(WSE2, dims, tokens, vocab, tied, grid, "fp16", batch, wafers, detail=False)
        assert quick.fits
        assert [(s.wafer, s.origin, s.extras) for s in quick.stages] == \
               [(s.wafer, s.origin, s.extras) for s in full.stages]
        counts = [s.num_layers for s in full.stages]
        assert max(counts) <= max(s.num_layers for s in quick.stages)  # evening only lowers the largest


def test_most_layers_equals_a_linear_scan():
    rng = random.Random(7)
    for _ in range(300):
        dims, tokens, vocab, tied, grid, batch, wafers = _draw(rng)
        mem = layer_memory(dims, grid, tokens, "fp16", batch)
        first = 0 if mem.homogeneous else rng.randrange(len(tokens))
        limit = len(tokens) - first
        room = rng.randint(0, 60_000)
        want = max([n for n in range(limit + 1) if mem.layer_bytes(first, n) <= room], default=0)
        assert _most_layers(mem.layer_bytes, first, limit, room, mem.homogeneous) == want


def test_balanced_layers_never_cost_more_than_single_ones():
    """What the layer-count search leans on: with equal caches, n layers take at most n times one."""
    rng = random.Random(8)
    for _ in range(200):
        dims, tokens, vocab, tied, grid, batch, wafers = _draw(rng)
        mem = layer_memory(dims, grid, (tokens[0],) * len(tokens), "fp16", batch)
        one = mem.layer_bytes(0, 1)
        assert all(mem.layer_bytes(0, n) <= n * one for n in range(1, len(tokens) + 1))
        assert all(mem.layer_bytes(0, n) <= mem.layer_bytes(0, n + 1) for n in range(len(tokens)))


# ---- packed placements: full regions and the strips beside them --------------------------------------------------

TINY12 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 96,
          "intermediate_size": 256, "num_hidden_layers": 12, "num_attention_heads": 6,
          "num_key_value_heads": 2, "vocab_size": 500, "max_position_embeddings": 4096}


def _small(kb: int, height: int = 20, width: int = 14):
    return WSE2.with_params(name=f"small-{height}x{width}", mesh_width=width, mesh_height=height,
                            fabric_width=width + 7, fabric_height=height + 2, sram_bytes=kb * 1024)


def _tiny12():
    from waferllm.model import spec_from_config_dict
    return spec_from_config_dict(TINY12, "tiny12")


def test_packed_regions_are_the_hand_worked_serpentine():
    """A 20x14 mesh in 10x8 regions: 2 bands of one full region (14 // 8) and a strip of 14 mod 8 = 6 columns;
    band 0 west to east, band 1 mirrored, so the band change goes south from the strip (columns 8-13) into
    the full region below it (columns 6-13)."""
    from waferllm.placement import packed_regions, regions_per_wafer
    hw = _small(16)
    assert regions_per_wafer(hw, (10, 8)) == 2
    assert packed_regions(hw, (10, 8)) == [(0, 0, 8), (0, 8, 6), (10, 6, 8), (10, 0, 6)]
    assert packed_regions(hw, (10, 7)) == [(0, 0, 7), (0, 7, 7), (10, 7, 7), (10, 0, 7)]  # no strip


def _packed_by_brute_force(model, req, grid):
    """Every way to place the layers over the first k packed regions (any k, any layer count per region, the
    embedding with the first and the LM head with the last) that fits each PE, priced by the planner's
    model and charged the decode program's bytes (``decode_charge``, the table tests/waferllm/test_planner_programs.py
    checks against the simulator): the fewest regions, then the fewest cycles. Returns (k, cycles, counts)."""
    import itertools

    from waferllm.placement import Placement, Stage, packed_regions
    from waferllm.planner import best_packed_trees, decode_charge, layer_contexts, packed_terms

    spec = req.hardware
    regions = packed_regions(spec, grid)
    L, cap = model.num_layers, spec.usable_sram_bytes
    tokens = layer_contexts(model, req.decode_context)
    best = None
    for k in range(1, len(regions) + 1):
        for counts in itertools.product(range(L + 1), repeat=k):
            if sum(counts) != L:
                continue
            stages, first, ok = [], 0, True
            for i, n in enumerate(counts):
                y, x, w = regions[i]
                c = decode_charge(model, req, (grid[0], w), tokens, 1)  # the decode program's table
                extra = c.both if k == 1 else c.first if i == 0 else c.last if i == k - 1 else 0
                wb, kv = n * c.per_layer[0], n * c.per_layer[1]
                ok = ok and wb + kv + c.buffers + extra <= cap
                stages.append(Stage(i, 0, (y, x), (first, first + n - 1), (), wb, kv, c.buffers, extra, (grid[0], w)))
                first += n
            if not ok:
                continue
            pl = Placement(grid, tuple(stages), 1, len(regions), cap, 0, strip_width=spec.mesh_width % grid[1])
            tuned = best_packed_trees(spec, packed_terms(model, req, grid, pl), req)
            if tuned is None:
                continue
            cand = (k, tuned[3], counts)
            if best is None or cand[:2] < best[:2]:
                best = cand
        if best is not None:
            return best
    return None


@pytest.mark.parametrize("kb", [17, 19, 21])
def test_packing_fits_one_wafer_where_the_aligned_regions_need_two(kb):
    """TINY12 at 10x8 regions of a 20x14 wafer: the aligned tiling has 2 regions and the model needs 3 or 4
    (the aligned placement's own count), so --wafers auto took 2 wafers; packed (4 regions, hand-worked
    above) it takes 1, with the stages, layer counts and cycles of a brute force over every packed
    placement under the model, and more tokens/s per wafer than the aligned plan on 2 wafers."""
    from dataclasses import replace

    from waferllm.planner import PlanRequest, plan, real_placement
    model, hw = _tiny12(), _small(kb)
    req = PlanRequest(hw, context=64, input_len=32, output_len=8, decode_grid=(10, 8))
    aligned = real_placement(model, req, (10, 8))
    assert len(aligned.stages) > 2 and not aligned.fits
    two = plan(model, replace(req, wafers=2))
    assert two.wafers == 2 and not two.placement.packed
    p = plan(model, replace(req, wafers="auto"))
    assert p.wafers == 1 and p.fits and p.placement.packed
    k, cycles, counts = _packed_by_brute_force(model, req, (10, 8))
    st = p.placement.stages
    assert len(st) == k and p.decode.cycles_total == pytest.approx(cycles, rel=1e-12)
    assert [(s.origin, s.grid) for s in st] == [((0, 0), (10, 8)), ((0, 8), (10, 6)), ((10, 6), (10, 8)),
                                               ((10, 0), (10, 6))][:k]
    assert sum(s.num_layers for s in st) == 12
    assert p.decode.tokens_per_s > two.decode.tokens_per_s / 2
    d = p.to_dict()
    assert d["decode"]["strip"]["grid"] == [10, 6]
    assert [s["grid"] for s in d["layer_placement"]["stages"]] == [list(s.grid) for s in st]


def test_aligned_stage_origins_are_the_programs_serpentine_order():
    """The plan reports the origins the decode program places its stages at (``snake_origins``): llama3-8b on
    WSE-2 takes two bands of three 274x256 regions, the second band right to left, so every hand-off is to a
    neighbouring region (the last of band 0 sits above the first of band 1)."""
    from meshgemm.decode_program import snake_origins
    from waferllm.catalog import resolve_model
    from waferllm.planner import PlanRequest, plan

    p = plan(resolve_model("llama3-8b"), PlanRequest(hardware=WSE2))
    st = p.placement.stages
    grid = tuple(p.decode.grid)
    assert not p.placement.packed and len(st) > WSE2.mesh_width // grid[1]  # more than one band
    assert [s.origin for s in st] == snake_origins(WSE2, grid, len(st))
    per_band = WSE2.mesh_width // grid[1]
    assert st[per_band].origin == (grid[0], st[per_band - 1].origin[1])


def test_infeasible_message_names_the_stages_layer_counts_and_the_busiest_pes_parts():
    """LLaMA2-13B at 4,224 tokens on WSE-2 regions of 99x375 (20 on the wafer): the embedding's stage and
    the LM head's hold one layer, the 19 others two (hand-counted from the message's runs: 21 regions),
    and the busiest PE's parts, as the message rounds them, add up to its total."""
    import re

    from waferllm.catalog import resolve_model
    from waferllm.placement import _runs, stage_fit_message
    from waferllm.planner import PlanRequest, real_placement
    assert _runs([1, 2, 2, 2, 1]) == "1, 2 x 3, 1" and _runs([3]) == "3" and _runs([4, 4, 3]) == "4 x 2, 3"
    model = resolve_model("llama2-13b")
    p = real_placement(model, PlanRequest(WSE2), (99, 375))
    msg = stage_fit_message(WSE2, p, model.name)
    assert "needs 21 regions of 99x375 PEs (layers per stage 1, 2 x 19, 1;" in msg, msg
    assert msg.endswith("room for 20"), msg
    total, cap, *parts = (float(v) for v in re.findall(r"([\d.]+) KB", msg))
    assert cap == pytest.approx(WSE2.usable_sram_bytes / 1024, abs=0.05)
    assert sum(parts) == pytest.approx(total, abs=0.15), msg
