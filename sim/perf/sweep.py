"""Design-space sweeps: a grid or a random sample of design points, evaluated by the cycle model,
stored in SQLite so a sweep killed at any moment resumes without losing or duplicating a row.

A spec is a TOML file::

    kind = "gemm"          # what a point is: "gemm" (an M x K x N GEMM on an R x C array) or
                           # "decode" (one decode step of a built-in model: sim.perf.model, tokens/s)
    mode = "grid"          # "grid": every combination; "random": `samples` points drawn with `seed`
    samples = 100
    seed = 0
    [params]               # each parameter: a list of values (grid or random choice),
    array_rows = [4, 8, 16]    # or {low = .., high = ..} (random mode: uniform integers)
    array_cols = [4, 8, 16]
    m = [1, 8]
    k = [256, 1024]
    n = [256, 1024]
    clock_hz = [100000000]
    weight_rows_per_cycle = [1, 2]   # optional (gemm): rows of a weight tile loaded a cycle (hdl.config)
    [rtl]                  # optional: confirm the predicted cycles on the RTL for small points
    simulator = "amaranth"
    max_cycles = 2000
    [fpga]                 # optional (gemm only): FPGA resources after Yosys synthesis
    family = "ecp5"        # "ecp5" or "ice40"

With ``[fpga]`` every point's GEMM engine (:class:`hdl.gemm.GemmUnit` for the point's smallest
configuration, no UART link) is synthesized by Yosys (:func:`sim.fpga.build.synthesis_resources`, no
place and route) and its metrics gain ``lut``, ``ff``, ``dsp``, ``bram`` and ``fpga_family``
(all None without ``[fpga]``). Synthesis results are cached by design and tool version, so a
resumed sweep does not synthesize again; a Yosys failure stops the sweep with one line naming the
point. ``[fpga]`` does not change a point's key, but it is part of the spec: a database made
without it refuses the spec with it; run that into a new database. Arrays larger than
``hdl.config.MAX_BUILD_ARRAY`` are refused.

A decode point's parameters: array_rows, array_cols, vector_lanes (default 4), clock_hz,
weight_bytes_per_cycle (default: the full port, C), weight_memory_bytes (default: unlimited),
model (a built-in model name, default "gpt2"), context (default: the model's default), batch (1);
or preset (a hardware preset or TOML file) with any of those and weight_bytes, chips,
tensor_parallel, link_bandwidth, link_latency_ns, tp_link_bandwidth, tp_link_latency_ns replacing
its keys (docs/performance.md, "Decode sweeps"). Points whose model does not fit their memory are
left out (``SweepSpec.skipped``); a model that fits no point is an error.

Every point has a key (a hash of its kind and parameters). Rows are written with
``INSERT OR IGNORE`` in WAL mode, one transaction per finished point, by the one process that owns
the database; evaluation runs in a local process pool (at most :data:`WORKERS_PER_CORE` workers a
core) or on a Dask cluster.

Limits (docs/performance.md, "Sweep sizes and results databases"): a spec has at most
:data:`MAX_POINTS` points, counted before any is built; every integer parameter has bounds
(:func:`_param_limits`, the hardware ones from :data:`sim.perf.model.HARDWARE_LIMITS`). A results
database records its format, schema, kind and spec digest (:attr:`SweepSpec.digest`); a sweep
refuses, before writing a byte, any file that is not a results database of its own spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from golden.errors import InputError
from golden.numerics import ceil_div
from hdl.config import Config

from ..engine.runner import run
from ..engine.toolchain import SIMULATORS, ToolchainError
from ..fpga.build import SYNTH_FAMILIES, BuildError, synthesis_resources
from ..machine.cycles import gemm_cycles, gemm_lower_bound
from .model import HARDWARE_LIMITS as H
from .model import (
    MAX_BATCH,
    MAX_CONTEXT,
    MODELS,
    Hardware,
    HardwareError,
    MemoryLevel,
    check_workload,
    default_context,
    estimate,
    hardware_data,
    hardware_from_dict,
    place,
    read_toml,
    resolve_model,
    show_limit,
    show_number,
)

__all__ = ["KINDS", "MAX_POINTS", "SweepSpec", "SweepError", "check_workers", "evaluate_point", "load_spec",
           "max_workers", "open_db", "read_rows", "run_sweep", "sram_bytes", "sweep_table"]


class SweepError(InputError):
    """A bad sweep spec or database; the message names the file and the problem."""


# --- kinds of design point ----------------------------------------------------------------------

def _gemm_config(p: dict):
    """The smallest configuration that holds the point's GEMM (memories sized to fit), with the point's
    ``weight_rows_per_cycle`` (G, default 1; Config refuses one that does not divide ``array_rows``)."""
    R, C, m, k, n = p["array_rows"], p["array_cols"], p["m"], p["k"], p["n"]
    G = p.get("weight_rows_per_cycle") or 1
    kt, nt = ceil_div(k, R), ceil_div(n, C)
    # G banks of equal depth: the weight words (whole tiles of R rows) rounded up to a multiple of G.
    words = ceil_div(max(R, kt * nt * R), G) * G
    return Config(array_rows=R, array_cols=C, weight_words=words, weight_rows_per_cycle=G,
                  act_words=max(m * kt, m), result_words=max(m * nt, m), max_m=m,
                  clock_hz=p.get("clock_hz", 100_000_000))


def gemm_sram_bytes(config: Config) -> int:
    """Bytes of on-chip memory of a GEMM point's configuration: its weight memory (int8 words of
    ``array_cols``), activation memory (int8 words of ``array_rows``) and result memory (int32
    words of ``array_cols``), each the smallest that holds the point's GEMM (:func:`_gemm_config`)."""
    return (config.weight_words * config.array_cols + config.act_words * config.array_rows
            + config.result_words * config.array_cols * 4)


