"""Distributed GEMM costs (method §4.4-4.6, §5): MeshGEMM, Cannon, SUMMA and dist-GEMM-T."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plmr import WSE2, WSE3, cannon, gemmt, local_gemm_cycles, meshgemm, summa
from plmr.primitives import t_vec

SPEC = WSE2.with_params(op_issue_cycles=11.0, ramp_cycles=5.0, hop_cycles=2.0, relay_cycles=3.0,
                        collective_cycles=37.0, task_cycles=13.0)


def _msg(spec, n, hops, stages=0):
    return spec.op_issue_cycles + spec.ramp_cycles + hops * spec.hop_cycles + stages * spec.relay_cycles + n


# ------------------------------------------------------------------------------------------------
# Local GEMM
# ------------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(m=st.integers(1, 300), k=st.integers(1, 64), n=st.integers(1, 300))
def test_local_gemm_picks_the_cheaper_orientation(m, k, n):
    F = SPEC.simd_width("fmac", "fp16")
    along_m = k * n * (SPEC.op_issue_cycles + math.ceil(m / F))
    along_n = k * m * (SPEC.op_issue_cycles + math.ceil(n / F))
    got = local_gemm_cycles(SPEC, m, k, n)
    assert got == min(along_m, along_n)
    assert got == local_gemm_cycles(SPEC, n, k, m)  # symmetric in m and n


def test_local_gemm_examples():
    # m = 100, n = 3: vectors along m (34 cycles per op, 15 ops) beat vectors along n (500 ops)
    assert local_gemm_cycles(SPEC, 100, 5, 3) == 5 * 3 * (11 + 25)
    assert local_gemm_cycles(SPEC, 0, 5, 3) == 0
    # wider SIMD on wse3 halves the vector part
    assert local_gemm_cycles(WSE3, 64, 1, 1) == WSE3.op_issue_cycles + 8
    assert local_gemm_cycles(WSE2, 64, 1, 1) == WSE2.op_issue_cycles + 16
    assert local_gemm_cycles(WSE2, 64, 1, 1, dtype="fp32") == WSE2.op_issue_cycles + 64


# ------------------------------------------------------------------------------------------------
# MeshGEMM
# ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(M=st.integers(1, 200), K=st.integers(1, 200), N=st.integers(1, 200))
def test_one_pe_meshgemm_is_local_gemm_plus_zero_c(M, K, N):
    r = meshgemm(SPEC, 1, 1, M, K, N)
    local = local_gemm_cycles(SPEC, M, K, N)
    zero_c = SPEC.op_issue_cycles + math.ceil(M * N / SPEC.simd_width("mov", "fp16"))
    assert r.comm_cycles == 0
    assert r.parts["align"] == 0 and r.parts["step_shift"] == 0
    assert r.total_cycles == zero_c + local  # no shift, so no join either
    assert r.colors_per_pe == 0


@pytest.mark.parametrize("P", [3, 4, 7, 16])
def test_square_meshgemm_reference_formula(P):
    """§4.5 as the kernel runs it, written out from the program (meshgemm/gemm.py):

    * a shifting step issues 2 receives then 2 sends (c_op each) and multiplies; A's send streams
      from 3c_op, B's after it (one ramp) until 3c_op + 2T; the neighbours do the same, so the
      receives stream ρ + 2α later; the product, from 4c_op, loses a cycle to each cycle in which
      one of them moves: 2T + ρ + 2α − c_op; then the join on 4 ops is 4 task activations;
    * the skew: the middle row rotates ⌊P/2⌋ rounds of receive + send, the stream and a join on 2;
    * the final step neither shifts nor joins."""
    M = K = N = 24 * P
    m = k = n = 24
    T = m * k
    c, rho, a2, ct = SPEC.op_issue_cycles, SPEC.ramp_cycles, 2 * SPEC.hop_cycles, SPEC.task_cycles
    comp = local_gemm_cycles(SPEC, m, k, n)
    stall = 2 * T + rho + a2 - c
    step = 4 * c + comp + stall + 4 * ct
    align = (P // 2) * (2 * c + rho + a2 + T + 2 * ct)
    zero_c = t_vec(SPEC, m * n, "mov")
    expected = align + zero_c + (P - 1) * step + comp
    r = meshgemm(SPEC, P, P, M, K, N)
    assert r.total_cycles == expected
    assert r.parts["steps"] == P
    assert r.parts["step_compute"] == comp and r.parts["step_stall"] == stall
    assert r.parts["step_shift"] == 3 * c + 2 * T + rho + a2  # the last wavelet of a step moves
    assert r.compute_cycles == zero_c + P * comp and r.comm_cycles == expected - r.compute_cycles


def test_without_port_contention_the_product_is_not_stalled():
    """With unlimited memory ports (a what-if spec) the moves no longer cost the product anything;
    with a ramp that takes any number of wavelets a cycle the two sends overlap."""
    P, D = 8, 8 * 24
    free = SPEC.with_params(memory_read_ports=0, memory_write_ports=0)
    r = meshgemm(free, P, P, D, D, D)
    assert r.parts["step_stall"] == 0
    assert r.parts["step"] == 4 * SPEC.op_issue_cycles + r.parts["step_compute"] + 4 * SPEC.task_cycles
    wide = SPEC.with_params(ramp_wavelets_per_cycle=0)
    c = SPEC.op_issue_cycles
    assert meshgemm(wide, P, P, D, D, D).parts["step_shift"] == 4 * c + 576 + SPEC.ramp_cycles + 2 * SPEC.hop_cycles


def test_comm_bound_meshgemm_steps_are_shift_limited():
    # one-column K tiles with a big m and n: the shift (m·k elements) outweighs one FMAC sweep
    r = meshgemm(SPEC, 8, 8, 8 * 4000, 8, 8)
    assert r.parts["step_shift"] > r.parts["step_compute"]
    assert r.total_cycles > 7 * (SPEC.task_cycles + r.parts["step_shift"])


def test_non_square_uses_lcm_steps():
    r = meshgemm(SPEC, 4, 6, 480, 480, 480)
    assert r.parts["steps"] == 12 == math.lcm(4, 6)
    # each physical PE hosts q_x·q_y = 2·3 virtual tiles of (M/Q)×(K/Q)×(N/Q) per step
    assert r.parts["step_compute"] == 6 * local_gemm_cycles(SPEC, 40, 40, 40)
    # per-PE C block is (M/P_y)×(N/P_x) = 120×80; A keeps q_x + 1 slots of m×k (q_x = 2) and B
    # q_y + 1 slots of k×n (q_y = 3), the free slot receiving the next shift; with 3 hosted rows the
    # device skew renames A's slots through a scratch of one row's q_x + 1 tiles of 40×40
    assert r.bytes_per_pe == (3 * 120 * 40 + 4 * 40 * 80 + 120 * 80 + 3 * 40 * 40) * 2
    assert cannon(SPEC, 4, 6, 480, 480, 480).parts["steps"] == 12
    assert summa(SPEC, 4, 6, 480, 480, 480).parts["steps"] == 12


@settings(max_examples=60, deadline=None)
@given(p_y=st.integers(1, 9), p_x=st.integers(1, 9), M=st.integers(1, 300), K=st.integers(1, 300),
       N=st.integers(1, 300))
def test_uneven_dims_cost_as_padded(p_y, p_x, M, K, N):
    """Rotating operands are zero-padded to ⌈D/Q⌉ tiles and charged on padded sizes."""
    Q = math.lcm(p_y, p_x)
    padded = (math.ceil(M / Q) * Q, math.ceil(K / Q) * Q, math.ceil(N / Q) * Q)
    a = meshgemm(SPEC, p_y, p_x, M, K, N)
    b = meshgemm(SPEC, p_y, p_x, *padded)
    assert a.total_cycles == b.total_cycles
    assert a.bytes_per_pe == b.bytes_per_pe
    assert a.parts["steps"] == Q


def test_m10_on_3_rows_charges_tiles_of_4():
    r = meshgemm(SPEC, 3, 3, 10, 12, 12)
    assert r.bytes_per_pe == (2 * 4 * 4 + 2 * 4 * 4 + 4 * 4) * 2
    assert r.parts["step_compute"] == local_gemm_cycles(SPEC, 4, 4, 4)
    assert r.total_cycles == meshgemm(SPEC, 3, 3, 12, 12, 12).total_cycles
    assert r.total_cycles > meshgemm(SPEC, 3, 3, 9, 12, 12).total_cycles


def test_meshgemm_bytes_per_pe():
    r = meshgemm(SPEC, 8, 8, 512, 256, 1024, dtype="fp32")
    m, k, n = 64, 32, 128
    assert r.bytes_per_pe == (2 * m * k + 2 * k * n + m * n) * 4


@pytest.mark.parametrize("P,colors", [(1, 0), (2, 4), (3, 9), (4, 9), (16, 9), (750, 9)])
def test_meshgemm_colours(P, colors):
    assert meshgemm(SPEC, P, P, 1500, 1500, 1500).colors_per_pe == colors


def test_cannon_and_summa_colours():
    assert cannon(SPEC, 8, 8, 64, 64, 64).colors_per_pe == 9  # 2 plain rings + the skew ring
    assert summa(SPEC, 8, 8, 64, 64, 64).colors_per_pe == 8  # two directions x two alternating, per axis


# ------------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [WSE2, SPEC], ids=["wse2", "distinct"])
@pytest.mark.parametrize("mesh", [(8, 8), (16, 16), (33, 33), (12, 4), (9, 1)])
def test_cannon_charges_the_latest_entry_into_its_steps(spec, mesh):
    """Every PE waits before the steps for its phase in both rings' steady state ((P − 1 − pos)·ε,
    ε = α(P − 2)/P, in whole delay units) plus the lag its row's skew did not leave it: a skew
    round into a PE is (P_x − 2)·α later per crossing of the wrap link on its latest path. Walked
    here path by path over every PE (reverse rounds take data from p + 1, the wrap into P − 1;
    forward rounds from p − 1, the wrap into 0), the latest entry is the rule's phase term."""
    from fractions import Fraction
    from plmr.gemm import most_skew_rounds, phase_units
    p_y, p_x = mesh
    Q = math.lcm(p_y, p_x)
    hop, unit = phase_units(spec, "fp16")
    rounds = most_skew_rounds(Q, p_y, 1) if p_x > 1 and p_y > 1 else 0

    def units(cycles):  # to the nearest delay unit, halves up
        return math.floor(Fraction(cycles) / unit + Fraction(1, 2))

    def ring_phase(n, pos):
        return units(Fraction((n - 1 - pos) * (n - 2) * hop, n)) if n > 2 else 0

    lag = max(p_x - 2, 0) * hop
    crossings = {}
    for y in range(p_y):
        rev = y <= Q - y
        for x in range(p_x):
            crossings[x, y] = sum(1 for r in range(rounds)
                                  if (rev and (x + r) % p_x == p_x - 1) or (not rev and (x - r) % p_x == 0))
    most = max(crossings.values())
    latest = max(crossings[x, y] * lag + unit * (ring_phase(p_x, x) + ring_phase(p_y, y)
                                                 + units((most - crossings[x, y]) * lag))
                 for x in range(p_x) for y in range(p_y))
    cn = cannon(spec, p_y, p_x, 16 * Q, 16 * Q, 16 * Q)
    assert cn.parts["phase"] == latest


