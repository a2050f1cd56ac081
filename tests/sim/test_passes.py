"""Passes of several token rows on the instruction-level model and the cycle model (issue 17):
every row's token equals its sequence run alone; a pass's predicted cycles follow from its rows."""

from dataclasses import replace

import pytest

from golden.errors import InputError
from golden.int_model import generate_int
from hdl.config import PRESETS
from sim.machine.compiler import compile_model
from sim.machine.cycles import decode_step_cycles, gemm_cycles, op_cycles, pass_cycles
from sim.machine.isa_sim import IsaMachine
from sim.machine.passes import Row, check_pass

from .tiny_models import SMALL, TINY, tiny


def _wide(compiled):
    """The tiny design with room for 8 rows a pass and 4 sequences' KV slots."""
    config = replace(SMALL, scratch_bytes=8 * compiled.row_stride, logits_words=8 * compiled.logits_stride,
                     kv_bytes=4 * 2 * compiled.model.config.head_dim * compiled.slot_rows, max_m=8)
    return compile_model(compiled.model, config)


@pytest.fixture(params=sorted(TINY))
def wide(request):
    return _wide(tiny(request.param))


def _alone(compiled, prompt, new):
    return generate_int(compiled.model, prompt, new)


def test_the_pass_layout_of_a_compiled_program(wide):
    c = wide
    V = c.config.vector_lanes
    assert c.row_stride % V == 0 and c.scratch_size <= c.row_stride < c.scratch_size + V
    assert c.logits_stride % V == 0 and c.logits_size <= c.logits_stride < c.logits_size + V
    mc = c.model.config
    assert c.slot_rows == mc.n_layers * mc.n_kv_heads * c.config.max_context
    assert c.kv_slots == 4
    assert c.max_rows == 8 and c.rows_limits()["scratch_bytes"] == 8


def test_batched_prefill_and_joining_sequences_equal_each_sequence_alone(wide):
    """Three sequences in slots 2, 0 and 3: the first prefilled in one pass, the second joining later
    with its prompt in two chunks beside the first's decode rows, the third at a very different
    position; each row's token equals the sequence's own greedy decode."""
    c = wide
    vocab = c.model.config.vocab_size
    prompts = {2: [1, 5, 7, 3, 2], 0: [4 % vocab, 9 % vocab, 11 % vocab], 3: [(3 * i + 1) % vocab for i in range(20)]}
    new = 6
    want = {s: _alone(c, p, new) for s, p in prompts.items()}
    machine = IsaMachine(c)
    got = {s: [] for s in prompts}
    nxt = {}

    def run(rows):
        tokens = machine.run_pass(rows)
        # a sequence's next token is the token of its last row in the pass
        for row, token in zip(rows, tokens, strict=True):
            if row.position >= len(prompts[row.slot]) - 1:
                got[row.slot].append(token)
            nxt[row.slot] = (token, row.position + 1)

    # slot 3: its long prompt as 8 + 8 + 4 rows (chunked prefill, alone in the first passes)
    p3 = prompts[3]
    run([Row(t, i, 3) for i, t in enumerate(p3[:8])])
    run([Row(t, i + 8, 3) for i, t in enumerate(p3[8:16])])
    # slot 2's whole prompt joins beside slot 3's last chunk
    run([Row(t, i + 16, 3) for i, t in enumerate(p3[16:])] + [Row(t, i, 2) for i, t in enumerate(prompts[2])][:4])
    run([Row(prompts[2][4], 4, 2), Row(*nxt[3], 3)] + [Row(t, i, 0) for i, t in enumerate(prompts[0][:2])])
    run([Row(*nxt[3], 3), Row(*nxt[2], 2), Row(prompts[0][2], 2, 0)])
    while any(len(got[s]) < new for s in prompts):
        run([Row(*nxt[s], s) for s in (0, 2, 3) if len(got[s]) < new])
    assert got == {s: want[s][:new] for s in prompts}


def test_one_row_passes_are_decode_steps(wide):
    """A one-row pass in slot 1 is the decode step (slot 0): same tokens, same KV cache."""
    a, b = IsaMachine(wide), IsaMachine(wide)
    token = 1
    for position in range(5):
        (got,) = a.run_pass([Row(token, position, 1)])
        token = b.step(token, position)
        assert got == token
    n = wide.slot_rows
    one, zero = slice(wide.kv_row(1), wide.kv_row(1) + n), slice(wide.kv_row(0), wide.kv_row(0) + n)
    assert (a.k[one] == b.k[zero]).all() and (a.v[one] == b.v[zero]).all() and not b.k[one].any()
    assert a.k[one].any() and not a.k[zero].any()


