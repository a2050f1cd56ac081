"""The checks of a speculative-decoding request, each a one-line InputError naming the option and the
value: the drafter's name, the draft length against the target's compiled design, the draft model
against the target's tokenizer and vocabulary, the backend."""

from __future__ import annotations

from golden.errors import InputError
from golden.speculative import DRAFTERS, check_draft_len, tokenizer_difference, vocabulary_difference

from ..engine.toolchain import SIMULATORS
from .runners import BACKENDS

__all__ = ["check_backend", "check_draft_len_for", "check_draft_model", "check_drafter"]


def check_drafter(name) -> str:
    if name not in DRAFTERS:
        raise InputError(f"--speculative must be one of {', '.join(DRAFTERS)}, not {name!r}")
    return name


def check_backend(backend: str, *, replayed: bool = False) -> str:
    """``backend`` runs speculative decoding: one of :data:`sim.speculative.runners.BACKENDS`, or with
    ``replayed`` also a simulator (the run is decided on the instruction-level model and replayed
    there, :mod:`sim.speculative.rtl`)."""

    allowed = (*BACKENDS, *SIMULATORS) if replayed else tuple(BACKENDS)
    if backend not in allowed:
        raise InputError(f"--speculative on backend {backend}: not yet (it runs on {', '.join(allowed)})")
    return backend


def check_draft_len_for(k, compiled) -> int:
    """``k`` drafts a round on the target ``compiled``: 1 to ``compiled.max_rows - 1``, the error naming
    what bounds the design's rows (its max_m, or the scratchpad or logits buffer at this model's strides)."""
    limits = compiled.rows_limits()
    binding = min(limits.items(), key=lambda kv: kv[1])[0]
    try:
        return check_draft_len(k, compiled.max_rows, f"the design's {binding}")
    except InputError as exc:
        raise InputError(f"--draft-len: {exc}") from None


def check_draft_model(target, draft) -> None:
    """A draft checkpoint must read and write the target's tokens: the same tokenizer (or neither has
    one) and the same vocabulary size. ``target``, ``draft``: :class:`golden.checkpoint.Checkpoint`."""
    why = vocabulary_difference(target.config.vocab_size, draft.config.vocab_size)
    if why is not None:
        raise InputError(f"--draft {draft.path}: {why}; a draft model must share the target's vocabulary")
    why = tokenizer_difference(target.tokenizer, draft.tokenizer)
    if why is not None:
        raise InputError(f"--draft {draft.path}: its tokenizer differs from the target's ({why}); a draft model "
                         f"must share the target's tokenizer")

