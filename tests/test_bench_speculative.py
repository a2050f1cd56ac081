"""scripts/bench_speculative.py (issue 18's benchmark): a tiny sweep's figures equal run_speculative's own,
run again here on the same prompt; its prompts are the held-out text's; the pass costs are the cycle
model's; the best k and break-even follow the speedups; bad inputs are one line and exit status 1.
The full sweep's table is in docs/performance.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from golden.checkpoint import draft_model_path, load_checkpoint, load_demo_model
from golden.quality import held_out_tokens
from sim.design import load_design
from sim.machine.cycles import pass_cycles
from sim.runtime import prepare
from sim.speculative.run import run_speculative
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_speculative.py"
DESIGN = "demo-narrow"
PROMPT_LEN = 16
TOKENS = 8
KS = (1, 2)


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    png = tmp_path_factory.mktemp("bench") / "speculative.png"
    out = bench("--hw", DESIGN, "--prompts", 1, "--tokens", TOKENS, *(a for k in KS for a in ("--k", k)), "--json",
                "--plot", png)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), png, out.stderr


@pytest.fixture(scope="module")
def models():
    ckpt = load_demo_model()
    config = load_design(DESIGN).config
    return ckpt, prepare(ckpt, config), prepare(load_checkpoint(draft_model_path()), config)


def test_the_figures_are_run_speculative_s(sweep, models):
    result, _, _ = sweep
    ckpt, target, draft = models
    prompt = held_out_tokens(ckpt.tokenizer)[:PROMPT_LEN]      # one prompt: the held-out text's first window
    assert result["prompts"] == [{"tokens": prompt, "text": ckpt.tokenizer.decode(prompt)}]
    assert (result["backend"], result["measured"], result["new_tokens"]) == ("isa", False, TOKENS)
    assert [(p["design"], p["drafter"], p["k"]) for p in result["points"]] == \
        [(DESIGN, d, k) for d in ("draft", "lookup") for k in KS]
    for p in result["points"]:
        r = run_speculative(target, "isa", prompt, TOKENS, drafter=p["drafter"], draft_len=p["k"],
                            draft=draft if p["drafter"] == "draft" else None)
        assert r.identical and p["identical"]
        assert (p["proposed"], p["accepted"], p["rounds"], p["decode_tokens"]) == \
            (r.proposed, r.accepted, r.rounds, r.decode_tokens)
        assert (p["draft_cycles"], p["verify_cycles"], p["plain_cycles"]) == \
            (r.draft_cycles, r.verify_cycles, r.plain_cycles)
        assert p["acceptance_rate"] == r.acceptance_rate
        assert p["tokens_per_target_pass"] == r.tokens_per_target_pass
        assert p["cycles_per_token"] == r.cycles_per_token
        assert p["speedup"] == r.speedup
        assert p["tokens_per_second"] == r.tokens_per_second
        assert p["cycles_per_verify_pass"] == r.verify_cycles / r.rounds
        assert p["runs"][0]["speedup"] == r.speedup
        if p["drafter"] == "lookup":
            assert p["draft_cycles"] == 0
    narrow = next(p for p in result["points"] if p["drafter"] == "draft" and p["k"] == 2)
    assert narrow["speedup"] > 1          # one weight row a cycle: the k + 1 rows ride along each tile


def test_the_summary_follows_the_speedups(sweep):
    result, _, _ = sweep
    for s in result["summary"]:
        mine = [p for p in result["points"] if (p["design"], p["drafter"]) == (s["design"], s["drafter"])]
        best = max(mine, key=lambda p: p["speedup"])
        assert (s["best_k"], s["best_speedup"]) == (best["k"], best["speedup"])
        assert s["best_tokens_per_second"] == best["tokens_per_second"]["speculative"]
        assert s["pays_at"] == [p["k"] for p in mine if p["speedup"] >= 1]
    draft = next(s for s in result["summary"] if s["drafter"] == "draft")
    assert result["targets"] == [{"design": DESIGN, "k": draft["best_k"], "speedup": draft["best_speedup"],
                                  "met": draft["best_speedup"] >= result["target_speedup"]}]


def test_the_pass_costs_are_the_cycle_model_s(sweep, models):
    result, _, _ = sweep
    _, target, draft = models
    (design,) = result["designs"]
    costs = design["pass_cycles"]
    position = PROMPT_LEN + TOKENS // 2
    assert costs["position"] == position and design["weight_rows_per_cycle"] == 1
    assert sorted(int(m) for m in costs["target"]) == [1, *(k + 1 for k in KS)]
    assert costs["gemm"].keys() == costs["target"].keys()
    for m, cycles in costs["target"].items():
        positions = list(range(position, position + int(m)))
        c = pass_cycles(target.program, target.model.config, target.config, positions=positions)
        assert cycles == c.total
        assert costs["gemm"][m] == sum(o.cycles for o in c.ops if o.op == "gemm")
    # one weight row a cycle: a tile loads in R cycles and up to R rows stream through it meanwhile, so
    # the GEMMs of a verify pass cost within 1 % of one row's
    gemm = {int(m): g for m, g in costs["gemm"].items()}
    assert gemm[1] < gemm[1 + max(KS)] < 1.01 * gemm[1]
    assert costs["draft_step"] == pass_cycles(draft.program, draft.model.config, draft.config,
                                              positions=[position]).total


def test_plot_and_progress(sweep):
    _, png, stderr = sweep
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in png.parent.iterdir() if p != png]          # no temporary file left behind
    assert f"[1/{2 * len(KS)}] {DESIGN}, draft, k = 1:" in stderr and f"[{2 * len(KS)}/{2 * len(KS)}]" in stderr


def test_the_table_shows_the_figures(sweep):
    result, _, _ = sweep
    out = bench("--hw", DESIGN, "--prompts", 1, "--tokens", TOKENS, "--k", 2, "--drafter", "draft", "--plot", "")
    assert out.returncode == 0, out.stderr
    p = next(p for p in result["points"] if (p["drafter"], p["k"]) == ("draft", 2))
    row = next(line for line in out.stdout.splitlines() if line.startswith(f"{DESIGN} | draft   | 2 |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[3:] == [f"{p['acceptance_rate']:.1%}", f"{p['tokens_per_target_pass']:.2f}",
                         f"{p['cycles_per_token']['draft']:,.0f}", f"{p['cycles_per_token']['verify']:,.0f}",
                         f"{p['cycles_per_verify_pass']:,.0f}", f"{p['cycles_per_token']['plain']:,.0f}",
                         f"{p['speedup']:.3f}x", f"{p['tokens_per_second']['speculative']:,.0f}",
                         f"{p['tokens_per_second']['plain']:,.0f}"]
    assert f"{DESIGN}, draft: best k = 2, {p['speedup']:.3f}x" in out.stdout
    assert "cycles PREDICTED by the cycle model (nothing measured)" in out.stdout



@pytest.mark.parametrize(("speedups", "pays_at", "stops", "break_even", "words"), [
    ((1.2, 1.1, 0.9, 0.8), [1, 2], 3, 2.5, "stops paying at k = 3 (break-even near k = 2.5)"),
    ((1.2, 1.4, 1.3), [1, 2, 3], None, None, "pays at every k swept"),
    ((0.9, 0.8), [], None, None, "never pays: below 1x at every k swept"),
    ((0.9, 1.1), [2], None, None, "pays at k = 2 only"),
])
def test_best_k_and_break_even(speedups, pays_at, stops, break_even, words):
    bench_module = load_script("bench_speculative")
    points = [{"design": "d", "drafter": "x", "k": k, "speedup": s,
               "tokens_per_second": {"speculative": 100 * s, "plain": 100.0}} for k, s in enumerate(speedups, 1)]
    (s,) = bench_module.summarize(points)
    assert (s["pays_at"], s["stops_paying"]) == (pays_at, stops)
    assert s["break_even"] == (None if break_even is None else pytest.approx(break_even))
    assert s["best_k"] == 1 + speedups.index(max(speedups))
    assert bench_module.verdict(s) == words


@pytest.mark.parametrize(("args", "message"), [
    (("--k", 0), r"--k must be a positive integer, not 0"),
    (("--k", 16, "--hw", "demo-narrow"), r"--k 16 on demo-narrow: the draft length must be at most 15 \(the design's "
                                         r"max_m: 16 rows a pass, one of them the last accepted token's\), not 16"),
    (("--k", 2, "--k", 2), r"--k 2 is given twice"),
    (("--k", "x"), r"argument --k: invalid int value: 'x'"),
    (("--backend", "serial"), r"--backend serial: not yet \(speculative decoding runs on golden, isa, verilator, "
                              r"icarus, amaranth\)"),
    (("--drafter", "oracle"), r"--drafter must be one of draft, lookup, not 'oracle'"),
    (("--hw", "nosuch"), r"unknown design 'nosuch'.*"),
    (("--hw", "groq-lpu"), r"design groq-lpu is for the performance model only: .*"),
    (("--tokens", 1), r"--tokens must be at least 2 \(the prefill gives the first new token both ways; the speedup "
                      r"is over the tokens after it\), not 1"),
    (("--tokens", 200, "--hw", "demo"), r"--prompt-len 16 and --tokens 200 on demo: prompt \(16 tokens\) plus 200 new "
                                        r"tokens needs 215 positions, more than max_context=128"),
    (("--prompts", 0), r"--prompts must be a positive integer, not 0"),
    (("--prompt-len", 0), r"--prompt-len must be a positive integer, not 0"),
    (("--plot", "out.svg"), r"--plot must name a \.png file, not 'out\.svg'"),
    (("--plot", "/nonexistent-dir/s.png"), r"--plot /nonexistent-dir/s\.png: no such directory '/nonexistent-dir'"),
    (("--bogus",), r"unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line(args, message):
    out = bench(*args, timeout=120)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert re.fullmatch(f"bench_speculative: error: {message}", lines[0]), lines[0]
