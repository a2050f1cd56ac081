"""The command line: help, version, the main job, and one-line errors with no traceback."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.perf.model import CHIP_TABLE_KEYS

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
    bare = lockstep()   # no command: the help, not an error
    assert bare.returncode == 0 and bare.stdout == out.stdout and bare.stderr == ""


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
    (("gemm", "--set", "array_rows=0"), "design 4x4 with --set [chip]: array_rows must be positive, not 0"),
    (("gemm", "--set", "array_rows=-2"), "design 4x4 with --set [chip]: array_rows must be positive, not -2"),
    (("gemm", "--set", "array_cols=65"), "design 4x4 (with --set array_cols=65) is for the performance model only: "
                                         "array cols must be at most 64 to build, not 65 (designs the RTL builds: "
                                         "4x4, 8x4, 8x8, demo, demo-narrow, ulx3s, ulx3s-fmax)"),
    (("gemm", "--set", "array_cols=2000"), "design 4x4 with --set [chip]: array_cols must be at most 1024, not 2000"),
    (("gemm", "--hw", "9x9"), "unknown design '9x9': not a TOML file nor one of 4x4, 8x4, 8x8, a100, a100-80gb, "
                              "cerebras-wse3, demo, demo-narrow, groq-lpu, tpu-v1, ulx3s, ulx3s-fmax"),
    (("gemm", "--hw", "a100"), "design a100 is for the performance model only: its weights are 2-byte and the RTL "
                               "computes with int8 (designs the RTL builds: 4x4, 8x4, 8x8, demo, demo-narrow, ulx3s, "
                               "ulx3s-fmax)"),
    (("gemm", "--set", "array_rows"), "--set takes KEY=VALUE, not 'array_rows'"),
    (("decode", "--set", "fused_rope=2"), "design demo with --set [chip]: fused_rope must be true or false, not 2"),
    (("gemm", "--set", "chip.x.y=1"), "--set chip.x.y: expected KEY, TABLE.KEY or memory.LEVEL.KEY"),
    (("gemm", "--set", "rows=4"), "design 4x4 with --set: unknown key 'rows' in [chip] (known: "
                                  f"{', '.join(CHIP_TABLE_KEYS)})"),
    (("gemm", "-n", "-1"), "GEMM size N must be a positive integer, not -1"),
    (("gemm", "-k", "0"), "GEMM size K must be a positive integer, not 0"),
    (("gemm", "-m", "100000", "-k", "100000"),
     "GEMM 100000x100000x20: its random operand A would hold 10,000,000,000 values, more than this command "
     "generates (4,194,304)"),
    (("build", "--board", "icebreaker"), "multipliers: the 4x4 array needs 17 SB_MAC16"),  # before "building"
    (("run", "--tokens", "-1"), "--tokens must be a non-negative integer, not -1"),
    (("run", "--tokens", "500"), "more than max_context=128"),
    (("run", "--backend", "isa", "--waves"), "--waves needs an RTL backend"),
    (("run", "--backend", "serial"), "--backend serial needs --port"),
    (("decode", "--port", "/dev/ttyUSB0"), "--port names the board's serial device and goes with --backend serial"),
    (("run", "--backend", "serial", "--port", "/dev/lockstep-no-such-tty", "--tokens", "1"),
     "cannot open serial port '/dev/lockstep-no-such-tty'"),
])
def test_bad_input_is_one_line_without_traceback(args, message):
    out = lockstep(*args)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("lockstep: error: ") and message in lines[0]


def test_an_internal_error_is_not_taken_for_a_user_error(monkeypatch):
    """A bare ValueError from inside (a bug, not a check of the user's input) is not reported as the
    user's error: one line naming it as internal, exit status 3; --debug shows its traceback."""
    from click.testing import CliRunner

    import sim.design
    from sim.cli import main

    def broken(*args, **kwargs):
        raise ValueError("injected bug")

    monkeypatch.setattr(sim.design, "load_design", broken)   # what `lockstep presets` calls for each design
    plain = CliRunner().invoke(main, ["presets"])
    assert plain.exit_code == 3
    assert "Traceback" not in plain.output
    assert plain.output.strip().splitlines() == [
        "lockstep: error: internal error: ValueError: injected bug (a bug in Lockstep: rerun with "
        "'lockstep --debug ...' for the traceback and report it)"]
    debug = CliRunner().invoke(main, ["--debug", "presets"])
    assert debug.exit_code == 3
    assert "Traceback (most recent call last)" in debug.output and 'raise ValueError("injected bug")' in debug.output
    assert debug.output.strip().splitlines()[-1].startswith("lockstep: error: internal error: ValueError")


def test_a_project_error_from_inside_stays_the_users(monkeypatch):
    """The same place raising one of the project's own errors (a check of input) is one line, exit 1."""
    from click.testing import CliRunner

    import sim.design
    from golden.errors import InputError
    from sim.cli import main

    def refused(*args, **kwargs):
        raise InputError("array rows must be a positive integer, not 0")

    monkeypatch.setattr(sim.design, "load_design", refused)
    out = CliRunner().invoke(main, ["presets"])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == ["lockstep: error: array rows must be a positive integer, not 0"]


@pytest.mark.parametrize(("args", "message"), [
    (("gemm", "-k", "abc"), "Invalid value for '-k': 'abc' is not a valid integer (see 'lockstep gemm --help')"),
    (("gemm", "-m", "many"), "'many' is not a valid integer"),
    (("nosuch",), "No such command 'nosuch' (see 'lockstep --help')"),
    (("sweep", "{tmp}"), "Invalid value for 'SPEC': File '{tmp}' is a directory"),
    (("gemm", "--backend", "modelsim"), "Invalid value for '--backend': 'modelsim' is not one of"),
    (("build",), "Missing option '--board'. Choose from: ulx3s-85f, icebreaker"),
    (("run", "--tokens"), "Option '--tokens' requires an argument"),
    (("gemm", "--bogus"), "No such option '--bogus'"),
])
def test_usage_errors_are_one_line_with_exit_status_2(tmp_path, args, message):
    """Errors click finds while parsing follow the one rule of every other error: one line
    'lockstep: error: ...' (exit status 2, a malformed command line)."""
    out = lockstep(*(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("lockstep: error: ") and message.format(tmp=tmp_path) in lines[0]


@pytest.mark.parametrize("args", [
    ("run", "--baud", "0"), ("decode", "--baud", "-9600"), ("build", "--board", "ulx3s-85f", "--plan", "--baud", "0"),
    ("build", "--board", "icebreaker", "--baud", "0"),
])
def test_a_baud_rate_is_checked_once_for_every_command(args):
    out = lockstep(*args)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [f"lockstep: error: baud must be a positive integer, not {args[-1]}"]


@pytest.mark.parametrize("backend", ["isa", "golden"])
def test_nothing_measured_is_no_claim(backend):
    """isa and golden measure no cycles: cycle_exact is null (not true), each step's predicted
    cycles stand beside null measured ones, and the text says 'not measured'."""
    from hdl.config import PRESETS

    out = lockstep("decode", "--backend", backend, "--tokens", "2", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["cycle_exact"] is None
    assert report["measured_cycles"] == [None] * report["steps"]
    assert len(report["predicted_cycles"]) == report["steps"] and min(report["predicted_cycles"]) > 0
    assert report["design"] == {"name": "demo", "settings": [], "config": PRESETS["demo"].as_dict()}
    text = lockstep("decode", "--backend", backend, "--tokens", "2")
    assert text.returncode == 0, text.stderr
    assert f"measured   : not measured (the {backend} backend runs no RTL" in text.stdout
    assert "equal to the prediction" not in text.stdout


def test_main_job_decodes_the_demo_model_on_verilator_cycle_exact():
    from golden.checkpoint import load_demo_model
    from golden.int_model import generate_int
    from golden.quantize import quantize_checkpoint
    from hdl.config import PRESETS

    out = lockstep("run", "--tokens", "6", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["backend"] == "verilator" and report["cycle_exact"] is True
    assert all(c is not None for c in report["measured_cycles"])
    assert report["measured_cycles"] == report["predicted_cycles"]
    assert report["design"] == {"name": "demo", "settings": [], "config": PRESETS["demo"].as_dict()}
    assert report["wall_seconds_in_all"] > report["wall_seconds"] + report["load_seconds"] > 0
    ckpt = load_demo_model()
    prompt = ckpt.tokenizer.encode("The old miller ")
    assert report["generated"] == generate_int(quantize_checkpoint(ckpt), prompt, 6)
    # Built now: a second run says nothing of a build, and its wall time counts start-up apart.
    text = lockstep("run", "--tokens", "2")
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    line = next(x for x in text.stdout.splitlines() if x.startswith("wall time"))
    in_all, decoding = map(_seconds, re.fullmatch(r"wall time  : ([\d.,]+ [mu]?s) in all, ([\d.,]+ [mu]?s) decoding "
                                                  r"\([\d,]+ simulated cycles per second\)", line).groups())
    assert in_all > decoding > 0


def test_a_build_reports_progress_only_when_it_happens(tmp_path):
    """A fresh cache: the conversion and the simulator build say so on stderr, and end; the same
    command again reuses both and says nothing."""
    env = {**os.environ, "LOCKSTEP_CACHE": str(tmp_path)}
    args = [LOCKSTEP, "gemm", "--backend", "icarus", "-m", "2", "-k", "4", "-n", "4"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0] == "lockstep: converting gemm_unit to Verilog (once per design; cached)..."
    assert "lockstep: building the icarus model of gemm_unit (once per design: a few minutes; later runs " \
           "reuse it)..." in lines
    assert re.fullmatch(r"lockstep:   \.\.\. building the icarus model of gemm_unit: done in \d+ s", lines[-1])
    again = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0 and again.stderr == ""


def _processes_under(path):
    """Processes (of this user) whose working directory is under ``path``: a simulator runs in its run directory."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(path):
                found.append(int(proc.name))
    return found


def _shared_builds(tmp_path):
    """A cache in ``tmp_path`` whose builds and Verilog are the user's (built once, shared)."""
    from sim.engine.runner import cache_root

    real = cache_root()
    for sub in ("build", "verilog"):
        (real / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / sub).symlink_to(real / sub)
    return {**os.environ, "LOCKSTEP_CACHE": str(tmp_path)}


def _interrupt(tmp_path, args, started, signum):
    """Start ``lockstep *args`` on a cache in ``tmp_path``; once ``started()`` (the simulation is
    under way), send ``signum``; the command ends in one line, leaving no process and no file."""
    proc = subprocess.Popen([LOCKSTEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_shared_builds(tmp_path), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 1500       # the first run may build the model
        while not (started() and _processes_under(tmp_path / "runs")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr
    errors = [x for x in stderr.splitlines() if not x.startswith("lockstep: ") or x.startswith("lockstep: error: ")]
    assert errors == [f"lockstep: error: interrupted by {signal.Signals(signum).name}"
                      f"{' (Ctrl-C)' if signum == signal.SIGINT else ''}"]
    assert list((tmp_path / "runs").iterdir()) == []
    # The runner SIGKILLs what is left of the simulator's group and waits for it (up to 5 s); on a
    # loaded machine a killed process can still be on its way out when the command returns: it
    # must be gone within seconds, not linger.
    deadline = time.monotonic() + 10
    while _processes_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_under(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_decode_leaves_nothing_behind(tmp_path, signum):
    """Ctrl-C or SIGTERM in the middle of a Verilator decode (the simulator in a worker thread):
    the simulator is stopped, the run directory and the progress file removed."""
    def started():
        progress = list((tmp_path / "runs").glob("decode-progress-*.jsonl"))
        return bool(progress) and progress[0].stat().st_size > 0    # the first step is done

    _interrupt(tmp_path, ["run", "--tokens", "100"], started, signum)


def test_an_interrupted_gemm_leaves_nothing_behind(tmp_path):
    """Ctrl-C in the middle of a GEMM on Icarus (the simulator waited on by the main thread)."""
    def started():
        return any((tmp_path / "runs").glob("icarus-gemm_unit-*/sim.log"))

    _interrupt(tmp_path, ["gemm", "--backend", "icarus", "-m", "64", "-k", "512", "-n", "64"], started,
               signal.SIGINT)


ROOT = Path(__file__).resolve().parents[2]


def _seconds(text: str) -> float:
    """A time as the printers show it (sim/numbers.py: 51.04 s, 272.1 ms, 3,600 s) in seconds."""
    value, unit = text.split()
    return float(value.replace(",", "")) * {"s": 1, "ms": 1e-3, "us": 1e-6}[unit]


def test_readme_sample_wall_time_has_the_format_run_prints():
    """README's sample of `lockstep run` gives the wall time as run prints it (both figures)."""
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("wall time  :"))
    in_all, decoding = map(_seconds, re.fullmatch(r"wall time  : ([\d.,]+ [mu]?s) in all, ([\d.,]+ [mu]?s) decoding "
                                                  r"\([\d,]+ simulated cycles per second\)", line).groups())
    assert in_all > decoding > 0


def test_readme_sample_cycles_and_bound_lines_are_what_run_prints():
    """README's sample (`lockstep run`: the default design, prompt and tokens) shows the cycles and bound
    lines the cycle model gives for that run (predicted on any backend: isa here): the full-width
    design is bound by the array's MAC peak, not by its weight port."""
    readme = (ROOT / "README.md").read_text()
    sample = [x for x in readme.splitlines() if x.startswith(("cycles     :", "bound      :"))][:2]
    out = lockstep("run", "--backend", "isa")
    assert out.returncode == 0, out.stderr
    printed = [x for x in out.stdout.splitlines() if x.startswith(("cycles     :", "bound      :"))]
    assert sample == printed and printed[1].startswith("bound      : MAC peak, ")


def _fpga_doc_examples():
    """docs/fpga.md's examples of what `lockstep build` prints: `$ lockstep ...` lines followed by
    their output, and the `--plan` line given after "prints:"."""
    text = (ROOT / "docs" / "fpga.md").read_text()
    examples = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ lockstep "):
                examples.append((line[len("$ lockstep "):].split(), [lines[i + 1]]))
    plan = re.search(r"`lockstep (build [^`]*--plan)` prints:\n\n```\n(.*?)```", text, re.S)
    examples.append((plan.group(1).split(), plan.group(2).splitlines()))
    return examples


@pytest.mark.parametrize(("args", "printed"), _fpga_doc_examples(), ids=lambda x: " ".join(x)[:60])
def test_fpga_doc_shows_what_build_prints(args, printed):
    """Each example runs with --plan (the same checks, no tools), so none can start a build."""
    out = lockstep(*args, *(() if "--plan" in args else ("--plan",)))
    assert (out.stdout + out.stderr).splitlines() == printed


@pytest.mark.parametrize(("args", "status", "message"), [
    (("gemm", "--hw", "a100", "--json"), 1, "design a100 is for the performance model only: its weights are 2-byte "
                                           "and the RTL computes with int8 (designs the RTL builds: 4x4, 8x4, 8x8, "
                                           "demo, demo-narrow, ulx3s, ulx3s-fmax)"),
    (("estimate", "--model", "nope", "--json"), 1, "unknown model 'nope': not a checkpoint directory nor one of gpt2, "
                                                   "llama-2-7b, llama-2-70b, llama-3-8b, llama-3-70b, llama-3.1-70b, "
                                                   "llama-3.2-1b"),
    (("presets", "--json", "--bogus"), 2, "No such option '--bogus' (see 'lockstep presets --help')"),
])
def test_errors_under_json_are_one_json_object_on_stderr(args, status, message):
    out = subprocess.run([LOCKSTEP, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == status and out.stdout == ""
    assert [json.loads(line) for line in out.stderr.splitlines()] == [{"error": message}]


def test_a_reader_that_goes_away_is_not_an_error():
    """`lockstep presets | head -1` when the reader has gone before lockstep writes: no 'Broken pipe'
    error line, the status a shell gives a process SIGPIPE ended (141). The pipe's read end is closed
    before the command starts, so its first write fails, every time."""
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run([LOCKSTEP, "presets"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert out.returncode == 141 and out.stderr == ""


def test_json_error_mode_ends_with_its_invocation(capsys):
    """A `--json` run's errors are JSON; the next error printed in the same process (another command
    line, a local click group in a test) is a plain line again."""
    from click.testing import CliRunner

    from sim.cli import main
    from sim.cli.errors import emit_error

    out = CliRunner().invoke(main, ["estimate", "--model", "nope", "--json"])
    assert out.exit_code != 0 and out.stderr.startswith('{"error": '), out.stderr
    emit_error("after")
    assert capsys.readouterr().err == "lockstep: error: after\n"


def test_the_chip_keys_an_error_lists_are_every_config_field_once():
    from hdl.config import Config

    assert len(set(CHIP_TABLE_KEYS)) == len(CHIP_TABLE_KEYS)
    assert set(Config.__dataclass_fields__) <= set(CHIP_TABLE_KEYS)
    assert CHIP_TABLE_KEYS[:3] == ("array_rows", "array_cols", "vector_lanes")
    assert {"kv_block", "gemm_product_register", "fabric_products", "weight_memory_bytes"} <= set(CHIP_TABLE_KEYS)
