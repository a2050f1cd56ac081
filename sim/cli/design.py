"""The design options every command shares (``--hw NAME|FILE``, ``--set KEY=VALUE``) and ``lockstep presets``.

The description itself, its keys and its checks are :mod:`sim.design`'s; this module only puts them
on the command line, the same way for ``run``, ``decode``, ``gemm``, ``build``, ``estimate`` and ``sweep``.
"""

from __future__ import annotations

import json

import click

from ..numbers import count, quantity
from .errors import friendly

# The commands import the layers below them (engine, runtime, perf, fpga, golden, hdl) when they run, not
# here: importing them all at start-up made every `lockstep` invocation about 3 s slower (`lockstep --help`
# took 0.6 s with them deferred and 3.6 s with them at module level, measured on this machine).

__all__ = ["design_options", "load", "presets_cmd"]


def design_options(default: str | None, default_help: str | None = None):
    """``--hw`` (default ``default``) and ``--set`` (repeatable), passed as ``hw`` and ``settings``."""
    shown = default_help or (f"default: {default}" if default else "")

    def wrap(fn):
        fn = click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                          help="Change one key of the design (repeatable): a [chip] key (array_rows=4) or "
                               "TABLE.KEY (system.chips=2, memory.sdram.capacity_bytes=64e6); see docs/design.md.")(fn)
        return click.option("--hw", "hw", default=default, metavar="NAME|FILE",
                            help=f"The design: a name 'lockstep presets' lists or a TOML file ({shown}).")(fn)
    return wrap


def load(hw: str, settings=(), *, rtl: bool = False):
    """The design ``hw`` with ``settings``; with ``rtl``, refused in one line unless the RTL builds it."""
    from ..design import load_design

    design = load_design(hw, settings)
    if rtl:
        design.rtl_config()
    return design


def _holds(design, models) -> list[str]:
    """The built-in models (and the demo model) whose weights the design holds at their default context."""
    from ..perf.model import HardwareError, default_context, place

    out = []
    for name, mc in models:
        try:
            place(mc, design.hardware, context=default_context(mc), name=name)
        except HardwareError:
            continue
        out.append(name)
    return out


def _models():
    from golden.checkpoint import demo_model_path, load_config

    from ..perf.model import MODELS

    return [("demo", load_config(demo_model_path())), *MODELS.items()]


@click.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def presets_cmd(as_json):
    """List every shipped design: array, lanes, clock, memory, whether the RTL builds it, what it holds."""
    from ..design import design_names, load_design

    models = _models()
    rows = []
    for name in design_names():
        d = load_design(name)
        rows.append((d, _holds(d, models)))
    if as_json:
        click.echo(json.dumps({d.name: {**d.as_dict(), "holds": holds} for d, holds in rows}, allow_nan=False))
        return
    header = ("design", "array", "lanes", "clock", "chips", "weights in", "RTL", "holds (built-in models)")
    table = [header]
    for d, holds in rows:
        h = d.hardware
        mem = h.memories[0]
        table.append((d.name, f"{h.array_rows}x{h.array_cols}", count(h.vector_lanes), quantity(h.clock_hz, "Hz"),
                      count(h.chips), f"{quantity(mem.capacity_bytes, 'B')} {mem.name} at "
                      f"{quantity(mem.bandwidth_bytes_per_s, 'B/s')}", "yes" if d.rtl else "no",
                      ", ".join(holds) or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    click.echo("RTL: run, decode, gemm and build take the design; estimate and sweep take every one. "
               "Change one with --set KEY=VALUE (docs/design.md).")
