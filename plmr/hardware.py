"""The hardware model: one immutable ``HardwareSpec`` per target, read by the cost model, the simulator,
the kernels and (later) the CSL emitter alike.

Every number has its source beside it (``hardware-and-csl.md`` section, or "calibrated" with the fit
recorded in docs/CALIBRATION.md). Custom meshes come from TOML or JSON files validated field by field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from plmr.errors import InputError

#: Element types the cost model and the simulator understand. ``fp16_fp32`` is the mixed form
#: (fp16 operands, fp32 accumulator: ``@fmachs``, ``@faddhs``).
DTYPES = ("fp16", "fp32", "fp16_fp32")
DTYPE_BYTES = {"fp16": 2, "fp32": 4, "fp16_fp32": 2}

#: DSD-op families with a SIMD width (hardware-and-csl.md §1.2).
OP_FAMILIES = ("fmac", "add", "mul", "mov", "scale", "max", "convert")


def _freeze_widths(widths: Mapping[str, Mapping[str, int]]) -> Mapping[str, Mapping[str, int]]:
    return MappingProxyType({op: MappingProxyType(dict(per)) for op, per in widths.items()})


@dataclass(frozen=True)
class HardwareSpec:
    """A wafer-scale mesh target: fabric geometry, per-PE resources and the PLMR cost parameters.

    Symbols follow waferllm-method.md §2.3: α = ``hop_cycles``, ρ = ``ramp_cycles``,
    β = ``relay_cycles``, c_op = ``op_issue_cycles``, c_task = ``task_cycles``,
    c_fn = ``scalar_fn_cycles``, and a per-collective constant ``collective_cycles``.
    """

    name: str
    description: str
    # --- geometry -------------------------------------------------------------------------------
    mesh_width: int  # usable kernel columns (x), memcpy halo excluded
    mesh_height: int  # usable kernel rows (y)
    fabric_width: int  # full fabric as cslc sees it (--fabric-dims)
    fabric_height: int
    # --- clock, memory ----------------------------------------------------------------------------
    clock_hz: float
    sram_bytes: int  # per PE
    sram_reserve_bytes: int  # code, stack and runtime (memcpy) per PE
    sram_banks: int
    # --- routing ----------------------------------------------------------------------------------
    num_colors: int  # colour IDs 0 .. num_colors-1
    reserved_colors: tuple[int, ...]  # taken by memcpy / runtime: never emitted
    wavelet_bits: int
    router_buffer_wavelets: int  # per (port, colour) virtual-channel buffer
    input_queue_words: tuple[int, ...]  # per input queue, 16-bit words
    output_queue_words: tuple[int, ...]  # per output queue, 16-bit words
    # --- PLMR cycle parameters ------------------------------------------------------------------
    hop_cycles: float  # α: one router hop (link + router)
    ramp_cycles: float  # ρ: injection + ejection of one message
    relay_cycles: float  # β: one software routing stage (receive, add, re-send)
    op_issue_cycles: float  # c_op: fixed overhead of one DSD op
    task_cycles: float  # c_task: one task activation / step synchronisation
    scalar_fn_cycles: float  # c_fn: per element of exp, rsqrt, sigmoid, divide
    collective_cycles: float  # fixed set-up cost, paid once per collective
    simd_widths: Mapping[str, Mapping[str, int]] = field(hash=False, compare=True)
    # --- power --------------------------------------------------------------------------------------
    power_watts: float = 0.0
    # --- CSL target facts, read by the static checker (and the emitter); defaults are WSE-2's -------
    csl_arch: str = "wse2"  # cslc --arch; @is_arch(...) is true for this name
    local_task_ids: tuple[int, ...] = (0, 30)  # §1.4: activatable local task IDs, inclusive range
    control_task_ids: tuple[int, ...] = (0, 63)  # §1.4: control task IDs, inclusive range
    reserved_task_ids: tuple[int, ...] = (24, 27, 28, 29, 30)  # §1.5: memcpy (24, 27, 28, 30), teardown 29
    avoid_task_ids: tuple[int, ...] = tuple(range(21, 32))  # §1.5/§8: "avoid task IDs 21-31" (W)
    reserved_control_task_ids: tuple[int, ...] = (33, 34, 35, 36, 37)  # §1.5: memcpy's control tasks
    data_tasks_from_queues: bool = False  # §1.4: data task IDs from colours (WSE-2) or input queues (WSE-3)
    reserved_input_queues: tuple[int, ...] = (0,)  # §1.5: memcpy's
    reserved_output_queues: tuple[int, ...] = (0,)  # §1.5
    initializable_queues: tuple[int, ...] = ()  # §1.5: queues @initialize_queue may set; () = any
    switch_colors: tuple[int, ...] = ()  # §1.1/§8: colours that support switches; () = all
    switch_rx_and_tx: bool = False  # §2.5: a switch position may set both rx and tx (WSE-3 only)
    fabout_has_color: bool = True  # §6.10/§9: fabout_dsd carries .fabric_color (WSE-2 only)
    op_priority_option: bool = True  # §6.5/§8: `.priority` on DSD ops (WSE-2); WSE-3 puts it on the DSD
    op_ut_id_option: bool = False  # §6.5/§8: `.ut_id` on DSD ops (WSE-3 only)
    max_fabin_operands: int = 0  # §6.10/§8: fabin operands per op; 0 = no documented limit (WSE-2)
    # --- several systems (multi-system.md): the only path between wafers is the system I/O --------
    # System I/O bandwidth per system, Gb/s. Source: CS-2 and CS-3 datasheets, "System I/O: 1.2 Tb/s
    # (12 x 100 GbE)" [vendor, multi-system.md "Facts"]; the same for both built-ins.
    system_io_gbps: float = 1200.0
    # Latency of one hand-off between two systems, microseconds. ASSUMPTION: unpublished; the
    # default 5 us is multi-system.md's suggested placeholder. Set it in a hardware file.
    system_hop_latency_us: float = 5.0
    # --- CE execution and code size (the simulator's PE model; docs/DESIGN.md) ----------------------
    microthreads: int = 8  # §1.1: microthreads per PE (one per queue on WSE-2, ut_id 0-7 on WSE-3)
    memory_read_ports: int = 2  # §1.1: reads per cycle (bank rule); 0: unlimited (no datapath contention)
    memory_write_ports: int = 1  # §1.1: writes per cycle
    ramp_wavelets_per_cycle: int = 1  # §2.2: the RAMP is one link: one wavelet a cycle each way; 0: unlimited
    scalar_op_cycles: float = 0.0  # scalar/control statement; 0: folded into c_op (docs/DESIGN.md)
    code_bytes_per_op: int = 32  # estimated SRAM bytes of one DSD op with its descriptor set-up [derived]
    code_bytes_per_statement: int = 8  # one scalar or control statement [derived]
    code_bytes_per_task: int = 24  # task-table entry, prologue and epilogue [derived]

    # derived facts -----------------------------------------------------------------------------
    @property
    def routable_colors(self) -> tuple[int, ...]:
        """Colour IDs a kernel may route on (reserved ones removed)."""
        return tuple(c for c in range(self.num_colors) if c not in self.reserved_colors)

    @property
    def usable_local_task_ids(self) -> tuple[int, ...]:
        """Local task IDs a program may bind: the target's range less the reserved and the ones to
        avoid (hardware-and-csl.md §1.4-§1.5)."""
        lo, hi = self.local_task_ids
        skip = set(self.reserved_task_ids) | set(self.avoid_task_ids)
        return tuple(i for i in range(lo, hi + 1) if i not in skip)

    @property
    def usable_input_queues(self) -> tuple[int, ...]:
        """Input queue IDs a program may bind to colours (§1.3, §1.5)."""
        return self._usable_queues(len(self.input_queue_words), self.reserved_input_queues)

    @property
    def usable_output_queues(self) -> tuple[int, ...]:
        return self._usable_queues(len(self.output_queue_words), self.reserved_output_queues)

    def _usable_queues(self, n: int, reserved) -> tuple[int, ...]:
        ok = set(self.initializable_queues) if self.initializable_queues else set(range(n))
        return tuple(q for q in range(n) if q not in reserved and q in ok)

    @property
    def data_task_binding(self) -> str:
        """A data task's ID is its colour (``"colour"``, WSE-2) or its input queue (``"queue"``, WSE-3)."""
        return "queue" if self.data_tasks_from_queues else "colour"

    @property
    def usable_sram_bytes(self) -> int:
        """Bytes per PE left for a program's data after the reserve."""
        return self.sram_bytes - self.sram_reserve_bytes

    @property
    def num_pes(self) -> int:
        return self.mesh_width * self.mesh_height

    @property
    def wavelet_bytes(self) -> int:
        return self.wavelet_bits // 8

    def elements_per_wavelet(self, dtype: str, packed: bool = False) -> int:
        """e_w: fp32 travels one per wavelet; fp16 one (as the authors send it) or two if packed."""
        _check_dtype(dtype)
        if packed:
            return max(1, self.wavelet_bytes // DTYPE_BYTES[dtype])
        return 1

    def simd_width(self, op: str, dtype: str) -> int:
        """F(op, dtype): elements per cycle of a vector DSD op (MACs per cycle for ``fmac``)."""
        _check_dtype(dtype)
        try:
            return self.simd_widths[op][dtype]
        except KeyError:
            raise InputError(
                f"hardware {self.name!r} has no SIMD width for op {op!r} and dtype {dtype!r}; "
                f"known ops: {', '.join(sorted(self.simd_widths))}"
            ) from None

    def input_queue_wavelets(self, queue: int) -> int:
        """Depth of an input queue in 32-bit wavelets (a wavelet takes two 16-bit words; §1.3)."""
        return max(1, self.input_queue_words[queue] * 16 // self.wavelet_bits)

    def seconds(self, cycles: float) -> float:
        return cycles / self.clock_hz

    def with_params(self, **changes: Any) -> "HardwareSpec":
        """A copy with some fields changed, validated (used by calibration and custom specs)."""
        spec = dataclasses.replace(self, **changes)
        validate_spec(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["simd_widths"] = {op: dict(per) for op, per in self.simd_widths.items()}
        for name, value in d.items():
            if isinstance(value, tuple):
                d[name] = list(value)
        return d


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")


# ------------------------------------------------------------------------------------------------
# Built-in targets
# ------------------------------------------------------------------------------------------------

# Calibrated overheads (op issue, relay stage): fitted once on the
# LLaMA3-8B WSE-2 figures by `python -m waferllm.calibration --fit`; see docs/CALIBRATION.md.
WSE2_CALIBRATED = {
    "op_issue_cycles": 3.0,
    "relay_cycles": 14.0,
}

# One A100 SXM4 is 400 W; the paper's energy ratios reproduce with WSE-2 = 37.5 x A100
# (calibration-targets.md §1).
_A100_WATTS = 400.0

WSE2 = HardwareSpec(
    name="wse2",
    description="Cerebras WSE-2 (CS-2), 7 nm, 850k cores; the WaferLLM paper's target",
    mesh_width=750,  # §1.1: largest kernel rectangle with memcpy, 750 x 994
    mesh_height=994,
    fabric_width=757,  # §1.1: --fabric-dims 757 x 996 ("most CS-2s")
    fabric_height=996,
    clock_hz=1.1e9,  # calibration-targets §1: the paper converts cycles at 1.1 GHz
    sram_bytes=48 * 1024,  # §1.1: 48 KB = 8 banks x 6 KB
    sram_reserve_bytes=4 * 1024,  # §3.1: ~4 KB stack; memcpy runtime size unpublished
    sram_banks=8,  # §1.1
    num_colors=24,  # §1.1: routable colour IDs 0-23
    reserved_colors=(21, 22, 23),  # §1.5: memcpy
    wavelet_bits=32,  # §2.1
    router_buffer_wavelets=2,  # §2.2: undocumented, default 2 (parameter)
    input_queue_words=(6, 6, 4, 4, 2, 2, 2, 2),  # §1.3 WSE-2 input queues 0-7
    output_queue_words=(2, 2, 6, 6, 2, 2),  # §1.3 WSE-2 output queues 0-5
    hop_cycles=2.0,  # §2.3: simprint 1156/1158/1160 = 2 cycles per hop; Luczynski T_R ~ 2
    ramp_cycles=2.0,  # §2.3: injection + delivery to the CE, ~1 cycle each way (default)
    relay_cycles=WSE2_CALIBRATED["relay_cycles"],  # calibrated (docs/CALIBRATION.md)
    op_issue_cycles=WSE2_CALIBRATED["op_issue_cycles"],  # calibrated
    task_cycles=10.0,  # §3.5/§12 #5: task switch, unpublished; default
    scalar_fn_cycles=10.0,  # method §2.3: exp/rsqrt/divide are not SIMD; default
    collective_cycles=0.0,  # not fitted: the simulated programs pay no per-collective set-up
    simd_widths=_freeze_widths(
        {  # §1.2, WSE-2 column; fmacs/fmuls = 1 [derived]
            "fmac": {"fp16": 4, "fp32": 1, "fp16_fp32": 2},
            "add": {"fp16": 4, "fp32": 2, "fp16_fp32": 2},
            "mul": {"fp16": 4, "fp32": 1, "fp16_fp32": 1},
            "mov": {"fp16": 4, "fp32": 2, "fp16_fp32": 2},
            "scale": {"fp16": 4, "fp32": 2, "fp16_fp32": 2},
            "max": {"fp16": 1, "fp32": 1, "fp16_fp32": 1},
            "convert": {"fp16": 1, "fp32": 1, "fp16_fp32": 1},
        }
    ),
    power_watts=37.5 * _A100_WATTS,  # calibration-targets §1: 37.5 x one A100
    # CSL target facts: the field defaults are WSE-2's (§1.4, §1.5, §2.5, §6.10)
)

WSE3 = HardwareSpec(
    name="wse3",
    description="Cerebras WSE-3 (CS-3), 5 nm, 900k cores; same NoC as WSE-2, wider SIMD",
    mesh_width=755,  # §1.1: 755 x 1170 kernel rectangle [derived]
    mesh_height=1170,
    fabric_width=762,  # §1.1: 762 x 1172 on real systems
    fabric_height=1172,
    clock_hz=1.1e9,  # not published; the paper's 1.1 GHz kept for comparability
    sram_bytes=48 * 1024,  # §1.1
    sram_reserve_bytes=4 * 1024,  # as WSE-2
    sram_banks=8,  # §1.1 [unverified]
    num_colors=24,  # §1.1
    reserved_colors=(21, 22, 23),  # §1.5
    wavelet_bits=32,
    router_buffer_wavelets=2,
    input_queue_words=(8, 8, 4, 4, 4, 4, 4, 4),  # §1.3 WSE-3 input queues
    output_queue_words=(8, 8, 8, 8, 8, 8, 8, 8),  # §1.3 WSE-3 output queues (default)
    hop_cycles=WSE2.hop_cycles,  # "retains the same NoC configuration" (§1.1)
    ramp_cycles=WSE2.ramp_cycles,
    relay_cycles=WSE2.relay_cycles,  # no WSE-3 figures to fit: WSE-2 values carried over
    op_issue_cycles=WSE2.op_issue_cycles,
    task_cycles=WSE2.task_cycles,
    scalar_fn_cycles=WSE2.scalar_fn_cycles,
    collective_cycles=WSE2.collective_cycles,
    simd_widths=_freeze_widths(
        {  # §1.2, WSE-3 column
            "fmac": {"fp16": 8, "fp32": 1, "fp16_fp32": 4},
            "add": {"fp16": 8, "fp32": 4, "fp16_fp32": 4},
            "mul": {"fp16": 8, "fp32": 1, "fp16_fp32": 1},
            "mov": {"fp16": 8, "fp32": 4, "fp16_fp32": 4},
            "scale": {"fp16": 8, "fp32": 4, "fp16_fp32": 4},
            "max": {"fp16": 8, "fp32": 4, "fp16_fp32": 4},
            "convert": {"fp16": 4, "fp32": 4, "fp16_fp32": 4},
        }
    ),
    power_watts=37.5 * _A100_WATTS,  # not published; WSE-2's nominal power as a placeholder
    csl_arch="wse3",
    local_task_ids=(8, 30),  # §1.4: WSE-3 local task IDs 8-30
    reserved_task_ids=(21, 24, 27, 28, 29, 30),  # §1.5: memcpy aliases 21 on WSE-3
    avoid_task_ids=(21, 24, 27, 28, 29, 30),  # §8: avoid 21, 24, 27-30 on WSE-3
    data_tasks_from_queues=True,  # §1.4
    reserved_input_queues=(0, 1),  # §1.5: input queue 1 is memcpy's too on WSE-3
    initializable_queues=(2, 3, 4, 5, 6, 7),  # §1.5: @initialize_queue on 0 or 1 fails
    switch_colors=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 20, 21),  # §1.1
    switch_rx_and_tx=True,  # §2.5
    fabout_has_color=False,  # §9
    op_priority_option=False,  # §6.5
    op_ut_id_option=True,  # §6.5
    max_fabin_operands=1,  # §6.10
)

BUILTIN_SPECS: Mapping[str, HardwareSpec] = MappingProxyType({"wse2": WSE2, "wse3": WSE3})


# ------------------------------------------------------------------------------------------------
# Validation and loading
# ------------------------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(HardwareSpec)}
_INT_FIELDS = {
    "mesh_width", "mesh_height", "fabric_width", "fabric_height", "sram_bytes",
    "sram_reserve_bytes", "sram_banks", "num_colors", "wavelet_bits", "router_buffer_wavelets",
    "max_fabin_operands", "microthreads", "code_bytes_per_op", "code_bytes_per_statement",
    "code_bytes_per_task", "memory_read_ports", "memory_write_ports", "ramp_wavelets_per_cycle",
}
_INT_TUPLE_FIELDS = {
    "reserved_colors", "input_queue_words", "output_queue_words", "local_task_ids", "control_task_ids",
    "reserved_task_ids", "avoid_task_ids", "reserved_control_task_ids", "reserved_input_queues",
    "reserved_output_queues", "initializable_queues", "switch_colors",
}
_BOOL_FIELDS = {"data_tasks_from_queues", "switch_rx_and_tx", "fabout_has_color", "op_priority_option",
                "op_ut_id_option"}
_DEFAULTED_FIELDS = {f.name for f in dataclasses.fields(HardwareSpec)
                     if f.default is not dataclasses.MISSING}
_FLOAT_FIELDS = {
    "clock_hz", "hop_cycles", "ramp_cycles", "relay_cycles", "op_issue_cycles", "task_cycles",
    "scalar_fn_cycles", "collective_cycles", "power_watts", "system_io_gbps", "system_hop_latency_us",
    "scalar_op_cycles",
}


def validate_spec(spec: HardwareSpec) -> None:
    """Raise ``InputError`` naming the first field that is impossible."""
    where = f"hardware {spec.name!r}"
    for name in ("mesh_width", "mesh_height", "fabric_width", "fabric_height", "sram_bytes",
                 "sram_banks", "num_colors", "wavelet_bits", "router_buffer_wavelets"):
        if getattr(spec, name) <= 0:
            raise InputError(f"{where}: {name} must be positive, got {getattr(spec, name)}")
    for name in _FLOAT_FIELDS - {"clock_hz"}:
        value = getattr(spec, name)
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{where}: {name} must be a finite number >= 0, got {value}")
    if spec.system_io_gbps <= 0:
        raise InputError(f"{where}: system_io_gbps must be positive, got {spec.system_io_gbps}")
    if not math.isfinite(spec.clock_hz) or spec.clock_hz <= 0:
        raise InputError(f"{where}: clock_hz must be positive, got {spec.clock_hz}")
    if spec.sram_reserve_bytes < 0 or spec.sram_reserve_bytes >= spec.sram_bytes:
        raise InputError(
            f"{where}: sram_reserve_bytes must be in [0, sram_bytes={spec.sram_bytes}), "
            f"got {spec.sram_reserve_bytes}"
        )
    if spec.mesh_width > spec.fabric_width or spec.mesh_height > spec.fabric_height:
        raise InputError(
            f"{where}: mesh {spec.mesh_width}x{spec.mesh_height} is larger than the fabric "
            f"{spec.fabric_width}x{spec.fabric_height}"
        )
    bad = [c for c in spec.reserved_colors if not 0 <= c < spec.num_colors]
    if bad:
        raise InputError(f"{where}: reserved colour {bad[0]} outside 0..{spec.num_colors - 1}")
    if not spec.routable_colors:
        raise InputError(f"{where}: no routable colours left (num_colors={spec.num_colors}, "
                         f"reserved={list(spec.reserved_colors)})")
    if spec.wavelet_bits % 16:
        raise InputError(f"{where}: wavelet_bits must be a multiple of 16, got {spec.wavelet_bits}")
    if spec.ramp_wavelets_per_cycle not in (0, 1):
        raise InputError(f"{where}: ramp_wavelets_per_cycle must be 1 (one wavelet a cycle) or 0 (unlimited), "
                         f"got {spec.ramp_wavelets_per_cycle}")
    if spec.memory_read_ports < 0 or spec.memory_write_ports < 0:
        raise InputError(f"{where}: memory ports must be >= 0 (0: unlimited)")
    if spec.microthreads < 1:
        raise InputError(f"{where}: microthreads must be positive, got {spec.microthreads}")
    for name in ("input_queue_words", "output_queue_words"):
        depths = getattr(spec, name)
        if not depths or any(d <= 0 for d in depths):
            raise InputError(f"{where}: {name} must be a non-empty list of positive depths")
    for name in ("local_task_ids", "control_task_ids"):
        rng = getattr(spec, name)
        if len(rng) != 2 or not 0 <= rng[0] <= rng[1]:
            raise InputError(f"{where}: {name} must be an inclusive range [low, high], got {list(rng)}")
    for op in OP_FAMILIES:
        if op not in spec.simd_widths:
            raise InputError(f"{where}: simd_widths lacks op {op!r}; required: {', '.join(OP_FAMILIES)}")
    for op, per in spec.simd_widths.items():
        for dtype, width in per.items():
            if dtype not in DTYPES:
                raise InputError(f"{where}: simd_widths.{op} has unknown dtype {dtype!r}; "
                                 f"allowed: {', '.join(DTYPES)}")
            if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
                raise InputError(f"{where}: simd_widths.{op}.{dtype} must be a positive integer, "
                                 f"got {width!r}")
        missing = [d for d in DTYPES if d not in per]
        if missing:
            raise InputError(f"{where}: simd_widths.{op} lacks dtype {missing[0]!r}")


#: Version of a hardware spec file's keys (`waferllm hardware show --json` writes it; a file may omit it).
HARDWARE_SCHEMA = 1


def spec_from_mapping(data: Mapping[str, Any], source: str = "<mapping>") -> HardwareSpec:
    """Build a spec from a TOML/JSON mapping. ``base = "wse2"`` inherits every field not given;
    ``schema``, when given, must be the version this waferllm reads."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: a hardware spec must be a table/object of fields")
    data = dict(data)
    schema = data.pop("schema", HARDWARE_SCHEMA)
    if schema != HARDWARE_SCHEMA:
        raise InputError(f"{source}: hardware spec schema {schema!r}; this waferllm reads schema {HARDWARE_SCHEMA}")
    base_name = data.pop("base", None)
    if base_name is not None:
        if base_name not in BUILTIN_SPECS:
            raise InputError(f"{source}: unknown base {base_name!r}; built-ins: {', '.join(BUILTIN_SPECS)}")
        values = BUILTIN_SPECS[base_name].to_dict()
    else:
        values = {}
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InputError(f"{source}: unknown key {unknown[0]!r}; allowed keys: base, "
                         + ", ".join(sorted(_FIELDS)))
    if "simd_widths" in data and "simd_widths" in values:
        merged = {op: dict(per) for op, per in values["simd_widths"].items()}
        if not isinstance(data["simd_widths"], Mapping):
            raise InputError(f"{source}: simd_widths must be a table of op -> {{dtype = width}}")
        for op, per in data["simd_widths"].items():
            if not isinstance(per, Mapping):
                raise InputError(f"{source}: simd_widths.{op} must be a table of dtype -> width")
            merged.setdefault(op, {}).update(per)
        data["simd_widths"] = merged
    values.update(data)
    missing = sorted(set(_FIELDS) - set(values) - _DEFAULTED_FIELDS)
    if missing:
        raise InputError(f"{source}: missing key {missing[0]!r} (or give base = \"wse2\" to inherit)")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{source}: {name} must be an integer, got {value!r}")
        elif name in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{source}: {name} must be a number, got {value!r}")
            value = float(value)
        elif name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise InputError(f"{source}: {name} must be true or false, got {value!r}")
        elif name in ("name", "description", "csl_arch"):
            if not isinstance(value, str) or (name == "name" and not value):
                raise InputError(f"{source}: {name} must be a non-empty string, got {value!r}")
        elif name in _INT_TUPLE_FIELDS:
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise InputError(f"{source}: {name} must be a list of integers, got {value!r}")
            value = tuple(value)
        elif name == "simd_widths":
            if not isinstance(value, Mapping) or not all(isinstance(p, Mapping) for p in value.values()):
                raise InputError(f"{source}: simd_widths must be a table of op -> {{dtype = width}}")
            value = _freeze_widths(value)
        kwargs[name] = value
    spec = HardwareSpec(**kwargs)
    validate_spec(spec)
    return spec


def load_spec_file(path: str | Path) -> HardwareSpec:
    """Load a custom spec from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read hardware file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"hardware file {str(path)!r} is not UTF-8 text") from None
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: malformed TOML: {exc}") from None
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: malformed JSON: {exc.msg} at line {exc.lineno}") from None
    else:
        raise InputError(f"hardware file {str(path)!r}: unknown format; use .toml or .json")
    return spec_from_mapping(data, source=str(path))


def get_spec(name_or_path: str | Path) -> HardwareSpec:
    """A built-in name (``wse2``, ``wse3``) or a path to a TOML/JSON spec file."""
    key = str(name_or_path)
    if key.lower() in BUILTIN_SPECS:
        return BUILTIN_SPECS[key.lower()]
    path = Path(key)
    if path.suffix.lower() in (".toml", ".json") or path.exists():
        return load_spec_file(path)
    raise InputError(f"unknown hardware {key!r}; built-ins: {', '.join(BUILTIN_SPECS)}, "
                     "or a path to a .toml/.json spec")
