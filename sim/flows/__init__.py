"""Host flows: the host side of each hardware unit (GEMM, attention, vector, the decode top level).

Each module plans a job, checks it, and drives the unit through a :class:`sim.engine.bus.Bus`.
"""
