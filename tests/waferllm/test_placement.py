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
