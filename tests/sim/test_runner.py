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
