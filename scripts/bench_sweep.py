#!/usr/bin/env python3
"""Benchmark: a 1,000-point analytic sweep (cycle model only) into a fresh SQLite database.

Target (issue 6): under 60 s on a 2-core machine. Prints points per second.
    .venv/bin/python scripts/bench_sweep.py [--points 1000] [--workers N]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sim.perf.sweep import parse_spec, read_rows, run_sweep

TARGET_SECONDS = 60.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    spec = parse_spec({"kind": "gemm", "mode": "random", "samples": args.points, "seed": 1,
                       "params": {"array_rows": {"low": 1, "high": 64}, "array_cols": {"low": 1, "high": 64},
                                  "m": {"low": 1, "high": 64}, "k": {"low": 64, "high": 8192},
                                  "n": {"low": 64, "high": 8192}}})
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite"
        t0 = time.perf_counter()
        counts = run_sweep(spec, db, workers=args.workers, progress=False)
        seconds = time.perf_counter() - t0
        assert len(read_rows(db)) == counts["rows"] == len(spec.points)
    verdict = "meets" if seconds < TARGET_SECONDS else "MISSES"
    print(f"{len(spec.points)} points in {seconds:.2f} s ({len(spec.points) / seconds:,.0f} points/s): "
          f"{verdict} the {TARGET_SECONDS:g} s target")
    return 0 if seconds < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
