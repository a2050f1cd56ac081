"""The cycle model against the RTL over many shapes and weight path widths (Amaranth's simulator: no
build, fast)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden.numerics import gemm_int8
from hdl.config import Config
from sim.engine.runner import run
from sim.flows.gemm import plan_gemm
from sim.machine.cycles import gemm_cycles, gemm_lower_bound

from ..conftest import padded_gemm_macs


@st.composite
def design_and_shape(draw):
    rows = draw(st.integers(1, 6))
    cols = draw(st.integers(1, 6))
    # Any weight path width G dividing R (480 weight words: a multiple of every G up to 6).
    g = draw(st.sampled_from([d for d in range(1, rows + 1) if rows % d == 0]))
    config = Config(array_rows=rows, array_cols=cols, weight_words=480, weight_rows_per_cycle=g, act_words=128,
                    result_words=128, max_m=12)
    m = draw(st.integers(1, 12))
    k = draw(st.integers(1, 3 * rows + 1))
    n = draw(st.integers(1, 3 * cols + 1))
    return config, m, k, n


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(design_and_shape(), st.integers(0, 2**32 - 1))
def test_prediction_equals_rtl_for_any_array_and_shape(case, seed):
    config, m, k, n = case
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    result = run("amaranth", "gemm_unit", config.as_dict(), "gemm_unit",
                 {"config": config.as_dict(), "cases": [{"m": m, "k": k, "n": n, "a": a.tolist(), "w": w.tolist()}]})
    got = result["cases"][0]
    assert np.array_equal(np.array(got["out"]), gemm_int8(a, w))
    assert got["cycles"] == got["edges"] == plan_gemm(config, m, k, n).predicted_cycles


def test_parts_add_up_and_respect_the_lower_bound():
    config = Config(array_rows=8, array_cols=8, weight_words=4096, act_words=1024, result_words=1024, max_m=64)
    for m, k, n in [(1, 8, 8), (1, 512, 512), (64, 64, 64), (8, 100, 30)]:
        parts = gemm_cycles(config, m, k, n)
        assert parts.total == (parts.start + parts.first_load + parts.steady + parts.last_rows + parts.latency
                               + parts.drain)
        assert parts.total >= gemm_lower_bound(config, m, k, n)


def test_batch_one_is_bound_by_weight_loading():
    # M = 1: one tile every R cycles, however many tiles: the weight port is the bottleneck.
    config = Config(array_rows=8, array_cols=8, weight_words=4096, act_words=1024, result_words=1024, max_m=64)
    small = gemm_cycles(config, 1, 64, 64).total
    large = gemm_cycles(config, 1, 128, 128).total
    tiles_small, tiles_large = 8 * 8, 16 * 16
    assert large - small == (tiles_large - tiles_small) * config.array_rows


def test_decode_step_prediction_for_the_demo_model():
    from golden.checkpoint import load_demo_model
    from golden.quantize import program_structure
    from hdl.config import PRESETS
    from sim.machine.cycles import SEQ_ISSUE, decode_step_cycles

    model = load_demo_model().config
    ops = program_structure(model)
    config = PRESETS["demo-narrow"]
    assert config.weight_rows_per_cycle == 1
    first = decode_step_cycles(ops, model, config, position=0)
    last = decode_step_cycles(ops, model, config, position=model.max_context - 1)
    # One count per instruction: q, k, v and gate, up are one GEMM each a layer.
    assert len(first.ops) == len(ops) - 3 * model.n_layers
    assert [o.output for o in first.ops if "+" in o.output] == [
        name for i in range(model.n_layers) for name in (f"L{i}.q+k+v", f"L{i}.gate+up")]
    assert all(o.cycles > SEQ_ISSUE for o in first.ops)
    # Only attention depends on the position: one (head, position) step per cycle per extra row.
    assert last.total - first.total == model.n_layers * model.n_heads * (model.max_context - 1)
    # Batch-1 decode on the one-row port is bound by streaming the tiles through its C bytes a cycle.
    padded = padded_gemm_macs(ops, config)
    assert first.bounds["weight port"] == padded / config.array_cols == first.lower_bound
    assert first.binding == "weight port"
    assert first.total >= first.lower_bound
    # A port half as wide doubles every tile load: the weight-bound part scales, the rest does not.
    narrow = decode_step_cycles(ops, model, config, position=0, weight_bytes_per_cycle=config.array_cols / 2)
    assert narrow.bounds["weight port"] == 2 * first.bounds["weight port"]
    assert narrow.total > first.total


def test_the_bound_is_the_mac_peak_and_the_ports_together():
    """The array's MAC peak (padded MACs / (R*C)) and its weight port are both bounds of a decode step:
    on the one-row port the port binds and the array is at 1/R of its peak at best; on the full-width
    demo design (a tile a cycle) the two meet and the MAC peak binds. Expected values come from the
    program's shapes, not from the cycle model."""
    from golden.checkpoint import load_demo_model
    from golden.quantize import program_structure
    from hdl.config import PRESETS
    from sim.machine.cycles import BOUND_NAMES, decode_step_cycles

    model = load_demo_model().config
    ops = program_structure(model)
    shares = {}
    for name in ("demo-narrow", "demo"):
        config = PRESETS[name]
        R, C, G = config.array_rows, config.array_cols, config.weight_rows_per_cycle
        d = decode_step_cycles(ops, model, config, position=5)
        padded = padded_gemm_macs(ops, config)
        assert tuple(d.bounds) == BOUND_NAMES
        assert d.bounds["MAC peak"] == padded / (R * C)
        assert d.bounds["weight port"] == padded / (G * C)
        b = d.bound_report
        assert b.mac_peak_share == padded / (R * C) / d.total
        assert b.efficiency == max(padded / (R * C), padded / (G * C), d.bounds["vector"]) / d.total
        shares[name] = b.mac_peak_share
        assert b.binding == ("weight port" if G < R else "MAC peak")
        assert b.binding_text().startswith(f"{b.binding}, {max(padded // (R * C), padded // (G * C)):,} cycles (")
    assert PRESETS["demo"].weight_rows_per_cycle == PRESETS["demo"].array_rows == 8
    assert shares["demo-narrow"] < 1 / 8 < 0.5 < shares["demo"]
    assert b.what("weight port") == "64 bytes a cycle" and b.what("MAC peak") == "8x8 MACs a cycle"


