"""The instruction set, defined once: opcodes, the instruction layout, encoding and disassembly.

The sequencer (hardware), the compiler (:mod:`sim.machine.compiler`), the disassembler below, the command
line and ``docs/isa.md`` all take their opcodes and fields from here. One instruction is one
primitive of the integer program (:data:`golden.int_model.PRIMITIVES`) on one unit.

Fields (every instruction has all of them; an opcode uses the ones its row of :data:`FIELD_USE`
names, the others are zero):

* ``dst``, ``src0``, ``src1``: element addresses in the activation scratchpad (int8 values), or
  in the logits buffer for an int32 result;
* ``length``: elements per position of the (first) input: K of a GEMM, the vector length;
* ``count``: N of a GEMM, heads of RoPE and attention, the layer of ``kv_write``, the activation
  table of ``activation`` (its index in the vector unit's table memory, which the host loads once
  per run: ``Config.act_tables`` tables of 256 int8 entries);
* ``param``: word address in the parameter memory of the op's constants (multipliers, shifts,
  biases, gamma, the RoPE table), in the record layout :data:`PARAM_RECORDS` defines;
* ``weight``: word address in the weight memory (GEMM tiles, embedding tables);
* ``flags``: opcode-specific bits (:class:`GemmFlags`, :class:`EmbedFlags`).

The weight memory's GEMM tile order is :func:`weight_tiles`; every parameter record's layout is a
:class:`ParamRecord` in :data:`PARAM_RECORDS`. The compiler packs with them, the instruction-level
model (:mod:`sim.machine.isa_sim`) unpacks with them and the top level (:mod:`hdl.top`) takes its word
offsets from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from golden.errors import InputError, InputTypeError
from golden.numerics import ceil_div

__all__ = ["FIELD_BITS", "FIELD_USE", "INSTRUCTION_BITS", "MULT_SHIFT", "PARAM_BITS", "PARAM_RECORDS",
           "RESIDUAL_GEMM_RECORD", "EmbedFlags", "GemmFlags", "MultiplyFlags", "RopeFlags", "Instruction", "Opcode",
           "ParamRecord", "decode", "disassemble", "encode", "instruction_layout", "isa_markdown", "pack_mult_shift",
           "param_record", "unpack_mult_shift", "weight_from_tiles", "weight_tiles"]


class Opcode(enum.Enum, shape=unsigned(4)):
    """One opcode per primitive of the integer program."""

    HALT = 0
    EMBED = 1
    RMSNORM = 2
    LAYERNORM = 3
    GEMM = 4
    ROPE = 5
    KV_WRITE = 6
    ATTENTION = 7
    RESIDUAL_ADD = 8
    ACTIVATION = 9
    MULTIPLY = 10
    ARGMAX = 11


class GemmFlags(enum.Flag, shape=unsigned(4)):
    """GEMM's ``flags``: a bias record part is present; the result is requantized to int8 (else int32 logits);
    RESIDUAL: the output stage adds a residual (``Config.fused_residual``): each requantized output word y
    becomes ``residual_add(x, y)`` with x the word at ``src1`` (the residual add's first operand ``a``, y its
    ``b``) and the add's scalars from the record (:data:`RESIDUAL_GEMM_RECORD`); only with REQUANT."""

    BIAS = 1
    REQUANT = 2
    RESIDUAL = 4


class EmbedFlags(enum.Flag, shape=unsigned(4)):
    """EMBED's ``flags``: index the table by the position instead of the token."""

    BY_POSITION = 1


class MultiplyFlags(enum.Flag, shape=unsigned(4)):
    """MULTIPLY's ``flags``: ACTIVATION looks ``src0`` up in activation table ``count`` first
    (SwiGLU's ``act(gate) * up`` in one instruction, ``Config.fused_swiglu``)."""

    ACTIVATION = 1


class RopeFlags(enum.Flag, shape=unsigned(4)):
    """ROPE's ``flags``: SPLIT gives the last ``heads_b`` heads their own ``mult_b``/``shift_b`` (q's and
    k's RoPE in one instruction, ``Config.fused_rope``); the record then holds those three scalars."""

    SPLIT = 1


#: Field name -> width in bits, in layout order (field 0 in the low bits).
FIELD_BITS = {
    "opcode": 4,
    "flags": 4,
    "dst": 16,
    "src0": 16,
    "src1": 16,
    "length": 16,
    "count": 16,
    "param": 24,
    "weight": 24,
}
INSTRUCTION_BITS = sum(FIELD_BITS.values())

