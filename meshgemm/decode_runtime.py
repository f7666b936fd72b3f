"""The host side of a decode program: pack weights into the per-PE buffers, fill the KV cache from a prefill,
launch steps on the simulated device and read tokens and logits back.

`DecodeRuntime` owns a `simulator.Device` loaded with a `meshgemm.decode_program.DecodeProgram`. Weights are
sharded by the program's `DecodeLayout` (the one description host packing and device code share) and
re-packed into the body's buffers: fused [Q | K | V] and [gate | up] natural blocks, W_O and W_down in
transposed block position, per-layer strides of the largest block, the embedding table ``V_x E_y`` with rows
padded to the largest E_y (the tied LM head reads it column-wise), the column's RoPE inverse frequencies.

The KV cache follows `meshgemm.kv_cache.ShiftKVCache` per layer: ``load_prefix`` writes a prompt's K (after
RoPE) and V into the rows and ring slots the rule gives; ``step`` checks the next append fits every layer
before it launches (a full cache raises `KVCacheFull` and nothing changes on the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from plmr.decode_memory import WEIGHT_BUFFERS as _WEIGHT_BUFFERS
from plmr.errors import InputError
from simulator.run import Device

from meshgemm.decode_program import MODE_EMBED, MODE_HEAD, MODE_STEP, STEP, DecodeProgram, buffer_plan
from meshgemm.kv_cache import KVCacheFull, ShiftKVCache

__all__ = ["DecodeRuntime", "StepResult", "KVCacheFull", "pack_images", "iter_images", "unpack_images",
           "WEIGHT_BUFFERS"]

#: The buffers that hold model parameters (a bundle's per-PE shards); the rest is state and scratch.
WEIGHT_BUFFERS = _WEIGHT_BUFFERS


def critical_path_ops(timestamps) -> dict[str, int]:
    """Cycles per op label on the critical path of a layer run with ``timestamp_rows``: each op's
    latest end over the stamped rows minus the previous op's. The rows that shift the KV cache and
    those holding one more entry are the busiest for different ops, so no single PE's stamps give
    every op. A row with fewer attention chunks runs fewer iterations: the rows' stamps are aligned
    from the start up to their last iteration (its last ``scores`` stamp) and from the end after it
    (the common maximum along Y, p·V's allreduce and the rest of the layer)."""
    rows: dict = {}  # row -> its stamps in program order
    for _, y, label, c in timestamps:
        rows.setdefault(y, []).append((label, c))
    split = {y: max(i for i, (lab, _) in enumerate(seq) if lab == "scores") for y, seq in rows.items()}
    longest = max(rows, key=lambda y: split[y])
    heads = {y: seq[:split[y]] for y, seq in rows.items()}
    tails = {y: seq[split[y]:] for y, seq in rows.items()}
    if any([lab for lab, _ in t] != [lab for lab, _ in tails[longest]] for t in tails.values()) or any(
            [lab for lab, _ in h] != [lab for lab, _ in heads[longest][:len(h)]] for h in heads.values()):
        raise ValueError("the rows' timestamps do not follow one sequence of ops")
    ops: dict[str, int] = {}
    prev = 0
    n_head = len(heads[longest])
    for i, (label, _) in enumerate(heads[longest] + tails[longest]):
        if i < n_head:
            end = max(h[i][1] for h in heads.values() if i < len(h))
        else:
            end = max(t[i - n_head][1] for t in tails.values())
        ops[label], prev = ops.get(label, 0) + end - prev, end
    return ops


def _lengths(prog: DecodeProgram, stage) -> dict[str, int]:
    from meshgemm.decode_program import buffer_length
    tied = prog.config.model.tie_word_embeddings
    return {name: buffer_length(kind, size, stage.num_layers, stage.embedding, stage.lm_head, tied)
            for name, (dt, kind, size) in buffer_plan(prog.config, prog.sizes_of(stage.index)).items()}


def pack_images(prog: DecodeProgram, weights) -> list[dict[str, np.ndarray]]:
    """Per stage, the per-PE images of every weight buffer ({name: [P_y, P_x, length]}, in the weights'
    dtype): fused [Q | K | V] and [gate | up] natural blocks, W_O and W_down transposed in block position,
    one stride per layer (the largest block), biases, the embedding ``V_x E_y`` with rows padded to the
    largest E_y, the natural LM head and the final norm. Buffers a stage does not use are left out.
    Each stage is packed by its own region's layout (a packed placement's strips are narrower)."""
    return list(iter_images(prog, weights))


def iter_images(prog: DecodeProgram, weights) -> Iterator[dict[str, np.ndarray]]:
    """`pack_images` one stage at a time, in the program's stage order: a writer that saves and drops each
    stage holds one stage's images (and its layers' blocks), not the whole model's twice over."""
    cfg = prog.config
    dt = np.asarray(weights.embed).dtype
    tied = cfg.model.tie_word_embeddings
    for s in cfg.stages:
        lay, st, sz = prog.layout_of(s.index), prog.strides_of(s.index), prog.sizes_of(s.index)
        P, X = lay.p_y, lay.p_x
        emb = lay.embed.shard(weights.embed) if (s.embedding or (s.lm_head and tied)) else None
        lm = lay.lm_head.shard(weights.lm_head) if (lay.lm_head is not None and s.lm_head) else None
        fnorm = lay.final_norm.shard(weights.final_norm) if s.lm_head else None
        lens = _lengths(prog, s)
        imgs = {n: np.zeros((P, X, lens[n]), dtype=dt) for n in WEIGHT_BUFFERS}
        used = set()
        def put(name: str, py: int, px: int, li: int, block: np.ndarray, key: str) -> None:
            flat = np.asarray(block).ravel()
            imgs[name][py, px, li * st[key]: li * st[key] + flat.size] = flat
            used.add(name)

        for li, g in enumerate(range(s.first, s.last + 1)):  # one layer's blocks at a time
            sh = lay.shard_layer(weights.layers[g])
            for py in range(P):
                for px in range(X):
                    here = {k: v[py][px] for k, v in sh.items()}
                    b = here.__getitem__
                    put("wqkv", py, px, li, np.concatenate([b("q"), b("k"), b("v")], axis=1), "wqkv")
                    put("wo", py, px, li, b("o"), "wo")
                    put("wgu", py, px, li, np.concatenate([b("gate"), b("up")], axis=1), "wgu")
                    put("wd", py, px, li, b("down"), "wd")
                    put("gin", py, px, li, b("input_norm"), "g")
                    put("gpost", py, px, li, b("post_norm"), "g")
                    if "q_bias" in sh:
                        put("bqkv", py, px, li, np.concatenate([b("q_bias"), b("k_bias"), b("v_bias")]), "bqkv")
                    if "o_bias" in sh:
                        put("bo", py, px, li, b("o_bias"), "g")
                    if "gate_bias" in sh:
                        put("bgu", py, px, li, np.concatenate([b("gate_bias"), b("up_bias")]), "bgu")
                    if "down_bias" in sh:
                        put("bd", py, px, li, b("down_bias"), "g")
            del sh
        for py in range(P):
            for px in range(X):
                if s.embedding or (s.lm_head and tied):
                    blk = emb[py][px]
                    e = np.zeros((sz.VXM, sz.EYM), dtype=dt)
                    e[:blk.shape[0], :blk.shape[1]] = blk
                    imgs["emb"][py, px] = e.ravel()
                    used.add("emb")
                if s.lm_head:
                    imgs["fnorm"][py, px, :fnorm[py][px].size] = fnorm[py][px]
                    used.add("fnorm")
                    if lm is not None:
                        imgs["wlm"][py, px, :lm[py][px].size] = lm[py][px].ravel()
                        used.add("wlm")
        yield {n: a for n, a in imgs.items() if n in used}


def unpack_images(prog: DecodeProgram, images: list[dict[str, np.ndarray]], model, dtype: str):
    """The full model weights back from per-PE images (the inverse of `pack_images`): what the host needs
    for work the device does not do yet (a prefill on the host)."""
    from waferllm.weights import LayerWeights, ModelWeights
    cfg = prog.config
    npdt = np.float16 if dtype == "fp16" else np.float32
    layers = []
    for s in cfg.stages:
        lay, st = prog.layout_of(s.index), prog.strides_of(s.index)
        P, X = lay.p_y, lay.p_x
        hl = lay.heads
        img = images[s.index]
        for li in range(s.num_layers):
            fields: dict[str, list] = {}

            def blocks(fn):
                return [[fn(px, py) for px in range(X)] for py in range(P)]

            def seg(name, key, px, py, n):
                return img[name][py, px, li * st[key]: li * st[key] + n]

            def dims(px, py):
                return lay.hidden.sizes[py], hl.q.sizes[px], hl.kv.sizes[px], lay.ffn.sizes[px]

            # (explicit shapes: a PE may hold no features of a block, and numpy cannot infer -1 from 0 elements)
            qkv = blocks(lambda px, py: seg("wqkv", "wqkv", px, py, dims(px, py)[0] * (dims(px, py)[1] + 2 * dims(px, py)[2]))
                         .reshape(dims(px, py)[0], dims(px, py)[1] + 2 * dims(px, py)[2]))
            gu = blocks(lambda px, py: seg("wgu", "wgu", px, py, dims(px, py)[0] * 2 * dims(px, py)[3])
                        .reshape(dims(px, py)[0], 2 * dims(px, py)[3]))
            fields["q"] = blocks(lambda px, py: qkv[py][px][:, :dims(px, py)[1]])
            fields["k"] = blocks(lambda px, py: qkv[py][px][:, dims(px, py)[1]:dims(px, py)[1] + dims(px, py)[2]])
            fields["v"] = blocks(lambda px, py: qkv[py][px][:, dims(px, py)[1] + dims(px, py)[2]:])
            fields["o"] = blocks(lambda px, py: seg("wo", "wo", px, py, dims(px, py)[1] * dims(px, py)[0])
                                 .reshape(dims(px, py)[1], dims(px, py)[0]))
            fields["gate"] = blocks(lambda px, py: gu[py][px][:, :dims(px, py)[3]])
            fields["up"] = blocks(lambda px, py: gu[py][px][:, dims(px, py)[3]:])
            fields["down"] = blocks(lambda px, py: seg("wd", "wd", px, py, dims(px, py)[3] * dims(px, py)[0])
                                    .reshape(dims(px, py)[3], dims(px, py)[0]))
            fields["input_norm"] = blocks(lambda px, py: seg("gin", "g", px, py, dims(px, py)[0]))
            fields["post_norm"] = blocks(lambda px, py: seg("gpost", "g", px, py, dims(px, py)[0]))
            if "bqkv" in img:
                bq = blocks(lambda px, py: seg("bqkv", "bqkv", px, py, dims(px, py)[1] + 2 * dims(px, py)[2]))
                fields["q_bias"] = blocks(lambda px, py: bq[py][px][:dims(px, py)[1]])
                fields["k_bias"] = blocks(lambda px, py: bq[py][px][dims(px, py)[1]:dims(px, py)[1] + dims(px, py)[2]])
                fields["v_bias"] = blocks(lambda px, py: bq[py][px][dims(px, py)[1] + dims(px, py)[2]:])
            if "bo" in img:
                fields["o_bias"] = blocks(lambda px, py: seg("bo", "g", px, py, dims(px, py)[0]))
            if "bgu" in img:
                bg = blocks(lambda px, py: seg("bgu", "bgu", px, py, 2 * dims(px, py)[3]))
                fields["gate_bias"] = blocks(lambda px, py: bg[py][px][:dims(px, py)[3]])
                fields["up_bias"] = blocks(lambda px, py: bg[py][px][dims(px, py)[3]:])
            if "bd" in img:
                fields["down_bias"] = blocks(lambda px, py: seg("bd", "g", px, py, dims(px, py)[0]))
            full = lay.gather_layer(fields)
            layers.append(LayerWeights(**{k: (None if v is None else np.ascontiguousarray(v).astype(npdt))
                                          for k, v in full.items()}))
    first, last = images[cfg.stages[0].index], images[cfg.stages[-1].index]
    lay, sz = prog.layout_of(cfg.stages[0].index), prog.sizes_of(cfg.stages[0].index)
    P, X = lay.p_y, lay.p_x
    emb_blocks = [[first["emb"][py, px].reshape(sz.VXM, sz.EYM)[:lay.vocab.sizes[px], :lay.hidden.sizes[py]]
                   for px in range(X)] for py in range(P)]
    embed = lay.embed.gather(emb_blocks).astype(npdt)
    lay = prog.layout_of(cfg.stages[-1].index)
    P, X = lay.p_y, lay.p_x
    fnorm = lay.final_norm.gather([[last["fnorm"][py, px, :lay.hidden.sizes[py]] for px in range(X)]
                                   for py in range(P)], check_replicas=False).astype(npdt)
    if lay.lm_head is None:
        lm_head = embed.T
    else:
        lm_head = lay.lm_head.gather([[last["wlm"][py, px, :lay.hidden.sizes[py] * lay.vocab.sizes[px]]
                                       .reshape(lay.hidden.sizes[py], lay.vocab.sizes[px]) for px in range(X)] for py in range(P)]
                                     ).astype(npdt)
    return ModelWeights(spec=model, dtype=dtype, embed=embed, layers=tuple(layers), final_norm=fnorm,
                        lm_head=lm_head)



@dataclass
class StepResult:
    """One launch: the token it produced (None for a timing-only device or a launch without a head), the
    logits it was picked from (fp32 [V], functional mode) and the simulated cycles."""

    token: int | None
    logits: np.ndarray | None
    cycles: int
    result: object  # the launch's SimResult


class DecodeRuntime:
    """A decode program loaded on a simulated device (see the module docstring)."""

    def __init__(self, prog: DecodeProgram, mode: str = "functional", max_cycles: int = 2_000_000_000,
                 threads: int | None = None):
        self.prog = prog
        self.cfg = prog.config
        self.lay = prog.layout
        self.sz = prog.sizes
        self.functional = mode == "functional"
        self.dev = Device(prog.program, mode=mode, max_cycles=max_cycles, threads=threads)
        m = self.cfg.model
        self.rules = [ShiftKVCache(self.lay.p_y, self.cfg.capacity, m.layer_sliding_window(i))
                      for i in range(m.num_layers)]
        self.length = 0  # tokens in the KV cache = position of the next token to process
        self._np = np.float16 if self.cfg.dtype == "fp16" else np.float32
        if self.functional:
            self._write_tables()

    # ---- per-PE buffer access ------------------------------------------------------------------------------
    def _pe(self, stage: int, px: int, py: int) -> tuple[int, int]:
        return self.prog.stage_pe(stage, px, py)

    def read(self, stage: int, px: int, py: int, name: str) -> np.ndarray:
        return self.dev.read(*self._pe(stage, px, py), name)

    def _write(self, stage: int, px: int, py: int, name: str, values: np.ndarray) -> None:
        x, y = self._pe(stage, px, py)
        buf = self.prog.program.buffer(x, y, name)
        arr = np.zeros(buf.length, dtype=np.float64)
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size > buf.length:
            raise AssertionError(f"{name}: {flat.size} values for a buffer of {buf.length} on PE {(x, y)}")
        arr[:flat.size] = flat
        self.dev.write(x, y, name, arr)

    def _pes(self):
        for s in self.cfg.stages:
            lay = self.prog.layout_of(s.index)
            for py in range(lay.p_y):
                for px in range(lay.p_x):
                    yield s, px, py

    # ---- weights ---------------------------------------------------------------------------------------------
    def _write_tables(self) -> None:
        inv = np.asarray(self.cfg.model.rope_inv_freq(), dtype=np.float64).astype(np.float32)
        for s, px, py in self._pes():
            a, b = self.prog.layout_of(s.index).heads.column_pairs[px]
            self._write(s.index, px, py, "invf", inv[a:b] if b > a else np.zeros(0))

    def load_weights(self, weights) -> None:
        """Shard ``weights`` (`waferllm.weights.ModelWeights`) by the layout and write every stage's blocks."""
        if weights.dtype != self.cfg.dtype:
            raise InputError(f"weights are {weights.dtype}, the program was built for {self.cfg.dtype}")
        self.load_images(pack_images(self.prog, weights))

    def load_images(self, images: list[dict[str, np.ndarray]]) -> None:
        """Write per-PE buffer images (``images[stage][name]`` shaped [P_y, P_x, length], as `pack_images`
        makes them and a bundle stores them) into the device."""
        if not self.functional:
            return
        for s in self.cfg.stages:
            lay = self.prog.layout_of(s.index)
            for name, arr in images[s.index].items():
                for py in range(lay.p_y):
                    for px in range(lay.p_x):
                        self._write(s.index, px, py, name, arr[py, px])

    # ---- the KV cache and the hidden state from a prefill ---------------------------------------------------
    def load_prefix(self, k_layers: list[np.ndarray], v_layers: list[np.ndarray], last_hidden: np.ndarray) -> None:
        """Host writes of a prefill's results: per layer K (after RoPE) and V of the L prompt tokens
        ([L, n_kv·d]) into the rows and ring slots of the shift rule, features by the head layout; the last
        position's hidden state ([E], before the final norm) into the last stage's ``x``."""
        L = k_layers[0].shape[0]
        for r in self.rules:
            r.prefill(L)  # KVCacheFull when the prompt does not fit
        cap = self.cfg.capacity
        kb, vb = [], []
        for g, r in enumerate(self.rules):
            lay = self._layer_layout(g)
            kv = lay.heads.kv
            ranges = r.row_ranges(L)
            k = [[np.zeros((cap, kv.sizes[px])) for px in range(lay.p_x)] for _ in range(lay.p_y)]
            v = [[np.zeros((cap, kv.sizes[px])) for px in range(lay.p_x)] for _ in range(lay.p_y)]
            for py, (a, b) in enumerate(ranges):
                for t in range(a, b):
                    for px in range(lay.p_x):
                        k[py][px][r.slot(t)] = kv.take(np.asarray(k_layers[g][t]), px)
                        v[py][px][r.slot(t)] = kv.take(np.asarray(v_layers[g][t]), px)
            kb.append(k)
            vb.append(v)
        last = self.prog.layout_of(self.cfg.stages[-1].index)
        self.load_cache_blocks(kb, vb, last.hidden_vec.shard(np.asarray(last_hidden)), L)

    def _layer_layout(self, g: int):
        """The layout of the stage holding layer ``g``."""
        for s in self.cfg.stages:
            if s.first <= g <= s.last:
                return self.prog.layout_of(s.index)
        return self.lay

    def load_cache_blocks(self, k_blocks: list, v_blocks: list, hidden_blocks, length: int) -> None:
        """The decode-layout KV cache (per layer, per PE [capacity, kv features of the column], token t in
        ring slot t mod capacity, as `meshgemm.block_dataflow.DecodeDataflow.caches` and the device prefill
        leave it) and the last hidden state (Y-dist blocks) into the device; ``length`` cached tokens."""
        for r in self.rules:
            r.prefill(length)
        if self.functional:
            cap = self.cfg.capacity
            for s in self.cfg.stages:
                lay, st = self.prog.layout_of(s.index), self.prog.strides_of(s.index)
                for py in range(lay.p_y):
                    for px in range(lay.p_x):
                        kvx = lay.heads.kv.sizes[px]
                        kc = np.zeros(max(1, s.num_layers * st["kc"]))
                        vc = np.zeros(max(1, s.num_layers * st["vc"]))
                        for li, g in enumerate(range(s.first, s.last + 1)):
                            kk = np.asarray(k_blocks[g][py][px], dtype=np.float64)[:cap, :kvx]
                            vv = np.asarray(v_blocks[g][py][px], dtype=np.float64)[:cap, :kvx]
                            kc[li * st["kc"]: li * st["kc"] + kvx * cap] = kk.T.ravel()
                            vc[li * st["vc"]: li * st["vc"] + cap * kvx] = vv.ravel()
                        self._write(s.index, px, py, "kc", kc)
                        self._write(s.index, px, py, "vc", vc)
            last = self.cfg.stages[-1].index
            lay = self.prog.layout_of(last)
            for py in range(lay.p_y):
                for px in range(lay.p_x):
                    self._write(last, px, py, "x", hidden_blocks[py][px])
        self.length = length

    # ---- launches --------------------------------------------------------------------------------------------
    def head(self) -> StepResult:
        """Final norm, LM head and argmax of the hidden state in the last stage; the token's embedding lands
        in stage 0 (the first token after a prefill)."""
        res = self.dev.launch(STEP, pos=self.length, mode=MODE_HEAD, tok_in=0)
        return self._result(res)

    def embed(self, token: int) -> StepResult:
        if not 0 <= token < self.cfg.model.vocab_size:
            raise InputError(f"token id {token} is outside the vocabulary 0..{self.cfg.model.vocab_size - 1}")
        res = self.dev.launch(STEP, pos=self.length, mode=MODE_EMBED, tok_in=token)
        return StepResult(None, None, res.total_cycles, res)

    def check_room(self) -> None:
        """`KVCacheFull` (with the numbers) if the next token does not fit some layer's cache."""
        for r in self.rules:
            r.check_append(self.length)

    def step(self) -> StepResult:
        """Process the token whose embedding is in stage 0 at position ``length``: every layer, the head,
        the next token's embedding. Raises `KVCacheFull` before launching when the cache is full."""
        self.check_room()
        res = self.dev.launch(STEP, pos=self.length, mode=MODE_STEP, tok_in=0)
        self.length += 1
        return self._result(res)

    def _result(self, res) -> StepResult:
        if not self.functional:
            return StepResult(None, None, res.total_cycles, res)
        last = self.cfg.stages[-1].index
        lay = self.prog.layout_of(last)
        x, y = self._pe(last, 0, 0)
        tok = int(round(self.dev.get(x, y, "tok")))
        vocab = lay.vocab
        blocks = [self.read(last, px, 0, "lg")[:vocab.sizes[px]].astype(np.float32) for px in range(lay.p_x)]
        logits = vocab.assemble(blocks)
        return StepResult(tok, logits, res.total_cycles, res)
