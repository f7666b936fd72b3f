"""Cycle costs of distributed GEMM on a P_y × P_x mesh (waferllm-method.md §4.4-4.5, §5).

MeshGEMM runs Cannon on a virtual Q×Q mesh, Q = lcm(P_y, P_x) (§4.4): per virtual step each physical
PE does q_x·q_y tile products and sends q_y A-tiles along its x-ring and q_x B-tiles along its
y-ring, every ring link ≤ 2 hops. Cannon is the same schedule on plain rings (the wrap link spans
P-1 hops); SUMMA broadcasts panels from a moving root. Rotating operands are zero-padded to
⌈D/P⌉ tiles and costs are charged on padded sizes (§4.4).
"""

from __future__ import annotations

import math

from plmr.breakdown import CostBreakdown
from plmr.collectives import chain_side_arrival
from plmr.hardware import HardwareSpec
from plmr.interleave import ring_order
from plmr.primitives import ceil_div, dtype_bytes, t_vec


def local_gemm_cycles(spec: HardwareSpec, m: int, k: int, n: int, dtype: str = "fp16") -> float:
    """C[m×n] += A[m×k]·B[k×n] on one PE as vector FMACs, looping so the vector runs along the
    longer of m and n (c_op is paid per op, method §4.3 [O])."""
    if min(m, k, n) <= 0:
        return 0.0
    width = spec.simd_width("fmac", dtype)
    along_m = k * n * (spec.op_issue_cycles + math.ceil(m / width))
    along_n = k * m * (spec.op_issue_cycles + math.ceil(n / width))
    return float(min(along_m, along_n))


def gemm_footprint_bytes(m: int, k: int, n: int, dtype: str, fp32_acc: bool = False) -> int:
    """Double-buffered A and B tiles plus C: (2mk + 2kn + mn)·b, +4mn for an fp32 accumulator."""
    return (2 * m * k + 2 * k * n + m * n) * dtype_bytes(dtype) + (4 * m * n if fp32_acc else 0)


