"""The cycle model: the one place where Lockstep predicts how many cycles the hardware takes.

Every prediction here is exact (the RTL's measured count must equal it) and closed-form. The
performance model, sweeps and projections call these functions; nobody writes a second formula.

GEMM on :class:`hdl.gemm.GemmUnit`
----------------------------------
A GEMM of M x K x N on an R x C array runs ``T = ceil(K/R) * ceil(N/C)`` tiles. Each tile needs R
weight beats and M activation beats. The two feeders run independently, one beat per cycle each;
double-buffered weights let tile t+1 load while tile t computes, and tile t+2 may start loading
the cycle after tile t's last activation entered. So once the first tile is loaded, a tile
leaves every ``max(R, M)`` cycles::

    cycles = START + R + (T - 1) * max(R, M) + M + L + DRAIN

* START = 2: the edge that samples ``start``, then one cycle for the first memory read.
* R: the first tile's weight rows (nothing can overlap them).
* (T - 1) * max(R, M): every further tile, bound by whichever of its weight load (R) or its
  activation stream (M) is longer.
* M: the last tile's activation rows.
* L = R + C (``Config.array_latency``): the last row crossing the array.
* DRAIN = 0: the accumulator adds and writes the result in the cycle the sums leave the array,
  and ``done`` is raised by that same edge.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from golden.errors import InputError
from golden.numerics import ceil_div
from hdl.config import check_positive_int
from hdl.top import EMBED_LEAD
from hdl.vector import (
    LAYER_STATS_EXTRA,
    NORM_STATS_CYCLES,
    PIPELINE_STAGES,
    PRODUCT_REGISTER_NORM_SETTLE,
    PRODUCT_REGISTER_STAGES,
    VECTOR_OP_NAMES,
)

from .schedule import instruction_groups

__all__ = ["GEMM_DRAIN", "GEMM_START", "GemmCycles", "array_stream_cycles", "gemm_cycles", "gemm_lower_bound",
           "gemm_tiles", "tile_load_cycles"]

GEMM_START = 2
GEMM_DRAIN = 0


@dataclass(frozen=True)
class GemmCycles:
    """A predicted GEMM cycle count and its parts (they add up to ``total``)."""

    start: int
    first_load: int
    steady: int
    last_rows: int
    latency: int
    drain: int

    @property
    def total(self) -> int:
        return self.start + self.first_load + self.steady + self.last_rows + self.latency + self.drain


def tile_load_cycles(config, weight_bytes_per_cycle: float | None = None) -> int:
    """Cycles to load one R x C weight tile: R / G at the weight path's full width (G =
    ``weight_rows_per_cycle`` rows of C bytes a cycle), more when the memory behind it delivers fewer
    bytes a cycle (external memory, a shared bus).

    Only the full-width case runs on the RTL; narrower ports are the performance model's."""
    R, C = config.array_rows, config.array_cols
    port = config.weight_port_bytes
    if weight_bytes_per_cycle is None or weight_bytes_per_cycle >= port:
        return R // config.weight_rows_per_cycle
    if weight_bytes_per_cycle <= 0:
        raise InputError(f"weight_bytes_per_cycle must be positive, not {weight_bytes_per_cycle}")
    return math.ceil(R * C / weight_bytes_per_cycle)


def gemm_cycles(config, m: int, k: int, n: int, *, weight_bytes_per_cycle: float | None = None) -> GemmCycles:
    """Exact cycles of an M x K x N GEMM on ``config``'s GemmUnit (shape checked by sim.flows.gemm).

    ``weight_bytes_per_cycle`` narrower than the port stretches every tile load (see
    :func:`tile_load_cycles`); the RTL runs the default, the full port."""
    load = tile_load_cycles(config, weight_bytes_per_cycle)
    tiles = gemm_tiles(config, k, n)
    return GemmCycles(
        start=GEMM_START,
        first_load=load,
        steady=(tiles - 1) * max(load, m),
        last_rows=m,
        latency=config.array_latency,
        drain=GEMM_DRAIN,
    )


def array_stream_cycles(config, m: int, k: int, n: int) -> int:
    """Exact cycles of an M x K x N GEMM through the bare :class:`hdl.array.SystolicArray`'s
    streams, counted from the first cycle a beat is offered to the last sum taken, when both
    drivers offer a beat every cycle and the sums are always taken (``run_array_stream`` without
    gaps or stalls). The GEMM unit's feeders are such drivers, so this is the unit's count without
    its START and DRAIN: ``R + (T - 1) * max(R, M) + M + L``."""
    g = gemm_cycles(config, m, k, n)
    return g.total - g.start - g.drain


def gemm_tiles(config, k: int, n: int) -> int:
    """R x C weight tiles of a K x N GEMM: ``ceil(K/R) * ceil(N/C)`` (K and N padded to whole tiles)."""
    return ceil_div(k, config.array_rows) * ceil_div(n, config.array_cols)


