"""The integer numerics every Lockstep datapath computes, as the specification.

Pure NumPy. The hardware in ``hdl/`` must equal these functions bit for bit; docs/numerics.md
describes the same rules in words with worked examples (and a test keeps the examples true).

Formats
-------
* Activations and weights: int8, two's complement, range [-128, 127], symmetric (no zero point).
* Products and sums: int32 accumulators, two's complement, wrapping on overflow exactly like a
  32-bit hardware adder. ``max_k_without_overflow`` says how long a dot product may be before a
  wrap is possible at all; the configuration keeps every GEMM below it.
* Requantization (the one rule that takes an int32 back to int8)::

      y = saturate_int8( (acc * multiplier + 2**(shift-1)) >> shift )     for shift >= 1
      y = saturate_int8(  acc * multiplier )                              for shift == 0

  ``multiplier`` is an unsigned 15-bit integer (0 .. 32767) and ``shift`` an integer in
  0 .. 46, so ``acc * multiplier`` fits a signed 48-bit product. ``>>`` is an arithmetic shift
  (floor division by ``2**shift``), so adding half first rounds to nearest with ties towards
  +infinity ("round half up"): 2.5 -> 3, -2.5 -> -2. Saturation clamps to [-128, 127].
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError, InputTypeError

INT8_MIN = -128
INT8_MAX = 127
ACC_BITS = 32
MULT_BITS = 15
MULT_MAX = (1 << MULT_BITS) - 1
SHIFT_MAX = 46
#: Bits of a requantization shift in hardware (0 .. SHIFT_MAX).
SHIFT_BITS = SHIFT_MAX.bit_length()

__all__ = [
    "ACC_BITS", "INT8_MAX", "INT8_MIN", "MULT_BITS", "MULT_MAX", "SHIFT_BITS", "SHIFT_MAX",
    "ceil_div", "check_int8", "check_int_array", "gemm_int8", "is_int", "is_real", "max_k_without_overflow",
    "quantize_multiplier", "requantize", "saturate_int8", "wrap_int32",
]


def ceil_div(a: int, b: int) -> int:
    """``a / b`` rounded up, for integers (``b`` > 0); the one spelling of it in the project."""
    return -(-a // b)


# -- the one integer check: kind and range before any cast ----------------------------------------
# NumPy counts bool, timedelta64 and datetime64 among its integers, and a cast to int64 wraps
# uint64 values above 2**63 - 1 (2**64 - 1 becomes -1). Every integer input of the golden model
# and the host side is checked here, in its own dtype, before it is converted.

def is_int(value) -> bool:
    """True for a Python int or a NumPy signed/unsigned integer scalar; False for bool, timedelta64
    and everything else."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, np.integer) and np.dtype(type(value)).kind in "iu"


def is_real(value) -> bool:
    """True for an integer as :func:`is_int` counts them or a Python/NumPy float."""
    return is_int(value) or (isinstance(value, float | np.floating) and not isinstance(value, bool))


def check_int_array(name: str, x, low: int, high: int, *, rule: str | None = None) -> np.ndarray:
    """Return ``x`` as an int64 array after checking its kind and range, before any cast.

    Only NumPy signed and unsigned integer dtypes pass (not bool, timedelta64, datetime64,
    object or floats: TypeError "{name} must hold integers, not {dtype}"). Every element must lie
    in [low, high], compared in the array's own dtype, so a uint64 2**64 - 1 is reported as itself
    (ValueError "{name} must {rule}, not {first bad value}"; ``rule`` defaults to
    "hold values in [low, high]"). ``low`` and ``high`` must lie within int64.
    """
    rule = rule or f"hold values in [{low}, {high}]"
    if is_int(x):  # a scalar, compared as a Python int (2**70 is out of range, not a wrapped value)
        if not low <= int(x) <= high:
            raise InputError(f"{name} must {rule}, not {int(x)}")
        return np.asarray(int(x), dtype=np.int64)
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise InputTypeError(f"{name} must hold integers, not {arr.dtype}")
    bad = (arr < low) | (arr > high)
    if bad.any():
        raise InputError(f"{name} must {rule}, not {int(arr[bad].flat[0])}")
    return arr.astype(np.int64)


def check_int8(name: str, x) -> np.ndarray:
    """Return ``x`` as an int64 array after checking every element is an int8 value.

    Raises TypeError for a non-integer array and ValueError for a value outside [-128, 127],
    naming ``name`` and the first bad value.
    """
    return check_int_array(name, x, INT8_MIN, INT8_MAX, rule="hold int8 values in [-128, 127]")


