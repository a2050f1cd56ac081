"""A served trace confirmed on the RTL: every pass the scheduler ran, replayed on the decode top level.

The scheduler runs on the instruction-level model (its next pass depends on the last pass's tokens,
and a simulator runs a whole job of passes at once). Then the whole schedule runs on a simulator in
one job, the memories loaded once, as the chip would run it: each pass's rows, in order. The RTL's
tokens must equal the model's for every row of every pass, and its measured cycles must equal the
cycle model's for every pass; any difference stops the run with an error naming the pass. So the
schedule the RTL would have made is the one the model made, and the report's times are the RTL's
measured cycles.

:func:`confirm_passes_on_rtl` replays passes of two resident models (a target and a draft,
:mod:`sim.machine.resident`) the same way.

Paged KV (``Config.kv_block`` > 0): each pass's block tables (``PassRecord.tables``; ``tables=`` for
:func:`confirm_passes_on_rtl`) are written to the top level's table memory before the pass and into
the instruction-level model it is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from golden.errors import InputError, LockstepError

from ..engine.runner import run
from ..flows.decode import decode_job, top_params
from ..machine.cycles import pass_cycles
from ..machine.isa_sim import IsaMachine
from ..machine.resident import Resident

__all__ = ["RtlMismatch", "confirm_on_rtl", "confirm_passes_on_rtl"]


class RtlMismatch(LockstepError):
    """The RTL disagreed with the instruction-level model or the cycle model on a pass."""


def confirm_on_rtl(report, compiled, simulator: str, *, params: dict | None = None):
    """Replay ``report``'s passes (a :class:`sim.serve.scheduler.ServeReport` from the instruction-level
    model) on ``simulator``; return the report with every pass's measured cycles and ``extra["rtl"]``
    (simulator, passes, rows, wall seconds of the free run). RtlMismatch names the first pass whose
    tokens or cycles differ. ``params``: the top level's (default :func:`sim.flows.decode.top_params`)."""

    passes = [[(token, position, slot) for _, token, position, slot in p.rows] for p in report.passes]
    tables = [dict(p.tables) for p in report.passes] if compiled.config.kv_block else None
    machine = IsaMachine(compiled)
    got = _replay(compiled, passes, simulator, params, tables)
    measured = []
    for i, (rows, record, result) in enumerate(zip(passes, report.passes, got, strict=True)):
        _set_tables(machine, tables, i)
        _check(i, "", rows, result, machine.run_pass(rows), record.predicted)
        measured.append(replace(record, measured=result["cycles"]))
    extra = dict(report.extra, rtl={"simulator": simulator, "passes": len(measured),
                                    "rows": sum(len(p) for p in passes),
                                    "tokens_equal": True, "cycles_equal": True})
    return replace(report, passes=measured, backend=simulator, extra=extra)


def confirm_passes_on_rtl(resident, passes, simulator: str, *, params: dict | None = None,
                          tables=None) -> list[int]:
    """Run ``passes`` (each ``(model, rows)``: model "target" or "draft", rows ``(token, position, slot)``)
    of the two models of ``resident`` (:class:`sim.machine.resident.Resident`, or a lone
    :class:`sim.machine.compiler.Compiled`: its passes are all "target") on ``simulator`` in one
    job, the memories of both loaded once; return each pass's measured cycles. RtlMismatch names the
    first pass whose tokens differ from its model's instruction-level model (``IsaMachine.run_pass``,
    one machine per model, run through the same passes) or whose cycles differ from
    :func:`sim.machine.cycles.pass_cycles`. InputError (one line) for a bad model name or pass. Paged KV
    (a lone model with ``Config.kv_block`` > 0): ``tables``, one ``{slot: blocks}`` a pass
    (:func:`sim.flows.decode.decode_job`)."""

    if isinstance(resident, Resident):
        target, loaded, model_of = resident.target, resident.draft, resident.model
    else:
        target = loaded = resident

        def model_of(name):
            if name != "target":
                raise InputError(f"a pass's model must be 'target' (no draft model is resident), not {name!r}")
            return target
    named = []
    for i, entry in enumerate(passes):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise InputError(f"pass {i} must be (model, rows), model 'target' or 'draft', not {entry!r}")
        named.append((model_of(entry[0]), [tuple(row) for row in entry[1]]))
    machines = {id(c): IsaMachine(c) for c in {id(target): target, id(loaded): loaded}.values()}
    got = _replay(loaded, named, simulator, params, tables)
    measured = []
    for i, ((model, rows), result) in enumerate(zip(named, got, strict=True)):
        name = "target" if model is target else "draft"
        _set_tables(machines[id(model)], tables, i)
        predicted = pass_cycles(model.program, model.model.config, model.config,
                                positions=[position for _, position, _ in rows]).total
        _check(i, f"{name} ", rows, result, machines[id(model)].run_pass(rows), predicted)
        measured.append(result["cycles"])
    return measured


def _set_tables(machine, tables, i: int) -> None:
    """Pass ``i``'s block tables (paged KV; nothing for ``tables`` None) into the instruction-level model."""
    for slot, blocks in (tables[i] if tables is not None else {}).items():
        machine.set_table(slot, blocks)


def _replay(compiled, passes, simulator: str, params: dict | None, tables=None) -> list[dict]:
    """The passes of one ``decode_top`` job of ``compiled`` (and the model it is compiled beside) on
    ``simulator``, with paged KV's block tables (one ``{slot: blocks}`` a pass): each pass's result
    (:func:`sim.flows.decode_steps.run_decode_top`)."""

    params = top_params(compiled) if params is None else params
    job = decode_job(compiled, params, passes=passes, tables=tables)
    return run(simulator, "decode_top", params, "decode_top", job)["passes"]


def _check(i: int, what: str, rows, got: dict, want: list, predicted: int) -> None:
    """RtlMismatch when pass ``i``'s RTL tokens or cycles differ from the model's."""
    if got["tokens"] != want:
        raise RtlMismatch(f"{what}pass {i} ({len(rows)} rows): the RTL's tokens {got['tokens']} differ from the "
                          f"instruction-level model's {want}")
    if got["cycles"] != predicted:
        raise RtlMismatch(f"{what}pass {i} ({len(rows)} rows): the RTL took {got['cycles']} cycles, the cycle "
                          f"model predicts {predicted}")
