"""The compiler's vector fusions (``Config.fused_swiglu``, ``Config.fused_rope``): made only on a design
with the switch on, bit-exact against the integer model on the instruction-level model, priced exactly
by the cycle model; with the switches off the program is the one without them."""

from dataclasses import replace

import numpy as np
import pytest

from golden.int_model import generate_int
from golden.model import ModelConfig, init_weights
from golden.quantize import program_structure, quantize_model, random_calibration
from hdl.config import PRESETS
from hdl.isa import PARAM_RECORDS, MultiplyFlags, Opcode, RopeFlags
from sim.machine.compiler import compile_model
from sim.machine.cycles import SEQ_ISSUE, decode_step_cycles, op_cycles, vector_cycles
from sim.machine.isa_sim import IsaMachine
from sim.machine.schedule import instruction_groups

MODELS = {
    "llama-gqa": ModelConfig(family="llama", vocab_size=29, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             head_dim=8, d_ff=42, max_context=16),
    "llama-mha": ModelConfig(family="llama", vocab_size=31, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                             head_dim=16, d_ff=40, max_context=16),
    "gpt2": ModelConfig(family="gpt2", vocab_size=37, d_model=18, n_layers=2, n_heads=3, n_kv_heads=3,
                        head_dim=6, d_ff=30, max_context=16, tie_embeddings=True),
}
BASE = replace(PRESETS["4x4"], weight_words=8192, max_context=16)
OFF = {"fused_swiglu": False, "fused_rope": False}
ON = {"fused_swiglu": True, "fused_rope": True}


def _model(name):
    cfg = MODELS[name]
    return quantize_model(cfg, init_weights(cfg, seed=5, std=0.3), random_calibration(cfg, windows=4, seed=2))


def _tokens(compiled, prompt, n):
    machine = IsaMachine(compiled)
    tokens, out = list(prompt), []
    for pos in range(len(prompt) + n - 1):
        nxt = machine.step(tokens[pos], pos)
        if pos >= len(prompt) - 1:
            out.append(nxt)
            tokens.append(nxt)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_without_the_switches_no_vector_op_is_fused(name):
    model = _model(name)
    compiled = compile_model(model, replace(BASE, **OFF))
    assert all(g.op == "gemm" for g in compiled.ops if g is not None and g.merged)
    assert not any(ins["flags"] for ins in compiled.instructions if ins.opcode in (Opcode.MULTIPLY, Opcode.ROPE))
    kinds = [op.op for op in model.program]
    assert sum(ins.opcode is Opcode.ACTIVATION for ins in compiled.instructions) == kinds.count("activation")
    assert sum(ins.opcode is Opcode.ROPE for ins in compiled.instructions) == kinds.count("rope")
    assert _tokens(compiled, [1, 2, 3], 6) == generate_int(model, [1, 2, 3], 6)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("switches", [{"fused_swiglu": True}, {"fused_rope": True}, ON])
def test_fused_programs_equal_the_integer_model(name, switches):
    """Tokens, and every value the fused instructions write (q_rot, k_rot side by side; prod), equal the
    integer model's at every step; the activation's own value is never allocated."""
    model = _model(name)
    config = replace(BASE, **switches)
    compiled = compile_model(model, config)
    llama = MODELS[name].family == "llama"
    fused = [g for g in compiled.ops if g is not None and g.merged and g.op != "gemm"]
    expect = set()
    if llama and config.fused_swiglu:
        expect.add("act+prod")
    if llama and config.fused_rope:
        expect.add("q_rot+k_rot")
    assert {g.output.split(".", 1)[1] for g in fused} == expect
    for g in fused:
        if g.op == "rope":
            q_rot, k_rot = g.ops
            assert compiled.addresses[k_rot.output] == compiled.addresses[q_rot.output] + q_rot.width
        else:
            assert g.ops[0].output not in compiled.addresses
    machine = IsaMachine(compiled)
    cache = model.new_cache()
    for position, token in enumerate([3, 7, 1, 9]):
        machine.run(token, position)
        values = model.run([token], cache)
        for g in fused:
            for op in g.ops[-1:] if g.op == "activation" else g.ops:
                a = compiled.addresses[op.output]
                assert np.array_equal(machine.scratch[a:a + op.width], values[op.output][0]), (op.output, position)
    assert _tokens(compiled, [1, 2, 3], 6) == generate_int(model, [1, 2, 3], 6)