def gemm_lower_bound(config, m: int, k: int, n: int, *, weight_bytes_per_cycle: float | None = None) -> int:
    """The larger of the array's MAC peak (padded MACs / (R*C): ``tiles * M``) and the weight-load
    bound (:func:`tile_load_cycles` per tile: R / G at G = ``weight_rows_per_cycle``, more behind a
    narrower memory)."""
    tiles = gemm_tiles(config, k, n)
    return max(tiles * m, tiles * tile_load_cycles(config, weight_bytes_per_cycle))


# --- attention unit ------------------------------------------------------------------------------

__all__ += ["ATTENTION_FINISH_STAGES", "ATTENTION_POSITION_STAGES", "ATTENTION_Q_FIRST", "ATTENTION_START",
            "ATTENTION_RESCALE_REGISTER", "ATTENTION_TIMING_REGISTERS", "AttentionCycles", "attention_cycles",
            "attention_finish_steps", "attention_min_cycles", "attention_steps"]

#: The edge that samples ``start``.
ATTENTION_START = 1
#: The first query row must be written before the first (head, position) step can read it.
ATTENTION_Q_FIRST = 1
#: Stages from an issued step to its head's finished state: dot product, logit, running max,
#: rescale-and-accumulate (S1-S4 of :mod:`hdl.attention`).
ATTENTION_POSITION_STAGES = 4
#: Stages from a head's finished state to its output beat being taken: reciprocal (F1-F2),
#: normalisation (F3), requantization (F4) and the output register.
ATTENTION_FINISH_STAGES = 5
#: Config.attention_timing_registers: a register stage after each deep single-cycle path: the dot
#: products' terms (S1x), the logits' products (S2x), the exp table's read data (S3x), the Newton
#: step's error (F2x), the normalisation's products (F3x) and the output requantization's (F4x).
ATTENTION_TIMING_REGISTERS = 6
#: Config.attention_rescale_register: S4 in two stages (the rescale's products registered before
#: their sums into the rotating files), one position stage more.
ATTENTION_RESCALE_REGISTER = 1


@dataclass(frozen=True)
class AttentionCycles:
    """A predicted attention-call cycle count and its parts (they add up to ``total``).

    ``start`` + ``q_first`` + ``steps`` + ``handoff`` + ``finish`` + ``latency``, where ``steps =
    n_kv_heads * ceil(group / P) * kv_len`` is one step per cycle, each step P query heads of a
    group at one position (P = ``heads_per_step``; ``n_heads * kv_len`` at P = 1), ``handoff =
    n_heads - n_kv_heads * ceil(group / P)`` the cycles the position stages hold while a finished
    step's heads enter the (shared) finish stages one a cycle (0 at P = 1), ``finish = n_heads *
    (S - 1)`` the cycles the pipeline holds while each head's row passes the finish stages
    ``finish_lanes`` lanes at a time (S = ceil(head_dim / finish_lanes); 0 when they are head_dim
    lanes wide) and ``latency`` the pipeline behind the last step. ``q_first`` is 1 at P = 1 (the
    first query row) and ``n_heads`` at P > 1 (the first step waits for every query row). ``gap``
    (``rescale_register`` with one step a group at a position, ``ceil(group / P) = 1``) is a
    cycle between consecutive steps: ``steps - 1``.
    """

    start: int
    q_first: int
    steps: int
    latency: int
    finish: int = 0
    handoff: int = 0
    gap: int = 0

    @property
    def total(self) -> int:
        return self.start + self.q_first + self.steps + self.gap + self.handoff + self.finish + self.latency


def attention_finish_steps(head_dim: int, finish_lanes: int = 0) -> int:
    """Cycles one head's row spends in the finish stage: ceil(head_dim / finish_lanes), 1 when
    ``finish_lanes`` is 0 (all lanes at once) or at least ``head_dim``."""
    if not finish_lanes or finish_lanes >= head_dim:
        return 1
    return ceil_div(head_dim, finish_lanes)


