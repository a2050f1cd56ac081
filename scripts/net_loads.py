"""Who drives a net of a synthesized or placed design, and what it drives: for router2's heatmap.

nextpnr's ``--router2-heatmap PREFIX`` writes ``PREFIX_congestion_by_net_N.csv``: the overused
wires of each net at routing iteration N. Yosys names a net after a cell of the cone it feeds, so
a name such as ``design.top.vec.acc2_0_TRELLIS_FF_Q_28_DI_LUT4_Z_D_PFUMX_Z_C0[1]`` says where the
net goes, not where it comes from. This script reads the netlist the routing read (Yosys'
``top.json``, or nextpnr's ``--write`` JSON) and prints, for each net named: its driver (cell,
type, port), its loads counted by cell type and port, and the registers, block RAMs and pins its
driver's logic cone starts from (the register a select really comes from).

usage: python scripts/net_loads.py NETLIST_JSON NET [NET ...]   (NET as the heatmap spells it,
``name[bit]`` or ``name`` for bit 0)
"""

from __future__ import annotations

import collections
import json
import re
import sys

from sim.fpga.netlist import connections, netlist_module

#: cells a logic cone starts from: their outputs are registered or come from outside
_SOURCES = ("TRELLIS_FF", "DP16KD", "TRELLIS_IO", "EHXPLLL", "DCCA", "MULT18X18D")
_NET = re.compile(r"^(.*?)(?:\[(\d+)\])?$")


class Netlist:
    """The flattened module of a Yosys or nextpnr JSON netlist: nets by name, drivers and loads by bit."""

    def __init__(self, design: dict):
        module = netlist_module(design)
        self.cells = module.get("cells", {})
        self.nets = module.get("netnames", {})
        self.driver, self.loads = {}, collections.defaultdict(list)
        for name, port, direction, bit in connections(self.cells):
            if direction == "output":
                self.driver[bit] = (name, port)
            else:
                self.loads[bit].append((name, port))

    def bit(self, net: str) -> int:
        """The bit number of ``net`` (``name[i]`` or ``name``); ValueError names a net not found."""
        name, index = _NET.match(net).groups()
        bits = self.nets.get(name, self.nets.get(net, {})).get("bits")
        i = int(index or 0)
        if bits is None or i >= len(bits) or not isinstance(bits[i], int):
            raise ValueError(f"no net {net!r} in the netlist")
        return bits[i]

    def sources(self, bit: int, limit: int = 10_000) -> collections.Counter:
        """The registers, memories and pins the logic cone driving ``bit`` starts from, by cell."""
        found, seen, stack = collections.Counter(), set(), [bit]
        while stack and len(seen) < limit:
            b = stack.pop()
            if b in seen or b not in self.driver:
                continue
            seen.add(b)
            name, _ = self.driver[b]
            c = self.cells[name]
            if c["type"] in _SOURCES:
                found[f"{name} ({c['type']})"] += 1
                continue
            dirs = c.get("port_directions", {})
            stack.extend(x for p, bits in c.get("connections", {}).items() if dirs.get(p) == "input"
                         for x in bits if isinstance(x, int))
        return found


def report(netlist: Netlist, nets: list[str]) -> str:
    lines = []
    for net in nets:
        bit = netlist.bit(net)
        drv = netlist.driver.get(bit)
        loads = netlist.loads.get(bit, [])
        kinds = collections.Counter(f"{netlist.cells[n]['type']}.{p}" for n, p in loads)
        lines.append(f"{net}")
        lines.append(f"  driver : {drv[0]} ({netlist.cells[drv[0]]['type']}.{drv[1]})" if drv else "  driver : none")
        lines.append(f"  loads  : {len(loads)}: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common(6)))
        if drv and netlist.cells[drv[0]]["type"] not in _SOURCES:
            src = netlist.sources(bit)
            lines.append(f"  from   : {len(src)} registers, memories or pins, e.g. "
                         + ", ".join(n for n, _ in src.most_common(4)))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0].startswith("-"):
        print("net_loads: usage: net_loads.py NETLIST_JSON NET [NET ...]", file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as f:
            netlist = Netlist(json.load(f))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"net_loads: cannot read {argv[0]}: {e}", file=sys.stderr)
        return 2
    try:
        text = report(netlist, argv[1:])
    except ValueError as e:
        print(f"net_loads: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
