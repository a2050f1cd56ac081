"""Configuration checks: every message names the parameter and the bad value."""

from dataclasses import replace

import pytest

from hdl.array import SystolicArray
from hdl.config import DEFAULT, PRESETS, Config
from hdl.gemm import GemmUnit


@pytest.mark.parametrize(("changes", "exc", "match"), [
    ({"array_rows": 0}, ValueError, r"^array_rows must be a positive integer, not 0$"),
    ({"array_cols": -3}, ValueError, r"^array_cols must be a positive integer, not -3$"),
    ({"array_rows": 2.0}, TypeError, r"^array_rows must be an integer, not 2\.0$"),
    ({"array_cols": "4"}, TypeError, r"^array_cols must be an integer, not '4'$"),
    ({"array_rows": True}, TypeError, r"^array_rows must be an integer, not True$"),
    ({"weight_words": 0}, ValueError, r"^weight_words must be a positive integer, not 0$"),
    ({"max_m": 0}, ValueError, r"^max_m must be a positive integer, not 0$"),
    ({"clock_hz": -1}, ValueError, r"^clock_hz must be a positive integer, not -1$"),
    ({"array_rows": 1025}, ValueError, r"^array of 1025x4 is too large: array_rows and array_cols must be at most "
                                       r"1024$"),
    ({"max_m": 300}, ValueError, r"^max_m must not exceed act_words \(256\), not 300$"),
    ({"act_words": 512, "max_m": 300}, ValueError, r"^max_m must not exceed result_words \(256\), not 300$"),
    ({"weight_words": 2}, ValueError, r"^weight_words must hold at least one tile of 4 rows, not 2$"),
    ({"act_tables": 0}, ValueError, r"^act_tables must be a positive integer, not 0$"),
    ({"act_tables": 257}, ValueError, r"^act_tables must be at most 256, not 257$"),
    ({"fused_swiglu": 1}, TypeError, r"^fused_swiglu must be true or false, not 1$"),
    ({"fused_rope": "yes"}, TypeError, r"^fused_rope must be true or false, not 'yes'$"),
    ({"fused_residual": 1}, TypeError, r"^fused_residual must be true or false, not 1$"),
    ({"fused_residual": "yes"}, TypeError, r"^fused_residual must be true or false, not 'yes'$"),
])
def test_bad_configuration_is_rejected(changes, exc, match):
    with pytest.raises(exc, match=match):
        replace(DEFAULT, **changes)


def test_configuration_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        Config(4, 4)  # positional sizes are refused
    with pytest.raises(AttributeError):
        DEFAULT.array_rows = 8


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"^configuration: unknown parameter 'rows' \(known: act_tables, act_words, "
                                         r"array_cols, array_rows, attention_finish_lanes, attention_heads_per_step, "
                                         r"attention_rescale_register, attention_timing_registers, clock_hz, "
                                         r"embed_register, fabric_products, "
                                         r"fused_residual, fused_rope, fused_swiglu, "
                                         r"gemm_product_register, kv_block, kv_bytes, layernorm, logits_words, "
                                         r"max_context, "
                                         r"max_m, param_words, program_register, program_words, "
                                         r"residual_timing_registers, "
                                         r"result_words, scratch_bytes, "
                                         r"vector_lanes, vector_product_register, vector_scalar_register, "
                                         r"weight_rows_per_cycle, weight_words\)$"):
        Config.from_dict({"rows": 4})
    with pytest.raises(TypeError, match=r"^configuration must be a table of named sizes, not list$"):
        Config.from_dict([4, 4])


def test_round_trip_and_derived_sizes():
    for config in PRESETS.values():
        assert Config.from_dict(config.as_dict()) == config
        assert config.array_latency == config.array_rows + config.array_cols
        assert 2 ** config.host_addr_bits >= max(config.weight_words, config.act_words, config.result_words)
        assert config.host_data_bits == 8 * max(config.array_rows, config.array_cols)
        assert config.act_table_entries == 256 * config.act_tables


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"rows": 0, "cols": 4}, ValueError, r"^array rows must be a positive integer, not 0$"),
    ({"rows": 4, "cols": -1}, ValueError, r"^array cols must be a positive integer, not -1$"),
    ({"rows": 4.0, "cols": 4}, TypeError, r"^array rows must be an integer, not 4\.0$"),
    ({"rows": 4, "cols": 65}, ValueError, r"^array cols must be at most 64 to build, not 65$"),
])
def test_array_rejects_bad_sizes(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SystolicArray(**kwargs)


def test_gemm_unit_wants_a_config():
    with pytest.raises(TypeError, match=r"^config must be a Config, not dict$"):
        GemmUnit({"array_rows": 4})
