"""plmr.decode_memory: the table's largest sizes are the decode layout's (meshgemm.model_layout, an
independent description built from the partitions) on catalog models and grids the plans pick, and a
stage's bytes summed by kind are the table walked buffer by buffer (``buffer_length``). The table
against the simulator's own accounting: tests/meshgemm/test_decode_program.py and
tests/waferllm/test_planner_programs.py."""

from __future__ import annotations

import pytest

from meshgemm.decode_program import Sizes
from meshgemm.model_layout import DecodeLayout
from plmr.decode_memory import (DecodeModel, buffer_length, decode_buffers, decode_fixed_bytes, decode_layer_bytes,
                                decode_sizes, decode_stage_bytes)
from plmr.primitives import dtype_bytes
from waferllm.catalog import resolve_model

GRIDS = [(1, 1), (3, 7), (249, 76), (302, 256), (325, 360), (128, 92), (147, 263)]


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama3-8b", "llama2-13b", "mistral-7b"])
def test_the_tables_sizes_are_the_layouts_largest_blocks(name):
    spec = resolve_model(name)
    for grid in GRIDS:
        lay = DecodeLayout(spec, *grid)
        assert decode_sizes(DecodeModel.of(spec), *grid) == Sizes.of(lay).table, grid


@pytest.mark.parametrize("name,grid,cap,dt", [("qwen2.5-0.5b", (249, 76), 17, "fp16"),
                                              ("llama3-8b", (302, 256), 14, "fp16"),
                                              ("llama2-13b", (3, 7), 5, "fp32")])
def test_a_stages_bytes_are_the_table_walked_buffer_by_buffer(name, grid, cap, dt):
    """Consistency of the planner's fast path with the table's definition (not an independent check)."""
    mod = DecodeModel.of(resolve_model(name))
    table = decode_buffers(mod, decode_sizes(mod, *grid), cap, dt)
    w, kv = decode_layer_bytes(mod, *grid, cap, dt)
    fx = decode_fixed_bytes(mod, *grid, cap, dt)
    for nl in (0, 1, 5):
        for first, last in ((False, False), (True, False), (False, True), (True, True)):
            walked = sum(dtype_bytes(t) * buffer_length(kind, size, nl, first, last, mod.tied)
                         for t, kind, size in table.values())
            assert decode_stage_bytes(mod, *grid, cap, nl, first, last, dt) == walked
            if nl:
                extra = fx["both"] if first and last else fx["first"] if first else fx["last"] if last else 0
                assert walked == nl * (w + kv) + fx["buffers"] + extra
