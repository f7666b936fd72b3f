"""The results table of a sweep: one CSV file that survives faults, plus per-PE arrays of simulated
points.

Layout of a results directory::

    results.csv      one row per finished point (the columns are ``COLUMNS``; schema ``SCHEMA``)
    sweep.toml       the last sweep run into this directory, as a re-runnable TOML file
    sim/KEY.npz      per-PE arrays of simulated points (SRAM bytes, fabric wavelets, busy cycles)

Fault tolerance:

* ``results.csv`` is created atomically (header written to a temporary file, then renamed) and
  then only appended to, one whole row per ``write`` call on an ``O_APPEND`` descriptor: a process
  killed at any moment leaves whole rows (a machine that loses power may lose the last rows
  written, or leave a partial last line, which the next open drops).
* A point's arrays are written (temporary file, then rename) before its row, so a row implies
  its arrays.
* Every row carries the point's ``key`` (a hash of its parameters); re-running a sweep skips the
  keys already in the table, so every point appears exactly once.

Analysis tools read ``results.csv`` directly (``pandas.read_csv``, a spreadsheet); ``load_rows``
returns typed dicts.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from plmr.errors import InputError
from plmr.atomic_output import atomic_write

SCHEMA = 1
FILENAME = "results.csv"
SPEC_FILENAME = "sweep.toml"
SIM_DIR = "sim"

#: point parameters, in column order
PARAM_COLUMNS = (
    "kind", "evaluator", "kernel", "model", "hardware", "method", "mesh", "m", "k", "n", "k_tree",
    "group_size", "dtype", "seed", "prefill_grid", "decode_grid", "context", "input_len", "output_len",
    "batch", "wafers",
)
#: what evaluating a point gives
RESULT_COLUMNS = (
    "semantics", "mesh_rows", "mesh_cols", "predicted_cycles", "predicted_compute_cycles",
    "predicted_comm_cycles", "simulated_cycles", "sim_compute_cycles", "sim_comm_cycles", "split_source",
    "max_rel_error", "bytes_per_pe", "predicted_bytes_per_pe", "colors_per_pe", "predicted_colors_per_pe",
    "fits", "prefill_rows", "prefill_cols", "decode_rows", "decode_cols", "prefill_tokens_per_s",
    "decode_tokens_per_s", "end_to_end_tokens_per_s", "prefill_cycles", "decode_cycles_per_token",
    "decode_k_tree", "kv_shift_tokens", "kv_concat_tokens", "kv_shift_tokens_placed",
    "kv_concat_tokens_placed", "energy_j_per_token", "plan_bytes_per_pe", "sim_arrays",
)
COLUMNS = ("key", "status") + PARAM_COLUMNS + RESULT_COLUMNS + ("error", "seconds", "schema")

INT_COLUMNS = {
    "m", "k", "n", "k_tree", "group_size", "seed", "context", "input_len", "output_len", "batch", "wafers",
    "mesh_rows", "mesh_cols", "predicted_cycles", "predicted_compute_cycles", "predicted_comm_cycles",
    "simulated_cycles", "sim_compute_cycles", "sim_comm_cycles", "bytes_per_pe", "predicted_bytes_per_pe",
    "colors_per_pe", "predicted_colors_per_pe", "prefill_rows", "prefill_cols", "decode_rows", "decode_cols",
    "prefill_cycles", "decode_cycles_per_token", "decode_k_tree", "kv_shift_tokens", "kv_concat_tokens",
    "kv_shift_tokens_placed", "kv_concat_tokens_placed", "plan_bytes_per_pe", "schema",
}
FLOAT_COLUMNS = {"max_rel_error", "prefill_tokens_per_s", "decode_tokens_per_s", "end_to_end_tokens_per_s",
                 "energy_j_per_token", "seconds"}
BOOL_COLUMNS = {"fits"}
#: columns that depend on where and when a point ran, not on what it computed
RUN_COLUMNS = ("seconds",)


def _format_row(row: dict[str, Any]) -> str:
    buf = io.StringIO()
    values = []
    for c in COLUMNS:
        v = row.get(c)
        if v is None:
            values.append("")
        elif isinstance(v, bool):
            values.append("true" if v else "false")
        elif isinstance(v, float) and c not in FLOAT_COLUMNS:
            values.append(str(int(v)))
        else:
            values.append(str(v).replace("\n", " "))
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _parse(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in INT_COLUMNS:
        return int(text)
    if column in FLOAT_COLUMNS:
        return float(text)
    if column in BOOL_COLUMNS:
        return text == "true"
    return text


def results_path(location: str | os.PathLike) -> Path:
    """``results.csv`` of a results directory, or a CSV file given directly."""
    p = Path(location)
    return p if p.suffix.lower() == ".csv" else p / FILENAME


def load_rows(location: str | os.PathLike) -> list[dict[str, Any]]:
    """Typed rows of a results table (a directory or its CSV). A partial last line (a machine that
    lost power mid-write) is ignored."""
    path = results_path(location)
    if not path.is_file():
        raise InputError(f"no results table at {path}: run `waferllm sweep ... -o DIR` first")
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path} is empty; expected a results table with the header {COLUMNS[0]},...") from None
    if tuple(header) != COLUMNS:
        raise InputError(f"{path} does not have this waferllm's results columns (schema {SCHEMA}); "
                         f"write the sweep to a new directory")
    rows = []
    for fields in reader:
        if len(fields) != len(COLUMNS):
            continue
        rows.append({c: _parse(c, v) for c, v in zip(COLUMNS, fields)})
    return rows


class ResultsTable:
    """An open results directory: ``done`` holds the keys of finished points; ``append`` adds one."""

    def __init__(self, directory: str | os.PathLike, retry_failed: bool = False) -> None:
        self.directory = Path(directory)
        if self.directory.suffix.lower() == ".csv":
            raise InputError(f"-o {directory}: give a directory; the table is written to DIR/{FILENAME}")
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"-o {directory}: exists and is not a directory")
        self.path = self.directory / FILENAME
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            atomic_write(self.path, _header().encode())
            rows = []
        else:
            rows = load_rows(self.path)
            raw = self.path.read_bytes()
            whole = raw.endswith(b"\n") and len(raw.splitlines()) == len(rows) + 1
            if retry_failed and any(r["status"] != "ok" for r in rows):
                rows = [r for r in rows if r["status"] == "ok"]
                whole = False
            if not whole:  # drop a partial last line, or failed rows to retry: rewrite atomically
                atomic_write(self.path, (_header() + "".join(_format_row(r) for r in rows)).encode())
        self.done: set[str] = {r["key"] for r in rows}
        self.rows_at_open = len(rows)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, row: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        """Write one finished point: its arrays (if any) first, then its row in one ``write``."""
        if row["key"] in self.done:
            return
        if arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            rel = f"{SIM_DIR}/{row['key']}.npz"
            atomic_write(self.directory / rel, buf.getvalue())
            row = {**row, "sim_arrays": rel}
        data = _format_row({**row, "schema": SCHEMA}).encode()
        written = os.write(self._fd, data)
        if written != len(data):  # a short write to a regular file means the disk is full
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes): is the disk full?")
        self.done.add(row["key"])

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ResultsTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _header() -> str:
    return ",".join(COLUMNS) + "\n"


def load_arrays(location: str | os.PathLike, row: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The per-PE arrays of a simulated row, or None."""
    rel = row.get("sim_arrays")
    if not rel:
        return None
    base = Path(location)
    base = base.parent if base.suffix.lower() == ".csv" else base
    path = base / rel
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def comparable(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows by key without the run-dependent columns: two runs of one sweep compare equal."""
    return {r["key"]: {c: v for c, v in r.items() if c not in RUN_COLUMNS} for r in rows}