def _cannon_family(op: str, spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int,
                   dtype: str, shift_hops_x: float, shift_hops_y: float, align_rounds: int,
                   align_hops: int, colors: int, packed: bool, align_once_hops: int = 0) -> CostBreakdown:
    """Cannon's schedule as the kernels run it (meshgemm/gemm.py).

    Each of the Q-1 shifting steps issues, on the main thread, one receive per moving operand and
    then one send per moving operand (c_op each), then the q_x·q_y tile products, then joins
    (c_task). A send's stream starts when its issue ends and lands ρ + h·α + ⌈tile/e_w⌉ later, so
    a step lasts max(issues + products, each stream's landing) + c_task. The last step neither
    shifts nor joins. The skew sends one A tile per hosted row and round: receive + send issued,
    the stream, a join."""
    Q = math.lcm(p_y, p_x)
    q_x, q_y = Q // p_x, Q // p_y
    m_v, n_v, k = ceil_div(M, Q), ceil_div(N, Q), ceil_div(K, Q)
    m, n = m_v * q_y, n_v * q_x  # per-PE C block (padded)
    comp = q_x * q_y * local_gemm_cycles(spec, m_v, k, n_v, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op = spec.op_issue_cycles
    comm_x, comm_y = p_x > 1, p_y > 1
    n_recv = int(comm_x) + int(comm_y)
    landings = []
    if comm_x:  # A moves along x: its send is the first send issued
        landings.append((n_recv + 1) * c_op + spec.ramp_cycles + shift_hops_x * spec.hop_cycles
                        + math.ceil(m * k / e_w))
    if comm_y:
        landings.append((n_recv + 1 + int(comm_x)) * c_op + spec.ramp_cycles
                        + shift_hops_y * spec.hop_cycles + math.ceil(k * n / e_w))
    issues = 2 * n_recv * c_op
    shift = max(landings, default=0.0)
    step = spec.task_cycles + max(issues + comp, shift) if n_recv else comp
    last = comp
    round_t = (2 * c_op + spec.ramp_cycles + align_hops * spec.hop_cycles
               + math.ceil(m_v * k / e_w) + spec.task_cycles)
    # No barrier separates skew rounds: a long link's extra latency is paid once, not per round.
    align = (align_rounds * q_y * round_t + align_once_hops * spec.hop_cycles) if comm_x else 0.0
    zero_c = t_vec(spec, m * n, "mov", dtype)
    total = align + zero_c + (Q - 1) * step + last
    compute = zero_c + Q * comp
    comm = align + (Q - 1) * shift  # raw transfer time; the steps hide most of it behind compute
    # A: q_x tiles + one free slot per hosted row; B: q_y tiles + one free slot; C.
    footprint = ((q_x + 1) * m * k + (q_y + 1) * k * n + m * n) * dtype_bytes(dtype) if Q > 1 \
        else gemm_footprint_bytes(m, k, n, dtype)
    return CostBreakdown(op=op, compute_cycles=compute, comm_cycles=comm, total_cycles=total,
                         bytes_per_pe=footprint, colors_per_pe=colors,
                         parts={"align": align, "steps": float(Q), "step_compute": comp,
                                "step_shift": shift, "step_issue": issues})


def meshgemm(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
             packed: bool = False) -> CostBreakdown:
    """MeshGEMM: interleaved-ring Cannon; A skewed on the device over ⌊Q/2⌋ 2-hop rounds (the
    shorter way round), B pre-skewed on the host; 9 colours (6 compute rings + reverse skew ring)."""
    ring_hops_x = 2 if p_x >= 3 else 1
    ring_hops_y = 2 if p_y >= 3 else 1
    Q = math.lcm(p_y, p_x)
    colors = (3 if p_x >= 3 else (2 if p_x == 2 else 0)) + (3 if p_y >= 3 else (2 if p_y == 2 else 0))
    colors += 3 if p_x >= 3 else 0
    return _cannon_family("meshgemm", spec, p_y, p_x, M, K, N, dtype, ring_hops_x, ring_hops_y,
                          Q // 2 if p_x > 1 else 0, ring_hops_x, colors, packed)


def cannon(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
           packed: bool = False) -> CostBreakdown:
    """Cannon on plain rings, as the kernel runs it: no barrier separates the steps, so a PE waits
    only for its own incoming tile. Around a ring the P links add up to 2(P-1) hops (P-1 one-hop
    links and the P-1 hop wrap), so in steady state a step pays the average, 2(P-1)/P hops, and
    the wrap's excess latency is paid once (method §4.5 charges the wrap every step, which holds
    only for bulk-synchronous steps). The skew likewise takes ⌊Q/2⌋ one-hop rounds plus the wrap
    once. 3 colours per axis plus 3 for the skew ring."""
    colors = (3 if p_x > 1 else 0) + (3 if p_y > 1 else 0) + (3 if p_x > 1 else 0)  # + skew ring
    avg_x = 2 * (p_x - 1) / p_x if p_x > 1 else 1
    avg_y = 2 * (p_y - 1) / p_y if p_y > 1 else 1
    wrap_excess = max(max(p_x - 1, p_y - 1) - 1, 0)
    r = _cannon_family("cannon", spec, p_y, p_x, M, K, N, dtype, avg_x, avg_y,
                       math.lcm(p_y, p_x) // 2 if p_x > 1 else 0, 1, colors, packed,
                       align_once_hops=max(p_x - 2, 0))
    once = wrap_excess * spec.hop_cycles
    return CostBreakdown(op=r.op, compute_cycles=r.compute_cycles, comm_cycles=r.comm_cycles + once,
                         total_cycles=r.total_cycles + once, bytes_per_pe=r.bytes_per_pe,
                         colors_per_pe=r.colors_per_pe, parts={**r.parts, "wrap_once": once})


def summa(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
          packed: bool = False) -> CostBreakdown:
    """SUMMA with store-and-forward relay broadcasts (method §4.5 variant (i), the paper's
    baseline), as the kernel runs it (meshgemm/gemm_baselines.py): the owner of K-panel t sends it
    both ways along its row (A) and column (B); every PE on the way relays it in software (ρ + β
    per PE, α per hop) and keeps a copy through its ramp; panel t+1 is fetched while panel t is
    multiplied. No barrier separates the steps and consecutive owners are neighbours, so in steady
    state a step costs one PE's work (issues and product, or its ramp taking in each panel twice,
    relayed and kept) and the broadcast latency to the farthest PE is paid once, for the first
    panel (method §4.5 charges it every step, which holds only for bulk-synchronous steps)."""
    S = math.lcm(p_y, p_x)
    q_x, q_y = S // p_x, S // p_y
    m, n, k = ceil_div(M, p_y), ceil_div(N, p_x), ceil_div(K, S)
    comp = local_gemm_cycles(spec, m, k, n, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op = spec.op_issue_cycles
    axes = int(p_x > 1) + int(p_y > 1)
    # A relay PE issues a relay and a keep-a-copy receive per moving operand; this step's owner
    # issues two more (it sends both ways), and the owners' steps chain (each owner needs the panel
    # of the neighbour that owned the previous one), so the owner's issue count sets the pace.
    issues = (2 * axes + 2) * c_op if axes else 0.0
    ingest = 2 * ((math.ceil(m * k / e_w) if p_x > 1 else 0) + (math.ceil(k * n / e_w) if p_y > 1 else 0))

    def landing(t: int) -> float:
        """When the farthest PE holds both halves of panel t, from the start of its fetch."""
        land = 0.0
        if p_x > 1:
            o = t // q_x
            far = max(o, p_x - 1 - o)
            land = max(land, 2 * c_op + chain_side_arrival(spec, [1] * far) + math.ceil(m * k / e_w))
        if p_y > 1:
            o = t // q_y
            far = max(o, p_y - 1 - o)
            offset = 2 * c_op * int(p_x > 1)  # the B fetch is issued after the A fetch
            land = max(land, offset + 2 * c_op + chain_side_arrival(spec, [1] * far)
                       + math.ceil(k * n / e_w))
        return land

    first = landing(0) + spec.task_cycles if axes else 0.0
    step = spec.task_cycles + max(issues + comp, ingest) if axes else comp
    total = t_vec(spec, m * n, "mov", dtype) + first + (S - 1) * step + comp
    comm = first + (S - 1) * ingest
    footprint = 2 * gemm_footprint_bytes(m, k, n, dtype) - m * n * dtype_bytes(dtype)
    colors = (4 if p_x > 1 else 0) + (4 if p_y > 1 else 0)  # two directions, two alternating colours
    return CostBreakdown(op="summa", compute_cycles=S * comp, comm_cycles=comm,
                         total_cycles=total, bytes_per_pe=footprint, colors_per_pe=colors,
                         parts={"steps": float(S), "step_compute": comp, "first_panel": first})


def gemmt(spec: HardwareSpec, p_y: int, p_x: int, M: int, K: int, N: int, dtype: str = "fp16",
          packed: bool = False) -> CostBreakdown:
    """dist-GEMM-T, C[M×N] = A[M×K]·B[N×K]ᵀ with A and B both rows-on-y, features-on-x (§5), as
    the kernel runs it (meshgemm/gemmt.py).

    P_y steps. Each step every PE issues the B shift along the y-ring (receive + send), then a
    member zero-fills its partial (m×n_b), multiplies and streams it into the step's root column
    along a receive-add-forward chain (both directions routed: 4 colours); the root multiplies into
    its C block and takes both chains through its one ramp. Over a step the roots of all rows
    cover {R_y[i] mod P_x}; the slowest root position sets the pace. The last step does not shift.
    """
    m, n_b, k = ceil_div(M, p_y), ceil_div(N, p_y), ceil_div(K, p_x)
    comp = local_gemm_cycles(spec, m, k, n_b, dtype)
    e_w = spec.elements_per_wavelet(dtype, packed)
    c_op = spec.op_issue_cycles
    t_c = math.ceil(m * n_b / e_w)
    fill = t_vec(spec, m * n_b, "mov", dtype)

    b_land = (2 * c_op + spec.ramp_cycles + (2 if p_y >= 3 else 1) * spec.hop_cycles
              + math.ceil(n_b * k / e_w)) if p_y > 1 else 0.0
    if p_x == 1:
        step = max(2 * c_op + comp, b_land) + spec.task_cycles if p_y > 1 else comp
        total = (p_y - 1) * step + comp
        reduce = 0.0
    else:
        # No barrier separates the steps: a PE starts step t+1 as soon as its own part of step t
        # (B shift, zero-fill, product, streaming its partial through its ramp) is done, so the
        # chains of successive steps pipeline like a wavefront. Steady state: one PE's step; the
        # roots take both sides' streams through one ramp (one more t_c), and the farthest chain
        # latency is paid once, to fill the pipeline.
        member = 2 * c_op + fill + comp + c_op + t_c
        root = 2 * c_op + comp + 2 * c_op + 2 * t_c
        step = max(member, root, b_land) + spec.task_cycles
        far = max(max(r % p_x, p_x - 1 - r % p_x) for r in ring_order(p_y))
        reduce = chain_side_arrival(spec, [1] * far) if far else 0.0
        total = p_y * step - 2 * c_op + reduce  # the last step does not shift B
    compute = p_y * (comp + (fill if p_x > 1 else 0.0))
    footprint = (m * k + 2 * n_b * k + 2 * m * n_b) * dtype_bytes(dtype)
    colors = (4 if p_x > 1 else 0) + (3 if p_y >= 3 else (2 if p_y == 2 else 0))
    return CostBreakdown(op="gemmt", compute_cycles=compute, comm_cycles=max(total - compute, 0.0),
                         total_cycles=total, bytes_per_pe=footprint, colors_per_pe=colors,
                         parts={"steps": float(p_y), "step_compute": comp, "step_reduce": reduce})