def decode_sram_bytes(hw: Hardware) -> float | None:
    """Bytes of on-chip weight memory of a decode point, all chips: the chip's own weight memory (a
    point's ``weight_memory_bytes``, or a design's ``[chip]`` weight memory) and any memory level named
    SRAM (Groq's, Cerebras's); DRAM, SDRAM and HBM levels are off chip and not counted. None when the
    on-chip weight memory has no capacity (a point without ``weight_memory_bytes``: unbounded)."""
    on_chip = [m.capacity_bytes for m in hw.memories if m.name == "weight memory" or "sram" in m.name.lower()]
    if any(math.isinf(c) for c in on_chip):
        return None
    return hw.chips * sum(on_chip)


def sram_bytes(kind: str, params: dict) -> float | None:
    """A point's on-chip memory in bytes, from its parameters alone (for rows stored before the
    ``sram_bytes`` metric existed): :func:`gemm_sram_bytes` or :func:`decode_sram_bytes`."""
    if kind == "gemm":
        return gemm_sram_bytes(_gemm_config(params))
    return decode_sram_bytes(_decode_hardware({"clock_hz": 100_000_000, **params}))


def _eval_gemm(p: dict, rtl: dict | None) -> dict:
    config = _gemm_config(p)
    R, C, m, k, n = p["array_rows"], p["array_cols"], p["m"], p["k"], p["n"]
    cycles = gemm_cycles(config, m, k, n).total
    bound = gemm_lower_bound(config, m, k, n)
    seconds = cycles / config.clock_hz
    macs = m * k * n
    out = {
        "cycles": cycles, "lower_bound": bound, "efficiency": bound / cycles,
        "throughput": macs / seconds,                    # MAC/s achieved
        "peak": R * C * config.clock_hz,                 # MAC/s the array could do
        "weight_bandwidth": config.weight_port_bytes * config.clock_hz,  # bytes/s of the weight path (G * C)
        "intensity": macs / (k * n),                     # MACs per weight byte
        "area": R * C,                                   # processing elements
        "sram_bytes": gemm_sram_bytes(config),
        "rtl_cycles": None,
    }
    if rtl and cycles <= rtl.get("max_cycles", 2000):
        rng = np.random.default_rng(0)
        a = rng.integers(-128, 128, (m, k))
        w = rng.integers(-128, 128, (k, n))
        res = run(rtl.get("simulator", "amaranth"), "gemm_unit", config.as_dict(), "gemm_unit",
                  {"config": config.as_dict(), "cases": [{"m": m, "k": k, "n": n, "a": a.tolist(),
                                                          "w": w.tolist()}]})
        out["rtl_cycles"] = res["cases"][0]["cycles"]
    return out


#: Decode parameters that change a preset's TOML tables: (table, key); "memory" is the first level.
_PRESET_KEYS = {"array_rows": ("chip", "array_rows"), "array_cols": ("chip", "array_cols"),
                "vector_lanes": ("chip", "vector_lanes"), "clock_hz": ("chip", "clock_hz"),
                "weight_bytes": ("chip", "weight_bytes"), "weight_memory_bytes": ("memory", "capacity_bytes"),
                "chips": ("system", "chips"), "tensor_parallel": ("system", "tensor_parallel"),
                "link_bandwidth": ("link", "bandwidth_bytes_per_s"), "link_latency_ns": ("link", "latency_s"),
                "tp_link_bandwidth": ("tp_link", "bandwidth_bytes_per_s"),
                "tp_link_latency_ns": ("tp_link", "latency_s")}
#: Parameters a decode point has only when the spec names them (older specs keep their keys).
#: A GEMM point's parameters that are part of it only when the spec names them (so the points of a
#: spec without them keep the keys they had before the parameter existed).
_GEMM_NAMED_ONLY = {"weight_rows_per_cycle"}
_NAMED_ONLY = {"preset", "weight_bytes", "chips", "tensor_parallel", "link_bandwidth", "link_latency_ns",
               "tp_link_bandwidth", "tp_link_latency_ns"}


