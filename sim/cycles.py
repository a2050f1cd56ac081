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


# --- vector unit ---------------------------------------------------------------------------------
