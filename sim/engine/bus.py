"""One way for host code to touch a simulated design, whichever simulator runs it.

Host flows (loading memories, starting a run, streaming beats) are written once against
:class:`Bus` and run on cocotb (Icarus, Verilator) and on Amaranth's simulator alike.

Timing contract, the same on every simulator: each cycle a flow (1) sets the inputs it drives
for this cycle, (2) awaits :meth:`Bus.settle`, after which :meth:`Bus.get` returns settled values
(registers after the last edge, combinational logic after this cycle's inputs), (3) awaits
:meth:`Bus.tick`, which passes exactly one rising edge. Inputs set in (1) are sampled by that edge.
Signal names are Amaranth paths (``"weights.valid"``); adapters translate them.
"""

from __future__ import annotations

from typing import Protocol

from golden.errors import InputError, LockstepError

__all__ = ["AmaranthBus", "Bus", "CocotbBus", "WatchdogError"]


class WatchdogError(LockstepError, RuntimeError):
    """A simulation stopped making progress; the message says what was awaited and for how long."""


class Bus(Protocol):
    def set(self, name: str, value: int) -> None: ...
    def get(self, name: str) -> int: ...
    async def settle(self) -> None: ...
    async def tick(self) -> None: ...
    async def ticks(self, n: int) -> None:
        """``n`` ticks, looking at nothing in between (cheaper than ``n`` calls of :meth:`tick`)."""
        ...
    async def reset(self) -> None: ...
    async def run_until(self, name: str, budget: int) -> int:
        """Let the design run free until ``name`` reads 1; return the edges passed.

        Raises WatchdogError after ``budget`` edges.
        """
        ...
    async def watch(self, name: str, value: int, budget: int) -> int | None:
        """Let the design run until the one-bit signal ``name`` reads ``value`` after an edge, for at
        most ``budget`` edges, with no Python per cycle; return the edges passed (0 when it reads
        ``value`` already), or None when ``budget`` edges passed without it."""
        ...


class AmaranthBus:
    """Adapter for an async testbench of ``amaranth.sim.Simulator``."""

    def __init__(self, ctx, component):
        self._ctx = ctx
        self._component = component
        self._cache = {}

    def _resolve(self, name):
        value = self._cache.get(name)
        if value is None:
            obj = self._component
            for part in name.split("."):
                obj = getattr(obj, part)
            value = obj.as_value() if hasattr(obj, "as_value") else obj
            self._cache[name] = value
        return value

    def set(self, name, value):
        self._ctx.set(self._resolve(name), int(value))

    def get(self, name):
        sig = self._resolve(name)
        raw = self._ctx.get(sig)
        return int(raw) & ((1 << len(sig)) - 1)

    async def settle(self):
        return None  # ctx.get settles combinational logic by itself

    async def tick(self):
        await self._ctx.tick()

    async def ticks(self, n):
        if n > 0:
            await self._ctx.tick().repeat(n)

    async def reset(self):
        # Amaranth's simulator starts every register at its reset value.
        await self._ctx.tick()

    async def run_until(self, name, budget):
        sig = self._resolve(name)
        for edges in range(1, budget + 1):
            await self._ctx.tick()
            if self._ctx.get(sig):
                return edges
        raise WatchdogError(f"{name} did not rise within {budget} cycles")

    async def watch(self, name, value, budget):
        sig = self._resolve(name)
        if self._ctx.get(sig) == value:
            return 0
        for edges in range(1, budget + 1):
            await self._ctx.tick()
            if self._ctx.get(sig) == value:
                return edges
        return None


