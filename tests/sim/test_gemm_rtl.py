"""GEMMs on the RTL, bit-exact against golden and cycle-exact against the cycle model.

Every (simulator, array shape, weight rows a cycle G) runs a batch of GEMMs in one simulator start:
random shapes, shapes that are not multiples of the array, the largest M, and the int8 extremes.
"""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from golden.numerics import gemm_int8
from sim.engine.bus import WatchdogError
from sim.engine.runner import SimulationError, run
from sim.flows.gemm import plan_gemm

from ..conftest import SIMULATORS


def gemm_cases(config, count, seed):
    """Shapes from the configuration: edges, multiples, non-multiples, extremes, random."""
    R, C, M = config.array_rows, config.array_cols, config.max_m
    rng = np.random.default_rng(seed)
    shapes = [(1, 1, 1), (1, R, C), (2, R + 1, C - 1), (M, 2 * R, 2 * C), (3, 3 * R - 1, 2 * C + 1)]
    while len(shapes) < count:
        shapes.append((int(rng.integers(1, M + 1)), int(rng.integers(1, 4 * R)), int(rng.integers(1, 4 * C))))
    cases = []
    for i, (m, k, n) in enumerate(shapes[:count]):
        a = rng.integers(-128, 128, (m, k))
        w = rng.integers(-128, 128, (k, n))
        if i == 1:    # the largest positive sums: -128 * -128 everywhere
            a[:], w[:] = -128, -128
        elif i == 2:  # the largest negative sums
            a[:], w[:] = -128, 127
        elif i == 3:  # extremes sprinkled through random data
            a[rng.random(a.shape) < 0.3] = 127
            w[rng.random(w.shape) < 0.3] = -128
        cases.append({"m": m, "k": k, "n": n, "a": a.tolist(), "w": w.tolist()})
    return cases


# Icarus runs ~100x slower than Verilator: fewer GEMMs there, the same kinds (at G > 1 on Icarus, the
# five fixed shapes only: edges, extremes, the largest M).
CASES_PER_SIM = {"verilator": 24, "icarus": 8, "amaranth": 12}
WIDE_ICARUS_CASES = 5
#: The weight path's widths every simulator runs: today's one row a cycle, two, a whole tile.
ROWS_PER_CYCLE = ("1", "2", "R")


def with_rows_per_cycle(config, rows_per_cycle: str):
    """``config`` with ``weight_rows_per_cycle`` = 1, 2 or R (``"R"``: ``array_rows``)."""
    return replace(config, weight_rows_per_cycle=config.array_rows if rows_per_cycle == "R" else int(rows_per_cycle))


@pytest.mark.parametrize("rows_per_cycle", ROWS_PER_CYCLE)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_gemm_unit_is_bit_exact_and_cycle_exact(simulator, config, rows_per_cycle):
    config = with_rows_per_cycle(config, rows_per_cycle)
    count = WIDE_ICARUS_CASES if simulator == "icarus" and rows_per_cycle != "1" else CASES_PER_SIM[simulator]
    cases = gemm_cases(config, count, seed=config.array_rows * 100 + config.array_cols)
    result = run(simulator, "gemm_unit", config.as_dict(), "gemm_unit",
                 {"config": config.as_dict(), "cases": cases})
    assert len(result["cases"]) == len(cases)
    for case, got in zip(cases, result["cases"], strict=True):
        shape = (case["m"], case["k"], case["n"])
        expected = gemm_int8(case["a"], case["w"])
        assert np.array_equal(np.array(got["out"], dtype=np.int64), expected), shape
        predicted = plan_gemm(config, *shape).predicted_cycles
        assert got["cycles"] == predicted, shape   # the RTL's own counter
        assert got["edges"] == predicted, shape    # the simulator's clock, counted by the testbench


# A GEMM past every memory of a small configuration (max_m 4, 16 activation, 32 weight and 8
# result words: one run holds at most 4 rows, a reduction of 16 and 2 output tiles).
BLOCKED = {"verilator": (9, 70, 13), "icarus": (6, 37, 10), "amaranth": (9, 40, 13)}


# Blocks at every G on Verilator and Amaranth; Icarus (slowest) runs them at G = 1, its G > 1 cases above.
@pytest.mark.parametrize(("simulator", "rows_per_cycle"),
                         [(s, g) for s in SIMULATORS for g in ROWS_PER_CYCLE if s != "icarus" or g == "1"])
