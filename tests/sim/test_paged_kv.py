"""Paged KV (``Config.kv_block`` > 0): a row's KV through its sequence's block table, on the
instruction-level model, the scheduler and the decode top level (its passes: tests/sim/test_passes_rtl.py);
bit-exact with fixed slots, cycle-exact on the RTL; bad tables are one-line errors."""

from dataclasses import replace

import numpy as np
import pytest

from golden.errors import InputError
from golden.int_model import generate_int
from hdl.config import Config
from hdl.link import LinkedDecode
from sim.engine.runner import run
from sim.flows.decode import decode_job, top_params
from sim.machine.cycles import pass_cycles
from sim.machine.isa_sim import IsaMachine
from sim.machine.passes import lone_table
from sim.runtime import decode
from sim.serve.kv_layout import BlockAllocator, KvGeometry
from sim.serve.requests import Lengths, Request, poisson_trace
from sim.serve.rtl import confirm_on_rtl, confirm_passes_on_rtl
from sim.serve.scheduler import IsaExecutor, serve
from tests.sim.tiny_models import PASSES, SMALL_SHARED, tiny_passes

B = 4


@pytest.fixture(scope="module")
def models():
    return tiny_passes("llama-gqa"), tiny_passes("llama-gqa", kv_block=B)


def _logits(machine, r):
    c = machine.compiled
    at = c.addresses[c.logits_value] + r * c.logits_stride
    return machine.logits[at:at + c.model.config.vocab_size].copy()


def test_the_layout_s_sizes_and_its_one_address_rule(models):
    fixed, paged = models
    mc = fixed.model.config
    assert fixed.kv_blocks == fixed.kv_slots and fixed.table_entries == 1
    plane = mc.n_layers * mc.n_kv_heads
    assert paged.kv_blocks == PASSES.kv_bytes // (2 * mc.head_dim) // (plane * B) == paged.kv_slots
    assert paged.table_entries == PASSES.max_context // B and paged.plane_rows == paged.kv_blocks * B
    assert BlockAllocator(KvGeometry.of_compiled(paged), B).blocks == paged.kv_blocks
    # Fixed slots: the decode top level's rows, kv_base + (layer * n_kv_heads + h) * max_context + p.
    rows = fixed.kv_rows((3,), 1, [0, 5])
    assert rows.tolist() == [[fixed.kv_row(3) + (2 + h) * PASSES.max_context + p for h in range(2)] for p in (0, 5)]
    # Pages: position 5 is row 1 of the table's second block (4), in plane layer 1 * 2 + h.
    assert paged.kv_rows((9, 4), 1, [5]).tolist() == [[(2 + h) * paged.plane_rows + 4 * B + 1 for h in range(2)]]

def test_scattered_blocks_give_each_sequence_its_solo_tokens_and_logits(models):
    """Sequences with blocks out of order and interleaved, in passes that mix prefill chunks and decode
    rows at different positions, a retired sequence's blocks reused: every row's token and logits equal
    the sequence run alone on fixed slots."""
    fixed, paged = models
    seqs = {0: [3, 9, 4, 11, 2, 7, 5, 8, 1, 6], 5: [12, 1, 1, 20, 4, 9], 2: [7, 7, 3, 14, 10, 2, 9, 1]}
    solo = {}
    for s, toks in seqs.items():
        m = IsaMachine(fixed)
        solo[s] = [(m.run_pass([(t, p, 0)])[0], _logits(m, 0)) for p, t in enumerate(toks)]
    m = IsaMachine(paged)
    m.set_table(0, [17, 3, 40])
    m.set_table(5, [2, 30])
    passes = [[(0, p) for p in range(4)] + [(5, 0)], [(5, p) for p in range(1, 5)] + [(0, 4)],
              [(0, 5), (5, 5), (0, 6)], [(0, p) for p in range(7, 10)]]
    for rows in passes:
        out = m.run_pass([(seqs[s][p], p, s) for s, p in rows])
        for r, (s, p) in enumerate(rows):
            assert out[r] == solo[s][p][0]
            assert np.array_equal(_logits(m, r), solo[s][p][1])
        assert pass_cycles(paged.program, paged.model.config, paged.config, positions=[p for _, p in rows]).total \
            == pass_cycles(fixed.program, fixed.model.config, fixed.config, positions=[p for _, p in rows]).total
    # Slot 5 retires; slot 2 takes its blocks (stale KV there) and one of its own.
    m.set_table(5, ())
    m.set_table(2, [30, 2])
    for chunk in ([0, 1, 2], [3, 4, 5, 6, 7]):
        out = m.run_pass([(seqs[2][p], p, 2) for p in chunk])
        assert out == [solo[2][p][0] for p in chunk]


