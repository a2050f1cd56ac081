"""scripts/net_loads.py on small netlists built here: a net's driver, its loads, the registers its
cone starts from, and its bad inputs."""

import json

import pytest

from tests.scripts import load_script


def _cell(kind, ports):
    """A cell: ``ports`` maps a port to ("input" | "output", [net bits])."""
    return {"type": kind, "port_directions": {p: d for p, (d, _) in ports.items()},
            "connections": {p: bits for p, (_, bits) in ports.items()}}


def _netlist():
    # flip-flops op0 and op1 -> LUT dec -> the select of four LUTs; ff2 -> LUT x (one load)
    cells = {
        "design.top.vec.c_FF_0": _cell("TRELLIS_FF", {"DI": ("input", [20]), "Q": ("output", [2])}),
        "design.top.vec.c_FF_1": _cell("TRELLIS_FF", {"DI": ("input", [21]), "Q": ("output", [3])}),
        "design.top.vec.dec": _cell("LUT4", {"A": ("input", [2]), "B": ("input", [3]), "Z": ("output", [4])}),
        **{f"design.top.vec.mux{i}": _cell("LUT4", {"C": ("input", [4]), "Z": ("output", [10 + i])}) for i in range(4)},
        "design.top.x": _cell("LUT4", {"D": ("input", [5]), "Z": ("output", [30])}),
        "design.top.ff2": _cell("TRELLIS_FF", {"Q": ("output", [5])}),
    }
    nets = {"design.top.vec.acc2_0_DI_LUT4_Z_C0": {"bits": [4, 5]}, "design.top.one": {"bits": [5]}}
    return {"modules": {"top": {"cells": cells, "netnames": nets}}}


def test_a_select_is_traced_to_its_registers():
    nl = load_script("net_loads")
    netlist = nl.Netlist(_netlist())
    text = nl.report(netlist, ["design.top.vec.acc2_0_DI_LUT4_Z_C0[0]"])
    assert "driver : design.top.vec.dec (LUT4.Z)" in text
    assert "loads  : 4: LUT4.C 4" in text
    assert "from   : 2 registers" in text and "c_FF_0 (TRELLIS_FF)" in text and "c_FF_1 (TRELLIS_FF)" in text
    # bit 1 of the same name, and a bare name for bit 0: a register's own output
    for net in ("design.top.vec.acc2_0_DI_LUT4_Z_C0[1]", "design.top.one"):
        text = nl.report(netlist, [net])
        assert "driver : design.top.ff2 (TRELLIS_FF.Q)" in text and "loads  : 1: LUT4.D 1" in text
        assert "from" not in text


def test_the_script_runs_on_a_file(tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist()))
    assert load_script("net_loads").main([str(path), "design.top.one"]) == 0
    assert "design.top.ff2" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "argv", "message"), [
    ("{", ["x"], "net_loads: cannot read"),
    ('{"modules": {}}', ["x"], "no module in the netlist"),
    (None, ["design.top.nosuch[3]"], "net_loads: no net 'design.top.nosuch[3]' in the netlist"),
    (None, ["design.top.one[7]"], "net_loads: no net 'design.top.one[7]' in the netlist"),
    (None, [], "usage"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, content, argv, message):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist()) if content is None else content)
    assert load_script("net_loads").main([str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert load_script("net_loads").main([str(tmp_path / "nosuch.json"), "x"]) == 2
    err = capsys.readouterr().err
    assert "nosuch.json" in err and err.count("\n") == 1
