"""The decode top level with the vector fusions on (``fused_swiglu``, ``fused_rope``): SwiGLU's activation
and multiply as one MULTIPLY instruction (one SILU_MUL command) and q's and k's RoPE as one ROPE
instruction (one command over all their heads, k's at its own scale), bit-exact against the
instruction-level model and the integer model and cycle-exact against the cycle model, per
instruction (durations and start cycles) and per step."""

from dataclasses import replace

import pytest

from golden.int_model import generate_int
from hdl.isa import MultiplyFlags, Opcode, RopeFlags
from sim.engine.runner import run
from sim.flows.decode import decode_job, top_params
from sim.machine.compiler import compile_model
from sim.machine.cycles import decode_step_cycles

from .test_top_rtl import check_steps, readback
from .tiny_models import SMALL, SMALL_SHARED, tiny

FUSED = {"fused_swiglu": True, "fused_rope": True}


def fused_tiny(name="llama-gqa", **switches):
    """The tiny model ``name`` compiled for :data:`SMALL` with the vector fusions ``switches`` (both by default)."""
    compiled = tiny(name)
    return compile_model(compiled.model, replace(SMALL, **(switches or FUSED)))


def test_the_tiny_model_has_both_fused_instructions():
    compiled = fused_tiny()
    by_output = {g.output: ins for g, ins in zip(compiled.ops, compiled.instructions, strict=True) if g is not None}
    mc = compiled.model.config
    for layer in range(mc.n_layers):
        rope = by_output[f"L{layer}.q_rot+k_rot"]
        assert rope.opcode is Opcode.ROPE and rope["flags"] == RopeFlags.SPLIT.value
        assert rope["count"] == mc.n_heads + mc.n_kv_heads
        mul = by_output[f"L{layer}.act+prod"]
        assert mul.opcode is Opcode.MULTIPLY and mul["flags"] == MultiplyFlags.ACTIVATION.value
    assert not any(ins.opcode is Opcode.ACTIVATION for ins in compiled.instructions)


def test_whole_program_with_the_fusions_on_amaranth():
    compiled = fused_tiny()
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("amaranth", "decode_top", params, "decode_top", job), steps)


@pytest.mark.parametrize("switches", [{"fused_swiglu": True}, {"fused_rope": True}, FUSED])
def test_tiny_model_step_by_step_with_the_fusions_on_verilator(switches):
    """Scratchpad, logits, per-instruction cycles and start cycles after each of several steps (a late
    position included), each fusion alone and both together."""
    compiled = fused_tiny(**switches)
    steps = [(3, 0), (9, 1), (20, 2), (4, 47)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("verilator", "decode_top", params, "decode_top", job), steps)


def test_tiny_model_with_the_fusions_generates_the_integer_models_tokens_on_verilator():
    compiled = fused_tiny()
    prompt = [1, 2, 3]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, prompt=prompt, new_tokens=24)
    result = run("verilator", "decode_top", params, "decode_top", job)
    tokens = [s["token_out"] for s in result["steps"]][len(prompt) - 1:]
    assert tokens == generate_int(compiled.model, prompt, 24)
    for step in result["steps"]:
        predicted = decode_step_cycles(compiled.model.program, compiled.model.config, compiled.config,
                                       position=step["position"])
        assert step["cycles"] == predicted.total


def test_the_top_level_with_the_fusions_is_lint_clean():
    from sim.engine.lint import WAIVERS, lint_verilog
    from sim.engine.runner import design_for, verilog_for

    params = top_params(fused_tiny())
    report = lint_verilog(verilog_for(design_for("decode_top", params), "decode_top"), "decode_top")
    assert report.findings == []
    assert set(report.waived) <= set(WAIVERS) and sum(report.waived.values()) > 0
