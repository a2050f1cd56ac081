"""Verilator's -Wall lint on every generated design: only reviewed waivers may appear."""

from dataclasses import replace

import pytest

from hdl.config import PRESETS
from sim.engine.lint import WAIVERS, lint_verilog
from sim.engine.runner import design_for, verilog_for


@pytest.mark.parametrize("kind", ["gemm_unit", "array"])
@pytest.mark.parametrize("shape", ["4x4", "8x4"])
def test_generated_verilog_is_lint_clean(kind, shape):
    config = PRESETS[shape]
    params = config.as_dict() if kind == "gemm_unit" else {"rows": config.array_rows, "cols": config.array_cols}
    report = lint_verilog(verilog_for(design_for(kind, params), kind), kind)
    assert report.findings == []


@pytest.mark.parametrize("rows_per_beat", [2, 8])
def test_the_array_with_wide_weight_beats_is_lint_clean(rows_per_beat):
    """G = 2 stages a beat of each tile; G = R (8) fires every beat, with no beat counter at all."""
    params = {"rows": 8, "cols": 4, "rows_per_beat": rows_per_beat}
    report = lint_verilog(verilog_for(design_for("array", params), "array"), "array")
    assert report.findings == []


@pytest.mark.parametrize("rows_per_cycle", [2, 8])
def test_banked_weight_memory_is_lint_clean(rows_per_cycle):
    """The GEMM engine with its weight memory in G banks (G = weight_rows_per_cycle)."""
    from dataclasses import replace

    params = replace(PRESETS["8x4"], weight_rows_per_cycle=rows_per_cycle).as_dict()
    report = lint_verilog(verilog_for(design_for("gemm_unit", params), "gemm_unit"), "gemm_unit")
    assert report.findings == []


def _top_params():
    from sim.flows.decode import top_params
    from tests.sim.tiny_models import tiny

    return top_params(tiny("llama-gqa"))


@pytest.mark.parametrize("kind", ["decode_top", "linked_decode", "linked_gemm"])
def test_the_top_levels_are_lint_clean(kind):
    """The decode accelerator and the two designs behind the UART bridge (the units have their own
    lint tests in test_attention_rtl.py and test_vector_rtl.py)."""
    from sim.link.host import decode_link_params, design_params

    params = {"decode_top": _top_params, "linked_decode": lambda: decode_link_params(_top_params()),
              "linked_gemm": lambda: design_params(PRESETS["4x4"])}[kind]()
    report = lint_verilog(verilog_for(design_for(kind, params), kind), kind)
    assert report.findings == []
    assert sum(report.waived.values()) > 0    # Verilator did lint the design (its style noise is there)


def test_the_paged_top_level_is_lint_clean():
    """The decode top level with paged KV (the formal job's small design): the block-table memory's
    combinational read in the KV address paths makes no combinational loop, latch or multiple driver."""
    from sim.formal.catalog import PAGED
    from sim.formal.top import SMALL

    # The formal job's design, 2 positions a block and 2 heads (1 would leave 0-bit buffer addresses).
    params = dict(SMALL, max_heads=2, config=replace(PAGED, kv_block=2).as_dict())
    report = lint_verilog(verilog_for(design_for("decode_top", params), "decode_top"), "decode_top")
    assert report.findings == []
    assert sum(report.waived.values()) > 0


def test_every_waiver_has_its_reason():
    assert all(len(reason) > 20 for reason in WAIVERS.values())
    assert not {"MULTIDRIVEN", "LATCH", "UNOPTFLAT", "COMBDLY", "BLKANDNBLK"} & set(WAIVERS)


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
