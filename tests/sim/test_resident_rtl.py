"""Two compiled models resident in one decode top level (issue 18: a draft beside the target): passes of
either model in one simulation, the memories of both loaded once. Every pass's tokens equal its model's
instruction-level model (and the same sequence run alone, with no other model resident), every
instruction's cycles and start equal :func:`sim.machine.cycles.pass_cycles`."""

from dataclasses import replace

import numpy as np
import pytest

from golden.errors import InputError
from golden.numerics import ceil_div
from sim.engine.runner import run
from sim.flows.decode import decode_job, images, top_params
from sim.machine.compiler import CompileError, compile_model, memory_needs
from sim.machine.cycles import pass_cycles
from sim.machine.isa_sim import IsaMachine
from sim.machine.resident import resident
from sim.serve.rtl import RtlMismatch, confirm_passes_on_rtl

from .tiny_models import PASSES, SMALL_SHARED, tiny_passes


@pytest.fixture(scope="module")
def pair():
    """The tiny Llama-GQA as the target, the tiny GPT-2 beside it as the draft (one head_dim, 8)."""
    return resident(tiny_passes("llama-gqa"), tiny_passes("gpt2"))


def schedule():
    """Speculative-like passes: draft steps, target verify passes of several rows at consecutive
    positions, positions run again with other tokens (a rollback: the KV rows are overwritten), and a
    target pass over two slots."""
    return [("target", [(3, 0, 0), (7, 1, 0), (5, 2, 0), (1, 3, 0)]),      # prefill
            ("draft", [(3, 0, 0), (7, 1, 0), (5, 2, 0), (1, 3, 0)]),
            ("draft", [(9, 4, 0)]),
            ("draft", [(11, 5, 0)]),
            ("target", [(9, 4, 0), (11, 5, 0), (2, 6, 0)]),               # verify 2 drafted tokens
            ("draft", [(4, 5, 0)]),                                       # rollback: position 5 again
            ("target", [(4, 5, 0), (6, 6, 0)]),
            ("target", [(8, 7, 0), (1, 0, 1), (2, 1, 1)]),                # and a second sequence
            ("draft", [(6, 6, 0), (8, 7, 0)])]


def alone_tokens(pair, passes):
    """Each pass's tokens from the same models compiled alone, each sequence run step by step."""
    machines = {}
    out = []
    for name, rows in passes:
        model = pair.target if name == "target" else pair.draft
        alone = compile_model(model.model, model.config) if model.beside is not None else model
        tokens = []
        for token, position, slot in rows:
            if (name, slot) not in machines:
                machines[name, slot] = IsaMachine(alone)
            tokens.append(machines[name, slot].step(token, position))
        out.append(tokens)
    return out


# --- the compiler and the instruction-level model (no simulator) -----------------------------------

