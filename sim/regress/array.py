"""The bare systolic array's regression: random GEMMs streamed through its valid/ready ports.

A transaction is one M x K x N GEMM (sizes biased to 1, one tile, a partial tile and three tiles;
int8 operands drawn by :func:`sim.regress.block.int8_values`) with its own traffic pattern (input
gaps, output backpressure) and seed; the ``array_batch`` flow runs a chunk in one simulator start.
The scoreboard: the host-accumulated result equals :func:`golden.numerics.gemm_int8`.
"""

from __future__ import annotations

from dataclasses import replace

from golden.numerics import ceil_div, gemm_int8
from hdl.config import PRESETS, Config

from ..machine.cycles import array_stream_cycles
from .block import EDGES, TRAFFIC, VALUE_MODES, Block, int8_values, pick_size, sample_operands, size_bin

#: The array the regression runs on: 4 x 4, two tile rows a weight beat (the RTL tests' build).
PARAMS = {"rows": 4, "cols": 4, "rows_per_beat": 2}
#: Most output rows of a GEMM (the bare array takes any number; the tile count bounds the run's length).
MAX_M = 9
#: Most tiles along K and N.
MAX_TILES = 3


def _params(simulator: str) -> dict:
    return dict(PARAMS)


def generate(rng, params) -> dict:
    R, C = params["rows"], params["cols"]
    m = pick_size(rng, 1, MAX_M)
    k = pick_size(rng, 1, MAX_TILES * R)
    n = pick_size(rng, 1, MAX_TILES * C)
    amode, a = int8_values(rng, (m, k))
    wmode, w = int8_values(rng, (k, n))
    traffic = rng.choice(list(TRAFFIC))
    return {"m": m, "k": k, "n": n, "a": a.tolist(), "w": w.tolist(), "amode": amode, "wmode": wmode,
            "traffic": traffic}


def jobs(params, txns) -> list:
    cases = []
    for s, t in txns:
        gaps, stall = TRAFFIC[t["traffic"]]
        cases.append({"a": t["a"], "w": t["w"], "seed": s, "gaps": gaps, "stall": stall})
    return [({**params, "cases": cases}, list(range(len(txns))))]


def results(result, txns) -> list:
    return result["cases"]


def _config(params) -> Config:
    """A configuration with the array's shape (what :func:`array_stream_cycles` reads)."""
    return replace(PRESETS["4x4"], array_rows=params["rows"], array_cols=params["cols"],
                   weight_rows_per_cycle=params.get("rows_per_beat", 1))


def observe(params, txn, raw):
    """The output, and the pace: ``exact`` when a steady stream took the cycle model's count."""
    if txn["traffic"] != "steady":
        timing = "any"
    else:
        predicted = array_stream_cycles(_config(params), txn["m"], txn["k"], txn["n"])
        timing = "exact" if raw["cycles"] == predicted else f"{raw['cycles']} cycles, predicted {predicted}"
    return {"out": raw["out"], "timing": timing}


def expect(params, txn):
    return {"out": gemm_int8(txn["a"], txn["w"]).tolist(), "timing": "exact" if txn["traffic"] == "steady" else "any"}


def points(params) -> dict:
    return {
        "m": ["min", "mid", "max"],
        "k_tiles": [str(i) for i in range(1, MAX_TILES + 1)],
        "n_tiles": [str(i) for i in range(1, MAX_TILES + 1)],
        "k_partial": ["whole", "partial"],
        "n_partial": ["whole", "partial"],
        "a_mode": list(VALUE_MODES),
        "w_mode": list(VALUE_MODES),
        "a_edges": [str(v) for v in EDGES],
        "w_edges": [str(v) for v in EDGES],
        "traffic": list(TRAFFIC),
        "traffic_x_tiles": [f"{t}/{n}" for t in TRAFFIC for n in ("1", "many")],
        "out_extreme": ["max_product_sum", "min_product_sum"],
    }


def sample(cov, params, txn, obs) -> None:
    R, C = params["rows"], params["cols"]
    k, n = txn["k"], txn["n"]
    cov.hit("m", size_bin(txn["m"], 1, MAX_M))
    cov.hit("k_tiles", str(ceil_div(k, R)))
    cov.hit("n_tiles", str(ceil_div(n, C)))
    cov.hit("k_partial", "partial" if k % R else "whole")
    cov.hit("n_partial", "partial" if n % C else "whole")
    sample_operands(cov, txn)
    cov.hit("traffic", txn["traffic"])
    tiles = ceil_div(k, R) * ceil_div(n, C)
    cov.hit("traffic_x_tiles", f"{txn['traffic']}/{'1' if tiles == 1 else 'many'}")
    flat = [v for row in obs["out"] for v in row]
    if flat and max(flat) == 128 * 128 * k:
        cov.hit("out_extreme", "max_product_sum")
    if flat and min(flat) == -128 * 127 * k:
        cov.hit("out_extreme", "min_product_sum")


BLOCK = Block(name="array", design="array", flow="array_batch", params=_params, generate=generate, jobs=jobs,
              results=results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0)