class CocotbBus:
    """Adapter for a cocotb test: ``dut`` is the toplevel handle; clock ``clk``, reset ``rst``.

    ``clock``: ``"cocotb"`` starts cocotb's Clock on ``clk``; ``"model"`` leaves ``clk`` to the
    simulator (Lockstep's Verilator main toggles it at ``period_ns``, see sim/engine/verilator_main.cpp).
    """

    def __init__(self, dut, period_ns: int = 10, clock: str = "cocotb"):
        # cocotb only inside a simulator process: the host process (AmaranthBus, the runner) never loads it.
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, Timer, with_timeout

        self._dut = dut
        self._period = period_ns
        self._falling = FallingEdge(dut.clk)
        self._FallingEdge, self._ReadOnly, self._RisingEdge = FallingEdge, ReadOnly, RisingEdge
        self._Timer, self._with_timeout, self._ClockCycles = Timer, with_timeout, ClockCycles
        self._handles = {}
        if clock == "cocotb":
            cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
        elif clock != "model":
            raise InputError(f"clock must be 'cocotb' or 'model', not {clock!r}")

    def _resolve(self, name):
        handle = self._handles.get(name)
        if handle is None:
            handle = getattr(self._dut, name.replace(".", "__"))
            self._handles[name] = handle
        return handle

    def set(self, name, value):
        self._resolve(name).value = int(value)

    def get(self, name):
        value = self._resolve(name).value
        # One-bit signals read as Logic, vectors as LogicArray.
        if not value.is_resolvable:
            raise InputError(f"{name} holds unknown bits ({value}) at {self._now()}")
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)

    def _now(self):
        from cocotb.simtime import get_sim_time

        return f"{get_sim_time('ns'):g} ns"

    async def settle(self):
        await self._ReadOnly()

    def dump_window(self, start: int | None, stop: int | None) -> None:
        """Dump waves only from ``start`` to ``stop`` cycles from now (None: from now, for ever; a
        start past the stop: nothing until the next call). Verilator models built with waves only
        (:func:`sim.engine.runner._waves_args`); InputError on any other simulator."""
        import ctypes

        from cocotb.simtime import get_sim_time
        from cocotb.utils import get_sim_steps

        window = getattr(ctypes.CDLL(None), "lockstep_dump_window", None)
        if window is None:
            raise InputError("a waveform window needs the verilator backend with waves")
        window.argtypes = (ctypes.c_uint64, ctypes.c_uint64)
        now = get_sim_time("step")
        per_cycle = get_sim_steps(self._period, "ns")       # simulator time steps of one clock period
        never = (1 << 64) - 1
        window(now if start is None else now + start * per_cycle,
               never if stop is None else min(never, now + stop * per_cycle))

    async def tick(self):
        await self._FallingEdge(self._dut.clk)

    async def ticks(self, n):
        if n > 0:
            await self._ClockCycles(self._dut.clk, n, rising=False)

    async def reset(self):
        # Amaranth's Verilog resets synchronously on rst; hold it a few edges so every always
        # block has run at least once (Icarus may not evaluate them at time 0, amaranth #1629).
        self._dut.rst.value = 1
        for _ in range(3):
            await self._FallingEdge(self._dut.clk)
        self._dut.rst.value = 0
        await self._FallingEdge(self._dut.clk)

    async def run_until(self, name, budget):
        from cocotb.simtime import get_sim_time

        handle = self._resolve(name)
        start = get_sim_time("ns")
        try:
            if not self.get(name):
                await self._with_timeout(self._RisingEdge(handle), budget * self._period, "ns")
        except TimeoutError:
            raise WatchdogError(f"{name} did not rise within {budget} cycles") from None
        await self._FallingEdge(self._dut.clk)
        elapsed = get_sim_time("ns") - start
        return round(elapsed / self._period)

    async def watch(self, name, value, budget):
        from cocotb.simtime import get_sim_time

        if self.get(name) == value:
            return 0
        if budget <= 0:
            return None
        handle = self._resolve(name)
        edge = self._RisingEdge(handle) if value else self._FallingEdge(handle)
        start = get_sim_time("ps")
        # Outputs change at a rising clock edge, half a period before the falling edge a tick ends
        # on: the time limit falls between the budget-th rising edge and the falling edge after it.
        try:
            await self._with_timeout(edge, round(1000 * self._period * (budget - 0.25)), "ps")
            found = True
        except TimeoutError:
            found = False
        await self._FallingEdge(self._dut.clk)
        return round((get_sim_time("ps") - start) / (1000 * self._period)) if found else None
