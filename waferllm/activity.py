"""A spinner with the elapsed time on stderr for the CLI's long steps (building and simulating a kernel,
compiling a bundle, checking CSL, writing a report): nothing is drawn when stderr is not a terminal."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def activity(what: str):
    """A spinner named ``what`` while the block runs; nothing is left on the screen afterwards. Yields
    ``step(text)`` to name the current stage."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda text: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(what, total=None)
        yield lambda text: progress.update(task, description=f"{what}: {text}")
