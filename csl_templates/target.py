"""``CslTarget``: what the CSL emitter needs to know about one architecture, read from its
``HardwareSpec`` — the only place where WSE-2 and WSE-3 differ in emitted code.

The templates never test an architecture by name: every difference (queue binding and
``@initialize_queue``, data-task IDs, ``.fabric_color`` on ``fabout_dsd``, ``.ut_id`` on async ops,
task-ID and queue ranges, ``--arch``, fabric dimensions) is a field here, filled from the spec
(hardware-and-csl.md §1.3-§1.5, §6.10, §9). A bundle serves several targets from one source tree: a
value that differs between them is printed as ``if (@is_arch("wse3")) a else b`` (``arch_select``).
"""

from __future__ import annotations

from dataclasses import dataclass

from plmr.errors import InputError
from plmr.hardware import BUILTIN_SPECS, HardwareSpec

#: memcpy's halo (hardware-and-csl.md §4): kernel PE (0, 0) is fabric tile (4, 1); the fabric needs
#: W + 7 columns and H + 2 rows around a W x H kernel.
FABRIC_OFFSETS = (4, 1)
HALO_X, HALO_Y = 7, 2
#: §1.5: microthread 0 belongs to memcpy.
RESERVED_MICROTHREADS = (0,)


@dataclass(frozen=True)
class CslTarget:
    """One architecture as the emitter sees it (see the module docstring)."""

    spec: HardwareSpec
    arch: str  # cslc --arch and @is_arch(...)
    data_task_from_queue: bool  # §1.4: data task ID = input queue (WSE-3) or colour (WSE-2)
    fabout_has_color: bool  # §6.10/§9: fabout_dsd names its colour (WSE-2); WSE-3 binds the queue
    op_ut_id: bool  # §6.5/§6.10: async ops name a microthread with .ut_id (WSE-3 only)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def microthreads(self) -> tuple[int, ...]:
        """Microthread IDs a program may name (.ut_id), memcpy's removed (§1.5)."""
        return tuple(u for u in range(self.spec.microthreads) if u not in RESERVED_MICROTHREADS)

    def sim_fabric(self, width: int, height: int) -> tuple[int, int]:
        """The smallest fabric that holds a width x height kernel with memcpy (§4, §10.3)."""
        return width + HALO_X, height + HALO_Y

    def hardware_fabric(self) -> tuple[int, int]:
        """The whole wafer as cslc sees it (§1.1, §10.3)."""
        return self.spec.fabric_width, self.spec.fabric_height

    def check_fits(self, width: int, height: int) -> None:
        fx, fy = self.sim_fabric(width, height)
        hx, hy = self.hardware_fabric()
        if fx > hx or fy > hy:
            raise InputError(f"a {width}x{height} kernel needs a {fx}x{fy} fabric with memcpy's halo; "
                             f"{self.name}'s fabric is {hx}x{hy}")


def csl_target(spec: HardwareSpec) -> CslTarget:
    """The emitter's view of ``spec`` (its CSL target facts: ``csl_arch``, ``data_tasks_from_queues``,
    ``fabout_has_color``, ``op_ut_id_option``)."""
    return CslTarget(spec=spec, arch=spec.csl_arch, data_task_from_queue=spec.data_tasks_from_queues,
                     fabout_has_color=spec.fabout_has_color, op_ut_id=spec.op_ut_id_option)


def default_targets(width: int, height: int) -> list[CslTarget]:
    """The built-in targets a width x height kernel fits on, WSE-2 first."""
    out = []
    for spec in BUILTIN_SPECS.values():
        t = csl_target(spec)
        try:
            t.check_fits(width, height)
        except InputError:
            continue
        out.append(t)
    if not out:
        raise InputError(f"a {width}x{height} kernel fits none of the built-in targets "
                         f"({', '.join(BUILTIN_SPECS)}) with memcpy's halo")
    return out


def arch_select(targets: list[CslTarget], values: list[str]) -> str:
    """One CSL expression that is ``values[i]`` when compiled for ``targets[i]`` (a comptime
    ``if (@is_arch(..))`` chain; the plain value when all targets agree)."""
    if len(set(values)) == 1:
        return values[0]
    text = values[-1]
    for t, v in reversed(list(zip(targets[:-1], values[:-1]))):
        text = f'if (@is_arch("{t.arch}")) {v} else {text}'
    return f"({text})" if len(values) > 1 else text


def arch_block(targets: list[CslTarget], lines: list[list[str]]) -> list[str]:
    """Statements that differ per target, as a comptime ``if (@is_arch(..)) { .. } else { .. }``
    (the plain lines when all targets agree)."""
    if all(ls == lines[0] for ls in lines):
        return list(lines[0])
    out = []
    for i, (t, ls) in enumerate(zip(targets, lines)):
        last = i == len(targets) - 1
        head = "} else {" if last else (f'if (@is_arch("{t.arch}")) {{' if i == 0 else
                                         f'}} else if (@is_arch("{t.arch}")) {{')
        out.append(head)
        out += ["  " + ln for ln in ls]
    out.append("}")
    return out
