"""The residual add fused into the GEMM's output stage (``Config.fused_residual``): the grouping rule,
the compiler and the instruction-level model (the fused program computes what the separate ops
compute), the cycle model, and the decode top level on the RTL (bit-exact against the
instruction-level model and the integer model, cycle-exact per instruction), with add constants that
saturate the add.

The RTL cases share one small design (the tiny models' 4x4 design with the feature on)."""

from dataclasses import replace

import numpy as np
import pytest

from golden.int_model import Op, generate_int
from golden.numerics import MULT_MAX, SHIFT_MAX
from golden.quantize import program_structure
from golden.vector import AddParams
from hdl.config import PRESETS
from hdl.isa import RESIDUAL_GEMM_RECORD, GemmFlags, Opcode, param_record
from sim.engine.runner import run
from sim.flows.decode import decode_job, top_params
from sim.machine.compiler import compile_model
from sim.machine.cycles import (
    GEMM_RESIDUAL,
    RESIDUAL_TIMING_REGISTERS,
    decode_step_cycles,
    op_cycles,
    residual_cycles,
)
from sim.machine.isa_sim import IsaMachine
from sim.machine.schedule import instruction_groups

from .test_top_rtl import check_steps, readback, truncated
from .tiny_models import FPGA_KEYS, SMALL, SMALL_SHARED, TINY, tiny

FUSED = replace(SMALL, fused_residual=True)


def fused(name, *, saturate=False, **changes):
    """The tiny model ``name`` compiled for the small design with the residual add fused (and
    ``changes`` to it); with ``saturate`` its first layer's two residual adds get constants that
    saturate most outputs."""
    model = tiny(name).model
    if saturate:
        model = saturating(model)
    return compile_model(model, replace(FUSED, **changes))


