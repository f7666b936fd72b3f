"""A stand-in for the Cerebras SDK runtime (``cerebras.sdk.runtime.sdkruntimepybind``) backed by this
project's simulator, so a bundle's generated ``run.py`` runs unmodified where the SDK is not
installed (in CI, on a laptop). SPADA ships one for the same reason.

``csl_templates/stub_sdk`` holds the import shim: put that directory on ``PYTHONPATH`` and
``from cerebras.sdk.runtime.sdkruntimepybind import SdkRuntime`` finds the classes below. Nothing in
the core package imports ``cerebras``.

``SdkRuntime(bindir)`` finds the bundle's ``manifest.json`` next to ``bindir`` (``run.py --name out``
in the bundle directory), rebuilds the program the bundle was emitted from (the manifest's ``stub``
entry names its builder), loads it on a ``simulator.Device`` and serves the subset of the API the
generated scripts use: ``load``, ``run``, ``get_id``, ``memcpy_h2d``, ``memcpy_d2h`` (ROW_MAJOR or
COL_MAJOR, 32-bit words or 16-bit values one per word), ``launch`` with numpy-typed arguments
checked against the exported signature, ``stop``. As CSL's ``@zeros`` buffers, every buffer starts
at zero on ``load``, whatever data the builder put in the program.

Timing. The emitted code reads each PE's counter at the start of a launch (slot 0 of the exported
``time_stamps``, after ``enable_tsc`` resets it) and at its ``Finish`` (slot 1); ``Timestamp(label)``
statements have their own slots. The simulator starts every PE's launch at the same cycle, so the
stub fills slot 0 with 0, slot 1 with the cycle after the PE's last activity in the launch
(``SimResult.finish``: its Finish and whatever it left running) and a label's slot with the cycle of
the label's last ``Timestamp`` on that PE. ``run.py``'s "max over PEs of Finish - launch start" is then
the simulator's ``total_cycles``.
"""

from __future__ import annotations

import enum
import importlib
import json
from pathlib import Path

import numpy as np

from plmr.errors import InputError

MANIFEST = "manifest.json"
_NP_TYPES = {"i16": np.int16, "u16": np.uint16, "i32": np.int32, "u32": np.uint32, "f16": np.float16,
             "f32": np.float32}


class MemcpyDataType(enum.IntEnum):
    MEMCPY_32BIT = 0
    MEMCPY_16BIT = 1


class MemcpyOrder(enum.IntEnum):
    ROW_MAJOR = 0
    COL_MAJOR = 1


class StubError(RuntimeError):
    """A call the real runtime would reject (or that the stub cannot serve)."""


def find_manifest(bindir: str | Path) -> Path:
    here = Path(bindir).resolve()
    for d in (here.parent, here, Path.cwd()):
        if (d / MANIFEST).is_file():
            return d / MANIFEST
    raise StubError(f"stub SdkRuntime: no {MANIFEST} next to {bindir!r}; run the bundle's run.py from the "
                    f"bundle directory")


def build_program(source: dict):
    """The program a bundle was emitted from, rebuilt by the builder its manifest names."""
    try:
        module, fn = source["builder"].split(":")
        obj = getattr(importlib.import_module(module), fn)(**source.get("kwargs", {}))
    except (KeyError, ValueError, ImportError, AttributeError) as exc:
        raise StubError(f"stub SdkRuntime: cannot rebuild the program from {source!r}: {exc}") from None
    if isinstance(obj, tuple):
        obj = obj[0]
    return getattr(obj, "program", obj)


class _Task:
    def __init__(self, result=None):
        self.result = result


