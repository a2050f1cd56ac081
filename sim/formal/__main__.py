"""``python -m sim.formal [--slow | --all] [NAME ...]``: run formal jobs one at a time and print a table
(job, block, mode, depth, status, seconds). Exit status 1 if any job did not pass."""

from __future__ import annotations

import argparse
import sys

from golden.errors import LockstepError

from .catalog import JOBS
from .flow import check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.formal", description=__doc__)
    parser.add_argument("names", nargs="*", help="jobs to run (default: the fast ones)")
    parser.add_argument("--slow", action="store_true", help="run the slow jobs only")
    parser.add_argument("--all", action="store_true", help="run every job")
    args = parser.parse_args(argv)
    known = {j.name for j in JOBS}
    for name in args.names:
        if name not in known:
            print(f"lockstep: error: formal job must be one of {', '.join(sorted(known))}, not {name!r}",
                  file=sys.stderr)
            return 1
    if args.names:
        jobs = [j for j in JOBS if j.name in args.names]
    else:
        jobs = [j for j in JOBS if args.all or j.slow == args.slow]
    bad = 0
    print(f"{'job':26} {'mode':6} {'depth':>5} {'status':9} {'seconds':>8}  block")
    for j in jobs:
        try:
            r = check(j.harness(), name=j.name, mode=j.mode, depth=j.depth, timeout=j.timeout)
        except LockstepError as exc:
            print(f"lockstep: error: {exc}", file=sys.stderr)
            return 1
        bad += not r.passed
        print(f"{j.name:26} {j.mode:6} {j.depth:>5} {r.status:9} {r.seconds:>8.1f}  {j.block}", flush=True)
        if not r.passed:
            print(f"  {r.summary()}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
