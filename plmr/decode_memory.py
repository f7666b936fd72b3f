"""The decode program's buffers per PE: one table read by the program, which allocates every buffer from
it (``meshgemm.decode_program``), and by the planner, which charges it (``waferllm.planner``'s decode
placement). They cannot drift apart: the program declares exactly what ``decode_buffers`` lists, and
tests/meshgemm/test_decode_program.py checks the simulator's own accounting of every parameter set
(first, middle and last stages; packed strips) against ``decode_stage_bytes``.

Sizes follow the decode layout (waferllm-method.md §3.4, §3.5, §8): the hidden dimension split over
the rows (E_y = ⌈E/P_y⌉), the FFN and the vocabulary over the columns (⌈F/P_x⌉, ⌈V/P_x⌉), attention
features by the head-aligned layout of the busiest column (``plmr.transformer.head_layout``). The body
is one program for every PE of a region, so each buffer is allocated at the largest PE's size and each
layer of a stage at the same stride: a stage of n layers holds n times one layer's blocks (weights,
γ, biases, K and V ring buffers of ``capacity`` entries). Buffers a stage does not use (the embedding
off the first stage, the LM head and the logits off the last, absent biases) are one element.

Plain Python (no numpy, no simulator): the planner imports it on its fast path. Lengths that depend on
the stage are written once for two kinds of values: numbers (the planner) and the program's parameter
expressions (``pick``/``mx``: a select and a max of either kind).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

from plmr.prefill_memory import PrefillModel
from plmr.primitives import balanced_split, ceil_div, dtype_bytes

F32 = "fp32"

#: The buffers that hold model parameters (a bundle's per-PE shards); the rest is state and scratch.
WEIGHT_BUFFERS = ("wqkv", "wo", "wgu", "wd", "gin", "gpost", "bqkv", "bo", "bgu", "bd", "emb", "wlm", "fnorm")
#: Cached entries whose scores a PE holds at once: the decode attention walks its row's cache in chunks
#: of at most this many entries with an online softmax (running maximum, rescaled sums and p·V
#: accumulators), so its score buffers do not grow with the context. At the default context every
#: plan's rows hold fewer entries (one chunk: the order of a plain softmax, no rescaling).
SCORE_CHUNK = 64
#: The chunks a plan may take where the whole ring's scores do not fit beside the model, largest first
#: (``waferllm.planner.attention_chunk`` takes the largest that fits: fewer chunks, fewer cycles).
SCORE_CHUNKS = (SCORE_CHUNK, 32, 16, 8)
#: Buffers of the LM head's stage besides its weights: the final norm's output and the logits (fp32
#: sums and their copy in the model dtype, which the argmax reads as transformers rounds them).
HEAD_BUFFERS = ("fnorm", "xf", "lg32", "lg")


@dataclass(frozen=True)
class DecodeModel(PrefillModel):
    """What the decode program's sizes depend on besides the grid and the KV capacity: the layer's
    dimensions (as for prefill) and the vocabulary of the embedding and LM head."""

    vocab: int = 0
    tied: bool = False

    @classmethod
    def of(cls, spec: Any) -> "DecodeModel":
        """From a ``ModelSpec`` (or anything with its field names)."""
        return cls(**dataclasses.asdict(PrefillModel.of(spec)), vocab=spec.vocab_size,
                   tied=bool(getattr(spec, "tie_word_embeddings", False)))


@dataclass(frozen=True)
class DecodeSizes:
    """The largest per-PE sizes of the decode layout on P_y × P_x (``meshgemm.decode_program.Sizes``
    checks them against the layout it shards by)."""

    EYM: int  # hidden features per row, ⌈E/P_y⌉
    FXM: int  # FFN features per column, ⌈F/P_x⌉
    VXM: int  # vocabulary rows per column, ⌈V/P_x⌉
    QXM: int  # q (and attention output) features of the busiest column, at least 1
    KVXM: int  # K (= V) features of the busiest column, at least 1
    NHM: int  # query-head chunks of the busiest column (score heads), at least 1
    NPM: int  # RoPE pairs per head chunk, at least 1
    score_mode: str  # "none", "full" or "groups" (``plmr.transformer.score_mode``)


@functools.lru_cache(maxsize=1 << 12)
def decode_sizes(mod: DecodeModel, p_y: int, p_x: int) -> DecodeSizes:
    """Method §3.5's head-aligned layout on the busiest column: several whole KV groups per column
    when P_x < n_kv (balanced), else each group's d/2 RoPE pairs split over its balanced range of
    columns (the narrowest range holds the most pairs)."""
    n_kv, d, n_rep = mod.num_kv_heads, mod.head_dim, mod.n_rep
    half = d // 2
    if p_x < n_kv:
        heads = max(balanced_split(n_kv, p_x))
        kvf, q_heads, pairs = heads * d, heads * n_rep, half
    else:
        pairs = ceil_div(half, min(balanced_split(p_x, n_kv)))
        kvf, q_heads = 2 * pairs, n_rep
    mode = "none" if p_x <= n_kv else ("full" if n_kv == 1 else "groups")
    return DecodeSizes(EYM=ceil_div(mod.hidden, p_y), FXM=ceil_div(mod.ffn, p_x), VXM=ceil_div(mod.vocab, p_x),
                       QXM=max(n_rep * kvf, 1), KVXM=max(kvf, 1), NHM=max(q_heads, 1), NPM=max(pairs, 1),
                       score_mode=mode)


def layer_strides(sz: DecodeSizes, capacity: int) -> dict[str, int]:
    """Per-layer strides (elements) of the weight and cache buffers: their largest per-PE block."""
    return {"wqkv": sz.EYM * (sz.QXM + 2 * sz.KVXM), "wo": sz.QXM * sz.EYM, "wgu": sz.EYM * 2 * sz.FXM,
            "wd": sz.FXM * sz.EYM, "g": sz.EYM, "bqkv": sz.QXM + 2 * sz.KVXM, "bgu": 2 * sz.FXM,
            "kc": sz.KVXM * capacity, "vc": capacity * sz.KVXM}


def score_chunk(capacity: int, chunk: int = SCORE_CHUNK) -> int:
    """Entries of one attention chunk: ``chunk``, or the whole ring when it is shorter."""
    return max(1, min(capacity, chunk))


def attention_chunks(tokens: int, chunk: int = SCORE_CHUNK) -> list[tuple[int, int]]:
    """The chunks a row of ``tokens`` cached entries is walked in, as (length, count) runs in order:
    chunk 0 (every row runs it, possibly empty: its maxima are allreduced along Y), then the full
    chunks, then the last (a count, not a list: a long context has many)."""
    t = max(tokens, 0)
    n = max(1, ceil_div(t, chunk))
    if n == 1:
        return [(t, 1)]
    return [(chunk, 1)] + ([(chunk, n - 2)] if n > 2 else []) + [(t - (n - 1) * chunk, 1)]


def decode_buffers(mod: DecodeModel, sz: DecodeSizes, capacity: int, dtype: str,
                   chunk: int = SCORE_CHUNK) -> dict[str, tuple[str, str, int]]:
    """name -> (dtype, kind, size) of every buffer of the decode body (``meshgemm.decode_program``,
    whose code says what each holds). ``kind`` says how the length follows the stage
    (``buffer_length``): ``"layer"`` size × the stage's layer count, ``"kv"`` the same for the K and V
    ring buffers, ``"const"`` size, ``"first"`` size on the stage holding the embedding (or, tied, the
    last stage: the LM head reads the same blocks), ``"lm"`` on the last stage when untied, ``"last"``
    on the last stage; 1 element otherwise (a placeholder). The scores are held for one chunk of
    ``score_chunk(capacity, chunk)`` cached entries per score head, whatever the context."""
    dt, cap = dtype, capacity
    st = layer_strides(sz, cap)
    qkvm = sz.QXM + 2 * sz.KVXM
    scores = sz.NHM * score_chunk(cap, chunk)
    lay = lambda k: (dt, "layer", st[k])  # noqa: E731
    const = lambda n, t=dt: (t, "const", max(1, n))  # noqa: E731
    return {
        # weights of the stage's layers
        "wqkv": lay("wqkv"), "wo": lay("wo"), "wgu": lay("wgu"), "wd": lay("wd"), "gin": lay("g"), "gpost": lay("g"),
        "bqkv": lay("bqkv") if mod.qkv_bias else const(1), "bo": lay("g") if mod.o_bias else const(1),
        "bgu": lay("bgu") if mod.mlp_bias else const(1), "bd": lay("g") if mod.mlp_bias else const(1),
        # K (feature-major) and V (token-major) ring buffers
        "kc": (dt, "kv", st["kc"]), "vc": (dt, "kv", st["vc"]),
        # extras
        "emb": (dt, "first", sz.VXM * sz.EYM), "wlm": (dt, "lm", sz.EYM * sz.VXM), "fnorm": (dt, "last", sz.EYM),
        "invf": const(sz.NPM, F32),
        # working vectors (one per op output, so a one-layer stage can be checked op by op); gu32, free
        # until gate/up, holds the attention's running maxima while a chunk rescales
        "x": const(sz.EYM), "x32": const(sz.EYM, F32), "a": const(sz.EYM), "nr": const(2, F32),
        "qkv32": const(qkvm + 1, F32), "qkv": const(qkvm), "qkr": const(qkvm),
        "sc": const(scores, F32), "pr": const(scores if dt != F32 else 1), "mx": const(sz.NHM, F32),
        "o32": const(sz.QXM + sz.NHM, F32), "o": const(sz.QXM), "h32": const(sz.EYM, F32), "ho": const(sz.EYM),
        "h1": const(sz.EYM), "a2": const(sz.EYM), "gu32": const(max(2 * sz.FXM + 1, sz.NHM), F32), "gu": const(2 * sz.FXM),
        "z": const(sz.FXM), "hm": const(sz.EYM), "xf": (dt, "last", sz.EYM), "lg32": (F32, "last", sz.VXM),
        "lg": (dt, "last", sz.VXM), "am": const(2, F32), "tk": const(1, F32),
        "ang": const(sz.NPM, F32), "cs": const(sz.NPM), "sn": const(sz.NPM), "nsn": const(sz.NPM),
        "t1": const(sz.NPM), "t2": const(sz.NPM), "shout": const(2 * sz.KVXM), "shin": const(2 * sz.KVXM),
        "hb": const(sz.EYM),
        # reduction scratch: only max and argmax stages receive into it (a sum adds the stream into the
        # vector itself), so it holds the softmax maxima (one per score head) or one (value, index) pair
        "scr": const(max(sz.NHM, 2), F32),
    }


def _pick(cond, a, b):
    return a if cond else b


def buffer_length(kind: str, size: int, nl, first, last, tied: bool, pick: Callable = _pick, mx: Callable = max):
    """A buffer's length on a stage with ``nl`` layers (``first``: it holds the embedding, ``last``: the
    LM head): numbers, or the program's parameter expressions with ``pick`` a select and ``mx`` a max."""
    if kind in ("layer", "kv"):
        return mx(nl * size, 1)
    if kind == "const":
        return size
    if kind == "first":
        return pick(first | last, size, 1) if tied else pick(first, size, 1)
    if kind == "lm":
        return 1 if tied else pick(last, size, 1)
    return pick(last, size, 1)


