"""Lookup-table contents and the fixed-point helpers shared by the attention and vector units.

Every table the hardware holds in ROM is built here, once, from its float definition, and cached:
the RTL imports these arrays and never recomputes them. Floats appear only while a table is
built; every function that *uses* a table is integer-only. Returned arrays are read-only (they are
cached and shared), deterministic, and independent of the platform (each entry is rounded from a
float64 value far from a rounding tie).

Rounding everywhere is the rounding step of :func:`golden.numerics.requantize` -- add half, then
shift right arithmetically ("round half up") -- applied by :func:`round_shift` to internal
fixed-point products that are wider than int8 and therefore not saturated to int8.

Tables
------
========================  ========  ====================  =========================================
table                     entries   entry format          contents
========================  ========  ====================  =========================================
:func:`exp_table`         512       u16, Q1.15            ``exp(-i / 32)``: entry 0 is 32768 (1.0);
                                                          entries 355.. are 0 (below half an LSB);
                                                          an index >= 512 means weight 0
:func:`recip_table`       128       u16, Q1.15            ``1 / m`` at the midpoint of each of 128
                                                          equal sub-intervals of m in [1, 2)
:func:`rsqrt_table`       192       u16, Q1.15            ``1 / sqrt(m)`` at the midpoint of each of
                                                          192 equal sub-intervals of m in [1, 4)
:func:`activation_table`  256       int8                  ``f(x_scale * x) / out_scale``, rounded
                                                          half up, saturated, at index ``x + 128``
:func:`rope_tables`       P x D/2   int16, Q1.14 (signed) ``cos`` and ``sin`` of ``p * theta_j`` for
                                                          positions p < max_context (HF Llama)
========================  ========  ====================  =========================================
"""

from __future__ import annotations

import functools
import math

import numpy as np

from golden.numerics import INT8_MAX, INT8_MIN, is_int, is_real

from .errors import InputError, InputTypeError

__all__ = [
    "ACTIVATIONS", "EXP_FRAC_BITS", "EXP_ONE", "EXP_OUT_BITS", "EXP_TABLE_SIZE", "RECIP_INDEX_BITS",
    "RECIP_ONE", "ROPE_FRAC_BITS", "ROPE_ONE", "RSQRT_INDEX_SHIFT", "RSQRT_TABLE_SIZE",
    "activation_table", "bit_length", "exp_lookup", "exp_table", "gelu_erf_float", "gelu_tanh_float",
    "recip_table", "reciprocal_fixed", "rope_tables", "round_shift", "rsqrt_fixed", "rsqrt_table",
    "silu_float",
]

#: Fraction bits of the softmax input: a score difference is counted in steps of 2**-5 = 1/32.
EXP_FRAC_BITS = 5
#: Entries in the exp table (a 9-bit address). Differences at or beyond it give weight 0.
EXP_TABLE_SIZE = 512
#: Fraction bits of an exp table entry (and of every softmax weight).
EXP_OUT_BITS = 15
EXP_ONE = 1 << EXP_OUT_BITS

#: Index bits of the reciprocal seed table (128 entries over [1, 2)).
RECIP_INDEX_BITS = 7
#: 1.0 in the Q1.15 format of reciprocal and reciprocal-square-root results.
RECIP_ONE = 1 << 15

#: The rsqrt seed table is addressed by ``(m16 >> 8) - 64`` where m16 is the Q2.14 mantissa.
RSQRT_INDEX_SHIFT = 8
RSQRT_TABLE_SIZE = (3 << 14) >> RSQRT_INDEX_SHIFT   # 192

#: Fraction bits of the RoPE sin/cos tables (signed int16, 1.0 == 16384).
ROPE_FRAC_BITS = 14
ROPE_ONE = 1 << ROPE_FRAC_BITS


def _round_half_up(x) -> np.ndarray:
    """Float -> nearest integer, ties towards +infinity (used only to build tables)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------------------------------
# Integer fixed-point helpers (no floats)
# --------------------------------------------------------------------------------------------------

def round_shift(x, shift) -> np.ndarray:
    """``(x + 2**(shift-1)) >> shift`` for shift >= 1, ``x`` for shift == 0 (round half up).

    The rounding step of :func:`golden.numerics.requantize` without its int8 saturation. ``shift``
    may be an array (a data-dependent barrel shift, as in the norms). Exact int64 arithmetic; the
    caller keeps ``x`` within the product width it documents (at most 48 bits).
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    return np.right_shift(x + half, shift)


def bit_length(x) -> np.ndarray:
    """Position of the leading one plus one, for non-negative integers below 2**63 (0 -> 0).

    Integer-only binary search: the hardware's priority encoder.
    """
    x = np.asarray(x, dtype=np.int64).copy()
    n = np.zeros(x.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << step)
        x = np.where(big, x >> step, x)
        n += big * step
    return n + (x > 0)


