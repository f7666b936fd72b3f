"""PLMR: the wafer-scale device model (Parallelism, non-uniform Latency, constrained Memory,
constrained Routing) as hardware specs and pure cycle-cost formulas. No internal dependencies."""

from plmr.errors import InputError
from plmr.hardware import BUILTIN_SPECS, DTYPE_BYTES, DTYPES, WSE2, WSE3, HardwareSpec, get_spec, load_spec_file

__all__ = [
    "BUILTIN_SPECS", "DTYPE_BYTES", "DTYPES", "HardwareSpec", "InputError", "WSE2", "WSE3",
    "get_spec", "load_spec_file",
]
