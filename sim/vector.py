"""Host side of the vector unit: its designs and host flows, registered by name.

DESIGNS maps a design name to ``factory(params) -> Component`` (see :mod:`sim.designs`);
FLOWS maps a flow name to ``async def flow(bus, job) -> dict`` (see :mod:`sim.flows`).
"""

DESIGNS = {}
FLOWS = {}
