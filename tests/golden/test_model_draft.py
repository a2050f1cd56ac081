"""The shipped draft model (golden/data/draft): the demo model's tokenizer and vocabulary, one layer,
its training report reproduced, and the draft-agreement measurement (golden.quality.draft_agreement).

Its compilation and the instruction-level model's run: tests/sim/test_draft_model.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("safetensors")
from golden.checkpoint import draft_model_path, load_checkpoint, load_demo_model  # noqa: E402
from golden.errors import InputError  # noqa: E402
from golden.model import Transformer, generate  # noqa: E402
from golden.quality import draft_agreement, held_out_tokens  # noqa: E402
from golden.quantize import calibration_for, demo_corpus_model, quantize_checkpoint  # noqa: E402

#: Held-out tokens the agreement test runs over, in windows of WINDOW (the last one shorter); the
#: whole held-out text is the docs' measurement (~10 s).
AGREEMENT_TOKENS, WINDOW = 100, 32


@pytest.fixture(scope="module")
def draft():
    return load_checkpoint(draft_model_path())


@pytest.fixture(scope="module")
def int_models(draft):
    return quantize_checkpoint(load_demo_model()), quantize_checkpoint(draft)


def test_draft_speaks_the_demo_models_tokens(draft):
    demo = load_demo_model()
    assert draft.tokenizer is not None and draft.tokenizer.chars == demo.tokenizer.chars
    c, d = draft.config, demo.config
    assert (c.family, c.vocab_size, c.max_context) == (d.family, d.vocab_size, d.max_context)
    assert (c.n_layers, c.d_model) == (1, 32)
    assert c.n_params() < d.n_params() / 10


def test_draft_calibrates_on_the_demo_corpus(draft):
    """Like the demo model: corpus windows, not the random tokens of an unknown checkpoint."""
    assert demo_corpus_model(draft)
    windows, source = calibration_for(draft)
    assert source.startswith("demo corpus")
    corpus = draft.tokenizer.encode((draft_model_path().parent / "demo_corpus.txt").read_text(encoding="utf-8"))
    assert windows[0] == corpus[:len(windows[0])]


def test_draft_report_is_reproduced(draft):
    """The shipped weights are the trained ones: the report's size and greedy sample."""
    report = json.loads((draft_model_path() / "train_report.json").read_text(encoding="utf-8"))
    assert report["preset"] == "draft" and report["n_params"] == draft.config.n_params()
    assert report["final_train_loss"] < report["initial_loss"] / 4
    model = Transformer(draft.config, draft.weights)
    greedy = draft.tokenizer.decode(generate(model, draft.tokenizer.encode(report["prompt"]), 100))
    assert greedy == report["greedy_sample"]


def test_draft_agreement_equals_a_plain_loop(int_models, draft):
    target, drafter = int_models
    tokens = held_out_tokens(draft.tokenizer)[:AGREEMENT_TOKENS]
    agree, total = draft_agreement(target, drafter, tokens, window=WINDOW)
    assert total == len(tokens) and 0 < agree <= total
    expected = 0
    for start in range(0, len(tokens), WINDOW):
        t_cache, d_cache = target.new_cache(), drafter.new_cache()
        for tok in tokens[start:start + WINDOW]:   # one position at a time, the chip's argmax
            t = int(np.argmax(target.step(tok, t_cache)))
            d = int(np.argmax(drafter.step(tok, d_cache)))
            expected += t == d
    assert agree == expected


def test_draft_agreement_of_a_model_with_itself_is_total(int_models, draft):
    target, _ = int_models
    tokens = held_out_tokens(draft.tokenizer)[:40]
    assert draft_agreement(target, target, tokens, window=16) == (40, 40)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(tokens=[]), r"^agreement text must hold at least one token, not an empty text$"),
    (dict(tokens=[1, 2], window=0), r"^agreement window must be an integer in 1\.\.128, not 0$"),
    (dict(tokens=[1, 2], window=129), r"^agreement window must be an integer in 1\.\.128, not 129$"),
])
def test_draft_agreement_refuses_bad_input(int_models, kwargs, message):
    with pytest.raises(InputError, match=message):
        draft_agreement(*int_models, **kwargs)


def _docs() -> str:
    return (draft_model_path().parents[2] / "docs" / "models.md").read_text(encoding="utf-8")


def test_docs_quote_the_training_report():
    """docs/models.md states the draft model's numbers; they must be the ones in train_report.json."""
    report = json.loads((draft_model_path() / "train_report.json").read_text(encoding="utf-8"))
    docs = _docs()
    for fact in (f"{report['n_params']:,} bytes as int8", f"{report['val_loss']} nats/char",
                 f"{report['final_train_loss']:.3f} nats/char", f"{report['initial_loss']} nats/char",
                 f"{report['steps']} steps", f"{report['train_seconds']} s"):
        assert fact in docs, fact


@pytest.mark.slow
def test_docs_quote_the_measured_agreement(int_models, draft):
    """The agreement docs/models.md quotes, over the whole held-out text (~10 s)."""
    agree, total = draft_agreement(*int_models, held_out_tokens(draft.tokenizer))
    assert f"**{agree:,} of {total:,} = {agree / total:.4f}**" in _docs()
