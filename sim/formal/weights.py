"""Formal harness of the banked weight memory (:mod:`hdl.weights`)."""

from __future__ import annotations

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Cover, Signal

from hdl.weights import WeightMemory

from .harness import Harness, free

__all__ = ["WeightsReadWrite"]


class WeightsReadWrite(Harness):
    """WeightMemory, any writes and reads (bounded): for any word address ``a`` (``AnyConst``), a read of
    bank row ``a // G`` shows, one cycle later, the last word written to ``a`` (zero before any write) in
    bank ``a % G`` of ``row``, and in ``word`` when ``rsel`` named that bank; a write to another address
    never changes it."""

    def __init__(self, *, width: int = 8, depth: int = 4, banks: int = 2):
        super().__init__()
        self.width, self.depth, self.banks = width, depth, banks

    def build(self, m):
        W, G = self.width, self.banks
        mem = WeightMemory(width=W, depth=self.depth, banks=G)
        m.submodules.dut = mem
        for port in (mem.we, mem.waddr, mem.wdata, mem.raddr, mem.ren, mem.rsel):
            free(m, port)
        a = AnyConst(len(mem.waddr))
        m.d.comb += [Cover(a == self.depth * G - 1)]
        lg = G.bit_length() - 1
        value = Signal(W)                 # the reference: the last word written to a
        with m.If(mem.we & (mem.waddr == a)):
            m.d.sync += value.eq(mem.wdata)
        read_a, sel_a = Signal(), Signal()
        want = Signal(W)
        m.d.sync += [read_a.eq(mem.ren & (mem.raddr == (a >> lg))), sel_a.eq(mem.rsel == (a & (G - 1))),
                     want.eq(value)]
        bank = Signal(range(max(G, 2)))
        m.d.comb += bank.eq(a & (G - 1))
        # A read and a write of the same word in one cycle: the read sees the old word (the ports are
        # not transparent), which ``want`` (registered with the read) is.
        with m.If(read_a):
            for b in range(G):
                with m.If(bank == b):
                    m.d.comb += Assert(mem.row[b * W:(b + 1) * W] == want)
            with m.If(sel_a):
                m.d.comb += Assert(mem.word == want)
        m.d.comb += Cover(read_a & sel_a & (want == 0x5A))
