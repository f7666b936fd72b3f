"""Simulator speed: active PE-cycles per second, with JIT warm-up timed separately.

    python benchmarks/bench_simulator.py            # 256x256 shift+broadcast, 750x994 bcast+reduce
    python benchmarks/bench_simulator.py --quick    # 64x64 and 150x200, for CI

Workloads (timing-only mode unless --functional):
  shift+broadcast: every row does a 1-hop east shift of n wavelets (colours alternate by column
    parity), then PE x=0 multicasts n wavelets along its row.
  broadcast+reduce: PE x=0 of every row multicasts n wavelets along the row, then every column
    reduces a length-n vector into its bottom PE with a receive-add-send chain (colours alternate
    by row parity).
  overlap: MeshGEMM's shape without its loops: every step, each PE sends n wavelets east and
    receives n from the west asynchronously while its main thread runs k vector adds of length m,
    then waits for both (straight-line per-PE code, so older revisions run it too).
"Active PE-cycles" = PE-cycles in which the PE's CE or its router did work: busy cycles (main thread
ran an instruction or a microthread moved a wavelet) plus cycles in which only the router moved a
wavelet (stats["router_only_pe_cycles"]). Cycles a PE spends stalled waiting are not counted; the
older, looser figure busy + stalled ("unfinished PE-cycles", SimResult.active_pe_cycles) is printed
too.
"""

from __future__ import annotations

import argparse
import resource
import time

import simulator
from plmr.hardware import WSE2
from simulator import simulate

BC, SH0, SH1, RD0, RD1 = 1, 2, 3, 4, 5


def row_broadcast(prog, n: int, buf_src: str, buf_dst: str, sim=simulator) -> None:
    Port, Send, Recv = sim.Port, sim.Send, sim.Recv
    W, H = prog.width, prog.height
    prog.set_route(0, range(H), BC, rx=Port.RAMP, tx=Port.EAST)
    if W > 2:
        prog.set_route(range(1, W - 1), range(H), BC, rx=Port.WEST, tx={Port.RAMP, Port.EAST})
    prog.set_route(W - 1, range(H), BC, rx=Port.WEST, tx=Port.RAMP)
    prog.add(0, range(H), Send(BC, buf_src))
    prog.add(range(1, W), range(H), Recv(BC, buf_dst))


def shift_broadcast(W: int, H: int, n: int, sim=simulator):
    """The workload built with the classes of ``sim`` (this package, or another revision's copy)."""
    Port, Send, Recv = sim.Port, sim.Send, sim.Recv
    prog = sim.MeshProgram(W, H, WSE2)
    prog.add_buffer(range(W), range(H), "a", "fp32", n, init=1.0)
    prog.add_buffer(range(W), range(H), "b", "fp32", n)
    for x in range(W):
        send_c = SH0 if x % 2 == 0 else SH1
        recv_c = SH1 if x % 2 == 0 else SH0
        if x < W - 1:
            prog.set_route(x, range(H), send_c, rx=Port.RAMP, tx=Port.EAST)
        if x > 0:
            prog.set_route(x, range(H), recv_c, rx=Port.WEST, tx=Port.RAMP)
    for x in range(W):
        send_c = SH0 if x % 2 == 0 else SH1
        recv_c = SH1 if x % 2 == 0 else SH0
        if x < W - 1 and x > 0:
            prog.add(x, range(H), Send(send_c, "a", id="s"), Recv(recv_c, "b"))
        elif x < W - 1:
            prog.add(x, range(H), Send(send_c, "a"))
        else:
            prog.add(x, range(H), Recv(recv_c, "b"))
    row_broadcast(prog, n, "a", "b", sim)
    return prog


def broadcast_reduce(W: int, H: int, n: int, sim=simulator):
    Port, Send, RecvAdd, RecvAddSend = sim.Port, sim.Send, sim.RecvAdd, sim.RecvAddSend
    prog = sim.MeshProgram(W, H, WSE2)
    prog.add_buffer(range(W), range(H), "v", "fp32", n)
    row_broadcast(prog, n, "v", "v", sim)
    for y in range(H):
        send_c = RD0 if y % 2 == 0 else RD1
        recv_c = RD1 if y % 2 == 0 else RD0
        if y < H - 1:
            prog.set_route(range(W), y, send_c, rx=Port.RAMP, tx=Port.SOUTH)
        if y > 0:
            prog.set_route(range(W), y, recv_c, rx=Port.NORTH, tx=Port.RAMP)
    prog.add(range(W), 0, Send(RD0, "v"))
    for y in range(1, H - 1):
        prog.add(range(W), y, RecvAddSend(RD1 if y % 2 == 0 else RD0, RD0 if y % 2 == 0 else RD1, "v"))
    prog.add(range(W), H - 1, RecvAdd(RD1 if (H - 1) % 2 == 0 else RD0, "v"))
    return prog


