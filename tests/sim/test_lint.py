"""Verilator's -Wall lint on every generated design: only reviewed waivers may appear."""

import pytest

from hdl.config import PRESETS
from sim.lint import WAIVERS, lint_verilog
from sim.runner import design_for, verilog_for


@pytest.mark.parametrize("kind", ["gemm_unit", "array"])
@pytest.mark.parametrize("shape", ["4x4", "8x4"])
def test_generated_verilog_is_lint_clean(kind, shape):
    config = PRESETS[shape]
    params = config.as_dict() if kind == "gemm_unit" else {"rows": config.array_rows, "cols": config.array_cols}
    report = lint_verilog(verilog_for(design_for(kind, params), kind), kind)
    assert report.findings == []
    assert set(report.waived) <= set(WAIVERS)


def test_lint_catches_what_is_not_waived():
    # A latch and a multiply-driven net: exactly the kind of finding no waiver may hide.
    bad = """
module bad(input clk, input en, input [3:0] d, output reg [3:0] q, output reg [3:0] r);
  always @* if (en) q = d;
  always @(posedge clk) r <= d;
  always @(negedge clk) r <= ~d;
endmodule
"""
    report = lint_verilog(bad, "bad")
    assert not report.clean
    assert any("LATCH" in f for f in report.findings)
    assert any("MULTIDRIVEN" in f for f in report.findings)
