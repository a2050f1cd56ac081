"""The decode top level on the RTL: the compiled program runs bit-exact against the instruction-level
model (scratchpad and logits word for word, the argmax token) and cycle-exact against the cycle model
(every instruction's own counter, every step's counter).

Designs are few (each Verilator build takes a minute or two): one small design (4x4 array, head_dim
8) shared by a tiny Llama-GQA and a tiny GPT-2 model, and the demo preset (8x8) for the demo model.
"""

import functools
from dataclasses import replace

import numpy as np
import pytest

from golden.int_model import generate_int
from golden.numerics import ceil_div
from hdl.config import PRESETS
from hdl.isa import Opcode, make
from hdl.top import DecodeTop
from sim.engine.bus import WatchdogError
from sim.engine.runner import run
from sim.flows.decode import IMAGE_MEMORIES, check_fits, decode_job, images, top_params
from sim.machine.compiler import CompileError, compile_model
from sim.machine.cycles import decode_step_cycles, fetch_cycles, op_cycles
from sim.machine.isa_sim import IsaMachine
from sim.runtime import decode
from tests.tolerances import rel64

from .tiny_models import FPGA_KEYS, SMALL, SMALL_SHARED, TINY, tiny


def truncated(compiled, n):
    """The first ``n`` instructions of ``compiled`` and a HALT (the images stay whole)."""
    compiled = replace(compiled)
    compiled.instructions = compiled.instructions[:n] + [make(Opcode.HALT)]
    compiled.ops = compiled.ops[:n] + [None]
    return compiled


def predicted_trace(compiled, position):
    """op_cycles of every instruction but HALT (a merged GEMM: K x its members' N side by side; a GEMM
    with its residual add fused: one GEMM_RESIDUAL more)."""
    mc = compiled.model.config
    trace = [op_cycles(g.op, compiled.config, width=g.width, in_width=g.in_width, n_heads=mc.n_heads,
                       n_kv_heads=mc.n_kv_heads, head_dim=mc.head_dim, position=position,
                       residual=g.residual is not None).cycles
             for g in compiled.ops if g is not None]
    trace[0] += fetch_cycles(compiled.config)     # the pass's FETCH (program_register)
    return trace


def check_steps(compiled, result, steps):
    """Scratchpad, logits and token equal to the IsaMachine's after every step; cycles equal to the model's."""
    machine = IsaMachine(compiled)
    for (token, position), got in zip(steps, result["steps"], strict=True):
        expected = machine.run(token, position)
        if expected is not None:
            assert got["token_out"] == expected
        scratch = np.array(got["scratch"])
        assert np.array_equal(scratch, machine.scratch[:scratch.size]), f"scratchpad differs at step {position}"
        logits = np.array(got["logits"])
        assert np.array_equal(logits, machine.logits[:logits.size]), f"logits differ at step {position}"
        trace = predicted_trace(compiled, position)
        assert got["trace"] == trace
        # Start cycles: the RTL's own record (the trace word's high half), against the cycle model's schedule.
        mc = compiled.model.config
        schedule = decode_step_cycles(compiled.model.program, mc, compiled.config, position=position)
        assert got["starts"] == list(schedule.starts[:len(trace)])     # a truncated program runs a prefix
        assert got["cycles"] == sum(trace) == got["edges"] - 2   # the start edge, HALT's decode


def readback(compiled):
    V = compiled.config.vector_lanes
    return {"scratch": ceil_div(compiled.scratch_size, V), "logits": max(1, ceil_div(compiled.logits_size, V))}


