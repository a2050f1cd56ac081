"""The command line: help, version, the main job, and one-line errors with no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")


def lockstep(*args):
    return subprocess.run([LOCKSTEP, *args], capture_output=True, text=True, timeout=1500)


def test_help_and_version():
    out = lockstep("--help")
    assert out.returncode == 0
    for command in ("run", "gemm", "presets"):
        assert command in out.stdout
    version = lockstep("--version")
    assert version.returncode == 0 and "lockstep, version" in version.stdout


def test_gemm_on_amaranth_reports_exact_result_and_cycles():
    out = lockstep("gemm", "--backend", "amaranth", "-m", "3", "-k", "10", "-n", "6", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["bit_exact"] and summary["mismatches"] == 0
    assert summary["cycles_measured"] == summary["cycles_predicted"] == summary["cycles_counted"]


def test_a_gemm_larger_than_the_memories_runs_in_blocks():
    """M past max_m and K past what the activation memory holds: the driver cuts the GEMM into
    runs of the unit; the result is exact and every run's cycles equal its prediction."""
    out = lockstep("gemm", "-m", "40", "-k", "150", "-n", "6", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["runs"] == 9 and summary["bit_exact"] and summary["cycle_exact"]
    assert summary["cycles_measured"] == summary["cycles_predicted"] == summary["cycles_counted"]


@pytest.mark.parametrize(("args", "message"), [
    (("gemm", "-m", "0"), "GEMM size M must be a positive integer, not 0"),
    (("gemm", "--rows", "0"), "array_rows must be a positive integer, not 0"),
    (("gemm", "--rows", "-2"), "array_rows must be a positive integer, not -2"),
    (("gemm", "--cols", "65"), "array cols must be at most 64 to build, not 65"),
    (("gemm", "--cols", "2000"), "array_rows and array_cols must be at most 1024"),
    (("gemm", "--preset", "9x9"), "preset must be one of 4x4, 8x4, 8x8, demo, ulx3s, not '9x9'"),
    (("gemm", "-n", "-1"), "GEMM size N must be a positive integer, not -1"),
    (("gemm", "-k", "0"), "GEMM size K must be a positive integer, not 0"),
    (("gemm", "-m", "100000", "-k", "100000"),
     "GEMM 100000x100000x20: its random operand A would hold 10,000,000,000 values, more than this command "
     "generates (4,194,304)"),
    (("run", "--tokens", "-1"), "--tokens must be a non-negative integer, not -1"),
    (("run", "--tokens", "500"), "more than the context of 128"),
    (("run", "--backend", "isa", "--waves"), "--waves needs an RTL backend"),
    (("run", "--backend", "serial"), "--backend serial needs --port"),
    (("decode", "--port", "/dev/ttyUSB0"), "--port names the board's serial device and goes with --backend serial"),
    (("run", "--backend", "serial", "--port", "/dev/lockstep-no-such-tty", "--tokens", "1"),
     "cannot open serial port '/dev/lockstep-no-such-tty'"),
])
def test_bad_input_is_one_line_without_traceback(args, message):
    out = lockstep(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("lockstep: error: ") and message in lines[0]


def test_click_usage_errors_are_short():
    out = lockstep("gemm", "-m", "many")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "'many' is not a valid integer" in out.stderr
    out = lockstep("gemm", "--backend", "modelsim")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_main_job_decodes_the_demo_model_on_verilator_cycle_exact():
    from golden.checkpoint import load_demo_model
    from golden.int_model import generate_int
    from golden.quantize import quantize_checkpoint

    out = lockstep("run", "--tokens", "6", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["backend"] == "verilator" and report["cycle_exact"]
    assert all(c is not None for c in report["measured_cycles"])
    ckpt = load_demo_model()
    prompt = ckpt.tokenizer.encode("The old miller ")
    assert report["generated"] == generate_int(quantize_checkpoint(ckpt), prompt, 6)
