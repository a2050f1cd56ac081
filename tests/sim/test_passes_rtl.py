"""Multi-row passes on the decode top level (issue 17): prefill passes of several rows of one sequence,
batched passes of rows of different slots at very different positions, sequences joining and leaving
between passes. Every row's token equals the instruction-level model's ``run_pass`` and the same
sequence run alone, step by step; the scratchpad and logits (every row's) equal the model's word for
word; every instruction's measured cycles and start equal :func:`sim.machine.cycles.pass_cycles`.
"""

from dataclasses import replace

import numpy as np
import pytest

from golden.errors import InputError
from golden.numerics import ceil_div
from sim.engine.bus import WatchdogError
from sim.engine.runner import run
from sim.flows.decode import decode_job, top_params
from sim.machine.compiler import compile_model
from sim.machine.cycles import decode_step_cycles, pass_cycles
from sim.machine.isa_sim import IsaMachine
from sim.regress.passes import DESIGN as WIDE

from .tiny_models import PASSES, SMALL_SHARED, tiny_passes


def readback(compiled, rows):
    """Words of the scratchpad and the logits that ``rows`` rows use."""
    V = compiled.config.vector_lanes
    return {"scratch": ceil_div(rows * compiled.row_stride, V), "logits": ceil_div(rows * compiled.logits_stride, V)}


def row_logits(compiled, logits, r):
    """Row ``r``'s int32 logits in a logits buffer's words."""
    at = compiled.addresses[compiled.logits_value] + r * compiled.logits_stride
    return np.asarray(logits[at:at + compiled.model.config.vocab_size])


def check_passes(compiled, result, passes, tables=None, solo=None):
    """Tokens, state and cycles of every pass against the instruction-level model and the cycle model;
    every row's token (and logits, when read back) against its sequence run alone, step by step, on
    ``solo`` (default ``compiled``; fixed slots for a paged ``compiled``). ``tables``: paged KV's, one
    ``{slot: blocks}`` a pass."""
    machine = IsaMachine(compiled)
    alone = {}                               # slot -> the sequence in it, run alone step by step
    mc = compiled.model.config
    for i, (rows, got) in enumerate(zip(passes, result["passes"], strict=True)):
        for slot, blocks in (tables[i] if tables else {}).items():
            machine.set_table(slot, blocks)
        expected = machine.run_pass(rows)
        assert got["tokens"] == expected, f"pass {rows}"
        assert got["next_token"] == expected[-1]          # the last row's
        for r, ((token, position, slot), out) in enumerate(zip(rows, expected, strict=True)):
            if position == 0:
                alone[slot] = IsaMachine(solo or compiled)   # a new sequence in this slot
            assert alone[slot].step(token, position) == out, f"row {(token, position, slot)}"
            if "logits" in got:
                assert np.array_equal(row_logits(compiled, got["logits"], r),
                                      row_logits(compiled, alone[slot].logits, 0)), f"row {r}'s logits, pass {i}"
        if "scratch" in got:
            scratch = np.array(got["scratch"])
            assert np.array_equal(scratch, machine.scratch[:scratch.size]), f"scratchpad differs after {rows}"
            logits = np.array(got["logits"])
            assert np.array_equal(logits, machine.logits[:logits.size]), f"logits differ after {rows}"
        predicted = pass_cycles(compiled.program, mc, compiled.config, positions=[p for _, p, _ in rows])
        assert got["trace"] == [o.cycles for o in predicted.ops]
        assert got["starts"] == list(predicted.starts)
        assert got["cycles"] == predicted.total == got["edges"] - 2     # the start edge, HALT's decode


def run_passes(simulator, compiled, passes, *, state=True, tables=None, solo=None):
    params = top_params(compiled, **SMALL_SHARED)
    rows = max(len(p) for p in passes)
    job = decode_job(compiled, params, passes=passes, tables=tables, trace=True,
                     readback=readback(compiled, rows) if state else None)
    result = run(simulator, "decode_top", params, "decode_top", job)
    check_passes(compiled, result, passes, tables, solo)
    return result


