"""Model weights: a Hugging Face directory's safetensors tensors as numpy arrays, ready to shard onto a mesh.

The loader never imports torch or transformers (both cost seconds and are not needed to read tensors): the
config goes through the fast path of `waferllm.model` (``spec_from_config_dict``), every safetensors header
is checked against it (``check_safetensors``: missing, mis-shaped and unexpected tensors are one-line
``InputError``s), and the data is read with safetensors' numpy API. bfloat16, which numpy lacks, is widened
from its raw bytes (a bf16 value is the top half of the fp32 with the same bits), exactly.

Linear weights are returned in the math orientation the mesh layouts use, ``y = x @ W`` with W ``[in, out]``
(method §3.1): a transposed *view* of HF's ``[out, in]`` storage, so no copy is made. With tied embeddings the
LM head is a view of the embedding table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from plmr.errors import InputError
from waferllm.model import ModelSpec, check_safetensors, read_config_json, spec_from_config_dict

#: compute dtypes the numerics support, with their numpy types.
WEIGHT_DTYPES: Mapping[str, type] = {"fp32": np.float32, "fp16": np.float16}
#: safetensors dtypes we can read, and the numpy type they are read as before the cast.
_READABLE = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """One transformer layer; matrices are ``[in, out]`` (y = x @ W); absent biases are None."""

    input_norm: np.ndarray  # [E]
    post_norm: np.ndarray  # [E]
    q: np.ndarray  # [E, n_h·d]
    k: np.ndarray  # [E, n_kv·d]
    v: np.ndarray  # [E, n_kv·d]
    o: np.ndarray  # [n_h·d, E]
    gate: np.ndarray  # [E, F]
    up: np.ndarray  # [E, F]
    down: np.ndarray  # [F, E]
    q_bias: np.ndarray | None = None
    k_bias: np.ndarray | None = None
    v_bias: np.ndarray | None = None
    o_bias: np.ndarray | None = None
    gate_bias: np.ndarray | None = None
    up_bias: np.ndarray | None = None
    down_bias: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class ModelWeights:
    """All weights of a model in one compute dtype (``"fp32"`` or ``"fp16"``)."""

    spec: ModelSpec
    dtype: str
    embed: np.ndarray  # [V, E]
    layers: Sequence[LayerWeights]  # a tuple, or read layer by layer (``load_weights(lazy_layers=True)``)
    final_norm: np.ndarray  # [E]
    lm_head: np.ndarray  # [E, V]; a view of embed.T when the embeddings are tied

    @property
    def np_dtype(self) -> type:
        return WEIGHT_DTYPES[self.dtype]


def check_dtype(dtype: str) -> type:
    """The numpy type of a compute dtype name, or a one-line InputError listing the allowed names."""
    if dtype not in WEIGHT_DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; allowed: {', '.join(WEIGHT_DTYPES)}")
    return WEIGHT_DTYPES[dtype]


def model_spec_fast(path: str | os.PathLike[str]) -> ModelSpec:
    """The ModelSpec of a model directory by the config fast path (no transformers import)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model directory '{path}' does not exist; expected a directory with config.json "
                         "and *.safetensors")
    if not p.is_dir():
        raise InputError(f"'{path}' is not a directory; expected a model directory with config.json")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise InputError(f"no config.json in '{path}'; expected a Hugging Face model directory")
    return spec_from_config_dict(read_config_json(cfg), p.resolve().name, str(path))


def load_weights(path: str | os.PathLike[str], dtype: str = "fp32", spec: ModelSpec | None = None,
                 lazy_layers: bool = False) -> ModelWeights:
    """Every weight of the model in ``path`` as numpy arrays of ``dtype`` (``"fp32"`` or ``"fp16"``).

    ``spec`` defaults to the config fast path. Errors are one-line InputErrors: no safetensors files, a tensor
    missing, mis-shaped or unexpected for the config, an unreadable dtype, NaN/inf values, or values beyond
    the fp16 range when ``dtype="fp16"``. ``lazy_layers``: ``layers`` reads each layer from the files when
    it is indexed, and keeps nothing (a writer that goes through the layers once holds one at a time; the
    value checks then run as each layer is read).
    """
    np_dtype = check_dtype(dtype)
    spec = spec if spec is not None else model_spec_fast(path)
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise InputError(f"no *.safetensors files in '{path}'; waferllm reads weights only from safetensors "
                         "(re-save the model with save_pretrained(..., safe_serialization=True))")
    check_safetensors(spec, files)
    index = _TensorIndex(files)
    if lazy_layers:
        layers: Sequence[LayerWeights] = _LazyLayers(index, spec, np_dtype)
    else:
        layers = tuple(_layer(index, spec, np_dtype, i) for i in range(spec.num_layers))
    embed = index.read("model.embed_tokens.weight", np_dtype)
    # A tied checkpoint may still store an lm_head copy; the tie means the embedding is the authority.
    lm_head = embed.T if spec.tie_word_embeddings else index.read("lm_head.weight", np_dtype).T
    return ModelWeights(spec=spec, dtype=dtype, embed=embed, layers=layers,
                        final_norm=index.read("model.norm.weight", np_dtype), lm_head=lm_head)


