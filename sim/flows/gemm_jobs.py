"""The GEMM designs (``gemm_unit``, ``array``) and their flows by name, over :mod:`sim.flows.gemm`;
their jobs' shapes: :class:`GemmUnitJob` (cases of :class:`GemmCase`), :class:`ArrayStreamJob` and
:class:`ArrayBatchJob` (cases of :class:`ArrayCase`: many GEMMs through the bare array in one start).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from hdl.array import SystolicArray
from hdl.config import Config
from hdl.gemm import GemmUnit

from .gemm import check_operands, plan_gemm, run_array_stream, run_gemm_unit


class GemmCase(TypedDict):
    """One GEMM ``out = a @ w`` (int8 operands, int32 result) of a ``gemm_unit`` or ``link_gemm`` job."""

    #: Rows of ``a`` and of the result.
    m: int
    #: Columns of ``a``, rows of ``w``.
    k: int
    #: Columns of ``w`` and of the result.
    n: int
    #: The activations, ``m`` rows of ``k`` int8 values.
    a: list[list[int]]
    #: The weights, ``k`` rows of ``n`` int8 values.
    w: list[list[int]]
    #: Watchdog cycles of the run (default: from the cycle model's prediction); ``gemm_unit`` only.
    budget: NotRequired[int | None]


class GemmUnitJob(TypedDict):
    """A ``gemm_unit`` job: GEMMs run one after another on the same simulator (one start-up for many)."""

    #: The design's configuration (:meth:`hdl.config.Config.as_dict`).
    config: dict
    #: The GEMMs, in order.
    cases: list[GemmCase]


class ArrayStreamJob(TypedDict):
    """An ``array_stream`` job: one GEMM streamed through the bare systolic array (:func:`run_array_stream`)."""

    #: The array's rows (its design parameter).
    rows: int
    #: The array's columns (its design parameter).
    cols: int
    #: Tile rows a weight beat carries (the array's design parameter, dividing ``rows``; default 1).
    rows_per_beat: NotRequired[int]
    #: The activations, ``m`` rows of ``k`` int8 values.
    a: list[list[int]]
    #: The weights, ``k`` rows of ``n`` int8 values.
    w: list[list[int]]
    #: Seed of the random stream gaps and stalls (default 0).
    seed: NotRequired[int]
    #: Probability of an idle cycle between input beats, in [0, 1) (default 0).
    gaps: NotRequired[float]
    #: Probability of backpressure on an output cycle, in [0, 1) (default 0).
    stall: NotRequired[float]
    #: Cycles without progress before the watchdog stops the run (default from the shape).
    max_idle: NotRequired[int | None]
    #: Never send the weights (a watchdog test).
    withhold_weights: NotRequired[bool]


class ArrayCase(TypedDict):
    """One GEMM of an ``array_batch`` job, with its own traffic (:func:`run_array_stream`)."""

    #: The activations, ``m`` rows of ``k`` int8 values.
    a: list[list[int]]
    #: The weights, ``k`` rows of ``n`` int8 values.
    w: list[list[int]]
    #: Seed of the random stream gaps and stalls (default 0).
    seed: NotRequired[int]
    #: Probability of an idle cycle between input beats, in [0, 1) (default 0).
    gaps: NotRequired[float]
    #: Probability of backpressure on an output cycle, in [0, 1) (default 0).
    stall: NotRequired[float]


class ArrayBatchJob(TypedDict):
    """An ``array_batch`` job: GEMMs streamed through the bare array one after another, one simulator
    start for all (each from reset, so a case's result does not depend on the ones before it)."""

    #: The array's rows (its design parameter).
    rows: int
    #: The array's columns (its design parameter).
    cols: int
    #: Tile rows a weight beat carries (default 1).
    rows_per_beat: NotRequired[int]
    #: The GEMMs, in order.
    cases: list[ArrayCase]


def gemm_unit(params):
    return GemmUnit(Config.from_dict(params))


def array(params):
    return SystolicArray(rows=params["rows"], cols=params["cols"], rows_per_beat=params.get("rows_per_beat", 1))


def check_gemm_job(job: GemmUnitJob):
    """Check every case of a ``gemm_unit`` job (shapes, fit, operands); return the plans."""
    config = Config.from_dict(job["config"])
    plans = []
    for case in job["cases"]:
        plan = plan_gemm(config, case["m"], case["k"], case["n"])
        check_operands(plan, case["a"], case["w"])
        plans.append(plan)
    return plans


async def gemm_unit_flow(bus, job: GemmUnitJob) -> dict:
    """Run the job's cases in order; returns ``{"cases": [...]}`` (:func:`run_gemm_unit`'s results)."""
    results = []
    for case, plan in zip(job["cases"], check_gemm_job(job), strict=True):
        results.append(await run_gemm_unit(bus, plan, case["a"], case["w"], budget=case.get("budget")))
    return {"cases": results}


async def array_stream_flow(bus, job: ArrayStreamJob) -> dict:
    return await run_array_stream(bus, job["rows"], job["cols"], job["a"], job["w"],
                                  rows_per_beat=job.get("rows_per_beat", 1), seed=job.get("seed", 0),
                                  gaps=job.get("gaps", 0.0), stall=job.get("stall", 0.0),
                                  max_idle=job.get("max_idle"),
                                  withhold_weights=job.get("withhold_weights", False))


async def array_batch_flow(bus, job: ArrayBatchJob) -> dict:
    """Run the job's cases in order; returns ``{"cases": [...]}`` (:func:`run_array_stream`'s results)."""
    results = []
    for case in job["cases"]:
        results.append(await run_array_stream(bus, job["rows"], job["cols"], case["a"], case["w"],
                                              rows_per_beat=job.get("rows_per_beat", 1), seed=case.get("seed", 0),
                                              gaps=case.get("gaps", 0.0), stall=case.get("stall", 0.0)))
    return {"cases": results}


DESIGNS = {"gemm_unit": gemm_unit, "array": array}
FLOWS = {"gemm_unit": gemm_unit_flow, "array_stream": array_stream_flow, "array_batch": array_batch_flow}
JOBS = {"gemm_unit": GemmUnitJob, "array_stream": ArrayStreamJob, "array_batch": ArrayBatchJob}
CHECKS = {"gemm_unit": check_gemm_job}
