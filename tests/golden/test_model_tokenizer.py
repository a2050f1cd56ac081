"""The character tokenizer used by the demo model."""

from __future__ import annotations

import pytest

from golden.tokenizer import CharTokenizer


def test_round_trip_and_ids():
    tok = CharTokenizer.from_text("hello, world\n")
    assert tok.chars == ("\n", " ", ",", "d", "e", "h", "l", "o", "r", "w")
    ids = tok.encode("hello world")
    assert ids[:2] == [5, 4]
    assert tok.decode(ids) == "hello world"
    assert tok.vocab_size == 10


def test_unknown_character_is_an_error_unless_fallback():
    tok = CharTokenizer("ab ")
    with pytest.raises(ValueError, match=r"^character 'c' at position 4 is not in the tokenizer's alphabet$"):
        tok.encode("ab ac")
    fb = CharTokenizer("ab ", fallback=" ")
    assert fb.encode("acb") == [0, 2, 1]


@pytest.mark.parametrize(("args", "kwargs", "exc", "match"), [
    (([],), {}, ValueError, r"^chars must hold at least one character, not an empty alphabet$"),
    ((["a", "bc"],), {}, TypeError, r"^chars\[1\] must be a single character, not 'bc'$"),
    (("aba",), {}, ValueError, r"^chars\[2\] repeats 'a' \(already chars\[0\]\)$"),
    (("ab",), {"fallback": "?"}, ValueError, r"^fallback must be one of the characters, not '\?'$"),
])
def test_constructor_rejects(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        CharTokenizer(*args, **kwargs)


def test_decode_rejects_bad_id():
    with pytest.raises(ValueError, match=r"^token id must be in 0\.\.1, not 2$"):
        CharTokenizer("ab").decode([0, 2])


def test_save_load(tmp_path):
    tok = CharTokenizer('é"\n x', fallback="x")
    tok.save(tmp_path / "t.json")
    assert CharTokenizer.load(tmp_path / "t.json") == tok
    with pytest.raises(ValueError, match=r"^not a lockstep-char tokenizer \(type='BPE'\)$"):
        CharTokenizer.from_dict({"type": "BPE"})