def _decode_hardware(p: dict):
    """The hardware of a decode point. Without ``preset``: one chip whose one weight memory
    delivers ``weight_bytes_per_cycle`` bytes a cycle (the full port by default). With it: that
    preset (or TOML file) with the point's parameters replacing its keys (``weight_bytes_per_cycle``
    sets the first memory level's bandwidth to that many bytes a cycle at the point's clock)."""
    if not p.get("preset"):
        R, C, clock = p["array_rows"], p["array_cols"], p["clock_hz"]
        wbpc = p.get("weight_bytes_per_cycle") or C
        cap = p.get("weight_memory_bytes") or float("inf")
        return Hardware(name="sweep point", description="", array_rows=R, array_cols=C,
                        vector_lanes=p.get("vector_lanes", 4), clock_hz=clock, weight_bytes=1,
                        memories=(MemoryLevel("weight memory", cap, wbpc * clock),))
    data, name = hardware_data(p["preset"])
    for param, (table, key) in _PRESET_KEYS.items():
        if p.get(param) is None or table == "memory":
            continue
        value = p[param] * 1e-9 if param.endswith("_ns") else p[param]
        data.setdefault(table, {})[key] = value
    hw = hardware_from_dict(data, name=name, source=f"preset {p['preset']} with the point's parameters")
    # The first memory level (a design's own weight memory, or its first [[memory]]) takes the point's
    # capacity and bandwidth, whichever way the design describes it.
    first = hw.memories[0]
    if p.get("weight_memory_bytes") is not None:
        first = replace(first, capacity_bytes=p["weight_memory_bytes"])
    if p.get("weight_bytes_per_cycle") is not None:
        first = replace(first, bandwidth_bytes_per_s=p["weight_bytes_per_cycle"] * hw.clock_hz)
    return replace(hw, memories=(first, *hw.memories[1:]))


def _eval_decode(p: dict, rtl: dict | None) -> dict:
    hw = _decode_hardware(p)
    e = estimate(p.get("model", "gpt2"), hw, context=p.get("context"), batch=p.get("batch", 1))
    R, C, clock, T = hw.array_rows, hw.array_cols, hw.clock_hz, hw.tensor_parallel
    # One stage's T chips work at once (the stages take turns on a token): MACs, peak and weight
    # bandwidth of the step are T chips'; the estimate's bounds are one chip's.
    macs = e.bounds["compute"] * R * C * clock * T        # the array's MACs of the step (padded to tiles)
    return {
        "cycles": e.cycles, "lower_bound": e.lower_bound * clock, "efficiency": e.efficiency,
        "tokens_per_s": e.tokens_per_s, "throughput": e.tokens_per_s,   # the plots' y axis: tokens/s
        "mac_per_s": macs / e.step_seconds,
        "peak": R * C * clock * T,
        "weight_bandwidth": e.port_elements_per_cycle * clock * hw.weight_bytes * T,
        "intensity": macs / (e.weight_bytes_per_token * T),
        "area": hw.chips * (R * C + hw.vector_lanes),   # PEs plus vector lanes, all chips (a proxy)
        "sram_bytes": decode_sram_bytes(hw),
        "context": e.context, "binding": e.binding, "rtl_cycles": None,
    }


@dataclass(frozen=True)
class Kind:
    params: dict              # name -> (type, required, default)
    evaluate: Callable[[dict, dict | None], dict]


KINDS = {
    "gemm": Kind(params={"array_rows": (int, True, None), "array_cols": (int, True, None), "m": (int, True, None),
                         "k": (int, True, None), "n": (int, True, None), "clock_hz": (int, False, 100_000_000),
                         "weight_rows_per_cycle": (int, False, None)},
                 evaluate=_eval_gemm),
    "decode": Kind(params={"array_rows": (int, True, None), "array_cols": (int, True, None),
                           "vector_lanes": (int, False, 4), "clock_hz": (int, False, 100_000_000),
                           "weight_bytes_per_cycle": (int, False, None), "weight_memory_bytes": (int, False, None),
                           "model": (str, False, "gpt2"), "context": (int, False, None), "batch": (int, False, 1),
                           "preset": (str, False, None), "weight_bytes": (int, False, None),
                           "chips": (int, False, None), "tensor_parallel": (int, False, None),
                           "link_bandwidth": (int, False, None), "link_latency_ns": (int, False, None),
                           "tp_link_bandwidth": (int, False, None), "tp_link_latency_ns": (int, False, None)},
                   evaluate=_eval_decode),
}


