"""The attention unit with several query heads of a KV group per step (``heads_per_step`` P,
``Config.attention_heads_per_step``): bit-exact against golden, cycle-exact against the cycle model,
on the three simulators; the decode top level with P = 2 on a tiny Llama-GQA model.

Shapes cover a group that is a multiple of P (2 and 4 at P = 2), a group smaller than P (1: MHA,
GPT-2's shape, one lane idle), a group that is not a multiple of P (3 at P = 2, 4 at P = 3: the last
step of each position has idle lanes) and MQA (one KV head for every query head).
"""

from dataclasses import replace

import numpy as np
import pytest

from golden.attention import AttentionParams, attention_decode
from golden.model import init_weights
from golden.quantize import quantize_model, random_calibration
from hdl.attention import AttentionUnit
from hdl.config import Config
from sim.engine.lint import WAIVERS, lint_verilog
from sim.engine.runner import design_for, run, verilog_for
from sim.flows.attention import plan_attention
from sim.flows.decode import decode_job, top_params
from sim.machine.compiler import compile_model
from sim.machine.cycles import attention_cycles, attention_min_cycles, decode_step_cycles, op_cycles

from ..conftest import SIMULATORS
from .test_attention_rtl import _case, _params, _random_qkv, attention_cases
from .test_top_rtl import check_steps, readback, truncated
from .tiny_models import SMALL, SMALL_SHARED, TINY

#: P = 2 on every simulator: the demo model's head_dim and context on Verilator, a small unit on
#: the interpreted ones; max_heads 8 so that group 4 (8 query / 2 KV heads) fits.
UNIT_FOR = {"verilator": {"head_dim": 16, "max_context": 128, "max_heads": 8, "heads_per_step": 2},
            "icarus": {"head_dim": 8, "max_context": 16, "max_heads": 8, "heads_per_step": 2},
            "amaranth": {"head_dim": 8, "max_context": 16, "max_heads": 8, "heads_per_step": 2}}
#: (n_heads, n_kv_heads): groups 2, 4, 1 (with one and with several KV heads), 3, 8 (MQA).
SHAPES = [(4, 2), (8, 2), (4, 4), (1, 1), (6, 2), (8, 1)]


def _cases(unit, seed):
    """Random data on every shape at KV lengths 1, 2 and max_context, and the adversarial and
    backpressure calls of test_attention_rtl (its grouped shapes at max_heads)."""
    rng = np.random.default_rng(seed)
    D, T = unit["head_dim"], unit["max_context"]
    named = []
    for n_heads, n_kv in SHAPES:
        for kv_len in (1, 2, T):
            q, k, v = _random_qkv(rng, n_heads, n_kv, kv_len, D)
            named.append((f"random kv_len={kv_len} heads={n_heads}/{n_kv}",
                          _case(q, k, v, _params(rng, D, float(rng.choice([1.0, 4.0, 16.0]))))))
    named += [(n, c) for n, c in attention_cases(unit, seed) if not n.startswith("random")]
    return named


def _check(unit, named, result):
    for (name, case), got in zip(named, result["cases"], strict=True):
        q, k, v = (np.array(case[x], dtype=np.int64) for x in ("q", "k", "v"))
        expected = attention_decode(q, k, v, AttentionParams(**case["params"]), max_context=unit["max_context"])
        assert np.array_equal(np.array(got["out"], dtype=np.int64), expected), name
        plan = plan_attention(unit, n_heads=q.shape[0], n_kv_heads=k.shape[1], kv_len=k.shape[0])
        if case.get("gaps") or case.get("stall"):
            assert got["cycles"] == got["edges"] > plan.predicted_cycles, name
        else:
            assert got["cycles"] == got["edges"] == plan.predicted_cycles, name


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_parallel_heads_are_bit_exact_and_cycle_exact(simulator):
    unit = UNIT_FOR[simulator]
    named = _cases(unit, seed=unit["head_dim"] * 100 + 2)
    if simulator == "icarus":   # the slowest: the random shapes and the stalls
        named = [(n, c) for n, c in named if n.startswith(("random", "backpressure"))]
    result = run(simulator, "attention_unit", unit, "attention_unit", {"unit": unit, "cases": [c for _, c in named]})
    _check(unit, named, result)


