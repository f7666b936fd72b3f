"""``waferllm run``: a compiled bundle on the simulated wafer — the prompt's KV cache, then greedy decode
steps, each one launch of the decode program (every stage's layers, the hand-offs, the LM head, the argmax
and the next token's embedding on the simulated fabric).

Prefill (``prefill``): ``"device"`` runs the prompt on simulated prefill regions of the plan's prefill grid
(``meshgemm.prefill_run``: as many layers per region as its SRAM holds, the regions one after another)
and re-lays its KV cache and last hidden state out to the decode layout; a prompt whose layer does not
fit one region stops with the numbers. ``"host"`` runs it in numpy (`waferllm.reference`, weights
unpacked from the bundle's shards) and the host writes the cache and the hidden state into the device —
``"prefill": "host"`` in the result, and no prefill cycles (null). ``"auto"`` is the device prefill when
this installation has it and the prompt's layer fits a region, else the host prefill, with the reason
in ``prefill_note``. Timing-only runs with a host prefill assume the cache filled (no values exist).

A run asked for more tokens than the KV cache holds stops at the first token that would not fit, keeps
the tokens produced, and reports why (``stopped``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from plmr.errors import InputError
from meshgemm.kv_cache import KVCacheFull, ShiftKVCache

#: Version of the ``run --json`` object.
RUN_SCHEMA = 1

#: ``--prefill auto`` simulates the prompt on the device only up to this many PE-cycles (plmr's prefill
#: layer × region PEs × layers): the engine runs 2e7-5e8 PE-cycles a second on a 2-core machine (dense
#: MeshGEMM phases to sparse ones), so this is seconds to ~10 minutes; a LLaMA3-8B 4K-token prompt is
#: ~1e14 (days). Beyond it auto runs the prompt on the host and says so; ``--prefill device`` still runs it.
AUTO_PREFILL_PE_CYCLES = 10**10


@dataclass
class RunRequest:
    bundle: str
    prompt_ids: list[int] | None = None
    prompt: str | None = None
    max_new_tokens: int = 16
    dtype: str | None = None
    timing_only: bool = False
    prefill: str = "auto"  # "device" (simulated prefill regions), "host" (numpy), "auto": device when installed
    prompt_len: int | None = None  # timing-only: a prompt of this many tokens (values do not matter)
    keep_logits: bool = False  # API only: the fp32 logits of every token under "logits" ([n, V] numpy)
    threads: int | None = None  # concurrent parts per simulated cycle (simulator.Device); None: the environment's


@dataclass
class RunEvents:
    """Callbacks for progress displays (all optional)."""

    phase: Callable[[str], None] | None = None
    token: Callable[[int, int | None, int], None] | None = None  # (index, token, cycles)


def _tokenizer(path):
    from waferllm.compile import TOKENIZER_FILES
    if not any((path / f).is_file() for f in TOKENIZER_FILES[:5]):
        return None
    try:
        import transformers
        return transformers.AutoTokenizer.from_pretrained(str(path))
    except Exception:  # a tokenizer that does not load is as good as none
        return None


def _device_prefill():
    """The device prefill, when this installation has it."""
    try:
        from meshgemm import prefill_run
    except ImportError:
        return None
    return prefill_run


def prefill_pe_cycles(model, hw, mesh: tuple[int, int], n_prompt: int, dtype: str) -> float:
    """The device prefill's simulation work, roughly: plmr's prefill layer cycles × the region's PEs ×
    the layers (each layer runs once, on one region at a time)."""
    from plmr.transformer import prefill_layer
    from waferllm.planner import model_dims

    layer = prefill_layer(hw, model_dims(model), mesh[0], mesh[1], n_prompt, dtype).total_cycles
    return layer * mesh[0] * mesh[1] * model.num_layers


def run_bundle(req: RunRequest, events: RunEvents | None = None) -> dict:
    """Run ``req`` (see the module docstring); returns the ``run --json`` object."""
    from meshgemm.decode_program import build_decode_program
    from meshgemm.decode_runtime import DecodeRuntime, unpack_images
    from waferllm.compile import open_bundle
    from waferllm.reference import ReferenceModel

    ev = events or RunEvents()
    say = ev.phase or (lambda s: None)
    b = open_bundle(req.bundle)
    model, hw = b.model, b.hardware
    dtype = req.dtype or b.doc["dtype"]
    if dtype not in ("fp16", "fp32"):
        raise InputError(f"--dtype {dtype!r}: use fp32 or fp16")
    if req.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {req.max_new_tokens}")
    given = sum(x is not None for x in (req.prompt_ids, req.prompt, req.prompt_len))
    if given != 1:
        raise InputError("give the prompt as --prompt-ids 1,2,3, as --prompt TEXT, or (with --timing-only) its "
                         "length as --prompt-len N: one of them")
    if req.prompt_len is not None and not req.timing_only:
        raise InputError("--prompt-len needs --timing-only (a functional run needs the prompt's tokens)")
    if req.prefill not in ("auto", "device", "host"):
        raise InputError(f"--prefill {req.prefill!r}: use auto, device or host")
    tok = _tokenizer(b.path)
    if req.prompt is not None:
        if tok is None:
            raise InputError(f"{req.bundle} has no tokenizer files; give the prompt as --prompt-ids")
        ids = list(tok(req.prompt)["input_ids"])
        if not ids:
            raise InputError("the prompt is empty after tokenisation")
    elif req.prompt_len is not None:
        if req.prompt_len < 1:
            raise InputError(f"--prompt-len must be >= 1, got {req.prompt_len}")
        ids = [0] * req.prompt_len
    else:
        ids = list(req.prompt_ids)
        if not ids:
            raise InputError("--prompt-ids is empty; give at least one token id")
    bad = [t for t in ids if not 0 <= t < model.vocab_size]
    if bad:
        raise InputError(f"token id {bad[0]} is outside the vocabulary 0..{model.vocab_size - 1}")
    if not req.timing_only and not b.has_weights:
        raise InputError(f"{req.bundle} holds no weights ({model.name} was compiled from the catalog); "
                         f"run it with --timing-only, or compile a model directory with safetensors")
    cfg = b.decode_config(dtype)
    n_prompt = len(ids)
    for i in range(model.num_layers):  # the cache rule of every layer, before the (slow) build
        try:
            ShiftKVCache(cfg.grid[0], cfg.capacity, model.layer_sliding_window(i)).prefill(n_prompt)
        except KVCacheFull as e:
            raise InputError(f"the prompt of {n_prompt} tokens does not fit the KV cache: {e}") from None
    say("building the decode program")
    try:
        prog = build_decode_program(cfg, hw)
    except InputError as e:
        if dtype != b.doc["dtype"]:
            raise InputError(f"the bundle was planned for {b.doc['dtype']}; in {dtype} {e} (compile with --dtype "
                             f"{dtype})") from None
        raise
    say("loading the device")
    rt = DecodeRuntime(prog, mode="timing" if req.timing_only else "functional", threads=req.threads)
    weights = None
    if not req.timing_only:
        say("writing the weights")
        npdt = np.float16 if dtype == "fp16" else np.float32
        images = [{k: v.astype(npdt) for k, v in img.items()} for img in b.images()]
        rt.load_images(images)
        weights = unpack_images(prog, images, model, dtype)
    # ---- prefill ----------------------------------------------------------------------------------------------
    prefill_kind, prefill_cycles, switch_cycles = "host", None, None
    device = _device_prefill() if req.prefill != "host" else None
    if req.prefill == "device" and device is None:
        raise InputError("this installation has no device prefill (meshgemm.prefill_run); use --prefill host")
    mesh = tuple(b.doc["plan"]["prefill"]["grid"])
    pre_stages, note = None, None
    if device is not None and len(prog.shapes) > 1:
        # the device prefill's re-layout writes one decode layout; a packed program's strips have their own
        why = (f"host prefill: the decode program's stages have {len(prog.shapes)} region widths (strips beside "
               f"the regions) and the device prefill re-lays its caches out for one")
        if req.prefill == "device":
            raise InputError(why.replace("host prefill: ", "--prefill device: ") + "; use --prefill host")
        device, note = None, why
    if device is not None:
        try:
            pre_stages = device.plan_stages(model, hw, mesh, n_prompt, dtype)
        except InputError as e:
            if req.prefill == "device":
                raise
            device, note = None, f"host prefill: {e}"
    if device is not None and req.prefill == "auto":
        work = prefill_pe_cycles(model, hw, mesh, n_prompt, dtype)
        if work > AUTO_PREFILL_PE_CYCLES:
            device, note = None, (f"host prefill: simulating the {n_prompt}-token prompt on {mesh[0]}x{mesh[1]} "
                                  f"regions is ~{work:.1e} PE-cycles, hours or more (auto simulates up to "
                                  f"{AUTO_PREFILL_PE_CYCLES:.0e}); --prefill device runs it anyway")
    if device is not None:
        say(f"prefill of {n_prompt} tokens on {len(pre_stages)} simulated {mesh[0]}x{mesh[1]} region(s)")
        res = device.run_prefill(model, n_prompt if req.timing_only else ids, mesh, hw, weights=weights,
                                 stages=pre_stages, decode=prog.layout, capacity=cfg.capacity, dtype=dtype,
                                 mode="timing" if req.timing_only else "functional", progress=say,
                                 threads=req.threads)
        if req.timing_only:
            rt.length = n_prompt
        else:
            rt.load_cache_blocks(res.k_cache, res.v_cache, res.hidden, n_prompt)
        prefill_kind, prefill_cycles = "device", int(res.prefill_cycles)
        switch_cycles = int(res.switch.cycles)
    elif req.timing_only:
        say(f"prefill of {n_prompt} tokens (host: not simulated)")
        rt.length = n_prompt
    else:
        # HOST PREFILL: the prompt runs in numpy and the host writes the KV cache and the last hidden state
        # into the device ("prefill": "host" in the result): no prefill cycles are simulated
        say(f"prefill of {n_prompt} tokens (host)")
        ref = ReferenceModel(weights)
        traces: list = []
        _, cache = ref.prefill(ids, traces)
        rt.load_prefix([k.reshape(k.shape[0], -1) for k in cache.k], [v.reshape(v.shape[0], -1) for v in cache.v],
                       traces[-2]["h_out"][-1])
    # ---- decode ----------------------------------------------------------------------------------------------
    say("decoding")
    tokens: list[int] = []
    step_cycles: list[int] = []
    stopped = None
    first = rt.head()
    rows = []
    if first.token is not None:
        tokens.append(first.token)
        rows.append(first.logits)
    if ev.token:
        ev.token(0, first.token, first.cycles)
    produced = 1
    while produced < req.max_new_tokens:
        try:
            r = rt.step()
        except KVCacheFull as e:
            stopped = str(e)
            break
        step_cycles.append(int(r.cycles))
        if r.token is not None:
            tokens.append(r.token)
            rows.append(r.logits)
        if ev.token:
            ev.token(produced, r.token, r.cycles)
        produced += 1
    clock = hw.clock_hz
    per_tok = int(round(float(np.mean(step_cycles)))) if step_cycles else None
    out = {
        "schema": RUN_SCHEMA,
        "model": model.name,
        "hardware": hw.name,
        "bundle": str(req.bundle),
        "dtype": dtype,
        "mode": "timing" if req.timing_only else "functional",
        "prompt_ids": ids if req.prompt_len is None else [],
        "prompt_len": n_prompt,
        "tokens": tokens,
        "new_tokens": produced,
        "prefill": prefill_kind,
        "prefill_note": note,
        "prefill_grid": list(mesh) if prefill_kind == "device" else None,
        "prefill_regions": len(pre_stages) if prefill_kind == "device" else None,
        "prefill_cycles": prefill_cycles,
        "switch_cycles_modelled": switch_cycles,
        "prefill_cycles_planned": int(b.doc["plan"]["prefill"]["cycles"]),
        "first_token_cycles": int(first.cycles),
        "decode_cycles": step_cycles,
        "decode_cycles_per_token": per_tok,
        "tokens_per_s": (clock / per_tok) if per_tok else None,
        "clock_hz": clock,
        "grid": list(cfg.grid),
        "stages": len(cfg.stages),
        "kv_capacity_tokens": int(prog.config.capacity * cfg.grid[0]),
        "stopped": stopped,
    }
    if tok is not None and tokens:
        out["text"] = tok.decode(tokens)
    if req.keep_logits and rows:
        out["logits"] = np.stack(rows)
    return out
