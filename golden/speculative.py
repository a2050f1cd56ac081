"""Speculative decoding, greedy: the rule, written once (docs/speculative.md).

A drafter proposes up to k tokens; the target model checks them in ONE pass of k + 1 rows of its
sequence (the last accepted token and the k drafts, at consecutive positions: causal, as a prefill
chunk is), accepts the longest prefix of drafts equal to its own greedy choices plus its own next
token, and rolls its KV position back past the rejected rows. Each round yields 1 to k + 1 tokens, and
the tokens are exactly plain greedy decoding's (the target's greedy choice at every position, given
the accepted tokens before it).

Rolling back costs nothing: a pass writes every row's keys and values before any row's attention
reads them, and a row reads positions ``0 .. its own``. The next pass after a rejection starts at
the first rejected position, so every rejected row's KV is overwritten before any row reads it; a
:class:`GoldenRunner` refuses a pass that starts beyond the positions it holds.

Pieces:

* :class:`PassRunner`: what the rule needs of a model: ``run_pass(rows) -> greedy tokens`` (a row is
  ``(token, position)``, one sequence) and ``max_rows``. :class:`GoldenRunner` is the integer model's;
  the instruction-level model's is in :mod:`sim.speculative.runners`.
* :class:`Drafter`: :class:`LookupDrafter` (prompt lookup, on the host, no passes) and
  :class:`ModelDrafter` (a draft model behind a PassRunner).
* :func:`speculative_decode`: prefill, rounds, the record of every pass (:class:`PassRecord`).

At temperature > 0 the rejection-sampling rule over the same passes is
:func:`golden.speculative_sampling.speculative_sample` (golden only; the machine path is greedy).

Pure Python over the runners; imports nothing from ``hdl`` or ``sim``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import InputError
from .greedy import check_prompt
from .numerics import is_int

__all__ = ["DRAFTERS", "Drafter", "GoldenRunner", "LookupDrafter", "ModelDrafter", "PassLog", "PassRecord",
           "PassRunner", "RoundCounts", "SpeculativeResult", "check_draft_len", "lookup_proposal", "pass_chunks",
           "speculative_decode", "tokenizer_difference", "vocabulary_difference"]

#: The drafters by name (``lockstep run --speculative NAME``).
DRAFTERS = ("draft", "lookup")


class PassRunner(Protocol):
    """One model that runs passes of one sequence's rows."""

    #: The most rows one pass may carry.
    max_rows: int
    #: Positions the model holds (its context) and its vocabulary's size.
    max_context: int
    vocab_size: int

    def run_pass(self, rows: Sequence[tuple[int, int]]) -> list[int]:
        """Run ``rows`` (``(token, position)``, consecutive increasing positions) in one pass; return
        each row's greedy next token."""


class GoldenRunner:
    """The integer model (:class:`golden.int_model.IntModel`) as a :class:`PassRunner`, with its KV
    cache. ``max_rows``: the rows a pass may carry (the compiled design's, to run the same passes).

    A pass must start at or before :attr:`valid`, the positions whose KV rows it has written with
    the tokens of the current text: the positions a pass reads below its own first are then all
    valid, and everything from its first position on is rewritten by it (a rollback is a pass
    starting before :attr:`valid`, which then drops to the pass's end)."""

    def __init__(self, model, *, max_rows: int):
        if not is_int(max_rows) or max_rows < 1:
            raise InputError(f"max_rows must be a positive integer, not {max_rows!r}")
        self.model = model
        self.max_rows = max_rows
        self.max_context = model.max_context
        self.vocab_size = model.config.vocab_size
        self.cache = model.new_cache()
        #: Positions 0 .. valid - 1 hold KV rows written by passes.
        self.valid = 0

    def run_pass(self, rows):
        return [int(t) for t in self._run(rows)["next_token"][:, 0]]

    def run_pass_logits(self, rows) -> np.ndarray:
        """Run ``rows`` as :meth:`run_pass` does; return each row's real logits, float64 (rows,
        vocab_size): the int32 logits through the model's ``dequantize_logits``, what the host
        samples from (:mod:`golden.speculative_sampling`)."""
        return self.model.dequantize_logits(self._run(rows)["logits"])

    def _run(self, rows) -> dict[str, np.ndarray]:
        rows = _check_rows(rows, self.max_rows, self.max_context)
        start = rows[0][1]
        if start > self.valid:
            raise InputError(f"a pass must start at or before position {self.valid} (the KV rows written so far), "
                             f"not at {start}")
        self.cache.length = start
        values = self.model.run([t for t, _ in rows], self.cache)
        self.valid = self.cache.length
        return values


