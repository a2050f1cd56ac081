"""The numerics specification: GEMM and the one requantization rule."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden.numerics import (
    MULT_MAX,
    SHIFT_MAX,
    check_int8,
    gemm_int8,
    max_k_without_overflow,
    quantize_multiplier,
    requantize,
    wrap_int32,
)


def test_gemm_matches_numpy_matmul():
    rng = np.random.default_rng(7)
    for m, k, n in [(1, 1, 1), (3, 5, 7), (16, 64, 9)]:
        a = rng.integers(-128, 128, (m, k))
        w = rng.integers(-128, 128, (k, n))
        assert np.array_equal(gemm_int8(a, w), np.matmul(a.astype(np.int64), w.astype(np.int64)))


def test_gemm_extremes_do_not_wrap_below_the_limit():
    k = max_k_without_overflow()
    a = np.full((1, k), -128)
    w = np.full((k, 1), -128)
    assert gemm_int8(a, w)[0, 0] == k * 16384 <= 2**31 - 1


def test_gemm_wraps_like_a_32_bit_adder_past_the_limit():
    k = max_k_without_overflow() + 1
    a = np.full((1, k), -128)
    w = np.full((k, 1), -128)
    assert gemm_int8(a, w)[0, 0] == k * 16384 - 2**32


def test_wrap_int32_edges():
    assert wrap_int32([2**31 - 1, 2**31, -(2**31), -(2**31) - 1]).tolist() == [2**31 - 1, -(2**31), -(2**31),
                                                                             2**31 - 1]


@pytest.mark.parametrize(("a", "w", "exc", "match"), [
    ([[1, 2]], [[1], [2], [3]], ValueError, r"^gemm inner sizes must match: a is 1x2, w is 3x1$"),
    ([[128]], [[1]], ValueError, r"^a must hold int8 values in \[-128, 127\], not 128$"),
    ([[1]], [[-129]], ValueError, r"^w must hold int8 values in \[-128, 127\], not -129$"),
    ([[1.5]], [[1]], TypeError, r"^a must hold integers, not float64$"),
    ([1, 2], [[1], [2]], ValueError, r"^gemm operands must be 2-D, not a\(2,\) and w\(2, 1\)$"),
])
def test_gemm_rejects_bad_operands(a, w, exc, match):
    with pytest.raises(exc, match=match):
        gemm_int8(a, w)


# Worked examples of docs/numerics.md: (acc, multiplier, shift) -> int8.
WORKED = [
    (5, 1, 1, 3),          # 2.5 rounds up to 3
    (-5, 1, 1, -2),        # -2.5 rounds up (towards +inf) to -2
    (7, 1, 2, 2),          # 1.75 -> 2
    (-7, 1, 2, -2),        # -1.75 -> -2
    (6, 1, 2, 2),          # 1.5 -> 2 (tie)
    (-6, 1, 2, -1),        # -1.5 -> -1 (tie, towards +inf)
    (1000, 16384, 15, 127),   # 500 saturates to 127
    (-1000, 16384, 15, -128),  # -500 saturates to -128
    (255, 16384, 15, 127),     # 127.5 -> 128 -> saturates to 127
    (-257, 16384, 15, -128),   # -128.5 -> -128 (tie towards +inf, in range)
    (-259, 16384, 15, -128),   # -129.5 -> -129 -> saturates to -128
    (2**31 - 1, MULT_MAX, SHIFT_MAX, 1),   # the widest product still fits 48 bits
    (-(2**31), MULT_MAX, SHIFT_MAX, -1),
    (12345, 0, 0, 0),
    (100, 1, 0, 100),
]


@pytest.mark.parametrize(("acc", "mult", "shift", "expected"), WORKED)
def test_requantize_worked_examples(acc, mult, shift, expected):
    assert requantize(np.array([acc]), mult, shift)[0] == expected


def test_docs_worked_examples_match_the_code():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "numerics.md").read_text()
    section = text.split("### Worked examples", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    examples = []
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        try:
            acc, mult, shift, y = (int(cells[i]) for i in (0, 1, 2, 4))
        except ValueError:
            continue  # header rows
        examples.append((acc, mult, shift, y))
    assert len(examples) >= 10
    for acc, mult, shift, y in examples:
        assert requantize(np.array([acc]), mult, shift)[0] == y, (acc, mult, shift, y)


@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, MULT_MAX), st.integers(0, SHIFT_MAX))
def test_requantize_is_round_half_up_of_the_exact_value(acc, mult, shift):
    import math
    from fractions import Fraction

    exact = Fraction(acc * mult, 2**shift)
    expected = max(-128, min(127, math.floor(exact + Fraction(1, 2))))
    assert requantize(np.array([acc]), mult, shift)[0] == expected


def test_requantize_per_channel_equals_per_column_calls():
    rng = np.random.default_rng(3)
    acc = rng.integers(-(2**31), 2**31, (5, 7))
    mult = rng.integers(0, MULT_MAX + 1, 7)
    shift = rng.integers(0, SHIFT_MAX + 1, 7)
    got = requantize(acc, mult, shift)
    for j in range(7):
        assert np.array_equal(got[:, j], requantize(acc[:, j], int(mult[j]), int(shift[j])))


@pytest.mark.parametrize(("args", "exc", "match"), [
    ((1, MULT_MAX + 1, 0), ValueError, r"^requantization multiplier must be in \[0, 32767\], not 32768$"),
    ((1, -1, 0), ValueError, r"^requantization multiplier must be in \[0, 32767\], not -1$"),
    ((1, 1, SHIFT_MAX + 1), ValueError, r"^requantization shift must be in \[0, 46\], not 47$"),
    ((1, 1.0, 3), TypeError, r"^requantization multiplier must be an integer, not 1\.0$"),
    ((1, 1, "3"), TypeError, r"^requantization shift must be an integer, not '3'$"),
    ((1, np.array([1, 40000]), 0), ValueError, r"^requantization multiplier must be in \[0, 32767\], not 40000$"),
    ((1, True, 0), TypeError, r"^requantization multiplier must be an integer, not True$"),
    ((2**31, 1, 0), ValueError, r"^requantization input must hold int32 values, not 2147483648$"),
    ((np.array([5, -2**31 - 1]), 1, 0), ValueError, r"^requantization input must hold int32 values, not -2147483649$"),
    ((np.array([0.5]), 1, 0), TypeError, r"^requantization input must hold integers, not float64$"),
])
def test_requantize_rejects_bad_parameters(args, exc, match):
    with pytest.raises(exc, match=match):
        requantize(*args)


U64_MAX = np.array([2**64 - 1], dtype=np.uint64)      # -1 after a cast to int64
TIMEDELTA = np.array([3, 4], dtype="m8[s]")            # NumPy counts timedelta64 among its integers


def _dtype_cases():
    from golden.attention import AttentionShape
    from golden.vector import NormParams, argmax, rope_with_tables

    cos = sin = np.zeros((4, 1), np.int64)
    norm = dict(kind="layer", gamma=np.ones(2, int), eps=0, out_mult=1, out_shift=0, inv_mult=1, inv_shift=0)
    return [
        ("gemm uint64", lambda: gemm_int8(U64_MAX.reshape(1, 1), [[1]]), ValueError,
         r"^a must hold int8 values in \[-128, 127\], not 18446744073709551615$"),
        ("check_int8 uint64", lambda: check_int8("x", U64_MAX), ValueError,
         r"^x must hold int8 .*18446744073709551615$"),
        ("requantize acc uint64", lambda: requantize(U64_MAX, 1, 0), ValueError,
         r"^requantization input must hold int32 values, not 18446744073709551615$"),
        ("requantize mult uint64", lambda: requantize(1, np.uint64(2**64 - 1), 0), ValueError,
         r"^requantization multiplier must be in \[0, 32767\], not 18446744073709551615$"),
        ("requantize shift 2**70", lambda: requantize(1, 1, 2**70), ValueError,
         r"^requantization shift must be in \[0, 46\], not 1180591620717411303424$"),
        ("gemm timedelta", lambda: gemm_int8(TIMEDELTA.reshape(1, 2), [[1], [1]]), TypeError,
         r"^a must hold integers, not timedelta64\[s\]$"),
        ("requantize timedelta", lambda: requantize(TIMEDELTA, 1, 0), TypeError,
         r"^requantization input must hold integers, not timedelta64\[s\]$"),
        ("requantize timedelta scalar", lambda: requantize(1, np.timedelta64(1), 0), TypeError,
         r"^requantization multiplier must be an integer, not np.timedelta64\(1\)$"),
        ("rope positions uint64", lambda: rope_with_tables(np.zeros((1, 2), int), U64_MAX, cos, sin, mult=1, shift=0),
         ValueError, r"^positions must be in \[0, 3\], not 18446744073709551615$"),
        ("argmax timedelta", lambda: argmax(TIMEDELTA), TypeError, r"^logits must hold integers, not "
                                                                   r"timedelta64\[s\]$"),
        ("beta uint64", lambda: NormParams(**norm, beta=np.full(2, 2**64 - 1, np.uint64)), ValueError,
         r"^beta must hold values in \[-2\*\*30, 2\*\*30\], not 18446744073709551615$"),
        ("head_dim timedelta", lambda: AttentionShape(d_model=8, n_heads=1, n_kv_heads=1, head_dim=np.timedelta64(8),
                                                      max_context=4, kv_len=1), TypeError,
         r"^head_dim must be an integer, not np.timedelta64\(8\)$"),
    ]


@pytest.mark.parametrize(("case", "exc", "match"), [c[1:] for c in _dtype_cases()],
                         ids=[c[0] for c in _dtype_cases()])
def test_integer_inputs_are_checked_in_their_own_dtype_before_any_cast(case, exc, match):
    """golden.numerics.check_int_array / is_int: the kind (signed or unsigned integer, not bool or
    timedelta64) and the range are checked before a cast could wrap 2**64 - 1 into -1."""
    with pytest.raises(exc, match=match):
        case()


def test_integers_of_every_numpy_width_still_pass():
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        assert gemm_int8(np.array([[3]], dtype), [[-2]]).tolist() == [[-6]]
    assert requantize(np.array([7], np.uint64), np.uint16(1), np.uint8(1)).tolist() == [4]


@given(st.floats(min_value=2.0**-40, max_value=30000.0))
def test_quantize_multiplier_is_accurate(scale):
    mult, shift = quantize_multiplier(scale)
    assert 0 < mult <= MULT_MAX and 0 <= shift <= SHIFT_MAX
    represented = mult / 2**shift
    # 15 significant bits when the shift range allows it.
    # A 15-bit multiplier normalised to [2**14, 2**15) is within half a step, 2**-15 relative (2**-14
    # with the carry case), or half of 2**-SHIFT_MAX absolute at the smallest scales. mult / 2**shift is
    # exact in float64 and the subtraction is exact (Sterbenz): no float slack is needed.
    assert abs(represented - scale) <= scale * 2**-14 + 2**-(SHIFT_MAX + 1)


@pytest.mark.parametrize(("scale", "exc", "match"), [
    (0.0, ValueError, r"^scale must be finite and positive, not 0\.0$"),
    (-1.0, ValueError, r"^scale must be finite and positive, not -1\.0$"),
    (float("nan"), ValueError, r"^scale must be finite and positive, not nan$"),
    (40000.0, ValueError, r"^scale must be below 32768, not 40000\.0$"),
    (2.0**-48, ValueError, r"^scale must be at least 2\*\*-47, not 3\.552713678800501e-15$"),
    ("1", TypeError, r"^scale must be a real number, not '1'$"),
])
def test_quantize_multiplier_rejects_bad_scales(scale, exc, match):
    with pytest.raises(exc, match=match):
        quantize_multiplier(scale)
