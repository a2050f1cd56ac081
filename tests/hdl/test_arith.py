"""hdl/arith.py, the expression builders the vector and attention units share, against the golden
integer rules, on Amaranth's simulator: every branch of each helper, including those the current
units never reach (a constant shift of 0 or 1), so a wrong helper fails here and not only in the
one configuration that happens to use it. Found missing by the mutation run (docs/verification.md)."""

import numpy as np
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from golden.numerics import INT8_MAX, INT8_MIN
from golden.tables import round_shift as golden_round_shift
from hdl.arith import as_signed, clamp, fabric_product, requantize, round_saturate8, round_shift, saturate8, tree_sum

SHIFTS = range(6)
XS = [-(1 << 19), -1000, -65, -64, -33, -32, -31, -9, -8, -7, -2, -1, 0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 1000,
      (1 << 19) - 1]


def evaluate(inputs, outputs, cases):
    """The value of each output for each case (a tuple of input values), simulated combinationally."""
    got = []

    async def bench(ctx):
        for case in cases:
            for signal, value in zip(inputs, case, strict=True):
                ctx.set(signal, value)
            got.append([ctx.get(o) for o in outputs])

    m = Module()
    m.d.comb += [Signal.like(o).eq(o) for o in outputs]     # keeps the module non-empty
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got, dtype=np.int64)


def test_round_shift_constant_and_run_time_shifts_match_the_golden_rule():
    x = Signal(signed(20))
    k = Signal(unsigned(3))
    outputs = [round_shift(x, s) for s in SHIFTS] + [round_shift(x, k)]
    cases = [(v, s) for v in XS for s in SHIFTS]
    got = evaluate([x, k], outputs, cases)
    for (v, s), row in zip(cases, got, strict=True):
        want = [int(golden_round_shift(v, c)) for c in SHIFTS]
        assert list(row[:-1]) == want, (v, "constant shifts")
        assert row[-1] == want[s], (v, s, "run-time shift")


def test_clamp_saturate8_and_requantize():
    x = Signal(signed(20))
    mult = Signal(signed(16))
    shift = Signal(unsigned(5))
    outputs = [clamp(x, -5, 9), saturate8(x), requantize(x, mult, shift)]
    cases = [(v, mu, sh) for v in XS for mu, sh in ((1, 0), (3, 1), (-7, 2), (1 << 14, 15), (-(1 << 15), 4))]
    got = evaluate([x, mult, shift], outputs, cases)
    for (v, mu, sh), row in zip(cases, got, strict=True):
        assert row[0] == min(max(v, -5), 9)
        assert row[1] == min(max(v, INT8_MIN), INT8_MAX)
        assert row[2] == min(max(int(golden_round_shift(v * mu, sh)), INT8_MIN), INT8_MAX), (v, mu, sh)


def test_fabric_product_of_an_unsigned_count():
    """An unsigned ``b`` (a count: heads, KV planes) is its value, not a two's-complement one: its
    top bit set must not read as negative; ``as_signed`` keeps a signed value as it is."""
    a = Signal(unsigned(16))
    b = Signal(unsigned(3))
    s = Signal(signed(5))
    outputs = [fabric_product(a, b), as_signed(b), as_signed(s)]
    cases = [(av, bv, sv) for av in (0, 1, 77, 65535) for bv in range(8) for sv in (-16, -1, 0, 15)]
    got = evaluate([a, b, s], outputs, cases)
    for (av, bv, sv), row in zip(cases, got, strict=True):
        assert list(row) == [av * bv, bv, sv], (av, bv, sv)


def test_round_saturate8_is_saturate8_of_round_shift_at_every_edge():
    """The shallow form's thresholds (t >= 255, t <= -258 for t = 2x >> s) and its 10-bit rounding
    add, at and around each edge for every shift, both signednesses, constant and run-time shifts;
    a width below 11 bits takes the plain form."""
    rng = np.random.default_rng(5)
    x = Signal(signed(24))
    u = Signal(unsigned(23))
    k = Signal(unsigned(5))
    small = Signal(signed(6))
    outputs = ([round_saturate8(x, k), round_saturate8(u, k), round_saturate8(small, k)]
               + [round_saturate8(x, s) for s in (0, 1, 7)])
    edges = [e * (1 << s) + d for s in range(0, 17) for e in (-258, -257, -256, -129, -128, 127, 128, 254, 255, 256)
             for d in (-1, 0, 1)]
    values = sorted({int(v) for v in edges + list(rng.integers(-(1 << 23), 1 << 23, 400)) if -(1 << 23) <= v < 1 << 23})
    cases = [(v, v & ((1 << 23) - 1), max(-32, min(31, v)), s) for v in values for s in (0, 1, 2, 5, 8, 13, 16, 31)]
    got = evaluate([x, u, small, k], outputs, cases)

    def want(v, s):
        return min(max(int(golden_round_shift(v, s)), INT8_MIN), INT8_MAX)

    for (v, uv, sv, s), row in zip(cases, got, strict=True):
        assert list(row) == [want(v, s), want(uv, s), want(sv, s), want(v, 0), want(v, 1), want(v, 7)], (v, s)


def test_tree_sum_and_fabric_product():
    xs = [Signal(signed(9), name=f"x{i}") for i in range(5)]
    a = Signal(signed(8))
    bs = [Signal(signed(n), name=f"b{n}") for n in range(1, 5)]
    outputs = [tree_sum(xs[:n]) for n in range(1, 6)] + [fabric_product(a, b) for b in bs]
    rng = np.random.default_rng(19)
    cases = []
    for av in (INT8_MIN, -1, 0, 1, INT8_MAX, 77, -99):
        for bv in range(-8, 8):
            xv = [int(v) for v in rng.integers(-256, 256, 5)]
            cases.append((*xv, av, *(max(min(bv, (1 << (n - 1)) - 1), -(1 << (n - 1))) for n in range(1, 5))))
    got = evaluate([*xs, a, *bs], outputs, cases)
    for case, row in zip(cases, got, strict=True):
        xv, av, bv = case[:5], case[5], case[6:]
        assert list(row[:5]) == [sum(xv[:n]) for n in range(1, 6)], case
        assert list(row[5:]) == [av * b for b in bv], case
