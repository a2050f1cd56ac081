"""The weight memory: G banks read at one address, so the weight path really delivers G tile rows a cycle.

G = ``Config.weight_rows_per_cycle``. Word ``w`` (``array_cols`` int8, one tile row) lives in bank
``w % G`` at bank address ``w // G`` (:meth:`WeightMemory.bank_of`: the one bank rule, used by the
decode top level and the GEMM engine alike); a GEMM's tiles start on a bank row (the compiler aligns them),
so bank row ``a`` holds tile rows ``G * a .. G * a + G - 1`` and one read of every bank is one
beat of :class:`hdl.array.SystolicArray` with ``rows_per_beat = G``. The host writes one word at a
time, by its word address; a single word is read back through the same banks (``word``).
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .config import check_positive_int, checked_constructor

__all__ = ["DP16KD_SHAPES", "WeightMemory", "slice_bits"]

#: The shapes of the ECP5's block RAM (DP16KD, 18 Kbit), (width, depth): the ones a weight bank's
#: slices are cut for (the FPGA plan, ``sim.fpga.build``, counts the ECP5's block RAMs with them).
DP16KD_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def slice_bits(width: int, depth: int) -> int:
    """The width of the slices of a weight bank of ``depth`` words of ``width`` bits: the widest
    block RAM shape at least that deep (one block RAM a slice on the ECP5); the whole word when it
    is no wider, or when no shape is that deep (a deeper bank cascades block RAMs however cut)."""
    return min(width, next((w for w, d in DP16KD_SHAPES if depth <= d), width))


class WeightMemory(wiring.Component):
    """``banks`` memories of ``depth`` words of ``width`` bits (see the module docstring).

    Ports
    -----
    ``we``/``waddr``/``wdata``: write word ``waddr`` (a word address over all banks).
    ``raddr``/``ren``/``rsel``: read bank row ``raddr`` (when ``ren``); ``row`` holds the ``banks``
    words of that row one cycle later (bank 0 in the low bits), and ``word`` the one of them that
    ``rsel`` (a bank index, sampled with the address) named.
    """

    @checked_constructor
    def __init__(self, *, width: int, depth: int, banks: int):
        self.width = check_positive_int("weight memory width", width)
        self.depth = check_positive_int("weight memory depth", depth)
        self.banks = check_positive_int("weight memory banks", banks)
        words = depth * banks
        super().__init__({
            "we": In(1),
            "waddr": In(range(words)),
            "wdata": In(width),
            "raddr": In(range(depth)),
            "ren": In(1),
            "rsel": In(range(max(banks, 2))),    # one bit at least: no zero-width port at G = 1
            "row": Out(width * banks),
            "word": Out(width),
        })

    def bank_of(self, addr):
        """Word address ``addr`` -> (bank, address in the bank): its low bits when G is a power of
        two (no divider), else ``addr % G`` and ``addr // G``."""
        G = self.banks
        if G & (G - 1) == 0:
            shift = G.bit_length() - 1
            return addr[:shift], addr[shift:]
        return addr % G, addr // G

    def elaborate(self, platform):
        m = Module()
        G = self.banks
        bank, bank_addr = self.bank_of(self.waddr)
        sel = Signal(range(max(G, 2)))
        if G > 1:
            with m.If(self.ren):
                m.d.sync += sel.eq(self.rsel)
        step = slice_bits(self.width, self.depth)
        for b in range(G):
            # A bank is slices of ``step`` bits, each a memory of its own: the same bits, and on an
            # FPGA every slice one block RAM as deep as the bank (no depth cascade, whose read
            # multiplexers cost logic and a level on the weight path).
            data = Signal(self.width, name=f"bank{b}_data")
            for lo in range(0, self.width, step):
                hi = min(lo + step, self.width)
                mem = memory.Memory(shape=unsigned(hi - lo), depth=self.depth, init=[])
                m.submodules[f"bank{b}_{lo}" if step < self.width else f"bank{b}"] = mem
                w, r = mem.write_port(), mem.read_port()
                m.d.comb += [
                    w.addr.eq(bank_addr), w.data.eq(self.wdata[lo:hi]),
                    w.en.eq(self.we & (bank == b) if G > 1 else self.we),
                    r.addr.eq(self.raddr), r.en.eq(self.ren),
                    data[lo:hi].eq(r.data),
                ]
            m.d.comb += self.row[b * self.width:(b + 1) * self.width].eq(data)
            with m.If(sel == b):
                m.d.comb += self.word.eq(data)
        return m
