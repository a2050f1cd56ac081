"""The vector unit's operations: the integer specification, each with its float reference beside it.

Operands are int8 with a real per-tensor scale (real value = scale * integer); the real scales
enter only as integer constants made once from floats (``*Params.from_scales``, ``*_multiplier``).
Every integer function is integer-only, vectorized over leading axes, and returns int8 values
in an int64 array. Every int32 -> int8 step is :func:`golden.numerics.requantize` (the one rule,
re-exported here as ``requantize``); internal fixed-point products round with
:func:`golden.tables.round_shift` (its rounding step). Registers <= 32 bits, products <= 48 bits.

RMSNorm (one row of N int8 values; N <= 32768)
    ``q = sum x*x`` (u30) ; ``u = max(q + eps, 1)`` (u31; the max matters only for an all-zero
    row, whose output is 0 whatever u is) ;
    ``(r, k) = rsqrt_fixed(u)`` (1/sqrt(u) ~= r * 2**-(15+k), r u16 Q1.15) ;
    ``n = round_shift(x * r, k)`` (24-bit product -> s17, Q1.15: x / sqrt(u), |n| <= 1.0) ;
    ``y = requantize(n * gamma, out_mult, out_shift)`` (s23), real factor
    ``sqrt(N) * gamma_scale / (out_scale * 2**15)``.
    ``eps`` is ``round(N * eps_real / x_scale**2)`` (may be 0): the real epsilon in the units of the
    sum of squares, so ``u = N * (mean(x*x) + eps_real) / x_scale**2`` and the sqrt(N) sits in the
    constant multiplier: no division by N at run time.

LayerNorm (one row of N int8 values; N <= 32768). ``(inv_mult, inv_shift)`` represent 1/N.
    ``s = sum x`` (s23) ; ``mu = round_shift(s * inv_mult, inv_shift)`` (integer mean, s8) ;
    ``c = x - mu`` (s9) ; ``e = sum c`` (s16) ; ``q = sum c*c`` (u31) ;
    ``f = round_shift(e * 2**8 * inv_mult, inv_shift)`` (fraction of the mean, Q.8, |f| <= 2**7) ;
    ``v = max(0, q - round_shift(e*e * inv_mult, inv_shift))`` (the centred sum of squares: exact
    identity ``sum (x-mean)^2 = q - e^2/N``) ; ``u = max(v + eps, 1)`` ; ``(r, k) = rsqrt_fixed(u)`` ;
    ``d = c * 2**8 - f`` (s18: (x - mean) in Q.8) ; ``n = round_shift(d * r, k + 8)`` (34-bit
    product -> s17, Q1.15) ; ``y = requantize(n * gamma + beta, out_mult, out_shift)``.
    ``beta`` is int32, quantised at the accumulator scale ``out_scale * out_mult / 2**out_shift``
    (|beta| <= 2**30), like a GEMM bias.

Activations (SiLU, GELU)
    ``y = table[x + 128]`` with a 256-entry int8 table from :func:`golden.tables.activation_table`.

Residual add
    ``y = requantize(a * a_mult + b * b_mult, mult, shift)``: the input with the larger scale gets
    ``a_mult = 2**14``, the other ``round(2**14 * its_scale / larger_scale)`` (u15); the s23 sum is
    in units of ``larger_scale / 2**14``.

Element-wise multiply (the SwiGLU gate)
    ``y = requantize(a * b, mult, shift)`` for the real factor ``a_scale * b_scale / out_scale``.

Rotary position embedding (rotate-half, as Hugging Face Llama)
    For lanes j < D/2 at position p, with ``c, s = rope_tables(...)[p, j]`` (s16, Q1.14):
    ``y[j] = requantize(x[j]*c - x[j+D/2]*s, ...)``,
    ``y[j+D/2] = requantize(x[j+D/2]*c + x[j]*s, ...)`` (s23 sums), real factor
    ``x_scale / (out_scale * 2**14)``.

Argmax
    Index of the largest value along the last axis; ties go to the lowest index (the hardware
    scans from index 0 and replaces its candidate only on a strictly greater value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from golden.numerics import (
    INT8_MAX,
    INT8_MIN,
    MULT_MAX,
    SHIFT_MAX,
    check_int8,
    check_int_array,
    is_int,
    quantize_multiplier,
    requantize,
)
from golden.tables import (
    ROPE_FRAC_BITS,
    activation_table,
    check_scale,
    gelu_erf_float,
    gelu_tanh_float,
    rope_tables,
    round_shift,
    rsqrt_fixed,
    silu_float,
)

from .errors import InputError, InputTypeError

__all__ = [
    "NORM_MAX_LEN", "NORM_MEAN_FRAC_BITS", "AddParams", "NormParams", "activation", "argmax",
    "gelu", "gelu_ref", "layernorm", "layernorm_ref", "multiply", "multiply_multiplier",
    "multiply_ref", "requantize", "residual_add", "residual_add_ref", "rmsnorm", "rmsnorm_ref", "rope",
    "rope_multiplier", "rope_ref", "silu", "silu_ref",
]

#: Longest row a norm accepts: the LayerNorm sum of squares N * 255**2 must stay below 2**31.
NORM_MAX_LEN = 32768
#: Fraction bits of the LayerNorm mean.
NORM_MEAN_FRAC_BITS = 8
_NORM_FRAC_BITS = 15            # n = x / sqrt(u) in Q1.15
_INT31 = (1 << 31) - 1
_BETA_MAX = 1 << 30




def _check_int(name: str, value, low: int, high: int) -> int:
    if not is_int(value):
        raise InputTypeError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be in [{low}, {high}], not {value}")
    return int(value)


def _round_half_up(x) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _sq_max(kind: str) -> int:
    """Largest per-element square the norm's sum of squares can hold."""
    return 128 * 128 if kind == "rms" else 255 * 255


