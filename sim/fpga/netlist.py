"""The one way the scripts read a Yosys or nextpnr JSON netlist: its module and its cells' connections."""

from __future__ import annotations

from golden.errors import InputError

__all__ = ["connections", "netlist_module"]


def netlist_module(design: dict) -> dict:
    """The module of a flattened netlist (the one with the most cells); InputError when there is none."""
    modules = design.get("modules", {})
    if not modules:
        raise InputError("no module in the netlist (is this Yosys' or nextpnr's JSON?)")
    return max(modules.values(), key=lambda module: len(module.get("cells", {})))


def connections(cells: dict):
    """Every (cell, port, direction, bit) of ``cells``, for the bits that are nets (not constants)."""
    for name, c in cells.items():
        dirs = c.get("port_directions", {})
        for port, bits in c.get("connections", {}).items():
            for bit in bits:
                if isinstance(bit, int):
                    yield name, port, dirs.get(port), bit
