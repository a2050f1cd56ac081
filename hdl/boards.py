"""Board tops: the linked GEMM engine or the linked decode accelerator on a board's clock, UART and LEDs.

The design runs on the board's default clock (ULX3S: 25 MHz, iCEBreaker: 12 MHz) with no PLL, so
the achieved fmax reported by a build is headroom, not the speed the board runs at.
``elaborate()`` requests the board's first UART (the USB serial adapter on both boards) and,
where present, LEDs 0 and 1 (done, busy).
"""

from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from .config import Config, check_positive_int
from .link import LinkedDecode, LinkedGemm

__all__ = ["BAUD_TOLERANCE", "BoardTop", "DecodeBoardTop", "clocks_per_bit"]

#: Largest relative baud error accepted: 8N1 samples the stop bit 9.5 bits after the start edge,
#: and both ends may be off, so 2 % each leaves margin.
BAUD_TOLERANCE = 0.02
#: A frame that stops for this long ends with ERR_TIMEOUT (long enough for USB adapters' gaps).
TIMEOUT_SECONDS = 0.05


def clocks_per_bit(clock_hz: float, baud: int) -> int:
    """Whole clock cycles per UART bit; ValueError when the baud rate is off by more than 2 %."""
    check_positive_int("baud", baud)
    cpb = round(clock_hz / baud)
    if cpb < 4:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz / 1e6:g} MHz clock (at most {int(clock_hz // 4)})")
    error = abs(clock_hz / cpb - baud) / baud
    if error > BAUD_TOLERANCE:
        raise ValueError(f"baud {baud} is {error:.1%} off at {clock_hz / 1e6:g} MHz ({cpb} cycles per bit); "
                         f"choose a rate within {BAUD_TOLERANCE:.0%}")
    return cpb


class BoardTop(Elaboratable):
    """:class:`hdl.link.LinkedGemm` on a board: ``clock_hz`` is the board's default clock."""

    def __init__(self, config: Config, *, clock_hz: float, baud: int = 115200, max_payload: int = 256):
        if not isinstance(config, Config):
            raise TypeError(f"config must be a Config, not {type(config).__name__}")
        self.config = config
        self.clock_hz = clock_hz
        self.baud = baud
        self.clocks_per_bit = clocks_per_bit(clock_hz, baud)
        self.timeout_cycles = max(int(clock_hz * TIMEOUT_SECONDS), 20 * self.clocks_per_bit)
        self.max_payload = max_payload

    def design(self):
        return LinkedGemm(self.config, clocks_per_bit=self.clocks_per_bit, timeout_cycles=self.timeout_cycles,
                          max_payload=self.max_payload)

    def elaborate(self, platform):
        m = Module()
        m.submodules.design = design = self.design()
        if platform is None:
            return m   # elaborated without a board (tests): no pins
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [design.rx.eq(rx.i), tx.o.eq(design.tx)]
        for index, signal in enumerate((design.done, design.busy)):
            try:
                led = platform.request("led", index, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{index}"] = buffer = io.Buffer("o", led)
            m.d.comb += buffer.o.eq(signal)
        return m


class DecodeBoardTop(BoardTop):
    """:class:`hdl.link.LinkedDecode` on a board (the decode accelerator, its memories on chip).

    ``top`` holds the top level's keyword parameters (``head_dim``, ``max_heads``,
    ``max_norm_length``: :func:`sim.top.top_params`). The ``preload_*`` ports stay at zero.
    """

    def __init__(self, config: Config, *, top: dict, clock_hz: float, baud: int = 115200, max_payload: int = 256):
        super().__init__(config, clock_hz=clock_hz, baud=baud, max_payload=max_payload)
        self.top = {k: top[k] for k in ("head_dim", "max_heads", "max_norm_length")}

    def design(self):
        return LinkedDecode(self.config, **self.top, clocks_per_bit=self.clocks_per_bit,
                            timeout_cycles=self.timeout_cycles, max_payload=self.max_payload)
