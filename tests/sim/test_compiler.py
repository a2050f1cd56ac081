"""The compiler and the instruction-level model: the compiled program, run on its memory images,
gives the integer model's tokens exactly; models that do not fit are refused with the shortfall."""

from dataclasses import replace

import pytest

from golden.int_model import generate_int
from golden.model import ModelConfig, init_weights
from golden.quantize import quantize_model, random_calibration
from hdl.config import PRESETS, Config
from hdl.isa import Opcode, decode
from sim.machine.compiler import CompileError, compile_model, memory_needs
from sim.machine.isa_sim import IsaMachine


def decode_on_machine(compiled, prompt, new_tokens):
    machine = IsaMachine(compiled)
    tokens, out = list(prompt), []
    for pos in range(len(prompt) + new_tokens - 1):
        nxt = machine.step(tokens[pos], pos)
        if pos >= len(prompt) - 1:
            out.append(nxt)
            tokens.append(nxt)
    return out


@pytest.fixture(scope="module")
def demo_model():
    from golden.checkpoint import load_demo_model
    from golden.quantize import quantize_checkpoint

    return quantize_checkpoint(load_demo_model())


def test_demo_model_on_the_instruction_model_equals_the_integer_model(demo_model):
    compiled = compile_model(demo_model, PRESETS["demo"])
    prompt = [5, 9, 2, 17, 3]
    assert decode_on_machine(compiled, prompt, 32) == generate_int(demo_model, prompt, 32)


RANDOM_CONFIGS = {
    "gpt2": ModelConfig(family="gpt2", vocab_size=37, d_model=24, n_layers=2, n_heads=3, n_kv_heads=3,
                        head_dim=8, d_ff=40, max_context=48, tie_embeddings=True),
    "llama-gqa": ModelConfig(family="llama", vocab_size=29, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             head_dim=8, d_ff=48, max_context=48),
}


@pytest.mark.parametrize("name", sorted(RANDOM_CONFIGS))
def test_random_models_on_the_instruction_model_equal_the_integer_model(name):
    cfg = RANDOM_CONFIGS[name]
    model = quantize_model(cfg, init_weights(cfg, seed=3, std=0.3), random_calibration(cfg, windows=4, seed=1))
    compiled = compile_model(model, replace(PRESETS["4x4"], weight_words=8192, max_context=48))
    prompt = [1, 2, 3]
    assert decode_on_machine(compiled, prompt, 32) == generate_int(model, prompt, 32)


#: The demo design without its fusions (fused_swiglu, fused_rope, fused_residual): one instruction per
#: vector op.
DEMO_UNFUSED = replace(PRESETS["demo"], fused_swiglu=False, fused_rope=False, fused_residual=False)


@pytest.mark.parametrize("fused", [False, True])
def test_program_shape(demo_model, fused):
    compiled = compile_model(demo_model, PRESETS["demo"] if fused else DEMO_UNFUSED)
    # One instruction per op, except q, k, v and gate, up: one GEMM each a layer; with the fusions
    # also q_rot, k_rot and act, prod: one vector instruction each a layer, and o with x_attn, down
    # with x_out: one GEMM each.
    n_layers = demo_model.config.n_layers
    assert len(compiled.instructions) == len(demo_model.program) - (7 if fused else 3) * n_layers + 1
    assert compiled.program == list(demo_model.program)
    merged = [g.output for g in compiled.ops if g is not None and g.merged]
    names = ("q+k+v", "q_rot+k_rot", "gate+up", "act+prod") if fused else ("q+k+v", "gate+up")
    assert merged == [f"L{i}.{name}" for i in range(n_layers) for name in names]
    assert compiled.instructions[-1].opcode is Opcode.HALT
    assert [decode(w) for w in compiled.program_words] == compiled.instructions
    listing = compiled.listing()
    assert "gemm" in listing and "attention" in listing and listing.count("\n") == len(compiled.instructions) - 1


