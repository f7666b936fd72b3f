"""Grid and mesh shapes as users type them: ``N`` (square) or ``HxW`` (rows x columns)."""

from __future__ import annotations

from plmr.errors import InputError


def parse_grid(text: str | None, what: str) -> tuple[int, int] | None:
    """``"420"`` → (420, 420); ``"360x480"`` → (360, 480); None stays None. ``what`` names the flag."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise InputError(f"--{what} {text!r}: expected N or HxW with positive integers, e.g. 420 or 360x480")
    return values[0], values[1]
