"""``run_speculative``: a speculative decode on a backend, its passes priced, checked against plain
greedy decoding on the same backend (docs/speculative.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from golden.errors import InputError
from golden.speculative import LookupDrafter, ModelDrafter, speculative_decode

from ..runtime import decode
from .options import check_backend, check_draft_len_for, check_drafter
from .report import SpeculativePass, SpeculativeReport
from .runners import pass_runner

__all__ = ["run_speculative"]


def run_speculative(compiled, backend: str, prompt: Sequence[int], new_tokens: int, *, drafter: str = "lookup",
                    draft_len: int = 4, draft=None, slots: tuple[int, int] = (0, 0),
                    on_round: Callable[[list[int]], None] | None = None) -> SpeculativeReport:
    """Generate ``new_tokens`` after ``prompt`` on ``backend`` ("golden" or "isa") with the target
    ``compiled`` (a :class:`sim.machine.compiler.Compiled`) checking ``drafter``'s proposals ("lookup",
    or "draft": the draft model ``draft``, a Compiled for the same design) of up to ``draft_len``
    tokens; ``slots``: the KV slots of the target's and the draft's rows. Every pass is priced by the
    cycle model; plain greedy decoding runs on the same backend for the comparison and the baseline.
    ``on_round`` gets each round's new tokens. InputError in one line for a bad option."""
    check_drafter(drafter)
    check_backend(backend)
    k = check_draft_len_for(draft_len, compiled)
    if (drafter == "draft") != (draft is not None):
        raise InputError("the draft drafter needs a draft model, and only it takes one" if draft is None else
                         f"a draft model goes with the draft drafter, not {drafter}")
    target = pass_runner(backend, compiled, slot=slots[0])
    runners = {"target": target}
    if drafter == "draft":
        runners["draft"] = pass_runner(backend, draft, slot=slots[1])
        chosen = ModelDrafter(runners["draft"])
    else:
        chosen = LookupDrafter()
    result = speculative_decode(target, chosen, prompt, new_tokens, k, on_round=on_round)
    passes = [SpeculativePass(p.model, tuple((r.token, r.position, r.slot) for r in runners[p.model].triples(p.rows)),
                              p.tokens,
                              runners[p.model].predicted_cycles(p.positions), p.phase) for p in result.passes]
    plain = decode(compiled, backend, result.prompt, new_tokens)
    return SpeculativeReport(backend=backend, drafter=drafter, draft_len=k, clock_hz=compiled.config.clock_hz,
                             prompt=result.prompt, tokens=result.tokens, passes=passes, per_round=result.per_round,
                             plain_tokens=list(plain.generated),
                             plain_step_cycles=[s.predicted_cycles for s in plain.steps],
                             config=compiled.config.as_dict())
