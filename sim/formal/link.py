"""Formal harnesses of the host-link bridge's receive side (:mod:`hdl.link`)."""

from __future__ import annotations

from amaranth.hdl import Assert, Cover, Signal

from hdl.link import HostPort, LinkReceiver, Target

from .harness import Harness, Probe, free
from .uart import RX_IDLE_BOUND

__all__ = ["LinkRxIdle"]

#: The smallest host port the bridge serves: a GEMM-like target with one-byte write words.
SMALL_PORT = HostPort(mem_count=3, addr_bits=4, wdata_bits=8, rdata_bits=8, reg_count=3)


class LinkRxIdle(Harness):
    """LinkReceiver, any line, any target ``busy``/``start_ok``/``reply_done`` (proven by induction): after
    ``(9 n + 2) + timeout + 2`` cycles of a high line it is no longer inside a frame (the sync byte hunt,
    or a checked request waiting for its reply): a frame cut short always ends, by its timeout.

    Invariants for induction: the UART receiver's (:class:`~sim.formal.uart.UartRxIdle`): its FSM
    in one of five states, ``bits`` <= 8 and >= 1 in DATA, idle after ``9 n + 2`` high cycles; and, inside
    a frame, the idle timer is at most ``timeout``, and once the UART is idle it has counted every high cycle since.
    """

    def __init__(self, *, clocks_per_bit: int = 4, timeout_cycles: int | None = None, max_payload: int = 8):
        super().__init__()
        self.n = clocks_per_bit
        self.timeout = 20 * clocks_per_bit if timeout_cycles is None else timeout_cycles
        self.max_payload = max_payload

    def bound(self) -> int:
        return RX_IDLE_BOUND(self.n) + self.timeout + 2

    def build(self, m):
        n, timeout = self.n, self.timeout
        rcv = LinkReceiver(port=SMALL_PORT, clocks_per_bit=n, timeout_cycles=timeout, max_payload=self.max_payload,
                           target=Target.GEMM, logits_mem=None)
        probe = Probe(rcv)
        m.submodules.dut = probe.fragment
        for port in (rcv.rx, rcv.busy, rcv.start_ok, rcv.reply_done, rcv.buf_addr):
            free(m, port)
        idle, receiving = probe["idle"], probe["receiving"]
        u_state, u_bits, u_busy = probe["urx/fsm_state"], probe["urx/bits"], probe["urx/busy"]
        rx_bound = RX_IDLE_BOUND(n)
        bound = self.bound()
        high = Signal(range(bound + 1))
        with m.If(~rcv.rx):
            m.d.sync += high.eq(0)
        with m.Elif(high != bound):
            m.d.sync += high.eq(high + 1)

        # The UART's invariants (proven on their own by UartRxIdle).
        m.d.comb += [Assert(u_state < 5), Assert(u_bits <= 8)]
        with m.If(u_state == 2):
            m.d.comb += Assert(u_bits >= 1)
        with m.If(high >= rx_bound):
            m.d.comb += Assert(~u_busy)
        m.d.comb += Assert(idle <= timeout)
        # The frame's idle timer has counted the high cycles since the UART went idle.
        with m.If(receiving & (high >= rx_bound + 1)):
            m.d.comb += Assert((idle >= high - rx_bound - 1) | (idle == timeout))
        with m.If(high == bound):
            m.d.comb += Assert(~receiving)
        m.d.comb += Cover(receiving & ~u_busy & (idle == 3))     # inside a frame, the timer running