@pytest.mark.parametrize("unit", [
    {"head_dim": 5, "max_context": 4, "max_heads": 8, "heads_per_step": 3},                      # group 4: 3 + 1
    {"head_dim": 8, "max_context": 4, "max_heads": 4, "heads_per_step": 2, "finish_lanes": 3},   # + narrow finish
    {"head_dim": 4, "max_context": 3, "max_heads": 4, "heads_per_step": 4},                      # P = max_heads
], ids=["P3", "P2-narrow", "P4"])
def test_parallel_heads_odd_sizes_on_amaranth(unit):
    rng = np.random.default_rng(21)
    D, T = unit["head_dim"], unit["max_context"]
    shapes = [(h, kv) for h, kv in SHAPES + [(4, 1), (3, 1), (2, 2)] if h <= unit["max_heads"]]
    named = [(f"{h}/{kv} kv_len={t}", _case(*_random_qkv(rng, h, kv, t, D), _params(rng, D, 4.0)))
             for h, kv in shapes for t in (1, T)]
    result = run("amaranth", "attention_unit", unit, "attention_unit", {"unit": unit, "cases": [c for _, c in named]})
    _check(unit, named, result)


def test_heads_per_step_defaults_to_one():
    """No heads_per_step is P = 1: the same Verilog (that unit is test_attention_rtl's)."""
    unit = {"head_dim": 8, "max_context": 16, "max_heads": 4}
    assert verilog_for(design_for("attention_unit", unit), "attention_unit") == \
        verilog_for(design_for("attention_unit", {**unit, "heads_per_step": 1}), "attention_unit")


def test_parallel_heads_verilog_is_lint_clean():
    unit = UNIT_FOR["icarus"]
    report = lint_verilog(verilog_for(design_for("attention_unit", unit), "attention_unit"), "attention_unit")
    assert report.findings == []
    assert set(report.waived) <= set(WAIVERS)


# --- the cycle model and the parameters (no simulator) --------------------------------------------

@pytest.mark.parametrize(("n_heads", "n_kv", "P", "steps_per_pos", "handoff"), [
    (4, 2, 2, 2, 2),     # the demo model: group 2, one step per group and position
    (8, 2, 2, 4, 4),     # group 4: two steps
    (3, 3, 2, 3, 0),     # GPT-2's group 1: one lane idle, n_kv_heads * ceil(1 / 2) = 3 steps
    (6, 2, 2, 4, 2),     # group 3: 2 + 1 lanes
    (8, 2, 3, 4, 4),     # group 4 at P = 3: 3 + 1 lanes
    (4, 2, 1, 4, 0),     # P = 1: n_heads steps, no hand-off
])
def test_cycle_model_of_parallel_heads(n_heads, n_kv, P, steps_per_pos, handoff):
    for kv_len in (1, 7):
        c = attention_cycles(n_heads=n_heads, kv_len=kv_len, n_kv_heads=n_kv, heads_per_step=P)
        assert c.steps == steps_per_pos * kv_len == attention_min_cycles(
            n_heads=n_heads, kv_len=kv_len, n_kv_heads=n_kv, heads_per_step=P)
        assert c.handoff == handoff
        assert c.q_first == (1 if P == 1 else n_heads)
        assert c.total == 1 + c.q_first + c.steps + c.handoff + 9
    # P = 1 is today's formula, whatever n_kv_heads says.
    assert attention_cycles(n_heads=4, kv_len=9, n_kv_heads=2) == attention_cycles(n_heads=4, kv_len=9)


def test_cycle_model_needs_the_grouping_for_parallel_heads():
    with pytest.raises(ValueError, match=r"^n_kv_heads must divide n_heads \(4\) when heads_per_step > 1, not 0$"):
        attention_cycles(n_heads=4, kv_len=3, heads_per_step=2)
    with pytest.raises(ValueError, match=r"^n_kv_heads must divide n_heads \(4\) when heads_per_step > 1, not 3$"):
        attention_min_cycles(n_heads=4, kv_len=3, n_kv_heads=3, heads_per_step=2)
    with pytest.raises(ValueError, match=r"^heads_per_step must be a positive integer, not 0$"):
        attention_cycles(n_heads=4, kv_len=3, n_kv_heads=2, heads_per_step=0)


