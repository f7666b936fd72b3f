"""Identifiers in emitted CSL: the names a program may not use (CSL keywords, predeclared types and
directions, the names the emitter generates) and the check that says so in one line.

A program's buffers and functions become exported symbols the host looks up by name, so they are
never renamed: a clash is an error naming the body, the name and what it clashes with.
"""

from __future__ import annotations

import re

from plmr.errors import InputError

#: hardware-and-csl.md §7.2, plus Zig words CSL inherits.
KEYWORDS = frozenset("""
align and break comptime const continue else enum export extern false fn for if inline layout linksection
or param pub return struct switch task true undefined var void while defer null orelse try catch anytype
""".split())
PREDECLARED = frozenset("""
i8 i16 i32 i64 u8 u16 u32 u64 f16 f32 bf16 cb16 bool type void comptime_int comptime_float comptime_string
comptime_struct imported_module color direction data_task_id local_task_id control_task_id input_queue
output_queue ut_id mem1d_dsd mem4d_dsd fabin_dsd fabout_dsd dsr_dest dsr_src0 dsr_src1
NORTH SOUTH EAST WEST RAMP
""".split())
#: Names every emitted PE program declares itself.
GENERATED = frozenset("""
memcpy_params sys_mod layout_mod math_lib wl_tsc wl_now wl_stamp wl_launch_begin wl_finish time_stamps
time_stamps_ptr wl_x wl_y
""".split())
#: Names the layout declares (program parameters may not take them).
LAYOUT_GENERATED = frozenset("memcpy width height x y xi yi".split())


def check_layout_name(name: str, where: str, what: str) -> None:
    check_name(name, where, what)
    if name in LAYOUT_GENERATED:
        raise InputError(f"{where}: {what} {name!r} clashes with a name of the emitted layout; rename it")


#: Names of the constants and DSDs the PE emitter numbers (c3, fin4, fout5, opt6, fifo7, A_d1, A_r2, ...).
GENERATED_PATTERN = re.compile(r"^(c|fin|fout|opt|fifo)\d+$|_(d|r|n)\d+$|^_v\d+$|^route\d+_(rx|tx)$")


def check_name(name: str, where: str, what: str) -> None:
    """Raise ``InputError`` if ``name`` cannot appear in emitted CSL."""
    if name in KEYWORDS:
        raise InputError(f"{where}: {what} {name!r} is a CSL keyword; rename it")
    if name in PREDECLARED:
        raise InputError(f"{where}: {what} {name!r} is a predeclared CSL name; rename it")
    if name in GENERATED or name.startswith("wl_") or GENERATED_PATTERN.search(name):
        raise InputError(f"{where}: {what} {name!r} clashes with a name the CSL emitter generates; rename it")
