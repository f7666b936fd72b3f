"""A checker finding: where, how bad (E error, W warning), which rule, what is wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    col: int
    severity: str  # 'E' | 'W'
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity} {self.rule}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def at(path: str, node, severity: str, rule: str, message: str) -> Finding:
    """A finding located at ``node`` (any syntax-tree node; line/col 0 when unknown)."""
    return Finding(path, getattr(node, "line", 0) or 0, getattr(node, "col", 0) or 0, severity, rule, message)
