"""The prefill layer program's buffers per PE: one table read by the program, which allocates its
buffers from it (``meshgemm.prefill_program``), and by the planner, which charges it
(``waferllm.planner.prefill_program_bytes``). They cannot drift apart: the program declares exactly
what ``prefill_buffers`` lists, and tests/meshgemm/test_prefill_program.py checks the simulator's
own accounting of every parameter set against ``prefill_data_bytes``.

Sizes follow the program's layout (waferllm-method.md §3.2, §3.6, §4.3-§4.4, §5): MeshGEMM's virtual
Q×Q mesh (Q = lcm(P_y, P_x), q_x = Q/P_x and q_y = Q/P_y tiles per PE), m = ⌈L/Q⌉ tokens per tile,
feature tiles e = ⌈E/Q⌉, f = ⌈F/Q⌉, and the head-aligned q / K|V features of method §3.5 padded
to q_x whole tiles per column (``PrefillTiles``). Most buffers are the same on every PE; the
attention buffers depend on the column's place in its KV group (``AttentionColumn``), so the busiest
PE is found over the few column classes where a length can change (``attention_columns``).

Plain Python (no numpy): the planner imports it on its fast path. Lengths are written once for two
kinds of values: numbers (the planner) and the program's parameter expressions (``mx``/``mn``: the
``max``/``min`` of either kind).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

from plmr.primitives import balanced_split, ceil_div, dtype_bytes

#: Products of a layer, in the order of their blocks in ``WB``; their optional biases.
WEIGHTS = ("q", "k", "v", "o", "gate", "up", "down")
BIASES = ("q_bias", "k_bias", "v_bias", "o_bias", "gate_bias", "up_bias", "down_bias")
#: Per-column parameters of the attention code (``meshgemm.prefill_attention.column_params``): KV
#: groups on the column, its position in its group's column range and the range's width, the
#: balanced split of the group's query rows (``at_rb`` each, the first ``at_re`` one more) and of
#: its RoPE pairs (``at_pb``, ``at_pe``).
ATTENTION_PARAMS = ("ng", "at_pos", "at_G", "at_rb", "at_re", "at_pb", "at_pe")
#: Attention buffers kept in fp32 (scores and the online softmax's state).
ATTENTION_FP32 = ("S", "TMP", "ACC", "MO", "MX", "NG", "CR", "LS")


@dataclass(frozen=True)
class PrefillTiles:
    """Per-PE tile sizes of the prefill layout (every PE allocates the same)."""

    q: int
    q_x: int
    q_y: int
    m: int  # tokens per tile
    e: int  # hidden features per tile
    f: int  # FFN features per tile
    tq: int  # q features per tile
    tkv: int  # K/V features per tile

    @property
    def T(self) -> int:
        return self.q_y * self.m

    def cols(self, tile: int) -> int:
        return self.q_x * tile

    def act(self, tile: int) -> int:
        """Elements of an activation with feature tile ``tile``."""
        return self.q_y * self.q_x * self.m * tile

    def gemm(self, name: str) -> tuple[int, int]:
        """(k, n) of a weight's tiles."""
        e, f, tq, tkv = self.e, self.f, self.tq, self.tkv
        return {"q": (e, tq), "k": (e, tkv), "v": (e, tkv), "o": (tq, e), "gate": (e, f), "up": (e, f),
                "down": (f, e)}[name]


@dataclass(frozen=True)
class PrefillModel:
    """What the prefill program's sizes depend on besides the grid and the prompt."""

    hidden: int
    ffn: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def of(cls, spec: Any) -> "PrefillModel":
        """From a ``ModelSpec`` (or anything with its field names)."""
        return cls(spec.hidden_size, spec.intermediate_size, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                   bool(getattr(spec, "qkv_bias", False)), bool(getattr(spec, "o_bias", False)),
                   bool(getattr(spec, "mlp_bias", False)))

    @property
    def n_rep(self) -> int:
        return self.num_heads // self.num_kv_heads

    def has_bias(self, name: str) -> bool:
        if name in ("q_bias", "k_bias", "v_bias"):
            return self.qkv_bias
        return self.o_bias if name == "o_bias" else self.mlp_bias


def _head_features(mod: PrefillModel, p_x: int) -> tuple[int, int, int]:
    """(q features, K features, RoPE pairs) of the busiest column under the head-aligned layout
    (method §3.5; ``meshgemm.model_layout.head_layout``)."""
    n_kv, d, n_rep = mod.num_kv_heads, mod.head_dim, mod.n_rep
    half = d // 2
    if p_x < n_kv:
        heads = max(balanced_split(n_kv, p_x))
        return heads * n_rep * d, heads * d, half
    pairs = ceil_div(half, min(balanced_split(p_x, n_kv)))
    return 2 * pairs * n_rep, 2 * pairs, pairs


