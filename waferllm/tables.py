"""Terminal tables that stay readable in a narrow terminal (80 columns and up).

Each column has a *priority*: 0 is never dropped, larger numbers are dropped first. ``print_table``
measures the table's natural width; when it is wider than the terminal, it hides the
lowest-priority columns until the table fits (never below the priority-0 columns), names the
hidden columns under the table, and lets the remaining cells wrap (never truncate with "…").
``wide=True`` (the commands' ``--wide``) keeps every column and prints at the table's natural
width, whatever the terminal. The ``plan`` command renders its own tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

#: cells of a rich table: one space of padding on each side, and one border per column plus one
CELL_PADDING = 2
BORDER = 1


@dataclass(frozen=True)
class Column:
    header: str
    priority: int = 0  # 0: always shown; higher numbers are hidden first when space runs out
    justify: str = "left"
    no_wrap: bool = False
    wrap_to: int | None = None  # long text may wrap down to this width instead of being hidden


def _cell_len(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in str(text).splitlines()), default=0)


def natural_width(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> int:
    """Width of the table with no cell wrapped."""
    total = BORDER
    for i, col in enumerate(columns):
        w = max([_cell_len(col.header)] + [_cell_len(r[i]) for r in rows])
        total += w + CELL_PADDING + BORDER
    return total


def _needed_width(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> int:
    """Natural width, counting wrappable columns at their ``wrap_to`` width at most."""
    total = BORDER
    for i, col in enumerate(columns):
        w = max([_cell_len(col.header)] + [_cell_len(r[i]) for r in rows])
        if col.wrap_to:
            w = min(w, max(col.wrap_to, _cell_len(col.header)))
        total += w + CELL_PADDING + BORDER
    return total


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[Any]], width: int) -> list[int]:
    """Indices of the columns to show at ``width``: hide the highest priorities first (ties: the
    rightmost first) until the natural width fits; priority-0 columns always stay."""
    keep = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.priority > 0),
                       key=lambda i: (-columns[i].priority, -i))
    for i in droppable:
        if _needed_width([columns[j] for j in keep], [[r[j] for j in keep] for r in rows]) <= width:
            break
        keep.remove(i)
    return keep


def make_table(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[Any]],
               width: int, wide: bool = False):
    """A rich ``Table`` fitted to ``width`` (see the module docstring), the width to print it at
    and a note naming the hidden columns (or None). Returns ``(table, print_width, note)``."""
    from rich.table import Table

    rows = [[("" if v is None else str(v)) for v in r] for r in rows]
    keep = list(range(len(columns))) if wide else fit_columns(columns, rows, width)
    hidden = [columns[i].header for i in range(len(columns)) if i not in keep]
    note = f"not shown at {width} columns: {', '.join(hidden)} (--wide shows all)" if hidden else None
    table = Table(title=title)
    for i in keep:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, no_wrap=c.no_wrap, overflow="fold")
    for r in rows:
        table.add_row(*[r[i] for i in keep])
    shown = natural_width([columns[i] for i in keep], [[r[i] for i in keep] for r in rows])
    return table, (max(width, shown) if wide else width), note


def print_table(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[Any]],
                wide: bool = False, console=None) -> None:
    """Print a fitted table on stdout (``console``: a rich Console; default the terminal's)."""
    from rich.console import Console

    console = console or Console()
    table, at, note = make_table(title, columns, rows, console.width, wide)
    if at != console.width:
        console = Console(width=at)
    console.print(table)
    if note:
        console.print(note, style="dim", highlight=False)
