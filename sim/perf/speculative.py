"""Projection of greedy speculative decoding: tokens/s of a target model with a draft model.

A pass drafts ``k`` tokens with the draft model (``k`` decode steps of it) and verifies them with
one pass of the target over ``k + 1`` rows of the sequence (the last accepted token and the ``k``
drafts, causal: the multi-token pass of a prefill chunk, :func:`sim.perf.model.row_pass`). With a
per-token acceptance ``a`` (each drafted token equals the target's greedy choice with probability
``a``, independently), a pass yields the accepted prefix plus the target's own next token::

    E(a, k) = 1 + a + a^2 + ... + a^k = (1 - a^(k+1)) / (1 - a)      (k + 1 at a = 1)

    tokens/s = E(a, k) / (k * draft step + verify pass of k + 1 rows)

The draft step is the draft model's decode estimate (:func:`sim.perf.model.estimate`, batch 1, the
mean over the context) on the same hardware, sharded like the target (same chips, stages and
tensor parallelism); the verify pass is the target's pass of ``k + 1`` rows at positions p..p+k,
averaged over the positions p of the context (the cycle model is affine in the position, so the
mean is exact). Both models' weights (and KV caches where the weights' memory holds them) must fit
together in the memory level that holds the target's. ``k`` is at most the design's ``max_m - 1``
(a verify pass is at most ``max_m`` rows); without a given ``k`` every one is tried and the best
reported. Plain decoding is the target's own batch-1 estimate. The acceptance is an input here:
given, or measured from the integer models on text (:func:`golden.quality.draft_agreement`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from golden.checkpoint import load_checkpoint
from golden.errors import InputError
from golden.model import ModelConfig
from golden.quality import draft_agreement, held_out_tokens
from golden.quantize import quantize_checkpoint
from golden.speculative import check_draft_len, tokenizer_difference, vocabulary_difference

from ..numbers import count, number, quantity
from .model import (
    Hardware,
    HardwareError,
    estimate,
    place,
    resolve_model,
    row_pass,
    show_number,
    sum_local_positions,
)

__all__ = ["Speculative", "check_acceptance", "expected_tokens", "format_speculative",
           "measured_acceptance", "required_acceptance", "speculative_estimate"]


def check_acceptance(a) -> float:
    """``a`` as a float, or InputError unless it is a number in [0, 1]."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or not 0 <= a <= 1:
        raise InputError(f"acceptance must be a number from 0 to 1, not {show_number(a)}")
    return float(a)


def expected_tokens(a: float, k: int) -> float:
    """Tokens a pass yields on average: ``(1 - a^(k+1)) / (1 - a)``, ``k + 1`` at ``a = 1``."""
    a = check_acceptance(a)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"draft length must be a non-negative integer, not {show_number(k)}")
    return float(k + 1) if a == 1 else (1 - a ** (k + 1)) / (1 - a)


@dataclass(frozen=True)
class Speculative:
    """One projection: plain decoding against speculative decoding at ``draft_len``; ``sweep`` holds
    (k, expected tokens a pass, seconds a pass, tokens/s) of every k tried."""

    target: str
    draft: str
    hardware: str
    context: int
    acceptance: float
    draft_len: int
    chosen: bool                      # True: draft_len is the best of the sweep, not given
    plain_step_seconds: float         # the target's decode step (batch 1)
    plain_tokens_per_s: float
    draft_step_seconds: float         # the draft's decode step (batch 1)
    verify_seconds: float             # the target's pass of draft_len + 1 rows
    pass_seconds: float               # draft_len draft steps + the verify pass
    expected_tokens: float            # E(acceptance, draft_len)
    tokens_per_s: float
    speedup: float
    sweep: tuple = ()
    weight_bytes_per_chip: float = 0.0    # both models' weights on the most loaded chip

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sweep"] = [dict(zip(("draft_len", "expected_tokens", "pass_seconds", "tokens_per_s"), row, strict=True))
                      for row in self.sweep]
        return d


