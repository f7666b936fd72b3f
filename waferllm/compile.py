"""``waferllm compile``: a model planned onto a wafer and written as a bundle the simulator (and, later, the
CSL backend) runs.

A bundle is a directory:

* ``plan.json`` — the planner's plan (``waferllm plan --json``), the decode program's own placement
  (``decode_program``: grid, stages with their layers and region origins, KV capacity, dtype, context, the
  reduction trees and colours), the hardware spec and a ``schema`` version;
* ``config.json`` (and the tokenizer files when the model directory has them);
* ``weights/stage<i>.safetensors`` — per-PE shards: for every weight buffer of the decode program an array
  [P_y, P_x, length], the image each PE of stage i receives (absent for a catalog model, which has no weights);
* ``programs/decode.json`` (bodies, parameter sets, code and SRAM bytes per PE, colours, routes, hand-offs,
  buffers) and ``programs/decode_body.txt`` (the PE program, statement by statement);
* ``csl/decode/`` — the decode program lowered to CSL for the planned target (``csl_templates.model_sources``:
  ``src/*.csl``, ``commands_<arch>.sh``, ``manifest.json``); ``waferllm csl check BUNDLE/csl/decode`` checks it;
* ``csl/prefill/`` — the prefill program (``meshgemm.prefill_program``) the same way, built for a prompt of the
  plan's input length on the plan's prefill grid, with the resident layers of a region as ``waferllm run
  --prefill device`` splits them; when the regions' programs differ (fewer layers in the last ones, other
  sliding windows) one directory per distinct program, ``csl/prefill/stage<i>/`` for the first region i
  that runs it. ``plan.json``'s ``csl.prefill`` says which regions run which; when one layer of that prompt
  does not fit a region, no prefill CSL and the reason in ``csl.prefill.skipped``;
* ``README.md``.

Placement: the planner chooses the decode grid and the stages, charging the decode program's buffers as the
program allocates them (``plmr.decode_memory``); the program runs the plan's stages in its serpentine order
on the region tiling (consecutive stages share an edge). The planner does not charge the program's code by
default: when the busiest stage leaves less than the code bound free, the plan is made again with that bound
added to the SRAM reserve (``plan_decode``).

The bundle is written into a temporary directory next to ``-o`` and renamed into place at the end: an
error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from plmr.decode_memory import SCORE_CHUNK
from plmr.errors import InputError
from plmr.atomic_output import swap_dir, temp_dir_beside
from plmr.hardware import HardwareSpec, get_spec, spec_from_mapping

#: Version of a bundle's layout and plan.json; bumped when a field changes meaning or disappears.
BUNDLE_SCHEMA = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json")
DTYPES = ("fp16", "fp32")

Progress = Callable[[str], None]


@dataclass
class CompileRequest:
    model: str  # catalog name or HF model directory
    hardware: str = "wse2"
    context: int | None = None
    dtype: str = "fp16"
    decode_grid: tuple[int, int] | None = None
    prefill_grid: tuple[int, int] | None = None
    out: Path = Path("bundle")
    force: bool = False


@dataclass
class StagePlan:
    """The fitted placement of the decode program."""

    grid: tuple[int, int]
    stages: tuple  # DecodeStage
    capacity: int
    per_layer_bytes: int
    fixed_bytes: dict = field(default_factory=dict)  # "<first><last>" -> bytes besides the layers (with the code)
    code_bytes: int = 0
    notes: list = field(default_factory=list)
    score_chunk: int = SCORE_CHUNK  # the plan's attention chunk (``DecodeConfig.score_chunk``)


def default_context(model) -> int:
    """KV tokens a bundle is planned for when ``--context`` is not given: the planner's default prompt and
    output (4096 + 128), at most the model's position limit."""
    return min(model.max_position_embeddings, 4096 + 128)


