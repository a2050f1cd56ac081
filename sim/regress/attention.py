"""The attention unit's regression: random decode-attention calls through its q, K, V and out streams.

A transaction is one call: heads and KV heads (multi-head, grouped-query and multi-query shapes up
to ``max_heads``), a KV length biased to 1, 2, ``max_context`` - 1 and ``max_context``; q, K, V
drawn by :func:`sim.regress.block.int8_values` or shaped to the unit's hard cases (every score
equal, one dominant score, scores rising at every position); requantization constants from
random scales or at their extremes (saturating, vanishing); its own traffic pattern and seed. The
``attention_unit`` flow runs a chunk in one simulator start. The scoreboard: the output equals
:func:`golden.attention.attention_decode` and the unit's counter equals the cycle model's
prediction (steady traffic) or the flow's own count and more (gaps and backpressure).
"""

from __future__ import annotations

import math

import numpy as np

from golden.attention import AttentionParams, attention_decode
from golden.numerics import MULT_MAX, SHIFT_MAX

from ..flows.attention import plan_attention
from .block import EDGES, TRAFFIC, VALUE_MODES, Block, edge_hits, int8_values, pick_size

#: The unit per simulator (the RTL tests' builds): the demo model's attention on Verilator.
UNIT_FOR = {"verilator": {"head_dim": 16, "max_context": 128, "max_heads": 4},
            "icarus": {"head_dim": 8, "max_context": 16, "max_heads": 4},
            "amaranth": {"head_dim": 8, "max_context": 16, "max_heads": 4}}
#: Data patterns besides the value modes.
SHAPED = ("equal_scores", "dominant", "rising")
PARAM_KINDS = ("scaled", "saturating", "vanishing", "random")


def _params(simulator: str) -> dict:
    return dict(UNIT_FOR.get(simulator, UNIT_FOR["amaranth"]))


def _attention_params(rng, head_dim: int, kind: str) -> AttentionParams:
    if kind == "saturating":
        return AttentionParams(score_mult=MULT_MAX, score_shift=0, out_mult=MULT_MAX, out_shift=0)
    if kind == "vanishing":
        return AttentionParams(score_mult=1, score_shift=SHIFT_MAX, out_mult=1, out_shift=SHIFT_MAX)
    if kind == "random":
        return AttentionParams(score_mult=rng.randint(0, MULT_MAX), score_shift=rng.randint(0, SHIFT_MAX),
                               out_mult=rng.randint(0, MULT_MAX), out_shift=rng.randint(0, SHIFT_MAX))
    logit_std = rng.choice([1.0, 4.0, 16.0, 64.0])
    qk = math.sqrt(logit_std / (74.0 * 74.0))
    return AttentionParams.from_scales(q_scale=qk, k_scale=qk * rng.uniform(0.7, 1.4), v_scale=0.05,
                                       out_scale=0.05 * rng.uniform(0.3, 1.2), head_dim=head_dim)