def test_a_gemm_pads_to_whole_tiles_in_both_array_bounds():
    """K = 10, N = 9 on an 8x8 array: 2 x 2 tiles, 16 x 16 = 256 padded MACs (not the 90 the GEMM
    does): the MAC peak bound is 4 cycles, the port's 256 / (G * 8) bytes."""
    from sim.machine.cycles import DecodeCycles, gemm_lower_bound, op_cycles

    for g in (1, 2, 8):
        config = Config(array_rows=8, array_cols=8, weight_words=4096, weight_rows_per_cycle=g)
        c = op_cycles("gemm", config, width=9, in_width=10)
        assert (c.macs, c.weight_bytes, c.tiles) == (90, 90, 4)
        assert c.unit_min == gemm_lower_bound(config, 1, 10, 9) == max(4, 4 * 8 // g)
        d = DecodeCycles((c,), 8, 8, float(config.weight_port_bytes))
        assert d.bounds["MAC peak"] == 4 and d.bounds["weight port"] == 256 / (8 * g)
        assert d.binding == ("MAC peak" if g == 8 else "weight port")


def test_the_fpga_timing_cuts_add_a_cycle_to_each_gemm_and_each_vector_instruction():
    """gemm_product_register: GEMM_PRODUCT_REGISTER more per GEMM instruction; vector_scalar_register:
    VECTOR_SCALAR_REGISTER more per vector instruction (a RoPE of several commands latches once);
    vector_product_register: VECTOR_PRODUCT_REGISTER more per vector command (a RoPE of one
    command a head pays it per head; a norm VECTOR_NORM_SETTLE_PR more, a LayerNorm VECTOR_LAYER_STATS
    more too, the demo model has none);
    fabric_products: no cycle. The RTL confirms them (tests/sim/test_top_rtl.py, test_fused_residual.py)."""
    from dataclasses import replace

    from golden.checkpoint import load_demo_model
    from golden.quantize import program_structure
    from hdl.config import PRESETS
    from sim.machine.cycles import (
        GEMM_PRODUCT_REGISTER,
        VECTOR_LAYER_STATS,
        VECTOR_NORM_SETTLE_PR,
        VECTOR_PRODUCT_REGISTER,
        VECTOR_SCALAR_REGISTER,
        decode_step_cycles,
        unit_of,
    )

    assert GEMM_PRODUCT_REGISTER == 2 and VECTOR_SCALAR_REGISTER == 1
    assert VECTOR_PRODUCT_REGISTER == 3 and VECTOR_NORM_SETTLE_PR == 1
    model = load_demo_model().config
    ops = program_structure(model)
    for name in ("demo", "demo-narrow"):        # fused and one-command-a-head RoPE
        base = PRESETS[name]
        off = decode_step_cycles(ops, model, base, position=5)
        for key, unit, extra in (("gemm_product_register", "array", GEMM_PRODUCT_REGISTER),
                                 ("vector_scalar_register", "vector", VECTOR_SCALAR_REGISTER),
                                 ("fabric_products", None, 0)):
            on = decode_step_cycles(ops, model, replace(base, **{key: True}), position=5)
            assert [a.output for a in on.ops] == [b.output for b in off.ops]
            assert [a.cycles - b.cycles for a, b in zip(on.ops, off.ops, strict=True)] == [
                extra if unit_of(b.op) == unit else 0 for b in off.ops]
            assert on.bounds == off.bounds
        on = decode_step_cycles(ops, model, replace(base, vector_product_register=True), position=5)
        extra = [a.cycles - b.cycles for a, b in zip(on.ops, off.ops, strict=True)]
        assert [e for e, b in zip(extra, off.ops, strict=True) if b.op != "rope"] == [
            VECTOR_PRODUCT_REGISTER + (VECTOR_NORM_SETTLE_PR if b.op in ("rmsnorm", "layernorm") else 0)
            + (VECTOR_LAYER_STATS if b.op == "layernorm" else 0) if unit_of(b.op) == "vector"
            else 0 for b in off.ops if b.op != "rope"]
        # RoPE: once a command, one for all heads when fused, else one a head (q's n_heads, k's n_kv_heads).
        commands = {1} if base.fused_rope else {model.n_heads, model.n_kv_heads}
        rope = {e for e, b in zip(extra, off.ops, strict=True) if b.op == "rope"}
        assert rope == {c * VECTOR_PRODUCT_REGISTER for c in commands}
        assert on.bounds == off.bounds
