"""The attention unit on the RTL: bit-exact against golden, cycle-exact against the cycle model.

Every (simulator, unit) pair runs one batch of calls in one simulator start: random data at KV
lengths 1, 2, a middle value and max_context; grouped-query, multi-query and multi-head shapes;
adversarial inputs (equal scores, one dominant score, rising scores, int8 extremes, all zeros,
saturating fixed-point parameters); and calls with random input gaps and output backpressure.
"""

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest

from golden.attention import AttentionParams, attention_decode, attention_decode_loop
from golden.numerics import ceil_div
from hdl.attention import AttentionUnit
from sim.engine.bus import WatchdogError
from sim.engine.lint import WAIVERS, lint_verilog
from sim.engine.runner import SimulationError, design_for, run, verilog_for
from sim.flows.attention import plan_attention
from sim.machine.cycles import (
    ATTENTION_FINISH_STAGES,
    ATTENTION_POSITION_STAGES,
    ATTENTION_RESCALE_REGISTER,
    ATTENTION_TIMING_REGISTERS,
    attention_cycles,
    attention_min_cycles,
)

from ..conftest import SIMULATORS

#: Small enough for Icarus and Amaranth's simulator; the demo model's attention for Verilator
#: (d_model 64, 4 query heads / 2 KV heads of 16, max_context 128).
SMALL = {"head_dim": 8, "max_context": 16, "max_heads": 4}
DEMO = {"head_dim": 16, "max_context": 128, "max_heads": 4}
UNIT_FOR = {"verilator": DEMO, "icarus": SMALL, "amaranth": SMALL}


def _params(rng, head_dim, logit_std):
    """Scales for which the logits have roughly ``logit_std`` and the outputs use the int8 range."""
    qk = math.sqrt(logit_std / (74.0 * 74.0))   # uniform int8 values have a standard deviation of ~74
    v_scale = 0.05
    return AttentionParams.from_scales(q_scale=qk, k_scale=qk * float(rng.uniform(0.7, 1.4)), v_scale=v_scale,
                                       out_scale=v_scale * float(rng.uniform(0.3, 1.2)), head_dim=head_dim)


def _case(q, k, v, params, **extra):
    return {"q": np.asarray(q).tolist(), "k": np.asarray(k).tolist(), "v": np.asarray(v).tolist(),
            "params": vars(params), **extra}


def _random_qkv(rng, n_heads, n_kv, kv_len, head_dim):
    return (rng.integers(-128, 128, (n_heads, head_dim)), rng.integers(-128, 128, (kv_len, n_kv, head_dim)),
            rng.integers(-128, 128, (kv_len, n_kv, head_dim)))


