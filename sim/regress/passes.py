"""The decode top level's multi-row regression: random schedules of passes on a wide, fused design.

Where the ``top`` block runs one row a step on the one-row-port design, this one runs passes of up to
``max_m`` rows (:mod:`sim.machine.passes`) on :data:`DESIGN`: a tile a cycle (``weight_rows_per_cycle``
= R), the residual add in the GEMM's output stage and the fused SwiGLU and RoPE, so the programs the
compiler emits for that design point (GEMM flag RESIDUAL, MULTIPLY flag ACTIVATION, ROPE flag SPLIT)
run too. The models are the ``top`` block's pool (:func:`sim.regress.top.pool`) compiled for it.

A transaction is a schedule of 1 to :data:`MAX_PASSES` passes over a few KV slots, from empty slots:
sequences join (a prompt prefilled in one pass or chunked over several, beside other sequences'
rows), decode a row a pass, leave, and a later sequence takes a freed slot; the rows of different
slots are interleaved at random (each slot's rows in position order, as a pass requires); one
transaction in ten is one sequence filling whole passes to the end of the context. Each sequence
starts at position 0, so a row reads only KV its own sequence wrote, and a chunk of transactions on
one model runs as one ``decode_top`` job. Scored per pass against the instruction-level model
(:meth:`sim.machine.isa_sim.IsaMachine.run_pass`, a fresh machine per transaction): every row's token
and logits word for word, and every instruction's cycles and start cycle and the pass's total against
:func:`sim.machine.cycles.pass_cycles`.
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace

from golden.numerics import ceil_div
from hdl.config import Config

from ..flows.decode import decode_job, top_params
from ..machine.compiler import compile_model
from ..machine.cycles import pass_cycles
from ..machine.isa_sim import IsaMachine
from . import top
from .block import Block, by_model, pick_size, varied

#: The ``top`` block's design with room for passes of 8 rows (the scratchpad and logits rows side by
#: side) and several KV slots (also the design of tests/sim/test_passes_rtl.py).
ROWS_DESIGN = replace(top.DESIGN, scratch_bytes=9216, logits_words=512, kv_bytes=32768, max_m=8)
#: The design: :data:`ROWS_DESIGN` with a tile a cycle and every fusion (also test_passes_rtl.py's
#: wide design: one Verilator build for both).
DESIGN = replace(ROWS_DESIGN, weight_rows_per_cycle=top.DESIGN.array_rows, fused_residual=True, fused_swiglu=True,
                 fused_rope=True)
#: Most passes in a transaction (a long transaction takes as many as the context needs).
MAX_PASSES = 6
#: Cover point bins: what a pass is (one row; one sequence's rows; one row of each of several
#: sequences; several sequences with a chunk of some), the model families and attention kinds.
PASS_KINDS = ("one row", "prefill", "decode batch", "prefill beside decode")
FAMILIES = ("gpt2", "llama")
ATTENTION = ("mha", "gqa", "mqa")
#: Most KV slots a transaction uses (the models' slots: 5 to 42).
MAX_SLOTS = 4


@functools.cache
def pool(design: Config = DESIGN) -> tuple:
    """The ``top`` block's models compiled for ``design``, in the same order."""
    return tuple(compile_model(c.model, design) for c in top.pool())


def _params(simulator: str) -> dict:
    return top_params(pool()[0], **top.SHARED)


def _pool(params) -> tuple:
    """The pool compiled for the design ``params`` describe."""
    return pool(Config.from_dict(params["config"]))


def vary(params, settings) -> dict:
    """The params of the design ``params`` describe with ``settings`` applied (``--set``)."""
    return top_params(pool(varied(Config.from_dict(params["config"]), settings))[0], **top.SHARED)


def _interleave(rng: random.Random, per_slot: dict[int, list]) -> list:
    """The slots' row lists merged in a random order, each slot's rows kept in their order."""
    queues = {s: list(rows) for s, rows in per_slot.items() if rows}
    out = []
    while queues:
        s = rng.choice(sorted(queues))
        out.append(queues[s].pop(0))
        if not queues[s]:
            del queues[s]
    return out