def test_the_scheduler_pages_and_serves_more_sequences_bit_exact():
    fixed = tiny_passes("llama-gqa", kv_bytes=8192)
    paged = tiny_passes("llama-gqa", kv_bytes=8192, kv_block=B)
    trace = poisson_trace(requests=12, rate=5e5, clock_hz=1e8, prompt=Lengths(1, 6), output=Lengths(1, 6),
                          vocab_size=29, seed=3)
    a, b = serve(trace, IsaExecutor(fixed)), serve(trace, IsaExecutor(paged))
    for r, q in zip(b.results, trace, strict=True):
        assert r.tokens == generate_int(paged.model, list(q.prompt), q.max_new_tokens)
    assert [r.tokens for r in a.results] == [r.tokens for r in b.results]
    most = [max(len({row[3] for row in p.rows}) for p in rep.passes) for rep in (a, b)]
    assert most == [fixed.kv_slots, 6] and fixed.kv_slots == 2     # 2 fixed slots; 6 sequences in 32 blocks
    assert all(p.predicted == pass_cycles(paged.program, paged.model.config, paged.config,
                                          positions=[row[2] for row in p.rows]).total for p in b.passes)
    assert b == serve(trace, IsaExecutor(paged))                    # deterministic


def test_a_request_waits_for_blocks_first_come_first_served():
    # 32 blocks of 4: a 48-position request takes 12; three of them fill 36 > 32: the third waits.
    paged = tiny_passes("llama-gqa", kv_bytes=8192, kv_block=B)
    reqs = [Request(str(i), (1,) * 40, 9, 0) for i in range(3)]
    rep = serve(reqs, IsaExecutor(paged))
    assert rep.results[2].admitted >= min(rep.results[0].finished, rep.results[1].finished)
    assert rep.results[1].admitted == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda f, p: IsaMachine(f).set_table(0, [1]), r"fixed KV slots \(kv_block 0\) have no block tables"),
    (lambda f, p: IsaMachine(p).set_table(-1, [1]), r"block table: slot must be an integer in \[0, 127\], not -1"),
    (lambda f, p: IsaMachine(p).set_table(0, [128]),
     r"slot 0's block table: a block must be an integer in \[0, 127\], not 128"),
    (lambda f, p: IsaMachine(p).set_table(0, list(range(13))),
     r"slot 0's block table holds at most 12 blocks \(max_context 48 / kv_block 4\), not 13"),
    (lambda f, p: IsaMachine(p).set_table(0, [3, 3]), r"slot 0's block table names a block twice: \[3, 3\]"),
    (lambda f, p: IsaMachine(p).run_pass([(1, 0, 4)]),
     r"pass row 0: position 0 is past slot 4's block table \(0 blocks of 4 positions\)"),
    (lambda f, p: Config(kv_block=6), r"kv_block must be 0 \(fixed slots\) or a power of two up to max_context"),
    (lambda f, p: LinkedDecode(p.config, head_dim=8, max_heads=4, max_norm_length=32, clocks_per_bit=8),
     r"kv_block 4: the serial link runs fixed KV slots only \(kv_block 0\); its protocol carries no block tables$"),
    (lambda f, p: replace(PASSES, kv_block=64),
     r"kv_block must be 0 \(fixed slots\) or a power of two up to max_context \(48\), not 64"),
])
def test_bad_tables_and_blocks_are_one_line(models, call, message):
    with pytest.raises(InputError, match=f"^{message}") as info:
        call(*models)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("passes", "tables", "message"), [
    ([[(1, 0, 0)]], [{0: [128]}], r"slot 0's block table: a block must be an integer in \[0, 127\], not 128"),
    ([[(1, 4, 0)]], [{0: [3]}], r"pass row 0: position 4 is past slot 0's block table \(1 blocks of 4 positions\)"),
    ([[(1, 0, 0)]], [{5: [3]}], r"pass row 0: position 0 is past slot 0's block table \(0 blocks of 4 positions\)"),
    ([[(1, 0, 0)]], None, r"paged KV \(kv_block 4\): pass 0 needs its block tables \(tables=\[\{slot: blocks\}, "
                          r"\.\.\.\], one a pass\)"),
    ([[(1, 0, 0)], [(1, 1, 0)]], [{0: [3]}], r"paged KV \(kv_block 4\): pass 1 needs its block tables"),
    ([[(1, 0, 0)]], [[3]], r"pass 0's block tables must be a dict \{slot: blocks\}, not \[3\]"),
])
def test_a_paged_rtl_job_s_bad_tables_are_one_line(models, passes, tables, message):
    paged = models[1]
    with pytest.raises(InputError, match=f"^{message}") as info:
        decode_job(paged, top_params(paged, **SMALL_SHARED), passes=passes, tables=tables)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"^block tables go with passes, not with steps or a prompt$"):
        decode_job(paged, top_params(paged, **SMALL_SHARED), steps=[(1, 0)], tables=[{0: [3]}])