@functools.lru_cache(maxsize=1 << 14)
def _kind_sums(mod: DecodeModel, p_y: int, p_x: int, capacity: int, dtype: str,
               chunk: int = SCORE_CHUNK) -> dict[str, tuple[int, int]]:
    """kind -> (Σ bytes of its buffers at full size, Σ bytes of one element each): a stage's bytes
    without walking the table again (the planner asks for many stages)."""
    out: dict[str, tuple[int, int]] = {}
    for dt, kind, size in decode_buffers(mod, decode_sizes(mod, p_y, p_x), capacity, dtype, chunk).values():
        full, one = out.get(kind, (0, 0))
        out[kind] = (full + dtype_bytes(dt) * size, one + dtype_bytes(dt))
    return out


def decode_stage_bytes(mod: DecodeModel, p_y: int, p_x: int, capacity: int, layers: int, first: bool, last: bool,
                       dtype: str = "fp16", chunk: int = SCORE_CHUNK) -> int:
    """Buffer bytes of every PE of a stage of ``layers`` layers (the code and variables come on top):
    ``buffer_length`` of every buffer of the table, summed by kind."""
    sums = _kind_sums(mod, p_y, p_x, capacity, dtype, chunk)

    def part(kind: str, used: bool) -> int:
        full, one = sums.get(kind, (0, 0))
        return full if used else one

    per = {"layer": layers, "kv": layers}
    total = sum(sums.get(k, (0, 0))[0] * n if n > 0 else sums.get(k, (0, 0))[1] for k, n in per.items())
    return (total + part("const", True) + part("first", first or (last and mod.tied))
            + part("lm", last and not mod.tied) + part("last", last))


