"""scripts/bench_weight_rows.py (issue 16's benchmark): on the isa backend (no RTL, fast) its figures are
the cycle model's, computed again here from the model's program structure; bad inputs are one line and
exit status 1. The measured run (Verilator, minutes a build) is recorded in docs/performance.md."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from golden.checkpoint import load_demo_model
from golden.numerics import ceil_div
from golden.quantize import program_structure
from hdl.config import PRESETS
from sim.cli.model import DEFAULT_PROMPT
from sim.machine.cycles import decode_step_cycles

from .conftest import padded_gemm_macs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_weight_rows.py"
TOKENS = 2


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def expected(g: int, prompt_len: int) -> dict:
    """The cycle model's figures for the demo model on ``demo`` at G = ``g``, from the program structure."""
    ckpt = load_demo_model()
    mc = ckpt.config
    config = dataclasses.replace(PRESETS["demo"], weight_rows_per_cycle=g)
    ops = program_structure(mc)
    steps = [decode_step_cycles(ops, mc, config, position=p) for p in range(prompt_len + TOKENS - 1)]
    R, C = config.array_rows, config.array_cols
    padded = padded_gemm_macs(ops, config)
    cycles = [s.total for s in steps]
    mean = sum(cycles) / len(cycles)
    mac_peak = padded / (R * C)
    return {"cycles": mean, "tokens_per_second": config.clock_hz / mean, "padded": padded, "mac_peak": mac_peak,
            "weight_port": padded / (g * C), "first": mac_peak / cycles[0], "last": mac_peak / cycles[-1],
            # steps of P = attention_heads_per_step query heads of a KV group each, one K/V row a step
            "attention": sum(mc.n_layers * mc.n_kv_heads * ceil_div(mc.n_heads // mc.n_kv_heads,
                                                                    config.attention_heads_per_step) * (p + 1)
                             for p in range(len(steps))) / len(steps),
            "steps": len(steps)}


@pytest.fixture(scope="module")
def isa_run(tmp_path_factory):
    png = tmp_path_factory.mktemp("bench") / "weight_rows.png"
    out = bench("--backend", "isa", "--weight-rows", "1,8", "--tokens", str(TOKENS), "--json", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), png, out.stderr


def test_isa_figures_are_the_cycle_models(isa_run):
    result, _, _ = isa_run
    prompt_len = len(load_demo_model().tokenizer.encode(DEFAULT_PROMPT))
    assert (result["backend"], result["measured"], result["prompt"]) == ("isa", False, DEFAULT_PROMPT)
    assert [q["weight_rows_per_cycle"] for q in result["points"]] == [1, 8]
    for q in result["points"]:
        e = expected(q["weight_rows_per_cycle"], prompt_len)
        assert q["steps"] == e["steps"]
        assert q["measured_cycles_per_token"] is None and q["cycle_exact"] is None
        assert q["predicted_cycles_per_token"] == pytest.approx(e["cycles"], rel=1e-12)
        assert q["tokens_per_second"] == pytest.approx(e["tokens_per_second"], rel=1e-12)
        assert q["padded_macs_per_token"] == e["padded"]
        assert q["bounds"]["MAC peak"] == pytest.approx(e["mac_peak"])
        assert q["bounds"]["weight port"] == pytest.approx(e["weight_port"])
        assert q["bounds"]["attention"] == pytest.approx(e["attention"])
        assert q["mac_peak_share"] == pytest.approx(e["mac_peak"] / e["cycles"])
        assert q["mac_peak_share_first"] == pytest.approx(e["first"])
        assert q["mac_peak_share_last"] == pytest.approx(e["last"])
        assert q["binding"] == max(q["bounds"], key=q["bounds"].get)
    narrow, wide = result["points"]
    assert narrow["binding"] == "weight port"            # one row a cycle: the port binds, at 8x the MAC peak
    assert wide["bounds"]["weight port"] == pytest.approx(wide["bounds"]["MAC peak"])   # G = R: a tile a cycle
    assert wide["tokens_per_second"] > 4 * narrow["tokens_per_second"]


def test_isa_plot_and_progress(isa_run):
    _, png, stderr = isa_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in png.parent.iterdir() if p != png]          # no temporary file left behind
    assert "G=1: compiling" in stderr and "G=8: compiling" in stderr


def test_isa_table_says_predicted():
    out = bench("--backend", "isa", "--weight-rows", "8", "--tokens", str(TOKENS))
    assert out.returncode == 0, out.stderr
    prompt_len = len(load_demo_model().tokenizer.encode(DEFAULT_PROMPT))
    e = expected(8, prompt_len)
    assert "PREDICTED by the cycle model (isa backend: no RTL, nothing measured)" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("8 |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[1:6] == ["64", "-", f"{e['cycles']:,.0f}", f"{e['tokens_per_second']:,.0f}",
                          f"{e['mac_peak'] / e['cycles']:.1%}"]
    assert cells[-1].startswith("MAC peak (")


@pytest.mark.parametrize(("args", "message"), [
    (["--weight-rows", "3"], r"--weight-rows 3: weight_rows_per_cycle must divide array_rows \(8\), not 3"),
    (["--weight-rows", "16"], r"--weight-rows 16: weight_rows_per_cycle must divide array_rows \(8\), not 16"),
    (["--weight-rows", "1,x"], r"--weight-rows must be integers separated by commas, e\.g\. 1,2,4,8, not '1,x'"),
    (["--backend", "icarus"], r"--backend must be one of verilator, isa, not 'icarus'"),
    (["--plot", "out.svg"], r"--plot must name a \.png file, not 'out\.svg'"),
    (["--plot", "/nonexistent-dir/w.png"], r"--plot /nonexistent-dir/w\.png: no such directory '/nonexistent-dir'"),
    (["--bogus"], r"unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line(args, message):
    out = bench(*args, timeout=120)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert re.fullmatch(f"bench_weight_rows: error: {message}", lines[0]), lines[0]