# --- parameters ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "kw", "exc", "match"), [
    (PRESETS["8x4"], {}, ValueError, r"^the decode top level needs array_rows == array_cols == vector_lanes, not "
                                     r"array_rows=8, array_cols=4, vector_lanes=4$"),
    (PRESETS["8x8"], {}, ValueError, r"^the decode top level needs array_rows == array_cols == vector_lanes, not "
                                     r"array_rows=8, array_cols=8, vector_lanes=4$"),
    (replace(PRESETS["4x4"], array_rows=2, array_cols=2, vector_lanes=2), {}, ValueError,
     r"^the decode top level needs vector_lanes to be a power of two >= 4, not 2$"),
    (PRESETS["4x4"], {"head_dim": 12}, ValueError, r"^head_dim must be a multiple of 2 \* vector_lanes \(8\) and at "
                                                   r"most 131071, not 12$"),
    (PRESETS["4x4"], {"max_heads": 0}, ValueError, r"^max_heads must be a positive integer, not 0$"),
    ({"array_rows": 4}, {}, TypeError, r"^config must be a Config, not dict$"),
])
def test_bad_parameters_are_refused(config, kw, exc, match):
    args = {"head_dim": 8, "max_heads": 4, "max_norm_length": 32, **kw}
    with pytest.raises(exc, match=match):
        DecodeTop(config, **args)


def test_models_that_do_not_fit_the_design_are_refused_before_simulation():
    compiled = tiny("llama-gqa")
    with pytest.raises(CompileError, match=r"^the model does not fit the top level: its query heads is 4, which must "
                                           r"be at most the design's 2$"):
        check_fits(compiled, {**top_params(compiled), "max_heads": 2})
    with pytest.raises(CompileError, match=r"^the model does not fit the top level: its head_dim is 8, which must "
                                           r"equal the design's 16$"):
        check_fits(compiled, {**top_params(compiled), "head_dim": 16})
    lanes4 = compile_model(compiled.model, replace(SMALL, array_rows=8, array_cols=8))
    with pytest.raises(ValueError, match=r"^the decode top level needs array_rows == array_cols == vector_lanes, not "
                                         r"array_rows=8, array_cols=8, vector_lanes=4$"):
        decode(lanes4, "verilator", [1], 1)      # refused before any build


def test_images_and_their_memories_come_from_one_table():
    compiled = tiny("llama-gqa")
    im = images(compiled)
    assert list(im) == list(IMAGE_MEMORIES)
    # The activation tables: one int8 entry a word at table * 256 + x + 128, zero entries left out.
    n = len(compiled.act_tables)
    assert n == compiled.model.config.n_layers
    table = np.zeros(n * 256, np.int64)
    for addr, word in im["act_tables"]:
        assert 0 <= word < 256
        table[addr] = word - 256 if word >= 128 else word
    assert np.array_equal(table.reshape(n, 256), compiled.act_tables)
    top = DecodeTop(compiled.config, **SMALL_SHARED, head_dim=8)
    top._MustUse__silence = True       # built for its sizes only, never elaborated
    assert 2 ** top.host_addr_bits >= compiled.config.act_table_entries
    job = decode_job(compiled, top_params(compiled), steps=[(1, 0)])
    del job["images"]["act_tables"]
    with pytest.raises(ValueError, match=r"^decode_top job images: missing key 'act_tables'$"):
        run("amaranth", "decode_top", top_params(compiled), "decode_top", job)


# --- Amaranth's simulator: partial and whole programs, the watchdog --------------------------------

#: Weight rows a cycle each simulator runs whole programs at in the fast suite; the rest of {1, 2, R}
#: run under the slow marker (each case is a separate build and a whole run).
ROWS = [1, 2, 4]
FAST_ROWS = {"amaranth": (1,), "icarus": (1, 4)}


def rows_cases(simulator):
    return [r if r in FAST_ROWS[simulator] else pytest.param(r, marks=pytest.mark.slow) for r in ROWS]


@pytest.mark.parametrize(("rows", "keys"), [(r, {}) for r in ROWS] + [(4, FPGA_KEYS)])
def test_embed_norm_and_gemm_on_amaranth(rows, keys):
    compiled = truncated(tiny("llama-gqa", rows, **keys), 3)
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("amaranth", "decode_top", params, "decode_top", job), steps)


@pytest.mark.parametrize("rows", rows_cases("amaranth"))
def test_whole_program_on_amaranth(rows):
    compiled = tiny("llama-gqa", rows)
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("amaranth", "decode_top", params, "decode_top", job), steps)


