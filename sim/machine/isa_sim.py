"""An instruction-level model of the accelerator: the compiled program run on its memory images.

It decodes the program words, reads every operand and constant from the memories exactly where
the compiler put them, and computes each instruction with the golden primitive it names. Its
tokens must equal :class:`golden.int_model.IntModel`'s; that checks the compiler (layouts,
encodings, allocation) before any RTL runs, and it is the reference the RTL sequencer follows.
"""

from __future__ import annotations

import numpy as np

from golden.attention import AttentionParams, attention_decode
from golden.errors import InputError
from golden.numerics import ceil_div, requantize, wrap_int32
from golden.vector import (
    AddParams,
    NormParams,
    activation,
    argmax,
    layernorm,
    multiply,
    residual_add,
    rmsnorm,
    rope_with_tables,
)
from hdl.isa import (
    FIELD_USE,
    EmbedFlags,
    GemmFlags,
    Instruction,
    MultiplyFlags,
    Opcode,
    RopeFlags,
    decode,
    param_record,
    unpack_mult_shift,
    weight_from_tiles,
)

from .compiler import Compiled
from .passes import Row, check_pass, check_table

__all__ = ["IsaMachine"]


def _above(image: np.ndarray, base: int) -> np.ndarray:
    """``image`` (int64) at index ``base`` of its first axis, zeros below."""
    return np.concatenate([np.zeros((base, *image.shape[1:]), np.int64), image.astype(np.int64)])


