"""The vector unit's regression: random ops of every kind through its command and data streams.

A transaction is one op (:data:`sim.flows.vector.OPS`): length biased to 1, a partial beat, whole
beats and the op's limit; int8 operands drawn by :func:`sim.regress.block.int8_values`, int32
operands biased to their extremes, multipliers and shifts biased to 0 and their maxima (or from
golden's scale constructors), RoPE at the first and last position with up to the most heads a
command holds and a second scale on the last heads. Its traffic pattern (input gaps, output
backpressure) is its own; a chunk runs as one ``vector_ops`` job per traffic pattern.
The scoreboard: the output (or argmax index) equals golden's, the padding lanes are 0, and the
unit's counter equals the cycle model's prediction (steady traffic) or the flow's own count and
no less (gaps and backpressure).
"""

from __future__ import annotations

import numpy as np

import golden.vector as gv
from golden.numerics import MULT_MAX, SHIFT_MAX, ceil_div

from ..flows.vector import OPS, PRESETS, golden_op, vector_job
from .block import EDGES, TRAFFIC, Block, edge_hits, int8_values

#: The design per simulator (the RTL tests' builds): the demo model's sizes on Verilator.
PRESET_FOR = {"verilator": "demo", "icarus": "small", "amaranth": "small"}
#: Table constants (the activation tables are loaded once per job).
TABLES = {"silu": {"x_scale": 0.05, "out_scale": 0.025},
          "gelu": {"x_scale": 0.04, "out_scale": 0.02, "approximate": "tanh"}}
ROPE_BASE = 10000.0
_I32 = (-(1 << 31), (1 << 31) - 1)
#: Length classes of an op (a rope op's length is its head count).
LENGTHS = ("one", "partial", "whole", "max")


def _params(simulator: str) -> dict:
    return dict(PRESETS[PRESET_FOR.get(simulator, "small")])


def _tables(params) -> dict:
    return dict(TABLES, rope={"head_dim": params["max_head_dim"], "base": ROPE_BASE})


def _limit(params, op: str) -> int:
    return params["max_norm_length"] if op in ("rmsnorm", "layernorm") else params["max_length"]


def _length(rng, lanes: int, limit: int) -> int:
    choices = [1, lanes - 1, lanes, lanes + 1, limit, limit - 1, rng.randint(1, limit)]
    return max(1, min(limit, rng.choice(choices)))


def _mult(rng) -> int:
    return rng.choice([0, 1, MULT_MAX, MULT_MAX - 1, rng.randint(0, MULT_MAX)])


def _shift(rng) -> int:
    return rng.choice([0, 1, SHIFT_MAX, rng.randint(0, SHIFT_MAX), rng.randint(8, 24)])


def _scale(rng) -> float:
    return 10 ** rng.uniform(-2.5, -0.5)


def _int32s(rng, n: int) -> list[int]:
    g = np.random.default_rng(rng.getrandbits(64))
    kind = rng.choice(["full", "small", "edges"])
    if kind == "full":
        x = g.integers(_I32[0], _I32[1] + 1, n)
    elif kind == "small":
        x = g.integers(-(1 << 16), 1 << 16, n)
    else:
        x = g.choice(np.array([_I32[0], _I32[1], 0, -1, 1]), n)
    return x.tolist()


