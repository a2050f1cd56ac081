"""Shared fixtures: design points and simulators come from the configuration, not literals."""

import os

import pytest

from golden.numerics import ceil_div
from hdl.config import PRESETS
from sim.engine.toolchain import SIMULATORS  # noqa: F401 (the one simulator list, imported by the RTL tests from here)

#: The array shapes every RTL regression runs on.
SHAPES = ("4x4", "8x4")


@pytest.fixture(params=SHAPES)
def config(request):
    return PRESETS[request.param]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep simulator builds in the user's cache unless a test run asks for its own."""
    os.environ.setdefault("LOCKSTEP_CACHE", os.path.expanduser("~/.cache/lockstep"))
    # No single simulator run of the suite takes near 20 minutes: past that it is stuck, and the
    # runner's wall-clock backstop stops it (the flows' cycle watchdogs catch the rest far sooner).
    os.environ.setdefault("LOCKSTEP_SIM_TIMEOUT", "1200")
    yield


def padded_gemm_macs(program, config) -> int:
    """The tests' own count of a decode step's padded GEMM MACs at M = 1, from the program's shapes
    (independent of the cycle model's): each K x N GEMM (K the width of its input) fills
    ceil(K/R)*R x ceil(N/C)*C of the array."""
    R, C = config.array_rows, config.array_cols
    widths = {"token": 1, "position": 1}
    padded = 0
    for op in program:
        if op.op == "gemm":
            padded += ceil_div(widths[op.inputs[0]], R) * R * ceil_div(op.width, C) * C
        widths[op.output] = op.width
    return padded
