"""The runner layer: content-hashed builds, reuse, and clear failures."""

import pytest

from sim.runner import SimulationError, build, design_for, run


def test_builds_are_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    text_a = "module top(input clk, input rst, output reg q); always @(posedge clk) q <= ~q; endmodule\n"
    text_b = text_a.replace("~q", "q")
    first, _ = build("icarus", text_a, "top")
    again, _ = build("icarus", text_a, "top")
    other, _ = build("icarus", text_b, "top")
    assert first.directory == again.directory
    assert first.directory != other.directory
    assert (first.directory / "BUILT").exists()
    assert first.directory.is_relative_to(tmp_path)


def test_a_verilog_error_is_a_simulation_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    with pytest.raises(SimulationError, match=r"icarus build of broken failed"):
        build("icarus", "module broken(; endmodule\n", "broken")
    # The failed build leaves nothing that a later run could mistake for a finished build.
    assert not list(tmp_path.glob("build/icarus/broken-*/BUILT"))


@pytest.mark.parametrize(("args", "match"), [
    (("modelsim", "array", {"rows": 2, "cols": 2}, "array_stream", {}), r"simulator must be one of"),
    (("amaranth", "nope", {}, "array_stream", {}), r"design must be one of .*, not 'nope'"),
    (("amaranth", "array", {"rows": 2, "cols": 2}, "nope", {}), r"flow must be one of .*, not 'nope'"),
])
def test_bad_run_requests_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        run(*args)


def test_design_registry_builds_components():
    from sim.runner import verilog_for

    array = design_for("array", {"rows": 2, "cols": 3})
    assert array.cols == 3
    assert "module array" in verilog_for(array, "array")


def test_only_ports_are_public_and_outputs_are_read_only():
    from sim.runner import _public_ports

    text = ("module other(input a, output b); endmodule\n"
            "module top(clk, rst, q, wide);\n  input clk;\n  wire clk;\n  input rst;\n  output reg q;\n"
            "  output [255:0] wide;\n  reg [3:0] internal;\n  always @(posedge clk) q <= ~q;\nendmodule\n")
    lines = _public_ports(text, "top").splitlines()
    assert lines[0] == "`verilator_config"
    assert sorted(lines[1:]) == ['public_flat_rd -module "top" -var "q"', 'public_flat_rd -module "top" -var "wide"',
                                 'public_flat_rw -module "top" -var "clk"', 'public_flat_rw -module "top" -var "rst"']


def test_verilator_compiles_the_model_at_O3_and_runs_it_on_its_own_main(tmp_path, monkeypatch):
    """OPT_FAST=-O3 reaches the model's per-cycle code (no later -O on the line overrides it), and the
    executable is linked from sim/verilator_main.cpp."""
    import re

    from sim.runner import VERILATOR_MAIN

    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    text = "module top(input clk, input rst, output reg q); always @(posedge clk) q <= rst ? 1'b0 : ~q; endmodule\n"
    b, _ = build("verilator", text, "top")
    log = (b.directory / "build.log").read_text()
    # The model's per-cycle code: Vtop__ALL.cpp for a small design, Vtop___024root__N.cpp when split.
    model = [line for line in log.splitlines() if re.search(r" -c (-o \S+ )?Vtop(?!\w*Slow)\w*\.cpp$", line)]
    assert model and all(re.findall(r"(?<!\S)-O\w*", line)[-1] == "-O3" for line in model)
    assert str(VERILATOR_MAIN) in log and "cocotb/share/lib/verilator/verilator.cpp" not in log