def test_cannon_within_a_few_percent_of_meshgemm_at_scale():
    """No barrier separates the steps, so around a plain ring the P links add up to 2(P − 1) hops per
    lap, the same as the interleaved ring's 2P: per step Cannon pays the mean link; what it pays more
    is its PEs' spread of entry phases (about 3(P − 2)·α: both rings' phases and the skew's wrap lag),
    2.6% of a 2K GEMM at 512² (verified in the simulator at 64²: docs/BENCHMARKS.md)."""
    for P, most in ((64, 1.001), (256, 1.01), (512, 1.03)):
        mg = meshgemm(WSE2, P, P, 2048, 2048, 2048).total_cycles
        cn = cannon(WSE2, P, P, 2048, 2048, 2048).total_cycles
        assert mg <= cn <= most * mg, (P, mg, cn)


@pytest.mark.parametrize("n", [64, 256])
def test_summa_and_meshgemm_ordered_as_simulated(n):
    """With the next panel prefetched and no barrier, a relay issues one op per line per step and
    joins 4, where a Cannon step issues 4 and MeshGEMM skews first; SUMMA's chains cost it several
    far-end latencies. Which wins turns on the tile and on β (on 4×4×4 tiles at 16² MeshGEMM, on
    16×16×16 SUMMA at the shipped overheads; on 2K at 128²-256² they are within 2%): the model orders
    the two as the simulator does, timing-only at 16²."""
    from meshgemm.kernel import KernelRequest
    from meshgemm.registry import build_kernel
    from meshgemm.run import run_kernel

    def both(name):
        req = KernelRequest(name, (16, 16), n, n, n, dtype="fp16", functional=False)
        rep = run_kernel(build_kernel(req, WSE2), WSE2, mode="timing")
        return rep.predicted_cycles, rep.simulated_cycles

    (sm_p, sm_s), (mg_p, mg_s) = both("summa"), both("meshgemm")
    assert (sm_p < mg_p) == (sm_s < mg_s), (sm_p, sm_s, mg_p, mg_s)


