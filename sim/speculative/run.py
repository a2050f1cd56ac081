"""``run_speculative``: a speculative decode on a backend, its passes priced, checked against plain
greedy decoding on the same backend (docs/speculative.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from golden.errors import InputError
from golden.speculative import LookupDrafter, ModelDrafter, speculative_decode, vocabulary_difference

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
    ``on_round`` gets the new tokens as they are known (the prefill's, then each round's). InputError in
    one line for a bad option (the drafter, the backend, the draft length, a draft model compiled for
    another design or with another vocabulary)."""
    check_drafter(drafter)
    check_backend(backend)
    k = check_draft_len_for(draft_len, compiled)
    if (drafter == "draft") != (draft is not None):
        raise InputError("the draft drafter needs a draft model, and only it takes one" if draft is None else
                         f"a draft model goes with the draft drafter, not {drafter}")
    if draft is not None:
        if draft.config != compiled.config:
            raise InputError("the draft model must be compiled for the target's design")
        why = vocabulary_difference(compiled.model.config.vocab_size, draft.model.config.vocab_size)
        if why is not None:
            raise InputError(f"the draft model: {why}; a draft model must share the target's vocabulary")
    target = pass_runner(backend, compiled, slot=slots[0])
    runners = {"target": target}
    if drafter == "draft":
        runners["draft"] = pass_runner(backend, draft, slot=slots[1])
        chosen = ModelDrafter(runners["draft"])
    else:
        chosen = LookupDrafter()
    result = speculative_decode(target, chosen, prompt, new_tokens, k, on_round=on_round)
    passes = []
    for p in result.passes:
        runner = runners[p.model]
        rows = tuple((r.token, r.position, r.slot) for r in runner.triples(p.rows))
        passes.append(SpeculativePass(p.model, rows, p.tokens, runner.predicted_cycles(p.positions), p.phase))
    plain = decode(compiled, backend, result.prompt, new_tokens)
    return SpeculativeReport(backend=backend, drafter=drafter, draft_len=k, clock_hz=compiled.config.clock_hz,
                             prompt=result.prompt, tokens=result.tokens, passes=passes, per_round=result.per_round,
                             plain_tokens=list(plain.generated),
                             plain_step_cycles=[s.predicted_cycles for s in plain.steps],
                             config=compiled.config.as_dict())