class SdkRuntime:
    """See the module docstring. Keyword arguments of the real runtime are accepted and ignored."""

    def __init__(self, bindir, cmaddr=None, **kwargs):
        if cmaddr is not None:
            raise StubError(f"stub SdkRuntime simulates the program; it cannot reach the CS system at {cmaddr!r}")
        self.manifest_path = find_manifest(bindir)
        self.manifest = json.loads(self.manifest_path.read_text())
        self.program = None
        self.device = None
        self.results: list = []  # SimResult per launch
        sym = self.manifest["symbols"]
        self._names = list(sym["buffers"]) + [sym["timestamps"]["name"]]
        self._running = False

    # ------------------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        from simulator.run import Device

        self.program = build_program(self.manifest["stub"])
        prog = self.program
        if (prog.width, prog.height) != (self.manifest["width"], self.manifest["height"]):
            raise StubError(f"stub SdkRuntime: rebuilt program is {prog.width}x{prog.height}, the bundle was "
                            f"emitted for {self.manifest['width']}x{self.manifest['height']}")
        self.device = Device(prog, mode="functional")
        self.device.mem[:] = 0.0  # CSL buffers start as @zeros

    def run(self) -> None:
        if self.device is None:
            raise StubError("stub SdkRuntime: run() before load()")
        self._running = True

    def stop(self) -> None:
        self._running = False

    def _need_running(self, what: str) -> None:
        if not self._running:
            raise StubError(f"stub SdkRuntime: {what} before load() and run()")

    def get_id(self, name: str) -> int:
        try:
            return self._names.index(name)
        except ValueError:
            raise StubError(f"stub SdkRuntime: no symbol {name!r}; exported: {', '.join(self._names)}") from None

    # ------------------------------------------------------------------------------ copies
    def _region(self, sym: int, x0: int, y0: int, w: int, h: int, n: int) -> str:
        if not 0 <= sym < len(self._names):
            raise StubError(f"stub SdkRuntime: unknown symbol id {sym}")
        W, H = self.manifest["width"], self.manifest["height"]
        if x0 < 0 or y0 < 0 or w < 1 or h < 1 or x0 + w > W or y0 + h > H or n < 1:
            raise StubError(f"stub SdkRuntime: rectangle x0={x0} y0={y0} w={w} h={h} ({n} per PE) is outside "
                            f"the {W}x{H} kernel")
        return self._names[sym]

    @staticmethod
    def _cube(arr: np.ndarray, h: int, w: int, n: int, order) -> np.ndarray:
        if arr.size != h * w * n:
            raise StubError(f"stub SdkRuntime: host array has {arr.size} elements, the copy moves {h}x{w}x{n}")
        return arr.reshape((h, w, n), order="C" if MemcpyOrder(order) == MemcpyOrder.ROW_MAJOR else "F")

    def memcpy_h2d(self, dest, src, x0, y0, w, h, elem_per_pe, *, streaming=False, data_type=None,
                   order=MemcpyOrder.ROW_MAJOR, nonblock=False):
        self._need_running("memcpy_h2d")
        if streaming:
            raise StubError("stub SdkRuntime: streaming memcpy is not supported")
        name = self._region(dest, x0, y0, w, h, elem_per_pe)
        if name == self.manifest["symbols"]["timestamps"]["name"]:
            raise StubError(f"stub SdkRuntime: {name} is read-only")
        src = np.asarray(src)
        if src.dtype.itemsize != 4:
            raise StubError(f"stub SdkRuntime: memcpy needs a 4-byte host array, got {src.dtype}")
        cube = self._cube(src.ravel(order="K"), h, w, elem_per_pe, order)
        if MemcpyDataType(data_type) == MemcpyDataType.MEMCPY_16BIT:
            vals = (cube.view(np.uint32) & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64)
        else:
            vals = cube.view(np.float32).astype(np.float64)
        dev = self.device
        for i in range(h):
            for j in range(w):
                x, y = x0 + j, y0 + i
                buf = self._buffer(x, y, name)
                cur = dev.read(x, y, name).astype(np.float64)
                if elem_per_pe > cur.size:
                    raise StubError(f"stub SdkRuntime: {elem_per_pe} elements per PE into {name!r} of {cur.size} "
                                    f"on PE ({x}, {y})")
                self._check_width(buf, data_type, name)
                cur[:elem_per_pe] = vals[i, j]
                dev.write(x, y, name, cur)
        return _Task()

    def _buffer(self, x: int, y: int, name: str):
        bufs = self.program.buffers(x, y)
        for b in bufs:
            if b.name == name:
                return b
        raise StubError(f"stub SdkRuntime: PE ({x}, {y}) has no symbol {name!r}")

    @staticmethod
    def _check_width(buf, data_type, name: str) -> None:
        want = MemcpyDataType.MEMCPY_16BIT if buf.dtype == "fp16" else MemcpyDataType.MEMCPY_32BIT
        if MemcpyDataType(data_type) != want:
            raise StubError(f"stub SdkRuntime: {name!r} holds {buf.dtype}; copy it with {want.name}")

    def memcpy_d2h(self, dest, src, x0, y0, w, h, elem_per_pe, *, streaming=False, data_type=None,
                   order=MemcpyOrder.ROW_MAJOR, nonblock=False):
        self._need_running("memcpy_d2h")
        if streaming:
            raise StubError("stub SdkRuntime: streaming memcpy is not supported")
        name = self._region(src, x0, y0, w, h, elem_per_pe)
        if not isinstance(dest, np.ndarray) or dest.dtype.itemsize != 4:
            raise StubError("stub SdkRuntime: memcpy_d2h needs a 4-byte numpy array to fill")
        cube = np.zeros((h, w, elem_per_pe), dtype=np.uint32)
        if name == self.manifest["symbols"]["timestamps"]["name"]:
            if MemcpyDataType(data_type) != MemcpyDataType.MEMCPY_16BIT:
                raise StubError(f"stub SdkRuntime: {name} holds u16 words; copy it with MEMCPY_16BIT")
            words = self._stamp_words()
            cube[:] = words[y0:y0 + h, x0:x0 + w, :elem_per_pe]
        else:
            for i in range(h):
                for j in range(w):
                    x, y = x0 + j, y0 + i
                    buf = self._buffer(x, y, name)
                    self._check_width(buf, data_type, name)
                    vals = self.device.read(x, y, name)[:elem_per_pe]
                    if vals.size < elem_per_pe:
                        raise StubError(f"stub SdkRuntime: {elem_per_pe} elements per PE from {name!r} of "
                                        f"{vals.size} on PE ({x}, {y})")
                    if buf.dtype == "fp16":
                        cube[i, j] = vals.astype(np.float16).view(np.uint16).astype(np.uint32)
                    else:
                        cube[i, j] = vals.astype(np.float32).view(np.uint32)
        flat = cube.ravel(order="C" if MemcpyOrder(order) == MemcpyOrder.ROW_MAJOR else "F")
        if dest.size != flat.size:
            raise StubError(f"stub SdkRuntime: host array has {dest.size} elements, the copy moves {flat.size}")
        dest.reshape(-1).view(np.uint32)[:] = flat
        return _Task()

    def _stamp_words(self) -> np.ndarray:
        """time_stamps of every PE after the last launch (module docstring), as (H, W, 4 * slots)."""
        W, H = self.manifest["width"], self.manifest["height"]
        slots = self.manifest["symbols"]["timestamps"]["slots"]
        vals = np.zeros((H, W, len(slots)), dtype=np.int64)
        seen = np.zeros((H, W, len(slots)), dtype=bool)
        if self.results:
            res = self.results[-1]
            seen[..., 0] = seen[..., 1] = True
            vals[..., 1] = res.finish
            for x, y, label, cyc in res.timestamps:
                k = slots.index(label) if label in slots[2:] else None
                if k is not None:
                    vals[y, x, k] = cyc
                    seen[y, x, k] = True
        words = np.zeros((H, W, len(slots), 4), dtype=np.uint32)
        for w in range(3):
            words[..., w] = (vals >> (16 * w)) & 0xFFFF
        words[..., 3] = seen
        return words.reshape(H, W, 4 * len(slots))

    # ------------------------------------------------------------------------------ launches
    def launch(self, name: str, *args, nonblock=False):
        self._need_running("launch")
        funcs = self.manifest["symbols"]["functions"]
        if name not in funcs:
            raise StubError(f"stub SdkRuntime: no exported function {name!r}; functions: {', '.join(funcs)}")
        types = funcs[name]["types"]
        if len(args) != len(types):
            raise StubError(f"stub SdkRuntime: {name} takes {len(types)} arguments, got {len(args)}")
        for a, t in zip(args, types):
            if not isinstance(a, _NP_TYPES[t]):
                raise StubError(f"stub SdkRuntime: argument {a!r} of {name} must be a numpy {t} "
                                f"({_NP_TYPES[t].__name__}); plain Python numbers fail the SDK's type check")
        scalars = {n: float(a) for n, a in zip(funcs[name]["args"], args)}
        try:
            res = self.device.launch(name, **scalars)
        except InputError as exc:
            raise StubError(f"stub SdkRuntime: launch {name}: {exc}") from None
        self.results.append(res)
        return _Task(res)

    def is_task_done(self, task) -> bool:
        return True

    def task_wait(self, task) -> None:
        return None
