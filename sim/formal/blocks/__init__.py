"""One module per block of the RTL: each holds that block's formal harnesses (its properties)."""
