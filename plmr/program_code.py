"""Bounds of the code and variables the decode and prefill programs place on every PE, for the
planner's memory (``waferllm.planner``: a plan that charges them builds).

The simulator charges code to SRAM at an estimate (``simulator.resources.code_bytes``, the same
estimate the CSL checker makes): ``spec.code_bytes_per_op`` per DSD op, ``code_bytes_per_statement``
per scalar or control statement, ``code_bytes_per_task`` per task or function, counted on the code
one parameter set keeps; variables are the body's plus what the CSL lowering adds
(``lowering_data_bytes``). A body's code follows its structure, not its sizes: loop counts, tile
sizes and buffer lengths are numbers in the same statements, so the count changes only with the
branches a grid keeps (one row or column, ring roles, q_y > 1, which columns hold heads), the dtype
(fp16 widens before fp32 statistics) and the biases. Over the programs measured (below) it moves
by about ±10% around its middle, so the bound is one count per program, the most measured with a
margin, priced with the target's own per-op costs (``CodeBound.bytes``).

Measured (``build_prefill_program`` / ``build_decode_program``, the most of any parameter set, both
targets): prefill 305-616 DSD ops, 1,064-1,837 statements, 9-11 bodies, 306-354 B of variables
(Qwen2.5-0.5B, LLaMA2-7B, LLaMA3-8B, Mistral-7B and the tiny test models; grids 1×6 to 20×20;
64 and 4,096 tokens; fp16 and fp32): 18.5-34.7 KB on WSE-2. Decode: 4.5-5.7 KB of code and
variables (Qwen2.5-0.5B to Qwen2-72B, grids 1×8 to 24×40, 1-5 stages). tests/plmr/test_program_code.py
builds a spread of both programs and checks that the bounds hold and are not loose by more than the
stated margin.
"""

from __future__ import annotations

from dataclasses import dataclass

from plmr.hardware import HardwareSpec


@dataclass(frozen=True)
class CodeBound:
    """At most this many DSD ops, statements and bodies (tasks and functions), and variable bytes,
    on any PE of a program."""

    ops: int
    statements: int
    bodies: int
    variable_bytes: int

    def code_bytes(self, spec: HardwareSpec) -> int:
        return (self.ops * spec.code_bytes_per_op + self.statements * spec.code_bytes_per_statement
                + self.bodies * spec.code_bytes_per_task)

    def bytes(self, spec: HardwareSpec) -> int:
        """Code and variables per PE on ``spec``."""
        return self.code_bytes(spec) + self.variable_bytes

    def fits_beside(self, spec: HardwareSpec, buffer_bytes: int) -> bool:
        """Whether a PE holding ``buffer_bytes`` of buffers has room for this code on ``spec``: the one
        test by which the planner says and ``waferllm compile`` decides that a plan made without the
        code must be made again with it."""
        return buffer_bytes + self.bytes(spec) <= spec.usable_sram_bytes


#: The prefill layer program (``meshgemm.prefill_program``): the most measured is 616 ops, 1,837
#: statements, 11 bodies, 354 B of variables (Qwen2.5-0.5B at 3×7, 4,096 tokens, fp16: 34,672 B of
#: code); 4% more ops and statements as margin.
PREFILL_CODE = CodeBound(ops=640, statements=1910, bodies=11, variable_bytes=360)
#: The decode program (``meshgemm.decode_program``), every stage's role (embedding, layers, LM head,
#: hand-offs, token return): the most measured is 113 ops, 197 statements, 7 bodies, 354 B of
#: variables (Qwen2-72B at 12×20 and 24×40, one stage; the attention in chunks added 4 ops, 16
#: statements and 18 B to the plain softmax's 109, 181 and 336); about 3-4% more ops and
#: statements as margin.
DECODE_CODE = CodeBound(ops=117, statements=204, bodies=7, variable_bytes=360)


def prefill_code_bytes(spec: HardwareSpec) -> int:
    """Code and variables of the prefill program on any PE (``PREFILL_CODE``)."""
    return PREFILL_CODE.bytes(spec)


def decode_code_bytes(spec: HardwareSpec) -> int:
    """Code and variables of the decode program on any PE (``DECODE_CODE``)."""
    return DECODE_CODE.bytes(spec)
