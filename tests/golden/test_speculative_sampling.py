"""Speculative sampling at temperature > 0 (golden/speculative_sampling.py): the rule's output law is the
target's, exactly (enumerated in fractions) and as drawn (Monte Carlo, 5-sigma bounds from the
binomial standard deviation); on the demo models a run is reproducible from its seed and temperature
0 is plain greedy decoding."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from golden import speculative_sampling
from golden.checkpoint import draft_model_path, load_checkpoint, load_demo_model
from golden.errors import InputError
from golden.int_model import generate_int
from golden.model import sampling_probs
from golden.quantize import quantize_checkpoint
from golden.speculative import GoldenRunner, LookupDrafter, ModelDrafter
from golden.speculative_sampling import accept_probability, residual, speculative_sample

MAX_ROWS = 16
PROMPT = "The old miller "


# -- the one-step rule, exactly --------------------------------------------------------------------

def _law_of_one_step(p, q):
    """The law of the first token a round emits, enumerated: draft x drawn from q, kept with probability
    a(x) = min(1, p(x)/q(x)), else a token from the residual."""
    out = [Fraction(0)] * len(p)
    for x, qx in enumerate(q):
        if qx == 0:
            continue                                    # never drawn
        a = accept_probability(p[x], qx)
        out[x] += qx * a
        if a < 1:
            for y, r in enumerate(residual(p, q)):
                out[y] += qx * (1 - a) * r
    return out


def _fractions(weights):
    return [Fraction(int(w), int(sum(weights))) for w in weights]


_RNG = np.random.default_rng(18)
ONE_STEP_CASES = [
    (_fractions([3, 2, 1]), _fractions([1, 1, 4])),
    (_fractions([0, 1, 1]), _fractions([1, 0, 0])),          # disjoint supports: every draft rejected
    (_fractions([5, 0, 2, 1]), _fractions([5, 0, 2, 1])),    # q = p: every draft kept
    (_fractions([1, 6, 3]), _fractions([0, 1, 0])),          # a deterministic proposal (lookup): q one-hot
    (_fractions([0, 1, 0]), _fractions([2, 1, 3])),          # a greedy target (temperature 0)
] + [(_fractions(list(_RNG.integers(0, 9, 6)) + [1]), _fractions(list(_RNG.integers(0, 9, 6)) + [1]))
     for _ in range(20)]


@pytest.mark.parametrize(("p", "q"), ONE_STEP_CASES)
def test_one_step_law_is_the_targets_exactly(p, q):
    assert _law_of_one_step(p, q) == p
    # ... and not the draft's (the check can fail), unless they agree
    assert (_law_of_one_step(q, p) == p) == (p == q)


# -- the whole rule, drawn: Monte Carlo on a bigram model ------------------------------------------

class _Bigram:
    """A toy model as a pass runner: a row's logits are a fixed table's row of its token (V tokens)."""

    def __init__(self, table, max_rows=4):
        self.table = np.asarray(table, dtype=np.float64)
        self.vocab_size, self.max_context, self.max_rows = self.table.shape[0], 64, max_rows

    def run_pass_logits(self, rows):
        return self.table[[t for t, _ in rows]]

    def run_pass(self, rows):
        return [int(t) for t in self.run_pass_logits(rows).argmax(-1)]


TARGET = [[0.8, 0.0, 0.0], [0.0, 0.8, 0.3], [0.4, 0.0, 0.8]]
DRAFT = [[0.0, 0.0, 0.8], [0.8, 0.0, 0.0], [0.0, 0.8, 0.0]]      # prefers the next token to the target's
TEMPERATURE, PROMPT_IDS, NEW, K = 0.9, [0, 1, 0], 4, 2
#: Runs per check: every sequence is then expected >= 10 times (the normal bound's premise, asserted).
SAMPLES = 5000


def _sequence_law(table):
    """Exact law of the NEW tokens after PROMPT_IDS sampled plainly from ``table``, per sequence."""
    p = sampling_probs(np.asarray(table), temperature=TEMPERATURE)
    law = {}
    for seq in itertools.product(range(3), repeat=NEW):
        prev, prob = PROMPT_IDS[-1], 1.0
        for t in seq:
            prob, prev = prob * p[prev][t], t
        law[seq] = prob
    return law


def _outside_5_sigma(counts, law):
    """The sequences whose count is more than 5 binomial standard deviations from SAMPLES * law."""
    return [s for s, pi in law.items() if abs(counts.get(s, 0) - SAMPLES * pi) > 5 * math.sqrt(SAMPLES * pi * (1 - pi))]


def _counts(drafter):
    counts: dict = {}
    rounds = set()
    for seed in range(SAMPLES):
        d = ModelDrafter(_Bigram(DRAFT)) if drafter == "model" else LookupDrafter()
        r = speculative_sample(_Bigram(TARGET), d, PROMPT_IDS, NEW, K, temperature=TEMPERATURE, seed=seed)
        counts[tuple(r.tokens)] = counts.get(tuple(r.tokens), 0) + 1
        rounds.update(r.per_round)
    return counts, rounds


@pytest.mark.parametrize("drafter", ["model", "lookup"])
def test_sampled_sequences_follow_the_targets_law(drafter):
    """The 81 sequences of 4 tokens, k = 2, one run per seed: each sequence's count within 5 binomial
    standard deviations of the target's exact law; the draft's own law is far outside (the check has
    the power to fail). Rounds of every kind ran: both drafts kept (bonus token), one, none."""
    law = _sequence_law(TARGET)
    assert SAMPLES * min(law.values()) >= 10
    counts, rounds = _counts(drafter)
    assert rounds >= {(2, 0), (2, 1), (2, 2)}
    assert _outside_5_sigma(counts, law) == []
    assert len(_outside_5_sigma(counts, _sequence_law(DRAFT))) > 10


def test_the_check_catches_a_wrong_residual(monkeypatch):
    """The usual mistake, drawing the token after a rejection from p instead of norm(max(0, p - q)),
    is caught by the same check."""
    monkeypatch.setattr(speculative_sampling, "residual", lambda p, q: np.asarray(p))
    assert len(_outside_5_sigma(_counts("lookup")[0], _sequence_law(TARGET))) > 3


# -- the demo models ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    ckpt = load_demo_model()
    return ckpt, quantize_checkpoint(ckpt), quantize_checkpoint(load_checkpoint(draft_model_path()))


def _drafter(name, demo):
    _, target, draft = demo
    return {"draft": lambda: ModelDrafter(GoldenRunner(draft, max_rows=MAX_ROWS)),
            "self": lambda: ModelDrafter(GoldenRunner(target, max_rows=MAX_ROWS)),
            "lookup": LookupDrafter}[name]()


def _run(demo, drafter, n=32, k=4, **kw):
    ckpt, target, _ = demo
    return speculative_sample(GoldenRunner(target, max_rows=MAX_ROWS), _drafter(drafter, demo),
                              ckpt.tokenizer.encode(PROMPT), n, k, **kw)


def test_run_pass_logits_are_the_int_models(demo):
    _, target, _ = demo
    rows = [(5, 0), (7, 1), (9, 2)]
    logits = GoldenRunner(target, max_rows=MAX_ROWS).run_pass_logits(rows)
    assert np.array_equal(logits, target.dequantize_logits(target.forward([5, 7, 9])))
    assert list(logits.argmax(-1)) == GoldenRunner(target, max_rows=MAX_ROWS).run_pass(rows)


@pytest.mark.parametrize("drafter", ["draft", "lookup"])
@pytest.mark.parametrize("k", [1, 4])
def test_temperature_zero_is_plain_greedy(demo, drafter, k):
    ckpt, target, _ = demo
    r = _run(demo, drafter, k=k, temperature=0, seed=5)
    assert r.tokens == generate_int(target, ckpt.tokenizer.encode(PROMPT), 32)


@pytest.mark.parametrize("drafter", ["draft", "lookup"])
def test_sampling_is_reproducible_from_its_seed(demo, drafter):
    ckpt, target, _ = demo
    a, b, c = (_run(demo, drafter, temperature=0.8, seed=s) for s in (7, 7, 8))
    assert (a.tokens, a.per_round) == (b.tokens, b.per_round)
    assert a.tokens != c.tokens
    assert len(a.tokens) == 32 and all(0 <= t < target.config.vocab_size for t in a.tokens)
    assert len(a.tokens) - 1 == a.rounds + a.accepted
    assert a.tokens != generate_int(target, ckpt.tokenizer.encode(PROMPT), 32)   # it did sample


def test_the_target_as_its_own_draft_keeps_every_draft(demo):
    """p = q bit for bit: min(1, p/q) = 1, every draft kept."""
    r = _run(demo, "self", temperature=1.0, seed=1)
    assert r.accepted == r.proposed > 0 and r.target_passes == r.rounds + 1


def test_short_runs_and_bad_options(demo):
    assert _run(demo, "draft", n=0, temperature=0.5, seed=0).tokens == []
    one = _run(demo, "draft", n=1, temperature=0.5, seed=0)
    assert len(one.tokens) == 1 and one.rounds == 0
    for kw, message in ((dict(temperature=-1.0, seed=0), "temperature must be a finite number >= 0, not -1.0"),
                        (dict(temperature=0.5, seed=-1), "the seed must be a non-negative integer, not -1"),
                        (dict(temperature=0.5, seed=0, k=0), "the draft length must be a positive integer, not 0")):
        with pytest.raises(InputError, match="^" + message + "$"):
            _run(demo, "draft", **kw)
    ckpt, target, _ = demo

    class Greedy:                                          # a runner that gives tokens only
        max_rows, max_context, vocab_size = MAX_ROWS, target.max_context, target.config.vocab_size

    with pytest.raises(InputError, match=r"^speculative sampling needs the draft model's logits: a runner with "
                                         r"run_pass_logits \(GoldenRunner\), not Greedy$"):
        speculative_sample(GoldenRunner(target, max_rows=MAX_ROWS), ModelDrafter(Greedy()), [1, 2], 4, 2,
                           temperature=0.5, seed=0)