def generate(rng, params) -> dict:
    return schedule(rng, _pool(params))


def schedule(rng, models) -> dict:
    """A transaction (module docstring) on one of ``models``: ``{"model": index, "passes": [rows, ...]}``,
    rows ``[token, position, slot]``."""
    index = rng.randrange(len(models))
    compiled = models[index]
    mc = compiled.model.config
    context, most = compiled.model.max_context, compiled.max_rows

    def token() -> int:
        return rng.choice([0, mc.vocab_size - 1, rng.randrange(mc.vocab_size)])

    if rng.random() < 0.1:      # one sequence, whole passes to the end of the context
        rows = [[token(), p, 0] for p in range(context)]
        return {"model": index, "passes": [rows[i:i + most] for i in range(0, context, most)]}
    slots = min(compiled.kv_slots, MAX_SLOTS)
    live: dict[int, int] = {}                       # slot -> its sequence's next position
    passes = []
    for _ in range(pick_size(rng, 1, MAX_PASSES)):
        for s in list(live):                        # sequences leave (or have reached the context's end)
            if live[s] >= context or rng.random() < 0.15:
                del live[s]
        free = [s for s in range(slots) if s not in live]
        while free and (not live or rng.random() < 0.4):    # sequences join, at position 0
            s = free.pop(rng.randrange(len(free)))
            live[s] = 0
        budget = pick_size(rng, 1, most)
        per_slot: dict[int, list] = {}
        for s in rng.sample(sorted(live), len(live)):
            if budget == 0:
                break
            n = pick_size(rng, 1, min(budget, context - live[s]))
            per_slot[s] = [[token(), live[s] + i, s] for i in range(n)]
            live[s] += n
            budget -= n
        passes.append(_interleave(rng, per_slot))
    return {"model": index, "passes": passes}


def _readback(compiled) -> dict:
    return {"logits": ceil_div(compiled.max_rows * compiled.logits_stride, compiled.config.vector_lanes)}


def jobs(params, txns) -> list:
    return [(decode_job(compiled, params, passes=[p for i in idx for p in txns[i][1]["passes"]], trace=True,
                        readback=_readback(compiled)), idx) for compiled, idx in by_model(_pool(params), txns)]


def results(result, txns) -> list:
    out, items = [], result["passes"]
    for t in txns:
        out.append(items[:len(t["passes"])])
        items = items[len(t["passes"]):]
    return out


def _row_logits(compiled, words, rows: int) -> list:
    """Each row's logits (the first ``logits_size`` words of its ``logits_stride``)."""
    return [list(words[r * compiled.logits_stride:][:compiled.logits_size]) for r in range(rows)]


def observe(params, txn, raw):
    return observe_on(_pool(params)[txn["model"]], txn, raw)


def observe_on(compiled, txn, raw) -> list:
    """Every pass's tokens, rows' logits, instructions' cycles and starts and total, as the RTL gave them."""
    return [[p["tokens"], _row_logits(compiled, p["logits"], len(rows)), p["trace"], p["starts"], p["cycles"]]
            for rows, p in zip(txn["passes"], raw, strict=True)]


def expect(params, txn):
    return expect_on(_pool(params)[txn["model"]], txn["passes"])


def expect_on(compiled, passes, tables=None) -> list:
    """:func:`observe_on`'s figures from the instruction-level model (a fresh machine; ``tables``: paged
    KV's block tables, one ``{slot: blocks}`` a pass, set before it) and the cycle model."""
    machine = IsaMachine(compiled)
    out = []
    for i, rows in enumerate(passes):
        for slot, blocks in (tables[i] if tables else {}).items():
            machine.set_table(slot, blocks)
        tokens = machine.run_pass([tuple(r) for r in rows])
        cycles = pass_cycles(compiled.program, compiled.model.config, compiled.config,
                             positions=[p for _, p, _ in rows])
        out.append([tokens, _row_logits(compiled, machine.logits.tolist(), len(rows)),
                    [o.cycles for o in cycles.ops], list(cycles.starts), cycles.total])
    return out


