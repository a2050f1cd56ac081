"""scripts/bench_batching.py (issue 17's benchmark): its decode figures are the cycle model's passes,
computed again here; every sequence is checked against its prompt run alone; bad inputs are one line and
exit status 1. The full run's table is in docs/performance.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from golden.checkpoint import load_demo_model
from golden.quantize import program_structure
from sim.cli.model import DEFAULT_PROMPT
from sim.design import load_design
from sim.machine.cycles import pass_cycles

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_batching.py"
TOKENS = 8


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_the_decode_figures_are_the_cycle_model_s_passes(tmp_path):
    png = tmp_path / "b.png"
    out = bench("--designs", "demo-narrow", "--batches", "1,4", "--tokens", TOKENS, "--plot", png, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert [r["batch"] for r in rows] == [1, 4] and all(r["bit_exact"] for r in rows)
    ckpt = load_demo_model()
    mc, config = ckpt.config, load_design("demo-narrow").config
    ops = program_structure(mc)
    p = len(ckpt.tokenizer.encode(DEFAULT_PROMPT))
    for r in rows:
        # The decode passes: B rows, every one past the prompt; their cycles the cycle model's.
        assert r["decode_passes"] == len(r["decode_positions"]) > 0
        assert all(len(ps) == r["batch"] and min(ps) >= p for ps in r["decode_positions"])
        cycles = [pass_cycles(ops, mc, config, positions=ps).total for ps in r["decode_positions"]]
        assert r["decode_tokens_per_s"] == pytest.approx(r["batch"] * len(cycles) * config.clock_hz / sum(cycles))
    assert rows[1]["decode_ratio"] > 3          # the narrow port: the GEMMs of 4 rows cost about one row's
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "message"), [
    (("--batches", "0"), "--batches takes positive integers separated by commas, not '0'"),
    (("--batches", "9", "--designs", "demo"), "--batches 9: design demo holds 8 sequences of the demo model"),
    (("--designs", "nosuch"), "unknown design 'nosuch'"),
    (("--tokens", "0"), "--tokens must be a positive integer, not 0"),
    (("--plot", "/nonexistent/x.png"), "--plot /nonexistent/x.png: no such directory"),
])
def test_bad_inputs_are_one_line(args, message):
    out = bench(*args, *(() if "--plot" in args else ("--plot", "")))
    assert out.returncode == 1
    assert out.stderr.startswith(f"bench_batching: error: {message}") and out.stderr.count("\n") == 1
