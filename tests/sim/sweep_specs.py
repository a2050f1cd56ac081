"""Sweep specs the sweep tests share."""

# Every point is confirmed on the RTL (Amaranth's simulator): real work of ~0.1-0.5 s a point,
# long enough to kill the sweep in the middle.
RTL_SPEC = """
kind = "gemm"
[params]
array_rows = [2, 3]
array_cols = [2, 3]
m = [1, 2, 3]
k = [4, 7]
n = [5]
[rtl]
simulator = "amaranth"
max_cycles = 100000
"""
