"""Constrained-random regressions per block with functional coverage (docs/verification.md).

One module per block (array, gemm, vector, attention, link, top, passes, paged) defines a
:class:`sim.regress.block.Block`: a seeded generator, the golden scoreboard, the coverage bins and
the closure; :mod:`sim.regress.run`
batches transactions into simulator jobs and checks them; ``python -m sim.regress`` is the command.
"""
