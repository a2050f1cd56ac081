"""scripts/synth_units.py: bad inputs are one line (the synthesis itself runs in the slow
tests/sim/test_fpga.py::test_a_decode_unit_synthesized_alone)."""


import pytest

from tests.scripts import load_script


@pytest.mark.parametrize(("argv", "message"), [
    (["--units", "alu"], "synth_units: error: --units must name some of top, array, vec, att, gemm, vpath, wmem, "
                         "not 'alu'"),
    (["--units", ","], "synth_units: error: --units must name some of top, array, vec, att, gemm, vpath, wmem, "
                       "not ','"),
    (["--hw", "nosuch", "--units", "vec"], None),
    (["--frobnicate"], "synth_units: error: unrecognized arguments: --frobnicate"),
    (["--clock-mhz", "50"], "synth_units: error: --clock-mhz needs --route"),
    (["--route", "--clock-mhz", "-5"], "synth_units: error: --clock-mhz must be in (0, 1000], not -5"),
    (["--route", "--clock-mhz", "fast"], "synth_units: error: argument --clock-mhz: invalid float value: 'fast'"),
])
def test_bad_inputs_are_one_line(argv, message, capsys):
    assert load_script("synth_units").main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synth_units: error: ")
    if message is not None:
        assert err == message + "\n"
