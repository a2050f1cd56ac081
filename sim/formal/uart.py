"""Formal harnesses of the UART (:mod:`hdl.uart`): bounded response, the frame on the line, loopback."""

from __future__ import annotations

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Cover, Signal

from hdl.uart import UartRx, UartTx

from .harness import Harness, Probe, free

__all__ = ["RX_IDLE_BOUND", "TX_BYTE_CYCLES", "UartLoopback", "UartRxIdle", "UartTxFrame"]


def TX_BYTE_CYCLES(n: int) -> int:  # noqa: N802 - a bound named like a constant
    """Cycles the transmitter is busy with one byte: start, 8 data and stop bits of ``n`` cycles."""
    return 10 * n


def RX_IDLE_BOUND(n: int) -> int:  # noqa: N802
    """Cycles of a high line after which the receiver is idle, from any state: the two synchroniser
    flops, then at worst 8 data bits and the stop bit of ``n`` cycles still to count."""
    return 9 * n + 2


class UartTxFrame(Harness):
    """UartTx, any input: each byte taken goes out as start bit, 8 data bits LSB first, stop bit, each
    ``n`` cycles long, and the transmitter is ready again exactly ``10 n`` cycles after it took the byte
    (bounded response: idle from any state within one byte time). ``tx`` is high whenever it is ready.

    Invariant for induction: while a byte is out (``bits`` != 0), the cycles since it was taken plus the
    cycles left to send add up to ``10 n``; ``bits`` <= 10.
    """

    def __init__(self, *, clocks_per_bit: int = 4):
        super().__init__()
        self.n = clocks_per_bit

    def build(self, m):
        n = self.n
        tx = UartTx(clocks_per_bit=n)
        probe = Probe(tx)
        m.submodules.dut = probe.fragment
        bits, count = probe["bits"], probe["count"]
        free(m, tx.data.valid)
        free(m, tx.data.payload)
        fire = tx.data.valid & tx.data.ready
        byte = Signal(8)                      # the byte being sent
        waiting = Signal(range(TX_BYTE_CYCLES(n) + 2))   # cycles since it was taken
        with m.If(fire):
            m.d.sync += byte.eq(tx.data.payload)
        m.d.sync += waiting.eq(0)
        with m.If(~tx.data.ready & (waiting <= TX_BYTE_CYCLES(n))):
            m.d.sync += waiting.eq(waiting + 1)

        m.d.comb += [Assert(bits <= 10), Assert(waiting <= TX_BYTE_CYCLES(n))]
        with m.If(bits != 0):
            m.d.comb += Assert(waiting + (bits - 1) * n + count + 1 == TX_BYTE_CYCLES(n))
        with m.If(tx.data.ready):
            m.d.comb += Assert(tx.tx == 1)
        with m.If(bits == 10):
            m.d.comb += Assert(tx.tx == 0)                     # start bit
        for b in range(2, 10):
            with m.If(bits == b):
                m.d.comb += Assert(tx.tx == byte[9 - b])       # data bits, LSB first
        with m.If(bits == 1):
            m.d.comb += Assert(tx.tx == 1)                     # stop bit
        m.d.comb += Cover(waiting == TX_BYTE_CYCLES(n))
        m.d.comb += Cover((bits == 5) & (byte == 0xA5))


class UartRxIdle(Harness):
    """UartRx, any line: after ``9 n + 2`` cycles of a high line the receiver is idle (not ``busy``),
    from any state; ``valid`` and ``error`` are one-cycle pulses and never both high.

    Invariants for induction: the FSM is in one of its five states, ``bits`` <= 8, and ``bits`` >= 1 in
    DATA (k-induction over the bound then covers the rest).
    """

    def __init__(self, *, clocks_per_bit: int = 4):
        super().__init__()
        self.n = clocks_per_bit

    def build(self, m):
        n = self.n
        rx = UartRx(clocks_per_bit=n)
        probe = Probe(rx)
        m.submodules.dut = probe.fragment
        state, bits = probe["fsm_state"], probe["bits"]
        free(m, rx.rx)
        bound = RX_IDLE_BOUND(n)
        high = Signal(range(bound + 1))      # consecutive cycles of a high line (saturating)
        with m.If(~rx.rx):
            m.d.sync += high.eq(0)
        with m.Elif(high != bound):
            m.d.sync += high.eq(high + 1)
        was_valid, was_error = Signal(), Signal()
        m.d.sync += [was_valid.eq(rx.data.valid), was_error.eq(rx.error)]

        m.d.comb += [Assert(state < 5), Assert(bits <= 8), Assert(~(rx.data.valid & rx.error))]
        with m.If(state == 2):               # DATA
            m.d.comb += Assert(bits >= 1)
        with m.If(high == bound):
            m.d.comb += Assert(~rx.busy)
        with m.If(was_valid):
            m.d.comb += Assert(~rx.data.valid)
        with m.If(was_error):
            m.d.comb += Assert(~rx.error)
        m.d.comb += Cover(rx.data.valid)
        m.d.comb += Cover(rx.error)
        m.d.comb += Cover((high == bound - 1) & rx.busy)     # the bound is tight


class UartLoopback(Harness):
    """UartTx into UartRx at the same bit time, any byte (``AnyConst``): the receiver delivers that byte
    and never an error; bounded (``bmc``/``cover``) over one frame."""

    def __init__(self, *, clocks_per_bit: int = 4):
        super().__init__()
        self.n = clocks_per_bit

    def build(self, m):
        n = self.n
        m.submodules.tx = tx = UartTx(clocks_per_bit=n)
        m.submodules.rx = rx = UartRx(clocks_per_bit=n)
        byte = AnyConst(8)
        sent = Signal()
        m.d.comb += [tx.data.valid.eq(~sent), tx.data.payload.eq(byte), rx.rx.eq(tx.tx)]
        with m.If(tx.data.ready):
            m.d.sync += sent.eq(1)
        with m.If(rx.data.valid):
            m.d.comb += Assert(rx.data.payload == byte)
        m.d.comb += [Assert(~rx.error), Cover(rx.data.valid)]
