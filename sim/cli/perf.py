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

from golden.errors import InputError

from .design import design_options
from .design import load as load_design
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
@design_options(None, "default: the first shipped design that holds the model, fewest chips first")
@click.option("--context", type=Number(int, 1), default=None,
              help="Tokens in the sequence; the estimate is the mean per token over its positions "
                   "(default: half the model's context, at most 2048; at most the model's max_context and "
                   "16777216).")
@click.option("--batch", type=Number(int, 1), default=1, show_default=True,
              help="Sequences decoded together, at most 65536 (a pass of B rows: every GEMM streams the B rows "
                   "through each weight tile).")
@click.option("--prompt", type=Number(int, 1), default=None,
              help="Also estimate the prefill of a prompt of this many tokens (B prompts with --batch B): "
                   "passes of the design's max_m rows, the time to the first token (TTFT).")
@click.option("--breakdown", is_flag=True, help="Also print where a step's cycles go, per op kind.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly
def estimate_cmd(model, hw, settings, context, batch, prompt, breakdown, as_json):
    """Estimate decode tokens/s of MODEL on design HW from the cycle model, with its roofline."""
    from ..design import designs_holding
    from ..perf.model import (
        HardwareError,
        check_workload,
        default_context,
        estimate,
        format_breakdown,
        format_estimate,
        format_prefill,
        place,
        prefill,
        resolve_model,
    )

    name, mc = resolve_model(model)
    context = default_context(mc) if context is None else context
    check_workload(mc, context=context, batch=batch, name=name)
    chosen = None
    if hw is None:
        if settings:
            raise InputError("--set changes a design: name it with --hw")
        holding = designs_holding(mc, context=context, batch=batch, name=name)
        if not holding:
            raise InputError(f"no shipped design holds {name} at context {context}, batch {batch}: give one "
                             f"with --hw FILE (docs/design.md)")
        design, chosen = holding[0], holding
    else:
        design = load_design(hw, settings)
        try:
            place(mc, design.hardware, context=context, batch=batch, name=name)
        except HardwareError as exc:
            holding = designs_holding(mc, context=context, batch=batch, name=name)
            also = (f"; designs that hold it: {', '.join(d.name for d in holding)}" if holding else
                    "; no shipped design holds it")
            raise HardwareError(f"{exc}{also}") from None
    e = estimate(mc, design.hardware, context=context, batch=batch, name=name)
    pre = None
    if prompt is not None:
        pre = prefill(mc, design.hardware, prompt=prompt, batch=batch, chunk=_max_m(design), name=name,
                      split=e.kv_split)
    if as_json:
        out = e.as_dict()
        if pre is not None:
            out["prefill"] = pre.as_dict()
        out["design"] = {"name": design.name, "settings": list(settings), "chosen": chosen is not None}
        click.echo(json.dumps(out, allow_nan=False))   # estimate() refuses non-finite numbers
    else:
        if chosen is not None:
            others = ", ".join(d.name for d in chosen[1:])
            click.echo(f"design: {design.name}, the first shipped design that holds {name} (fewest chips first)"
                       + (f"; others that do: {others}" if others else ""))
        click.echo(format_estimate(e, design.hardware))
        if pre is not None:
            click.echo(format_prefill(pre))
        if breakdown:
            click.echo(format_breakdown(e))


def _max_m(design) -> int:
    """The rows a pass of ``design`` takes: its configuration's ``max_m`` (a design only the model
    evaluates: its [chip] ``max_m``, else the default configuration's)."""
    from hdl.config import DEFAULT

    if design.config is not None:
        return design.config.max_m
    m = design.tables.get("chip", {}).get("max_m", DEFAULT.max_m)
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise InputError(f"design {design.name}: [chip] max_m must be a positive integer, not {m!r}")
    return m
