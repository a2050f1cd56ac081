"""Board tops: the linked GEMM engine or the linked decode accelerator on a board's clock, UART and LEDs.

By default the design runs on the board's oscillator (ULX3S: 25 MHz, iCEBreaker: 12 MHz). On an
ECP5 board a ``clock_hz`` other than the oscillator's is made by the EHXPLLL
(:func:`ecp5_pll`): the design is held in reset until the PLL locks, and the clock constraint is
the PLL's output, so the build's timing check is at that clock. That reset leaves two flip-flops
clocked by the PLL (``~lock`` is asynchronous to it) through a DCCA, so nextpnr routes it on one of
the device's global networks like a clock instead of on the fabric's wires to every flip-flop
(:func:`_global_reset`).
``elaborate()`` requests the board's first UART (the USB serial adapter on both boards) and,
where present, LEDs 0 and 1 (done, busy).
"""

from dataclasses import dataclass

from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

from golden.errors import InputError, InputTypeError

from .config import Config, check_positive_int
from .link import LinkedDecode, LinkedGemm

__all__ = ["BAUD_TOLERANCE", "BoardTop", "DecodeBoardTop", "Ecp5Pll", "clocks_per_bit", "ecp5_pll"]

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
        raise InputError(f"baud {baud} is too fast for a {clock_hz / 1e6:g} MHz clock (at most {int(clock_hz // 4)})")
    error = abs(clock_hz / cpb - baud) / baud
    if error > BAUD_TOLERANCE:
        raise InputError(f"baud {baud} is {error:.1%} off at {clock_hz / 1e6:g} MHz ({cpb} cycles per bit); "
                         f"choose a rate within {BAUD_TOLERANCE:.0%}")
    return cpb


# The ECP5 EHXPLLL's ranges (Lattice TN1263): phase detector input, VCO, output; divider limits.
_PFD_HZ = (3.125e6, 400e6)
_VCO_HZ = (400e6, 800e6)
_OUT_HZ = (3.125e6, 400e6)
_CLKI_DIV_MAX, _CLKFB_DIV_MAX, _CLKOP_DIV_MAX = 128, 80, 128


@dataclass(frozen=True)
class Ecp5Pll:
    """EHXPLLL dividers for one output clock fed back from CLKOP: ``out = in * clkfb_div / clki_div``,
    the VCO at ``out * clkop_div``."""

    clki_div: int
    clkfb_div: int
    clkop_div: int
    in_hz: float

    @property
    def out_hz(self) -> float:
        return self.in_hz * self.clkfb_div / self.clki_div

    @property
    def vco_hz(self) -> float:
        return self.out_hz * self.clkop_div


def ecp5_pll(in_hz: float, out_hz: float) -> Ecp5Pll:
    """The EHXPLLL settings that make exactly ``out_hz`` from ``in_hz`` (smallest input divider,
    VCO nearest the middle of its range); ValueError naming the clock when there are none."""
    if not _OUT_HZ[0] <= out_hz <= _OUT_HZ[1]:
        raise InputError(f"clock {out_hz / 1e6:g} MHz is outside the ECP5 PLL's output range "
                         f"({_OUT_HZ[0] / 1e6:g} .. {_OUT_HZ[1] / 1e6:g} MHz)")
    best = None
    for clki in range(1, _CLKI_DIV_MAX + 1):
        pfd = in_hz / clki
        if pfd < _PFD_HZ[0]:
            break
        if pfd > _PFD_HZ[1]:
            continue
        fb = out_hz / pfd
        if abs(fb - round(fb)) > 1e-9 * fb or not 1 <= round(fb) <= _CLKFB_DIV_MAX:
            continue
        for op in range(1, _CLKOP_DIV_MAX + 1):
            vco = out_hz * op
            if _VCO_HZ[0] <= vco <= _VCO_HZ[1]:
                candidate = (abs(vco - sum(_VCO_HZ) / 2), Ecp5Pll(clki, round(fb), op, in_hz))
                best = min(best, candidate, key=lambda c: c[0]) if best else candidate
        if best:
            return best[1]
    raise InputError(f"clock {out_hz / 1e6:g} MHz cannot be made exactly from the {in_hz / 1e6:g} MHz oscillator "
                     f"by the ECP5 PLL ({in_hz / 1e6:g} MHz x feedback / input divider, feedback <= {_CLKFB_DIV_MAX}, "
                     f"input divider <= {_CLKI_DIV_MAX}, VCO 400-800 MHz)")


