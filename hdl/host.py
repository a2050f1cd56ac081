"""The host bus: how a host reaches an accelerator's memories, the one memory window every target presents.

A target (:class:`hdl.gemm.GemmUnit`, :class:`hdl.top.DecodeTop`) has a member ``host`` of
``HostBus(...).flip()``; the link's bridge drives a ``HostBus`` inside its :class:`hdl.link.HostPort`
and a linked design joins the two with ``wiring.connect``. Simulation flows drive the same member
by name (``host.we``; ``host__we`` in the generated Verilog).

Members, seen from the host: ``mem`` (which memory: the target's own enum, e.g.
:class:`hdl.top.TopMem`, by value), ``addr`` (word address), ``we`` (write ``wdata``, low bits,
to ``mem[addr]`` at the next edge), ``rdata`` (``mem[addr]``, one cycle after ``addr``).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.errors import InputError

from .config import check_positive_int

__all__ = ["HostBus", "ParamSignature"]


class ParamSignature(wiring.Signature):
    """A signature equal to another of its class with the same :meth:`params` (compared, hashed and
    shown by them), as ``wiring.connect`` and the tests expect of a parametrized signature."""

    def params(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and self.params() == other.params()

    def __hash__(self):
        return hash((type(self).__name__, *sorted(self.params().items())))

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in self.params().items()) + ")"


class HostBus(ParamSignature):
    """The memory window of the host port (see the module docstring), seen from the host side.

    Parameters (keyword-only): ``mem_count`` (memories behind the window, at most 256),
    ``addr_bits`` (at most 32), ``wdata_bits`` and ``rdata_bits`` (multiples of 8: the link
    carries whole bytes).
    """

    def __init__(self, *, mem_count: int, addr_bits: int, wdata_bits: int, rdata_bits: int):
        for name, value in (("mem_count", mem_count), ("addr_bits", addr_bits), ("wdata_bits", wdata_bits),
                            ("rdata_bits", rdata_bits)):
            check_positive_int(name, value)
        for name, value in (("wdata_bits", wdata_bits), ("rdata_bits", rdata_bits)):
            if value % 8:
                raise InputError(f"{name} must be a multiple of 8, not {value}")
        if addr_bits > 32:
            raise InputError(f"addr_bits must be at most 32, not {addr_bits}")
        if mem_count > 256:
            raise InputError(f"mem_count must be at most 256, not {mem_count}")
        self.mem_count, self.addr_bits = mem_count, addr_bits
        self.wdata_bits, self.rdata_bits = wdata_bits, rdata_bits
        super().__init__({
            "mem": Out(max(1, (mem_count - 1).bit_length())),
            "addr": Out(addr_bits),
            "we": Out(1),
            "wdata": Out(wdata_bits),
            "rdata": In(rdata_bits),
        })

    def params(self) -> dict:
        return {"mem_count": self.mem_count, "addr_bits": self.addr_bits, "wdata_bits": self.wdata_bits,
                "rdata_bits": self.rdata_bits}