#: What each opcode does and which fields it reads: (unit, description, fields).
FIELD_USE = {
    Opcode.HALT: ("sequencer", "end of the decode step", ()),
    Opcode.EMBED: ("memory", "dst[0:length] = table row (token or position)", ("dst", "length", "weight", "flags")),
    Opcode.RMSNORM: ("vector", "dst = rmsnorm(src0) over length elements", ("dst", "src0", "length", "param")),
    Opcode.LAYERNORM: ("vector", "dst = layernorm(src0) over length elements", ("dst", "src0", "length", "param")),
    Opcode.GEMM: ("array", "dst[0:count] = requant(bias + src0[0:length] @ W) per channel; with flag RESIDUAL "
                           "dst = residual_add(src1, that)",
                  ("dst", "src0", "src1", "length", "count", "param", "weight", "flags")),
    Opcode.ROPE: ("vector", "dst = rope(src0) for count heads of length/count lanes at the position (flag SPLIT: "
                            "the last heads_b heads at mult_b, shift_b)", ("dst", "src0", "length", "count", "param",
                                                                           "flags")),
    Opcode.KV_WRITE: ("memory", "KV cache of layer count at the position = (src0, src1)",
                      ("src0", "src1", "length", "count")),
    Opcode.ATTENTION: ("attention", "dst = attention(q = src0, cache of layer count, positions 0..pos)",
                       ("dst", "src0", "length", "count", "param")),
    Opcode.RESIDUAL_ADD: ("vector", "dst = residual_add(src0, src1)", ("dst", "src0", "src1", "length", "param")),
    Opcode.ACTIVATION: ("vector", "dst = act_table[count][src0 + 128] (table count of the vector unit's table "
                                  "memory, loaded once per run)", ("dst", "src0", "length", "count")),
    Opcode.MULTIPLY: ("vector", "dst = requant(src0 * src1); flag ACTIVATION: requant(act_table[count][src0 + 128] "
                                "* src1)", ("dst", "src0", "src1", "length", "count", "param", "flags")),
    Opcode.ARGMAX: ("vector", "token = argmax(int32 src0[0:length]), ties to the lowest index", ("src0", "length")),
}


#: Bits of one entry of the parameter memory (a parameter word is ``V`` of them).
PARAM_BITS = 32

#: A requantization entry of a GEMM record: multiplier in the low half, shift in the high half.
MULT_SHIFT = data.StructLayout({"mult": unsigned(16), "shift": unsigned(16)})


def pack_mult_shift(mult, shift) -> np.ndarray:
    """Entries of :data:`MULT_SHIFT` from multipliers and shifts (arrays or integers)."""
    f = MULT_SHIFT
    return ((np.asarray(mult, dtype=np.int64) << f["mult"].offset)
            | (np.asarray(shift, dtype=np.int64) << f["shift"].offset))


