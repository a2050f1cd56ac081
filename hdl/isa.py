"""The instruction set, defined once: opcodes, the instruction layout, encoding and disassembly.

The sequencer (hardware), the compiler (:mod:`sim.compiler`), the disassembler below, the command
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
  biases, gamma, the RoPE table), in the record layout :mod:`sim.compiler` documents;
* ``weight``: word address in the weight memory (GEMM tiles, embedding tables);
* ``flags``: opcode-specific bits (GEMM: bit 0 bias, bit 1 requantize; EMBED: bit 0 index by
  position instead of token).
"""

from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from golden.errors import InputError, InputTypeError

__all__ = ["FIELD_BITS", "FIELD_USE", "INSTRUCTION_BITS", "Instruction", "Opcode", "decode", "disassemble",
           "encode", "instruction_layout", "isa_markdown"]


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
    Opcode.GEMM: ("array", "dst[0:count] = requant(bias + src0[0:length] @ W) per channel",
                  ("dst", "src0", "length", "count", "param", "weight", "flags")),
    Opcode.ROPE: ("vector", "dst = rope(src0) for count heads of length/count lanes at the position",
                  ("dst", "src0", "length", "count", "param")),
    Opcode.KV_WRITE: ("memory", "KV cache of layer count at the position = (src0, src1)",
                      ("src0", "src1", "length", "count")),
    Opcode.ATTENTION: ("attention", "dst = attention(q = src0, cache of layer count, positions 0..pos)",
                       ("dst", "src0", "length", "count", "param")),
    Opcode.RESIDUAL_ADD: ("vector", "dst = residual_add(src0, src1)", ("dst", "src0", "src1", "length", "param")),
    Opcode.ACTIVATION: ("vector", "dst = act_table[count][src0 + 128] (table count of the vector unit's table "
                                  "memory, loaded once per run)", ("dst", "src0", "length", "count")),
    Opcode.MULTIPLY: ("vector", "dst = requant(src0 * src1)", ("dst", "src0", "src1", "length", "param")),
    Opcode.ARGMAX: ("vector", "token = argmax(int32 src0[0:length]), ties to the lowest index", ("src0", "length")),
}


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