@pytest.mark.parametrize(("value", "error", "message"), [
    (0, ValueError, r"^attention heads_per_step must be a positive integer, not 0$"),
    (5, ValueError, r"^attention heads_per_step must be at most max_heads \(4\), not 5$"),
    (2.0, TypeError, r"^attention heads_per_step must be an integer, not 2\.0$"),
])
def test_bad_heads_per_step_is_rejected(value, error, message):
    with pytest.raises(error, match=message):
        AttentionUnit(head_dim=8, max_context=16, max_heads=4, heads_per_step=value)


@pytest.mark.parametrize(("value", "error", "message"), [
    (0, ValueError, r"^attention_heads_per_step must be a positive integer, not 0$"),
    (65, ValueError, r"^attention_heads_per_step must be at most 64, not 65$"),
    ("2", TypeError, r"^attention_heads_per_step must be an integer, not '2'$"),
])
def test_bad_config_key_is_rejected(value, error, message):
    with pytest.raises(error, match=message):
        Config(attention_heads_per_step=value)


def test_op_cycles_of_the_attention_instruction():
    """The attention instruction's cycles at P = 2 are today's less the halved steps, plus the
    unit's wait for every query row and its hand-off."""
    one = op_cycles("attention", SMALL, width=32, n_heads=4, n_kv_heads=2, head_dim=8, position=9)
    two = op_cycles("attention", replace(SMALL, attention_heads_per_step=2), width=32, n_heads=4, n_kv_heads=2,
                    head_dim=8, position=9)
    assert one.cycles - two.cycles == 2 * 10 - 3 - 2
    assert (one.unit_min, two.unit_min) == (40, 20)


# --- the decode top level with P = 2 ---------------------------------------------------------------

P2 = replace(SMALL, attention_heads_per_step=2)


def tiny_p2(name):
    cfg = TINY[name]
    model = quantize_model(cfg, init_weights(cfg, seed=3, std=0.3), random_calibration(cfg, windows=4, seed=1))
    return compile_model(model, P2)


def test_decode_top_with_parallel_heads_on_amaranth():
    """A partial program through the first attention instruction (index 6) at positions 0 and 1."""
    compiled = truncated(tiny_p2("llama-gqa"), 7)
    assert compiled.ops[6].op == "attention"
    steps = [(3, 0), (7, 1)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("amaranth", "decode_top", params, "decode_top", job), steps)


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_decode_top_with_parallel_heads_step_by_step_on_verilator(name):
    """Scratchpad, logits, per-instruction cycles and start cycles after each step, at early and
    late positions: llama-gqa (group 2, both lanes busy) and gpt2 (group 1, one lane idle)."""
    compiled = tiny_p2(name)
    steps = [(3, 0), (9, 1), (20, 2), (4, 47)]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, steps=steps, trace=True, readback=readback(compiled))
    check_steps(compiled, run("verilator", "decode_top", params, "decode_top", job), steps)


def test_decode_top_with_parallel_heads_generates_the_integer_models_tokens_on_verilator():
    from golden.int_model import generate_int

    compiled = tiny_p2("llama-gqa")
    prompt = [1, 2, 3]
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, prompt=prompt, new_tokens=32)
    result = run("verilator", "decode_top", params, "decode_top", job)
    assert [s["token_out"] for s in result["steps"]][len(prompt) - 1:] == generate_int(compiled.model, prompt, 32)
    for step in result["steps"]:
        one = decode_step_cycles(compiled.model.program, compiled.model.config, SMALL, position=step["position"])
        two = decode_step_cycles(compiled.model.program, compiled.model.config, P2, position=step["position"])
        assert step["cycles"] == two.total
        # Two attention instructions a step, each (position + 1) steps shorter, 3 + 2 cycles longer.
        assert one.total - two.total == 2 * ((step["position"] + 1) * 2 - 5)