def test_summa_first_panel_reaches_the_far_end():
    sm = summa(WSE2, 256, 256, 2048, 2048, 2048)
    assert sm.parts["first_panel"] > 255 * (WSE2.hop_cycles + WSE2.ramp_cycles)  # the far end


@pytest.mark.parametrize("P", [3, 5, 8, 16])
def test_summa_line_first_panel_reaches_the_far_end(P):
    """One row of P PEs, 1×1×1 panels (one wavelet each): after zeroing C, PE 0 owns panel 0 and sends
    it up the line from c_op on; every other PE issues its relay at c_op, so the panel reaches PE
    P − 1 after ρ + α (the owner's send) and P − 2 relay stages of ρ + α + β, lands in one cycle and
    the join on 2 ops costs 2 task activations."""
    c, rho, a, b, ct = (SPEC.op_issue_cycles, SPEC.ramp_cycles, SPEC.hop_cycles, SPEC.relay_cycles,
                        SPEC.task_cycles)
    r = summa(SPEC, 1, P, 1, P, P)
    assert r.parts["first_panel"] == c + rho + a + (P - 2) * (rho + a + b) + 1 + 2 * ct


@pytest.mark.parametrize("P", [4, 6, 9, 16])
def test_summa_line_pays_two_chains_when_relays_dominate(P):
    """Why the farthest chain is not paid once: on a row of P PEs (panel t owned by PE t) the first
    panel reaches PE P − 1 after P − 2 relay stages, so that PE starts every later step that much late;
    it owns the last panel, which it sends back down the line to PE 0 through P − 2 more relay stages,
    each issued by a PE no earlier than its own step start. Once β dominates every other cost, the run
    therefore grows by 2(P − 2) cycles per cycle of β (checked against the simulator in
    tests/meshgemm/test_gemm_kernels.py)."""
    runs = [summa(WSE2.with_params(relay_cycles=beta), 1, P, 1, P, P).total_cycles for beta in (400.0, 401.0)]
    assert runs[1] - runs[0] == 2 * (P - 2)


