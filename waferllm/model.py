"""Model import: a `ModelSpec` (every shape and constant a mesh plan needs) from a Hugging Face config.

Two front ends feed one validated dataclass:

* `spec_from_config_dict` reads the raw ``config.json`` dict and applies the defaults transformers 5.x
  applies. It never imports transformers, so the catalog and the CLI stay fast.
* `load_model_dir` reads a model directory through the same raw-dict path (no transformers, no torch)
  and checks any safetensors headers against the config; `load_model_dir_transformers` goes through
  ``transformers.AutoConfig``, the authority. Tests keep both equal on every catalog config and on
  saved tiny models.

Only what §10 of the method reference defines is accepted (Llama 1/2/3, Mistral, Qwen2; RoPE "default" or
"llama3"; SiLU MLP). Anything else is an `InputError` naming what is supported, never a silent guess.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from plmr.errors import InputError

#: architecture -> model_type, for the three families whose layer §10 of the method reference specifies.
SUPPORTED_ARCHITECTURES: Mapping[str, str] = MappingProxyType(
    {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
)
#: RoPE types we implement; "default" means no scaling.
SUPPORTED_ROPE_TYPES: tuple[str, ...] = ("default", "llama3")
#: parameter dtypes a checkpoint may declare, with their size in bytes.
DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"float32": 4, "float16": 2, "bfloat16": 2})
#: keys a config.json must carry; transformers' class defaults for these would describe some other model.
REQUIRED_KEYS: tuple[str, ...] = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
)
_ROPE_THETA_DEFAULT = 10000.0
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024

# transformers 5.x class defaults (LlamaConfig, MistralConfig, Qwen2Config) for the optional keys we read.
# A missing num_key_value_heads is None -> num_attention_heads for Llama, but a literal 8 / 32 elsewhere.
_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "llama": MappingProxyType({
        "num_key_value_heads": None, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
    }),
    "mistral": MappingProxyType({
        "num_key_value_heads": 8, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "sliding_window": 4096, "hidden_act": "silu",
    }),
    "qwen2": MappingProxyType({
        "num_key_value_heads": 32, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": 4096,
        "max_window_layers": 28, "hidden_act": "silu",
    }),
})


@dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """Llama-3 RoPE frequency scaling (§10); the only scaling we implement, so the fields are its inputs."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int
    rope_type: str = "llama3"

    def __post_init__(self) -> None:
        where = "rope_scaling"
        if self.rope_type != "llama3":
            raise InputError(f"{where}: unsupported rope type {self.rope_type!r}; supported: "
                             f"{', '.join(SUPPORTED_ROPE_TYPES)} (default = no scaling)")
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            object.__setattr__(self, name, _positive_float(where, name, getattr(self, name)))
        _check_positive_int(where, "original_max_position_embeddings", self.original_max_position_embeddings)
        if self.high_freq_factor <= self.low_freq_factor:
            raise InputError(f"{where}: llama3 scaling needs high_freq_factor > low_freq_factor, got "
                             f"{self.high_freq_factor} and {self.low_freq_factor}")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The model as the planner, simulator and numerics see it: sizes, constants and parameter counts.

    ``weights_bytes`` is the tensor-data size of the safetensors files `load_model_dir` found (``None`` for
    catalog models and directories without weights). ``sliding_window_layers`` lists the layers that use
    the sliding window (Mistral: all; Qwen2: those ≥ ``max_window_layers``); it is empty exactly when
    ``sliding_window`` is ``None``.
    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    architecture: str = "LlamaForCausalLM"
    model_type: str = "llama"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = _ROPE_THETA_DEFAULT
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    sliding_window_layers: tuple[int, ...] = ()
    torch_dtype: str = "float32"
    source: str = ""
    weights_bytes: int | None = None

    def __post_init__(self) -> None:
        where = f"model '{self.source or self.name}'"
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise InputError(_unsupported_arch(where, self.architecture))
        expected_type = SUPPORTED_ARCHITECTURES[self.architecture]
        if self.model_type != expected_type:
            raise InputError(f"{where}: model_type '{self.model_type}' does not match architecture "
                             f"{self.architecture}; expected model_type '{expected_type}'")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "vocab_size", "max_position_embeddings"):
            _check_positive_int(where, name, getattr(self, name))
        if self.head_dim % 2:
            raise InputError(f"{where}: head_dim must be even (RoPE rotates feature pairs i, i + head_dim/2), "
                             f"got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise InputError(f"{where}: num_attention_heads ({self.num_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_kv_heads})")
        for name in ("rms_norm_eps", "rope_theta"):
            object.__setattr__(self, name, _positive_float(where, name, getattr(self, name)))
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise InputError(f"{where}: rope_scaling must be a RopeScaling or None, got {self.rope_scaling!r}")
        for name in ("qkv_bias", "o_bias", "mlp_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{where}: {name} must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(self, "sliding_window_layers", tuple(self.sliding_window_layers))
        if self.sliding_window is None:
            if self.sliding_window_layers:
                raise InputError(f"{where}: sliding_window_layers given without a sliding_window")
        else:
            _check_positive_int(where, "sliding_window", self.sliding_window)
            layers = self.sliding_window_layers
            if not layers or list(layers) != sorted(set(layers)) or not all(
                    isinstance(i, int) and 0 <= i < self.num_layers for i in layers):
                raise InputError(f"{where}: sliding_window_layers must be distinct increasing layer indices "
                                 f"in 0..{self.num_layers - 1}, got {layers!r}")
        if self.torch_dtype not in DTYPE_BYTES:
            raise InputError(f"{where}: unsupported torch_dtype '{self.torch_dtype}'; "
                             f"supported: {', '.join(DTYPE_BYTES)}")
        if self.weights_bytes is not None and (not _is_int(self.weights_bytes) or self.weights_bytes < 0):
            raise InputError(f"{where}: weights_bytes must be a non-negative integer, got {self.weights_bytes!r}")

    # ---- derived shapes -------------------------------------------------------------------------------
    @property
    def n_rep(self) -> int:
        """Query heads per KV head (GQA group size; 1 for MHA, num_heads for MQA)."""
        return self.num_heads // self.num_kv_heads

    @property
    def q_dim(self) -> int:
        """Width of q and of o_proj's input; may differ from hidden_size when head_dim is explicit."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.torch_dtype]

    # ---- parameter counts (exact, as ``sum(p.numel() for p in model.parameters())``) ----------------
    @property
    def attention_params_per_layer(self) -> int:
        e = self.hidden_size
        weights = e * self.q_dim + 2 * e * self.kv_dim + self.q_dim * e
        biases = (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0) + (e if self.o_bias else 0)
        return weights + biases

    @property
    def mlp_params_per_layer(self) -> int:
        e, f = self.hidden_size, self.intermediate_size
        return 3 * e * f + ((2 * f + e) if self.mlp_bias else 0)

    @property
    def params_per_layer(self) -> int:
        """Attention + MLP + the two RMSNorm weight vectors."""
        return self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """0 when tied: the LM head reuses the embedding matrix."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        """All layers, embedding, final norm and (untied) LM head."""
        return (self.num_layers * self.params_per_layer + self.embedding_params + self.hidden_size
                + self.lm_head_params)

    def param_bytes(self, dtype_bytes: int | None = None) -> int:
        """Bytes of all parameters; ``dtype_bytes`` defaults to the checkpoint's torch_dtype."""
        return self.total_params * (self.dtype_bytes if dtype_bytes is None else dtype_bytes)

    def kv_bytes_per_token(self, dtype_bytes: int | None = None) -> int:
        """K and V cache bytes one token adds, over all layers (defaults to the torch_dtype's size)."""
        return 2 * self.num_layers * self.kv_dim * (self.dtype_bytes if dtype_bytes is None else dtype_bytes)

    def layer_sliding_window(self, layer: int) -> int | None:
        """The attention window of ``layer``, or None when it attends to the whole causal prefix."""
        return self.sliding_window if layer in self.sliding_window_layers else None

    def rope_inv_freq(self) -> tuple[float, ...]:
        """``inv_freq[i]`` for i < head_dim/2, with Llama-3 scaling applied (§10), in float64."""
        d = self.head_dim
        inv = [1.0 / self.rope_theta ** (2 * i / d) for i in range(d // 2)]
        rs = self.rope_scaling
        if rs is None:
            return tuple(inv)
        old, lf, hf = rs.original_max_position_embeddings, rs.low_freq_factor, rs.high_freq_factor
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen > old / lf:
                out.append(f / rs.factor)
            elif wavelen < old / hf:
                out.append(f)
            else:
                s = (old / wavelen - lf) / (hf - lf)
                out.append((1 - s) * f / rs.factor + s * f)
        return tuple(out)

    def hf_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The tensors a transformers checkpoint of this model holds, with their shapes ([out, in] Linears).

        ``lm_head.weight`` is left out when tied, since save_pretrained does not write it then.
        """
        e, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,)}
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (v, e)
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            shapes[p + "input_layernorm.weight"] = (e,)
            shapes[p + "post_attention_layernorm.weight"] = (e,)
            for proj, out in (("q", self.q_dim), ("k", self.kv_dim), ("v", self.kv_dim)):
                shapes[f"{p}self_attn.{proj}_proj.weight"] = (out, e)
                if self.qkv_bias:
                    shapes[f"{p}self_attn.{proj}_proj.bias"] = (out,)
            shapes[p + "self_attn.o_proj.weight"] = (e, self.q_dim)
            if self.o_bias:
                shapes[p + "self_attn.o_proj.bias"] = (e,)
            for proj, shape in (("gate", (f, e)), ("up", (f, e)), ("down", (e, f))):
                shapes[f"{p}mlp.{proj}_proj.weight"] = shape
                if self.mlp_bias:
                    shapes[f"{p}mlp.{proj}_proj.bias"] = (shape[0],)
        return shapes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the derived sizes, for ``--json`` output and reports."""
        d = asdict(self)
        d["sliding_window_layers"] = list(self.sliding_window_layers)
        for name in ("n_rep", "q_dim", "kv_dim", "params_per_layer", "embedding_params", "lm_head_params",
                     "total_params"):
            d[name] = getattr(self, name)
        d["kv_bytes_per_token"] = self.kv_bytes_per_token()
        return d


# ---- shared validation helpers ------------------------------------------------------------------------
def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_positive_int(where: str, name: str, value: object) -> None:
    if not _is_int(value) or value <= 0:  # type: ignore[operator]
        raise InputError(f"{where}: {name} must be a positive integer, got {value!r}")


def _positive_float(where: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{where}: {name} must be a positive number, got {value!r}")
    return float(value)


def _unsupported_arch(where: str, arch: object) -> str:
    return f"{where}: unsupported architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"


def _rope(where: str, params: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from a standardised rope-parameters dict (transformers 5.x ``rope_parameters``)."""
    if not isinstance(params, Mapping):
        raise InputError(f"{where}: rope parameters must be a JSON object, got {params!r}")
    if any(k in params for k in ("full_attention", "sliding_attention")):
        raise InputError(f"{where}: per-layer-type rope parameters are not supported; use one rope setting")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise InputError(f"{where}: unsupported rope type {rope_type!r}; supported: "
                         f"{', '.join(SUPPORTED_ROPE_TYPES)} (default = no scaling)")
    prf = params.get("partial_rotary_factor", 1.0)
    if prf not in (None, 1, 1.0):
        raise InputError(f"{where}: partial_rotary_factor {prf!r} is not supported; only full rotary (1.0)")
    theta = _positive_float(where, "rope_theta", params.get("rope_theta", _ROPE_THETA_DEFAULT))
    if rope_type == "default":
        return theta, None
    missing = [k for k in _LLAMA3_KEYS if params.get(k) is None]
    if missing:
        raise InputError(f"{where}: llama3 rope scaling is missing {', '.join(missing)}; "
                         f"it needs {', '.join(_LLAMA3_KEYS)}")
    try:
        return theta, RopeScaling(**{k: params[k] for k in _LLAMA3_KEYS})
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _window_layers(where: str, window: object, layer_types: object, num_layers: int) -> tuple[int | None, tuple]:
    """Normalise (sliding_window, per-layer types) so the window is set only when some layer uses it."""
    if window is None:
        return None, ()
    _check_positive_int(where, "sliding_window", window)
    if not isinstance(layer_types, (list, tuple)) or len(layer_types) != num_layers or not all(
            t in ("full_attention", "sliding_attention") for t in layer_types):
        raise InputError(f"{where}: layer_types must list 'full_attention' or 'sliding_attention' for each "
                         f"of the {num_layers} layers")
    layers = tuple(i for i, t in enumerate(layer_types) if t == "sliding_attention")
    return (window, layers) if layers else (None, ())


def _dtype_name(dtype: object) -> str:
    """'bfloat16' from torch.bfloat16 or 'bfloat16'; an absent dtype loads as float32."""
    if dtype is None:
        return "float32"
    return str(dtype).removeprefix("torch.")


def check_config_dict(d: object, where: str) -> tuple[str, str]:
    """Checks shared by both paths, run on the raw JSON: returns (architecture, model_type)."""
    if not isinstance(d, dict):
        raise InputError(f"{where}: config.json must hold a JSON object, got {type(d).__name__}")
    archs = d.get("architectures")
    model_type = d.get("model_type")
    if archs is None:
        by_type = {t: a for a, t in SUPPORTED_ARCHITECTURES.items()}
        if model_type not in by_type:
            raise InputError(f"{where}: unsupported model_type {model_type!r}; supported: "
                             f"{', '.join(SUPPORTED_ARCHITECTURES.values())}")
        arch = by_type[model_type]
    else:
        if not isinstance(archs, list) or len(archs) != 1:
            raise InputError(f"{where}: 'architectures' must list exactly one architecture, got {archs!r}")
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise InputError(_unsupported_arch(where, arch))
        if model_type is None:
            raise InputError(f"{where}: config.json is missing required key 'model_type'")
        if model_type != SUPPORTED_ARCHITECTURES[arch]:
            raise InputError(f"{where}: model_type {model_type!r} does not match architecture {arch}; "
                             f"expected '{SUPPORTED_ARCHITECTURES[arch]}'")
    for key in REQUIRED_KEYS:
        if key not in d:
            raise InputError(f"{where}: config.json is missing required key '{key}'")
        _check_positive_int(where, key, d[key])
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise InputError(f"{where}: unsupported hidden_act {act!r}; supported: silu")
    if d.get("quantization_config") is not None:
        raise InputError(f"{where}: quantized checkpoints are not supported; use a float16/bfloat16/float32 one")
    return arch, model_type


def spec_from_config_dict(d: Mapping[str, Any], name: str, source: str = "") -> ModelSpec:
    """The fast path: a ModelSpec from a raw config.json dict, applying transformers 5.x defaults."""
    where = f"model '{source or name}'"
    arch, mtype = check_config_dict(d, where)
    dflt = _DEFAULTS[mtype]

    def get(key: str) -> Any:
        return d.get(key, dflt.get(key))

    hidden, heads, layers = d["hidden_size"], d["num_attention_heads"], d["num_hidden_layers"]
    if mtype == "llama" and hidden % heads:  # LlamaConfig refuses these even with an explicit head_dim
        raise InputError(f"{where}: hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads}) "
                         "for Llama models")
    kv = get("num_key_value_heads")
    kv = heads if kv is None else kv
    # transformers merges legacy rope_scaling / rope_theta into rope_parameters (rope_scaling wins).
    rp = d.get("rope_scaling") or d.get("rope_parameters") or {}
    if not isinstance(rp, Mapping):
        raise InputError(f"{where}: rope_scaling must be a JSON object or null, got {rp!r}")
    rp = dict(rp)
    rp.setdefault("rope_theta", d.get("rope_theta", _ROPE_THETA_DEFAULT))
    rp.setdefault("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    rope_type = rp.setdefault("rope_type", rp.get("type", "default"))
    if rope_type == "llama3":  # a top-level original_max_position_embeddings is ignored for these models
        rp.setdefault("original_max_position_embeddings", get("max_position_embeddings"))
    theta, scaling = _rope(where, rp)

    if mtype == "llama":
        qkv_bias = o_bias = get("attention_bias")
        mlp_bias = get("mlp_bias")
    else:
        qkv_bias, o_bias, mlp_bias = mtype == "qwen2", False, False
    if mtype == "mistral":
        window, types = get("sliding_window"), ["sliding_attention"] * layers
    elif mtype == "qwen2":
        window = get("sliding_window") if get("use_sliding_window") else None
        first = get("max_window_layers")
        if window is not None and (not _is_int(first) or first < 0):
            raise InputError(f"{where}: max_window_layers must be a non-negative integer, got {first!r}")
        types = d.get("layer_types") or [
            "sliding_attention" if window is not None and i >= first else "full_attention"
            for i in range(layers)]
    else:
        window, types = None, []
    window, window_layers = _window_layers(where, window, types, layers)
    return ModelSpec(
        name=name, architecture=arch, model_type=mtype, hidden_size=hidden, num_layers=layers,
        num_heads=heads, num_kv_heads=kv, head_dim=d.get("head_dim") or hidden // heads,
        intermediate_size=d["intermediate_size"], vocab_size=d["vocab_size"],
        max_position_embeddings=get("max_position_embeddings"), rms_norm_eps=get("rms_norm_eps"),
        rope_theta=theta, rope_scaling=scaling, qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias,
        tie_word_embeddings=get("tie_word_embeddings"), sliding_window=window,
        sliding_window_layers=window_layers,
        torch_dtype=_dtype_name(d.get("dtype") or d.get("torch_dtype")), source=source,
    )


def spec_from_hf_config(cfg: Any, name: str, source: str = "") -> ModelSpec:
    """A ModelSpec from a transformers config object (5.x ``rope_parameters``, or 4.x ``rope_scaling``)."""
    where = f"model '{source or name}'"
    archs = getattr(cfg, "architectures", None) or []
    by_type = {t: a for a, t in SUPPORTED_ARCHITECTURES.items()}
    arch = archs[0] if archs else by_type.get(cfg.model_type, cfg.model_type)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise InputError(_unsupported_arch(where, arch))
    mtype = cfg.model_type
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise InputError(f"{where}: unsupported hidden_act {cfg.hidden_act!r}; supported: silu")
    rp = getattr(cfg, "rope_parameters", None)
    if rp is None:  # transformers 4.x
        rp = dict(getattr(cfg, "rope_scaling", None) or {})
        rp.setdefault("rope_theta", getattr(cfg, "rope_theta", _ROPE_THETA_DEFAULT))
    theta, scaling = _rope(where, rp)
    layers = cfg.num_hidden_layers
    if mtype == "llama":
        qkv_bias = o_bias = bool(getattr(cfg, "attention_bias", False))
        mlp_bias = bool(getattr(cfg, "mlp_bias", False))
    else:
        qkv_bias, o_bias, mlp_bias = mtype == "qwen2", False, False
    window = getattr(cfg, "sliding_window", None) if mtype in ("mistral", "qwen2") else None
    types = (["sliding_attention"] * layers if mtype == "mistral"
             else getattr(cfg, "layer_types", None) or ["full_attention"] * layers)
    window, window_layers = _window_layers(where, window, types, layers)
    heads = cfg.num_attention_heads
    return ModelSpec(
        name=name, architecture=arch, model_type=mtype, hidden_size=cfg.hidden_size, num_layers=layers,
        num_heads=heads, num_kv_heads=cfg.num_key_value_heads or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=theta, rope_scaling=scaling, qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias,
        tie_word_embeddings=bool(cfg.tie_word_embeddings), sliding_window=window,
        sliding_window_layers=window_layers,
        torch_dtype=_dtype_name(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)),
        source=source,
    )


def read_config_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw dict of ``path`` (a config.json), or a one-line InputError saying what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e.strerror if isinstance(e, OSError) else e}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed config.json {path}: {e.msg} at line {e.lineno} column {e.colno}; "
                         "expected a JSON object") from None
    if not isinstance(d, dict):
        raise InputError(f"malformed config.json {path}: expected a JSON object, got {type(d).__name__}")
    return d


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON), without the data."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n <= 0 or n > size - 8 or n > _SAFETENSORS_MAX_HEADER:
                raise InputError(f"{path} is not a valid safetensors file (bad header length)")
            header = json.loads(fh.read(n))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} is not a valid safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path} is not a valid safetensors file (header is not a JSON object)")
    return header


def check_safetensors(spec: ModelSpec, files: list[Path]) -> int:
    """Check every tensor in ``files`` against the config's shapes; return the bytes of tensor data.

    Catches a config.json that does not describe the weights beside it (wrong head_dim, kv heads, bias
    flags...) before a plan is built on it. Problems are reported in layer order: wrong shapes first,
    then missing tensors, then unexpected ones.
    """
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    total = 0
    for path in files:
        for tname, info in read_safetensors_header(path).items():
            if tname == "__metadata__":
                continue
            try:
                shape = tuple(int(n) for n in info["shape"])
                start, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{path.name}: malformed safetensors entry for tensor '{tname}'") from None
            total += end - start
            if not tname.endswith("rotary_emb.inv_freq"):  # a buffer old checkpoints saved; recomputed anyway
                found[tname] = (shape, path.name)
    expected = spec.hf_tensor_shapes()
    if spec.tie_word_embeddings and "lm_head.weight" in found:  # some tied checkpoints store the copy too
        expected["lm_head.weight"] = (spec.vocab_size, spec.hidden_size)
    for tname, want in expected.items():
        if tname in found and found[tname][0] != want:
            shape, fname = found[tname]
            raise InputError(f"{fname}: tensor '{tname}' has shape {list(shape)} but config.json "
                             f"implies {list(want)}")
    missing = [t for t in expected if t not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"tensor '{missing[0]}'{more} is missing from the safetensors files in "
                         f"{files[0].parent}, but config.json implies it")
    unexpected = [t for t in found if t not in expected]
    if unexpected:
        t = sorted(unexpected)[0]
        raise InputError(f"{found[t][1]}: unexpected tensor '{t}' for a {spec.architecture} with this "
                         "config.json (check the bias flags and num_hidden_layers)")
    return total


def _model_dir(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"model directory '{path}' does not exist; expected a directory with config.json")
    if not p.is_dir():
        raise InputError(f"'{path}' is not a directory; expected a model directory with config.json")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"no config.json in '{path}'; expected a Hugging Face model directory")
    return p, cfg_path


def _with_weights(spec: ModelSpec, p: Path) -> ModelSpec:
    files = sorted(p.glob("*.safetensors"))
    return replace(spec, weights_bytes=check_safetensors(spec, files)) if files else spec


def load_model_dir(path: str | os.PathLike[str]) -> ModelSpec:
    """A ModelSpec from a HF model directory: ``config.json`` read with transformers' defaults
    (`spec_from_config_dict`) and any ``*.safetensors`` headers checked against it (``weights_bytes``
    set). Imports neither transformers nor torch, so planning a directory starts as fast as a
    catalog model; tests keep it equal to `load_model_dir_transformers` on every catalog config and
    on saved tiny models."""
    p, cfg_path = _model_dir(path)
    spec = spec_from_config_dict(read_config_json(cfg_path), p.resolve().name, str(path))
    return _with_weights(spec, p)


def load_model_dir_transformers(path: str | os.PathLike[str]) -> ModelSpec:
    """The same ModelSpec through ``transformers.AutoConfig`` (imported here, lazily), the authority
    the fast path is tested against. The raw JSON is validated first so bad input gets our one-line
    error rather than a transformers traceback."""
    p, cfg_path = _model_dir(path)
    name = p.resolve().name
    raw = read_config_json(cfg_path)
    spec_from_config_dict(raw, name, str(path))  # clear errors for anything we do not support

    import transformers  # lazy: costs seconds
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # e.g. "torch_dtype is deprecated" is noise for our users
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # transformers raises many types for bad configs; report it on one line
        msg = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"transformers cannot load {cfg_path}: {msg}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return _with_weights(spec_from_hf_config(cfg, name, str(path)), p)
