"""``lockstep build``: a bitstream for a board, with utilisation, fmax and throughput at that clock."""

from __future__ import annotations

import json
import sys

import click

from golden.errors import InputError

from ..numbers import count, number, quantity
from .design import design_options
from .design import load as load_design
from .errors import UserError, friendly
from .model import load_model

# The commands import the layers below them (engine, runtime, perf, fpga, golden, hdl) when they run, not
# here: importing them all at start-up made every `lockstep` invocation about 3 s slower (`lockstep --help`
# took 0.6 s with them deferred and 3.6 s with them at module level, measured on this machine).

__all__ = ["baud_option", "build_cmd"]


def _check_baud(ctx, param, value):
    from hdl.config import check_positive_int

    try:
        return check_positive_int("baud", value)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None


def baud_option(help_text: str):
    """The ``--baud`` option of every command that talks to a board's UART (``build``, ``run``,
    ``decode``): one definition, one check (a positive integer), before anything else runs. How fast
    a rate a board's clock allows is checked where the clock is known (:func:`hdl.boards.clocks_per_bit`)."""
    return click.option("--baud", type=int, default=115200, show_default=True, callback=_check_baud,
                        help=help_text)


def _describe(c, design="gemm") -> str:
    if design == "decode":
        return f"decode accelerator: {c.describe()}"
    return (f"{c.array_rows}x{c.array_cols} array, {c.weight_words} weight / {c.act_words} activation / "
            f"{c.result_words} result words, max_m {c.max_m}")


@click.command("build")
@click.option("--board", type=click.Choice(["ulx3s-85f", "icebreaker"]), required=True, help="Target board.")
@click.option("--design", type=click.Choice(["gemm", "decode"]), default=None,
              help="decode: the decode accelerator sized for --model (the default on the ULX3S-85F, with the "
                   "board's design ulx3s); gemm: the GEMM engine behind the link (the default on the "
                   "iCEBreaker, which cannot hold the decode accelerator).")
@click.option("--model", "model_dir", default=None, metavar="DIR",
              help="Checkpoint the decode accelerator is built for (default: the demo model).")
@design_options(None, "default: decode, the board's design (ulx3s); gemm, 4x4")
@baud_option("UART rate of the host link.")
@click.option("--clock-mhz", type=float, default=None,
              help="Clock the design runs at; other than the board's oscillator, the ECP5 PLL makes it. "
                   "Default: decode, the design's clock (the ulx3s design's); gemm, the oscillator.")
@click.option("--seed", type=int, default=1, show_default=True, help="nextpnr placement seed.")
@click.option("--plan", "plan_only", is_flag=True, help="Only check the fit; run no tools.")
@click.option("--no-cache", is_flag=True, help="Rebuild even when a cached build exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def build_cmd(board, design, model_dir, hw, settings, baud, clock_mhz, seed, plan_only, no_cache, as_json):
    """Build a bitstream of the accelerator behind the UART link for a board.

    The fit (multipliers, block RAM) is checked before any tool runs, and again on Yosys' counts
    before place-and-route. The report gives utilisation, fmax, and the throughput at the board's
    clock and at fmax: the demo model's tokens/s for the decode accelerator, a GEMM's for both.
    """
    from ..fpga.build import BOARD_PRESETS, BuildError, build, plan_build, plan_decode_build

    compiled = None
    if design is None:
        design = "decode" if board in BOARD_PRESETS else "gemm"
    if design == "decode":
        from ..runtime import prepare

        config = load_design(hw or BOARD_PRESETS.get(board) or "demo", settings, rtl=True).config
        compiled = prepare(load_model(model_dir), config)
    elif model_dir is not None:
        raise InputError("--model is for --design decode")
    else:
        config = load_design(hw or "4x4", settings, rtl=True).config
    if clock_mhz is not None and not clock_mhz > 0:
        raise InputError(f"--clock-mhz must be positive, not {clock_mhz:g}")
    clock_hz = clock_mhz * 1e6 if clock_mhz is not None else (config.clock_hz if design == "decode" else None)
    # The fit is checked before anything says a build starts: a refusal is the only line.
    plan = (plan_decode_build(board, compiled, baud=baud, clock_hz=clock_hz) if compiled is not None
            else plan_build(board, config, baud=baud, clock_hz=clock_hz)).as_dict()
    if plan_only:
        if as_json:
            click.echo(json.dumps({"plan": plan}))
            return
        least = "at least " if design == "decode" else ""
        click.echo(f"{board}: {_describe(config, design)} fits: {least}{plan['multipliers']['need']}/"
                   f"{plan['multipliers']['have']} {plan['multipliers']['kind']}, "
                   f"{least}{plan['bram']['need_blocks']}/{plan['bram']['have_blocks']} {plan['bram']['kind']}; "
                   f"{quantity(plan['clock_mhz'] * 1e6, 'Hz')}{' (PLL)' if plan['pll'] else ''}, "
                   f"UART {baud} baud ({plan['clocks_per_bit']} clocks per bit)")
        if design == "decode":
            click.echo("(lower bounds: the multipliers of the array, the fused residual and the attention datapaths "
                       "beyond the first, and the top level's memories; the units' other multipliers are counted by "
                       "Yosys, and an overflow is refused before place-and-route)")
        return
    if not as_json:
        click.echo(f"building {_describe(config, design)} for {board} (seed {seed}); the first build compiles "
                   f"the YoWASP tools (a few minutes)...", err=True)
    try:
        result = build(board, config, baud=baud, seed=seed, use_cache=not no_cache, compiled=compiled,
                       clock_hz=clock_hz, progress=lambda text: click.echo(f"  ... {text}", err=True))
    except BuildError as exc:
        raise InputError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result))
        return
    rep = result["report"]
    click.echo(f"board    : {board} ({result['plan']['device']}), {_describe(config, design)}")
    for name, u in rep["utilisation"].items():
        click.echo(f"  {name:<11}: {count(u['used']):>6} / {count(u['available']):<6} ({u['cell']})")
    for clock, f in rep["fmax"].items():
        click.echo(f"fmax     : {quantity(f['achieved_mhz'] * 1e6, 'Hz')} on {clock} "
                   f"(constraint {quantity(f['constraint_mhz'] * 1e6, 'Hz')}): "
                   f"{'met' if rep['timing_ok'] else 'FAILED'}")
    for label, t in (("at the design clock", result["throughput"]["board_clock"]),
                     ("at fmax", result["throughput"]["fmax"])):
        click.echo(f"GEMM {t['m']}x{t['k']}x{t['n']} {label} ({quantity(t['clock_mhz'] * 1e6, 'Hz')}): "
                   f"{count(t['cycles'])} cycles, {quantity(t['microseconds'] * 1e-6, 's')}, "
                   f"{quantity(t['gmac_per_second'] * 1e9, 'MAC/s')} of "
                   f"{quantity(t['peak_gmac_per_second'] * 1e9, 'MAC/s')} peak")
    for label, t in ((("at the design clock", result["decode"]["board_clock"]), ("at fmax", result["decode"]["fmax"]))
                     if "decode" in result else ()):
        click.echo(f"decode {label} ({quantity(t['clock_mhz'] * 1e6, 'Hz')}): {count(t['cycles_per_token'])} cycles "
                   f"per token (mean of positions 0..{t['positions'] - 1}), {number(t['tokens_per_second'])} tokens/s")
    click.echo(f"bitstream: {result['bitstream']}{' (cached)' if result['cached'] else ''}")
    click.echo(f"program  : {result['program']}")
    if not rep["timing_ok"]:
        sys.exit(1)