# --------------------------------------------------------------------------------------------------
# Softmax exp table
# --------------------------------------------------------------------------------------------------

@functools.cache
def exp_table() -> np.ndarray:
    """``round(2**15 * exp(-i / 2**EXP_FRAC_BITS))`` for i in [0, EXP_TABLE_SIZE), as int64.

    Entry 0 is 32768 (1.0 in Q1.15, so entries need 16 unsigned bits). Entries from 355 on are 0:
    ``exp(-355/32) * 2**15 < 0.5``; an implementation may store only the first 355 entries as long
    as every difference >= 355 reads 0.
    """
    i = np.arange(EXP_TABLE_SIZE, dtype=np.float64)
    return _frozen(_round_half_up(np.exp(-i / (1 << EXP_FRAC_BITS)) * EXP_ONE))


def exp_lookup(diff) -> np.ndarray:
    """Softmax weight for a non-negative score difference: ``exp_table()[diff]``, 0 past the end.

    Raises ValueError for a negative difference.
    """
    diff = np.asarray(diff, dtype=np.int64)
    if (diff < 0).any():
        raise InputError(f"exp table index must be non-negative, not {int(diff.min())}")
    table = exp_table()
    inside = diff < EXP_TABLE_SIZE
    return np.where(inside, table[np.where(inside, diff, 0)], 0)


# --------------------------------------------------------------------------------------------------
# Reciprocal and reciprocal square root: seed table + one Newton step
# --------------------------------------------------------------------------------------------------

@functools.cache
def recip_table() -> np.ndarray:
    """Seed of ``1/m`` for m in [1, 2): entry i = round(2**15 / (1 + (i + 0.5) / 128)), int64.

    Each entry is the reciprocal of its sub-interval's midpoint, which minimises the worst relative
    error over the sub-interval (about 2**-8); one Newton step squares it.
    """
    i = np.arange(1 << RECIP_INDEX_BITS, dtype=np.float64)
    mid = 1.0 + (i + 0.5) / (1 << RECIP_INDEX_BITS)
    return _frozen(_round_half_up(RECIP_ONE / mid))


@functools.cache
def rsqrt_table() -> np.ndarray:
    """Seed of ``1/sqrt(m)`` for m in [1, 4): entry i = round(2**15 / sqrt((i + 64.5) / 64)), int64.

    Sub-intervals are 1/64 wide; the address is the Q2.14 mantissa's top 8 bits minus 64.
    """
    i = np.arange(RSQRT_TABLE_SIZE, dtype=np.float64)
    mid = (i + 64.5) / 64.0
    return _frozen(_round_half_up(RECIP_ONE / np.sqrt(mid)))


