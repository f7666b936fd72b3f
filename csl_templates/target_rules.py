"""Static rules that need evaluated values and the target (hardware-and-csl.md §8).

Layout rules take a ``LayoutReadback``; PE rules take the ``PeFacts`` of one PE program for one
parameter struct. Every target fact comes from ``plmr.HardwareSpec`` (colour count, reserved colours,
task-ID ranges and reservations, queues, switch colours, SRAM). Each rule is one small function
``(..., spec, ...) -> list[Finding]``; ``LAYOUT_RULES`` and ``PE_RULES`` list them.
"""

from __future__ import annotations

import numpy as np

from plmr.hardware import HardwareSpec

from csl_templates.comptime_values import (
    Color, Direction, Dsd, Dsr, EnumLiteral, Opaque, Queue, StructVal, TaskId, UtId, direction_set,
)
from csl_templates.findings import Finding, at
from csl_templates.layout_reader import LayoutReadback, dir_bits
from csl_templates.pe_reader import PeFacts

# ------------------------------------------------------------------ layout rules


def rule_rectangle(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: exactly one @set_rectangle, before any @set_tile_code; problems found while evaluating."""
    out = [at(lay.path, p.node, p.severity, p.rule, p.message) for p in lay.problems]
    if lay.width == 0:
        out.append(at(lay.path, lay.module, "E", "layout.rectangle", "the layout never calls @set_rectangle"))
    return out


def rule_fabric_fits(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: the rectangle plus the memcpy halo (W + 7, H + 2; §4) fits the target's fabric."""
    if not lay.width:
        return []
    need_w, need_h = (lay.width + 7, lay.height + 2) if memcpy else (lay.width, lay.height)
    if need_w > spec.fabric_width or need_h > spec.fabric_height:
        node = lay.sites[0] if lay.sites else lay.module
        return [at(lay.path, node, "E", "layout.fabric",
                   f"rectangle {lay.width} x {lay.height} needs a {need_w} x {need_h} fabric"
                   f"{' (memcpy halo)' if memcpy else ''}; {spec.name} has {spec.fabric_width} x {spec.fabric_height}")]
    return []


def rule_one_tile_code_per_pe(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: exactly one @set_tile_code per rectangle coordinate."""
    out = []
    if not lay.width:
        return out
    twice = np.argwhere(lay.tile_count > 1)
    if len(twice):
        x, y = twice[0]
        site = lay.sites[lay.tile_site[x, y]]
        out.append(at(lay.path, site, "E", "layout.tile_code_twice",
                      f"@set_tile_code sets PE ({x}, {y}) more than once ({len(twice)} PE(s) affected)"))
    missing = np.argwhere(lay.tile_count == 0)
    if len(missing):
        x, y = missing[0]
        node = lay.module.layout_blocks()[0] if lay.module.layout_blocks() else lay.module
        out.append(at(lay.path, node, "E", "layout.tile_code_missing",
                      f"no @set_tile_code for PE ({x}, {y}) ({len(missing)} PE(s) of the rectangle have no code)"))
    return out


def rule_one_colour_config(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: at most one colour configuration per (PE, colour)."""
    out = []
    for c, count in sorted(lay.config_count.items()):
        twice = np.argwhere(count > 1)
        if len(twice):
            x, y = twice[0]
            out.append(at(lay.site_file(int(lay.route_site[c][x, y])), lay.sites[lay.route_site[c][x, y]], "E", "routes.config_twice",
                          f"colour {c} is configured more than once on PE ({x}, {y}) "
                          f"({len(twice)} PE(s) affected)"))
    return out


def _colour_findings(path, uses, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    out = []
    for node, colour in uses:
        if not 0 <= colour.id < spec.num_colors:
            out.append(at(path, node, "E", "colour.range",
                          f"colour {colour.id} is not a colour ID of {spec.name} (0..{spec.num_colors - 1})"))
        elif memcpy and colour.id in spec.reserved_colors:
            out.append(at(path, node, "W", "colour.reserved",
                          f"colour {colour.id} is reserved by memcpy on {spec.name} "
                          f"(reserved: {', '.join(map(str, spec.reserved_colors))})"))
    return out


def rule_colour_ids(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: colour IDs in 0..num_colors-1; W: colours reserved by memcpy (when memcpy is used)."""
    out = _colour_findings(lay.path, lay.colour_uses, spec, memcpy)
    seen = {c.id for _, c in lay.colour_uses}
    for c in sorted(lay.config_count):
        if c in seen:
            continue
        xs, ys = np.nonzero(lay.config_count[c])
        site = int(lay.route_site[c][xs[0], ys[0]])
        out.extend(_colour_findings(lay.site_file(site), [(lay.sites[site], Color(c))], spec, memcpy))
    return out


_STEP = {Direction.EAST: (1, 0, Direction.WEST), Direction.WEST: (-1, 0, Direction.EAST),
         Direction.NORTH: (0, -1, Direction.SOUTH), Direction.SOUTH: (0, 1, Direction.NORTH)}


def rule_tx_meets_rx(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """W: every ``tx`` toward a neighbour meets an ``rx`` from this side there, inside the rectangle.

    NORTH is -y, SOUTH is +y (row 0 at the top, as the SDK draws the fabric). One finding per call
    site and direction, naming the first PE and the count.
    """
    out = []
    w, h = lay.width, lay.height
    for c in sorted(lay.tx):
        tx, rx, configured = lay.tx[c], lay.rx[c], lay.config_count[c] > 0
        for d, (dx, dy, back) in _STEP.items():
            sends = configured & ((tx & int(d)) != 0)
            if not sends.any():
                continue
            xs, ys = np.nonzero(sends)
            nx, ny = xs + dx, ys + dy
            inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
            ok = np.zeros(len(xs), dtype=bool)
            ok[inside] = (rx[nx[inside], ny[inside]] & int(back)) != 0
            bad = np.nonzero(~ok)[0]
            by_site: dict = {}
            for k in bad.tolist():
                by_site.setdefault(int(lay.route_site[c][xs[k], ys[k]]), []).append(k)
            for site, ks in sorted(by_site.items()):
                k = ks[0]
                x, y = int(xs[k]), int(ys[k])
                where = "leaves the rectangle" if not inside[k] else \
                    f"PE ({int(nx[k])}, {int(ny[k])}) does not receive colour {c} from the {back.name}"
                out.append(at(lay.site_file(site), lay.sites[site], "W", "routes.unmatched_tx",
                              f"PE ({x}, {y}) sends colour {c} {d.name} but {where}"
                              + (f" ({len(ks)} PE(s) at this call)" if len(ks) > 1 else "")))
    return out


def rule_rx_directions(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """W: an ``rx`` with several directions (undefined if two arrive at once); W: a PE that injects a
    colour (``rx`` RAMP) and also receives it from a neighbour."""
    out = []
    for c in sorted(lay.rx):
        rx = lay.rx[c].astype(np.int64)
        configured = lay.config_count[c] > 0
        ndirs = sum(((rx & int(d)) != 0).astype(int) for d in Direction)
        multi = configured & (ndirs > 1)
        inject = multi & ((rx & int(Direction.RAMP)) != 0)
        for mask, rule, text in ((inject, "routes.inject_and_receive", "injects colour {c} (rx RAMP) and also "
                                  "receives it from a neighbour"),
                                 (multi & ~inject, "routes.multi_rx", "receives colour {c} from several "
                                  "directions ({dirs}); simultaneous arrivals are undefined")):
            if mask.any():
                xs, ys = np.nonzero(mask)
                by_site: dict = {}
                for x, y in zip(xs.tolist(), ys.tolist()):
                    by_site.setdefault(int(lay.route_site[c][x, y]), (x, y))
                for site, (x, y) in sorted(by_site.items()):
                    dirs = "+".join(sorted(direction_set(int(rx[x, y]))))
                    out.append(at(lay.site_file(site), lay.sites[site], "W", rule,
                                  f"PE ({x}, {y}) " + text.format(c=c, dirs=dirs)))
    return out


def _switch_findings(path, node, colour, cfg: StructVal, spec: HardwareSpec) -> list[Finding]:
    sw = cfg.get("switches")
    if not isinstance(sw, StructVal):
        return []
    out = []
    if spec.switch_colors and colour not in spec.switch_colors:
        out.append(at(path, node, "E", "switch.colour",
                      f"colour {colour} has no switch support on {spec.name} "
                      f"(switches on {', '.join(map(str, spec.switch_colors))})"))
    for pos in ("pos1", "pos2", "pos3"):
        p = sw.get(pos)
        if not isinstance(p, StructVal):
            continue
        rx = p.get("rx")
        if rx is not None:
            bits = dir_bits(rx)
            if bits is None or bin(bits).count("1") != 1:
                out.append(at(path, node, "E", "switch.rx_single",
                              f"switch .{pos}.rx must be a single direction"))
        if rx is not None and p.get("tx") is not None and not spec.switch_rx_and_tx:
            out.append(at(path, node, "E", "switch.rx_and_tx",
                          f"switch .{pos} sets both rx and tx, which {spec.name} rejects"))
    return out


def rule_switches(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: a switch position's rx is one direction; rx and tx together only on WSE-3; switch colours (WSE-3)."""
    out, seen = [], set()
    for ex in lay.extras:
        key = (ex.site, ex.colour)
        if key in seen:
            continue
        seen.add(key)
        out.extend(_switch_findings(lay.path, lay.sites[ex.site], ex.colour, ex.config, spec))
    return out


def rule_layout_params_bound(lay: LayoutReadback, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: a layout ``param`` without initialiser is given with --params."""
    return [at(lay.path, p, "E", "params.unbound",
               f"param '{p.name}' has no value: give it with --params {p.name}:VALUE or an initialiser")
            for p in lay.unbound_params]


LAYOUT_RULES = (rule_rectangle, rule_layout_params_bound, rule_fabric_fits, rule_one_tile_code_per_pe,
                rule_one_colour_config, rule_colour_ids, rule_switches, rule_rx_directions, rule_tx_meets_rx)


# ------------------------------------------------------------------ PE rules


def rule_pe_problems(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: comptime evaluation failures and false ``@comptime_assert``s; W: code the evaluator does not model."""
    return [at(f.path, node, "W" if rule == "eval.unsupported" else "E", rule, message)
            for node, message, rule in f.problems]


def rule_pe_params_bound(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: every ``param`` without initialiser is bound by @set_tile_code / @import_module."""
    return [at(f.path, p, "E", "params.unbound",
               f"param '{p.name}' is not bound by @set_tile_code or @import_module and has no initialiser")
            for p in f.unbound_params]


def rule_pe_colours(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E/W: colour IDs of @get_color in the PE program (as for the layout)."""
    return _colour_findings(f.path, f.colours, spec, memcpy)


def rule_task_ids(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: local task IDs in the target's range, control IDs in 0-63, data task IDs from a valid colour
    (WSE-2) or input queue (WSE-3); E: IDs reserved by memcpy/runtime (with memcpy); W: IDs to avoid."""
    out = []
    lo, hi = spec.local_task_ids
    clo, chi = spec.control_task_ids
    for node, t in f.task_ids:
        if t.kind == "local":
            if not lo <= t.id <= hi:
                out.append(at(f.path, node, "E", "task.local_range",
                              f"local task ID {t.id} is outside {lo}..{hi} on {spec.name}"))
            elif memcpy and t.id in spec.reserved_task_ids:
                out.append(at(f.path, node, "E", "task.reserved",
                              f"local task ID {t.id} is reserved by memcpy/the runtime on {spec.name} "
                              f"(reserved: {', '.join(map(str, spec.reserved_task_ids))})"))
            elif t.id in spec.avoid_task_ids:
                out.append(at(f.path, node, "W", "task.avoid",
                              f"local task ID {t.id} should be avoided on {spec.name} "
                              f"(avoid {', '.join(map(str, spec.avoid_task_ids))})"))
        elif t.kind == "control":
            if not clo <= t.id <= chi:
                out.append(at(f.path, node, "E", "task.control_range",
                              f"control task ID {t.id} is outside {clo}..{chi}"))
            elif t.id in spec.reserved_control_task_ids:
                out.append(at(f.path, node, "W", "task.control_reserved",
                              f"control task ID {t.id} is used by memcpy (avoid "
                              f"{', '.join(map(str, spec.reserved_control_task_ids))})"))
        elif t.kind == "data":
            if spec.data_tasks_from_queues and isinstance(t.via, Color):
                out.append(at(f.path, node, "E", "task.data_source",
                              f"on {spec.name} a data task ID comes from an input queue, not a colour"))
            elif not spec.data_tasks_from_queues and isinstance(t.via, Queue):
                out.append(at(f.path, node, "E", "task.data_source",
                              f"on {spec.name} a data task ID comes from a colour, not an input queue"))
            elif isinstance(t.via, Queue) and not 0 <= t.id < len(spec.input_queue_words):
                out.append(at(f.path, node, "E", "task.data_range", f"input queue {t.id} does not exist"))
    return out


def rule_binds(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: each task ID bound at most once per PE; E: the bind matches the ID's kind."""
    out, bound = [], {}
    kinds = {"bind_local_task": "local", "bind_data_task": "data", "bind_control_task": "control"}
    for node, builtin, name, tid in f.binds:
        if not isinstance(tid, TaskId):
            continue
        want = kinds.get(builtin)
        if want and tid.kind != want:
            out.append(at(f.path, node, "E", "task.bind_kind", f"@{builtin} given a {tid.kind} task ID"))
        key = tid.id
        if key in bound:
            other = bound[key]
            out.append(at(f.path, node, "E", "task.bound_twice",
                          f"task ID {tid.id} is already bound to '{other[0]}' (line {other[1]})"))
        else:
            bound[key] = (name, node.line)
    return out


def rule_queues(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: queue IDs exist (output queues 0-5 on WSE-2); E (WSE-3): @initialize_queue once per queue and
    only on the initialisable queues; W: queue 0 (memcpy's); E (WSE-3): data tasks from queues bound
    to a colour by @initialize_queue."""
    out = []
    for node, q in f.queues:
        n = len(spec.input_queue_words) if q.kind == "input" else len(spec.output_queue_words)
        if not 0 <= q.id < n:
            out.append(at(f.path, node, "E", "queue.range",
                          f"{q.kind} queue {q.id} does not exist on {spec.name} (0..{n - 1})"))
        elif memcpy and q.id in (spec.reserved_input_queues if q.kind == "input" else spec.reserved_output_queues):
            out.append(at(f.path, node, "W", "queue.reserved",
                          f"{q.kind} queue {q.id} is used by memcpy on {spec.name}"))
    inits = {}
    for node, q, cfg in f.queue_inits:
        if not isinstance(q, Queue):
            continue
        if spec.initializable_queues and q.id not in spec.initializable_queues:
            out.append(at(f.path, node, "E", "queue.init_range",
                          f"@initialize_queue on {q.kind} queue {q.id}: only queues "
                          f"{', '.join(map(str, spec.initializable_queues))} on {spec.name}"))
        key = (q.kind, q.id)
        if key in inits and spec.data_tasks_from_queues:
            out.append(at(f.path, node, "E", "queue.init_twice",
                          f"{q.kind} queue {q.id} is initialised twice (line {inits[key].line})"))
        inits.setdefault(key, node)
        if spec.data_tasks_from_queues and (not isinstance(cfg, StructVal) or "color" not in cfg):
            out.append(at(f.path, node, "E", "queue.init_color",
                          f"on {spec.name} @initialize_queue binds the queue to a colour: .{{ .color = c }}"))
    if spec.data_tasks_from_queues:
        for node, builtin, name, tid in f.binds:
            if builtin == "bind_data_task" and isinstance(tid, TaskId) and isinstance(tid.via, Queue):
                if ("input", tid.via.id) not in inits:
                    out.append(at(f.path, node, "E", "queue.data_task_uninitialised",
                                  f"data task '{name}' reads input queue {tid.via.id}, which no "
                                  f"@initialize_queue binds to a colour"))
    return out


def rule_reserved_dsrs_uts(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """W: ``dsr_dest 0``, ``dsr_src1 0`` and microthread 0 belong to memcpy."""
    out = []
    for node, d in f.dsrs:
        if d.id == 0 and d.kind in ("dsr_dest", "dsr_src1"):
            out.append(at(f.path, node, "W", "dsr.reserved", f"{d.kind} 0 is used by memcpy"))
    for node, u in f.ut_ids:
        if u.id == 0:
            out.append(at(f.path, node, "W", "ut.reserved", "microthread 0 is used by memcpy"))
    return out


def rule_fabric_dsds(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: ``fabout_dsd`` has ``.fabric_color`` on WSE-2 and none on WSE-3; W: ``fabin_dsd`` with
    ``.fabric_color`` (SDK 1.x style)."""
    out = []
    for node, d in f.dsds:
        has = "fabric_color" in d.fields
        if d.kind == "fabout_dsd":
            if spec.fabout_has_color and not has:
                out.append(at(f.path, node, "E", "dsd.fabout_color", f"fabout_dsd needs .fabric_color on {spec.name}"))
            elif not spec.fabout_has_color and has:
                out.append(at(f.path, node, "E", "dsd.fabout_color",
                              f"fabout_dsd takes no .fabric_color on {spec.name} "
                              "(the output queue's @initialize_queue sets it)"))
        elif d.kind == "fabin_dsd" and has:
            out.append(at(f.path, node, "W", "dsd.fabin_color",
                          "fabin_dsd with .fabric_color is SDK 1.x style; 2.10 binds the colour with @initialize_queue"))
    return out


def rule_op_options(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: ``.activate`` xor ``.unblock`` and ``.activate`` takes a local task ID; ``.priority`` on ops
    only on WSE-2, ``.ut_id`` only on WSE-3; at most ``max_fabin_operands`` fabin operands (WSE-3: 1)."""
    out = []
    for op in f.ops:
        opt = op.options
        if isinstance(opt, StructVal):
            if "activate" in opt and "unblock" in opt:
                out.append(at(f.path, op.node, "E", "op.activate_unblock",
                              f"@{op.op} sets both .activate and .unblock; they are exclusive"))
            act = opt.get("activate")
            if isinstance(act, TaskId) and act.kind != "local":
                out.append(at(f.path, op.node, "E", "op.activate_kind",
                              f"@{op.op} .activate takes a local task ID, got a {act.kind} task ID"))
            if "priority" in opt and not spec.op_priority_option:
                out.append(at(f.path, op.node, "E", "op.arch_option",
                              f"@{op.op} .priority is WSE-2 only; on {spec.name} set priority on the DSD"))
            if "ut_id" in opt and not spec.op_ut_id_option:
                out.append(at(f.path, op.node, "E", "op.arch_option", f"@{op.op} .ut_id does not exist on {spec.name}"))
        if spec.max_fabin_operands:
            fabins = sum(1 for o in op.operands if _dsd_kind(f, o) == "fabin_dsd")
            if fabins > spec.max_fabin_operands:
                out.append(at(f.path, op.node, "E", "op.fabin_count",
                              f"@{op.op} has {fabins} fabin operands; {spec.name} allows {spec.max_fabin_operands}"))
    return out


def _dsr_contents(f: PeFacts) -> dict:
    out = {}
    for node, dsr, dsd, _ in f.dsr_loads:
        if isinstance(dsr, Dsr) and isinstance(dsd, Dsd):
            out.setdefault(dsr, []).append(dsd)
    return out


def _dsd_kind(f: PeFacts, operand) -> str | None:
    if isinstance(operand, Dsd):
        return operand.kind
    if isinstance(operand, Dsr):
        kinds = {d.kind for d in _dsr_contents(f).get(operand, [])}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def _queues_of(f: PeFacts, operand, dsr_map) -> set:
    dsds = [operand] if isinstance(operand, Dsd) else dsr_map.get(operand, []) if isinstance(operand, Dsr) else []
    out = set()
    for d in dsds:
        for key, kind in (("input_queue", "input"), ("output_queue", "output")):
            q = d.fields.get(key)
            if isinstance(q, Queue):
                out.add((q.kind, q.id))
    return out


def _exclusive(p1: tuple, p2: tuple) -> bool:
    a = dict(p1)
    return any(node in a and a[node] != br for node, br in p2)


def _is_async(op) -> bool:
    return isinstance(op.options, StructVal) and op.options.get("async") is True


def _fifo_drained_by(f: PeFacts, i: int) -> int | None:
    """Index in ``f.ops`` of the synchronous op that drains the FIFO async op ``f.ops[i]`` fills (same
    function, same branch), or None: when that drain returns, every value of the fill has gone through
    the FIFO, so the fill is complete and its queue and microthread are free."""
    a = f.ops[i]
    dst = a.operands[0] if a.operands else None
    if not (isinstance(dst, Opaque) and dst.name.startswith("@allocate_fifo(")):
        return None
    for j in range(i + 1, len(f.ops)):
        c = f.ops[j]
        if c.function == a.function and c.path == a.path and not _is_async(c) and dst in c.operands[1:]:
            return j
    return None


def rule_async_queue_sharing(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """W: two async ops issued by the same function or task (not in exclusive branches) use the same
    fabric queue or the same explicit microthread. Conservative: ops in different tasks are assumed
    sequenced by their completion tasks, and ops whose queue is not known at comptime are skipped; an
    async fill of a FIFO ends when a later synchronous drain of that FIFO in the same branch returns."""
    out = []
    dsr_map = _dsr_contents(f)
    by_fn: dict = {}
    index = {id(op): k for k, op in enumerate(f.ops)}
    for op in f.ops:
        if _is_async(op) and op.op != "load_to_dsr":
            by_fn.setdefault(op.function, []).append(op)
    for fn, ops in by_fn.items():
        for i, a in enumerate(ops):
            qa = set().union(*[_queues_of(f, o, dsr_map) for o in a.operands]) if a.operands else set()
            ua = a.options.get("ut_id")
            ends = _fifo_drained_by(f, index[id(a)])
            for b in ops[i + 1:]:
                if _exclusive(a.path, b.path) or (ends is not None and index[id(b)] > ends):
                    continue
                qb = set().union(*[_queues_of(f, o, dsr_map) for o in b.operands]) if b.operands else set()
                shared = qa & qb
                same_ut = isinstance(ua, UtId) and ua == b.options.get("ut_id")
                if shared or same_ut:
                    what = (f"{shared.pop()[0]} queue {next(iter(qa & qb))[1]}" if shared else f"microthread {ua.id}")
                    out.append(at(f.path, b.node, "W", "queue.shared_async",
                                  f"async @{b.op} may run while async @{a.op} (line {a.node.line}) still uses "
                                  f"{what} in '{fn}'"))
    return out


def rule_memory(f: PeFacts, spec: HardwareSpec, memcpy: bool) -> list[Finding]:
    """E: estimated memory over SRAM; W: within 4 KB of it. Estimate = global data (declared or array
    size, rounded up to align()) + code + the target's ``sram_reserve_bytes`` (stack and memcpy runtime).
    Code is estimated with the target's constants the simulator's program model uses
    (``simulator.resources.code_bytes``): ``code_bytes_per_op`` per DSD op, ``code_bytes_per_statement``
    per other statement, ``code_bytes_per_task`` per function or task, in the code a parameter set keeps
    (branches known at comptime not to run are pruned, as cslc does)."""
    data = sum(b for _, _, b in f.data)
    code = (f.code_ops * spec.code_bytes_per_op + f.code_statements * spec.code_bytes_per_statement
            + f.code_bodies * spec.code_bytes_per_task)
    total = data + code + spec.sram_reserve_bytes
    if total <= spec.sram_bytes - 4096:
        return []
    biggest = max(f.data, key=lambda d: d[2]) if f.data else None
    node = biggest[0] if biggest else None
    detail = (f"data {data} B (largest '{biggest[1]}' {biggest[2]} B) + code ~{code} B + reserve "
              f"{spec.sram_reserve_bytes} B = {total} B; {spec.name} has {spec.sram_bytes} B per PE")
    if total > spec.sram_bytes:
        return [at(f.path, node, "E", "memory.sram", "estimated memory exceeds SRAM: " + detail)]
    return [at(f.path, node, "W", "memory.sram", "estimated memory within 4 KB of SRAM: " + detail)]


PE_RULES = (rule_pe_problems, rule_pe_params_bound, rule_pe_colours, rule_task_ids, rule_binds, rule_queues,
            rule_reserved_dsrs_uts, rule_fabric_dsds, rule_op_options, rule_async_queue_sharing, rule_memory)


# ------------------------------------------------------------------ layout x PE rules


def rule_task_on_ramp_colour(lay: LayoutReadback, pes, facts: PeFacts, spec: HardwareSpec) -> list[Finding]:
    """W (WSE-2): a local or control task bound on the ID of a colour delivered to this PE's RAMP
    shares that colour's task-table slot (§1.4). ``pes``: the PEs running ``facts``' program, as flat
    indices into the layout's grids, ascending (``LayoutReadback.pe_members``)."""
    if spec.data_tasks_from_queues:
        return []
    out = []
    for node, builtin, name, tid in facts.binds:
        if not isinstance(tid, TaskId) or tid.kind == "data" or tid.id not in lay.tx:
            continue
        delivered = (lay.config_count[tid.id].flat[pes] > 0) & ((lay.tx[tid.id].flat[pes] & int(Direction.RAMP)) != 0)
        if delivered.any():
            x, y = np.unravel_index(pes[np.argmax(delivered)], lay.tx[tid.id].shape)
            out.append(at(facts.path, node, "W", "task.colour_slot",
                          f"{tid.kind} task '{name}' is bound on ID {tid.id}, and colour {tid.id} reaches the "
                          f"RAMP of PE ({x}, {y}): they share a task-table slot on {spec.name}"))
    return out


def rule_exports_match(lay: LayoutReadback, all_facts: list, spec: HardwareSpec) -> list[Finding]:
    """E: every @export_symbol name has an @export_name in the layout, and every @export_name is
    exported by some PE program."""
    names = {}
    for name, _t, _m, node in lay.exports:
        if isinstance(name, str):
            names.setdefault(name, node)
    out, exported = [], set()
    for f in all_facts:
        for node, name in f.exports:
            if not isinstance(name, str):
                continue
            exported.add(name)
            if name not in names:
                out.append(at(f.path, node, "E", "export.unmatched",
                              f"@export_symbol '{name}' has no @export_name in the layout"))
    for name, node in names.items():
        if name not in exported and all_facts:
            out.append(at(lay.path, node, "E", "export.unmatched",
                          f"@export_name '{name}' is exported by no PE program"))
    return out


__all__ = ["LAYOUT_RULES", "PE_RULES", "rule_task_on_ramp_colour", "rule_exports_match", "EnumLiteral"]