def saturating(model):
    """``model`` with layer 0's residual adds at edge constants: the largest multipliers (the sum far
    beyond int8: saturates to -128 or 127 but where it cancels), and a large shift with the largest
    output multiplier (rounding at the edge)."""
    edge = {"L0.x_attn": AddParams(a_mult=MULT_MAX, b_mult=MULT_MAX // 3, mult=MULT_MAX, shift=12),
            "L0.x_out": AddParams(a_mult=1, b_mult=MULT_MAX, mult=MULT_MAX, shift=SHIFT_MAX - 20)}
    return replace(model, program=tuple(replace(op, params=edge[op.output]) if op.output in edge else op
                                        for op in model.program))


def fused_groups(compiled):
    return [g for g in compiled.ops if g is not None and g.residual is not None]


# --- the key -----------------------------------------------------------------------------------------

def test_the_demo_design_has_it_and_the_other_designs_do_not():
    assert PRESETS["demo"].fused_residual is True
    # The FPGA board's design (docs/fpga.md) goes without: 7,763 LUT4s and 16 multipliers for 120
    # cycles a token; the RTL tests keep the add and its timing registers covered (tiny_models.FPGA_KEYS).
    assert PRESETS["ulx3s"].fused_residual is False and not PRESETS["ulx3s"].residual_timing_registers
    assert [name for name, c in PRESETS.items() if c.fused_residual] == ["demo"]
    assert replace(PRESETS["demo"], weight_rows_per_cycle=1, fused_residual=False, fused_swiglu=False,
                   fused_rope=False, attention_heads_per_step=1) == PRESETS["demo-narrow"]


def test_a_bad_value_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    lockstep = str(Path(sys.executable).parent / "lockstep")
    out = subprocess.run([lockstep, "decode", "--set", "fused_residual=2", "--tokens", "1"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "lockstep: error: design demo with --set [chip]: fused_residual must be true or false, not 2"]
    assert list(tmp_path.iterdir()) == []


# --- the grouping rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_each_layers_o_and_down_take_their_residual_add(name):
    cfg = TINY[name]
    ops = program_structure(cfg)
    plain = instruction_groups(ops, SMALL)
    groups = instruction_groups(ops, FUSED)
    assert all(g.residual is None for g in plain)
    assert len(groups) == len(plain) - 2 * cfg.n_layers
    assert [g.output for g in groups if g.residual is not None] == [
        f"L{i}.{o}" for i in range(cfg.n_layers) for o in ("o+x_attn", "down+x_out")]
    # The one grouping rule: the compiled program's instructions are these groups.
    compiled = fused(name)
    assert [g.output for g in compiled.ops if g is not None] == [g.output for g in groups]
    for ins, g in zip(compiled.instructions, compiled.ops, strict=False):
        if g is not None and g.residual is not None:
            assert ins.opcode is Opcode.GEMM
            assert ins["flags"] & GemmFlags.RESIDUAL.value and ins["flags"] & GemmFlags.REQUANT.value
            assert ins["dst"] == compiled.addresses[g.residual.output]
            assert g.ops[0].output not in compiled.addresses       # never written


def test_a_gemm_whose_output_is_read_again_is_not_fused():
    cfg = TINY["llama-gqa"]
    ops = list(program_structure(cfg))
    at = next(i for i, op in enumerate(ops) if op.output == "L0.x_attn")
    ops.insert(at + 1, Op(op="activation", inputs=("L0.o",), output="L0.spy", width=cfg.d_model, layer=0))
    groups = instruction_groups(ops, FUSED)
    names = [g.output for g in groups]
    assert "L0.o" in names and "L0.x_attn" in names and "L0.down+x_out" in names
    # Nor a residual add that does not follow its GEMM at once.
    ops = list(program_structure(cfg))
    ops.insert(at, Op(op="activation", inputs=("L0.attn",), output="L0.spy", width=cfg.d_model, layer=0))
    names = [g.output for g in instruction_groups(ops, FUSED)]
    assert "L0.o" in names and "L0.x_attn" in names and "L0.down+x_out" in names
    # Nor the LM head (int32 logits), whatever reads them.
    assert all(g.residual is None for g in instruction_groups(ops, FUSED) if g.output == "logits")


def test_the_residual_timing_registers_cost_two_cycles_a_fused_gemm():
    config = replace(SMALL, fused_residual=True)
    timed = replace(config, residual_timing_registers=True)
    assert residual_cycles(timed) == residual_cycles(config) + RESIDUAL_TIMING_REGISTERS == GEMM_RESIDUAL + 2
    fused, plain = (op_cycles("gemm", timed, width=64, in_width=192, residual=r).cycles for r in (True, False))
    untimed = op_cycles("gemm", config, width=64, in_width=192, residual=True).cycles
    assert fused == plain + GEMM_RESIDUAL + 2 == untimed + 2


def test_the_cycle_model_prices_the_fused_gemm_one_cycle_above_the_plain_one():
    config = PRESETS["demo"]
    plain = op_cycles("gemm", config, width=64, in_width=192).cycles
    assert op_cycles("gemm", config, width=64, in_width=192, residual=True).cycles == plain + GEMM_RESIDUAL == plain + 1
    add = op_cycles("residual_add", config, width=64).cycles
    assert add == 14
    from golden.checkpoint import load_demo_model

    mc = load_demo_model().config
    ops = program_structure(mc)
    for position in (0, 30):
        on = decode_step_cycles(ops, mc, config, position=position)
        off = decode_step_cycles(ops, mc, replace(config, fused_residual=False), position=position)
        assert off.total - on.total == 2 * mc.n_layers * (add - GEMM_RESIDUAL) == 104
        assert len(off.ops) - len(on.ops) == 2 * mc.n_layers


# --- the instruction-level model: fused == separate ------------------------------------------------

@pytest.mark.parametrize(("name", "saturate"), [("llama-gqa", False), ("gpt2", False), ("llama-gqa", True),
                                                ("gpt2", True), ("demo", False)])
def test_the_fused_program_computes_what_the_separate_ops_compute(name, saturate):
    if name == "demo":
        from golden.checkpoint import load_demo_model
        from golden.quantize import quantize_checkpoint

        model = quantize_checkpoint(load_demo_model())
        on, off = compile_model(model, PRESETS["demo"]), compile_model(model, replace(PRESETS["demo"],
                                                                                      fused_residual=False))
    else:
        on = fused(name, saturate=saturate)
        off = compile_model(on.model, SMALL)
    assert fused_groups(on) and not fused_groups(off)
    a, b = IsaMachine(on), IsaMachine(off)
    written = [g.residual.output for g in fused_groups(on)]
    width = on.model.config.d_model
    tokens, token = [], 3
    saturated = 0
    for position in range(6):
        t_on, t_off = a.step(token, position), b.step(token, position)
        assert t_on == t_off
        assert np.array_equal(a.logits, b.logits)
        for value in written:
            x, y = on.addresses[value], off.addresses[value]
            assert np.array_equal(a.scratch[x:x + width], b.scratch[y:y + width]), (value, position)
            saturated += int(np.sum(np.abs(a.scratch[x:x + width]) >= 127))
        tokens.append(t_on)
        token = t_on
    assert tokens == generate_int(on.model, [3], 6)
    if saturate:
        assert saturated > width        # the edge constants really saturate
        r = RESIDUAL_GEMM_RECORD
        ins = next(i for i, g in zip(on.instructions, on.ops, strict=True)
                   if g is not None and g.residual is not None)
        assert param_record(Opcode.GEMM, ins["flags"]) is r
        got = r.unpack(on.params, ins["param"], ins["count"], 4, ins["flags"])
        assert (got["a_mult"], got["b_mult"], got["mult"]) == (MULT_MAX, MULT_MAX // 3, MULT_MAX)


# --- the RTL -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("saturate", "keys"), [(False, {}), (True, {}), (True, FPGA_KEYS)])
def test_a_partial_program_with_a_fused_gemm_on_amaranth(saturate, keys):
    """Embedding, norm, q/k/v, RoPE, KV write, attention and the fused o + x_attn (with the FPGA
    build's timing cuts and fabric products too: the residual word is read a cycle later)."""
    compiled = fused("llama-gqa", saturate=saturate, **keys)
    n = next(i for i, g in enumerate(compiled.ops) if g is not None and g.residual is not None) + 1
    compiled = truncated(compiled, n)
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("amaranth", "decode_top", params, "decode_top", job), steps)


@pytest.mark.parametrize(("name", "saturate", "keys"), [("llama-gqa", False, {}), ("gpt2", False, {}),
                                                        ("llama-gqa", True, {}), ("gpt2", True, {}),
                                                        ("gpt2", True, FPGA_KEYS)])
def test_tiny_models_step_by_step_on_verilator(name, saturate, keys):
    """Scratchpad, logits, every instruction's cycles and start cycle after each step (a late position
    too), against the instruction-level model and the cycle model; with the FPGA build's timing cuts
    and fabric products too (gpt2: biased GEMMs and a LayerNorm)."""
    compiled = fused(name, saturate=saturate, **keys)
    steps = [(3, 0), (9, 1), (20, 2), (4, 47)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("verilator", "decode_top", params, "decode_top", job), steps)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_models_generate_the_integer_models_tokens_on_verilator(name):
    compiled = fused(name)
    prompt = [1, 2, 3]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, prompt=prompt, new_tokens=24)
    result = run("verilator", "decode_top", params, "decode_top", job)
    assert [s["token_out"] for s in result["steps"]][len(prompt) - 1:] == generate_int(compiled.model, prompt, 24)
    for step in result["steps"]:
        predicted = decode_step_cycles(compiled.model.program, compiled.model.config, compiled.config,
                                       position=step["position"])
        assert step["cycles"] == predicted.total


def test_a_partial_program_with_a_biased_fused_gemm_on_icarus():
    """GPT-2 up to its first fused GEMM (o with a bias: bias, requantization, then the add), two steps."""
    compiled = fused("gpt2", saturate=True)
    n = next(i for i, g in enumerate(compiled.ops) if g is not None and g.residual is not None) + 1
    assert compiled.ops[n - 1].ops[0].params.bias is not None
    compiled = truncated(compiled, n)
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("icarus", "decode_top", params, "decode_top", job), steps)