def reciprocal_fixed(x) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal of positive integers ``x`` (< 2**31): ``(r, p)``.

    ``1/x ~= r * 2**-(15+p)``.

    Integer-only sequence (the hardware's)::

        p   = bit_length(x) - 1                        # priority encoder, x in [2**p, 2**(p+1))
        m   = x >> (p - 15)   (or x << (15 - p))       # u16 mantissa, Q1.15 in [1, 2), truncated
        r0  = recip_table()[(m >> 8) - 128]            # u16 seed, Q1.15 in (0.5, 1]
        e   = m * r0                                   # u32 product, Q2.30, ~= 1.0
        t   = 2**31 - e                                # s32, Q2.30, 2 - m*r0 ~= 1.0
        r   = round_shift(r0 * t, 30)                  # 47-bit product -> u16, Q1.15

    ``r`` is within 1 LSB (2**-15) of 2**15 / (m / 2**15) for every mantissa (tested exhaustively).
    Raises ValueError for a value outside [1, 2**31).
    """
    x = np.asarray(x, dtype=np.int64)
    if ((x < 1) | (x >= (1 << 31))).any():
        raise InputError("reciprocal input must be in [1, 2**31)")
    p = bit_length(x) - 1
    m = np.where(p >= 15, x >> np.maximum(p - 15, 0), x << np.maximum(15 - p, 0))
    r0 = recip_table()[(m >> (15 - RECIP_INDEX_BITS)) - (1 << RECIP_INDEX_BITS)]
    t = (1 << 31) - m * r0
    return round_shift(r0 * t, 30), p


def rsqrt_fixed(u) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal square root of positive integers ``u`` (< 2**31): ``(r, k)``.

    ``1/sqrt(u) ~= r * 2**-(15+k)``.

    Integer-only sequence (the hardware's)::

        k   = (bit_length(u) - 1) // 2                 # u in [4**k, 4**(k+1))
        m   = u >> (2k - 14)  (or u << (14 - 2k))      # u16 mantissa, Q2.14 in [1, 4), truncated
        r0  = rsqrt_table()[(m >> 8) - 64]             # u16 seed, Q1.15 in (0.5, 1]
        sq  = r0 * r0                                  # u31, Q2.30
        h   = round_shift(m * sq, 15)                  # 46-bit product -> u31, Q2.29, m*r0^2 ~= 1
        t   = 3 * 2**29 - h                            # s32, Q2.29, 3 - m*r0^2 ~= 2
        r   = round_shift(r0 * t, 30)                  # 47-bit product -> u16, Q1.15 (includes the /2)

    ``r`` is within 1.13 LSB of 2**15 / sqrt(m / 2**14) for every mantissa (tested exhaustively).
    Raises ValueError for a value outside [1, 2**31).
    """
    u = np.asarray(u, dtype=np.int64)
    if ((u < 1) | (u >= (1 << 31))).any():
        raise InputError("rsqrt input must be in [1, 2**31)")
    k = (bit_length(u) - 1) >> 1
    m = np.where(2 * k >= 14, u >> np.maximum(2 * k - 14, 0), u << np.maximum(14 - 2 * k, 0))
    r0 = rsqrt_table()[(m >> RSQRT_INDEX_SHIFT) - (1 << (14 - RSQRT_INDEX_SHIFT))]
    h = round_shift(m * (r0 * r0), 15)
    t = 3 * (1 << 29) - h
    return round_shift(r0 * t, 30), k


# --------------------------------------------------------------------------------------------------
# Activation tables
# --------------------------------------------------------------------------------------------------

def silu_float(x):
    """SiLU (swish): ``x * sigmoid(x)``, float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / (1.0 + np.exp(-x))


def gelu_tanh_float(x):
    """GELU, tanh approximation (GPT-2's ``gelu_new``), float64."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf_float(x):
    """GELU, exact erf form, float64."""
    x = np.asarray(x, dtype=np.float64)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


#: The activation functions the vector unit has tables for, by name.
ACTIVATIONS = {"silu": silu_float, "gelu_tanh": gelu_tanh_float, "gelu_erf": gelu_erf_float}


def check_scale(name: str, scale) -> float:
    """Return ``scale`` as a float if it is a finite positive real; TypeError/ValueError naming it."""
    if not is_real(scale):
        raise InputTypeError(f"{name} must be a real number, not {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise InputError(f"{name} must be finite and positive, not {scale}")
    return scale


def activation_table(kind: str, x_scale: float, out_scale: float) -> np.ndarray:
    """256-entry int8 table of ``saturate(round_half_up(f(x_scale * x) / out_scale))``.

    Entry ``x + 128`` holds the output for int8 input ``x``. ``kind`` is one of ``ACTIVATIONS``.
    Cached per (kind, x_scale, out_scale). Raises ValueError for an unknown kind or a bad scale.
    """
    if kind not in ACTIVATIONS:
        raise InputError(f"activation kind must be one of {sorted(ACTIVATIONS)}, not {kind!r}")
    return _activation_table(kind, check_scale("x_scale", x_scale), check_scale("out_scale", out_scale))


@functools.lru_cache(maxsize=256)
def _activation_table(kind: str, x_scale: float, out_scale: float) -> np.ndarray:
    x = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.float64) * x_scale
    y = _round_half_up(ACTIVATIONS[kind](x) / out_scale)
    return _frozen(np.clip(y, INT8_MIN, INT8_MAX))


# --------------------------------------------------------------------------------------------------
# RoPE tables
# --------------------------------------------------------------------------------------------------

def rope_tables(max_context: int, head_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` tables, each int64 of shape (max_context, head_dim // 2), signed Q1.14.

    Entry [p, j] is ``round_half_up(2**14 * cos(p * base**(-2j / head_dim)))`` (and sin): the
    Hugging Face Llama frequencies, where pair j rotates lanes j and j + head_dim/2 (rotate-half).
    Values lie in [-16384, 16384], so int16 holds them. Cached per argument tuple.
    Raises ValueError for a non-positive max_context, an odd or non-positive head_dim or a bad base.
    """
    for name, value in (("max_context", max_context), ("head_dim", head_dim)):
        if not is_int(value):
            raise InputTypeError(f"{name} must be an integer, not {value!r}")
        if value < 1:
            raise InputError(f"{name} must be a positive integer, not {value}")
    if head_dim % 2:
        raise InputError(f"head_dim must be even for rotary embedding, not {head_dim}")
    base = check_scale("rope base", base)
    return _rope_tables(int(max_context), int(head_dim), base)


@functools.lru_cache(maxsize=32)
def _rope_tables(max_context: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angle = np.arange(max_context, dtype=np.float64)[:, None] * inv_freq[None, :]
    return (_frozen(_round_half_up(np.cos(angle) * ROPE_ONE)),
            _frozen(_round_half_up(np.sin(angle) * ROPE_ONE)))
