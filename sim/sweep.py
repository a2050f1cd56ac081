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
model (a built-in model name, default "gpt2"), context (default: the model's default), batch (1).

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


def _decode_hardware(p: dict):
    """The single-chip hardware of a decode point: one weight memory delivering
    ``weight_bytes_per_cycle`` bytes a cycle (the full port by default)."""
    from .perf import Hardware, MemoryLevel

    R, C, clock = p["array_rows"], p["array_cols"], p["clock_hz"]
    wbpc = p.get("weight_bytes_per_cycle") or C
    cap = p.get("weight_memory_bytes") or float("inf")
    return Hardware(name="sweep point", description="", array_rows=R, array_cols=C,
                    vector_lanes=p.get("vector_lanes", 4), clock_hz=clock, weight_bytes=1,
                    memories=(MemoryLevel("weight memory", cap, wbpc * clock),))


def _decode_estimate(p: dict):
    from .perf import estimate

    return estimate(p.get("model", "gpt2"), _decode_hardware(p), context=p.get("context"), batch=p.get("batch", 1))


def _eval_decode(p: dict, rtl: dict | None) -> dict:
    e = _decode_estimate(p)
    R, C, clock = p["array_rows"], p["array_cols"], p["clock_hz"]
    macs = e.bounds["compute"] * R * C * clock            # MACs of the step (all sequences)
    return {
        "cycles": e.cycles, "lower_bound": e.lower_bound * clock, "efficiency": e.efficiency,
        "tokens_per_s": e.tokens_per_s, "throughput": e.tokens_per_s,   # the plots' y axis: tokens/s
        "mac_per_s": macs / e.step_seconds,
        "peak": R * C * clock,
        "weight_bandwidth": e.port_elements_per_cycle * clock,
        "intensity": macs / e.weight_bytes_per_token,
        "area": R * C + p.get("vector_lanes", 4),   # PEs plus vector lanes (a proxy)
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
                           "model": (str, False, "gpt2"), "context": (int, False, None), "batch": (int, False, 1)},
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


def _values(source: str, name: str, value, mode: str, typ):
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
    for name, (typ, required, default) in spec_params.items():
        if name in params:
            values[name] = _values(source, name, params[name], mode, typ)
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
    for p in points:
        for name in names:
            if isinstance(p[name], int) and p[name] < 1:
                raise SweepError(f"{source}: parameter {name} must be positive, not {p[name]}")
        try:
            if kind == "gemm":
                _gemm_config(p)
            elif kind == "decode":
                _check_decode_point(p)
        except (TypeError, ValueError) as exc:
            raise SweepError(f"{source}: point {p} does not fit: {exc}") from None
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
    return SweepSpec(kind=kind, points=tuple(points), rtl=rtl, source=source, fpga=fpga)


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


def _check_decode_point(p: dict) -> None:
    """Raise ValueError for a decode point the model cannot evaluate (checked before the sweep runs)."""
    from .perf import MODELS, resolve_model

    if p["model"] not in MODELS:
        raise ValueError(f"model must be a built-in model ({', '.join(MODELS)}), not {p['model']!r}")
    mc = resolve_model(p["model"])[1]
    if p["context"] is not None and p["context"] > mc.max_context:
        raise ValueError(f"context {p['context']} exceeds {p['model']}'s max_context {mc.max_context}")
    _decode_hardware(p).config(p["batch"])          # the array's own checks
    if p["weight_memory_bytes"] is not None:
        from .perf import _weight_elements

        layer, other = _weight_elements(mc)
        need = mc.n_layers * layer + other
        if need > p["weight_memory_bytes"]:
            raise ValueError(f"{p['model']} needs {need} bytes of int8 weights, more than weight_memory_bytes "
                             f"{p['weight_memory_bytes']}")


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