def point_key(kind: str, params: dict) -> str:
    text = json.dumps({"kind": kind, "params": params}, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


#: The metrics an ``[fpga]`` table fills (None without one).
FPGA_COLUMNS = ("lut", "ff", "dsp", "bram")


def _fpga_metrics(params: dict, fpga: dict | None) -> dict:
    """The point's FPGA resources after Yosys synthesis (:func:`sim.fpga.build.synthesis_resources`);
    SweepError naming the point when synthesis fails."""
    if not fpga:
        return {**dict.fromkeys(FPGA_COLUMNS), "fpga_family": None}

    family = fpga["family"]
    try:
        res = synthesis_resources(_gemm_config(params), family)
    except (BuildError, ToolchainError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"point {params}: {family} synthesis failed: {first}") from None
    return {**{c: res[c] for c in FPGA_COLUMNS}, "fpga_family": family}


def evaluate_point(kind: str, params: dict, rtl: dict | None = None, fpga: dict | None = None) -> dict:
    """Evaluate one design point (a top-level function: it runs in worker processes); ``fpga``
    (the spec's ``[fpga]`` table) adds the resources Yosys synthesis reports."""
    t0 = time.perf_counter()
    metrics = KINDS[kind].evaluate(params, rtl)
    metrics.update(_fpga_metrics(params, fpga))
    metrics["eval_seconds"] = time.perf_counter() - t0
    for name, value in metrics.items():    # the last guard: every input is bounded, and JSON has no inf
        if isinstance(value, float) and not math.isfinite(value):
            raise SweepError(f"point {params}: metric {name} is {value} (not finite): a parameter is out of range")
    return metrics


# --- specs --------------------------------------------------------------------------------------

#: The most design points one spec may have (a grid's product of value counts, or a random
#: sample's size), counted before any point is built: every point is checked, held and queued in
#: memory (~1 kB each), and 100,000 decode points take minutes to evaluate on two cores.
MAX_POINTS = 100_000
#: The largest GEMM a gemm point may ask: rows M, and K and N (above every model's widths).
MAX_GEMM_M = 1 << 16
MAX_GEMM_DIM = 1 << 24


def _param_limits() -> dict:
    """``name: (least, most)`` of every integer sweep parameter (docs/performance.md): the hardware
    ones are :data:`sim.perf.model.HARDWARE_LIMITS` (a point is also checked as the hardware it makes)."""
    lat_ns = (0, int(H["latency_s"][1] * 1e9))
    return {"array_rows": H["array_rows"], "array_cols": H["array_cols"], "vector_lanes": H["vector_lanes"],
            "clock_hz": H["clock_hz"], "weight_rows_per_cycle": H["array_rows"],
            "m": (1, MAX_GEMM_M), "k": (1, MAX_GEMM_DIM), "n": (1, MAX_GEMM_DIM),
            "weight_bytes_per_cycle": (1, MAX_GEMM_DIM), "weight_memory_bytes": H["capacity_bytes"],
            "context": (1, MAX_CONTEXT), "batch": (1, MAX_BATCH), "chips": H["chips"],
            "tensor_parallel": H["tensor_parallel"], "link_bandwidth": H["bandwidth_bytes_per_s"],
            "tp_link_bandwidth": H["bandwidth_bytes_per_s"], "link_latency_ns": lat_ns, "tp_link_latency_ns": lat_ns}


def _check_value(source: str, name: str, v, limits: dict) -> None:
    if name not in limits:
        return
    least, most = limits[name]
    if v < least:
        at_least = "non-negative" if least == 0 else "positive" if least == 1 else f"at least {show_limit(least)}"
        raise SweepError(f"{source}: parameter {name} must be {at_least}, not {show_number(v)}")
    if v > most:
        raise SweepError(f"{source}: parameter {name} must be at most {show_limit(most)}, not {show_number(v)}")

@dataclass(frozen=True)
class SweepSpec:
    kind: str
    points: tuple[dict, ...]
    rtl: dict | None
    source: str
    fpga: dict | None = None      # the [fpga] table: {"family": ...}
    skipped: int = 0              # decode points left out: their model does not fit their hardware
    skip_reasons: tuple = ()      # the first reason for each model that lost points
    definition: str = ""          # the normalized spec (JSON): what its results database records

    @property
    def digest(self) -> str:
        """A hash of the normalized spec (kind, mode, every parameter's values with defaults filled
        in, samples and seed, [rtl], [fpga]; not the file's formatting): the spec a results
        database belongs to. A spec made without a definition hashes its kind and points."""
        text = self.definition or json.dumps({"kind": self.kind, "points": [point_key(self.kind, p)
                                                                            for p in self.points]})
        return hashlib.sha256(text.encode()).hexdigest()


def _integral(v):
    """1e8 as TOML writes it (a float) is the integer 100000000; 1.5 stays a float (and is refused)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _values(source: str, name: str, value, mode: str, typ, limits: dict):
    """The checked values of one parameter: a list, or a ``range`` (random mode's {low, high});
    every value (a range's ends) within ``limits``."""
    if typ is int:
        value = [_integral(v) for v in value] if isinstance(value, list) else (
            {k: _integral(v) for k, v in value.items()} if isinstance(value, dict) else _integral(value))
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{source}: parameter {name} has an empty list of values")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, typ):
                raise SweepError(f"{source}: parameter {name} must hold {typ.__name__} values, not {v!r}")
            if typ is int:
                _check_value(source, name, v, limits)
        return value
    if isinstance(value, dict):
        if mode != "random":
            raise SweepError(f"{source}: parameter {name} gives a range, which only mode = \"random\" can sample")
        unknown = set(value) - {"low", "high"}
        if unknown or "low" not in value or "high" not in value:
            raise SweepError(f"{source}: parameter {name} range must have exactly low and high, not {sorted(value)}")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise SweepError(f"{source}: parameter {name} range bounds must be integers, not {low!r}..{high!r}")
        if low > high:
            raise SweepError(f"{source}: parameter {name} range is empty: low {low} > high {high}")
        for v in (low, high):
            _check_value(source, name, v, limits)
        return range(low, high + 1)
    if isinstance(value, bool) or not isinstance(value, typ):
        raise SweepError(f"{source}: parameter {name} must be a list or a range, not {value!r}")
    if typ is int:
        _check_value(source, name, value, limits)
    return [value]


def parse_spec(data: dict, source: str = "spec") -> SweepSpec:
    known_top = {"kind", "mode", "samples", "seed", "params", "rtl", "fpga"}
    unknown = sorted(set(data) - known_top)
    if unknown:
        raise SweepError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known_top))})")
    kind = data.get("kind", "gemm")
    if kind not in KINDS:
        raise SweepError(f"{source}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    fpga = _parse_fpga(data.get("fpga"), kind, source)
    mode = data.get("mode", "grid")
    if mode not in ("grid", "random"):
        raise SweepError(f"{source}: mode must be 'grid' or 'random', not {mode!r}")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{source}: a [params] table with at least one parameter is required")
    spec_params = KINDS[kind].params
    for name in params:
        if name not in spec_params:
            raise SweepError(f"{source}: unknown parameter {name!r} for kind {kind} "
                             f"(known: {', '.join(spec_params)})")
    values = {}
    limits = _param_limits()
    on_preset = kind == "decode" and "preset" in params   # a preset supplies the hardware it is not told
    for name, (typ, required, default) in spec_params.items():
        if name in params:
            values[name] = _values(source, name, params[name], mode, typ, limits)
        elif name in (_GEMM_NAMED_ONLY if kind == "gemm" else
                      _NAMED_ONLY | (set(_PRESET_KEYS) if on_preset else set())):
            continue
        elif required:
            raise SweepError(f"{source}: parameter {name} is required for kind {kind}")
        else:
            values[name] = [default]
    names = list(values)
    space = math.prod(len(values[n]) for n in names)      # counted, not built (len of a range is O(1))
    samples = data.get("samples", 100)
    seed = data.get("seed", 0)
    if mode == "grid":
        if space > MAX_POINTS:
            raise SweepError(f"{source}: the grid has {space:,} design points, more than a sweep's "
                             f"{MAX_POINTS:,} (sample it with mode = \"random\", or split the spec)")
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values[n] for n in names))]
    else:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise SweepError(f"{source}: samples must be a positive integer, not {show_number(samples)}")
        if samples > MAX_POINTS:
            raise SweepError(f"{source}: samples {show_number(samples)} is more than a sweep's {MAX_POINTS:,} "
                             f"design points")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SweepError(f"{source}: seed must be an integer, not {seed!r}")
        rng = random.Random(seed)
        if samples > space:
            raise SweepError(f"{source}: samples {samples} exceeds the {space} distinct points the parameters "
                             f"allow (use mode = \"grid\" for all of them)")
        seen, points = set(), []
        for _ in range(samples):
            p = {n: rng.choice(values[n]) if not isinstance(values[n], range)
                 else rng.randint(values[n].start, values[n].stop - 1) for n in names}
            k = point_key(kind, p)
            if k not in seen:
                seen.add(k)
                points.append(p)
    unfit: dict = {}        # model -> (points that do not fit, the first reason)
    kept = []
    for p in points:
        try:
            if kind == "gemm":
                _gemm_config(p)
            elif kind == "decode":
                _check_decode_point(p)
        except _DoesNotFit as exc:
            n, first = unfit.get(p["model"], (0, str(exc)))
            unfit[p["model"]] = (n + 1, first)
            continue
        except (TypeError, ValueError) as exc:
            raise SweepError(f"{source}: point {p} is not valid: {exc}") from None
        kept.append(p)
    for model, (n, first) in unfit.items():
        if not any(p["model"] == model for p in kept):
            raise SweepError(f"{source}: {model} fits no design point of the spec ({n} tried; e.g. {first})")
    skipped = sum(n for n, _ in unfit.values())
    points = kept
    rtl = data.get("rtl")
    if rtl is not None:
        if not isinstance(rtl, dict) or set(rtl) - {"simulator", "max_cycles"}:
            raise SweepError(f"{source}: [rtl] takes simulator and max_cycles, not {rtl!r}")
        limit = rtl.get("max_cycles", 2000)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SweepError(f"{source}: rtl max_cycles must be a positive integer, not {limit!r}")
        if rtl.get("simulator", "amaranth") not in SIMULATORS:
            raise SweepError(f"{source}: rtl simulator must be amaranth, icarus or verilator, "
                             f"not {rtl.get('simulator')!r}")
        if kind != "gemm":
            raise SweepError(f"{source}: [rtl] confirms gemm points only: a decode point is a built-in model the "
                             f"RTL cannot hold (the decode accelerator's own regressions confirm the cycle model)")
    _check_fpga_points(fpga, points, source)
    normal = {"kind": kind, "mode": mode, "rtl": None if rtl is None else {
                  "simulator": rtl.get("simulator", "amaranth"), "max_cycles": rtl.get("max_cycles", 2000)},
              "fpga": fpga, "params": {n: {"low": v.start, "high": v.stop - 1} if isinstance(v, range) else v
                                       for n, v in values.items()}}
    if mode == "random":
        normal.update(samples=samples, seed=seed)
    return SweepSpec(kind=kind, points=tuple(points), rtl=rtl, source=source, fpga=fpga, skipped=skipped,
                     skip_reasons=tuple(first for _, first in unfit.values()),
                     definition=json.dumps(normal, sort_keys=True, allow_nan=False))


