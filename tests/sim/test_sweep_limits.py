"""Sweeps refuse what they cannot do well, through the real ``lockstep`` command, in one line and
before any work: a database that is not the spec's own (another spec, another kind, another
program's SQLite file, not SQLite at all, an older schema), one that is read-only or locked by
another process, a spec too large to build or with absurd values, and a worker count past the cap.
A refused database is left byte for byte as it was."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.perf.sweep import MAX_POINTS, WORKERS_PER_CORE, SweepError, max_workers, parse_spec, read_rows

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")

GEMM = """
[params]
array_rows = [4, 8]
array_cols = [4]
m = [1]
k = [8, 16]
n = [8]
"""
#: The same spec, written otherwise: keys reordered, a comment, 1e8 for the default clock.
GEMM_AGAIN = """
# the same four points
[params]
n = [8]
k = [8, 16]
m = [1]
array_cols = [4]
array_rows = [4, 8]
clock_hz = [1e8]
"""
OTHER_GEMM = GEMM.replace("k = [8, 16]", "k = [8, 32]")
DECODE = """
kind = "decode"
[params]
array_rows = [4]
array_cols = [4]
context = [32]
"""


def lockstep(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    result = subprocess.run([LOCKSTEP, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - t0


def one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The one ``lockstep: error:`` line of a refused command, which contains every needle."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockstep: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def sweep(tmp_path: Path, spec_text: str, db: Path, *extra, name: str = "spec.toml"):
    spec = tmp_path / name
    spec.write_text(spec_text)
    return lockstep("sweep", spec, "--db", db, "--quiet", *extra)


def snapshot(directory: Path) -> dict:
    """Every file of ``directory`` and its bytes: a refused database must leave all of them as
    they were (no table, no journal-mode switch, no -wal, -shm or -journal file beside it)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def stored(db: Path) -> int:
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
        n = con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    con.close()
    return n


# --- databases ------------------------------------------------------------------------------------

def test_a_database_resumes_its_own_spec_however_it_is_written(tmp_path):
    db = tmp_path / "r.sqlite"
    result, _ = sweep(tmp_path, GEMM, db)
    assert result.returncode == 0 and "0 already in" in result.stdout, result.stderr
    result, _ = sweep(tmp_path, GEMM_AGAIN, db, name="again.toml")
    assert result.returncode == 0, result.stderr
    assert "4 design points: 4 already in" in result.stdout and "0 evaluated" in result.stdout
    assert stored(db) == 4


@pytest.mark.parametrize(("spec", "needles"), [
    (OTHER_GEMM, ("holds the results of another spec", "use another --db")),
    (DECODE, ("holds gemm points, and this spec's are decode",)),
    (GEMM + '[fpga]\nfamily = "ecp5"\n', ("holds the results of another spec",)),
], ids=["another-spec", "another-kind", "fpga-added"])
def test_a_database_of_another_spec_is_refused_untouched(tmp_path, spec, needles):
    work = tmp_path / "db"
    work.mkdir()
    db = work / "r.sqlite"
    assert sweep(tmp_path, GEMM, db)[0].returncode == 0
    before = snapshot(work)
    one_error(sweep(tmp_path, spec, db, name="other.toml")[0], f"{db}: ", *needles)
    assert snapshot(work) == before and stored(db) == 4


