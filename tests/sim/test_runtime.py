"""The host decode loop: every backend gives the integer model's tokens; bad requests are refused first.

The RTL backends (amaranth, icarus, verilator) run in tests/sim/test_top_rtl.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from golden.checkpoint import load_demo_model
from golden.int_model import generate_int
from hdl.config import PRESETS
from sim.machine.cycles import decode_step_cycles
from sim.runtime import BACKENDS, MEASURING_BACKENDS, decode, prepare

from ..conftest import padded_gemm_macs

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


@pytest.fixture(scope="module")
def compiled():
    return prepare(load_demo_model(), PRESETS["demo"])


@pytest.mark.parametrize("backend", sorted(set(BACKENDS) - set(MEASURING_BACKENDS)))
def test_backends_generate_the_integer_models_tokens(compiled, backend):
    prompt = load_demo_model().tokenizer.encode("The old miller ")
    report = decode(compiled, backend, prompt, 32)
    assert report.generated == generate_int(compiled.model, prompt, 32)
    assert len(report.steps) == len(prompt) + 31
    for step in report.steps:  # every step's prediction is the cycle model's, at that position
        expected = decode_step_cycles(compiled.model.program, compiled.model.config, compiled.config,
                                      position=step.position)
        assert step.predicted_cycles == expected.total


@pytest.mark.parametrize(("args", "match"), [
    (("nope", [1], 3), r"^backend must be one of golden, isa, amaranth, icarus, verilator, serial, not 'nope'$"),
    (("isa", [], 3), r"^prompt must hold at least one token$"),
    (("isa", [99], 3), r"^prompt token must be in 0\.\.47, not 99$"),
    (("isa", [1, 2], 200), r"^prompt \(2 tokens\) plus 200 new tokens needs 201 positions, more than "
                           r"max_context=128$"),
    (("isa", [1], -1), r"^the number of new tokens must be a non-negative integer, not -1$"),
])
def test_bad_requests_are_refused(compiled, args, match):
    with pytest.raises(ValueError, match=match):
        decode(compiled, *args)


def test_cli_decode_prints_tokens_and_predicted_figures():
    out = subprocess.run([LOCKSTEP, "decode", "--tokens", "8", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["generated"]) == 8 and report["text"]
    assert report["predicted_cycles_per_token"] >= report["lower_bound_cycles"] > 0


@pytest.mark.parametrize(("design", "binding"), [("demo-narrow", "weight port"), ("demo", "MAC peak")])
def test_cli_names_the_binding_bound_and_the_mac_peak_share(design, binding):
    """`lockstep decode` prints the share of the array's MAC peak and the binding bound by name, and
    --json and --profile carry the same figures: on the one-row port the port binds (8 bytes a cycle),
    on the full-width demo design the array's MACs do."""
    from golden.quantize import program_structure

    config = PRESETS[design]
    R, C, G = config.array_rows, config.array_cols, config.weight_rows_per_cycle
    padded = padded_gemm_macs(program_structure(load_demo_model().config), config)
    mac_bound, port_bound = padded / (R * C), padded / (G * C)
    assert binding == ("weight port" if port_bound > mac_bound else "MAC peak")
    args = ("decode", "--hw", design, "--backend", "isa", "--tokens", "2")
    out = subprocess.run([LOCKSTEP, *args, "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    cycles = report["predicted_cycles_per_token"]
    assert report["binding"] == binding
    assert report["bounds"]["MAC peak"] == mac_bound and report["bounds"]["weight port"] == port_bound
    assert report["lower_bound_cycles"] == max(report["bounds"].values()) == max(mac_bound, port_bound)
    assert report["mac_peak_share"] == pytest.approx(mac_bound / cycles, rel=1e-12)
    assert report["efficiency"] == pytest.approx(max(mac_bound, port_bound) / cycles, rel=1e-12)
    text = subprocess.run([LOCKSTEP, *args, "--profile"], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    what = f"{G * C} bytes a cycle" if binding == "weight port" else f"{R}x{C} MACs a cycle"
    share = f"{mac_bound / cycles:.0%} of the array's MAC peak"
    lines = text.stdout.splitlines()
    assert any(line.startswith("cycles     : ") and line.endswith(f"predicted by the cycle model, {share}")
               for line in lines), text.stdout
    assert any(line.startswith(f"bound      : {binding}, {max(mac_bound, port_bound):,.0f} cycles ({what}), ")
               for line in lines), text.stdout
    # The profile's per-unit summary: every step's bounds summed.
    steps = report["steps"]
    assert any(line.strip().startswith(f"over {steps} steps: ") and
               f"bound: {binding}, {steps * max(mac_bound, port_bound):,.0f} cycles ({what})" in line
               for line in lines), text.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--tokens", "500"), "more than max_context=128"),
    (("--prompt", "Zebra"), "character 'Z' at position 0 is not in the tokenizer's alphabet"),
    (("--hw", "4x4"), "the model does not fit: its weight memory"),
    (("--hw", "tpu-v1"), "design tpu-v1 is for the performance model only: array rows must be at most 64 to build, "
                         "not 256 (designs the RTL builds: 4x4, 8x4, 8x8, demo, demo-narrow, ulx3s, ulx3s-fmax)"),
    (("--model", "/nonexistent"), "/nonexistent"),
])
def test_cli_decode_errors_are_one_line(args, message):
    out = subprocess.run([LOCKSTEP, "decode", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockstep: error:") and message in lines[0]