def test_decode_steps_on_a_paged_top_level_on_verilator(models):
    """Single steps (no row table): one sequence in blocks 0, 1, ... (``lone_table``); tokens and logits
    as fixed slots', every step's cycles as predicted."""
    fixed, paged = models
    params = top_params(paged, **SMALL_SHARED)
    steps = [(t, p) for p, t in enumerate([3, 9, 4, 11, 2, 7])]
    job = decode_job(paged, params, steps=steps, readback={"logits": fixed.logits_stride // 4})
    assert job["tables"] == [[list(range(paged.table_entries))]] and job["plane_rows"] == paged.plane_rows
    got = run("verilator", "decode_top", params, "decode_top", job)["steps"]
    m = IsaMachine(fixed)
    for (t, p), r in zip(steps, got, strict=True):
        assert r["token_out"] == m.step(t, p)
        assert r["logits"] == m.logits[:len(r["logits"])].tolist()
        assert r["cycles"] == job["predicted"][str(p)]


def test_lockstep_run_on_a_paged_design_uses_the_lone_sequence_s_table(models):
    """The isa backend (``lockstep run``) gives a paged design the fixed design's tokens, the lone
    sequence in blocks 0 .. table_entries - 1 (the compiler's fit rule keeps a whole context's KV)."""
    fixed, paged = models
    assert lone_table(paged) == tuple(range(paged.table_entries)) and paged.kv_blocks > paged.table_entries
    assert decode(paged, "isa", [3, 9, 4], 9).generated == decode(fixed, "isa", [3, 9, 4], 9).generated


def test_a_paged_served_trace_replays_on_verilator(models):
    """The scheduler's paged schedule (blocks reserved on admission, freed on retiring and handed to
    later requests with their stale KV) replayed on the decode top level: every pass's tokens equal
    the instruction-level model's, its cycles the prediction; each request's tokens its prompt run
    alone. A lone paged model's passes replay through confirm_passes_on_rtl with their tables."""
    paged = models[1]
    params = top_params(paged, **SMALL_SHARED)
    trace = poisson_trace(requests=7, rate=20_000, clock_hz=1e8, prompt=Lengths(1, 9), output=Lengths(2, 5),
                          vocab_size=29, seed=11)
    report = serve(trace, IsaExecutor(paged), max_running=3)
    held = {}                                                           # request -> its blocks
    for rec in report.passes:
        owner = {slot: rid for rid, _, _, slot in rec.rows}
        held.update({owner[slot]: set(blocks) for slot, blocks in rec.tables})
    assert any(held[a] & held[b] for a in held for b in held if a < b)   # a block held by two requests in turn
    confirmed = confirm_on_rtl(report, paged, "verilator", params=params)
    assert confirmed.cycle_exact is True and [p.measured for p in confirmed.passes] == [p.predicted
                                                                                       for p in report.passes]
    for r, q in zip(confirmed.results, trace, strict=True):
        assert r.tokens == generate_int(paged.model, list(q.prompt), q.max_new_tokens)
    passes = [("target", [(t, p, s) for _, t, p, s in rec.rows]) for rec in report.passes[:2]]
    assert confirm_passes_on_rtl(paged, passes, "verilator", params=params,
                                 tables=[dict(rec.tables) for rec in report.passes[:2]]) \
        == [rec.predicted for rec in report.passes[:2]]