@dataclass(frozen=True)
class PassRecord:
    """One pass as it ran: ``model`` ("target" or "draft"), ``rows`` ((token, position), ...),
    the greedy ``tokens`` out (one per row), ``phase`` ("prefill" or "decode")."""

    model: str
    rows: tuple[tuple[int, int], ...]
    tokens: tuple[int, ...]
    phase: str

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(p for _, p in self.rows)


class PassLog:
    """Runs passes and records them in order (:attr:`passes`); :attr:`phase` is stamped on each."""

    def __init__(self):
        self.passes: list[PassRecord] = []
        self.phase = "prefill"

    def run(self, model: str, runner: PassRunner, rows: Sequence[tuple[int, int]]) -> list[int]:
        rows = tuple((int(t), int(p)) for t, p in rows)
        tokens = [int(t) for t in runner.run_pass(rows)]
        self.passes.append(PassRecord(model, rows, tuple(tokens), self.phase))
        return tokens

    def prefill(self, model: str, runner: PassRunner, tokens: Sequence[int], start: int = 0) -> list[int]:
        """``tokens`` at positions ``start ..`` in passes of at most ``runner.max_rows`` rows; every
        row's output."""
        out: list[int] = []
        for rows in pass_chunks(tokens, start, runner.max_rows):
            out += self.run(model, runner, rows)
        return out


def pass_chunks(tokens: Sequence[int], start: int, max_rows: int) -> list[list[tuple[int, int]]]:
    """``tokens`` at positions ``start ..`` as the rows of passes of at most ``max_rows`` rows."""
    return [[(t, start + i + j) for j, t in enumerate(tokens[i:i + max_rows])]
            for i in range(0, len(tokens), max_rows)]


class Drafter:
    """Proposes the tokens that follow a text. :meth:`prefill` sees the prompt once before the first
    proposal; :meth:`propose` returns at most ``k`` tokens (fewer, even none, when it has no guess),
    running any passes through ``log``."""

    name = "drafter"

    def prefill(self, prompt: list[int], log: PassLog) -> None:
        return None

    def propose(self, context: list[int], k: int, log: PassLog) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError


def lookup_proposal(context: Sequence[int], k: int, *, max_ngram: int = 3, min_ngram: int = 1) -> list[int]:
    """Prompt lookup: the longest suffix of ``context`` (``max_ngram`` tokens down to ``min_ngram``)
    that also occurs earlier in it; at its latest earlier occurrence, the up to ``k`` tokens that
    followed. Empty when no suffix recurs."""
    n_tokens = len(context)
    for n in range(min(max_ngram, n_tokens - 1), min_ngram - 1, -1):
        suffix = list(context[n_tokens - n:])
        for start in range(n_tokens - n - 1, -1, -1):   # latest occurrence first, the suffix itself excluded
            if list(context[start:start + n]) == suffix:
                return [int(t) for t in context[start + n:start + n + k]]
    return []