@pytest.mark.parametrize("P", [8, 32, 128])
def test_meshgemm_step_is_constant_cannon_pays_the_average_link(P):
    """A step's last wavelet moves when B's receive ends: both sends leave one ramp from the third
    issue on (2 tiles of 256), the receives follow ρ + h·α behind; Cannon's links average 2(P−1)/P hops."""
    D = 16 * P
    mg, cn = meshgemm(SPEC, P, P, D, D, D), cannon(SPEC, P, P, D, D, D)
    issued = 3 * SPEC.op_issue_cycles
    assert mg.parts["step_shift"] == issued + 2 * 256 + SPEC.ramp_cycles + 2 * SPEC.hop_cycles
    assert cn.parts["step_shift"] == pytest.approx(issued + 2 * 256 + SPEC.ramp_cycles
                                                   + 2 * (P - 1) / P * SPEC.hop_cycles)


@settings(max_examples=40, deadline=None)
@given(P=st.integers(5, 64), t=st.integers(1, 32))
def test_meshgemm_never_slower_than_cannon_square(P, t):
    """From P = 5 on, Cannon's wrap (P − 2 extra hops, in the skew and in its PEs' entry phases)
    outweighs the interleaved ring's second hop. At P = 3 both rings' links add up to 4 hops and the
    two stay within a cycle (the simulator: 875 cycles each at 12×12×12); at P = 4 within a few (with
    these parameters at 12×12×12 the simulator runs MeshGEMM in 916 cycles and Cannon in 918, the
    formulas say 920 and 917)."""
    D = P * t
    assert meshgemm(SPEC, P, P, D, D, D).total_cycles <= cannon(SPEC, P, P, D, D, D).total_cycles


