"""What every formal harness shares: a reset-less ``sync`` domain, and the stream rules as properties.

A harness (:class:`Harness`) wraps a block: it drives the block's inputs from ``AnySeq`` (a free value
every step) or ``AnyConst`` (one free value for the whole trace), constrains them with ``Assume`` where
the block's contract asks something of its environment, and states the block's promises with
``Assert`` and its interesting states with ``Cover``. ``clk`` is the one port :func:`sim.formal.flow.check`
exports; there is no reset: the base case starts from the registers' init values (which is what a
reset gives), the induction step from any state in which every assertion held for ``depth`` steps.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, ClockDomain, Elaboratable, Module, Signal, Value

__all__ = ["Harness", "Probe", "StreamMonitor", "any_of", "busy_done_rules", "copies_equal", "free", "popcount"]


class Harness(Elaboratable):
    """Base class: ``elaborate`` builds the domain and calls :meth:`build` with the module."""

    def __init__(self):
        self._domain = ClockDomain("sync", reset_less=True)
        self.clk = self._domain.clk

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self._domain
        self.build(m)
        return m

    def build(self, m: Module) -> None:  # pragma: no cover - every harness overrides it
        raise NotImplementedError


def free(m: Module, target: Value) -> None:
    """Drive ``target`` (an input of the block) with a free value every step."""
    value = Value.cast(target)
    m.d.comb += value.eq(AnySeq(len(value)))


def popcount(bits):
    """The number of ``bits`` that are high (a sum the solver sees as such)."""
    total = 0
    for b in bits:
        total = total + b
    return total


def any_of(terms):
    """Any of ``terms`` high (0 for none)."""
    result = 0
    for t in terms:
        result = result | t
    return result


def busy_done_rules(m: Module, unit, *, launch, running) -> SimpleNamespace:
    """A unit's start contract (``unit.busy``, ``unit.done``, ``unit.cycles``), asserted: ``running`` (its
    internal state) = ``busy``; ``busy`` the cycle after a ``launch``, ``done`` only after one, never both,
    ``done`` held until the next launch, ``busy`` ends only with ``done``; ``cycles`` unchanged while idle
    without a launch. Returns the registers it keeps: ``started``, ``was_launch``, ``was_busy``, ``was_done``."""
    started, was_launch, was_busy, was_done = Signal(), Signal(), Signal(), Signal()
    was_cycles = Signal.like(unit.cycles)
    m.d.sync += [was_launch.eq(launch), was_busy.eq(unit.busy), was_done.eq(unit.done), was_cycles.eq(unit.cycles)]
    with m.If(launch):
        m.d.sync += started.eq(1)
    m.d.comb += [Assert(running == unit.busy), Assert(~(unit.busy & unit.done))]
    with m.If(~was_busy & ~was_launch):
        m.d.comb += [Assert(~unit.busy), Assert(unit.cycles == was_cycles)]
    with m.If(unit.done | unit.busy):
        m.d.comb += Assert(started)
    with m.If(was_launch):
        m.d.comb += Assert(unit.busy)
    with m.If(was_done & ~was_launch):
        m.d.comb += Assert(unit.done)
    with m.If(was_busy & ~unit.busy):
        m.d.comb += Assert(unit.done)
    return SimpleNamespace(started=started, was_launch=was_launch, was_busy=was_busy, was_done=was_done)


class StreamMonitor:
    """The valid/ready rules of one stream (``amaranth.lib.stream``), seen at its boundary.

    ``sender_rules`` (for a stream the block sends: asserted) or (for one it receives: assumed of the
    environment): once ``valid`` is high without ``ready``, ``valid`` stays high and ``payload`` stays the
    same in the next step. ``fire`` is the transfer strobe (``valid & ready``) for beat counters.
    """

    def __init__(self, m: Module, stream, *, name: str):
        self.stream = stream
        self.fire = Signal(name=f"{name}_fire")
        self.held = Signal(name=f"{name}_held")           # last step: valid and not ready
        self.prev_payload = Signal(len(stream.payload.as_value()), name=f"{name}_prev_payload")
        ready = stream.ready if hasattr(stream, "ready") else 1
        m.d.comb += self.fire.eq(stream.valid & ready)
        m.d.sync += [self.held.eq(stream.valid & ~ready), self.prev_payload.eq(stream.payload.as_value())]

    def sender_rules(self, m: Module, *, check: type = Assert) -> None:
        """``check`` (Assert or Assume) that a held beat stays offered and unchanged."""
        with m.If(self.held):
            m.d.comb += [check(self.stream.valid), check(self.stream.payload.as_value() == self.prev_payload)]

    def assume_sent_by_environment(self, m: Module) -> None:
        self.sender_rules(m, check=Assume)


class Probe:
    """A block elaborated once, whose internal registers a harness may read by name.

    An invariant that makes a property inductive often names state the block does not show at its ports
    (a pipeline's valid bits, an FSM's state). ``Probe(block)`` elaborates ``block`` into a fragment (add
    ``probe.fragment`` as the harness's submodule instead of the block) and ``probe["name"]`` finds the
    signal the fragment assigns under that name (``probe["sub/name"]`` in submodule ``sub``;
    ``probe["name@sync"]`` only among the registers, where a port of a submodule shares the name). A name
    that is not there, or is there twice, raises KeyError: a harness fails loudly when the block is renamed.
    """

    def __init__(self, block):
        from amaranth.hdl import Fragment

        self.block = block
        self.fragment = Fragment.get(block, None)

    def __getitem__(self, path: str):
        *subs, name = path.split("/")
        frag = self.fragment
        for sub in subs:
            matches = [f for f, n, _ in frag.subfragments if n == sub]
            if len(matches) != 1:
                raise KeyError(f"{type(self.block).__name__} has no submodule {sub!r} (path {path!r})")
            frag = matches[0]
        found = self._named(frag, name, read=False)
        if len(found) != 1:
            raise KeyError(f"{type(self.block).__name__} assigns {len(found)} signals named {name!r} (path {path!r})")
        return next(iter(found.values()))

    def submodule(self, name: str) -> Probe:
        """The probe of submodule ``name``, its ``block`` the elaboratable the submodule was made from
        (a unit the block builds inside ``elaborate``: its ports are the signals the block drives)."""
        matches = [f for f, n, _ in self.fragment.subfragments if n == name]
        if len(matches) != 1:
            raise KeyError(f"{type(self.block).__name__} has no submodule {name!r}")
        sub = Probe.__new__(Probe)
        sub.fragment = matches[0]
        sub.block = matches[0].origins[0]
        return sub

    def read(self, path: str):
        """A signal the block reads but does not assign (a memory port's data, say), by name as above."""
        *subs, name = path.split("/")
        frag = self.fragment
        for sub in subs:
            frag = next(f for f, n, _ in frag.subfragments if n == sub)
        found = self._named(frag, name, read=True)
        if len(found) != 1:
            raise KeyError(f"{type(self.block).__name__} reads {len(found)} signals named {name!r} (path {path!r})")
        return next(iter(found.values()))

    @staticmethod
    def _named(frag, name, *, read):
        name, _, domain = name.partition("@")       # "name@sync": only the signals that domain assigns
        found = {}
        for dom, stmts in frag.statements.items():
            if domain and dom != domain:
                continue
            for stmt in stmts:
                for sig in (stmt._rhs_signals() if read else stmt._lhs_signals()):
                    if sig.name == name:
                        found[id(sig)] = sig
        return found


def copies_equal(m: Module, probe: Probe, base: str, count: int, register=None) -> None:
    """Assert that the ``count`` copies ``base_0`` .. made by :func:`hdl.fanout.ring_copies` (or
    ``follower_copies``) in ``probe``'s block are equal, and equal to ``register`` when given: true at
    every reachable cycle, and what an induction step needs stated (in an unreachable state the copies
    may differ, and a lane would see another opcode or phase than its neighbours)."""
    copies = [Value.cast(probe[f"{base}_{i}"]) for i in range(count)]
    for copy in copies[1:]:
        m.d.comb += Assert(copy == copies[0])
    if register is not None:
        m.d.comb += Assert(copies[0] == Value.cast(register))
