"""How close the integer model comes to the float model: the measurements behind docs/quantization.md.

* Teacher-forced top-1 agreement: over windows of real text, the fraction of positions where the
  integer model's argmax (the chip's greedy token) equals the float model's.
* Mean KL divergence ``KL(p_float || p_int)`` of the next-token distributions, ``p_int`` the
  softmax of the dequantized int32 logits, in nats per position.
* Greedy continuation agreement: from each prompt both models decode greedily; the length of the
  identical prefix, averaged over prompts (and the fraction of prompts that agree throughout).
* Draft agreement (:func:`draft_agreement`): the fraction of positions of a text where a draft
  model's greedy token equals the target model's, both integer models, teacher-forced on the same
  text: the per-token acceptance rate that speculative decoding with that draft can expect.

The demo model is measured on the held-out tail of its corpus (never used for calibration or
training), with the settings of :data:`DOC_SETTINGS` for the documented table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from golden.int_model import IntModel, generate_int
from golden.model import Transformer, generate
from golden.quantize import demo_corpus_splits, text_windows

from .errors import InputError

__all__ = ["DOC_SETTINGS", "TEST_SETTINGS", "Settings", "demo_measurement", "draft_agreement",
           "greedy_agreement", "held_out_tokens", "markdown_table", "teacher_forced"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What a measurement covers: ``windows`` non-overlapping windows of ``window`` held-out tokens
    from the start of the held-out text (None: all of them); ``prompts`` greedy prompts of
    ``prompt_len`` tokens at evenly spaced offsets, each continued by ``new_tokens``."""

    name: str
    window: int = 128
    windows: int | None = None
    prompts: int = 16
    prompt_len: int = 32
    new_tokens: int = 64


#: The documented table (scripts/measure_quality.py).
DOC_SETTINGS = Settings(name="held-out text, all windows")
#: A subset small enough for the test suite; its row is in the documented table too.
TEST_SETTINGS = Settings(name="test subset", windows=4, prompts=2, new_tokens=32)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def teacher_forced(float_model: Transformer, int_model: IntModel, windows: Sequence[Sequence[int]]) -> dict:
    """Top-1 agreement and mean KL over every position of every window (each from position 0)."""
    agree = positions = 0
    kl = 0.0
    for win in windows:
        lf = float_model.forward(win).astype(np.float64)
        li = int_model.forward(win)
        agree += int((np.argmax(li, -1) == np.argmax(lf, -1)).sum())
        positions += len(win)
        lp, lq = _log_softmax(lf), _log_softmax(int_model.dequantize_logits(li))
        kl += float((np.exp(lp) * (lp - lq)).sum())
    return {"positions": positions, "top1_agree": agree, "top1": agree / positions, "kl": kl / positions}


def greedy_agreement(float_model: Transformer, int_model: IntModel, prompts: Sequence[Sequence[int]],
                     new_tokens: int) -> dict:
    """Mean identical-prefix length of greedy continuations, and the fraction identical throughout."""
    prefixes = []
    for prompt in prompts:
        a = generate(float_model, prompt, new_tokens)
        b = generate_int(int_model, prompt, new_tokens)
        same = np.cumprod(np.array(a) == np.array(b))
        prefixes.append(int(same.sum()))
    return {"prompts": len(prompts), "new_tokens": new_tokens, "mean_prefix": float(np.mean(prefixes)),
            "full_match": float(np.mean([p == new_tokens for p in prefixes]))}


def draft_agreement(target: IntModel, draft: IntModel, tokens: Sequence[int], *,
                    window: int | None = None) -> tuple[int, int]:
    """Teacher-forced greedy agreement of ``draft`` with ``target`` on ``tokens``: ``(agree, total)``.

    ``tokens`` is cut into consecutive windows of ``window`` tokens (default: the shorter of the two
    models' contexts; the last window may be shorter), each run from position 0 by both integer
    models; ``agree`` counts the positions where the two greedy tokens (each program's ``argmax``
    output, the token the chip computes) are equal, ``total`` the positions. Raises InputError for
    models of different vocabularies, an empty text or a window outside 1..context.
    """
    if target.config.vocab_size != draft.config.vocab_size:
        raise InputError(f"draft model vocabulary must equal the target's ({target.config.vocab_size}), "
                         f"not {draft.config.vocab_size}")
    context = min(target.max_context, draft.max_context)
    window = context if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= context:
        raise InputError(f"agreement window must be an integer in 1..{context}, not {window!r}")
    tokens = list(tokens)
    if not tokens:
        raise InputError("agreement text must hold at least one token, not an empty text")
    agree = 0
    for start in range(0, len(tokens), window):
        win = tokens[start:start + window]
        agree += int((_greedy_tokens(target, win) == _greedy_tokens(draft, win)).sum())
    return agree, len(tokens)


def _greedy_tokens(model: IntModel, tokens: Sequence[int]) -> np.ndarray:
    return model.run(tokens, model.new_cache())["next_token"][:, 0]


def held_out_tokens(tokenizer) -> list[int]:
    """The demo corpus's held-out text (never trained or calibrated on) as tokens of ``tokenizer``."""
    return tokenizer.encode(demo_corpus_splits()[1])


def demo_measurement(float_model: Transformer, int_model: IntModel, tokenizer, settings: Settings) -> dict:
    """Measure the demo model on its held-out text with ``settings``."""
    _, held = demo_corpus_splits()
    toks = tokenizer.encode(held)
    n = len(toks) // settings.window
    if settings.windows is not None:
        n = min(n, settings.windows)
    windows = [toks[i * settings.window:(i + 1) * settings.window] for i in range(n)]
    prompts = text_windows(toks, settings.prompt_len, settings.prompts) if settings.prompts else []
    greedy = (greedy_agreement(float_model, int_model, prompts, settings.new_tokens) if prompts
              else {"prompts": 0, "new_tokens": 0, "mean_prefix": 0.0, "full_match": 0.0})
    return {"settings": settings, **teacher_forced(float_model, int_model, windows), **greedy}


def markdown_table(rows: Sequence[dict]) -> str:
    """The quality table (one row per measurement)."""
    lines = ["| measurement | positions | top-1 agreement | mean KL (nats) | greedy prompts x tokens "
             "| mean identical prefix | prompts identical throughout |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        lines.append(f"| {s.name} | {r['positions']} | {r['top1']:.2%} ({r['top1_agree']}/{r['positions']}) "
                     f"| {r['kl']:.4f} | {r['prompts']} x {r['new_tokens']} | {r['mean_prefix']:.1f} "
                     f"| {r['full_match']:.0%} |")
    return "\n".join(lines)