def attention_steps(*, n_heads: int, kv_len: int, n_kv_heads: int = 0, heads_per_step: int = 1) -> int:
    """Issue steps of one attention call: ``n_kv_heads * ceil(group / heads_per_step) * kv_len``
    (group = n_heads / n_kv_heads; a group that is not a multiple of P leaves lanes idle in its
    last step of each position). At P = 1 it is ``n_heads * kv_len`` and ``n_kv_heads`` does not
    enter (0, the default, is allowed only then)."""
    check_positive_int("heads_per_step", heads_per_step)
    if heads_per_step == 1:
        return n_heads * kv_len
    if not n_kv_heads or n_heads % n_kv_heads:
        raise InputError(f"n_kv_heads must divide n_heads ({n_heads}) when heads_per_step > 1, not {n_kv_heads}")
    return n_kv_heads * ceil_div(n_heads // n_kv_heads, heads_per_step) * kv_len


def attention_cycles(*, n_heads: int, kv_len: int, head_dim: int = 1, finish_lanes: int = 0, n_kv_heads: int = 0,
                     heads_per_step: int = 1, timing_registers: bool = False,
                     rescale_register: bool = False) -> AttentionCycles:
    """Exact cycles of one call of :class:`hdl.attention.AttentionUnit` with every source always
    valid and the sink always ready, from the edge that samples ``start`` to the first cycle
    ``done`` is high (shape checked by :func:`sim.flows.attention.plan_attention`).

    At ``heads_per_step`` P = 1 the grouping (``n_kv_heads``) does not enter: the datapath is
    ``head_dim`` lanes wide and takes one (query head, position) step per cycle, groups back to
    back. With P > 1 a step runs up to P heads of one group at one position
    (:func:`attention_steps`), the first step waits for every query row (``q_first = n_heads``)
    and a finished step's heads enter the finish stages one a cycle, holding the position stages
    for ``live lanes - 1`` cycles (``handoff``). ``head_dim`` enters only through the finish
    stages' width ``finish_lanes`` (0, the default: all lanes at once, and the call does not
    depend on head_dim): each head holds the pipeline for :func:`attention_finish_steps` - 1 cycles.
    ``timing_registers`` (``Config.attention_timing_registers``): three position stages and three
    finish stages more, six cycles more (:data:`ATTENTION_TIMING_REGISTERS`).
    ``rescale_register`` (``Config.attention_rescale_register``): S4's products registered before
    S4r sums them into the rotating files, so a head's state is updated two cycles after S4 reads
    it: one stage more (:data:`ATTENTION_RESCALE_REGISTER`), and where a head's next step would
    follow its step at once (``ceil(group / P) = 1``, a group of one step a position) the issue
    slot leaves a cycle between steps (``gap``). Then the grouping enters at every P, so
    ``n_kv_heads`` must divide ``n_heads``.
    """
    steps = attention_steps(n_heads=n_heads, kv_len=kv_len, n_kv_heads=n_kv_heads, heads_per_step=heads_per_step)
    gap = 0
    if rescale_register:
        if not n_kv_heads or n_heads % n_kv_heads:
            raise InputError(f"n_kv_heads must divide n_heads ({n_heads}) with the rescale register, "
                             f"not {n_kv_heads}")
        if ceil_div(n_heads // n_kv_heads, heads_per_step) == 1:
            gap = steps - 1
    return AttentionCycles(
        start=ATTENTION_START,
        q_first=ATTENTION_Q_FIRST if heads_per_step == 1 else n_heads,
        steps=steps,
        handoff=n_heads - steps // kv_len,
        finish=n_heads * (attention_finish_steps(head_dim, finish_lanes) - 1),
        latency=(ATTENTION_POSITION_STAGES + ATTENTION_FINISH_STAGES
                 + (ATTENTION_TIMING_REGISTERS if timing_registers else 0)
                 + (ATTENTION_RESCALE_REGISTER if rescale_register else 0)),
        gap=gap,
    )


def attention_min_cycles(*, n_heads: int, kv_len: int, n_kv_heads: int = 0, heads_per_step: int = 1) -> int:
    """The unit's own lower bound: one step (P query heads of a group at one position) per cycle,
    nothing else (:func:`attention_steps`)."""
    return attention_steps(n_heads=n_heads, kv_len=kv_len, n_kv_heads=n_kv_heads, heads_per_step=heads_per_step)


# --- vector unit ---------------------------------------------------------------------------------
# One command at a time; W = ceil(length / lanes) beats per pass. With the operand source always
# valid and the result sink always ready, counted from the cycle the command is taken to the
# cycle its last result beat is taken (both included)::
#
#     cycles = COMMAND + passes * W + STATS + PIPELINE
#
# * COMMAND = 1: the cycle in which ``cmd`` is taken (issue starts in the next one).
# * passes * W: one beat issued per cycle per pass; 2 passes for the norms and RoPE, else 1. A
#   RoPE command of h heads (W = ceil(head_dim / lanes)) runs both passes per head, back to back:
#   2 * h * W.
# * STATS = 10 for the norms, else 0: the last first-pass beat reaches the sum registers (2) and
#   the statistics chain (``hdl.vector.NORM_STATS_CYCLES`` = 8: mean, centred sums, rsqrt seed
#   and Newton step) runs before the second pass may issue.
# * PIPELINE = 4 (``hdl.vector.PIPELINE_STAGES``): operands, stage A, stage B, output register.
# * With the unit's ``product_register`` (Config.vector_product_register) the memories' read data
#   is registered (stage M) before stage A, and stage A and the output stage take two cycles each
#   (their products registered before their sums and shifts): PIPELINE + PRODUCT_REGISTER (3,
#   ``hdl.vector.PRODUCT_REGISTER_STAGES``) for every command; a norm's STATS + NORM_SETTLE_PR (1,
#   ``hdl.vector.PRODUCT_REGISTER_NORM_SETTLE``: its running sums, taken in stage A's second
#   cycle, are final a stage M later), and LayerNorm's + LAYER_STATS (2,
#   ``hdl.vector.LAYER_STATS_EXTRA``: its statistics chain's mean and centred sums take two cycles
#   each). So +3 a command, +4 an RMSNorm, +6 a LayerNorm.
# RoPE's second pass issues the cycle after its first (no gap): its reads see the buffer's
# last write; the next head's first pass follows its second the same way. ARGMAX sends one beat,
# when its final input beat leaves stage B. SILU_MUL (SwiGLU's table lookup and multiply in one
# pass) takes one beat of (gate, up) a cycle: the count of MUL or SILU alone.

__all__ += ["VECTOR_COMMAND", "VECTOR_NORM_SETTLE", "VECTOR_NORM_SETTLE_PR", "VECTOR_NORM_STATS", "VECTOR_PIPELINE",
            "VECTOR_PRODUCT_REGISTER",
            "VECTOR_LAYER_STATS", "VectorCycles",
            "vector_cycles", "vector_lower_bound"]

VECTOR_COMMAND = 1
VECTOR_PIPELINE = PIPELINE_STAGES
VECTOR_NORM_SETTLE = 2
VECTOR_NORM_STATS = NORM_STATS_CYCLES
#: The vector unit's product_register (Config.vector_product_register): stage A's and the output
#: stage's second cycles.
VECTOR_PRODUCT_REGISTER = PRODUCT_REGISTER_STAGES
#: ... a norm's sums final a cycle later with it (stage M) ...
VECTOR_NORM_SETTLE_PR = PRODUCT_REGISTER_NORM_SETTLE
#: ... and LayerNorm's statistics chain's two cycles more with it.
VECTOR_LAYER_STATS = LAYER_STATS_EXTRA
_VECTOR_OPS = VECTOR_OP_NAMES


@dataclass(frozen=True)
class VectorCycles:
    """A predicted vector-unit command's cycle count and its parts (they add up to ``total``)."""

    command: int
    passes: int
    stats: int
    pipeline: int
    lower_bound: int

    @property
    def total(self) -> int:
        return self.command + self.passes + self.stats + self.pipeline

    @property
    def efficiency(self) -> float:
        return self.lower_bound / self.total


def _vector_op_name(op) -> str:
    name = getattr(op, "name", op)
    name = name.lower() if isinstance(name, str) else name
    if name not in _VECTOR_OPS:
        raise InputError(f"vector op must be one of {', '.join(_VECTOR_OPS)}, not {op!r}")
    return name


def vector_cycles(op, length: int, lanes: int, *, heads: int = 1,
                  product_register: bool = False) -> VectorCycles:
    """Exact cycles of one vector-unit command (``op`` a name or ``hdl.vector.VectorOp``).

    ``length`` is a RoPE command's head_dim, ``heads`` its heads (one command rotates them one
    after another); ``product_register`` the unit's (:data:`VECTOR_PRODUCT_REGISTER` more in the
    pipeline, :data:`VECTOR_NORM_SETTLE_PR` more in a norm's statistics wait and
    :data:`VECTOR_LAYER_STATS` more in a LayerNorm's).
    ``lower_bound`` is the op's own floor on this datapath: the input beats it must take (W, or 2W
    for the norms, whose gamma/beta stream after x; h * W for h RoPE heads).
    """
    name = _vector_op_name(op)
    w = ceil_div(length, lanes)
    norm = name in ("rmsnorm", "layernorm")
    if name != "rope":
        heads = 1
    passes = 2 if norm or name == "rope" else 1
    return VectorCycles(
        command=VECTOR_COMMAND,
        passes=passes * heads * w,
        stats=(VECTOR_NORM_SETTLE + VECTOR_NORM_STATS
               + (VECTOR_NORM_SETTLE_PR + (VECTOR_LAYER_STATS if name == "layernorm" else 0) if product_register else 0)
               if norm else 0),
        pipeline=VECTOR_PIPELINE + (VECTOR_PRODUCT_REGISTER if product_register else 0),
        lower_bound=2 * w if norm else heads * w,
    )


def vector_lower_bound(op, length: int, lanes: int) -> int:
    """The op's input-beat floor (see :func:`vector_cycles`)."""
    return vector_cycles(op, length, lanes).lower_bound


# --- decode step: the whole accelerator ----------------------------------------------------------
# The sequencer of :class:`hdl.top.DecodeTop` runs one instruction at a time, in program order.
# Every instruction starts with SEQ_ISSUE cycles (decode: the instruction, read from the program
# memory in the cycle before, is latched and the first operand reads are issued) and ends in the
# cycle its last result is written; the next instruction's decode follows at once (issue is
# pipelined: the program memory is read one instruction ahead, so fetching costs no cycle).
# Instruction i starts in cycle sum(cycles[:i]) of the step (DecodeCycles.starts), which the RTL's
# trace memory records too. Per instruction (V = vector_lanes, W =
# ceil(length / V), the vector unit's terms from :func:`vector_cycles`, the attention unit's from
# :func:`attention_cycles`, the GEMM engine's from :func:`gemm_cycles` with M = 1):
#
#     embed        SEQ_ISSUE + W                      one weight word copied a cycle
#                  embed_register: + EMBED_REGISTER (the row's first address registered in DECODE,
#                  its first word read in a cycle of its own, and registered in another before the
#                  copy writes it)
#     gemm         SEQ_ISSUE + gemm - GEMM_OVERLAP + GEMM_WRITEBACK
#                  (decode is the engine's start cycle; the last output word is written from the
#                  output stage's register the cycle after the array's last sum)
#     gemm + residual_add (fused, Config.fused_residual)
#                  SEQ_ISSUE + gemm - GEMM_OVERLAP + GEMM_WRITEBACK + GEMM_RESIDUAL
#                  (+ RESIDUAL_TIMING_REGISTERS with Config.residual_timing_registers: the add's sum and
#                  its requantization's product registered, the word written two cycles later)
#                  (the requantized word and the residual's word, read from the scratchpad's second
#                  port, meet in one more register; the add is computed and written the cycle after:
#                  the last word one cycle later than the plain GEMM's, instead of the add's vector
#                  instruction of SEQ_ISSUE + vector("add"))
#                  gemm_product_register: + GEMM_PRODUCT_REGISTER (the requantization's product is
#                  registered before its shift and saturation, and the write after them: the last
#                  word is written two cycles later)
#     rmsnorm ...  SEQ_ISSUE + vector                 the command is offered the cycle after decode
#                  vector_scalar_register: + VECTOR_SCALAR_REGISTER (every vector instruction, rope
#                  and argmax included: the scalars are latched in a cycle of their own before the
#                  command; a rope of several commands latches them once)
#                  vector_product_register: every vector term is vector_cycles(product_register=True)
#     rope         SEQ_ISSUE + heads * vector(head_dim)   one command per head, back to back
#                  fused_rope: SEQ_ISSUE + COMMAND + 2 * heads * W + PIPELINE, one command for all
#                  heads (q's and k's together when the compiler gives them one instruction)
#     activation   SEQ_ISSUE + vector                 its table is already in the unit (see below)
#     act+multiply SEQ_ISSUE + vector                 fused_swiglu: one SILU_MUL command, priced as
#                  the activation alone (one pass of W beats, like each of the two it replaces)
#     kv_write     SEQ_ISSUE + n_kv_heads * head_dim / V  K and V rows gathered a word a cycle
#     attention    SEQ_ISSUE + 2 * n_heads * head_dim / V + attention + ATTENTION_HANDOFF
#                  (q rows gathered a word a cycle, the unit's call, output rows scattered)
#
# program_register: + PROGRAM_FETCH once per pass, in the first instruction's cycles (FETCH
# registers the first instruction before its DECODE; every later instruction is registered in the
# last cycle of the one before it, at no cycle).
#
# HALT is not counted: the step's cycle counter is the sum of its other instructions. Nor is the
# host's loading of the memories, once per run before the first step: program, weights,
# parameters, the RoPE table and the activation tables (one 256-entry table per distinct
# activation, one entry a host-port cycle; an ACTIVATION instruction names its table by index).

__all__ += ["ATTENTION_HANDOFF", "BOUND_NAMES", "EMBED_REGISTER", "GEMM_OVERLAP", "GEMM_PRODUCT_REGISTER",
            "GEMM_RESIDUAL", "GEMM_WRITEBACK", "PROGRAM_FETCH", "RESIDUAL_TIMING_REGISTERS", "SEQ_ISSUE", "UNITS",
            "VECTOR_SCALAR_REGISTER", "Bounds", "DecodeCycles", "OpCycles", "decode_step_cycles", "fetch_cycles",
            "op_cycles", "pass_cycles", "residual_cycles", "unit_of"]

SEQ_ISSUE = 1
#: The decode cycle of a GEMM instruction is the engine's start cycle (GEMM_START counts it).
GEMM_OVERLAP = 1
#: The GEMM's output stage: an output tile's sum is requantized and written the cycle after it.
GEMM_WRITEBACK = 1
#: A GEMM with its residual add fused (Config.fused_residual): the add's stage after the requantization.
GEMM_RESIDUAL = 1
#: Config.residual_timing_registers: the fused residual add's sum and its requantization's product
#: registered (two stages R2, R3 after the add's stage).
RESIDUAL_TIMING_REGISTERS = 2
#: Config.gemm_product_register: the output stage's second register (the requantization's product)
#: and its write register (the word, its address and ``fin``).
GEMM_PRODUCT_REGISTER = 2
#: Config.vector_scalar_register: the cycle a vector instruction's scalars are latched before its command.
VECTOR_SCALAR_REGISTER = 1
#: Config.embed_register: EMBED's leading cycles (hdl.top.EMBED_LEAD): the one that reads its row's first
#: word (its address registered in DECODE) and the one that registers that word before the scratchpad's write.
EMBED_REGISTER = EMBED_LEAD
#: Config.program_register: the cycle a pass starts with (FETCH), its first instruction read and registered.
PROGRAM_FETCH = 1
#: The cycle between the attention unit's done and the first output word written back.
ATTENTION_HANDOFF = 1

#: The units an instruction occupies: ``array`` (GEMM: the systolic array and its weight port),
#: ``attention``, ``vector`` (norms, RoPE, activations, residual adds, argmax) and ``sequencer``
#: (the moves the sequencer makes itself: embedding rows and KV writes).
UNITS = ("sequencer", "array", "attention", "vector")
_UNIT_OF = {"gemm": "array", "attention": "attention", "embed": "sequencer", "kv_write": "sequencer"}

#: A decode step's lower bounds, one per unit, the array's two: its MAC peak (padded MACs / (R*C):
#: a K x N GEMM at M = 1 is ceil(K/R)*R x ceil(N/C)*C MACs, a tile a cycle) and its weight port
#: (the tiles' bytes / the bytes the port delivers a cycle). Each unit's floor is its busy cycles
#: without issue overhead; the step can be no shorter than the largest of them (the binding bound).
BOUND_NAMES = ("MAC peak", "weight port", "attention", "vector", "sequencer")


def unit_of(op: str) -> str:
    """The unit an instruction of primitive ``op`` occupies (every other op is the vector unit's)."""
    return _UNIT_OF.get(op, "vector")


@dataclass(frozen=True)
class OpCycles:
    """One instruction's predicted cycles and its share of the lower bounds: ``macs`` and
    ``weight_bytes`` the GEMM's own K x N, ``tiles`` the R x C tiles it is padded to, ``unit_min`` its
    floor on its unit (a GEMM's: :func:`gemm_lower_bound`)."""

    op: str
    output: str
    cycles: int
    macs: int = 0
    weight_bytes: int = 0
    unit_min: int = 0
    tiles: int = 0


@dataclass(frozen=True)
class Bounds:
    """The named lower bounds (:data:`BOUND_NAMES`, in cycles) of ``cycles`` predicted cycles: of one
    step (:attr:`DecodeCycles.bound_report`) or of a run's mean step (:meth:`mean`). Every report of
    a decode step's bound prints from here."""

    cycles: float
    bounds: dict
    array_rows: int
    array_cols: int
    weight_bytes_per_cycle: float

    @property
    def lower_bound(self) -> float:
        return max(self.bounds.values())

    @property
    def binding(self) -> str:
        """The largest bound's name (the first of :data:`BOUND_NAMES` among equals)."""
        return max(self.bounds, key=self.bounds.get)

    @property
    def efficiency(self) -> float:
        """The binding bound over the predicted cycles."""
        return self.lower_bound / self.cycles

    @property
    def mac_peak_share(self) -> float:
        """The array's MAC peak bound over the predicted cycles: the share of the R x C MACs the
        step keeps busy (padded MACs / (R * C * cycles))."""
        return self.bounds["MAC peak"] / self.cycles

    def what(self, name: str) -> str:
        """What limits bound ``name``: the array's MACs a cycle, the port's bytes a cycle, a unit."""
        if name == "MAC peak":
            return f"{self.array_rows}x{self.array_cols} MACs a cycle"
        if name == "weight port":
            return f"{self.weight_bytes_per_cycle:,g} bytes a cycle"
        return f"the {name} unit's own minimum"

    def mac_peak_text(self) -> str:
        """``12% of the array's MAC peak``."""
        return f"{self.mac_peak_share:.0%} of the array's MAC peak"

    def binding_text(self) -> str:
        """The binding bound, named: ``weight port, 24,960 cycles (8 bytes a cycle), 93% of the step``."""
        b = self.binding
        return f"{b}, {self.bounds[b]:,.0f} cycles ({self.what(b)}), {self.efficiency:.0%} of the step"

    def others_text(self) -> str:
        """The bounds that do not bind, largest first: ``MAC peak 3,180, vector 1,234, ...``."""
        rest = sorted((k for k in self.bounds if k != self.binding), key=lambda k: -self.bounds[k])
        return ", ".join(f"{k} {self.bounds[k]:,.0f}" for k in rest)

    def as_dict(self) -> dict:
        return {"lower_bound_cycles": self.lower_bound, "efficiency": self.efficiency, "binding": self.binding,
                "bounds": dict(self.bounds), "mac_peak_share": self.mac_peak_share,
                "weight_bytes_per_cycle": self.weight_bytes_per_cycle}

    @classmethod
    def over_steps(cls, reports) -> Bounds:
        """The steps of ``reports`` (Bounds of one design) together: cycles and every bound summed."""
        reports = list(reports)
        if not reports:
            raise InputError("the bounds of no steps are undefined")
        first = reports[0]
        return cls(sum(r.cycles for r in reports), {k: sum(r.bounds[k] for r in reports) for k in first.bounds},
                   first.array_rows, first.array_cols, first.weight_bytes_per_cycle)

    @classmethod
    def mean(cls, reports) -> Bounds:
        """The mean step of ``reports``: cycles and every bound averaged."""
        reports = list(reports)
        total = cls.over_steps(reports)
        n = len(reports)
        return replace(total, cycles=total.cycles / n, bounds={k: v / n for k, v in total.bounds.items()})


@dataclass(frozen=True)
class DecodeCycles:
    """A decode step's predicted cycles, per instruction, with its lower bounds."""

    ops: tuple[OpCycles, ...]
    array_rows: int
    array_cols: int
    weight_bytes_per_cycle: float
    rows: int = 1           # token rows of the pass (a decode step: 1)

    @property
    def total(self) -> int:
        return sum(o.cycles for o in self.ops)

    @property
    def starts(self) -> tuple[int, ...]:
        """Each instruction's start cycle in the step: one instruction at a time, in program order."""
        return tuple(itertools.accumulate((o.cycles for o in self.ops[:-1]), initial=0)) if self.ops else ()

    @property
    def bounds(self) -> dict[str, float]:
        """The lower bounds by name (:data:`BOUND_NAMES`), in cycles: the array's MAC peak (padded
        MACs / (R*C), a tile a cycle at M = 1), its weight port (the tiles' bytes / bytes a cycle),
        and each other unit's own minimum over the step."""
        padded = sum(o.tiles for o in self.ops) * self.array_rows * self.array_cols   # a row's MACs = the tiles' bytes
        out = {"MAC peak": padded * self.rows / (self.array_rows * self.array_cols),
               "weight port": padded / self.weight_bytes_per_cycle}
        for unit in ("attention", "vector", "sequencer"):
            out[unit] = float(sum(o.unit_min for o in self.ops if unit_of(o.op) == unit))
        return out

    @property
    def bound_report(self) -> Bounds:
        return Bounds(self.total, self.bounds, self.array_rows, self.array_cols, self.weight_bytes_per_cycle)

    @property
    def lower_bound(self) -> float:
        return self.bound_report.lower_bound

    @property
    def binding(self) -> str:
        return self.bound_report.binding

    @property
    def efficiency(self) -> float:
        return self.bound_report.efficiency


def fetch_cycles(config) -> int:
    """Cycles a pass starts with before its first instruction's DECODE, counted in that instruction's
    cycles: :data:`PROGRAM_FETCH` with ``Config.program_register``, else none."""
    return PROGRAM_FETCH if getattr(config, "program_register", False) else 0


def residual_cycles(config) -> int:
    """Cycles a GEMM with its residual add fused takes above the plain GEMM on ``config``:
    :data:`GEMM_RESIDUAL`, and :data:`RESIDUAL_TIMING_REGISTERS` more with
    ``Config.residual_timing_registers``."""
    return GEMM_RESIDUAL + (RESIDUAL_TIMING_REGISTERS if config.residual_timing_registers else 0)


def op_cycles(op: str, config, *, width: int, in_width: int = 0, n_heads: int = 0, n_kv_heads: int = 0,
              head_dim: int = 0, position: int = 0, weight_bytes_per_cycle: float | None = None,
              residual: bool = False, rows: int = 1) -> OpCycles:
    """Predicted cycles of one instruction of the integer program (``op`` a primitive name).

    ``width`` is the op's output width (N of a GEMM), ``in_width`` its input width (K of a GEMM,
    the length of a vector op), ``position`` the KV position of the step (attention runs over
    ``position + 1`` rows), ``residual`` a GEMM with its residual add fused (:data:`GEMM_RESIDUAL`),
    ``rows`` a GEMM's activation rows (M: the token rows of a pass, :func:`pass_cycles`; every other
    op is priced one row at a time).
    """
    lanes = config.vector_lanes
    row_words = ceil_div(head_dim, lanes)
    if op == "gemm":
        g = gemm_cycles(config, rows, in_width, width, weight_bytes_per_cycle=weight_bytes_per_cycle)
        extra = ((residual_cycles(config) if residual else 0)
                 + (GEMM_PRODUCT_REGISTER if config.gemm_product_register else 0))
        return OpCycles(op, "", SEQ_ISSUE + g.total - GEMM_OVERLAP + GEMM_WRITEBACK + extra,
                        macs=rows * in_width * width, weight_bytes=in_width * width,
                        tiles=gemm_tiles(config, in_width, width),
                        unit_min=gemm_lower_bound(config, rows, in_width, width,
                                                  weight_bytes_per_cycle=weight_bytes_per_cycle))
    if op == "embed":
        words = ceil_div(width, config.array_cols)
        return OpCycles(op, "", SEQ_ISSUE + words + (EMBED_REGISTER if config.embed_register else 0), unit_min=words)
    if op == "kv_write":
        words = n_kv_heads * row_words
        return OpCycles(op, "", SEQ_ISSUE + words, unit_min=words)
    if op == "attention":
        a = attention_cycles(n_heads=n_heads, kv_len=position + 1, head_dim=head_dim,
                             finish_lanes=config.attention_finish_lanes, n_kv_heads=n_kv_heads,
                             heads_per_step=config.attention_heads_per_step,
                             timing_registers=config.attention_timing_registers,
                             rescale_register=getattr(config, "attention_rescale_register", False))
        return OpCycles(op, "", SEQ_ISSUE + 2 * n_heads * row_words + a.total + ATTENTION_HANDOFF,
                        unit_min=attention_min_cycles(n_heads=n_heads, kv_len=position + 1, n_kv_heads=n_kv_heads,
                                                      heads_per_step=config.attention_heads_per_step))
    latch = VECTOR_SCALAR_REGISTER if config.vector_scalar_register else 0
    preg = config.vector_product_register
    if op == "rope":
        heads = width // head_dim
        if getattr(config, "fused_rope", False):
            v = vector_cycles("rope", head_dim, lanes, heads=heads, product_register=preg)
            return OpCycles(op, "", SEQ_ISSUE + latch + v.total, unit_min=v.lower_bound)
        v = vector_cycles("rope", head_dim, lanes, product_register=preg)
        return OpCycles(op, "", SEQ_ISSUE + latch + heads * v.total, unit_min=heads * v.lower_bound)
    vector_op = {"rmsnorm": "rmsnorm", "layernorm": "layernorm", "residual_add": "add", "multiply": "mul",
                 "activation": "silu", "argmax": "argmax"}.get(op)
    if vector_op is None:
        raise InputError(f"op must be a primitive of the integer program, not {op!r}")
    length = in_width if op == "argmax" else width
    v = vector_cycles(vector_op, length, lanes, product_register=preg)
    return OpCycles(op, "", SEQ_ISSUE + latch + v.total, unit_min=v.lower_bound)


def decode_step_cycles(ops, model_config, config, *, position: int,
                       weight_bytes_per_cycle: float | None = None, gemm_shapes: dict | None = None) -> DecodeCycles:
    """Predicted cycles of one decode step: ``ops`` is the integer program
    (:func:`golden.quantize.program_structure` or an IntModel's ``program``), ``model_config`` its
    :class:`golden.model.ModelConfig`, ``config`` the accelerator, ``position`` the token's position.

    One :class:`OpCycles` per instruction the compiler emits for ``ops``
    (:func:`sim.machine.schedule.instruction_groups`: a merged GEMM is one instruction, named after
    its members, "L0.q+k+v"; a GEMM with its residual add fused is one, "L0.o+x_attn");
    ``gemm_shapes`` (output value -> (K, N)) prices a GEMM at another
    shape than the program's (a tensor-parallel shard)."""
    return pass_cycles(ops, model_config, config, positions=(position,),
                       weight_bytes_per_cycle=weight_bytes_per_cycle, gemm_shapes=gemm_shapes)


def pass_cycles(ops, model_config, config, *, positions, weight_bytes_per_cycle: float | None = None,
                gemm_shapes: dict | None = None) -> DecodeCycles:
    """Predicted cycles of one pass of M token rows (``positions``: each row's position, M of them;
    :mod:`sim.machine.passes`), one :class:`OpCycles` per instruction over all its rows:

    * a GEMM streams the M rows through each weight tile (:func:`gemm_cycles` at M);
    * every other instruction runs once per row, in row order: the sum of its one-row cycles at
      each row's position.

    ``decode_step_cycles(position=p)`` is ``pass_cycles(positions=[p])``."""
    positions = tuple(positions)
    if not positions or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in positions):
        raise InputError(f"positions must be a non-empty list of non-negative integers, not {list(positions)!r}")
    rows = len(positions)
    out = []
    for g in instruction_groups(ops, config, gemm_shapes=gemm_shapes):
        def one(position, rows=1, g=g):
            return op_cycles(g.op, config, width=g.width, in_width=g.in_width, n_heads=model_config.n_heads,
                             n_kv_heads=model_config.n_kv_heads, head_dim=model_config.head_dim, position=position,
                             weight_bytes_per_cycle=weight_bytes_per_cycle, residual=g.residual is not None,
                             rows=rows)
        if g.op == "gemm":
            c = replace(one(0, rows), macs=rows * g.macs, weight_bytes=g.macs)
        else:
            each = [one(p) for p in positions]
            c = replace(each[0], cycles=sum(e.cycles for e in each), unit_min=sum(e.unit_min for e in each))
        out.append(replace(c, output=g.output))
    if out:
        out[0] = replace(out[0], cycles=out[0].cycles + fetch_cycles(config))
    port = config.weight_port_bytes
    wbpc = float(weight_bytes_per_cycle or port)
    return DecodeCycles(tuple(out), config.array_rows, config.array_cols, min(wbpc, port), rows=rows)