@functools.lru_cache(maxsize=1 << 12)
def prefill_tiles(mod: PrefillModel, p_y: int, p_x: int, tokens: int) -> PrefillTiles:
    """The layout's tile sizes (``meshgemm.model_layout.PrefillLayout``: Q tiles of ⌈total/Q⌉ per
    dimension, q and K|V features padded to q_x whole tiles of the busiest column)."""
    q = math.lcm(p_y, p_x)
    q_x, q_y = q // p_x, q // p_y
    qf, kvf, _ = _head_features(mod, p_x)
    return PrefillTiles(q, q_x, q_y, ceil_div(tokens, q), ceil_div(mod.hidden, q), ceil_div(mod.ffn, q),
                        ceil_div(max(qf, 1), q_x), ceil_div(max(kvf, 1), q_x))


def rope_pairs_max(mod: PrefillModel, p_x: int) -> int:
    """RoPE pairs of the column that holds the most (the RoPE tables' width), at least 1."""
    return max(1, _head_features(mod, p_x)[2])


def attention_buffers(t: PrefillTiles, mod: PrefillModel, p_y: int, col: dict, chains: bool,
                      mx: Callable = max, mn: Callable = min) -> dict[str, Any]:
    """Attention buffers (name -> length) of a column with parameter values ``col``
    (``ATTENTION_PARAMS``: numbers, or the program's parameter expressions with ``mx``/``mn`` their
    max/min). With the x chains (``chains``: P_x > 1) ``KVB`` and ``KVA`` receive the gathered chunks
    of the columns below and above (``meshgemm.prefill_attention``)."""
    ng, pos = col["ng"], col["at_pos"]
    rb, re, pb, pe = col["at_rb"], col["at_re"], col["at_pb"], col["at_pe"]
    own = rb + (pos < re)  # query rows this column owns
    w = 2 * (pb + (pos < pe))  # its features of the group's heads
    d, T = mod.head_dim, t.T
    R = mod.n_rep * T  # query rows of a KV group on one mesh row
    one = lambda e: mx(e, 1)  # noqa: E731  (a buffer holds at least one element)

    def before(p):  # features of the group held by the columns before position p
        return 2 * (p * pb + mn(p, pe))

    gathered = {}
    if chains:
        gathered = {"KVB": one(2 * before(pos) * T), "KVA": one(2 * (d - before(pos + 1)) * T)}
    return {"KVR": 2 * ng * 2 * d * T, **gathered, "QP": one(ng * R * w), "QIN": one(ng * own * d),
            "S": one(ng * own * T), "TMP": one(own * T), "ACC": one(ng * own * d), "OP": one(ng * own * d),
            "ORECV": one(ng * R * w), "MO": one(ng * own), "MX": one(ng * own), "NG": one(ng * own),
            "CR": one(ng * own), "LS": one(ng * own)}


def prefill_buffers(mod: PrefillModel, p_y: int, p_x: int, tokens: int, layers: int, dtype: str = "fp16",
                    acc: str = "fp32", col: dict | None = None, mx: Callable = max,
                    mn: Callable = min) -> dict[str, tuple[str, Any]]:
    """name -> (dtype, length) of every buffer of the prefill body (``meshgemm.prefill_program``,
    whose docstring says what each holds) with ``layers`` resident layers; the attention buffers for
    the column ``col`` (see ``attention_buffers``; default the busiest, ``attention_columns``)."""
    t = prefill_tiles(mod, p_y, p_x, tokens)
    if col is None:
        col = max(attention_columns(mod, p_y, p_x, tokens),
                  key=lambda c: _bytes(prefill_buffers(mod, p_y, p_x, tokens, layers, dtype, acc, c)))
    dt, m, T = dtype, t.m, t.T
    Ecol, Fcol, Qcol, KVcol = t.cols(t.e), t.cols(t.f), t.cols(t.tq), t.cols(t.tkv)
    WL = sum(t.q_y * t.q_x * k * n for k, n in (t.gemm(w) for w in WEIGHTS))  # one layer's block of WB
    tb_max = max(k * n for k, n in (t.gemm(w) for w in WEIGHTS))
    BL = sum(bias_cols(t, b) * m for b in BIASES if mod.has_bias(b))
    kmax, nmax = max(t.e, t.tq, t.f), max(t.e, t.tq, t.tkv, t.f)
    la = t.q_x + 1 if p_x > 1 else t.q_x  # A's slot columns (MeshGEMM's left operand, one spare)
    gs = la * m * kmax if (t.q_y > 1 or p_x == 1) else 1  # the skew's scratch: one hosted row's slots
    npair = rope_pairs_max(mod, p_x)
    out = {
        "X": (dt, t.q_y * Ecol * m), "A1": (dt, t.q_y * Ecol * m), "GA": (dt, (t.q_x + 1) * t.q_y * m * kmax),
        "GS": (dt, gs), "CF": (acc, t.act(nmax)), "QB": (dt, t.q_y * Qcol * m),
        "KVC": (dt, layers * kv_block(t)), "H": (dt, t.q_y * Ecol * m), "G": (dt, t.q_y * Fcol * m),
        "U": (dt, t.q_y * Fcol * m), "WB": (dt, layers * WL + t.q_x * tb_max), "NB": (dt, layers * 2 * Ecol * m),
    }
    if BL:
        out["BB"] = (dt, layers * BL)
    for name in ("COS", "SIN", "NSIN"):
        out[name] = (dt, npair * T)
    out.update({"RT": (dt, npair * m), "RT2": (dt, npair * m), "SQ": ("fp32", Ecol * m), "RS": ("fp32", T),
                "EPS": ("fp32", 1)})
    for name, n in attention_buffers(t, mod, p_y, col, p_x > 1, mx, mn).items():
        out[name] = ("fp32" if name in ATTENTION_FP32 else dt, n)
    return out


