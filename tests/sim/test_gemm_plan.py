"""The GEMM driver's checks: every bad size, shape and operand is refused naming the value."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.numerics import gemm_int8
from hdl.config import PRESETS
from sim.engine.runner import build
from sim.flows.gemm import check_operands, plan_gemm, plan_tiled_gemm

C4 = PRESETS["4x4"]  # max_m 16, act_words 256, weight_words 1024, result_words 256


@pytest.mark.parametrize(("mkn", "exc", "match"), [
    ((0, 4, 4), ValueError, r"^GEMM size M must be a positive integer, not 0$"),
    ((2, -3, 4), ValueError, r"^GEMM size K must be a positive integer, not -3$"),
    ((2, 4, "8"), TypeError, r"^GEMM size N must be an integer, not '8'$"),
    ((2.0, 4, 4), TypeError, r"^GEMM size M must be an integer, not 2.0$"),
    ((True, 4, 4), TypeError, r"^GEMM size M must be an integer, not True$"),
    ((17, 4, 4), ValueError, r"^GEMM size M=17 exceeds max_m=16 of the configuration$"),
    ((1, 1025, 4), ValueError, r"^GEMM size K=1025 exceeds the largest reduction 1024 of the configuration$"),
    ((16, 68, 4), ValueError, r"^GEMM 16x68x4 needs 272 act_words, the configuration has 256 \(16 too few\)$"),
    ((1, 64, 68), ValueError, r"^GEMM 1x64x68 needs 1088 weight_words, the configuration has 1024 \(64 too few\)$"),
    ((16, 4, 68), ValueError, r"^GEMM 16x4x68 needs 272 result_words, the configuration has 256 \(16 too few\)$"),
])
def test_bad_gemm_sizes(mkn, exc, match):
    with pytest.raises(exc, match=match):
        plan_gemm(C4, *mkn)


@pytest.mark.parametrize(("a_shape", "w_shape", "match"), [
    ((3, 5), (7, 5), r"^a must have shape 3x7, not 3x5$"),
    ((3, 7), (5, 7), r"^w must have shape 7x5, not 5x7$"),
    ((3, 7, 1), (7, 5), r"^a must have shape 3x7, not 3x7x1$"),
])
def test_operands_that_do_not_match_the_plan(a_shape, w_shape, match):
    plan = plan_gemm(C4, 3, 7, 5)
    with pytest.raises(ValueError, match=match):
        check_operands(plan, np.zeros(a_shape, np.int8), np.zeros(w_shape, np.int8))


def test_operands_outside_int8_and_not_integers():
    plan = plan_gemm(C4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"^a must hold int8 values in \[-128, 127\], not 128$"):
        check_operands(plan, np.array([[0, 128]]), np.zeros((2, 2), np.int8))
    with pytest.raises(TypeError, match=r"^w must hold integers, not float64$"):
        check_operands(plan, np.zeros((1, 2), np.int8), np.zeros((2, 2)))


def test_build_needs_a_compiling_simulator():
    with pytest.raises(ValueError, match=r"^simulator must be 'verilator' or 'icarus' to build, not 'amaranth'$"):
        build("amaranth", "module m; endmodule", "m")


# -- GEMMs of any size: blocks --------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 40), small=st.booleans(),
       big_values=st.booleans())
def test_blocks_cover_the_gemm_and_reassemble_it_exactly(m, k, n, small, big_values):
    """Each block fits one run; together they cover every (row, reduction, column) once; the
    golden GEMM of each block, reassembled, is the golden GEMM of the whole (32-bit wrap included)."""
    config = replace(C4, max_m=4, act_words=16, weight_words=32, result_words=8) if small else C4
    plan = plan_tiled_gemm(config, m, k, n)
    cover = np.zeros((m, k, n), dtype=np.int64)
    for b in plan.blocks:
        assert plan_gemm(config, b.m1 - b.m0, b.k1 - b.k0, b.n1 - b.n0) == b.plan
        cover[b.m0:b.m1, b.k0:b.k1, b.n0:b.n1] += 1
    assert (cover == 1).all()
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    lo, hi = (-128, -127) if big_values else (-128, 128)   # all -128: the largest sums
    a, w = rng.integers(lo, hi, (m, k)), rng.integers(lo, hi, (k, n))
    outs = [gemm_int8(c["a"], c["w"]) for c in plan.cases(a, w)]
    assert np.array_equal(plan.assemble(outs), gemm_int8(a, w))
    assert plan.predicted_cycles == sum(b.plan.predicted_cycles for b in plan.blocks)


def test_partial_sums_over_k_wrap_like_the_accumulator():
    small = replace(C4, max_m=4, act_words=16, weight_words=32, result_words=8)
    plan = plan_tiled_gemm(small, 1, 40, 1)          # 8 reduction tiles of 4 per run at most
    assert [(b.k0, b.k1) for b in plan.blocks] == [(0, 32), (32, 40)]
    assert plan.assemble([[[2**31 - 1]], [[1]]]).tolist() == [[-2**31]]
    assert plan.assemble([[[-2**31]], [[-1]]]).tolist() == [[2**31 - 1]]


def test_a_gemm_that_fits_is_one_block():
    plan = plan_tiled_gemm(C4, 16, 64, 64)
    assert len(plan.blocks) == 1 and plan.blocks[0].plan == plan_gemm(C4, 16, 64, 64)
    assert plan.predicted_cycles == plan_gemm(C4, 16, 64, 64).predicted_cycles
    assert len(plan_tiled_gemm(C4, 17, 64, 64).blocks) == 2


def test_block_operands_must_match():
    plan = plan_tiled_gemm(C4, 20, 8, 8)
    with pytest.raises(ValueError, match=r"^a must have shape 20x8, not 8x20$"):
        plan.cases(np.zeros((8, 20), np.int8), np.zeros((8, 8), np.int8))
    with pytest.raises(ValueError, match=r"^w must have shape 8x8, not 8x9$"):
        plan.cases(np.zeros((20, 8), np.int8), np.zeros((8, 9), np.int8))
