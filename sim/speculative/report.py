"""What a speculative decode reports: every pass (what an RTL replay needs) and the figures.

Phases: the prompt runs as prefill passes (the target's, in chunks of its max rows, and the draft
model's), whose target's last row gives the first new token; every later token comes from the
decode phase (draft passes and verify passes). Plain decoding has the same first token from its
prompt and runs one single-row step per further token, so the comparison is over the decode phase:
``decode_tokens`` = generated tokens - 1, and the prefill is reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from golden.speculative import RoundCounts

__all__ = ["SpeculativePass", "SpeculativeReport"]


@dataclass(frozen=True)
class SpeculativePass:
    """One pass: ``model`` ("target" or "draft"), ``rows`` ((token, position, slot), ...), the greedy
    ``tokens`` out (one per row), the cycle model's ``predicted_cycles``, ``phase`` ("prefill" or
    "decode")."""

    model: str
    rows: tuple[tuple[int, int, int], ...]
    tokens: tuple[int, ...]
    predicted_cycles: int
    phase: str
    #: The RTL's cycle counter for this pass, when the run was replayed on a simulator
    #: (:func:`sim.speculative.rtl.confirm_speculative_on_rtl`; equal to ``predicted_cycles`` there).
    measured_cycles: int | None = None

    def as_dict(self) -> dict:
        return {"model": self.model, "rows": [list(r) for r in self.rows], "tokens": list(self.tokens),
                "predicted_cycles": self.predicted_cycles, "measured_cycles": self.measured_cycles,
                "phase": self.phase}


def _ratio(a, b):
    return a / b if b else None


@dataclass
class SpeculativeReport(RoundCounts):
    """A speculative decode on one backend and design, against plain greedy decoding there."""

    backend: str
    drafter: str
    draft_len: int
    clock_hz: int
    prompt: list[int]
    tokens: list[int]
    passes: list[SpeculativePass]
    #: Drafts proposed and accepted, in all and per round ((proposed, accepted) each).
    per_round: list[tuple[int, int]]
    #: Plain greedy decoding's tokens on the same backend, and its predicted cycles per step by position.
    plain_tokens: list[int]
    plain_step_cycles: list[int]
    text: str | None = None
    #: The design point's configuration fields (:meth:`hdl.config.Config.as_dict`).
    config: dict = field(default_factory=dict)
    #: After an RTL replay (:func:`sim.speculative.rtl.confirm_speculative_on_rtl`): the simulator, what
    #: it ran, and that every pass's tokens and cycles equalled the models'; None before.
    rtl: dict | None = None
    #: After an RTL replay: the measured cycles of plain decoding's decode-phase steps (single rows).
    plain_measured: list[int] | None = None

    @property
    def cycle_exact(self) -> bool | None:
        """Every replayed pass and plain step measured what the cycle model predicted (None: not replayed)."""
        if self.rtl is None:
            return None
        plain = self.plain_step_cycles[len(self.prompt):len(self.prompt) + len(self.plain_measured or [])]
        return (all(p.measured_cycles == p.predicted_cycles for p in self.passes)
                and list(self.plain_measured or []) == plain)

    @property
    def identical(self) -> bool:
        """The speculative tokens equal plain greedy decoding's, compared."""
        return self.tokens == self.plain_tokens

    @property
    def decode_tokens(self) -> int:
        """Generated tokens after the first (the prefill's): what the decode phase produced."""
        return max(len(self.tokens) - 1, 0)

    def cycles(self, model: str, phase: str) -> int:
        return sum(p.predicted_cycles for p in self.passes if p.model == model and p.phase == phase)

    @property
    def draft_cycles(self) -> int:
        return self.cycles("draft", "decode")

    @property
    def verify_cycles(self) -> int:
        return self.cycles("target", "decode")

    @property
    def speculative_cycles(self) -> int:
        return self.draft_cycles + self.verify_cycles

    @property
    def prefill_cycles(self) -> dict[str, int]:
        return {"target": self.cycles("target", "prefill"), "draft": self.cycles("draft", "prefill")}

    @property
    def plain_cycles(self) -> int:
        """Plain decoding's decode phase: its single-row steps at the positions after the prompt."""
        return sum(self.plain_step_cycles[len(self.prompt):])

    @property
    def plain_prefill_cycles(self) -> int:
        return sum(self.plain_step_cycles[:len(self.prompt)])

    @property
    def tokens_per_target_pass(self) -> float | None:
        """Decode-phase tokens per verify pass (1 to draft_len + 1)."""
        return _ratio(self.decode_tokens, self.rounds)

    @property
    def cycles_per_token(self) -> dict[str, float | None]:
        n = self.decode_tokens
        return {"draft": _ratio(self.draft_cycles, n), "verify": _ratio(self.verify_cycles, n),
                "total": _ratio(self.speculative_cycles, n), "plain": _ratio(self.plain_cycles, n)}

    @property
    def speedup(self) -> float | None:
        """Plain cycles over speculative cycles, decode phase."""
        return _ratio(self.plain_cycles, self.speculative_cycles)

    @property
    def tokens_per_second(self) -> dict[str, float | None]:
        """Decode-phase tokens a second at the design's clock, speculative and plain."""
        per = self.cycles_per_token
        return {"speculative": _ratio(self.clock_hz, per["total"]), "plain": _ratio(self.clock_hz, per["plain"])}

    def as_dict(self) -> dict:
        return {
            "backend": self.backend, "drafter": self.drafter, "draft_len": self.draft_len, "clock_hz": self.clock_hz,
            "prompt": self.prompt, "generated": self.tokens, "text": self.text, "identical": self.identical,
            "plain_generated": self.plain_tokens,
            "rounds": self.rounds, "proposed": self.proposed, "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate, "decode_tokens": self.decode_tokens,
            "tokens_per_target_pass": self.tokens_per_target_pass,
            "cycles": {"draft": self.draft_cycles, "verify": self.verify_cycles, "speculative": self.speculative_cycles,
                       "plain": self.plain_cycles, "prefill": self.prefill_cycles,
                       "plain_prefill": self.plain_prefill_cycles},
            "cycles_per_token": self.cycles_per_token, "speedup": self.speedup,
            "tokens_per_second_at_clock": self.tokens_per_second,
            "passes": [p.as_dict() for p in self.passes], "per_round": [list(r) for r in self.per_round],
            "design": {"config": self.config}, "rtl": self.rtl, "cycle_exact": self.cycle_exact,
            "plain_measured_cycles": self.plain_measured,
        }
