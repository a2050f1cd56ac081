"""Serving: request traces, the deterministic continuous-batching scheduler, ``lockstep serve-bench``, and
``lockstep estimate --prompt``."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from golden.errors import InputError
from sim.serve.requests import Lengths, Request, check_requests, poisson_trace, read_trace

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


def lockstep(*args, cwd=None):
    return subprocess.run([LOCKSTEP, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)


# --- requests and traces -------------------------------------------------------------------------

def test_the_poisson_generator_is_seeded_and_draws_what_it_is_asked():
    kw = dict(requests=200, rate=1000.0, clock_hz=100e6, prompt=Lengths(3, 9), output=Lengths(2, 5), vocab_size=50)
    a, b = poisson_trace(seed=7, **kw), poisson_trace(seed=7, **kw)
    assert a == b
    assert a != poisson_trace(seed=8, **kw)
    assert a[0].arrival == 0 and all(x.arrival <= y.arrival for x, y in zip(a, a[1:], strict=False))
    assert {len(r.prompt) for r in a} == set(range(3, 10)) and {r.max_new_tokens for r in a} == set(range(2, 6))
    assert all(0 <= t < 50 for r in a for t in r.prompt)
    # 200 gaps of mean clock / rate = 100,000 cycles: the mean gap within 20 % of it.
    assert 0.8e5 < a[-1].arrival / 199 < 1.2e5


def test_a_trace_file_reads_ids_text_and_both_arrival_units(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "a", "arrival_s": 1e-6, "prompt": [1, 2], "max_new_tokens": 3}\n\n'
                    '{"arrival_cycle": 7, "prompt": "ab", "max_new_tokens": 1}\n')
    reqs = read_trace(path, clock_hz=100e6, encode=lambda s: [ord(c) - 96 for c in s])
    assert reqs == [Request("a", (1, 2), 3, 100), Request("3", (1, 2), 1, 7)]


@pytest.mark.parametrize(("line", "message"), [
    ("not json", r"t\.jsonl line 1: not JSON \(Expecting value at column 1\)"),
    ("[1]", r"t\.jsonl line 1: expected a JSON object, not list"),
    ('{"prompt": [], "max_new_tokens": 1, "arrival_cycle": 0}', r"t\.jsonl line 1: prompt is empty"),
    ('{"prompt": [1], "max_new_tokens": 0, "arrival_cycle": 0}',
     r"t\.jsonl line 1: max_new_tokens must be a positive integer, not 0"),
    ('{"prompt": [1], "max_new_tokens": 2}', r"t\.jsonl line 1: give exactly one of arrival_cycle and arrival_s"),
    ('{"prompt": [1], "max_new_tokens": 2, "arrival_cycle": -1}',
     r"t\.jsonl line 1: arrival_cycle must be an integer in 0\.\.2\*\*62, not -1"),
    ('{"prompt": [1.5], "max_new_tokens": 2, "arrival_s": 0}',
     r"t\.jsonl line 1: prompt must be a list of token ids or a string, not \[1\.5\]"),
    ('{"prompt": [1], "max_new_tokens": 2, "arrival_s": 0, "user": 3}', r"t\.jsonl line 1: unknown key 'user'"),
    ('{"prompt": "hi", "max_new_tokens": 2, "arrival_s": 0}',
     r"t\.jsonl line 1: a text prompt needs the model's tokenizer"),
])
def test_every_bad_trace_line_is_one_error_naming_the_line(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match="^" + message):
        read_trace(path, clock_hz=100e6)


def test_a_repeated_id_and_an_empty_file_are_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": 1, "prompt": [1], "max_new_tokens": 1, "arrival_s": 0}\n' * 2)
    with pytest.raises(InputError, match=r"^t\.jsonl line 2: id '1' repeats line 1$"):
        read_trace(path, clock_hz=1e6)
    path.write_text("\n")
    with pytest.raises(InputError, match=r"^--trace .*t\.jsonl: no requests in the file$"):
        read_trace(path, clock_hz=1e6)


def test_a_request_that_can_never_fit_is_refused_by_name():
    ok = Request("a", (1, 2, 3), 6, 0)
    check_requests([ok], max_context=8, vocab_size=10)          # 3 + 6 - 1 = 8 positions: fits exactly
    with pytest.raises(InputError, match=r"^request b: prompt \(3 tokens\) plus 7 new tokens needs 9 positions, more "
                                         r"than a sequence's KV slot holds \(max_context 8\)$"):
        check_requests([ok, replace(ok, id="b", max_new_tokens=7)], max_context=8, vocab_size=10)
    with pytest.raises(InputError, match=r"^request a: prompt token must be in 0\.\.9, not 10$"):
        check_requests([replace(ok, prompt=(10,))], max_context=8, vocab_size=10)
    with pytest.raises(InputError, match=r"^request a: max_new_tokens must be a positive integer, not 0$"):
        check_requests([replace(ok, max_new_tokens=0)], max_context=8, vocab_size=10)


# --- estimate --prompt ---------------------------------------------------------------------------

def test_estimate_without_prompt_prints_what_it_did_and_prompt_adds_the_prefill():
    plain = lockstep("estimate", "--model", "golden/data/demo", "--hw", "demo", "--context", "16",
                     cwd=Path(__file__).parents[2])
    both = lockstep("estimate", "--model", "golden/data/demo", "--hw", "demo", "--context", "16", "--prompt", "40",
                    cwd=Path(__file__).parents[2])
    assert plain.returncode == both.returncode == 0, both.stderr
    assert "prefill" not in plain.stdout and "ttft" not in plain.stdout
    assert both.stdout.startswith(plain.stdout)
    extra = both.stdout[len(plain.stdout):].splitlines()
    assert extra[0].startswith("prefill  : 40 tokens in 3 passes of at most 16 rows (chunked prefill), ")
    assert extra[1].startswith("ttft     : ")
    js = json.loads(lockstep("estimate", "--model", "golden/data/demo", "--hw", "demo", "--json",
                             cwd=Path(__file__).parents[2]).stdout)
    assert "prefill" not in js


def test_the_prefill_estimate_is_the_cycle_model_s_passes():
    """The demo model's prefill estimate equals the cycle model's passes (sim.machine.cycles.pass_cycles)
    of the same rows: 40 tokens in passes of 16, 16 and 8 rows; and 3 prompts of 10 tokens, rows of
    several sequences in one pass."""
    from golden.checkpoint import demo_model_path, load_config
    from golden.quantize import program_structure
    from sim.design import load_design
    from sim.machine.cycles import pass_cycles
    from sim.perf.model import prefill

    mc = load_config(demo_model_path())
    ops = list(program_structure(mc))
    for hw in ("demo", "demo-narrow"):
        d = load_design(hw)
        for prompt, batch in ((40, 1), (10, 3), (1, 1)):
            rows = [p for _ in range(batch) for p in range(prompt)]
            chunks = [rows[i:i + 16] for i in range(0, len(rows), 16)]
            want = sum(pass_cycles(ops, mc, d.config, positions=c).total for c in chunks)
            got = prefill(mc, d.hardware, prompt=prompt, batch=batch, chunk=d.config.max_m)
            assert got.passes == len(chunks)
            assert got.cycles == want, (hw, prompt, batch)
            assert got.all_seconds == pytest.approx(want / d.config.clock_hz)
            first = next(i for i in range(len(chunks)) if 16 * (i + 1) >= prompt)
            assert got.first_seconds == pytest.approx(
                sum(pass_cycles(ops, mc, d.config, positions=c).total for c in chunks[:first + 1]) / d.config.clock_hz)


def test_estimate_prompt_on_a_large_model_and_its_bad_values():
    out = lockstep("estimate", "--model", "llama-3-70b", "--hw", "groq-lpu", "--prompt", "2048", "--batch", "2",
                   "--json")
    assert out.returncode == 0, out.stderr
    pre = json.loads(out.stdout)["prefill"]
    assert pre["passes"] == 256 and pre["first_seconds"] < pre["all_seconds"]
    assert pre["tokens_per_s"] == pytest.approx(4096 / pre["all_seconds"])
    bad = lockstep("estimate", "--model", "llama-3-70b", "--hw", "groq-lpu", "--prompt", "9000")
    assert bad.returncode == 1 and bad.stderr == "lockstep: error: prompt 9000 exceeds llama-3-70b's max_context 8192\n"
    zero = lockstep("estimate", "--model", "gpt2", "--prompt", "0")
    assert zero.returncode == 1 and zero.stderr == "lockstep: error: --prompt must be at least 1, not 0\n"
