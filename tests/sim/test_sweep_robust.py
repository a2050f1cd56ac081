"""Sweeps that go wrong: a killed sweep leaves no worker behind, an unreachable or empty Dask
scheduler and impossible specs end in one line, a disagreement of the RTL with the prediction is
reported, not buried in the database."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sim.perf.sweep as sweep
from sim.perf.sweep import SweepError, parse_spec, read_rows, run_sweep

from .sweep_specs import RTL_SPEC

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_killed_sweep_leaves_no_pool_worker_behind(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(RTL_SPEC)
    db = tmp_path / "r.sqlite"
    proc = subprocess.Popen([LOCKSTEP, "sweep", str(spec), "--db", str(db), "--workers", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 120, set()
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "the pool never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "pool workers outlived the killed sweep"


def test_an_unreachable_dask_scheduler_is_one_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(sweep, "DASK_CONNECT_TIMEOUT", 2)
    spec = parse_spec({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8, 16]}})
    t0 = time.monotonic()
    with pytest.raises(SweepError, match=rf"^--dask tcp://127.0.0.1:{port}: cannot reach a Dask scheduler there"):
        run_sweep(spec, tmp_path / "r.sqlite", dask_address=f"tcp://127.0.0.1:{port}", progress=False)
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []        # the database it made, with no point, is gone again


def test_a_dask_scheduler_without_workers_is_one_error(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(sweep, "DASK_WORKER_TIMEOUT", 2)
    spec = parse_spec({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8, 16]}})
    with (distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cl,
          pytest.raises(SweepError, match=rf"^--dask {re.escape(cl.scheduler_address)}: the scheduler has no "
                                          r"workers \(none joined in 2 s\)$")):
        run_sweep(spec, tmp_path / "r.sqlite", dask_address=cl.scheduler_address, progress=False)


@pytest.mark.parametrize(("data", "match"), [
    ({"mode": "random", "samples": 7, "params": {"array_rows": [4, 8], "array_cols": [4], "m": [1, 2],
                                                 "k": [8], "n": [8]}},
     r'^s\.toml: samples 7 exceeds the 4 distinct points the parameters allow \(use mode = "grid" for all of them\)$'),
    ({"mode": "random", "samples": 90_000, "params": {"array_rows": {"low": 1, "high": 5}, "array_cols": [4],
                                                      "m": [1], "k": [8], "n": [8]}},
     r'^s\.toml: samples 90000 exceeds the 5 distinct points the parameters allow \(use mode = "grid" for all of '
     r'them\)$'),
    ({"kind": "decode", "params": {"array_rows": [4], "array_cols": [4]}, "rtl": {"simulator": "verilator"}},
     r"^s\.toml: \[rtl\] confirms gemm points only: a decode point is a built-in model the RTL cannot hold \(the "
     r"decode accelerator's own regressions confirm the cycle model\)$"),
    ({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8]}, "rtl": {"max_cycles": 0}},
     r"^s\.toml: rtl max_cycles must be a positive integer, not 0$"),
])
def test_impossible_specs_are_refused_before_running(data, match):
    t0 = time.monotonic()
    with pytest.raises(SweepError, match=match):
        parse_spec(data, source="s.toml")
    assert time.monotonic() - t0 < 5


def test_a_disagreement_of_the_rtl_fails_the_sweep_command(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(RTL_SPEC.replace("array_rows = [2, 3]", "array_rows = [2]").replace("m = [1, 2, 3]", "m = [1]"))
    db = tmp_path / "r.sqlite"
    ok = subprocess.run([LOCKSTEP, "sweep", str(spec), "--db", str(db), "--quiet"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "RTL: 4 points' measured cycles equal the prediction" in ok.stdout
    with sqlite3.connect(db) as con:   # as if the RTL had measured one cycle more on one point
        con.execute("UPDATE points SET rtl_cycles = cycles + 1 WHERE key = (SELECT MIN(key) FROM points)")
    bad = subprocess.run([LOCKSTEP, "sweep", str(spec), "--db", str(db), "--quiet"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"lockstep: error: RTL: 1 points' measured cycles differ from the prediction "
                                  f"(rtl_cycles != cycles in {db})")
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(("spec", "message"), [
    ('kind = "decode"\n[params]\narray_rows = [8]\narray_cols = [8]\ndepth = [3]\n',
     "unknown parameter 'depth' for kind decode"),
    ('kind = "decode"\nmode = "random"\n[params]\narray_rows = {low = 9, high = 4}\narray_cols = [8]\n',
     "parameter array_rows range is empty: low 9 > high 4"),
    ('kind = "decode"\n[params]\narray_rows = [8]\narray_cols = [8]\nmodel = ["llama-3-70b"]\n'
     'weight_memory_bytes = [1000000000]\n',
     "llama-3-70b fits no design point of the spec (1 tried; e.g. llama-3-70b needs 70.55 GB of weights (int8), "
     "more than every memory level of sweep point (weight memory 1 GB))"),
])
def test_the_sweep_command_refuses_bad_specs_in_one_line(tmp_path, spec, message):
    path = tmp_path / "spec.toml"
    path.write_text(spec)
    out = subprocess.run([LOCKSTEP, "sweep", str(path), "--quiet"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"lockstep: error: {path}: {message}") and out.stderr.count("\n") == 1
    assert not (tmp_path / "spec.sqlite").exists()


def test_the_sweep_command_says_which_points_it_left_out(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('kind = "decode"\n[params]\narray_rows = [8]\narray_cols = [8]\nmodel = ["gpt2", "llama-2-7b"]\n'
                    'weight_memory_bytes = [200000000, 10000000000]\n')
    out = subprocess.run([LOCKSTEP, "sweep", str(path), "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == ("1 design points left out: their model does not fit their memory (e.g. "
                                          "llama-2-7b needs 6.738 GB of weights (int8), more than every memory level "
                                          "of sweep point (weight memory 200 MB))")
    assert len(read_rows(tmp_path / "spec.sqlite")) == 3


def test_integral_floats_are_integers_as_in_hardware_files():
    spec = parse_spec({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8],
                                  "clock_hz": [1e8, 2.5e8]}})
    assert [p["clock_hz"] for p in spec.points] == [100_000_000, 250_000_000]
    assert all(type(p["clock_hz"]) is int for p in spec.points)
    with pytest.raises(SweepError, match=r"^spec: parameter clock_hz must hold int values, not 1\.5$"):
        parse_spec({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8],
                               "clock_hz": [1.5]}})
