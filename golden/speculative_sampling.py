"""Speculative sampling at temperature > 0: the standard rejection rule (Leviathan et al. 2023, Chen et
al. 2023), whose tokens are distributed exactly as plain sampling's (docs/speculative.md, "Sampling at
temperature > 0").

A round: the drafter proposes drafts ``x_1 .. x_k``, draft ``x_i`` drawn from the draft model's
distribution ``q_i`` at its position; the target runs the last accepted token and the drafts in one
pass (as greedy speculative decoding does, :mod:`golden.speculative`), which gives its distribution
``p_i`` at every position. Draft ``x_i`` is accepted with probability ``min(1, p_i(x_i) / q_i(x_i))``;
at the first rejection the round's last token is drawn from the residual ``norm(max(0, p_i - q_i))``;
when all k are accepted, a bonus token is drawn from ``p_{k+1}``. Every emitted token is then
distributed as ``p`` given the tokens before it: the rule changes the cost of a token, never its law.

Both distributions come from one rule, :func:`golden.model.sampling_probs` (softmax of the logits
over the temperature; temperature 0 is one-hot at the argmax, and the run is then plain greedy
decoding, token for token). The logits are the integer model's, dequantized
(:meth:`golden.speculative.GoldenRunner.run_pass_logits`).

Drafters: a :class:`golden.speculative.ModelDrafter` draws its drafts from its model's ``q`` (same
temperature); any other :class:`golden.speculative.Drafter` (prompt lookup) proposes deterministic
tokens, so its ``q`` is one-hot at the draft and the rule reduces to "accept with probability
``p(x)``, else draw from ``p`` with ``x`` removed", exact as well.

One ``numpy.random.default_rng(seed)`` draws everything in a fixed order (each round: the drafts, then
one uniform per checked draft, then the last token), so a run is reproducible from its seed. Golden
layer: imports nothing from ``hdl`` or ``sim``; the machine path (isa, RTL) stays greedy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .greedy import check_prompt
from .model import check_temperature, draw, sampling_probs
from .numerics import is_int
from .speculative import Drafter, ModelDrafter, PassLog, PassRunner, RoundCounts, check_draft_len, pass_chunks

__all__ = ["SampledResult", "accept_probability", "residual", "speculative_sample", "verify_sampled"]


def accept_probability(p_x, q_x):
    """``min(1, p_x / q_x)``: the chance a draft drawn with probability ``q_x > 0`` is kept when the
    target gives it ``p_x``. Exact on :class:`fractions.Fraction` inputs."""
    return min(1, p_x / q_x)


def residual(p, q) -> np.ndarray:
    """``norm(max(0, p - q))``: the distribution the round's last token is drawn from after a rejection.
    A rejection needs ``q(x) > p(x)`` for the draft, so the mass is positive in exact arithmetic;
    should rounding leave none, ``p`` itself. Exact on arrays of :class:`fractions.Fraction`."""
    r = np.maximum(np.asarray(p) - np.asarray(q), 0)
    total = r.sum()
    return r / total if total > 0 else np.asarray(p)


def verify_sampled(drafts: Sequence[int], q: Sequence[np.ndarray], p: Sequence[np.ndarray],
                   rng: np.random.Generator) -> tuple[int, int]:
    """One round's check: ``drafts`` (k tokens), the draft distributions ``q`` (k rows: ``q[i]`` the one
    ``drafts[i]`` was drawn from) and the target's ``p`` (k + 1 rows, one per position of the verify
    pass). Returns (accepted drafts, the round's last token: the residual's draw at the first
    rejection, else the bonus token drawn from ``p[k]``)."""
    for i, x in enumerate(drafts):
        if rng.random() >= accept_probability(p[i][x], q[i][x]):
            return i, draw(residual(p[i], q[i]), rng)
    return len(drafts), draw(p[len(drafts)], rng)


@dataclass
class SampledResult(RoundCounts):
    """A speculative sampling run: the generated ``tokens``, drafts per round (``per_round``:
    (proposed, accepted)), and the passes each model ran (``target_passes``, ``draft_passes``)."""

    prompt: list[int]
    temperature: float
    seed: int
    tokens: list[int] = field(default_factory=list)
    per_round: list[tuple[int, int]] = field(default_factory=list)
    target_passes: int = 0
    draft_passes: int = 0


def _logits(runner, what: str) -> None:
    if not callable(getattr(runner, "run_pass_logits", None)):
        raise InputError(f"speculative sampling needs the {what}'s logits: a runner with run_pass_logits "
                         f"(GoldenRunner), not {type(runner).__name__}")


def speculative_sample(target: PassRunner, drafter: Drafter, prompt: Sequence[int], new_tokens: int, k: int, *,
                       temperature: float, seed: int) -> SampledResult:
    """Generate ``new_tokens`` after ``prompt`` by speculative sampling at ``temperature``: ``target``
    checks ``drafter``'s proposals of up to ``k`` tokens with :func:`verify_sampled`. Tokens are
    distributed as plain sampling from ``target`` at ``temperature`` (not the same draws: the random
    stream is consumed differently); temperature 0 gives plain greedy decoding's tokens.

    Passes as in :func:`golden.speculative.speculative_decode`: the prompt in chunks of
    ``target.max_rows`` rows (its last row's distribution gives the first token), then rounds of one
    verify pass of up to k + 1 rows, never drafting more than the tokens still wanted minus one.
    ``target`` (and a :class:`ModelDrafter`'s runner) must give logits (``run_pass_logits``, as
    :class:`golden.speculative.GoldenRunner` does). InputError for a bad prompt, k, temperature, seed
    or runner."""
    prompt = check_prompt(prompt, new_tokens, target.max_context, target.vocab_size)
    k = check_draft_len(k, target.max_rows)
    temperature = check_temperature(temperature)
    if not is_int(seed) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, not {seed!r}")
    _logits(target, "target")
    sampled = isinstance(drafter, ModelDrafter)
    if sampled:
        _logits(drafter.runner, "draft model")
    rng = np.random.default_rng(seed)
    result = SampledResult(prompt=prompt, temperature=temperature, seed=int(seed))

    def probs(logits):
        return sampling_probs(logits, temperature=temperature)

    def target_pass(rows):
        result.target_passes += 1
        return probs(target.run_pass_logits(rows))

    log = PassLog()
    p_last = [target_pass(rows) for rows in pass_chunks(prompt, 0, target.max_rows)][-1][-1]
    drafter.prefill(prompt, log)
    if new_tokens == 0:
        result.draft_passes = len(log.passes)
        return result
    context = prompt + [draw(p_last, rng)]
    while len(context) - len(prompt) < new_tokens:
        wanted = min(k, new_tokens - (len(context) - len(prompt)) - 1)
        if sampled:
            drafts, q = _draw_drafts(drafter, context, wanted, probs, rng, result)
        else:
            drafts = [int(t) for t in drafter.propose(list(context), wanted, log)][:wanted]
            q = [np.eye(target.vocab_size)[d] for d in drafts]
        last = len(context) - 1
        p = target_pass([(context[-1], last)] + [(d, last + 1 + i) for i, d in enumerate(drafts)])
        accepted, token = verify_sampled(drafts, q, p, rng)
        context += drafts[:accepted] + [token]
        result.per_round.append((len(drafts), accepted))
    result.draft_passes += len(log.passes)
    result.tokens = context[len(prompt):]
    return result


def _draw_drafts(drafter: ModelDrafter, context: list[int], k: int, probs, rng: np.random.Generator,
                 result: SampledResult) -> tuple[list[int], list[np.ndarray]]:
    """A draft model's proposal, sampled: it catches up on the text's tokens its KV does not hold
    (:meth:`ModelDrafter.stale_from`), draws the first draft from its last row's ``q``, then one
    single-row step per further draft, each feeding the previous one; (drafts, their ``q`` rows)."""
    n, runner = len(context), drafter.runner
    k = drafter.drafts_possible(context, k)
    if k < 1:
        return [], []
    done = drafter.stale_from(context)
    for rows in pass_chunks(context[done:], done, runner.max_rows):
        logits = runner.run_pass_logits(rows)[-1]
        result.draft_passes += 1
    q = [probs(logits)]
    drafts = [draw(q[-1], rng)]
    held = list(context)
    while len(drafts) < k:
        held.append(drafts[-1])
        q.append(probs(runner.run_pass_logits([(drafts[-1], n + len(drafts) - 1)])[0]))
        result.draft_passes += 1
        drafts.append(draw(q[-1], rng))
    drafter.held = held
    return drafts, q
