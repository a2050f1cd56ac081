"""Design-space sweeps: a grid or a random sample of design points, evaluated by the cycle model,
stored in SQLite so a sweep killed at any moment resumes without losing or duplicating a row.

A spec is a TOML file::

    kind = "gemm"          # what a point is: "gemm" (an M x K x N GEMM on an R x C array) or
                           # "decode" (one decode step of a built-in model: sim.perf, tokens/s)
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
    [rtl]                  # optional: confirm the predicted cycles on the RTL for small points
    simulator = "amaranth"
    max_cycles = 2000
    [fpga]                 # optional (gemm only): FPGA resources after Yosys synthesis
    family = "ecp5"        # "ecp5" or "ice40"

With ``[fpga]`` every point's GEMM engine (:class:`hdl.gemm.GemmUnit` for the point's smallest
configuration, no UART link) is synthesized by Yosys (:func:`sim.fpga.synthesis_resources`, no
place and route) and its metrics gain ``lut``, ``ff``, ``dsp``, ``bram`` and ``fpga_family``
(all None without ``[fpga]``). Synthesis results are cached by design and tool version, so a
resumed sweep does not synthesize again; a Yosys failure stops the sweep with one line naming the
point. ``[fpga]`` does not change a point's key: rows already in the database keep their metrics
(None resources if they were evaluated without ``[fpga]``); to add resources to them, run the
spec into a new database. Arrays larger than ``hdl.config.MAX_BUILD_ARRAY`` are refused.

A decode point's parameters: array_rows, array_cols, vector_lanes (default 4), clock_hz,
weight_bytes_per_cycle (default: the full port, C), weight_memory_bytes (default: unlimited),
model (a built-in model name, default "gpt2"), context (default: the model's default), batch (1);
or preset (a hardware preset or TOML file) with any of those and weight_bytes, chips,
tensor_parallel, link_bandwidth, link_latency_ns, tp_link_bandwidth, tp_link_latency_ns replacing
its keys (docs/performance.md, "Decode sweeps"). Points whose model does not fit their memory are
left out (``SweepSpec.skipped``); a model that fits no point is an error.

Every point has a key (a hash of its kind and parameters). Rows are written with
``INSERT OR IGNORE`` in WAL mode, one transaction per finished point, by the one process that owns
the database; evaluation runs in a local process pool or on a Dask cluster.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import sqlite3
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KINDS", "SweepSpec", "SweepError", "evaluate_point", "load_spec", "run_sweep", "read_rows"]


class SweepError(ValueError):
    """A bad sweep spec or database; the message names the file and the problem."""


# --- kinds of design point ----------------------------------------------------------------------

def _gemm_config(p: dict):
    """The smallest configuration that holds the point's GEMM (memories sized to fit)."""
    from hdl.config import Config

    R, C, m, k, n = p["array_rows"], p["array_cols"], p["m"], p["k"], p["n"]
    kt, nt = -(-k // R), -(-n // C)
    return Config(array_rows=R, array_cols=C, weight_words=max(R, kt * nt * R), act_words=max(m * kt, m),
                  result_words=max(m * nt, m), max_m=m, clock_hz=p.get("clock_hz", 100_000_000))


def _eval_gemm(p: dict, rtl: dict | None) -> dict:
    from .cycles import gemm_cycles, gemm_lower_bound

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
        "weight_bandwidth": C * config.clock_hz,         # bytes/s of the weight port
        "intensity": macs / (k * n),                     # MACs per weight byte
        "area": R * C,                                   # processing elements
        "rtl_cycles": None,
    }
    if rtl and cycles <= rtl.get("max_cycles", 2000):
        import numpy as np

        from .runner import run

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
_NAMED_ONLY = {"preset", "weight_bytes", "chips", "tensor_parallel", "link_bandwidth", "link_latency_ns",
               "tp_link_bandwidth", "tp_link_latency_ns"}


