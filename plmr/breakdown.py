"""The result type of every cost formula: cycles split into compute and communication, plus the
PLMR resource metrics (bytes and colours per PE) that decide whether a kernel fits at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class CostBreakdown:
    """Predicted cost of one operation on the mesh.

    ``total_cycles`` is the critical path; it can be less than compute + communication when the two
    overlap (double-buffered steps). ``parts`` names the terms for reports (e.g. "reduce", "bcast").
    """

    op: str
    compute_cycles: float
    comm_cycles: float
    total_cycles: float
    bytes_per_pe: int = 0
    colors_per_pe: int = 0
    parts: Mapping[str, float] = field(default_factory=dict, hash=False, compare=False)

    def scaled(self, times: int) -> "CostBreakdown":
        """The same operation repeated ``times`` times in sequence (resources unchanged)."""
        return CostBreakdown(
            op=self.op,
            compute_cycles=self.compute_cycles * times,
            comm_cycles=self.comm_cycles * times,
            total_cycles=self.total_cycles * times,
            bytes_per_pe=self.bytes_per_pe,
            colors_per_pe=self.colors_per_pe,
            parts={k: v * times for k, v in self.parts.items()},
        )

    def to_dict(self) -> dict:
        return {
            "op": self.op,
            "compute_cycles": self.compute_cycles,
            "comm_cycles": self.comm_cycles,
            "total_cycles": self.total_cycles,
            "bytes_per_pe": self.bytes_per_pe,
            "colors_per_pe": self.colors_per_pe,
            "parts": dict(self.parts),
        }


ZERO = CostBreakdown(op="none", compute_cycles=0.0, comm_cycles=0.0, total_cycles=0.0)


def in_sequence(op: str, steps: list[CostBreakdown] | tuple[CostBreakdown, ...]) -> CostBreakdown:
    """Operations run one after another: cycles add; memory and colours are the peak of any step
    (buffers are reused between ops of one layer; colours are re-routed only at compile time, so the
    colour count is the maximum any single op needs)."""
    parts: dict[str, float] = {}
    for s in steps:
        parts[s.op] = parts.get(s.op, 0.0) + s.total_cycles
    return CostBreakdown(
        op=op,
        compute_cycles=sum(s.compute_cycles for s in steps),
        comm_cycles=sum(s.comm_cycles for s in steps),
        total_cycles=sum(s.total_cycles for s in steps),
        bytes_per_pe=max((s.bytes_per_pe for s in steps), default=0),
        colors_per_pe=max((s.colors_per_pe for s in steps), default=0),
        parts=parts,
    )
