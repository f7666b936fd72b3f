"""Lowering one code body to ``pe_<body>.csl``: one small emitter per statement and DSD op.

Every construct of a finalized ``Body`` maps to one CSL construct (docs/DESIGN.md has the table):
parameters become ``param``s, buffers ``@zeros`` arrays (exported ones through ``[*]T`` pointers),
variables ``var``s, functions exported ``fn``s, tasks ``task``s bound to the IDs
``simulator.resources.allocate`` gives (so the simulator's resource checks and the CSL agree),
``Loop`` a ``while`` over the loop variable, ``If``/``Switch`` their CSL forms (a condition on
parameters only is comptime, and CSL prunes it), fabric ops ``@fmovs``/``@fadds``/``@mov32`` on
``fabin_dsd``/``fabout_dsd`` operands with ``.async``/``.activate``/``.unblock`` completions, compute
ops the DSD builtins of their dtypes, slices with run-time offsets ``@increment_dsd_offset`` and
``@set_dsd_length`` on a comptime base DSD.

Timing: every launched function starts with ``wl_launch_begin()`` (enable and read the TSC into slot
0 of the exported ``time_stamps``), ``Finish`` is ``wl_finish()`` (slot 1, then
``sys_mod.unblock_cmd_stream()``), and ``Timestamp(label)`` writes the label's slot (hardware-and-csl.md
§3.6, §6.8). A slot is four u16 words: the 48-bit TSC and a "written" flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmr.errors import InputError
from simulator import instructions as I
from simulator import statements as S
from simulator.body import Body
from simulator.expr import Const, Param, as_expr

from csl_templates.exprs import BOOL, BUFFER_CSL, Bindings, CslPrinter, Scope
from csl_templates.names import check_name
from csl_templates.queues import BodyQueues
from csl_templates.target import CslTarget, arch_block, arch_select

#: Launch argument types the host may pass (hardware-and-csl.md §6.7).
LAUNCH_ARG_TYPES = ("f32", "f16", "i32", "u32", "i16", "u16")
#: Slots 0 and 1 of ``time_stamps``: launch start and Finish.
FIXED_SLOTS = ("launch", "finish")


@dataclass
class PeFile:
    """One emitted PE program and what the layout and the host need to know about it."""

    body: Body
    file: str
    text: str
    exports: dict[str, str]  # exported buffer -> CSL element type
    functions: dict[str, tuple[str, ...]]  # launchable function -> CSL argument types


def param_types(body: Body, blocks: list) -> tuple[dict[str, str], frozenset]:
    """CSL type of every parameter (ints i32: the bodies' variables are i32, and products of sizes
    overflow i16) and the parameters that are >= 0 on every placed PE."""
    types, nonneg = {}, set()
    for name, kind in body.params.items():
        vals = [b.values[name] for b in blocks]
        types[name] = {"colour": "color", "float": "f32"}.get(kind, "i32")
        if kind == "colour" or all(v >= 0 for v in vals):
            nonneg.add(name)
    return types, frozenset(nonneg)


def nonneg_vars(body: Body, printer: CslPrinter) -> frozenset:
    """Variables provably >= 0: every assignment (loop starts, ``Assign``s) gives a value >= 0 and the
    variable is no launch or data-task argument (host and fabric values have no known sign)."""
    args = {a for f in body.functions.values() for a in f.args} | {t.arg for t in body.tasks.values() if t.arg}
    cand = {v for v, d in body.vars.items() if v not in args and body.vars[v].init >= 0}
    assigns = []
    for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]:
        for st in S.walk(code):
            if isinstance(st, S.Assign):
                assigns.append((st.var, st.value))
    while True:
        printer.set_nonneg_vars(cand)
        bad = {v for v, e in assigns if v in cand and not printer.nonneg(printer.canon(e))}
        if not bad:
            return frozenset(cand)
        cand -= bad


class _Lines:
    def __init__(self):
        self.out: list[str] = []
        self.depth = 0

    def add(self, line: str) -> None:
        self.out.append("  " * self.depth + line if line else "")

    def extend(self, lines) -> None:
        for ln in lines:
            self.add(ln)


class PeEmitter:
    """Emits one body; see the module docstring."""

    def __init__(self, body: Body, blocks: list, targets: list[CslTarget], task_ids: list[dict],
                 kernel: str, role: str, stamp_labels: list[str], all_functions: dict[str, tuple],
                 analysis=None):
        self.body = body
        self.blocks = blocks
        self.targets = targets
        self.task_ids = task_ids  # per target: task name -> ID (local tasks)
        self.kernel = kernel
        self.role = role
        self.stamp_slots = {lab: len(FIXED_SLOTS) + i for i, lab in enumerate(stamp_labels)}
        self.nslots = len(FIXED_SLOTS) + len(stamp_labels)
        self.all_functions = all_functions
        self.where = f"body {body.name}"
        self._check_names()
        ptypes, nonneg = param_types(body, blocks)
        self.ptypes = ptypes
        self.scope = Scope(
            param_types=ptypes,
            var_types={v.name: v.dtype for v in body.vars.values()},
            buffer_types={b.name: BUFFER_CSL[b.dtype] for b in body.buffers.values()},
            coord={"x": "wl_x", "y": "wl_y"}, coord_type="i32", nonneg_params=nonneg)
        # (signs of the parameters only, not their placed ranges: the text must not depend on the mesh size)
        self.p = CslPrinter(self.scope)
        self.p.set_nonneg_vars(nonneg_vars(body, self.p))
        self.p.hoist = self._hoist
        self._hoisted: dict[int, str] = {}
        self.consts: list[str] = []  # top-level constants of run-time code's comptime subexpressions
        self.top: list[str] = []  # top-level DSD declarations
        self._dsd_names: dict[tuple, str] = {}
        self._ndsd = 0
        self._nconst = 0
        self.bq = BodyQueues(body, blocks, targets, self.where, analysis)
        self.iq_names = [self._iq_name(k) for k in range(self.bq.nin)]
        self.uses_math = False

    # ---------------------------------------------------------------------------------- names
    def _check_names(self) -> None:
        b = self.body
        for what, names in (("parameter", b.params), ("buffer", b.buffers), ("variable", b.vars),
                            ("function", b.functions), ("task", b.tasks)):
            for n in names:
                check_name(n, self.where, what)
                if what == "buffer" and n.endswith("_ptr") and n[:-4] in b.buffers:
                    raise InputError(f"{self.where}: buffer {n!r} clashes with the export pointer of buffer "
                                     f"{n[:-4]!r}; rename it")
        for t in b.tasks:
            if f"t_{t}" in b.params or f"t_{t}" in b.buffers or f"t_{t}" in b.vars:
                raise InputError(f"{self.where}: name 't_{t}' clashes with the ID constant of task {t!r}")

    def _hoist(self, e) -> str:
        """A comptime subexpression of run-time code, as a top-level constant (computed by cslc, so
        the run-time code carries one name instead of the arithmetic)."""
        name = self._hoisted.get(id(e))
        if name is None:
            t = self.p.type_of(e)
            t = {"comptime_int": "i32", "comptime_float": "f32"}.get(t, t)
            name = f"c{len(self._hoisted) + 1}"
            while name in self.body.params or name in self.body.vars or name in self.body.buffers:
                name = "_" + name
            self._hoisted[id(e)] = name
            self.consts.append(f"const {name}: {t} = {self.p.hoisted_text(e)};  // {e!r}")
        return name

    def _iq_name(self, k: int) -> str:
        sharers = self.bq.sharers("in", k)
        if len(sharers) == 1 and isinstance(sharers[0], Param):
            return f"iq_{sharers[0].name}"
        if len(sharers) == 1 and isinstance(sharers[0], Const):
            return f"iq_c{sharers[0].value}"
        return f"iq{k}"

    def _iq(self, colour) -> str:
        k = self.bq.input_index(colour)
        if k is not None:
            return self.iq_names[k]
        # a colour only code pruned on every PE receives on: any queue (cslc never sees the op)
        return f"@get_input_queue({arch_select(self.targets, [str(t.spec.usable_input_queues[0]) for t in self.targets])})"

    def queue_colour(self, kind: str, k: int) -> str:
        """The colour queue k is bound to: the one expression that uses it, or, for expressions that
        share it (never in one parameter set), the one this PE's parameters use."""
        sharers = self.bq.sharers(kind, k)
        uses = self.bq.uses_in if kind == "in" else self.bq.uses_out
        text = self.colour_text(sharers[-1])
        for c in reversed(sharers[:-1]):
            text = f"if ({self.p.top(uses[c], 'bool')}) {self.colour_text(c)} else {text}"
        return text if len(sharers) == 1 else f"({text})"

    def colour_text(self, colour) -> str:
        """A colour expression as a CSL ``color`` value."""
        c = as_expr(colour)
        if isinstance(c, Param) and self.body.params.get(c.name) == "colour":
            return c.name
        _, _, v, b = _names(c)
        if v or b:
            raise InputError(f"{self.where}: colour {c!r} must be known when the body is placed")
        for pn in _names(c)[0]:
            if self.body.params.get(pn) == "colour":
                raise InputError(f"{self.where}: colour expression {c!r} does arithmetic on colour parameter "
                                 f"{pn!r}; declare it an int parameter to compute colours")
        return f"@get_color({self.p.top(c)})"

    # ---------------------------------------------------------------------------------- DSDs
    def _elem(self, buf: str) -> str:
        return BUFFER_CSL[self.body.buffers[buf].dtype]

    def _buf_len(self, buf: str) -> str:
        return self.p.top(self.body.buffers[buf].length)

    def _new_dsd(self, key: tuple, make) -> str:
        """A top-level comptime constant (a DSD, a FIFO, an op's options), declared once per key."""
        name = self._dsd_names.get(key)
        if name is None:
            self._ndsd += 1
            name = f"{key[1]}_d{self._ndsd}" if key[0] == "mem" else f"{key[0]}{self._ndsd}"
            self._dsd_names[key] = name
            self.top.append(make(name))
        return name

    def _static(self, e) -> bool:
        _, c, v, b = _names(as_expr(e))
        return not (c or v or b)

    def mem_dsd(self, r: I.Ref, lines: list[str]) -> tuple[str, object]:
        """A ``mem1d_dsd`` for slice ``r``: (CSL text of the DSD, length expression). Comptime slices
        are top-level constants; run-time ones mutate a comptime base DSD here."""
        buf = self.body.buffers[r.buf]
        off = as_expr(r.offset)
        if r.length is None:
            if not self._static(off):
                raise InputError(f"{self.where}: a slice of {r.buf!r} with a run-time offset needs a length")
            rest = as_expr(buf.length) if isinstance(off, Const) and off.value == 0 else buf.length - off
            length = (rest + (r.stride - 1)) // r.stride if r.stride > 1 else rest
        else:
            length = as_expr(r.length)
        stride = r.stride
        idx = (lambda o: f"{o} + i * {stride}" if stride != 1 else f"{o} + i") if stride else (lambda o: o)
        if self._static(off) and self._static(length):
            o = self.p.top(off)
            key = ("mem", r.buf, repr(off), repr(length), stride)
            name = self._new_dsd(key, lambda n: (
                f"const {n} = @get_dsd(mem1d_dsd, .{{ .tensor_access = |i|{{{self.p.top(length)}}} -> "
                f"{r.buf}[{_simplify_index(idx(o))}] }});"))
            return name, length
        static_len = self._static(length)
        base_len = self.p.top(length) if static_len else "1"
        key = ("mem", r.buf, "base", base_len, stride)
        base = self._new_dsd(key, lambda n: (
            f"const {n} = @get_dsd(mem1d_dsd, .{{ .tensor_access = |i|{{{base_len}}} -> "
            f"{r.buf}[{_simplify_index(idx('0'))}] }});  // base of run-time slices"))
        text = base
        if not (isinstance(off, Const) and off.value == 0):
            text = f"@increment_dsd_offset({text}, {self.p.expr(off, 'i16')}, {self._elem(r.buf)})"
        if not static_len:
            text = f"@set_dsd_length({text}, @bitcast(u16, {self.p.expr(length, 'i16')}))"
        for ln in lines:  # the same slice twice in one op (dst and a source): one DSD
            if ln.endswith(f" = {text};"):
                return ln.split()[1], length
        self._nconst += 1
        name = f"{r.buf}_r{self._nconst}"
        lines.append(f"const {name} = {text};")
        return name, length

    def fab_dsd(self, st, kind: str, length, packed: bool, lines: list[str]) -> str:
        """The ``fabin_dsd`` (``kind="in"``) or ``fabout_dsd`` of fabric op ``st``."""
        static = self._static(length)
        ext = self.p.top(length) if static else "1"
        if kind == "in":
            iq = self._iq(I.recv_colour(st))
            key = ("fin", iq, ext)
            name = self._new_dsd(key, lambda n: (
                f"const {n} = @get_dsd(fabin_dsd, .{{ .extent = {ext}, .input_queue = {iq} }});"))
        else:
            simd = ", .simd_mode = .{ .simd_32 = true }" if packed else ""
            colour = self.colour_text(I.send_colour(st))
            ids = [str(self.bq.output_id(k, st)) for k in range(len(self.targets))]
            key = ("fout", tuple(ids), ext, packed, colour)
            variants = [f".{{ .extent = {ext}, .output_queue = @get_output_queue({i})"
                        + (f", .fabric_color = {colour}" if t.fabout_has_color else "") + f"{simd} }}"
                        for t, i in zip(self.targets, ids)]
            name = self._new_dsd(key, lambda n: (
                f"const {n} = @get_dsd(fabout_dsd, {arch_select(self.targets, variants)});"))
        if static:
            return name
        self._nconst += 1
        out = f"{name}_n{self._nconst}"
        lines.append(f"const {out} = @set_dsd_length({name}, @bitcast(u16, {self.p.expr(length, 'i16')}));")
        return out

    # ---------------------------------------------------------------------------------- options
    def options(self, st, completion: bool = True, ut_offset: int = 0, force_async: bool = False) -> str | None:
        """The op's last argument: async, its completion action (unless ``completion`` is False) and,
        where the target names microthreads, ``.ut_id`` (the op's slot + ``ut_offset``)."""
        done = st.done
        if done is None and st.id is None and not force_async:
            return None  # synchronous
        parts = [".async = true"]
        if completion and isinstance(done, I.Activate):
            parts.append(f".activate = t_{done.task}")
        elif completion and isinstance(done, I.Unblock):
            parts.append(f".unblock = t_{done.task}")
        variants = []
        for t, tq in zip(self.targets, self.bq.per_target):
            extra = [f".ut_id = @get_ut_id({t.microthreads[tq.ut_of_op[id(st)] + ut_offset]})"] if t.op_ut_id else []
            variants.append(".{ " + ", ".join(parts + extra) + " }")
        text = arch_select(self.targets, variants)
        if len(set(variants)) == 1:
            return text
        # differs per target: a comptime constant, so the op itself stays one short call
        return self._new_dsd(("opt", text), lambda n: f"const {n} = {text};")

    # ---------------------------------------------------------------------------------- ops
    def fabric(self, st, L: _Lines) -> None:
        pre: list[str] = []
        self.p.unbind()
        roots = []
        if isinstance(st, I.Relay):
            roots.append(st.count)
        else:
            ref = _fabric_ref(st)
            roots += [ref.offset, ref.length]
        pre += Bindings(self.p).prepare(roots)
        opts = self.options(st)
        L.add(f"// {_describe(st)}")
        if isinstance(st, I.Relay):
            length = as_expr(st.count)
            fin = self.fab_dsd(st, "in", length, False, pre)
            fout = self.fab_dsd(st, "out", length, False, pre)
            self._block(L, pre, f"@mov32({fout}, {fin}{', ' + opts if opts else ''});")
            return
        ref = _fabric_ref(st)
        dt = self.body.buffers[ref.buf].dtype
        if st.packed and dt != "fp16":
            raise InputError(f"{self.where}, {type(st).__name__}: packed=True needs an fp16 buffer")
        h = "h" if dt == "fp16" else "s"
        if isinstance(st, I.RelayStore):
            self._relay_store(st, ref, h, opts, pre, L)
            return
        mem, length = self.mem_dsd(ref, pre)
        if isinstance(st, I.Send):
            call, args = f"@fmov{h}", [self.fab_dsd(st, "out", length, st.packed, pre), mem]
        elif isinstance(st, I.Recv):
            call, args = f"@fmov{h}", [mem, self.fab_dsd(st, "in", length, st.packed, pre)]
        elif isinstance(st, I.RecvAdd):
            call, args = f"@fadd{h}", [mem, mem, self.fab_dsd(st, "in", length, st.packed, pre)]
        else:  # RecvAddSend
            fin = self.fab_dsd(st, "in", length, st.packed, pre)
            call, args = f"@fadd{h}", [self.fab_dsd(st, "out", length, st.packed, pre), fin, mem]
        if opts is not None:
            args.append(opts)
        self._block(L, pre, f"{call}({', '.join(args)});")

    def _relay_store(self, st, ref: I.Ref, h: str, opts: str | None, pre: list[str], L: _Lines) -> None:
        """``RelayStore``: a FIFO over the destination buffer, fed from the fabric and drained onto the
        next colour by two async moves (the buffer keeps every value); the op's completion action
        goes on the drain, which finishes last."""
        buf = self.body.buffers[ref.buf]
        whole = as_expr(ref.offset) == as_expr(0) and ref.stride == 1 and (
            ref.length is None or as_expr(ref.length) == as_expr(buf.length))
        if not whole:
            raise InputError(f"{self.where}: RelayStore into a slice of {ref.buf!r} ({_describe(st)}): a CSL FIFO "
                             f"spans a whole global array, so the relay's destination must be a whole buffer")
        length = as_expr(buf.length)
        if opts is None and _is_one(buf.length, self.blocks):
            # one wavelet, synchronously: receive it, then send it on (no FIFO, no concurrent moves)
            mem = self._new_dsd(("mem", ref.buf, "all", "1", 1), lambda n: (
                f"const {n} = @get_dsd(mem1d_dsd, .{{ .tensor_access = |i|{{1}} -> {ref.buf}[i] }});"))
            fin = self.fab_dsd(st, "in", Const(1), st.packed, pre)
            fout = self.fab_dsd(st, "out", Const(1), st.packed, pre)
            self._block(L, pre + [f"@fmov{h}({mem}, {fin});  // one wavelet: store it"],
                        f"@fmov{h}({fout}, {mem});  // and send it on")
            return
        fifo = self._new_dsd(("fifo", ref.buf), lambda n: f"const {n} = @allocate_fifo({ref.buf});")
        fin = self.fab_dsd(st, "in", length, st.packed, pre)
        fout = self.fab_dsd(st, "out", length, st.packed, pre)
        push = self.options(st, completion=False, force_async=True)
        drain = self.options(st, ut_offset=1)  # synchronous when the op is: the drain finishes last
        pre_lines = pre + [f"@fmov{h}({fifo}, {fin}, {push});  // fill the FIFO from the fabric"]
        drain_args = f"{fout}, {fifo}" + (f", {drain}" if drain else "")
        self._block(L, pre_lines, f"@fmov{h}({drain_args});  // drain it onto the next colour")

    def compute(self, st, L: _Lines) -> None:
        name = type(st).__name__
        pre: list[str] = []
        refs = [(f, getattr(st, f)) for f in I.ref_fields(st)]
        self.p.unbind()
        roots = [x for _, r in refs for x in (r.offset, r.length)]
        scalar = {I.Fmac: "s", I.Scale: "factor", I.Fill: "value"}.get(type(st))
        if scalar:
            roots.append(getattr(st, scalar))
        pre += Bindings(self.p).prepare(roots)
        dts = [self.body.buffers[r.buf].dtype for _, r in refs]
        texts = []
        for k, (fname, r) in enumerate(refs):
            if r.stride == 0 and k > 0:  # a broadcast scalar source
                texts.append(f"{r.buf}[{self.p.expr(as_expr(r.offset), 'u16')}]")
            else:
                texts.append(self.mem_dsd(r, pre)[0])
        dst = dts[0]
        if isinstance(st, I.Fmac):
            if dts == ["fp32"] * 3:
                call, sty = "@fmacs", "f32"
            elif dts == ["fp16"] * 3:
                call, sty = "@fmach", "f16"
            elif dts == ["fp32", "fp32", "fp16"]:
                call, sty = "@fmachs", "f16"
            else:
                raise InputError(f"{self.where}, Fmac: dtypes (dst, a, b) = {tuple(dts)} have no CSL builtin; "
                                 f"use all fp32, all fp16, or fp32 += fp16 * fp16")
            args = texts + [self.p.expr(st.s, sty)]
        elif isinstance(st, (I.Add, I.Mul, I.Max)):
            if len(set(dts)) != 1:
                raise InputError(f"{self.where}, {name}: mixed dtypes {tuple(dts)} are not lowered to CSL; "
                                 f"convert with Copy first")
            base = {I.Add: "fadd", I.Mul: "fmul", I.Max: "fmax"}[type(st)]
            call, args = f"@{base}{'h' if dst == 'fp16' else 's'}", texts
        elif isinstance(st, I.Scale):
            if len(set(dts)) != 1:
                raise InputError(f"{self.where}, Scale: mixed dtypes {tuple(dts)} are not lowered to CSL")
            call = "@fmulh" if dst == "fp16" else "@fmuls"
            args = texts + [self.p.expr(st.factor, BUFFER_CSL[dst])]
        elif isinstance(st, I.Copy):
            src = dts[1]
            call = {("fp32", "fp32"): "@fmovs", ("fp16", "fp16"): "@fmovh", ("fp32", "fp16"): "@fh2s",
                    ("fp16", "fp32"): "@fs2h"}[(dst, src)]
            args = texts
        elif isinstance(st, I.Fill):
            call = "@fmovh" if dst == "fp16" else "@fmovs"
            args = texts + [self.p.expr(st.value, BUFFER_CSL[dst])]
        else:  # Exp, Rsqrt, Silu: a scalar function mapped over the slice
            if dts[0] != dts[1]:
                raise InputError(f"{self.where}, {name}: source and destination dtypes differ")
            self.uses_math = True
            fn = f"wl_{name.lower()}_{BUFFER_CSL[dst]}"
            call, args = "@map", [fn, texts[1], texts[0]]
        L.add(f"// {_describe(st)}")
        self._block(L, pre, f"{call}({', '.join(args)});")

    def _block(self, L: _Lines, pre: list[str], stmt: str) -> None:
        """A statement with its local declarations, in a block of its own when it has any (so the
        names stay local)."""
        if not pre:
            L.add(stmt)
            return
        L.add("{")
        L.depth += 1
        L.extend(pre)
        L.add(stmt)
        L.depth -= 1
        L.add("}")

    # ---------------------------------------------------------------------------------- statements
    def code(self, code: tuple, L: _Lines) -> None:
        for st in code:
            self.statement(st, L)

    def statement(self, st, L: _Lines) -> None:
        p = self.p
        if isinstance(st, I.FABRIC_INSTRUCTIONS):
            self.fabric(st, L)
        elif isinstance(st, I.MACROS):
            raise AssertionError("macros are expanded by Body.finalized()")
        elif isinstance(st, I.Instruction):
            self.compute(st, L)
        elif isinstance(st, S.Loop):
            vt = self.scope.var_types[st.var]
            p.unbind()
            pre = Bindings(p).prepare([st.count])
            count = as_expr(st.count)
            if not isinstance(count, (Const, Param)):
                self._nconst += 1
                pre.append(f"const {st.var}_n{self._nconst}: {vt} = {p.expr(count, vt)};")
                bound = f"{st.var}_n{self._nconst}"
            else:
                bound = p.expr(count, vt)
            L.add(f"// Loop {st.var} < {st.count!r}")
            if pre:
                L.add("{")
                L.depth += 1
                L.extend(pre)
            L.add(f"{st.var} = 0;")
            L.add(f"while ({st.var} < {bound}) : ({st.var} += 1) {{")
            L.depth += 1
            self.code(st.body, L)
            L.depth -= 1
            L.add("}")
            if pre:
                L.depth -= 1
                L.add("}")
        elif isinstance(st, S.If):
            p.unbind()
            pre = Bindings(p).prepare([st.cond])
            self._open(L, pre)
            comptime = self._static(st.cond)
            L.add(f"if ({p.cond(st.cond)}) {{" + ("  // comptime: pruned per parameter set" if comptime else ""))
            L.depth += 1
            self.code(st.then, L)
            L.depth -= 1
            if st.orelse:
                L.add("} else {")
                L.depth += 1
                self.code(st.orelse, L)
                L.depth -= 1
            L.add("}")
            self._close(L, pre)
        elif isinstance(st, S.Switch):
            p.unbind()
            pre = Bindings(p).prepare([st.value])
            self._open(L, pre)
            t = p.type_of(p.canon(st.value))
            want = t if t in ("i16", "i32", "u16", "u32") else "i32"
            L.add(f"switch ({p.expr(st.value, want)}) {{")
            L.depth += 1
            for k, code in st.cases:
                L.add(f"{k} => {{")
                L.depth += 1
                self.code(code, L)
                L.depth -= 1
                L.add("},")
            L.add("else => {")
            L.depth += 1
            self.code(st.default, L)
            L.depth -= 1
            L.add("},")
            L.depth -= 1
            L.add("}")
            self._close(L, pre)
        elif isinstance(st, S.Assign):
            p.unbind()
            pre = Bindings(p).prepare([st.value])
            self._block(L, pre, f"{st.var} = {p.expr(st.value, self.scope.var_types[st.var])};")
        elif isinstance(st, S.Store):
            p.unbind()
            pre = Bindings(p).prepare([st.index, st.value])
            t = BUFFER_CSL[self.body.buffers[st.buf].dtype]
            self._block(L, pre, f"{st.buf}[{p.expr(st.index, 'u16')}] = {p.expr(st.value, t)};")
        elif isinstance(st, I.Activate):
            L.add(f"@activate(t_{st.task});")
        elif isinstance(st, S.Block):
            L.add(f"@block(t_{st.task});")
        elif isinstance(st, I.Unblock):
            L.add(f"@unblock(t_{st.task});")
        elif isinstance(st, S.Finish):
            L.add("wl_finish();  // Finish: unblock the host's command stream")
        elif isinstance(st, S.Timestamp):
            L.add(f"wl_stamp({self.stamp_slots[st.label]});  // Timestamp({st.label!r})")
        elif isinstance(st, S.SetRoute):
            raise InputError(f"{self.where}: SetRoute (a run-time route change) has no CSL lowering yet")
        elif isinstance(st, S.Wait):
            raise AssertionError("Wait is rewritten by Body.finalized()")
        else:
            raise InputError(f"{self.where}: cannot lower {st!r} to CSL")

    @staticmethod
    def _open(L: _Lines, pre: list[str]) -> None:
        if pre:
            L.add("{")
            L.depth += 1
            L.extend(pre)

    @staticmethod
    def _close(L: _Lines, pre: list[str]) -> None:
        if pre:
            L.depth -= 1
            L.add("}")

    # ---------------------------------------------------------------------------------- the file
    def render(self, env, file: str) -> PeFile:
        b = self.body
        for t in b.tasks.values():
            if t.priority != "low":
                raise InputError(f"{self.where}: task {t.name!r} has priority {t.priority!r}; task priorities "
                                 f"have no CSL lowering yet (<tile_config> task_priority)")
        functions = []
        for f in b.functions.values():
            L = _Lines()
            L.depth = 1
            L.add("wl_launch_begin();")
            for a in f.args:
                L.add(f"{a} = a_{a};")
            self.code(f.code, L)
            args = ", ".join(f"a_{a}: {self.scope.var_types[a]}" for a in f.args)
            functions.append({"name": f.name, "args": args, "lines": L.out})
        for name, argtypes in self.all_functions.items():
            if name in b.functions:
                mine = tuple(self.scope.var_types[a] for a in b.functions[name].args)
                if mine != argtypes:
                    raise InputError(f"{self.where}: function {name!r} takes {mine}, another body's takes {argtypes}; "
                                     f"an exported function has one signature")
                continue
            args = ", ".join(f"_: {t}" for t in argtypes)
            functions.append({"name": name, "args": args, "stub": True,
                              "lines": ["  wl_launch_begin();",
                                        "  wl_finish();  // this body has no such function: finish at once"]})
        tasks = []
        for t in b.tasks.values():
            L = _Lines()
            L.depth = 1
            wave = None
            if t.kind == "data":
                wave = self.scope.var_types[t.arg] if t.arg else "u32"
                if t.arg:
                    L.add(f"{t.arg} = wavelet;")
            self.code(t.code, L)
            tasks.append({"name": t.name, "kind": t.kind, "wavelet": wave, "lines": L.out, "arg": t.arg,
                          "synthetic": t.synthetic, "blocked": t.blocked})
        task_ids = []
        for t in b.tasks.values():
            if t.kind == "local":
                ids = [str(ti[t.name]) for ti in self.task_ids]
                task_ids.append(f"const t_{t.name}: local_task_id = @get_local_task_id({arch_select(self.targets, ids)});")
            else:
                iq = self._iq(t.colour)
                variants = [f"@get_data_task_id({iq})" if tg.data_task_from_queue
                            else f"@get_data_task_id({self.colour_text(t.colour)})" for tg in self.targets]
                task_ids.append(f"const t_{t.name}: data_task_id = {arch_select(self.targets, variants)};")
        queues = []
        inits = []
        for k, name in enumerate(self.iq_names):
            ids = [str(tq.input_ids[k]) for tq in self.bq.per_target]
            sharers = ", ".join(repr(c) for c in self.bq.sharers("in", k))
            queues.append(f"const {name} = @get_input_queue({arch_select(self.targets, ids)});  // colour {sharers}")
            inits.append(f"@initialize_queue({name}, .{{ .color = {self.queue_colour('in', k)} }});")
        per_target = []
        for t, tq in zip(self.targets, self.bq.per_target):
            lines = []
            if tq.out_bound:
                for k, q in enumerate(tq.out_bound):
                    lines.append(f"@initialize_queue(@get_output_queue({q}), .{{ .color = {self.queue_colour('out', k)} }});")
            else:
                for q in sorted(set(tq.out_of_op.values())):
                    lines.append(f"@initialize_queue(@get_output_queue({q}), .{{}});")
            per_target.append(lines)
        inits += arch_block(self.targets, per_target)
        buffers = []
        for buf in b.buffers.values():
            buffers.append({"name": buf.name, "type": BUFFER_CSL[buf.dtype], "length": self.p.top(buf.length),
                            "export": buf.export, "length_repr": repr(buf.length)})
        vars_ = []
        for v in b.vars.values():
            init = v.init
            if v.dtype in ("f16", "f32"):
                init_text = repr(float(init))
            else:
                if float(init) != int(init):
                    raise InputError(f"{self.where}: integer variable {v.name!r} has a fractional initial value {init}")
                init_text = str(int(init))
            vars_.append({"name": v.name, "type": v.dtype, "init": init_text})
        params = [{"name": n, "type": self.ptypes[n], "kind": k} for n, k in b.params.items()]
        text = env.get_template("pe.csl.j2").render(
            kernel=self.kernel, body=b, role=self.role,
            doc_lines=[ln for ln in b.doc.strip().splitlines() if ln.strip() and ln.strip() != self.role], targets=self.targets, params=params,
            buffers=buffers, vars=vars_, task_ids=task_ids, queues=queues, inits=inits, dsds=self.top,
            functions=functions, tasks=tasks, nslots=self.nslots, fixed_slots=FIXED_SLOTS, consts=self.consts,
            stamp_slots=self.stamp_slots, uses_math=self.uses_math, math_fns=_math_fns(self.body),
        )
        exports = {buf.name: BUFFER_CSL[buf.dtype] for buf in b.buffers.values() if buf.export}
        fsig = {f.name: tuple(self.scope.var_types[a] for a in f.args) for f in b.functions.values()}
        return PeFile(b, file, text, exports, fsig)


