"""``waferllm csl ...``: tools for CSL sources. ``waferllm csl check PATH...`` parses CSL files and
runs the static rules of hardware-and-csl.md §8 (docs/CSL_CHECKER.md lists them).

Exit status: 0 clean, 1 findings (errors or warnings), 2 unreadable input or bad options.
Registered in ``waferllm.cli`` with ``main.add_command(csl)``.
"""

from __future__ import annotations

import json
import re

import click

from plmr.errors import InputError

_NUMBER = re.compile(r"^[+-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9][0-9_]*)$")


def parse_params(text: str | None) -> dict:
    """``name:val,name:val`` (cslc's --params form) -> {name: int | float | bool | str}."""
    out: dict = {}
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise InputError(f"--params entry {part!r} is not NAME:VALUE (example: --params W:8,H:4)")
        name, value = (s.strip() for s in part.split(":", 1))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"--params name {name!r} is not an identifier")
        if _NUMBER.match(value):
            out[name] = int(value.replace("_", ""), 0) if value[1:2].isalpha() or value[2:3].isalpha() \
                else int(value.replace("_", ""), 10)
        elif value in ("true", "false"):
            out[name] = value == "true"
        else:
            try:
                out[name] = float(value)
            except ValueError:
                raise InputError(f"--params value {value!r} for {name} is not a number or true/false") from None
    return out


def bundle_manifests(paths) -> list[dict] | None:
    """The ``manifest.json`` of the bundle each path is (or whose ``src`` it is), or None when some path
    is not in such a bundle."""
    from pathlib import Path

    found = []
    for p in paths:
        d = Path(p)
        for m in (d / "manifest.json", d.parent / "manifest.json"):
            if d.is_dir() and m.is_file():
                try:
                    found.append(json.loads(m.read_text()))
                except (OSError, json.JSONDecodeError):
                    return None
                break
        else:
            return None
    return found


def bundle_params(manifests: list[dict] | None) -> dict:
    """The layout params the bundles (``bundle_manifests``) were emitted with, when all agree; else {}
    (give them with --params)."""
    found = [m.get("params") or {} for m in manifests or []]
    return found[0] if found and all(f == found[0] for f in found) else {}


def bundle_arch(manifests: list[dict] | None) -> str | None:
    """The target the bundles (``bundle_manifests``) were emitted for (a manifest's hardware when that is
    one of its targets, else its first target), when all agree; else None."""
    def arch(m: dict) -> str | None:
        targets = [t.get("arch") for t in m.get("targets") or []]
        return m.get("hardware") if m.get("hardware") in targets else (targets[0] if targets else None)
    archs = {arch(m) for m in manifests or []}
    return archs.pop() if len(archs) == 1 and None not in archs else None


def refuse_compile_bundle_roots(paths) -> None:
    """A bundle written by ``waferllm compile`` holds one CSL program per directory, each with its own
    params: name them (one ``csl check`` each) instead of checking the bundle's root as one program."""
    from pathlib import Path

    for p in paths:
        d = Path(p)
        if (d / "plan.json").is_file() and (d / "csl").is_dir():
            dirs = sorted(str(m.parent) for m in (d / "csl").rglob("manifest.json"))
            raise InputError(f"{p} is a bundle of 'waferllm compile', one CSL program per directory: check each, "
                             f"e.g. " + "; ".join(f"waferllm csl check {x}" for x in dirs))


@click.group("csl")
def csl() -> None:
    """CSL sources: parse and statically check them."""


@csl.command("check")
@click.argument("paths", nargs=-1, required=True)
@click.option("--arch", type=click.Choice(["wse2", "wse3"]), default=None,
              help="target whose rules apply  [default: the bundle's target, else wse2]")
@click.option("--params", "params_text", default=None, metavar="NAME:VAL,...",
              help="values of the layout's params, as for cslc --params (over a bundle's own)")
@click.option("--syntax-only", is_flag=True, help="parse only; no semantic rules")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def csl_check(paths, arch: str, params_text: str | None, syntax_only: bool, as_json: bool) -> None:
    """Check CSL files or directories (a directory: its layout and the PE files it places; a bundle
    directory written by --emit-csl, or a program directory of a compile bundle such as BUNDLE/csl/decode,
    also gives the params and the target it was emitted for).

    Prints one `file:line:col: E|W rule: message` line per finding; exit 0 when clean, 1 with
    findings, 2 for unreadable input."""
    from csl_templates.checker import check_paths
    from waferllm.activity import activity

    refuse_compile_bundle_roots(paths)
    manifests = bundle_manifests(paths)
    params = {**bundle_params(manifests), **parse_params(params_text)}
    arch = arch or bundle_arch(manifests) or "wse2"
    with activity("csl check") as step:  # a spinner on a terminal's stderr: a model's bundle takes a while
        report = check_paths(paths, arch=arch, params=params, syntax_only=syntax_only, progress=step)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for f in report.findings:
            click.echo(str(f))
        click.echo(f"{len(report.files)} file(s) checked for {report.arch}: "
                   f"{report.errors} error(s), {report.warnings} warning(s)", err=True)
    raise SystemExit(1 if report.findings else 0)
