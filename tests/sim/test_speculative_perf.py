"""The speculative-decoding projection (sim/perf/speculative.py, ``lockstep estimate --speculative``):
the closed form against a hand sum, the pass costs against the performance model's own pieces, the
solver, and one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from golden.checkpoint import demo_model_path, draft_model_path, save_checkpoint
from golden.errors import InputError
from golden.model import init_weights
from golden.tokenizer import CharTokenizer
from sim.cli import main as lockstep
from sim.perf.model import MODELS, estimate, load_hardware, resolve_model, row_pass, sum_local_positions
from sim.perf.speculative import (
    check_acceptance,
    expected_tokens,
    measured_acceptance,
    required_acceptance,
    speculative_estimate,
)

DEMO, DRAFT = str(demo_model_path()), str(draft_model_path())



def invoke(*args):
    return CliRunner().invoke(lockstep, ["estimate", *map(str, args)])


@pytest.mark.parametrize("a", [0.0, 0.3, 0.5, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("k", [0, 1, 2, 4, 8, 15])
def test_expected_tokens_is_the_sum_of_the_geometric_series(a, k):
    """E = 1 + a + ... + a^k, the accepted prefix plus the target's own token."""
    assert expected_tokens(a, k) == pytest.approx(sum(a ** i for i in range(k + 1)), rel=1e-12)


def test_expected_tokens_by_hand():
    assert expected_tokens(0.8, 4) == pytest.approx(1 + 0.8 + 0.64 + 0.512 + 0.4096, rel=1e-15)
    assert expected_tokens(1, 4) == 5 and expected_tokens(0, 7) == 1


@pytest.mark.parametrize("design", ["demo", "demo-narrow"])
def test_projection_is_built_from_the_performance_models_passes(design):
    """Each k: E / (k draft steps + the target's verify pass of k + 1 rows), the verify pass the
    mean over start positions p of the cycle model's pass of rows at p..p+k (summed by a loop here)."""
    hw = load_hardware(design)
    s = speculative_estimate(DEMO, DRAFT, hw, acceptance=0.7, max_draft_len=15)
    _, tc = resolve_model(DEMO)
    plain, drafted = estimate(DEMO, hw), estimate(DRAFT, hw, context=plain_context(DEMO))
    assert s.plain_tokens_per_s == plain.tokens_per_s and s.draft_step_seconds == drafted.step_seconds
    base = row_pass(tc, hw, context=s.context)
    assert len(s.sweep) == 15
    for k, e, seconds, rate in s.sweep:
        c0, slope, overhead = base(k + 1)
        verify = sum((c0 + slope * sum(range(p, p + k + 1))) / hw.clock_hz + overhead
                     for p in range(s.context)) / s.context
        assert seconds == pytest.approx(k * drafted.step_seconds + verify, rel=1e-12)
        assert e == expected_tokens(0.7, k) and rate == e / seconds
    best = max(s.sweep, key=lambda r: r[3])
    assert (s.draft_len, s.tokens_per_s, s.speedup) == (best[0], best[3], best[3] / plain.tokens_per_s)


def plain_context(model):
    return estimate(model, load_hardware("demo")).context


def test_a_verify_pass_of_one_row_is_a_decode_step():
    """The verify pass with nothing drafted costs what the plain estimate's step costs."""
    hw = load_hardware("demo-narrow")
    _, tc = resolve_model(DEMO)
    plain = estimate(tc, hw)
    c0, slope, overhead = row_pass(tc, hw, context=plain.context)(1)
    mean = sum_local_positions(plain.context, 1) / plain.context
    assert (c0 + slope * mean) / hw.clock_hz + overhead == pytest.approx(plain.step_seconds, rel=1e-12)


def test_machine_balance_decides_the_speedup():
    """The demo pair at the same acceptance: the narrow port gains, the full-width one does not."""
    narrow = speculative_estimate(DEMO, DRAFT, load_hardware("demo-narrow"), acceptance=0.85, max_draft_len=15)
    wide = speculative_estimate(DEMO, DRAFT, load_hardware("demo"), acceptance=0.85, max_draft_len=15)
    assert narrow.speedup > 2 > 1 > wide.speedup


def test_required_acceptance_is_the_least_that_reaches_the_rate():
    hw = load_hardware("demo-narrow")
    s = speculative_estimate(DEMO, DRAFT, hw, acceptance=0.5, max_draft_len=15)
    goal = 2 * s.plain_tokens_per_s
    a, k = required_acceptance(s, goal)
    at = speculative_estimate(DEMO, DRAFT, hw, acceptance=a, max_draft_len=15)
    assert at.tokens_per_s >= goal * (1 - 1e-9) and at.draft_len == k
    below = speculative_estimate(DEMO, DRAFT, hw, acceptance=a - 1e-6, max_draft_len=15)
    assert below.tokens_per_s < goal
    top = speculative_estimate(DEMO, DRAFT, hw, acceptance=1, max_draft_len=15)
    assert required_acceptance(s, top.tokens_per_s * 1.01) is None


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_acceptance_is_refused(bad):
    with pytest.raises(InputError, match=r"^acceptance must be a number from 0 to 1, not "):
        check_acceptance(bad)