def _is_one(length, blocks: list) -> bool:
    """The buffer length is 1 in every parameter set."""
    from simulator.expr import evaluate

    return all(evaluate(length, b.values) == 1 for b in blocks)


def _fabric_ref(st) -> I.Ref:
    """The memory operand of a fabric op (none for ``Relay``)."""
    return st.src if isinstance(st, (I.Send, I.RecvAddSend)) else st.dst


def _math_fns(body: Body) -> list[dict]:
    """The scalar functions ``@map`` applies, per dtype (Exp, Rsqrt, Silu)."""
    out = {}
    for code in [f.code for f in body.functions.values()] + [t.code for t in body.tasks.values()]:
        for st in S.walk(code):
            if isinstance(st, (I.Exp, I.Rsqrt, I.Silu)):
                t = BUFFER_CSL[body.buffers[st.dst.buf].dtype]
                name = type(st).__name__.lower()
                out[(name, t)] = {"name": f"wl_{name}_{t}", "op": name, "type": t}
    return [out[k] for k in sorted(out)]


def _names(e):
    from simulator.expr import names

    return names(e)


def _simplify_index(text: str) -> str:
    return text[4:] if text.startswith("0 + ") else text


def _describe(st) -> str:
    return S.describe(st).replace("\n", " ")[:160]


def check_values(body: Body, blocks: list) -> None:
    """Parameter values the emitted types can hold (ints within i32)."""
    for name, kind in body.params.items():
        if kind != "int":
            continue
        vals = np.array([b.values[name] for b in blocks], dtype=np.int64)
        if vals.size and (vals.min() < -(2 ** 31) or vals.max() >= 2 ** 31):
            raise InputError(f"body {body.name}: parameter {name!r} takes {int(vals.max())}, beyond CSL's i32")


__all__ = ["PeEmitter", "PeFile", "param_types", "check_values", "LAUNCH_ARG_TYPES", "BOOL"]
