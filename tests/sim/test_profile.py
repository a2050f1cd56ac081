"""Where the cycles go: `lockstep run/decode --profile`, `--csv`, `--trace`, and the design options on the RTL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from golden.checkpoint import demo_model_path, load_checkpoint
from hdl.config import PRESETS
from sim.machine.profile import UNITS, chrome_trace, profile_run, unit_of
from sim.runtime import decode, prepare

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


def lockstep(*args, timeout=1800):
    return subprocess.run([LOCKSTEP, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def check_trace(trace: dict, profile_json: dict) -> None:
    """The timeline holds one slice per instruction of every step on its unit's track, none overlapping
    on a track, each as long as the trace memory's count (or the prediction where nothing was measured)."""
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(names.values()) == sorted(UNITS)
    slices = [e for e in events if e["ph"] == "X"]
    tracks = defaultdict(list)
    for e in slices:
        tracks[names[e["tid"]]].append(e)
    for unit, track in tracks.items():
        track.sort(key=lambda e: e["args"]["start_cycle"])
        for a, b in zip(track, track[1:], strict=False):
            assert a["args"]["start_cycle"] + a["args"]["cycles"] <= b["args"]["start_cycle"], unit
            assert a["ts"] + a["dur"] <= b["ts"] * (1 + 1e-12), unit
    instructions = [e for e in slices if e["cat"] != "step"]
    expected = [i for s in profile_json["per_step"] for i in s["instructions"]]
    assert len(instructions) == len(expected)
    by_key = {(e["args"]["position"], e["args"]["index"]): e for e in instructions}
    for s in profile_json["per_step"]:
        for i in s["instructions"]:
            e = by_key[(s["position"], i["index"])]
            assert e["args"]["cycles"] == (i["predicted"] if i["measured"] is None else i["measured"])
            assert names[e["tid"]] == unit_of(i["op"])
    steps = [e for e in slices if e["cat"] == "step"]
    assert [e["args"]["cycles"] for e in steps] == [
        s["predicted"] if s["measured"] is None else s["measured"] for s in profile_json["per_step"]]


def test_profile_on_the_instruction_level_model_predicts_every_instruction():
    compiled = prepare(load_checkpoint(demo_model_path()), PRESETS["demo"])
    report = decode(compiled, "isa", [1, 2, 3], 2, profile=True)
    prof = profile_run(compiled, [(s.position, s.token_in, s.token_out, s.trace) for s in report.steps])
    assert [s.predicted for s in prof.steps] == [s.predicted_cycles for s in report.steps]
    assert prof.measured_total is None and prof.cycle_exact is None
    d = prof.as_dict()
    assert sum(r["predicted"] for r in d["by_op"]) == sum(r["predicted"] for r in d["by_layer"]) \
        == sum(r["predicted"] for r in d["by_instruction"]) == prof.predicted_total
    assert sum(r["share"] for r in d["by_op"]) == pytest.approx(1.0, abs=len(d["by_op"]) * 2.3e-16)
    assert all(r["measured"] is None for r in d["by_instruction"])
    layers = {r["name"] for r in d["by_layer"]}
    assert layers == {*range(compiled.model.config.n_layers), None}
    check_trace(json.loads(json.dumps(chrome_trace(prof))), d)
    rows = list(csv.DictReader(io.StringIO(prof.csv())))
    assert len(rows) == len(report.steps) * len([op for op in compiled.ops if op is not None])
    assert {r["measured"] for r in rows} == {""}


def test_decode_profile_csv_and_trace_from_the_command_line(tmp_path):
    trace = tmp_path / "t.json"
    out = lockstep("decode", "--tokens", "1", "--profile", "--csv", "--trace", trace)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and rows[0]["op"] == "embed" and rows[0]["measured"] == ""
    data = json.loads(trace.read_text())
    assert sum(1 for e in data["traceEvents"] if e["ph"] == "X" and e["cat"] != "step") == len(rows)
    assert not list(tmp_path.glob(".*tmp"))
    out = lockstep("decode", "--tokens", "1", "--csv")
    assert out.returncode == 1 and out.stderr == "lockstep: error: --csv prints the profile: give --profile with it\n"
    out = lockstep("decode", "--tokens", "1", "--trace", tmp_path)
    assert out.returncode == 1 and out.stderr == f"lockstep: error: --trace {tmp_path}: is a directory\n"


def test_run_profile_on_verilator_measures_every_instruction_equal_to_its_prediction(tmp_path):
    """The demo model on Verilator: every instruction's trace-memory count equals its prediction,
    they sum to each step's cycle counter, and the timeline passes the overlap test."""
    trace = tmp_path / "run.json"
    out = lockstep("run", "--tokens", "2", "--profile", "--json", "--trace", trace)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    prof = report["profile"]
    assert prof["cycle_exact"] is True and report["cycle_exact"] is True
    for step, measured in zip(prof["per_step"], report["measured_cycles"], strict=True):
        counts = [i["measured"] for i in step["instructions"]]
        assert counts == [i["predicted"] for i in step["instructions"]]
        assert sum(counts) == step["measured"] == measured
    assert prof["measured_cycles"] == sum(report["measured_cycles"])
    check_trace(json.loads(trace.read_text()), prof)


def test_a_changed_design_predicts_other_cycles():
    """`--set` reaches the compiler and the cycle model: a 4x4 array with 4 lanes (and a port of its
    4 rows) is slower than demo's 8x8."""
    base = lockstep("decode", "--tokens", "1", "--json")
    small = lockstep("decode", "--hw", "demo", "--set", "array_rows=4", "--set", "array_cols=4",
                     "--set", "vector_lanes=4", "--set", "weight_rows_per_cycle=4", "--tokens", "1", "--json")
    assert base.returncode == 0 and small.returncode == 0, small.stderr
    b, s = json.loads(base.stdout), json.loads(small.stdout)
    assert s["design"]["config"]["array_rows"] == 4 and s["design"]["settings"] == [
        "array_rows=4", "array_cols=4", "vector_lanes=4", "weight_rows_per_cycle=4"]
    assert s["predicted_cycles_per_token"] > b["predicted_cycles_per_token"]
    assert s["generated"] == b["generated"]          # the same integer program, another machine


@pytest.mark.slow
def test_a_changed_design_runs_on_verilator_equal_to_its_prediction():
    out = lockstep("run", "--hw", "demo-narrow", "--set", "array_rows=4", "--set", "array_cols=4", "--set",
                   "vector_lanes=4", "--tokens", "2", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["cycle_exact"] is True and r["measured_cycles"] == r["predicted_cycles"]