def _op(rng, params) -> dict:
    lanes, hd = params["lanes"], params["max_head_dim"]
    name = rng.choice(OPS)
    n = _length(rng, lanes, _limit(params, name))
    modes = []

    def i8(length):
        mode, x = int8_values(rng, (length,))
        modes.append(mode)
        return x.tolist()

    if name == "requant":
        op = {"acc": _int32s(rng, n)}
        if rng.random() < 0.5:
            op.update(mult=_mult(rng), shift=_shift(rng))
        else:
            op.update(mult=[_mult(rng) for _ in range(n)], shift=[_shift(rng) for _ in range(n)])
    elif name in ("add", "mul", "silu_mul"):
        op = {"a": i8(n), "b": i8(n)}
        scaled = rng.random() < 0.5
        if name == "add":
            if scaled:
                p = gv.AddParams.from_scales(a_scale=_scale(rng), b_scale=_scale(rng), out_scale=_scale(rng))
                op.update(a_mult=p.a_mult, b_mult=p.b_mult, mult=p.mult, shift=p.shift)
            else:
                op.update(a_mult=_mult(rng), b_mult=_mult(rng), mult=_mult(rng), shift=_shift(rng))
        elif scaled:
            op["mult"], op["shift"] = gv.multiply_multiplier(a_scale=_scale(rng), b_scale=_scale(rng),
                                                             out_scale=_scale(rng))
        else:
            op.update(mult=_mult(rng), shift=_shift(rng))
    elif name in ("silu", "gelu"):
        op = {"x": i8(n)}
    elif name == "argmax":
        x = _int32s(rng, n)
        if n > 1 and rng.random() < 0.3:   # ties of the maximum
            top = max(x)
            for i in rng.sample(range(n), rng.randint(1, n - 1)):
                x[i] = top
        op = {"x": x}
    elif name in ("rmsnorm", "layernorm"):
        x = i8(n)
        g = np.random.default_rng(rng.getrandbits(64))
        gamma = g.normal(1.0, 0.5, n)
        xs, outs = _scale(rng), _scale(rng)
        if name == "rmsnorm":
            p = gv.NormParams.rms(gamma, x_scale=xs, out_scale=outs)
            op = {}
        else:
            p = gv.NormParams.layer(gamma, g.normal(0, 0.5, n), x_scale=xs, out_scale=outs)
            op = {"beta": p.beta.tolist(), "inv_mult": p.inv_mult, "inv_shift": p.inv_shift}
        sq_max = 128 * 128 if name == "rmsnorm" else 255 * 255
        eps = rng.choice([int(p.eps), 0, (1 << 31) - 1 - n * sq_max])
        op.update(x=x, gamma=p.gamma.tolist(), eps=eps, out_mult=p.out_mult, out_shift=p.out_shift)
    else:   # rope: n is the head count
        most = params["max_length"] // hd
        heads = max(1, min(most, rng.choice([1, 2, most, rng.randint(1, most)])))
        n = heads
        op = {"x": i8(heads * hd), "heads": heads, "heads_b": rng.choice([0, heads, rng.randint(0, heads)]),
              "position": rng.choice([0, params["max_context"] - 1, rng.randrange(params["max_context"])])}
        for suffix in ("", "_b"):
            if rng.random() < 0.7:
                m, s = gv.rope_multiplier(x_scale=_scale(rng), out_scale=_scale(rng))
            else:
                m, s = _mult(rng), _shift(rng)
            op["mult" + suffix], op["shift" + suffix] = m, s
    op["op"] = name
    return op, n, modes


def generate(rng, params) -> dict:
    op, n, modes = _op(rng, params)
    return {"op": op, "n": n, "modes": modes, "traffic": rng.choice(list(TRAFFIC))}


def jobs(params, txns) -> list:
    out = []
    for traffic, (gaps, stall) in TRAFFIC.items():
        idx = [i for i, (_, t) in enumerate(txns) if t["traffic"] == traffic]
        if idx:
            ops = [txns[i][1]["op"] for i in idx]
            job = vector_job(params, ops, tables=_tables(params), seed=txns[idx[0]][0], gaps=gaps, stall=stall)
            out.append((job, idx))
    return out


def results(result, txns) -> list:
    return result["ops"]


def _length_of(op) -> int:
    first = {"requant": "acc", "add": "a", "mul": "a", "silu_mul": "a"}.get(op["op"], "x")
    return len(op[first])


def observe(params, txn, raw):
    op = txn["op"]
    if txn["traffic"] == "steady":
        ok = raw["cycles"] == raw["edges"] == raw["predicted"]
    else:
        ok = raw["cycles"] == raw["edges"] >= raw["predicted"]
    timing = "ok" if ok else f"cycles {raw['cycles']}, edges {raw['edges']}, predicted {raw['predicted']}"
    if op["op"] == "argmax":
        return {"index": raw["index"], "timing": timing}
    return {"out": raw["out"], "padding": raw["padding"], "timing": timing}