def _parse_fpga(fpga, kind: str, source: str) -> dict | None:
    """The checked ``[fpga]`` table, or None; SweepError naming the file and the bad value."""
    if fpga is None:
        return None
    if not isinstance(fpga, dict):
        raise SweepError(f"{source}: fpga must be a table ([fpga] with family = ...), not {fpga!r}")
    unknown = sorted(set(fpga) - {"family"})
    if unknown:
        raise SweepError(f"{source}: unknown key {unknown[0]!r} in [fpga] (known: family)")
    family = fpga.get("family")
    if family not in SYNTH_FAMILIES:
        raise SweepError(f"{source}: [fpga] family must be one of {', '.join(SYNTH_FAMILIES)}, not {family!r}")
    if kind != "gemm":
        raise SweepError(f"{source}: [fpga] synthesizes gemm points only: a decode point is a built-in model "
                         f"estimate, not one RTL design (lockstep build --design decode builds the decode accelerator)")
    return {"family": family}


def _check_fpga_points(fpga: dict | None, points, source: str) -> None:
    """SweepError naming the first point whose GEMM engine cannot be built (so cannot be synthesized)."""
    if not fpga:
        return
    for p in points:
        try:
            _gemm_config(p).check_buildable()
        except ValueError as exc:
            raise SweepError(f"{source}: point {p} cannot be synthesized for [fpga]: {exc}") from None