# --------------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, eq=False)
class NormParams:
    """Integer constants of one RMSNorm or LayerNorm (see the module docstring).

    ``kind`` is "rms" or "layer"; ``gamma`` int8 of shape (N,); ``beta`` int32 of shape (N,) for
    "layer" and None for "rms"; ``eps`` the integer epsilon (>= 0, and small enough that the sum of
    squares plus eps stays below 2**31); ``out_mult``/``out_shift`` the output requantization;
    ``inv_mult``/``inv_shift`` 1/N (used by "layer"). Raises TypeError/ValueError naming the field.
    Build from floats with :meth:`rms` or :meth:`layer`.
    """

    kind: str
    gamma: np.ndarray
    beta: np.ndarray | None
    eps: int
    out_mult: int
    out_shift: int
    inv_mult: int
    inv_shift: int

    def __post_init__(self):
        if self.kind not in ("rms", "layer"):
            raise InputError(f"norm kind must be 'rms' or 'layer', not {self.kind!r}")
        gamma = check_int8("gamma", self.gamma)
        if gamma.ndim != 1 or not 1 <= gamma.shape[0] <= NORM_MAX_LEN:
            raise InputError(f"gamma must be a vector of 1 to {NORM_MAX_LEN} values, not shape {gamma.shape}")
        object.__setattr__(self, "gamma", gamma)
        n = gamma.shape[0]
        if self.kind == "layer":
            if self.beta is None:
                raise InputError("beta must be given for a layer norm, not None")
            beta = check_int_array("beta", self.beta, -_BETA_MAX, _BETA_MAX, rule="hold values in [-2**30, 2**30]")
            if beta.shape != (n,):
                raise InputError(f"beta must have shape ({n},), not {beta.shape}")
            object.__setattr__(self, "beta", beta)
        elif self.beta is not None:
            raise InputError("beta must be None for an rms norm")
        _check_int("eps", self.eps, 0, _INT31 - n * _sq_max(self.kind))
        _check_int("out_mult", self.out_mult, 0, MULT_MAX)
        _check_int("out_shift", self.out_shift, 0, SHIFT_MAX)
        _check_int("inv_mult", self.inv_mult, 0, MULT_MAX)
        _check_int("inv_shift", self.inv_shift, 0, SHIFT_MAX)

    @property
    def length(self) -> int:
        return int(self.gamma.shape[0])

    @staticmethod
    def _common(gamma, x_scale, out_scale, eps):
        gamma = np.asarray(gamma, dtype=np.float64)
        if gamma.ndim != 1 or not 1 <= gamma.shape[0] <= NORM_MAX_LEN:
            raise InputError(f"gamma must be a vector of 1 to {NORM_MAX_LEN} values, not shape {gamma.shape}")
        if not np.isfinite(gamma).all():
            raise InputError("gamma must be finite")
        x_scale = check_scale("x_scale", x_scale)
        out_scale = check_scale("out_scale", out_scale)
        eps = check_scale("eps", eps)
        n = gamma.shape[0]
        g_scale = float(np.abs(gamma).max()) / INT8_MAX or 1.0
        g = np.clip(_round_half_up(gamma / g_scale), INT8_MIN, INT8_MAX)
        eps_int = int(_round_half_up(n * eps / x_scale ** 2))
        if eps_int > _INT31 - n * 255 * 255:
            raise InputError(f"eps must be below {(_INT31 - n * 255 * 255) * x_scale ** 2 / n:.6g} "
                             f"at x_scale {x_scale} (the sum of squares must fit 31 bits), not {eps}")
        out_mult, out_shift = quantize_multiplier(
            math.sqrt(n) * g_scale / (out_scale * (1 << _NORM_FRAC_BITS)))
        inv_mult, inv_shift = quantize_multiplier(1.0 / n)
        return g, eps_int, out_mult, out_shift, inv_mult, inv_shift

    @classmethod
    def rms(cls, gamma, *, x_scale: float, out_scale: float, eps: float = 1e-6) -> NormParams:
        """RMSNorm constants from float gamma (quantised per tensor to int8, absmax) and scales."""
        g, eps_int, om, os_, im, is_ = cls._common(gamma, x_scale, out_scale, eps)
        return cls(kind="rms", gamma=g, beta=None, eps=eps_int, out_mult=om, out_shift=os_,
                   inv_mult=im, inv_shift=is_)

    @classmethod
    def layer(cls, gamma, beta, *, x_scale: float, out_scale: float, eps: float = 1e-5) -> NormParams:
        """LayerNorm constants; beta is quantised to int32 at the accumulator scale."""
        g, eps_int, om, os_, im, is_ = cls._common(gamma, x_scale, out_scale, eps)
        beta = np.asarray(beta, dtype=np.float64)
        if beta.shape != g.shape or not np.isfinite(beta).all():
            raise InputError(f"beta must be a finite vector of shape {g.shape}, not shape {beta.shape}")
        acc_scale = check_scale("out_scale", out_scale) * om / (1 << os_)
        b = _round_half_up(beta / acc_scale)
        if (np.abs(b) > _BETA_MAX).any():
            raise InputError(f"beta is too large for out_scale {out_scale}: it needs more than 31 bits")
        return cls(kind="layer", gamma=g, beta=b, eps=eps_int, out_mult=om, out_shift=os_,
                   inv_mult=im, inv_shift=is_)