def test_pass_cycles_of_one_row_are_the_decode_step(wide):
    c = wide
    mc = c.model.config
    for position in (0, 7, 30):
        one = pass_cycles(c.program, mc, c.config, positions=[position])
        assert one == decode_step_cycles(c.program, mc, c.config, position=position)


def test_pass_cycles_stream_gemm_rows_and_run_the_others_row_by_row(wide):
    c = wide
    mc, cfg = c.model.config, c.config
    positions = [0, 9, 30, 31]
    p = pass_cycles(c.program, mc, cfg, positions=positions)
    steps = [decode_step_cycles(c.program, mc, cfg, position=q) for q in positions]
    assert p.rows == 4 and len(p.ops) == len(steps[0].ops)
    for i, op in enumerate(p.ops):
        if op.op == "gemm":
            one = steps[0].ops[i]
            load = gemm_cycles(cfg, 1, 1, 1).first_load
            assert op.weight_bytes == one.weight_bytes and op.tiles == one.tiles and op.macs == 4 * one.macs
            # the same GEMM with 4 rows: every tile after the first streams 4 rows in max(load, 4)
            # cycles instead of max(load, 1), and the last tile's 3 more rows show
            assert op.cycles - one.cycles == (op.tiles - 1) * (max(load, 4) - max(load, 1)) + 3, op.output
        else:
            assert op.cycles == sum(s.ops[i].cycles for s in steps)
            assert op.unit_min == sum(s.ops[i].unit_min for s in steps)
    assert p.bounds["MAC peak"] == 4 * steps[0].bounds["MAC peak"]
    assert p.bounds["weight port"] == steps[0].bounds["weight port"]


def test_op_cycles_of_a_gemm_over_rows():
    cfg = PRESETS["demo-narrow"]
    one = op_cycles("gemm", cfg, width=64, in_width=64)
    eight = op_cycles("gemm", cfg, width=64, in_width=64, rows=8)
    # narrow port: a tile loads in 8 cycles, so 8 rows stream in its shadow; only the last tile's 7 more rows show
    assert eight.cycles - one.cycles == 7 and eight.macs == 8 * one.macs


@pytest.mark.parametrize(("rows", "match"), [
    ([], r"^a pass must have 1 to 8 rows \(the design's max_m bounds it\), not 0$"),
    ([(1, 0, 0)] * 9, r"^a pass must have 1 to 8 rows .*not 9$"),
    ("abc", r"^a pass's rows must be a list of \(token, position, slot\), not 'abc'$"),
    ([(1, 0)], r"^pass row 0 must be \(token, position, slot\), not \(1, 0\)$"),
    ([(1, 0, 4)], r"^pass row 0: slot must be an integer in \[0, 3\], not 4$"),
    ([(1, 48, 0)], r"^pass row 0: position must be an integer in \[0, 47\], not 48$"),
    ([(1, -1, 0)], r"^pass row 0: position must be an integer in \[0, 47\], not -1$"),
    ([(10 ** 6, 0, 0)], r"^pass row 0: token must be an integer in \[0, \d+\], not 1000000$"),
    ([(1, True, 0)], r"^pass row 0: position must be an integer in \[0, 47\], not True$"),
    ([(1, 3, 0), (2, 5, 0)], r"^pass row 1: slot 0's rows must be at consecutive increasing positions, not 3 then 5$"),
    ([(1, 3, 0), (2, 3, 0)], r"^pass row 1: slot 0's rows must be at consecutive .*not 3 then 3$"),
])
def test_bad_passes_are_refused_in_one_line(wide, rows, match):
    with pytest.raises(InputError, match=match):
        check_pass(wide, rows)
    with pytest.raises(InputError, match=match):
        IsaMachine(wide).run_pass(rows)


def test_bad_positions_for_pass_cycles(wide):
    with pytest.raises(InputError, match=r"^positions must be a non-empty list of non-negative integers, not \[\]$"):
        pass_cycles(wide.program, wide.model.config, wide.config, positions=[])


def test_the_demo_designs_hold_eight_sequences_and_a_prompt_in_one_pass():
    from golden.checkpoint import load_demo_model
    from golden.quantize import quantize_checkpoint

    model = quantize_checkpoint(load_demo_model())
    for name in ("demo", "demo-narrow"):
        c = compile_model(model, PRESETS[name])
        assert (c.kv_slots, c.max_rows) == (8, 16), name
