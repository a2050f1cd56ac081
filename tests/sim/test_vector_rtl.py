"""The vector unit on the RTL: bit-exact against golden, cycle-exact against the cycle model.

Every simulator runs a batch of ops in one start: random operands plus the adversarial ones (int8
extremes, all-zero rows, a constant row whose variance is 0, argmax ties, lengths that do not
fill the last beat). Verilator runs the demo model's sizes, Icarus and Amaranth a small design
with 3 lanes (so odd lengths and partial beats are the rule).
"""

import numpy as np
import pytest

import golden.vector as gv
from golden.errors import InputError
from sim.engine.bus import WatchdogError
from sim.engine.lint import WAIVERS, lint_verilog
from sim.engine.runner import SimulationError, design_for, run, verilog_for
from sim.flows.vector import PRESETS, check_op, golden_op, vector_job
from sim.machine.cycles import vector_cycles, vector_lower_bound

from ..conftest import SIMULATORS

PRESET_FOR = {"verilator": "demo", "icarus": "small", "amaranth": "small"}
TABLES = {"silu": {"x_scale": 0.05, "out_scale": 0.025},
          "gelu": {"x_scale": 0.04, "out_scale": 0.02, "approximate": "tanh"}}


def _tables(params):
    return dict(TABLES, rope={"head_dim": params["max_head_dim"], "base": 10000.0})


def _expected(op, params):
    """Golden's answer for one op of a job."""
    return golden_op(params, check_op(params, op, rope_head_dim=params["max_head_dim"]), _tables(params))


def _norm_op(kind, x, rng, *, eps=None, gamma=None, x_scale=0.05, out_scale=0.04):
    n = len(x)
    gamma = rng.normal(1.0, 0.3, n) if gamma is None else gamma
    if kind == "rmsnorm":
        p = gv.NormParams.rms(gamma, x_scale=x_scale, out_scale=out_scale)
        op = {"op": "rmsnorm"}
    else:
        p = gv.NormParams.layer(gamma, rng.normal(0, 0.5, n), x_scale=x_scale, out_scale=out_scale)
        op = {"op": "layernorm", "beta": p.beta.tolist(), "inv_mult": p.inv_mult, "inv_shift": p.inv_shift}
    op.update({"x": list(map(int, x)), "gamma": p.gamma.tolist(), "eps": p.eps if eps is None else eps,
               "out_mult": p.out_mult, "out_shift": p.out_shift})
    return op