def wrap_int32(x) -> np.ndarray:
    """Reduce integers to 32-bit two's complement, exactly as a 32-bit adder wraps.

    Raises TypeError for anything but integers (a cast of uint64 or int64 to int64 keeps every
    value modulo 2**32, so integers of any NumPy width wrap correctly)."""
    if is_int(x):
        x = int(x) & 0xFFFF_FFFF
    elif np.asarray(x).dtype.kind not in "iu":
        raise InputTypeError(f"wrap_int32 needs integers, not {np.asarray(x).dtype}")
    x = np.asarray(x).astype(np.int64)
    return (((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)).astype(np.int64)


def max_k_without_overflow() -> int:
    """Longest int8 dot product whose int32 sum can never wrap: 2**31 - 1 >= K * 128 * 128."""
    return ((1 << (ACC_BITS - 1)) - 1) // (128 * 128)


def gemm_int8(a, w) -> np.ndarray:
    """int8 (M x K) times int8 (K x N) -> int32 (M x N), accumulated with 32-bit wraparound.

    Returned as an int64 array holding int32 values. Raises ValueError when the inner sizes do
    not match, naming both shapes.
    """
    a = check_int8("a", a)
    w = check_int8("w", w)
    if a.ndim != 2 or w.ndim != 2:
        raise InputError(f"gemm operands must be 2-D, not a{a.shape} and w{w.shape}")
    if a.shape[1] != w.shape[0]:
        raise InputError(f"gemm inner sizes must match: a is {a.shape[0]}x{a.shape[1]}, "
                         f"w is {w.shape[0]}x{w.shape[1]}")
    # int64 holds any sum up to K = 2**49 exactly; the wrap then reproduces the 32-bit adder.
    return wrap_int32(a @ w)


def saturate_int8(x) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64), INT8_MIN, INT8_MAX)


def _check_param(what: str, value, low: int, high: int) -> np.ndarray:
    if np.ndim(value) == 0 and not is_int(value):      # a scalar: named by its repr; arrays and lists below
        raise InputTypeError(f"requantization {what} must be an integer, not {value!r}")
    return check_int_array(f"requantization {what}", value, low, high, rule=f"be in [{low}, {high}]")


def requantize(acc, multiplier, shift) -> np.ndarray:
    """The one requantization rule: int32 accumulators -> int8 (see the module docstring).

    ``acc`` values must be int32; ``multiplier`` in [0, 32767]; ``shift`` in [0, 46]. The
    multiplier and shift are integers or integer arrays that broadcast against ``acc`` (per output
    channel scales: one multiplier and shift per column). Vectorized; exact (int64, no floats).
    """
    mult = _check_param("multiplier", multiplier, 0, MULT_MAX)
    sh = _check_param("shift", shift, 0, SHIFT_MAX)
    acc = check_int_array("requantization input", acc, -(1 << 31), (1 << 31) - 1, rule="hold int32 values")
    prod = acc * mult
    # For shift 0 the half is 0: (1 << 0) >> 1 == 0, so one expression serves every shift.
    half = (np.int64(1) << sh) >> 1
    return saturate_int8((prod + half) >> sh)


def quantize_multiplier(scale: float) -> tuple[int, int]:
    """Nearest (multiplier, shift) with multiplier * 2**-shift ~= scale, multiplier normalised.

    The multiplier is brought into [2**14, 2**15) when the shift range allows, so it keeps 15
    significant bits: the relative error of the represented scale is below 2**-15.
    Raises ValueError for a scale that is not finite and positive or is out of range.
    """
    if not is_real(scale):
        raise InputTypeError(f"scale must be a real number, not {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise InputError(f"scale must be finite and positive, not {scale}")
    mantissa, exponent = math.frexp(scale)  # scale = mantissa * 2**exponent, mantissa in [0.5, 1)
    shift = MULT_BITS - exponent
    if shift > SHIFT_MAX:
        shift = SHIFT_MAX
    if shift < 0:
        raise InputError(f"scale must be below {MULT_MAX + 1}, not {scale}")
    multiplier = round(scale * (1 << shift))
    if multiplier > MULT_MAX:  # rounding carried into a 16th bit
        multiplier >>= 1
        shift -= 1
        if shift < 0:
            raise InputError(f"scale must be below {MULT_MAX + 1}, not {scale}")
    if multiplier == 0:
        raise InputError(f"scale must be at least 2**-{SHIFT_MAX + 1}, not {scale}")
    return int(multiplier), int(shift)