def _ecp5_pll_instance(pll: Ecp5Pll, clkin, clkout, lock) -> Instance:
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{pll.in_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.out_hz / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=pll.clki_div, p_CLKFB_DIV=pll.clkfb_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
        p_CLKOP_CPHASE=(pll.clkop_div - 1) // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
        i_CLKI=clkin, i_CLKFB=clkout, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
        i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
        o_CLKOP=clkout, o_LOCK=lock,
    )


def _global_reset(m: Module, clock, lock) -> Signal:
    """The sync domain's reset from the PLL's ``lock``: registered twice in a reset-less domain on
    the PLL's clock (both flip-flops start at 1, so the design is in reset from configuration until
    two edges after lock), then driven through a DCCA. nextpnr promotes only clocks to the global
    networks by itself; a reset that reaches every flip-flop of the design otherwise takes fabric
    wires across the whole die (the routing's most congested net of the 8x8 decode design)."""
    m.domains.reset_sync = ClockDomain("reset_sync", reset_less=True)
    m.d.comb += ClockSignal("reset_sync").eq(clock)
    meta, held = Signal(init=1, name="reset_meta"), Signal(init=1, name="reset_held")
    m.d.reset_sync += [meta.eq(~lock), held.eq(meta)]
    rst = Signal(name="reset_global")
    m.submodules.reset_buffer = Instance("DCCA", i_CLKI=held, i_CE=1, o_CLKO=rst)
    return rst


class BoardTop(Elaboratable):
    """:class:`hdl.link.LinkedGemm` on a board: ``clock_hz`` is the design's clock; when
    ``board_clock_hz`` (the oscillator) differs, an ECP5 PLL makes it (:func:`ecp5_pll`)."""

    def __init__(self, config: Config, *, clock_hz: float, baud: int = 115200, max_payload: int = 256,
                 board_clock_hz: float | None = None):
        if not isinstance(config, Config):
            raise InputTypeError(f"config must be a Config, not {type(config).__name__}")
        self.config = config
        self.clock_hz = clock_hz
        self.board_clock_hz = clock_hz if board_clock_hz is None else board_clock_hz
        self.pll = ecp5_pll(self.board_clock_hz, clock_hz) if clock_hz != self.board_clock_hz else None
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
        if self.pll is not None:
            if getattr(platform, "family", None) != "ecp5":
                raise InputError(f"a {self.clock_hz / 1e6:g} MHz clock needs a PLL; only ECP5 boards have one here")
            osc = platform.request(platform.default_clk, dir="-")
            m.submodules.osc_buffer = osc_in = io.Buffer("i", osc)
            clkout, lock = Signal(name="pll_clk"), Signal(name="pll_lock")
            m.submodules.pll = _ecp5_pll_instance(self.pll, osc_in.i, clkout, lock)
            m.domains.sync = ClockDomain("sync")
            m.d.comb += [ClockSignal("sync").eq(clkout), ResetSignal("sync").eq(_global_reset(m, clkout, lock))]
            platform.add_clock_constraint(clkout, self.clock_hz)
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
    ``max_norm_length``: :func:`sim.flows.decode.top_params`). The ``preload`` bus stays at zero.
    """

    def __init__(self, config: Config, *, top: dict, clock_hz: float, baud: int = 115200, max_payload: int = 256,
                 board_clock_hz: float | None = None):
        super().__init__(config, clock_hz=clock_hz, baud=baud, max_payload=max_payload, board_clock_hz=board_clock_hz)
        self.top = {k: top[k] for k in ("head_dim", "max_heads", "max_norm_length")}

    def design(self):
        return LinkedDecode(self.config, **self.top, clocks_per_bit=self.clocks_per_bit,
                            timeout_cycles=self.timeout_cycles, max_payload=self.max_payload)