@pytest.mark.parametrize(("args", "message"), [
    (("--draft", "llama-3.2-1b"), "--draft goes with --speculative"),
    (("--acceptance", "0.5"), "--acceptance goes with --speculative"),
    (("--speculative", "--acceptance", "0.5"), "--speculative needs --draft NAME_OR_DIR (the draft model)"),
    (("--speculative", "--draft", "llama-3.2-1b"),
     "--speculative needs --acceptance A (0..1); 'measured' needs two checkpoint directories"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "1.5"),
     "--acceptance must be a number from 0 to 1 or 'measured', not '1.5'"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "often"),
     "--acceptance must be a number from 0 to 1 or 'measured', not 'often'"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "0.5", "--draft-len", "0"),
     "--draft-len must be at least 1, not 0"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "0.5", "--draft-len", "16"),
     "--draft-len: the draft length must be at most 15 (max_m: 16 rows a pass, one of them the last accepted "
     "token's), not 16 on groq-lpu"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "0.5", "--batch", "4"),
     "--speculative projects one sequence (batch 1), not --batch 4"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "0.5", "--reach", "0"),
     "--reach must be a positive number of tokens/s, not 0"),
    (("--speculative", "--draft", "nope", "--acceptance", "0.5"), "--draft: unknown model 'nope'"),
    (("--speculative", "--draft", DEMO, "--acceptance", "0.5"),
     "draft demo: its vocabulary has 48 tokens, the target's 128256; it cannot draft the target llama-3-70b's "
     "tokens"),
    (("--speculative", "--draft", "llama-3.2-1b", "--acceptance", "measured"),
     "--acceptance measured needs the target model as a checkpoint directory, not llama-3-70b"),
])
def test_cli_errors_are_one_line(args, message):
    result = invoke("--model", "llama-3-70b", "--hw", "groq-lpu", *args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockstep: error: " + message), result.stderr


def test_a_draft_that_does_not_fit_beside_the_target_is_refused():
    """Llama-3-70B takes 153 MB of a Groq chip's 230: a second 70B model does not fit beside it."""
    result = invoke("--model", "llama-3-70b", "--hw", "groq-lpu", "--speculative", "--draft", "llama-3.1-70b",
                    "--acceptance", "0.5")
    assert result.exit_code == 1
    assert result.stderr.startswith("lockstep: error: draft llama-3.1-70b does not fit beside llama-3-70b on "
                                    "groq-lpu: ") and len(result.stderr.splitlines()) == 1


def test_measured_needs_one_tokenizer(tmp_path):
    other = tmp_path / "other"
    tc = resolve_model(DRAFT)[1]
    save_checkpoint(other, tc, init_weights(tc, seed=0), CharTokenizer("abcdefgh"))
    with pytest.raises(InputError, match=r"has another tokenizer than the target .*: it cannot draft its tokens$"):
        measured_acceptance(DEMO, other)


def test_cli_text_and_json():
    args = ("--model", "llama-3-70b", "--hw", "groq-lpu", "--speculative", "--draft", "llama-3.2-1b",
            "--acceptance", "0.8")
    text = invoke(*args, "--draft-len", "4")
    assert text.exit_code == 0 and "speculative: llama-3-70b drafted by llama-3.2-1b on groq-lpu" in text.stdout
    data = json.loads(invoke(*args, "--reach", "600", "--json").stdout)["speculative"]
    assert data["chosen"] and len(data["sweep"]) == 15 and data["draft_len"] in range(1, 16)
    assert data["reach"]["acceptance"] <= 0.8 and data["tokens_per_s"] == max(r["tokens_per_s"] for r in data["sweep"])


def test_the_text_says_when_plain_decoding_wins():
    args = ("--model", "golden/data/demo", "--hw", "demo", "--speculative", "--draft", DRAFT, "--acceptance")
    assert "plain decoding is faster at every k)" in invoke(*args, "0.3").stdout
    assert "plain decoding is faster" not in invoke("--model", "golden/data/demo", "--hw", "demo-narrow",
                                                    *args[4:], "0.3").stdout


def test_llama_3_2_1b_shares_llama_3s_vocabulary():
    assert MODELS["llama-3.2-1b"].vocab_size == MODELS["llama-3-70b"].vocab_size