class LookupDrafter(Drafter):
    """Prompt lookup (:func:`lookup_proposal`) on the host: no model, no passes, no accelerator cycles."""

    name = "lookup"

    def __init__(self, *, max_ngram: int = 3, min_ngram: int = 1):
        if not is_int(min_ngram) or not is_int(max_ngram) or not 1 <= min_ngram <= max_ngram:
            raise InputError(f"n-gram sizes must be integers with 1 <= min_ngram <= max_ngram, not "
                             f"{min_ngram!r} and {max_ngram!r}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, context, k, log):
        return lookup_proposal(context, k, max_ngram=self.max_ngram, min_ngram=self.min_ngram)


class ModelDrafter(Drafter):
    """A draft model behind a :class:`PassRunner`, greedy. It remembers which tokens its KV rows
    hold; a proposal first catches up on the text's tokens it has not run (the accepted tokens since
    its last proposal, from the first position where its KV differs from the text) in one pass (more
    if they exceed its max rows), whose last row gives the first draft, then runs single-row steps,
    each feeding the previous draft. Its passes are recorded as model "draft"."""

    name = "draft"

    def __init__(self, runner: PassRunner):
        self.runner = runner
        self.held: list[int] = []    # the token its KV holds at each position

    def prefill(self, prompt, log):
        held = list(prompt[:self.runner.max_context])   # past its context the draft proposes nothing
        log.prefill("draft", self.runner, held)
        self.held = held

    def stale_from(self, context: Sequence[int]) -> int:
        """The first position a proposal after ``context`` runs: where the tokens the draft's KV holds
        first differ from the text, and at most the text's last (it gives the first draft)."""
        pairs = zip(self.held, context, strict=False)
        done = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(self.held), len(context)))
        return min(done, len(context) - 1)

    def drafts_possible(self, context: Sequence[int], k: int) -> int:
        """How many of ``k`` drafts fit the draft's context after ``context`` (its last draft's
        position, ``len(context) + k - 1``, is never run)."""
        return min(k, self.runner.max_context - len(context) + 1)

    def propose(self, context, k, log):
        n = len(context)
        k = self.drafts_possible(context, k)
        if k < 1:
            return []
        done = self.stale_from(context)
        out = log.prefill("draft", self.runner, context[done:], start=done)
        drafts = [out[-1]]
        held = list(context)
        while len(drafts) < k:
            position = n + len(drafts) - 1
            held.append(drafts[-1])
            drafts += log.run("draft", self.runner, [(drafts[-1], position)])
        self.held = held
        return drafts


def vocabulary_difference(target_vocab: int, draft_vocab: int) -> str | None:
    """Why a draft model with ``draft_vocab`` tokens cannot draft a target's of ``target_vocab``, or None."""
    if draft_vocab == target_vocab:
        return None
    return f"its vocabulary has {draft_vocab} tokens, the target's {target_vocab}"


def tokenizer_difference(target, draft) -> str | None:
    """Why a draft model's tokenizer ``draft`` does not read and write ``target``'s tokens, in a few
    words naming the first difference (a token's character, the alphabet's size, the fallback), or None
    when they are the same (both None included): the one rule every speculative check uses."""
    if target == draft:
        return None
    if target is None or draft is None:
        return f"the {'target' if target is None else 'draft'} has no tokenizer and the other has one"
    tc, dc = getattr(target, "chars", None), getattr(draft, "chars", None)
    if tc is None or dc is None:
        return f"{draft!r} against the target's {target!r}"
    for i, (a, b) in enumerate(zip(tc, dc, strict=False)):
        if a != b:
            return f"token {i} is {b!r} in the draft's tokenizer, {a!r} in the target's"
    if len(tc) != len(dc):
        return f"the draft's tokenizer has {len(dc)} characters, the target's {len(tc)}"
    return f"the draft's tokenizer falls back to {draft.fallback!r}, the target's to {target.fallback!r}"


def check_draft_len(k, max_rows: int, limit: str = "the target runner's max_rows") -> int:
    """``k`` drafts a round: an integer from 1 to ``max_rows - 1`` (the verify pass carries k + 1
    rows); InputError naming ``limit`` (what bounds the rows) otherwise."""
    if not is_int(k) or k < 1:
        raise InputError(f"the draft length must be a positive integer, not {k!r}")
    if k > max_rows - 1:
        raise InputError(f"the draft length must be at most {max_rows - 1} ({limit}: {max_rows} rows a pass, one of "
                         f"them the last accepted token's), not {k}")
    return int(k)


