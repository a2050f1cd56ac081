"""The GEMM engine's regression: random GEMMs through its host port, run free to ``done``.

A transaction is one GEMM whose shape the unit's memories hold (:func:`sim.flows.gemm.plan_gemm`):
rows up to ``max_m``, reduction and output tiles biased to 1, a partial tile, and to shapes that
fill the activation, weight or result memory to the last word; int8 operands drawn by
:func:`sim.regress.block.int8_values`. The ``gemm_unit`` flow runs a chunk in one simulator start.
The scoreboard: the result equals :func:`golden.numerics.gemm_int8` and the unit's cycle counter
equals the cycle model's prediction.
"""

from __future__ import annotations

from golden.numerics import ceil_div, gemm_int8
from hdl.config import PRESETS, Config

from ..flows.gemm import plan_gemm
from ..machine.cycles import tile_load_cycles
from .block import EDGES, VALUE_MODES, Block, int8_values, pick_size, sample_operands, size_bin, varied

#: The configuration the regression runs on (the RTL tests' 4 x 4 build).
PRESET = "4x4"
#: Most reduction or output tiles of an ordinary (not memory-filling) transaction.
MAX_TILES = 6


def _params(simulator: str) -> dict:
    return PRESETS[PRESET].as_dict()


def vary(params, settings) -> dict:
    """The GEMM engine's params with ``settings`` applied (``--set``)."""
    return varied(Config.from_dict(params), settings).as_dict()


def _shape(rng, c: Config) -> tuple[int, int, int, str]:
    R, C = c.array_rows, c.array_cols
    kind = rng.choices(["small", "fill_acts", "fill_weights", "fill_results"], [0.85, 0.05, 0.05, 0.05])[0]
    m = pick_size(rng, 1, c.max_m)
    if kind == "small":
        kt, nt = pick_size(rng, 1, MAX_TILES), pick_size(rng, 1, MAX_TILES)
    elif kind == "fill_acts":     # m * kt == act_words (or as close as max_k allows)
        kt = min(c.act_words // m, c.max_k // R, c.weight_words // R)
        nt = pick_size(rng, 1, 2)
    elif kind == "fill_weights":  # kt * nt * R == weight_words
        kt = pick_size(rng, 1, 4)
        nt = c.weight_words // (kt * R)
        m = min(m, c.act_words // kt)
    else:                         # m * nt == result_words
        kt = 1
        nt = c.result_words // m
    nt = min(nt, c.result_words // m, c.weight_words // (kt * R))
    k = kt * R - (rng.randrange(R) if rng.random() < 0.5 else 0)
    n = nt * C - (rng.randrange(C) if rng.random() < 0.5 else 0)
    return m, k, n, kind


def generate(rng, params) -> dict:
    c = Config.from_dict(params)
    m, k, n, kind = _shape(rng, c)
    plan_gemm(c, m, k, n)   # the generator only makes shapes the unit holds
    amode, a = int8_values(rng, (m, k))
    wmode, w = int8_values(rng, (k, n))
    return {"m": m, "k": k, "n": n, "a": a.tolist(), "w": w.tolist(), "amode": amode, "wmode": wmode,
            "kind": kind}


def jobs(params, txns) -> list:
    cases = [{k: t[k] for k in ("m", "k", "n", "a", "w")} for _, t in txns]
    return [({"config": params, "cases": cases}, list(range(len(txns))))]


def results(result, txns) -> list:
    return result["cases"]


def observe(params, txn, raw):
    return {"out": raw["out"], "cycles": raw["cycles"]}


def expect(params, txn):
    plan = plan_gemm(Config.from_dict(params), txn["m"], txn["k"], txn["n"])
    return {"out": gemm_int8(txn["a"], txn["w"]).tolist(), "cycles": plan.predicted_cycles}


def points(params) -> dict:
    return {
        "m": ["min", "mid", "max"],
        "k_tiles": ["1", "2", "3-6", ">6"],
        "n_tiles": ["1", "2", "3-6", ">6"],
        "m_x_k_tiles": [f"{a}/{b}" for a in ("min", "mid", "max") for b in ("1", "2", "3-6", ">6")],
        "k_partial": ["whole", "partial"],
        "n_partial": ["whole", "partial"],
        "memory_full": ["acts", "weights", "results"],
        "weight_vs_rows": ["weights_longer", "equal", "rows_longer"],
        "a_mode": list(VALUE_MODES),
        "w_mode": list(VALUE_MODES),
        "a_edges": [str(v) for v in EDGES],
        "w_edges": [str(v) for v in EDGES],
    }


def _tiles_bin(t: int) -> str:
    return str(t) if t <= 2 else "3-6" if t <= MAX_TILES else f">{MAX_TILES}"


def sample(cov, params, txn, obs) -> None:
    c = Config.from_dict(params)
    R, C = c.array_rows, c.array_cols
    m, k, n = txn["m"], txn["k"], txn["n"]
    kt, nt = ceil_div(k, R), ceil_div(n, C)
    cov.hit("m", size_bin(m, 1, c.max_m))
    cov.hit("k_tiles", _tiles_bin(kt))
    cov.hit("n_tiles", _tiles_bin(nt))
    cov.hit("m_x_k_tiles", f"{size_bin(m, 1, c.max_m)}/{_tiles_bin(kt)}")
    cov.hit("k_partial", "partial" if k % R else "whole")
    cov.hit("n_partial", "partial" if n % C else "whole")
    for name, used, have in (("acts", m * kt, c.act_words), ("weights", kt * nt * R, c.weight_words),
                             ("results", m * nt, c.result_words)):
        if used == have:
            cov.hit("memory_full", name)
    # Which of a tile's weight load (R/G cycles) and its activation rows (M) sets the pace.
    load = tile_load_cycles(c)
    cov.hit("weight_vs_rows", "weights_longer" if load > m else "equal" if load == m else "rows_longer")
    sample_operands(cov, txn)



BLOCK = Block(name="gemm", design="gemm_unit", flow="gemm_unit", params=_params, generate=generate, jobs=jobs,
              results=results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0, vary=vary)