def _foreign_rollback(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.executemany("INSERT INTO notes (text) VALUES (?)", [("keep me",), ("and me",)])
    con.close()


def _foreign_wal(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE points (x)")           # even a table of the same name
    con.commit()
    con.close()


def _old_lockstep(path: Path) -> None:
    """A results database as Lockstep wrote it before it recorded its spec."""
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE points (key TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL, "
                    "metrics TEXT NOT NULL, cycles INTEGER, throughput REAL, area REAL, efficiency REAL, "
                    "rtl_cycles INTEGER)")
    con.close()


def _another_schema(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE lockstep (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.executemany("INSERT INTO lockstep VALUES (?, ?)", [("format", "lockstep sweep results"),
                                                               ("schema", "2"), ("kind", "gemm")])
        con.execute("CREATE TABLE points (key TEXT PRIMARY KEY, payload BLOB)")
    con.close()


@pytest.mark.parametrize(("make", "needles"), [
    (_foreign_rollback, ("not a Lockstep results database (an SQLite file without Lockstep's records)",)),
    (_foreign_wal, ("not a Lockstep results database",)),
    (lambda p: p.write_text("my notes, not a database\n" * 50), ("not a Lockstep results database "
                                                                  "(not an SQLite file)",)),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), ("not a Lockstep results database",)),
    (_old_lockstep, ("a results database in an older schema",)),
    (_another_schema, ("a results database in schema 2, not this Lockstep's 1",)),
], ids=["sqlite-rollback", "sqlite-wal", "text", "broken-sqlite", "older-lockstep", "another-schema"])
def test_a_file_that_is_not_a_results_database_is_refused_byte_for_byte_unchanged(tmp_path, make, needles):
    work = tmp_path / "db"
    work.mkdir()
    db = work / "foreign.sqlite"
    make(db)
    before = snapshot(work)
    one_error(sweep(tmp_path, GEMM, db)[0], f"{db}: ", *needles)
    assert snapshot(work) == before                  # no table added, no WAL switch, no file beside it
    one_error(lockstep("plot", db, "--out", tmp_path / "plots")[0], *needles)
    assert snapshot(work) == before and not (tmp_path / "plots").exists()


def test_special_files_and_directories_are_refused(tmp_path):
    one_error(sweep(tmp_path, GEMM, tmp_path)[0], "is a directory, not a results database")
    fifo = tmp_path / "pipe.sqlite"
    os.mkfifo(fifo)
    result, seconds = sweep(tmp_path, GEMM, fifo)      # opening a FIFO to read it would hang
    one_error(result, f"{fifo}: not a regular file")
    assert seconds < 30


def test_a_spec_that_is_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    for spec in (fifo, "/dev/zero"):
        result, seconds = lockstep("sweep", spec, "--db", tmp_path / "r.sqlite", "--quiet")
        one_error(result, f"{spec}: not a regular file (", "), not a sweep spec")
        assert seconds < 30
    assert not (tmp_path / "r.sqlite").exists()


def _make_read_only(path: Path) -> bool:
    """Make ``path`` unwritable for this user; False if that is impossible here. root ignores
    permission bits, so for root the file is made immutable (chattr +i)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return True
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_a_read_only_database_is_refused_before_its_first_point(tmp_path):
    work = tmp_path / "db"
    work.mkdir()
    db = work / "r.sqlite"
    assert sweep(tmp_path, GEMM.replace("k = [8, 16]", "k = [8]"), db)[0].returncode == 0
    # The same database and spec, the file made read-only: refused when opened, not at a write.
    (work / "r.sqlite").rename(work / "ro.sqlite")
    db = work / "ro.sqlite"
    if not _make_read_only(db):
        pytest.skip("cannot make a file read-only here (root without chattr)")
    try:
        before = db.read_bytes()
        one_error(sweep(tmp_path, GEMM.replace("k = [8, 16]", "k = [8]"), db)[0],
                  f"{db}: the results database is read-only: cannot write it")
        assert db.read_bytes() == before
    finally:
        _make_writable(db)


HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()                 # hold the write lock until the test closes our stdin
con.execute("ROLLBACK")
"""


def test_a_database_locked_by_another_process_is_one_line_then_resumes(tmp_path):
    db = tmp_path / "r.sqlite"
    small = GEMM.replace("k = [8, 16]", "k = [8]")
    assert sweep(tmp_path, small, db)[0].returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result, seconds = sweep(tmp_path, GEMM, db, name="more.toml")
        one_error(result, "another spec")            # the spec is checked without waiting for the lock
        result, seconds = sweep(tmp_path, small, db)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    one_error(result, f"{db}: the results database is locked by another process (waited 2 s")
    assert seconds < 30
    assert stored(db) == 2
    result, _ = sweep(tmp_path, small, db)             # the lock released: the same spec resumes
    assert result.returncode == 0 and "2 already in" in result.stdout, result.stderr


def test_read_rows_refuses_a_missing_database():
    with pytest.raises(SweepError, match=r"^nowhere.sqlite: no such results database$"):
        read_rows("nowhere.sqlite")


# --- sizes and values -----------------------------------------------------------------------------

HUGE_GRID = "[params]\n" + "\n".join(f"{n} = {list(range(1, 201))}" for n in ("array_rows", "array_cols", "m", "k")) \
    + "\nn = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144]\n"
SAMPLES = """
mode = "random"
samples = 1000000000
[params]
array_rows = {low = 1, high = 1024}
array_cols = {low = 1, high = 1024}
m = {low = 1, high = 64}
k = {low = 1, high = 100000}
n = {low = 1, high = 100000}
"""


@pytest.mark.parametrize(("spec", "needles"), [
    (HUGE_GRID, ("the grid has 25,600,000,000 design points, more than a sweep's 100,000",)),
    (SAMPLES, ("samples 1000000000 is more than a sweep's 100,000 design points",)),
    (GEMM.replace("k = [8, 16]", "k = [1e308]"), ("parameter k must be at most 16777216, not 1e+308",)),
    (GEMM.replace("k = [8, 16]", "k = [8]\nclock_hz = [1e308]"),
     ("parameter clock_hz must be at most 1e+11, not 1e+308",)),
    (DECODE + "clock_hz = [1e18]\n", ("parameter clock_hz must be at most 1e+11, not 1e+18",)),
    (DECODE + "weight_memory_bytes = [1e300]\n", ("parameter weight_memory_bytes must be at most 1e+15",)),
    (DECODE.replace("context = [32]", "context = [1000000000]"),
     ("parameter context must be at most 1048576, not 1000000000",)),
    (DECODE + "batch = [100000]\n", ("parameter batch must be at most 65536, not 100000",)),
    (DECODE + "clock_hz = [100000000000]\nweight_bytes_per_cycle = [16000000]\n",
     ("is not valid", "bandwidth_bytes_per_s must be at most 1e+18")),
], ids=["grid-2.6e10", "samples-1e9", "k-1e308", "gemm-clock-1e308", "decode-clock-1e18", "capacity-1e300",
        "context-1e9", "batch-1e5", "bandwidth-product"])
def test_oversized_and_absurd_specs_are_refused_in_seconds_before_anything_is_built(tmp_path, spec, needles):
    db = tmp_path / "r.sqlite"
    result, seconds = sweep(tmp_path, spec, db)
    one_error(result, *needles)
    # The message proves the size was counted, not built; the bound only catches a hang (the
    # unbounded grids ran 16-89 s into a MemoryError), loose enough for a loaded machine.
    assert seconds < 120, f"refused only after {seconds:.1f} s"
    assert not db.exists()                           # nothing made for a refused spec


def test_the_point_cap_is_counted_not_built():
    t0 = time.monotonic()
    with pytest.raises(SweepError, match=rf"^s.toml: the grid has 1,000,000 design points, more than a sweep's "
                                         rf"{MAX_POINTS:,} "):
        parse_spec({"params": {"array_rows": list(range(1, 1001)), "array_cols": list(range(1, 1001)), "m": [1],
                               "k": [8], "n": [8]}}, source="s.toml")
    assert time.monotonic() - t0 < 2
    with pytest.raises(SweepError, match=r"^s.toml: parameter array_rows must be at most 1024, not 1000000$"):
        parse_spec({"mode": "random", "samples": 10, "params": {"array_rows": {"low": 1, "high": 10**6},
                                                                "array_cols": [4], "m": [1], "k": [8], "n": [8]}},
                   source="s.toml")


def test_workers_past_the_cap_are_refused_before_anything_runs(tmp_path):
    db = tmp_path / "r.sqlite"
    cap = max_workers()
    assert cap == WORKERS_PER_CORE * os.cpu_count()
    result, seconds = sweep(tmp_path, GEMM, db, "--workers", "100000")
    one_error(result, f"--workers 100000 is more than {cap} ({WORKERS_PER_CORE} per core, {os.cpu_count()} cores")
    assert seconds < 15 and not db.exists()
    one_error(sweep(tmp_path, GEMM, db, "--workers", "0")[0], "--workers must be a positive integer, not 0")
    result, _ = sweep(tmp_path, GEMM, db, "--workers", str(cap))     # the cap itself runs
    assert result.returncode == 0 and "4 evaluated" in result.stdout, result.stderr
