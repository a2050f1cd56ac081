#!/usr/bin/env python3
"""Benchmark: simulated cycles per wall second of a GEMM on an 8x8 array, RTL running free.

Python loads the memories, pulses start and then only waits for ``done``: the simulator runs the
whole GEMM on its own. The figure is cycles / wall seconds of that free run (builds are cached and
not counted). Target (issue 2): >= 200k cycles/s on Verilator on a 2-core machine.

    .venv/bin/python scripts/bench_gemm.py [--sims verilator,icarus] [-m 64 -k 512 -n 256]
"""

import argparse
import sys
import time

import numpy as np

from golden.numerics import gemm_int8
from hdl.config import Config
from sim.engine.runner import run
from sim.flows.gemm import plan_gemm

TARGET = 200_000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", default="verilator,icarus")
    ap.add_argument("-m", type=int, default=64)
    ap.add_argument("-k", type=int, default=512)
    ap.add_argument("-n", type=int, default=256)
    args = ap.parse_args(argv)
    config = Config(array_rows=8, array_cols=8, weight_words=16384, act_words=4096, result_words=2048,
                    max_m=64)
    plan = plan_gemm(config, args.m, args.k, args.n)
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (args.m, args.k))
    w = rng.integers(-128, 128, (args.k, args.n))
    golden = gemm_int8(a, w)
    rates = {}
    print(f"GEMM {args.m}x{args.k}x{args.n} on an 8x8 array: {plan.tiles} tiles, "
          f"{plan.predicted_cycles} predicted cycles")
    for sim in args.sims.split(","):
        t0 = time.perf_counter()
        result = run(sim, "gemm_unit", config.as_dict(), "gemm_unit",
                     {"config": config.as_dict(), "cases": [{"m": args.m, "k": args.k, "n": args.n,
                                                             "a": a.tolist(), "w": w.tolist()}]})
        total = time.perf_counter() - t0
        case = result["cases"][0]
        exact = np.array_equal(np.array(case["out"]), golden)
        rate = case["cycles"] / case["run_seconds"]
        rates[sim] = rate
        verdict = "= predicted" if case["cycles"] == plan.predicted_cycles else "PREDICTION MISSED"
        print(f"{sim:10s} {case['cycles']} cycles ({verdict}), "
              f"{'bit-exact' if exact else 'MISMATCH'}, free run {case['run_seconds']:.3f} s -> "
              f"{rate:,.0f} cycles/s; whole job {total:.1f} s")
        if not exact or case["cycles"] != plan.predicted_cycles:
            return 1
    if "verilator" in rates:
        verdict = "meets" if rates["verilator"] >= TARGET else "MISSES"
        print(f"verilator: {rates['verilator']:,.0f} cycles/s {verdict} the {TARGET:,} target")
    if "verilator" in rates and "icarus" in rates:
        print(f"verilator / icarus speed ratio: {rates['verilator'] / rates['icarus']:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
