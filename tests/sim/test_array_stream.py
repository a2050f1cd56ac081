"""The bare systolic array through its valid/ready streams, with random gaps and backpressure."""

import dataclasses

import numpy as np
import pytest

from golden.numerics import ceil_div, gemm_int8
from sim.engine.bus import WatchdogError
from sim.engine.runner import SimulationError, run
from sim.machine.cycles import array_stream_cycles

from ..conftest import SIMULATORS

SIZES = {"verilator": (6, 13, 11), "icarus": (3, 9, 6), "amaranth": (4, 9, 7)}


@pytest.mark.parametrize("rows_per_beat", ["1", "2", "R"])
@pytest.mark.parametrize("traffic", ["steady", "backpressure"])
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_array_streams_are_bit_exact(simulator, config, traffic, rows_per_beat):
    R, C = config.array_rows, config.array_cols
    G = R if rows_per_beat == "R" else int(rows_per_beat)
    config = dataclasses.replace(config, weight_rows_per_cycle=G)
    m, k, n = SIZES[simulator]
    rng = np.random.default_rng(R * 10 + C + (traffic == "backpressure"))
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    a[0, :], w[:, 0] = -128, -128  # the extremes
    a[-1, :], w[:, -1] = 127, 127
    gaps, stall = (0.3, 0.4) if traffic == "backpressure" else (0.0, 0.0)
    result = run(simulator, "array", {"rows": R, "cols": C, "rows_per_beat": G}, "array_stream",
                 {"rows": R, "cols": C, "rows_per_beat": G, "a": a.tolist(), "w": w.tolist(), "seed": 5, "gaps": gaps,
                  "stall": stall})
    assert np.array_equal(np.array(result["out"]), gemm_int8(a, w))
    # Each tile's raw sums (before the host adds tiles up) equal the golden tile product.
    kt_n = ceil_div(k, R)
    ap = np.zeros((m, kt_n * R), dtype=np.int64)
    ap[:, :k] = a
    wp = np.zeros((kt_n * R, ceil_div(n, C) * C), dtype=np.int64)
    wp[:k, :n] = w
    tiles = [(nt, kt) for nt in range(ceil_div(n, C)) for kt in range(kt_n)]
    for (nt, kt), sums in zip(tiles, result["tile_sums"], strict=True):
        expected = gemm_int8(ap[:, kt * R:(kt + 1) * R], wp[kt * R:(kt + 1) * R, nt * C:(nt + 1) * C])
        assert np.array_equal(np.array(sums), expected)
    assert result["in_flight"] == {"weights": 0, "acts": 0}
    if traffic == "steady":
        # Without gaps or stalls the stream runs at the cycle model's pace: weight tiles load
        # behind the running tile (double buffering), so no tile waits for its weights.
        assert result["cycles"] == array_stream_cycles(config, m, k, n)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_array_without_weights_is_caught_by_the_watchdog(simulator):
    job = {"rows": 4, "cols": 4, "a": [[1, 2, 3, 4]], "w": [[1]] * 4, "withhold_weights": True,
           "max_idle": 40}
    with pytest.raises((SimulationError, WatchdogError), match=r"made no progress for 40 cycles"):
        run(simulator, "array", {"rows": 4, "cols": 4}, "array_stream", job)