class RoundCounts:
    """Counts over ``per_round`` ((proposed, accepted) drafts of each round), for a class that has it."""

    per_round: list[tuple[int, int]]

    @property
    def rounds(self) -> int:
        return len(self.per_round)

    @property
    def proposed(self) -> int:
        return sum(p for p, _ in self.per_round)

    @property
    def accepted(self) -> int:
        return sum(a for _, a in self.per_round)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted over proposed drafts (None when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else None


@dataclass
class SpeculativeResult(RoundCounts):
    """A speculative decode: the generated ``tokens``, every pass in order (``passes``), drafts
    ``proposed`` and ``accepted`` in all, and per round (``per_round``: (proposed, accepted))."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    per_round: list[tuple[int, int]] = field(default_factory=list)


def speculative_decode(target: PassRunner, drafter: Drafter, prompt: Sequence[int], new_tokens: int, k: int, *,
                       on_round: Callable[[list[int]], None] | None = None) -> SpeculativeResult:
    """Generate ``new_tokens`` after ``prompt`` with ``target`` checking ``drafter``'s proposals of up
    to ``k`` tokens: the tokens of plain greedy decoding on ``target``.

    The prompt runs as prefill passes of ``target.max_rows`` rows on the target (its last row gives
    the first new token) and through :meth:`Drafter.prefill`. Then each round: the drafter proposes
    up to k tokens (never more than the tokens still wanted minus one, so nothing is trimmed), the
    target runs the last accepted token and the drafts in one pass, the agreeing prefix of drafts and
    the target's own next token are appended. ``on_round`` gets the new tokens as they are known: the
    prefill's, then each round's. InputError for a bad prompt
    (:func:`golden.greedy.check_prompt`) or k (:func:`check_draft_len`)."""
    prompt = check_prompt(prompt, new_tokens, target.max_context, target.vocab_size)
    k = check_draft_len(k, target.max_rows)
    log = PassLog()
    result = SpeculativeResult(prompt=prompt, passes=log.passes)
    out = log.prefill("target", target, prompt)
    drafter.prefill(prompt, log)
    log.phase = "decode"
    if new_tokens == 0:
        return result
    context = prompt + [out[-1]]
    if on_round is not None:
        on_round(context[-1:])
    while len(context) - len(prompt) < new_tokens:
        wanted = new_tokens - (len(context) - len(prompt))
        drafts = [int(t) for t in drafter.propose(list(context), min(k, wanted - 1), log)][:min(k, wanted - 1)]
        last = len(context) - 1
        rows = [(context[-1], last)] + [(d, last + 1 + i) for i, d in enumerate(drafts)]
        greedy = log.run("target", target, rows)
        accepted = next((i for i, d in enumerate(drafts) if d != greedy[i]), len(drafts))
        new = drafts[:accepted] + [greedy[accepted]]
        context += new
        result.per_round.append((len(drafts), accepted))
        if on_round is not None:
            on_round(new)
    result.tokens = context[len(prompt):]
    return result


def _check_rows(rows, max_rows: int, max_context: int) -> list[tuple[int, int]]:
    rows = [(int(t), int(p)) for t, p in rows]
    if not 1 <= len(rows) <= max_rows:
        raise InputError(f"a pass must have 1 to {max_rows} rows, not {len(rows)}")
    for i, (_, p) in enumerate(rows):
        if not 0 <= p < max_context:
            raise InputError(f"pass row {i}: position must be in [0, {max_context - 1}], not {p}")
        if i and p != rows[i - 1][1] + 1:
            raise InputError(f"pass row {i}: rows must be at consecutive increasing positions, not "
                             f"{rows[i - 1][1]} then {p}")
    return rows
