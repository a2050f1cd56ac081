"""What the benchmark scripts (``scripts/bench_*.py``) share: their one-line errors and their entry point.

A benchmark is an ``argparse`` script, not a ``lockstep`` command, but it reports errors the way the
command line does (sim/cli/errors.py): a bad option, a failed check (tokens that differ from a solo
run, measured cycles that differ from the prediction) and any of the project's own errors are one line
``PROG: error: ...`` with exit status 1; Ctrl-C is ``PROG: error: interrupted``, exit status 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from golden.errors import LockstepError

from .errors import one_line

__all__ = ["BenchError", "BenchParser", "bench_main"]


class BenchError(LockstepError):
    """A benchmark's bad option or failed check: one line ``PROG: error: ...``, exit status 1."""


class BenchParser(argparse.ArgumentParser):
    """``argparse`` whose own errors (an unknown option, a bad type) are :class:`BenchError` lines too."""

    def error(self, message):
        raise BenchError(message)


def bench_main(prog: str, run: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``run(argv)`` (``sys.argv[1:]`` when ``argv`` is None) and return its exit status, or print one
    error line and return 1 (a project error) or 130 (interrupted)."""
    try:
        return run(sys.argv[1:] if argv is None else list(argv))
    except LockstepError as exc:
        print(f"{prog}: error: {one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 130
