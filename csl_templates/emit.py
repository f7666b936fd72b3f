"""``emit_csl``: a ``MeshProgram`` of code bodies lowered to CSL source files (``layout.csl`` and one
``pe_<body>.csl`` per body), for one or more targets at once.

The files depend on the program's bodies, placements and route rules, not on the number of PEs: sizes
are layout parameters bound by ``cslc --params`` (``CslSource.params``). Programs written with the
per-PE trace API (``MeshProgram.add``) have one parameterless body per distinct instruction list and
cannot be emitted compactly; they are refused with one line that says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from plmr.errors import InputError
from simulator import statements as S
from simulator.program import MeshProgram
from simulator.resources import allocate

from csl_templates.layout_emitter import LayoutEmitter
from csl_templates.pe_emitter import FIXED_SLOTS, PeEmitter, check_values
from csl_templates.queues import BodyQueues, analyse
from csl_templates.target import CslTarget, default_targets

TEMPLATES = Path(__file__).parent / "templates"
IDLE_FILE = "pe_idle.csl"


@functools.lru_cache(maxsize=1)
def template_env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False, trim_blocks=False)


@dataclass
class CslSource:
    """The CSL files of one program and what the bundle, the host script and the stub need."""

    files: dict[str, str]  # relative path -> text
    params: dict[str, int]  # layout params for cslc --params, in order
    targets: list[CslTarget]
    exports: dict[str, str]  # exported buffer -> CSL element type
    functions: dict[str, tuple[str, ...]]  # launchable function -> CSL argument types
    stamp_labels: list[str]  # Timestamp labels, slots 2.. of time_stamps
    bodies: dict[str, str] = field(default_factory=dict)  # body name -> file
    buffers: dict[str, dict[str, dict]] = field(default_factory=dict)  # body -> buffer -> {dtype, length}
    skipped: dict[str, str] = field(default_factory=dict)  # default target the program does not fit -> why

    @property
    def nslots(self) -> int:
        return len(FIXED_SLOTS) + len(self.stamp_labels)


def _refuse_trace(prog: MeshProgram, kernel: str) -> None:
    auto = [p for p in prog.placements if p.auto]
    if auto:
        raise InputError(
            f"{kernel} is built with the per-PE trace API ({len(auto)} parameterless bodies, one per distinct "
            f"instruction list); only programs written as bodies placed with parameters emit compact CSL")


def emit_csl(prog: MeshProgram, targets: list[CslTarget] | None = None, kernel: str | None = None,
             roles: dict[str, str] | None = None) -> CslSource:
    """Lower ``prog`` (see the module docstring). ``roles``: a short description per body name for the
    files' header comments (default: the body's docstring's first line)."""
    prog.finalize()
    kernel = kernel or prog.name
    _refuse_trace(prog, f"kernel {kernel}")
    if not prog.placements:
        raise InputError(f"kernel {kernel} places no code body; nothing to emit")
    pe_block = prog.pe_blocks()
    used = sorted(set(np.unique(pe_block).tolist()) - {-1})
    blocks = [prog.blocks[i] for i in used]
    first_pe = {}
    for pe, b in enumerate(pe_block.tolist()):
        first_pe.setdefault(b, pe)

    def where(b) -> str:
        return f"PE {prog._xy(first_pe[b.index])}"

    body_blocks: dict[int, list] = {}
    for b in blocks:
        body_blocks.setdefault(id(b.body), []).append(b)
    analyses = {key: analyse(bl[0].body, bl) for key, bl in body_blocks.items()}

    def fit(t: CslTarget) -> dict[int, dict]:
        """Local task IDs per body on ``t`` (``resources.allocate``); raises if the program does not fit."""
        try:
            res = allocate(blocks, t.spec, where)
            for key, bl in body_blocks.items():
                BodyQueues(bl[0].body, bl, [t], f"body {bl[0].body.name}", analyses[key])
        except InputError as exc:
            raise InputError(f"{t.name}: {exc}") from None
        per_body: dict[int, dict] = {}
        for b, r in zip(blocks, res):
            per_body.setdefault(id(b.body), {n: i for n, i in r.task_ids.items() if b.body.tasks[n].kind == "local"})
        return per_body

    skipped: dict[str, str] = {}
    task_ids: list[dict[int, dict]] = []  # per target: id(body) -> {task: ID}
    if targets is None:
        targets = []
        for t in default_targets(prog.width, prog.height):
            try:
                task_ids.append(fit(t))
            except InputError as exc:
                skipped[t.arch] = str(exc)
                continue
            targets.append(t)
        if not targets:
            raise InputError(f"kernel {kernel} fits no target: " + "; ".join(skipped.values()))
    else:
        for t in targets:
            t.check_fits(prog.width, prog.height)
            task_ids.append(fit(t))

    bodies: dict[int, object] = {key: bl[0].body for key, bl in body_blocks.items()}
    names_seen: dict[str, int] = {}
    for key, body in bodies.items():
        if body.name in names_seen:
            raise InputError(f"program {prog.name}: two different bodies are named {body.name!r}; body names "
                             f"become file names (pe_<body>.csl), give them distinct names")
        names_seen[body.name] = key
        check_values(body, body_blocks[key])

    labels = sorted({st.label for body in bodies.values()
                     for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]
                     for st in S.walk(code) if isinstance(st, S.Timestamp)})
    functions: dict[str, tuple] = {}
    for body in bodies.values():
        for f in body.functions.values():
            sig = tuple(body.vars[a].dtype for a in f.args)
            if functions.setdefault(f.name, sig) != sig:
                raise InputError(f"program {prog.name}: function {f.name!r} takes {sig} in body {body.name} and "
                                 f"{functions[f.name]} in another body; an exported function has one signature")
    env = template_env()
    files: dict[str, str] = {}
    exports: dict[str, str] = {}
    param_types: dict[int, dict] = {}
    file_of: dict[int, str] = {}
    buffers: dict[str, dict] = {}
    roles = roles or {}
    for key, body in bodies.items():
        role = roles.get(body.name) or (body.doc.strip().splitlines()[0] if body.doc.strip() else "code body")
        em = PeEmitter(body, body_blocks[key], targets, [ti[key] for ti in task_ids], kernel, role, labels,
                       functions, analyses[key])
        fname = f"pe_{body.name}.csl"
        pf = em.render(env, fname)
        files[fname] = pf.text
        file_of[key] = fname
        param_types[key] = em.ptypes
        for n, t in pf.exports.items():
            if exports.setdefault(n, t) != t:
                raise InputError(f"program {prog.name}: buffer {n!r} is {t} in body {body.name} and {exports[n]} "
                                 f"in another body; an exported symbol has one type")
        buffers[body.name] = {bb.name: {"dtype": bb.dtype, "export": bb.export} for bb in body.buffers.values()}
    if "time_stamps" in exports:
        raise InputError(f"program {prog.name}: buffer name 'time_stamps' is the emitter's timing symbol; rename it")
    covered = np.zeros(prog.num_pes, dtype=bool)
    for pl in prog.placements:
        covered[pl.pes] = True
    if not covered.all():
        files[IDLE_FILE] = env.get_template("pe_idle.csl.j2").render(
            kernel=kernel, nslots=len(FIXED_SLOTS) + len(labels),
            functions=[{"name": n, "args": ", ".join(f"_: {t}" for t in sig)} for n, sig in functions.items()])
    lay = LayoutEmitter(prog, file_of, IDLE_FILE, exports, functions, param_types, kernel)
    files["layout.csl"] = lay.render(env)
    params = {"width": prog.width, "height": prog.height,
              **{n: v for n, v in prog.layout_params.items() if n not in rectangle_aliases(prog)}}
    ordered = {"layout.csl": files.pop("layout.csl")}
    ordered.update(sorted(files.items()))
    return CslSource(ordered, params, list(targets), exports, functions, labels,
                     {b.name: file_of[k] for k, b in bodies.items()}, buffers, skipped)


def rectangle_aliases(prog: MeshProgram) -> dict[str, str]:
    """Program parameters that name the rectangle's sides (``W``, ``H``): the layout defines them from
    ``width``/``height`` rather than taking them from ``--params`` twice."""
    sides = {"W": ("width", prog.width), "H": ("height", prog.height)}
    return {n: sides[n][0] for n, v in prog.layout_params.items() if n in sides and v == sides[n][1]}
