"""The float golden model on its own: configuration checks, cache consistency, decoding."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from golden.model import (
    KVCache,
    ModelConfig,
    Transformer,
    check_weights,
    generate,
    init_weights,
    sample_next,
    weight_shapes,
)
from tests.tolerances import EPS64, model_bound

LLAMA = ModelConfig(family="llama", vocab_size=40, d_model=48, n_layers=2, n_heads=6, n_kv_heads=2,
                    head_dim=8, d_ff=64, max_context=32, rope_theta=500.0)
GPT2 = ModelConfig(family="gpt2", vocab_size=40, d_model=48, n_layers=2, n_heads=3, n_kv_heads=3,
                   head_dim=16, d_ff=96, max_context=32, tie_embeddings=True)


def _model(config: ModelConfig, seed: int = 0, dtype=np.float32) -> Transformer:
    weights = init_weights(config, seed=seed, std=0.3)
    rng = np.random.default_rng(seed + 100)
    for name, w in weights.items():  # make norm weights and biases non-trivial
        if w.ndim == 1:
            weights[name] = w + rng.standard_normal(w.shape).astype(np.float32) * 0.2
    return Transformer(config, weights, dtype=dtype)


# -- ModelConfig validation: every message has a test ---------------------------------------------

BAD_CONFIGS = [
    (dict(family=3), TypeError, r"^family must be a string, not 3$"),
    (dict(family="bert"), ValueError, r"^family must be one of 'gpt2', 'llama', not 'bert'$"),
    (dict(d_model=0), ValueError, r"^d_model must be a positive integer, not 0$"),
    (dict(vocab_size=-5), ValueError, r"^vocab_size must be a positive integer, not -5$"),
    (dict(n_layers=2.0), TypeError, r"^n_layers must be an integer, not 2\.0$"),
    (dict(max_context=True), TypeError, r"^max_context must be an integer, not True$"),
    (dict(max_context=2**20 + 1), ValueError, r"^max_context must be at most 1,048,576, not 1048577$"),
    (dict(n_layers=10**9), ValueError, r"^n_layers must be at most 1,024, not 1000000000$"),
    (dict(d_model=np.timedelta64(48)), TypeError, r"^d_model must be an integer, not np\.timedelta64\(48\)$"),
    (dict(d_ff="64"), TypeError, r"^d_ff must be an integer, not '64'$"),
    (dict(norm_eps=0.0), ValueError, r"^norm_eps must be a positive finite number, not 0\.0$"),
    (dict(norm_eps="1e-5"), TypeError, r"^norm_eps must be a number, not '1e-5'$"),
    (dict(rope_theta=float("inf")), ValueError, r"^rope_theta must be a positive finite number, not inf$"),
    (dict(tie_embeddings=1), TypeError, r"^tie_embeddings must be a bool, not 1$"),
    (dict(n_heads=6, n_kv_heads=4), ValueError,
     r"^n_heads must be a multiple of n_kv_heads, not n_heads=6, n_kv_heads=4$"),
    (dict(head_dim=7), ValueError, r"^llama needs an even head_dim for RoPE, not head_dim=7$"),
]


@pytest.mark.parametrize(("changes", "exc", "match"), BAD_CONFIGS, ids=[m for _, _, m in BAD_CONFIGS])
def test_config_rejects(changes, exc, match):
    with pytest.raises(exc, match=match):
        dataclasses.replace(LLAMA, **changes)


def test_gpt2_config_rules():
    with pytest.raises(ValueError, match=r"^gpt2 needs n_kv_heads == n_heads, not n_heads=3, n_kv_heads=1$"):
        dataclasses.replace(GPT2, n_kv_heads=1)
    with pytest.raises(ValueError, match=r"^gpt2 needs n_heads \* head_dim == d_model, "
                                         r"not n_heads=3, head_dim=8, d_model=48$"):
        dataclasses.replace(GPT2, head_dim=8)


def test_config_normalises_numpy_ints_and_derives_sizes():
    cfg = dataclasses.replace(LLAMA, d_model=np.int64(48), norm_eps=np.float32(1e-5))
    assert type(cfg.d_model) is int and type(cfg.norm_eps) is float
    assert (cfg.q_dim, cfg.kv_dim, cfg.group_size) == (48, 16, 3)
    assert cfg.n_params() == sum(int(np.prod(s)) for s in weight_shapes(cfg).values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 64


def test_weight_shapes_per_family():
    llama, gpt2 = weight_shapes(LLAMA), weight_shapes(GPT2)
    assert llama["layers.1.attn.wk"] == (48, 16) and llama["lm_head"] == (48, 40)
    assert "pos_embed" not in llama and "layers.0.attn.bq" not in llama
    assert gpt2["pos_embed"] == (32, 48) and gpt2["layers.0.mlp.b_up"] == (96,)
    assert "lm_head" not in gpt2 and "layers.0.mlp.w_gate" not in gpt2


def test_check_weights_messages():
    w = init_weights(LLAMA)
    check_weights(LLAMA, w)
    with pytest.raises(ValueError, match=r"^missing weight 'layers\.0\.attn\.wq'$"):
        check_weights(LLAMA, {k: v for k, v in w.items() if k != "layers.0.attn.wq"})
    with pytest.raises(ValueError, match=r"^unexpected weight 'extra'$"):
        check_weights(LLAMA, w | {"extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"^weight 'tok_embed' has shape \(40, 47\), expected \(40, 48\)$"):
        check_weights(LLAMA, w | {"tok_embed": np.zeros((40, 47))})
    with pytest.raises(TypeError, match=r"^config must be a ModelConfig, not dict$"):
        Transformer({}, w)


# -- computation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_cached_steps_equal_full_forward(config):
    """Tolerances: tests/tolerances.py (docs/testing.md). The float64 run checks the cache at
    float64's precision; float32 is then held to its own rounding bound."""
    t = config.max_context
    runs = {}
    for dtype in (np.float64, np.float32):
        model = _model(config, dtype=dtype)
        cache = model.new_cache()
        stepped = np.stack([model.step(int(tok), cache) for tok in tokens_for(config)])
        runs[dtype] = model, model.forward(tokens_for(config)), stepped
        assert cache.length == t and stepped.dtype == dtype
    m64, full64, stepped64 = runs[np.float64]
    m32, full32, stepped32 = runs[np.float32]
    # Two float64 evaluations (cached and uncached orders): float64's bound, ~1e-12.
    assert np.max(np.abs(stepped64 - full64)) <= model_bound(m64, positions=t, eps=EPS64)
    # Two float32 evaluations: float32's bound.
    assert np.max(np.abs(stepped32 - full32)) <= model_bound(m32, positions=t)
    # float32 against the float64 reference: one rounded evaluation, plus its float32 RoPE angles.
    assert np.max(np.abs(full64 - full32)) <= model_bound(m32, positions=t, evaluations=1, rope_differs=True)
    assert np.ptp(full32) > 1.0