class IsaMachine:
    """The memories of one accelerator and a decode step over them."""

    def __init__(self, compiled: Compiled):
        self.compiled = compiled
        self.program = [decode(w) for w in compiled.program_words]
        c = compiled.config
        self.cols = c.array_cols
        self.rows = c.array_rows
        self.align = max(c.array_rows, c.array_cols)   # per-channel record parts are padded to it
        # A model compiled beside another (sim.machine.compiler, "two models resident") addresses its
        # memories above the other's words: those read as zero here, as they are never read.
        b = compiled.bases
        self.weights = _above(compiled.weights, b.get("weight_words", 0) * self.cols)
        self.params = _above(compiled.params, b.get("param_words", 0))
        self.act_tables = _above(compiled.act_tables, b.get("act_tables", 0))
        self.scratch = np.zeros(c.scratch_bytes, np.int64)
        self.logits = np.zeros(c.logits_words, np.int64)
        layers, ctx, kvh, hd = compiled.kv_shape
        # The K and V memories as the decode top level has them: one row of head_dim a KV row,
        # addressed by Compiled.kv_rows through the row's block table (fixed slots: (slot,)).
        self.k = np.zeros((c.kv_bytes // (2 * hd), hd), np.int64)
        self.v = np.zeros_like(self.k)
        #: The block tables of the sequences (paged KV, ``Config.kv_block`` > 0), by slot: set_table.
        self.tables: dict[int, tuple[int, ...]] = {}
        self.max_context = ctx
        self.kv_heads, self.head_dim = kvh, hd

    def _record(self, ins, n: int = 0) -> dict:
        """The parameter record of ``ins`` (its :class:`hdl.isa.ParamRecord`), ``n`` entries a channel part."""
        return param_record(ins.opcode, ins["flags"]).unpack(self.params, ins["param"], n, self.align, ins["flags"])

    def step(self, token: int, position: int) -> int:
        """Run the program once for ``token`` at ``position``; return the argmax token."""
        out = self.run(token, position)
        if out is None:
            raise InputError("the program ended without an argmax")
        return out

    def run(self, token: int, position: int) -> int | None:
        """Run the program up to its HALT for one row (slot 0); return the argmax token, None if the
        program has no argmax (a partial program, as the RTL tests run)."""
        if not 0 <= position < self.max_context:
            raise InputError(f"position must be in [0, {self.max_context - 1}], not {position}")
        return self.run_pass([Row(token, position, 0)])[0]

    def set_table(self, slot: int, blocks) -> None:
        """Paged KV: the sequence in ``slot`` keeps its positions in ``blocks`` (its block table, the
        host's to write between passes; ``()`` clears it). InputError (one line) on fixed slots, for a
        slot or a block outside the KV memory, or more blocks than a context needs."""
        self.tables[slot] = check_table(self.compiled, slot, blocks)

    def run_pass(self, rows) -> list[int | None]:
        """Run the program up to its HALT over a pass's rows (:mod:`sim.machine.passes`: Rows or
        ``(token, position, slot)`` triples); return each row's argmax token (None without an argmax)."""
        rows = check_pass(self.compiled, rows, self.tables)
        out: list[int | None] = [None] * len(rows)
        for ins in self.program:
            if ins.opcode is Opcode.HALT:
                break
            # A GEMM streams every row through each weight tile, the others run a row at a time: the
            # order differs, the values do not (no instruction reads what another row of it writes).
            for r, row in enumerate(rows):
                token = self._row(ins, r, row)
                if token is not None:
                    out[r] = token
        return out

    def _row(self, ins, r: int, row: Row) -> int | None:
        """Instruction ``ins`` for row ``r`` of a pass: its scratchpad addresses moved by ``r`` row
        strides, its logits by ``r`` logits strides; returns ARGMAX's token."""
        c = self.compiled
        ins = dict(ins)
        logits_out = ins["opcode"] is Opcode.GEMM and not GemmFlags(ins["flags"]) & GemmFlags.REQUANT
        for name in FIELD_USE[ins["opcode"]][2]:
            if name == "dst":
                ins[name] += r * (c.logits_stride if logits_out else c.row_stride)
            elif name in ("src0", "src1"):
                ins[name] += r * (c.logits_stride if ins["opcode"] is Opcode.ARGMAX else c.row_stride)
        table = self.tables[row.slot] if c.config.kv_block else (row.slot,)
        return self._execute(Instruction(ins), row.token, row.position, table)

    def _execute(self, ins, token: int, position: int, table) -> int | None:
        """One instruction for one row (``table``: its KV blocks, :meth:`Compiled.kv_rows`)."""
        out = None
        s = self.scratch
        op = ins.opcode
        n = ins["length"]
        if op is Opcode.EMBED:
            row = position if EmbedFlags(ins["flags"]) & EmbedFlags.BY_POSITION else token
            start = (ins["weight"] + row * ins["count"]) * self.cols
            s[ins["dst"]:ins["dst"] + n] = self.weights[start:start + n]
        elif op in (Opcode.RMSNORM, Opcode.LAYERNORM):
            x = s[ins["src0"]:ins["src0"] + n][None]
            r = self._record(ins, n)
            if op is Opcode.RMSNORM:
                y = rmsnorm(x, NormParams(kind="rms", beta=None, inv_mult=0, inv_shift=0, **r))
            else:
                y = layernorm(x, NormParams(kind="layer", **r))
            s[ins["dst"]:ins["dst"] + n] = y[0]
        elif op is Opcode.GEMM:
            y = self._gemm(ins)
            if GemmFlags(ins["flags"]) & GemmFlags.RESIDUAL:
                # the residual add in the output stage: a = the residual at src1, b = the requantized output
                r = self._record(ins, ins["count"])
                x = s[ins["src1"]:ins["src1"] + ins["count"]]
                add = AddParams(**{name: r[name] for name in ("a_mult", "b_mult", "mult", "shift")})
                s[ins["dst"]:ins["dst"] + ins["count"]] = residual_add(x, y, add)
            elif GemmFlags(ins["flags"]) & GemmFlags.REQUANT:
                s[ins["dst"]:ins["dst"] + ins["count"]] = y
            else:
                self.logits[ins["dst"]:ins["dst"] + ins["count"]] = y
        elif op is Opcode.ROPE:
            heads = ins["count"]
            hd = n // heads
            r = self._record(ins)
            mult, shift, table = r["mult"], r["shift"], r["table"]
            half = self.max_context * (hd // 2)
            cos = self.params[table:table + half].reshape(self.max_context, hd // 2)
            sin = self.params[table + half:table + 2 * half].reshape(self.max_context, hd // 2)
            x = s[ins["src0"]:ins["src0"] + n].reshape(heads, hd)
            first = heads - (r["heads_b"] if RopeFlags(ins["flags"]) & RopeFlags.SPLIT else 0)
            y = rope_with_tables(x, np.full(heads, position), cos, sin, mult=mult, shift=shift)
            if first < heads:   # the last heads_b heads at their own scale
                y[first:] = rope_with_tables(x[first:], np.full(heads - first, position), cos, sin,
                                             mult=r["mult_b"], shift=r["shift_b"])
            s[ins["dst"]:ins["dst"] + n] = y.reshape(-1)
        elif op is Opcode.KV_WRITE:
            rows = self.compiled.kv_rows(table, ins["count"], [position])[0]
            self.k[rows] = s[ins["src0"]:ins["src0"] + n].reshape(self.kv_heads, self.head_dim)
            self.v[rows] = s[ins["src1"]:ins["src1"] + n].reshape(self.kv_heads, self.head_dim)
        elif op is Opcode.ATTENTION:
            rows = self.compiled.kv_rows(table, ins["count"], np.arange(position + 1))
            q = s[ins["src0"]:ins["src0"] + n].reshape(-1, self.head_dim)
            y = attention_decode(q, self.k[rows], self.v[rows],
                                 AttentionParams(**self._record(ins)), max_context=self.max_context)
            s[ins["dst"]:ins["dst"] + n] = y.reshape(-1)
        elif op is Opcode.RESIDUAL_ADD:
            a, b = s[ins["src0"]:ins["src0"] + n], s[ins["src1"]:ins["src1"] + n]
            s[ins["dst"]:ins["dst"] + n] = residual_add(a, b, AddParams(**self._record(ins)))
        elif op is Opcode.ACTIVATION:
            table = self.act_tables[ins["count"]]
            s[ins["dst"]:ins["dst"] + n] = activation(s[ins["src0"]:ins["src0"] + n], table)
        elif op is Opcode.MULTIPLY:
            a, b = s[ins["src0"]:ins["src0"] + n], s[ins["src1"]:ins["src1"] + n]
            if MultiplyFlags(ins["flags"]) & MultiplyFlags.ACTIVATION:
                a = activation(a, self.act_tables[ins["count"]])
            s[ins["dst"]:ins["dst"] + n] = multiply(a, b, **self._record(ins))
        elif op is Opcode.ARGMAX:
            out = int(argmax(self.logits[ins["src0"]:ins["src0"] + n][None])[0])
        else:  # pragma: no cover - decode() rejects unknown opcodes
            raise InputError(f"no semantics for {op}")
        return out

    def _gemm(self, ins) -> np.ndarray:
        """int8 GEMV from the weight tiles at ``weight``; bias and requantization from ``param``."""
        R, C = self.rows, self.cols
        k, n = ins["length"], ins["count"]
        start = ins["weight"] * C
        size = ceil_div(k, R) * ceil_div(n, C) * R * C
        w = weight_from_tiles(self.weights[start:start + size], k, n, R, C)
        x = self.scratch[ins["src0"]:ins["src0"] + k]
        acc = wrap_int32(x @ w)
        flags = GemmFlags(ins["flags"])
        r = self._record(ins, n)
        if flags & GemmFlags.BIAS:
            acc = wrap_int32(acc + r["bias"])
        if flags & GemmFlags.REQUANT:
            mult, shift = unpack_mult_shift(r["mult_shift"])
            return requantize(acc, mult, shift)
        return acc
