"""Designs by name, so a job (a JSON-able dict) can say which component to build.

Each entry maps a name to ``factory(params) -> wiring.Component``; ``params`` is a JSON-able dict.
The names are also the Verilog toplevel names.
"""

from __future__ import annotations

from ..flows import attention, vector
from ..flows import decode as top
from ..link import host as link


def _gemm_unit(params):
    from hdl.config import Config
    from hdl.gemm import GemmUnit

    return GemmUnit(Config.from_dict(params))


def _array(params):
    from hdl.array import SystolicArray

    return SystolicArray(rows=params["rows"], cols=params["cols"])


DESIGNS = {"gemm_unit": _gemm_unit, "array": _array}
DESIGNS.update(attention.DESIGNS)
DESIGNS.update(vector.DESIGNS)
DESIGNS.update(top.DESIGNS)
DESIGNS.update(link.DESIGNS)
