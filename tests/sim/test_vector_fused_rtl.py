"""The vector unit's fused commands on the RTL (three simulators): SILU_MUL (SwiGLU's table lookup and
multiply in one pass) bit-exact with golden's activation() then multiply(), and ROPE over several heads
in one command (the last heads at a second scale) bit-exact with golden's rope per head; both
cycle-exact against the cycle model: ``1 + W + 4`` and ``1 + 2 * heads * W + 4``."""

import numpy as np
import pytest

import golden.vector as gv
from golden.numerics import ceil_div
from golden.tables import activation_table
from sim.engine.runner import run
from sim.flows.vector import PRESETS, check_op, vector_job
from sim.machine.cycles import vector_cycles

from ..conftest import SIMULATORS

PRESET_FOR = {"verilator": "demo", "icarus": "small", "amaranth": "small"}
SILU = {"x_scale": 0.05, "out_scale": 0.025}


def _fused_cases(params, seed):
    """SILU_MUL at full, partial-beat and one-element lengths with random and extreme operands; RoPE of
    1 to as many heads as the unit's longest vector holds, at one and at two scales, extreme heads."""
    rng = np.random.default_rng(seed)
    lanes, hd, ctx = params["lanes"], params["max_head_dim"], params["max_context"]
    long_len = min(params["max_length"], 192)
    odd = long_len - 1 if long_len % lanes == 0 else long_len
    i8 = lambda n: rng.integers(-128, 128, n).tolist()  # noqa: E731
    mm, ms = gv.multiply_multiplier(a_scale=0.025, b_scale=0.04, out_scale=0.03)
    ops = []
    for a, b in ((i8(long_len), i8(long_len)), (i8(odd), i8(odd)), ([-128] * odd, [-128] * odd),
                 ([127] * odd, [-128] * odd), ([-128, 127, 0] * (odd // 3), [127, -128, 0] * (odd // 3)),
                 ([0] * lanes, [127] * lanes), (i8(1), i8(1))):
        ops.append({"op": "silu_mul", "a": a, "b": b, "mult": mm, "shift": ms})
    # every int8 gate value against the extremes of up, where the unit takes 256 elements
    if params["max_length"] >= 256:
        ops.append({"op": "silu_mul", "a": list(range(-128, 128)), "b": [127, -128] * 128, "mult": 32767, "shift": 17})
    rm, rs = gv.rope_multiplier(x_scale=0.05, out_scale=0.05)
    rm2, rs2 = gv.rope_multiplier(x_scale=0.03, out_scale=0.07)
    most = params["max_length"] // hd
    for heads, heads_b, pos in ((1, 0, 0), (2, 1, ctx - 1), (most, 0, ctx // 2), (most, most // 3, 3),
                                (most, most, 1)):
        ops.append({"op": "rope", "x": i8(heads * hd), "heads": heads, "heads_b": heads_b, "position": pos,
                    "mult": rm, "shift": rs, "mult_b": rm2, "shift_b": rs2})
    ops.append({"op": "rope", "x": [-128] * hd + [127] * hd, "heads": 2, "heads_b": 1, "position": 5 % ctx,
                "mult": rm, "shift": rs, "mult_b": rm2, "shift_b": rs2})
    return ops


def _expected(op, params):
    if op["op"] == "silu_mul":
        act = gv.activation(op["a"], activation_table("silu", SILU["x_scale"], SILU["out_scale"]))
        return gv.multiply(act, op["b"], mult=op["mult"], shift=op["shift"])
    heads = op["heads"]
    x = np.array(op["x"]).reshape(heads, -1)
    out = []
    for h in range(heads):
        second = h >= heads - op["heads_b"]
        mult, shift = (op["mult_b"], op["shift_b"]) if second else (op["mult"], op["shift"])
        out.append(gv.rope(x[h], op["position"], mult=mult, shift=shift, max_context=params["max_context"]))
    return np.concatenate(out)


def _predicted(op, lanes):
    if op["op"] == "rope":
        hd = len(op["x"]) // op["heads"]
        return 1 + 2 * op["heads"] * ceil_div(hd, lanes) + 4
    return 1 + ceil_div(len(op["a"]), lanes) + 4


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_fused_commands_are_bit_exact_and_cycle_exact(simulator):
    params = PRESETS[PRESET_FOR[simulator]]
    ops = _fused_cases(params, seed=8)
    job = vector_job(params, ops, tables={"silu": SILU, "rope": {"head_dim": params["max_head_dim"]}})
    result = run(simulator, "vector_unit", params, "vector_ops", job)
    assert len(result["ops"]) == len(ops)
    for number, (op, got) in enumerate(zip(ops, result["ops"], strict=True)):
        where = (number, op["op"], op.get("heads"))
        assert got["out"] == _expected(op, params).tolist(), where
        assert got["padding"] == [0] * len(got["padding"]), where
        predicted = _predicted(op, params["lanes"])
        assert got["predicted"] == predicted, where
        assert got["cycles"] == got["edges"] == predicted, where


def test_fused_commands_under_gaps_and_backpressure_on_verilator():
    params = PRESETS["demo"]
    ops = _fused_cases(params, seed=9)
    job = vector_job(params, ops, tables={"silu": SILU, "rope": {"head_dim": params["max_head_dim"]}}, seed=4,
                     gaps=0.3, stall=0.4)
    result = run("verilator", "vector_unit", params, "vector_ops", job)
    for op, got in zip(ops, result["ops"], strict=True):
        assert got["out"] == _expected(op, params).tolist()
        assert got["cycles"] == got["edges"] >= got["predicted"]
    assert sum(r["cycles"] for r in result["ops"]) > sum(r["predicted"] for r in result["ops"])


def test_the_cycle_model_of_the_fused_commands():
    assert vector_cycles("silu_mul", 192, 8).total == vector_cycles("mul", 192, 8).total == 1 + 24 + 4
    c = vector_cycles("rope", 16, 8, heads=6)
    assert (c.command, c.passes, c.pipeline, c.total, c.lower_bound) == (1, 24, 4, 29, 12)
    assert vector_cycles("rope", 16, 8, heads=1) == vector_cycles("rope", 16, 8)
    assert vector_cycles("add", 16, 8, heads=6) == vector_cycles("add", 16, 8)     # heads: RoPE's only


GOOD = dict(lanes=4, max_length=64, max_norm_length=64, max_head_dim=16, max_context=8, act_tables=2)


@pytest.mark.parametrize(("op", "message"), [
    ({"op": "rope", "x": [1] * 40, "heads": 3, "position": 0, "mult": 1, "shift": 0},
     r"^rope x must hold heads \(3\) x head_dim values, not 40$"),
    ({"op": "rope", "x": [1] * 32, "heads": 0, "position": 0, "mult": 1, "shift": 0},
     r"^rope heads must be in \[1, 32\], not 0$"),
    ({"op": "rope", "x": [1] * 32, "heads": 2, "heads_b": 3, "position": 0, "mult": 1, "shift": 0},
     r"^rope heads_b must be in \[0, 2\], not 3$"),
    ({"op": "rope", "x": [1] * 32, "heads": 2, "heads_b": 1, "position": 0, "mult": 1, "shift": 0,
      "mult_b": 1 << 15}, r"^rope mult_b must be in \[0, 32767\], not 32768$"),
    ({"op": "silu_mul", "a": [1, 2], "b": [1], "mult": 1, "shift": 0}, r"^silu_mul b must have 2 values, not 1$"),
])
def test_bad_fused_ops_are_rejected_on_the_host(op, message):
    with pytest.raises(ValueError, match=message):
        check_op(GOOD, op, rope_head_dim=16)


def test_silu_mul_needs_the_silu_table():
    with pytest.raises(ValueError, match=r"^vector op silu needs its table: give tables\['silu'\]$"):
        vector_job(GOOD, [{"op": "silu_mul", "a": [1], "b": [1], "mult": 1, "shift": 0}])