def _check_row(x, params: NormParams, kind: str) -> np.ndarray:
    if not isinstance(params, NormParams):
        raise InputTypeError(f"params must be NormParams, not {type(params).__name__}")
    if params.kind != kind:
        raise InputError(f"params must be for a {kind} norm, not a {params.kind} norm")
    x = check_int8("x", x)
    if x.ndim < 1 or x.shape[-1] != params.length:
        raise InputError(f"x must end in an axis of {params.length} values, not shape {x.shape}")
    return x


def rmsnorm(x, params: NormParams) -> np.ndarray:
    """Integer RMSNorm over the last axis of int8 ``x`` (module docstring has the sequence)."""
    x = _check_row(x, params, "rms")
    u = np.maximum(np.sum(x * x, axis=-1, keepdims=True) + params.eps, 1)
    r, k = rsqrt_fixed(u)
    n = round_shift(x * r, k)
    return requantize(n * params.gamma, params.out_mult, params.out_shift)


def rmsnorm_ref(x, gamma, eps: float = 1e-6) -> np.ndarray:
    """Float64 RMSNorm (Hugging Face Llama): ``x / sqrt(mean(x**2) + eps) * gamma``."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * np.asarray(gamma, dtype=np.float64)


def layernorm(x, params: NormParams) -> np.ndarray:
    """Integer LayerNorm over the last axis of int8 ``x`` (module docstring has the sequence)."""
    x = _check_row(x, params, "layer")
    im, is_ = params.inv_mult, params.inv_shift
    mu = round_shift(np.sum(x, axis=-1, keepdims=True) * im, is_)
    c = x - mu
    e = np.sum(c, axis=-1, keepdims=True)
    q = np.sum(c * c, axis=-1, keepdims=True)
    f = round_shift((e << NORM_MEAN_FRAC_BITS) * im, is_)
    v = np.maximum(q - round_shift(e * e * im, is_), 0)
    r, k = rsqrt_fixed(np.maximum(v + params.eps, 1))
    d = (c << NORM_MEAN_FRAC_BITS) - f
    n = round_shift(d * r, k + NORM_MEAN_FRAC_BITS)
    return requantize(n * params.gamma + params.beta, params.out_mult, params.out_shift)


def layernorm_ref(x, gamma, beta, eps: float = 1e-5) -> np.ndarray:
    """Float64 LayerNorm (biased variance): ``(x - mean) / sqrt(var + eps) * gamma + beta``."""
    x = np.asarray(x, dtype=np.float64)
    c = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(c * c, axis=-1, keepdims=True)
    return c / np.sqrt(var + eps) * np.asarray(gamma, dtype=np.float64) + np.asarray(beta, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------------

def activation(x, table) -> np.ndarray:
    """Apply a 256-entry int8 lookup table: ``table[x + 128]``."""
    x = check_int8("x", x)
    table = np.asarray(table)
    if table.shape != (256,):
        raise InputError(f"activation table must have 256 entries, not shape {table.shape}")
    return table[x - INT8_MIN].astype(np.int64)


def silu(x, *, x_scale: float, out_scale: float) -> np.ndarray:
    """Integer SiLU through its table (:func:`golden.tables.activation_table`)."""
    return activation(x, activation_table("silu", x_scale, out_scale))


def silu_ref(x) -> np.ndarray:
    """Float64 SiLU, ``x * sigmoid(x)``."""
    return silu_float(x)


def gelu(x, *, x_scale: float, out_scale: float, approximate: str = "tanh") -> np.ndarray:
    """Integer GELU through its table; ``approximate`` is "tanh" (GPT-2's gelu_new) or "none" (erf)."""
    if approximate not in ("tanh", "none"):
        raise InputError(f"approximate must be 'tanh' or 'none', not {approximate!r}")
    kind = "gelu_tanh" if approximate == "tanh" else "gelu_erf"
    return activation(x, activation_table(kind, x_scale, out_scale))


def gelu_ref(x, approximate: str = "tanh") -> np.ndarray:
    """Float64 GELU: the tanh approximation or the exact erf form."""
    if approximate not in ("tanh", "none"):
        raise InputError(f"approximate must be 'tanh' or 'none', not {approximate!r}")
    return gelu_tanh_float(x) if approximate == "tanh" else gelu_erf_float(x)


# --------------------------------------------------------------------------------------------------
# Element-wise add and multiply
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class AddParams:
    """Constants of the residual add: input multipliers (u15) and the output requantization."""

    a_mult: int
    b_mult: int
    mult: int
    shift: int

    def __post_init__(self):
        _check_int("a_mult", self.a_mult, 0, MULT_MAX)
        _check_int("b_mult", self.b_mult, 0, MULT_MAX)
        _check_int("mult", self.mult, 0, MULT_MAX)
        _check_int("shift", self.shift, 0, SHIFT_MAX)

    @classmethod
    def from_scales(cls, *, a_scale: float, b_scale: float, out_scale: float) -> AddParams:
        a_scale = check_scale("a_scale", a_scale)
        b_scale = check_scale("b_scale", b_scale)
        out_scale = check_scale("out_scale", out_scale)
        big = max(a_scale, b_scale)
        a_mult = int(_round_half_up((1 << 14) * a_scale / big))
        b_mult = int(_round_half_up((1 << 14) * b_scale / big))
        mult, shift = quantize_multiplier(big / ((1 << 14) * out_scale))
        return cls(a_mult=a_mult, b_mult=b_mult, mult=mult, shift=shift)


def residual_add(a, b, params: AddParams) -> np.ndarray:
    """``requantize(a * a_mult + b * b_mult, mult, shift)`` element-wise (same shapes)."""
    a = check_int8("a", a)
    b = check_int8("b", b)
    if a.shape != b.shape:
        raise InputError(f"b must have the shape of a {a.shape}, not {b.shape}")
    return requantize(a * params.a_mult + b * params.b_mult, params.mult, params.shift)


def residual_add_ref(a, b) -> np.ndarray:
    """Float64 reference: ``a + b`` on real values."""
    return np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64)