def measured_acceptance(target_dir, draft_dir) -> tuple[int, int]:
    """``(agree, total)``: the teacher-forced greedy agreement of the two checkpoints' integer models
    (quantized with their default calibration, :func:`golden.quantize.calibration_for`) on the demo
    corpus's held-out text (:func:`golden.quality.draft_agreement`). InputError unless both are
    checkpoint directories with the same character tokenizer (the text must encode with it)."""


    for what, d in (("target", target_dir), ("draft", draft_dir)):
        if isinstance(d, ModelConfig) or not Path(d).is_dir():
            raise InputError(f"--acceptance measured needs the {what} model as a checkpoint directory, not {d}")
    target, draft = load_checkpoint(target_dir), load_checkpoint(draft_dir)
    for what, ck in (("target", target), ("draft", draft)):
        if ck.tokenizer is None:
            raise InputError(f"--acceptance measured needs a Lockstep character tokenizer: the {what} {ck.path} "
                             f"has none")
    why = tokenizer_difference(target.tokenizer, draft.tokenizer)
    if why is not None:
        raise InputError(f"draft {draft.path} has another tokenizer than the target {target.path} ({why}): it "
                         f"cannot draft its tokens")
    return draft_agreement(quantize_checkpoint(target), quantize_checkpoint(draft),
                           held_out_tokens(target.tokenizer))


def required_acceptance(s: Speculative, tokens_per_s: float) -> tuple[float, int] | None:
    """The least acceptance at which some draft length of ``s.sweep`` reaches ``tokens_per_s``, and
    that length (the shortest of equals); None when none does even at acceptance 1. A pass's time
    does not depend on the acceptance, so each k needs ``E(a, k) >= tokens_per_s * pass seconds``;
    E grows with a, and a is found by bisection to 1e-12."""
    if isinstance(tokens_per_s, bool) or not isinstance(tokens_per_s, (int, float)) \
            or not math.isfinite(tokens_per_s) or tokens_per_s <= 0:
        raise InputError(f"tokens/s to reach must be a positive number, not {show_number(tokens_per_s)}")
    found = []
    for k, _, seconds, _ in s.sweep:
        need = tokens_per_s * seconds
        if need > k + 1:
            continue
        lo, hi = 0.0, 1.0
        while hi - lo > 1e-12:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if expected_tokens(mid, k) >= need else (mid, hi)
        found.append((0.0 if need <= 1 else hi, k))
    return min(found) if found else None


def _fit(target: ModelConfig, draft: ModelConfig, hw: Hardware, *, context: int, names: tuple[str, str]) -> float:
    """Both models' weights a chip, or HardwareError when they do not fit together in the target's
    memory level (with both KV caches where that level holds them)."""
    home, per_t, kv_t = place(target, hw, context=context, name=names[0])
    _, per_d, kv_d = place(draft, hw, context=context, name=names[1])
    need = per_t + per_d + ((kv_t + kv_d) if home.holds_kv else 0)
    if need > home.capacity_bytes:
        raise HardwareError(f"draft {names[1]} does not fit beside {names[0]} on {hw.name}: "
                            f"{quantity(need, 'B')} a chip in {home.name}, which holds "
                            f"{quantity(home.capacity_bytes, 'B')}")
    return per_t + per_d


def _verify_seconds(base, clock_hz: float, *, rows: int, context: int, split: int) -> float:
    """Mean seconds of a pass of ``rows`` rows at positions p..p+rows-1 over p in 0..context-1:
    the rows' local positions summed, averaged over p (exact, the pass being affine in them)."""
    c0, slope, overhead = base(rows)
    positions = sum(sum_local_positions(context + i, split) - sum_local_positions(i, split)
                    for i in range(rows)) / context
    return (c0 + slope * positions) / clock_hz + overhead