def _layer(index: "_TensorIndex", spec: ModelSpec, np_dtype: type, i: int) -> LayerWeights:
    p = f"model.layers.{i}."
    a, m = p + "self_attn.", p + "mlp."

    def t(name: str) -> np.ndarray:
        return index.read(name, np_dtype)

    def linear(prefix: str) -> np.ndarray:
        return t(prefix + ".weight").T  # HF stores [out, in]; the mesh uses [in, out]

    def bias(prefix: str, present: bool) -> np.ndarray | None:
        return t(prefix + ".bias") if present else None

    return LayerWeights(
        input_norm=t(p + "input_layernorm.weight"), post_norm=t(p + "post_attention_layernorm.weight"),
        q=linear(a + "q_proj"), k=linear(a + "k_proj"), v=linear(a + "v_proj"), o=linear(a + "o_proj"),
        gate=linear(m + "gate_proj"), up=linear(m + "up_proj"), down=linear(m + "down_proj"),
        q_bias=bias(a + "q_proj", spec.qkv_bias), k_bias=bias(a + "k_proj", spec.qkv_bias),
        v_bias=bias(a + "v_proj", spec.qkv_bias), o_bias=bias(a + "o_proj", spec.o_bias),
        gate_bias=bias(m + "gate_proj", spec.mlp_bias), up_bias=bias(m + "up_proj", spec.mlp_bias),
        down_bias=bias(m + "down_proj", spec.mlp_bias),
    )


class _LazyLayers(Sequence):
    """The layers of a model, each read from the files (and checked) when indexed; nothing is kept."""

    def __init__(self, index: "_TensorIndex", spec: ModelSpec, np_dtype: type):
        self._index, self._spec, self._np_dtype = index, spec, np_dtype

    def __len__(self) -> int:
        return self._spec.num_layers

    def __getitem__(self, i):  # noqa: ANN001 - an int or a slice, as a tuple takes
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return _layer(self._index, self._spec, self._np_dtype, i % len(self))


class _TensorIndex:
    """Where each tensor of the safetensors files is, and how to read one cast to a compute dtype (checked
    by ``_cast``): the file's own dtype (bf16 widened to fp32 on the way) is held one tensor at a time."""

    def __init__(self, files: list[Path]):
        self._where: dict[str, tuple[Path, int, dict]] = {}
        for path in files:
            header_len, header = _header(path)
            for name, info in header.items():
                if name == "__metadata__" or name.endswith("rotary_emb.inv_freq"):
                    continue
                st_dtype = info.get("dtype")
                if st_dtype not in _READABLE:
                    raise InputError(f"{path.name}: tensor '{name}' has dtype {st_dtype}; readable: "
                                     f"{', '.join(_READABLE)} (quantized checkpoints are not supported)")
                self._where[name] = (path, header_len, info)

    def read(self, name: str, np_dtype: type) -> np.ndarray:
        from safetensors import safe_open  # numpy API; imports no torch

        path, header_len, info = self._where[name]
        if info["dtype"] == "BF16":
            start, end = (int(o) for o in info["data_offsets"])
            raw = np.fromfile(path, dtype="<u2", count=(end - start) // 2, offset=8 + header_len + start)
            return _cast(name, (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"]), np_dtype)
        with safe_open(str(path), framework="np") as fh:
            return _cast(name, fh.get_tensor(name), np_dtype)


def _header(path: Path) -> tuple[int, dict]:
    """(header length, header) of a safetensors file; the file was already validated by check_safetensors."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return n, json.loads(fh.read(n))


def _cast(name: str, a: np.ndarray, np_dtype: type) -> np.ndarray:
    if not np.isfinite(a).all():
        raise InputError(f"tensor '{name}' holds NaN or infinite values; the checkpoint is broken")
    if np_dtype is np.float16 and a.dtype != np.float16:
        peak = float(np.abs(a).max()) if a.size else 0.0
        if peak > _FP16_MAX:
            raise InputError(f"tensor '{name}' has a value of magnitude {peak:.4g}, beyond the fp16 range "
                             f"(max {_FP16_MAX:.0f}); run with --dtype fp32")
    return np.ascontiguousarray(a, dtype=np_dtype)
