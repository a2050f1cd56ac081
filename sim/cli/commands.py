"""The ``lockstep`` command line.

Every error a user can cause (a bad size, a shape that does not fit, a missing simulator, a hung
simulation) ends as one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from golden.errors import InputError

from ..engine.toolchain import SIMULATORS
from ..numbers import count, measured_seconds, number, quantity
from .design import design_options, presets_cmd
from .design import load as load_design
from .errors import LockstepGroup, friendly
from .fpga import baud_option, build_cmd
from .model import Number, golden_cmd, inspect_cmd, load_model, prompt_ids_of, text_of
from .perf import estimate_cmd
from .serve import serve_bench_cmd

# The commands import the layers below them (engine, runtime, perf, fpga, golden, hdl) when they run, not
# here: importing them all at start-up made every `lockstep` invocation about 3 s slower (`lockstep --help`
# took 0.6 s with them deferred and 3.6 s with them at module level, measured on this machine).

__all__ = ["main"]

BACKENDS = SIMULATORS


def _version() -> str:
    try:
        return version("lockstep")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


#: When the command started (``wall time ... in all`` counts from the process's start, or from here).
_started = time.perf_counter()


def _seconds_in_all() -> float:
    """Wall seconds since the process started (Python's own start-up and imports included), from
    /proc; since the command's start where that is not available or the process is older than the
    command (a command run inside another program)."""
    since_command = time.perf_counter() - _started
    try:
        from pathlib import Path

        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        since_process = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return since_command
    return since_process if since_command <= since_process < since_command + 5 else since_command


def _progress(text: str) -> None:
    click.echo(f"lockstep: {text}", err=True)


@click.group(cls=LockstepGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="lockstep")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error (a bug in Lockstep).")
def main(debug):
    """Lockstep: an RTL-level emulator of a transformer-decode inference accelerator.

    Every result is checked bit for bit against the NumPy golden model, and every cycle the
    hardware takes is predicted by the compiler's cycle model and confirmed by the RTL.

    Errors are one line on stderr, "lockstep: error: ...": exit status 1 for an error in what
    was asked, 2 for a malformed command line, 3 for an internal error (a bug in Lockstep: rerun
    with --debug for its traceback and report it), 128 + the signal's number when interrupted.
    """
    global _started
    from ..engine.runner import report_progress_to

    _started = time.perf_counter()
    # A conversion to Verilog or a simulator build says so on stderr, with its progress.
    report_progress_to(_progress)


def _gemm_options(fn):
    options = [
        click.option("--backend", type=click.Choice(BACKENDS), default="verilator", show_default=True,
                     help="Simulator that runs the RTL."),
        design_options("4x4"),
        click.option("-m", "m", type=int, default=8, show_default=True, help="Activation rows M."),
        click.option("-k", "k", type=int, default=24, show_default=True, help="Reduction size K."),
        click.option("-n", "n", type=int, default=20, show_default=True, help="Output columns N."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random operands."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text."),
        click.option("--waves", is_flag=True, help="Write a waveform and print its path."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


#: Largest random operand ``lockstep gemm`` generates (values): past it the operands and the job
#: alone take gigabytes, and the simulation hours.
GEMM_MAX_GENERATED = 1 << 22


def _run_gemm(backend, hw, settings, m, k, n, seed, as_json, waves):
    import numpy as np

    from golden.numerics import gemm_int8

    from ..engine.runner import check_simulator, run
    from ..flows.gemm import plan_tiled_gemm

    design = load_design(hw, settings, rtl=True)
    config = design.config
    for name, rows, cols in (("A", m, k), ("W", k, n)):
        if min(m, k, n) > 0 and rows * cols > GEMM_MAX_GENERATED:
            raise InputError(f"GEMM {m}x{k}x{n}: its random operand {name} would hold {rows * cols:,} values, "
                             f"more than this command generates ({GEMM_MAX_GENERATED:,})")
    plan = plan_tiled_gemm(config, m, k, n)
    check_simulator(backend)
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=(m, k))
    w = rng.integers(-128, 128, size=(k, n))
    # The extremes are always exercised: a corner of each operand at -128 and 127.
    a[0, 0], w[0, 0], a[-1, -1], w[-1, -1] = -128, -128, 127, 127
    runs = len(plan.blocks)
    if not as_json:
        cut = f" in {runs} runs of the unit (the configuration's memories hold no more at once)" if runs > 1 else ""
        click.echo(f"GEMM {m}x{k}x{n} (int8 x int8 -> int32) on a {config.array_rows}x{config.array_cols} "
                   f"array, {backend}: {count(plan.tiles)} tiles{cut}, predicted {count(plan.predicted_cycles)} cycles")
    t0 = time.perf_counter()
    result = run(backend, "gemm_unit", config.as_dict(), "gemm_unit",
                 {"config": config.as_dict(), "cases": plan.cases(a, w)}, waves=waves)
    wall = time.perf_counter() - t0
    cases = result["cases"]
    measured, counted = sum(c["cycles"] for c in cases), sum(c["edges"] for c in cases)
    golden = gemm_int8(a, w)
    got = plan.assemble([c["out"] for c in cases])
    mismatches = int((got != golden).sum())
    # Every run equals its own prediction (not only the sums).
    cycle_ok = all(c["cycles"] == c["edges"] == b.plan.predicted_cycles
                   for c, b in zip(cases, plan.blocks, strict=True))
    summary = {
        "backend": backend, "design": design.name, "array": [config.array_rows, config.array_cols],
        "m": m, "k": k, "n": n,
        "tiles": plan.tiles, "runs": runs, "bit_exact": mismatches == 0, "mismatches": mismatches,
        "cycles_measured": measured, "cycles_counted": counted,
        "cycles_predicted": plan.predicted_cycles, "cycle_exact": cycle_ok,
        "time_at_clock_us": measured / config.clock_hz * 1e6, "clock_mhz": config.clock_hz / 1e6,
        "wall_seconds": measured_seconds(wall), "waves": result.get("waves"),
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"result   : {'bit-exact' if mismatches == 0 else f'{mismatches} MISMATCHES'} against "
                   f"the golden model ({count(m * n)} int32 values)")
        click.echo(f"cycles   : measured {count(measured)} (RTL counter), {count(counted)} (simulator clock), "
                   f"predicted {count(plan.predicted_cycles)}: {'exact' if cycle_ok else 'DIFFERENT'}")
        click.echo(f"time     : {quantity(measured / config.clock_hz, 's')} at {quantity(config.clock_hz, 'Hz')}; "
                   f"{quantity(wall, 's')} of wall time in simulation")
        if waves:
            click.echo(f"waves    : {result.get('waves')}")
    if mismatches or not cycle_ok:
        sys.exit(1)


@main.command()
@_gemm_options
@friendly
def gemm(**kwargs):
    """Run a random int8 GEMM on the emulated array and check it against the golden model."""
    _run_gemm(**kwargs)


DECODE_BACKENDS = [*SIMULATORS, "isa", "golden", "serial"]


def _decode_options(default_backend):
    def wrap(fn):
        options = [
            click.option("--backend", type=click.Choice(DECODE_BACKENDS), default=default_backend,
                         show_default=True,
                         help="verilator, icarus, amaranth: the RTL decode top level on that simulator (cycles "
                              "measured); isa: the compiled program on the instruction-level model; golden: the "
                              "integer model; serial: a board built by 'lockstep build', over --port."),
            click.option("--model", "model_dir", default=None, metavar="DIR",
                         help="Checkpoint directory (default: the demo model)."),
            design_options("demo"),
            click.option("--prompt", default=None, help="Prompt text (default: 'The old miller ')."),
            click.option("--prompt-ids", default=None, help="Prompt as token ids, e.g. '1,2,3'."),
            click.option("--tokens", "n_tokens", type=int, default=48, show_default=True,
                         help="Tokens to generate."),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text."),
            click.option("--profile", is_flag=True,
                         help="Where the cycles go: per op kind, per layer, per unit and per instruction, "
                              "predicted and measured (the RTL's trace memory; '-' where nothing is measured)."),
            click.option("--csv", "as_csv", is_flag=True,
                         help="With --profile: print every instruction of every step as CSV instead of text."),
            click.option("--trace", "trace_path", default=None, metavar="FILE.json",
                         help="Write the run's timeline in the Chrome trace event format (Perfetto, "
                              "chrome://tracing): one track per unit, one slice per instruction."),
            click.option("--waves", is_flag=True,
                         help="Write a waveform of the run (RTL backends; FST on Verilator and Icarus) and print "
                              "its path and size."),
            click.option("--waves-steps", default=None, metavar="A[-B]",
                         help="Only decode steps A..B (positions; implies --waves; verilator)."),
            click.option("--waves-cycles", default=None, metavar="A-B",
                         help="Only cycles A..B-1, counted from the first step's start (implies --waves; "
                              "verilator)."),
            click.option("--waves-out", default=None, metavar="DIR",
                         help="Put the waveform in DIR (implies --waves; default: the run's cache folder)."),
            click.option("--port", default=None, metavar="DEVICE",
                         help="Serial device of the board (serial backend), e.g. /dev/ttyUSB0."),
            baud_option("UART rate of the board's link (serial backend)."),
            click.option("--loaded", is_flag=True,
                         help="The board already holds this model (serial backend): compare its program, "
                              "load nothing."),
            click.option("--speculative", "drafter", default=None, metavar="draft|lookup",
                         help="Speculative decoding (docs/speculative.md; backends golden, isa, and the simulators: "
                              "decided on isa, replayed on the RTL and measured): a draft model "
                              "(draft) or prompt lookup (lookup) proposes tokens, the model checks them in one "
                              "pass; prints acceptance, cycles per token and the speedup over plain decoding."),
            click.option("--draft-len", "draft_len", type=Number(int), default=None, metavar="K",
                         help="With --speculative: tokens drafted a round (default 4; at most the design's rows "
                              "a pass - 1)."),
            click.option("--draft", "draft_dir", default=None, metavar="DIR",
                         help="With --speculative draft: the draft model's checkpoint (default: golden/data/draft)."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn
    return wrap


@main.command()
@_decode_options("verilator")
@friendly
def run(**kwargs):
    """The main job: the demo model generates text on the emulated accelerator, token by token.

    Every step runs on the RTL (Verilator by default) and its measured cycles are checked against
    the cycle model's prediction; the summary gives cycles per token, tokens/s at the configured
    clock and simulated cycles per wall second.
    """
    _run_decode(**kwargs)


@main.command()
@_decode_options("isa")
@friendly
def decode(**kwargs):
    """Like ``run``, on the instruction-level model by default (no build: a quick look)."""
    _run_decode(**kwargs)


def _run_decode(backend, model_dir, hw, settings, prompt, prompt_ids, n_tokens, as_json, profile, as_csv, trace_path,
                waves, waves_steps, waves_cycles, waves_out, port, baud, loaded, drafter, draft_len, draft_dir):
    if drafter is not None:
        others = {"--profile": profile, "--csv": as_csv, "--trace": trace_path is not None,
                  "--waves": waves or waves_steps or waves_cycles or waves_out, "--port": port, "--loaded": loaded}
        given = [name for name, value in others.items() if value]
        if given:
            raise InputError(f"--speculative does not go with {given[0]} (yet)")
        from .speculative import run_speculative_cmd

        run_speculative_cmd(backend=backend, model_dir=model_dir, hw=hw, settings=settings, prompt=prompt,
                            prompt_ids=prompt_ids, n_tokens=n_tokens, as_json=as_json, drafter=drafter,
                            draft_len=draft_len, draft_dir=draft_dir)
        return
    for option, value in (("--draft-len", draft_len), ("--draft", draft_dir)):
        if value is not None:
            raise InputError(f"{option} goes with --speculative")
    from ..runtime import check_request, prepare
    from ..runtime import decode as run_decode

    design = load_design(hw, settings, rtl=True)
    config = design.config
    if n_tokens < 0:
        raise InputError(f"--tokens must be a non-negative integer, not {n_tokens}")
    window = _waves_window(waves_steps, waves_cycles)
    waves = waves or window is not None or waves_out is not None
    if waves_out is not None and not Path(waves_out).is_dir():
        raise InputError(f"--waves-out {waves_out}: no such directory")
    if waves and backend in ("isa", "golden"):
        raise InputError(f"--waves needs an RTL backend (verilator, icarus, amaranth), not {backend}")
    if (backend == "serial") != (port is not None):
        raise InputError("--port names the board's serial device and goes with --backend serial, "
                         f"not with backend {backend}" if port is not None else
                         "--backend serial needs --port, the board's serial device (e.g. /dev/ttyUSB0)")
    if loaded and backend != "serial":
        raise InputError(f"--loaded is for the serial backend, not {backend}")
    if as_csv and not profile:
        raise InputError("--csv prints the profile: give --profile with it")
    if as_csv and as_json:
        raise InputError("give --csv or --json, not both")
    if trace_path is not None:
        _check_output_path(trace_path, "--trace")
    ckpt = load_model(model_dir)
    ids = prompt_ids_of(ckpt, prompt, prompt_ids)
    compiled = prepare(ckpt, config)
    check_request(compiled, backend, ids, n_tokens)
    quiet = as_json or as_csv
    if not quiet:
        click.echo(f"model {ckpt.path.name} ({ckpt.config.family}), {len(compiled.instructions)} instructions "
                   f"per step, on design {design.name}{' (with --set)' if settings else ''}: {config.describe()}, "
                   f"backend {backend}")

    def show(step):
        if step.position == 0 and not quiet:   # after any build's progress lines (stderr)
            click.echo(text_of(ckpt, ids) or " ".join(map(str, ids)), nl=False)
        if step.generated and not quiet:
            click.echo(text_of(ckpt, [step.token_out]) or f" {step.token_out}", nl=False)

    if waves and not quiet:
        _announce_waves(compiled, ids, n_tokens, window)
    report = run_decode(compiled, backend, ids, n_tokens, on_step=show, waves=waves, waves_window=window,
                        port=port, baud=baud,
                        loaded=loaded, profile=profile or trace_path is not None)
    if waves_out is not None and report.waves:
        src = Path(report.waves)
        what = ("all" if window is None else
                f"steps-{'-'.join(map(str, window['steps']))}" if "steps" in window else
                f"cycles-{'-'.join(map(str, window['cycles']))}")
        dst = Path(waves_out) / f"lockstep-{design.name}-{backend}-{what}{src.suffix}"
        shutil.move(src, dst)
        report.waves = str(dst)
    prof = None
    if profile or trace_path is not None:
        from ..machine.profile import chrome_trace, profile_run

        prof = profile_run(compiled, [(s.position, s.token_in, s.token_out, s.trace) for s in report.steps])
        if trace_path is not None:
            _write_json_atomically(trace_path, chrome_trace(prof))
        if as_csv:
            click.echo(prof.csv(), nl=False)
            if report.cycle_exact is False or prof.cycle_exact is False:
                sys.exit(1)
            return
    in_all = _seconds_in_all()
    decoding = sum(s.wall_seconds for s in report.steps)
    if as_json:
        out = report.as_dict()
        out["text"] = text_of(ckpt, report.generated)
        out["design"] = {"name": design.name, "settings": list(settings), **out["design"]}
        out["wall_seconds_in_all"] = measured_seconds(in_all)
        if profile:
            out["profile"] = prof.as_dict()
        if trace_path is not None:
            out["trace"] = str(trace_path)
        click.echo(json.dumps(out))
    else:
        click.echo("")
        click.echo(f"steps      : {count(len(report.steps))} ({count(len(ids))} prompt, "
                   f"{count(len(report.generated))} generated)")
        b = report.bounds
        click.echo(f"cycles     : {count(report.predicted_cycles_per_token)} per token predicted by the cycle model, "
                   f"{b.mac_peak_text()}")
        click.echo(f"bound      : {b.binding_text()} (others: {b.others_text()})")
        measured = [s.measured_cycles for s in report.steps if s.measured_cycles is not None]
        if measured:
            click.echo(f"measured   : {count(sum(measured) / len(measured))} per token ("
                       f"{'the board' if backend == 'serial' else 'RTL'} cycle counter), "
                       + ("equal to the prediction at every step" if report.cycle_exact else
                          "DIFFERENT from the prediction"))
        else:
            click.echo(f"measured   : not measured (the {backend} backend runs no RTL and counts no cycles)")
        click.echo(f"tokens/s   : {number(report.tokens_per_second)} at {quantity(config.clock_hz, 'Hz')}")
        rate = report.simulated_cycles_per_second if backend != "serial" else None
        click.echo(f"wall time  : {quantity(in_all, 's')} in all, {quantity(decoding, 's')} decoding" +
                   (f" ({number(rate)} simulated cycles per second)" if rate else
                    f" ({number(len(report.steps) / decoding)} steps/s)" if decoding > 0 else ""))
        if report.waves:
            click.echo(f"waves      : {report.waves} ({Path(report.waves).stat().st_size:,} bytes)")
        if trace_path is not None:
            click.echo(f"trace      : {trace_path} (Chrome trace format: open it in https://ui.perfetto.dev or "
                       f"chrome://tracing)")
        if profile:
            click.echo("")
            click.echo(prof.table())
    if report.cycle_exact is False or (prof is not None and prof.cycle_exact is False):
        sys.exit(1)


#: FST bytes a dumped cycle of the decode top level takes, measured on the demo design (Verilator
#: 5.049, step 3 of the default prompt: 10,868,991 bytes for 26,697 cycles); the announced size
#: before a dump is this times the window's predicted cycles (an estimate: the rate depends on how
#: much changes).
FST_BYTES_PER_CYCLE = 407.0
#: A dump announced as large (with its expected size) above this many bytes.
LARGE_WAVES_BYTES = 20e6


def _waves_window(steps: str | None, cycles: str | None) -> dict | None:
    """``--waves-steps A[-B]`` or ``--waves-cycles A-B`` as a flow's window; InputError naming the option."""
    if steps is not None and cycles is not None:
        raise InputError("give --waves-steps or --waves-cycles, not both")
    for option, text, single in (("--waves-steps", steps, True), ("--waves-cycles", cycles, False)):
        if text is None:
            continue
        parts = text.split("-")
        if len(parts) == 1 and single:
            parts = parts * 2
        if len(parts) != 2 or not all(x.strip().isdigit() for x in parts):
            raise InputError(f"{option} takes {'A or A-B' if single else 'A-B'} (non-negative integers), "
                             f"not {text!r}")
        a, b = (int(x) for x in parts)
        if single and a > b or not single and a >= b:
            raise InputError(f"{option} {text}: the window is empty")
        return {"steps" if single else "cycles": [a, b]}
    return None


def _announce_waves(compiled, ids, n_tokens, window) -> None:
    """Say how many cycles the waveform will hold and, when that is large, its expected size."""
    from ..flows.decode import predicted_cycles

    n = len(ids) + max(n_tokens, 1) - 1
    if window is not None and "cycles" in window:
        cycles = window["cycles"][1] - window["cycles"][0]
    else:
        first, last = window["steps"] if window else (0, n - 1)
        cycles = sum(predicted_cycles(compiled, p) for p in range(first, min(last, n - 1) + 1))
    size = cycles * FST_BYTES_PER_CYCLE
    large = size > LARGE_WAVES_BYTES
    _progress(f"waves: {cycles:,} cycles" + (f", about {size / 1e6:,.0f} MB" if large else "")
              + (" (narrow it with --waves-steps or --waves-cycles)" if large and window is None else ""))


def _cell(v) -> str:
    """A table cell: counts whole with separators, other numbers 4 significant digits, None as -."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return count(v) if isinstance(v, int) else number(v)


@main.command("sweep-table")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--sort", "sort_by", default=None, metavar="COLUMN", help="Order the points by this column "
              "(a parameter or a metric; default: the point's key).")
@click.option("--reverse", is_flag=True, help="Largest first.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (exact values) instead of a table.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the columns and the rows.")
@friendly
def sweep_table(db, sort_by, reverse, as_csv, as_json):
    """Print a sweep database's points: one row each, every parameter and every metric.

    The table is read-only; a running sweep may go on writing. Find a design point by sorting on a
    metric (--sort throughput --reverse) or filtering the CSV; sweep-table needs no SQL.
    """
    import csv
    import io

    from ..perf.sweep import sweep_table as table_of

    if as_csv and as_json:
        raise InputError("give either --csv or --json, not both")
    columns, rows = table_of(db)
    if sort_by is not None:
        if sort_by not in columns:
            raise InputError(f"--sort {sort_by}: no such column in {db} (columns: {', '.join(columns)})")
        present = [r for r in rows if r[sort_by] is not None]
        try:
            present.sort(key=lambda r: r[sort_by], reverse=reverse)
        except TypeError:
            present.sort(key=lambda r: str(r[sort_by]), reverse=reverse)
        rows = present + [r for r in rows if r[sort_by] is None]       # points without a value last
    if as_json:
        click.echo(json.dumps({"db": db, "columns": columns, "rows": rows}, allow_nan=False))
    elif as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    elif not rows:
        click.echo(f"{db}: no points yet")
    else:
        cells = [columns] + [[_cell(r[c]) for c in columns] for r in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        for line in cells:
            click.echo("  ".join(c.rjust(w) if line is not cells[0] and c[:1] in "-0123456789" else c.ljust(w)
                                 for c, w in zip(line, widths, strict=True)).rstrip())
        click.echo(f"{count(len(rows))} points")


def _check_output_path(path: str, option: str) -> None:
    """One line naming ``option`` when ``path`` cannot be written: a directory, or no such folder."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {path}: is a directory")
    if not p.parent.is_dir():
        raise InputError(f"{option} {path}: no such directory {str(p.parent)!r}")


