"""Formal harnesses of the GEMM engine (:mod:`hdl.gemm`) on a small configuration."""

from __future__ import annotations

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Cover, Mux, Signal

from hdl.config import Config
from hdl.gemm import GemmUnit
from sim.machine.cycles import gemm_cycles

from .harness import Harness, Probe, busy_done_rules, free

__all__ = ["SMALL", "GemmBusyBound", "GemmControl", "GemmCycles", "shapes"]

#: The configuration the engine is proven on: a 2 x 2 array, memories of a few words (every counter
#: and address is a few bits wide, so the solver sees every shape that fits).
SMALL = Config(array_rows=2, array_cols=2, weight_words=8, act_words=4, result_words=4, max_m=2)


def shapes(config: Config) -> list[tuple[int, int, int]]:
    """Every (m, kt, nt) the configuration runs: the limits :mod:`sim.flows.gemm` checks on the host."""
    c = config
    beats = c.array_rows // c.weight_rows_per_cycle
    return [(m, kt, nt) for m in range(1, c.max_m + 1) for kt in range(1, c.act_words + 1)
            for nt in range(1, c.result_words + 1)
            if m * kt <= c.act_words and m * nt <= c.result_words and nt * kt * beats <= c.weight_bank_words]


def _assume_shape(m, config, mm, kt, nt, *, or_zero=False):
    """Assume (m, kt, nt) is one of :func:`shapes` (the host's checks; the engine assumes them), or with
    ``or_zero`` has a zero anywhere (the other two any value: what a START over the link can hold)."""
    fits = _zero(mm, kt, nt) if or_zero else 0
    for a, b, c in shapes(config):
        fits = fits | ((mm == a) & (kt == b) & (nt == c))
    m.d.comb += Assume(fits)


def _zero(mm, kt, nt):
    """Any of the three sizes zero."""
    return (mm == 0) | (kt == 0) | (nt == 0)


class GemmControl(Harness):
    """GemmUnit, any host port activity and any start pulses (proven by induction), shapes as the host
    checks them or with a zero size (which the unit must refuse):

    * ``shape_ok`` is low exactly when a size is zero; a start then is no start: ``busy`` rises only the
      cycle after a start with ``shape_ok``, ``cycles`` stays unchanged while idle without one;
    * ``done`` only after a start; ``busy`` the cycle after a start; ``busy`` and ``done`` never both;
      ``done`` stays until the next start; ``busy`` ends only with ``done``;
    * while running, every counter stays in its range: the accumulator's row, reduction tile, output
      tile and result address (``r_addr`` = output tile x rows + rows finished), the activation feeder's
      row, tile and address (``a_addr`` = row x kt + kt index), the weight feeder's address + beats left
      = the GEMM's weight beats;
    * the array inside keeps its beat count: activation beats accepted - sums delivered = beats inside;
    * the feeders' streams into the array: a beat offered and not taken stays offered and unchanged,
      except in the cycle after a start (a start restarts the feeders; that it never meets a held beat
      is the cycle-exact bounded check :class:`GemmCycles` and the RTL suite's business).
    """

    def __init__(self, config: Config = SMALL):
        super().__init__()
        self.config = config

    def build(self, m):
        c = self.config
        unit = GemmUnit(c)
        probe = Probe(unit)
        m.submodules.dut = probe.fragment
        for port in (unit.start, unit.m, unit.kt, unit.nt, unit.host.mem, unit.host.addr, unit.host.we,
                     unit.host.wdata):
            free(m, port)
        p = {name: probe[name] for name in ("running", "n_m", "n_kt", "n_nt", "s_row", "s_kt", "s_nt", "r_addr",
                                             "a_row", "a_kt", "a_nt", "a_addr", "a_more", "a_valid", "a_last",
                                             "w_addr", "w_left")}
        zero = _zero(unit.m, unit.kt, unit.nt)
        with m.If(unit.start & ~unit.busy):
            _assume_shape(m, c, unit.m, unit.kt, unit.nt, or_zero=True)
        launch = unit.start & ~unit.busy & ~zero
        m.d.comb += Assert(unit.shape_ok == ~zero)

        # busy / done
        rules = busy_done_rules(m, unit, launch=launch, running=p["running"])
        was_launch, was_done = rules.was_launch, rules.was_done

        # counters in range while running
        beats = c.array_rows // c.weight_rows_per_cycle
        n_m, n_kt, n_nt = p["n_m"], p["n_kt"], p["n_nt"]
        with m.If(unit.busy):
            _assume_shape(m, c, n_m, n_kt, n_nt)       # latched at the start: the shape assumed then
            m.d.comb += [
                Assert(p["s_row"] < n_m), Assert(p["s_kt"] < n_kt), Assert(p["s_nt"] < n_nt),
                Assert(p["r_addr"] == p["s_nt"] * n_m + Mux(p["s_kt"] == n_kt - 1, p["s_row"], 0)),
                Assert(p["r_addr"] < c.result_words),
                Assert(p["a_row"] < n_m), Assert(p["a_kt"] < n_kt), Assert(p["a_nt"] <= n_nt),
                Assert(p["a_more"] == (p["a_nt"] != n_nt)),
                Assert(p["w_addr"] + p["w_left"] == n_nt * n_kt * beats),
                Assert(p["w_addr"] <= c.weight_bank_words),
            ]
            with m.If(p["a_more"]):
                m.d.comb += [Assert(p["a_addr"] == p["a_row"] * n_kt + p["a_kt"]), Assert(p["a_addr"] < c.act_words)]
            with m.Else():
                m.d.comb += [Assert(p["a_row"] == 0), Assert(p["a_kt"] == 0)]
            with m.If(p["a_valid"]):
                m.d.comb += Assert(p["a_last"] == (p["a_row"] == 0))

        # the array's beat count, and the feeder streams
        R, C = c.array_rows, c.array_cols
        L = R + C
        valid = [probe[f"array/valid{k}"] for k in range(L)]
        acts_valid, acts_ready = probe["acts__valid"], probe["array/acts__ready"]
        sums_valid = probe["array/sums__valid"]
        inflight = Signal(range(2 * L + 2))
        m.d.sync += inflight.eq(inflight + (acts_valid & acts_ready) - sums_valid)
        total = 0
        for v in valid:
            total = total + v
        m.d.comb += [Assert(inflight == total), Assert(inflight <= L)]
        for name in ("weights", "acts"):
            held, prev = Signal(name=f"{name}_held"), Signal(len(probe[f"{name}__payload"]), name=f"{name}_prev")
            valid_s, ready_s = probe[f"{name}__valid"], probe[f"array/{name}__ready"]
            payload = probe[f"{name}__payload"]
            m.d.sync += [held.eq(valid_s & ~ready_s), prev.eq(payload)]
            with m.If(held & ~was_launch):
                m.d.comb += [Assert(valid_s), Assert(payload == prev)]

        m.d.comb += Cover(unit.done & (n_nt == 2) & (n_kt == 2))
        m.d.comb += Cover(inflight == L)
        m.d.comb += Cover(was_done & unit.done & unit.start & zero)     # a refused start after a GEMM


