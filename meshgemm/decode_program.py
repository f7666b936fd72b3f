"""The decode step as one mesh program (method §3.4, §3.5, §8, §9): every layer of a region, the hand-offs
between regions, final norm, LM head, argmax and the next token's embedding, on the simulated fabric.

One body, ``decode``, runs on every PE of every region (stage). Per PE it holds its blocks of the stage's
layers (weights, γ, biases, the K and V ring buffers), the embedding and LM-head blocks where the stage has
them, and working vectors. Sizes that differ from PE to PE (E_y, the head layout's features, F_x, V_x) are
computed at run time from the PE's region-local coordinates by the balanced-split rules of
`meshgemm.model_layout` (checked against the layout when the program is built), and buffers are allocated at
the largest size from one table the planner charges too (`plmr.decode_memory`), so parameter sets stay few: roles in the collectives, the stage, hand-off duties.

One launch function (``simulator.Device``), ``step(pos, mode, tok_in)``:

* mode 0 — the token at position ``pos`` (its embedding row already in stage 0's ``x``): every layer of
  every stage in order, hand-offs on the fabric, then the last stage's head (final RMSNorm, LM head, argmax
  along X with ties to the lowest index) and, in stage 0, the next token's embedding (the column whose
  vocabulary block holds it contributes its row, the others zeros, one allreduce along X). With several
  stages the token id travels from the last stage to stage 0 on one route. The next ``step`` starts
  without the host.
* mode 1 — only the head and the embedding, from a hidden state the host wrote into the last stage's
  ``x`` (the first token after a prefill done elsewhere);
* mode 2 — the embedding of the host-given token ``tok_in`` into stage 0's ``x``.

Per layer (op numbers of method §3.4): 1 RMSNorm's local part (Σx² and γ ⊙ x), 2 Q/K/V as one fused local
GEMV of γ ⊙ x (natural blocks, one allreduce along Y that also carries Σx², then the norm's scale
rsqrt(Σx²/E + eps) on the sums, biases after it), 3 RoPE (cos/sin of pos·inv_freq for the
column's pairs, computed once per launch), 4 the KV append with the shift of `meshgemm.kv_cache` (ring slot
t mod capacity; shifting rows copy their oldest entry out, send it north and receive the one from below,
in an order by row parity that never lets two neighbours wait on each other), then 5-7 over the row's
cache in chunks of at most ``plmr.decode_memory.SCORE_CHUNK`` entries (the scores a PE holds do not grow
with the context): 5 scores against the chunk's cached K (feature-major, two ring runs) summed within each
KV group's columns, 6 softmax (chunk 0: max allreduce along Y, exp(s − m) left unnormalised, fp32; later
chunks: a running maximum, the accumulators rescaled where it rises, and once a row took several chunks a
second max along Y and a last rescale), 7 p·V (FMACs per chunk, one allreduce along Y that also carries the
softmax sums, then each head divided by its sum), 8 O projection on W_O transposed in block position (allreduce
along X), 9 residual, 10 RMSNorm's local part, 11 gate/up (fused, along Y, with Σx², then the norm's
scale), 12 SiLU ⊙ up, 13 down (transposed, along X), 14 residual. Seven allreduces per layer (4 along
Y, 2 along X, the per-KV-group scores) where method §3.4 counts ten: a norm's scale is one number per
token, so it is applied after the next GEMV's allreduce, and the softmax sums ride on p·V's (method §3.4's
optional optimisation). Partial products and every
reduction are fp32; results are rounded to the model dtype where `meshgemm.block_dataflow` rounds them.

Reductions (docs/DESIGN.md, "The decode program on the simulated wafer"): one `LineTree` per axis, K = 2
with one-sided level-0 groups (≈ √P_y rows; the X tree's groups are the KV groups' column ranges, so the
score allreduce is level 0 plus a group broadcast). A PE then receives on at most 7 colours with the KV
shift and a hand-off (WSE-2's input queues); with 6 (WSE-3) the Y tree is one chain into the middle row.
The program has no ``Wait``: no continuation or join tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from plmr.decode_memory import DecodeModel, DecodeSizes, buffer_length as _table_length, decode_buffers
from plmr.decode_memory import SCORE_CHUNK, decode_sizes, decode_stage_bytes, layer_strides, score_chunk
from plmr.errors import InputError
from plmr.hardware import HardwareSpec
from plmr.transformer import DECODE_QUEUES_TWO_LEVEL_Y, decode_tree_ks
from simulator.body import Body
from simulator.expr import Const, Expr, ExprLike, Load, Param, Var, X, Y, as_expr, eq, evaluate, max_, min_, select
from simulator.instructions import Add, Copy, Exp, Fill, Fmac, Mul, Recv, Ref, Rsqrt, Scale, Send, Silu
from simulator.program import MeshProgram, Port
from simulator.statements import Assign, If, Loop, Store, Timestamp

from meshgemm.decode_collectives import LineTree
from meshgemm.model_layout import DecodeLayout, ModelDims

F32 = "fp32"
#: The function a decode program exports, and its modes.
STEP = "step"
MODE_STEP, MODE_HEAD, MODE_EMBED = 0, 1, 2
#: Labels of the per-op timestamps of a layer (``timestamps=True``), in program order.
OP_LABELS = ("rmsnorm", "qkv", "rope", "kv_append", "scores", "softmax", "pv", "o_proj", "residual",
             "rmsnorm_post", "gate_up", "silu_mul", "down", "residual_mlp")
#: Labels of the timestamps after the layers: the head on the last stage, then on the first stage the
#: token's return (several stages) and the next token's embedding.
HEAD_LABELS = ("final_norm", "lm_head", "argmax", "token_return", "embedding")


# ---- geometry -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeStage:
    """One region: layers ``first`` … ``last`` (inclusive; none when last < first) at ``origin`` (y, x) of
    the program, holding the embedding (``embedding``) and/or the LM head (``lm_head``)."""

    index: int
    first: int
    last: int
    origin: tuple[int, int]
    embedding: bool = False
    lm_head: bool = False
    #: Columns of the stage's region; 0: the config's P_x (a packed placement's strips are narrower).
    width: int = 0

    @property
    def num_layers(self) -> int:
        return max(0, self.last - self.first + 1)

    def columns(self, grid: tuple[int, int]) -> int:
        return self.width or grid[1]


@dataclass(frozen=True)
class DecodeConfig:
    """Everything a decode program is built from (the bundle stores it as JSON)."""

    model: ModelDims
    grid: tuple[int, int]  # region rows P_y, columns P_x
    stages: tuple[DecodeStage, ...]
    capacity: int  # KV entries per PE per layer
    dtype: str = "fp32"
    timestamps: bool = False  # per-op timestamps on one PE per region (benchmarks)
    #: With ``timestamps``: stamp every row of that PE's column, not only the bottom one. The rows that
    #: shift the KV cache and those holding one more entry are each the busiest for different ops, so
    #: an op's end on the critical path is its latest end over the rows.
    timestamp_rows: bool = False
    layers_only: bool = False  # no embedding, LM head or token return: the layers and hand-offs (benchmarks)
    #: Level-0 group counts of the Y and X line trees (1: one chain, K = 1); None: ``choose_groups``.
    #: ``waferllm compile`` sets the planner's trees here, so the program runs what the plan priced.
    y_groups: int | None = None
    x_groups: int | None = None
    #: The X tree's level-0 group count on stages narrower than P_x (a packed placement's strips).
    strip_x_groups: int | None = None
    #: Cached entries per attention chunk (``plmr.decode_memory.SCORE_CHUNK``; smaller in tests).
    score_chunk: int = SCORE_CHUNK

    def __post_init__(self) -> None:
        p_y, p_x = self.grid
        if p_y < 1 or p_x < 1:
            raise InputError(f"decode grid {p_y}x{p_x}: both sides must be >= 1")
        if self.dtype not in ("fp32", "fp16"):
            raise InputError(f"dtype {self.dtype!r}: use fp32 or fp16")
        if self.capacity < 1:
            raise InputError(f"KV capacity must be >= 1 entry per PE, got {self.capacity}")
        if self.score_chunk < 1:
            raise InputError(f"attention chunk must be >= 1 cached entry, got {self.score_chunk}")
        if not self.stages:
            raise InputError("a decode program needs at least one stage")
        layers = [i for s in self.stages for i in range(s.first, s.last + 1)]
        if layers != list(range(self.model.num_layers)) and layers:
            raise InputError(f"stages must hold layers 0..{self.model.num_layers - 1} in order, got {layers}")
        if not self.layers_only and (not self.stages[0].embedding or not self.stages[-1].lm_head):
            raise InputError("the first stage holds the embedding and the last the LM head")


def snake_origins(spec: HardwareSpec, grid: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """Origins (y, x) of ``count`` regions of ``grid`` on the aligned tiling of one wafer, in serpentine
    order (left to right on even bands, right to left on odd ones), so consecutive stages share an edge
    and every hand-off is one region side long."""
    p_y, p_x = grid
    per_row, rows = spec.mesh_width // p_x, spec.mesh_height // p_y
    if per_row * rows < count:
        raise InputError(f"{count} regions of {p_y}x{p_x} PEs do not fit one {spec.name} "
                         f"({spec.mesh_height}x{spec.mesh_width} PEs hold {per_row * rows})")
    out = []
    for i in range(count):
        band, k = divmod(i, per_row)
        col = k if band % 2 == 0 else per_row - 1 - k
        out.append((band * p_y, col * p_x))
    return out


# ---- per-PE sizes as expressions of the region-local coordinates ------------------------------------------
def _bal(total: int, parts: int, i: ExprLike) -> Expr:
    return Const(total // parts) + (as_expr(i) < total % parts)


def _bal_off(total: int, parts: int, i: ExprLike) -> Expr:
    return as_expr(i) * (total // parts) + min_(i, total % parts)


@dataclass(frozen=True)
class Sizes:
    """Largest per-PE sizes (buffer allocations) and the run-time rules for each PE's own sizes."""

    E: int
    F: int
    V: int
    p_y: int
    p_x: int
    n_rep: int
    half: int  # RoPE pairs per head (d/2)
    n_kv: int
    EYM: int
    FXM: int
    VXM: int
    QXM: int
    KVXM: int
    NHM: int  # query heads per column (score heads in "groups" mode)
    NPM: int  # RoPE pairs per head chunk
    score_mode: str  # "groups" (per-KV-group allreduce), "full" (whole row), "none" (each column alone)

    @classmethod
    def of(cls, lay: DecodeLayout) -> "Sizes":
        s, hl = lay.spec, lay.heads
        P, X_ = lay.p_y, lay.p_x
        n_kv = s.num_kv_heads
        if X_ <= n_kv:
            mode = "none"  # every KV group within one column: no score reduction
        else:
            mode = "full" if n_kv == 1 else "groups"
        nh = max(len(hl.chunks(c)) for c in range(X_))
        return cls(E=s.hidden_size, F=s.intermediate_size, V=s.vocab_size, p_y=P, p_x=X_, n_rep=hl.n_rep,
                   half=s.head_dim // 2, n_kv=n_kv, EYM=max(lay.hidden.sizes), FXM=max(lay.ffn.sizes),
                   VXM=max(lay.vocab.sizes), QXM=max(max(hl.q.sizes), 1), KVXM=max(max(hl.kv.sizes), 1),
                   NHM=max(nh, hl.n_rep if mode != "none" else 1, 1),
                   NPM=max(max(hl.n_pairs(c) for c in range(X_)), 1), score_mode=mode)

    @property
    def table(self) -> DecodeSizes:
        """The same largest sizes as ``plmr.decode_memory`` writes them (``check`` holds them equal)."""
        return DecodeSizes(self.EYM, self.FXM, self.VXM, self.QXM, self.KVXM, self.NHM, self.NPM, self.score_mode)

    # run-time rules (lx, ly: region-local coordinates)
    def ey(self, ly):
        return _bal(self.E, self.p_y, ly)

    def fx(self, lx):
        return _bal(self.F, self.p_x, lx)

    def vx(self, lx):
        return _bal(self.V, self.p_x, lx)

    def v0(self, lx):
        return _bal_off(self.V, self.p_x, lx)

    def head_rules(self, lx) -> tuple[Expr, Expr, Expr]:
        """(KV heads on the column, RoPE pairs per head chunk, first pair index) of method §3.5."""
        if self.p_x < self.n_kv:
            return _bal(self.n_kv, self.p_x, lx), Const(self.half), Const(0)
        q, r = divmod(self.p_x, self.n_kv)
        b = r * (q + 1)
        lx = as_expr(lx)
        g = select(lx < b, lx // (q + 1), r + (lx - b) // q)
        start = g * q + min_(g, r)
        width = Const(q) + (g < r)
        j = lx - start
        npair = self.half // width + (j < self.half % width)
        first = j * (self.half // width) + min_(j, self.half % width)
        return select(npair > 0, 1, 0), npair, first

    def check(self, lay: DecodeLayout) -> None:
        """The run-time rules give the layout's sizes on every column and row (one description)."""
        xs, ys = np.arange(self.p_x), np.arange(self.p_y)
        ev = lambda e, v: np.broadcast_to(np.asarray(evaluate(e, {"x": v}, vectorised=True)), v.shape)  # noqa: E731
        from simulator.expr import Coord
        cx = Coord("x")
        nkv, npair, first = self.head_rules(cx)
        hl = lay.heads
        want = dict(ey=lay.hidden.sizes, fx=lay.ffn.sizes, vx=lay.vocab.sizes, v0=lay.vocab.offsets,
                    nkv=[len(hl.column_kv_heads[c]) for c in range(self.p_x)],
                    npair=[hl.n_pairs(c) for c in range(self.p_x)],
                    first=[hl.column_pairs[c][0] if hl.n_pairs(c) else 0 for c in range(self.p_x)])
        got = dict(ey=ev(self.ey(cx), ys), fx=ev(self.fx(cx), xs), vx=ev(self.vx(cx), xs), v0=ev(self.v0(cx), xs),
                   nkv=ev(nkv, xs), npair=ev(npair, xs), first=np.where(ev(npair, xs) > 0, ev(first, xs), 0))
        for k, w in want.items():
            if not np.array_equal(np.asarray(got[k]), np.asarray(w)):
                raise AssertionError(f"decode sizes: rule {k} gives {list(got[k])}, the layout {list(w)}")
        table = decode_sizes(DecodeModel.of(lay.spec), self.p_y, self.p_x)
        if table != self.table:
            raise AssertionError(f"decode sizes: the layout's largest blocks {self.table}, plmr.decode_memory's {table}")


# ---- colours --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Colours:
    y: tuple[int, ...]
    x: tuple[int, ...]
    shift: tuple[int, ...]
    handoff: tuple[tuple[int, ...], tuple[int, ...]]  # two alternating sets, one colour per round
    token: int | None

    @property
    def rounds(self) -> int:
        return len(self.handoff[0])

    @property
    def used(self) -> int:
        """Distinct colours allocated (with one hand-off set, both sets are the same colours)."""
        return len(set(self.y + self.x + self.shift + self.handoff[0] + self.handoff[1]
                       + ((self.token,) if self.token is not None else ())))


def _allocate_colours(spec: HardwareSpec, ty: LineTree | None, tx: LineTree | None, shift: bool, rounds: int,
                      two_sets: bool, token: bool, slots_y: int, slots_x: int) -> Colours:
    need = slots_y + slots_x + (2 if shift else 0) + rounds * (2 if two_sets else 1) + (1 if token else 0)
    free = list(spec.routable_colors)
    if need > len(free):
        raise InputError(f"the decode program needs {need} colours per PE (Y tree {slots_y}, X tree {slots_x}, "
                         f"KV shift {2 if shift else 0}, hand-offs {rounds * (2 if two_sets else 1)}, token return "
                         f"{int(token)}); {spec.name} routes {len(free)}")
    it = iter(free)
    take = lambda n: tuple(next(it) for _ in range(n))  # noqa: E731
    y, x, sh = take(slots_y), take(slots_x), take(2 if shift else 0)
    h0 = take(rounds)
    h1 = take(rounds) if two_sets else h0
    return Colours(y, x, sh, (h0, h1), next(it) if token else None)


# ---- the program ----------------------------------------------------------------------------------------------
@dataclass
class DecodeProgram:
    """A built decode program: the `MeshProgram`, its layout and what the host needs to drive it."""

    config: DecodeConfig
    program: MeshProgram
    layout: DecodeLayout
    sizes: Sizes
    colours: Colours
    tree_y: LineTree
    tree_x: LineTree
    body: Body
    strides: dict[str, int] = field(default_factory=dict)
    handoffs: list[dict] = field(default_factory=list)
    token_route: tuple[tuple[int, int], tuple[int, int]] | None = None  # (from (x, y), to (x, y))

    #: Per region width: (layout, sizes, strides, X tree) of the stages of that width.
    shapes: dict = field(default_factory=dict)

    def stage_pe(self, stage: int, lx: int, ly: int) -> tuple[int, int]:
        """Program coordinates (x, y) of region-local PE (lx, ly) of ``stage``."""
        y0, x0 = self.config.stages[stage].origin
        return x0 + lx, y0 + ly

    def _shape(self, stage: int) -> tuple:
        return self.shapes[self.config.stages[stage].columns(self.config.grid)]

    def layout_of(self, stage: int) -> DecodeLayout:
        """The layout of ``stage``'s region (its own P_x; every stage has the config's P_y)."""
        return self._shape(stage)[0]

    def sizes_of(self, stage: int) -> Sizes:
        return self._shape(stage)[1]

    def strides_of(self, stage: int) -> dict[str, int]:
        return self._shape(stage)[2]


def _stride_table(sz: Sizes, cap: int) -> dict[str, int]:
    """Per-layer strides of the weight and cache buffers (their largest per-PE block): the table's."""
    return layer_strides(sz.table, cap)


def buffer_plan(cfg: DecodeConfig, sz: Sizes) -> dict[str, tuple[str, str, int]]:
    """name -> (dtype, kind, size) of every buffer of the body: ``plmr.decode_memory.decode_buffers``, the
    table the planner charges (``buffer_length`` says how a kind's length follows the stage)."""
    return decode_buffers(DecodeModel.of(cfg.model), sz.table, cfg.capacity, cfg.dtype, cfg.score_chunk)


def buffer_length(kind: str, size: int, nl, first, last, tied: bool):
    """A buffer's length for a stage (numbers or parameter expressions): ``plmr.decode_memory.buffer_length``."""
    if any(isinstance(v, Expr) for v in (nl, first, last)):
        return _table_length(kind, size, as_expr(nl), first, last, tied, pick=select, mx=max_)
    return _table_length(kind, size, nl, first, last, tied)


def stage_bytes(cfg: DecodeConfig, sz: Sizes, nl: int, first: bool, last: bool) -> int:
    """Buffer bytes per PE of a stage with ``nl`` layers (the code and variables come on top)."""
    return decode_stage_bytes(DecodeModel.of(cfg.model), sz.p_y, sz.p_x, cfg.capacity, nl, first, last, cfg.dtype,
                              cfg.score_chunk)


class _Code:
    """Emits the body's statements (see the module docstring for the op list)."""

    def __init__(self, cfg: DecodeConfig, sz: Sizes, ty: LineTree, tx: LineTree, col: Colours, strides: dict):
        self.cfg, self.sz, self.ty, self.tx, self.col, self.st = cfg, sz, ty, tx, col, strides
        self.m = cfg.model
        self.dt = cfg.dtype
        self.chunk = score_chunk(cfg.capacity, cfg.score_chunk)

    # -- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def R(buf, off, n) -> Ref:
        return Ref(buf, off, n)

    def stamp(self, label: str) -> tuple:
        if not self.cfg.timestamps:
            return ()
        return (If(eq(Param("ts"), 1), (Timestamp(label),)),)

    def _scratch(self, n, combine: str) -> Ref | None:
        """``scr`` for a max or argmax (their stages receive into it); a sum needs none."""
        return None if combine == "sum" else self.R("scr", 0, n)

    def allreduce_y(self, buf: str, n, combine="sum", off=0, tag="y") -> tuple:
        return self.ty.allreduce(self.R(buf, off, n), self._scratch(n, combine), None, combine, tag=tag)

    def allreduce_x(self, buf: str, n, combine="sum", tag="x") -> tuple:
        return self.tx.allreduce(self.R(buf, 0, n), self._scratch(n, combine), None, combine, tag=tag)

    # -- per-launch set-up -------------------------------------------------------------------------------
    def setup(self) -> tuple:
        """Per-PE sizes from the region-local coordinates (scalar code, once per launch)."""
        sz = self.sz
        lx, ly = X - Param("rx0"), Y - Param("ry0")
        nkv, npair, _ = sz.head_rules(lx)
        V = Var
        code = [Assign("lx", lx), Assign("ly", ly), Assign("ey", sz.ey(V("ly"))), Assign("fx", sz.fx(V("lx"))),
                Assign("vx", sz.vx(V("lx"))), Assign("v0", sz.v0(V("lx"))), Assign("nkvc", nkv),
                Assign("np", npair), Assign("w", V("np") * 2), Assign("nhc", V("nkvc") * sz.n_rep),
                Assign("qx", V("nhc") * V("w")), Assign("kvx", V("nkvc") * V("w")),
                Assign("qkvn", V("qx") + V("kvx") * 2)]
        nhs = Const(sz.n_rep) if sz.score_mode != "none" else V("nhc")
        code.append(Assign("nhs", nhs))
        return tuple(code)

    def rope_tables(self) -> tuple:
        """cos, sin and −sin of fl32(pos·inv_freq) for the column's pairs: the angle rounded to fp32 as
        transformers computes it (a ``Scale`` in fp32), then cos and sin by quadrant reduction and Taylor
        polynomials to 1e-16 in scalar code, stored rounded to the model dtype."""
        V = Var
        a, k, r, r2, qd, s, c = (V(n) for n in ("ra", "rk", "rred", "rr2", "rq", "rs", "rc"))
        sin_p = r * (1 + r2 * (-1 / 6 + r2 * (1 / 120 + r2 * (-1 / 5040 + r2 * (1 / 362880 + r2 * (
            -1 / 39916800 + r2 * (1 / 6227020800 + r2 * (-1 / 1307674368000))))))))
        cos_p = 1 + r2 * (-1 / 2 + r2 * (1 / 24 + r2 * (-1 / 720 + r2 * (1 / 40320 + r2 * (
            -1 / 3628800 + r2 * (1 / 479001600 + r2 * (-1 / 87178291200 + r2 * (1 / 20922789888000))))))))
        body = (Assign("ra", Load("ang", V("i"))), Assign("rk", (a * (2 / math.pi) + 0.5) // 1),
                Assign("rred", a - k * (math.pi / 2)), Assign("rr2", r * r), Assign("rq", k % 4),
                Assign("rs", sin_p), Assign("rc", cos_p),
                Store("cs", V("i"), select(eq(qd, 0), c, select(eq(qd, 1), -s, select(eq(qd, 2), -c, s)))),
                Store("sn", V("i"), select(eq(qd, 0), s, select(eq(qd, 1), c, select(eq(qd, 2), -s, -c)))),
                Store("nsn", V("i"), -Load("sn", V("i"))))
        return (Scale(self.R("ang", 0, V("np")), self.R("invf", 0, V("np")), V("pos")), Loop(V("np"), "i", body))

    # -- ops -----------------------------------------------------------------------------------------------
    def rmsnorm(self, src: str, gamma: Ref, dst: str, tag: str) -> tuple:
        """Σx² over the segment (fp32), allreduce along Y, x·rsqrt(mean + eps) rounded, times γ."""
        V = Var
        ey = V("ey")
        code: list = []
        x32 = src
        if self.dt != F32:
            code.append(Copy(self.R("x32", 0, ey), self.R(src, 0, ey)))
            x32 = "x32"
        code += [Assign("acc", 0.0), Loop(ey, "i", (Assign("acc", V("acc") + Load(x32, V("i")) * Load(x32, V("i"))),)),
                 Store("nr", 0, V("acc"))]
        code += self.allreduce_y("nr", 1, tag=tag)
        code += [Store("nr", 1, Load("nr", 0) / float(self.m.hidden_size) + float(self.m.rms_norm_eps)),
                 Rsqrt(self.R("nr", 1, 1), self.R("nr", 1, 1))]
        if self.dt == F32:
            code.append(Scale(self.R(dst, 0, ey), self.R(x32, 0, ey), Load("nr", 1)))
        else:  # scaled in fp32, then rounded by a conversion (a CSL DSD op scales within one dtype)
            code += [Scale(self.R(x32, 0, ey), self.R(x32, 0, ey), Load("nr", 1)),
                     Copy(self.R(dst, 0, ey), self.R(x32, 0, ey))]
        code.append(Mul(self.R(dst, 0, ey), self.R(dst, 0, ey), gamma))
        return tuple(code)

    def norm_numerator(self, src: str, gamma: Ref, dst: str) -> tuple:
        """RMSNorm folded into the next GEMV (ops 1 and 10): the segment's Σx² (fp32, scalar code) into
        ``nr[0]`` and γ ⊙ x. The scale r = rsqrt(mean + eps) is one number per token, so the GEMV runs on
        γ ⊙ x, its allreduce carries Σx² as one more element and ``norm_scale`` applies r to the sums:
        one allreduce along Y instead of two."""
        V = Var
        ey = V("ey")
        return (Assign("acc", 0.0), Loop(ey, "i", (Assign("acc", V("acc") + Load(src, V("i")) * Load(src, V("i"))),)),
                Store("nr", 0, V("acc")), Mul(self.R(dst, 0, ey), self.R(src, 0, ey), gamma))

    def norm_scale(self, acc: str, n) -> tuple:
        """After the allreduce: r = rsqrt(Σx²/E + eps) from ``acc[n]``, then ``acc[0:n]`` scaled by r (fp32)."""
        return (Store("nr", 1, Load(acc, n) / float(self.m.hidden_size) + float(self.m.rms_norm_eps)),
                Rsqrt(self.R("nr", 1, 1), self.R("nr", 1, 1)),
                Scale(self.R(acc, 0, n), self.R(acc, 0, n), Load("nr", 1)))

    def gemv(self, acc: str, n, w: str, wbase, rows, x: str) -> tuple:
        """acc[0:n] = Σ_i w[wbase + i·n : +n] · x[i] over ``rows`` rows (fp32 accumulator)."""
        V = Var
        return (Fill(self.R(acc, 0, n), 0.0),
                Loop(rows, "i", (Fmac(self.R(acc, 0, n), self.R(acc, 0, n), self.R(w, wbase + V("i") * n, n),
                                      Load(x, V("i"))),)))

    def layer(self) -> tuple:
        V = Var
        st, m = self.st, self.m
        l = V("l")
        ey, qx, qkvn, w, npair, fx = V("ey"), V("qx"), V("qkvn"), V("w"), V("np"), V("fx")
        code: list = []
        # 1 RMSNorm: Σx² and γ ⊙ x (its scale is applied after the Q|K|V allreduce)
        code += self.norm_numerator("x", self.R("gin", l * st["g"], ey), "a") + self.stamp("rmsnorm")
        # 2 Q, K, V: one fused local GEMV, one allreduce along Y (with Σx²), the norm's scale, biases
        code += self.gemv("qkv32", qkvn, "wqkv", l * st["wqkv"], ey, "a")
        code.append(Store("qkv32", qkvn, Load("nr", 0)))
        code.append(If(qkvn > 0, self.allreduce_y("qkv32", qkvn + 1, tag="q") + self.norm_scale("qkv32", qkvn)))
        code.append(Copy(self.R("qkv", 0, qkvn), self.R("qkv32", 0, qkvn)))
        if getattr(m, "qkv_bias", False):
            code.append(Add(self.R("qkv", 0, qkvn), self.R("qkv", 0, qkvn), self.R("bqkv", l * st["bqkv"], qkvn)))
        code += self.stamp("qkv")
        # 3 RoPE on every q and k head chunk (rotate-half partners are local)
        c = V("c")
        o1, o2 = c * w, c * w + npair
        code.append(Copy(self.R("qkr", 0, qkvn), self.R("qkv", 0, qkvn)))
        code.append(Loop(V("nhc") + V("nkvc"), "c", (
            Mul(self.R("t1", 0, npair), self.R("qkv", o1, npair), self.R("cs", 0, npair)),
            Mul(self.R("t2", 0, npair), self.R("qkv", o2, npair), self.R("nsn", 0, npair)),
            Add(self.R("qkr", o1, npair), self.R("t1", 0, npair), self.R("t2", 0, npair)),
            Mul(self.R("t1", 0, npair), self.R("qkv", o2, npair), self.R("cs", 0, npair)),
            Mul(self.R("t2", 0, npair), self.R("qkv", o1, npair), self.R("sn", 0, npair)),
            Add(self.R("qkr", o2, npair), self.R("t1", 0, npair), self.R("t2", 0, npair)))))
        code += self.stamp("rope")
        # 4 KV append with the shift of meshgemm.kv_cache
        code += self.kv_append()
        code += self.stamp("kv_append")
        # 5 scores, 6 softmax, 7 p·V
        code += self.attention()
        # 8 O projection (W_O transposed in block position), allreduce along X
        code += self.gemv("h32", ey, "wo", l * st["wo"], qx, "o")
        code += self.allreduce_x("h32", ey, tag="o")
        code.append(Copy(self.R("ho", 0, ey), self.R("h32", 0, ey)))
        if getattr(m, "o_bias", False):
            code.append(Add(self.R("ho", 0, ey), self.R("ho", 0, ey), self.R("bo", l * st["g"], ey)))
        code += self.stamp("o_proj")
        # 9 residual
        code.append(Add(self.R("h1", 0, ey), self.R("x", 0, ey), self.R("ho", 0, ey)))
        code += self.stamp("residual")
        # 10 RMSNorm (post-attention): Σx² and γ ⊙ x, scaled after the gate|up allreduce
        code += self.norm_numerator("h1", self.R("gpost", l * st["g"], ey), "a2") + self.stamp("rmsnorm_post")
        # 11 gate and up: one fused GEMV, one allreduce along Y (with Σx²), the norm's scale
        code += self.gemv("gu32", fx * 2, "wgu", l * st["wgu"], ey, "a2")
        code.append(Store("gu32", fx * 2, Load("nr", 0)))
        code += self.allreduce_y("gu32", fx * 2 + 1, tag="u") + self.norm_scale("gu32", fx * 2)
        code.append(Copy(self.R("gu", 0, fx * 2), self.R("gu32", 0, fx * 2)))
        if getattr(m, "mlp_bias", False):
            code.append(Add(self.R("gu", 0, fx * 2), self.R("gu", 0, fx * 2), self.R("bgu", l * st["bgu"], fx * 2)))
        code += self.stamp("gate_up")
        # 12 SiLU(gate) ⊙ up
        code += [Silu(self.R("z", 0, fx), self.R("gu", 0, fx)),
                 Mul(self.R("z", 0, fx), self.R("z", 0, fx), self.R("gu", fx, fx))]
        code += self.stamp("silu_mul")
        # 13 down (transposed in block position), allreduce along X
        code += self.gemv("h32", ey, "wd", l * st["wd"], fx, "z")
        code += self.allreduce_x("h32", ey, tag="d")
        code.append(Copy(self.R("hm", 0, ey), self.R("h32", 0, ey)))
        if getattr(m, "mlp_bias", False):
            code.append(Add(self.R("hm", 0, ey), self.R("hm", 0, ey), self.R("bd", l * st["g"], ey)))
        code += self.stamp("down")
        # 14 residual
        code.append(Add(self.R("x", 0, ey), self.R("h1", 0, ey), self.R("hm", 0, ey)))
        code += self.stamp("residual_mlp")
        return tuple(code)

    def window(self) -> Expr:
        """The sliding window of global layer l0 + l (0: none), as a select over the model's window layers."""
        m = self.m
        win = getattr(m, "sliding_window", None)
        layers = tuple(getattr(m, "sliding_window_layers", ()))
        if not win or not layers:
            return Const(0)
        g = Param("l0") + Var("l")
        # contiguous runs of window layers
        runs, start = [], layers[0]
        for a, b in zip(layers, layers[1:] + (None,)):
            if b != a + 1:
                runs.append((start, a))
                start = b
        inside = None
        for a, b in runs:
            cond = (g >= a) & (g <= b)
            inside = cond if inside is None else inside | cond
        return select(inside, win, 0)

    def cache_rows(self, n: Expr) -> tuple:
        """Scalar code: after n appends, this row's count ``S``, its first token ``tf`` and ring slot
        ``s0``; ``fr`` the oldest retained token; ``qq``, ``rr`` the rows' common count and remainder."""
        V = Var
        P_y, cap = self.sz.p_y, self.cfg.capacity
        W = V("win")
        return (Assign("fr", select(W > 0, max_(n - W, 0), 0)), Assign("mm", n - V("fr")),
                Assign("qq", V("mm") // P_y), Assign("rr", V("mm") % P_y),
                Assign("S", V("qq") + (V("ly") < V("rr"))),
                Assign("tf", V("fr") + V("ly") * V("qq") + min_(V("ly"), V("rr"))),
                Assign("s0", V("tf") % cap))

    def kv_append(self) -> tuple:
        """Append token ``pos`` (method §8 via meshgemm.kv_cache): the write row stores the new k and v in
        slot pos mod capacity; each shifting row copies out its oldest entry and sends it north, the row above
        receives it into the same slot (even rows send first, odd rows receive first)."""
        V, P = Var, Param
        sz, st, cap = self.sz, self.st, self.cfg.capacity
        P_y = sz.p_y
        l, kvx, qx, ly = V("l"), V("kvx"), V("qx"), V("ly")
        n = V("pos")
        kb, vb = l * st["kc"], l * st["vc"]
        setup = [Assign("win", self.window()),
                 Assign("fr", select(V("win") > 0, max_(n - V("win"), 0), 0)), Assign("mm", n - V("fr")),
                 Assign("full", (V("win") > 0) & eq(V("mm"), V("win"))), Assign("jj", V("mm") % P_y),
                 Assign("wrow", select(V("full"), min_(V("mm"), P_y) - 1, select(V("mm") < P_y, V("jj"), P_y - 1))),
                 Assign("lo", select(V("full"), 0, select(V("mm") < P_y, P_y, V("jj") + 1))),
                 Assign("hi", select(V("full"), min_(V("mm"), P_y) - 1, P_y - 1)),
                 Assign("qq", V("mm") // P_y), Assign("rr", V("mm") % P_y)]
        oldest = lambda row: V("fr") + row * V("qq") + min_(row, V("rr"))  # noqa: E731
        sends = (ly >= V("lo")) & (ly <= V("hi")) & (ly >= 1)
        recvs = (ly + 1 >= V("lo")) & (ly + 1 <= V("hi")) & (ly + 1 <= P_y - 1)
        moves: list = []
        if P_y > 1:
            c0, c1 = self.col.shift
            ss, rs = V("ssl"), V("rsl")
            snd = lambda c: (Send(c, self.R("shout", 0, kvx * 2)),)  # noqa: E731
            rcv = lambda c: (Recv(c, self.R("shin", 0, kvx * 2)),)  # noqa: E731
            copy_out = If(eq(P("shs"), 0), (), (If(sends, (
                Assign("ssl", oldest(ly) % cap),
                Copy(self.R("shout", 0, kvx), Ref("kc", kb + ss, kvx, cap)),
                Copy(self.R("shout", kvx, kvx), self.R("vc", vb + ss * kvx, kvx)))),))
            send = If(eq(P("shs"), 0), (), (If(sends, (If(eq(P("shs"), 1), snd(c0), snd(c1)),)),))
            recv = If(eq(P("shr"), 0), (), (If(recvs, (
                Assign("rsl", oldest(ly + 1) % cap),
                If(eq(P("shr"), 1), rcv(c0), rcv(c1)),
                Copy(Ref("kc", kb + rs, kvx, cap), self.R("shin", 0, kvx)),
                Copy(self.R("vc", vb + rs * kvx, kvx), self.R("shin", kvx, kvx)))),))
            # synchronous, ordered by row parity so no two neighbours wait on each other: even rows send,
            # then receive; odd rows receive (their lower neighbour sends first), then send
            moves = [copy_out, If(eq(P("shs"), 2), (recv, send), (send, recv))]
        ns = n % cap
        write = If(eq(ly, V("wrow")), (Copy(Ref("kc", kb + ns, kvx, cap), self.R("qkr", qx, kvx)),
                                        Copy(self.R("vc", vb + ns * kvx, kvx), self.R("qkv", qx + kvx, kvx))))
        return tuple(setup) + (If(kvx > 0, tuple(moves) + (write,)),)

    def attention(self) -> tuple:
        """Ops 5-7 over the row's cache in chunks of at most ``chunk`` entries (``plmr.decode_memory``'s
        ``score_chunk``), so the scores held per head do not grow with the context. Chunk 0 (every row
        runs it, an empty one on a row without entries) is a plain softmax: its maxima allreduced along Y,
        exp(s − m), the sums, p·V's FMACs. A later chunk keeps a running maximum: where it rises the
        accumulators and sums are rescaled by exp(m_old − m_new) (online softmax). When some row takes
        more than one chunk, the rows' maxima differ: every row runs one more iteration without a chunk,
        its maxima allreduced along Y and its accumulators rescaled to them, before p·V's allreduce (one
        max allreduce and one rescaling in the code). With one chunk per row (every plan's default
        context) this is the plain softmax's order and numerics."""
        V = Var
        sz, st, cap = self.sz, self.st, self.cfg.capacity
        C = self.chunk
        l, w, kvx, qx = V("l"), V("w"), V("kvx"), V("qx")
        kb, vb = l * st["kc"], l * st["vc"]
        S, s0, h, f, t, k = V("S"), V("s0"), V("h"), V("f"), V("t"), V("ck")
        cl, cs, cl0, cl1 = V("cl"), V("cst"), V("len0"), V("len1")
        nhs, nhc, nch = V("nhs"), V("nhc"), V("nch")
        first, live = eq(k, 0), k < nch
        code = list(self.cache_rows(V("pos") + 1))
        # this row's chunks (at least one) and the iterations: one more when the longest row (qq + 1 or qq
        # entries, every PE knows it) takes several chunks (the maxima along Y, no chunk)
        code += [Assign("nch", max_((S + (C - 1)) // C, 1)), Assign("nit", nch + (V("qq") + (V("rr") > 0) > C))]
        kvoff = (h // sz.n_rep) * w
        row = lambda run_off: kb + (kvoff + f) * cap + run_off  # noqa: E731
        q = Load("qkr", h * w + f)
        n_sc = nhs * cl
        # chunk ck: entries ck·C … of the row, from ring slot cst, in two runs (len0 from cst, len1 from 0)
        it = [Assign("cl", select(live, min_(C, S - k * C), 0)), Assign("cst", (s0 + k * C) % cap),
              Assign("len0", min_(cl, cap - cs)), Assign("len1", cl - cl0)]
        # 5 scores: per head, per feature, one FMAC per ring run over the chunk's cached keys
        scores = [Fill(self.R("sc", 0, n_sc), 0.0),
                  Loop(nhc, "h", (Loop(w, "f", (
                      Fmac(self.R("sc", h * cl, cl0), self.R("sc", h * cl, cl0), self.R("kc", row(cs), cl0), q),
                      If(cl1 > 0, (Fmac(self.R("sc", h * cl + cl0, cl1), self.R("sc", h * cl + cl0, cl1),
                                        self.R("kc", row(0), cl1), q),)))),))]
        if sz.score_mode == "groups":
            scores.append(If(cl > 0, self.tx.group_allreduce(self.R("sc", 0, n_sc), None, tag="s")))
        elif sz.score_mode == "full":
            scores.append(If(cl > 0, self.tx.allreduce(self.R("sc", 0, n_sc), None, tag="s")))
        scores.append(Scale(self.R("sc", 0, n_sc), self.R("sc", 0, n_sc), float(self.m.head_dim) ** -0.5))
        it.append(If(live, tuple(scores)))
        it += self.stamp("scores")
        # 6 softmax: the maxima (chunk 0 from −inf, later ones from the running maximum, the old one kept
        # in ``gu32``, free until gate/up), along Y in chunk 0 and in the iteration without a chunk; after
        # chunk 0 the accumulators and sums rescaled by exp(m_old − m_new)
        it += [Loop(nhs, "h", (Assign("acc", select(first, -math.inf, Load("mx", h))), Store("gu32", h, V("acc")),
                               Loop(cl, "t", (Assign("acc", max_(V("acc"), Load("sc", h * cl + t))),)),
                               Store("mx", h, V("acc")))),
               If(first | eq(k, nch), self.allreduce_y("mx", nhs, combine="max", tag="m")),
               If(k > 0, (Fmac(self.R("gu32", 0, nhs), self.R("gu32", 0, nhs), self.R("mx", 0, nhs), -1.0),
                          Exp(self.R("gu32", 0, nhs), self.R("gu32", 0, nhs)),
                          Loop(nhc, "h", (Scale(self.R("o32", h * w, w), self.R("o32", h * w, w), Load("gu32", h)),)),
                          Mul(self.R("o32", qx, nhs), self.R("o32", qx, nhs), self.R("gu32", 0, nhs))))]
        # exp(s − m) stays unnormalised: its row sums ride on p·V's allreduce (one allreduce along Y, not
        # two), and p·V divides by the total; the sums go where that payload expects them (o32[qx + h])
        soft = [Loop(nhs, "h", (Fmac(self.R("sc", h * cl, cl), self.R("sc", h * cl, cl), Ref("mx", h, cl, 0), -1.0),)),
                Exp(self.R("sc", 0, n_sc), self.R("sc", 0, n_sc)),
                Loop(nhs, "h", (Assign("acc", select(first, 0.0, Load("o32", qx + h))),
                                Loop(cl, "t", (Assign("acc", V("acc") + Load("sc", h * cl + t)),)),
                                Store("o32", qx + h, V("acc"))))]
        probs = "sc"
        if self.dt != F32:  # the weights of p·V in the model dtype, as transformers rounds the probabilities
            soft.append(Copy(self.R("pr", 0, n_sc), self.R("sc", 0, n_sc)))
            probs = "pr"
        soft += self.stamp("softmax")
        # 7 p·V: per head, one FMAC per cached token of the chunk (two ring runs)
        vrow = lambda slot: vb + slot * kvx + kvoff  # noqa: E731
        soft += [If(first, (Fill(self.R("o32", 0, qx), 0.0),)),
                 Loop(nhc, "h", (
                     Loop(cl0, "t", (Fmac(self.R("o32", h * w, w), self.R("o32", h * w, w), self.R("vc", vrow(cs + t), w),
                                          Load(probs, h * cl + t)),)),
                     Loop(cl1, "t", (Fmac(self.R("o32", h * w, w), self.R("o32", h * w, w), self.R("vc", vrow(t), w),
                                          Load(probs, h * cl + cl0 + t)),))))]
        it.append(If(live, tuple(soft), self.stamp("softmax")))
        it += self.stamp("pv")
        code.append(Loop(V("nit"), "ck", tuple(it)))
        # p·V's allreduce along Y with the softmax sums, then each head divided by its sum
        code.append(If(qx > 0, self.allreduce_y("o32", qx + nhs, tag="p") + (
            Loop(nhc, "h", (Scale(self.R("o32", h * w, w), self.R("o32", h * w, w), 1.0 / Load("o32", qx + h)),)),)))
        code.append(Copy(self.R("o", 0, qx), self.R("o32", 0, qx)))
        code += self.stamp("pv")
        return tuple(code)

    # -- head, embedding, hand-offs -----------------------------------------------------------------------
    def head(self) -> tuple:
        """Final RMSNorm, LM head (natural E_y V_x, or the tied embedding blocks read column-wise), logits
        allreduced along Y, local argmax, argmax reduce along X; ``tok`` on every PE of the stage."""
        V = Var
        sz = self.sz
        ey, vx = V("ey"), V("vx")
        code = list(self.rmsnorm("x", self.R("fnorm", 0, ey), "xf", "nf")) + list(self.stamp("final_norm"))
        if self.m.tie_word_embeddings:
            code += [Fill(self.R("lg32", 0, vx), 0.0),
                     Loop(ey, "i", (Fmac(self.R("lg32", 0, vx), self.R("lg32", 0, vx), Ref("emb", V("i"), vx, sz.EYM),
                                         Load("xf", V("i"))),))]
        else:
            code += self.gemv("lg32", vx, "wlm", 0, ey, "xf")
        code += self.allreduce_y("lg32", vx, tag="l") + self.stamp("lm_head")
        code += [Copy(self.R("lg", 0, vx), self.R("lg32", 0, vx)),
                 Assign("acc", -math.inf), Assign("bi", 0),
                 Loop(vx, "i", (If(Load("lg", V("i")) > V("acc"), (Assign("acc", Load("lg", V("i"))),
                                                                   Assign("bi", V("i")))),)),
                 Store("am", 0, V("acc")), Store("am", 1, V("v0") + V("bi"))]
        code += self.allreduce_x("am", 2, combine="argmax", tag="a")
        code += [Assign("tok", Load("am", 1)), Store("tk", 0, V("tok"))] + list(self.stamp("argmax"))
        return tuple(code)

    def embed(self) -> tuple:
        """The next token's row: the column owning it copies its segment, the others zeros, a sum along X."""
        V = Var
        ey, tok, v0 = V("ey"), V("tok"), V("v0")
        own = (tok >= v0) & (tok < v0 + V("vx"))
        code = [If(own, (Copy(self.R("x", 0, ey), self.R("emb", (tok - v0) * self.sz.EYM, ey)),),
                   (Fill(self.R("x", 0, ey), 0.0),))]
        code += self.allreduce_x("x", ey, tag="e") + self.stamp("embedding")
        return tuple(code)

    def handoff_in(self) -> tuple:
        """Stages after the first receive the hidden state from the previous stage.

        Horizontal neighbour (``hmode`` 1): one PE of each row (see ``_handoff_routes``) receives its row's
        segment, then the row sums
        (the others hold zeros), so every PE of the row has it. Vertical neighbour (``hmode`` 2): of the
        o = ``hvw`` columns both regions span, starting at column ``hvo`` of this region, the segment of row r
        comes down column ``hvo`` + r mod o (round k = r div o) and lands on row P_y − 1 − k (the bottom
        row takes no KV shift, the rows above it no level-1 stream, so each has an input queue free); per
        round, a sum along Y gives every PE of column ``hvo`` + c the segment of row k·o + c, that row keeps
        it, and a sum along X completes the rows. Regions of one width stacked: o = P_x, ``hvo`` = 0."""
        V, P = Var, Param
        ey, lx, ly = V("ey"), V("lx"), V("ly")
        sz = self.sz
        R = self.col.rounds
        sets = self.col.handoff
        if R == 0:
            return ()
        horiz = If(eq(P("hland"), 1), tuple(If(eq(P("hset"), j), (Recv(sets[j][0], self.R("x", 0, ey)),))
                                             for j in range(2)))
        vert: list = []
        for k in range(R):
            land = tuple(If(eq(P("hset"), j), (Recv(sets[j][k], self.R("hb", 0, sz.EYM)),)) for j in range(2))
            fill = (Fill(self.R("hb", 0, sz.EYM), 0.0),)
            vert.append(If(eq((P("hland") // (1 << k)) % 2, 1), land, fill))
            vert.extend(self.ty.allreduce(self.R("hb", 0, sz.EYM), None, None, tag=f"v{k}"))
            # the segment of row r came down column hvo + r mod hvw (region-local), round r div hvw
            o, w = P("hvo"), P("hvw")
            mine = (ly >= w * k) & (ly < w * (k + 1)) & eq(lx - o, ly - w * k)
            vert.append(If(mine, (Copy(self.R("x", 0, ey), self.R("hb", 0, ey)),)))
        return ((Fill(self.R("x", 0, ey), 0.0), If(eq(P("hmode"), 1), (horiz,), tuple(vert)))
                + self.allreduce_x("x", ey, tag="h"))

    def handoff_out(self) -> tuple:
        """The sender of each row: the edge PE (horizontal, its segment) or PE (r mod P_x, r) (vertical, the
        whole padded vector on the colour of its round)."""
        V, P = Var, Param
        sets = self.col.handoff
        if self.col.rounds == 0:
            return ()
        out: list = []
        for j in range(2):
            for k in range(self.col.rounds):
                buf = (If(eq(P("homode"), 1), (Send(sets[j][k], self.R("x", 0, V("ey"))),),
                          (Send(sets[j][k], self.R("x", 0, self.sz.EYM)),)),)
                out.append(If(eq(P("hoset"), j) & eq(P("horound"), k), buf))
        return (If(eq(P("hout"), 1), tuple(out)),)

    def token_out(self) -> tuple:
        c = self.col.token
        return (If(eq(Param("tret"), 1), (Send(c, self.R("tk", 0, 1)),)),)

    def token_in(self) -> tuple:
        c = self.col.token
        return ((Fill(self.R("tk", 0, 1), 0.0), If(eq(Param("tret"), 2), (Recv(c, self.R("tk", 0, 1)),)))
                + self.allreduce_x("tk", 1, tag="t") + self.allreduce_y("tk", 1, tag="t")
                + (Assign("tok", Load("tk", 0)),) + self.stamp("token_return"))

    # -- functions -------------------------------------------------------------------------------------------
    def functions(self) -> dict[str, tuple]:
        """One exported function, ``step(pos, mode, tok_in)``: mode 0 runs a decode step (layers, hand-offs,
        head, embedding), mode 1 only the head and the embedding (after a prefill), mode 2 only the
        embedding of ``tok_in``. One function keeps one copy of the head and embedding code."""
        P, V = Param, Var
        multi = len(self.cfg.stages) > 1
        first, last = eq(P("first"), 1), eq(P("last"), 1)
        mode = V("mode")
        layers = (Loop(P("nl"), "l", self.layer()),)
        hin = (If(eq(P("hmode"), 0), (), self.handoff_in()),)
        if self.cfg.layers_only:
            step = self.setup() + (If(eq(mode, 0), self.rope_tables() + hin + layers + (If(last, (), self.handoff_out()),)),)
            return {STEP: step}
        decode = self.rope_tables() + hin + layers + (If(last, (), self.handoff_out()),)
        head = self.head() + (self.token_out() if multi else ())
        tok = (If(eq(mode, 2), (Assign("tok", V("tok_in")),), self.token_in() if multi else ()),)
        step = self.setup() + (If(eq(mode, 0), decode), If(last, (If(mode < 2, head),)),
                               If(first, tok + self.embed()))
        return {STEP: step}


VARS_I32 = ("lx", "ly", "ey", "fx", "vx", "v0", "nkvc", "np", "w", "nhc", "qx", "kvx", "qkvn", "nhs", "pos", "mode",
            "tok", "tok_in", "l", "i", "c", "h", "f", "t", "win", "fr", "mm", "full", "jj", "wrow", "lo", "hi",
            "qq", "rr", "S", "tf", "s0", "len0", "len1", "ssl", "rsl", "bi", "rk", "rq", "nch", "nit", "ck", "cl",
            "cst")
VARS_F32 = ("acc", "ra", "rred", "rr2", "rs", "rc")


def build_body(cfg: DecodeConfig, sz: Sizes, ty: LineTree, tx: LineTree, col: Colours,
               name: str = "decode") -> tuple[Body, dict]:
    st = _stride_table(sz, cfg.capacity)
    b = Body(name, doc="one decode step of a region's layers (meshgemm.decode_program)")
    for p in ("rx0", "ry0", "nl", "l0", "first", "last", "shs", "shr", "hmode", "hland", "hset", "hout", "homode",
              "hoset", "horound", "tret", "ts", "hvo", "hvw"):
        b.param(p)
    ty.declare(b)
    tx.declare(b)
    nl, first, last = Param("nl"), Param("first"), Param("last")
    for name, (dt, kind, size) in buffer_plan(cfg, sz).items():
        b.buffer(name, dt, buffer_length(kind, size, nl, eq(first, 1), eq(last, 1), cfg.model.tie_word_embeddings))
    for v in VARS_I32:
        b.var(v, "i32")
    for v in VARS_F32:
        if v not in b.vars:
            b.var(v, "f32")
    code = _Code(cfg, sz, ty, tx, col, st)
    fns = code.functions()
    b.function(STEP, fns[STEP], args=("pos", "mode", "tok_in"))
    return b, st


# ---- building the program -------------------------------------------------------------------------------------
def choose_groups(n: int, kv_groups: int | None = None) -> int:
    """Level-0 groups of a line tree: the KV groups when given (the X tree in "groups" mode, so the score
    allreduce is level 0 plus a group broadcast), else ≈ √n (the authors' group size, method §6.5); one
    chain (K = 1) on lines shorter than 4."""
    if kv_groups is not None:
        return kv_groups
    return max(1, round(math.sqrt(n))) if n >= 4 else 1


def build_decode_program(cfg: DecodeConfig, spec: HardwareSpec) -> DecodeProgram:
    """The program (see the module docstring); raises InputError with the numbers when a resource (SRAM,
    colours, input queues, task IDs) does not suffice.

    Stages may have regions of different widths (``DecodeStage.width``, a packed placement's strips): all
    have P_y rows, so the hidden split over rows and the Y tree are common; each width gets its own layout,
    X tree and body (buffers at that width's largest blocks), and the colours suffice for the widest X tree."""
    p_y, p_x = cfg.grid
    stages = cfg.stages
    n_st = len(stages)
    widths = sorted({s.columns(cfg.grid) for s in stages}, key=lambda w: (w != p_x, w))
    y_groups, x_groups = cfg.y_groups, cfg.x_groups
    gy = y_groups or choose_groups(p_y)
    if gy > 1 and 2 not in decode_tree_ks(spec, "y", p_y):
        if y_groups is not None:
            raise InputError(f"a Y tree of {y_groups} level-0 groups binds {DECODE_QUEUES_TWO_LEVEL_Y} input queues "
                             f"per PE; {spec.name} has {len(spec.usable_input_queues)} usable: use one chain (1 group)")
        gy = 1  # WSE-3's 6 input queues: a one-chain Y tree receives on 2 colours per PE, not 3
    lays, szs, tx0s = {}, {}, {}
    for w in widths:
        lay = DecodeLayout(cfg.model, p_y, w)
        sz = Sizes.of(lay)
        sz.check(lay)
        asked = x_groups if w == p_x else cfg.strip_x_groups
        gx = asked or choose_groups(w, sz.n_kv if sz.score_mode == "groups" else None)
        if sz.score_mode == "groups" and gx != sz.n_kv and not any(s.num_layers for s in stages
                                                                    if s.columns(cfg.grid) == w):
            gx = sz.n_kv  # regions of this width hold only the LM head (no scores): the body's tree all the same
        if sz.score_mode == "groups" and gx != sz.n_kv:
            raise InputError(f"the X tree's level-0 groups must be the {sz.n_kv} KV groups, got {gx}")
        gb = sz.score_mode == "groups" and w > 1
        lays[w], szs[w] = lay, sz
        tx0s[w] = LineTree("x", w, min(gx, w), tuple(range(64)), "tx", group_bcast=gb)
    ty0 = LineTree("y", p_y, min(gy, p_y), tuple(range(64)), "ty")
    cols = {s.index: s.columns(cfg.grid) for s in stages}
    moves, rounds = [], 0
    for a, b in zip(stages, stages[1:]):
        (ya, xa), (yb, xb) = a.origin, b.origin
        wa, wb = cols[a.index], cols[b.index]
        overlap = min(xa + wa, xb + wb) - max(xa, xb)
        if ya == yb and xb == xa + wa:
            moves.append("east")
        elif ya == yb and xb + wb == xa:
            moves.append("west")
        elif yb == ya + p_y and overlap > 0:
            moves.append("south")
        else:
            raise InputError(f"stages {a.index} and {b.index} do not share an edge (origins {a.origin}, {b.origin}); "
                             f"place consecutive stages side by side (snake_origins)")
        rounds = max(rounds, -(-p_y // overlap) if moves[-1] == "south" else 1)
    col = _allocate_colours(spec, ty0, tx0s[p_x] if p_x in tx0s else None, p_y > 1, rounds, len(moves) > 1,
                            n_st > 1 and not cfg.layers_only, ty0.slots, max(t.slots for t in tx0s.values()))
    ty = LineTree("y", p_y, ty0.groups0, col.y, "ty")
    txs = {w: LineTree("x", w, t.groups0, col.x, "tx", group_bcast=t.group_bcast) for w, t in tx0s.items()}
    height = max(s.origin[0] for s in stages) + p_y
    width = max(s.origin[1] + cols[s.index] for s in stages)
    prog = MeshProgram(width, height, spec, name=f"decode-{getattr(cfg.model, 'name', 'model')}")

    def west_land(w: int) -> int:  # first column of the X tree's last group
        return w - txs[w].group_sizes[-1] if txs[w].active else w - 1

    hand = [_handoff_routes(prog, mv, stages[i], stages[i + 1], p_y, cols[stages[i].index], cols[stages[i + 1].index],
                            col.handoff[i % 2], west_land(cols[stages[i + 1].index]))
            for i, mv in enumerate(moves)]
    token_route = None
    if n_st > 1 and not cfg.layers_only:
        token_route = _token_route(prog, stages[-1], stages[0], (p_y, p_x), col.token)
    strides = {w: _stride_table(szs[w], cfg.capacity) for w in widths}
    bodies: dict[tuple[int, int], Body] = {}
    templates, ts_cols = {}, {}
    for w in widths:
        hl = lays[w].heads
        ts_cols[w] = max(range(w), key=lambda c: (len(hl.column_kv_heads[c]), hl.n_pairs(c), -c))
        templates[w] = build_body(cfg, szs[w], ty, txs[w], col)[0].finalized()
    for s in stages:
        w = cols[s.index]
        tx = txs[w]
        y0, x0 = s.origin
        xr, yr = range(x0, x0 + w), range(y0, y0 + p_y)
        lx, ly = X - x0, Y - y0
        params = {"rx0": x0, "ry0": y0, "nl": s.num_layers, "l0": max(s.first, 0), "first": int(s.embedding),
                  "last": int(s.lm_head), "shs": select(ly >= 1, 1 + ly % 2, 0),
                  "shr": select(ly <= p_y - 2, 1 + (ly + 1) % 2, 0), **ty.values(ly), **tx.values(lx)}
        params.update(_duty_params(s, hand, token_route, n_st, (p_y, w), cfg.timestamps, ts_cols[w],
                                   cfg.timestamp_rows))
        pes = prog.pes(xr, yr)
        xs, ys = pes % prog.width, pes // prog.width
        cls = _queue_class(prog, params, xs - x0, ys - y0, ty, tx)
        for k in np.unique(cls):
            k = int(k)
            if (w, k) not in bodies:
                # PEs of one queue class run their own copy of the body (see _queue_class)
                bodies[(w, k)] = _copy_body(templates[w], f"decode_q{k}" if w == p_x else f"decode_w{w}_q{k}")
            prog._place(bodies[(w, k)], None, None, params, auto=False, pes=pes[cls == k])
        ty.routes(prog, xr, yr, ly)
        tx.routes(prog, xr, yr, lx)
        if p_y > 1:
            _shift_routes(prog, xr, yr, ly, p_y, col.shift)
    main = p_x if p_x in lays else widths[0]
    shapes = {w: (lays[w], szs[w], strides[w], txs[w]) for w in widths}
    return DecodeProgram(cfg, prog, lays[main], szs[main], col, ty, txs[main], next(iter(bodies.values())),
                         strides[main], hand, token_route, shapes)


def _copy_body(final: Body, name: str) -> Body:
    """Another body with the same (finalized) code under a new name: the simulator binds input queues per
    body, so each copy gets its own binding (see _queue_class)."""
    import copy
    b = copy.copy(final)
    b.name = name
    b._final = b
    return b


def _param_array(prog: MeshProgram, v, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    if callable(v) and not isinstance(v, Expr):
        return np.asarray(v(xs, ys))
    return np.broadcast_to(np.asarray(prog.evaluate_at(as_expr(v), xs, ys)), xs.shape)


def _queue_class(prog: MeshProgram, params: dict, lx: np.ndarray, ly: np.ndarray, ty: LineTree,
                 tx: LineTree) -> np.ndarray:
    """The copy of the body each PE runs (0 … 7).

    The simulator binds input queues per body, the same for all its parameter sets (a PE program names its
    queues as constants), so one body needs a queue for every pair of colours any two of its PEs receive
    together: with one-sided level-0 groups a tree's colours need 3 queues, but 4 once its global root is
    among the PEs (the only PE taking both level-1 slots), and landing PEs add a hand-off colour. No PE
    receives on more than 7 colours, so splitting the PEs into classes — in the Y tree's global root row
    (bit 0), in the X tree's global root column (bit 1), landing a hand-off or the returned token (bit 2)
    — keeps every class within WSE-2's 7 input queues."""
    cls = np.zeros(lx.shape, dtype=np.int64)
    if ty.active:
        cls |= (ly == ty.root()).astype(np.int64)
    if tx.active:
        cls |= 2 * (lx == tx.root()).astype(np.int64)
    land = np.zeros(lx.shape, dtype=bool)
    xs_abs, ys_abs = lx + int(params["rx0"]), ly + int(params["ry0"])
    for name, ok in (("hland", lambda a: a != 0), ("tret", lambda a: a == 2)):
        val = params.get(name, 0)
        arr = np.asarray(val(xs_abs, ys_abs)) if callable(val) else np.full(lx.shape, val)
        land |= ok(arr)
    cls |= 4 * land.astype(np.int64)
    return cls


def _shift_routes(prog: MeshProgram, xr: range, yr: range, ly: Expr, p_y: int, colours: tuple[int, int]) -> None:
    """Row y sends north on colours[y % 2]; row y receives from the south on colours[(y + 1) % 2]."""
    N, S, RAMP = 1 << int(Port.NORTH), 1 << int(Port.SOUTH), 1 << int(Port.RAMP)
    for par, c in enumerate(colours):
        send = eq(ly % 2, par) & (ly >= 1)
        recv = eq((ly + 1) % 2, par) & (ly <= p_y - 2)
        prog.route_rule(xr, yr, c, send * RAMP + recv * S, send * N + recv * RAMP)


def _handoff_routes(prog: MeshProgram, move: str, a: DecodeStage, b: DecodeStage, p_y: int, wa: int, wb: int,
                    colours: tuple[int, ...], west_land: int) -> dict:
    """Routes of the hand-off a → b (regions of ``wa`` and ``wb`` columns; see ``_Code.handoff_in``); returns
    the senders {(x, y): round}, the landing PEs {(x, y): 1 or a bit per round} and, going south, the
    columns both regions span (``overlap``: first column, count)."""
    (ya, xa), (yb, xb) = a.origin, b.origin
    send, land = {}, {}
    overlap = None
    if move in ("east", "west"):
        # east lands on b's first column, west on the first column of b's last X level-0 group, passing
        # through the columns east of it: both are the first member of a level-0 group, which receives only
        # the X tree's multicasts, so a landing PE in a Y group-root row that takes the KV shift still
        # receives on at most 7 colours (b's last column, a level-0 root, would need 8)
        sx, lx = (xa + wa - 1, xb) if move == "east" else (xa, xb + west_land)
        out, inn = (Port.EAST, Port.WEST) if move == "east" else (Port.WEST, Port.EAST)
        c = colours[0]
        prog.set_route(sx, range(ya, ya + p_y), c, rx={Port.RAMP}, tx={out})
        if move == "west" and lx < xb + wb - 1:
            prog.set_route(range(lx + 1, xb + wb), range(yb, yb + p_y), c, rx={inn}, tx={out})
        prog.set_route(lx, range(yb, yb + p_y), c, rx={inn}, tx={Port.RAMP})
        for r in range(p_y):
            send[(sx, ya + r)] = 0
            land[(lx, yb + r)] = 1
    else:  # south: row r's segment runs down column x0 + r mod o of the o columns both regions span, colour
        # of round k = r div o, and lands on row P_y − 1 − k of b: one hand-off colour per landing PE (the
        # bottom row takes no KV shift, the rows above it no level-1 stream), so no PE receives on more than
        # 7 colours with two rounds or more
        x0 = max(xa, xb)
        o = min(xa + wa, xb + wb) - x0
        overlap = (x0, o)
        bottom = yb + p_y - 1
        for r in range(p_y):
            cx, k = x0 + r % o, r // o
            c = colours[k]
            land_row = bottom - k
            prog.set_route(cx, ya + r, c, rx={Port.RAMP}, tx={Port.SOUTH})
            prog.set_route(cx, range(ya + r + 1, land_row), c, rx={Port.NORTH}, tx={Port.SOUTH})
            prog.set_route(cx, land_row, c, rx={Port.NORTH}, tx={Port.RAMP})
            send[(cx, ya + r)] = k
            land[(cx, land_row)] = land.get((cx, land_row), 0) | (1 << k)  # a bit per round
    return {"move": move, "from": a.index, "to": b.index, "send": send, "land": land, "overlap": overlap}


def _token_route(prog: MeshProgram, last: DecodeStage, first: DecodeStage, grid: tuple[int, int],
                 colour: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """One route from the last stage's bottom-left PE to stage 0's (along the bottom row, then the column):
    bottom rows take no KV shift, so the landing PE has an input queue free."""
    p_y, p_x = grid
    (yl, xl), (yf, xf) = last.origin, first.origin
    src, dst = (xl, yl + p_y - 1), (xf, yf + p_y - 1)
    (sx, sy), (dx, dy) = src, dst
    path = [(sx, sy)]
    x, y = sx, sy
    while x != dx:
        x += 1 if dx > x else -1
        path.append((x, y))
    while y != dy:
        y += 1 if dy > y else -1
        path.append((x, y))
    for i, (px, py) in enumerate(path):
        rx = {Port.RAMP} if i == 0 else {_toward(path[i], path[i - 1])}
        tx = {Port.RAMP} if i == len(path) - 1 else {_toward(path[i], path[i + 1])}
        prog.set_route(px, py, colour, rx=rx, tx=tx)
    return src, dst


def _toward(a: tuple[int, int], b: tuple[int, int]) -> Port:
    dx, dy = b[0] - a[0], b[1] - a[1]
    return {(1, 0): Port.EAST, (-1, 0): Port.WEST, (0, 1): Port.SOUTH, (0, -1): Port.NORTH}[(dx, dy)]


def _duty_params(s: DecodeStage, hand: list[dict], token_route, n_st: int, grid: tuple[int, int],
                 timestamps: bool, ts_col: int, every_row: bool = False) -> dict:
    """Per-PE hand-off, token-return and timestamp duties of stage ``s`` (numbers or array callables).
    Timestamps go to one PE per region: the bottom row (it writes the new KV entry and shifts) of
    the first column with the most attention features (``ts_col``); with ``every_row`` to every row
    of that column."""
    p_y, p_x = grid
    y0, x0 = s.origin

    def table(mapping: dict, value_of) -> Callable:
        def f(xs, ys):
            out = np.zeros(np.shape(xs), dtype=np.int64)
            for (x, y), k in mapping.items():
                out[(xs == x) & (ys == y)] = value_of(k)
            return out
        return f

    params: dict = {"hmode": 0, "hland": 0, "hset": 0, "hout": 0, "homode": 0, "hoset": 0, "horound": 0,
                    "tret": 0, "ts": 0, "hvo": 0, "hvw": p_x}
    for i, h in enumerate(hand):
        mode = 1 if h["move"] in ("east", "west") else 2
        if h["to"] == s.index:
            params.update(hmode=mode, hset=i % 2, hland=table(h["land"], lambda k: k))
            if h["overlap"] is not None:
                params.update(hvo=h["overlap"][0] - x0, hvw=h["overlap"][1])
        if h["from"] == s.index:
            if h["move"] == "south":
                # row r sends down column x_o + r mod o in round r div o (_handoff_routes): a rule of the
                # region-local coordinates, so the CSL layout states it once instead of one PE per row
                lx, ly = X - x0, Y - y0
                so, o = h["overlap"][0] - x0, h["overlap"][1]
                send = eq(lx - so, ly % o) if so else eq(lx, ly % o)
                params.update(homode=mode, hoset=i % 2, hout=select(send, 1, 0), horound=select(send, ly // o, 0))
            else:
                params.update(homode=mode, hoset=i % 2, hout=table(h["send"], lambda k: 1),
                              horound=table(h["send"], lambda k: k))
    if token_route is not None:
        src, dst = token_route
        if s.index == n_st - 1:
            params["tret"] = table({src: 1}, lambda k: 1)
        if s.index == 0:
            params["tret"] = table({dst: 2}, lambda k: 2)
    if timestamps:
        rows = range(y0, y0 + p_y) if every_row else (y0 + p_y - 1,)
        params["ts"] = table({(x0 + ts_col, y): 1 for y in rows}, lambda k: 1)
    return params
