"""``check_paths``: parse CSL files, evaluate layouts and PE programs, run every static rule.

A directory means its ``.csl`` files (recursively). A file with a ``layout {}`` block is an entry
point: its params come from ``params`` (``--params``), it is evaluated, and each PE program it places
is evaluated once per distinct parameter struct. Files no layout references are checked on their own
(params they do not get stay unknown, so fewer rules can decide).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from plmr.errors import InputError
from plmr.hardware import BUILTIN_SPECS, HardwareSpec

from csl_templates import syntax_tree as st
from csl_templates.comptime import EvalError
from csl_templates.comptime_values import VOID, Color, StructVal
from csl_templates.findings import Finding, at
from csl_templates.layout_reader import LayoutEffects, LayoutReadback, ModuleLoader, dir_bits, evaluate_layout
from csl_templates.parser import CslSyntaxError, parse
from csl_templates.pe_reader import PeFacts, evaluate_pe
from csl_templates.source_rules import SourceContext, check_source
from csl_templates.target_rules import (
    LAYOUT_RULES, PE_RULES, rule_exports_match, rule_task_on_ramp_colour,
)

#: JSON schema version of ``CheckReport.to_dict``.
SCHEMA = 2  # an integer version, as every command's JSON (1 was the string "waferllm.csl-check/1")


@dataclass
class CheckReport:
    arch: str
    files: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    layouts: list = field(default_factory=list)  # LayoutReadback of each layout checked

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "E")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "W")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "arch": self.arch, "files": list(self.files),
                "errors": self.errors, "warnings": self.warnings,
                "findings": [f.to_dict() for f in self.findings]}


@contextmanager
def _long_lived():
    """What is built inside lives for the whole check (a parsed module: up to a million nodes): no cyclic
    collection while it is built, then ``gc.freeze`` leaves it out of every later collection's scan
    (``check_paths`` unfreezes at the end). A model's bundle parses 25% faster, and each parameter
    set's evaluation no longer rescans the trees."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class _Sources:
    """Reads and parses each file once; unreadable files raise InputError."""

    def __init__(self):
        self.modules: dict[str, st.Module | None] = {}
        self.syntax: list[Finding] = []

    def get(self, path: Path) -> st.Module | None:
        key = str(path)
        if key not in self.modules:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise InputError(f"cannot read {key}: no such file") from None
            except IsADirectoryError:
                raise InputError(f"cannot read {key}: is a directory") from None
            except OSError as exc:
                raise InputError(f"cannot read {key}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise InputError(f"cannot read {key}: not UTF-8 text") from None
            try:
                with _long_lived():
                    self.modules[key] = parse(text, key)
            except CslSyntaxError as exc:
                self.modules[key] = None
                self.syntax.append(Finding(key, exc.line, exc.col, "E", "syntax", exc.message))
        return self.modules[key]


def expand_paths(paths) -> list[Path]:
    """Files as given; directories as their ``*.csl`` files, sorted. Missing paths raise InputError."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.rglob("*.csl"))
            if not found:
                raise InputError(f"{p}: no .csl files in this directory")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"cannot read {p}: no such file or directory")
    seen, unique = set(), []
    for p in out:
        k = str(p)
        if k not in seen:
            seen.add(k)
            unique.append(p)
    return unique


class _CachedLoader(ModuleLoader):
    def __init__(self, arch, sources: _Sources, effects=None):
        super().__init__(arch, effects)
        self.sources = sources

    def module(self, path: Path) -> st.Module:
        m = self.sources.get(path)
        if m is None:
            raise EvalError(None, f"module {path} does not parse")
        return m


def _eval_finding(path, exc: EvalError, default_node) -> Finding:
    if not exc.definite:
        return at(path, exc.node if exc.node is not None else default_node, "W", "eval.unsupported",
                  f"layout not evaluated (this checker does not model it): {exc.message}")
    return at(path, exc.node if exc.node is not None else default_node, "E", "eval",
              f"comptime evaluation failed: {exc.message}")


def check_paths(paths, arch: str = "wse2", params: dict | None = None, syntax_only: bool = False,
                spec: HardwareSpec | None = None, progress: Callable[[str], None] | None = None) -> CheckReport:
    """Check CSL files and directories for ``arch`` (``wse2``/``wse3``, or a custom ``spec``).
    ``progress(text)`` is told each stage (a whole model's bundle takes tens of seconds)."""
    frozen = gc.get_freeze_count()
    try:
        return _check_paths(paths, arch, params, syntax_only, spec, progress)
    finally:
        if not frozen:  # what the parses froze (``_Sources.get``) is collectable again
            gc.unfreeze()


def _check_paths(paths, arch, params, syntax_only, spec, progress) -> CheckReport:
    step = progress or (lambda text: None)
    if spec is None:
        if arch not in BUILTIN_SPECS:
            raise InputError(f"unknown arch {arch!r}; allowed: {', '.join(BUILTIN_SPECS)}")
        spec = BUILTIN_SPECS[arch]
    files = expand_paths(paths)
    sources = _Sources()
    for i, f in enumerate(files):
        step(f"parsing {f.name} ({i + 1}/{len(files)} files)")
        sources.get(f)
    report = CheckReport(spec.name, [str(f) for f in files])
    findings: list[Finding] = []
    if syntax_only:
        report.findings = sorted(set(sources.syntax))
        return report
    checked_as_pe: set = set()
    layout_files: set = set()
    layout_entries = [f for f in files if sources.get(f) is not None and sources.get(f).layout_blocks()]
    for lf in layout_entries:
        findings.extend(_check_layout(lf, sources, spec, params or {}, report, checked_as_pe, layout_files, step))
    for f in files:
        key = str(f)
        m = sources.get(f)
        if m is None or key in checked_as_pe or key in layout_files or m.layout_blocks():
            continue
        findings.extend(check_source(m, SourceContext(is_layout_file=False)))
        loader = _CachedLoader(spec.csl_arch, sources)
        facts = evaluate_pe(m, dict(params or {}), spec.csl_arch, loader)
        facts.unbound_params.clear()  # standalone: a layout would bind these
        for rule in PE_RULES:
            findings.extend(rule(facts, spec, facts.uses_memcpy))
    findings.extend(_unknown_params(files, sources, params or {}))
    findings.extend(sources.syntax)
    report.findings = sorted(set(findings))
    return report


def _unknown_params(files, sources: "_Sources", params: dict) -> list[Finding]:
    """``--params`` names no checked file declares (a typo, or another layout's names): cslc would not
    bind them either, so the rules that needed them decided nothing."""
    parsed = [(f, sources.get(f)) for f in files if sources.get(f) is not None]
    layouts = [(f, m) for f, m in parsed if m.layout_blocks()]
    bound = layouts or parsed  # with a layout, --params bind its params (its PE programs get theirs from it)
    declared = {p.name for _, m in bound for p in m.params()}
    unknown = sorted(set(params) - declared)
    if not unknown or not files:
        return []
    where = bound[0][0] if bound else files[0]
    names = ", ".join(sorted(declared)) or "none"
    return [at(str(where), None, "W", "params.unknown",
               f"--params {', '.join(unknown)}: no checked file declares {'it' if len(unknown) == 1 else 'them'} "
               f"(params declared: {names})")]


def _check_layout(lf: Path, sources: _Sources, spec: HardwareSpec, params: dict, report: CheckReport,
                  checked_as_pe: set, layout_files: set, step: Callable[[str], None]) -> list[Finding]:
    m = sources.get(lf)
    step(f"evaluating {lf.name}")
    out = list(check_source(m, SourceContext(is_layout_file=True)))
    layout_files.add(str(lf))
    effects = LayoutEffects()
    loader = _CachedLoader(spec.csl_arch, sources, effects)
    try:
        lay = _evaluate(m, params, spec, effects, loader)
    except _Unbound as exc:
        out.extend(at(str(lf), p, "E", "params.unbound",
                      f"param '{p.name}' has no value: give it with --params {p.name}:VALUE or an initialiser "
                      "(layout not evaluated)") for p in exc.params)
        return out
    except EvalError as exc:
        if not exc.undeclared:  # names.undeclared reports those
            out.append(_eval_finding(str(lf), exc, m))
        return out
    except Exception as exc:  # noqa: BLE001 - never a traceback for someone else's CSL: say what failed
        out.append(at(str(lf), m, "W", "eval.unsupported",
                      f"layout not evaluated (this checker failed on it: {type(exc).__name__}: {exc})"))
        return out
    for key in loader.cache:
        layout_files.add(key)
    report.layouts.append(lay)
    memcpy_any = lay.uses_memcpy
    groups = list(lay.pe_members())
    kept = []  # per parameter set: what the layout-wide rules read, the PE rules' findings
    incomplete = False
    for i, (fname, pstruct, pes) in enumerate(groups):
        step(f"{lf.name}: the PE programs it places, parameter set {i + 1}/{len(groups)}")
        path = lf.parent / fname
        site = lay.sites[int(lay.tile_site.flat[pes[0]])] if lay.sites else m
        if not path.exists():
            out.append(at(str(lf), site, "E", "layout.file_missing", f"@set_tile_code file '{fname}' not found"))
            incomplete = True
            continue
        pm = sources.get(path)
        if pm is None:  # its syntax error is reported; rules needing all PE programs are skipped
            incomplete = True
            continue
        if str(path) not in checked_as_pe:
            checked_as_pe.add(str(path))
            out.extend(check_source(pm, SourceContext(is_layout_file=False)))
        facts = evaluate_pe(pm, pstruct, spec.csl_arch, _CachedLoader(spec.csl_arch, sources))
        memcpy_any = memcpy_any or facts.uses_memcpy
        # the PE rules run now, for each memcpy answer still possible (a later program may import it), so
        # that a set's facts do not outlive it: 4,100 sets' facts held 2 GB on llama3-8b's prefill bundle
        found = {m: [f for rule in PE_RULES for f in rule(facts, spec, m)] for m in {True, memcpy_any}}
        if facts.local_color_configs:
            _merge_local_configs(lay, facts, lay.mask_of(pes), out)
        kept.append((PeFacts(facts.path, None, binds=facts.binds, exports=facts.exports), pes, found))
    for facts, pes, found in kept:
        out.extend(found[memcpy_any])
        out.extend(rule_task_on_ramp_colour(lay, pes, facts, spec))
    for rule in LAYOUT_RULES:
        out.extend(rule(lay, spec, memcpy_any))
    if not incomplete:
        out.extend(rule_exports_match(lay, [facts for facts, _, _ in kept], spec))
    return out


class _Unbound(Exception):
    def __init__(self, params):
        self.params = params


def _merge_local_configs(lay: LayoutReadback, facts, mask, out: list) -> None:
    """A PE program's @set_local_color_config routes join the layout's, so the route rules see both."""
    for node, colour, cfg in facts.local_color_configs:
        if not isinstance(colour, Color) or not isinstance(cfg, StructVal):
            continue
        routes = cfg.get("routes")
        if not isinstance(routes, StructVal):
            out.append(at(facts.path, node, "E", "routes.present",
                          "colour config has no '.routes' (write '.routes = .{}' for none)"))
            continue
        rx, tx = dir_bits(routes.get("rx", VOID)), dir_bits(routes.get("tx", VOID))
        if rx is None or tx is None:
            continue
        lay.add_local_config(facts.path, node, colour.id, rx, tx, mask)


def _evaluate(m, params, spec, effects, loader) -> LayoutReadback:
    from csl_templates.comptime import Evaluator

    ev = Evaluator(m, arch=spec.csl_arch, params=params, effects=effects, loader=loader)
    for p in m.params():
        ev.global_value(p.name, p)
    if ev.unbound_params:
        raise _Unbound(ev.unbound_params)
    ev.run_block(m.layout_blocks()[0].body)
    return effects.readback(m.path, m, ev)


__all__ = ["check_paths", "CheckReport", "SCHEMA", "expand_paths", "evaluate_layout"]