def attention_cases(unit, seed):
    """(name, case) pairs for one unit: sizes come from the unit's parameters."""
    D, T, H = unit["head_dim"], unit["max_context"], unit["max_heads"]
    rng = np.random.default_rng(seed)
    rand = rng.integers
    cases = []
    # Random data at the edge and middle KV lengths, over GQA, MQA and MHA shapes.
    shapes = [(H, H // 2), (H // 2, H // 2), (H, 1), (1, 1), (H, H)]
    for kv_len in (1, 2, T // 2 + 1, T):
        for n_heads, n_kv in shapes:
            if kv_len > 2 and (n_heads, n_kv) in ((1, 1), (H, H)) and kv_len != T:
                continue  # the middle length on the group shapes is enough
            q, k, v = _random_qkv(rng, n_heads, n_kv, kv_len, D)
            params = _params(rng, D, float(rng.choice([1.0, 4.0, 16.0])))
            cases.append((f"random kv_len={kv_len} heads={n_heads}/{n_kv}", _case(q, k, v, params)))
    n_heads, n_kv, kv_len = H, H // 2, T // 2 + 1
    params = _params(rng, D, 4.0)

    def qkv():
        return _random_qkv(rng, n_heads, n_kv, kv_len, D)

    # All scores of a head equal: every K row the same.
    q, k, v = qkv()
    k[:] = k[0]
    cases.append(("equal scores", _case(q, k, v, params)))
    # One score far above the rest, in the middle (a rise that zeroes the state) and at position 0.
    for where in (kv_len // 2, 0):
        q, k, v = qkv()
        q[:] = np.where(rand(0, 2, D) > 0, 127, -128)       # every head of the group points the same way
        k[:] = rand(-4, 5, k.shape)
        k[where] = np.where(q[0] > 0, 127, -128)
        cases.append((f"one dominant score at {where}", _case(q, k, v, _params(rng, D, 64.0))))
    # Scores that rise at every position: a rescale at every step.
    q, k, v = qkv()
    q[:] = 127
    k[:] = (np.arange(kv_len)[:, None, None] * 255 // max(1, kv_len - 1) - 128).clip(-128, 127)
    cases.append(("rising scores", _case(q, k, v, params)))
    # int8 extremes: the largest positive and negative dot products, clamped logits, saturated outputs.
    big = AttentionParams(score_mult=32767, score_shift=0, out_mult=32767, out_shift=0)
    q, k, v = qkv()
    q[:], k[:], v[:] = -128, -128, 127
    cases.append(("max positive scores", _case(q, k, v, big)))
    q[:], k[:], v[:] = 127, -128, -128
    cases.append(("max negative scores", _case(q, k, v, big)))
    q, k, v = qkv()
    q[:, ::2], k[:, :, 1::2], v[::2] = -128, 127, -128
    cases.append(("mixed extremes", _case(q, k, v, params)))
    tiny = AttentionParams(score_mult=1, score_shift=46, out_mult=1, out_shift=46)
    cases.append(("vanishing scales", _case(*qkv(), tiny)))
    # All-zero vectors.
    zero = np.zeros((kv_len, n_kv, D), dtype=np.int64)
    cases.append(("all zero", _case(np.zeros((n_heads, D), dtype=np.int64), zero, zero, params)))
    cases.append(("zero query", _case(np.zeros((n_heads, D), dtype=np.int64), *qkv()[1:], params)))
    # Random input gaps and output backpressure: same bits, more cycles.
    for i, (n_heads_b, n_kv_b, kv_len_b) in enumerate([(H, H // 2, T // 2 + 1), (H, 1, 3), (2, 2, T)]):
        q, k, v = _random_qkv(rng, n_heads_b, n_kv_b, kv_len_b, D)
        cases.append((f"backpressure {n_heads_b}/{n_kv_b} kv_len={kv_len_b}",
                      _case(q, k, v, _params(rng, D, 4.0), seed=100 + i, gaps=0.3, stall=0.4)))
    return cases


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_attention_unit_is_bit_exact_and_cycle_exact(simulator):
    unit = UNIT_FOR[simulator]
    named = attention_cases(unit, seed=unit["head_dim"] * 1000 + unit["max_context"])
    cases = [case for _, case in named]
    result = run(simulator, "attention_unit", unit, "attention_unit", {"unit": unit, "cases": cases})
    assert len(result["cases"]) == len(cases)
    for (name, case), got in zip(named, result["cases"], strict=True):
        q, k, v = (np.array(case[x], dtype=np.int64) for x in ("q", "k", "v"))
        params = AttentionParams(**case["params"])
        expected = attention_decode(q, k, v, params, max_context=unit["max_context"])
        assert np.array_equal(expected, attention_decode_loop(q, k, v, params, max_context=unit["max_context"]))
        assert np.array_equal(np.array(got["out"], dtype=np.int64), expected), name
        predicted = plan_attention(unit, n_heads=q.shape[0], n_kv_heads=k.shape[1], kv_len=k.shape[0]).predicted_cycles
        if case.get("gaps") or case.get("stall"):
            assert got["cycles"] == got["edges"] > predicted, name
        else:
            assert got["cycles"] == predicted, name   # the RTL's own counter
            assert got["edges"] == predicted, name    # the simulator's clock, counted by the flow


#: The demo model's attention (the configuration the decode accelerator runs) on the interpreted
#: simulators too: every case on Amaranth's; on Icarus (the slowest) the grouped-query random
#: calls at every KV length (1, 2, 65 and max_context 128) and the adversarial calls.
DEMO_ON = {"icarus": lambda name: name.endswith("heads=4/2") or not name.startswith(("random", "backpressure")),
           "amaranth": lambda name: True}


@pytest.mark.parametrize("simulator", list(DEMO_ON))
def test_the_demo_models_attention_sizes_on_the_interpreted_simulators(simulator):
    named = [(n, c) for n, c in attention_cases(DEMO, seed=7) if DEMO_ON[simulator](n)]
    assert {len(c["k"]) for n, c in named if n.startswith("random")} == {1, 2, 65, 128}
    result = run(simulator, "attention_unit", DEMO, "attention_unit",
                 {"unit": DEMO, "cases": [c for _, c in named]})
    for (name, case), got in zip(named, result["cases"], strict=True):
        q, k, v = (np.array(case[x], dtype=np.int64) for x in ("q", "k", "v"))
        expected = attention_decode(q, k, v, AttentionParams(**case["params"]), max_context=DEMO["max_context"])
        assert np.array_equal(np.array(got["out"], dtype=np.int64), expected), name
        plan = plan_attention(DEMO, n_heads=q.shape[0], n_kv_heads=k.shape[1], kv_len=k.shape[0])
        if case.get("gaps") or case.get("stall"):
            assert got["cycles"] == got["edges"] > plan.predicted_cycles, name
        else:
            assert got["cycles"] == got["edges"] == plan.predicted_cycles, name


@pytest.mark.parametrize("finish_lanes", [None, 2])
def test_odd_sizes_on_amaranth(finish_lanes):
    # An odd head_dim (an unbalanced adder tree) and an odd max_heads, on the simulator with no build;
    # with 2 finish lanes the last of a head's 3 chunks is half padding.
    unit = {"head_dim": 5, "max_context": 4, "max_heads": 3}
    if finish_lanes:
        unit["finish_lanes"] = finish_lanes
    rng = np.random.default_rng(11)
    cases = [_case(*_random_qkv(rng, h, kv, t, 5), _params(rng, 5, 4.0))
             for h, kv in ((3, 1), (3, 3), (1, 1)) for t in (1, 4)]
    result = run("amaranth", "attention_unit", unit, "attention_unit", {"unit": unit, "cases": cases})
    for case, got in zip(cases, result["cases"], strict=True):
        q, k, v = (np.array(case[x], dtype=np.int64) for x in ("q", "k", "v"))
        expected = attention_decode(q, k, v, AttentionParams(**case["params"]), max_context=4)
        assert np.array_equal(np.array(got["out"], dtype=np.int64), expected)
        predicted = attention_cycles(n_heads=q.shape[0], kv_len=k.shape[0], head_dim=5, finish_lanes=finish_lanes or 0)
        assert got["cycles"] == got["edges"] == predicted.total
        assert predicted.finish == (q.shape[0] * 2 if finish_lanes else 0)


#: Narrow finish stages (one shared multiplier pair per lane group): the ULX3S preset's one lane on
#: Verilator at the demo model's head_dim, 3 lanes (the last chunk padded) and 1 lane on the others.
NARROW_FOR = {"verilator": {**DEMO, "finish_lanes": 1}, "icarus": {**SMALL, "finish_lanes": 1},
              "amaranth": {**SMALL, "finish_lanes": 3}}


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_narrow_finish_stages_are_bit_exact_and_cycle_exact(simulator):
    unit = NARROW_FOR[simulator]
    steps = ceil_div(unit["head_dim"], unit["finish_lanes"])
    for q, k, predicted in _run_exact(simulator, unit, seed_offset=1):
        assert predicted == attention_cycles(n_heads=q.shape[0], kv_len=k.shape[0]).total + q.shape[0] * (steps - 1)


def _run_exact(simulator, unit, seed_offset):
    """``unit``'s cases (on the interpreted simulators the random shapes and the stalls) run on
    ``simulator``: every output equal to golden's and its cycles to the prediction (more with gaps
    or stalls). Returns each case's q, k and predicted cycles for the caller's own checks."""
    named = attention_cases(unit, seed=unit["head_dim"] * 1000 + unit["max_context"] + seed_offset)
    if simulator != "verilator":
        named = [(name, case) for name, case in named if name.startswith(("random", "backpressure"))]
    result = run(simulator, "attention_unit", unit, "attention_unit", {"unit": unit, "cases": [c for _, c in named]})
    checked = []
    for (name, case), got in zip(named, result["cases"], strict=True):
        q, k, v = (np.array(case[x], dtype=np.int64) for x in ("q", "k", "v"))
        expected = attention_decode(q, k, v, AttentionParams(**case["params"]), max_context=unit["max_context"])
        assert np.array_equal(np.array(got["out"], dtype=np.int64), expected), name
        predicted = plan_attention(unit, n_heads=q.shape[0], n_kv_heads=k.shape[1], kv_len=k.shape[0]).predicted_cycles
        if case.get("gaps") or case.get("stall"):
            assert got["cycles"] == got["edges"] > predicted, name
        else:
            assert got["cycles"] == got["edges"] == predicted, name
        checked.append((q, k, predicted))
    assert len(checked) == len(named) > 0
    return checked


#: The timing registers (Config.attention_timing_registers): the ULX3S preset's unit on
#: Verilator (the demo model's head_dim, one finish lane), small units on the others, two heads a
#: step (the hand-off) on Amaranth's.
TIMING_REGISTERS_FOR = {"verilator": {**DEMO, "finish_lanes": 1, "timing_registers": True},
                        "icarus": {**SMALL, "finish_lanes": 1, "timing_registers": True},
                        "amaranth": {**SMALL, "heads_per_step": 2, "timing_registers": True}}


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_timing_registers_are_bit_exact_and_cost_one_cycle_a_stage(simulator):
    unit = TIMING_REGISTERS_FOR[simulator]
    without = {key: value for key, value in unit.items() if key != "timing_registers"}
    for q, k, predicted in _run_exact(simulator, unit, seed_offset=2):
        shape = {"n_heads": q.shape[0], "n_kv_heads": k.shape[1], "kv_len": k.shape[0]}
        assert predicted == plan_attention(without, **shape).predicted_cycles + ATTENTION_TIMING_REGISTERS


#: S4 in two stages (Config.attention_rescale_register): the ULX3S preset's unit on Verilator, a
#: small unit on Icarus, two heads a step on Amaranth's (a group of two heads is then one step a
#: position, so steps are a cycle apart there too).
RESCALE_REGISTER_FOR = {"verilator": {**DEMO, "finish_lanes": 1, "timing_registers": True, "rescale_register": True},
                        "icarus": {**SMALL, "rescale_register": True},
                        "amaranth": {**SMALL, "heads_per_step": 2, "rescale_register": True}}


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_rescale_register_is_bit_exact_and_costs_a_stage_and_the_gaps(simulator):
    """Every output equals golden's and every call's cycles the prediction: one cycle more than
    without the register, and a cycle more per step after the first where the group is one step a
    position; both kinds of call are among the cases."""
    unit = RESCALE_REGISTER_FOR[simulator]
    without = {key: value for key, value in unit.items() if key != "rescale_register"}
    P = unit.get("heads_per_step", 1)
    kinds = set()
    for q, k, predicted in _run_exact(simulator, unit, seed_offset=3):
        shape = {"n_heads": q.shape[0], "n_kv_heads": k.shape[1], "kv_len": k.shape[0]}
        one_step = ceil_div(shape["n_heads"] // shape["n_kv_heads"], P) == 1
        steps = attention_cycles(**shape, heads_per_step=P).steps
        gap = steps - 1 if one_step else 0
        assert predicted == plan_attention(without, **shape).predicted_cycles + ATTENTION_RESCALE_REGISTER + gap
        kinds.add(one_step)
    assert kinds == {True, False}


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_attention_watchdog_stops_a_run_that_cannot_finish(simulator):
    unit = UNIT_FOR[simulator]
    rng = np.random.default_rng(3)
    D = unit["head_dim"]
    case = _case(rng.integers(-128, 128, (2, D)), rng.integers(-128, 128, (3, 1, D)),
                 rng.integers(-128, 128, (3, 1, D)), _params(rng, D, 4.0))
    predicted = attention_cycles(n_heads=2, kv_len=3).total
    short = dict(case, budget=predicted - 1)        # one cycle short of what the call needs
    with pytest.raises((SimulationError, WatchdogError), match=rf"done did not rise within {predicted - 1} cycles"):
        run(simulator, "attention_unit", unit, "attention_unit", {"unit": unit, "cases": [short]})
    starved = dict(case, withhold_v=True, max_idle=30)  # no V row ever comes: nothing may move
    with pytest.raises((SimulationError, WatchdogError), match=r"made no progress for 30 cycles \(2/2 q rows, 0/3 K"):
        run(simulator, "attention_unit", unit, "attention_unit", {"unit": unit, "cases": [starved]})


@pytest.mark.parametrize("unit", [SMALL, DEMO, {**SMALL, "finish_lanes": 3}], ids=["small", "demo", "narrow"])
def test_attention_unit_verilog_is_lint_clean(unit):
    report = lint_verilog(verilog_for(design_for("attention_unit", unit), "attention_unit"), "attention_unit")
    assert report.findings == []
    assert set(report.waived) <= set(WAIVERS)


# --- parameters, shapes and the cycle model (no simulator) ---------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"head_dim": 0}, ValueError, r"^attention head_dim must be a positive integer, not 0$"),
    ({"head_dim": 8.0}, TypeError, r"^attention head_dim must be an integer, not 8\.0$"),
    ({"head_dim": 131072}, ValueError, r"^attention head_dim must be at most 131071, not 131072$"),
    ({"max_context": 0}, ValueError, r"^attention max_context must be a positive integer, not 0$"),
    ({"max_context": 513}, ValueError, r"^attention max_context must be at most 512, not 513$"),
    ({"max_context": "16"}, TypeError, r"^attention max_context must be an integer, not '16'$"),
    ({"max_heads": -1}, ValueError, r"^attention max_heads must be a positive integer, not -1$"),
    ({"max_heads": 65}, ValueError, r"^attention max_heads must be at most 64, not 65$"),
    ({"max_heads": True}, TypeError, r"^attention max_heads must be an integer, not True$"),
    ({"finish_lanes": 0}, ValueError, r"^attention finish_lanes must be a positive integer, not 0$"),
    ({"finish_lanes": 9}, ValueError, r"^attention finish_lanes must be at most head_dim \(8\), not 9$"),
    ({"finish_lanes": 2.0}, TypeError, r"^attention finish_lanes must be an integer, not 2\.0$"),
])
def test_bad_unit_parameters_are_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        AttentionUnit(**{**SMALL, **kwargs})


def test_unit_parameters_are_keyword_only():
    params = inspect.signature(AttentionUnit).parameters.values()
    assert [p.kind for p in params] == [inspect.Parameter.KEYWORD_ONLY] * 7


@pytest.mark.parametrize(("shape", "error", "message"), [
    ({"kv_len": 17}, ValueError, r"^kv_len must be in \[1, 16\], not 17$"),
    ({"kv_len": 0}, ValueError, r"^kv_len must be in \[1, 16\], not 0$"),
    ({"n_heads": 0}, ValueError, r"^n_heads must be a positive integer, not 0$"),
    ({"n_kv_heads": 0}, ValueError, r"^n_kv_heads must be a positive integer, not 0$"),
    ({"n_heads": 3, "n_kv_heads": 2}, ValueError, r"^n_heads must be a multiple of n_kv_heads \(2\), not 3$"),
    ({"n_heads": 8, "n_kv_heads": 2}, ValueError, r"^n_heads=8 exceeds max_heads=4 of the attention unit$"),
    ({"n_heads": 2.0}, TypeError, r"^n_heads must be an integer, not 2\.0$"),
])
def test_bad_call_shapes_are_rejected(shape, error, message):
    with pytest.raises(error, match=message):
        plan_attention(SMALL, **{"n_heads": 4, "n_kv_heads": 2, "kv_len": 5, **shape})


def test_bad_unit_table_is_rejected():
    with pytest.raises(ValueError, match=r"^attention unit: unknown parameter 'lanes' \(known: head_dim, "
                                         r"max_context, max_heads, finish_lanes, heads_per_step, timing_registers, "
                                         r"rescale_register\)$"):
        plan_attention({**SMALL, "lanes": 4}, n_heads=1, n_kv_heads=1, kv_len=1)
    with pytest.raises(ValueError, match=r"^attention unit: missing parameter 'max_heads'$"):
        plan_attention({"head_dim": 8, "max_context": 16}, n_heads=1, n_kv_heads=1, kv_len=1)


def test_flow_rejects_a_bad_job_before_simulating():
    rng = np.random.default_rng(0)
    D = SMALL["head_dim"]
    good = _case(rng.integers(-128, 128, (2, D)), rng.integers(-128, 128, (2, 1, D)),
                 rng.integers(-128, 128, (2, 1, D)), _params(rng, D, 1.0))
    too_long = _case(rng.integers(-128, 128, (2, D)), rng.integers(-128, 128, (17, 1, D)),
                     rng.integers(-128, 128, (17, 1, D)), _params(rng, D, 1.0))
    with pytest.raises(ValueError, match=r"^kv_len must be in \[1, 16\], not 17$"):
        run("amaranth", "attention_unit", SMALL, "attention_unit", {"unit": SMALL, "cases": [good, too_long]})
    bad_v = dict(good, v=np.zeros((3, 1, D), dtype=np.int64).tolist())
    with pytest.raises(ValueError, match=r"^v must have shape \(2, 1, 8\), not \(3, 1, 8\)$"):
        run("amaranth", "attention_unit", SMALL, "attention_unit", {"unit": SMALL, "cases": [bad_v]})


def test_cycle_model_parts():
    c = attention_cycles(n_heads=4, kv_len=128)
    assert c.steps == 4 * 128 == attention_min_cycles(n_heads=4, kv_len=128)
    assert c.latency == ATTENTION_POSITION_STAGES + ATTENTION_FINISH_STAGES
    assert c.total == c.start + c.q_first + c.steps + c.latency == 4 * 128 + 11


def test_documented_cycle_counts_match_the_model():
    text = (Path(__file__).parents[2] / "docs" / "attention_unit.md").read_text()
    rows = re.findall(r"^\| head_dim (\d+), max_context \d+ \| (\d+) \| (\d+) \| (\d+) \|", text, flags=re.M)
    assert len(rows) == 4
    for _, kv_len, cycles, bound in rows:
        assert int(cycles) == attention_cycles(n_heads=4, kv_len=int(kv_len)).total
        assert int(bound) == attention_min_cycles(n_heads=4, kv_len=int(kv_len))
