"""How every printer shows a number: one rule, three helpers.

* :func:`count`: an exact count (cycles, tokens, instructions, chips, bytes counted one by one) is a whole
  number with thousands separators: ``2,889,369``.
* :func:`number`: a quantity without a unit prefix (tokens/s, cycles/s, a mean of counts) has 4
  significant digits, never fewer than its whole part, with thousands separators and never an exponent:
  ``280.1``, ``3,615``, ``10,034``, ``0.0128``.
* :func:`quantity`: a quantity with a unit (seconds, bytes, hertz, operations per second) has 4
  significant digits scaled by an SI prefix: ``7.546 ms``, ``70.62 GB``, ``737.3 TOPS``, ``1.41 GHz``.
  Seconds take no prefix above 1 (``3,600 s``, not ``3.6 ks``); bytes none below 1 and are decimal
  (``kB`` = 1000 B).

JSON output keeps numbers as numbers: model quantities are exact floats, measured ones are rounded to
what was measured (:func:`measured_seconds`: wall times to the millisecond).
"""

from __future__ import annotations

import math

__all__ = ["DIGITS", "count", "measured_seconds", "number", "quantity"]

#: Significant digits of a printed quantity.
DIGITS = 4
_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""),
             (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p"))


def count(n: float) -> str:
    """An exact count, whole, with thousands separators (a float is rounded to the nearest whole)."""
    return f"{round(n):,}"


def number(v: float, digits: int = DIGITS) -> str:
    """``digits`` significant digits (all of the whole part when it has more), thousands separators,
    no exponent; non-finite values as ``inf``/``nan``."""
    if not math.isfinite(v):
        return str(float(v))
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{v:,.{decimals}f}"
    if float(text.replace(",", "")) != 0 and abs(float(text.replace(",", ""))) >= 10 ** (magnitude + 1):
        decimals = max(0, decimals - 1)      # rounding carried into a new digit (9.9996 -> 10.00)
        text = f"{v:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def quantity(v: float, unit: str, digits: int = DIGITS) -> str:
    """``v`` ``unit``s with an SI prefix and ``digits`` significant digits: ``quantity(7.546e-3, "s")``
    is ``7.546 ms``. Seconds take no prefix above 1, bytes none below 1."""
    if not math.isfinite(v) or v == 0:
        return f"{number(v)} {unit}"
    for scale, prefix in _PREFIXES:
        if unit == "s" and scale > 1 or unit == "B" and scale < 1:
            continue
        if abs(v) >= scale * (1 - 0.5 * 10 ** -digits):     # 999.96 us shows as 1 ms, not 1000 us
            return f"{number(v / scale, digits)} {prefix}{unit}"
    scale, prefix = (1.0, "") if unit == "B" else _PREFIXES[-1]
    return f"{number(v / scale, digits)} {prefix}{unit}"


def measured_seconds(s: float | None) -> float | None:
    """A wall time for JSON: to the millisecond (what a host timer over a run resolves)."""
    return None if s is None else round(s, 3)