def overlap(W: int, H: int, n: int, steps: int = 8, k: int = 36, m: int = 6, sim=simulator):
    """Compute beside asynchronous fabric moves, the mix a MeshGEMM step has."""
    Port, Send, Recv, Add, Wait, Ref = sim.Port, sim.Send, sim.Recv, sim.Add, sim.Wait, sim.Ref
    prog = sim.MeshProgram(W, H, WSE2)
    prog.add_buffer(range(W), range(H), "a", "fp32", n, init=1.0)
    prog.add_buffer(range(W), range(H), "b", "fp32", n)
    prog.add_buffer(range(W), range(H), "c", "fp32", max(k * m, 1))
    for x in range(W):
        send_c, recv_c = (SH0, SH1) if x % 2 == 0 else (SH1, SH0)
        if x < W - 1:
            prog.set_route(x, range(H), send_c, rx=Port.RAMP, tx=Port.EAST)
        if x > 0:
            prog.set_route(x, range(H), recv_c, rx=Port.WEST, tx=Port.RAMP)
        code = []
        for _ in range(steps):
            ids = []
            if x < W - 1:
                code.append(Send(send_c, "a", id="s"))
                ids.append("s")
            if x > 0:
                code.append(Recv(recv_c, "b", id="r"))
                ids.append("r")
            code += [Add(Ref("c", i * m, m), Ref("c", i * m, m), Ref("a", 0, m)) for i in range(k)]
            code.append(Wait(tuple(ids)))
        prog.add(x, range(H), *code)
    return prog


def bench(name: str, build, mode: str, repeat: int) -> None:
    t0 = time.perf_counter()
    prog = build()
    t1 = time.perf_counter()
    engine, call = [], []  # seconds per run: the engine alone, the whole simulate call
    res = None
    for _ in range(repeat):
        del res  # one result alive at a time, so peak RSS is that of a single run
        ts = time.perf_counter()
        res = simulate(prog, mode=mode)
        call.append(time.perf_counter() - ts)
        engine.append(res.stats["run_s"])
    engine.sort()
    call.sort()
    best, median = engine[0], engine[len(engine) // 2]
    st = res.stats
    busy = int(res.busy.sum())
    apc = busy + st["router_only_pe_cycles"]
    unfinished = res.active_pe_cycles
    print(f"{name}: {prog.width}x{prog.height} PEs, mode={mode}, {repeat} run(s)")
    print(f"  build {t1 - t0:.2f} s; last run: lower {st['compile_s']:.2f} s")
    print(f"  engine s: best {best:.3f}, median {median:.3f}, worst {engine[-1]:.3f}; "
          f"whole simulate call: best {call[0]:.3f} s")
    print(f"  total cycles {res.total_cycles}, active PE-cycles {apc:.3e} (busy {busy:.3e} + router-only "
          f"{st['router_only_pe_cycles']:.3e}), unfinished PE-cycles {unfinished:.3e}, "
          f"wavelet moves {st['wavelet_moves']:.3e}")
    print(f"  active PE-cycles/s (engine): best {apc / best:.3e}, median {apc / median:.3e}; "
          f"whole simulate call best {apc / call[0]:.3e}; unfinished PE-cycles/s best {unfinished / best:.3e}")
    print(f"  peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--functional", action="store_true", help="functional instead of timing-only mode")
    ap.add_argument("--n", type=int, default=64, help="wavelets per transfer (default 64)")
    ap.add_argument("--only", choices=["shift", "reduce"], help="run one workload")
    ap.add_argument("--repeat", type=int, default=5,
                    help="simulate each workload this many times; best and median are reported "
                         "(this VM's run-to-run spread is 20-40%%; default 5)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    mode = "functional" if args.functional else "timing"
    t0 = time.perf_counter()
    simulate(shift_broadcast(4, 3, 4), mode="functional")
    simulate(broadcast_reduce(3, 4, 4), mode="timing")
    print(f"JIT warm-up (compile or load numba cache, two tiny runs): {time.perf_counter() - t0:.2f} s")
    sw, sh = (64, 64) if args.quick else (256, 256)
    rw, rh = (150, 200) if args.quick else (WSE2.mesh_width, WSE2.mesh_height)
    if args.only in (None, "shift"):
        bench("shift+broadcast", lambda: shift_broadcast(sw, sh, args.n), mode, args.repeat)
    if args.only in (None, "reduce"):
        bench("row broadcast + column reduction", lambda: broadcast_reduce(rw, rh, args.n), mode, args.repeat)


if __name__ == "__main__":
    main()