class _DoesNotFit(ValueError):
    """A decode point whose model needs more memory than its hardware has (left out, not an error)."""


def _check_decode_point(p: dict) -> None:
    """Return for a point the model can evaluate; ValueError for a bad one (unknown model, context
    past the model's, hardware the model refuses), _DoesNotFit when the model's weights (and KV
    cache, where the memory holds it) exceed every memory level (sim.perf.model.place)."""
    if p["model"] not in MODELS:
        raise InputError(f"model must be a built-in model ({', '.join(MODELS)}), not {p['model']!r}")
    mc = resolve_model(p["model"])[1]
    check_workload(mc, context=p["context"] or default_context(mc), batch=p["batch"], name=p["model"])
    hw = _decode_hardware(p)
    hw.config(p["batch"])          # the array's own checks
    try:
        place(mc, hw, context=p["context"] or default_context(mc), batch=p["batch"], name=p["model"])
    except HardwareError as exc:
        if "pipeline stages" in str(exc):
            raise
        raise _DoesNotFit(str(exc)) from None


def load_spec(path, overrides: dict | None = None) -> SweepSpec:
    """The spec at ``path``; ``overrides`` (parameter -> one value, from the command line's ``--hw``
    and ``--set``) replace those parameters' values in every point (and so the spec's digest)."""
    path = Path(path)
    data = read_toml(path, "a sweep spec", SweepError)
    if overrides:
        if not isinstance(data.get("params"), dict):
            raise SweepError(f"{path}: a [params] table with at least one parameter is required")
        data["params"].update({name: [value] for name, value in overrides.items()})
        return parse_spec(data, source=f"{path} (with --hw/--set)")
    return parse_spec(data, source=str(path))


# --- the database -------------------------------------------------------------------------------

#: What a results database records in its ``lockstep`` table: the format, the schema version, the
#: kind of its points and the digest (and definition) of the spec that made it. A sweep writes only
#: into a database of its own spec (or a new one); anything else is refused before it is touched.
FORMAT = "lockstep sweep results"
SCHEMA_VERSION = 1
COLUMNS = ("key", "kind", "params", "metrics", "cycles", "throughput", "area", "efficiency", "rtl_cycles")
SCHEMA = """
CREATE TABLE points (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    cycles INTEGER,
    throughput REAL,
    area REAL,
    efficiency REAL,
    rtl_cycles INTEGER
);
CREATE TABLE lockstep (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Seconds to wait for another process's write lock when a sweep opens its database (then one
#: line: locked), and for each point's write once it runs (a reader, `lockstep plot`, never blocks one).
LOCK_WAIT = 2.0
WRITE_WAIT = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_error(path: Path, exc: sqlite3.Error, doing: str) -> SweepError:
    """One line for an SQLite error: locked, read-only, not a database, or what SQLite said."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return SweepError(f"{path}: the results database is locked by another process (waited {LOCK_WAIT:g} s "
                          f"to {doing}); let it finish, or use another --db")
    if "readonly" in text or "read-only" in text:
        return SweepError(f"{path}: the results database is read-only: cannot {doing} (check its permissions, "
                          f"or use another --db)")
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        return SweepError(f"{path}: not a Lockstep results database ({text})")
    return SweepError(f"{path}: cannot {doing} ({text})")


