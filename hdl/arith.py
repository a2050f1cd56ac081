"""Arithmetic building blocks shared by the units: rounding shifts, saturation, adder trees and
products built from adders.

Every function returns an Amaranth value; the rounding and saturation rules are golden's
(:mod:`golden.numerics`), so a unit that uses them inherits the one requantization rule.
"""

from amaranth.hdl import Cat, Const, Mux, Value

__all__ = ["as_signed", "clamp", "fabric_product", "product", "requantize", "round_saturate8", "round_shift",
           "saturate8", "tree_sum"]


def round_shift(x, shift):
    """``(x + 2**(shift-1)) >> shift`` (round half up; ``x`` for shift 0). ``shift`` is an int or
    a Value: a constant shift adds half and shifts; a run-time one is ``((2x >> shift) + 1) >> 1``,
    one expression for every shift with no test for zero."""
    if isinstance(shift, int):
        return x if shift == 0 else (x + (1 << (shift - 1))) >> shift
    return (((x << 1) >> shift) + 1) >> 1


def clamp(x, low: int, high: int):
    """``x`` limited to [low, high]."""
    return Mux(x > high, high, Mux(x < low, low, x))


def saturate8(y):
    """``y`` saturated to int8."""
    return clamp(y, -128, 127)


def as_signed(x):
    """``x`` as a signed value of the same number: itself when signed, else with a zero sign bit
    above its magnitude (one bit wider)."""
    x = Value.cast(x)
    return x if x.shape().signed else Cat(x, Const(0, 1)).as_signed()


def round_saturate8(x, shift):
    """``saturate8(round_shift(x, shift))`` built shallow: the same value, without a carry chain as
    wide as ``x`` (a requantization's, 48 bits, was the deepest logic of the FPGA's output stages).

    With ``t = (2x) >> shift`` (floor), ``round_shift(x, shift) = (t + 1) >> 1``: it exceeds 127
    exactly when ``t >= 255`` and falls below -128 exactly when ``t <= -258``; both are tests of
    ``t``'s bits (OR and AND trees), and in between ``t`` fits 10 bits, so the rounding adds 1 to
    those alone."""
    x = as_signed(x)
    t = (x << 1) >> shift
    w = len(t)
    if w < 11:                     # narrow: nothing to gain
        return saturate8(round_shift(x, shift))
    t = t.as_signed()
    sign = t[w - 1]
    high = ~sign & (t[8:w - 1].any() | t[:8].all())                                  # t >= 255
    low = sign & ~(t[8:w - 1].all() | (t[9:w - 1].all() & ~t[8] & t[:8].all()))     # t <= -258
    return Mux(high, 127, Mux(low, -128, (t[:10].as_signed() + 1) >> 1))


def requantize(acc, mult, shift):
    """The one requantization rule: ``saturate8(round_shift(acc * mult, shift))`` (built as
    :func:`round_saturate8`)."""
    return round_saturate8(acc * mult, shift)


def tree_sum(values):
    """The sum of ``values`` as a balanced tree of two-input adders."""
    values = list(values)
    while len(values) > 1:
        pairs = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            pairs.append(values[-1])
        values = pairs
    return values[0]


def fabric_product(a, b):
    """``a * b`` for a ``b`` of a few bits, as shifted partial products summed by a tree.

    FPGA synthesis (Yosys' ``synth_ecp5``) turns every ``*`` of two or more bits into a hard
    multiplier; an int8 x int8 product in one of the ECP5's 156 18x18 multipliers wastes most of
    it. Written as ``sum(b[i] ? a << i : 0) - (b[-1] ? a << (n-1) : 0)`` (two's complement: the
    sign bit weighs ``-2**(n-1)``), the product is built from adders in the logic fabric instead.
    Same value as ``a * b`` for any ``a``; an unsigned ``b`` is taken as signed one bit wider
    (:func:`as_signed`), so a count times a count needs no hard multiplier either.
    """
    b = as_signed(b)
    n = len(b)
    if n == 0:
        return Const(0, 1)
    terms = [Mux(b[i], a << i, 0) for i in range(n - 1)]
    negative = Mux(b[n - 1], a << (n - 1), 0)
    return (tree_sum(terms) if terms else 0) - negative


def product(a, b, *, fabric: bool):
    """``a * b``: built from adders (:func:`fabric_product`) when ``fabric``, else
    the plain product a synthesis tool maps to a hard multiplier. The same value either way."""
    return fabric_product(a, b) if fabric else a * b
