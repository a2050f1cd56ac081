"""The instruction schedule (sim.machine.schedule): GEMMs that read one input are one instruction,
bit-exact member by member, and the cycle model, the compiler and the performance model follow the
same groups."""

from dataclasses import replace

import numpy as np
import pytest

from golden.int_model import generate_int
from golden.model import ModelConfig, init_weights
from golden.quantize import program_structure, quantize_model, random_calibration
from hdl.config import PRESETS
from hdl.isa import GemmFlags, Opcode
from sim.machine.compiler import compile_model
from sim.machine.cycles import decode_step_cycles, op_cycles
from sim.machine.isa_sim import IsaMachine
from sim.machine.schedule import MAX_GEMM_N, column_pad, instruction_groups

# Widths that are not multiples of the array's columns, so members are padded inside a merged GEMM:
# GPT-2's q, k, v of 18 (head_dim 6) and its bias; Llama's gate and up of 42, q 32 and k, v 16.
ODD = {
    "gpt2": ModelConfig(family="gpt2", vocab_size=37, d_model=18, n_layers=2, n_heads=3, n_kv_heads=3,
                        head_dim=6, d_ff=30, max_context=16, tie_embeddings=True),
    "llama-gqa": ModelConfig(family="llama", vocab_size=29, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             head_dim=8, d_ff=42, max_context=16),
}
BIG = {"weight_words": 8192, "max_context": 16}
DESIGNS = {"4x4": replace(PRESETS["4x4"], **BIG), "8x4": replace(PRESETS["8x4"], **BIG)}


def _model(name):
    cfg = ODD[name]
    return quantize_model(cfg, init_weights(cfg, seed=5, std=0.3), random_calibration(cfg, windows=4, seed=2))


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("name", sorted(ODD))
def test_merged_gemms_write_every_member_bit_exact(name, design):
    """Each member's values, read from the scratchpad at its own address after the merged GEMM, equal
    the integer model's separate GEMM; the tokens of a run equal the integer model's."""
    model = _model(name)
    config = DESIGNS[design]
    compiled = compile_model(model, config)
    pad = column_pad(config)
    merged = [g for g in compiled.ops if g is not None and g.merged]
    assert {g.output.split(".", 1)[1] for g in merged} == ({"q+k+v"} if name == "gpt2" else {"q+k+v", "gate+up"})
    assert any(g.width > sum(g.widths) for g in merged)      # some member is padded
    for g in merged:
        dst = compiled.addresses[g.output]
        assert [compiled.addresses[op.output] - dst for op in g.ops] == list(g.offsets)
        assert all(off % pad == 0 for off in g.offsets)
    machine = IsaMachine(compiled)
    cache = model.new_cache()
    for position, token in enumerate([3, 7, 1]):
        machine.run(token, position)
        values = model.run([token], cache)
        for g in merged:
            for op in g.ops:
                a = compiled.addresses[op.output]
                assert np.array_equal(machine.scratch[a:a + op.width], values[op.output][0]), (op.output, position)
    prompt = [1, 2, 3]
    machine = IsaMachine(compiled)
    tokens, out = list(prompt), []
    for pos in range(len(prompt) + 8 - 1):
        nxt = machine.step(tokens[pos], pos)
        if pos >= len(prompt) - 1:
            out.append(nxt)
            tokens.append(nxt)
    assert out == generate_int(model, prompt, 8)


@pytest.mark.parametrize("name", sorted(ODD))
def test_merged_instruction_is_one_ordinary_gemm(name):
    model = _model(name)
    compiled = compile_model(model, DESIGNS["4x4"])
    for ins, g in zip(compiled.instructions, compiled.ops, strict=True):
        if g is None or not g.merged:
            continue
        assert ins.opcode is Opcode.GEMM and ins["count"] == g.width and ins["length"] == g.in_width
        flags = GemmFlags(ins["flags"])
        assert GemmFlags.REQUANT in flags and (GemmFlags.BIAS in flags) == (name == "gpt2")
        assert ins["dst"] == compiled.addresses[g.output]


@pytest.mark.parametrize("name", sorted(ODD))
def test_the_structure_and_the_quantized_program_group_alike(name):
    """The performance model groups program_structure (no constants); the compiler the quantized
    program: the same instructions, and the LM head (int32 logits) alone."""
    model = _model(name)
    config = DESIGNS["4x4"]
    quantized = instruction_groups(model.program, config)
    structure = instruction_groups(program_structure(ODD[name]), config)
    assert [g.output for g in quantized] == [g.output for g in structure]
    assert [(g.offsets, g.widths, g.in_width) for g in quantized] == [(g.offsets, g.widths, g.in_width)
                                                                       for g in structure]
    (head,) = [g for g in quantized if g.output == "logits"]
    assert not head.merged


def test_a_merged_gemm_fits_the_count_field():
    cfg = ModelConfig(family="llama", vocab_size=64, d_model=64, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=16,
                      d_ff=40000, max_context=16)
    groups = instruction_groups(program_structure(cfg), PRESETS["demo"])
    assert [g.output for g in groups if g.op == "gemm"] == ["L0.q+k+v", "L0.o+x_attn", "L0.gate", "L0.up",
                                                            "L0.down+x_out", "logits"]
    assert MAX_GEMM_N < 2 * 40000


@pytest.mark.parametrize("name", sorted(ODD))
def test_cycle_model_prices_one_count_per_instruction(name):
    model = _model(name)
    config = DESIGNS["4x4"]
    compiled = compile_model(model, config)
    mc = model.config
    d = decode_step_cycles(model.program, mc, config, position=2)
    groups = [g for g in compiled.ops if g is not None]
    assert [o.output for o in d.ops] == [g.output for g in groups]
    for g, o in zip(groups, d.ops, strict=True):
        if g.op != "gemm":
            continue
        one = op_cycles("gemm", config, width=g.width, in_width=g.in_width)
        assert o.cycles == one.cycles and o.unit_min == one.unit_min
        # The MACs (compute bound) are the members' own; the padding columns are not work.
        assert o.macs == o.weight_bytes == sum(g.in_width * op.width for op in g.ops)
        if g.merged:
            apart = sum(op_cycles("gemm", config, width=op.width, in_width=g.in_width).cycles for op in g.ops)
            assert o.cycles < apart