def vector_cases(params, seed, *, small):
    """Ops for one design: sizes from its parameters, random and adversarial operands."""
    rng = np.random.default_rng(seed)
    lanes, hd = params["lanes"], params["max_head_dim"]
    d = params["max_norm_length"]
    long_len = params["max_length"]
    odd = d - 1 if d % lanes == 0 else d       # a length that leaves the last beat partial
    i8 = lambda n: rng.integers(-128, 128, n).tolist()  # noqa: E731
    ops = []
    # requantize: random int32 with per-element multipliers and shifts, then saturating extremes.
    n = odd
    ops.append({"op": "requant", "acc": rng.integers(-(1 << 31), 1 << 31, n).tolist(),
                "mult": rng.integers(0, 1 << 15, n).tolist(), "shift": rng.integers(0, 47, n).tolist()})
    ext = [-(1 << 31), (1 << 31) - 1, -1, 0, 1, 5, -5, -257, 255, -259][: min(10, long_len)]
    ops.append({"op": "requant", "acc": ext, "mult": [32767, 32767, 1, 9, 1, 1, 1, 16384, 16384, 16384][: len(ext)],
                "shift": [0, 46, 1, 0, 0, 1, 1, 15, 15, 15][: len(ext)]})
    ops.append({"op": "requant", "acc": rng.integers(-1000, 1000, 1).tolist(), "mult": 27307, "shift": 16})
    # residual add and multiply: scales from golden's constructors; extremes; zeros.
    add = gv.AddParams.from_scales(a_scale=0.05, b_scale=0.031, out_scale=0.06)
    addk = {"a_mult": add.a_mult, "b_mult": add.b_mult, "mult": add.mult, "shift": add.shift}
    mm, ms = gv.multiply_multiplier(a_scale=0.05, b_scale=0.04, out_scale=0.03)
    for a, b in ((i8(long_len if not small else odd), None), ([-128] * d, [-128] * d), ([127] * d, [-128] * d),
                 ([0] * odd, [0] * odd)):
        b = i8(len(a)) if b is None else b
        ops.append({"op": "add", "a": a, "b": b, **addk})
        ops.append({"op": "mul", "a": a, "b": b, "mult": mm, "shift": ms})
    # activations: every int8 input where the design takes 256 elements, else random plus extremes.
    xs = list(range(-128, 128)) if long_len >= 256 else [-128, 127, 0, -1, 1] + i8(odd)
    ops.append({"op": "silu", "x": xs})
    ops.append({"op": "gelu", "x": xs})
    # argmax: random int32, ties (all equal -> 0; equal maxima -> the first), max last, extremes.
    na = min(48, long_len)
    ops.append({"op": "argmax", "x": rng.integers(-(1 << 31), 1 << 31, na).tolist()})
    ops.append({"op": "argmax", "x": [7] * odd})
    tie = rng.integers(-100, 100, na)
    tie[[na // 3, na // 2, na - 1]] = 1000
    ops.append({"op": "argmax", "x": tie.tolist()})
    ops.append({"op": "argmax", "x": [-(1 << 31)] * (lanes + 1) + [(1 << 31) - 1]})
    ops.append({"op": "argmax", "x": [-5]})
    # norms: random rows at the full and a partial length, a constant row (variance 0), an
    # all-zero row, the int8 extremes, eps 0.
    for kind in ("rmsnorm", "layernorm"):
        ops.append(_norm_op(kind, i8(d), rng))
        ops.append(_norm_op(kind, i8(odd), rng))
        ops.append(_norm_op(kind, [37] * d, rng))
        ops.append(_norm_op(kind, [0] * odd, rng))
        ops.append(_norm_op(kind, [-128] * d, rng, eps=0))
        ops.append(_norm_op(kind, [-128, 127] * (d // 2), rng, gamma=np.full(d, -2.0)))
        ops.append(_norm_op(kind, i8(1), rng))
    # RoPE: random heads at the first, a middle and the last position; an extreme head.
    rm, rs = gv.rope_multiplier(x_scale=0.05, out_scale=0.05)
    for pos in (0, params["max_context"] // 2 + 1, params["max_context"] - 1):
        ops.append({"op": "rope", "x": i8(hd), "position": pos, "mult": rm, "shift": rs})
    ops.append({"op": "rope", "x": [-128] * hd, "position": 3, "mult": rm, "shift": rs})
    if not small:
        # The demo model's own shapes: the SwiGLU gate and its SiLU over d_ff = 192, the residual
        # add over d_model = 64, the down projection's requantization.
        ff = 192
        ops.append({"op": "silu", "x": i8(ff)})
        ops.append({"op": "mul", "a": i8(ff), "b": i8(ff), "mult": mm, "shift": ms})
        ops.append({"op": "add", "a": i8(d), "b": i8(d), **addk})
        ops.append({"op": "requant", "acc": rng.integers(-(1 << 20), 1 << 20, ff).tolist(), "mult": 23000,
                    "shift": 24})
    return ops


def _check_results(params, ops, result, *, exact_cycles):
    assert len(result["ops"]) == len(ops)
    for number, (op, got) in enumerate(zip(ops, result["ops"], strict=True)):
        where = (number, op["op"], len(op.get("x", op.get("a", op.get("acc")))))
        expected = _expected(op, params)
        if op["op"] == "argmax":
            assert got["index"] == int(expected), where
        else:
            assert got["out"] == np.asarray(expected).tolist(), where
            assert got["padding"] == [0] * len(got["padding"]), where
        predicted = vector_cycles(op["op"], where[2], params["lanes"],
                                  product_register=params.get("product_register", False)).total
        assert got["predicted"] == predicted
        if exact_cycles:
            assert got["cycles"] == predicted, where   # the RTL's own counter
            assert got["edges"] == predicted, where    # the simulator's clock, counted by the flow
        else:
            assert got["cycles"] == got["edges"] >= predicted, where


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_vector_unit_is_bit_exact_and_cycle_exact(simulator):
    params = PRESETS[PRESET_FOR[simulator]]
    ops = vector_cases(params, seed=3, small=simulator != "verilator")
    job = vector_job(params, ops, tables=_tables(params))
    result = run(simulator, "vector_unit", params, "vector_ops", job)
    _check_results(params, ops, result, exact_cycles=True)


@pytest.mark.parametrize(("simulator", "product_register"), [
    # Verilator builds the ulx3s design's vector unit (both keys) in the fast suite, the other its own build.
    *((s, r) if s != "verilator" or r else pytest.param(s, r, marks=pytest.mark.slow)
      for s in SIMULATORS for r in (False, True))])
def test_vector_unit_with_fabric_products(simulator, product_register):
    """``fabric_products``: each lane's products built from adders, two shared by every opcode
    (ADD's two scaled terms, MUL's and SILU_MUL's, RoPE's two, the norms' x * x): every op,
    random and adversarial, still bit-exact and cycle-exact (Verilator at the ``ulx3s`` design's 8 lanes).
    ``product_register`` (the ``ulx3s`` design's ``vector_product_register``): stage A's products
    registered before their sums, the requantization's before its shift, two cycles more a command,
    predicted exactly."""
    ulx3s = simulator == "verilator"    # the ulx3s design's unit: 8 lanes, and no LayerNorm
    params = dict(PRESETS[PRESET_FOR[simulator]], fabric_products=True, product_register=product_register,
                  **({"lanes": 8, "layernorm": False} if ulx3s else {}))
    ops = [op for op in vector_cases(params, seed=7, small=not ulx3s) if params.get("layernorm", True)
           or op["op"] != "layernorm"]
    result = run(simulator, "vector_unit", params, "vector_ops", vector_job(params, ops, tables=_tables(params)))
    _check_results(params, ops, result, exact_cycles=True)


@pytest.mark.parametrize("simulator", ["amaranth", "icarus"])
def test_vector_unit_without_layernorm(simulator):
    """``layernorm = false`` (``Config.layernorm``, the ``ulx3s`` design): every other op, RMSNorm
    among them, bit-exact and cycle-exact; a LAYERNORM op is refused on the host (the compiler
    refuses such a model, tests/sim/test_compiler.py). Underneath, the unit runs a LAYERNORM
    command as an RMSNorm: LayerNorm's logic is really gone."""
    params = dict(PRESETS[PRESET_FOR[simulator]], layernorm=False)
    cases = vector_cases(params, seed=9, small=True)
    ops = [op for op in cases if op["op"] != "layernorm"]
    assert {"rmsnorm", "rope", "add", "argmax"} <= {op["op"] for op in ops}
    result = run(simulator, "vector_unit", params, "vector_ops", vector_job(params, ops, tables=_tables(params)))
    _check_results(params, ops, result, exact_cycles=True)
    layer = next(op for op in cases if op["op"] == "layernorm")
    with pytest.raises(InputError, match=r"^vector op layernorm needs a vector unit with layernorm = true; "
                                         r"this one has none$"):
        vector_job(params, [layer], tables=_tables(params))
    # The job as a unit with LayerNorm would take it, given to the one without.
    job = vector_job(dict(params, layernorm=True), [layer], tables=_tables(params))
    got = run(simulator, "vector_unit", params, "vector_ops", job)["ops"][0]["out"]
    as_rms = {k: v for k, v in layer.items() if k in ("x", "gamma", "eps", "out_mult", "out_shift")}
    assert got == np.asarray(_expected({"op": "rmsnorm", **as_rms}, params)).tolist()


def test_vector_unit_product_register_with_hard_multipliers_on_amaranth():
    """``product_register`` without ``fabric_products``: each lane's own products (``a*a_mult``,
    ``b*b_mult``, ``a*b``, ``x*cos``, ``x'*sin``, ``x*x``, ``d*r``) registered before their sums, and
    the requantization's before its shift: every op bit-exact and cycle-exact (Amaranth's simulator:
    no Verilog build)."""
    params = dict(PRESETS["small"], product_register=True)
    ops = vector_cases(params, seed=8, small=True)
    result = run("amaranth", "vector_unit", params, "vector_ops", vector_job(params, ops, tables=_tables(params)))
    _check_results(params, ops, result, exact_cycles=True)


@pytest.mark.parametrize("product_register", [False, True])
def test_norm_statistics_equal_golden_at_every_edge_case(product_register):
    """The statistics chain alone (Amaranth's simulator), fed the sums of real rows: mean, fraction,
    reciprocal square root and exponent equal golden's LayerNorm and RMSNorm steps for constant and
    near-constant rows (variance 0 or nearly), eps 0 and at its largest, the int8 extremes, random
    rows of lengths 1 to 64. With ``product_register`` step 4's product is registered and its shift
    and clamp are folded into step 5: the same values."""
    from amaranth.sim import Simulator

    from golden.numerics import quantize_multiplier
    from golden.tables import round_shift, rsqrt_fixed
    from hdl.vector import LAYER_STATS_EXTRA, NORM_STATS_CYCLES, NormStatistics

    rng = np.random.default_rng(12)
    rows = [[5] * 7, [-128] * 64, [127] * 64, [-128, 127] * 32, [0], [1, 2], [-1, 0, 0], [3, 4, 4]]
    rows += [rng.integers(-128, 128, n).tolist() for n in (1, 2, 3, 5, 9, 33, 64)]
    rows += [(rng.integers(-2, 3, n) + c).tolist() for n, c in ((63, 100), (17, -90), (64, 0))]
    cases = []
    for x in rows:
        n = len(x)
        im, is_ = quantize_multiplier(1.0 / n)
        for eps in (0, 1, 7, (1 << 31) - 1 - n * 255 * 255):
            for layer in (True, False):
                cases.append((x, im, is_, eps, layer))
    want, got = [], []
    for x, im, is_, eps, layer in cases:
        x = np.asarray(x, dtype=np.int64)
        if layer:
            mu = int(round_shift(int(x.sum()) * im, is_))
            e, q = int((x - mu).sum()), int(((x - mu) ** 2).sum())
            f = int(round_shift((e << gv.NORM_MEAN_FRAC_BITS) * im, is_))
            u = max(max(q - int(round_shift(e * e * im, is_)), 0) + eps, 1)
        else:
            mu = f = 0
            u = max(int((x * x).sum()) + eps, 1)
        r, k = rsqrt_fixed(u)
        want.append((mu, f, int(r), int(k), int(k) + gv.NORM_MEAN_FRAC_BITS))
    stats = NormStatistics(max_length=64, product_register=product_register, lanes=3)
    copies_seen = []

    async def bench(ctx):
        for x, im, is_, eps, layer in cases:
            for port, value in ((stats.s_sum, sum(x)), (stats.q_sum, sum(v * v for v in x)), (stats.length, len(x)),
                                (stats.inv_mult, im), (stats.inv_shift, is_), (stats.eps, eps), (stats.layer, layer)):
                ctx.set(port, value)
            for _ in range(NORM_STATS_CYCLES + 1 + (LAYER_STATS_EXTRA if product_register else 0)):
                await ctx.tick()
                # The lanes' copies of k_shift equal it at every cycle, not only once it is stable.
                k_shift = ctx.get(stats.k_shift)
                assert [ctx.get(stats.k_shift_lanes[i]) for i in range(3)] == [k_shift] * 3
                copies_seen.append(k_shift)
            got.append(tuple(ctx.get(o) for o in (stats.mu, stats.f, stats.r, stats.k, stats.k_shift)))

    sim = Simulator(stats)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == want
    assert len(set(copies_seen)) > 1      # the copies were compared while k_shift moved


@pytest.mark.slow
def test_vector_unit_at_eight_lanes_on_verilator():
    """The `demo` accelerator's width (8 lanes; the `demo` vector preset above is the ulx3s
    accelerator's 4): every op, random and adversarial, bit-exact and cycle-exact. Slow (its own
    build, about a minute): the fast suite runs 8 lanes inside the demo design (the main job's test)
    and in `test_vector_unit_with_fabric_products`."""
    params = dict(PRESETS["demo"], lanes=8)
    ops = vector_cases(params, seed=5, small=False)
    result = run("verilator", "vector_unit", params, "vector_ops", vector_job(params, ops, tables=_tables(params)))
    _check_results(params, ops, result, exact_cycles=True)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_gelu_with_the_erf_table(simulator):
    """GELU's exact (erf) form: the same datapath as the tanh form, its own table contents."""
    params = PRESETS[PRESET_FOR[simulator]]
    erf = {"x_scale": 0.04, "out_scale": 0.02, "approximate": "none"}
    xs = list(range(-128, 128)) if params["max_length"] >= 256 else list(range(-128, 128, 7))[: params["max_length"]]
    ops = [{"op": "gelu", "x": xs}, {"op": "gelu", "x": [-128, 127, 0, -1, 1][: params["max_length"]]}]
    result = run(simulator, "vector_unit", params, "vector_ops", vector_job(params, ops, tables={"gelu": erf}))
    for op, got in zip(ops, result["ops"], strict=True):
        assert got["out"] == gv.gelu(op["x"], **erf).tolist()
        assert got["cycles"] == got["edges"] == vector_cycles("gelu", len(op["x"]), params["lanes"]).total
    assert gv.gelu(xs, **erf).tolist() != gv.gelu(xs, **TABLES["gelu"]).tolist()   # the tables do differ


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_vector_unit_is_exact_under_gaps_and_backpressure(simulator):
    params = PRESETS[PRESET_FOR[simulator]]
    ops = vector_cases(params, seed=4, small=simulator != "verilator")
    if simulator == "icarus":
        ops = ops[::3]   # Icarus is slow: every kind of op, fewer of each
    job = vector_job(params, ops, tables=_tables(params), seed=11, gaps=0.3, stall=0.4)
    result = run(simulator, "vector_unit", params, "vector_ops", job)
    _check_results(params, ops, result, exact_cycles=False)
    assert sum(r["cycles"] for r in result["ops"]) > sum(r["predicted"] for r in result["ops"])


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_vector_unit_watchdog_stops_an_op_that_cannot_finish(simulator):
    params = PRESETS[PRESET_FOR[simulator]]
    op = _norm_op("layernorm", list(range(-5, 5)), np.random.default_rng(0))
    predicted = vector_cycles("layernorm", 10, params["lanes"]).total
    job = vector_job(params, [op], budget=predicted - 1)   # one cycle short
    with pytest.raises((SimulationError, WatchdogError),
                       match=rf"vector op 0 \(layernorm, length 10\) did not finish within {predicted - 1} cycles"):
        run(simulator, "vector_unit", params, "vector_ops", job)


def test_vector_unit_gpt2_sized_rows_on_amaranth():
    """GPT-2-small rows (768 wide, 8 lanes) on Amaranth's simulator only: no Verilog build."""
    params = {"lanes": 8, "max_length": 768, "max_norm_length": 768, "max_head_dim": 64, "max_context": 4,
              "act_tables": 2}
    rng = np.random.default_rng(7)
    ops = [_norm_op("layernorm", rng.integers(-128, 128, 768).tolist(), rng),
           _norm_op("layernorm", [-128] * 767 + [127], rng, eps=0),
           _norm_op("rmsnorm", rng.integers(-128, 128, 765).tolist(), rng),
           {"op": "argmax", "x": rng.integers(-(1 << 31), 1 << 31, 768).tolist()},
           {"op": "rope", "x": rng.integers(-128, 128, 64).tolist(), "position": 3, "mult": 20000, "shift": 20}]
    job = vector_job(params, ops, tables=_tables(params))
    result = run("amaranth", "vector_unit", params, "vector_ops", job)
    _check_results(params, ops, result, exact_cycles=True)


# --- the cycle model ---------------------------------------------------------------------------

def test_vector_cycle_model_terms():
    from hdl.vector import VectorOp

    c = vector_cycles("add", 10, 4)
    assert (c.command, c.passes, c.stats, c.pipeline, c.total, c.lower_bound) == (1, 3, 0, 4, 8, 3)
    c = vector_cycles(VectorOp.RMSNORM, 64, 4)
    assert (c.passes, c.stats, c.total, c.lower_bound) == (32, 10, 47, 32)
    assert vector_cycles("rope", 16, 4).total == 1 + 8 + 4
    # product_register: three pipeline stages more (stage M, A's and the output's second cycles); a
    # norm's sums final one cycle later (taken a stage M later).
    c = vector_cycles(VectorOp.RMSNORM, 64, 4, product_register=True)
    assert (c.passes, c.stats, c.pipeline, c.total, c.lower_bound) == (32, 11, 7, 51, 32)
    assert vector_cycles(VectorOp.LAYERNORM, 64, 4, product_register=True).stats == 13   # its chain's 2 more
    assert vector_cycles("add", 10, 4, product_register=True).total == 11
    assert vector_cycles("rope", 16, 4, heads=3, product_register=True).total == 1 + 24 + 7
    assert vector_lower_bound("argmax", 48, 4) == 12
    with pytest.raises(ValueError, match="vector op must be one of .*, not 'softmax'"):
        vector_cycles("softmax", 4, 4)


# --- parameters and shapes rejected before simulation ------------------------------------------

GOOD = dict(lanes=4, max_length=64, max_norm_length=64, max_head_dim=16, max_context=8, act_tables=2)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"lanes": 0}, ValueError, r"^vector unit lanes must be a positive integer, not 0$"),
    ({"lanes": 65}, ValueError, r"^vector unit lanes must be at most 64, not 65$"),
    ({"lanes": 2.0}, TypeError, r"^vector unit lanes must be an integer, not 2\.0$"),
    ({"max_length": -1}, ValueError, r"^vector unit max_length must be a positive integer, not -1$"),
    ({"max_norm_length": 65}, ValueError,
     r"^vector unit max_norm_length must be at most max_length \(64\) and 32768, not 65$"),
    ({"max_head_dim": 12}, ValueError, r"^vector unit max_head_dim must be a multiple of 2 \* lanes \(8\), not 12$"),
    ({"max_head_dim": 72}, ValueError, r"^vector unit max_head_dim must be at most max_length \(64\), not 72$"),
    ({"max_context": "128"}, TypeError, r"^vector unit max_context must be an integer, not '128'$"),
    ({"act_tables": 0}, ValueError, r"^vector unit act_tables must be a positive integer, not 0$"),
    ({"act_tables": 257}, ValueError, r"^vector unit act_tables must be at most 256, not 257$"),
])
def test_bad_parameters_are_rejected(change, error, message):
    from hdl.vector import VectorUnit

    with pytest.raises(error, match=message):
        VectorUnit(**dict(GOOD, **change))


def _add(n, **kw):
    return dict({"op": "add", "a": [1] * n, "b": [2] * n, "a_mult": 1, "b_mult": 1, "mult": 1, "shift": 0}, **kw)


@pytest.mark.parametrize(("op", "error", "message"), [
    ({"op": "softmax", "x": [1]}, ValueError, "^vector op must be one of requant, .*, not 'softmax'$"),
    (_add(0), ValueError, r"^vector op add length must be in \[1, 64\] \(max_length\), not 0$"),
    (_add(65), ValueError, r"^vector op add length must be in \[1, 64\] \(max_length\), not 65$"),
    (_add(3, b=[1, 2]), ValueError, r"^add b must have 3 values, not 2$"),
    (_add(2, a=[1, 128]), ValueError, r"^add a must hold int8 values in \[-128, 127\], not 128$"),
    (_add(2, mult=1 << 15), ValueError, r"^add mult must be in \[0, 32767\], not 32768$"),
    (_add(2, shift=47), ValueError, r"^add shift must be in \[0, 46\], not 47$"),
    ({"op": "requant", "acc": [1 << 31], "mult": 1, "shift": 0}, ValueError,
     r"^requant acc must hold values in \[-2147483648, 2147483647\], not 2147483648$"),
    ({"op": "requant", "acc": [1, 2], "mult": [1], "shift": 0}, ValueError,
     r"^requant multiplier must have 2 values, not 1$"),
    ({"op": "silu", "x": [0.5]}, TypeError, r"^silu x must hold integers, not float64$"),
    ({"op": "rope", "x": [1] * 12, "position": 0, "mult": 1, "shift": 0}, ValueError,
     r"^rope length \(head_dim\) must be a multiple of 2 \* lanes \(8\) and at most max_head_dim \(16\), not 12$"),
    ({"op": "rope", "x": [1] * 16, "position": 8, "mult": 1, "shift": 0}, ValueError,
     r"^rope position must be in \[0, 7\], not 8$"),
    ({"op": "rope", "x": [1] * 8, "position": 0, "mult": 1, "shift": 0}, ValueError,
     r"^rope length must equal the loaded table's head_dim \(16\), not 8$"),
    ({"op": "layernorm", "x": [1] * 4, "gamma": [1] * 4, "beta": [0] * 4, "eps": 0, "out_mult": 1,
      "out_shift": 0, "inv_mult": 1, "inv_shift": 0}, ValueError,
     r"^layernorm inv_mult/inv_shift must represent 1/4 \(16384, 16\), not \(1, 0\)$"),
    ({"op": "rmsnorm", "x": [1] * 65, "gamma": [1] * 65, "eps": 0, "out_mult": 1, "out_shift": 0}, ValueError,
     r"^vector op rmsnorm length must be in \[1, 64\] \(max_norm_length\), not 65$"),
])
def test_bad_ops_are_rejected_on_the_host(op, error, message):
    with pytest.raises(error, match=message):
        check_op(GOOD, op, rope_head_dim=16)


def test_bad_jobs_are_rejected_on_the_host():
    with pytest.raises(ValueError, match=r"^vector op silu needs its table: give tables\['silu'\]$"):
        vector_job(GOOD, [{"op": "silu", "x": [1]}])
    with pytest.raises(ValueError, match=r"^rope needs a loaded RoPE table: give tables\['rope'\] with its head_dim$"):
        vector_job(GOOD, [{"op": "rope", "x": [1] * 8, "position": 0, "mult": 1, "shift": 0}])
    with pytest.raises(ValueError, match=r"^rope table head_dim must be .* not 12$"):
        vector_job(GOOD, [], tables={"rope": {"head_dim": 12}})
    with pytest.raises(ValueError, match=r"^stall must be in \[0, 1\), not 1\.0$"):
        vector_job(GOOD, [], stall=1.0)
    with pytest.raises(ValueError, match=r"^vector unit lanes must be a positive integer, not 0$"):
        vector_job(dict(GOOD, lanes=0), [])
    with pytest.raises(ValueError, match=r"^the gelu table goes to activation table 1: the design needs "
                                         r"act_tables >= 2, not 1$"):
        vector_job(dict(GOOD, act_tables=1), [], tables={"gelu": TABLES["gelu"]})


# --- lint ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_vector_unit_verilog_is_lint_clean(preset):
    report = lint_verilog(verilog_for(design_for("vector_unit", PRESETS[preset]), "vector_unit"), "vector_unit")
    assert report.findings == []
    assert set(report.waived) <= set(WAIVERS)


def test_vector_unit_doc_timing_table_matches_the_cycle_model():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "vector_unit.md").read_text()
    rows = {"RMSNORM / LAYERNORM (64)": ("rmsnorm", 64), "ADD (64)": ("add", 64),
            "MUL, SILU, REQUANT (192)": ("mul", 192), "ROPE (16, one head)": ("rope", 16),
            "ARGMAX (48)": ("argmax", 48), "LAYERNORM (768, GPT-2 small)": ("layernorm", 768)}
    for label, (op, n) in rows.items():
        c4, c8 = vector_cycles(op, n, 4), vector_cycles(op, n, 8)
        row = (f"| {label} | {c4.total} | {c4.lower_bound} | {round(100 * c4.efficiency)} % | {c8.total} | "
               f"{round(100 * c8.efficiency)} % |")
        assert row in text, row


def test_a_bad_job_is_refused_before_any_simulator_starts():
    job = {"params": PRESETS["small"], "ops": [{"op": "silu", "x": [1, 2]}]}   # no SiLU table given
    with pytest.raises(ValueError, match=r"^vector op silu needs its table: give tables\['silu'\]$"):
        run("icarus", "vector_unit", PRESETS["small"], "vector_ops", job)