def test_start_ok_is_exactly_the_runnable_heads():
    """``start_ok`` over every value of ``n_kv_heads``, ``group`` and ``rows`` the ports hold (zero heads
    either way, more than ``max_heads``; the rows port holds up to ``max_m``): high exactly when the step can run;
    a start while it is low leaves the top level idle with ``done`` unchanged (it used to hang)."""
    from amaranth.sim import Simulator

    config = replace(PRESETS["4x4"], max_m=3)
    max_heads = 3
    top = DecodeTop(config, head_dim=8, max_heads=max_heads, max_norm_length=64)
    seen = []

    async def bench(ctx):
        for n_kv in range(max_heads + 1):
            for group in range(max_heads + 1):
                for rows in range(config.max_m + 1):
                    ctx.set(top.n_kv_heads, n_kv)
                    ctx.set(top.group, group)
                    ctx.set(top.rows, rows)
                    ok = ctx.get(top.start_ok)
                    seen.append(((n_kv, group, rows), ok))
                    if not ok:
                        ctx.set(top.start, 1)
                        await ctx.tick()
                        ctx.set(top.start, 0)
                        await ctx.tick()
                        assert (ctx.get(top.busy), ctx.get(top.done)) == (0, 0), (n_kv, group, rows)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [((n, g, r), int(n >= 1 and g >= 1 and n * g <= max_heads and r <= config.max_m))
                for n in range(max_heads + 1) for g in range(max_heads + 1) for r in range(config.max_m + 1)]
    assert seen == expected


def test_three_heads_through_two_attentions_on_amaranth():
    """GPT-2 with 3 query heads on a top level built for 4: the q feeder starts every ATTENTION at
    the first q row (with a head count that is not the q buffer's depth, a feeder address left over
    from the layer before would read the rows rotated)."""
    compiled = tiny("gpt2")
    attentions = [i for i, g in enumerate(compiled.ops) if g is not None and g.op == "attention"]
    assert compiled.model.config.n_heads == 3 < SMALL_SHARED["max_heads"] and len(attentions) == 2
    compiled = truncated(compiled, attentions[1] + 1)
    steps = [(3, 0), (7, 1)]        # at position 0 one KV row takes all the weight, whatever q is
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("amaranth", "decode_top", params, "decode_top", job), steps)


def test_watchdog_budget_comes_from_the_prediction():
    compiled = truncated(tiny("llama-gqa"), 3)
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=[(3, 0)])
    assert job["predicted"]["0"] == sum(predicted_trace(compiled, 0))
    job["budgets"] = {"0": job["predicted"]["0"] - 10}       # a step that cannot finish in time
    with pytest.raises(WatchdogError, match=r"position 0 did not finish within \d+ cycles \(predicted \d+\)"):
        run("amaranth", "decode_top", params, "decode_top", job)


# --- Verilator: whole runs ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_models_generate_the_integer_models_tokens_on_verilator(name):
    compiled = tiny(name)
    prompt = [1, 2, 3]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, prompt=prompt, new_tokens=32)
    result = run("verilator", "decode_top", params, "decode_top", job)
    tokens = [s["token_out"] for s in result["steps"]][len(prompt) - 1:]
    assert tokens == generate_int(compiled.model, prompt, 32)
    for step in result["steps"]:
        predicted = decode_step_cycles(compiled.model.program, compiled.model.config, compiled.config,
                                       position=step["position"])
        assert step["cycles"] == predicted.total


@pytest.mark.parametrize(("rows", "keys"), [(1, {}), (2, {}), (4, {}), (4, FPGA_KEYS)])
def test_tiny_model_step_by_step_on_verilator(rows, keys):
    """Scratchpad, logits and per-instruction cycles after each of several steps (incl. a late position),
    with the weight path delivering 1, 2 and R (4) tile rows a cycle, and with the FPGA build's timing
    cuts and fabric products (GEMM instructions and attention calls a cycle longer, vector instructions
    three; the same bits)."""
    compiled = tiny("gpt2", rows, **keys)
    steps = [(3, 0), (9, 1), (30, 2), (4, 47)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("verilator", "decode_top", params, "decode_top", job), steps)


