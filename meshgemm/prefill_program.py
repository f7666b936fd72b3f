"""The prefill layer as one mesh program (waferllm-method.md §3.2, §3.6, §5, §10): every operator of a
decoder layer as code of one body, placed on every PE of a P_y × P_x region, run for the region's
resident layers by one launch.

Layout (the one `model_layout.PrefillLayout` describes, so host packing and device code agree):
activations are ``L_y feat_x`` in MeshGEMM's natural layout on the virtual Q×Q mesh — per PE q_y × q_x
tiles of m tokens × one feature tile, tile (j, i) at (j·q_x + i)·m·width, column-major (a feature's m
tokens contiguous), so for each token tile j a PE's features form one column-major m × (q_x·width)
block. The ops, per layer (the order `block_dataflow.PrefillDataflow.layer` follows):

| phase | code |
|---|---|
| ``attn_norm`` | RMSNorm: Σx² per token over the PE's features, allreduce along x (all columns, `prefill_chains`), rsqrt(Σ/E + eps), x·r per feature, × γ (host-expanded tile) |
| ``qkv`` | MeshGEMM chain (`prefill_gemm`): each column waits out its lead from the norm's broadcast (`MeshGemmRings.resync`), one copy and skew of the normed activation, then Q, K and V products (fp32 accumulator, rounded once), biases (host-expanded tiles); K, V go to the layer's cache slot |
| ``rope`` | rotate-half on every head chunk with the column's pairs, cos/sin of each row's global token index (host tables) |
| ``attention`` | fused ring attention (`prefill_attention`) |
| ``o_proj``, ``h_attn`` | MeshGEMM, residual add |
| ``mlp_norm`` | RMSNorm |
| ``gate_up`` | MeshGEMM chain, resynced as the Q, K, V one: gate, up |
| ``act`` | SiLU(gate) ⊙ up |
| ``down``, ``h_out`` | MeshGEMM, residual add |

Buffers stay resident between launches: the residual stream ``X`` (the host writes the prompt's
embedding rows, reads the result), the KV cache ``KVC`` (per resident layer: K after RoPE, then V,
natural layout), and the weights ``WB`` (every resident layer, pre-skewed, one spare slot row).

Numerics follow `waferllm.reference` (method §10): products accumulate in fp32 (``acc``) and round
once to the model dtype; RMSNorm statistics and the softmax in fp32; biases, residuals and
SiLU ⊙ up in the model dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from meshgemm import prefill_attention as A
from meshgemm.kernel import ColourMap
from meshgemm.model_layout import PrefillLayout
from meshgemm.prefill_chains import CHAIN_COLOURS, ROOT, SegmentRoles, XChains
from meshgemm.prefill_gemm import GemmGeometry, MeshGemmRings, WeightSlots, skew_rounds
from plmr import gemm as plmr_gemm
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.prefill_memory import (ATTENTION_PARAMS, BIASES, WEIGHTS, PrefillModel, PrefillTiles, bias_cols,
                                 kv_block, prefill_buffers, prefill_tiles, rope_pairs_max)
from simulator.body import Body
from simulator.expr import Expr, Param, Var, X, Y, as_expr, eq, max_, min_, names, select
from simulator.instructions import Add, Copy, Fill, Mul, Ref, Rsqrt, Scale, Silu
from simulator.program import MeshProgram
from simulator.statements import Assign, If, Loop, Timestamp, Wait, blocks_of, walk, with_blocks

PHASES = ("attn_norm", "qkv", "rope", "attention", "o_proj", "h_attn", "mlp_norm", "gate_up", "act", "down",
          "h_out")
#: Buffers the host writes or reads (the rest are the program's scratch, not exported).
EXPORTED = ("X", "KVC", "WB", "NB", "BB", "COS", "SIN", "NSIN", "EPS")
DTYPES = ("fp32", "fp16")


class Sizes(PrefillTiles):
    """Per-PE tile sizes of a prefill layout (all PEs allocate the same): `plmr.prefill_memory`'s tiles,
    which the planner reads too, read off the layout here and checked equal to them when a program is
    built."""

    @classmethod
    def of(cls, lay: PrefillLayout) -> "Sizes":
        g = lay.geom
        return cls(g.q, g.q_x, g.q_y, lay.tokens.alloc[0] // g.q_y, lay.hidden.alloc[0] // g.q_x,
                   lay.ffn.alloc[0] // g.q_x, lay.q.alloc[0] // g.q_x, lay.kv.alloc[0] // g.q_x)


@dataclass
class PrefillProgram:
    """A built prefill program for one region and the maps the host needs to load and read it."""

    program: MeshProgram
    layout: PrefillLayout
    sizes: Sizes
    layers: tuple[int, ...]  # model layer index of each resident layer
    dtype: str
    acc: str
    weight_offsets: dict[str, int]  # offset of each weight inside one layer's block of WB
    layer_weights: int  # elements of one layer's block of WB
    bias_offsets: dict[str, int]
    layer_biases: int
    window: A.WindowRule
    debug_stops: bool
    stats: dict = field(default_factory=dict)

    @property
    def p_y(self) -> int:
        return self.layout.p_y

    @property
    def p_x(self) -> int:
        return self.layout.p_x

    @property
    def kv_block(self) -> int:
        s = self.sizes
        return 2 * s.q_y * s.cols(s.tkv) * s.m


def build_prefill_program(spec, hardware: HardwareSpec, mesh: tuple[int, int], seq_len: int,
                          layers: tuple[int, ...] | None = None, dtype: str = "fp32", acc: str = "fp32",
                          debug_stops: bool = False, probes: list[tuple[int, int]] | None = None) -> PrefillProgram:
    """Build the prefill program of ``layers`` (model layer indices, default all) on a ``mesh`` = (P_y,
    P_x) region for a prompt of ``seq_len`` tokens. ``debug_stops``: the launch takes a ``stop`` phase
    index (`PHASES`) after which it ends (op-by-op checks). ``probes``: PEs (x, y) that timestamp every
    phase (default: the four corners)."""
    if dtype not in DTYPES or acc not in DTYPES:
        raise InputError(f"prefill dtype and accumulator must be one of {', '.join(DTYPES)}, got {dtype}/{acc}")
    p_y, p_x = mesh
    lay = PrefillLayout(spec, p_y, p_x, seq_len)
    layers = tuple(range(spec.num_layers)) if layers is None else tuple(layers)
    if not layers:
        raise InputError("a prefill region needs at least one layer")
    s = Sizes.of(lay)
    mod = PrefillModel.of(spec)
    tiles = prefill_tiles(mod, p_y, p_x, seq_len)
    if tiles != PrefillTiles(*(getattr(s, k) for k in PrefillTiles.__dataclass_fields__)):
        raise AssertionError(f"prefill tiles: the layout's {s} differ from plmr.prefill_memory's {tiles}")
    heads = lay.heads
    n_rep = heads.n_rep
    nl = len(layers)
    prog = MeshProgram(p_x, p_y, hardware, name="prefill")
    geom = GemmGeometry(p_y, p_x, s.m)

    # ---- colours: MeshGEMM rings (<= 9), x chains (4) ----
    n_ring = (3 if p_x >= 3 else 2 if p_x == 2 else 0) * (2 if p_x >= 3 else 1) + (3 if p_y >= 3 else 2 if p_y == 2 else 0)
    n_chain = CHAIN_COLOURS if p_x > 1 else 0
    cmap = ColourMap(hardware, n_ring + n_chain, "prefill layer")
    rings = MeshGemmRings(prog, geom, lambda i: cmap[i])
    if rings.slots != n_ring:
        raise AssertionError(f"ring colour count {rings.slots} != {n_ring}")
    chains = XChains(prog, lambda i: cmap[n_ring + i])
    norm_roles = SegmentRoles.of("nr", p_x, [tuple(range(p_x))])

    # ---- per-column head parameters ----
    has = np.array([1 if heads.column_kv_heads[c] else 0 for c in range(p_x)], dtype=np.int64)
    np_col = np.array([heads.n_pairs(c) if has[c] else 0 for c in range(p_x)], dtype=np.int64)

    # ---- sizes ----
    Ecol, Fcol, Qcol, KVcol = s.cols(s.e), s.cols(s.f), s.cols(s.tq), s.cols(s.tkv)
    w_off, off = {}, 0
    for name in WEIGHTS:
        k, n = s.gemm(name)
        w_off[name] = off
        off += s.q_y * s.q_x * k * n
    WL = off
    spare = nl * WL
    bias_names = [b for b in BIASES if mod.has_bias(b)]
    b_off, off = {}, 0
    for b in bias_names:
        b_off[b] = off
        off += bias_cols(s, b) * s.m
    BL = off
    windows = [spec.layer_sliding_window(i) for i in layers]
    wrule = A.WindowRule.of(windows, s.T, p_y)
    ashape = A.AttentionShape(s.m, s.q_y, n_rep, spec.head_dim, KVcol, Qcol, p_y, spec.head_dim ** -0.5)
    att_params = A.column_params(heads, ashape)
    KB = kv_block(s)  # one layer's K|V cache block

    # ---- body ----
    b = Body("prefill", doc="one prefill decoder layer per iteration of a loop over the resident layers")
    rings.declare(b)
    chains.declare(b)
    norm_roles.declare(b)
    for p in ("npair", "has_heads", "probe"):
        b.param(p)
    dt = dtype
    # every buffer from the table the planner charges (plmr.prefill_memory); the attention's lengths
    # are expressions of the column's parameters
    table = prefill_buffers(mod, p_y, p_x, seq_len, nl, dtype, acc, col={k: Param(k) for k in ATTENTION_PARAMS},
                            mx=max_, mn=min_)
    A.declare(b)
    for name, (bdt, n) in table.items():
        b.buffer(name, bdt, n, export=name in EXPORTED)
    b.var("ly", "i32")
    b.var("nl", "i32")
    b.var("stop", "i32")
    b.var("rj", "i32")
    b.var("rf", "i32")
    ly = Var("ly")

    # ---- fragments ----
    def norm(gamma_off: Expr) -> list:
        """RMSNorm X -> A1 with the γ tile at ``gamma_off`` in NB."""
        j, f = Var("rj"), Var("rf")
        row, sq = Ref("X", j * Ecol * s.m, Ecol * s.m), Ref("SQ", 0, Ecol * s.m)
        if dt == "fp32":
            squares: tuple = (Mul(sq, row, row),)
        else:  # one CSL op each (no builtin multiplies two f16 vectors into f32): widen (@fh2s, exact), square
            squares = (Copy(sq, row), Mul(sq, sq, sq))
        code = [Loop(s.q_y, "rj", squares + (
            Copy(Ref("RS", j * s.m, s.m), Ref("SQ", 0, s.m)),
            Loop(Ecol - 1, "rf", (Add(Ref("RS", j * s.m, s.m), Ref("RS", j * s.m, s.m), Ref("SQ", (f + 1) * s.m, s.m)),)),
        ))]
        if p_x > 1:
            code += norm_roles.allreduce(Ref("RS", 0, s.T))
        if dt == "fp32":
            scaled: tuple = (Loop(Ecol, "rf", (Mul(Ref("A1", (j * Ecol + f) * s.m, s.m),
                                                   Ref("X", (j * Ecol + f) * s.m, s.m), Ref("RS", j * s.m, s.m)),)),)
        else:  # x·rs in f32, rounded once to f16 as HF's RMSNorm does: widen, scale each feature, narrow (@fs2h)
            scaled = (Copy(sq, row),
                      Loop(Ecol, "rf", (Mul(Ref("SQ", f * s.m, s.m), Ref("SQ", f * s.m, s.m), Ref("RS", j * s.m, s.m)),)),
                      Copy(Ref("A1", j * Ecol * s.m, Ecol * s.m), sq))
        code += [Scale(Ref("RS", 0, s.T), Ref("RS", 0, s.T), 1.0 / spec.hidden_size),
                 Add(Ref("RS", 0, s.T), Ref("RS", 0, s.T), Ref("EPS", 0, s.T, stride=0)),
                 Rsqrt(Ref("RS", 0, s.T), Ref("RS", 0, s.T)),
                 Loop(s.q_y, "rj", scaled + (
                     Mul(Ref("A1", j * Ecol * s.m, Ecol * s.m), Ref("A1", j * Ecol * s.m, Ecol * s.m),
                         Ref("NB", gamma_off, Ecol * s.m)),))]
        return code

    def weight(name: str) -> WeightSlots:
        k, n = s.gemm(name)
        return WeightSlots(ly * WL + w_off[name], k, n, s.q_x, s.q_y, spare)

    def product(name: str, dst: str, dst_off: Expr | int, ta: int) -> list:
        """One MeshGEMM of the chain (A already loaded and skewed), rounded into ``dst``, plus bias."""
        k, n = s.gemm(name)
        code = [Fill(Ref("CF", 0, s.act(n)), 0.0)] + rings.steps(ta, weight(name), "CF")
        code.append(Copy(Ref(dst, dst_off, s.act(n)), Ref("CF", 0, s.act(n))))
        bname = name + "_bias"
        if bname in b_off:
            width = s.cols(n) * s.m
            j = Var("rj")
            code.append(Loop(s.q_y, "rj", (Add(Ref(dst, as_expr(dst_off) + j * width, width),
                                               Ref(dst, as_expr(dst_off) + j * width, width),
                                               Ref("BB", ly * BL + b_off[bname], width)),)))
        return code

    unit = plmr_gemm.phase_units(hardware, acc)[1]
    lead = plmr_gemm.norm_broadcast_lead(hardware, X, eq(Param(norm_roles.name), ROOT), select)

    def chain(src: str, k_tile: int, items: list[tuple[str, str, Expr | int]], after_norm: bool = False) -> list:
        """``after_norm``: the columns come out of RMSNorm's broadcast apart and wait for the first
        (``MeshGemmRings.resync``)."""
        ta = s.m * k_tile
        code = (rings.resync(lead, unit, "CF") if after_norm else []) + rings.load_a(src, ta) + rings.skew(ta)
        for name, dst, dst_off in items:
            code += product(name, dst, dst_off, ta)
        return code

    def rope() -> list:
        """Rotate-half on q (every head chunk) and k (every KV group) of the column, per token tile."""
        npair = Param("npair")
        ng = Param("ng")  # KV groups with features on the column (1 when P_x >= n_kv)
        w = 2 * npair
        code = []
        j = Var("rj")
        g, r = Var("at_g"), Var("at_r")

        def rotate(buf: str, base: Expr) -> tuple:
            n = npair * s.m
            x1, x2 = Ref(buf, base, n), Ref(buf, base + n, n)
            cos, sin, nsin = (Ref(t, j * n, n) for t in ("COS", "SIN", "NSIN"))
            t1, t2 = Ref("RT", 0, n), Ref("RT2", 0, n)
            return (Mul(t1, x1, cos), Mul(t2, x2, nsin), Add(t1, t1, t2),  # x1' = x1·cos − x2·sin
                    Mul(t2, x2, cos), Mul(x2, x1, sin), Add(x2, x2, t2),  # x2' = x2·cos + x1·sin
                    Copy(x1, t1))

        kv_base = ly * KB
        code.append(Loop(s.q_y, "rj", (
            Loop(ng, "at_g", (Loop(n_rep, "at_r", rotate("QB", (j * Qcol + (g * n_rep + r) * w) * s.m)),)),
            Loop(ng, "at_g", rotate("KVC", kv_base + (j * KVcol + g * w) * s.m)),
        )))
        return [If(eq(Param("has_heads"), 1), tuple(code))]

    kv_k = lambda: ly * KB  # noqa: E731
    kv_v = lambda: ly * KB + s.q_y * KVcol * s.m  # noqa: E731
    phases = {
        "attn_norm": norm(ly * 2 * Ecol * s.m),
        "qkv": chain("A1", s.e, [("q", "QB", 0), ("k", "KVC", kv_k()), ("v", "KVC", kv_v())], after_norm=True),
        "rope": rope(),
        "attention": A.code(ashape, rings, p_x > 1, ly, wrule, dt=dt),
        "o_proj": chain("QB", s.tq, [("o", "H", 0)]),
        "h_attn": [Add(Ref("X", 0, s.q_y * Ecol * s.m), Ref("X", 0, s.q_y * Ecol * s.m), Ref("H", 0, s.q_y * Ecol * s.m))],
        "mlp_norm": norm(ly * 2 * Ecol * s.m + Ecol * s.m),
        "gate_up": chain("A1", s.e, [("gate", "G", 0), ("up", "U", 0)], after_norm=True),
        "act": [Silu(Ref("G", 0, s.q_y * Fcol * s.m), Ref("G", 0, s.q_y * Fcol * s.m)),
                Mul(Ref("G", 0, s.q_y * Fcol * s.m), Ref("G", 0, s.q_y * Fcol * s.m), Ref("U", 0, s.q_y * Fcol * s.m))],
        "down": chain("G", s.f, [("down", "H", 0)]),
        "h_out": [Add(Ref("X", 0, s.q_y * Ecol * s.m), Ref("X", 0, s.q_y * Ecol * s.m), Ref("H", 0, s.q_y * Ecol * s.m))],
    }
    layer_code: list = []
    for i, name in enumerate(PHASES):
        code = phases[name] + [If(eq(Param("probe"), 1), (Timestamp(name),))]
        layer_code += [If(Var("stop") >= i, tuple(code))] if debug_stops else code
    counts: set = set()
    main = hoist_loop_counts([Loop(Var("nl"), "ly", tuple(layer_code))], counts.add)
    for name in sorted(counts):
        b.var(name, "i32")
    main = isolate_waiting_loops(main)
    b.function("prefill", main, args=("nl", "stop") if debug_stops else ("nl",))
    prog.entry = "prefill"

    # ---- placement ----
    probes = probes if probes is not None else sorted({(0, 0), (p_x - 1, 0), (0, p_y - 1), (p_x - 1, p_y - 1)})
    probe = np.zeros((p_y, p_x), dtype=np.int64)
    for (x, y) in probes:
        probe[y, x] = 1
    params = {**rings.values(), **chains.values(), **norm_roles.values(),
              **{k: (lambda a: lambda xs, ys: a[xs])(v) for k, v in att_params.items()},
              "npair": lambda xs, ys: np_col[xs], "has_heads": lambda xs, ys: has[xs],
              "probe": lambda xs, ys: probe[ys, xs]}
    prog.place(b, params=params)
    return PrefillProgram(prog, lay, s, layers, dtype, acc, w_off, WL, b_off, BL, wrule, debug_stops,
                          {"colours": n_ring + n_chain, "skew_rounds_max": skew_rounds(geom)})


def hoist_loop_counts(code, declare) -> list:
    """Every loop whose count is a run-time expression (not a number, a parameter expression or a plain
    variable) gets its count assigned to a variable of its own first (``<var>_n``; ``declare(name)``
    declares it). The simulator's lowering evaluates such a count into a temporary register at loop
    entry and re-reads it at every iteration, and the body's own temporaries reuse that register (a
    loop of ``pb + s`` iterations ran once); a variable holds the count safely."""
    out = []
    for st in code:
        if isinstance(st, Loop):
            body = tuple(hoist_loop_counts(st.body, declare))
            cnt = st.count
            _, coords, vars_, bufs = names(cnt)
            if (coords or vars_ or bufs) and not isinstance(cnt, Var):
                name = f"{st.var}_n"
                declare(name)
                out.append(Assign(name, cnt))
                cnt = Var(name)
            st = Loop(cnt, st.var, body)
        elif blocks_of(st):
            st = with_blocks(st, tuple(tuple(hoist_loop_counts(b, declare)) for b in blocks_of(st)))
        out.append(st)
    return out


def isolate_waiting_loops(code) -> list:
    """Every loop whose body waits, wrapped in a branch that is always taken (on the loop's own
    counter, never negative), recursively. The join rewrite (`simulator.joins`) copies what follows a
    waiting loop into the loop's head and into the end of its body; behind the branch, what follows
    is a state of its own and the copies shrink to a goto (one task activation per loop exit). A
    layer of ~180 DSD ops otherwise becomes ~1,700 after the rewrite (30-70 KB of code)."""
    out = []
    for st in code:
        if isinstance(st, Loop):
            st = Loop(st.count, st.var, tuple(isolate_waiting_loops(st.body)))
            if any(isinstance(x, Wait) for x in walk(st.body)):
                st = If(Var(st.var) >= 0, (st,))
        elif blocks_of(st):
            st = with_blocks(st, tuple(tuple(isolate_waiting_loops(b)) for b in blocks_of(st)))
        out.append(st)
    return out


# ---- host side: packing and reading back ----------------------------------------------------------------
def act_to_pe(block: np.ndarray, s: Sizes) -> np.ndarray:
    """A token-major (T × features) block -> the natural layout [tile j][feature][token t]."""
    T, C = block.shape
    return np.asarray(block).reshape(s.q_y, s.m, C).transpose(0, 2, 1).ravel()


def pe_to_act(v: np.ndarray, s: Sizes, cols: int) -> np.ndarray:
    """The natural layout [j][feature][t] -> a token-major (T × cols) block."""
    return np.asarray(v).reshape(s.q_y, cols, s.m).transpose(0, 2, 1).reshape(s.T, cols)


def pack_constants(pp: PrefillProgram, spec) -> dict[str, object]:
    """Per-PE contents of the buffers that do not depend on the weights or the prompt: RoPE tables of
    each row's tokens and column's pairs, eps. Values: ``f(px, py) -> array``."""
    lay, s = pp.layout, pp.sizes
    heads = lay.heads
    np_dt = np.float16 if pp.dtype == "fp16" else np.float32
    inv = np.asarray(spec.rope_inv_freq(), dtype=np.float64).astype(np.float32)
    ntab = rope_pairs_max(PrefillModel.of(spec), pp.p_x) * s.T  # the table's COS, SIN, NSIN

    def table(px, py, fn):
        out = np.zeros(ntab, dtype=np.float64)
        if not heads.column_kv_heads[px]:
            return out
        a, b = heads.column_pairs[px]
        pos = np.maximum(lay.token_rows(py), 0).astype(np.float32).reshape(s.q_y, s.m)
        ang = pos[:, None, :] * inv[a:b][None, :, None]  # [j][p][t], fp32
        vals = fn(ang).astype(np_dt).astype(np.float64).ravel()
        out[:vals.size] = vals
        return out

    return {"COS": lambda px, py: table(px, py, np.cos), "SIN": lambda px, py: table(px, py, np.sin),
            "NSIN": lambda px, py: table(px, py, lambda a: -np.sin(a)),
            "EPS": lambda px, py: np.array([spec.rms_norm_eps])}


def pack_weights(pp: PrefillProgram, weights) -> dict[str, object]:
    """Per-PE contents of ``WB`` (pre-skewed products), ``NB`` (γ tiles) and ``BB`` (bias tiles) for the
    resident layers, from full weights (`waferllm.weights.ModelWeights`)."""
    lay, s = pp.layout, pp.sizes
    P = lay.placements
    wb = [[[] for _ in range(pp.p_x)] for _ in range(pp.p_y)]
    nb = [[[] for _ in range(pp.p_x)] for _ in range(pp.p_y)]
    bb = [[[] for _ in range(pp.p_x)] for _ in range(pp.p_y)]
    for li in pp.layers:
        lw = weights.layers[li]
        shards = {name: P[name].shard(getattr(lw, name)) for name in WEIGHTS}
        gam = {name: P[name].shard(getattr(lw, name)) for name in ("input_norm", "post_norm")}
        bias = {name: P[name].shard(getattr(lw, name)) for name in pp.bias_offsets}
        for py in range(pp.p_y):
            for px in range(pp.p_x):
                wb[py][px] += [shards[n][py][px].ravel() for n in WEIGHTS]
                nb[py][px] += [np.repeat(gam[n][py][px], s.m) for n in ("input_norm", "post_norm")]
                bb[py][px] += [np.repeat(bias[n][py][px], s.m) for n in pp.bias_offsets]
    tb_max = max(k * n for k, n in (s.gemm(w) for w in WEIGHTS))
    spare = np.zeros(s.q_x * tb_max)
    out = {"WB": lambda px, py: np.concatenate(wb[py][px] + [spare]),
           "NB": lambda px, py: np.concatenate(nb[py][px])}
    if pp.layer_biases:
        out["BB"] = lambda px, py: np.concatenate(bb[py][px])
    return out


def load(device, pp: PrefillProgram, spec, weights) -> None:
    """Write the constants and weights into a functional ``Device`` of the program."""
    for name, fn in {**pack_constants(pp, spec), **pack_weights(pp, weights)}.items():
        for py in range(pp.p_y):
            for px in range(pp.p_x):
                device.write(px, py, name, fn(px, py))


def write_hidden(device, pp: PrefillProgram, h: np.ndarray) -> None:
    """The prompt's hidden rows h [L, E] (embedding rows, or the previous stage's output) into ``X``."""
    s = pp.sizes
    blocks = pp.layout.activation(pp.layout.hidden).shard(np.asarray(h))
    for py in range(pp.p_y):
        for px in range(pp.p_x):
            device.write(px, py, "X", act_to_pe(blocks[py][px], s))


def read_blocks(device, pp: PrefillProgram, buf: str, cols: int, offset: int = 0) -> list:
    """Per-PE token-major blocks (T × cols) of a natural-layout activation stored at ``offset`` in ``buf``."""
    s = pp.sizes
    n = s.q_y * cols * s.m
    return [[pe_to_act(device.read(px, py, buf)[offset:offset + n], s, cols) for px in range(pp.p_x)]
            for py in range(pp.p_y)]


def read_hidden(device, pp: PrefillProgram) -> np.ndarray:
    """The residual stream [L, E] after the launch."""
    s = pp.sizes
    return pp.layout.activation(pp.layout.hidden).gather(read_blocks(device, pp, "X", s.cols(s.e)))


def read_kv(device, pp: PrefillProgram, resident: int) -> tuple[np.ndarray, np.ndarray]:
    """K (after RoPE) and V [L, n_kv·d] of resident layer ``resident`` from its cache slot."""
    s, lay = pp.sizes, pp.layout
    kvc = s.cols(s.tkv)
    half = s.q_y * kvc * s.m
    place = lay.activation(lay.kv)
    k = place.gather(read_blocks(device, pp, "KVC", kvc, resident * pp.kv_block))
    v = place.gather(read_blocks(device, pp, "KVC", kvc, resident * pp.kv_block + half))
    return k, v
