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

from dataclasses import dataclass

__all__ = ["GEMM_DRAIN", "GEMM_START", "GemmCycles", "gemm_cycles", "gemm_lower_bound"]

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


def gemm_cycles(config, m: int, k: int, n: int) -> GemmCycles:
    """Exact cycles of an M x K x N GEMM on ``config``'s GemmUnit (shape checked by sim.gemm)."""
    R, C = config.array_rows, config.array_cols
    tiles = -(-k // R) * -(-n // C)
    return GemmCycles(
        start=GEMM_START,
        first_load=R,
        steady=(tiles - 1) * max(R, m),
        last_rows=m,
        latency=config.array_latency,
        drain=GEMM_DRAIN,
    )


def gemm_lower_bound(config, m: int, k: int, n: int) -> int:
    """The larger of the compute bound (padded MACs / (R*C)) and the weight-load bound (R per tile)."""
    R, C = config.array_rows, config.array_cols
    tiles = -(-k // R) * -(-n // C)
    return max(tiles * m, tiles * R)


# --- attention unit ------------------------------------------------------------------------------

__all__ += ["ATTENTION_FINISH_STAGES", "ATTENTION_POSITION_STAGES", "ATTENTION_Q_FIRST", "ATTENTION_START",
            "AttentionCycles", "attention_cycles", "attention_min_cycles"]

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


@dataclass(frozen=True)
class AttentionCycles:
    """A predicted attention-call cycle count and its parts (they add up to ``total``).

    ``start`` + ``q_first`` + ``steps`` + ``latency``, where ``steps = n_heads * kv_len`` is one
    (query head, position) step per cycle and ``latency`` the pipeline behind the last step.
    """

    start: int
    q_first: int
    steps: int
    latency: int

    @property
    def total(self) -> int:
        return self.start + self.q_first + self.steps + self.latency


def attention_cycles(*, n_heads: int, kv_len: int) -> AttentionCycles:
    """Exact cycles of one call of :class:`hdl.attention.AttentionUnit` with every source always
    valid and the sink always ready, from the edge that samples ``start`` to the first cycle
    ``done`` is high (shape checked by :func:`sim.attention.plan_attention`).

    ``head_dim`` and the grouping (``n_kv_heads``) do not enter: the datapath is ``head_dim``
    lanes wide and takes one (query head, position) step per cycle, groups back to back.
    """
    return AttentionCycles(
        start=ATTENTION_START,
        q_first=ATTENTION_Q_FIRST,
        steps=n_heads * kv_len,
        latency=ATTENTION_POSITION_STAGES + ATTENTION_FINISH_STAGES,
    )


def attention_min_cycles(*, n_heads: int, kv_len: int) -> int:
    """The unit's own lower bound: one (query head, position) step per cycle, nothing else."""
    return n_heads * kv_len


# --- vector unit ---------------------------------------------------------------------------------
# One command at a time; W = ceil(length / lanes) beats per pass. With the operand source always
# valid and the result sink always ready, counted from the cycle the command is taken to the
# cycle its last result beat is taken (both included)::
#
#     cycles = COMMAND + passes * W + STATS + PIPELINE
#
# * COMMAND = 1: the cycle in which ``cmd`` is taken (issue starts in the next one).
# * passes * W: one beat issued per cycle per pass; 2 passes for the norms and RoPE, else 1.
# * STATS = 10 for the norms, else 0: the last first-pass beat reaches the sum registers (2) and
#   the statistics chain (``hdl.vector.NORM_STATS_CYCLES`` = 8: mean, centred sums, rsqrt seed
#   and Newton step) runs before the second pass may issue.
# * PIPELINE = 4 (``hdl.vector.PIPELINE_STAGES``): operands, stage A, stage B, output register.
# RoPE's second pass issues the cycle after its first (no gap): its reads see the buffer's
# last write. ARGMAX sends one beat, when its final input beat leaves stage B.

__all__ += ["VECTOR_COMMAND", "VECTOR_NORM_SETTLE", "VECTOR_NORM_STATS", "VECTOR_PIPELINE", "VectorCycles",
            "vector_cycles", "vector_lower_bound"]

VECTOR_COMMAND = 1
VECTOR_PIPELINE = 4
VECTOR_NORM_SETTLE = 2
VECTOR_NORM_STATS = 8
_VECTOR_OPS = ("requant", "add", "mul", "silu", "gelu", "argmax", "rmsnorm", "layernorm", "rope")


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
        raise ValueError(f"vector op must be one of {', '.join(_VECTOR_OPS)}, not {op!r}")
    return name


def vector_cycles(op, length: int, lanes: int) -> VectorCycles:
    """Exact cycles of one vector-unit command (``op`` a name or ``hdl.vector.VectorOp``).

    ``lower_bound`` is the op's own floor on this datapath: the input beats it must take (W, or
    2W for the norms, whose gamma/beta stream after x).
    """
    name = _vector_op_name(op)
    w = -(-length // lanes)
    norm = name in ("rmsnorm", "layernorm")
    passes = 2 if norm or name == "rope" else 1
    return VectorCycles(
        command=VECTOR_COMMAND,
        passes=passes * w,
        stats=VECTOR_NORM_SETTLE + VECTOR_NORM_STATS if norm else 0,
        pipeline=VECTOR_PIPELINE,
        lower_bound=2 * w if norm else w,
    )


def vector_lower_bound(op, length: int, lanes: int) -> int:
    """The op's input-beat floor (see :func:`vector_cycles`)."""
    return vector_cycles(op, length, lanes).lower_bound
