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


# --- the scheduler on the instruction-level model ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llama():
    """The tiny Llama-GQA model on the small design with room for passes of 8 rows and several KV
    slots (tests/sim/tiny_models.py, the RTL pass tests' design too)."""
    from .tiny_models import tiny_passes

    compiled = tiny_passes("llama-gqa")
    assert compiled.kv_slots >= 2 and compiled.max_rows >= 4
    return compiled


def _alone(compiled, request):
    """The request's tokens from the golden integer model running its prompt alone (greedy)."""
    from golden.int_model import generate_int

    return generate_int(compiled.model, list(request.prompt), request.max_new_tokens)


def _trace(compiled, n, *, rate, seed, prompt=(1, 8), output=(1, 6)):
    c = compiled
    return poisson_trace(requests=n, rate=rate, clock_hz=c.config.clock_hz, prompt=Lengths(*prompt),
                         output=Lengths(*output), vocab_size=c.model.config.vocab_size, seed=seed)


def test_every_sequence_equals_its_prompt_run_alone_and_runs_are_deterministic(tiny_llama):
    """Sequences join and leave mid-run (Poisson arrivals, mixed lengths, more requests than slots),
    prompts are chunked across passes: every request's tokens equal the prompt run alone; a second
    run gives the same passes (rows, cycles) and the same results."""
    from sim.serve.scheduler import IsaExecutor, serve

    trace = _trace(tiny_llama, 40, rate=20_000, seed=3, prompt=(1, 20))
    first = serve(trace, IsaExecutor(tiny_llama))
    again = serve(trace, IsaExecutor(tiny_llama))
    assert first.passes == again.passes and first.results == again.results
    for r, res in zip(trace, first.results, strict=True):
        assert res.id == r.id and res.tokens == _alone(tiny_llama, r), r.id
    m = tiny_llama.max_rows
    assert max(len(p.rows) for p in first.passes) == m          # some passes full
    assert any(len({s for *_, s in p.rows}) > 1 for p in first.passes)   # rows of several sequences in a pass
    # A prompt longer than a pass's rows is read in chunks.
    assert any(len(r.prompt) > m for r in trace)


def _check_no_drop_no_duplicate(trace, report, max_rows, slots):
    assert [r.id for r in report.results] == [r.id for r in trace]
    rows: dict[str, list[int]] = {}
    for p in report.passes:
        assert 1 <= len(p.rows) <= max_rows
        live = {}
        for rid, _, pos, slot in p.rows:
            rows.setdefault(rid, []).append(pos)
            assert live.setdefault(slot, rid) == rid                 # one sequence a slot in a pass
        assert len(live) <= slots
    by_id = {r.id: r for r in trace}
    for res in report.results:
        r = by_id[res.id]
        assert len(res.tokens) == r.max_new_tokens
        # Every position of the request ran exactly once, in order.
        assert rows[r.id] == list(range(len(r.prompt) + r.max_new_tokens - 1))
        assert r.arrival <= res.admitted < res.first_token <= res.finished


def test_a_trace_of_1000_requests_loses_and_repeats_none(tiny_llama):
    """1,000 requests on the instruction-level model, arriving faster than they are served (the queue
    grows, slots are reused hundreds of times): each request is served once, every one of its
    positions runs exactly once, it gets exactly its tokens; the aggregate figures add up."""
    from sim.serve.scheduler import IsaExecutor, serve

    trace = _trace(tiny_llama, 1000, rate=50_000, seed=11, prompt=(1, 3), output=(1, 2))
    ex = IsaExecutor(tiny_llama)
    seen = []
    report = serve(trace, ex, on_pass=lambda done, total: seen.append((done, total)))
    _check_no_drop_no_duplicate(trace, report, tiny_llama.max_rows, ex.kv_slots)
    assert seen[-1] == (1000, 1000) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    s = report.summary()
    assert s["requests"] == 1000 and s["generated_tokens"] == sum(r.max_new_tokens for r in trace)
    assert s["rows"] == sum(len(r.prompt) + r.max_new_tokens - 1 for r in trace)
    assert s["busy_cycles"] == sum(p.predicted for p in report.passes) and s["cycle_exact"] is None
    assert 0 < s["array_utilisation"] < 1
    assert s["ttft_s"]["p50"] <= s["ttft_s"]["p90"] <= s["ttft_s"]["p99"]


