"""The GEMM driver's checks: every bad size, shape and operand is refused naming the value."""

from __future__ import annotations

import numpy as np
import pytest

from hdl.config import PRESETS
from sim.gemm import _check_operands, plan_gemm
from sim.runner import build

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
        _check_operands(plan, np.zeros(a_shape, np.int8), np.zeros(w_shape, np.int8))


def test_operands_outside_int8_and_not_integers():
    plan = plan_gemm(C4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"^a must hold int8 values in \[-128, 127\], not 128$"):
        _check_operands(plan, np.array([[0, 128]]), np.zeros((2, 2), np.int8))
    with pytest.raises(TypeError, match=r"^w must hold integers, not float64$"):
        _check_operands(plan, np.zeros((1, 2), np.int8), np.zeros((2, 2)))


def test_build_needs_a_compiling_simulator():
    with pytest.raises(ValueError, match=r"^simulator must be 'verilator' or 'icarus' to build, not 'amaranth'$"):
        build("amaranth", "module m; endmodule", "m")
