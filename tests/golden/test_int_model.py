"""The integer model: its program, and the properties of executing it (it *is* the composition of
golden primitives, so the tests check the wiring, the cache, the ranges and the determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from golden.attention import attention_decode
from golden.int_model import PRIMITIVES, IntModel, Op, generate_int
from golden.model import ModelConfig, Transformer, generate, init_weights
from golden.numerics import gemm_int8, requantize
from golden.quantize import program_structure, quantize_model, random_calibration
from golden.vector import activation, argmax, multiply, residual_add, rmsnorm, rope
from tests.tolerances import model_bound, top2_gap

from .test_quantize import tiny

LLAMA_LAYER = ["rmsnorm", "gemm", "gemm", "gemm", "rope", "rope", "kv_write", "attention", "gemm",
               "residual_add", "rmsnorm", "gemm", "gemm", "activation", "multiply", "gemm", "residual_add"]
GPT2_LAYER = ["layernorm", "gemm", "gemm", "gemm", "kv_write", "attention", "gemm", "residual_add",
              "layernorm", "gemm", "activation", "gemm", "residual_add"]
CONFIGS = [("llama", 2, False), ("llama", 1, True), ("llama", 4, False), ("gpt2", 4, True), ("gpt2", 4, False)]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda p: f"{p[0]}-kv{p[1]}-{'tied' if p[2] else 'untied'}")
def model(request):
    family, kv, tie = request.param
    config, weights = tiny(family, n_kv_heads=kv, tie=tie)
    return config, weights, quantize_model(config, weights, random_calibration(config, windows=2))


@pytest.mark.parametrize("family,layer", [("llama", LLAMA_LAYER), ("gpt2", GPT2_LAYER)])
def test_program_is_an_ordered_list_of_primitives(family, layer):
    config, _ = tiny(family)
    ops = program_structure(config)
    head = ["embed"] if family == "llama" else ["embed", "embed", "residual_add"]
    assert [op.op for op in ops] == head + layer * config.n_layers + [layer[0], "gemm", "argmax"]
    defined = {"token", "position"}
    for op in ops:
        assert op.op in PRIMITIVES
        assert set(op.inputs) <= defined, f"{op.output} reads a value not yet computed"
        assert op.output not in defined
        defined.add(op.output)


def test_op_names_are_checked():
    with pytest.raises(ValueError, match="^op must be one of embed, .*, not 'softmax'$"):
        Op(op="softmax", inputs=("x",), output="y", width=1)


def test_stepping_equals_one_pass_and_the_cache_matches(model):
    config, _, im = model
    toks = np.random.default_rng(7).integers(0, config.vocab_size, 24)
    whole_cache = im.new_cache()
    whole = im.forward(toks, whole_cache)
    step_cache = im.new_cache()
    steps = np.stack([im.step(t, step_cache) for t in toks])
    np.testing.assert_array_equal(steps, whole)
    split_cache = im.new_cache()
    split = np.concatenate([im.forward(toks[:10], split_cache), im.forward(toks[10:], split_cache)])
    np.testing.assert_array_equal(split, whole)
    for cache in (step_cache, split_cache):
        assert cache.length == whole_cache.length == 24
        np.testing.assert_array_equal(cache.k, whole_cache.k)
        np.testing.assert_array_equal(cache.v, whole_cache.v)
    assert (whole_cache.k[:, 24:] == 0).all()


def test_deterministic_and_in_range(model):
    config, _, im = model
    toks = np.random.default_rng(8).integers(0, config.vocab_size, 16)
    a = im.run(toks, im.new_cache())
    b = im.run(toks, im.new_cache())
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    for op in im.program:
        v = a[op.output]
        assert v.shape == (16, op.width), op.output
        if op.output == "logits":
            assert np.abs(v).max() < 2 ** 31
        elif op.op not in ("argmax", "kv_write"):
            assert v.min() >= -128 and v.max() <= 127, op.output
    np.testing.assert_array_equal(a["next_token"][:, 0], np.argmax(a["logits"], axis=-1))
    cache = im.new_cache()
    im.run(toks, cache)
    assert cache.k.shape == (config.n_layers, config.max_context, config.n_kv_heads, config.head_dim)


def test_follows_the_float_model(model):
    config, weights, im = model
    toks = np.random.default_rng(9).integers(0, config.vocab_size, 32)
    fm = Transformer(config, weights)
    ref = fm.forward(toks)
    got = im.dequantize_logits(im.forward(toks))
    # Quality floors of the integer model. The integer side is exact everywhere; the float side may
    # move by the rounding bound of two evaluations on another machine. The floors hold even then:
    # the correlation moves by at most 2 * bound / std(ref) (first order), and the agreement by the
    # positions whose float top-2 gap is within the bound, counted against it here.
    bound = model_bound(fm, positions=len(toks))
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] - 2 * bound / ref.std() > 0.98
    near_ties = int((top2_gap(ref) <= bound).sum())
    assert (np.argmax(got, -1) == np.argmax(ref, -1)).mean() - near_ties / len(toks) >= 0.75


def test_llama_layer_is_the_composition_of_primitives():
    """Recompute layer 0 of a GQA Llama model from its trace with the golden primitives by hand."""
    config, weights = tiny("llama", n_kv_heads=2)
    im = quantize_model(config, weights, random_calibration(config, windows=2))
    p = {op.output: op.params for op in im.program}
    toks = np.random.default_rng(4).integers(0, config.vocab_size, 12)
    v = im.run(toks, im.new_cache())
    pos = np.arange(12)

    def lin(name, x):
        g = p[name]
        return requantize(gemm_int8(x, g.weight), g.mult, g.shift)

    def rot(name, x, heads):
        r = p[name]
        return rope(x.reshape(12, heads, 8), pos[:, None], mult=r.mult, shift=r.shift,
                    max_context=32).reshape(12, -1)

    x = p["x0"].table[toks]
    h = rmsnorm(x, p["L0.h_attn"])
    q, k, vv = rot("L0.q_rot", lin("L0.q", h), 4), rot("L0.k_rot", lin("L0.k", h), 2), lin("L0.v", h)
    att = np.stack([attention_decode(q[t].reshape(4, 8), k[:t + 1].reshape(-1, 2, 8),
                                     vv[:t + 1].reshape(-1, 2, 8), p["L0.attn"].attn, max_context=32).ravel()
                    for t in range(12)])
    x = residual_add(x, lin("L0.o", att), p["L0.x_attn"])
    h = rmsnorm(x, p["L0.h_mlp"])
    m = multiply(activation(lin("L0.gate", h), p["L0.act"].table), lin("L0.up", h),
                 mult=p["L0.prod"].mult, shift=p["L0.prod"].shift)
    x = residual_add(x, lin("L0.down", m), p["L0.x_out"])
    np.testing.assert_array_equal(x, v["L0.x_out"])
    np.testing.assert_array_equal(v["next_token"][:, 0], argmax(v["logits"]))


def test_generate_greedy_is_the_programs_argmax(model):
    config, weights, im = model
    prompt = [1, 2, 3]
    toks = generate_int(im, prompt, 8)
    cache = im.new_cache()
    logits = im.forward(prompt, cache)[-1]
    for t in toks:
        assert t == int(np.argmax(logits))
        logits = im.step(t, cache)
    sampled = generate_int(im, prompt, 8, temperature=0.9, top_k=5, seed=3)
    assert sampled == generate_int(im, prompt, 8, temperature=0.9, top_k=5, seed=3)
    assert len(generate(Transformer(config, weights), prompt, 8)) == len(toks)


def test_bad_inputs_are_reported(model):
    config, _, im = model
    with pytest.raises(ValueError, match=f"^token must be in 0..{config.vocab_size - 1}, not {config.vocab_size}$"):
        im.forward([config.vocab_size])
    with pytest.raises(ValueError, match=r"^tokens must hold at least one token$"):
        im.forward([])
    with pytest.raises(ValueError, match=r"^context is full: positions 0\.\.32 do not fit max_context=32$"):
        im.forward([0] * 33)
    with pytest.raises(ValueError, match=r"^prompt \(30 tokens\) plus 4 new tokens needs 33 positions, more than "
                                         r"max_context=32$"):
        generate_int(im, [0] * 30, 4)
    with pytest.raises(ValueError, match=f"^prompt token must be in 0..{config.vocab_size - 1}, not -1$"):
        generate_int(im, [-1], 1)
    with pytest.raises(ValueError, match=r"^prompt must hold at least one token$"):
        generate_int(im, [], 3)
    with pytest.raises(ValueError, match=r"^temperature must be a finite number >= 0, not -1\.0$"):
        generate_int(im, [0], 3, temperature=-1)


def test_context_is_capped_at_the_attention_units_limit():
    config = ModelConfig(family="gpt2", vocab_size=8, d_model=8, n_layers=1, n_heads=2, n_kv_heads=2,
                         head_dim=4, d_ff=16, max_context=1024)
    im = IntModel(config=config, program=(), scales={}, logit_scale=1.0)
    assert im.max_context == 512
    weights = init_weights(config, seed=0, std=0.3)
    im = quantize_model(config, weights, [[1, 2, 3]])
    assert im.new_cache().k.shape[1] == 512