def test_the_fused_instructions_and_their_records():
    model = _model("llama-gqa")
    compiled = compile_model(model, replace(BASE, **ON))
    mc = model.config
    seen = set()
    for ins, g in zip(compiled.instructions, compiled.ops, strict=True):
        if g is None or not g.merged or g.op == "gemm":
            continue
        if g.op == "rope":
            q, k = (op.params for op in g.ops)
            assert ins.opcode is Opcode.ROPE and ins["flags"] == RopeFlags.SPLIT.value
            assert (ins["count"], ins["length"]) == (mc.n_heads + mc.n_kv_heads, (mc.n_heads + mc.n_kv_heads) * 8)
            r = PARAM_RECORDS[Opcode.ROPE].unpack(compiled.params, ins["param"], 0, 4, ins["flags"])
            assert (r["mult"], r["shift"], r["mult_b"], r["shift_b"], r["heads_b"]) == (
                q.mult, q.shift, k.mult, k.shift, mc.n_kv_heads)
            assert (q.mult, q.shift) != (k.mult, k.shift)      # q and k do need their own scales
        else:
            act, mul = g.ops
            assert ins.opcode is Opcode.MULTIPLY and ins["flags"] == MultiplyFlags.ACTIVATION.value
            assert ins["src0"] == compiled.addresses[act.inputs[0]]
            assert ins["src1"] == compiled.addresses[mul.inputs[1]]
            assert np.array_equal(compiled.act_tables[ins["count"]], act.params.table)
        seen.add(g.op)
    assert seen == {"rope", "activation"}
    # an unfused RoPE record keeps its three scalars
    plain = compile_model(model, replace(BASE, **OFF))
    rope = next(ins for ins in plain.instructions if ins.opcode is Opcode.ROPE)
    assert PARAM_RECORDS[Opcode.ROPE].present_scalars(rope["flags"]) == ("mult", "shift", "table")


def test_the_cycle_model_prices_the_fused_instructions():
    """Per layer of the demo model on demo's 8x8 design: SwiGLU saves one whole vector instruction (30
    cycles), RoPE of q and k (6 heads) costs 1 + 1 + 2 * 6 * 2 + 4 = 30 cycles instead of 37 + 19."""
    cfg = ModelConfig(family="llama", vocab_size=64, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=16,
                      d_ff=192, max_context=128)
    ops = program_structure(cfg)
    demo = PRESETS["demo"]
    assert demo.fused_swiglu and demo.fused_rope
    off = replace(demo, **OFF)
    on_groups = instruction_groups(ops, demo)
    assert len(instruction_groups(ops, off)) - len(on_groups) == 2 * cfg.n_layers
    rope = next(g for g in on_groups if g.op == "rope")
    assert rope.output == "L0.q_rot+k_rot" and rope.width == 96
    c = op_cycles("rope", demo, width=96, head_dim=16)
    assert c.cycles == SEQ_ISSUE + 1 + 2 * 6 * 2 + 4 == 30
    q, k = (op_cycles("rope", off, width=w, head_dim=16).cycles for w in (64, 32))
    assert (q, k) == (37, 19)
    assert op_cycles("activation", demo, width=192).cycles == SEQ_ISSUE + vector_cycles("silu_mul", 192, 8).total == 30
    saved = (decode_step_cycles(ops, cfg, off, position=7).total - decode_step_cycles(ops, cfg, demo, position=7).total)
    assert saved == cfg.n_layers * (30 + (37 + 19 - 30))


def test_fusion_needs_q_and_k_side_by_side():
    """A RoPE whose input is not next to the other's (GEMMs not merged: different forms) stays alone."""
    cfg = MODELS["llama-gqa"]
    ops = program_structure(cfg)
    # split q and k apart: give k's GEMM its own instruction by reading another value
    moved = [replace(op, inputs=("x0",)) if op.output == "L0.k" else op for op in ops]
    groups = instruction_groups(moved, replace(BASE, **ON))
    assert "L0.q_rot" in [g.output for g in groups] and "L0.k_rot" in [g.output for g in groups]
    assert "L1.q_rot+k_rot" in [g.output for g in groups]
