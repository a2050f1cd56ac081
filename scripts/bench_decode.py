#!/usr/bin/env python3
"""Benchmark: the demo model decoding on the RTL top level, Verilator, with a cached build.

Prints simulated cycles per wall second of the free runs and wall seconds per token. Target
(issue 5): >= 150k cycles/s on a 2-core machine, so a 64-token demo finishes in well under a
minute after the first build.
    .venv/bin/python scripts/bench_decode.py [--tokens 64] [--backend verilator]
"""

import argparse
import sys
import time

from golden.checkpoint import load_demo_model
from hdl.config import PRESETS
from sim.runtime import decode, prepare

TARGET = 150_000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--backend", default="verilator")
    args = ap.parse_args(argv)
    ckpt = load_demo_model()
    compiled = prepare(ckpt, PRESETS["demo"])
    prompt = ckpt.tokenizer.encode("The old miller ")
    t0 = time.perf_counter()
    report = decode(compiled, args.backend, prompt, args.tokens)
    total = time.perf_counter() - t0
    exact = all(s.measured_cycles == s.predicted_cycles for s in report.steps)
    free = sum(s.wall_seconds for s in report.steps)
    rate = report.simulated_cycles_per_second
    print(f"{len(report.steps)} steps ({len(prompt)} prompt, {len(report.generated)} generated) on {args.backend}: "
          f"{report.predicted_cycles_per_token:,.0f} cycles per token, measured = predicted: {exact}")
    print(f"free runs {free:.2f} s -> {rate:,.0f} simulated cycles/s, {free / len(report.steps) * 1000:.0f} ms "
          f"per token; whole run {total:.1f} s (includes loading the memories and starting the simulator)")
    print(f"{args.backend}: {rate:,.0f} cycles/s {'meets' if rate >= TARGET else 'MISSES'} the {TARGET:,} target")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