def speculative_estimate(target, draft, hw: Hardware, *, acceptance: float, max_draft_len: int,
                         draft_len: int | None = None, context: int | None = None,
                         names: tuple[str, str] | None = None) -> Speculative:
    """Project greedy speculative decoding of ``target`` with ``draft`` (each a built-in model name, a
    checkpoint directory or a ModelConfig) on ``hw`` at ``acceptance``; ``draft_len`` None tries
    1..``max_draft_len`` and keeps the fastest (the shortest of equals).

    Raises InputError for an acceptance outside [0, 1], a draft length outside 1..max_draft_len, a
    draft of another vocabulary or a shorter context than the one estimated, and HardwareError when
    either model does not fit the hardware or both do not fit together."""
    (tname, tc), (dname, dc) = (
        ((n, m) if isinstance(m, ModelConfig) else resolve_model(m))
        for n, m in zip(names or ("target", "draft"), (target, draft), strict=True))
    acceptance = check_acceptance(acceptance)
    if isinstance(max_draft_len, bool) or not isinstance(max_draft_len, int) or max_draft_len < 1:
        raise InputError(f"the largest draft length must be a positive integer, not {show_number(max_draft_len)}")
    if draft_len is not None:
        check_draft_len(draft_len, max_draft_len + 1, "max_m")
    why = vocabulary_difference(tc.vocab_size, dc.vocab_size)
    if why is not None:
        raise InputError(f"draft {dname}: {why}; it cannot draft the target {tname}'s tokens")
    plain = estimate(tc, hw, context=context, name=tname)
    context = plain.context
    if context > dc.max_context:
        raise InputError(f"context {count(context)} exceeds draft {dname}'s max_context {dc.max_context}")
    per_chip = _fit(tc, dc, hw, context=context, names=(tname, dname))
    drafted = estimate(dc, hw, context=context, name=dname)
    base = row_pass(tc, hw, context=context, split=plain.kv_split, name=tname)
    ks = [draft_len] if draft_len is not None else list(range(1, max_draft_len + 1))
    sweep = []
    for k in ks:
        verify = _verify_seconds(base, hw.clock_hz, rows=k + 1, context=context, split=plain.kv_split)
        seconds = k * drafted.step_seconds + verify
        e = expected_tokens(acceptance, k)
        sweep.append((k, e, seconds, e / seconds, verify))
    best = max(sweep, key=lambda r: (r[3], -r[0]))
    k, e, seconds, rate, verify = best
    return Speculative(
        target=tname, draft=dname, hardware=hw.name, context=context, acceptance=acceptance, draft_len=k,
        chosen=draft_len is None, plain_step_seconds=plain.step_seconds, plain_tokens_per_s=plain.tokens_per_s,
        draft_step_seconds=drafted.step_seconds, verify_seconds=verify, pass_seconds=seconds, expected_tokens=e,
        tokens_per_s=rate, speedup=rate / plain.tokens_per_s, sweep=tuple(r[:4] for r in sweep),
        weight_bytes_per_chip=per_chip)


def _secs(s: float) -> str:
    return quantity(s, "s")


def format_speculative(s: Speculative, *, measured: tuple[int, int] | None = None) -> str:
    """The text report of ``lockstep estimate --speculative`` (``measured``: the agreement counts
    the acceptance came from)."""
    source = (f" (measured: {count(measured[0])} of {count(measured[1])} held-out positions agree)"
              if measured else " (given)")
    lines = [
        f"speculative: {s.target} drafted by {s.draft} on {s.hardware}, context {count(s.context)}, "
        f"greedy, batch 1",
        f"acceptance : {s.acceptance:.4g} a drafted token{source}",
        f"draft len  : k = {s.draft_len}" + (" (the best of 1.." + str(s.sweep[-1][0]) + ")" if s.chosen else ""),
        f"pass       : {s.draft_len} draft step{'s' if s.draft_len != 1 else ''} x {_secs(s.draft_step_seconds)} "
        f"+ verify of "
        f"{s.draft_len + 1} rows {_secs(s.verify_seconds)} = {_secs(s.pass_seconds)}, "
        f"{number(s.expected_tokens)} tokens a pass",
        f"tokens/s   : {number(s.plain_tokens_per_s)} plain, {number(s.tokens_per_s)} speculative "
        f"(speedup {s.speedup:.3g}x" + ("; plain decoding is faster at every k)" if s.chosen and s.speedup < 1
                                        else ")"),
    ]
    if s.chosen and len(s.sweep) > 1:
        lines.append("by k       : " + ", ".join(f"{k}: {number(r)}" for k, _, _, r in s.sweep))
    return "\n".join(lines)