def test_any_size_runs_in_blocks_bit_exact_and_cycle_exact(simulator, rows_per_cycle):
    from hdl.config import PRESETS
    from sim.flows.gemm import plan_tiled_gemm

    config = with_rows_per_cycle(replace(PRESETS["4x4"], max_m=4, act_words=16, weight_words=32, result_words=8),
                                 rows_per_cycle)
    m, k, n = BLOCKED[simulator]
    with pytest.raises(ValueError, match="exceeds max_m=4"):
        plan_gemm(config, m, k, n)   # one run cannot hold it
    plan = plan_tiled_gemm(config, m, k, n)
    assert len(plan.blocks) > 1 and {b.m1 - b.m0 for b in plan.blocks} >= {4}
    assert len({(b.k0, b.k1) for b in plan.blocks}) > 1 and len({(b.n0, b.n1) for b in plan.blocks}) > 1
    rng = np.random.default_rng(m * k * n)
    a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    a[0, :], w[:, 0] = -128, -128
    result = run(simulator, "gemm_unit", config.as_dict(), "gemm_unit",
                 {"config": config.as_dict(), "cases": plan.cases(a, w)})
    assert np.array_equal(plan.assemble([c["out"] for c in result["cases"]]), gemm_int8(a, w))
    for block, got in zip(plan.blocks, result["cases"], strict=True):
        assert got["cycles"] == got["edges"] == block.plan.predicted_cycles, block
    assert sum(c["cycles"] for c in result["cases"]) == plan.predicted_cycles


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_gemm_unit_watchdog_stops_a_run_that_cannot_finish(simulator):
    from hdl.config import PRESETS

    config = PRESETS["4x4"]
    case = gemm_cases(config, 1, seed=1)[0]
    predicted = plan_gemm(config, case["m"], case["k"], case["n"]).predicted_cycles
    case["budget"] = predicted - 2  # one cycle short of what the run needs
    job = {"config": config.as_dict(), "cases": [case]}
    # Verilator and Icarus report the flow's WatchdogError through the runner; Amaranth raises it.
    with pytest.raises((SimulationError, WatchdogError), match=rf"done did not rise within {predicted - 2} cycles"):
        run(simulator, "gemm_unit", config.as_dict(), "gemm_unit", job)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_a_simulator_process_past_the_wall_clock_limit_is_stopped(simulator, monkeypatch):
    """The backstop behind the cycle watchdogs: a simulator process that runs past
    LOCKSTEP_SIM_TIMEOUT is killed and reported; the next run of the same build is unaffected."""
    import time

    from hdl.config import PRESETS

    config = PRESETS["4x4"]
    job = {"config": config.as_dict(), "cases": gemm_cases(config, 4, seed=2)}
    run(simulator, "gemm_unit", config.as_dict(), "gemm_unit", job)  # built and cached first
    monkeypatch.setenv("LOCKSTEP_SIM_TIMEOUT", "0.2")
    t0 = time.monotonic()
    with pytest.raises(SimulationError, match=rf"^{simulator} run of gemm_unit was stopped after 0.2 s of wall "
                                              r"time, the limit \(LOCKSTEP_SIM_TIMEOUT\)"):
        run(simulator, "gemm_unit", config.as_dict(), "gemm_unit", job)
    assert time.monotonic() - t0 < 30
    monkeypatch.setenv("LOCKSTEP_SIM_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"^LOCKSTEP_SIM_TIMEOUT must be a positive number of seconds, not 'soon'$"):
        run(simulator, "gemm_unit", config.as_dict(), "gemm_unit", job)
    monkeypatch.setenv("LOCKSTEP_SIM_TIMEOUT", "600")
    result = run(simulator, "gemm_unit", config.as_dict(), "gemm_unit", job)
    assert len(result["cases"]) == 4


def test_a_weight_path_of_three_rows_banks_by_division():
    """G need not be a power of two: on a 6x6 array at G = 3 the weight memory banks word w by
    w % 3 and w // 3 (a divider, not the address's low bits), still bit-exact and cycle-exact."""
    from hdl.config import PRESETS

    config = replace(PRESETS["4x4"], array_rows=6, array_cols=6, vector_lanes=6, weight_words=96,
                     weight_rows_per_cycle=3)
    cases = gemm_cases(config, 6, seed=63)
    result = run("amaranth", "gemm_unit", config.as_dict(), "gemm_unit", {"config": config.as_dict(), "cases": cases})
    for case, got in zip(cases, result["cases"], strict=True):
        shape = (case["m"], case["k"], case["n"])
        assert np.array_equal(np.array(got["out"], dtype=np.int64), gemm_int8(case["a"], case["w"])), shape
        assert got["cycles"] == got["edges"] == plan_gemm(config, *shape).predicted_cycles, shape


def test_weight_banks_hold_the_words_the_cycle_model_counts():
    """The weight memory is G banks of weight_words / G: a GEMM fits exactly when its tiles' R rows
    each fit (weight_words in all), at every G; the tile load the cycle model counts is R / G."""
    from hdl.config import PRESETS
    from sim.machine.cycles import gemm_cycles

    for g in (1, 2, 4):
        config = replace(PRESETS["4x4"], weight_words=32, weight_rows_per_cycle=g)
        assert config.weight_bank_words * g == 32 and config.weight_port_bytes == 4 * g
        assert plan_gemm(config, 1, 8, 16).tiles * config.array_rows == 32   # the whole memory, all banks
        with pytest.raises(ValueError, match=r"^GEMM 1x8x17 needs 40 weight_words, the configuration has 32 "):
            plan_gemm(config, 1, 8, 17)
        assert gemm_cycles(config, 1, 4, 4).first_load == 4 // g


LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


@pytest.mark.parametrize(("settings", "message"), [
    (["weight_rows_per_cycle=3"], "weight_rows_per_cycle must divide array_rows (4), not 3"),
    (["weight_rows_per_cycle=8"], "weight_rows_per_cycle must divide array_rows (4), not 8"),
    (["weight_rows_per_cycle=0"], "design 4x4 with --set [chip]: weight_rows_per_cycle must be positive, not 0"),
    (["weight_rows_per_cycle=2", "weight_words=1023"],
     "weight_words must be a multiple of weight_rows_per_cycle (2): the weight memory is 2 banks of equal "
     "depth, not 1023"),
])
def test_a_bad_weight_rows_per_cycle_is_one_line(settings, message):
    args = [a for kv in settings for a in ("--set", kv)]
    out = subprocess.run([LOCKSTEP, "gemm", "-m", "1", "-k", "4", "-n", "4", *args],
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", f"lockstep: error: {message}\n")


def test_a_zero_size_start_is_refused_and_the_unit_stays_idle():
    """m, kt or nt = 0: ``shape_ok`` is low and a start is no start (the unit used to stay busy
    forever); before and after a real GEMM, which still runs to the cycle model's count."""
    from amaranth.sim import Simulator

    from hdl.config import PRESETS
    from hdl.gemm import GemmUnit
    from sim.machine.cycles import gemm_cycles

    config = PRESETS["4x4"]
    unit = GemmUnit(config)
    predicted = gemm_cycles(config, 1, config.array_rows, config.array_cols).total
    seen = []

    async def start(ctx, m, kt, nt):
        ctx.set(unit.m, m)
        ctx.set(unit.kt, kt)
        ctx.set(unit.nt, nt)
        ctx.set(unit.start, 1)
        shape_ok = ctx.get(unit.shape_ok)
        await ctx.tick()
        ctx.set(unit.start, 0)
        return shape_ok

    async def idle_for(ctx, cycles):
        """(busy ever, done, cycles) over ``cycles`` clock cycles."""
        busy = 0
        for _ in range(cycles):
            busy |= ctx.get(unit.busy)
            await ctx.tick()
        return busy, ctx.get(unit.done), ctx.get(unit.cycles)

    async def bench(ctx):
        for shape in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (0, 0, 0)):
            assert await start(ctx, *shape) == 0, shape
            seen.append((shape, await idle_for(ctx, 3 * predicted)))
        assert await start(ctx, 1, 1, 1) == 1
        assert ctx.get(unit.busy)
        ticks = 1
        while not ctx.get(unit.done):
            assert ticks <= predicted
            await ctx.tick()
            ticks += 1
        seen.append(("gemm", ticks, ctx.get(unit.cycles)))
        assert await start(ctx, 2, 0, 3) == 0
        seen.append(("after", await idle_for(ctx, 3 * predicted)))
        assert await start(ctx, 1, 1, 1) == 1
        seen.append(("again", ctx.get(unit.busy), ctx.get(unit.done)))

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    zero = [(shape, (0, 0, 0)) for shape in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (0, 0, 0))]
    assert seen == [*zero, ("gemm", predicted, predicted), ("after", (0, 1, predicted)), ("again", 1, 0)]
