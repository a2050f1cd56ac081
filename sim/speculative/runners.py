"""The passes of speculative decoding on a backend, each priced by the cycle model.

A runner is a :class:`golden.speculative.PassRunner` (``run_pass(rows) -> greedy tokens``, rows
``(token, position)`` of one sequence) over one compiled model, that also says what a pass costs:
:meth:`predicted_cycles` is :func:`sim.machine.cycles.pass_cycles` of the pass's positions on the
compiled design. Every row of a runner goes to its KV ``slot`` (:class:`sim.machine.passes.Row`).
"""

from __future__ import annotations

from golden.speculative import GoldenRunner

from ..machine.cycles import pass_cycles
from ..machine.isa_sim import IsaMachine
from ..machine.passes import Row, check_pass

__all__ = ["BACKENDS", "GoldenPassRunner", "IsaPassRunner", "pass_runner"]


class _Priced:
    """The cycle model's count of a pass of ``compiled`` at given positions (memoized)."""

    def _price(self, compiled, slot: int) -> None:
        self.compiled = compiled
        self.slot = slot
        self._memo: dict[tuple[int, ...], int] = {}

    def predicted_cycles(self, positions) -> int:
        key = tuple(positions)
        if key not in self._memo:
            c = self.compiled
            self._memo[key] = pass_cycles(c.program, c.model.config, c.config, positions=list(key)).total
        return self._memo[key]

    def triples(self, rows) -> tuple[Row, ...]:
        """``rows`` ((token, position) pairs) as the machine's rows in this runner's slot, checked
        (:func:`sim.machine.passes.check_pass`)."""
        return check_pass(self.compiled, [Row(int(t), int(p), self.slot) for t, p in rows])


class IsaPassRunner(_Priced):
    """The instruction-level model (:class:`sim.machine.isa_sim.IsaMachine`) of ``compiled``."""

    name = "isa"

    def __init__(self, compiled, *, slot: int = 0):
        self._price(compiled, slot)
        self.machine = IsaMachine(compiled)
        self.max_rows = compiled.max_rows
        self.max_context = compiled.model.max_context
        self.vocab_size = compiled.model.config.vocab_size

    def run_pass(self, rows):
        return [int(t) for t in self.machine.run_pass(self.triples(rows))]


class GoldenPassRunner(GoldenRunner, _Priced):
    """The integer model of ``compiled`` (:class:`golden.speculative.GoldenRunner`), passes of at most
    the compiled design's rows, so it runs the same passes as the machine."""

    name = "golden"

    def __init__(self, compiled, *, slot: int = 0):
        GoldenRunner.__init__(self, compiled.model, max_rows=compiled.max_rows)
        self._price(compiled, slot)

    def run_pass(self, rows):
        self.triples(rows)
        return GoldenRunner.run_pass(self, rows)


#: The backends speculative decoding runs on, by name.
BACKENDS = {"golden": GoldenPassRunner, "isa": IsaPassRunner}


def pass_runner(backend: str, compiled, *, slot: int = 0):
    """The runner of ``backend`` (one of :data:`BACKENDS`, :func:`sim.speculative.options.check_backend`)
    for ``compiled``, its rows in KV slot ``slot``."""
    return BACKENDS[backend](compiled, slot=slot)
