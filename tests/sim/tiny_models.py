"""The tiny models the top-level regressions share (test_top_rtl, test_link_decode, test_lint): a
tiny GPT-2 and a tiny Llama-GQA, both on one small design (4x4 array, head_dim 8)."""

from dataclasses import replace

from golden.model import ModelConfig, init_weights
from golden.quantize import quantize_model, random_calibration
from sim.machine.compiler import compile_model
from sim.regress.passes import ROWS_DESIGN
from sim.regress.top import DESIGN, SHARED

TINY = {
    "gpt2": ModelConfig(family="gpt2", vocab_size=37, d_model=24, n_layers=2, n_heads=3, n_kv_heads=3,
                        head_dim=8, d_ff=40, max_context=48, tie_embeddings=True),
    "llama-gqa": ModelConfig(family="llama", vocab_size=29, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             head_dim=8, d_ff=48, max_context=48),
}
#: One design for both tiny models (small memories keep the Verilog and the builds small): the top
#: level's random regression's design, so the Verilator build is shared.
SMALL = DESIGN
SMALL_SHARED = SHARED   # what top_params gives llama-gqa


#: The FPGA build's timing cuts and fabric products (each off by default; the ``ulx3s`` preset has
#: all but ``residual_timing_registers``, its design having no fused residual add): the same bits,
#: the cuts two cycles more per GEMM, four per vector instruction (one for the scalars, three in
#: the unit), seven per attention call (and one per step after the first where a group is one step a
#: position), two per fused GEMM, two per EMBED and one per pass (FETCH).
FPGA_KEYS = {"gemm_product_register": True, "vector_scalar_register": True, "vector_product_register": True,
             "fabric_products": True, "attention_timing_registers": True, "residual_timing_registers": True,
             "embed_register": True, "program_register": True, "attention_rescale_register": True}


def tiny(name, weight_rows_per_cycle=1, **changes):
    """The tiny model ``name`` compiled for :data:`SMALL` with ``weight_rows_per_cycle`` weight banks
    (and ``changes`` to the design)."""
    cfg = TINY[name]
    model = quantize_model(cfg, init_weights(cfg, seed=3, std=0.3), random_calibration(cfg, windows=4, seed=1))
    return compile_model(model, replace(SMALL, weight_rows_per_cycle=weight_rows_per_cycle, **changes))


#: :data:`SMALL` with room for passes of up to 8 rows (the tiny models' scratchpad and logits rows
#: side by side) and several KV slots (tests/sim/test_passes_rtl.py).
PASSES = ROWS_DESIGN


def tiny_passes(name, **changes):
    """The tiny model ``name`` compiled for :data:`PASSES` (with ``changes`` to it)."""
    return compile_model(tiny(name).model, replace(PASSES, **changes))
