"""Run a block's constrained-random regression: generate, batch into simulator jobs, score, cover.

Transaction ``i`` of a regression started at ``seed`` is generated from ``random.Random(seed + i)``
alone, so ``--seed S --count 1`` replays transaction ``S`` (its data, shape and traffic pattern).
Transactions are cut into chunks of ``chunk`` (seeds ``seed .. seed + chunk - 1``, and so on), each
chunk batched into as few simulator jobs as the block's flow allows: ``--seed C --count N --chunk N``
replays chunk ``C`` exactly, cycle for cycle. A mismatch names both commands.
"""

from __future__ import annotations

import importlib
import json
import random
import time
from dataclasses import dataclass, field

from golden.errors import InputError, LockstepError

from ..engine.runner import run
from .coverage import Coverage

__all__ = ["BLOCKS", "FULL", "Mismatch", "Report", "block", "regress"]

#: Block name -> the module whose ``BLOCK`` defines it.
BLOCKS = {"array": "sim.regress.array", "gemm": "sim.regress.gemm", "vector": "sim.regress.vector",
          "attention": "sim.regress.attention", "link": "sim.regress.link",
          "top": "sim.regress.top", "passes": "sim.regress.passes", "paged": "sim.regress.paged"}

#: Transactions of a full regression (the slow suite's figure, issue 19).
FULL = 10_000

#: Transactions per chunk (one chunk: one or a few simulator starts).
CHUNK = 500


def block(name: str):
    """The :class:`sim.regress.block.Block` named ``name``."""
    if name not in BLOCKS:
        raise InputError(f"block must be one of {', '.join(BLOCKS)}, not {name!r}")
    return importlib.import_module(BLOCKS[name]).BLOCK


@dataclass(frozen=True)
class Mismatch:
    """A transaction whose observation differs from golden's."""

    seed: int
    expected: object
    observed: object

    def describe(self, limit: int = 200) -> str:
        e, o = json.dumps(self.expected), json.dumps(self.observed)
        return f"seed {self.seed}: expected {e[:limit]}, got {o[:limit]}"


@dataclass
class Report:
    """A regression's figures."""

    block: str
    simulator: str
    seed: int
    count: int
    chunk: int
    coverage: Coverage
    closure: float
    #: ``--set KEY=VALUE`` settings the block's design ran with (empty: its own design).
    settings: tuple = ()
    transactions: int = 0
    jobs: int = 0
    seconds: float = 0.0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.transactions == self.count and self.coverage.share >= self.closure

    def command(self) -> str:
        """The command's start for this block, simulator and design (its ``--set`` settings)."""
        sets = "".join(f" --set {item}" for item in self.settings)
        return f"python -m sim.regress --block {self.block} --simulator {self.simulator}{sets}"

    def replay(self, seed: int) -> str:
        """The command that replays transaction ``seed`` alone."""
        return f"{self.command()} --seed {seed} --count 1"

    def lines(self) -> list[str]:
        first = self.seed + (self.mismatches[0].seed - self.seed) // self.chunk * self.chunk if self.mismatches else 0
        design = f" (--set {', '.join(self.settings)})" if self.settings else ""
        out = [f"block {self.block}{design} on {self.simulator}: {self.transactions} transactions, seeds {self.seed}.."
               f"{self.seed + self.count - 1}, {self.jobs} simulator jobs, {self.seconds:.1f} s, "
               f"{len(self.mismatches)} mismatches",
               f"coverage {100 * self.coverage.share:.1f} % of {self.coverage.bins} bins "
               f"(closure {100 * self.closure:.0f} %): {'met' if self.coverage.share >= self.closure else 'NOT met'}"]
        out += self.coverage.report()
        for m in self.mismatches[:5]:
            out.append(f"MISMATCH {m.describe()}")
        if self.mismatches:
            s = self.mismatches[0].seed
            out.append(f"replay: {self.replay(s)}")
            out.append(f"replay its chunk: {self.command()} --seed {first} "
                       f"--count {min(self.chunk, self.seed + self.count - first)} --chunk {self.chunk}")
        return out


def _int(what: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{what} must be an integer >= {low}, not {value!r}")
    return value


def regress(name: str, *, simulator: str = "verilator", seed: int = 0, count: int = 100, chunk: int | None = None,
            settings=(), expect=None, progress=None) -> Report:
    """Run ``count`` transactions of block ``name`` from ``seed`` on ``simulator``; the :class:`Report`.

    ``settings`` (``KEY=VALUE`` [chip] keys, as ``lockstep --set`` takes them) run the block on
    another design point of its design (blocks with ``vary``: the GEMM engine, the top level, passes,
    paged).

    ``expect`` replaces the block's golden scoreboard (``(params, transaction) -> observation``):
    a test gives a wrong one to check that the scoreboard reports mismatches. ``progress`` is
    called with a line after each chunk. ``chunk`` defaults to the block's own (or :data:`CHUNK`).
    """
    b = block(name)
    chunk = chunk if chunk is not None else b.chunk or CHUNK
    seed, count, chunk = _int("seed", seed, 0), _int("count", count, 1), _int("chunk", chunk, 1)
    expect = expect or b.expect
    params = b.params(simulator)
    settings = tuple(settings)
    if settings:
        if b.vary is None:
            varying = [n for n in BLOCKS if block(n).vary is not None]
            raise InputError(f"--set: block {name} runs one design (--set is for {', '.join(varying)})")
        params = b.vary(params, settings)
    report = Report(b.name, simulator, seed, count, chunk, Coverage(b.points(params)), b.closure, settings)
    t0 = time.perf_counter()
    for start in range(seed, seed + count, chunk):
        seeds = range(start, min(seed + count, start + chunk))
        txns = [(s, b.generate(random.Random(s), params)) for s in seeds]
        for job, indices in b.jobs(params, txns):
            try:
                result = run(simulator, b.design, params, b.flow, job)
            except LockstepError as exc:   # a watchdog, a flow's own check: name the chunk that hit it
                raise LockstepError(f"{name}: a job of the chunk of seeds {seeds[0]}..{seeds[-1]} failed ({exc}); "
                                    f"replay: {report.command()} --seed {seeds[0]} --count {len(seeds)} "
                                    f"--chunk {len(seeds)}") from None
            report.jobs += 1
            raws = b.results(result, [txns[i][1] for i in indices])
            if len(raws) != len(indices):
                raise AssertionError(f"{name}: {len(raws)} results for {len(indices)} transactions")
            for i, raw in zip(indices, raws, strict=True):
                s, txn = txns[i]
                obs = b.observe(params, txn, raw)
                want = expect(params, txn)
                report.transactions += 1
                if want != obs:
                    report.mismatches.append(Mismatch(s, want, obs))
                b.sample(report.coverage, params, txn, obs)
        if progress:
            progress(f"{name}: {report.transactions}/{count} transactions, {len(report.mismatches)} mismatches, "
                     f"coverage {100 * report.coverage.share:.1f} %, {time.perf_counter() - t0:.0f} s")
    report.seconds = time.perf_counter() - t0
    return report
