"""The shipped draft model compiles like the demo model for the demo designs, and the instruction-level
model generates the integer golden model's tokens with it (docs/models.md, "The draft model")."""

from __future__ import annotations

import pytest

from golden.checkpoint import draft_model_path, load_checkpoint
from golden.int_model import generate_int
from hdl.config import PRESETS
from sim.runtime import decode, prepare

PROMPT = "The old miller "
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def draft():
    return load_checkpoint(draft_model_path())


@pytest.mark.parametrize("design", ["demo", "demo-narrow"])
def test_draft_runs_on_the_instruction_level_model_as_on_golden(draft, design):
    compiled = prepare(draft, PRESETS[design])
    prompt = draft.tokenizer.encode(PROMPT)
    want = generate_int(compiled.model, prompt, NEW_TOKENS)
    assert want == generate_int(compiled.model, prompt, NEW_TOKENS)   # deterministic
    for backend in ("golden", "isa"):
        report = decode(compiled, backend, prompt, NEW_TOKENS)
        assert report.generated == want, backend
