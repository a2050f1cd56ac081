"""Host flows by name, so a job (a JSON-able dict) can say which one to run on which simulator.

Each flow is ``async def flow(bus, job) -> dict`` over :class:`sim.engine.bus.Bus`; the result must be
JSON-serialisable. :func:`run_amaranth` runs a flow on Amaranth's simulator in this process;
:mod:`sim.engine.cocotb_entry` runs it inside Icarus or Verilator.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..flows import attention as attention_flows
from ..flows import decode as top_flows
from ..flows import vector as vector_flows
from ..link import host as link_flows
from .bus import AmaranthBus


def _check_gemm_job(job):
    """Check every case of a ``gemm_unit`` job (shapes, fit, operands); return the plans."""
    from hdl.config import Config

    from ..flows.gemm import _check_operands, plan_gemm

    config = Config.from_dict(job["config"])
    plans = []
    for case in job["cases"]:
        plan = plan_gemm(config, case["m"], case["k"], case["n"])
        _check_operands(plan, case["a"], case["w"])
        plans.append(plan)
    return plans


async def _gemm_unit(bus, job):
    """``job``: ``config`` and ``cases``, a list of ``{m, k, n, a, w}`` run one after another
    on the same simulator (one start-up for many GEMMs). Returns ``{"cases": [...]}``."""
    from ..flows.gemm import run_gemm_unit

    results = []
    for case, plan in zip(job["cases"], _check_gemm_job(job), strict=True):
        results.append(await run_gemm_unit(bus, plan, case["a"], case["w"], budget=case.get("budget")))
    return {"cases": results}


async def _array_stream(bus, job):
    from ..flows.gemm import run_array_stream

    return await run_array_stream(bus, job["rows"], job["cols"], job["a"], job["w"], seed=job.get("seed", 0),
                                  gaps=job.get("gaps", 0.0), stall=job.get("stall", 0.0),
                                  max_idle=job.get("max_idle"),
                                  withhold_weights=job.get("withhold_weights", False))


FLOWS = {"gemm_unit": _gemm_unit, "array_stream": _array_stream}
FLOWS.update(attention_flows.FLOWS)
FLOWS.update(vector_flows.FLOWS)
FLOWS.update(top_flows.FLOWS)
FLOWS.update(link_flows.FLOWS)

#: Optional ``check(job)`` per flow, run in the host process before any simulator starts, so a bad
#: job is refused in a second rather than from inside a simulation.
CHECKS = {"gemm_unit": _check_gemm_job}
CHECKS.update(getattr(attention_flows, "CHECKS", {}))
CHECKS.update(getattr(vector_flows, "CHECKS", {}))
CHECKS.update(top_flows.CHECKS)
CHECKS.update(link_flows.CHECKS)


def run_amaranth(component, flow: str, job: dict, *, waves_dir: Path | None = None) -> dict:
    """Run ``flow`` on ``component`` in Amaranth's simulator; exceptions propagate unchanged."""
    from amaranth.sim import Simulator

    result = {}

    async def testbench(ctx):
        result.update(await FLOWS[flow](AmaranthBus(ctx, component), job))

    sim = Simulator(component)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if waves_dir is not None:
        import tempfile

        waves_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"amaranth-{flow}-", suffix=".vcd", dir=waves_dir)
        os.close(fd)
        path = Path(name)
        with sim.write_vcd(str(path)):
            sim.run()
        result["waves"] = str(path)
    else:
        sim.run()
    return result
