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

import numpy as np

from plmr.errors import InputError
from simulator.run import Device

from meshgemm.decode_program import EMBED, HEAD, STEP, DecodeProgram, buffer_plan
from meshgemm.kv_cache import KVCacheFull, ShiftKVCache

__all__ = ["DecodeRuntime", "StepResult", "KVCacheFull"]


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

    def __init__(self, prog: DecodeProgram, mode: str = "functional", max_cycles: int = 2_000_000_000):
        self.prog = prog
        self.cfg = prog.config
        self.lay = prog.layout
        self.sz = prog.sizes
        self.functional = mode == "functional"
        self.dev = Device(prog.program, mode=mode, max_cycles=max_cycles)
        m = self.cfg.model
        self.rules = [ShiftKVCache(self.lay.p_y, self.cfg.capacity, m.layer_sliding_window(i))
                      for i in range(m.num_layers)]
        self.length = 0  # tokens in the KV cache = position of the next token to process
        self._buffers = buffer_plan(self.cfg, self.sz)
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
            for py in range(self.lay.p_y):
                for px in range(self.lay.p_x):
                    yield s, px, py

    # ---- weights ---------------------------------------------------------------------------------------------
    def _write_tables(self) -> None:
        inv = np.asarray(self.cfg.model.rope_inv_freq(), dtype=np.float64).astype(np.float32)
        hl = self.lay.heads
        for s, px, py in self._pes():
            a, b = hl.column_pairs[px]
            self._write(s.index, px, py, "invf", inv[a:b] if b > a else np.zeros(0))

    def load_weights(self, weights) -> None:
        """Shard ``weights`` (`waferllm.weights.ModelWeights`) by the layout and write every stage's blocks."""
        if not self.functional:
            return
        if weights.dtype != self.cfg.dtype:
            raise InputError(f"weights are {weights.dtype}, the program was built for {self.cfg.dtype}")
        lay, st = self.lay, self.prog.strides
        P, X = lay.p_y, lay.p_x
        sz = self.sz
        emb = lay.embed.shard(weights.embed)
        lm = lay.lm_head.shard(weights.lm_head) if lay.lm_head is not None else None
        fnorm = lay.final_norm.shard(weights.final_norm)
        tied = self.cfg.model.tie_word_embeddings
        for s in self.cfg.stages:
            shards = [lay.shard_layer(weights.layers[g]) for g in range(s.first, s.last + 1)]
            for py in range(P):
                for px in range(X):
                    bufs: dict[str, np.ndarray] = {}

                    def put(name: str, li: int, block: np.ndarray, stride_key: str) -> None:
                        arr = bufs.setdefault(name, np.zeros(max(1, s.num_layers * st[stride_key])))
                        flat = np.asarray(block, dtype=np.float64).ravel()
                        arr[li * st[stride_key]: li * st[stride_key] + flat.size] = flat

                    for li, sh in enumerate(shards):
                        b = lambda k: sh[k][py][px]  # noqa: E731
                        put("wqkv", li, np.concatenate([b("q"), b("k"), b("v")], axis=1), "wqkv")
                        put("wo", li, b("o"), "wo")
                        put("wgu", li, np.concatenate([b("gate"), b("up")], axis=1), "wgu")
                        put("wd", li, b("down"), "wd")
                        put("gin", li, b("input_norm"), "g")
                        put("gpost", li, b("post_norm"), "g")
                        if "q_bias" in sh:
                            put("bqkv", li, np.concatenate([b("q_bias"), b("k_bias"), b("v_bias")]), "bqkv")
                        if "o_bias" in sh:
                            put("bo", li, b("o_bias"), "g")
                        if "gate_bias" in sh:
                            put("bgu", li, np.concatenate([b("gate_bias"), b("up_bias")]), "bgu")
                        if "down_bias" in sh:
                            put("bd", li, b("down_bias"), "g")
                    if s.embedding or (s.lm_head and tied):
                        e = np.zeros((sz.VXM, sz.EYM))
                        blk = emb[py][px]
                        e[:blk.shape[0], :blk.shape[1]] = blk
                        bufs["emb"] = e
                    if s.lm_head:
                        bufs["fnorm"] = fnorm[py][px]
                        if lm is not None:
                            bufs["wlm"] = lm[py][px]
                    for name, arr in bufs.items():
                        self._write(s.index, px, py, name, arr)

    # ---- the KV cache and the hidden state from a prefill ---------------------------------------------------
    def load_prefix(self, k_layers: list[np.ndarray], v_layers: list[np.ndarray], last_hidden: np.ndarray) -> None:
        """Host writes of a prefill's results: per layer K (after RoPE) and V of the L prompt tokens
        ([L, n_kv·d]) into the rows and ring slots of the shift rule, features by the head layout; the last
        position's hidden state ([E], before the final norm) into the last stage's ``x``."""
        L = k_layers[0].shape[0]
        for r in self.rules:
            r.prefill(L)  # KVCacheFull when the prompt does not fit
        if self.functional:
            lay, st, cap = self.lay, self.prog.strides, self.cfg.capacity
            kv = lay.heads.kv
            for s in self.cfg.stages:
                for py in range(lay.p_y):
                    for px in range(lay.p_x):
                        kvx = kv.sizes[px]
                        kc = np.zeros(max(1, s.num_layers * st["kc"]))
                        vc = np.zeros(max(1, s.num_layers * st["vc"]))
                        for li, g in enumerate(range(s.first, s.last + 1)):
                            a, b = self.rules[g].row_ranges(L)[py]
                            for t in range(a, b):
                                slot = self.rules[g].slot(t)
                                kk = kv.take(np.asarray(k_layers[g][t]), px)
                                vv = kv.take(np.asarray(v_layers[g][t]), px)
                                for f in range(kvx):
                                    kc[li * st["kc"] + f * cap + slot] = kk[f]
                                vc[li * st["vc"] + slot * kvx: li * st["vc"] + (slot + 1) * kvx] = vv
                        self._write(s.index, px, py, "kc", kc)
                        self._write(s.index, px, py, "vc", vc)
            last = self.cfg.stages[-1].index
            x = lay.hidden_vec.shard(np.asarray(last_hidden))
            for py in range(lay.p_y):
                for px in range(lay.p_x):
                    self._write(last, px, py, "x", x[py][px])
        self.length = L

    # ---- launches --------------------------------------------------------------------------------------------
    def head(self) -> StepResult:
        """Final norm, LM head and argmax of the hidden state in the last stage; the token's embedding lands
        in stage 0 (the first token after a prefill)."""
        res = self.dev.launch(HEAD)
        return self._result(res)

    def embed(self, token: int) -> StepResult:
        if not 0 <= token < self.cfg.model.vocab_size:
            raise InputError(f"token id {token} is outside the vocabulary 0..{self.cfg.model.vocab_size - 1}")
        res = self.dev.launch(EMBED, tok_in=token)
        return StepResult(None, None, res.total_cycles, res)

    def check_room(self) -> None:
        """`KVCacheFull` (with the numbers) if the next token does not fit some layer's cache."""
        for r in self.rules:
            r.check_append(self.length)

    def step(self) -> StepResult:
        """Process the token whose embedding is in stage 0 at position ``length``: every layer, the head,
        the next token's embedding. Raises `KVCacheFull` before launching when the cache is full."""
        self.check_room()
        res = self.dev.launch(STEP, pos=self.length)
        self.length += 1
        return self._result(res)

    def _result(self, res) -> StepResult:
        if not self.functional:
            return StepResult(None, None, res.total_cycles, res)
        last = self.cfg.stages[-1].index
        lay = self.lay
        x, y = self._pe(last, 0, 0)
        tok = int(round(self.dev.get(x, y, "tok")))
        vocab = lay.vocab
        blocks = [self.read(last, px, 0, "lg")[:vocab.sizes[px]].astype(np.float32) for px in range(lay.p_x)]
        logits = vocab.assemble(blocks)
        return StepResult(tok, logits, res.total_cycles, res)
