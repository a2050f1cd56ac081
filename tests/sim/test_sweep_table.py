"""``lockstep sweep-table DB``: every point of a real sweep, one row each with every parameter and
metric, as a table, CSV and JSON; sorted; one-line errors."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.perf.sweep import read_rows, sweep_table

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")

GEMM_SPEC = """
kind = "gemm"
[params]
array_rows = [4, 8]
array_cols = [4, 8]
m = [1, 16]
k = [512]
n = [256]
"""
DECODE_SPEC = """
kind = "decode"
[params]
array_rows = [8]
array_cols = [4, 8]
model = ["gpt2"]
context = [64]
"""


def lockstep(*args, ok=True):
    out = subprocess.run([LOCKSTEP, *map(str, args)], capture_output=True, text=True, timeout=120)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def gemm_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    (folder / "spec.toml").write_text(GEMM_SPEC)
    lockstep("sweep", folder / "spec.toml", "--quiet", "--workers", 1)
    return folder / "spec.sqlite"


def test_every_point_with_every_parameter_and_metric(gemm_db):
    stored = read_rows(gemm_db)
    data = json.loads(lockstep("sweep-table", gemm_db, "--json").stdout)
    assert len(stored) == len(data["rows"]) == 8
    assert data["columns"][:6] == ["array_rows", "array_cols", "m", "k", "n", "clock_hz"]   # the kind's order
    by_key = {r["key"]: r for r in data["rows"]}
    for point in stored:
        row = by_key[point["key"]]
        assert {c: row[c] for c in point["params"]} == point["params"]
        assert {c: row[c] for c in point["metrics"]} == point["metrics"]
        assert set(row) == set(data["columns"])
    # CSV: the same rows, exact values
    rows = list(csv.DictReader(io.StringIO(lockstep("sweep-table", gemm_db, "--csv").stdout)))
    assert [r["key"] for r in rows] == [r["key"] for r in data["rows"]]
    for r in rows:
        j = by_key[r["key"]]
        assert int(r["cycles"]) == j["cycles"] and float(r["throughput"]) == j["throughput"]
        assert r["rtl_cycles"] == "" and j["rtl_cycles"] is None


def test_the_table_sorts_and_shows_numbers_by_the_rule(gemm_db):
    text = lockstep("sweep-table", gemm_db, "--sort", "throughput", "--reverse").stdout.splitlines()
    header, body, last = text[0].split(), text[1:-1], text[-1]
    assert last == "8 points" and len(body) == 8
    cells = [dict(zip(header, line.split(), strict=True)) for line in body]
    best = max(read_rows(gemm_db), key=lambda r: r["metrics"]["throughput"])
    assert cells[0]["key"] == best["key"]
    assert cells[0]["clock_hz"] == "100,000,000" and cells[0]["rtl_cycles"] == "-"
    assert "e+" not in "\n".join(text) and "e-" not in "\n".join(text)
    throughputs = [float(c["throughput"].replace(",", "")) for c in cells]
    assert throughputs == sorted(throughputs, reverse=True)
    ascending = json.loads(lockstep("sweep-table", gemm_db, "--sort", "cycles", "--json").stdout)["rows"]
    assert [r["cycles"] for r in ascending] == sorted(r["cycles"] for r in ascending)


def test_a_decode_sweep_names_its_context_result_apart(tmp_path):
    (tmp_path / "d.toml").write_text(DECODE_SPEC)
    lockstep("sweep", tmp_path / "d.toml", "--quiet", "--workers", 1)
    columns, rows = sweep_table(tmp_path / "d.sqlite")
    assert "context" in columns and "context_result" in columns and "tokens_per_s" in columns
    assert len(rows) == 2 and all(r["context"] == r["context_result"] == 64 and r["model"] == "gpt2" for r in rows)


def test_errors_are_one_line(gemm_db, tmp_path):
    for args, message in (
            ((tmp_path / "none.sqlite",), f"lockstep: error: {tmp_path / 'none.sqlite'}: no such results database"),
            ((gemm_db, "--sort", "speed"), f"lockstep: error: --sort speed: no such column in {gemm_db} (columns: "),
            ((gemm_db, "--json", "--csv"), '{"error": "give either --csv or --json, not both"}')):
        out = lockstep("sweep-table", *args, ok=False)
        assert out.returncode == 1 and out.stdout == "" and out.stderr.startswith(message)
        assert len(out.stderr.strip().splitlines()) == 1
    out = lockstep("sweep-table", tmp_path / "none.sqlite", "--json", ok=False)
    assert out.returncode == 1 and "no such results database" in json.loads(out.stderr)["error"]