def test_the_draft_follows_the_target_in_every_memory(pair):
    t, d = pair.target, pair.draft
    C = t.config.array_cols
    assert d.program_base == len(t.instructions) == pair.program_bases["draft"]
    assert d.bases["weight_words"] >= ceil_div(t.weights.size, C)
    assert d.bases["param_words"] >= t.params.size
    assert min(ins["weight"] for ins in d.instructions if ins.opcode.name == "EMBED") >= d.bases["weight_words"]
    # the draft's KV region: the top slot; the target keeps the slots below it
    total = t.config.kv_bytes // (2 * t.model.config.head_dim)
    assert d.kv_base + d.slot_rows == total and pair.kv_slots == {"target": d.kv_base // t.slot_rows, "draft": 1}
    im = images(d)
    for name, words in im.items():
        if name != "rope":
            addresses = [a for a, _ in words]
            assert len(set(addresses)) == len(addresses), name     # no word of one model over the other's
    assert im["program"] == [[i, w] for i, w in enumerate(t.program_words + d.program_words)]


def test_each_model_beside_the_other_computes_what_it_computes_alone(pair):
    passes = schedule()
    machines = {"target": IsaMachine(pair.target), "draft": IsaMachine(pair.draft)}
    got = [machines[name].run_pass(rows) for name, rows in passes]
    assert got == alone_tokens(pair, passes)


def test_a_draft_that_does_not_fit_beside_the_target_is_refused():
    target = tiny_passes("llama-gqa", weight_words=5000)
    need = memory_needs(target)["weight_words"][0]
    with pytest.raises(CompileError, match=r"^the draft model cannot run beside the target: its weight memory "
                                            r"\(words of array_cols bytes\) needs [\d,]+ beside the target's "
                                            rf"{need:,} \([\d,]+ in all\), the configuration's weight_words is "
                                            r"5,000 \([\d,]+ short\)$"):
        resident(target, tiny_passes("gpt2").model)
    target = tiny_passes("llama-gqa", kv_bytes=6144)         # 384 rows: one target slot (192) + 192
    with pytest.raises(CompileError, match=r"^the draft model cannot run beside the target: its KV cache \(bytes\) "
                                            r"needs 4,608 beside the target's 3,072"):
        resident(target, tiny_passes("gpt2").model)


def test_a_draft_with_another_head_dim_is_refused(pair):
    cfg = replace(pair.draft.model.config, head_dim=16, d_model=32, n_heads=2, n_kv_heads=2)
    from golden.model import init_weights
    from golden.quantize import quantize_model, random_calibration

    other = quantize_model(cfg, init_weights(cfg, seed=3, std=0.3), random_calibration(cfg, windows=2, seed=1))
    with pytest.raises(CompileError, match=r"^the draft model cannot run beside the target: its head_dim is 16, "
                                            r"the target's 8"):
        resident(pair.target, other)


def test_bad_passes_are_refused_in_one_line(pair):
    params = top_params(pair.draft)
    assert params["max_heads"] == SMALL_SHARED["max_heads"] and params["max_norm_length"] == 32
    slots = pair.kv_slots["target"]
    with pytest.raises(InputError, match=rf"^pass row 0: slot must be an integer in \[0, {slots - 1}\]"):
        decode_job(pair.draft, params, passes=[(pair.target, [(1, 0, slots)])])
    with pytest.raises(InputError, match=r"^a pass's model must be 'target' or 'draft', not 'drafter'$"):
        confirm_passes_on_rtl(pair, [("drafter", [(1, 0, 0)])], "verilator")
    with pytest.raises(InputError, match=r"^pass 0 names a model that is not resident"):
        decode_job(pair.draft, params, passes=[(tiny_passes("gpt2"), [(1, 0, 0)])])


# --- on the RTL ---------------------------------------------------------------------------------------

def run_resident(simulator, pair, passes):
    """One job of ``passes``; every pass's tokens, trace, starts and cycles checked."""
    params = top_params(pair.draft)
    job = decode_job(pair.draft, params, passes=[(pair.model(name), rows) for name, rows in passes], trace=True)
    result = run(simulator, "decode_top", params, "decode_top", job)
    expected = alone_tokens(pair, passes)
    for i, ((name, rows), got) in enumerate(zip(passes, result["passes"], strict=True)):
        model = pair.model(name)
        assert got["tokens"] == expected[i], f"pass {i} ({name})"
        predicted = pass_cycles(model.program, model.model.config, model.config, positions=[p for _, p, _ in rows])
        assert got["trace"] == [o.cycles for o in predicted.ops], f"pass {i} ({name})"
        assert got["starts"] == list(predicted.starts), f"pass {i} ({name})"
        assert got["cycles"] == predicted.total == got["edges"] - 2, f"pass {i} ({name})"
    return result


def test_interleaved_passes_of_two_models_on_verilator(pair):
    run_resident("verilator", pair, schedule())
    measured = confirm_passes_on_rtl(pair, schedule(), "verilator")
    assert measured == [pass_cycles(pair.model(n).program, pair.model(n).model.config, PASSES,
                                    positions=[p for _, p, _ in rows]).total for n, rows in schedule()]


def test_a_wrong_expectation_is_a_mismatch_naming_the_pass(pair, monkeypatch):
    """The replay's check can fail: an instruction-level model that answers another token."""
    original = IsaMachine.run_pass

    def off_by_one(self, rows):
        out = original(self, rows)
        return [t + 1 for t in out] if self.compiled is pair.draft and len(rows) == 1 else out

    monkeypatch.setattr(IsaMachine, "run_pass", off_by_one)
    with pytest.raises(RtlMismatch, match=r"^draft pass 2 \(1 rows\): the RTL's tokens"):
        confirm_passes_on_rtl(pair, schedule(), "verilator")


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "amaranth"])
def test_a_pass_of_each_model_on_other_simulators(pair, simulator):
    run_resident(simulator, pair, [("target", [(3, 0, 0), (7, 1, 0)]), ("draft", [(3, 0, 0)]),
                                   ("target", [(5, 1, 0)])])


