"""What a constrained-random regression of one block is made of, and the generators they share.

A :class:`Block` names the design and the host flow that drive it (:mod:`sim.engine.registry`), and
gives five functions: ``generate`` (one transaction from its own ``random.Random(seed)``: a
transaction never depends on the ones before it, so one seed replays it), ``jobs`` (a chunk of
transactions batched into simulator jobs: many transactions per simulator start), ``observed`` (a
job's flow result -> one observation per transaction), ``expect`` (the golden model's observation,
the scoreboard compares the two with equality) and ``sample`` (coverage of one checked
transaction). ``points`` are the cover points and their bins; ``closure`` is the least share of
bins a full regression must hit.

The shared generators bias values to the edges: int8 operands come from one of :data:`VALUE_MODES`
(uniform, the extremes -128/127/0 only, a mix, constant rows at an extreme, zeros); traffic is one
of :data:`TRAFFIC` (input gaps and output backpressure, as the chance of an idle cycle).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from golden.errors import InputError
from hdl.config import Config, chip_config

from ..design import parse_setting

__all__ = ["EDGES", "TRAFFIC", "VALUE_MODES", "Block", "by_model", "edge_hits", "int8_values", "pick_size",
           "sample_operands", "size_bin", "split_steps", "varied"]

#: The int8 values every block's operands are biased to.
EDGES = (-128, 127, 0)

#: Ways an int8 operand is drawn (:func:`int8_values`).
VALUE_MODES = ("uniform", "edges", "mixed", "min", "max", "zero")

#: Traffic patterns: name -> (chance of an idle input cycle, chance of output backpressure).
TRAFFIC = {"steady": (0.0, 0.0), "gaps": (0.3, 0.0), "stall": (0.0, 0.5), "both": (0.3, 0.3),
           "heavy": (0.7, 0.7)}


@dataclass(frozen=True)
class Block:
    """One block's regression (see the module's docstring)."""

    name: str
    design: str
    flow: str
    #: simulator -> the design's parameters (the same as the block's RTL tests, so builds are shared).
    params: Callable[[str], dict]
    #: (rng, params) -> one JSON-able transaction.
    generate: Callable[[random.Random, dict], dict]
    #: (params, [(seed, transaction), ...]) -> [(job, [index into the chunk, per case of the job])].
    jobs: Callable[[dict, list], list]
    #: (a job's flow result, the job's transactions) -> one raw result per transaction, in order.
    results: Callable[[dict, list], list]
    #: (params, transaction, raw result) -> the observation.
    observe: Callable[[dict, dict, object], object]
    #: (params, transaction) -> the golden observation.
    expect: Callable[[dict, dict], object]
    #: (coverage, params, transaction, observation) -> None.
    sample: Callable
    #: params -> {cover point: [bins]}.
    points: Callable[[dict], dict]
    #: Least share of bins a regression of :data:`sim.regress.run.FULL` transactions must hit.
    closure: float
    #: Transactions per chunk (default :data:`sim.regress.run.CHUNK`; more for a block whose jobs
    #: start slowly, e.g. the top level loads a model's images per job).
    chunk: int | None = None
    #: (params, settings) -> the params of the block's design with ``settings`` (``--set KEY=VALUE``
    #: [chip] keys, :func:`varied`) applied: another design point, another build; None: one design only.
    vary: Callable[[dict, tuple], dict] | None = None


#: The sizes a regression's transactions fill to the last word (a GEMM over the whole weight memory, a
#: sequence over the whole context), and the most ``--set`` may give each: a transaction's data grows
#: with them, so they are bounded before anything is generated or built.
SIZE_KEYS = ("weight_words", "act_words", "result_words", "param_words", "scratch_bytes", "kv_bytes",
             "logits_words", "program_words", "max_context", "max_m")
MAX_SIZE = 1 << 16


def varied(config: Config, settings) -> Config:
    """``config`` with ``settings`` (``KEY=VALUE`` strings, as ``lockstep --set`` takes them; [chip] keys
    only) applied; InputError in one line naming a bad one (a value the RTL cannot build, or a size
    of :data:`SIZE_KEYS` above :data:`MAX_SIZE` and above the block's own design's)."""
    chip = config.as_dict()
    for item in settings:
        parts, value = parse_setting(item)
        if parts[0] != "chip":
            raise InputError(f"--set {item}: a regression varies the design's [chip] keys only")
        chip[parts[1]] = value
    out = chip_config(chip, source="--set")
    out.check_buildable()
    for key in SIZE_KEYS:
        value, limit = getattr(out, key), max(MAX_SIZE, getattr(config, key))
        if value > limit:
            raise InputError(f"--set {key}={value}: a regression fills its memories to the last word, so each "
                             f"size is at most {limit:,}")
    return out


def pick_size(rng: random.Random, low: int, high: int) -> int:
    """A size in [low, high], biased to both ends and their neighbours (half the draws)."""
    if high <= low:
        return low
    r = rng.random()
    if r < 0.15:
        return low
    if r < 0.3:
        return high
    if r < 0.4:
        return min(high, low + 1)
    if r < 0.5:
        return max(low, high - 1)
    return rng.randint(low, high)


def size_bin(value: int, low: int, high: int) -> str:
    """``min``, ``max`` or ``mid`` of a size drawn by :func:`pick_size`."""
    return "min" if value == low else "max" if value == high else "mid"


def int8_values(rng: random.Random, shape, mode: str | None = None) -> tuple[str, np.ndarray]:
    """``(mode, values)``: an int8 array of ``shape`` drawn the way ``mode`` says (random if None)."""
    mode = mode or rng.choice(VALUE_MODES)
    g = np.random.default_rng(rng.getrandbits(64))
    if mode == "uniform":
        x = g.integers(-128, 128, shape)
    elif mode == "edges":
        x = g.choice(np.array(EDGES), shape)
    elif mode == "mixed":
        x = np.where(g.random(shape) < 0.3, g.choice(np.array(EDGES), shape), g.integers(-128, 128, shape))
    else:
        x = np.full(shape, {"min": -128, "max": 127, "zero": 0}[mode])
    return mode, x.astype(np.int64)


def edge_hits(values) -> list[str]:
    """The edge values (as bin names) present in ``values``."""
    arr = np.asarray(values)
    return [str(v) for v in EDGES if arr.size and bool((arr == v).any())]


def sample_operands(cov, txn) -> None:
    """Cover the value modes (points ``a_mode``, ``w_mode``) and edge values (``a_edges``, ``w_edges``)
    of a GEMM transaction's operands ``a`` and ``w``."""
    cov.hit("a_mode", txn["amode"])
    cov.hit("w_mode", txn["wmode"])
    for v in edge_hits(txn["a"]):
        cov.hit("a_edges", v)
    for v in edge_hits(txn["w"]):
        cov.hit("w_edges", v)


def by_model(models, txns: list) -> list:
    """``[(model, [index into the chunk, ...]), ...]``: the transactions of a chunk (``(seed, txn)``
    pairs, each naming its ``txn["model"]``, an index of ``models``) grouped by model, in model order:
    one simulator job per model, its images loaded once."""
    out = []
    for index, compiled in enumerate(models):
        idx = [i for i, (_, t) in enumerate(txns) if t["model"] == index]
        if idx:
            out.append((compiled, idx))
    return out


def split_steps(items: list, txns: list) -> list:
    """``items`` (a job's results, one per step) cut into one list per transaction (``len(txn["steps"])`` each)."""
    out = []
    for t in txns:
        out.append(items[:len(t["steps"])])
        items = items[len(t["steps"]):]
    return out
