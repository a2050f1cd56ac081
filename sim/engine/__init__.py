"""The RTL run engine: turn a design into Verilog, build a simulator model, run a host flow on it.

Designs and flows are registered here by name (:mod:`sim.engine.registry`, which names the module of each);
:mod:`sim.engine.runner` runs them on Amaranth's simulator, Icarus or Verilator, and
:mod:`sim.engine.cocotb_entry` is the test that runs inside the simulator process.
"""