# ------------------------------------------------------------------------------------------------
# dist-GEMM-T
# ------------------------------------------------------------------------------------------------


def test_gemmt_one_column_has_no_reduce():
    """One column of 6 rows: each step issues the B shift (receive, then send from the second issue
    on, w = 10·32 wavelets), multiplies (the product loses a cycle to each cycle the shift moves a
    wavelet) and joins the 2 ops; no chain. A row's receive takes its ring predecessor's send
    ρ + hops·α later, so its step ends at max(its own start, its predecessor's start + ρ + hops·α)
    + 2c_op + product + w + 2 task activations: the lateness walks backwards round the ring. The
    interleaved ring (0, 2, 4, 5, 3, 1) has links of 2, 2, 1, 2, 2, 1 hops; over the 5 shifting steps
    the longest walk takes 5 consecutive links, 9 hops, and pays ρ on each (the simulator: 28,763
    cycles). The last step only multiplies."""
    r = gemmt(SPEC, 6, 1, 60, 32, 60)
    comp = local_gemm_cycles(SPEC, 10, 32, 10)
    c = SPEC.op_issue_cycles
    step = 2 * c + comp + 10 * 32 + 2 * SPEC.task_cycles
    assert r.total_cycles == 5 * step + 5 * SPEC.ramp_cycles + 9 * SPEC.hop_cycles + comp
    assert r.colors_per_pe == 3  # only the y-ring


def test_gemmt_one_pe():
    r = gemmt(SPEC, 1, 1, 10, 20, 30)
    assert r.comm_cycles == 0
    assert r.total_cycles == local_gemm_cycles(SPEC, 10, 20, 30)  # no shift, no chain, no join
    assert r.colors_per_pe == 0


@pytest.mark.parametrize("P,tile", [(3, 4), (5, 2), (8, 1)])
def test_gemmt_one_row_reduces_into_its_first_pe(P, tile):
    """One row (P_y = 1): a single step, no B shift, the root is column 0. Every member zero-fills and
    multiplies (fill + product) and issues its chain op (c_op); PE P − 1 sends, its partial reaches
    the root after ρ + α and P − 2 receive-add-forward stages of ρ + α + β and lands in m·n_b cycles
    (one fp16 element a wavelet; fewer wavelets than the links hold, so nobody waits for the root);
    the root's join on its two receive-adds is 2 task activations."""
    c, rho, a, b, ct = (SPEC.op_issue_cycles, SPEC.ramp_cycles, SPEC.hop_cycles, SPEC.relay_cycles,
                        SPEC.task_cycles)
    r = gemmt(SPEC, 1, P, tile, tile * P, tile)
    fill = t_vec(SPEC, tile * tile, "mov")
    comp = local_gemm_cycles(SPEC, tile, tile, tile)
    assert r.total_cycles == fill + comp + c + rho + a + (P - 2) * (rho + a + b) + tile * tile + 2 * ct
    assert r.colors_per_pe == 4