def schedule():
    """Passes over four slots: slot 0's prompt prefilled in one pass, slot 1's chunked into the next
    passes beside slot 0's decode rows, so slot 1 ends far ahead; slot 2 joins late; slot 0 leaves and
    a new sequence takes its slot; a one-row pass; a full pass of max_m rows."""
    rng = np.random.default_rng(7)

    def tok():
        return int(rng.integers(0, 29))

    passes = [[(tok(), p, 0) for p in range(5)]]                          # prefill: one sequence, 5 rows
    for chunk in range(5):                                                 # slot 1: 35 positions in chunks
        passes.append([(tok(), 5 + chunk, 0)] + [(tok(), 7 * chunk + p, 1) for p in range(7)])
    passes.append([(tok(), 10, 0), (tok(), 35, 1), (tok(), 0, 2), (tok(), 1, 2)])   # slot 2 joins
    passes.append([(tok(), 36, 1), (tok(), 2, 2), (tok(), 0, 0)])          # slot 0 left; a new sequence in it
    passes.append([(tok(), 37, 1)])                                        # one row, at kv_base = slot 1's
    passes.append([(tok(), 38, 1), (tok(), 3, 2), (tok(), 1, 0), (tok(), 0, 3), (tok(), 1, 3), (tok(), 2, 3),
                   (tok(), 4, 2), (tok(), 2, 0)][:8])
    return passes


def paged_tables(compiled, passes, seed=5):
    """Block tables for :func:`schedule`'s passes (paged KV): each sequence's blocks drawn out of order
    from a seeded permutation of the KV memory's, as many as its last position needs; a sequence that
    takes a retired one's slot gets the retired one's blocks, reversed (stale KV in them). One
    ``{slot: blocks}`` a pass."""
    b = compiled.block_positions
    free = [int(x) for x in np.random.default_rng(seed).permutation(compiled.kv_blocks)]
    last: dict[tuple[int, int], int] = {}        # (slot, sequence number) -> its last position
    seq = {}
    for rows in passes:
        for _, position, slot in rows:
            if position == 0:
                seq[slot] = seq.get(slot, -1) + 1
            last[slot, seq[slot]] = position
    blocks, out, seq = {}, [], {}
    for rows in passes:
        for _, position, slot in rows:
            if position == 0:
                seq[slot] = seq.get(slot, -1) + 1
                need = last[slot, seq[slot]] // b + 1
                old = list(reversed(blocks.pop(slot, [])))
                blocks[slot] = (old + free)[:need]
                free = [x for x in free if x not in blocks[slot]]
        out.append({slot: list(blocks[slot]) for slot in {s for _, _, s in rows}})
    return out


# --- the cycle model -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_one_row_pass_is_the_decode_step(name):
    compiled = tiny_passes(name)
    mc = compiled.model.config
    for position in (0, 7, 47):
        assert (pass_cycles(compiled.program, mc, compiled.config, positions=[position])
                == decode_step_cycles(compiled.program, mc, compiled.config, position=position))


def test_a_pass_that_does_not_fit_is_refused_before_simulation():
    compiled = tiny_passes("llama-gqa")
    params = top_params(compiled, **SMALL_SHARED)
    with pytest.raises(InputError, match=r"^a pass must have 1 to 8 rows \(the design's max_m bounds it\), not 9$"):
        decode_job(compiled, params, passes=[[(1, p, 0) for p in range(9)]])
    with pytest.raises(InputError, match=r"^pass row 1: slot 0's rows must be at consecutive increasing positions, "
                                         r"not 0 then 2$"):
        decode_job(compiled, params, passes=[[(1, 0, 0)], [(1, 0, 0), (1, 2, 0)]])
    with pytest.raises(InputError, match=r"^a waveform window goes with steps or a prompt, not with passes$"):
        decode_job(compiled, params, passes=[[(1, 0, 0)]], waves_window={"cycles": [0, 10]})


# --- Verilator ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_prefill_batched_and_joining_passes_on_verilator(name):
    compiled = tiny_passes(name)
    run_passes("verilator", compiled, schedule())


