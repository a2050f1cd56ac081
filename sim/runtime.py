"""The runtime: one host decode loop, several backends behind one interface.

A run: load a checkpoint, quantize it, compile it for a configuration, load the backend's memories
once, then feed the prompt through the decode step one token at a time (prefill) and generate.
Every step reports the token, the cycles the cycle model predicts for it and, where the backend
measures them, the cycles it took.

Backends today:

* ``golden``: the integer model (:class:`golden.int_model.IntModel`), the specification;
* ``isa``: the instruction-level model (:class:`sim.isa_sim.IsaMachine`) running the compiled
  program on its memory images.

The RTL backends (``amaranth``, ``icarus``, ``verilator``, and ``serial`` for a board) plug in
behind the same :class:`Backend` interface when the decode top level lands (docs/roadmap.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .compiler import Compiled, compile_model
from .cycles import decode_step_cycles

__all__ = ["BACKENDS", "Backend", "RunReport", "StepReport", "check_request", "decode", "prepare"]


class Backend:
    """One decode step at a time: ``step(token, position) -> (next token, measured cycles or None)``."""

    name = "backend"

    def __init__(self, compiled: Compiled):
        self.compiled = compiled

    def step(self, token: int, position: int) -> tuple[int, int | None]:  # pragma: no cover - interface
        raise NotImplementedError


class GoldenBackend(Backend):
    name = "golden"

    def __init__(self, compiled: Compiled):
        super().__init__(compiled)
        self.model = compiled.model
        self.cache = self.model.new_cache()

    def step(self, token, position):
        if position != self.cache.length:
            raise ValueError(f"golden backend steps in order: expected position {self.cache.length}, not {position}")
        values = self.model.run([token], self.cache)
        return int(values[self.compiled.token_value][-1, 0]), None


class IsaBackend(Backend):
    name = "isa"

    def __init__(self, compiled: Compiled):
        from .isa_sim import IsaMachine

        super().__init__(compiled)
        self.machine = IsaMachine(compiled)

    def step(self, token, position):
        return self.machine.step(token, position), None


BACKENDS: dict[str, Callable[[Compiled], Backend]] = {"golden": GoldenBackend, "isa": IsaBackend}


@dataclass
class StepReport:
    position: int
    token_in: int
    token_out: int
    predicted_cycles: int
    measured_cycles: int | None
    wall_seconds: float
    generated: bool


@dataclass
class RunReport:
    backend: str
    clock_hz: int
    prompt: list[int]
    generated: list[int] = field(default_factory=list)
    steps: list[StepReport] = field(default_factory=list)
    lower_bound: float = 0.0

    @property
    def predicted_cycles_per_token(self) -> float:
        return sum(s.predicted_cycles for s in self.steps) / max(1, len(self.steps))

    @property
    def tokens_per_second(self) -> float:
        """At the configured clock, from the predicted cycles (every step counts: prefill runs the same step)."""
        return self.clock_hz / self.predicted_cycles_per_token

    @property
    def efficiency(self) -> float:
        return self.lower_bound / self.predicted_cycles_per_token

    def as_dict(self) -> dict:
        return {
            "backend": self.backend, "prompt": self.prompt, "generated": self.generated,
            "clock_hz": self.clock_hz, "steps": len(self.steps),
            "predicted_cycles_per_token": self.predicted_cycles_per_token,
            "measured_cycles": [s.measured_cycles for s in self.steps],
            "tokens_per_second_at_clock": self.tokens_per_second,
            "lower_bound_cycles": self.lower_bound, "efficiency": self.efficiency,
            "wall_seconds": sum(s.wall_seconds for s in self.steps),
        }


def prepare(checkpoint, config) -> Compiled:
    """Quantize ``checkpoint`` with its default calibration and compile it for ``config``."""
    from golden.quantize import quantize_checkpoint

    return compile_model(quantize_checkpoint(checkpoint), config)


def check_request(compiled: Compiled, backend: str, prompt: Sequence[int], new_tokens: int) -> tuple[list[int], int]:
    """Check a run before anything starts; return the prompt as ints and the number of steps."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    prompt = [int(t) for t in prompt]
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 0:
        raise ValueError(f"tokens must be a non-negative integer, not {new_tokens!r}")
    model = compiled.model
    vocab = model.config.vocab_size
    for t in prompt:
        if not 0 <= t < vocab:
            raise ValueError(f"prompt token must be in 0..{vocab - 1}, not {t}")
    steps = len(prompt) + max(new_tokens, 1) - 1
    if steps > model.max_context:
        raise ValueError(f"prompt ({len(prompt)} tokens) plus {new_tokens} new tokens needs {steps} positions, "
                         f"more than the context of {model.max_context}")
    return prompt, steps


def decode(compiled: Compiled, backend: str, prompt: Sequence[int], new_tokens: int, *,
           on_step: Callable[[StepReport], None] | None = None) -> RunReport:
    """Prefill ``prompt`` then generate ``new_tokens`` greedily on ``backend``.

    Raises ValueError for an unknown backend, an empty prompt, a token outside the vocabulary or a
    run longer than the compiled context.
    """
    prompt, steps = check_request(compiled, backend, prompt, new_tokens)
    model = compiled.model
    runner = BACKENDS[backend](compiled)
    report = RunReport(backend=backend, clock_hz=compiled.config.clock_hz, prompt=prompt)
    tokens = list(prompt)
    bounds = []
    for position in range(steps):
        predicted = decode_step_cycles(model.program, model.config, compiled.config, position=position)
        bounds.append(predicted.lower_bound)
        t0 = time.perf_counter()
        nxt, measured = runner.step(tokens[position], position)
        wall = time.perf_counter() - t0
        generated = position >= len(prompt) - 1 and len(report.generated) < new_tokens
        if generated:
            report.generated.append(nxt)
            tokens.append(nxt)
        step = StepReport(position, tokens[position], nxt, predicted.total, measured, wall, generated)
        report.steps.append(step)
        if on_step is not None:
            on_step(step)
    report.lower_bound = sum(bounds) / len(bounds)
    return report
