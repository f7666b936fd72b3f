"""A spinner with the elapsed time on stderr for the CLI's long steps (building and simulating a kernel,
compiling a bundle, checking CSL, writing a report): nothing is drawn when stderr is not a terminal.

While numba compiles the simulator's code (the first simulation after an install or an upgrade: minutes,
then it loads from numba's cache), the spinner says so instead of the step's name."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

#: What the user waits for while numba compiles instead of loading from its cache.
COMPILING = "compiling the simulator's code (once after an install or upgrade: a few minutes, then cached)"


@contextmanager
def compile_notices(show: Callable[[str], None], restore: Callable[[], None]) -> Iterator[None]:
    """``show(COMPILING)`` while numba compiles (`plmr.cached_jit.compile_notices`), ``restore()`` after."""
    from plmr.cached_jit import compile_notices as notices

    with notices(lambda name: show(COMPILING), lambda name: restore()):
        yield


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
        shown = [what]

        def step(text: str) -> None:
            shown[0] = f"{what}: {text}"
            progress.update(task, description=shown[0])

        with compile_notices(lambda text: progress.update(task, description=f"{what}: {text}"),
                             lambda: progress.update(task, description=shown[0])):
            yield step
