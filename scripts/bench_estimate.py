#!/usr/bin/env python3
"""Benchmark: `lockstep estimate` for Llama-3-70B (target < 1 s, a fresh process) and a 1,000-point
analytic decode sweep into a fresh SQLite database (target < 60 s on 2 cores).

    .venv/bin/python scripts/bench_estimate.py [--preset groq-lpu] [--points 1000] [--workers N]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sim.perf.sweep import parse_spec, read_rows, run_sweep

ESTIMATE_TARGET = 1.0
SWEEP_TARGET = 60.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="groq-lpu")
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    lockstep = str(Path(sys.executable).parent / "lockstep")
    t0 = time.perf_counter()
    out = subprocess.run([lockstep, "estimate", "--model", "llama-3-70b", "--hw", args.preset],
                         capture_output=True, text=True, check=True)
    est = time.perf_counter() - t0
    rate = next(line for line in out.stdout.splitlines() if line.startswith("tokens/s"))
    spec = parse_spec({"kind": "decode", "mode": "random", "samples": args.points, "seed": 1,
                       "params": {"array_rows": {"low": 4, "high": 256}, "array_cols": {"low": 4, "high": 256},
                                  "vector_lanes": [4, 16, 64], "weight_bytes_per_cycle": {"low": 1, "high": 256},
                                  "model": ["gpt2", "llama-2-7b", "llama-3-8b", "llama-3-70b"],
                                  "context": [128, 512, 1024]}})
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite"
        t0 = time.perf_counter()
        counts = run_sweep(spec, db, workers=args.workers, progress=False)
        sweep = time.perf_counter() - t0
        assert len(read_rows(db)) == counts["rows"] == len(spec.points)
    ok = est < ESTIMATE_TARGET and sweep < SWEEP_TARGET
    print(f"lockstep estimate llama-3-70b on {args.preset}: {est:.2f} s wall, whole process "
          f"(target < {ESTIMATE_TARGET:g} s: {'meets' if est < ESTIMATE_TARGET else 'MISSES'}); {rate}")
    print(f"decode sweep: {len(spec.points)} points in {sweep:.2f} s ({len(spec.points) / sweep:,.0f} points/s; "
          f"target < {SWEEP_TARGET:g} s: {'meets' if sweep < SWEEP_TARGET else 'MISSES'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
