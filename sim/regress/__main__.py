"""``python -m sim.regress --block NAME [--simulator SIM] [--seed S] [--count N] [--chunk C]
[--set KEY=VALUE]...``: run a block's constrained-random regression (``--set``: on another design point
of the block's design) and print its figures and coverage per cover point. Exit status 1 on any
mismatch or coverage below the block's closure (coverage is judged only for a run of at least
:data:`sim.regress.run.FULL` transactions, or always with ``--closure``)."""

from __future__ import annotations

import argparse
import sys

from golden.errors import LockstepError

from .run import BLOCKS, CHUNK, FULL, regress


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.regress", description=__doc__)
    parser.add_argument("--block", required=True, help=f"one of {', '.join(BLOCKS)}, or all")
    parser.add_argument("--simulator", default="verilator", help="verilator (default), icarus or amaranth")
    parser.add_argument("--seed", type=int, default=0, help="first transaction's seed (default 0)")
    parser.add_argument("--count", type=int, default=FULL, help=f"transactions (default {FULL})")
    parser.add_argument("--chunk", type=int, default=None,
                        help=f"transactions per chunk (default: the block's, else {CHUNK})")
    parser.add_argument("--closure", action="store_true", help="judge coverage closure whatever the count")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a [chip] key of the block's design, as lockstep --set takes it (repeatable; the GEMM "
                             "engine, top and passes blocks)")
    args = parser.parse_args(argv)
    names = list(BLOCKS) if args.block == "all" else [args.block]
    bad = 0
    for name in names:
        try:
            report = regress(name, simulator=args.simulator, seed=args.seed, count=args.count, chunk=args.chunk,
                             settings=args.settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
        except LockstepError as exc:
            print(f"lockstep: error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(report.lines()), flush=True)
        judged = args.closure or args.count >= FULL
        bad += bool(report.mismatches) or (judged and not report.passed)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
