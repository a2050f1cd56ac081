"""Waveforms a person can open: `lockstep run --waves-steps/--waves-cycles/--waves-out` (FST on Verilator)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli.commands import _waves_window
from sim.engine.runner import fst_available

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


@pytest.mark.parametrize(("steps", "cycles", "window"), [
    ("3", None, {"steps": [3, 3]}), ("2-4", None, {"steps": [2, 4]}), (None, "100-200", {"cycles": [100, 200]}),
    (None, None, None)])
def test_the_window_options_parse(steps, cycles, window):
    assert _waves_window(steps, cycles) == window


@pytest.mark.parametrize(("args", "message"), [
    (("--waves-steps", "3-1"), "--waves-steps 3-1: the window is empty"),
    (("--waves-steps", "x"), "--waves-steps takes A or A-B (non-negative integers), not 'x'"),
    (("--waves-cycles", "5"), "--waves-cycles takes A-B (non-negative integers), not '5'"),
    (("--waves-steps", "1", "--waves-cycles", "1-2"), "give --waves-steps or --waves-cycles, not both"),
    (("--waves-steps", "99"), "--waves-steps 99-99: the run has steps 0..15"),
    (("--waves-steps", "1", "--backend", "icarus"),
     "a waveform window (--waves-steps, --waves-cycles) needs the verilator backend, not icarus"),
    (("--waves-out", "/nonexistent/dir"), "--waves-out /nonexistent/dir: no such directory"),
    (("--waves-steps", "1", "--backend", "isa"), "--waves needs an RTL backend (verilator, icarus, amaranth), not isa"),
])
def test_bad_windows_are_one_line_before_anything_runs(args, message):
    out = subprocess.run([LOCKSTEP, "run", "--tokens", "2", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "waves      :" not in out.stdout            # refused before any simulation wrote one
    assert out.stderr.strip().splitlines()[-1] == f"lockstep: error: {message}"


@pytest.mark.slow
def test_one_decode_step_as_fst_lists_the_designs_signals(tmp_path):
    """Step 3 of the demo run on Verilator, as FST under 20 MB in the folder asked for, its size as printed."""
    pywellen = pytest.importorskip("pywellen")
    out = subprocess.run([LOCKSTEP, "run", "--tokens", "1", "--waves-steps", "3", "--waves-out", tmp_path],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^lockstep: waves: [\d,]+ cycles", out.stderr, re.M)
    path, size = re.search(r"^waves      : (\S+) \(([\d,]+) bytes\)$", out.stdout, re.M).groups()
    path = Path(path)
    assert path.parent == tmp_path and path.stat().st_size == int(size.replace(",", ""))
    assert list(tmp_path.iterdir()) == [path]
    assert path.stat().st_size < 20e6
    wave = pywellen.Waveform(str(path))
    assert wave.file_format == ("FST" if fst_available() else "VCD")
    names = {v.full_name for v in wave.all_vars()}          # the design's signals, by hierarchical name
    assert len(names) > 1000 and any(n.endswith(".next_token") for n in names) and any(
        n.endswith(".clk") for n in names)
