"""KV memory for many sequences: fixed slots and paged blocks, as allocators over one KV memory.

Both layouts cut the accelerator's KV memory into blocks of ``B`` positions of one sequence, every
layer's and KV head's K and V row of each (:attr:`KvGeometry.position_bytes` bytes a position):

* **fixed slots** (``block = 0``, :data:`FIXED`): a block is a whole context, ``max_context``
  positions; a sequence holds one, whatever its length (``Compiled.kv_slots`` of them);
* **paged** (``block = B``, a power of two up to ``max_context``): a sequence of ``L`` positions
  holds ``ceil(L / B)`` blocks, anywhere in the memory, listed in its block table (PagedAttention's
  layout); position ``p`` is block ``table[p >> log2 B]``, row ``p & (B - 1)`` in it.

A sequence reserves its blocks when it is admitted, for every position it will write (its prompt
plus its new tokens, less one: the last token is never written back), and frees them when it
retires. Lockstep's requests state their new tokens and stop only there (greedy, no end-of-sequence
token), so a reservation is exact: no sequence ever needs a block it does not hold, nothing is
preempted. :class:`BlockAllocator` hands out the lowest-numbered free blocks.

:func:`replay` is the capacity study (``scripts/bench_kv_layout.py``, docs/serving.md "KV memory"):
every request of a trace waits from the start, strictly first come first served; each step admits
waiting requests while their blocks fit, then every running sequence writes: its whole prompt on
its first step (one prefill pass), one position on each later step, until it has all its tokens.
How many sequences run at once is then bounded by the KV memory alone (a pass's ``max_m`` rows do
not bound it: decode rows take turns, docs/serving.md "The scheduler's policy").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from golden.errors import InputError
from golden.numerics import ceil_div
from golden.quantize import weight_bytes
from hdl.config import kv_block_problem

from .requests import Request, check_requests

__all__ = ["FIXED", "BlockAllocator", "KvFullError", "KvGeometry", "Occupancy", "replay"]

#: ``block = 0``: fixed slots, one block of ``max_context`` positions a sequence.
FIXED = 0


class KvFullError(InputError):
    """A sequence's blocks do not fit in the free KV memory."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class KvGeometry:
    """A KV memory of ``memory_bytes`` for sequences of up to ``max_context`` positions of
    ``position_bytes`` each (int8 K and V of one position in every layer and KV head)."""

    memory_bytes: int
    position_bytes: int
    max_context: int

    def __post_init__(self):
        for name in ("memory_bytes", "position_bytes", "max_context"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InputError(f"KV geometry: {name} must be a positive integer, not {value!r}")

    @classmethod
    def of(cls, model_config, *, memory_bytes: int, max_context: int) -> KvGeometry:
        """The geometry of ``model_config``'s KV cache (``golden.quantize.weight_bytes``'
        ``kv_bytes_per_token``) in ``memory_bytes``, a sequence's context ``max_context``."""
        return cls(memory_bytes, weight_bytes(model_config)["kv_bytes_per_token"], max_context)

    @classmethod
    def of_design(cls, model_config, config) -> KvGeometry:
        """``model_config`` on a design ``config`` (``hdl.config.Config``): its ``kv_bytes``, and its
        ``max_context`` (the hardware's row stride, ``Compiled.slot_rows``)."""
        return cls.of(model_config, memory_bytes=config.kv_bytes, max_context=config.max_context)


    @classmethod
    def of_compiled(cls, compiled) -> KvGeometry:
        """The KV region of a compiled model (``sim.machine.compiler.Compiled``): from its ``kv_base``
        to the top of the design's KV memory, its blocks :attr:`Compiled.kv_blocks`."""
        mc, config = compiled.model.config, compiled.config
        region = (config.kv_bytes // (2 * mc.head_dim) - compiled.kv_base) * 2 * mc.head_dim
        return cls.of(mc, memory_bytes=region, max_context=config.max_context)


class BlockAllocator:
    """The blocks of one KV memory (``geometry``) of ``block`` positions each (:data:`FIXED`: fixed
    slots of ``max_context``); InputError in one line for a block that is not 0 or a power of two up
    to ``max_context``, or a memory that holds no sequence of ``max_context`` positions."""

    def __init__(self, geometry: KvGeometry, block: int = FIXED):
        if not isinstance(geometry, KvGeometry):
            raise InputError(f"geometry must be a KvGeometry, not {geometry!r}")
        g = geometry
        problem = kv_block_problem(block, g.max_context)
        if problem:
            raise InputError(problem)
        self.geometry = g
        self.block = block
        #: Positions a block holds.
        self.block_positions = block or g.max_context
        #: Blocks in the memory.
        self.blocks = g.memory_bytes // (self.block_positions * g.position_bytes)
        if self.blocks < self.blocks_for(g.max_context):
            raise InputError(f"a KV memory of {g.memory_bytes:,} bytes holds no sequence of max_context "
                             f"{g.max_context} positions of {g.position_bytes:,} bytes")
        self._free = list(range(self.blocks))          # kept sorted: the lowest-numbered first
        self._tables: dict[object, tuple[int, ...]] = {}

    @property
    def name(self) -> str:
        return "fixed" if self.block == FIXED else f"paged B={self.block}"

    def blocks_for(self, positions: int) -> int:
        """Blocks a sequence of ``positions`` positions holds: 1 in fixed slots, ``ceil(positions / B)``."""
        if not _is_int(positions) or not 1 <= positions <= self.geometry.max_context:
            raise InputError(f"a sequence's positions must be an integer in 1..{self.geometry.max_context}, "
                             f"not {positions!r}")
        return ceil_div(positions, self.block_positions)

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def fits(self, positions: int) -> bool:
        """Whether a sequence of ``positions`` positions would get its blocks now."""
        return self.blocks_for(positions) <= len(self._free)

    def allocate(self, sequence, positions: int) -> tuple[int, ...]:
        """Reserve the blocks of ``sequence`` (any hashable name) for ``positions`` positions: its
        block table, the lowest-numbered free blocks. KvFullError (one line) when they do not fit;
        InputError when ``sequence`` already holds blocks."""
        if sequence in self._tables:
            raise InputError(f"sequence {sequence!r} already holds KV blocks {list(self._tables[sequence])}")
        need = self.blocks_for(positions)
        if need > len(self._free):
            raise KvFullError(f"the KV memory is full: sequence {sequence!r} needs {need} blocks of "
                              f"{self.block_positions} positions for {positions} positions, {len(self._free)} of "
                              f"{self.blocks} are free")
        table, self._free = tuple(self._free[:need]), self._free[need:]
        self._tables[sequence] = table
        return table

    def release(self, sequence) -> None:
        """Free ``sequence``'s blocks; InputError when it holds none."""
        if sequence not in self._tables:
            raise InputError(f"sequence {sequence!r} holds no KV blocks")
        self._free = sorted(self._free + list(self._tables.pop(sequence)))

    def table(self, sequence) -> tuple[int, ...]:
        """``sequence``'s block table: its blocks, position ``p`` in ``table[p // block_positions]``."""
        if sequence not in self._tables:
            raise InputError(f"sequence {sequence!r} holds no KV blocks")
        return self._tables[sequence]

    @property
    def held_blocks(self) -> int:
        return self.blocks - len(self._free)

    def table_bits(self) -> int:
        """Bits of one sequence's block table in hardware: ``ceil(max_context / B)`` entries of
        ``ceil(log2 blocks)`` bits (fixed slots: one entry, the slot)."""
        return self.blocks_for(self.geometry.max_context) * max(1, (self.blocks - 1).bit_length())


@dataclass(frozen=True)
class Occupancy:
    """What one layout held over a replayed trace (:func:`replay`). "Saturated" steps are those with a
    request still waiting after admission: only there does the memory bound the running sequences
    (with none, the means are over every step)."""

    layout: str
    block: int                  # 0: fixed slots
    block_positions: int
    blocks: int
    table_bits: int             # one sequence's block table
    requests: int
    steps: int
    saturated_steps: int
    peak: int                   # the most sequences running in one step
    mean: float                 # mean sequences running over the saturated steps
    allocated: float            # mean bytes held by blocks over the saturated steps, over the memory
    written: float              # mean bytes written (positions so far), over the bytes held
    rounding: float             # mean bytes held past the sequences' last positions, over the bytes held

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def replay(requests: Sequence[Request], geometry: KvGeometry, block: int = FIXED, *,
           vocab_size: int | None = None) -> Occupancy:
    """Replay ``requests`` against a KV memory of ``geometry`` in blocks of ``block`` positions (module
    docstring): every request waits from step 0 (arrival times are ignored: the study measures the
    memory's capacity), first come first served. InputError (one line) for no requests or a request that
    can never run (``sim.serve.requests.check_requests``: more positions than ``max_context``, no new tokens,
    a token outside ``vocab_size`` when given)."""
    if not requests:
        raise InputError("no requests to replay")
    check_requests(requests, max_context=geometry.max_context,
                   vocab_size=vocab_size if vocab_size is not None else 1 << 62)
    alloc = BlockAllocator(geometry, block)
    b, pb = alloc.block_positions, geometry.position_bytes
    head = 0                                 # the next request to admit (they all wait from step 0)
    running: list[list[int]] = []            # [index, positions written, positions in all, steps left]
    steps = saturated = peak = 0
    sums = [0.0, 0.0, 0.0, 0.0]              # running, held, written, rounding (saturated steps)
    every = list(sums)                       # the same over every step
    while head < len(requests) or running:
        while head < len(requests):
            r = requests[head]
            need = len(r.prompt) + r.max_new_tokens - 1
            if not alloc.fits(need):
                break
            alloc.allocate(head, need)
            running.append([head, 0, need, r.max_new_tokens])
            head += 1
        steps += 1
        peak = max(peak, len(running))
        for s in running:
            s[1] = len(requests[s[0]].prompt) if s[1] == 0 else s[1] + 1
            s[3] -= 1
        held = alloc.held_blocks * b
        step = (len(running), held, sum(s[1] for s in running) / held,
                sum(alloc.blocks_for(s[2]) * b - s[2] for s in running) / held)
        every = [x + y for x, y in zip(every, step, strict=True)]
        if head < len(requests):
            saturated += 1
            sums = [x + y for x, y in zip(sums, step, strict=True)]
        still = []
        for s in running:
            if s[3] == 0:
                alloc.release(s[0])
            else:
                still.append(s)
        running = still
    sums, n = (sums, saturated) if saturated else (every, steps)    # never saturated: every step's
    return Occupancy(alloc.name, block, b, alloc.blocks, alloc.table_bits(), len(requests), steps, saturated, peak,
                     sums[0] / n, sums[1] * pb / n / geometry.memory_bytes, sums[2] / n, sums[3] / n)