def unpack_mult_shift(words) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_mult_shift`."""
    words = np.asarray(words, dtype=np.int64)
    return tuple((words >> MULT_SHIFT[name].offset) & ((1 << MULT_SHIFT[name].width) - 1)
                 for name in ("mult", "shift"))


@dataclass(frozen=True)
class ParamRecord:
    """The layout of one opcode's record in the parameter memory (entries of :data:`PARAM_BITS`).

    A record starts on a parameter word of ``align`` entries (``max(array_rows, array_cols)``, the
    top level's V). ``channels`` come first, in order: per-channel parts of N entries each (N: the
    op's ``length``, a GEMM's ``count``), each padded with zeros to whole words, so each part and
    the scalars after them start on a word. ``scalars`` are one entry each, in order. A part or a
    scalar named in ``flags`` is present only when the instruction has that flag (such scalars come
    last, so every other scalar keeps its entry).
    """

    channels: tuple[str, ...] = ()
    scalars: tuple[str, ...] = ()
    flags: dict = field(default_factory=dict)     # channel -> the flag that makes it present

    def present(self, flags: int = 0) -> tuple[str, ...]:
        """The channel parts an instruction with ``flags`` has."""
        return tuple(ch for ch in self.channels if ch not in self.flags or flags & self.flags[ch].value)

    def present_scalars(self, flags: int = 0) -> tuple[str, ...]:
        """The scalars an instruction with ``flags`` has."""
        return tuple(s for s in self.scalars if s not in self.flags or flags & self.flags[s].value)

    def channel_word(self, name: str, part_words, flags: int = 0):
        """Word offset of channel part ``name`` (``part_words``: words of one part, an int or a
        hardware value)."""
        return self._times(self.present(flags).index(name), part_words)

    @staticmethod
    def _times(k: int, part_words):
        if k == 0 or isinstance(part_words, int):
            return k * part_words
        # A hardware value: shifts and adds, no multiplier on the instruction decode's path (Yosys
        # maps a product by a constant such as 3 to a DSP block, a slow hop on an FPGA).
        terms = [part_words << i for i in range(k.bit_length()) if k >> i & 1]
        return sum(terms[1:], terms[0])

    def scalar_word(self, part_words, flags: int = 0):
        """Word offset of the first scalar."""
        return self._times(len(self.present(flags)), part_words)

    def scalar_index(self, name: str) -> int:
        """Entry of scalar ``name`` counted from the scalars' first word."""
        return self.scalars.index(name)

    def pack(self, align: int, values: dict, flags: int = 0) -> np.ndarray:
        """The record's entries (int64) from ``values`` (name -> array or integer)."""
        parts = []
        for ch in self.present(flags):
            arr = np.asarray(values[ch], dtype=np.int64).reshape(-1)
            parts.append(np.concatenate([arr, np.zeros(ceil_div(arr.size, align) * align - arr.size, np.int64)]))
        parts.append(np.array([values[s] for s in self.present_scalars(flags)], dtype=np.int64))
        return np.concatenate(parts)

    def unpack(self, memory, base: int, n: int, align: int, flags: int = 0) -> dict:
        """Name -> value of the record at entry ``base`` of ``memory``: channel parts as arrays of
        ``n`` entries, scalars as ints."""
        part = ceil_div(n, align) * align
        out = {ch: memory[base + i * part:base + i * part + n] for i, ch in enumerate(self.present(flags))}
        first = base + len(self.present(flags)) * part
        out.update({s: int(memory[first + i]) for i, s in enumerate(self.present_scalars(flags))})
        return out


#: Opcode -> the layout of its parameter record (opcodes not named have none). ROPE's ``table`` is
#: the entry address of cos[max_context][head_dim/2] then sin[...] (Q1.14), shared by every RoPE op
#: of the same shape.
PARAM_RECORDS = {
    Opcode.GEMM: ParamRecord(channels=("bias", "mult_shift"),
                             flags={"bias": GemmFlags.BIAS, "mult_shift": GemmFlags.REQUANT}),
    Opcode.RMSNORM: ParamRecord(channels=("gamma",), scalars=("eps", "out_mult", "out_shift")),
    Opcode.LAYERNORM: ParamRecord(channels=("gamma", "beta"),
                                  scalars=("eps", "out_mult", "out_shift", "inv_mult", "inv_shift")),
    Opcode.ROPE: ParamRecord(scalars=("mult", "shift", "table", "mult_b", "shift_b", "heads_b"),
                             flags={"mult_b": RopeFlags.SPLIT, "shift_b": RopeFlags.SPLIT, "heads_b": RopeFlags.SPLIT}),
    Opcode.ATTENTION: ParamRecord(scalars=("score_mult", "score_shift", "out_mult", "out_shift")),
    Opcode.RESIDUAL_ADD: ParamRecord(scalars=("a_mult", "b_mult", "mult", "shift")),
    Opcode.MULTIPLY: ParamRecord(scalars=("mult", "shift")),
}


#: The record of a GEMM with flag RESIDUAL (a GEMM with the residual add after it fused into its output
#: stage): the GEMM's channel parts, then the residual add's scalars, where the residual add's own record
#: has them (``a_mult`` multiplies the residual read at ``src1``, ``b_mult`` the GEMM's requantized output).
RESIDUAL_GEMM_RECORD = ParamRecord(channels=PARAM_RECORDS[Opcode.GEMM].channels,
                                   scalars=PARAM_RECORDS[Opcode.RESIDUAL_ADD].scalars,
                                   flags=PARAM_RECORDS[Opcode.GEMM].flags)


def param_record(opcode: Opcode, flags: int = 0) -> ParamRecord:
    """The record of an instruction of ``opcode`` with ``flags``: :data:`PARAM_RECORDS`'s, or
    :data:`RESIDUAL_GEMM_RECORD` for a GEMM with flag RESIDUAL."""
    if opcode is Opcode.GEMM and flags & GemmFlags.RESIDUAL.value:
        return RESIDUAL_GEMM_RECORD
    return PARAM_RECORDS[opcode]


def scalar_index(name: str, *opcodes: Opcode) -> int:
    """The entry of scalar ``name``, the same in the records of every one of ``opcodes`` (one
    hardware read serves them all); AssertionError if they disagree (a table bug)."""
    where = {PARAM_RECORDS[op].scalar_index(name) for op in opcodes}
    if len(where) != 1:
        raise AssertionError(f"scalar {name} sits at different entries in the records of {opcodes}: {sorted(where)}")
    return where.pop()


def weight_tiles(weight, rows: int, cols: int) -> np.ndarray:
    """A GEMM's ``(k, n)`` weights as the weight memory holds them: ``(nt * kt * rows, cols)`` words,
    zero-padded, for each output tile, each reduction tile, each row of the tile (the order the
    array consumes them)."""
    w = np.asarray(weight, dtype=np.int64)
    k, n = w.shape
    kt, nt = ceil_div(k, rows), ceil_div(n, cols)
    padded = np.zeros((kt * rows, nt * cols), np.int64)
    padded[:k, :n] = w
    return padded.reshape(kt, rows, nt, cols).transpose(2, 0, 1, 3).reshape(nt * kt * rows, cols)


def weight_from_tiles(tiles, k: int, n: int, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`weight_tiles`: the ``(k, n)`` weights from the tile words."""
    kt, nt = ceil_div(k, rows), ceil_div(n, cols)
    t = np.asarray(tiles, dtype=np.int64).reshape(nt, kt, rows, cols)
    return t.transpose(1, 2, 0, 3).reshape(kt * rows, nt * cols)[:k, :n]


def instruction_layout() -> data.StructLayout:
    """The instruction as an Amaranth layout (what the sequencer's program memory holds)."""
    return data.StructLayout({name: (Opcode if name == "opcode" else unsigned(bits))
                              for name, bits in FIELD_BITS.items()})


class Instruction(dict):
    """An instruction as field -> int (a dict, so it is plain data), with the opcode as Opcode."""

    @property
    def opcode(self) -> Opcode:
        return self["opcode"]

    def __repr__(self):
        return disassemble(self)


def make(opcode: Opcode, **fields) -> Instruction:
    """An instruction with the given fields (others zero); ValueError for a field that does not fit."""
    if not isinstance(opcode, Opcode):
        raise InputTypeError(f"opcode must be an Opcode, not {opcode!r}")
    ins = Instruction({name: 0 for name in FIELD_BITS})
    ins["opcode"] = opcode
    for name, value in fields.items():
        if name not in FIELD_BITS or name == "opcode":
            raise InputError(f"instruction has no field {name!r}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << FIELD_BITS[name]):
            raise InputError(f"instruction field {name} must be an integer in [0, {(1 << FIELD_BITS[name]) - 1}], "
                             f"not {value!r}")
        ins[name] = value
    return ins


def encode(ins: Instruction) -> int:
    word, offset = 0, 0
    for name, bits in FIELD_BITS.items():
        value = ins[name].value if name == "opcode" else ins[name]
        word |= (value & ((1 << bits) - 1)) << offset
        offset += bits
    return word


def decode(word: int) -> Instruction:
    """Inverse of :func:`encode`; ValueError for an unknown opcode."""
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < (1 << INSTRUCTION_BITS):
        raise InputError(f"instruction word must be an integer in [0, 2**{INSTRUCTION_BITS}), not {word!r}")
    ins, offset = Instruction(), 0
    for name, bits in FIELD_BITS.items():
        ins[name] = (word >> offset) & ((1 << bits) - 1)
        offset += bits
    try:
        ins["opcode"] = Opcode(ins["opcode"])
    except ValueError:
        raise InputError(f"instruction word holds unknown opcode {ins['opcode']}") from None
    return ins


def disassemble(ins: Instruction) -> str:
    used = FIELD_USE[ins.opcode][2]
    args = " ".join(f"{name}={ins[name]}" for name in used)
    return f"{ins.opcode.name.lower():12s} {args}".rstrip()


def isa_markdown() -> str:
    """The body of docs/isa.md, generated from the definitions above (a test compares them)."""
    lines = ["# Instruction set", "",
             "Generated from `hdl/isa.py` by `python -m hdl.isa`; `tests/hdl/test_isa.py` checks that this",
             "file and the code agree. One instruction is one primitive of the integer program",
             "(`golden/int_model.py`) on one unit.", "",
             f"## Instruction word ({INSTRUCTION_BITS} bits, field 0 in the low bits)", "",
             "| field | bits | offset |", "|---|---|---|"]
    offset = 0
    for name, bits in FIELD_BITS.items():
        lines.append(f"| `{name}` | {bits} | {offset} |")
        offset += bits
    lines += ["", "## Opcodes", "", "| opcode | value | unit | meaning | fields read |", "|---|---|---|---|---|"]
    for op in Opcode:
        unit, meaning, used = FIELD_USE[op]
        lines.append(f"| `{op.name}` | {op.value} | {unit} | {meaning} | {', '.join(used) or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(isa_markdown(), end="")
