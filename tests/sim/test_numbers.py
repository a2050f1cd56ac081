"""The one rule for printed numbers (sim/numbers.py): counts with separators, 4 significant digits,
SI prefixes for quantities with a unit, never an exponent."""

import re

import pytest

from sim.numbers import count, measured_seconds, number, quantity


@pytest.mark.parametrize(("value", "shown"), [
    (27137, "27,137"), (27136.6, "27,137"), (0, "0"), (2_889_369, "2,889,369")])
def test_counts_are_whole_with_separators(value, shown):
    assert count(value) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (280.14, "280.1"), (3615.2, "3,615"), (10034.4, "10,034"), (0.0128, "0.0128"), (9.9996, "10"),
    (999.96, "1,000"), (1.0, "1"), (0.00001234, "0.00001234"), (-5.5, "-5.5"), (0.0, "0"),
    (float("inf"), "inf")])
def test_numbers_have_four_significant_digits_and_no_exponent(value, shown):
    assert number(value) == shown


@pytest.mark.parametrize(("value", "unit", "shown"), [
    (7.54606e-3, "s", "7.546 ms"), (3e-6, "s", "3 us"), (51.04, "s", "51.04 s"), (3600, "s", "3,600 s"),
    (0.15, "s", "150 ms"), (999.96e-6, "s", "1 ms"), (70.55e9, "B", "70.55 GB"), (4096, "B", "4.096 kB"),
    (186, "B", "186 B"), (0.5, "B", "0.5 B"), (7.3728e14, "OPS", "737.3 TOPS"), (4.247e17, "OPS", "424.7 POPS"),
    (1.28e10, "OPS", "12.8 GOPS"), (1.41e9, "Hz", "1.41 GHz"), (1e8, "Hz", "100 MHz"), (36.17e6, "Hz", "36.17 MHz"),
    (0, "s", "0 s")])
def test_quantities_take_an_si_prefix(value, unit, shown):
    assert quantity(value, unit) == shown


def test_no_value_over_a_wide_range_prints_an_exponent():
    for e in range(-12, 19):
        for mantissa in (1, 1.0034, 4.247, 9.99951):
            v = mantissa * 10.0 ** e
            for text in (number(v), quantity(v, "OPS"), quantity(v, "B"), quantity(v, "s")):
                assert not re.search(r"\de[+-]?\d", text), text
            digits = re.sub(r"\D", "", quantity(v, "OPS").split()[0]).lstrip("0")
            assert 1 <= len(digits) <= 4, (v, quantity(v, "OPS"))


def test_json_wall_times_are_rounded_to_the_millisecond():
    assert measured_seconds(1.23456) == 1.235 and measured_seconds(None) is None
