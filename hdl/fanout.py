"""Copies of a register for its loads far apart: one select net split into short ones.

A register whose output selects the multiplexers of many lanes (the vector unit's opcode, the
operand feeder's phase, the GEMM path's bias flag) drives hundreds of LUT inputs spread across the
lanes. On an FPGA such a net is the hardest kind to route (router2's congestion heatmap of the
ULX3S build names them first, docs/fpga.md). :func:`ring_copies` gives each lane a copy of its own
of a register that loads on an enable; :func:`follower_copies` of one that takes a new value every
cycle (the norms' shift ``k_shift``, whose five bits selected some 2,200 LUT inputs of the eight
lanes' shifters).

Synthesis merges registers whose inputs are identical (Yosys' ``opt_merge``, with or without a
``keep`` attribute on the wire), so plain copies fold back into one. Here each copy takes the
register's next value when it loads and otherwise its neighbour's copy (copy i from copy i - 1, a
ring). All copies start at the same value and load the same value together, so they are equal at
every cycle, and equal to the register they copy; their inputs differ, so no structural pass merges
them. No cycle and no bit changes: a copy is the register, wired apart.
"""

from amaranth.hdl import Mux, Signal

from golden.errors import InputError

__all__ = ["follower_copies", "ring_copies"]


def ring_copies(m, count: int, load, value, *, shape, name: str, init=0):
    """``count`` registers, each equal at every cycle to ``r`` in ``with m.If(load): r <= value``
    (``r`` of ``shape``, starting at ``init``), in the sync domain of module ``m``."""
    if count < 1:
        raise InputError(f"ring_copies count must be at least 1, not {count}")
    copies = [Signal(shape, init=init, name=f"{name}_{i}") for i in range(count)]
    for i, copy in enumerate(copies):
        previous = copies[i - 1]       # copy 0 holds from the last one, closing the ring
        m.d.sync += copy.eq(Mux(load, value, previous))
    return copies


def follower_copies(m, count: int, value, *, shape, name: str, init=0):
    """``count`` registers, each equal at every cycle to ``r`` in ``r <= value`` (every cycle; ``r``
    of ``shape``, starting at ``init``), in the sync domain of module ``m``.

    :func:`ring_copies` with the load ``value != r`` (copy 0 standing for ``r``): loading only when
    the value changes keeps ``r``'s sequence (when it does not load, ``r`` already holds ``value``),
    and the load makes each copy's input differ from the others', so Yosys keeps them apart."""
    if count < 1:
        raise InputError(f"follower_copies count must be at least 1, not {count}")
    load = Signal(name=f"{name}_load")
    copies = ring_copies(m, count, load, value, shape=shape, name=name, init=init)
    m.d.comb += load.eq(value != copies[0])
    return copies
