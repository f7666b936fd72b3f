"""The offline model catalog: official Hub config.json files shipped as package data.

``waferllm plan llama3-70b`` must work with no network and start fast, so catalog models are built by
`waferllm.model.spec_from_config_dict` from the bundled JSON, without importing transformers. The files are
byte-for-byte copies of ``shared/reference/model-configs/`` (see its README for provenance).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, NamedTuple

from plmr.errors import InputError
from waferllm.model import ModelSpec, load_model_dir, spec_from_config_dict

#: Hub repo id -> catalog name (from the reference README table). Matching is case-insensitive, and the
#: repo's basename (e.g. "Meta-Llama-3-8B") is accepted too.
HUB_REPOS: Mapping[str, str] = MappingProxyType({
    "meta-llama/Meta-Llama-3-8B": "llama3-8b",
    "meta-llama/Meta-Llama-3-70B": "llama3-70b",
    "meta-llama/Llama-3.1-8B": "llama3.1-8b",
    "meta-llama/Meta-Llama-3.1-8B": "llama3.1-8b",  # the repo's name before Meta renamed it
    "meta-llama/Llama-3.1-70B": "llama3.1-70b",
    "meta-llama/Meta-Llama-3.1-70B": "llama3.1-70b",
    "meta-llama/Llama-2-7b-hf": "llama2-7b",
    "meta-llama/Llama-2-13b-hf": "llama2-13b",
    "meta-llama/Llama-2-70b-hf": "llama2-70b",
    "codellama/CodeLlama-34b-hf": "codellama-34b",
    "mistralai/Mistral-7B-v0.1": "mistral-7b",
    "Qwen/Qwen2-7B": "qwen2-7b",
    "Qwen/Qwen2-72B": "qwen2-72b",
    "Qwen/Qwen2.5-0.5B": "qwen2.5-0.5b",
})


class CatalogRow(NamedTuple):
    """One line of ``waferllm models``."""

    name: str
    architecture: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    params_b: float  # total parameters, in billions


def _catalog_dir() -> resources.abc.Traversable:
    return resources.files("waferllm").joinpath("catalog")


def catalog_names() -> tuple[str, ...]:
    """Sorted catalog names (the JSON file stems)."""
    return tuple(sorted(p.name[:-5] for p in _catalog_dir().iterdir() if p.name.endswith(".json")))


def _canonical(name: str) -> str | None:
    """The catalog name ``name`` refers to (name, hub repo id or repo basename, any case), or None."""
    key = name.strip().lower()
    names = catalog_names()
    if key in names:
        return key
    for repo, cat in HUB_REPOS.items():
        if key in (repo.lower(), repo.lower().rsplit("/", 1)[-1]):
            return cat
    return None


def _unknown(name: str) -> InputError:
    return InputError(f"unknown model '{name}'; catalog: {', '.join(catalog_names())} "
                      "or a directory with config.json")


def catalog_config(name: str) -> dict:
    """The raw config.json dict of a catalog model (accepts the same names as `load_catalog_model`)."""
    canon = _canonical(name)
    if canon is None:
        raise _unknown(name)
    return json.loads(_catalog_dir().joinpath(f"{canon}.json").read_text(encoding="utf-8"))


def load_catalog_model(name: str) -> ModelSpec:
    """A catalog model's ModelSpec, without transformers; ``name`` may be a hub repo id, any case."""
    canon = _canonical(name)
    if canon is None:
        raise _unknown(name)
    return spec_from_config_dict(catalog_config(canon), canon, source=canon)


def resolve_model(name_or_path: str) -> ModelSpec:
    """A catalog name/alias or a model directory, as the CLI's MODEL argument.

    A directory wins when it holds a config.json, so a local HF clone named like a catalog entry is
    used as such; a stray directory named ``llama3-8b`` without one does not shadow the catalog.
    """
    p = Path(name_or_path)
    canon = _canonical(name_or_path)
    if p.is_dir() and ((p / "config.json").is_file() or canon is None):
        return load_model_dir(p)
    if canon is not None:
        return load_catalog_model(canon)
    if p.exists():
        return load_model_dir(p)  # a file: load_model_dir says what it expected
    raise _unknown(name_or_path)


def catalog_table() -> tuple[CatalogRow, ...]:
    """Rows for ``waferllm models``, in catalog order."""
    rows = []
    for name in catalog_names():
        s = load_catalog_model(name)
        rows.append(CatalogRow(name, s.architecture, s.num_layers, s.hidden_size, s.num_heads,
                               s.num_kv_heads, s.total_params / 1e9))
    return tuple(rows)
