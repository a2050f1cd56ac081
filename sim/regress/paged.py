"""The decode top level's paged-KV regression: the ``passes`` block's random schedules, KV in pages.

The design is :data:`sim.regress.passes.ROWS_DESIGN` with ``kv_block`` = :data:`BLOCK_POSITIONS` (the
design of tests/sim/test_passes_rtl.py's paged case: one Verilator build). A transaction is a schedule
of :func:`sim.regress.passes.schedule` on one of the ``top`` block's models compiled for it, and the
block tables of its sequences (:func:`tables`): a sequence gets the blocks for its last position when
it joins, drawn at random from the free ones (out of order), or half the time the most recently freed
first (a retired sequence's blocks, stale KV in them), and frees them after its last pass. Every pass's
tables are written before it (``decode_job(tables=)``). Scored per pass against the instruction-level
model with the same tables (:meth:`sim.machine.isa_sim.IsaMachine.set_table`): every row's token and
logits word for word, every instruction's cycles and start cycle and the pass's total against
:func:`sim.machine.cycles.pass_cycles` (the lookup costs no cycle).
"""

from __future__ import annotations

from dataclasses import replace

from golden.errors import InputError, LockstepError

from ..flows.decode import decode_job, top_params
from . import passes, top
from .block import Block, by_model

#: Positions of a KV block.
BLOCK_POSITIONS = 4
#: The design: the ``passes`` block's narrow design (one weight row a cycle) with pages.
DESIGN = replace(passes.ROWS_DESIGN, kv_block=BLOCK_POSITIONS)


def _params(simulator: str) -> dict:
    return top_params(passes.pool(DESIGN)[0], **top.SHARED)


def _pool(params) -> tuple:
    return passes._pool(params)


def vary(params, settings) -> dict:
    """:func:`sim.regress.passes.vary`, pages kept: InputError in one line for ``kv_block`` 0."""
    out = passes.vary(params, settings)
    if not out["config"]["kv_block"]:
        raise InputError("the paged regression needs kv_block > 0 (fixed slots: --block passes)")
    return out


def _sequences(schedule) -> list[list[int]]:
    """The schedule's sequences, ``[slot, first pass, last pass, last position]`` in joining order (a
    sequence joins at position 0 and holds its slot until the slot's next position 0)."""
    seqs, current = [], {}
    for i, rows in enumerate(schedule):
        for _, position, slot in rows:
            if position == 0:
                current[slot] = len(seqs)
                seqs.append([slot, i, i, 0])
            seqs[current[slot]][2:] = [i, position]
    return seqs


def tables(rng, compiled, schedule) -> list[list]:
    """Block tables for ``schedule`` (module docstring): one list of ``[slot, blocks]`` a pass, for its
    slots in order of first row."""
    b = compiled.block_positions
    seqs = _sequences(schedule)
    free = list(range(compiled.kv_blocks))
    rng.shuffle(free)
    held: dict[int, list[int]] = {}             # sequence -> its blocks
    owner: dict[int, int] = {}                  # slot -> its sequence now
    out = []
    for i, rows in enumerate(schedule):
        for k, (_, _, last, _) in enumerate(seqs):
            if last == i - 1:                   # retired after the last pass: its blocks first
                free = held[k] + free
        for k, (slot, first, _, end) in enumerate(seqs):
            if first == i:
                need = end // b + 1
                if need > len(free):
                    raise LockstepError(f"paged regression: {need} blocks wanted, {len(free)} free")
                take = free[:need] if rng.random() < 0.5 else rng.sample(free, need)
                free = [x for x in free if x not in take]
                held[k], owner[slot] = take, k
        out.append([[slot, list(held[owner[slot]])] for slot in dict.fromkeys(s for _, _, s in rows)])
    return out


def generate(rng, params) -> dict:
    txn = passes.schedule(rng, _pool(params))
    txn["tables"] = tables(rng, _pool(params)[txn["model"]], txn["passes"])
    return txn


def _tables(txn) -> list[dict]:
    return [{slot: blocks for slot, blocks in t} for t in txn["tables"]]


def jobs(params, txns) -> list:
    out = []
    for compiled, idx in by_model(_pool(params), txns):
        chosen = [txns[i][1] for i in idx]
        job = decode_job(compiled, params, passes=[p for t in chosen for p in t["passes"]],
                         tables=[t for txn in chosen for t in _tables(txn)], trace=True,
                         readback=passes._readback(compiled))
        out.append((job, idx))
    return out


def observe(params, txn, raw):
    return passes.observe_on(_pool(params)[txn["model"]], txn, raw)


def expect(params, txn):
    return passes.expect_on(_pool(params)[txn["model"]], txn["passes"], _tables(txn))


def points(params) -> dict:
    return {
        "model": [str(i) for i in range(len(_pool(params)))],
        "family": list(passes.FAMILIES),
        "attention": list(passes.ATTENTION),
        "pass_kind": list(passes.PASS_KINDS),
        "blocks_a_sequence": ["1", "2-3", "4+"],
        "block_order": ["ascending", "out of order"],
        "stale_block": ["no", "yes"],
        "block_boundary_in_pass": ["no", "yes"],
        "last_position": ["0", "1-7", "8-46", "max"],
    }


def sample(cov, params, txn, obs) -> None:
    compiled = _pool(params)[txn["model"]]
    mc = compiled.model.config
    b = compiled.block_positions
    cov.hit("model", str(txn["model"]))
    cov.hit("family", mc.family)
    cov.hit("attention", "mha" if mc.n_kv_heads == mc.n_heads else "mqa" if mc.n_kv_heads == 1 else "gqa")
    seen: set[int] = set()                       # blocks of the sequences before
    for slot, first, _, _ in _sequences(txn["passes"]):
        blocks = dict(txn["tables"][first])[slot]
        n = len(blocks)
        cov.hit("blocks_a_sequence", "1" if n == 1 else "2-3" if n <= 3 else "4+")
        if n > 1:
            cov.hit("block_order", "ascending" if blocks == sorted(blocks) else "out of order")
        cov.hit("stale_block", "yes" if seen & set(blocks) else "no")
        seen |= set(blocks)
    for rows in txn["passes"]:
        cov.hit("pass_kind", passes.pass_kind(rows))
        positions = [p for _, p, _ in rows]
        cov.hit("block_boundary_in_pass", "yes" if any(p and p % b == 0 for p in positions) else "no")
        last = max(positions)
        cov.hit("last_position", "0" if last == 0 else "max" if last == mc.max_context - 1 else
                "1-7" if last < 8 else "8-46")


BLOCK = Block(name="paged", design="decode_top", flow="decode_top", params=_params, generate=generate, jobs=jobs,
              results=passes.results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0,
              chunk=1000, vary=vary)