# gpt2 behind the slow marker: the fast suite's budget
@pytest.mark.parametrize("name", ["llama-gqa", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_paged_passes_on_verilator(name):
    """:func:`schedule` with pages of 4 positions (kv_block 4): blocks out of order, a new sequence in
    blocks a retired one held (stale KV): every row's token and logits equal its sequence run alone
    on fixed slots; every instruction's cycles and start equal the cycle model's (the table lookup
    costs nothing)."""
    compiled = tiny_passes(name, kv_block=4)
    passes = schedule()
    tables = paged_tables(compiled, passes)
    # Slot 0's second sequence (pass 7) in the first one's last block; slot 1's blocks out of order.
    assert tables[7][0] == tables[6][0][-1:] and tables[1][1] != sorted(tables[1][1])
    run_passes("verilator", compiled, passes, tables=tables, solo=tiny_passes(name))


def test_passes_with_the_wide_weight_port_and_every_fusion_on_verilator():
    """G = R (a tile a cycle: the M rows bound each tile), the vector fusions and the residual add in
    the GEMM's output stage (its residual word read at row r's offset)."""
    compiled = compile_model(tiny_passes("llama-gqa").model, WIDE)
    assert replace(PASSES, weight_rows_per_cycle=4, fused_residual=True, fused_swiglu=True, fused_rope=True) == WIDE
    run_passes("verilator", compiled, schedule())


# --- smaller cases on Icarus and Amaranth's simulator ----------------------------------------------------

def test_a_prefill_pass_and_a_batched_pass_on_icarus():
    compiled = tiny_passes("gpt2")
    run_passes("icarus", compiled, [[(3, 0, 0), (7, 1, 0)], [(5, 2, 0), (9, 0, 1)]], state=False)


def test_a_prefill_and_batched_pass_on_amaranth():
    compiled = tiny_passes("llama-gqa")
    run_passes("amaranth", compiled, [[(3, 0, 0), (7, 1, 0), (5, 0, 1)]], state=False)


def test_paged_passes_on_amaranth():
    """Pages of one position (kv_block 1: every position a lookup, no offset bits): a sequence's two
    positions in blocks 17 and 3 (out of order) beside another's in block 5, one pass."""
    compiled = tiny_passes("llama-gqa", kv_block=1)
    run_passes("amaranth", compiled, [[(3, 0, 0), (7, 1, 0), (5, 0, 9)]], state=False, tables=[{0: [17, 3], 9: [5]}],
               solo=tiny_passes("llama-gqa"))


@pytest.mark.slow
def test_paged_passes_on_icarus():
    """Pages of 4: a prefill across a block boundary (positions 0 .. 5 in blocks 40 and 7), then a
    row of a sequence in block 3 beside the first's next."""
    compiled = tiny_passes("gpt2", kv_block=4)
    passes = [[(3, 0, 0), (7, 1, 0), (9, 2, 0), (4, 3, 0), (8, 4, 0)], [(5, 5, 0), (9, 0, 1)]]
    run_passes("icarus", compiled, passes, state=False, tables=[{0: [40, 7], 1: [3]}] * 2, solo=tiny_passes("gpt2"))


def test_a_pass_that_overruns_its_budget_stops_with_a_watchdog_error():
    compiled = tiny_passes("llama-gqa")
    params = top_params(compiled, **SMALL_SHARED)
    job = decode_job(compiled, params, passes=[[(3, 0, 0), (7, 1, 0)]])
    assert job["pass_predicted"] == [pass_cycles(compiled.program, compiled.model.config, compiled.config,
                                                 positions=[0, 1]).total]
    job["pass_predicted"] = [10]                 # a budget of 2 x 10 + 256 cycles
    with pytest.raises(WatchdogError, match=r"^pass 0 of 2 rows did not finish within 276 cycles \(predicted 10\)$"):
        run("amaranth", "decode_top", params, "decode_top", job)


# --- the demo model ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("design", ["demo-narrow", "demo"])
def test_the_demo_prompt_as_one_prefill_pass_on_verilator(design):
    """The README's 15-token prompt in one pass of 15 rows, then a batched pass of 10 rows from all 8
    slots; the prompt's last row gives the integer model's first generated token."""
    from golden.checkpoint import load_demo_model
    from golden.int_model import generate_int
    from golden.quantize import quantize_checkpoint
    from hdl.config import PRESETS

    checkpoint = load_demo_model()
    compiled = compile_model(quantize_checkpoint(checkpoint), PRESETS[design])
    prompt = checkpoint.tokenizer.encode("The old miller ")
    assert len(prompt) == 15 and compiled.kv_slots == 8
    passes = [[(t, p, 0) for p, t in enumerate(prompt)],
              [(7, 15, 0)] + [(s, 0, s) for s in range(1, 8)] + [(5, 1, 7), (6, 2, 7)]]
    params = top_params(compiled)
    job = decode_job(compiled, params, passes=passes, trace=True)
    result = run("verilator", "decode_top", params, "decode_top", job)
    check_passes(compiled, result, passes)
    assert result["passes"][0]["tokens"][-1] == generate_int(compiled.model, prompt, 1)[0]