def _write_json_atomically(path: str, data: dict) -> None:
    """``data`` as JSON at ``path``, whole or not at all (a temporary file beside it, renamed)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, allow_nan=False))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def _sweep_overrides(spec: str, hw: str | None, settings) -> dict:
    """The spec parameters ``--hw`` and ``--set`` fix: a decode spec's ``preset`` is the design (its
    points' own parameters change it), a gemm spec's array and clock are the design's; each
    ``--set NAME=VALUE`` fixes the sweep parameter NAME (docs/performance.md lists them)."""
    import tomllib

    from ..design import parse_setting
    from ..perf.model import read_text

    overrides = {}
    if hw is not None:
        design = load_design(hw)
        try:
            kind = tomllib.loads(read_text(spec, "a sweep spec")).get("kind", "gemm")
        except (OSError, tomllib.TOMLDecodeError):
            kind = None        # load_spec reports it in its own words
        if kind == "gemm":
            h = design.hardware
            overrides.update(array_rows=h.array_rows, array_cols=h.array_cols, clock_hz=round(h.clock_hz))
        else:
            overrides["preset"] = hw
    for item in settings:
        parts, value = parse_setting(item)
        if parts[0] != "chip":
            raise InputError(f"--set {item}: a sweep's --set fixes one of its parameters (NAME=VALUE), not a table key")
        overrides[parts[1]] = value
    return overrides


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--db", "db_path", default=None, help="Results database (default: SPEC with .sqlite).")
@click.option("--workers", type=int, default=None, help="Local worker processes (default: one per core).")
@click.option("--dask", "dask_address", default=None, metavar="tcp://HOST:PORT",
              help="Run the points on this Dask distributed scheduler instead of locally.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@design_options(None, "default: the spec's own points; a gemm spec takes the design's array and clock, a decode "
                      "spec evaluates every point on it (its preset)")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object (no progress bar).")
@friendly
def sweep(spec, db_path, workers, dask_address, quiet, hw, settings, as_json):
    """Evaluate a grid or random sample of design points into a SQLite database.

    A sweep that is interrupted (even killed) resumes where it stopped when run again.
    """
    from ..perf.sweep import check_workers, load_spec, run_sweep

    check_workers(workers)
    parsed = load_spec(spec, _sweep_overrides(spec, hw, settings))
    if parsed.skipped and not as_json:
        click.echo(f"{parsed.skipped} design points left out: their model does not fit their memory "
                   f"(e.g. {parsed.skip_reasons[0]})")
    db_path = db_path or str(Path(spec).with_suffix(".sqlite"))
    t0 = time.perf_counter()
    counts = run_sweep(parsed, db_path, workers=workers, dask_address=dask_address, progress=not (quiet or as_json))
    if as_json:
        click.echo(json.dumps({**counts, "db": db_path, "skipped": parsed.skipped,
                               "seconds": measured_seconds(time.perf_counter() - t0)}))
    else:
        click.echo(f"{count(counts['points'])} design points: {count(counts['already_done'])} already in {db_path}, "
                   f"{count(counts['new'])} evaluated in {quantity(time.perf_counter() - t0, 's')}; "
                   f"{count(counts['rows'])} rows")
        if counts["rtl_confirmed"] or counts["rtl_mismatched"]:
            click.echo(f"RTL: {counts['rtl_confirmed']} points' measured cycles equal the prediction")
    if counts["rtl_mismatched"]:
        raise InputError(f"RTL: {counts['rtl_mismatched']} points' measured cycles differ from the prediction "
                         f"(rtl_cycles != cycles in {db_path})")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default=None, help="Directory for the plots (default: next to DB).")
@click.option("--json", "as_json", is_flag=True, help="Print the plots' paths as one JSON object.")
@friendly
def plot(db, out_dir, as_json):
    """Plot a sweep database (PNG and SVG; prints their paths): which design is best (throughput against
    cost, Pareto front labelled), how far each point is from its own bound (efficiency), and each point
    against its own roof (roofline); one panel per workload."""
    from ..perf.plot import plot_sweep

    if not Path(db).exists():
        raise InputError(f"{db}: no such results database")
    out_dir = out_dir or str(Path(db).with_suffix("")) + "-plots"
    paths = [str(path) for path in plot_sweep(db, out_dir)]
    if as_json:
        click.echo(json.dumps({"plots": paths}))
    else:
        for path in paths:
            click.echo(path)


main.add_command(inspect_cmd)
main.add_command(golden_cmd)
main.add_command(build_cmd)
main.add_command(estimate_cmd)
main.add_command(presets_cmd)
main.add_command(serve_bench_cmd)

if __name__ == "__main__":  # pragma: no cover
    main()