def test_idle_time_jumps_to_the_next_arrival_and_a_pass_costs_its_predicted_cycles(tiny_llama):
    from sim.machine.cycles import pass_cycles
    from sim.serve.scheduler import IsaExecutor, serve

    c = tiny_llama
    late = 10**9
    trace = [Request("a", (1, 2, 3), 2, 0), Request("b", (4,), 1, late)]
    rep = serve(trace, IsaExecutor(c))
    a, b = rep.results
    assert [len(p.rows) for p in rep.passes] == [3, 1, 1]
    assert rep.passes[2].start == late and b.admitted == late
    for p in rep.passes:
        assert p.predicted == pass_cycles(c.program, c.model.config, c.config,
                                          positions=[pos for _, _, pos, _ in p.rows]).total
    assert a.first_token == rep.passes[0].predicted and a.finished == a.first_token + rep.passes[1].predicted
    assert b.ttft() == rep.passes[2].predicted and b.tpot() is None


def test_the_scheduler_refuses_what_can_never_run(tiny_llama):
    from sim.serve.scheduler import IsaExecutor, serve

    ex = IsaExecutor(tiny_llama)
    ctx = tiny_llama.model.max_context
    with pytest.raises(InputError, match=rf"^request x: prompt \({ctx} tokens\) plus 2 new tokens needs {ctx + 1} "
                                         rf"positions, more than a sequence's KV slot holds \(max_context {ctx}\)$"):
        serve([Request("ok", (1,), 1, 0), Request("x", (1,) * ctx, 2, 5)], ex)
    with pytest.raises(InputError, match=rf"^max_running must be an integer in 1\.\.{ex.kv_slots} \(the KV slots\), "
                                         rf"not {ex.kv_slots + 1}$"):
        serve([Request("ok", (1,), 1, 0)], ex, max_running=ex.kv_slots + 1)
    assert not ex.machine.k.any()          # refused before any pass ran


# --- lockstep serve-bench ------------------------------------------------------------------------

def test_serve_bench_table_json_and_a_rate_sweep_plot(tmp_path):
    png = tmp_path / "sweep.png"
    out = lockstep("serve-bench", "--requests", "6", "--rate", "2000,20000", "--prompt-len", "2:6",
                   "--output-len", "2:4", "--plot", png, "--quiet")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("model demo (llama) on design demo: ") and "8 KV slots" in lines[0]
    assert any(line.split()[:2] == ["2,000", "6"] for line in lines)
    assert "tokens     : all " in out.stdout and "equal to the golden integer model" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.png"]
    js = lockstep("serve-bench", "--requests", "6", "--rate", "2000", "--prompt-len", "2:6", "--output-len", "2:4",
                  "--json")
    assert js.returncode == 0, js.stderr
    run = json.loads(js.stdout)["runs"][0]
    assert run["summary"]["requests"] == 6 and len(run["requests"]) == 6
    assert all(len(r["tokens"]) >= 2 for r in run["requests"])
    assert json.loads(js.stdout)["bit_exact"] is True


