"""The GEMM designs (``gemm_unit``, ``array``) and their flows by name, over :mod:`sim.flows.gemm`.

A ``gemm_unit`` job: ``config`` and ``cases``, a list of ``{m, k, n, a, w}``; an ``array_stream`` job:
``rows``, ``cols``, ``a``, ``w`` and the stream's ``seed``, ``gaps``, ``stall``, ``max_idle``.
"""

from __future__ import annotations

from hdl.array import SystolicArray
from hdl.config import Config
from hdl.gemm import GemmUnit

from .gemm import check_operands, plan_gemm, run_array_stream, run_gemm_unit


def gemm_unit(params):
    return GemmUnit(Config.from_dict(params))


def array(params):
    return SystolicArray(rows=params["rows"], cols=params["cols"])


def check_gemm_job(job):
    """Check every case of a ``gemm_unit`` job (shapes, fit, operands); return the plans."""
    config = Config.from_dict(job["config"])
    plans = []
    for case in job["cases"]:
        plan = plan_gemm(config, case["m"], case["k"], case["n"])
        check_operands(plan, case["a"], case["w"])
        plans.append(plan)
    return plans


async def gemm_unit_flow(bus, job):
    """``job``: ``config`` and ``cases``, a list of ``{m, k, n, a, w}`` run one after another
    on the same simulator (one start-up for many GEMMs). Returns ``{"cases": [...]}``."""
    results = []
    for case, plan in zip(job["cases"], check_gemm_job(job), strict=True):
        results.append(await run_gemm_unit(bus, plan, case["a"], case["w"], budget=case.get("budget")))
    return {"cases": results}


async def array_stream_flow(bus, job):
    return await run_array_stream(bus, job["rows"], job["cols"], job["a"], job["w"], seed=job.get("seed", 0),
                                  gaps=job.get("gaps", 0.0), stall=job.get("stall", 0.0),
                                  max_idle=job.get("max_idle"),
                                  withhold_weights=job.get("withhold_weights", False))


DESIGNS = {"gemm_unit": gemm_unit, "array": array}
FLOWS = {"gemm_unit": gemm_unit_flow, "array_stream": array_stream_flow}
CHECKS = {"gemm_unit": check_gemm_job}
