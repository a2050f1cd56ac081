"""The cycle model against the RTL over many shapes (Amaranth's simulator: no build, fast)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden.numerics import gemm_int8
from hdl.config import Config
from sim.engine.runner import run
from sim.flows.gemm import plan_gemm
from sim.machine.cycles import gemm_cycles, gemm_lower_bound


@st.composite
def design_and_shape(draw):
    rows = draw(st.integers(1, 6))
    cols = draw(st.integers(1, 6))
    config = Config(array_rows=rows, array_cols=cols, weight_words=512, act_words=128, result_words=128, max_m=12)
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
    config = PRESETS["demo"]
    first = decode_step_cycles(ops, model, config, position=0)
    last = decode_step_cycles(ops, model, config, position=model.max_context - 1)
    # One count per instruction: q, k, v and gate, up are one GEMM each a layer.
    assert len(first.ops) == len(ops) - 3 * model.n_layers
    assert [o.output for o in first.ops if "+" in o.output] == [
        name for i in range(model.n_layers) for name in (f"L{i}.q+k+v", f"L{i}.gate+up")]
    assert all(o.cycles > SEQ_ISSUE for o in first.ops)
    # Only attention depends on the position: one (head, position) step per cycle per extra row.
    assert last.total - first.total == model.n_layers * model.n_heads * (model.max_context - 1)
    # Batch-1 decode is bound by streaming the weights through the C-byte port.
    weights = sum(o.weight_bytes for o in first.ops)
    assert first.bounds["weights"] == weights / config.array_cols == first.lower_bound
    assert first.total >= first.lower_bound
    # A port half as wide doubles every tile load: the weight-bound part scales, the rest does not.
    narrow = decode_step_cycles(ops, model, config, position=0, weight_bytes_per_cycle=config.array_cols / 2)
    assert narrow.bounds["weights"] == 2 * first.bounds["weights"]
    assert narrow.total > first.total
