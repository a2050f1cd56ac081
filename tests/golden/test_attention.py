"""Decode attention: the loop form and the vectorized form agree bit for bit, on edge cases too.

Integer results are compared with ``==``; against the float64 references they are held to the
fixed-point error budgets of docs/testing.md ("Float tolerances"), named at each bound.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golden.attention import (
    HEAD_DIM_MAX,
    MAX_CONTEXT_LIMIT,
    OUT_FRAC_BITS,
    SCORE_MAX,
    SCORE_MIN,
    AttentionParams,
    AttentionShape,
    attention_decode,
    attention_decode_loop,
    attention_ref,
    attention_scores,
)
from golden.numerics import quantize_multiplier, requantize, saturate_int8
from golden.tables import (
    EXP_FRAC_BITS,
    EXP_ONE,
    EXP_TABLE_SIZE,
    exp_lookup,
    exp_table,
    recip_table,
    reciprocal_fixed,
    round_shift,
)
from tests.tolerances import EPS64, rounding_bound

KV_LENS = (1, 2, 37, 64, 128)


def _params(head_dim, q_scale=0.02, k_scale=0.02, v_scale=0.02, out_scale=0.01):
    return AttentionParams.from_scales(q_scale=q_scale, k_scale=k_scale, v_scale=v_scale,
                                       out_scale=out_scale, head_dim=head_dim)


def _both(q, k, v, params, max_context=128):
    a = attention_decode(q, k, v, params, max_context=max_context)
    b = attention_decode_loop(q, k, v, params, max_context=max_context)
    assert np.array_equal(a, b), "vectorized and loop forms differ"
    assert a.min() >= -128 and a.max() <= 127
    return a


def _random(rng, n_heads, n_kv_heads, head_dim, kv_len):
    q = rng.integers(-128, 128, (n_heads, head_dim))
    k = rng.integers(-128, 128, (kv_len, n_kv_heads, head_dim))
    v = rng.integers(-128, 128, (kv_len, n_kv_heads, head_dim))
    return q, k, v


# --- loop form == vectorized form -------------------------------------------------------------------

@pytest.mark.parametrize("kv_len", KV_LENS)
@pytest.mark.parametrize("heads", [(8, 2), (4, 4), (6, 1)])
def test_loop_equals_vectorized(kv_len, heads):
    rng = np.random.default_rng(kv_len * 10 + heads[0])
    q, k, v = _random(rng, heads[0], heads[1], 32, kv_len)
    # scales chosen so logits spread over several units: maxima rise and fall along the sequence
    _both(q, k, v, _params(32, q_scale=0.01, k_scale=0.01, out_scale=0.5))


@pytest.mark.parametrize("order", ["increasing", "decreasing"])
def test_every_position_a_new_maximum_and_none(order):
    """Increasing scores rescale at every position: the longest fold the vectorized form does."""
    kv_len, head_dim = 128, 16
    q = np.zeros((2, head_dim), dtype=np.int64)
    q[:, 0] = 100
    k = np.zeros((kv_len, 1, head_dim), dtype=np.int64)
    k[:, 0, 0] = np.linspace(-128, 127, kv_len).astype(np.int64)
    if order == "decreasing":
        k = k[::-1].copy()
    v = np.random.default_rng(5).integers(-128, 128, (kv_len, 1, head_dim))
    z = attention_scores(q, k, _params(head_dim, q_scale=0.03, k_scale=0.03))
    assert (np.diff(z[0]) > 0).all() if order == "increasing" else (np.diff(z[0]) < 0).all()
    _both(q, k, v, _params(head_dim, q_scale=0.03, k_scale=0.03))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n_kv_heads=st.integers(1, 3), group=st.integers(1, 3),
       head_dim=st.integers(1, 16), kv_len=st.integers(1, 40),
       q_scale=st.floats(1e-4, 0.2), out_scale=st.floats(1e-3, 1.0))
def test_loop_equals_vectorized_property(data, n_kv_heads, group, head_dim, kv_len, q_scale, out_scale):
    int8s = st.integers(-128, 127)
    q = data.draw(hnp.arrays(np.int64, (n_kv_heads * group, head_dim), elements=int8s))
    k = data.draw(hnp.arrays(np.int64, (kv_len, n_kv_heads, head_dim), elements=int8s))
    v = data.draw(hnp.arrays(np.int64, (kv_len, n_kv_heads, head_dim), elements=int8s))
    _both(q, k, v, _params(head_dim, q_scale=q_scale, k_scale=0.05, out_scale=out_scale), max_context=40)


# --- adversarial inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("kv_len", KV_LENS)
def test_all_scores_equal_gives_the_mean_of_v(kv_len):
    rng = np.random.default_rng(kv_len)
    q = np.zeros((4, 16), dtype=np.int64)        # q = 0: every score is 0
    k = rng.integers(-128, 128, (kv_len, 2, 16))
    v = rng.integers(-128, 128, (kv_len, 2, 16))
    params = _params(16, out_scale=0.02)         # out scale == v scale
    out = _both(q, k, v, params)
    mean = np.repeat(v.mean(axis=0), 2, axis=0)  # head h reads kv head h // 2
    assert np.abs(out - mean).max() <= 0.5 + 1e-3     # rounding + the normalisation's fixed-point budget


@pytest.mark.parametrize("kv_len", [2, 64, 128])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_score_far_above_the_rest_selects_its_value_row_exactly(kv_len, where):
    head_dim = 8
    t_star = {"first": 0, "middle": kv_len // 2, "last": kv_len - 1}[where]
    q = np.full((1, head_dim), 127)
    k = np.full((kv_len, 1, head_dim), -128)
    k[t_star] = 127
    v = np.random.default_rng(kv_len).integers(-128, 128, (kv_len, 1, head_dim))
    params = _params(head_dim, q_scale=0.05, k_scale=0.05, out_scale=0.02)
    z = attention_scores(q, k, params)
    assert (z[0, t_star] - np.delete(z[0], t_star) >= EXP_TABLE_SIZE).all()   # others get weight 0
    out = _both(q, k, v, params)
    assert np.array_equal(out[0], requantize(v[t_star, 0] << OUT_FRAC_BITS, params.out_mult,
                                             params.out_shift))
    assert np.array_equal(out[0], v[t_star, 0])       # out scale == v scale: the row itself


@pytest.mark.parametrize("kv_len", KV_LENS)
@pytest.mark.parametrize("value", [-128, 127])
def test_maximum_magnitude_everywhere(kv_len, value):
    q = np.full((2, 64), value)
    k = np.full((kv_len, 1, 64), value)
    v = np.full((kv_len, 1, 64), value)
    params = _params(64, q_scale=1.0, k_scale=1.0, out_scale=0.02)   # scores saturate the s16 register
    z = attention_scores(q, k, params)
    assert (z == SCORE_MAX).all()
    out = _both(q, k, v, params, max_context=128)
    assert (out == value).all()
    out = _both(q, k, -v - (value == -128), params)                    # mixed signs of q.k and v
    assert (out == saturate_int8(-value - (value == -128))).all()


def test_extreme_negative_scores_saturate_low():
    q = np.full((1, 64), 127)
    k = np.full((3, 1, 64), -128)
    params = _params(64, q_scale=1.0, k_scale=1.0)
    assert (attention_scores(q, k, params) == SCORE_MIN).all()
    v = np.array([[[1] * 64], [[2] * 64], [[3] * 64]])
    out = _both(q, k, v, _params(64, q_scale=1.0, k_scale=1.0, v_scale=0.02, out_scale=0.02))
    assert (out == 2).all()                       # all scores equal (at SCORE_MIN): the mean


@pytest.mark.parametrize("kv_len", KV_LENS)
def test_all_zero_vectors(kv_len):
    zeros_q = np.zeros((4, 16), dtype=np.int64)
    zeros_kv = np.zeros((kv_len, 4, 16), dtype=np.int64)
    assert (_both(zeros_q, zeros_kv, zeros_kv, _params(16)) == 0).all()
    v = np.random.default_rng(1).integers(-128, 128, (kv_len, 4, 16))
    out = _both(zeros_q, zeros_kv, v, _params(16, out_scale=0.02))
    assert np.abs(out - v.mean(axis=0)).max() <= 0.5 + 1e-3   # as above: equal weights, exact mean


def test_longest_context_keeps_the_weighted_sum_within_32_bits():
    """kv_len = 512 of -128 with equal weights: acc = -128 * 32768 * 512 = -2**31 exactly."""
    kv_len = MAX_CONTEXT_LIMIT
    q = np.zeros((1, 4), dtype=np.int64)
    k = np.zeros((kv_len, 1, 4), dtype=np.int64)
    v = np.full((kv_len, 1, 4), -128)
    assert (_both(q, k, v, _params(4, out_scale=0.02), max_context=kv_len) == -128).all()


# --- grouped-query attention and the float reference -------------------------------------------------

@pytest.mark.parametrize("kv_len", [1, 2, 64, 128])
@pytest.mark.parametrize("n_kv_heads, group", [(1, 8), (2, 4), (4, 2)])
def test_gqa_equals_mha_with_repeated_kv_heads(kv_len, n_kv_heads, group):
    rng = np.random.default_rng(kv_len + 100 * group)
    q, k, v = _random(rng, n_kv_heads * group, n_kv_heads, 32, kv_len)
    params = _params(32, q_scale=0.01, k_scale=0.01, out_scale=0.5)
    gqa = attention_decode(q, k, v, params)
    mha = attention_decode(q, np.repeat(k, group, axis=1), np.repeat(v, group, axis=1), params)
    assert np.array_equal(gqa, mha)
    assert np.array_equal(attention_ref(q, k, v),
                          attention_ref(q, np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)))


def test_float_reference_matches_a_naive_softmax():
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(4, 8)), rng.normal(size=(5, 2, 8)), rng.normal(size=(5, 2, 8))
    ref = attention_ref(q, k, v)
    for h in range(4):
        s = np.array([q[h] @ k[t, h // 2] for t in range(5)]) / math.sqrt(8)
        p = np.exp(s) / np.exp(s).sum()
        # Two float64 evaluations: scores (K = 8), softmax (exp's relative error grows with |s|),
        # weighted sum (K = 5); the weights sum to 1, so |v| is the output's magnitude.
        bound = rounding_bound(eps=EPS64, k=8, scale=np.abs(v).max() * (1 + np.abs(s).max()), stages=3)
        assert np.abs(ref[h] - p @ v[:, h // 2]).max() <= bound


@pytest.mark.parametrize("kv_len", [1, 2, 64, 128])
def test_integer_attention_is_close_to_the_float_reference(kv_len):
    rng = np.random.default_rng(kv_len)
    q, k, v = _random(rng, 8, 2, 64, kv_len)
    sq, sk, sv = 0.01, 0.01, 0.02
    ref = attention_ref(q * sq, k * sk, v * sv)
    so = np.abs(ref).max() / 127
    out = _both(q, k, v, _params(64, q_scale=sq, k_scale=sk, v_scale=sv, out_scale=so))
    assert np.abs(out * so - ref).max() / so < 2.5     # rounding + score, exp-table and reciprocal budgets


def test_kv_len_one_is_the_value_row_exactly():
    """One position: l = 32768 is a power of two, the reciprocal is exact, out = requantized v."""
    v = np.arange(-128, 128, 4).reshape(1, 1, 64)
    q = np.random.default_rng(0).integers(-128, 128, (3, 64))
    k = np.random.default_rng(1).integers(-128, 128, (1, 1, 64))
    assert np.array_equal(_both(q, k, v, _params(64, out_scale=0.02)), np.repeat(v[0], 3, axis=0))


# --- tables and fixed-point helpers ------------------------------------------------------------------

def test_exp_table_contents():
    table = exp_table()
    assert table.shape == (EXP_TABLE_SIZE,)
    assert table[0] == EXP_ONE
    assert (np.diff(table) <= 0).all()
    nonzero = int((table > 0).sum())
    assert nonzero == 355 and (table[nonzero:] == 0).all()
    i = np.arange(EXP_TABLE_SIZE)
    # round to nearest, plus float64's rounding of the formula (a different exp may differ by an ulp)
    assert np.abs(table - EXP_ONE * np.exp(-i / 2 ** EXP_FRAC_BITS)).max() <= 0.5 + 4 * EPS64 * EXP_ONE
    assert not table.flags.writeable and exp_table() is table
    assert exp_lookup(EXP_TABLE_SIZE) == 0 and exp_lookup(10 ** 6) == 0
    with pytest.raises(ValueError, match=r"^exp table index must be non-negative, not -1$"):
        exp_lookup(-1)


def test_reciprocal_is_within_one_lsb_for_every_mantissa():
    m = np.arange(1 << 15, 1 << 16)
    r, p = reciprocal_fixed(m)
    assert (p == 15).all()
    assert np.abs(r - 2.0 ** 30 / m).max() <= 1.0 + EPS64 * 2.0 ** 15    # 1 LSB + the float64 division
    assert recip_table().shape == (128,)


@pytest.mark.parametrize("x", [1, 3, 32768, 32768 * 7 + 5, 32768 * 512, (1 << 31) - 1])
def test_reciprocal_of_any_denominator(x):
    r, p = reciprocal_fixed(x)
    assert abs(int(r) * 2.0 ** -(15 + int(p)) * x - 1) < 2 ** -14 + EPS64    # 15-bit reciprocal + one rounding


def test_reciprocal_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"^reciprocal input must be in \[1, 2\*\*31\)$"):
        reciprocal_fixed(0)


@settings(max_examples=200, deadline=None)
@given(acc=st.integers(-(1 << 31), (1 << 31) - 1), mult=st.integers(0, 32767), shift=st.integers(0, 46))
def test_round_shift_is_the_rounding_step_of_requantize(acc, mult, shift):
    assert requantize(acc, mult, shift) == saturate_int8(round_shift(acc * mult, shift))


# --- configuration checks ----------------------------------------------------------------------------

def _shape(**over):
    base = dict(d_model=256, n_heads=8, n_kv_heads=2, head_dim=32, max_context=128, kv_len=64)
    base.update(over)
    return AttentionShape(**base)


def test_shape_accepts_a_valid_configuration():
    s = _shape()
    assert s.group == 4 and list(s.kv_head()) == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("over, exc, message", [
    (dict(kv_len=129), ValueError, r"^kv_len must be in \[1, 128\], not 129$"),
    (dict(kv_len=0), ValueError, r"^kv_len must be in \[1, 128\], not 0$"),
    (dict(head_dim=48), ValueError, r"^head_dim must divide d_model \(256\), not 48$"),
    (dict(n_heads=0), ValueError, r"^n_heads must be a positive integer, not 0$"),
    (dict(n_kv_heads=0), ValueError, r"^n_kv_heads must be a positive integer, not 0$"),
    (dict(n_kv_heads=3), ValueError, r"^n_heads must be a multiple of n_kv_heads \(3\), not 8$"),
    (dict(d_model=0), ValueError, r"^d_model must be a positive integer, not 0$"),
    (dict(head_dim=0), ValueError, rf"head_dim must be in \[1, {HEAD_DIM_MAX}\], not 0"),
    (dict(max_context=1024, kv_len=1), ValueError,
     rf"max_context must be in \[1, {MAX_CONTEXT_LIMIT}\], not 1024"),
    (dict(head_dim=32.0), TypeError, r"^head_dim must be an integer, not 32\.0$"),
    (dict(n_heads=True), TypeError, r"^n_heads must be an integer, not True$"),
])
def test_shape_rejects(over, exc, message):
    with pytest.raises(exc, match=message):
        _shape(**over)


def test_attention_rejects_a_kv_cache_longer_than_max_context():
    q, k, v = _random(np.random.default_rng(0), 2, 1, 8, 129)
    with pytest.raises(ValueError, match=r"^kv_len must be in \[1, 128\], not 129$"):
        attention_decode(q, k, v, _params(8), max_context=128)
    with pytest.raises(ValueError, match=r"^kv_len must be in \[1, 128\], not 129$"):
        attention_decode_loop(q, k, v, _params(8), max_context=128)


@pytest.mark.parametrize("q_shape, k_shape, v_shape, message", [
    ((2, 8), (4, 1, 8), (4, 1, 7), r"^v must have the shape of k \(4, 1, 8\), not \(4, 1, 7\)$"),
    ((2, 8), (4, 1, 6), (4, 1, 6), r"^k head_dim must equal q head_dim \(8\), not 6$"),
    ((8,), (4, 1, 8), (4, 1, 8), r"^q must have shape \(n_heads, head_dim\), not \(8,\)$"),
    ((2, 8), (4, 8), (4, 8), r"^k must have shape \(kv_len, n_kv_heads, head_dim\), not \(4, 8\)$"),
    ((3, 8), (4, 2, 8), (4, 2, 8), r"^n_heads must be a multiple of n_kv_heads \(2\), not 3$"),
])
def test_attention_rejects_mismatched_operands(q_shape, k_shape, v_shape, message):
    with pytest.raises(ValueError, match=message):
        attention_decode(np.zeros(q_shape, int), np.zeros(k_shape, int), np.zeros(v_shape, int), _params(8))


def test_attention_rejects_non_int8_operands():
    with pytest.raises(ValueError, match=r"^q must hold int8 values in \[-128, 127\], not 128$"):
        attention_decode(np.full((1, 4), 128), np.zeros((1, 1, 4), int), np.zeros((1, 1, 4), int),
                         _params(4))
    with pytest.raises(TypeError, match=r"^k must hold integers, not float64$"):
        attention_decode(np.zeros((1, 4), int), np.zeros((1, 1, 4)), np.zeros((1, 1, 4), int), _params(4))


@pytest.mark.parametrize("over, exc, message", [
    (dict(score_mult=32768), ValueError, r"^score_mult must be in \[0, 32767\], not 32768$"),
    (dict(out_shift=47), ValueError, r"^out_shift must be in \[0, 46\], not 47$"),
    (dict(score_shift=-1), ValueError, r"^score_shift must be in \[0, 46\], not -1$"),
    (dict(out_mult=1.5), TypeError, r"^out_mult must be an integer, not 1\.5$"),
])
def test_params_reject(over, exc, message):
    fields = dict(score_mult=16384, score_shift=20, out_mult=16384, out_shift=30)
    fields.update(over)
    with pytest.raises(exc, match=message):
        AttentionParams(**fields)


def test_params_from_scales():
    p = _params(64, q_scale=0.02, k_scale=0.03, v_scale=0.05, out_scale=0.01)
    assert (p.score_mult, p.score_shift) == quantize_multiplier(0.02 * 0.03 / 8 * 2 ** EXP_FRAC_BITS)
    assert (p.out_mult, p.out_shift) == quantize_multiplier(0.05 / 0.01 / 2 ** OUT_FRAC_BITS)
    with pytest.raises(ValueError, match=r"^v_scale must be finite and positive, not 0$"):
        _params(64, v_scale=0)
    with pytest.raises(TypeError, match=r"^q_scale must be a real number, not '1'$"):
        _params(64, q_scale="1")
