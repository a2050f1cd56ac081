"""The instruction set: one definition, encoding round trips, and docs/isa.md kept true."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hdl.isa import (
    FIELD_BITS,
    FIELD_USE,
    INSTRUCTION_BITS,
    Opcode,
    decode,
    encode,
    instruction_layout,
    isa_markdown,
    make,
)


def test_every_opcode_is_described_and_every_primitive_has_an_opcode():
    from golden.int_model import PRIMITIVES

    assert set(FIELD_USE) == set(Opcode)
    assert {op.name.lower() for op in Opcode} - {"halt"} == set(PRIMITIVES)
    for _unit, _meaning, used in FIELD_USE.values():
        assert set(used) <= set(FIELD_BITS)


def test_layout_matches_the_field_table():
    layout = instruction_layout()
    assert layout.size == INSTRUCTION_BITS
    assert [name for name, _ in layout] == list(FIELD_BITS)


@given(st.sampled_from(list(Opcode)), st.data())
def test_encode_decode_round_trip(opcode, data):
    fields = {name: data.draw(st.integers(0, (1 << bits) - 1)) for name, bits in FIELD_BITS.items() if name != "opcode"}
    ins = make(opcode, **fields)
    word = encode(ins)
    assert 0 <= word < (1 << INSTRUCTION_BITS)
    assert decode(word) == ins


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda: make(Opcode.GEMM, length=1 << 16), ValueError,
     r"^instruction field length must be an integer in \[0, 65535\], not 65536$"),
    (lambda: make(Opcode.GEMM, dst=-1), ValueError, r"^instruction field dst must be an integer in \[0, 65535\], not "
                                                    r"-1$"),
    (lambda: make(Opcode.GEMM, colour=1), ValueError, r"^instruction has no field 'colour'$"),
    (lambda: make(4), TypeError, r"^opcode must be an Opcode, not 4$"),
    (lambda: decode(15), ValueError, r"^instruction word holds unknown opcode 15$"),
    (lambda: decode(-1), ValueError, r"^instruction word must be an integer in \[0, 2\*\*136\), not -1$"),
])
def test_bad_instructions_are_rejected(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_docs_isa_is_generated_from_the_code():
    doc = (Path(__file__).parents[2] / "docs" / "isa.md").read_text()
    assert doc == isa_markdown(), "docs/isa.md is stale: run .venv/bin/python -m hdl.isa > docs/isa.md"
