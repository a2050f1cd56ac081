"""scripts/placed_paths.py on small placed netlists built here: the path delays it adds up, what it
leaves out (constants, a LUT-RAM's write side, asynchronous inputs), and its bad inputs."""

import json

import pytest

from tests.scripts import load_script


def _cell(kind, xy, ports):
    """A placed cell: ``ports`` maps a port to ("input" | "output", net bit)."""
    return {"type": kind, "attributes": {"NEXTPNR_BEL": f"X{xy[0]}/Y{xy[1]}/SLICEA"},
            "port_directions": {p: d for p, (d, _) in ports.items()},
            "connections": {p: [bit] for p, (_, bit) in ports.items()}}


def _design(cells):
    return {"modules": {"top": {"cells": cells}}}


def test_a_path_is_clock_to_out_nets_cells_and_setup():
    pp = load_script("placed_paths")
    cells = {
        "design.top.a": _cell("TRELLIS_FF", (1, 1), {"Q": ("output", 2)}),
        "design.top.lut": _cell("TRELLIS_COMB", (11, 1), {"A": ("input", 2), "F": ("output", 3)}),
        "design.top.b": _cell("TRELLIS_FF", (21, 1), {"DI": ("input", 3), "Q": ("output", 4)}),
    }
    ends = pp.Placed(_design(cells)).endpoints()
    # 10 tiles apart: 0.12 ns x (6 + 5 + 2 x 5) = 2.52 ns a net
    expected = pp.CLOCK_TO_OUT_NS["TRELLIS_FF"] + 2.52 + pp.CELL_NS["lut"] + 2.52 + pp.SETUP_NS
    assert [e[1] for e in ends] == ["design.top.b"]
    assert ends[0][0] == pytest.approx(expected)


def test_the_slower_input_wins_and_the_trace_names_it():
    pp = load_script("placed_paths")
    cells = {
        "design.top.near": _cell("TRELLIS_FF", (10, 10), {"Q": ("output", 2)}),
        "design.top.far": _cell("DP16KD", (90, 10), {"DOA0": ("output", 3)}),
        "design.top.lut": _cell("TRELLIS_COMB", (10, 11), {"A": ("input", 2), "B": ("input", 3), "F": ("output", 4)}),
        "design.top.end": _cell("TRELLIS_FF", (10, 12), {"DI": ("input", 4)}),
    }
    placed = pp.Placed(_design(cells))
    ns, name, port, bit = placed.endpoints()[0]
    far = pp.net_ns((90, 10), (10, 11), "DOA0", "B")
    assert ns == pytest.approx(pp.CLOCK_TO_OUT_NS["DP16KD"] + far + pp.CELL_NS["lut"]
                               + pp.net_ns((10, 11), (10, 12), "F", "DI") + pp.SETUP_NS)
    assert [step[1] for step in placed.trace(bit)] == ["design.top.far", "design.top.lut"]
    assert "top.far" in pp.report(placed, 5.0, 1) and "1/1" in pp.report(placed, 5.0, 1)


def test_constants_lutram_writes_carries_and_pins_are_not_paths():
    pp = load_script("placed_paths")
    cells = {
        "$PACKER_GND": _cell("GND", (0, 0), {"G": ("output", 9)}),
        "pin": _cell("TRELLIS_IO", (0, 50), {"O": ("output", 8)}),
        "design.top.a": _cell("TRELLIS_FF", (1, 1), {"Q": ("output", 2)}),
        # a LUT-RAM read: its write data (WD) from far away reach F only through the write
        "design.top.ram": _cell("TRELLIS_COMB", (2, 1), {"A": ("input", 2), "WD": ("input", 7), "D": ("input", 9),
                                                          "F": ("output", 3)}),
        "design.top.w": _cell("TRELLIS_FF", (100, 90), {"Q": ("output", 7)}),
        "design.top.c0": _cell("TRELLIS_COMB", (3, 1), {"A": ("input", 3), "FCO": ("output", 5)}),
        "design.top.c1": _cell("TRELLIS_COMB", (3, 1), {"FCI": ("input", 5), "C": ("input", 8), "F": ("output", 6)}),
        "design.top.b": _cell("TRELLIS_FF", (3, 2), {"DI": ("input", 6)}),
    }
    placed = pp.Placed(_design(cells))
    ns = {name: t for t, name, _, _ in placed.endpoints()}
    expected = (pp.CLOCK_TO_OUT_NS["TRELLIS_FF"] + pp.net_ns((1, 1), (2, 1), "Q", "A") + pp.CELL_NS["lut"]
                + pp.net_ns((2, 1), (3, 1), "F", "A") + pp.CELL_NS["carry_from_lut"] + 0.0 + pp.CELL_NS["carry_out"]
                + pp.net_ns((3, 1), (3, 2), "F", "DI") + pp.SETUP_NS)
    assert ns == {"design.top.b": pytest.approx(expected)}


@pytest.mark.parametrize(("content", "argv", "message"), [
    ("{", [], "placed_paths: cannot read"),
    ('{"modules": {}}', [], "no module in the netlist"),
    ('{"modules": {"top": {"cells": {"a": {"type": "TRELLIS_FF"}}}}}', [], "no cell is placed"),
    ('{"modules": {}}', ["--period", "0"], "--period must be positive"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, content, argv, message):
    path = tmp_path / "placed.json"
    path.write_text(content)
    assert load_script("placed_paths").main([str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert load_script("placed_paths").main([str(tmp_path / "nosuch.json")]) == 2
    err = capsys.readouterr().err
    assert "nosuch.json" in err and err.count("\n") == 1


def test_the_script_runs_on_a_file(tmp_path, capsys):
    cells = {"design.top.u.a": _cell("TRELLIS_FF", (1, 1), {"Q": ("output", 2)}),
             "design.top.v.b": _cell("TRELLIS_FF", (2, 1), {"DI": ("input", 2)})}
    path = tmp_path / "placed.json"
    path.write_text(json.dumps(_design(cells)))
    assert load_script("placed_paths").main([str(path), "--period", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 path ends" in out and "top.u -> top.v" in out


def test_a_design_without_path_ends_says_so(tmp_path, capsys):
    path = tmp_path / "placed.json"
    path.write_text(json.dumps(_design({"design.top.u.a": _cell("TRELLIS_FF", (1, 1), {"Q": ("output", 2)})})))
    assert load_script("placed_paths").main([str(path)]) == 0
    assert capsys.readouterr().out.startswith("no path ends")
