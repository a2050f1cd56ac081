"""The cocotb test that runs inside Icarus or Verilator: read the job, run its flow, write the result.

Started by :func:`sim.engine.runner.run` with ``LOCKSTEP_JOB`` naming the job file. Any exception (a
watchdog, a bad job) is written to the result file as one line and fails the cocotb test.
"""

import importlib
import json
import os

import cocotb

from sim.engine.bus import CocotbBus


@cocotb.test()
async def run_job(dut):
    with open(os.environ["LOCKSTEP_JOB"]) as fh:
        spec = json.load(fh)
    # Only the module that defines the flow (sim.engine.registry would import every design's host code).
    flow = getattr(importlib.import_module(spec["module"]), spec["function"])
    bus = CocotbBus(dut, period_ns=spec["period_ns"], clock=spec.get("clock", "cocotb"))
    try:
        result = await flow(bus, spec["job"])
    except Exception as exc:
        with open(spec["result"], "w") as fh:
            json.dump({"error": f"{type(exc).__name__}: {exc}"}, fh)
        raise
    with open(spec["result"], "w") as fh:
        json.dump(result, fh)
