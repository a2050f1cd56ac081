"""hdl.fanout: ring and follower copies equal the register they copy at every cycle, and synthesis
keeps them apart."""

import random
import subprocess
import tempfile
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Mux, Signal
from amaranth.sim import Simulator

from golden.errors import InputError
from hdl.fanout import follower_copies, ring_copies


def _design(count, init=0, follower=False):
    """``count`` copies of a 4-bit register ``ref``: ring copies of ``ref <= value`` on ``load``, or
    (``follower``) follower copies of ``ref <= value`` every cycle."""
    m = Module()
    load, value, sel = Signal(), Signal(4), Signal(count)
    ref = Signal(4, init=init)
    if follower:
        m.d.sync += ref.eq(value)
        copies = follower_copies(m, count, value, shape=4, name="copy", init=init)
    else:
        with m.If(load):
            m.d.sync += ref.eq(value)
        copies = ring_copies(m, count, load, value, shape=4, name="copy", init=init)
    # Each copy selects its own output bit's operand, as the lanes' multiplexers do.
    out = Signal(count)
    m.d.comb += out.eq(sum(Mux(c == 3, sel[i], ~sel[i]) << i for i, c in enumerate(copies)))
    return m, (load, value, sel, out), ref, copies


@pytest.mark.parametrize("follower", [False, True], ids=["ring", "follower"])
@pytest.mark.parametrize("count", [1, 2, 8])
def test_copies_equal_the_register_at_every_cycle(count, follower):
    m, (load, value, _sel, _out), ref, copies = _design(count, init=5, follower=follower)
    rng = random.Random(count)
    seen = []

    async def bench(ctx):
        for _ in range(300):
            ctx.set(load, rng.random() < 0.3)
            # A follower's value often stays put for a while (as k_shift does between norms).
            ctx.set(value, rng.randrange(16) if not follower or rng.random() < 0.3 else ctx.get(value))
            await ctx.tick()
            r = ctx.get(ref)
            got = [ctx.get(c) for c in copies]
            assert got == [r] * count
            seen.append(r)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # The stimulus really moved the register (the check above is not over a constant).
    assert len(set(seen)) > 8


def test_a_bad_count_is_refused():
    with pytest.raises(InputError, match=r"^ring_copies count must be at least 1, not 0$"):
        ring_copies(None, 0, Signal(), Signal(), shape=1, name="x")   # refused before the module is touched
    with pytest.raises(InputError, match=r"^follower_copies count must be at least 1, not -1$"):
        follower_copies(None, -1, Signal(), shape=1, name="x")


def test_synthesis_keeps_every_copy():
    """Yosys' synth_ecp5 (the builds' script) keeps 8 copies x 4 bits apart, ring or follower; plain
    copies of one register, the same design without the ring, fold into one (4 flip-flops)."""
    from sim.fpga.build import BOARDS, SCRIPT_AFTER_READ, synthesis_cells, tool_environment

    def flip_flops(module, ports):
        yosys = tool_environment(BOARDS["ulx3s-85f"])["YOSYS"]
        with tempfile.TemporaryDirectory(prefix="lockstep-test-fanout-") as work:
            Path(work, "top.il").write_text(rtlil.convert(module, name="top", ports=ports, emit_src=False))
            Path(work, "top.ys").write_text(f"read_rtlil top.il\n{SCRIPT_AFTER_READ}\nsynth_ecp5 -top top\n")
            subprocess.run([yosys, "-q", "-l", "top.log", "top.ys"], cwd=work, check=True, capture_output=True,
                           timeout=600)
            return synthesis_cells(Path(work, "top.log").read_text()).get("TRELLIS_FF", 0)

    m, ports, _ref, _copies = _design(8)
    plain = Module()
    load, value, sel = Signal(), Signal(4), Signal(8)
    regs = [Signal(4, name=f"plain_{i}") for i in range(8)]
    for r in regs:
        with plain.If(load):
            plain.d.sync += r.eq(value)
    out = Signal(8)
    plain.d.comb += out.eq(sum(Mux(r == 3, sel[i], ~sel[i]) << i for i, r in enumerate(regs)))
    assert flip_flops(plain, [load, value, sel, out]) == 4
    assert flip_flops(m, list(ports)) == 8 * 4
    m, (_load, value, sel, out), _ref, _copies = _design(8, follower=True)
    # The follower's comparison with copy 0 is the only logic besides the lanes': 8 copies x 4 bits.
    assert flip_flops(m, [value, sel, out]) == 8 * 4
