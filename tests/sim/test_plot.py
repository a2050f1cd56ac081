"""Plots of sweep databases (sim/perf/plot.py): both kinds, bounded figure sizes, one Pareto front per
workload, degenerate and bad databases."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner
from PIL import Image

from sim.cli.commands import main
from sim.perf.plot import DPI, FIGSIZE, pareto_front, pareto_fronts, plot_sweep
from sim.perf.sweep import SweepError, open_db, parse_spec, read_rows, run_sweep

NAMES = sorted(f"{n}.{e}" for n in ("roofline", "throughput", "pareto") for e in ("png", "svg"))
SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def sweep(tmp_path, data, name="s.sqlite"):
    db = tmp_path / name
    run_sweep(parse_spec(data), db, workers=1, progress=False)
    return db


def check_plots(db, out):
    files = plot_sweep(db, out)
    assert sorted(f.name for f in files) == NAMES
    assert all(f.stat().st_size > 1000 for f in files)
    for f in files:
        if f.suffix == ".png":
            with Image.open(f) as image:
                assert image.size == SIZE, f.name
    return {f.name: f for f in files}


def test_pareto_front_excludes_dominated_points():
    pts = [(1, 1.0), (2, 0.5), (2, 3.0), (4, 3.0), (8, 9.0), (8, 2.0)]
    assert pareto_front(pts) == [0, 2, 4]          # (2, 0.5), (4, 3.0) and (8, 2.0) are beaten
    assert pareto_front([(5, 5.0)]) == [0]
    assert pareto_front([(3, 1.0), (3, 1.0)]) == [0]   # equal points: one stands for both
    assert pareto_front([]) == []


def test_pareto_fronts_are_computed_per_workload():
    # The small model's points would dominate every point of the big one in a single front.
    pts = [(100, 100.0), (200, 150.0), (400, 120.0),     # gpt2
           (100, 0.1), (200, 0.05), (300, 0.3), (400, 0.2)]  # llama
    groups = ["gpt2"] * 3 + ["llama"] * 4
    assert pareto_front(pts) == [0, 1]
    assert pareto_fronts(pts, groups) == {"gpt2": [0, 1], "llama": [3, 5]}
    with pytest.raises(ValueError):
        pareto_fronts(pts, groups[:-1])


def test_gemm_sweep_plots(tmp_path):
    db = sweep(tmp_path, {"params": {"array_rows": [2, 4, 8], "array_cols": [2, 4, 8], "m": [1, 8], "k": [64],
                                     "n": [64]}})
    svg = check_plots(db, tmp_path / "plots")["pareto.svg"].read_text()
    assert "M x K x N = 1 x 64 x 64" in svg and "M x K x N = 8 x 64 x 64" in svg   # one front per shape
    assert "MAC/s" in svg


def test_decode_sweep_plots_with_many_bandwidths_stay_bounded(tmp_path):
    db = sweep(tmp_path, {"kind": "decode", "mode": "random", "samples": 60, "seed": 3,
                          "params": {"array_rows": {"low": 4, "high": 64}, "array_cols": {"low": 4, "high": 64},
                                     "weight_bytes_per_cycle": {"low": 1, "high": 256},
                                     "model": ["gpt2", "llama-2-7b"], "context": [64]}})
    bandwidths = {r["metrics"]["weight_bandwidth"] for r in read_rows(db)}
    assert len(bandwidths) > 30
    files = check_plots(db, tmp_path / "plots")      # every PNG is 768 x 528 px, not one legend row per bandwidth
    throughput = files["throughput.svg"].read_text()
    assert "tokens/s" in throughput and "weight bandwidth (GB/s)" in throughput
    assert throughput.count("GB/s weights") == 0
    pareto = files["pareto.svg"].read_text()
    assert "gpt2" in pareto and "llama-2-7b" in pareto and "one per model" in pareto


@pytest.mark.parametrize("data", [
    {"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [64], "n": [64]}},
    {"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [64, 128], "n": [64]}},
    {"kind": "decode", "params": {"array_rows": [8], "array_cols": [8], "context": [32]}},
    {"kind": "decode", "params": {"array_rows": [8], "array_cols": [8], "context": [16, 32]}},
], ids=["gemm-1", "gemm-equal", "decode-1", "decode-contexts"])
def test_degenerate_sweeps_plot_without_warnings(tmp_path, data):
    # pytest runs with filterwarnings=error: a singular-limits or log-scale warning fails here.
    check_plots(sweep(tmp_path, data), tmp_path / "plots")


def test_bad_databases_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.sqlite"
    open_db(empty, parse_spec({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8]}})).close()
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n" * 100)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE other (x)")
    con.close()
    before = foreign.read_bytes()
    cases = [(empty, "holds no design points"), (text, "not a Lockstep results database"),
             (foreign, "not a Lockstep results database"), (tmp_path / "missing.sqlite", "no such results database")]
    for db, message in cases:
        with pytest.raises(SweepError, match=message):
            plot_sweep(db, tmp_path / "plots")
        result = CliRunner().invoke(main, ["plot", str(db), "--out", str(tmp_path / "plots")])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lockstep: error: ") and message in lines[0]
    assert foreign.read_bytes() == before            # a foreign SQLite file is not written to


def test_many_points_plot(tmp_path):
    """5,000 points plot (their data checked). How fast is a benchmark's business
    (scripts/bench_sweep.py), not a timed test's: a loaded machine took 52 s here."""
    db = sweep(tmp_path, {"kind": "decode", "mode": "random", "samples": 50, "seed": 5,
                          "params": {"array_rows": {"low": 4, "high": 256}, "array_cols": {"low": 4, "high": 256},
                                     "weight_bytes_per_cycle": {"low": 1, "high": 256}, "model": ["gpt2"],
                                     "context": [64]}})
    with sqlite3.connect(db) as con:   # 5,000 rows: copies of the 50 under new keys, metrics scaled
        for i in range(1, 100):
            con.execute("INSERT INTO points SELECT key || ?, kind, params, json_set(metrics, '$.throughput', "
                        "json_extract(metrics, '$.throughput') * ?, '$.area', json_extract(metrics, '$.area') + ?), "
                        "cycles, throughput, area, efficiency, rtl_cycles FROM points WHERE length(key) = 24",
                        (f"-{i}", 1 + i / 100, i))
    con.close()
    assert len(read_rows(db)) == 5000
    check_plots(db, tmp_path / "plots")