def _estimate_equals_the_measured_mean(compiled, report, hw):
    """The performance model (sim.perf.model.estimate: tokens/s from the cycle model) asked about the
    design the RTL ran, over the positions it ran, predicts the mean of the measured cycles exactly."""
    from sim.perf.model import estimate

    measured = [s.measured_cycles for s in report.steps]
    assert [s.position for s in report.steps] == list(range(len(measured)))
    e = estimate(compiled.model.config, hw, context=len(measured))
    assert e.cycles == sum(measured) / len(measured)
    assert e.tokens_per_s == pytest.approx(hw.clock_hz / e.cycles, rel=rel64(4))   # clock * batch / cycles


def test_runtime_verilator_backend_on_a_tiny_model():
    from sim.perf.model import Hardware, MemoryLevel

    compiled = tiny("llama-gqa")
    # The runtime builds the design for the model itself (max_heads = n_heads, max_norm = d_model).
    report = decode(compiled, "verilator", [4, 5], 8)
    assert report.generated == generate_int(compiled.model, [4, 5], 8)
    assert all(s.measured_cycles == s.predicted_cycles for s in report.steps)
    c = compiled.config
    hw = Hardware(name="small", description="", array_rows=c.array_rows, array_cols=c.array_cols,
                  vector_lanes=c.vector_lanes, clock_hz=c.clock_hz, weight_bytes=1,
                  memories=(MemoryLevel("weight memory", c.weight_words * c.array_cols, c.array_cols * c.clock_hz),),
                  attention_finish_lanes=c.attention_finish_lanes)
    _estimate_equals_the_measured_mean(compiled, report, hw)


@functools.cache
def _demo(preset):
    """The demo model compiled for a preset's design (once a session)."""
    from golden.checkpoint import load_demo_model
    from golden.quantize import quantize_checkpoint

    return compile_model(quantize_checkpoint(load_demo_model()), PRESETS[preset])


@pytest.mark.parametrize("preset", ["demo", pytest.param("ulx3s", marks=pytest.mark.slow)])
def test_demo_model_on_verilator(preset):
    """The demo model on its design and on the board's (ulx3s: the FPGA keys on; its own Verilator
    build, so slow)."""
    demo = _demo(preset)
    prompt = [5, 9, 2, 17, 3]
    report = decode(demo, "verilator", prompt, 32)
    assert report.generated == generate_int(demo.model, prompt, 32)
    assert [s.measured_cycles for s in report.steps] == [s.predicted_cycles for s in report.steps]
    from sim.perf.model import load_hardware

    _estimate_equals_the_measured_mean(demo, report, load_hardware(preset))   # the `lockstep estimate` preset


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "amaranth"])
@pytest.mark.parametrize("rows", [1, 2, 8, "ulx3s"])
def test_demo_model_on_icarus_and_amaranth(simulator, rows):
    """The demo model on the other two simulators at weight_rows_per_cycle 1, 2 and R (demo's own
    design, its weight port narrowed), and on the board's design (its FPGA timing keys on): every
    token the integer model's, every step = its prediction."""
    demo = _demo("ulx3s" if rows == "ulx3s" else "demo")
    compiled = (demo if rows in (8, "ulx3s")
                else compile_model(demo.model, replace(demo.config, weight_rows_per_cycle=rows)))
    prompt = [5]
    report = decode(compiled, simulator, prompt, 2)       # two steps: positions 0 and 1
    assert report.generated == generate_int(compiled.model, prompt, 2)
    assert [s.measured_cycles for s in report.steps] == [s.predicted_cycles for s in report.steps]


@pytest.mark.slow
def test_cli_decode_on_verilator():
    import json
    import subprocess
    import sys
    from pathlib import Path

    lockstep = str(Path(sys.executable).parent / "lockstep")
    out = subprocess.run([lockstep, "decode", "--backend", "verilator", "--tokens", "8", "--json"],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["generated"]) == 8 and all(c is not None for c in report["measured_cycles"])


@pytest.mark.parametrize("rows", rows_cases("icarus"))
def test_whole_program_on_icarus(rows):
    compiled = tiny("gpt2", rows)
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("icarus", "decode_top", params, "decode_top", job), steps)


@pytest.mark.slow
def test_partial_program_on_icarus():
    compiled = truncated(tiny("gpt2"), 4)
    steps = [(3, 0)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("icarus", "decode_top", params, "decode_top", job), steps)
