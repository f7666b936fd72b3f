"""PLMR: the wafer-scale device model (Parallelism, non-uniform Latency, constrained Memory,
constrained Routing) as hardware specs and pure cycle-cost formulas. No internal dependencies."""

from plmr.errors import InputError
from plmr.hardware import BUILTIN_SPECS, DTYPE_BYTES, DTYPES, WSE2, WSE3, HardwareSpec, get_spec, load_spec_file

__all__ = [
    "BUILTIN_SPECS", "DTYPE_BYTES", "DTYPES", "HardwareSpec", "InputError", "WSE2", "WSE3",
    "get_spec", "load_spec_file",
]

from plmr.breakdown import CostBreakdown, in_sequence  # noqa: E402
from plmr.collectives import (  # noqa: E402
    broadcast, chain_reduce, ktree_allreduce, line_tree_allreduce, message, pipeline_allreduce, ring_allreduce, ring_shift,
)
from plmr.gemm import cannon, gemmt, local_gemm_cycles, meshgemm, summa  # noqa: E402
from plmr.gemv import gemv_pipeline, gemv_ring, local_gemv_cycles, meshgemv  # noqa: E402
from plmr.interleave import interleave, ring_order, ring_position  # noqa: E402
from plmr.ktree import KTree, build_ktree  # noqa: E402
from plmr.ops import elementwise, rmsnorm, rope, scalar_function, silu_mul, softmax  # noqa: E402

__all__ += [
    "CostBreakdown", "in_sequence", "broadcast", "chain_reduce", "ktree_allreduce", "line_tree_allreduce", "message",
    "pipeline_allreduce", "ring_allreduce", "ring_shift", "cannon", "gemmt", "local_gemm_cycles",
    "meshgemm", "summa", "gemv_pipeline", "gemv_ring", "local_gemv_cycles", "meshgemv", "interleave",
    "ring_order", "ring_position", "KTree", "build_ktree", "elementwise", "rmsnorm",
    "rope", "scalar_function", "silu_mul", "softmax",
]
