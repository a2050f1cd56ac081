"""Speculative decoding replayed on the RTL (sim/speculative/rtl.py): the draft model resident beside
the target in one decode top level, every pass's tokens equal to the instruction-level model's and
its measured cycles equal to the cycle model's, plain decoding's steps measured after it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from golden.checkpoint import draft_model_path, load_checkpoint, load_demo_model
from golden.int_model import generate_int
from golden.quality import held_out_tokens
from sim.cli import main
from sim.design import load_design
from sim.flows.decode import predicted_cycles
from sim.machine.resident import resident
from sim.runtime import prepare
from sim.speculative.rtl import confirm_speculative_on_rtl, plain_rows
from sim.speculative.run import run_speculative

PROMPT = "The old miller "


def _cli(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def _check_replayed(d: dict, plain: list[int]) -> None:
    """A ``--json`` report replayed on Verilator: what it must hold, each figure compared."""
    assert d["backend"] == "verilator" and d["rtl"]["simulator"] == "verilator" and d["rtl"]["decided_on"] == "isa"
    assert d["identical"] is True and d["generated"] == plain
    assert d["cycle_exact"] is True
    assert all(p["measured_cycles"] == p["predicted_cycles"] for p in d["passes"])
    assert d["rtl"]["passes"] == len(d["passes"]) and d["rtl"]["plain_steps"] == d["decode_tokens"]
    assert len(d["plain_measured_cycles"]) == d["decode_tokens"]
    assert sum(d["plain_measured_cycles"]) == d["cycles"]["plain"]


@pytest.fixture(scope="module")
def demo_plain():
    ckpt = load_demo_model()
    compiled = prepare(ckpt, load_design("demo").config)
    return generate_int(compiled.model, ckpt.tokenizer.encode(PROMPT), 10)


@pytest.mark.parametrize("drafter", ["draft", "lookup"])
def test_run_speculative_on_verilator_measures_every_pass(drafter, demo_plain):
    """`lockstep run --backend verilator --speculative`: decided on isa, replayed on the RTL (the demo design,
    whose top level the main job builds), every pass and plain step measured equal to its prediction."""
    out = _cli("--backend", "verilator", "--hw", "demo", "--speculative", drafter, "--draft-len", 2,
               "--prompt", PROMPT, "--tokens", 10, "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    _check_replayed(d, demo_plain)
    assert {p["model"] for p in d["passes"]} == ({"target", "draft"} if drafter == "draft" else {"target"})


def test_plain_rows_are_plain_decodings_steps():
    ckpt = load_demo_model()
    compiled = prepare(ckpt, load_design("demo").config)
    prompt = ckpt.tokenizer.encode(PROMPT)
    r = run_speculative(compiled, "isa", prompt, 6, drafter="lookup", draft_len=2)
    rows = plain_rows(r)
    sequence = prompt + r.plain_tokens
    assert rows == [(sequence[q], q, 0) for q in range(len(prompt), len(prompt) + 5)]
    assert [predicted_cycles(compiled, q) for _, q, _ in rows] == r.plain_step_cycles[len(prompt):]


@pytest.mark.slow
@pytest.mark.parametrize("drafter", ["draft", "lookup"])
def test_narrow_design_every_k_identical_and_cycle_exact_on_verilator(drafter):
    """The issue's must-show on the RTL: 64 tokens from several held-out prompts, k in {1, 2, 4, 8}, on the
    narrow design (one weight row a cycle), each run's tokens equal to plain greedy decoding and every
    pass's measured cycles equal to the prediction (the replay raises on any difference)."""
    ckpt = load_demo_model()
    config = load_design("demo-narrow").config
    target = prepare(ckpt, config)
    pair = resident(target, prepare(load_checkpoint(draft_model_path()), config))
    text = held_out_tokens(ckpt.tokenizer)
    prompts = [text[i:i + 16] for i in (0, len(text) // 2)]
    for prompt in prompts:
        plain = generate_int(target.model, prompt, 64)
        for k in (1, 2, 4, 8):
            r = run_speculative(target, "isa", prompt, 64, drafter=drafter, draft_len=k,
                                draft=pair.draft if drafter == "draft" else None)
            r = confirm_speculative_on_rtl(r, pair if drafter == "draft" else target, "verilator")
            assert r.tokens == plain and r.identical and r.cycle_exact
            assert all(p.measured_cycles == p.predicted_cycles for p in r.passes)
