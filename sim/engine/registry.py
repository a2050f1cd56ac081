"""Designs and host flows by name, so a job (a JSON-able dict) can say what to build and what to run.

The tables name the module that defines each design or flow and nothing more: a module is imported
only when one of its names is looked up (the way Glasgow registers its applets), so the registry
imports no flow, and no flow needs the registry. A defining module keeps three tables of its own:
``DESIGNS`` (name -> ``factory(params) -> wiring.Component``; the names are also the Verilog toplevel
names), ``FLOWS`` (name -> ``async def flow(bus, job) -> dict`` over :class:`sim.engine.bus.Bus`, the
result JSON-serialisable), ``JOBS`` (name -> the job's shape, a ``TypedDict`` with every key
documented: :mod:`sim.engine.jobs`) and ``CHECKS`` (name -> ``check(job)``, optional: what the keys
alone do not say). :func:`flow`'s check refuses a job whose keys do not fit its shape, then runs the
module's own check: in the host process before any simulator starts, so a bad job is refused in a
second rather than from inside a simulation.
:func:`sim.engine.runner.run` runs a flow; inside Icarus or Verilator :mod:`sim.engine.cocotb_entry`
imports only the module of the flow's function.
"""

from __future__ import annotations

import importlib

from golden.errors import InputError

from .jobs import check_keys

#: Design name -> the module whose ``DESIGNS`` builds it.
DESIGNS = {
    "gemm_unit": "sim.flows.gemm_jobs",
    "array": "sim.flows.gemm_jobs",
    "attention_unit": "sim.flows.attention",
    "vector_unit": "sim.flows.vector",
    "decode_top": "sim.flows.decode",
    "linked_gemm": "sim.link.host",
    "linked_decode": "sim.link.host",
}

#: Flow name -> the module whose ``FLOWS`` runs it (and whose ``CHECKS`` may check its job).
FLOWS = {
    "gemm_unit": "sim.flows.gemm_jobs",
    "array_stream": "sim.flows.gemm_jobs",
    "array_batch": "sim.flows.gemm_jobs",
    "attention_unit": "sim.flows.attention",
    "vector_ops": "sim.flows.vector",
    "decode_top": "sim.flows.decode",
    "link_gemm": "sim.link.host",
    "link_frames": "sim.link.host",
    "link_decode": "sim.link.host",
    "link_pty": "sim.link.host",
}


def design(kind: str):
    """The factory of design ``kind``."""
    if kind not in DESIGNS:
        raise InputError(f"design must be one of {', '.join(sorted(DESIGNS))}, not {kind!r}")
    return importlib.import_module(DESIGNS[kind]).DESIGNS[kind]


def job_shape(name: str):
    """The ``TypedDict`` of flow ``name``'s job."""
    if name not in FLOWS:
        raise InputError(f"flow must be one of {', '.join(FLOWS)}, not {name!r}")
    return importlib.import_module(FLOWS[name]).JOBS[name]


def flow(name: str):
    """The flow function named ``name`` and its job check: ``check(job)`` refuses a job whose keys do
    not fit :func:`job_shape` (:func:`sim.engine.jobs.check_keys`), then runs the module's own check."""
    shape = job_shape(name)
    module = importlib.import_module(FLOWS[name])
    own = getattr(module, "CHECKS", {}).get(name)

    def check(job) -> None:
        check_keys(job, shape, f"{name} job")
        if own is not None:
            own(job)

    return module.FLOWS[name], check
