"""Speculative decoding's rule (golden/speculative.py): prompt lookup, verify and accept, rollback,
and tokens equal to plain greedy decoding on the integer model."""

from __future__ import annotations

import pytest

from golden.checkpoint import draft_model_path, load_checkpoint, load_demo_model
from golden.errors import InputError
from golden.int_model import generate_int
from golden.model import ModelConfig, init_weights
from golden.numerics import ceil_div
from golden.quantize import quantize_checkpoint, quantize_model, random_calibration
from golden.speculative import (
    Drafter,
    GoldenRunner,
    LookupDrafter,
    ModelDrafter,
    check_draft_len,
    lookup_proposal,
    speculative_decode,
)

#: The demo model's pass limit on the demo design (max_m 16).
MAX_ROWS = 16
PROMPTS = ("The old miller ", "and the dog ", "It will rain")
#: A one-layer d32 draft with the demo model's vocabulary, random weights: it mostly guesses wrong.
TINY_DRAFT = ModelConfig(family="llama", vocab_size=48, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                         head_dim=16, d_ff=64, max_context=128)


@pytest.fixture(scope="module")
def demo():
    ckpt = load_demo_model()
    return ckpt, quantize_checkpoint(ckpt)


@pytest.fixture(scope="module")
def drafts(demo):
    """Draft models: the target itself (every draft accepted), a random tiny model (nearly none), and
    the shipped draft model (golden/data/draft)."""
    return {"self": demo[1],
            "tiny": quantize_model(TINY_DRAFT, init_weights(TINY_DRAFT, seed=5, std=0.3),
                                   random_calibration(TINY_DRAFT, windows=2, seed=1)),
            "shipped": quantize_checkpoint(load_checkpoint(draft_model_path()))}


@pytest.fixture(scope="module")
def plain(demo):
    ckpt, model = demo
    return {p: generate_int(model, ckpt.tokenizer.encode(p), 64) for p in PROMPTS}


def _target(model):
    return GoldenRunner(model, max_rows=MAX_ROWS)


# -- prompt lookup ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("context", "k", "expected"), [
    ([1, 2, 3, 9, 1, 2, 3], 3, [9, 1, 2]),                 # the 3-gram recurs
    ([1, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3], 3, [4, 9, 2]),     # the longest suffix wins over a later 2-gram
    ([7, 1, 7, 2, 7], 2, [2, 7]),                          # the latest occurrence of the 1-gram
    ([4, 5, 4], 5, [5, 4]),                                # fewer than k tokens follow
    ([1, 2, 3], 4, []),                                    # nothing recurs
    ([6], 4, []),
    ([1, 2, 1, 2], 1, [1]),                                # the match may overlap the suffix
])
def test_lookup_proposal(context, k, expected):
    assert lookup_proposal(context, k) == expected
    assert LookupDrafter().propose(context, k, log=None) == expected


def test_lookup_ngram_sizes():
    # [5, 1, 2] recurs only as the 2-gram [1, 2] with max_ngram 2: its latest occurrence, not the 3-gram's
    context = [5, 1, 2, 8, 1, 2, 9, 5, 1, 2]
    assert lookup_proposal(context, 2) == [8, 1]
    assert lookup_proposal(context, 2, max_ngram=2) == [9, 5]
    assert lookup_proposal([3, 9, 3], 2, min_ngram=2) == []
    for bad in ({"min_ngram": 0}, {"max_ngram": 1, "min_ngram": 2}, {"max_ngram": 2.0}):
        with pytest.raises(InputError, match="n-gram sizes"):
            LookupDrafter(**bad)


# -- speculative == plain greedy -------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_lookup_equals_plain_greedy(demo, plain, prompt, k):
    ckpt, model = demo
    r = speculative_decode(_target(model), LookupDrafter(), ckpt.tokenizer.encode(prompt), 64, k)
    assert r.tokens == plain[prompt]
    assert all(p.model == "target" for p in r.passes)      # lookup runs no passes


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("draft", ["self", "tiny", "shipped"])
@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_draft_model_equals_plain_greedy(demo, drafts, plain, prompt, draft, k):
    ckpt, model = demo
    r = speculative_decode(_target(model), ModelDrafter(GoldenRunner(drafts[draft], max_rows=MAX_ROWS)),
                           ckpt.tokenizer.encode(prompt), 64, k)
    assert r.tokens == plain[prompt]
    decode = [p for p in r.passes if p.phase == "decode"]
    assert sum(p.model == "target" for p in decode) == r.rounds
    assert len(r.tokens) - 1 == r.rounds + r.accepted       # each round: its accepted drafts + the target's own
    if draft == "self":
        assert r.accepted == r.proposed > 0


# -- rollback -------------------------------------------------------------------------------------