def tokens_for(config: ModelConfig) -> np.ndarray:
    return np.random.default_rng(1).integers(0, config.vocab_size, config.max_context)


def test_grouped_query_attention_equals_duplicated_kv_heads():
    """n_kv_heads=2 with 6 query heads equals plain 6-head attention whose kv heads repeat per group
    (compared in float64, within float64's rounding bound)."""
    gqa = _model(LLAMA, dtype=np.float64)
    mha_cfg = dataclasses.replace(LLAMA, n_kv_heads=6)
    w = dict(gqa.weights)
    hd, g = LLAMA.head_dim, LLAMA.group_size
    for i in range(LLAMA.n_layers):
        for m in ("wk", "wv"):
            heads = w[f"layers.{i}.attn.{m}"].reshape(LLAMA.d_model, LLAMA.n_kv_heads, hd)
            w[f"layers.{i}.attn.{m}"] = np.repeat(heads, g, axis=1).reshape(LLAMA.d_model, -1)
    tokens = [5, 9, 2, 33, 7, 1, 0, 39]
    mha = Transformer(mha_cfg, w, dtype=np.float64)
    assert np.max(np.abs(mha.forward(tokens) - gqa.forward(tokens))) <= model_bound(gqa, positions=8, eps=EPS64)


@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_order_of_earlier_tokens_matters(config):
    """Attention alone is blind to the order of the keys; positions (RoPE or learned) are not."""
    model = _model(config)
    a, b = model.forward([4, 7, 9])[-1], model.forward([7, 4, 9])[-1]
    # A real difference: larger than any rounding could make (float32's bound for this comparison).
    assert np.max(np.abs(a - b)) > model_bound(model, positions=3)