@pytest.mark.parametrize(("args", "trace", "message"), [
    (("--trace", "{t}"), '{"prompt": [1], "max_new_tokens": 0, "arrival_s": 0}',
     "t.jsonl line 1: max_new_tokens must be a positive integer, not 0"),
    (("--trace", "{t}"), '{"prompt": [], "max_new_tokens": 3, "arrival_s": 0}', "t.jsonl line 1: prompt is empty"),
    (("--trace", "{t}"), '{"prompt": [1, 2', "t.jsonl line 1: not JSON (Expecting ',' delimiter at column 17)"),
    (("--trace", "{t}"), '{"id": "long", "prompt": "' + "a" * 130 + '", "max_new_tokens": 1, "arrival_s": 0}',
     "request long: prompt (130 tokens) plus 1 new tokens needs 130 positions, more than a sequence's KV slot "
     "holds (max_context 128)"),
    (("--trace", "{t}"), '{"prompt": "Up", "max_new_tokens": 3, "arrival_s": 0}',
     "t.jsonl line 1: prompt: character 'U' at position 0 is not in the tokenizer's alphabet"),
    (("--trace", "{t}", "--rate", "5"), "", "--trace replays a file; --rate is for the generator: give one or the "
                                            "other"),
    (("--trace", "{d}/none.jsonl"), None, "--trace {d}/none.jsonl: no such file"),
    (("--rate", "0"), None, "--rate must be positive and finite (requests a second), not 0"),
    (("--prompt-len", "0:3"), None, "--prompt-len 0:3: needs 1 <= LOW <= HIGH"),
    (("--output-len", "x"), None, "--output-len takes N or LOW:HIGH (positive integers), not 'x'"),
    (("--prompt-len", "100", "--output-len", "40"), None, "--prompt-len 100 and --output-len 40: the longest request "
                                                          "needs 139 positions, more than a sequence's KV slot holds "
                                                          "(max_context 128)"),
    (("--max-running", "9"), None, "--max-running must be at most 8 (the KV slots design demo holds for this model), "
                                   "not 9"),
    (("--plot", "{d}/x.svg"), None, "--plot {d}/x.svg: the plot is a PNG file (name it .png)"),
    (("--hw", "groq-lpu"), None, "design groq-lpu is for the performance model only"),
])
def test_serve_bench_bad_inputs_are_one_line_errors(tmp_path, args, trace, message):
    t = tmp_path / "t.jsonl"
    if trace is not None:
        t.write_text(trace + "\n")
    before = sorted(tmp_path.iterdir())
    out = lockstep("serve-bench", *(a.format(t=t, d=tmp_path) for a in args))
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith("lockstep: error: " + message.format(d=tmp_path)), out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_estimate_batch_is_the_cycle_model_s_pass_of_b_rows():
    """``estimate --batch B`` prices a decode step of B sequences as the cycle model's pass of B rows
    (``pass_cycles``), on both demo designs."""
    from golden.checkpoint import demo_model_path, load_config
    from golden.quantize import program_structure
    from sim.design import load_design
    from sim.machine.cycles import pass_cycles
    from sim.perf.model import estimate

    mc = load_config(demo_model_path())
    ops = list(program_structure(mc))
    for hw in ("demo", "demo-narrow"):
        d = load_design(hw)
        for b in (1, 2, 8, 16):
            first = pass_cycles(ops, mc, d.config, positions=[0] * b).total
            assert estimate(mc, d.hardware, context=1, batch=b).cycles == first, (hw, b)
            # Over positions 0..40: the mean of the passes (the model is affine in the position).
            mean = sum(pass_cycles(ops, mc, d.config, positions=[q] * b).total for q in range(41)) / 41
            assert estimate(mc, d.hardware, context=41, batch=b).cycles == pytest.approx(mean, rel=1e-12)


# --- the schedule replayed on the RTL --------------------------------------------------------------

def test_a_served_trace_replays_on_verilator_token_and_cycle_exact(tiny_llama):
    """The scheduler's passes (sequences joining, prefill chunks beside decode rows, slots reused) run on
    the decode top level in one job: every pass's tokens equal the model's, its cycles the prediction;
    a report whose prediction is off by one cycle is refused, naming the pass."""
    from dataclasses import replace as dc_replace

    from sim.flows.decode import top_params
    from sim.serve.rtl import RtlMismatch, confirm_on_rtl
    from sim.serve.scheduler import IsaExecutor, serve

    from .tiny_models import SMALL_SHARED

    trace = _trace(tiny_llama, 6, rate=20_000, seed=5, prompt=(1, 10), output=(2, 5))
    report = serve(trace, IsaExecutor(tiny_llama))
    assert len(report.passes) > 3 and max(len(p.rows) for p in report.passes) > 1
    assert len({slot for p in report.passes for *_, slot in p.rows}) > 1
    params = top_params(tiny_llama, **SMALL_SHARED)
    confirmed = confirm_on_rtl(report, tiny_llama, "verilator", params=params)
    assert [p.measured for p in confirmed.passes] == [p.predicted for p in report.passes]
    assert confirmed.cycle_exact is True and confirmed.backend == "verilator"
    assert [r.tokens for r in confirmed.results] == [_alone(tiny_llama, r) for r in trace]
    spoiled = list(report.passes)
    spoiled[2] = dc_replace(spoiled[2], predicted=spoiled[2].predicted + 1)
    with pytest.raises(RtlMismatch, match=r"^pass 2 \(\d+ rows\): the RTL took \d+ cycles, the cycle model "
                                          r"predicts \d+$"):
        confirm_on_rtl(dc_replace(report, passes=spoiled), tiny_llama, "verilator", params=params)
