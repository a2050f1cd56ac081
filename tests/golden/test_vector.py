"""The vector unit's integer ops: tables, edge cases, float references and the checks on their inputs.

Integer results are compared with ``==``; against the float64 references they are held to the
fixed-point error budgets of docs/testing.md ("Float tolerances"), named at each bound.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golden import numerics
from golden.tables import (
    ROPE_ONE,
    RSQRT_TABLE_SIZE,
    activation_table,
    bit_length,
    rope_tables,
    rsqrt_fixed,
    rsqrt_table,
)
from golden.vector import (
    NORM_MAX_LEN,
    AddParams,
    NormParams,
    activation,
    argmax,
    gelu,
    gelu_ref,
    layernorm,
    layernorm_ref,
    multiply,
    multiply_multiplier,
    multiply_ref,
    requantize,
    residual_add,
    residual_add_ref,
    rmsnorm,
    rmsnorm_ref,
    rope,
    rope_multiplier,
    rope_ref,
    silu,
    silu_ref,
)
from tests.tolerances import EPS64, rounding_bound

WIDTH = 64


def _gamma(seed=0, n=WIDTH):
    return np.random.default_rng(seed).uniform(0.5, 1.5, n)


def _beta(seed=0, n=WIDTH):
    return np.random.default_rng(seed + 1).normal(0, 0.2, n)


def _in_int8(y):
    return y.min() >= -128 and y.max() <= 127


def _lsb_error(y, out_scale, ref):
    return float(np.abs(y * out_scale - ref).max() / out_scale)


# --- reciprocal square root ---------------------------------------------------------------------------

def test_rsqrt_is_within_1_13_lsb_for_every_mantissa():
    m = np.arange(1 << 14, 1 << 16)
    r, k = rsqrt_fixed(m)
    assert (k == 7).all()
    assert np.abs(r - 2.0 ** 15 / np.sqrt(m / 2.0 ** 14)).max() <= 1.13 + 4 * EPS64 * 2.0 ** 15  # table budget
    assert rsqrt_table().shape == (RSQRT_TABLE_SIZE,) == (192,)


@pytest.mark.parametrize("u", [1, 2, 3, 4, 255, 4 ** 7, 4 ** 7 + 1, 123456789, (1 << 31) - 1])
def test_rsqrt_of_any_input(u):
    r, k = rsqrt_fixed(u)
    assert abs(int(r) * 2.0 ** -(15 + int(k)) * math.sqrt(u) - 1) < 2 ** -14 + 2 * EPS64   # + sqrt and product


def test_rsqrt_rejects_zero():
    with pytest.raises(ValueError, match=r"^rsqrt input must be in \[1, 2\*\*31\)$"):
        rsqrt_fixed(0)


def test_bit_length_matches_python():
    xs = [0, 1, 2, 3, 255, 256, (1 << 31) - 1, 1 << 31, (1 << 62) + 5]
    assert list(bit_length(np.array(xs))) == [x.bit_length() for x in xs]


# --- norms --------------------------------------------------------------------------------------------

def _rms(gamma, x_scale, out_scale, eps=1e-6):
    return NormParams.rms(gamma, x_scale=x_scale, out_scale=out_scale, eps=eps)


def _layer(gamma, beta, x_scale, out_scale, eps=1e-5):
    return NormParams.layer(gamma, beta, x_scale=x_scale, out_scale=out_scale, eps=eps)


@pytest.mark.parametrize("seed", range(4))
def test_norms_are_close_to_the_float_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (8, WIDTH))
    sx = 0.03
    g, b = _gamma(seed), _beta(seed)
    ref = rmsnorm_ref(x * sx, g)
    so = np.abs(ref).max() / 127
    assert _lsb_error(rmsnorm(x, _rms(g, sx, so)), so, ref) < 1.0   # rounding + rsqrt table and Q1.15 budgets
    ref = layernorm_ref(x * sx, g, b)
    so = np.abs(ref).max() / 127
    assert _lsb_error(layernorm(x, _layer(g, b, sx, so)), so, ref) < 1.0   # rounding + rsqrt table and Q1.15 budgets


@pytest.mark.parametrize("value", [-128, -1, 1, 5, 127])
def test_norms_of_a_constant_vector(value):
    """Variance 0: LayerNorm gives beta; RMSNorm gives sign(x) * gamma (x / rms(x) = +-1)."""
    g, b = _gamma(1), _beta(1)
    x = np.full((2, WIDTH), value)
    p = _layer(g, b, 0.05, 0.02)
    ref = layernorm_ref(x * 0.05, g, b)
    y = layernorm(x, p)
    assert _lsb_error(y, 0.02, ref) <= 0.5 + 1e-6     # beta alone: rounding + the float64 reference
    assert np.array_equal(y[0], requantize(p.beta, p.out_mult, p.out_shift))
    so = 1.5 / 127
    y = rmsnorm(x, _rms(g, 0.05, so))
    assert _lsb_error(y, so, rmsnorm_ref(x * 0.05, g)) < 1.0


def test_norms_of_a_zero_vector():
    g, b = _gamma(2), _beta(2)
    zero = np.zeros((1, WIDTH), dtype=np.int64)
    assert (rmsnorm(zero, _rms(g, 0.05, 0.02)) == 0).all()
    p = _layer(g, b, 0.05, 0.02)
    assert np.array_equal(layernorm(zero, p)[0], requantize(p.beta, p.out_mult, p.out_shift))


@pytest.mark.parametrize("pattern", ["-128", "127", "alternating", "one spike"])
def test_norms_of_maximum_magnitude_vectors(pattern):
    n = 4096
    x = {"-128": np.full(n, -128), "127": np.full(n, 127),
         "alternating": np.where(np.arange(n) % 2, 127, -128),
         "one spike": np.where(np.arange(n) == 7, -128, 0)}[pattern][None, :]
    g, b = _gamma(3, n), _beta(3, n)
    for fn, ref_fn, make in ((rmsnorm, lambda v: rmsnorm_ref(v, g), lambda so: _rms(g, 0.1, so)),
                             (layernorm, lambda v: layernorm_ref(v, g, b), lambda so: _layer(g, b, 0.1, so))):
        ref = ref_fn(x * 0.1)
        so = np.abs(ref).max() / 127
        y = fn(x, make(so))
        assert _in_int8(y)
        assert _lsb_error(y, so, ref) < 1.0   # rounding + rsqrt table and Q1.15 budgets


def test_norm_over_the_longest_row():
    x = np.where(np.arange(NORM_MAX_LEN) % 2, 127, -128)[None, :]
    g = np.ones(NORM_MAX_LEN)
    b = np.zeros(NORM_MAX_LEN)
    ref = layernorm_ref(x * 0.1, g, b)
    so = np.abs(ref).max() / 127
    y = layernorm(x, _layer(g, b, 0.1, so))
    assert _lsb_error(y, so, ref) < 1.0   # rounding + rsqrt table and Q1.15 budgets


@settings(max_examples=50, deadline=None)
@given(x=hnp.arrays(np.int64, (3, 24), elements=st.integers(-128, 127)),
       x_scale=st.floats(1e-3, 1.0), out_scale=st.floats(1e-3, 1.0))
def test_norm_outputs_are_always_int8(x, x_scale, out_scale):
    g, b = _gamma(4, 24), _beta(4, 24)
    assert _in_int8(rmsnorm(x, _rms(g, x_scale, out_scale)))
    assert _in_int8(layernorm(x, _layer(g, b, x_scale, out_scale)))


def test_norm_params_contents():
    g = _gamma(5)
    p = _rms(g, 0.05, 0.02, eps=1e-6)
    g_scale = np.abs(g).max() / 127
    assert np.array_equal(p.gamma, np.floor(g / g_scale + 0.5))
    assert p.eps == 0                                              # 64 * 1e-6 / 0.0025 rounds to 0
    assert (p.out_mult, p.out_shift) == numerics.quantize_multiplier(8 * g_scale / (0.02 * 2 ** 15))
    assert (p.inv_mult, p.inv_shift) == (16384, 20)                # 1/64 exactly
    assert _rms(g, 0.001, 0.02, eps=1e-5).eps == round(64 * 1e-5 / 1e-6)


@pytest.mark.parametrize("fields, exc, message", [
    (dict(kind="batch"), ValueError, r"^norm kind must be 'rms' or 'layer', not 'batch'$"),
    (dict(gamma=np.zeros((2, 2), int)), ValueError, r"^gamma must be a vector of 1 to 32768 values, not shape \(2, "
                                                    r"2\)$"),
    (dict(gamma=np.full(4, 200)), ValueError, r"^gamma must hold int8 values in \[-128, 127\], not 200$"),
    (dict(eps=-1), ValueError, r"^eps must be in \[0, 2147418111\], not -1$"),
    (dict(out_shift=50), ValueError, r"^out_shift must be in \[0, 46\], not 50$"),
    (dict(beta=np.zeros(4, int)), ValueError, r"^beta must be None for an rms norm$"),
    (dict(kind="layer"), ValueError, r"^beta must be given for a layer norm, not None$"),
    (dict(kind="layer", beta=np.zeros(3, int)), ValueError, r"^beta must have shape \(4,\), not \(3,\)$"),
    (dict(kind="layer", beta=np.full(4, 1 << 31)), ValueError, r"^beta must hold values in \[-2\*\*30, 2\*\*30\], "
                                                               r"not 2147483648$"),
    (dict(kind="layer", beta=np.zeros(4)), TypeError, r"^beta must hold integers, not float64$"),
])
def test_norm_params_reject(fields, exc, message):
    base = dict(kind="rms", gamma=np.ones(4, int), beta=None, eps=1, out_mult=16384, out_shift=30,
                inv_mult=16384, inv_shift=16)
    base.update(fields)
    with pytest.raises(exc, match=message):
        NormParams(**base)


def test_norm_rejects_bad_rows_and_scales():
    p = _rms(_gamma(), 0.05, 0.02)
    with pytest.raises(ValueError, match=r"^x must end in an axis of 64 values, not shape \(2, 63\)$"):
        rmsnorm(np.zeros((2, 63), int), p)
    with pytest.raises(ValueError, match=r"^params must be for a layer norm, not a rms norm$"):
        layernorm(np.zeros((2, 64), int), p)
    with pytest.raises(ValueError, match=r"^x_scale must be finite and positive, not -1\.0$"):
        _rms(_gamma(), -1.0, 0.02)
    with pytest.raises(ValueError, match=r"^eps must be finite and positive, not 0\.0$"):
        _rms(_gamma(), 0.05, 0.02, eps=0.0)
    with pytest.raises(ValueError, match=r"^eps must be below 33.4\d* at x_scale 0.001 .*, not 100.0$"):
        _layer(_gamma(), _beta(), 0.001, 0.02, eps=100.0)
    with pytest.raises(ValueError, match=r"^gamma must be a vector of 1 to 32768 values, not shape \(32769,\)$"):
        _rms(np.ones(NORM_MAX_LEN + 1), 0.05, 0.02)


# --- activations --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, ref", [("silu", silu_ref), ("gelu_tanh", gelu_ref),
                                       ("gelu_erf", lambda v: gelu_ref(v, "none"))])
def test_activation_tables_round_the_float_function(kind, ref):
    sx, so = 0.04, 0.03
    table = activation_table(kind, sx, so)
    assert table.shape == (256,) and not table.flags.writeable
    assert activation_table(kind, sx, so) is table                       # built once
    x = np.arange(-128, 128)
    want = np.clip(np.floor(ref(x * sx) / so + 0.5), -128, 127)
    assert np.array_equal(table, want)
    assert np.array_equal(activation(x, table), want)


def test_silu_and_gelu_apply_their_tables():
    x = np.arange(-128, 128).reshape(16, 16)
    assert np.array_equal(silu(x, x_scale=0.05, out_scale=0.04),
                          activation_table("silu", 0.05, 0.04)[x + 128])
    assert np.array_equal(gelu(x, x_scale=0.05, out_scale=0.04),
                          activation_table("gelu_tanh", 0.05, 0.04)[x + 128])
    assert np.array_equal(gelu(x, x_scale=0.05, out_scale=0.04, approximate="none"),
                          activation_table("gelu_erf", 0.05, 0.04)[x + 128])


def test_gelu_references():
    assert gelu_ref(0.0) == 0.0
    # float64: a handful of roundings (division, erf or exp, addition, products) of a value below 1
    assert abs(float(gelu_ref(1.0, "none")) - 0.8413447460685429) <= 8 * EPS64   # x * Phi(x)
    # not rounding: the tanh approximation's own error, 1.5e-4 at x = 1 (4.7e-4 at most, near -2.7)
    assert abs(float(gelu_ref(1.0)) - float(gelu_ref(1.0, "none"))) < 1e-3
    assert abs(float(silu_ref(1.0)) - 1 / (1 + math.exp(-1))) <= 8 * EPS64


def test_activation_rejects():
    kinds = r"\['gelu_erf', 'gelu_tanh', 'silu'\]"
    with pytest.raises(ValueError, match=rf"^activation kind must be one of {kinds}, not 'relu'$"):
        activation_table("relu", 0.1, 0.1)
    with pytest.raises(ValueError, match=r"^out_scale must be finite and positive, not 0\.0$"):
        silu(np.zeros(3, int), x_scale=0.1, out_scale=0.0)
    with pytest.raises(ValueError, match=r"^approximate must be 'tanh' or 'none', not 'fast'$"):
        gelu(np.zeros(3, int), x_scale=0.1, out_scale=0.1, approximate="fast")
    with pytest.raises(ValueError, match=r"^activation table must have 256 entries, not shape \(255,\)$"):
        activation(np.zeros(3, int), np.zeros(255, int))


# --- residual add and multiply ------------------------------------------------------------------------

def test_residual_add_at_equal_scales_is_a_saturating_add():
    a = np.arange(-128, 128)
    b = np.roll(a, 37)
    p = AddParams.from_scales(a_scale=0.05, b_scale=0.05, out_scale=0.05)
    assert (p.a_mult, p.b_mult) == (16384, 16384)
    assert np.array_equal(residual_add(a, b, p), np.clip(a + b, -128, 127))


@pytest.mark.parametrize("sa, sb, so", [(0.05, 0.01, 0.06), (0.001, 0.2, 0.3), (0.1, 0.1, 0.01),
                                        (0.02, 0.03, 0.05)])
def test_residual_add_is_within_half_an_lsb(sa, sb, so):
    rng = np.random.default_rng(0)
    a, b = rng.integers(-128, 128, 4096), rng.integers(-128, 128, 4096)
    y = residual_add(a, b, AddParams.from_scales(a_scale=sa, b_scale=sb, out_scale=so))
    ref = np.clip(residual_add_ref(a * sa, b * sb) / so, -128, 127)
    assert np.abs(y - ref).max() <= 0.5 + 0.01   # rounding + the 15-bit multipliers (127.5 * 2**-15 = 0.004)


def test_multiply_is_within_half_an_lsb():
    a = np.repeat(np.arange(-128, 128), 256)
    b = np.tile(np.arange(-128, 128), 256)
    mult, shift = multiply_multiplier(a_scale=0.05, b_scale=0.02, out_scale=0.9)
    y = multiply(a, b, mult=mult, shift=shift)
    assert _in_int8(y)
    ref = np.clip(multiply_ref(a * 0.05, b * 0.02) / 0.9, -128, 127)
    assert np.abs(y - ref).max() <= 0.5 + 0.01   # rounding + the 15-bit multipliers (127.5 * 2**-15 = 0.004)
    assert np.array_equal(multiply(a, b, mult=1, shift=0), np.clip(a * b, -128, 127))


def test_elementwise_ops_reject_mismatched_shapes():
    p = AddParams.from_scales(a_scale=1.0, b_scale=1.0, out_scale=1.0)
    with pytest.raises(ValueError, match=r"^b must have the shape of a \(3,\), not \(4,\)$"):
        residual_add(np.zeros(3, int), np.zeros(4, int), p)
    with pytest.raises(ValueError, match=r"^b must have the shape of a \(3,\), not \(4,\)$"):
        multiply(np.zeros(3, int), np.zeros(4, int), mult=1, shift=0)
    with pytest.raises(ValueError, match=r"^a_mult must be in \[0, 32767\], not 32768$"):
        AddParams(a_mult=32768, b_mult=0, mult=1, shift=0)


def test_requantize_is_the_numerics_rule():
    assert requantize is numerics.requantize


# --- RoPE ---------------------------------------------------------------------------------------------

def test_rope_tables_follow_hugging_face_llama():
    cos, sin = rope_tables(128, 64)
    assert cos.shape == sin.shape == (128, 32)
    assert (cos[0] == ROPE_ONE).all() and (sin[0] == 0).all()
    assert np.abs(cos).max() <= ROPE_ONE and not cos.flags.writeable
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, 64, 2) / 64)
    assert np.abs(cos[5] - np.cos(5 * inv_freq) * ROPE_ONE).max() <= 0.5 + 8 * EPS64 * ROPE_ONE   # + float64 angle, cos
    assert rope_tables(128, 64)[0] is cos


def test_rope_reference_is_a_rotation_of_lane_pairs():
    """Rotate-half: lanes j and j + D/2 form (x_j + i x_{j+D/2}), multiplied by e^{i p theta_j}."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16))
    pos = np.arange(5)
    ref = rope_ref(x, pos)
    theta = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
    z = (x[:, :8] + 1j * x[:, 8:]) * np.exp(1j * pos[:, None] * theta)
    # two float64 evaluations of a 2-term rotation; an angle's rounding moves it by eps64 * |angle|
    bound = rounding_bound(eps=EPS64, k=2, scale=np.abs(x).max() * (1 + 4 * theta.max()), stages=2)
    assert np.abs(ref - np.concatenate([z.real, z.imag], axis=1)).max() <= bound