def kv_capacity(model, p_y: int, context: int) -> int:
    """KV entries per PE per layer: the shift rule keeps ⌈tokens / P_y⌉ entries on the busiest row, a layer
    with a sliding window only its window."""
    need = 1
    for i in range(model.num_layers):
        w = model.layer_sliding_window(i)
        tokens = min(context, w) if w else context
        need = max(need, -(-tokens // p_y))
    return need


def plan_stages(model, plan, dtype: str, context: int) -> StagePlan:
    """The decode program's stages as the plan places them: one per planner stage, its layers, region
    origin and width (a packed placement's strips are narrower), the embedding with the first and the LM
    head with the last. The planner charges what the program allocates (``plmr.decode_memory``), so no
    other fit is needed."""
    from meshgemm.decode_program import DecodeStage
    from plmr.decode_memory import DecodeModel, decode_fixed_bytes, decode_layer_bytes

    grid = tuple(plan.decode.grid)
    pl = plan.placement
    packed = pl.packed
    if pl.wafers_used > 1:
        raise InputError(f"{model.name} needs {pl.wafers_used} wafers; a bundle runs on one")
    n = len(pl.stages)
    stages = tuple(DecodeStage(i, s.layers[0], s.layers[1], tuple(s.origin), embedding=i == 0, lm_head=i == n - 1,
                               width=s.grid[1] if packed else 0) for i, s in enumerate(pl.stages))
    cap = kv_capacity(model, grid[0], context)
    mod = DecodeModel.of(model)
    chunk = pl.score_chunk
    w, kv = decode_layer_bytes(mod, grid[0], grid[1], cap, dtype, chunk)
    fx = decode_fixed_bytes(mod, grid[0], grid[1], cap, dtype, chunk)
    fixed = {"00": fx["buffers"], "10": fx["buffers"] + fx["first"], "01": fx["buffers"] + fx["last"],
             "11": fx["buffers"] + fx["both"]}
    return StagePlan(grid, stages, cap, w + kv, fixed, score_chunk=chunk)


def plan_decode(model, spec: HardwareSpec, dtype: str, context: int, decode_grid: tuple[int, int] | None,
                progress: Progress | None = None, prefill_grid: tuple[int, int] | None = None):
    """(planner plan, its stages). The planner charges the decode program's buffers exactly; by default
    not its code, so when the busiest stage leaves less than the code bound free
    (``plmr.program_code.DECODE_CODE``, which every decode program's code and variables stay within),
    plan once more with that bound added to the SRAM reserve: the program then builds."""
    from plmr.program_code import DECODE_CODE
    from waferllm.planner import PlanRequest, plan

    code = DECODE_CODE.bytes(spec)
    notes: list[str] = []
    for reserve in (0, code):
        hw = spec if reserve == 0 else spec.with_params(sram_reserve_bytes=spec.sram_reserve_bytes + reserve)
        req = PlanRequest(hardware=hw, dtype=dtype, context=context, input_len=max(1, min(context, 4096)),
                          decode_grid=decode_grid, prefill_grid=prefill_grid)
        if progress:
            progress(f"planning (SRAM reserve +{reserve} B for the decode program's code)" if reserve else "planning")
        p = plan(model, req)
        if not p.fits:
            raise InputError(f"{model.name} does not fit {spec.name}{' beside the decode program code' if reserve else ''}"
                             f": {p.fit_reason}")
        if reserve or DECODE_CODE.fits_beside(spec, p.placement.bytes_per_pe):
            break
        notes.append(f"planned again with the decode program's code bound ({code} B per PE) as SRAM reserve: the "
                     f"first plan's busiest PE holds {p.placement.bytes_per_pe} B of weights, KV cache and buffers "
                     f"of the {spec.usable_sram_bytes} B usable, too little room left for the code")
    st = plan_stages(model, p, dtype, context)
    st.notes = notes
    return p, st


def program_trees(plan) -> dict:
    """The planner's decode trees as the program's level-0 group counts (``DecodeConfig.y_groups``,
    ``x_groups``): the program runs the trees the plan priced (K = 1 is one group)."""
    def groups(t) -> int:
        return t.group_counts[0] if t.k == 2 and t.group_counts else 1
    out = {"y_groups": groups(plan.decode.tree_y), "x_groups": groups(plan.decode.tree_x)}
    if plan.decode.tree_x_strip is not None:  # a packed placement: the strips' own X tree
        out["strip_x_groups"] = groups(plan.decode.tree_x_strip)
    return out


# ---- the bundle ---------------------------------------------------------------------------------------------
def compile_bundle(req: CompileRequest, progress: Progress | None = None) -> dict:
    """Plan, build, shard and write a bundle (see the module docstring); returns the plan.json content."""
    from meshgemm.decode_program import DecodeConfig, build_decode_program
    from meshgemm.decode_runtime import iter_images
    from waferllm.catalog import _canonical, catalog_config, resolve_model

    if req.dtype not in DTYPES:
        raise InputError(f"unknown dtype {req.dtype!r}; allowed: {', '.join(DTYPES)}")
    out = Path(req.out)
    src = Path(req.model)
    check_output(out, src, req.force)
    spec = get_spec(req.hardware)
    model = resolve_model(req.model)
    is_dir = src.is_dir() and (src / "config.json").is_file()
    has_weights = is_dir and bool(model.weights_bytes)
    context = req.context if req.context is not None else default_context(model)
    if context < 1:
        raise InputError(f"--context must be >= 1, got {context}")
    if context > model.max_position_embeddings:
        raise InputError(f"--context {context} is beyond {model.name}'s max_position_embeddings "
                         f"({model.max_position_embeddings})")
    plan, st = plan_decode(model, spec, req.dtype, context, req.decode_grid, progress, req.prefill_grid)
    cfg = DecodeConfig(model, st.grid, st.stages, st.capacity, req.dtype, **program_trees(plan),
                       score_chunk=st.score_chunk)
    if progress:
        progress(f"building the decode program ({len(st.stages)} stage{'s' if len(st.stages) > 1 else ''})")
    prog = build_decode_program(cfg, spec)
    _check_resources(prog, spec)
    st.code_bytes = _code_bytes(prog)
    st.fixed_bytes = {k: v + st.code_bytes for k, v in st.fixed_bytes.items()}
    from csl_templates.model_sources import model_csl_files
    if progress:
        progress(f"lowering the decode program to CSL ({spec.csl_arch})")
    csl_files, csl_src = model_csl_files(prog.program, spec, "decode", f"{model.name} decode")
    pre_files, pre_doc = prefill_csl(model, spec, plan, req.dtype, progress)
    csl_files.update(pre_files)
    st.notes += prefill_region_notes(model, plan, pre_doc)
    weights = None
    shard_dtype = None
    if has_weights:
        from waferllm.weights import load_weights
        shard_dtype = "fp32" if model.torch_dtype == "float32" else "fp16"
        if progress:
            progress(f"loading the weights ({shard_dtype})")
        weights = load_weights(src, shard_dtype, spec=model, lazy_layers=True)  # read stage by stage
    config = json.loads((src / "config.json").read_text()) if is_dir else catalog_config(_canonical(req.model))
    doc = {
        "schema": BUNDLE_SCHEMA,
        "model": model.name,
        "source": str(req.model),
        "hardware": spec.to_dict(),
        "dtype": req.dtype,
        "context": context,
        "weights": {"present": has_weights, "dtype": shard_dtype,
                    "files": [f"weights/stage{s.index}.safetensors" for s in st.stages] if has_weights else []},
        "decode_program": decode_program_doc(prog, st),
        "csl": {"decode": {"dir": "csl/decode", "arch": spec.csl_arch, "params": csl_src.params,
                           "files": sorted(f for f in csl_files if f.startswith("csl/decode/src/"))},
                "prefill": pre_doc},
        "plan": plan.to_dict(),
        "notes": st.notes,
    }
    tmp = temp_dir_beside(out.resolve())
    try:
        if progress:
            progress("writing the bundle")
        (tmp / "plan.json").write_text(json.dumps(doc, indent=2))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if is_dir:
            for f in TOKENIZER_FILES:
                if (src / f).is_file():
                    shutil.copy2(src / f, tmp / f)
        (tmp / "programs").mkdir()
        (tmp / "programs" / "decode.json").write_text(json.dumps(program_summary(prog), indent=2))
        (tmp / "programs" / "decode_body.txt").write_text(body_listing(prog))
        for rel, text in csl_files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
            if rel.endswith(".sh"):
                (tmp / rel).chmod(0o755)
        if weights is not None:  # one stage's shards at a time: packed, written, dropped
            from safetensors.numpy import save_file
            (tmp / "weights").mkdir()
            stages = {s.index: s for s in st.stages}
            for i, (ds, images) in enumerate(zip(prog.config.stages, iter_images(prog, weights))):
                if progress:
                    progress(f"sharding and writing the weights (stage {i + 1}/{len(stages)})")
                s = stages[ds.index]
                save_file(images, str(tmp / "weights" / f"stage{s.index}.safetensors"),
                          metadata={"stage": str(s.index), "layers": f"{s.first}-{s.last}"})
                del images
        (tmp / "README.md").write_text(readme(doc))
        swap_dir(tmp, out.resolve())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def check_output(out: Path, source: Path, force: bool) -> None:
    """Where a bundle may be written: a new path, an empty directory or, with ``force``, a bundle that
    ``waferllm compile`` wrote before. Never a file, another directory, the model being compiled, or a
    directory that holds the current one: ``--force`` replaces bundles, nothing else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another -o path")
    if not any(out.iterdir()):
        return
    if not force:
        raise InputError(f"{out} exists; choose another -o path or pass --force to replace it")
    where = out.resolve()
    cwd = Path.cwd().resolve()
    if where == cwd or where in cwd.parents:
        raise InputError(f"{out} holds the current directory, which --force does not replace; choose another -o path")
    if source.exists() and (where == source.resolve() or where in source.resolve().parents):
        raise InputError(f"{out} holds the model being compiled ({source}); choose another -o path")
    try:
        doc = json.loads((out / "plan.json").read_text())
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or "schema" not in doc or "decode_program" not in doc:
        raise InputError(f"{out} exists and is not a waferllm bundle (no bundle plan.json), so --force does not "
                         f"replace it; remove it yourself or choose another -o path")


def prefill_csl(model, spec: HardwareSpec, plan, dtype: str, progress: Progress | None = None) -> tuple[dict, dict]:
    """The prefill program's CSL files and their ``plan.json`` entry: the program ``waferllm run --prefill
    device`` builds for a prompt of the plan's input length on the plan's prefill grid, one directory per
    distinct region program (see the module docstring). A prompt whose layer does not fit a region has no
    prefill CSL (the run falls back to the host prefill): the entry says why."""
    from csl_templates.model_sources import model_csl_files
    from meshgemm.prefill_program import build_prefill_program
    from meshgemm.prefill_run import plan_stages

    grid = tuple(plan.prefill.grid)
    tokens = int(plan.request.input_len)
    doc: dict = {"grid": list(grid), "prompt_tokens": tokens, "dtype": dtype, "arch": spec.csl_arch}
    # what the backend cannot lower does not depend on the region's size: ask a 2x2 region of one layer
    # first (a second), before the real region's builds (a minute at LLaMA3-8B's 742²)
    probe_hw = spec.with_params(sram_bytes=1 << 30)
    try:
        probe = build_prefill_program(model, probe_hw, (2, 2), 4, layers=(0,), dtype=dtype)
        model_csl_files(probe.program, probe_hw, "prefill", f"{model.name} prefill")
    except InputError as e:  # the simulator runs it, the CSL backend cannot lower it (yet)
        return {}, {**doc, "programs": [], "skipped": f"the prefill program is not lowered to CSL: {e}"}
    try:
        stages = plan_stages(model, spec, grid, tokens, dtype)
    except InputError as e:
        return {}, {**doc, "programs": [], "skipped": str(e)}
    key = lambda layers: (len(layers), tuple(model.layer_sliding_window(i) for i in layers))  # noqa: E731
    distinct = {}
    for i, layers in enumerate(stages):
        distinct.setdefault(key(layers), []).append(i)
    files: dict[str, str] = {}
    programs = []
    doc["stages"] = [list(s) for s in stages]
    for regions in distinct.values():
        first = regions[0]
        name = "prefill" if len(distinct) == 1 else f"prefill/stage{first}"
        if progress:
            progress(f"lowering the prefill program to CSL ({spec.csl_arch}, {name})")
        pp = build_prefill_program(model, spec, grid, tokens, layers=stages[first], dtype=dtype)
        try:
            out, src = model_csl_files(pp.program, spec, name, f"{model.name} prefill ({tokens} tokens)")
        except InputError as e:  # the simulator runs it, the CSL backend cannot lower it (yet)
            return {}, {**doc, "programs": [], "skipped": f"the prefill program is not lowered to CSL: {e}"}
        files.update(out)
        programs.append({"dir": f"csl/{name}", "regions": regions, "layers": list(stages[first]),
                         "params": src.params, "files": sorted(f for f in out if "/src/" in f)})
    return files, {**doc, "programs": programs}


def prefill_region_notes(model, plan, pre_doc: dict) -> list[str]:
    """A note when the prefill program needs more regions than the plan's prefill placement has: by
    default the planner charges the authors' activation footprint for prefill, not the program's
    buffers and code (docs/PLANNER.md, "The programs' own memory"), so a plan's "1 stage" can be a
    program of several regions, which ``waferllm run --prefill device`` runs one after another."""
    stages = pre_doc.get("stages")
    placed = len(plan.prefill.placement.stages) if plan.prefill.placement is not None else 1
    if not stages or len(stages) <= placed:
        return []
    g = pre_doc["grid"]
    most = max(len(s) for s in stages)
    return [f"the prefill program holds {most} of {model.num_layers} layers per {g[0]}x{g[1]} region (its weights, "
            f"buffers and code), so a {pre_doc['prompt_tokens']}-token prompt runs through {len(stages)} such regions "
            f"one after another; the plan's prefill figure ({placed} stage{'s' if placed > 1 else ''}) charges the "
            f"authors' activation footprint instead (`waferllm plan --program-memory` charges the program's)"]


def _check_resources(prog, spec: HardwareSpec) -> None:
    """Task IDs and input/output queues of every body, as the simulator binds them when it loads the
    program: a program the target cannot run fails at compile time, with the numbers."""
    from simulator import resources

    p = prog.program
    p.finalize()
    used = sorted({int(b) for b in p.pe_blocks().tolist() if b >= 0})
    blocks = [p.blocks[b] for b in used]
    where = {}
    for pl in p.placements:
        for pe, b in zip(pl.pes.tolist(), pl.block_of_pe.tolist()):
            where.setdefault(int(b), pe)
    resources.allocate(blocks, spec, lambda b: f"PE {p._xy(where[b.index])}")


def _code_bytes(prog) -> int:
    """The largest code and variable bytes of any PE's program (finalized)."""
    p = prog.program
    return max(p.blocks[b].code_bytes + p.blocks[b].var_bytes for b in {int(b) for b in p.pe_blocks().tolist() if b >= 0})


def decode_program_doc(prog, st: StagePlan) -> dict:
    cfg = prog.config
    return {
        "grid": list(cfg.grid),
        "capacity": cfg.capacity,
        "score_chunk": cfg.score_chunk,
        "dtype": cfg.dtype,
        "stages": [{"stage": s.index, "layers": [s.first, s.last], "origin": list(s.origin),
                    "grid": [cfg.grid[0], s.columns(cfg.grid)],
                    "embedding": s.embedding, "lm_head": s.lm_head} for s in cfg.stages],
        "trees": {"y": {"k": prog.tree_y.k, "groups": prog.tree_y.groups0},
                  "x": {"k": prog.tree_x.k, "groups": prog.tree_x.groups0, "score_mode": prog.sizes.score_mode},
                  **{"x_strip": {"k": t.k, "groups": t.groups0, "score_mode": sz.score_mode}
                     for w, (_, sz, _, t) in prog.shapes.items() if w != cfg.grid[1]}},
        "bytes_per_pe": {"per_layer": st.per_layer_bytes, "code_and_vars": st.code_bytes, "fixed": st.fixed_bytes},
    }


def program_summary(prog) -> dict:
    p = prog.program
    stats = p.stats()
    col = prog.colours
    return {
        "name": p.name, "width": p.width, "height": p.height, **stats,
        "bodies": sorted({b.body.name for b in p.blocks}),
        "functions": list(prog.body.functions),
        "colours": {"y_tree": list(col.y), "x_tree": list(col.x), "kv_shift": list(col.shift),
                    "handoff": [list(col.handoff[0]), list(col.handoff[1])], "token_return": col.token,
                    "used": col.used},
        "handoffs": [{"from": h["from"], "to": h["to"], "move": h["move"], "senders": len(h["send"])}
                     for h in prog.handoffs],
        "strides": prog.strides,
    }


def body_listing(prog) -> str:
    """The PE program as written (one body; the queue-class copies differ only in queue numbers)."""
    from simulator import statements as S

    lines = [f"# body {prog.body.name}: parameters {', '.join(prog.body.params)}"]
    for b in prog.body.buffers.values():
        lines.append(f"buffer {b.name}: {b.dtype}[{b.length!r}]")

    def walk(code, ind):
        for st in code:
            lines.append("  " * ind + S.describe(st))
            for blk in S.blocks_of(st):
                walk(blk, ind + 1)

    for f in prog.body.functions.values():
        lines.append(f"function {f.name}({', '.join(f.args)}):")
        walk(f.code, 1)
    return "\n".join(lines) + "\n"


def readme(doc: dict) -> str:
    dp = doc["decode_program"]
    g = dp["grid"]
    st = dp["stages"]
    spans = ", ".join(f"{s['layers'][0]}-{s['layers'][1]}" for s in st)
    lines = [f"# {doc['model']} for {doc['hardware']['name']}", "",
             f"Compiled by `waferllm compile` (bundle schema {doc['schema']}), {doc['dtype']}, planned for "
             f"{doc['context']} KV tokens.", "",
             f"Decode: {len(st)} stage(s) of {g[0]}x{g[1]} PEs, KV capacity {dp['capacity']} entries per PE and "
             f"layer; layers per stage: {spans}.", "",
             "Files:", "",
             "- `plan.json`: the planner's plan, the decode program's placement, the hardware spec;",
             "- `config.json`: the model configuration;",
             "- `programs/decode.json`, `programs/decode_body.txt`: the PE program and its resources;",
             f"- `csl/decode/`: the decode program in CSL for {doc['csl']['decode']['arch']} (`src/`, the cslc "
             f"command in `commands_{doc['csl']['decode']['arch']}.sh`); check it with "
             "`waferllm csl check BUNDLE/csl/decode`;"]
    pre = doc["csl"].get("prefill")
    if pre and pre["programs"]:
        for q in pre["programs"]:
            regions = ", ".join(str(r) for r in q["regions"])
            lines.append(f"- `{q['dir']}/`: the prefill program in CSL for {pre['arch']}, a {pre['prompt_tokens']}-token "
                         f"prompt on {pre['grid'][0]}x{pre['grid'][1]} PEs ({pre['dtype']}), {len(q['layers'])} resident "
                         f"layer(s), run by prefill region(s) {regions}; check it with `waferllm csl check "
                         f"BUNDLE/{q['dir']}`;")
    elif pre:
        lines.append(f"- no prefill CSL: {pre['skipped']};")
    if doc["weights"]["present"]:
        lines.append(f"- `weights/stage<i>.safetensors`: per-PE shards ({doc['weights']['dtype']}), an array "
                     "[rows, columns, length] per buffer;")
    else:
        lines.append("- no weights (a catalog model): `waferllm run --timing-only` only;")
    lines += ["", "Run (from the directory that holds the bundle):", "",
              "    waferllm run BUNDLE --prompt-ids 1,2,3 --max-new-tokens 16 [--dtype fp32|fp16] [--json]",
              "    waferllm run BUNDLE --prompt-ids 1,2,3 --max-new-tokens 1 --timing-only", ""]
    if doc.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    return "\n".join(lines)


# ---- reading a bundle -------------------------------------------------------------------------------------------
@dataclass
class Bundle:
    path: Path
    doc: dict
    model: object  # ModelSpec
    hardware: HardwareSpec

    @property
    def has_weights(self) -> bool:
        return bool(self.doc["weights"]["present"])

    def decode_config(self, dtype: str | None = None, timestamps: bool = False):
        from meshgemm.decode_program import DecodeConfig, DecodeStage
        dp = self.doc["decode_program"]
        stages = tuple(DecodeStage(s["stage"], s["layers"][0], s["layers"][1], tuple(s["origin"]),
                                   s["embedding"], s["lm_head"], s.get("grid", dp["grid"])[1])
                       for s in dp["stages"])
        trees = dp.get("trees", {})
        return DecodeConfig(self.model, tuple(dp["grid"]), stages, dp["capacity"], dtype or self.doc["dtype"],
                            y_groups=trees.get("y", {}).get("groups"), x_groups=trees.get("x", {}).get("groups"),
                            strip_x_groups=trees.get("x_strip", {}).get("groups"), timestamps=timestamps,
                            score_chunk=dp.get("score_chunk", SCORE_CHUNK))

    def images(self) -> list[dict[str, np.ndarray]]:
        """Every stage's per-PE weight shards; a damaged file is a clear error, not a traceback."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        out = []
        for f in self.doc["weights"]["files"]:
            try:
                out.append(load_file(str(self.path / f)))
            except (SafetensorError, OSError) as e:
                raise InputError(f"{self.path / f} is not a readable safetensors file ({e}); compile the bundle "
                                 f"again") from None
        return out


def open_bundle(path: str | os.PathLike) -> Bundle:
    from waferllm.model import spec_from_config_dict

    p = Path(path)
    if not p.is_dir() or not (p / "plan.json").is_file():
        raise InputError(f"{path} is not a bundle (no plan.json); make one with 'waferllm compile'")
    try:
        doc = json.loads((p / "plan.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{p / 'plan.json'}: cannot read it ({e})") from None
    if doc.get("schema") != BUNDLE_SCHEMA:
        raise InputError(f"{path}: bundle schema {doc.get('schema')!r}, this waferllm reads schema {BUNDLE_SCHEMA}; "
                         f"compile it again")
    cfg = json.loads((p / "config.json").read_text())
    model = spec_from_config_dict(cfg, doc["model"], str(p))
    hw = doc["hardware"]
    hardware = spec_from_mapping({k: v for k, v in hw.items()}, f"{p / 'plan.json'}")
    for f in doc["weights"]["files"]:
        if not (p / f).is_file():
            raise InputError(f"{path}: {f} is missing; compile the bundle again")
    return Bundle(p, doc, model, hardware)