def pass_kind(rows) -> str:
    """What a pass is, one of :data:`PASS_KINDS`, from its rows' slots."""
    slots = [s for _, _, s in rows]
    distinct = set(slots)
    if len(rows) == 1:
        return "one row"
    if len(distinct) == 1:
        return "prefill"
    return "decode batch" if len(distinct) == len(slots) else "prefill beside decode"


def _kind(ins) -> str:
    """An instruction's opcode, with its flags when it has any (e.g. ``GEMM/6``: REQUANT | RESIDUAL)."""
    return ins.opcode.name + (f"/{ins['flags']}" if ins["flags"] else "")


def points(params) -> dict:
    kinds = sorted({_kind(i) for c in _pool(params) for i in c.instructions})
    return {
        "model": [str(i) for i in range(len(_pool(params)))],
        "family": list(FAMILIES),
        "attention": list(ATTENTION),
        "rows": ["1", "2-7", "max"],
        "slots_in_pass": ["1", "2", "3+"],
        "pass_kind": list(PASS_KINDS),
        "pass_kind_x_attention": [f"{k} x {a}" for k in PASS_KINDS for a in ATTENTION],
        "pass_kind_x_family": [f"{k} x {f}" for k in PASS_KINDS for f in FAMILIES],
        "order": ["grouped", "interleaved"],
        "join": ["first pass", "later pass"],
        "slot_reuse": ["no", "yes"],
        "last_position": ["0", "1-7", "8-46", "max"],
        "spread": ["0", "1-7", "8+"],
        "passes": ["1", "2-5", "6+"],
        "token": ["0", "last", "other"],
        "instruction": kinds,
    }


def sample(cov, params, txn, obs) -> None:
    compiled = _pool(params)[txn["model"]]
    mc = compiled.model.config
    context = compiled.model.max_context
    cov.hit("model", str(txn["model"]))
    cov.hit("family", mc.family)
    attention = "mha" if mc.n_kv_heads == mc.n_heads else "mqa" if mc.n_kv_heads == 1 else "gqa"
    cov.hit("attention", attention)
    n = len(txn["passes"])
    cov.hit("passes", "1" if n == 1 else "2-5" if n <= 5 else "6+")
    used: set[int] = set()
    for k, rows in enumerate(txn["passes"]):
        m = len(rows)
        cov.hit("rows", "1" if m == 1 else "max" if m == compiled.max_rows else "2-7")
        slots = [s for _, _, s in rows]
        distinct = list(dict.fromkeys(slots))
        cov.hit("slots_in_pass", str(len(distinct)) if len(distinct) < 3 else "3+")
        kind = pass_kind(rows)
        cov.hit("pass_kind", kind)
        cov.hit("pass_kind_x_attention", f"{kind} x {attention}")
        cov.hit("pass_kind_x_family", f"{kind} x {mc.family}")
        grouped = all(slots[i] == slots[i + 1] or slots[i + 1] not in slots[:i + 1] for i in range(m - 1))
        cov.hit("order", "grouped" if grouped else "interleaved")
        positions = [p for _, p, _ in rows]
        for token, position, slot in rows:
            cov.hit("token", "0" if token == 0 else "last" if token == mc.vocab_size - 1 else "other")
            if position == 0:
                cov.hit("join", "first pass" if k == 0 else "later pass")
                cov.hit("slot_reuse", "yes" if slot in used else "no")
                used.add(slot)
        last = max(positions)
        cov.hit("last_position", "0" if last == 0 else "max" if last == context - 1 else
                "1-7" if last < 8 else "8-46")
        spread = last - min(positions)
        cov.hit("spread", "0" if spread == 0 else "1-7" if spread < 8 else "8+")
    for ins in compiled.instructions:
        cov.hit("instruction", _kind(ins))


BLOCK = Block(name="passes", design="decode_top", flow="decode_top", params=_params, generate=generate, jobs=jobs,
              results=results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0,
              chunk=1000, vary=vary)
