"""``lockstep estimate``: tokens/s of a model on a hardware description, with its roofline.

A standalone click command; sim/cli/commands.py registers it on the ``lockstep`` group. Every error a user
can cause (an unknown model or preset, a bad TOML file, a hardware number outside its bounds, a
context or batch past its cap, a model that fits no memory level) ends as one line
``lockstep: error: ...`` on stderr and exit status 1, before any work; the JSON never holds NaN
or Infinity.
"""

from __future__ import annotations

import json

import click

from .errors import friendly
from .model import Number

# The commands import the layers below them (engine, runtime, perf, fpga, golden, hdl) when they run, not
# here: importing them all at start-up made every `lockstep` invocation about 3 s slower (`lockstep --help`
# took 0.6 s with them deferred and 3.6 s with them at module level, measured on this machine).

__all__ = ["estimate_cmd"]


@click.command("estimate")
@click.option("--model", "model", required=True, metavar="NAME_OR_DIR",
              help="A built-in model (gpt2, llama-2-7b, llama-2-70b, llama-3-8b, llama-3-70b, llama-3.1-70b) "
                   "or a checkpoint directory (its config.json).")
@click.option("--hw", "hw", default="emulator", show_default=True, metavar="PRESET_OR_TOML",
              help="A hardware preset (sim/presets) or a TOML file.")
@click.option("--context", type=Number(int, 1), default=None,
              help="Tokens in the sequence; the estimate is the mean per token over its positions "
                   "(default: half the model's context, at most 2048; at most the model's max_context and "
                   "16777216).")
@click.option("--batch", type=Number(int, 1), default=1, show_default=True,
              help="Sequences decoded together, at most 65536 (the model only: the RTL runs batch 1).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly
def estimate_cmd(model, hw, context, batch, as_json):
    """Estimate decode tokens/s of MODEL on hardware HW from the cycle model, with its roofline."""
    from ..perf.model import estimate, format_estimate, load_hardware

    hardware = load_hardware(hw)
    e = estimate(model, hardware, context=context, batch=batch)
    if as_json:
        click.echo(json.dumps(e.as_dict(), allow_nan=False))   # estimate() refuses non-finite numbers
    else:
        click.echo(format_estimate(e, hardware))