def multiply_multiplier(*, a_scale: float, b_scale: float, out_scale: float) -> tuple[int, int]:
    """(mult, shift) for the product's real factor ``a_scale * b_scale / out_scale``."""
    return quantize_multiplier(check_scale("a_scale", a_scale) * check_scale("b_scale", b_scale)
                               / check_scale("out_scale", out_scale))


def multiply(a, b, *, mult: int, shift: int) -> np.ndarray:
    """``requantize(a * b, mult, shift)`` element-wise (the s16 product is exact)."""
    a = check_int8("a", a)
    b = check_int8("b", b)
    if a.shape != b.shape:
        raise InputError(f"b must have the shape of a {a.shape}, not {b.shape}")
    return requantize(a * b, mult, shift)


def multiply_ref(a, b) -> np.ndarray:
    """Float64 reference: ``a * b`` on real values."""
    return np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Rotary position embedding
# --------------------------------------------------------------------------------------------------

def rope_multiplier(*, x_scale: float, out_scale: float) -> tuple[int, int]:
    """(mult, shift) for RoPE's real factor ``x_scale / (out_scale * 2**14)``."""
    return quantize_multiplier(check_scale("x_scale", x_scale)
                               / (check_scale("out_scale", out_scale) * (1 << ROPE_FRAC_BITS)))


