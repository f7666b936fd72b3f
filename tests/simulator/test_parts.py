"""A cycle's visits cut into concurrent parts (``simulator.engine.segments``, ``Device(threads=...)``):
the cut is safe by construction and the results equal one thread's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from plmr.errors import InputError
from plmr.hardware import WSE2
from simulator import Device
from simulator.engine import segments

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_simulator import shift_broadcast  # noqa: E402


def _touched(lo_w: int, hi_w: int, W: int, P: int) -> set[int]:
    """PEs a visit of PEs in bitmap words [lo_w, hi_w) may touch: each PE and its four neighbours."""
    out = set()
    for pe in range(64 * lo_w, min(64 * hi_w, P)):
        x, y = pe % W, pe // W
        out.add(pe)
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            if 0 <= x + dx < W and 0 <= y + dy < P // W:
                out.add(pe + dx + dy * W)
    return out


@pytest.mark.parametrize("W,H,parts", [(128, 128, 2), (200, 150, 3), (130, 127, 2), (64, 64, 2), (30, 20, 2)])
def test_segments_cover_the_mesh_and_parts_share_no_word(W, H, parts):
    P = W * H
    seg = segments(W, H, parts)
    nwd = (P + 63) // 64
    assert seg[0, 0] == 0 and seg[-1, 1] == nwd
    assert all(seg[i, 1] == seg[i + 1, 0] for i in range(len(seg) - 1))
    assert all(seg[i, 0] < seg[i, 1] for i in range(len(seg)))
    if P < 2 * parts * 4096:
        assert len(seg) == 1  # too small to cut
        return
    assert len(seg) == 2 * parts - 1
    touched = [_touched(seg[j, 0], seg[j, 1], W, P) for j in range(0, len(seg), 2)]
    for i in range(len(touched)):
        for j in range(i + 1, len(touched)):
            # no shared record, bitmap word (64 PEs) or summary word (4096 PEs)
            assert not touched[i] & touched[j]
            assert not {p >> 6 for p in touched[i]} & {p >> 6 for p in touched[j]}
            assert not {p >> 12 for p in touched[i]} & {p >> 12 for p in touched[j]}


def _result(dev: Device):
    r = dev.launch()
    return r.total_cycles, r.busy, r.stalled, r.finish, r.link_wavelets, r.stats["wavelet_moves"], r


@pytest.mark.parametrize("mode", ["timing", "functional"])
def test_two_parts_give_the_results_of_one_thread(mode):
    prog = shift_broadcast(128, 130, 20)  # 16,640 PEs: cut in two parts and a band
    one = Device(prog, WSE2, mode, threads=1)
    two = Device(prog, WSE2, mode, threads=2)
    assert one.seg_w.shape[0] == 1 and two.seg_w.shape[0] == 3
    a, b = _result(one), _result(two)
    for x, y in zip(a[:6], b[:6]):
        assert np.array_equal(x, y)
    if mode == "functional":
        assert np.array_equal(one.mem, two.mem)


def test_a_gemv_cut_in_parts_equals_numpy():
    """A whole kernel (MeshGEMV's K-tree reductions cross the cut) on two threads. A GEMV, not a GEMM:
    its few hundred cycles keep the per-cycle hand-off between threads cheap on a loaded host."""
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    b = build_kernel(KernelRequest("meshgemv", (128, 128), 1, 256, 256, dtype="fp32", functional=True), WSE2)
    dev = Device(b.program, WSE2, "functional", threads=2)
    assert dev.seg_w.shape[0] == 3
    res = dev.launch()
    np.testing.assert_allclose(b.gather(res)["y"], b.expected["y"], rtol=1e-5, atol=1e-4)


def test_threads_below_one_is_an_input_error():
    with pytest.raises(InputError, match="threads must be at least 1"):
        Device(shift_broadcast(4, 4, 2), WSE2, "timing", threads=0)
