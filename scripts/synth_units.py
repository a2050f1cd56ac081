#!/usr/bin/env python3
"""The decode accelerator's logic per unit: each unit of the top level synthesized alone by Yosys.

For a design (default ``ulx3s``) and the demo model, each named unit of :class:`hdl.top.DecodeTop`
(``sim.fpga.build.DECODE_UNITS``: the array, the vector unit, the attention unit, the GEMM path,
the vector path, the banked weight memory, or the whole ``top``) is cut out of the top level's RTLIL
and synthesized alone with ``synth_ecp5`` (:func:`sim.fpga.build.decode_unit_resources`; Yosys only,
no place and route; cached by content under ``<lockstep cache>/synth``). Printed per unit: logic in
LUT4s (LUT4 + 2 x CCU2C + 4 x TRELLIS_DPR16X4), the LUT4 and CCU2C cells, flip-flops, MULT18X18D and
DP16KD, and Yosys' time. A unit alone loses the optimisations across its ports (constants the
top level ties, logic it leaves unread): the figures rank the units, their sum exceeds the whole.

    .venv/bin/python scripts/synth_units.py [--hw ulx3s] [--set KEY=VALUE ...] [--units vec,att] [--json]
"""

from __future__ import annotations

import json
import sys

from sim.cli.bench import BenchError, BenchParser, bench_main

PROG = "synth_units"
DEFAULT_UNITS = ("vec", "att", "array", "gemm", "vpath", "wmem")


def measure(hw: str, settings=(), units=DEFAULT_UNITS, progress=None) -> list[dict]:
    """One row per unit of the design ``hw`` (with ``settings``) sized for the demo model."""
    from sim.cli.design import load as load_design
    from sim.cli.model import load_model
    from sim.fpga.build import decode_unit_resources
    from sim.runtime import prepare

    config = load_design(hw, settings, rtl=True).config
    compiled = prepare(load_model(None), config)
    rows = []
    for unit in units:
        if progress:
            progress(unit)
        r = decode_unit_resources(compiled, unit)
        cells = r["cells"]
        rows.append({"unit": unit, "lut": r["lut"], "LUT4": cells.get("LUT4", 0), "CCU2C": cells.get("CCU2C", 0),
                     "ff": r["ff"], "MULT18X18D": r["dsp"], "DP16KD": r["bram"], "seconds": r["synth_seconds"],
                     "cached": r["cached"]})
    return rows


def route(hw: str, settings=(), units=DEFAULT_UNITS, clock_mhz=None, progress=None) -> list[dict]:
    """One row per unit: its routed fmax and critical path, placed and routed alone (out of context)."""
    from sim.cli.design import load as load_design
    from sim.cli.model import load_model
    from sim.fpga.build import decode_unit_timing
    from sim.runtime import prepare

    config = load_design(hw, settings, rtl=True).config
    compiled = prepare(load_model(None), config)
    rows = []
    for unit in units:
        if progress:
            progress(f"placing and routing {unit} ...")
        t = decode_unit_timing(compiled, unit, clock_mhz=clock_mhz, progress=progress)
        crit = t["critical"] or {}
        rows.append({"unit": unit, "fmax_mhz": t["fmax_mhz"], "constraint_mhz": t["constraint_mhz"],
                     "timing_ok": t["timing_ok"], "critical": crit, "synth_seconds": t["synth_seconds"],
                     "pnr_seconds": t["pnr_seconds"], "cached": t["cached"]})
    return rows


def route_table(rows: list[dict]) -> str:
    head = "| unit | fmax (MHz) | target | critical path | ns (logic + routing) | nextpnr s |"
    lines = [head, "|" + "---|" * 6]
    for r in rows:
        c = r["critical"]
        path = f"{c['from']} -> {c['to']}" if c else "-"
        ns = f"{c['ns']:.2f} ({c['logic_ns']:.2f} + {c['routing_ns']:.2f})" if c else "-"
        lines.append(f"| {r['unit']} | {r['fmax_mhz']} | {r['constraint_mhz']:g} {'met' if r['timing_ok'] else 'FAIL'} "
                     f"| {path} | {ns} | {r['pnr_seconds']:g} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = "| unit | logic (LUT4s) | LUT4 | CCU2C | FF | MULT18X18D | DP16KD | Yosys s |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['unit']} | {r['lut']:,} | {r['LUT4']:,} | {r['CCU2C']:,} | {r['ff']:,} | "
                     f"{r['MULT18X18D']} | {r['DP16KD']} | {r['seconds']:g} |")
    return "\n".join(lines)


def run(argv) -> int:
    from sim.fpga.build import DECODE_UNITS

    parser = BenchParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--hw", default="ulx3s")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--units", default=",".join(DEFAULT_UNITS))
    parser.add_argument("--route", action="store_true", help="place and route each unit alone: fmax, critical path")
    parser.add_argument("--clock-mhz", type=float, default=None, help="with --route: the clock to constrain "
                                                                      "(default: the design's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    units = tuple(u for u in args.units.split(",") if u)
    if not units or any(u not in DECODE_UNITS for u in units):
        raise BenchError(f"--units must name some of {', '.join(DECODE_UNITS)}, not {args.units!r}")
    if args.clock_mhz is not None and not args.route:
        raise BenchError("--clock-mhz needs --route")
    if args.clock_mhz is not None and not 0 < args.clock_mhz <= 1000:
        raise BenchError(f"--clock-mhz must be in (0, 1000], not {args.clock_mhz:g}")
    if args.route:
        say = None if args.json else lambda text: print(text, file=sys.stderr)
        rows = route(args.hw, args.settings, units, args.clock_mhz, progress=say)
        print(json.dumps(rows, indent=1) if args.json else route_table(rows))
        return 0
    rows = measure(args.hw, args.settings, units,
                   progress=None if args.json else lambda u: print(f"synthesizing {u} ...", file=sys.stderr))
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


def main(argv=None) -> int:
    return bench_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
