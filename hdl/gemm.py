"""A free-running tiled GEMM engine: memories, feeders, the systolic array and an accumulator.

The host loads the weight and activation memories through the host port, sets the tile counts
and pulses ``start``; the engine runs the whole GEMM on its own and raises ``done``, with the
results in the result memory and the cycle count in ``cycles``. Memory layouts (which word
holds which values) are defined once in :mod:`sim.flows.gemm`, which also predicts the cycle count.

Order of work: for each output tile ``nt``, for each reduction tile ``kt``: R weight rows (R / G
beats of G rows, G = ``weight_rows_per_cycle``), then M activation rows. The weight feeder and
activation feeder run independently; the array's own flow control interleaves them, so the next
tile's weights load while the current tile computes.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import In, Out

from golden.errors import InputTypeError

from .array import SystolicArray
from .config import Config, checked_constructor
from .host import HostBus
from .weights import WeightMemory

__all__ = ["GemmUnit", "HostMem"]


class HostMem(enum.Enum, shape=unsigned(2)):
    """Which memory the host port addresses."""
    WEIGHTS = 0
    ACTS = 1
    RESULTS = 2


class GemmUnit(wiring.Component):
    """Tiled int8 GEMM on an R x C array, run free from on-chip memories.

    Control
    -------
    ``m``, ``kt``, ``nt`` (sampled when ``start`` is high and the unit is idle): activation rows,
    reduction tiles and output tiles. ``busy`` is high from the cycle after ``start`` until
    ``done`` rises; ``done`` stays high until the next ``start``. ``cycles`` is the number of clock
    periods from the cycle in which ``start`` is sampled to the first cycle in which ``done`` is high.
    ``shape_ok`` (from ``m``, ``kt``, ``nt`` in the same cycle) is high when none of them is zero: a
    GEMM with nothing to compute has no cycle count and would never finish, so a ``start`` while
    ``shape_ok`` is low is ignored (the unit stays idle; ``done`` and ``cycles`` keep their values).
    This is the one zero-size rule: :class:`hdl.link.LinkedGemm`'s bridge refuses such a START with
    ERR_ARGUMENT, and the host (:func:`sim.flows.gemm.plan_gemm`) never asks for one.

    Host port
    ---------
    ``host`` (a flipped :class:`hdl.host.HostBus`, ``host_bus``): ``host.we`` writes ``host.wdata``
    (low bits) to word ``host.addr`` of memory ``host.mem`` (:class:`HostMem`: WEIGHTS or ACTS).
    ``host.rdata`` shows result word ``host.addr`` one cycle after the address is presented.
    Writes are meant for idle time; results are valid after ``done``.

    Weight memory
    -------------
    A :class:`hdl.weights.WeightMemory` (the decode top level's too): G = ``weight_rows_per_cycle``
    banks of ``weight_bank_words`` words of C int8, weight word ``w`` (the host port's address) in
    bank ``w % G`` at bank address ``w // G``. The weight feeder
    reads all G banks at one address a cycle and offers the G words as one beat of the array's
    weight stream (bank ``r`` as the beat's row ``r``): a GEMM's ``nt * kt * R`` weight words
    leave in ``nt * kt * R / G`` beats, G * C bytes a cycle.
    """

    @checked_constructor
    def __init__(self, config: Config):
        if not isinstance(config, Config):
            raise InputTypeError(f"config must be a Config, not {type(config).__name__}")
        config.check_buildable()
        self.config = config
        c = config
        self.host_bus = self.bus_for(c)
        super().__init__({
            "start": In(1),
            "m": In(range(c.max_m + 1)),
            "kt": In(range(c.act_words + 1)),
            "nt": In(range(c.result_words + 1)),
            "shape_ok": Out(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(c.cycle_counter_bits),
            "host": In(self.host_bus),
        })

    @staticmethod
    def bus_for(config: Config) -> HostBus:
        """The memory window (the ``host`` member, flipped) of a GEMM unit built from ``config``."""
        return HostBus(mem_count=len(HostMem), addr_bits=config.host_addr_bits, wdata_bits=config.host_data_bits,
                       rdata_bits=config.array_cols * config.acc_bits)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R, C = c.array_rows, c.array_cols

        G = c.weight_rows_per_cycle
        m.submodules.array = array = SystolicArray(rows=R, cols=C, rows_per_beat=G)
        m.submodules.wmem = wmem = WeightMemory(width=8 * C, depth=c.weight_bank_words, banks=G)
        m.submodules.amem = amem = memory.Memory(shape=unsigned(8 * R), depth=c.act_words, init=[])
        m.submodules.rmem = rmem = memory.Memory(shape=unsigned(c.acc_bits * C), depth=c.result_words,
                                                 init=[])
        m.submodules.accmem = accmem = memory.Memory(shape=unsigned(c.acc_bits * C), depth=c.max_m,
                                                     init=[])

        # Latched shape of the running GEMM.
        n_m = Signal.like(self.m)
        n_kt = Signal.like(self.kt)
        n_nt = Signal.like(self.nt)
        running = Signal()
        launch = Signal()
        m.d.comb += [
            self.shape_ok.eq((self.m != 0) & (self.kt != 0) & (self.nt != 0)),
            launch.eq(self.start & ~running & self.shape_ok),
            self.busy.eq(running),
        ]

        self._host_port(m, wmem, amem, rmem)
        self._weight_feeder(m, wmem, array, launch)
        self._act_feeder(m, amem, array, launch, n_m, n_kt, n_nt)
        finished = self._accumulator(m, accmem, rmem, array, launch, n_m, n_kt, n_nt)

        # --- control and the cycle counter ---------------------------------------------------
        with m.If(launch):
            m.d.sync += [running.eq(1), self.done.eq(0), self.cycles.eq(1),
                         n_m.eq(self.m), n_kt.eq(self.kt), n_nt.eq(self.nt)]
        with m.Elif(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(finished):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        return m

    def _host_port(self, m, wmem, amem, rmem):
        """Host writes to the weight banks and the activation memory; host reads of the result memory."""
        h = self.host
        m.d.comb += [wmem.we.eq(h.we & (h.mem == HostMem.WEIGHTS)), wmem.waddr.eq(h.addr), wmem.wdata.eq(h.wdata)]
        amem_w = amem.write_port()
        rmem_r = rmem.read_port()
        m.d.comb += [
            amem_w.addr.eq(h.addr), amem_w.data.eq(h.wdata), amem_w.en.eq(h.we & (h.mem == HostMem.ACTS)),
            rmem_r.addr.eq(h.addr), h.rdata.eq(rmem_r.data),
        ]

    def _weight_feeder(self, m, wmem, array, launch):
        """The weight stream: bank addresses 0 .. nt*kt*R/G - 1 of all G banks, in order, a beat each."""
        c = self.config
        beats_per_tile = c.array_rows // c.weight_rows_per_cycle
        # The read ports' output registers are the stream's payload register: they advance exactly
        # when the beat is taken (or when none is held), so a beat leaves every cycle.
        w_addr = Signal(range(c.weight_bank_words + 1))
        w_left = Signal(range(c.weight_bank_words + 1))
        w_valid = Signal()
        w_adv = Signal()
        m.d.comb += [
            w_adv.eq(~w_valid | array.weights.ready),
            array.weights.valid.eq(w_valid),
            array.weights.payload.eq(wmem.row),
            wmem.ren.eq(w_adv), wmem.raddr.eq(w_addr),
        ]
        with m.If(launch):
            m.d.sync += [w_addr.eq(0), w_left.eq(self.nt * self.kt * beats_per_tile), w_valid.eq(0)]
        with m.Elif(w_adv):
            m.d.sync += w_valid.eq(w_left != 0)
            with m.If(w_left != 0):
                m.d.sync += [w_addr.eq(w_addr + 1), w_left.eq(w_left - 1)]

    def _act_feeder(self, m, amem, array, launch, n_m, n_kt, n_nt):
        """The activation stream: for nt, for kt, for row: word row*kt_count + kt."""
        c = self.config
        amem_r = amem.read_port()
        a_addr = Signal(range(c.act_words + 1))
        a_row = Signal.like(self.m)
        a_kt = Signal.like(self.kt)
        a_nt = Signal.like(self.nt)
        a_more = Signal()
        a_valid = Signal()
        a_last = Signal()
        a_adv = Signal()
        m.d.comb += [
            a_adv.eq(~a_valid | array.acts.ready),
            amem_r.en.eq(a_adv),
            amem_r.addr.eq(a_addr),
            array.acts.valid.eq(a_valid),
            array.acts.payload.data.eq(amem_r.data),
            array.acts.payload.last.eq(a_last),
        ]
        with m.If(launch):
            m.d.sync += [a_addr.eq(0), a_row.eq(0), a_kt.eq(0), a_nt.eq(0), a_valid.eq(0),
                         a_more.eq(1)]
        with m.Elif(a_adv):
            m.d.sync += [a_valid.eq(a_more), a_last.eq(a_row == n_m - 1)]
            with m.If(a_more):
                with m.If(a_row != n_m - 1):
                    m.d.sync += [a_row.eq(a_row + 1), a_addr.eq(a_addr + n_kt)]
                with m.Else():
                    m.d.sync += a_row.eq(0)
                    with m.If(a_kt != n_kt - 1):
                        m.d.sync += [a_kt.eq(a_kt + 1), a_addr.eq(a_kt + 1)]
                    with m.Else():
                        m.d.sync += [a_kt.eq(0), a_addr.eq(0), a_nt.eq(a_nt + 1)]
                        with m.If(a_nt == n_nt - 1):
                            m.d.sync += a_more.eq(0)

    def _accumulator(self, m, accmem, rmem, array, launch, n_m, n_kt, n_nt):
        """Sums over kt, then one result word per (nt, row); returns the GEMM's last-sum strobe."""
        c = self.config
        C = c.array_cols
        # Sums arrive in the feeder's order. Partial sums of a row live in accmem between its kt
        # passes; the asynchronous read port lets the add and the write back share one cycle.
        acc_r = accmem.read_port(domain="comb")
        acc_w = accmem.write_port()
        rmem_w = rmem.write_port()
        s_row = Signal.like(self.m)
        s_kt = Signal.like(self.kt)
        s_nt = Signal.like(self.nt)
        r_addr = Signal(range(c.result_words + 1))
        lanes_layout = data.ArrayLayout(signed(c.acc_bits), C)
        prev = data.View(lanes_layout, acc_r.data)
        total = Signal(lanes_layout)
        first = Signal()
        s_fire = Signal()
        m.d.comb += [
            array.sums.ready.eq(1),
            s_fire.eq(array.sums.valid),
            first.eq(s_kt == 0),
            acc_r.addr.eq(s_row),
        ]
        for j in range(C):
            # 32-bit wrap, the same adder as the processing elements'.
            m.d.comb += total[j].eq(array.sums.payload.data[j] + Mux(first, 0, prev[j]))
        is_final = Signal()
        m.d.comb += [
            is_final.eq(s_kt == n_kt - 1),
            acc_w.addr.eq(s_row), acc_w.data.eq(total), acc_w.en.eq(s_fire & ~is_final),
            rmem_w.addr.eq(r_addr), rmem_w.data.eq(total), rmem_w.en.eq(s_fire & is_final),
        ]
        finished = Signal()
        m.d.comb += finished.eq(s_fire & is_final & (s_row == n_m - 1) & (s_nt == n_nt - 1))
        with m.If(launch):
            m.d.sync += [s_row.eq(0), s_kt.eq(0), s_nt.eq(0), r_addr.eq(0)]
        with m.Elif(s_fire):
            with m.If(is_final):
                m.d.sync += r_addr.eq(r_addr + 1)
            with m.If(s_row != n_m - 1):
                m.d.sync += s_row.eq(s_row + 1)
            with m.Else():
                m.d.sync += s_row.eq(0)
                with m.If(~is_final):
                    m.d.sync += s_kt.eq(s_kt + 1)
                with m.Else():
                    m.d.sync += [s_kt.eq(0), s_nt.eq(s_nt + 1)]
        return finished
