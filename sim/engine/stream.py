"""The one valid/ready stream driver and monitor of every host flow and testbench, over :class:`sim.engine.bus.Bus`
(so on cocotb and on Amaranth's simulator alike).

A :class:`StreamDriver` offers a list of beats on ``<name>.valid`` / ``<name>.payload`` in order; a
beat on offer stays on offer until the design takes it (valid never drops early). A
:class:`StreamMonitor` takes beats from ``<name>.valid`` / ``<name>.payload`` whenever its
``<name>.ready`` is high. Both can be randomised from one seeded ``random.Random``: ``gaps`` is the
chance a driver leaves a cycle idle before offering its next beat, ``stall`` the chance the monitor
holds ready low (backpressure). :func:`check_nothing_in_flight` is the end-of-test check.

Each cycle of a flow follows the :class:`sim.engine.bus.Bus` timing contract: call :meth:`StreamDriver.offer`
and :meth:`StreamMonitor.offer` (this cycle's inputs, in the flow's order: that order is the order
of the random draws, so a seed gives the same gaps and stalls as before), await ``bus.settle()``,
call :meth:`StreamDriver.took` and :meth:`StreamMonitor.take` (what the coming edge transfers), then
await ``bus.tick()``.
"""

from __future__ import annotations

import random

__all__ = ["StreamDriver", "StreamMonitor", "check_nothing_in_flight"]


def _idle(rng: random.Random, chance: float, draw_at_zero: bool) -> bool:
    """True with probability ``chance``; draws from ``rng`` unless ``chance`` is 0 and not ``draw_at_zero``."""
    if chance == 0 and not draw_at_zero:
        return False
    return rng.random() < chance


class StreamDriver:
    """Offers ``beats`` on the stream ``name`` of ``bus``, one at a time, in order.

    ``gaps``: chance of an idle cycle before each offer, drawn from ``rng``. ``draw_at_zero``: draw
    from ``rng`` even when ``gaps`` is 0 (the GEMM and attention flows always drew; the vector flow
    draws only for a non-zero chance), so each flow's seeded sequence stays what it was.
    ``withhold``: never offer (a deliberate misuse for testing watchdogs), the draws still made.
    Writes only the inputs that change (each write is a costly simulator call).
    """

    def __init__(self, bus, name: str, beats, *, rng: random.Random | None = None, gaps: float = 0.0,
                 draw_at_zero: bool = True, withhold: bool = False):
        self.bus, self.name, self.beats = bus, name, list(beats)
        self.rng = rng if rng is not None else random.Random(0)
        self.gaps, self.draw_at_zero, self.withhold = gaps, draw_at_zero, withhold
        self.sent = 0
        self.valid = False
        self._written = None
        self._valid, self._payload = f"{name}.valid", f"{name}.payload"

    @property
    def done(self) -> bool:
        """Every beat was taken."""
        return self.sent == len(self.beats)

    def _set_valid(self, value: bool) -> None:
        if self._written != value:
            self._written = value
            self.bus.set(self._valid, value)

    def offer(self) -> None:
        """Set this cycle's valid (and the payload of a newly offered beat)."""
        if not self.valid and self.sent < len(self.beats) and not _idle(self.rng, self.gaps, self.draw_at_zero) \
                and not self.withhold:
            self.valid = True
            self.bus.set(self._payload, self.beats[self.sent])
        self._set_valid(self.valid)

    def took(self) -> bool:
        """After ``bus.settle()``: True when the coming edge transfers the beat on offer."""
        if self.valid and self.bus.get(f"{self.name}.ready"):
            self.sent += 1
            self.valid = False
            return True
        return False

    def hold(self, valid: bool) -> None:
        """Drive valid to ``valid`` outside the stream's beats (the end-of-test checks)."""
        self._set_valid(valid)


class StreamMonitor:
    """Takes beats from the stream ``name`` of ``bus``; ``stall`` is the chance ready is held low in
    a cycle, drawn from ``rng`` (``draw_at_zero`` as for :class:`StreamDriver`)."""

    def __init__(self, bus, name: str, *, rng: random.Random | None = None, stall: float = 0.0,
                 draw_at_zero: bool = True):
        self.bus, self.name = bus, name
        self.rng = rng if rng is not None else random.Random(0)
        self.stall, self.draw_at_zero = stall, draw_at_zero
        self.ready = False
        self.taken = 0
        self._written = None
        self._ready, self._valid, self._payload = f"{name}.ready", f"{name}.valid", f"{name}.payload"

    def _set_ready(self, value: bool) -> None:
        if self._written != value:
            self._written = value
            self.bus.set(self._ready, value)

    def offer(self) -> None:
        """Set this cycle's ready."""
        self.ready = not _idle(self.rng, self.stall, self.draw_at_zero)
        self._set_ready(self.ready)

    def take(self) -> int | None:
        """After ``bus.settle()``: the payload the coming edge transfers, or None."""
        if self.ready and self.bus.get(self._valid):
            self.taken += 1
            return self.bus.get(self._payload)
        return None

    def hold(self, ready: bool) -> None:
        """Drive ready to ``ready`` outside the stream's beats (the end-of-test checks)."""
        self.ready = ready
        self._set_ready(ready)


async def check_nothing_in_flight(bus, what: str, cycles: int, *, drivers=(), monitors=(), offer: bool = False,
                                  check_ready: bool = True, busy: tuple[str, ...] = ()) -> None:
    """The end-of-test check: for ``cycles`` cycles, with every monitor ready and every driver's valid
    at ``offer``, no monitor sees a beat, no driver's ready is high (``check_ready``) and no signal of
    ``busy`` is high. AssertionError naming ``what`` and the busy signals otherwise; the drivers'
    valids are dropped at the end."""
    for d in drivers:
        d.hold(offer)
    for m in monitors:
        m.hold(True)
    for _ in range(cycles):
        await bus.settle()
        active = {f"{m.name}.valid": bus.get(f"{m.name}.valid") for m in monitors}
        if check_ready:
            active.update({f"{d.name}.ready": bus.get(f"{d.name}.ready") for d in drivers})
        active.update({name: bus.get(name) for name in busy})
        if any(active.values()):
            raise AssertionError(f"{what} is still active after its last beat: "
                                 f"{', '.join(name for name, v in active.items() if v)}")
        await bus.tick()
    for d in drivers:
        d.hold(False)