@functools.lru_cache(maxsize=1 << 14)
def decode_layer_bytes(mod: DecodeModel, p_y: int, p_x: int, capacity: int, dtype: str = "fp16",
                       chunk: int = SCORE_CHUNK) -> tuple[int, int]:
    """(weight bytes, K and V bytes) one more layer of a stage adds on every PE."""
    sums = _kind_sums(mod, p_y, p_x, capacity, dtype, chunk)
    return sums.get("layer", (0, 0))[0], sums.get("kv", (0, 0))[0]


@functools.lru_cache(maxsize=1 << 14)
def decode_fixed_bytes(mod: DecodeModel, p_y: int, p_x: int, capacity: int, dtype: str = "fp16",
                       chunk: int = SCORE_CHUNK) -> dict[str, int]:
    """Bytes besides the layers: ``"buffers"`` on every stage (working vectors, the scores of one
    attention chunk per head, scratch, the one-element placeholders of what a middle stage does not
    hold), and what a stage holding the embedding (``"first"``), the LM head (``"last"``) or both
    (``"both"``) adds to them: the table ⌈V/P_x⌉ × E_y, the LM head (or, tied, the table on the last
    stage too), the final norm and the logits."""
    def fixed(first: bool, last: bool) -> int:
        return decode_stage_bytes(mod, p_y, p_x, capacity, 1, first, last, dtype, chunk) - sum(
            decode_layer_bytes(mod, p_y, p_x, capacity, dtype, chunk))
    base = fixed(False, False)
    return {"buffers": base, "first": fixed(True, False) - base, "last": fixed(False, True) - base,
            "both": fixed(True, True) - base}
