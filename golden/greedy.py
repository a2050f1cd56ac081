"""Greedy decoding's rule and its prompt check, written once.

Every host loop that decodes greedily (the runtime's, :func:`sim.runtime.decode`, and the simulator
flow's, :func:`sim.flows.decode_steps.drive_steps`) follows :class:`GreedyDecode`, and every decode
request, golden models included, is checked by :func:`check_prompt`. Pure Python with no NumPy or
Amaranth at import: the simulator process imports it.
"""

from __future__ import annotations

from numbers import Integral

from .errors import InputError, InputTypeError

__all__ = ["GreedyDecode", "check_prompt", "decode_steps"]


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def decode_steps(prompt_length: int, new_tokens: int) -> int:
    """Decode steps (one per position, from 0) of a greedy run: the prompt's tokens are fed one a
    step, and the step of the prompt's last token already yields the first new token, so each further
    new token costs one step; with no new tokens the prompt alone is run."""
    return prompt_length + max(new_tokens, 1) - 1


class GreedyDecode:
    """The greedy loop of ``new_tokens`` after ``prompt``: which token enters at each position
    (:meth:`token`), how many steps (:attr:`steps`), which outputs count as generated (:meth:`record`).

    ``for position in range(loop.steps): out = step(loop.token(position), position);
    loop.record(position, out)``; :attr:`generated` then holds the new tokens.
    """

    def __init__(self, prompt, new_tokens: int):
        self.prompt = [int(t) for t in prompt]
        self.new_tokens = new_tokens
        self.steps = decode_steps(len(self.prompt), new_tokens)
        self.tokens = list(self.prompt)   # every position's input so far
        self.generated: list[int] = []
        self._next = 0

    def token(self, position: int) -> int:
        """The token that enters at ``position``: a prompt token, then the previous step's output."""
        return self.tokens[position]

    def record(self, position: int, token_out: int) -> bool:
        """Take the output of the step at ``position`` (steps in order); whether it is a generated
        token (the output of the prompt's last position or later, up to ``new_tokens`` of them),
        which then enters at the next position."""
        if position != self._next or position >= self.steps:
            raise IndexError(f"greedy decode: position {position} out of order (expected {self._next} "
                             f"of {self.steps} steps)")
        self._next += 1
        generated = position >= len(self.prompt) - 1 and len(self.generated) < self.new_tokens
        if generated:
            self.generated.append(int(token_out))
            self.tokens.append(int(token_out))
        return generated


def check_prompt(prompt, new_tokens, max_context: int, vocab_size: int) -> list[int]:
    """Check a decode of ``new_tokens`` after ``prompt`` for a model of ``max_context`` positions and
    ``vocab_size`` tokens (the one check of both golden models and the runtime); return the prompt as
    ints. InputError / InputTypeError naming the bad value."""
    if not _is_int(new_tokens) or new_tokens < 0:
        raise InputError(f"the number of new tokens must be a non-negative integer, not {new_tokens!r}")
    if isinstance(prompt, str | bytes | dict):
        raise InputTypeError(f"prompt must be a sequence of token ids, not {type(prompt).__name__}")
    try:
        tokens = list(prompt)
    except TypeError:
        raise InputTypeError(f"prompt must be a sequence of token ids, not {type(prompt).__name__}") from None
    if not tokens:
        raise InputError("prompt must hold at least one token")
    for t in tokens:
        if not _is_int(t):
            raise InputTypeError(f"prompt token must be an integer, not {t!r}")
        if not 0 <= t < vocab_size:
            raise InputError(f"prompt token must be in 0..{vocab_size - 1}, not {t}")
    steps = decode_steps(len(tokens), new_tokens)
    if steps > max_context:
        raise InputError(f"prompt ({len(tokens)} tokens) plus {new_tokens} new tokens needs {steps} positions, "
                         f"more than max_context={max_context}")
    return [int(t) for t in tokens]
