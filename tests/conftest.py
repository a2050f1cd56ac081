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


#: Verilator cases the fast suite leaves to the slow one (``scripts/test.sh --slow``) to stay near its
#: 15-minute budget on 2 cores: each builds a model of its own (40 to 115 s on a clean cache, from
#: ``--durations`` on 4debbff) and a sibling case that stays fast covers the same RTL. Node-id
#: prefixes; the fast suite keeps: the tiny model at 1 row a cycle and with the FPGA keys, every
#: fusion at once, the saturating residual add (and with the FPGA keys), the 8x4 array at 1, 2 and
#: R rows a cycle (4x4 on the other simulators), blocks at R rows, the link's decode on the micro
#: model (the pseudo-terminal board serves the demo model: 114 s to build).
SLOW_FOR_THE_BUDGET = (
    "tests/sim/test_link_decode.py::test_the_pty_board_answers_bad_frames_as_a_board_does",
    "tests/sim/test_link_decode.py::test_decode_steps_over_the_pty_survive_stray_bytes",
    "tests/sim/test_link_decode.py::test_lockstep_run_serial_drives_the_simulated_board",
    "tests/sim/test_top_rtl.py::test_tiny_model_step_by_step_on_verilator[2-",
    "tests/sim/test_top_rtl.py::test_tiny_model_step_by_step_on_verilator[4-keys2]",
    "tests/sim/test_top_fused_rtl.py::test_tiny_model_step_by_step_with_the_fusions_on_verilator[switches0]",
    "tests/sim/test_top_fused_rtl.py::test_tiny_model_step_by_step_with_the_fusions_on_verilator[switches1]",
    "tests/sim/test_fused_residual.py::test_tiny_models_step_by_step_on_verilator[llama-gqa-False-",
    "tests/sim/test_fused_residual.py::test_tiny_models_step_by_step_on_verilator[gpt2-False-",
    "tests/sim/test_array_stream.py::test_array_streams_are_bit_exact[4x4-verilator-",
    "tests/sim/test_gemm_rtl.py::test_gemm_unit_is_bit_exact_and_cycle_exact[4x4-verilator-",
    "tests/sim/test_gemm_rtl.py::test_any_size_runs_in_blocks_bit_exact_and_cycle_exact[verilator-1]",
    "tests/sim/test_gemm_rtl.py::test_any_size_runs_in_blocks_bit_exact_and_cycle_exact[verilator-2]",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark :data:`SLOW_FOR_THE_BUDGET`'s cases slow before ``-m`` selects (a prefix that matches
    nothing is an error: a renamed test must not quietly come back into the fast suite)."""
    unused = set(SLOW_FOR_THE_BUDGET)
    for item in items:
        for prefix in SLOW_FOR_THE_BUDGET:
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.slow)
                unused.discard(prefix)
    # Files collected whole (a test named on the command line, file::test, leaves its file's other
    # cases uncollected: no check there).
    named = {arg.split("::")[0] for arg in config.args if "::" in arg}
    collected = {item.nodeid.split("::")[0] for item in items} - named
    missing = sorted(p for p in unused if p.split("::")[0] in collected)
    if missing:
        raise pytest.UsageError(f"SLOW_FOR_THE_BUDGET names no collected test: {', '.join(missing)}")


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