def test_the_target_alone_keeps_its_program_at_zero(pair):
    """A model compiled alone: program base 0, every KV slot its own, no model beside it."""
    t = pair.target
    assert t.program_base == 0 and t.kv_base == 0 and t.beside is None
    assert t.kv_slots == PASSES.kv_bytes // (2 * t.model.config.head_dim * t.slot_rows)
    assert np.array_equal(IsaMachine(t).weights, t.weights)


@pytest.mark.slow
def test_the_demo_model_and_a_one_layer_draft_on_demo_narrow_on_verilator():
    """The demo model with a one-layer d_model-32 Llama beside it (random weights, the demo's vocabulary,
    head_dim and RoPE) on ``demo-narrow``: the README prompt prefilled, draft steps, a verify pass, a
    rollback."""
    from golden.checkpoint import load_demo_model
    from golden.model import ModelConfig, init_weights
    from golden.quantize import quantize_checkpoint, quantize_model, random_calibration
    from hdl.config import PRESETS

    checkpoint = load_demo_model()
    target = compile_model(quantize_checkpoint(checkpoint), PRESETS["demo-narrow"])
    mc = target.model.config
    cfg = ModelConfig(family="llama", vocab_size=mc.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                      head_dim=mc.head_dim, d_ff=64, max_context=mc.max_context)
    draft = quantize_model(cfg, init_weights(cfg, seed=5, std=0.3), random_calibration(cfg, windows=4, seed=2))
    pair = resident(target, draft)
    assert pair.kv_slots == {"target": 7, "draft": 1}
    prompt = checkpoint.tokenizer.encode("The old miller ")
    n = len(prompt)
    passes = [("target", [(t, p, 0) for p, t in enumerate(prompt)]),
              ("draft", [(t, p, 0) for p, t in enumerate(prompt)]),
              ("draft", [(5, n, 0)]), ("draft", [(6, n + 1, 0)]), ("draft", [(7, n + 2, 0)]),
              ("target", [(5, n, 0), (6, n + 1, 0), (7, n + 2, 0), (8, n + 3, 0)]),
              ("draft", [(9, n + 1, 0)]),
              ("target", [(9, n + 1, 0), (10, n + 2, 0)])]
    run_resident("verilator", pair, passes)


def test_passes_switch_programs_with_the_instruction_registered():
    """``program_register`` (the board's timing cut): a pass's FETCH reads the first instruction at
    the ``program_base`` set with ``start``, so the passes of two models alternate as they do
    without it (every pass one cycle longer: the trace, the start cycles and the counter checked)."""
    pair = resident(tiny_passes("llama-gqa", program_register=True), tiny_passes("gpt2", program_register=True))
    passes = [("target", [(3, 0, 0), (7, 1, 0)]), ("draft", [(3, 0, 0)]), ("target", [(5, 2, 0)])]
    run_resident("amaranth", pair, passes)
    for name, rows in passes:
        model = pair.model(name)
        positions = [p for _, p, _ in rows]
        off = replace(model.config, program_register=False)
        assert (pass_cycles(model.program, model.model.config, model.config, positions=positions).total
                == pass_cycles(model.program, model.model.config, off, positions=positions).total + 1)