def _decode_hardware(p: dict):
    """The hardware of a decode point. Without ``preset``: one chip whose one weight memory
    delivers ``weight_bytes_per_cycle`` bytes a cycle (the full port by default). With it: that
    preset (or TOML file) with the point's parameters replacing its keys (``weight_bytes_per_cycle``
    sets the first memory level's bandwidth to that many bytes a cycle at the point's clock)."""
    from .perf import Hardware, MemoryLevel, hardware_data, hardware_from_dict

    if not p.get("preset"):
        R, C, clock = p["array_rows"], p["array_cols"], p["clock_hz"]
        wbpc = p.get("weight_bytes_per_cycle") or C
        cap = p.get("weight_memory_bytes") or float("inf")
        return Hardware(name="sweep point", description="", array_rows=R, array_cols=C,
                        vector_lanes=p.get("vector_lanes", 4), clock_hz=clock, weight_bytes=1,
                        memories=(MemoryLevel("weight memory", cap, wbpc * clock),))
    data, name = hardware_data(p["preset"])
    for param, (table, key) in _PRESET_KEYS.items():
        if p.get(param) is None:
            continue
        value = p[param] * 1e-9 if param.endswith("_ns") else p[param]
        if table == "memory":
            data["memory"][0][key] = value
        else:
            data.setdefault(table, {})[key] = value
    if p.get("weight_bytes_per_cycle") is not None:
        data["memory"][0]["bandwidth_bytes_per_s"] = p["weight_bytes_per_cycle"] * data["chip"]["clock_hz"]
    return hardware_from_dict(data, name=name, source=f"preset {p['preset']} with the point's parameters")


def _eval_decode(p: dict, rtl: dict | None) -> dict:
    from .perf import estimate

    hw = _decode_hardware(p)
    e = estimate(p.get("model", "gpt2"), hw, context=p.get("context"), batch=p.get("batch", 1))
    R, C, clock, T = hw.array_rows, hw.array_cols, hw.clock_hz, hw.tensor_parallel
    # One stage's T chips work at once (the stages take turns on a token): MACs, peak and weight
    # bandwidth of the step are T chips'; the estimate's bounds are one chip's.
    macs = e.bounds["compute"] * R * C * clock * T        # MACs of the step (all sequences)
    return {
        "cycles": e.cycles, "lower_bound": e.lower_bound * clock, "efficiency": e.efficiency,
        "tokens_per_s": e.tokens_per_s, "throughput": e.tokens_per_s,   # the plots' y axis: tokens/s
        "mac_per_s": macs / e.step_seconds,
        "peak": R * C * clock * T,
        "weight_bandwidth": e.port_elements_per_cycle * clock * hw.weight_bytes * T,
        "intensity": macs / (e.weight_bytes_per_token * T),
        "area": hw.chips * (R * C + hw.vector_lanes),   # PEs plus vector lanes, all chips (a proxy)
        "context": e.context, "binding": e.binding, "rtl_cycles": None,
    }


@dataclass(frozen=True)
class Kind:
    params: dict              # name -> (type, required, default)
    evaluate: Callable[[dict, dict | None], dict]