def test_gemmt_colours_and_steps():
    r = gemmt(SPEC, 4, 5, 40, 50, 40)
    assert r.colors_per_pe == 4 + 3
    assert r.parts["steps"] == 4


def test_gemmt_bytes():
    r = gemmt(SPEC, 4, 4, 64, 64, 64)
    m = n_b = k = 16
    assert r.bytes_per_pe == (m * k + 2 * n_b * k + 2 * m * n_b) * 2


@settings(max_examples=300, deadline=None)
@given(p_y=st.integers(1, 60), q_y=st.integers(1, 40), q_x=st.integers(1, 40), comm_x=st.booleans(),
       round_t=st.integers(0, 500), copy_t=st.integers(0, 200), data=st.data())
def test_skew_row_cost_counted_equals_the_row_by_row_loop(p_y, q_y, q_x, comm_x, round_t, copy_t, data):
    """The counted skew (arithmetic series, residues) against the loop over every hosted row."""
    from plmr.gemm import _skew_row_cost, _skew_row_cost_looped

    pos = data.draw(st.integers(0, p_y - 1))
    Q = p_y * q_y
    for spec in (WSE2, WSE3):
        assert (_skew_row_cost(spec, Q, q_x, q_y, pos, comm_x, float(round_t), float(copy_t))
                == _skew_row_cost_looped(spec, Q, q_x, q_y, pos, comm_x, float(round_t), float(copy_t)))


@pytest.mark.parametrize("p_y,p_x", [(2, 3), (3, 2), (4, 6), (6, 4), (5, 5), (4, 10), (1, 3), (3, 1)])
def test_restore_copies_are_the_programs(p_y, p_x):
    """The chain rule charges as many weight-row copies as the layer program writes after Q shifts."""
    from meshgemm.prefill_gemm import GemmGeometry, MeshGemmRings, WeightSlots
    from plmr.gemm import restore_copies

    geom = GemmGeometry(p_y, p_x, 4)
    rings = MeshGemmRings.__new__(MeshGemmRings)  # restore_b reads only the geometry
    rings.geom = geom
    w = WeightSlots(0, 2, 3, geom.q_x, geom.q_y, spare=10_000)
    assert restore_copies(geom.q, geom.q_y, geom.comm_y) == len(rings.restore_b(w))


def test_a_chain_shares_one_skew():
    """Q, K and V from one skewed activation cost less than three stand-alone chains by two skews."""
    from plmr.gemm import meshgemm_chain

    one = meshgemm_chain(WSE2, 6, 8, 8, 16, (16, 8, 8))
    alone = sum(meshgemm_chain(WSE2, 6, 8, 8, 16, (n,)).total_cycles for n in (16, 8, 8))
    assert alone - one.total_cycles == pytest.approx(2 * (one.parts["skew"] + one.parts["load_a"]))
    assert one.parts["skew"] > 0


