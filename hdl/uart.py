"""UART receiver and transmitter: 8 data bits, no parity, 1 stop bit (8N1), LSB first.

The bit time is a whole number of clock cycles, ``clocks_per_bit``: simulations use a small one
(4 to 16) so a byte costs few cycles; boards use ``round(clock / baud)`` (25 MHz / 115200 -> 217).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import check_positive_int, checked_constructor

__all__ = ["MIN_CLOCKS_PER_BIT", "UartRx", "UartTx"]

#: The receiver samples a bit in its middle: fewer than 4 cycles per bit leaves no margin.
MIN_CLOCKS_PER_BIT = 4


def _check_divisor(clocks_per_bit):
    return check_positive_int("clocks_per_bit", clocks_per_bit, minimum=MIN_CLOCKS_PER_BIT)


class UartTx(wiring.Component):
    """Serialises bytes onto ``tx``.

    ``data`` is a stream of bytes: a byte is taken when ``valid`` and ``ready`` are high, and
    ``ready`` is high only while the line is idle, so a new byte's start bit follows the previous
    stop bit with no gap. ``tx`` is a register: the start bit appears on the cycle after the byte
    is taken and every bit lasts ``clocks_per_bit`` cycles (a byte: ``10 * clocks_per_bit``).
    ``tx`` idles high.
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    @checked_constructor
    def __init__(self, *, clocks_per_bit: int):
        self.clocks_per_bit = _check_divisor(clocks_per_bit)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10)   # start bit, 8 data bits, stop bit, sent from bit 0
        bits = Signal(range(11))
        count = Signal(range(self.clocks_per_bit))
        m.d.comb += self.data.ready.eq(bits == 0)
        with m.If(bits == 0):
            m.d.sync += shift.eq(Cat(0, self.data.payload, 1))
            with m.If(self.data.valid):
                m.d.sync += [bits.eq(10), count.eq(self.clocks_per_bit - 1), self.tx.eq(0)]
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.Else():
            m.d.sync += [bits.eq(bits - 1), count.eq(self.clocks_per_bit - 1), shift.eq(shift[1:])]
            with m.If(bits == 1):
                m.d.sync += self.tx.eq(1)
            with m.Else():
                m.d.sync += self.tx.eq(shift[1])
        return m


class UartRx(wiring.Component):
    """Recovers bytes from ``rx``.

    ``rx`` passes a two-flop synchroniser (it comes from outside the clock domain), then each bit
    is sampled in its middle. A byte whose stop bit is high appears on ``data`` (``valid`` high for
    one cycle; nothing can hold it back, so ``ready`` is ignored) about ``9.5 * clocks_per_bit + 3``
    cycles after its start bit began. A low stop bit pulses ``error`` instead and the receiver
    waits for the line to go high before looking for the next start bit. ``busy`` is high while a
    byte is being received.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8, always_ready=True))
    error: Out(1)
    busy: Out(1)

    @checked_constructor
    def __init__(self, *, clocks_per_bit: int):
        self.clocks_per_bit = _check_divisor(clocks_per_bit)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        n = self.clocks_per_bit
        line = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, line, init=1)
        count = Signal(range(n))
        bits = Signal(range(9))
        shift = Signal(8)
        m.d.sync += [self.data.valid.eq(0), self.error.eq(0)]
        m.d.comb += self.data.payload.eq(shift)
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += count.eq(n // 2 - 1)
                with m.If(~line):
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Elif(~line):
                    m.d.sync += [count.eq(n - 1), bits.eq(8)]
                    m.next = "DATA"
                with m.Else():
                    m.next = "IDLE"   # a glitch, not a start bit
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits - 1), count.eq(n - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Elif(line):
                    m.d.sync += self.data.valid.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.error.eq(1)
                    m.next = "BREAK"
            # A line held low (a break, or the wrong baud rate): wait for it to go high.
            with m.State("BREAK"):  # noqa: SIM117 - an FSM state holding one If
                with m.If(line):
                    m.next = "IDLE"
        return m