def _read_meta(path: Path, db: sqlite3.Connection) -> dict:
    """The ``lockstep`` table of a results database; SweepError in one line for a database that is
    not one (another program's SQLite file) or is in another schema."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "lockstep" not in tables:
        if "points" in tables and tuple(row[1] for row in db.execute("PRAGMA table_info(points)")) == COLUMNS:
            raise SweepError(f"{path}: a results database in an older schema (it records no spec, so its rows "
                             f"cannot be matched to one): use another --db")
        raise SweepError(f"{path}: not a Lockstep results database (an SQLite file without Lockstep's records)")
    try:
        meta = dict(db.execute("SELECT name, value FROM lockstep"))
    except sqlite3.Error:
        meta = {}
    if meta.get("format") != FORMAT:
        raise SweepError(f"{path}: not a Lockstep results database (its lockstep table is not one)")
    columns = tuple(row[1] for row in db.execute("PRAGMA table_info(points)"))
    if meta.get("schema") != str(SCHEMA_VERSION) or columns != COLUMNS:
        raise SweepError(f"{path}: a results database in schema {meta.get('schema')!s}, not this Lockstep's "
                         f"{SCHEMA_VERSION}: use another --db")
    return meta


def _existing(path) -> dict | None:
    """The records of the results database at ``path``, read without writing a byte (a read-only,
    immutable connection, no journal-mode change); None when there is none yet (no file, or an
    empty one).
    SweepError in one line for a directory, a special file, a file that is not SQLite, another
    program's database, or one in another schema."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        raise SweepError(f"{path}: is a directory, not a results database")
    if not path.is_file():
        raise SweepError(f"{path}: not a regular file, not a results database")
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise SweepError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        return None                    # an empty file: a new database (sqlite3 makes one of it)
    if head != _SQLITE_MAGIC:
        raise SweepError(f"{path}: not a Lockstep results database (not an SQLite file)")
    # immutable: no lock taken, no -wal or -shm file made beside another program's database; a
    # results database's records are written once, when it is made, into the file itself. Should
    # that read fail (a sweep's checkpoint rewriting a page under it), read again with locks.
    for options in ("mode=ro&immutable=1", "mode=ro"):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True, timeout=LOCK_WAIT)
            try:
                return _read_meta(path, db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            error = exc
    raise _sqlite_error(path, error, "read it") from None


def open_db(path, spec: SweepSpec) -> sqlite3.Connection:
    """The results database of ``spec`` at ``path``, made if there is none, for writing points.
    Refused in one line, before anything is written (no table, no journal-mode change), when it is
    not a Lockstep results database, records another kind or another spec, is read-only, or another
    process holds its write lock for :data:`LOCK_WAIT` seconds."""
    path = Path(path)
    meta = _existing(path)
    if meta is not None:
        if meta.get("kind") != spec.kind:
            raise SweepError(f"{path}: holds {meta.get('kind')} points, and this spec's are {spec.kind}: "
                             f"use another --db")
        if meta.get("spec") != spec.digest:
            raise SweepError(f"{path}: holds the results of another spec (spec {str(meta.get('spec'))[:12]}, "
                             f"this one {spec.digest[:12]}): use another --db")
    doing = "write it"
    try:
        db = sqlite3.connect(str(path), timeout=LOCK_WAIT, isolation_level=None)
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc, "open it for writing") from None
    try:
        db.execute("BEGIN IMMEDIATE")     # the write lock, before a byte is written
        if meta is None:
            if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise SweepError(f"{path}: another program wrote it while the sweep opened it: use another --db")
            doing = "make it"
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany("INSERT INTO lockstep VALUES (?, ?)",
                           [("format", FORMAT), ("schema", str(SCHEMA_VERSION)), ("kind", spec.kind),
                            ("spec", spec.digest), ("definition", spec.definition)])
            db.execute("COMMIT")
        else:
            if _read_meta(path, db).get("spec") != spec.digest:
                raise SweepError(f"{path}: another sweep changed it while this one opened it: use another --db")
            # A write, rolled back: SQLite opens a read-only file read-only without a word and
            # refuses only the first write, which would otherwise be the first point's.
            db.execute("UPDATE lockstep SET value = value WHERE name = 'spec'")
            db.execute("ROLLBACK")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT * 1000)}")
    except sqlite3.Error as exc:
        db.close()
        raise _sqlite_error(path, exc, doing) from None
    except BaseException:
        db.close()
        raise
    return db


def _store(db: sqlite3.Connection, kind: str, key: str, params: dict, metrics: dict) -> None:
    """One point, one transaction (a kill loses at most the point in flight); JSON that has no
    NaN or Infinity (ValueError if a metric were one)."""
    row = (key, kind, json.dumps(params, sort_keys=True, allow_nan=False),
           json.dumps(metrics, sort_keys=True, allow_nan=False), metrics.get("cycles"), metrics.get("throughput"),
           metrics.get("area"), metrics.get("efficiency"), metrics.get("rtl_cycles"))
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def read_rows(path) -> list[dict]:
    """Every stored point as ``{"key", "kind", "params", "metrics"}``, ordered by key, read-only;
    SweepError in one line when ``path`` is missing or not a Lockstep results database."""
    path = Path(path)
    if not path.exists():
        raise SweepError(f"{path}: no such results database")
    if _existing(path) is None:
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_WAIT)
        try:
            rows = db.execute("SELECT key, kind, params, metrics FROM points ORDER BY key").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc, "read it") from None
    return [{"key": k, "kind": kind, "params": json.loads(p), "metrics": json.loads(m)} for k, kind, p, m in rows]


def sweep_table(path) -> tuple[list[str], list[dict]]:
    """The stored points as one flat table: ``(columns, rows)``, a row per point holding every
    parameter (the kind's in its own order, ``None`` where a point leaves one at its default), every
    metric and the point's ``key``. A metric named like a parameter (a decode point's ``context``,
    the one used where the parameter is left unset) is the column ``NAME_result``. Rows come in key
    order; SweepError as :func:`read_rows`."""
    points = read_rows(path)
    kind = KINDS.get(points[0]["kind"]) if points else None
    kind_order = {name: i for i, name in enumerate(kind.params if kind else ())}
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for r in points:
        params.update(dict.fromkeys(r["params"]))
        metrics.update(dict.fromkeys(r["metrics"]))
    params_order = sorted(params, key=lambda n: (kind_order.get(n, len(kind_order)), n))
    metric_column = {m: f"{m}_result" if m in params else m for m in metrics}
    columns = [*params_order, *metric_column.values(), "key"]
    rows = [{**{n: r["params"].get(n) for n in params_order},
             **{metric_column[m]: r["metrics"].get(m) for m in metrics}, "key": r["key"]} for r in points]
    return columns, rows


# --- running ------------------------------------------------------------------------------------