def test_rope_at_position_zero_is_the_identity():
    x = np.random.default_rng(1).integers(-128, 128, (4, 64))
    mult, shift = rope_multiplier(x_scale=0.05, out_scale=0.05)
    assert np.array_equal(rope(x, 0, mult=mult, shift=shift, max_context=128), x)


@pytest.mark.parametrize("positions", [np.array([0]), np.array([1, 2, 63, 127])])
def test_rope_is_close_to_the_float_reference(positions):
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (positions.size, 4, 64))
    mult, shift = rope_multiplier(x_scale=0.05, out_scale=0.08)
    y = rope(x, positions[:, None], mult=mult, shift=shift, max_context=128)
    ref = rope_ref(x * 0.05, positions[:, None])
    assert _in_int8(y)
    assert np.abs(y - np.clip(ref / 0.08, -128, 127)).max() <= 0.5 + 0.02   # + Q1.14 tables and the multiplier


def test_rope_saturates_maximum_magnitude_pairs():
    x = np.full((1, 8), 127)
    mult, shift = rope_multiplier(x_scale=1.0, out_scale=1.0)
    y = rope(x, 3, mult=mult, shift=shift, max_context=8)
    assert _in_int8(y) and y.max() == 127       # |(127, 127)| = 179.6 does not fit one lane