def test_meshgemm_chain_floor_never_exceeds_the_chain():
    """The prefill search's floor of a MeshGEMM chain (its FMACs alone) against the chain, on 1,500
    random grids (awkward lcms included), tiles, chains of 1-3 products, dtypes and parameters; and
    on a 1x1 grid with no issue cost, where nothing moves and the one step is its products, the
    chain is the floor plus the load, the fill and the conversion (worked out by hand)."""
    import random

    from plmr.gemm import meshgemm_chain, meshgemm_chain_floor

    rng = random.Random(37)
    specs = [WSE2, WSE3, WSE2.with_params(op_issue_cycles=0.0, ramp_cycles=0.5, hop_cycles=3.0)]
    for _ in range(1500):
        spec = rng.choice(specs)
        p_y, p_x = rng.randint(1, 60), rng.randint(1, 60)
        if rng.random() < 0.3:
            p_y, p_x = rng.randint(1, 1000), rng.randint(1, 1000)
            if math.lcm(p_y, p_x) > 4000:
                continue
        m, k = rng.randint(1, 40), rng.randint(1, 40)
        ns = tuple(rng.randint(0, 30) for _ in range(rng.randint(1, 3)))
        dtype, acc = rng.choice([("fp16", "fp32"), ("fp16", "fp16"), ("fp32", "fp32")])
        biases = tuple(rng.random() < 0.3 for _ in ns)
        floor = meshgemm_chain_floor(spec, p_y, p_x, m, k, ns, dtype, acc, biases).total_cycles
        assert floor <= meshgemm_chain(spec, p_y, p_x, m, k, ns, dtype, acc, biases).total_cycles, (p_y, p_x, m, k, ns)
    spec = WSE2.with_params(op_issue_cycles=0.0)
    m, k, n = 16, 8, 4
    fmacs = k * n * math.ceil(m / spec.simd_width("fmac", "fp16_fp32"))
    chain = meshgemm_chain(spec, 1, 1, m, k, (n,), "fp16", "fp32").total_cycles
    floor = meshgemm_chain_floor(spec, 1, 1, m, k, (n,), "fp16", "fp32").total_cycles
    assert floor == fmacs
    load, fill, convert = t_vec(spec, m * k, "mov", "fp16"), t_vec(spec, m * n, "mov", "fp32"), m * n
    assert chain == floor + load + fill + convert


def test_skew_rounds_and_copies_count_each_rows_rotations():
    """The closed forms of the balanced skew (``row_skew_rounds``, ``row_skew_copies``,
    ``most_skew_rounds``) against rotating every hosted row u = pos·q_y + j one by one: reverse by
    u, or forward by Q − u when shorter; a row with several hosted rows copies back the ones left
    d ≠ 0 of LA = q_x + 1 slots off, a single column the ones with u mod q_x ≠ 0."""
    from plmr.gemm import most_skew_rounds, row_skew_copies, row_skew_rounds
    for Q in list(range(2, 41)) + [130, 360]:
        divisors = [d for d in range(1, Q + 1) if Q % d == 0]
        for q_y in divisors:
            p_y = Q // q_y
            rounds = []
            for pos in range(p_y):
                hosted = range(pos * q_y, pos * q_y + q_y)
                rounds.append(sum(u if u <= Q - u else Q - u for u in hosted))
                assert row_skew_rounds(Q, q_y, pos) == rounds[-1]
                for q_x in divisors if Q <= 40 else [1, Q]:
                    la = q_x + 1
                    off = [u % la if u <= Q - u else (u - Q) % la for u in hosted]
                    assert row_skew_copies(Q, q_x, q_y, pos, True) == (sum(d != 0 for d in off) if q_y > 1 else 0)
                    if q_x == Q:
                        assert row_skew_copies(Q, q_x, q_y, pos, False) == sum(u % q_x != 0 for u in hosted)
            assert most_skew_rounds(Q, p_y, q_y) == max(rounds)


def test_balanced_skew_costs_the_slowest_rows_skew_on_square_meshes():
    """On a square mesh every physical row pads its rounds to the middle row's ⌊P/2⌋ (one hosted
    row each, no copies), which is what the slowest row of the method's skew takes: the balanced
    program's skew costs the same, and its steps no longer leave lockstep."""
    for P in (3, 4, 8, 9, 16):
        bal = meshgemm(SPEC, P, P, 24 * P, 24 * P, 24 * P)
        raw = meshgemm(SPEC, P, P, 24 * P, 24 * P, 24 * P, balance_skew=False)
        assert bal.parts["align"] == raw.parts["align"] > 0