def kv_block(t: PrefillTiles) -> int:
    """Elements of one resident layer's K|V cache block (natural layout)."""
    return 2 * t.q_y * t.cols(t.tkv) * t.m


def bias_cols(t: PrefillTiles, name: str) -> int:
    """Columns of a bias tile (host-expanded over the m tokens of a tile)."""
    return t.cols(t.gemm(name[:-5])[1])


def attention_columns(mod: PrefillModel, p_y: int, p_x: int, tokens: int) -> list[dict]:
    """Attention parameter values (``ATTENTION_PARAMS``) of one column of each class where a buffer
    length can change. Within a KV group of width G the lengths depend on a
    column's position only through its owned rows (pos < at_re), its features (pos < at_pe) and
    whether it is first or last (the gathered chunks from below and above add up to the features it
    lacks, but a buffer holds at least one element), so positions {0, 1, at_pe, at_re, G − 1} cover
    every class; with P_x < n_kv the column with the most whole groups is the busiest."""
    t = prefill_tiles(mod, p_y, p_x, tokens)
    n_kv, half = mod.num_kv_heads, mod.head_dim // 2
    rows = mod.n_rep * t.T
    if p_x < n_kv:
        cols = [dict(ng=max(balanced_split(n_kv, p_x)), at_pos=0, at_G=1, at_rb=rows, at_re=0, at_pb=half,
                     at_pe=0)]
    else:
        cols = []
        for width in sorted(set(balanced_split(p_x, n_kv))):
            rb, re = divmod(rows, width)
            pb, pe = divmod(half, width)
            for pos in sorted({0, 1, pe, re, width - 1}):
                if 0 <= pos < width:
                    cols.append(dict(ng=1, at_pos=pos, at_G=width, at_rb=rb, at_re=re, at_pb=pb, at_pe=pe))
    return cols


def _bytes(table: dict) -> int:
    return sum(dtype_bytes(dt) * n for dt, n in table.values())


def _attention_bytes(t: PrefillTiles, mod: PrefillModel, p_y: int, p_x: int, col: dict, dtype: str) -> int:
    return sum(dtype_bytes("fp32" if name in ATTENTION_FP32 else dtype) * n
               for name, n in attention_buffers(t, mod, p_y, col, p_x > 1).items())


@functools.lru_cache(maxsize=1 << 12)
def _shared_bytes(mod: PrefillModel, p_y: int, p_x: int, tokens: int, layers: int, dtype: str, acc: str) -> int:
    """Bytes of the buffers every PE allocates alike (all but the attention's)."""
    col = attention_columns(mod, p_y, p_x, tokens)[0]
    table = prefill_buffers(mod, p_y, p_x, tokens, layers, dtype, acc, col)
    att = attention_buffers(prefill_tiles(mod, p_y, p_x, tokens), mod, p_y, col, p_x > 1)
    return _bytes({k: v for k, v in table.items() if k not in att})


@functools.lru_cache(maxsize=1 << 12)
def prefill_data_bytes(mod: PrefillModel, p_y: int, p_x: int, tokens: int, layers: int, dtype: str = "fp16",
                       acc: str = "fp32") -> int:
    """Buffer bytes of the busiest PE of the prefill program with ``layers`` resident layers."""
    t = prefill_tiles(mod, p_y, p_x, tokens)
    return (_shared_bytes(mod, p_y, p_x, tokens, layers, dtype, acc)
            + max(_attention_bytes(t, mod, p_y, p_x, c, dtype) for c in attention_columns(mod, p_y, p_x, tokens)))


def prefill_layer_bytes(mod: PrefillModel, p_y: int, p_x: int, tokens: int, dtype: str = "fp16") -> int:
    """Bytes one more resident layer adds on every PE: its weights (``WB``), γ (``NB``), biases
    (``BB``) and K|V cache block (``KVC``)."""
    return (_shared_bytes(mod, p_y, p_x, tokens, 1, dtype, "fp32")
            - _shared_bytes(mod, p_y, p_x, tokens, 0, dtype, "fp32"))