@pytest.mark.parametrize(("changes", "match"), [
    ({"weight_words": 1000}, r"^the model does not fit: its weight memory \(words of array_cols bytes\) needs 25,344, "
                             r"the configuration's "
                             r"weight_words is 1,000 \(24,344 short\)$"),
    ({"scratch_bytes": 512}, r"^the model does not fit: its activation scratchpad \(bytes\) needs [\d,]+, the "
                             r"configuration's scratch_bytes is 512 \(5,376 short\)$"),
    ({"kv_bytes": 4096}, r"^the model does not fit: its KV cache \(bytes\) needs 32,768, the configuration's kv_bytes "
                         r"is 4,096 \(28,672 short\)$"),
    ({"max_context": 64}, r"^the model does not fit: its context \(positions\) needs 128, the configuration's "
                          r"max_context is 64 \(64 short\)$"),
    ({"param_words": 100}, r"^the model does not fit: its parameter memory \(32-bit words\) needs [\d,]+, the "
                           r"configuration's param_words is 100 \(5,343 short\)$"),
    ({"act_tables": 3}, r"^the model does not fit: its activation table memory \(tables of 256 int8\) needs 4, the "
                        r"configuration's act_tables "
                        r"is 3 \(1 short\)$"),
])
def test_models_that_do_not_fit_are_refused(demo_model, changes, match):
    with pytest.raises(CompileError, match=match):
        compile_model(demo_model, replace(DEMO_UNFUSED, **changes))


def test_a_layernorm_model_is_refused_on_a_design_without_layernorm(demo_model):
    """``layernorm = false`` (the ``ulx3s`` design): the vector unit has no LayerNorm, so a GPT-2
    (LayerNorm) is refused in one line before anything runs; the demo model (RMSNorm) compiles to
    the same program as with LayerNorm built."""
    from golden.model import init_weights
    from golden.quantize import quantize_model, random_calibration
    from tests.sim.tiny_models import SMALL, TINY

    cfg = TINY["gpt2"]
    gpt2 = quantize_model(cfg, init_weights(cfg, seed=3, std=0.3), random_calibration(cfg, windows=4, seed=1))
    compile_model(gpt2, SMALL)
    with pytest.raises(CompileError, match=r"^the model's 'L0\.h_attn' is a LayerNorm and the design is built "
                                           r"without LayerNorm \(layernorm = false\): use a design with "
                                           r"layernorm = true$"):
        compile_model(gpt2, replace(SMALL, layernorm=False))
    with_ln = compile_model(demo_model, PRESETS["demo"])
    without = compile_model(demo_model, replace(PRESETS["demo"], layernorm=False))
    assert without.instructions == with_ln.instructions
    assert (without.params == with_ln.params).all() and (without.weights == with_ln.weights).all()


def test_memory_needs_of_the_demo_model(demo_model):
    needs = memory_needs(compile_model(demo_model, PRESETS["demo"]))
    for need, have in needs.values():
        assert need <= have
    # Every GEMM weight and embedding table is in the weight memory exactly once; the demo model's
    # sizes are multiples of 8, so on the 8x8 array no tile needs padding.
    expected = sum(op.params.weight.size for op in demo_model.program if op.op == "gemm")
    expected += sum(op.params.table.size for op in demo_model.program if op.op == "embed")
    assert needs["weight_words"][0] * 8 == expected


def test_activation_tables_are_indexed_once_each(demo_model):
    compiled = compile_model(demo_model, DEMO_UNFUSED)
    acts = [(ins, op) for ins, op in zip(compiled.instructions, compiled.ops, strict=True)
            if ins.opcode is Opcode.ACTIVATION]
    assert len(acts) == demo_model.config.n_layers
    # Each instruction names the row holding its op's table; the demo model's layers differ in scale.
    for ins, op in acts:
        assert list(compiled.act_tables[ins["count"]]) == list(op.params.table)
    assert sorted(ins["count"] for ins, _ in acts) == list(range(len(compiled.act_tables)))
    assert memory_needs(compiled)["act_tables"] == (4, PRESETS["demo"].act_tables)


def test_identical_activation_tables_share_an_index(demo_model):
    from dataclasses import replace as dreplace

    first = next(op for op in demo_model.program if op.op == "activation").params
    program = tuple(dreplace(op, params=first) if op.op == "activation" else op for op in demo_model.program)
    model = dreplace(demo_model, program=program)
    compiled = compile_model(model, replace(DEMO_UNFUSED, act_tables=1))
    assert compiled.act_tables.shape == (1, 256)
    assert {ins["count"] for ins in compiled.instructions if ins.opcode is Opcode.ACTIVATION} == {0}
    prompt = [5, 9, 2]
    assert decode_on_machine(compiled, prompt, 8) == generate_int(model, prompt, 8)


def test_compile_wants_an_int_model():
    with pytest.raises(TypeError, match=r"^model must be an IntModel, not dict$"):
        compile_model({}, Config())
