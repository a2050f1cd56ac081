"""Passes of several token rows: the runtime inputs of one run of the program.

A pass runs the compiled program once over M token rows (1 <= M <= :attr:`Compiled.max_rows`). Row
r carries a token, its position and the KV slot of its sequence. The instruction-level model
(:meth:`sim.machine.isa_sim.IsaMachine.run_pass`), the decode top level and the cycle model
(:func:`sim.machine.cycles.pass_cycles`) share these semantics:

* a GEMM instruction computes all M rows (each weight tile is loaded once and M activation rows
  stream through it); every other instruction runs once per row, in row order, with the row's
  token, position and slot;
* row r of every scratchpad value sits at the value's address + ``r * Compiled.row_stride``, its
  int32 logits at their address + ``r * Compiled.logits_stride``;
* slot s holds one sequence's KV cache. In fixed slots (``Config.kv_block`` = 0) that is KV rows
  ``Compiled.kv_row(s)`` onwards, ``Compiled.slot_rows`` of them. With pages (``kv_block`` = B > 0)
  slot s names the sequence's block table, ``(block, block, ...)``, which the host writes between
  passes (``IsaMachine.set_table``; :func:`check_table`): position p of the sequence lives in block
  ``table[p // B]``. One rule, :meth:`Compiled.kv_rows`, gives every KV row of both layouts (a
  fixed slot's table is ``(s,)``; pages are plane-major: row ``kv_base + (l * n_kv_heads + h) *
  plane_rows + table[p // B] * B + p % B``). The lookup is free: the cycle
  model (:func:`sim.machine.cycles.pass_cycles`) charges a paged pass exactly the fixed-slot pass's
  cycles (docs/top.md "Paged KV" says what the hardware must do for that);
* a row's attention reads its slot's positions ``0 .. position``. Every row's KV write of a layer
  runs before that layer's attention, so rows of one sequence at consecutive positions in one pass
  (a prefill chunk) each see exactly the positions up to their own: the causal mask costs nothing.

So every row's token is the token its sequence gives when run alone, one step at a time: a batched
or prefill pass is bit-exact by construction, and the tests check it on every model.

:func:`check_pass` is the one place a pass's rows are checked, for every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from golden.errors import InputError

__all__ = ["Row", "check_pass", "check_table", "lone_table"]


@dataclass(frozen=True)
class Row:
    """One token row of a pass: ``token`` at ``position`` of the sequence in KV slot ``slot``."""

    token: int
    position: int
    slot: int = 0


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_table(compiled, slot, blocks) -> tuple[int, ...]:
    """``blocks`` as the block table of ``slot`` (paged KV); InputError in one line on fixed slots,
    for a slot outside :attr:`Compiled.kv_slots`, a block outside :attr:`Compiled.kv_blocks`, more
    than :attr:`Compiled.table_entries` blocks, or a block twice."""
    if not compiled.config.kv_block:
        raise InputError("fixed KV slots (kv_block 0) have no block tables: a row's slot is its KV")
    if not _int(slot) or not 0 <= slot < compiled.kv_slots:
        raise InputError(f"block table: slot must be an integer in [0, {compiled.kv_slots - 1}], not {slot!r}")
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
        raise InputError(f"slot {slot}'s block table must be a list of block numbers, not {blocks!r}")
    if len(blocks) > compiled.table_entries:
        raise InputError(f"slot {slot}'s block table holds at most {compiled.table_entries} blocks "
                         f"(max_context {compiled.config.max_context} / kv_block {compiled.config.kv_block}), "
                         f"not {len(blocks)}")
    for b in blocks:
        if not _int(b) or not 0 <= b < compiled.kv_blocks:
            raise InputError(f"slot {slot}'s block table: a block must be an integer in "
                             f"[0, {compiled.kv_blocks - 1}], not {b!r}")
    if len(set(blocks)) != len(blocks):
        raise InputError(f"slot {slot}'s block table names a block twice: {list(blocks)}")
    return tuple(blocks)


def lone_table(compiled) -> tuple[int, ...]:
    """Paged KV: the block table of a lone sequence in slot 0 (the single-step interface: ``lockstep
    run``, a decode job's steps): blocks 0, 1, ..., as many as a context needs
    (:attr:`Compiled.table_entries`) or the memory holds (:attr:`Compiled.kv_blocks`), so its rows are
    those of the sequence alone; a position past them is :func:`check_pass`'s one-line error."""
    return check_table(compiled, 0, list(range(min(compiled.table_entries, compiled.kv_blocks))))


def check_pass(compiled, rows: Sequence, tables: dict | None = None) -> tuple[Row, ...]:
    """``rows`` (Rows or ``(token, position, slot)`` triples) as Rows; InputError in one line for a
    pass the machine cannot run: no rows or more than :attr:`Compiled.max_rows`, a token outside the
    vocabulary, a position outside the context, a slot outside the KV memory, a slot's rows not at
    consecutive increasing positions (a later row would read KV positions nobody wrote), or, with
    paged KV, a position past the blocks of its slot's table (``tables``: slot -> blocks)."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise InputError(f"a pass's rows must be a list of (token, position, slot), not {rows!r}")
    limit = compiled.max_rows
    if not 1 <= len(rows) <= limit:
        binding = min(compiled.rows_limits().items(), key=lambda kv: kv[1])[0]
        raise InputError(f"a pass must have 1 to {limit} rows (the design's {binding} bounds it), not {len(rows)}")
    vocab = compiled.model.config.vocab_size
    context = compiled.model.max_context
    slots = compiled.kv_slots
    if slots < 1:
        raise InputError(f"the design's KV memory (kv_bytes={compiled.config.kv_bytes}) holds no whole slot of "
                         f"{compiled.slot_rows} rows of {compiled.model.config.head_dim} bytes for K and for V")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, Row):
            if isinstance(r, (str, bytes)) or not isinstance(r, Sequence) or len(r) != 3:
                raise InputError(f"pass row {i} must be (token, position, slot), not {r!r}")
            r = Row(*r)
        for name, value, top in (("token", r.token, vocab), ("position", r.position, context),
                                 ("slot", r.slot, slots)):
            if not _int(value) or not 0 <= value < top:
                raise InputError(f"pass row {i}: {name} must be an integer in [0, {top - 1}], not {value!r}")
        out.append(r)
    last: dict[int, int] = {}
    for i, r in enumerate(out):
        if r.slot in last and r.position != last[r.slot] + 1:
            raise InputError(f"pass row {i}: slot {r.slot}'s rows must be at consecutive increasing positions, "
                             f"not {last[r.slot]} then {r.position}")
        last[r.slot] = r.position
    if compiled.config.kv_block:
        b, tables = compiled.block_positions, tables or {}
        for i, r in enumerate(out):
            held = len(tables.get(r.slot, ()))
            if r.position >= held * b:
                raise InputError(f"pass row {i}: position {r.position} is past slot {r.slot}'s block table "
                                 f"({held} blocks of {b} positions)")
    return tuple(out)
