"""A character-level tokenizer: one token per Unicode character of a fixed alphabet.

Token ``i`` is the ``i``-th character of the alphabet. Text holding a character outside the
alphabet raises ValueError naming the character and its position, unless the tokenizer was
built with a ``fallback`` character (which must be in the alphabet); unknown characters then
encode as the fallback's token.

Saved as JSON (``tokenizer.json`` beside a checkpoint)::

    {"type": "lockstep-char", "chars": ["\\n", " ", "a", ...], "fallback": null}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import InputError, InputTypeError

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """Maps text to token ids and back, one id per character of ``chars``.

    ``chars`` must be a non-empty sequence of distinct single characters (ValueError or
    TypeError otherwise, naming the offending entry).
    """

    TYPE = "lockstep-char"

    def __init__(self, chars: Sequence[str], *, fallback: str | None = None) -> None:
        if isinstance(chars, str):
            chars = list(chars)
        chars = list(chars)
        if not chars:
            raise InputError("chars must hold at least one character, not an empty alphabet")
        for i, ch in enumerate(chars):
            if not isinstance(ch, str) or len(ch) != 1:
                raise InputTypeError(f"chars[{i}] must be a single character, not {ch!r}")
        seen: dict[str, int] = {}
        for i, ch in enumerate(chars):
            if ch in seen:
                raise InputError(f"chars[{i}] repeats {ch!r} (already chars[{seen[ch]}])")
            seen[ch] = i
        if fallback is not None and fallback not in seen:
            raise InputError(f"fallback must be one of the characters, not {fallback!r}")
        self.chars: tuple[str, ...] = tuple(chars)
        self.fallback = fallback
        self._index = seen

    @classmethod
    def from_text(cls, text: str, *, fallback: str | None = None) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted set of characters of ``text``."""
        return cls(sorted(set(text)), fallback=fallback)

    @property
    def vocab_size(self) -> int:
        """Number of tokens (characters of the alphabet)."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; ValueError for an unknown character when there is no fallback."""
        index = self._index
        default = index[self.fallback] if self.fallback is not None else None
        out = []
        for pos, ch in enumerate(text):
            tok = index.get(ch, default)
            if tok is None:
                raise InputError(f"character {ch!r} at position {pos} is not in the tokenizer's alphabet")
            out.append(tok)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; ValueError for an id outside 0..vocab_size-1."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.chars):
                raise InputError(f"token id must be in 0..{len(self.chars) - 1}, not {i}")
            out.append(self.chars[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": self.TYPE, "chars": list(self.chars), "fallback": self.fallback}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        """Inverse of ``to_dict``; ValueError if ``data`` is not a Lockstep character tokenizer."""
        if not isinstance(data, dict) or data.get("type") != cls.TYPE:
            kind = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"not a {cls.TYPE} tokenizer (type={kind!r})")
        if not isinstance(data.get("chars"), list):
            raise InputError(f"field 'chars' must be a list, not {data.get('chars')!r}")
        return cls(data["chars"], fallback=data.get("fallback"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return (self.chars, self.fallback) == (other.chars, other.fallback)

    def __hash__(self) -> int:
        return hash((self.chars, self.fallback))

    def __repr__(self) -> str:
        return f"CharTokenizer({self.vocab_size} chars, fallback={self.fallback!r})"