def test_rope_depends_on_relative_position_only():
    """A repeated token sees the same relative offsets everywhere under RoPE, so its logits do not
    change with position; GPT-2's absolute positions do change them."""
    llama64, gpt2_model = _model(LLAMA, dtype=np.float64), _model(GPT2)
    llama, gpt2 = llama64.forward([4, 4, 4, 4]), gpt2_model.forward([4, 4, 4, 4])
    assert np.max(np.abs(llama[3] - llama[1])) <= model_bound(llama64, positions=4, eps=EPS64)
    assert np.max(np.abs(gpt2[3] - gpt2[1])) > model_bound(gpt2_model, positions=4)


def test_step_rejects_full_context_and_bad_token():
    model = _model(LLAMA)
    cache = KVCache.empty(LLAMA)
    with pytest.raises(ValueError, match=r"^token must be in 0\.\.39, not 40$"):
        model.step(40, cache)
    cache.length = LLAMA.max_context
    with pytest.raises(ValueError, match=r"^context is full: position 32 is beyond max_context=32$"):
        model.step(1, cache)
    with pytest.raises(ValueError, match=r"^sequence length must be in 1\.\.32, not 33$"):
        model.forward([1] * 33)


# -- decoding ---------------------------------------------------------------------------------------

def test_greedy_generation_is_argmax_chain():
    model = _model(GPT2)
    out = generate(model, [1, 2, 3], 10)
    assert len(out) == 10
    seq = [1, 2, 3]
    for tok in out:
        assert tok == int(np.argmax(model.forward(seq)[-1]))
        seq.append(tok)


def test_sampling_is_seeded_and_top_k_restricts():
    model = _model(LLAMA)
    a = generate(model, [3], 20, temperature=1.5, seed=7)
    assert a == generate(model, [3], 20, temperature=1.5, seed=7)
    assert a != generate(model, [3], 20, temperature=1.5, seed=8)
    assert generate(model, [3], 20, temperature=2.0, top_k=1, seed=1) == generate(model, [3], 20)

    logits = np.array([0.0, 5.0, 4.0, -1.0, 3.0])
    rng = np.random.default_rng(0)
    draws = [sample_next(logits, rng, temperature=10.0, top_k=2) for _ in range(400)]
    assert set(draws) == {1, 2}
    draws = [sample_next(logits, rng, temperature=10.0) for _ in range(400)]
    assert set(draws) == {0, 1, 2, 3, 4}
    assert sample_next(np.array([1.0, 3.0, 3.0])) == 1  # greedy ties pick the first


@pytest.mark.parametrize("temperature", [1e-308, 5e-324, 1e-30])
def test_tiny_temperatures_sample_the_argmax_exactly(temperature):
    """softmax(l / T) for T -> 0 is the argmax (ties shared equally), with no overflow warning and
    no NaN: the logits are shifted by their maximum before the division."""
    model = _model(LLAMA)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate(model, [3], 12, temperature=temperature, seed=4) == generate(model, [3], 12)
        logits = np.array([-1e30, 2.0, 7.5, 7.5, 1e-3])
        draws = {sample_next(logits, np.random.default_rng(s), temperature=temperature) for s in range(40)}
    assert draws == {2, 3}
    # 1e308 is the other end: every token equally likely, still no NaN.
    flat = {sample_next(logits[1:], np.random.default_rng(s), temperature=1e308) for s in range(60)}
    assert flat == {0, 1, 2, 3}


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(temperature=-1.0), r"^temperature must be a finite number >= 0, not -1\.0$"),
    (dict(temperature=1.0, top_k=0), r"^top_k must be an integer in 1\.\.5 or None, not 0$"),
    (dict(temperature=1.0, top_k=6), r"^top_k must be an integer in 1\.\.5 or None, not 6$"),
    (dict(temperature=1.0), r"^sampling with temperature > 0 needs a random generator \(rng\)$"),
])
def test_sample_next_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(np.zeros(5), None, **kwargs)


def test_generate_rejects():
    model = _model(LLAMA)
    with pytest.raises(ValueError, match=r"^prompt must hold at least one token$"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match=r"^prompt \(30 tokens\) plus 4 new tokens needs 33 positions, more than "
                                         r"max_context=32$"):
        generate(model, [1] * 30, 4)
    assert len(generate(model, [1] * 30, 3)) == 3   # the last new token is never fed back: 32 positions
    with pytest.raises(ValueError, match=r"^prompt token must be in 0\.\.39, not 40$"):
        generate(model, [40], 1)
    with pytest.raises(ValueError, match=r"^the number of new tokens must be a non-negative integer, not -1$"):
        generate(model, [1], -1)
    assert generate(model, [1], 0) == []
