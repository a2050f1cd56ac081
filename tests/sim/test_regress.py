"""Constrained-random regressions (sim/regress, docs/verification.md): a fixed seeded subset per block
in the fast suite, >= 10,000 transactions per block with coverage closure in the slow suite, and
checks that the scoreboard and the coverage can fail."""

import random
import subprocess
import sys

import pytest

from golden.errors import LockstepError
from sim.regress.coverage import Coverage
from sim.regress.run import BLOCKS, FULL, Report, block, regress

#: The fast suite's subset: (first seed, transactions) per block, on the RTL tests' Verilator builds.
FAST = {"array": (1000, 40), "gemm": (1000, 40), "vector": (1000, 60), "attention": (1000, 40), "link": (1000, 20),
        "top": (38233, 4),   # four sequences (1, 2, 3 and 6 steps) on one model: one simulator start
        "passes": (13436, 4),   # four schedules (17 passes, 80 rows; one to the context's end) on two models
        "paged": (1764, 4)}     # four paged schedules (21 passes, 113 rows) on two models: every paged bin
#: The slow suite's first seed (the figures in docs/verification.md).
SLOW_SEED = 19_000_000


@pytest.mark.parametrize("name", list(BLOCKS))
def test_fixed_subset_is_exact(name):
    seed, count = FAST[name]
    report = regress(name, seed=seed, count=count)
    print("\n".join(report.lines()))
    assert report.transactions == count
    assert report.mismatches == [], report.lines()
    assert report.coverage.covered > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BLOCKS))
def test_full_regression_meets_closure(name):
    report = regress(name, seed=SLOW_SEED, count=FULL, progress=print)
    print("\n".join(report.lines()))
    assert report.transactions == FULL
    assert report.mismatches == [], report.lines()
    assert report.coverage.share >= block(name).closure, report.coverage.missed()


def test_scoreboard_reports_a_wrong_expectation_with_its_replay():
    """A golden answer off by one in one transaction is a mismatch naming that seed."""
    b = block("array")

    def wrong(params, txn):
        want = b.expect(params, txn)
        if txn["a"] == bad["a"]:
            want["out"][0][0] += 1
        return want

    bad = b.generate(random.Random(7), b.params("verilator"))
    report = regress("array", seed=5, count=4, expect=wrong)
    assert [m.seed for m in report.mismatches] == [7]
    assert not report.passed
    lines = "\n".join(report.lines())
    assert "MISMATCH seed 7:" in lines
    assert "replay: python -m sim.regress --block array --simulator verilator --seed 7 --count 1" in lines


def test_a_transaction_depends_only_on_its_seed():
    for name in BLOCKS:
        b = block(name)
        params = b.params("verilator")
        assert b.generate(random.Random(3), params) == b.generate(random.Random(3), params)
        assert b.generate(random.Random(3), params) != b.generate(random.Random(4), params)


def test_another_design_point_with_set_and_its_one_line_refusals():
    """``--set`` runs a block on another design point of its design (its own build), and the replay
    commands carry it; a block with one design, a key that is not one and a table other than [chip]
    are refused in one line."""
    from hdl.config import Config

    b = block("top")
    params = b.vary(b.params("verilator"), ("attention_heads_per_step=2", "fabric_products=true"))
    config = Config.from_dict(params["config"])
    assert (config.attention_heads_per_step, config.fabric_products) == (2, True)
    assert Config.from_dict(b.params("verilator")["config"]).attention_heads_per_step == 1
    report = Report("top", "verilator", 5, 1, 1, Coverage({"x": ["a"]}), 1.0, ("attention_heads_per_step=2",))
    assert report.replay(5) == ("python -m sim.regress --block top --simulator verilator "
                                "--set attention_heads_per_step=2 --seed 5 --count 1")
    for name, settings, message in [
            ("vector", ("fused_rope=true",),
             "--set: block vector runs one design (--set is for gemm, top, passes, paged)"),
            ("paged", ("kv_block=0",), "the paged regression needs kv_block > 0 (fixed slots: --block passes)"),
            ("top", ("bogus=1",), "--set: unknown parameter 'bogus'"),
            ("gemm", ("system.x=1",), "--set system.x=1: a regression varies the design's [chip] keys only"),
            ("gemm", ("weight_words=100000000",), "--set weight_words=100000000: a regression fills its memories"),
            ("gemm", ("array_rows=1000",), "array rows must be at most 64 to build, not 1000")]:
        with pytest.raises(LockstepError) as info:
            regress(name, count=1, settings=settings)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_coverage_counts_bins_and_refuses_unknown_ones():
    cov = Coverage({"op": ["a", "b"], "len": ["1", "2", "3", "4"]})
    cov.hit("op", "a")
    cov.hit("op", "a")
    cov.hit("len", "4")
    assert (cov.covered, cov.bins, cov.share) == (2, 6, 2 / 6)
    assert cov.missed() == ["op:b", "len:1", "len:2", "len:3"]
    assert cov.report()[-1].split()[:2] == ["all", "2/6"]
    with pytest.raises(KeyError, match="cover point 'op' has no bin 'c'"):
        cov.hit("op", "c")
    with pytest.raises(ValueError, match="distinct bins"):
        Coverage({"op": ["a", "a"]})


def test_closure_fails_below_the_threshold():
    report = regress("gemm", seed=0, count=1)
    assert report.coverage.share < block("gemm").closure and not report.passed


@pytest.mark.parametrize(("args", "message"), [
    (["--block", "nope"], f"lockstep: error: block must be one of {', '.join(BLOCKS)}, not 'nope'"),
    (["--block", "gemm", "--count", "0"], "lockstep: error: count must be an integer >= 1, not 0"),
    (["--block", "gemm", "--seed", "-1"], "lockstep: error: seed must be an integer >= 0, not -1"),
])
def test_bad_arguments_are_one_line(args, message):
    r = subprocess.run([sys.executable, "-m", "sim.regress", *args], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip() == message


def test_a_hung_job_names_its_chunk_and_replay(monkeypatch):
    """A design that stops making progress (here: V is never sent, on the real simulator) fails the
    run with the seeds of its chunk and the command that replays it."""
    import dataclasses

    import sim.regress.attention as attention

    def withheld(params, txns):
        jobs = attention.jobs(params, txns)
        for job, _ in jobs:
            for case in job["cases"]:
                case.update(withhold_v=True, max_idle=50)
        return jobs

    monkeypatch.setattr(attention, "BLOCK", dataclasses.replace(attention.BLOCK, jobs=withheld))
    with pytest.raises(LockstepError, match=r"^attention: a job of the chunk of seeds 3\.\.4 failed \(.*made no "
                                            r"progress for 50 cycles.*\); replay: python -m sim\.regress --block "
                                            r"attention --simulator verilator --seed 3 --count 2 --chunk 2$"):
        regress("attention", seed=3, count=2)