def rope(x, positions, *, mult: int, shift: int, max_context: int, base: float = 10000.0) -> np.ndarray:
    """Integer rotary embedding of int8 ``x`` (..., head_dim) at integer ``positions``.

    ``positions`` broadcasts against ``x.shape[:-1]`` and must lie in [0, max_context). Raises
    ValueError for an odd head_dim or a position out of range, naming the position.
    """
    x = check_int8("x", x)
    if x.ndim < 1:
        raise InputError(f"x must have a head_dim axis, not shape {x.shape}")
    cos, sin = rope_tables(max_context, x.shape[-1], base)
    return rope_with_tables(x, positions, cos, sin, mult=mult, shift=shift)


def rope_with_tables(x, positions, cos, sin, *, mult: int, shift: int) -> np.ndarray:
    """:func:`rope` with its (cos, sin) tables given (as the hardware holds them in memory).

    ``cos`` and ``sin`` are (max_context, head_dim // 2) Q1.14 tables from
    :func:`golden.tables.rope_tables`.
    """
    x = check_int8("x", x)
    cos, sin = np.asarray(cos, dtype=np.int64), np.asarray(sin, dtype=np.int64)
    max_context = cos.shape[0]
    head_dim = x.shape[-1]
    if cos.shape != sin.shape or cos.ndim != 2 or cos.shape[1] * 2 != head_dim:
        raise InputError(f"rope tables must both be (max_context, {head_dim // 2}), not {cos.shape} and {sin.shape}")
    pos = check_int_array("positions", positions, 0, max_context - 1, rule=f"be in [0, {max_context - 1}]")
    pos = np.broadcast_to(pos, x.shape[:-1])
    c, s = cos[pos], sin[pos]
    half = head_dim // 2
    x1, x2 = x[..., :half], x[..., half:]
    acc = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return requantize(acc, mult, shift)


def rope_ref(x, positions, base: float = 10000.0) -> np.ndarray:
    """Float64 rotary embedding, Hugging Face Llama's ``x * cos + rotate_half(x) * sin``."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.asarray(positions, dtype=np.float64)[..., None] * inv_freq
    ang = np.concatenate([ang, ang], axis=-1)
    rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * np.cos(ang) + rot * np.sin(ang)


# --------------------------------------------------------------------------------------------------
# Argmax
# --------------------------------------------------------------------------------------------------

def argmax(logits) -> np.ndarray:
    """Index of the maximum along the last axis, ties to the lowest index, for integer logits.

    Raises TypeError for non-integer logits and ValueError for an empty last axis.
    """
    x = check_int_array("logits", logits, -(1 << 63), (1 << 63) - 1)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise InputError(f"logits must have a non-empty last axis, not shape {x.shape}")
    # numpy's argmax returns the first occurrence of the maximum: the same rule.
    return np.argmax(x, axis=-1)