KINDS = {
    "gemm": Kind(params={"array_rows": (int, True, None), "array_cols": (int, True, None), "m": (int, True, None),
                         "k": (int, True, None), "n": (int, True, None), "clock_hz": (int, False, 100_000_000)},
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
    text = json.dumps({"kind": kind, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


#: The metrics an ``[fpga]`` table fills (None without one).
FPGA_COLUMNS = ("lut", "ff", "dsp", "bram")


def _fpga_metrics(params: dict, fpga: dict | None) -> dict:
    """The point's FPGA resources after Yosys synthesis (:func:`sim.fpga.synthesis_resources`);
    SweepError naming the point when synthesis fails."""
    if not fpga:
        return {**dict.fromkeys(FPGA_COLUMNS), "fpga_family": None}
    from .fpga import BuildError, synthesis_resources
    from .toolchain import ToolchainError

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
    return metrics


# --- specs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepSpec:
    kind: str
    points: tuple[dict, ...]
    rtl: dict | None
    source: str
    fpga: dict | None = None      # the [fpga] table: {"family": ...}
    skipped: int = 0              # decode points left out: their model does not fit their hardware
    skip_reasons: tuple = ()      # the first reason for each model that lost points


def _integral(v):
    """1e8 as TOML writes it (a float) is the integer 100000000; 1.5 stays a float (and is refused)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _values(source: str, name: str, value, mode: str, typ):
    if typ is int:
        value = [_integral(v) for v in value] if isinstance(value, list) else (
            {k: _integral(v) for k, v in value.items()} if isinstance(value, dict) else _integral(value))
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{source}: parameter {name} has an empty list of values")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, typ):
                raise SweepError(f"{source}: parameter {name} must hold {typ.__name__} values, not {v!r}")
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
        return range(low, high + 1)
    if isinstance(value, bool) or not isinstance(value, typ):
        raise SweepError(f"{source}: parameter {name} must be a list or a range, not {value!r}")
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
    on_preset = kind == "decode" and "preset" in params   # a preset supplies the hardware it is not told
    for name, (typ, required, default) in spec_params.items():
        if name in params:
            values[name] = _values(source, name, params[name], mode, typ)
        elif kind == "decode" and (name in _NAMED_ONLY or (on_preset and name in _PRESET_KEYS)):
            continue
        elif required:
            raise SweepError(f"{source}: parameter {name} is required for kind {kind}")
        else:
            values[name] = [default]
    names = list(values)
    if mode == "grid":
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values[n] for n in names))]
    else:
        samples = data.get("samples", 100)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise SweepError(f"{source}: samples must be a positive integer, not {samples!r}")
        rng = random.Random(data.get("seed", 0))
        space = 1
        for n in names:
            space *= len(values[n])
        if samples > space:
            raise SweepError(f"{source}: samples {samples} exceeds the {space} distinct points the parameters "
                             f"allow (use mode = \"grid\" for all of them)")
        seen, points = set(), []
        for _ in range(samples):
            p = {n: rng.choice(list(values[n])) if not isinstance(values[n], range)
                 else rng.randint(values[n].start, values[n].stop - 1) for n in names}
            k = point_key(kind, p)
            if k not in seen:
                seen.add(k)
                points.append(p)
    unfit: dict = {}        # model -> (points that do not fit, the first reason)
    kept = []
    for p in points:
        for name in names:
            least = 0 if name.endswith("_latency_ns") else 1      # a link may have no latency
            if isinstance(p[name], int) and p[name] < least:
                raise SweepError(f"{source}: parameter {name} must be {'non-negative' if least == 0 else 'positive'}, "
                                 f"not {p[name]}")
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
        if rtl.get("simulator", "amaranth") not in ("amaranth", "icarus", "verilator"):
            raise SweepError(f"{source}: rtl simulator must be amaranth, icarus or verilator, "
                             f"not {rtl.get('simulator')!r}")
        if kind != "gemm":
            raise SweepError(f"{source}: [rtl] confirms gemm points only: a decode point is a built-in model the "
                             f"RTL cannot hold (the decode accelerator's own regressions confirm the cycle model)")
    _check_fpga_points(fpga, points, source)
    return SweepSpec(kind=kind, points=tuple(points), rtl=rtl, source=source, fpga=fpga, skipped=skipped,
                     skip_reasons=tuple(first for _, first in unfit.values()))


def _parse_fpga(fpga, kind: str, source: str) -> dict | None:
    """The checked ``[fpga]`` table, or None; SweepError naming the file and the bad value."""
    from .fpga import SYNTH_FAMILIES

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
    cache, where the memory holds it) exceed every memory level (sim.perf.place)."""
    from .perf import MODELS, HardwareError, default_context, place, resolve_model

    if p["model"] not in MODELS:
        raise ValueError(f"model must be a built-in model ({', '.join(MODELS)}), not {p['model']!r}")
    mc = resolve_model(p["model"])[1]
    if p["context"] is not None and p["context"] > mc.max_context:
        raise ValueError(f"context {p['context']} exceeds {p['model']}'s max_context {mc.max_context}")
    hw = _decode_hardware(p)
    hw.config(p["batch"])          # the array's own checks
    try:
        place(mc, hw, context=p["context"] or default_context(mc), batch=p["batch"], name=p["model"])
    except HardwareError as exc:
        if "pipeline stages" in str(exc):
            raise
        raise _DoesNotFit(str(exc)) from None


def load_spec(path) -> SweepSpec:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep spec") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(data, source=str(path))


# --- the database -------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    cycles INTEGER,
    throughput REAL,
    area REAL,
    efficiency REAL,
    rtl_cycles INTEGER
)
"""


def open_db(path) -> sqlite3.Connection:
    path = Path(path)
    if path.exists() and path.is_dir():
        raise SweepError(f"{path}: is a directory, not a results database")
    try:
        db = sqlite3.connect(str(path), timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        db.commit()
    except sqlite3.DatabaseError as exc:
        raise SweepError(f"{path}: not a Lockstep results database ({exc})") from None
    return db


def _store(db: sqlite3.Connection, kind: str, key: str, params: dict, metrics: dict) -> None:
    with db:  # one transaction per point: a kill loses at most the point in flight
        db.execute("INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (key, kind, json.dumps(params, sort_keys=True), json.dumps(metrics, sort_keys=True),
                    metrics.get("cycles"), metrics.get("throughput"), metrics.get("area"),
                    metrics.get("efficiency"), metrics.get("rtl_cycles")))


def read_rows(path) -> list[dict]:
    """Every stored point as ``{"key", "kind", "params", "metrics"}``, ordered by key."""
    db = open_db(path)
    try:
        rows = db.execute("SELECT key, kind, params, metrics FROM points ORDER BY key").fetchall()
    finally:
        db.close()
    return [{"key": k, "kind": kind, "params": json.loads(p), "metrics": json.loads(m)} for k, kind, p, m in rows]


# --- running ------------------------------------------------------------------------------------

#: Seconds to reach a Dask scheduler, then to wait for its first worker.
DASK_CONNECT_TIMEOUT = 10
DASK_WORKER_TIMEOUT = 60


def _die_with_parent(parent: int) -> None:
    """A pool worker's initializer: exit when the sweep process is gone (killed even with SIGKILL,
    which runs no clean-up: a forked worker would otherwise wait on the task pipe forever)."""
    import threading

    try:  # Linux: the kernel sends SIGKILL the moment the parent dies
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
        from distributed import as_completed

        with _dask_client(dask_address) as client:
            futures = {client.submit(evaluate_point, spec.kind, p, spec.rtl, spec.fpga, pure=False): (k, p)
                       for k, p in points}
            for fut in as_completed(futures):
                k, p = futures[fut]
                yield k, p, fut.result()
        return
    if workers == 1 or len(points) <= 1:
        for k, p in points:
            yield k, p, evaluate_point(spec.kind, p, spec.rtl, spec.fpga)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), initializer=_die_with_parent,
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
    """Evaluate every point of ``spec`` not yet in ``db_path``; return counts."""
    db = open_db(db_path)
    try:
        done = {row[0] for row in db.execute("SELECT key FROM points")}
        todo = [(point_key(spec.kind, p), p) for p in spec.points]
        todo = [(k, p) for k, p in todo if k not in done]
        new = 0
        stream = _executor_map(todo, spec, workers, dask_address)
        if progress and todo:
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
    finally:
        db.close()
    return {"points": len(spec.points), "already_done": len(spec.points) - len(todo), "new": new, "rows": total,
            "rtl_confirmed": sum(1 for _, c, r in checked if c == r),
            "rtl_mismatched": sum(1 for _, c, r in checked if c != r)}
