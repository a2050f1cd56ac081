"""The instructions of a decode step: which ops of the integer program each instruction runs.

One rule, in one place, for everything that counts instructions: the compiler emits one instruction
per :class:`Group` (:mod:`sim.machine.compiler`), the cycle model predicts one count per group
(:func:`sim.machine.cycles.decode_step_cycles`), so the profile's rows, the RTL's trace entries and
the performance model's projections (:mod:`sim.perf.model`) all follow the same schedule.

Every op is its own instruction except GEMMs merged: a run of consecutive GEMMs of the program that
read the same value with the same K and have the same form (a bias or none; requantized to int8 --
the LM head's int32 logits never merge) is ONE GEMM instruction (Llama: q, k, v from the attention
norm and gate, up from the MLP norm; GPT-2: q, k, v). Its N columns are the members' side by side,
each member padded with zero columns to a multiple of ``pad`` = lcm(C, the scratchpad word
max(R, C)), so every output tile belongs to one member and every member's output starts on a
scratchpad word where the ops after it read it; N is the last member's offset plus its width. Its
weights, biases and per-channel multipliers and shifts are the members' concatenated with the same
padding (:attr:`Group.params`), so the merged GEMM computes each member's outputs bit for bit: a
GEMM's output channel depends only on its own column, bias, multiplier and shift. It runs the same
tiles as the members one after another and pays the per-instruction overhead once (issue, start,
the last tile's activation row, the array's R + C latency: 5 + R + C cycles at M = 1). A merged N
is at most what the instruction's ``count`` field holds.

Two vector fusions, each only on a design with its ``[chip]`` switch (``Config.fused_swiglu``,
``Config.fused_rope``; off, every vector op is its own instruction):

* SwiGLU: an ``activation`` whose only reader is the ``multiply`` right after it is one MULTIPLY
  instruction with the ACTIVATION flag (``L0.act+prod``): the vector unit looks the gate up in the
  table and multiplies by up in one pass; the activation's value is never written.
* RoPE: q's ``rope`` then k's, when q and k are members of one merged GEMM that lie side by side
  (k's columns start where q's end) and their widths are whole scratchpad words, is one ROPE
  instruction over all their heads (``L0.q_rot+k_rot``): q_rot and k_rot are written side by side
  too, k's heads at k's scale (:class:`hdl.isa.RopeFlags`).

With ``Config.fused_residual`` a lone requantized GEMM (not merged) followed at once by a residual
add that reads its output, where that add is the only op that reads it (Llama and GPT-2: o ->
x_attn, down -> x_out), is ONE GEMM instruction with the add (:attr:`Group.residual`): the GEMM's
output stage adds the residual (the add's other input) to each requantized output word and writes
the add's output; the GEMM's own output is never written. It costs GEMM_RESIDUAL = 1 cycle more
than the plain GEMM (:mod:`sim.machine.cycles`) instead of the add's vector instruction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from golden.int_model import GemmParams
from golden.numerics import ceil_div
from golden.quantize import gemm_form
from hdl.isa import FIELD_BITS

__all__ = ["MAX_GEMM_N", "Group", "column_pad", "instruction_groups"]

#: The widest GEMM one instruction can name (its ``count`` field).
MAX_GEMM_N = (1 << FIELD_BITS["count"]) - 1


def column_pad(config) -> int:
    """Columns each member of a merged GEMM is padded to a multiple of: whole output tiles (C) that
    also start on a scratchpad word (max(R, C), the compiler's allocation unit)."""
    return math.lcm(config.array_cols, max(config.array_rows, config.array_cols))


@dataclass(frozen=True, eq=False)
class Group:
    """The ops one instruction runs: one op, or the members of a merged GEMM.

    ``widths`` are the ops' output widths as this instruction computes them (a GEMM's N, or its
    shard's), ``offsets`` each op's first output column in the instruction (0 for a lone op),
    ``in_width`` the width of the first input (K of a GEMM)."""

    ops: tuple
    offsets: tuple[int, ...]
    widths: tuple[int, ...]
    in_width: int
    residual: object = None      # the residual add fused into a lone GEMM's output stage, or None

    @property
    def width(self) -> int:
        """The instruction's output width: N of a GEMM, the last member's offset plus its width."""
        return self.offsets[-1] + self.widths[-1]

    @property
    def op(self) -> str:
        return self.ops[0].op

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.ops[0].inputs

    @property
    def layer(self) -> int | None:
        return self.ops[0].layer

    @property
    def merged(self) -> bool:
        return len(self.ops) > 1

    @property
    def output(self) -> str:
        """The value a lone op writes; for a merged GEMM its members' names joined with '+' after
        their shared layer prefix ("L0.q+k+v"); for a GEMM with its residual add fused, the GEMM's and
        the add's ("L0.o+x_attn": the add's value is the one written)."""
        if self.residual is not None:
            prefix = f"L{self.layer}." if self.layer is not None else ""
            names = (self.ops[0].output, self.residual.output)
            if not all(n.startswith(prefix) for n in names):
                prefix = ""
            return prefix + "+".join(n[len(prefix):] for n in names)
        if not self.merged:
            return self.ops[0].output
        prefix = f"L{self.layer}." if self.layer is not None else ""
        if not all(op.output.startswith(prefix) for op in self.ops):
            prefix = ""
        return prefix + "+".join(op.output[len(prefix):] for op in self.ops)

    @property
    def written(self) -> str:
        """The value the instruction's output stage writes: the fused residual add's, else :attr:`output`."""
        return self.output if self.residual is None else self.residual.output

    @property
    def program_ops(self) -> tuple:
        """The integer-program ops the instruction runs, in program order (the fused add last)."""
        return self.ops if self.residual is None else (*self.ops, self.residual)

    @property
    def macs(self) -> int:
        """A GEMM's MACs a position: K x N of every member (padding columns are not work); else 0."""
        return self.in_width * sum(self.widths) if self.op == "gemm" else 0

    @functools.cached_property
    def params(self):
        """The integer constants of the instruction: a lone op's own; for a merged GEMM one
        :class:`golden.int_model.GemmParams` of the members' weights, biases, multipliers and shifts
        side by side, each member's zero-padded to its offset (None for ops without constants); for
        a fused vector instruction its first op's (each member keeps its own in ``ops``)."""
        if not self.merged or self.op != "gemm":
            return self.ops[0].params
        if any(op.params is None for op in self.ops):
            return None
        first = self.ops[0].params
        k = first.weight.shape[0]
        weight = np.zeros((k, self.width), np.int64)
        channels = {name: np.zeros(self.width, np.int64) for name in ("bias", "mult", "shift")}
        for op, off in zip(self.ops, self.offsets, strict=True):
            p = op.params
            n = p.weight.shape[1]
            weight[:, off:off + n] = p.weight
            for name, arr in channels.items():
                if getattr(p, name) is not None:
                    arr[off:off + n] = getattr(p, name)
        return GemmParams(weight=weight, bias=channels["bias"] if first.bias is not None else None,
                          mult=channels["mult"], shift=channels["shift"])


def _form(op) -> tuple[bool, bool]:
    """(has a bias, requantized) of a GEMM op: from its constants when it has them."""
    if op.params is not None:
        return op.params.bias is not None, op.params.requantized
    return gemm_form(op)


def instruction_groups(ops, config, *, gemm_shapes: dict | None = None) -> list[Group]:
    """The instructions of the program ``ops`` (:func:`golden.quantize.program_structure` or an
    IntModel's ``program``) on ``config``, in order (HALT not included).

    ``gemm_shapes`` (output value -> (K, N)) gives a GEMM another shape than the program's (a
    tensor-parallel chip's shard, :mod:`sim.perf.model`); the merge rule sees those shapes."""
    shapes = gemm_shapes or {}
    ops = list(ops)
    readers: dict[str, int] = {}         # value -> how many input slots of the program read it
    for op in ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    fuse = getattr(config, "fused_residual", False)
    pad = column_pad(config)
    widths = {"token": 1, "position": 1}
    groups: list[Group] = []
    run: list[tuple] = []            # (op, K, N) of the GEMMs that may still merge
    columns: dict[str, tuple] = {}   # a GEMM's output -> (its instruction's number, first column, width)

    def close(residual=None):
        if not run:
            return
        offsets = [0]
        for _, _, n in run[:-1]:
            offsets.append(offsets[-1] + ceil_div(n, pad) * pad)
        for (op, _, n), off in zip(run, offsets, strict=True):
            columns[op.output] = (len(groups), off, n)
        groups.append(Group(tuple(op for op, _, _ in run), tuple(offsets), tuple(n for _, _, n in run), run[0][1],
                            residual))
        run.clear()

    def fusable(add) -> bool:
        """``add`` (the op right after the GEMM run) is a residual add the run's lone GEMM feeds alone (not
        a tensor-parallel shard, whose partial sums are reduced before the add)."""
        if not (fuse and add.op == "residual_add" and len(run) == 1):
            return False
        gemm = run[0][0]
        return (_form(gemm)[1] and gemm.output not in shapes and gemm.output in add.inputs
                and add.inputs[0] != add.inputs[1] and readers.get(gemm.output) == 1)

    for op in ops:
        k = widths.get(op.inputs[0], 0) if op.inputs else 0
        widths[op.output] = op.width
        if op.op != "gemm":
            if run and fusable(op):
                close(op)
                continue
            close()
            last = groups[-1] if groups and not groups[-1].merged else None
            if last is not None and _fuses(last.ops[0], op, config, readers, columns, pad):
                groups[-1] = Group((last.ops[0], op), (0, 0 if op.op == "multiply" else last.width),
                                   (last.width, op.width), last.in_width)
                continue
            groups.append(Group((op,), (0,), (op.width,), k))
            continue
        k, n = shapes.get(op.output, (k, op.width))
        if run:
            first, k0, _ = run[0]
            top = sum(ceil_div(m, pad) * pad for _, _, m in run) + n
            if not (first.inputs == op.inputs and k0 == k and _form(first) == _form(op) and _form(op)[1]
                    and top <= MAX_GEMM_N):
                close()
        run.append((op, k, n))
    close()
    return groups


def _same_table(a, b) -> bool:
    """Two RoPE ops read one cos/sin table (always, in one model; constants absent: the structure)."""
    if a.params is None or b.params is None:
        return True
    return (a.params.head_dim, a.params.max_context, a.params.base) == (b.params.head_dim, b.params.max_context,
                                                                        b.params.base)


def _fuses(first, op, config, readers: dict, columns: dict, pad: int) -> bool:
    """Whether vector op ``op`` joins the lone instruction of ``first`` before it (the module
    docstring's two fusions, each on its design switch)."""
    if first.op == "activation" and op.op == "multiply" and getattr(config, "fused_swiglu", False):
        return readers.get(first.output) == 1 and op.inputs.count(first.output) == 1
    if first.op == "rope" and op.op == "rope" and getattr(config, "fused_rope", False):
        q, k = columns.get(first.inputs[0]), columns.get(op.inputs[0])
        return (q is not None and k is not None and q[0] == k[0] and k[1] == q[1] + q[2]
                and q[2] == first.width and k[2] == op.width and first.width % pad == 0 and _same_table(first, op))
    return False