class _Oracle(Drafter):
    """Proposes plain greedy decoding's next tokens, shifted by ``offset`` in the vocabulary (0: all
    right, 1: all wrong)."""

    def __init__(self, prompt, plain, offset, vocab):
        self.text, self.offset, self.vocab = list(prompt) + list(plain), offset, vocab

    def propose(self, context, k, log):
        return [(t + self.offset) % self.vocab for t in self.text[len(context):len(context) + k]]


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("right", [True, False])
def test_rollback_when_every_draft_is_accepted_or_none(demo, plain, right, k):
    ckpt, model = demo
    ids = ckpt.tokenizer.encode(PROMPTS[0])
    r = speculative_decode(_target(model), _Oracle(ids, plain[PROMPTS[0]], 0 if right else 1, 48), ids, 64, k)
    assert r.tokens == plain[PROMPTS[0]]
    verify = [p for p in r.passes if p.phase == "decode"]
    pairs = list(zip(verify, verify[1:], strict=False))
    if right:
        assert r.accepted == r.proposed and r.rounds == ceil_div(63, k + 1)
        # each pass starts where the last one's rows ended
        assert all(b.positions[0] == a.positions[-1] + 1 for a, b in pairs)
    else:
        assert r.accepted == 0 and r.rounds == 63 and r.proposed > 0
        # ... and after a rejection, at the first rejected row, which it overwrites with another token
        assert all(b.positions[0] == a.positions[0] + 1 for a, b in pairs)
        assert all(len(a.rows) == 1 or a.rows[1][0] != b.rows[0][0] for a, b in pairs)


def test_model_drafter_catches_up_in_one_pass(demo, plain):
    """With every draft accepted the draft model's next proposal starts with one pass of the two tokens
    it has not run (its last draft and the target's token), then single-row steps."""
    ckpt, model = demo
    ids = ckpt.tokenizer.encode(PROMPTS[0])
    r = speculative_decode(_target(model), ModelDrafter(GoldenRunner(model, max_rows=MAX_ROWS)), ids, 64, 4)
    draft = [len(p.rows) for p in r.passes if p.model == "draft" and p.phase == "decode"]
    assert draft[:8] == [1, 1, 1, 1, 2, 1, 1, 1]
    prefill = [p for p in r.passes if p.phase == "prefill"]
    assert [(p.model, p.positions) for p in prefill] == [("target", tuple(range(len(ids)))),
                                                         ("draft", tuple(range(len(ids))))]


def test_golden_runner_never_reads_unwritten_kv(demo):
    _, model = demo
    runner = _target(model)
    runner.run_pass([(1, 0), (2, 1), (3, 2)])
    with pytest.raises(InputError, match="must start at or before position 3"):
        runner.run_pass([(4, 4)])
    runner.run_pass([(5, 1)])                               # a rollback: positions 2.. are dropped
    assert runner.valid == 2
    with pytest.raises(InputError, match="must start at or before position 2"):
        runner.run_pass([(4, 3)])
    with pytest.raises(InputError, match="consecutive increasing positions"):
        runner.run_pass([(4, 2), (4, 4)])
    with pytest.raises(InputError, match="1 to 16 rows"):
        runner.run_pass([(1, p) for p in range(17)])


def test_short_runs_and_bad_options(demo, plain):
    ckpt, model = demo
    ids = ckpt.tokenizer.encode(PROMPTS[0])
    assert speculative_decode(_target(model), LookupDrafter(), ids, 0, 4).tokens == []
    one = speculative_decode(_target(model), LookupDrafter(), ids, 1, 4)
    assert one.tokens == plain[PROMPTS[0]][:1] and one.rounds == 0
    for k, message in ((0, "positive integer, not 0"), (2.0, "positive integer, not 2.0"), (True, "not True"),
                       (16, "at most 15 (the target runner's max_rows: 16 rows a pass")):
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            speculative_decode(_target(model), LookupDrafter(), ids, 8, k)
    assert check_draft_len(15, 16) == 15
    with pytest.raises(InputError, match="needs 200 positions"):
        speculative_decode(_target(model), LookupDrafter(), ids, 186, 4)


@pytest.mark.parametrize("k", [1, 8])
def test_long_prompt_in_chunks_up_to_the_end_of_the_context(demo, drafts, k):
    """A prompt of several prefill chunks, and rounds up to the context's last position (k is cut so
    that no row falls outside it)."""
    ckpt, model = demo
    ids = (ckpt.tokenizer.encode("The old miller went home, and the dog slept. ") * 2)[:70]
    n = model.max_context - len(ids) + 1        # plain decoding's steps fill the context: positions 0 .. 127
    r = speculative_decode(_target(model), ModelDrafter(GoldenRunner(drafts["self"], max_rows=MAX_ROWS)), ids, n, k)
    assert r.tokens == generate_int(model, ids, n)
    prefill = [p.positions for p in r.passes if p.phase == "prefill" and p.model == "target"]
    assert prefill == [tuple(range(i, min(i + MAX_ROWS, 70))) for i in range(0, 70, MAX_ROWS)]
    assert max(q for p in r.passes for q in p.positions) == model.max_context - 1
