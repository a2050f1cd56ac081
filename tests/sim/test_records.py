"""The contracts of hdl.isa, written once: every parameter record the compiler packs is unpacked
by the instruction-level model with the values the integer model holds; the GEMM tile order of the
compiler, the GEMM unit's host flow and the instruction-level model is the one of
hdl.isa.weight_tiles. (The RTL reads the same records through the same ParamRecord offsets; the
whole-program tests in test_top_rtl.py run it bit-exact on Verilator, Icarus and Amaranth.)"""

from dataclasses import replace

import numpy as np
import pytest

from golden.model import ModelConfig, init_weights
from golden.quantize import quantize_model, random_calibration
from hdl.config import PRESETS
from hdl.isa import (
    PARAM_RECORDS,
    GemmFlags,
    Opcode,
    ParamRecord,
    pack_mult_shift,
    scalar_index,
    unpack_mult_shift,
    weight_from_tiles,
    weight_tiles,
)
from sim.flows.gemm import pack_lanes, plan_gemm, weight_words
from sim.machine.compiler import compile_model
from sim.machine.isa_sim import IsaMachine

MODELS = {
    "gpt2": ModelConfig(family="gpt2", vocab_size=37, d_model=24, n_layers=1, n_heads=3, n_kv_heads=3,
                        head_dim=8, d_ff=40, max_context=16, tie_embeddings=True),
    "llama": ModelConfig(family="llama", vocab_size=29, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2,
                         head_dim=8, d_ff=48, max_context=16),
}


def _expected(op) -> dict:
    """What a record holds for ``op`` of the integer program, by field name."""
    p = op.params
    if op.op == "gemm":
        return {"bias": p.bias, "mult_shift": pack_mult_shift(p.mult, p.shift) if p.requantized else None}
    if op.op == "attention":
        return vars(p.attn)
    return vars(p)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_record_round_trips_from_the_compiler_to_the_instruction_model(name):
    cfg = MODELS[name]
    model = quantize_model(cfg, init_weights(cfg, seed=3, std=0.3), random_calibration(cfg, windows=2, seed=1))
    compiled = compile_model(model, replace(PRESETS["4x4"], weight_words=8192, max_context=16))
    machine = IsaMachine(compiled)
    seen = set()
    for ins, op in zip(compiled.instructions, compiled.ops, strict=True):
        if ins.opcode not in PARAM_RECORDS or (ins.opcode is Opcode.GEMM and not ins["flags"]):
            continue
        n = ins["count"] if ins.opcode is Opcode.GEMM else ins["length"]
        got = machine._record(ins, n)
        want = _expected(op)
        rec = PARAM_RECORDS[ins.opcode]
        assert set(got) == set(rec.present(ins["flags"])) | set(rec.present_scalars(ins["flags"]))
        for field, value in got.items():
            if field == "table":    # an address the compiler chose: check it points at the cos table
                assert 0 <= value < compiled.params.size
                continue
            assert np.array_equal(np.asarray(value), np.asarray(want[field])), (ins.opcode, field)
        seen.add(ins.opcode)
    assert seen == set(PARAM_RECORDS) - ({Opcode.RMSNORM, Opcode.ROPE, Opcode.MULTIPLY} if name == "gpt2"
                                         else {Opcode.LAYERNORM})


@pytest.mark.parametrize("flags", [GemmFlags(0), GemmFlags.BIAS, GemmFlags.REQUANT, GemmFlags.BIAS | GemmFlags.REQUANT])
def test_a_record_packs_and_unpacks_to_the_same_values_at_the_layouts_offsets(flags):
    rec = PARAM_RECORDS[Opcode.GEMM]
    bias, ms = np.arange(5) - 2, pack_mult_shift(np.arange(5) + 100, np.arange(5) + 7)
    words = rec.pack(4, {"bias": bias, "mult_shift": ms}, flags.value)
    assert words.size == 8 * len(rec.present(flags.value))
    got = rec.unpack(words, 0, 5, 4, flags.value)
    for field in rec.present(flags.value):
        k = rec.channel_word(field, 2, flags.value)
        assert np.array_equal(words[4 * k:4 * k + 5], got[field])
    if flags & GemmFlags.REQUANT:
        assert [a.tolist() for a in unpack_mult_shift(got["mult_shift"])] == [list(range(100, 105)), list(range(7, 12))]


def test_the_hardware_reads_each_scalar_where_every_record_that_shares_the_read_puts_it():
    # hdl.top reads one scalar lane for RMSNORM and LAYERNORM, and one for ROPE and MULTIPLY.
    assert scalar_index("out_mult", Opcode.RMSNORM, Opcode.LAYERNORM) == 1
    assert scalar_index("shift", Opcode.ROPE, Opcode.MULTIPLY) == 1
    with pytest.raises(AssertionError, match=r"^scalar mult sits at different entries in the records of .*: \[0, 2\]$"):
        scalar_index("mult", Opcode.MULTIPLY, Opcode.RESIDUAL_ADD)


def test_a_record_with_scalars_only_starts_its_scalars_at_its_first_word():
    assert ParamRecord(scalars=("a",)).scalar_word(3) == 0
    assert PARAM_RECORDS[Opcode.LAYERNORM].scalar_word(3) == 6


@pytest.mark.parametrize(("k", "n"), [(4, 4), (5, 9), (12, 3)])
def test_the_weight_tile_order_is_one_function(k, n):
    config = replace(PRESETS["4x4"], weight_words=8192)
    R, C = config.array_rows, config.array_cols
    w = np.random.default_rng(k * n).integers(-128, 128, size=(k, n))
    tiles = weight_tiles(w, R, C)
    assert np.array_equal(weight_from_tiles(tiles, k, n, R, C), w)
    # the GEMM unit's host flow sends the same words
    assert weight_words(plan_gemm(config, 1, k, n), w) == [pack_lanes(row, 8) for row in tiles]


def test_a_record_with_flagged_scalars_holds_them_only_with_the_flag():
    """ROPE's mult_b, shift_b, heads_b (flag SPLIT, a fused q+k RoPE) come after its other scalars, so
    mult, shift and table keep their entries with and without them."""
    from hdl.isa import RopeFlags

    rec = PARAM_RECORDS[Opcode.ROPE]
    values = {"mult": 11, "shift": 12, "table": 13, "mult_b": 21, "shift_b": 22, "heads_b": 2}
    plain = rec.pack(4, values)
    split = rec.pack(4, values, RopeFlags.SPLIT.value)
    assert plain.tolist() == [11, 12, 13] and split.tolist() == [11, 12, 13, 21, 22, 2]
    assert rec.unpack(split, 0, 0, 4, RopeFlags.SPLIT.value) == values
    assert rec.unpack(plain, 0, 0, 4) == {"mult": 11, "shift": 12, "table": 13}
    assert [scalar_index(name, Opcode.ROPE) for name in values] == [0, 1, 2, 3, 4, 5]