class GemmBusyBound(Harness):
    """GemmUnit, any start pulses with any shape the host checks or any with a zero size, any host port
    activity (bounded): ``busy`` never lasts more than :meth:`bound` cycles in a row, the longest run
    of the slowest shape (its predicted cycles less the start cycle), and a start with a zero size
    leaves the unit idle. The liveness the finding of a zero-size GEMM that stayed busy forever broke,
    as a bounded check: the catalogue's depth runs past the bound, so a unit that hangs fails it. The
    harness names only the unit's ports that existed before the fix, so it runs on the old RTL too."""

    def __init__(self, config: Config = SMALL):
        super().__init__()
        self.config = config

    def bound(self) -> int:
        c = self.config
        return max(gemm_cycles(c, mm, kt * c.array_rows, nt * c.array_cols).total for mm, kt, nt in shapes(c)) - 1

    def depth(self) -> int:
        """The least BMC depth at which a unit busy from the first start would break the bound."""
        return self.bound() + 3

    def build(self, m):
        c = self.config
        m.submodules.dut = unit = GemmUnit(c)
        for port in (unit.start, unit.m, unit.kt, unit.nt, unit.host.mem, unit.host.addr, unit.host.we,
                     unit.host.wdata):
            free(m, port)
        zero = _zero(unit.m, unit.kt, unit.nt)
        with m.If(unit.start & ~unit.busy):
            _assume_shape(m, c, unit.m, unit.kt, unit.nt, or_zero=True)
        bound = self.bound()
        run = Signal(range(bound + 2))             # busy cycles in a row, this one included
        was_run = Signal.like(run)
        refused = Signal()
        m.d.comb += run.eq(Mux(unit.busy, Mux(was_run == bound + 1, was_run, was_run + 1), 0))
        m.d.sync += [was_run.eq(run), refused.eq(unit.start & ~unit.busy & zero)]
        m.d.comb += Assert(run <= bound)
        with m.If(refused):
            m.d.comb += Assert(~unit.busy)
        m.d.comb += Cover(run == bound)            # the bound is tight: the slowest shape reaches it
        m.d.comb += Cover(refused & unit.done)     # a zero-size start after a finished GEMM


class GemmCycles(Harness):
    """GemmUnit started once on any shape of the configuration (``AnyConst``), host port quiet while
    busy (bounded): it finishes, raising ``done`` exactly when ``cycles`` equals the cycle model's
    prediction (:func:`sim.machine.cycles.gemm_cycles`), never before."""

    def __init__(self, config: Config = SMALL):
        super().__init__()
        self.config = config

    def depth(self) -> int:
        """The BMC depth that reaches the slowest shape's ``done``."""
        return max(self.predicted(s) for s in shapes(self.config)) + 3

    def predicted(self, shape) -> int:
        mm, kt, nt = shape
        c = self.config
        return gemm_cycles(c, mm, kt * c.array_rows, nt * c.array_cols).total

    def build(self, m):
        c = self.config
        m.submodules.dut = unit = GemmUnit(c)
        mm, kt, nt = AnyConst(len(unit.m)), AnyConst(len(unit.kt)), AnyConst(len(unit.nt))
        _assume_shape(m, c, mm, kt, nt)
        first = Signal(init=1)
        m.d.sync += first.eq(0)
        free(m, unit.host.mem)
        free(m, unit.host.addr)
        free(m, unit.host.wdata)
        free(m, unit.host.we)
        m.d.comb += [unit.start.eq(first), unit.m.eq(mm), unit.kt.eq(kt), unit.nt.eq(nt)]
        with m.If(unit.busy):
            m.d.comb += Assume(~unit.host.we)
        want = Signal.like(unit.cycles)
        for shape in shapes(c):
            with m.If((mm == shape[0]) & (kt == shape[1]) & (nt == shape[2])):
                m.d.comb += want.eq(self.predicted(shape))
        with m.If(unit.done):
            m.d.comb += Assert(unit.cycles == want)
        with m.If(unit.busy):
            m.d.comb += Assert(unit.cycles < want)
        m.d.comb += Cover(unit.done & (mm == c.max_m) & (nt == 2))
