"""Speculative decoding on the instruction-level model (sim/speculative/): tokens identical to plain
greedy decoding, every pass priced by the cycle model and replayable, the report's arithmetic, and
one line for every bad option of ``lockstep run --speculative``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from golden.checkpoint import load_demo_model, save_checkpoint
from golden.errors import InputError
from golden.int_model import generate_int
from golden.model import ModelConfig, init_weights
from golden.quantize import quantize_model, random_calibration
from golden.tokenizer import CharTokenizer
from sim.cli import main
from sim.design import load_design
from sim.machine.compiler import compile_model
from sim.machine.cycles import decode_step_cycles, pass_cycles
from sim.machine.isa_sim import IsaMachine
from sim.runtime import prepare
from sim.speculative.run import run_speculative

PROMPTS = ("The old miller ", "and the dog ")
#: A one-layer d32 draft with the demo model's vocabulary, random weights.
TINY_DRAFT = ModelConfig(family="llama", vocab_size=48, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                         head_dim=16, d_ff=64, max_context=128)


def _tiny_weights(config=TINY_DRAFT):
    return init_weights(config, seed=5, std=0.3)


@pytest.fixture(scope="module")
def demo():
    ckpt = load_demo_model()
    return ckpt, prepare(ckpt, load_design("demo").config)


@pytest.fixture(scope="module")
def tiny_draft(demo):
    model = quantize_model(TINY_DRAFT, _tiny_weights(), random_calibration(TINY_DRAFT, windows=2, seed=1))
    return compile_model(model, demo[1].config)


@pytest.fixture(scope="module")
def plain(demo):
    ckpt, compiled = demo
    return {p: generate_int(compiled.model, ckpt.tokenizer.encode(p), 64) for p in PROMPTS}


def _run(demo, prompt, drafter, k, draft=None, backend="isa", tokens=64):
    ckpt, compiled = demo
    return run_speculative(compiled, backend, ckpt.tokenizer.encode(prompt), tokens, drafter=drafter, draft_len=k,
                           draft=draft)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("drafter", ["lookup", "draft"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_isa_tokens_identical_to_plain(demo, tiny_draft, plain, prompt, drafter, k):
    r = _run(demo, prompt, drafter, k, tiny_draft if drafter == "draft" else None)
    assert r.tokens == plain[prompt]                       # the integer model's greedy decode
    assert r.plain_tokens == plain[prompt] and r.identical  # and the same backend's plain decode


def test_every_pass_is_priced_and_replays_on_fresh_machines(demo, tiny_draft):
    """What an RTL replay does: run the recorded passes in order on each model's own machine; every
    pass gives its recorded tokens, and its predicted cycles are pass_cycles of its positions."""
    _, compiled = demo
    r = _run(demo, PROMPTS[0], "draft", 4, tiny_draft, tokens=40)
    machines = {"target": IsaMachine(compiled), "draft": IsaMachine(tiny_draft)}
    models = {"target": compiled, "draft": tiny_draft}
    assert {p.model for p in r.passes} == {"target", "draft"}
    for p in r.passes:
        c = models[p.model]
        assert p.predicted_cycles == pass_cycles(c.program, c.model.config, c.config,
                                                 positions=[row[1] for row in p.rows]).total
        assert all(row[2] == 0 for row in p.rows)
        assert machines[p.model].run_pass(list(p.rows)) == list(p.tokens)


def test_report_arithmetic(demo, tiny_draft):
    ckpt, compiled = demo
    r = _run(demo, PROMPTS[1], "draft", 3, tiny_draft, tokens=40)
    prompt_len, n = len(r.prompt), len(r.tokens)
    assert n == 40 and r.decode_tokens == 39
    assert r.decode_tokens == r.rounds + r.accepted
    assert r.proposed == sum(p for p, _ in r.per_round) and all(0 <= a <= p <= 3 for p, a in r.per_round)
    assert r.acceptance_rate == r.accepted / r.proposed
    verify = [p for p in r.passes if p.model == "target" and p.phase == "decode"]
    assert len(verify) == r.rounds and r.tokens_per_target_pass == 39 / len(verify)
    assert r.verify_cycles == sum(p.predicted_cycles for p in verify)
    assert r.draft_cycles == sum(p.predicted_cycles for p in r.passes if p.model == "draft" and p.phase == "decode")
    m, c = compiled.model, compiled.config
    plain = sum(decode_step_cycles(m.program, m.config, c, position=p).total
                for p in range(prompt_len, prompt_len + n - 1))
    assert r.plain_cycles == plain
    assert r.speedup == plain / (r.draft_cycles + r.verify_cycles)
    per = r.cycles_per_token
    assert per["total"] == per["draft"] + per["verify"] == (r.draft_cycles + r.verify_cycles) / 39
    assert r.tokens_per_second == {"speculative": c.clock_hz / per["total"], "plain": c.clock_hz / per["plain"]}
    d = json.loads(json.dumps(r.as_dict()))
    assert d["identical"] is True and d["speedup"] == r.speedup and len(d["passes"]) == len(r.passes)
    assert d["passes"][0] == {"model": "target", "rows": [[t, i, 0] for i, t in enumerate(r.prompt)],
                              "tokens": list(r.passes[0].tokens), "predicted_cycles": r.passes[0].predicted_cycles,
                              "measured_cycles": None, "phase": "prefill"}
    assert d["rtl"] is None and d["cycle_exact"] is None and d["plain_measured_cycles"] is None


def test_golden_and_isa_run_the_same_passes(demo):
    a, b = (_run(demo, PROMPTS[0], "lookup", 4, backend=backend, tokens=32) for backend in ("golden", "isa"))
    assert a.passes == b.passes and a.tokens == b.tokens and a.identical


def test_api_option_errors(demo, tiny_draft):
    for kwargs, message in (({"drafter": "nope", "k": 4}, "--speculative must be one of draft, lookup, not 'nope'"),
                            ({"drafter": "lookup", "k": 0}, "--draft-len: the draft length must be a positive"),
                            ({"drafter": "lookup", "k": 16}, "at most 15 (the design's max_m: 16 rows a pass"),
                            ({"drafter": "draft", "k": 4}, "the draft drafter needs a draft model"),
                            ({"drafter": "lookup", "k": 4, "draft": tiny_draft}, "goes with the draft drafter")):
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            _run(demo, PROMPTS[0], kwargs["drafter"], kwargs["k"], kwargs.get("draft"), tokens=4)
    narrow = compile_model(tiny_draft.model, load_design("demo-narrow").config)
    with pytest.raises(InputError, match="compiled for the target's design"):
        _run(demo, PROMPTS[0], "draft", 4, narrow, tokens=4)
    small = ModelConfig(**{**TINY_DRAFT.__dict__, "vocab_size": 40})
    other = compile_model(quantize_model(small, _tiny_weights(small), random_calibration(small, windows=2, seed=1)),
                          demo[1].config)
    with pytest.raises(InputError, match="vocabulary has 40 tokens, the target's 48"):
        _run(demo, PROMPTS[0], "draft", 4, other, tokens=4)
    with pytest.raises(InputError, match="backend verilator: not yet"):     # the CLI replays on the RTL
        _run(demo, PROMPTS[0], "lookup", 4, backend="verilator", tokens=4)


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def draft_dirs(tmp_path_factory):
    """Draft checkpoints: one that fits the demo model, one with another tokenizer, one with another vocabulary."""
    root = tmp_path_factory.mktemp("drafts")
    tok = load_demo_model().tokenizer
    save_checkpoint(root / "good", TINY_DRAFT, _tiny_weights(), tok)
    other = CharTokenizer([chr(ord("A") + i) for i in range(tok.vocab_size)])
    save_checkpoint(root / "tokenizer", TINY_DRAFT, _tiny_weights(), other)
    small = ModelConfig(**{**TINY_DRAFT.__dict__, "vocab_size": 40})
    save_checkpoint(root / "vocab", small, _tiny_weights(small))
    return root


def _cli(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def _assert_error(result, message):
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockstep: error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == "", result.stdout      # nothing printed before the error


@pytest.mark.parametrize(("args", "message"), [
    (("--backend", "isa", "--speculative", "nope"), "--speculative must be one of draft, lookup, not 'nope'"),
    (("--backend", "isa", "--speculative", "lookup", "--draft-len", 0),
     "--draft-len: the draft length must be a positive integer, not 0"),
    (("--backend", "isa", "--speculative", "lookup", "--draft-len", "two"), "--draft-len must be an integer"),
    (("--backend", "isa", "--speculative", "lookup", "--draft-len", 16),
     "must be at most 15 (the design's max_m: 16 rows a pass"),
    (("--backend", "serial", "--speculative", "lookup"), "--speculative on backend serial: not yet"),
    (("--backend", "isa", "--speculative", "draft", "--set", "chip.weight_words=26000"),
     "the draft model cannot run beside the target: its weight memory"),
    (("--backend", "isa", "--draft-len", 2), "--draft-len goes with --speculative"),
    (("--backend", "isa", "--speculative", "lookup", "--prompt", "hello", "--tokens", 1000),
     "prompt (5 tokens) plus 1000 new tokens needs 1004 positions, more than max_context=128"),
    (("--backend", "isa", "--speculative", "lookup", "--draft", "x"), "--draft names a draft model and goes with"),
    (("--backend", "isa", "--speculative", "lookup", "--profile"), "--speculative does not go with --profile"),
    (("--backend", "isa", "--speculative", "draft", "--draft", "{root}/nope"), "does not exist"),
    (("--backend", "isa", "--speculative", "draft", "--draft", "{root}/tokenizer"),
     "its tokenizer differs from the target's (token 0 is 'A' in the draft's tokenizer, "),
    (("--backend", "isa", "--speculative", "draft", "--draft", "{root}/vocab"),
     "its vocabulary has 40 tokens, the target's 48"),
])
def test_cli_bad_options_are_one_line(draft_dirs, args, message):
    _assert_error(_cli(*(str(a).format(root=draft_dirs) for a in args)), message)


def test_cli_json_and_text(draft_dirs, plain):
    out = _cli("--backend", "isa", "--speculative", "draft", "--draft", draft_dirs / "good", "--draft-len", 2,
               "--tokens", 24, "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["identical"] is True and d["generated"] == plain[PROMPTS[0]][:24] and d["drafter"] == "draft"
    assert d["draft_len"] == 2 and {p["model"] for p in d["passes"]} == {"target", "draft"}
    text = _cli("--backend", "golden", "--speculative", "lookup", "--tokens", 24)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert "4 drafted tokens a round" in lines[0]
    for head in ("tokens     : identical to plain greedy decoding on golden (24 tokens compared)", "acceptance : ",
                 "tokens/pass: ", "cycles     : ", "plain      : ", "speedup    : ", "tokens/s   : ", "prefill    : "):
        assert any(line.startswith(head) for line in lines), (head, text.stdout)


def test_cli_with_no_decode_phase():
    """One new token comes from the prefill: nothing to compare cycles over, said so, not divided by zero."""
    text = _cli("--backend", "golden", "--speculative", "lookup", "--tokens", 1)
    assert text.exit_code == 0, text.output
    assert "decode     : no decode phase" in text.stdout
    d = json.loads(_cli("--backend", "golden", "--speculative", "lookup", "--tokens", 1, "--json").stdout)
    assert d["identical"] is True and len(d["generated"]) == 1 and d["rounds"] == 0
    assert d["speedup"] is None and d["acceptance_rate"] is None and d["tokens_per_target_pass"] is None