def generate(rng, unit) -> dict:
    D, T, H = unit["head_dim"], unit["max_context"], unit["max_heads"]
    n_kv = rng.randint(1, H)
    n_heads = n_kv * rng.randint(1, H // n_kv)
    kv_len = pick_size(rng, 1, T)
    if rng.random() < 0.1:
        kv_len = 2
    data = rng.choice(VALUE_MODES + SHAPED)
    if data in SHAPED:
        _, q = int8_values(rng, (n_heads, D), "uniform")
        _, k = int8_values(rng, (kv_len, n_kv, D), "uniform")
        _, v = int8_values(rng, (kv_len, n_kv, D), "uniform")
        if data == "equal_scores":
            k[:] = k[0]
        elif data == "dominant":
            where = rng.randrange(kv_len)
            q[:] = np.where(q[0] >= 0, 127, -128)
            k[:] = k % 9 - 4
            k[where] = np.where(q[0] > 0, 127, -128)
        else:
            q[:] = 127
            k[:] = (np.arange(kv_len)[:, None, None] * 255 // max(1, kv_len - 1) - 128).clip(-128, 127)
    else:
        _, q = int8_values(rng, (n_heads, D), data)
        _, k = int8_values(rng, (kv_len, n_kv, D), data if rng.random() < 0.5 else None)
        _, v = int8_values(rng, (kv_len, n_kv, D), data if rng.random() < 0.5 else None)
    kind = rng.choices(PARAM_KINDS, [0.7, 0.1, 0.1, 0.1])[0]
    params = _attention_params(rng, D, kind)
    return {"q": q.tolist(), "k": k.tolist(), "v": v.tolist(), "params": vars(params), "data": data,
            "param_kind": kind, "traffic": rng.choice(list(TRAFFIC))}


def jobs(unit, txns) -> list:
    cases = []
    for s, t in txns:
        gaps, stall = TRAFFIC[t["traffic"]]
        cases.append({"q": t["q"], "k": t["k"], "v": t["v"], "params": t["params"], "seed": s, "gaps": gaps,
                      "stall": stall})
    return [({"unit": unit, "cases": cases}, list(range(len(txns))))]


def results(result, txns) -> list:
    return result["cases"]


def _shape(t):
    return len(t["q"]), len(t["k"][0]), len(t["k"])


def observe(unit, txn, raw):
    n_heads, n_kv, kv_len = _shape(txn)
    predicted = plan_attention(unit, n_heads=n_heads, n_kv_heads=n_kv, kv_len=kv_len).predicted_cycles
    if txn["traffic"] == "steady":
        ok = raw["cycles"] == raw["edges"] == predicted
    else:
        ok = raw["cycles"] == raw["edges"] >= predicted
    return {"out": raw["out"],
            "timing": "ok" if ok else f"cycles {raw['cycles']}, edges {raw['edges']}, predicted {predicted}"}


def expect(unit, txn):
    out = attention_decode(np.array(txn["q"]), np.array(txn["k"]), np.array(txn["v"]),
                           AttentionParams(**txn["params"]), max_context=unit["max_context"])
    return {"out": out.tolist(), "timing": "ok"}


def _kv_bin(kv_len: int, T: int) -> str:
    return {1: "1", 2: "2", T - 1: "max-1", T: "max"}.get(kv_len, "mid")


def points(unit) -> dict:
    H = unit["max_heads"]
    return {
        "heads": [str(h) for h in range(1, H + 1)],
        "kind": ["mha", "gqa", "mqa"],
        "kv_len": ["1", "2", "mid", "max-1", "max"],
        "kind_x_kv_len": [f"{k}/{b}" for k in ("mha", "gqa", "mqa") for b in ("1", "2", "mid", "max-1", "max")],
        "data": list(VALUE_MODES + SHAPED),
        "params": list(PARAM_KINDS),
        "int8_edges": [str(v) for v in EDGES],
        "out_saturated": ["127", "-128"],
        "traffic": list(TRAFFIC),
        "traffic_x_kind": [f"{t}/{k}" for t in TRAFFIC for k in ("mha", "gqa", "mqa")],
    }


def sample(cov, unit, txn, obs) -> None:
    n_heads, n_kv, kv_len = _shape(txn)
    kind = "mqa" if n_kv == 1 and n_heads > 1 else "mha" if n_kv == n_heads else "gqa"
    cov.hit("heads", str(n_heads))
    cov.hit("kind", kind)
    kb = _kv_bin(kv_len, unit["max_context"])
    cov.hit("kv_len", kb)
    cov.hit("kind_x_kv_len", f"{kind}/{kb}")
    cov.hit("data", txn["data"])
    cov.hit("params", txn["param_kind"])
    for key in ("q", "k", "v"):
        for v in edge_hits(txn[key]):
            cov.hit("int8_edges", v)
    for v in edge_hits(obs["out"]):
        if v != "0":
            cov.hit("out_saturated", v)
    cov.hit("traffic", txn["traffic"])
    cov.hit("traffic_x_kind", f"{txn['traffic']}/{kind}")


BLOCK = Block(name="attention", design="attention_unit", flow="attention_unit", params=_params, generate=generate,
              jobs=jobs, results=results, observe=observe, expect=expect, sample=sample, points=points,
              closure=1.0)
