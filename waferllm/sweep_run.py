"""Running a sweep's points: in local worker processes (the default) or on a dask.distributed
cluster, writing each finished point to the results table as it arrives, with a progress bar.

* **Local**: a process pool (``fork`` on Linux, ``spawn`` elsewhere). At most 2 × workers points
  are in flight, so a crash loses few. Workers die with the sweep (``PR_SET_PDEATHSIG``): a
  ``kill -9`` of the sweep leaves no orphan still computing. If a worker dies (the OOM killer, a
  segfault), the points it may have held are re-run one at a time in a fresh pool; one that kills
  its worker again is recorded as an error.
* **Dask**: ``scheduler="local"`` starts a ``LocalCluster`` (``workers`` processes, one thread
  each); any other value is a scheduler address (``tcp://host:8786``) whose workers have waferllm
  installed. Dask retries a task whose worker died and then reports it, recorded as an error.

Either way every point is evaluated by ``waferllm.sweep.evaluate_point``, so the results are the
same wherever they ran.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from plmr.errors import InputError
from waferllm.results import ResultsTable
from waferllm.sweep import evaluate_point, point_key

WORKER_DIED = "worker process died while evaluating this point (killed, or out of memory)"
#: how long to try reaching a remote Dask scheduler
CONNECT_TIMEOUT = "10s"


@dataclass
class SweepSummary:
    total: int  # points in the sweep
    skipped: int  # already in the table
    ok: int
    errors: int
    seconds: float

    @property
    def evaluated(self) -> int:
        return self.ok + self.errors


def _die_with_parent() -> None:
    """Worker initializer: receive SIGKILL when the sweep process dies (Linux only), and leave Ctrl-C to
    the sweep process."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except OSError:
            pass
    _leave_sigint_to_the_sweep()


def _leave_sigint_to_the_sweep() -> bool:
    """In each worker process (the local pool's and a LocalCluster's): Ctrl-C reaches the whole process
    group, and a worker would die printing a KeyboardInterrupt traceback; the sweep process handles it
    (and closes the pool or cluster). True when the handler was set (it needs the main thread)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        return False
    return True


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C while a LocalCluster starts: its worker processes (spawned, so fresh interpreters)
    inherit an ignored SIGINT, and a worker interrupted while it imports or starts its event loop
    prints a traceback. A Ctrl-C in that second or two is lost; the next one stops the sweep. Also
    around the cluster's shutdown, which a repeated Ctrl-C would break with a traceback."""
    import signal

    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def dask_setup(worker) -> None:
    """Dask's preload hook (``LocalCluster(preload=[this module])``), run as each worker starts."""
    _leave_sigint_to_the_sweep()


def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent)


def _local(points: list[dict], workers: int) -> Iterator[tuple[dict, dict | None]]:
    """Evaluate points in a local process pool; yields ``(row, arrays)`` as they finish."""
    if workers == 1:
        for p in points:
            yield evaluate_point(p)
        return
    queue = list(reversed(points))
    suspects: list[dict] = []
    pool = _pool(workers)
    inflight: dict[Any, dict] = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < 2 * workers:
                p = queue.pop()
                inflight[pool.submit(evaluate_point, p)] = p
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                p = inflight.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    suspects.append(p)
                    broken = True
            if broken:
                suspects += list(inflight.values())
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for p in suspects:  # one at a time, so a point that kills its worker is found
                    solo = _pool(1)
                    try:
                        yield solo.submit(evaluate_point, p).result()
                    except BrokenProcessPool:
                        yield {**p, "key": point_key(p), "status": "error", "error": WORKER_DIED}, None
                    finally:
                        solo.shutdown(wait=False, cancel_futures=True)
                suspects.clear()
                pool = _pool(workers)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _dask(points: list[dict], workers: int, scheduler: str) -> Iterator[tuple[dict, dict | None]]:
    """Evaluate points on a dask.distributed cluster; yields ``(row, arrays)`` as they finish."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'waferllm[dist]'") from None
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = None
    try:
        if scheduler == "local":
            with _sigint_ignored():  # the worker processes start with Ctrl-C ignored (inherited)
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       preload=["waferllm.sweep_run"])  # dask_setup: a restarted worker too
                client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there "
                                 f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        with client:
            window = 4 * max(workers, len(client.scheduler_info().get("workers", {})) or 1)
            queue = list(reversed(points))
            futures = {}

            def submit(p):
                f = client.submit(evaluate_point, p, pure=False, key=f"waferllm-{point_key(p)}-{time.time_ns()}")
                futures[f.key] = p
                return f

            ac = as_completed([submit(queue.pop()) for _ in range(min(window, len(queue)))])
            for fut in ac:
                p = futures.pop(fut.key)
                try:
                    yield fut.result()
                except Exception as exc:  # a worker died repeatedly (KilledWorker), or the cluster failed
                    first = (str(exc).splitlines() or [""])[0]
                    yield {**p, "key": point_key(p), "status": "error",
                           "error": f"{type(exc).__name__}: {first}".rstrip(": ")}, None
                if queue:
                    ac.add(submit(queue.pop()))
    finally:
        if cluster is not None:
            with _sigint_ignored():  # another Ctrl-C must not break the shutdown half-way
                cluster.close()


#: More worker processes than this is a typo, not a machine (and overflows the OS's semaphores).
MAX_WORKERS = 1024


def resolve_workers(workers: int | None) -> int:
    """The worker count to use (default: the CPU count), or an InputError outside 1..MAX_WORKERS."""
    workers = workers or os.cpu_count() or 1
    if not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers {workers}: must be between 1 and {MAX_WORKERS}")
    return workers


def run_sweep(points: list[dict[str, Any]], table: ResultsTable, workers: int | None = None,
              scheduler: str | None = None, progress: bool = True,
              on_row: Callable[[dict], None] | None = None) -> SweepSummary:
    """Evaluate every point not yet in ``table`` and append each as it finishes."""
    t0 = time.perf_counter()
    workers = resolve_workers(workers)
    todo = [p for p in points if point_key(p) not in table.done]
    if not scheduler:
        workers = max(1, min(workers, len(todo)))  # no idle processes
    skipped = len(points) - len(todo)
    ok = errors = 0
    stream = _dask(todo, workers, scheduler) if scheduler else _local(todo, workers)
    with _progress(len(points), skipped, enabled=progress) as advance:
        for row, arrays in stream:
            table.append(row, arrays)
            if row["status"] == "ok":
                ok += 1
            else:
                errors += 1
            advance(errors)
            if on_row:
                on_row(row)
    return SweepSummary(total=len(points), skipped=skipped, ok=ok, errors=errors,
                        seconds=time.perf_counter() - t0)


class _progress:
    """A rich progress bar with ETA on stderr (drawn only on a terminal)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self._p = None

    def __enter__(self) -> Callable[[int], None]:
        from rich.console import Console

        console = Console(stderr=True)
        if not self.enabled or not console.is_terminal:
            return lambda errors: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[errors]} errors"), TimeElapsedColumn(),
                           TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
        self._p.start()
        task = self._p.add_task("sweep", total=self.total, completed=self.done, errors=0)
        return lambda errors: self._p.update(task, advance=1, errors=errors)

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.stop()