def test_rope_rejects():
    m, s = rope_multiplier(x_scale=1.0, out_scale=1.0)
    with pytest.raises(ValueError, match=r"^positions must be in \[0, 127\], not 128$"):
        rope(np.zeros((2, 8), int), np.array([5, 128]), mult=m, shift=s, max_context=128)
    with pytest.raises(ValueError, match=r"^head_dim must be even for rotary embedding, not 7$"):
        rope(np.zeros((2, 7), int), 0, mult=m, shift=s, max_context=128)
    with pytest.raises(TypeError, match=r"^positions must hold integers, not float64$"):
        rope(np.zeros((2, 8), int), np.array([1.0]), mult=m, shift=s, max_context=128)
    with pytest.raises(ValueError, match=r"^max_context must be a positive integer, not 0$"):
        rope_tables(0, 8)


# --- argmax -------------------------------------------------------------------------------------------

def _argmax_scan(row):
    """The hardware's scan: keep the candidate unless a strictly greater value comes."""
    best = 0
    for i in range(1, len(row)):
        if row[i] > row[best]:
            best = i
    return best


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 50)),
                  elements=st.integers(-3, 3)))
def test_argmax_ties_go_to_the_lowest_index(logits):
    got = argmax(logits)
    assert list(got) == [_argmax_scan(row) for row in logits]
    assert np.array_equal(got, np.argmax(logits, axis=-1))


def test_argmax_of_int32_logits_and_ties():
    assert argmax(np.array([5, 9, 9, -3])) == 1
    assert argmax(np.array([-(1 << 31), -(1 << 31)])) == 0
    assert argmax(np.array([0, (1 << 31) - 1])) == 1


def test_argmax_rejects():
    with pytest.raises(TypeError, match=r"^logits must hold integers, not float64$"):
        argmax(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"^logits must have a non-empty last axis, not shape \(0,\)$"):
        argmax(np.array([], dtype=np.int64))
