"""Every formal job Lockstep runs: which harness, which mode, how deep, fast suite or slow.

``tests/sim/test_formal.py`` runs each job under pytest; ``python -m sim.formal`` runs them and prints
the table docs/verification.md quotes. A ``cover`` job is the non-vacuity check of the ``prove`` or
``bmc`` job of the same harness: its covers show the states the proof talks about are reachable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .array import ArrayMac, ArrayStreams, PeMac
from .attention import AttentionControl, AttentionCycles
from .gemm import GemmBusyBound, GemmControl, GemmCycles
from .harness import Harness
from .link import LinkRxIdle
from .top import SMALL as TOP_SMALL
from .top import TopSequencer
from .uart import UartLoopback, UartRxIdle, UartTxFrame
from .vector import VectorControl, VectorCycles
from .weights import WeightsReadWrite

__all__ = ["JOBS", "Job", "job"]

#: The int8 edge values and their neighbours of zero: the array equivalence's operand set.
EDGES = (-128, -1, 0, 1, 127)
#: A wider vector unit: 4 lanes, a partial last beat at length 9, RoPE heads of 8, two positions.
VECTOR_L4 = {"lanes": 4, "max_length": 9, "max_norm_length": 8, "max_head_dim": 8, "max_context": 2}
#: The top-sequencer design with paged KV: blocks of one position (every position a table lookup).
PAGED = dataclasses.replace(TOP_SMALL["config"], kv_block=1)
#: The sequencer with the program memory's read data registered (ulx3s's program_register) and EMBED's
#: first address made over two cycles (embed_register).
FETCH = dataclasses.replace(TOP_SMALL["config"], program_register=True, embed_register=True)


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    block: str
    harness: Callable[[], Harness]
    mode: str
    depth: int
    slow: bool = False
    #: Seconds before the job counts as an error (the whole top level's covers need more on a loaded machine).
    timeout: float = 600.0


JOBS = (
    Job("uart-tx-frame", "hdl/uart.py UartTx", UartTxFrame, "prove", 42),
    Job("uart-tx-frame-cover", "hdl/uart.py UartTx", UartTxFrame, "cover", 42, slow=True),
    Job("uart-rx-idle", "hdl/uart.py UartRx", UartRxIdle, "prove", 40),
    Job("uart-rx-idle-cover", "hdl/uart.py UartRx", UartRxIdle, "cover", 50, slow=True),
    Job("uart-rx-idle-5", "hdl/uart.py UartRx", lambda: UartRxIdle(clocks_per_bit=5), "prove", 49, slow=True),
    Job("uart-loopback", "hdl/uart.py UartTx + UartRx", UartLoopback, "bmc", 50),
    Job("uart-loopback-cover", "hdl/uart.py UartTx + UartRx", UartLoopback, "cover", 50, slow=True),
    Job("link-rx-idle", "hdl/link.py LinkReceiver", LinkRxIdle, "prove", 40),
    Job("link-rx-idle-cover", "hdl/link.py LinkReceiver", LinkRxIdle, "cover", 55, slow=True),
    Job("pe-mac", "hdl/array.py ProcessingElement", PeMac, "prove", 1, slow=True),
    Job("pe-mac-cover", "hdl/array.py ProcessingElement", PeMac, "cover", 4, slow=True),
    Job("array-streams-2x2", "hdl/array.py SystolicArray", ArrayStreams, "prove", 4),
    Job("array-streams-2x2-cover", "hdl/array.py SystolicArray", ArrayStreams, "cover", 12, slow=True),
    Job("array-streams-3x2", "hdl/array.py SystolicArray", lambda: ArrayStreams(rows=3, cols=2), "prove", 4,
        slow=True),
    Job("array-streams-4x3-g2", "hdl/array.py SystolicArray",
        lambda: ArrayStreams(rows=4, cols=3, rows_per_beat=2), "prove", 4, slow=True),
    Job("array-mac-2x2", "hdl/array.py SystolicArray", lambda: ArrayMac(gaps=False, values=EDGES), "bmc", 14),
    Job("array-mac-2x2-cover", "hdl/array.py SystolicArray", lambda: ArrayMac(gaps=False, values=EDGES), "cover",
        14, slow=True),
    Job("array-mac-2x2-g2", "hdl/array.py SystolicArray",
        lambda: ArrayMac(rows_per_beat=2, gaps=False, values=EDGES), "bmc", 14, slow=True),
    Job("weights-rw", "hdl/weights.py WeightMemory", WeightsReadWrite, "bmc", 10),
    Job("weights-rw-cover", "hdl/weights.py WeightMemory", WeightsReadWrite, "cover", 10, slow=True),
    Job("weights-rw-g1", "hdl/weights.py WeightMemory", lambda: WeightsReadWrite(banks=1), "bmc", 10, slow=True),
    Job("gemm-control", "hdl/gemm.py GemmUnit", GemmControl, "prove", 3),
    Job("gemm-control-cover", "hdl/gemm.py GemmUnit", GemmControl, "cover", 20, slow=True),
    Job("gemm-cycles", "hdl/gemm.py GemmUnit", GemmCycles, "bmc", 19),
    Job("gemm-cycles-cover", "hdl/gemm.py GemmUnit", GemmCycles, "cover", 19, slow=True),
    Job("gemm-busy-bound", "hdl/gemm.py GemmUnit", GemmBusyBound, "bmc", 24),
    Job("gemm-busy-bound-cover", "hdl/gemm.py GemmUnit", GemmBusyBound, "cover", 24, slow=True),
    Job("attention-control", "hdl/attention.py AttentionUnit", AttentionControl, "prove", 3),
    Job("attention-control-cover", "hdl/attention.py AttentionUnit", AttentionControl, "cover", 30, slow=True),
    Job("attention-control-f1", "hdl/attention.py AttentionUnit", lambda: AttentionControl(finish_lanes=1), "prove",
        3, slow=True),
    Job("attention-control-p2", "hdl/attention.py AttentionUnit", lambda: AttentionControl(heads_per_step=2),
        "prove", 3, slow=True),
    Job("attention-cycles", "hdl/attention.py AttentionUnit", AttentionCycles, "bmc", 20),
    Job("attention-cycles-cover", "hdl/attention.py AttentionUnit", AttentionCycles, "cover", 20, slow=True),
    Job("attention-cycles-f1", "hdl/attention.py AttentionUnit", lambda: AttentionCycles(finish_lanes=1), "bmc",
        22, slow=True),
    Job("attention-cycles-p2", "hdl/attention.py AttentionUnit", lambda: AttentionCycles(heads_per_step=2), "bmc",
        21, slow=True),
    Job("attention-cycles-tr", "hdl/attention.py AttentionUnit", lambda: AttentionCycles(timing_registers=True),
        "bmc", 26),
    Job("attention-cycles-rr", "hdl/attention.py AttentionUnit",
        lambda: AttentionCycles(timing_registers=True, rescale_register=True), "bmc", 32),
    Job("attention-cycles-rr-p2", "hdl/attention.py AttentionUnit",
        lambda: AttentionCycles(rescale_register=True, heads_per_step=2), "bmc", 27, slow=True),
    Job("vector-control", "hdl/vector.py VectorUnit", VectorControl, "prove", 3),
    Job("vector-control-cover", "hdl/vector.py VectorUnit", VectorControl, "cover", 30, slow=True),
    Job("vector-control-l4", "hdl/vector.py VectorUnit", lambda: VectorControl(**VECTOR_L4), "prove", 3, slow=True),
    Job("vector-cycles", "hdl/vector.py VectorUnit", VectorCycles, "bmc", 22),
    Job("vector-control-pr", "hdl/vector.py VectorUnit", lambda: VectorControl(product_register=True), "prove", 3),
    Job("vector-cycles-pr", "hdl/vector.py VectorUnit", lambda: VectorCycles(product_register=True), "bmc", 28),
    Job("vector-cycles-cover", "hdl/vector.py VectorUnit", VectorCycles, "cover", 22, slow=True),
    Job("top-sequencer", "hdl/top.py DecodeTop", TopSequencer, "prove", 2, slow=True),
    Job("top-sequencer-cover", "hdl/top.py DecodeTop", TopSequencer, "cover", 22, slow=True, timeout=1800.0),
    Job("top-sequencer-paged", "hdl/top.py DecodeTop", lambda: TopSequencer(config=PAGED), "prove", 2, slow=True),
    Job("top-sequencer-fetch", "hdl/top.py DecodeTop", lambda: TopSequencer(config=FETCH), "prove", 2, slow=True),
)


def job(name: str) -> Job:
    for j in JOBS:
        if j.name == name:
            return j
    raise KeyError(name)