def expect(params, txn):
    op = txn["op"]
    if op["op"] == "argmax":
        return {"index": int(golden_op(params, op, _tables(params))), "timing": "ok"}
    n = _length_of(op)
    pad = ceil_div(n, params["lanes"]) * params["lanes"] - n
    return {"out": np.asarray(golden_op(params, op, _tables(params))).tolist(), "padding": [0] * pad, "timing": "ok"}


def points(params) -> dict:
    sized = [o for o in OPS if o != "rope"]
    return {
        "op": list(OPS),
        "op_x_length": [f"{o}/{c}" for o in sized for c in LENGTHS],
        "rope": ["heads_1", "heads_many", "heads_max", "heads_b_0", "heads_b_some", "heads_b_all", "pos_0",
                 "pos_max"],
        "requant": ["per_element", "scalar", "mult_0", "mult_max", "shift_0", "shift_max", "acc_min", "acc_max"],
        "argmax": ["first", "last", "middle", "tie"],
        "norm": ["eps_0", "eps_max", "constant_row", "zero_row"],
        "int8_edges": [str(v) for v in EDGES],
        "out_saturated": ["127", "-128"],
        "traffic": list(TRAFFIC),
        "op_x_traffic": [f"{o}/{t}" for o in OPS for t in TRAFFIC],
    }


def _length_class(n: int, lanes: int, limit: int) -> str:
    return "one" if n == 1 else "max" if n == limit else "partial" if n % lanes else "whole"


def sample(cov, params, txn, obs) -> None:
    op, name = txn["op"], txn["op"]["op"]
    lanes = params["lanes"]
    cov.hit("op", name)
    cov.hit("traffic", txn["traffic"])
    cov.hit("op_x_traffic", f"{name}/{txn['traffic']}")
    if name == "rope":
        most = params["max_length"] // params["max_head_dim"]
        h, hb = op["heads"], op["heads_b"]
        cov.hit("rope", "heads_1" if h == 1 else "heads_max" if h == most else "heads_many")
        cov.hit("rope", "heads_b_0" if hb == 0 else "heads_b_all" if hb == h else "heads_b_some")
        if op["position"] in (0, params["max_context"] - 1):
            cov.hit("rope", "pos_0" if op["position"] == 0 else "pos_max")
    else:
        n = _length_of(op)
        cov.hit("op_x_length", f"{name}/{_length_class(n, lanes, _limit(params, name))}")
    if name == "requant":
        per = isinstance(op["mult"], list)
        cov.hit("requant", "per_element" if per else "scalar")
        mults = op["mult"] if per else [op["mult"]]
        shifts = op["shift"] if per else [op["shift"]]
        for cond, b in ((0 in mults, "mult_0"), (MULT_MAX in mults, "mult_max"), (0 in shifts, "shift_0"),
                        (SHIFT_MAX in shifts, "shift_max"), (_I32[0] in op["acc"], "acc_min"),
                        (_I32[1] in op["acc"], "acc_max")):
            if cond:
                cov.hit("requant", b)
    if name == "argmax":
        x, i, n = op["x"], obs["index"], len(op["x"])
        cov.hit("argmax", "first" if i == 0 else "last" if i == n - 1 else "middle")
        if x.count(max(x)) > 1:
            cov.hit("argmax", "tie")
    if name in ("rmsnorm", "layernorm"):
        sq_max = 128 * 128 if name == "rmsnorm" else 255 * 255
        if op["eps"] == 0:
            cov.hit("norm", "eps_0")
        if op["eps"] == (1 << 31) - 1 - len(op["x"]) * sq_max:
            cov.hit("norm", "eps_max")
        if len(set(op["x"])) == 1:
            cov.hit("norm", "zero_row" if op["x"][0] == 0 else "constant_row")
    for key in ("a", "b", "x"):
        if key in op and name not in ("argmax",):
            for v in edge_hits(op[key]):
                cov.hit("int8_edges", v)
    if "out" in obs:
        for v in edge_hits(obs["out"]):
            if v != "0":
                cov.hit("out_saturated", v)


BLOCK = Block(name="vector", design="vector_unit", flow="vector_ops", params=_params, generate=generate, jobs=jobs,
              results=results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0)