#: Local worker processes a sweep may ask for, per core: the points are pure computation, so more
#: workers than cores only share them (a few more hide the start-up of each); 100,000 would fork
#: thousands of processes before the machine refused.
WORKERS_PER_CORE = 4


def max_workers() -> int:
    return WORKERS_PER_CORE * (os.cpu_count() or 1)


def check_workers(workers: int | None) -> None:
    """SweepError naming ``--workers`` unless it is None (one per core) or 1..:func:`max_workers`."""
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepError(f"--workers must be a positive integer, not {workers!r}")
    if workers > max_workers():
        raise SweepError(f"--workers {workers} is more than {max_workers()} ({WORKERS_PER_CORE} per core, "
                         f"{os.cpu_count() or 1} cores here): the points are computation, more processes do "
                         f"not make them faster")

#: Seconds to reach a Dask scheduler, then to wait for its first worker.
DASK_CONNECT_TIMEOUT = 10
DASK_WORKER_TIMEOUT = 60


def _die_with_parent(parent: int) -> None:
    """A pool worker's initializer: exit when the sweep process is gone (killed even with SIGKILL,
    which runs no clean-up: a forked worker would otherwise wait on the task pipe forever)."""
    try:  # Linux: the kernel sends SIGKILL the moment the parent dies
        # Inside the try: a worker on a system without prctl goes on without it.
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _dask_client(address: str):
    # Dask (a heavy import) only for a sweep on a cluster.
    from distributed import Client

    try:
        client = Client(address, timeout=f"{DASK_CONNECT_TIMEOUT}s")
    except (OSError, ValueError) as exc:
        raise SweepError(f"--dask {address}: cannot reach a Dask scheduler there "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    try:
        client.wait_for_workers(1, timeout=DASK_WORKER_TIMEOUT)
    except TimeoutError:
        client.close()
        raise SweepError(f"--dask {address}: the scheduler has no workers "
                         f"(none joined in {DASK_WORKER_TIMEOUT} s)") from None
    return client


def _executor_map(points: list, spec: SweepSpec, workers: int | None, dask_address: str | None) -> Iterable:
    """Yield (key, params, metrics) as points finish, on a process pool or a Dask cluster."""
    if dask_address:
        import distributed  # optional (the dask extra); its as_completed, not concurrent.futures'

        with _dask_client(dask_address) as client:
            futures = {client.submit(evaluate_point, spec.kind, p, spec.rtl, spec.fpga, pure=False): (k, p)
                       for k, p in points}
            for fut in distributed.as_completed(futures):
                k, p = futures[fut]
                yield k, p, fut.result()
        return
    if workers == 1 or len(points) <= 1:
        for k, p in points:
            yield k, p, evaluate_point(spec.kind, p, spec.rtl, spec.fpga)
        return

    with ProcessPoolExecutor(max_workers=min(workers or os.cpu_count() or 1, len(points)), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(evaluate_point, spec.kind, p, spec.rtl, spec.fpga): (k, p) for k, p in points}
        try:
            for fut in as_completed(futures):
                k, p = futures[fut]
                yield k, p, fut.result()
        except BaseException:   # a failed point or Ctrl-C: stop now, not after the queued points
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_sweep(spec: SweepSpec, db_path, *, workers: int | None = None, dask_address: str | None = None,
              progress: bool = True) -> dict:
    """Evaluate every point of ``spec`` not yet in ``db_path``; return counts. ``workers``: local
    processes (default one per core; at most :func:`max_workers`). SweepError in one line for a
    database that is not ``spec``'s (:func:`open_db`) or cannot be written. A database this call
    made is removed again when the run fails (or is interrupted) before storing a point."""
    check_workers(workers)
    path = Path(db_path)
    made = not path.exists()
    db = open_db(path, spec)
    finished = False
    try:
        counts = _run(db, spec, workers, dask_address, progress)
        finished = True
        return counts
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc, "write a point") from None
    finally:
        try:
            empty = made and not finished and not db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        except sqlite3.Error:
            empty = False
        db.close()
        if empty:
            for leftover in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))):
                leftover.unlink(missing_ok=True)


def _run(db: sqlite3.Connection, spec: SweepSpec, workers, dask_address, progress) -> dict:
    """Evaluate and store the points of ``spec`` not yet in ``db``; the counts run_sweep returns."""
    done = {row[0] for row in db.execute("SELECT key FROM points")}
    todo = [(point_key(spec.kind, p), p) for p in spec.points]
    todo = [(k, p) for k, p in todo if k not in done]
    new = 0
    stream = _executor_map(todo, spec, workers, dask_address)
    if progress and todo:
        # rich only when a progress bar is shown.
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("sweep", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task("points", total=len(todo))
            for k, p, m in stream:
                _store(db, spec.kind, k, p, m)
                new += 1
                bar.advance(task)
    else:
        for k, p, m in stream:
            _store(db, spec.kind, k, p, m)
            new += 1
    total = db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    keys = {point_key(spec.kind, p) for p in spec.points}
    checked = [(k, c, r) for k, c, r in db.execute(
        "SELECT key, cycles, rtl_cycles FROM points WHERE rtl_cycles IS NOT NULL") if k in keys]
    return {"points": len(spec.points), "already_done": len(spec.points) - len(todo), "new": new, "rows": total,
        "rtl_confirmed": sum(1 for _, c, r in checked if c == r),
        "rtl_mismatched": sum(1 for _, c, r in checked if c != r)}
