"""No CLI path ends in a traceback for bad option values: hypothesis draws option values (valid,
out of range, negative, huge, malformed text) for every command and checks each run ends with exit
0, or exit 2 and one ``Error: ...`` line on stderr."""

from __future__ import annotations

import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from waferllm.cli import main

BAD_TEXT = st.sampled_from(["", " ", "x", "-", "0", "-1", "1e3", "nan", "3.5", "auto", "4x", "x4", "4x4x4", "0x4",
                            "-3x4", "٣", "8:4", "1:2:0", "99999999999999999999999", "4x99999999999", "none",
                            "a,b", ",", "∞", "\x00"])
HUGE = st.sampled_from([2 ** 31, 2 ** 63, 2 ** 70, -(2 ** 63), 10 ** 30])


def ints(lo: int, hi: int):
    return st.one_of(st.integers(lo, hi).map(str), HUGE.map(str), BAD_TEXT)


def grids():
    small = st.tuples(st.integers(1, 4), st.integers(1, 4)).map(lambda t: f"{t[0]}x{t[1]}")
    return st.one_of(small, st.integers(-3, 5).map(str), HUGE.map(str), BAD_TEXT)


def opt(name: str, values):
    return st.one_of(st.just([]), values.map(lambda v: [name, v]))


def run(args: list[str]):
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert r.exit_code in (0, 2), (args, r.exit_code, r.output[-500:])
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, r.stderr[-500:])
    return r


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(name=st.one_of(st.sampled_from(["meshgemm", "cannon-bsp", "summa", "meshgemv", "gemv-pipeline-bsp",
                                       "gemv-ring", "gemmt"]), BAD_TEXT),
       mesh=grids(), m=opt("--m", ints(-2, 12)), k=ints(-2, 40), n=ints(-2, 40), kt=opt("--k-tree", ints(-1, 4)),
       gs=opt("--group-size", ints(-1, 5)), dt=opt("--dtype", st.sampled_from(["fp16", "fp32", "bf16", ""])),
       hw=opt("--hardware", st.sampled_from(["wse2", "wse3", "nope", "/nonexistent.toml", "README.md"])),
       seed=opt("--seed", ints(-3, 3)), simulate=st.booleans(), json_=st.booleans())
def test_kernel_options(name, mesh, m, k, n, kt, gs, dt, hw, seed, simulate, json_):
    args = ["kernel", name, "--mesh", mesh, "--k", k, "--n", n, *m, *kt, *gs, *dt, *hw, *seed]
    if simulate:
        # keep simulations small: only well-formed, small sizes
        assume(all(v.isdigit() and int(v) <= 40 for v in (k, n)) and "x" in mesh)
        args.append("--simulate")
    run(args + (["--json"] if json_ else []))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.one_of(st.sampled_from(["llama3-8b", "qwen2.5-0.5b"]), BAD_TEXT),
       method=opt("--method", st.sampled_from(["full", "paper", "bogus"])),
       pg=opt("--prefill-grid", st.one_of(st.sampled_from(["600", "300x400"]), grids())),
       dg=opt("--decode-grid", st.one_of(st.sampled_from(["200", "300x360"]), grids())),
       kt=opt("--k-tree", ints(-1, 5)), ctx=opt("--context", ints(-1, 10 ** 6)),
       inp=opt("--input-len", ints(-1, 8192)), outp=opt("--output-len", ints(-1, 512)),
       dt=opt("--dtype", st.sampled_from(["fp16", "fp32", "int8"])))
def test_plan_options(model, method, pg, dg, kt, ctx, inp, outp, dt):
    run(["plan", model, "--json", *method, *pg, *dg, *kt, *ctx, *inp, *outp, *dt])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel=opt("--kernel", st.sampled_from(["meshgemv", "cannon,summa-bsp", "bogus", ""])),
       model=opt("--model", st.sampled_from(["llama3-8b", "nope"])),
       mesh=opt("--mesh", st.one_of(grids(), st.sampled_from(["2:6:2", "2:4", "4:2", "1:3:0"]))),
       size=opt("--size", st.one_of(ints(-1, 24), st.sampled_from(["4:12:4", "9:1"]))),
       k=opt("--k", ints(-1, 24)), kt=opt("--k-tree", ints(-1, 3)),
       dg=opt("--decode-grid", st.sampled_from(["200", "auto", "0", "x"])),
       batch=opt("--batch", ints(-1, 3)), workers=opt("--workers", ints(-1, 2)),
       sched=opt("--scheduler", st.sampled_from(["tcp://127.0.0.1:1", "bogus"])),
       sim=st.sampled_from([[], ["--simulate"], ["--timing-only"], ["--simulate", "--timing-only"]]),
       dry=st.booleans())
def test_sweep_options(kernel, model, mesh, size, k, kt, dg, batch, workers, sched, sim, dry):
    if sim and sim[0] == "--simulate":
        assume(not sched)  # a cluster start per example would be slow; the dask tests cover it
        assume(all(a.isdigit() and int(a) <= 24 for a in size[1:] + k[1:]))
    with tempfile.TemporaryDirectory() as d:
        run(["sweep", "-o", str(Path(d) / "out"), "--no-progress", *kernel, *model, *mesh, *size, *k, *kt, *dg,
             *batch, *workers, *sched, *sim, *(["--dry-run"] if dry else [])])


@settings(max_examples=20, deadline=None)
@given(cmd=st.sampled_from([["hardware", "show"], ["calibration", "--hardware"], ["report", "-o", "/tmp/x.html"],
                            ["models", "--wide", "--json"], ["hardware", "list", "--bogus"]]),
       value=st.one_of(BAD_TEXT, st.sampled_from(["wse2", "/nonexistent", "README.md", "/"])))
def test_other_commands(cmd, value):
    run([*cmd, value])
